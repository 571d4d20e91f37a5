"""Input checks, de-duplication of identical probes, and feature materialisation for the bank.

Numpy appears only here, at the boundary: families and label arrays come in as numpy, and
:func:`materialize` turns rows of a (possibly memory-mapped, float16) feature matrix into torch
tensors of each family's basis coordinates on the bank's device, chunk by chunk.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import pairwise

import numpy as np
import torch

from drprobe.errors import InvalidValueError
from drprobe.selectors import SubsetFamily

CHUNK_BYTES = 64 * 2**20  # rows of X read per chunk: about this many bytes of float32


def check_features(X: object, name: str, d: int | None = None) -> np.ndarray:
    """Accept a 2-D numeric array or memmap (n, d) without copying it; raise one-liners."""
    if not hasattr(X, "shape") or not hasattr(X, "dtype"):
        X = np.asarray(X)
    if len(X.shape) != 2:
        raise InvalidValueError(f"{name} must be 2-D (n, d); got shape {tuple(X.shape)}")
    if not np.issubdtype(np.dtype(X.dtype), np.number) or np.dtype(X.dtype).kind == "c":
        raise InvalidValueError(f"{name} must be real-valued; got dtype {X.dtype}")
    if X.shape[0] == 0:
        raise InvalidValueError(f"{name} has no rows")
    if d is not None and X.shape[1] != d:
        raise InvalidValueError(f"{name} has {X.shape[1]} columns; expected d={d}")
    return X  # type: ignore[return-value]


def check_labels(y: object, n: int, name: str) -> np.ndarray:
    """(n,) label vector whose length matches its features."""
    arr = np.asarray(y)
    if arr.ndim != 1 or arr.shape[0] != n:
        raise InvalidValueError(
            f"{name} has shape {arr.shape}; expected ({n},) to match the feature rows"
        )
    return arr


def encode(y: np.ndarray, classes: np.ndarray, name: str) -> np.ndarray:
    """Map labels to indices into ``classes``; labels unseen in training are refused."""
    pos = np.clip(np.searchsorted(classes, y), 0, len(classes) - 1)
    bad = classes[pos] != y
    if bad.any():
        raise InvalidValueError(
            f"{name} contains label {y[bad][0]!r} absent from y_train; "
            f"valid labels: {classes.tolist()}"
        )
    return pos.astype(np.int64)


def check_family(fam: SubsetFamily, i: int, d: int) -> None:
    """Refuse a family whose sizes or basis do not fit features of width d."""
    tag = f"family {i} ({fam.selector}, seed {fam.seed})"
    if (fam.indices is None) == (fam.components is None):
        raise InvalidValueError(f"{tag} must set exactly one of indices / components")
    if fam.indices is not None:
        idx = np.asarray(fam.indices)
        if idx.ndim != 1 or (len(idx) and (idx.min() < 0 or idx.max() >= d)):
            raise InvalidValueError(f"{tag} has indices outside [0, {d})")
    else:
        comp = np.asarray(fam.components)
        if comp.ndim != 2 or comp.shape[0] != d:
            raise InvalidValueError(f"{tag} components have shape {comp.shape}; need ({d}, m)")
        if fam.mean is not None and np.asarray(fam.mean).shape != (d,):
            raise InvalidValueError(f"{tag} mean has shape {np.shape(fam.mean)}; need ({d},)")
    ks = list(fam.ks)
    if not ks:
        raise InvalidValueError(f"{tag} has no sizes ks to probe")
    if any(int(k) != k for k in ks) or any(b <= a for a, b in pairwise(ks)):
        raise InvalidValueError(f"{tag} ks={ks} must be strictly increasing integers")
    if ks[0] < 1 or ks[-1] > fam.width:
        bad = ks[0] if ks[0] < 1 else ks[-1]
        raise InvalidValueError(f"{tag} has k={bad} outside [1, {fam.width}] (its width)")
    if fam.fractions is not None and len(fam.fractions) != len(ks):
        raise InvalidValueError(f"{tag} has {len(fam.fractions)} fractions for {len(ks)} ks")


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
class Plan:
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


def make_plan(families: Sequence[SubsetFamily], dedupe: bool) -> Plan:
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
    plan = Plan(canon=canon)
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


class Basis:
    """A family's d -> m map as torch tensors on a device: column selection or projection."""

    def __init__(self, fam: SubsetFamily, device: torch.device, dtype: torch.dtype) -> None:
        self.width = fam.width
        self.idx = self.comp = self.mean = None
        if fam.indices is not None:
            self.idx = torch.as_tensor(np.asarray(fam.indices, dtype=np.int64), device=device)
        else:
            self.comp = torch.as_tensor(np.asarray(fam.components), device=device).to(dtype)
            if fam.mean is not None:
                self.mean = torch.as_tensor(np.asarray(fam.mean), device=device).to(dtype)

    def __call__(self, X: torch.Tensor) -> torch.Tensor:
        """(rows, d) -> (rows, m)."""
        if self.idx is not None:
            return X.index_select(1, self.idx)
        Xc = X if self.mean is None else X - self.mean
        return Xc @ self.comp


def materialize(
    parts: Sequence[tuple[np.ndarray, str]], bases: Sequence[Basis],
    device: torch.device, dtype: torch.dtype,
) -> list[torch.Tensor]:
    """Stack the row blocks in ``parts`` and map them through every basis.

    Returns per basis an (n_total, m + 1) tensor whose column 0 is ones (the bias column) and
    whose other columns are raw basis coordinates. X is read once, in row chunks; non-finite
    values raise InvalidValueError naming the part.
    """
    n_total = sum(int(X.shape[0]) for X, _ in parts)
    out = [torch.empty(n_total, b.width + 1, dtype=dtype, device=device) for b in bases]
    for Z in out:
        Z[:, 0] = 1.0
    np_dtype = np.float64 if dtype == torch.float64 else np.float32
    row = 0
    for X, name in parts:
        step = max(1, CHUNK_BYTES // (4 * max(1, int(X.shape[1]))))
        for r0 in range(0, int(X.shape[0]), step):
            rows = np.array(X[r0:r0 + step], dtype=np_dtype)  # a private, writable copy
            chunk = torch.from_numpy(rows).to(device)
            if not bool(torch.isfinite(chunk).all()):
                raise InvalidValueError(f"{name} contains NaN or infinite values")
            for Z, basis in zip(out, bases):
                Z[row + r0:row + r0 + chunk.shape[0], 1:] = basis(chunk)
        row += int(X.shape[0])
    return out


NULL_SCALE = 1e-5  # relative std below which a column counts as a null direction


def standardize_(
    Z: torch.Tensor, n_fit: int, enabled: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """z-score columns 1: of Z in place with statistics of its first n_fit rows.

    Returns (mean, scale), each (m,). Constant columns, and columns whose standard deviation is
    below ``NULL_SCALE`` times the largest one in the basis, keep scale 1: such columns are the
    null directions of a rank-deficient basis (e.g. PCA with n_train < d), whose train values are
    rounding noise; z-scoring them would blow that noise up to unit variance and swamp the probe.
    With ``enabled`` False the statistics are 0 and 1 and Z is left as it is.
    """
    m = Z.shape[1] - 1
    if not enabled:
        return (torch.zeros(m, dtype=Z.dtype, device=Z.device),
                torch.ones(m, dtype=Z.dtype, device=Z.device))
    var, mean = torch.var_mean(Z[:n_fit, 1:], dim=0, correction=0)
    scale = var.sqrt()
    floor = torch.maximum(16 * torch.finfo(Z.dtype).eps * mean.abs().clamp_min(1.0),
                          NULL_SCALE * scale.max())
    scale = torch.where(scale > floor, scale, torch.ones_like(scale))
    Z[:, 1:].sub_(mean).div_(scale)
    return mean, scale
