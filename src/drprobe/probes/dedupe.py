"""De-duplication of identical probes: which probes a bank trains, and which request each result
answers (identical bases share one family; coordinate subsets equal as sets share one probe)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from drprobe.selectors import SubsetFamily


def _digest(*arrays: np.ndarray | None) -> str:
    h = hashlib.sha1()
    for a in arrays:
        if a is None:
            h.update(b"none")
        else:
            a = np.ascontiguousarray(a)
            h.update(str((a.dtype.str, a.shape)).encode())
            h.update(a.tobytes())
    return h.hexdigest()


@dataclass
class ProbePlan:
    """Which probes to train, and which requested (family, k) each result comes from.

    Attributes:
        canon: per requested family, the index of the first identical family.
        ks: per canonical family, the sorted sizes it must provide.
        alias: (canonical family, k) -> the unique probe (family, k) that is trained for it.
        requests: per requested probe, (family index, position in its ks, unique probe).
    """

    canon: list[int]
    ks: dict[int, list[int]] = field(default_factory=dict)
    alias: dict[tuple[int, int], tuple[int, int]] = field(default_factory=dict)
    requests: list[tuple[int, int, tuple[int, int]]] = field(default_factory=list)

    def solved(self, c: int) -> list[int]:
        """Sizes trained for canonical family c (those not aliased to another probe)."""
        return [k for k in self.ks[c] if self.alias[(c, k)] == (c, k)]


def plan_probes(families: Sequence[SubsetFamily], dedupe: bool) -> ProbePlan:
    """De-duplicate: identical bases share one family; coordinate subsets equal as sets (their
    standardised problems differ only by a permutation of the weights) share one probe."""
    keys: dict[str, int] = {}
    canon = []
    for i, fam in enumerate(families):
        key = (_digest(np.asarray(fam.indices, dtype=np.int64)) if fam.indices is not None
               else _digest(np.asarray(fam.components), None if fam.mean is None
                            else np.asarray(fam.mean)))
        key = key if dedupe else str(i)
        canon.append(keys.setdefault(key, i))
    plan = ProbePlan(canon=canon)
    for i, fam in enumerate(families):
        plan.ks.setdefault(canon[i], [])
        plan.ks[canon[i]] = sorted(set(plan.ks[canon[i]]) | {int(k) for k in fam.ks})
    seen: dict[str, tuple[int, int]] = {}
    for c, ks in plan.ks.items():
        fam = families[c]
        for k in ks:
            key = (_digest(np.sort(np.asarray(fam.indices[:k], dtype=np.int64)))
                   if dedupe and fam.indices is not None else f"{c}:{k}")
            plan.alias[(c, k)] = seen.setdefault(key, (c, k))
    for i, fam in enumerate(families):
        for j, k in enumerate(fam.ks):
            plan.requests.append((i, j, plan.alias[(canon[i], int(k))]))
    return plan
