"""The memory planner: which path each stage of a layer's analysis takes, decided before any work.

Stages and the peak memory (bytes) of each path, for n = n_train (training rows after the
validation split), n_o = n_val + n_test, d the layer width, C classes, L the number of L2
strengths, F the number of subset sizes, b the column block and r the row chunk:

``pca`` (only with pca_top / pca_least)
    feature: 8·(3·d² + r·d)                      — C = X_cᵀX_c, its eigenvectors, workspace
    sample:  8·(3·n² + n_o·n + (n + n_o)·b)      — train Gram, eigh, cross-Gram, one block
``cka``
    feature: 8·(6·d² + 3·r·d)                    — the debiased moment accumulator
    sample:  8·((F + 2)·n_test² + n_test·b)      — one Gram snapshot per size, then K
``probes`` (f families trained together, :func:`probe_families`; s bytes a feature value)
    feature: the probe bank at width m = d (:func:`drprobe.probes.bank.working_set_bytes`:
             4·(n_rows·m + L·m² + L·m·C·(2·10 + 12) + 6·n_rows·L·C) + 16·L·m², n_rows = n + n_val;
             families grouped up to the bank's 2 GiB, a larger family alone)
    sample:  the larger of two phases. Sizes up to n: the bank at width n, the families'
             columns and their float32 copy side by side, (s + 4)·f·(n + n_o)·n (no copy for
             one float32 family). Sizes above n: per family the Grams K, K_o and Φ, Φ_o,
             8·f·(2·n² + 2·n_o·n), one eigh workspace and column block 8·(n² + (n + n_o)·b),
             the bank at width n and Φ's float32 copy
    streaming: the larger of 3·64 MiB + 8·Σk·L·C·(2·10 + 4) (a row chunk, the streamed probes
             and their L-BFGS history; Σk the sum of the streamed sizes, at most F·d) and, for
             the sizes still trained by the bank (:func:`streaming_bank_limit`), the bank at the
             largest of them plus the families' columns

``<projection selector>`` (one stage per selector that yields a projection; M = n + n_o rows
projected onto m = max(k) directions, s_b = 64 MiB a block)
    feature: 2·s_b + min(4·M·m, in-memory size)     — a block of P, a row chunk, the output
    sample:  8·(5·M² + 2·M·b) + s_b + min(4·M·m, …) — the rows' Gram and eigh, its column block,
             a block of the draw (:mod:`drprobe.wide.projections`)
    The path is :func:`projection_path`'s: sample space for a kind with an exact sample-space
    draw when it is the cheaper in work and fits the budget. A projection in feature space costs
    M·d·m multiply-adds; above :data:`PROJECTION_WORK_LIMIT` it is refused on one line (the
    uniform projection on a wide layer, with m = d, is the usual case), naming the Gaussian one.

The probes stage, the largest, decides: it takes the smaller of its feature and sample paths
(sample once d is well above n_train), and streams when that one is over the budget. The other
stages follow it: all in feature space when the probes are, else in sample space (the feature
form of PCA and CKA is then the larger one, or close to it). A stage whose path is over the
budget is refused on one line naming its size and the option that sets the budget. The default
budget is a third of the machine's physical memory.
"""

from __future__ import annotations

import math
import numbers
import os
from collections.abc import Sequence
from dataclasses import dataclass, field

from drprobe.errors import InvalidValueError
from drprobe.probes.bank import DEFAULT_MAX_MEMORY_GB, working_set_bytes
from drprobe.selectors import is_seeded, selector_class, wide_refusal
from drprobe.wide.columns import IN_MEMORY_BYTES
from drprobe.wide.projections import (
    PROJECTION_BLOCK_BYTES,
    ROW_CHUNK_BYTES,
    SAMPLE_SPACE_KINDS,
    in_sample_space,
    projection_work,
)

GIB = 2**30
BUDGET_OPTION = "memory_budget_gb"  # the config key and analyze_layer's argument
ROW_CHUNK = 4096
BLOCK = 2048
STREAM_HISTORY = 10  # the streaming solver's L-BFGS history
STREAM_CHUNK_BYTES = 64 * 2**20  # the streaming solver's row chunk (its ``chunk_bytes``)
#: most multiply-adds a feature-space projection of a wide layer may take (n·d·max(k)): a few
#: minutes of float64 products on a small multi-core machine; the uniform projection of
#: d = 75,264 neurons for 6,000 rows needs 3.4e13 and is refused
PROJECTION_WORK_LIMIT = 2e12


def probe_families(selectors: Sequence[str], n_seeds: int) -> int:
    """How many families (one per seed of a seeded selector) a wide layer trains together, in
    one bank call on materialised columns: those of the selectors with a sample-space path
    that yield neuron subsets or PCA coordinates (projections come after, one at a time)."""
    return max(1, sum(int(n_seeds) if is_seeded(s) else 1 for s in selectors
                      if wide_refusal(s) is None and selector_class(s).yields != "projection"))


def budget_bytes(memory_budget_gb: float | None) -> int | None:
    """The plan's budget in bytes for ``memory_budget_gb`` GiB (None stays None: the default,
    :func:`default_budget_bytes`): the one check and unit conversion of that setting, whether it
    comes from a config or from :func:`~drprobe.analysis.plan.layer_plan`'s callers.

    Raises:
        InvalidValueError: not a positive finite number (one line).
    """
    if memory_budget_gb is None:
        return None
    if (isinstance(memory_budget_gb, bool) or not isinstance(memory_budget_gb, numbers.Real)
            or not 0 < memory_budget_gb < math.inf):
        raise InvalidValueError(f"{BUDGET_OPTION} must be a positive number of GiB; got "
                                f"{memory_budget_gb!r}")
    return int(memory_budget_gb * GIB)


def default_budget_bytes() -> int:
    """A third of the machine's physical memory."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # pragma: no cover - non-POSIX
        total = 24 * GIB
    return int(total // 3)


@dataclass
class StagePlan:
    """One stage's chosen path and its peak memory; ``sizes`` holds every path's peak."""

    stage: str
    path: str  # "feature", "sample" or "streaming"
    peak_bytes: int
    sizes: dict[str, int] = field(default_factory=dict)
    work: float | None = None  # multiply-adds, where priced (projection stages)

    def describe(self) -> str:
        """One line, e.g. ``probes: sample space, peak 1.20 GiB`` (then ``, 2.1e+12
        multiply-adds`` where the work is priced)."""
        label = {"feature": "feature space", "sample": "sample space",
                 "streaming": "streaming first-order"}[self.path]
        work = "" if self.work is None else f", {self.work:.2g} multiply-adds"
        return f"{self.stage}: {label}, peak {self.peak_bytes / GIB:.2f} GiB{work}"


@dataclass
class MemoryPlan:
    """Per-stage plan for one layer; ``budget_bytes`` is the limit it was made under."""

    stages: list[StagePlan]
    budget_bytes: int

    def path(self, stage: str) -> str:
        """The path of ``stage`` ("feature", "sample" or "streaming")."""
        for s in self.stages:
            if s.stage == stage:
                return s.path
        raise InvalidValueError(f"no stage {stage!r} in this plan; stages: "
                                f"{', '.join(s.stage for s in self.stages)}")

    def describe(self) -> str:
        """The plan on one line (for ``--dry-run``)."""
        return "; ".join(s.describe() for s in self.stages)


def bank_bytes(n_rows: int, width: int, n_classes: int, n_l2: int, n_families: int = 1) -> int:
    """The probe bank training n_families families of ``width`` columns in one call: families are
    grouped up to its default memory limit, and a family above that limit is a group alone."""
    one = working_set_bytes(n_rows, width, n_classes, n_l2)
    return max(one, min(n_families * one, int(DEFAULT_MAX_MEMORY_GB * GIB)))


def materialised_bytes(n_rows: int, n_others: int, k: int, n_classes: int, n_l2: int,
                       n_families: int = 1, itemsize: int = 4) -> int:
    """The bank trained on materialised columns up to width k: its working set plus the
    families' columns (n_rows + n_others rows, ``itemsize`` bytes a value) and the float32 copy
    the bank call lays them side by side in (none for one float32 family)."""
    copy = 0 if n_families == 1 and itemsize == 4 else 4
    columns = (itemsize + copy) * n_families * (n_rows + n_others) * k
    return bank_bytes(n_rows, k, n_classes, n_l2, n_families) + columns


def streamed_bytes(sum_k: int, n_classes: int, n_l2: int) -> int:
    """The streaming solver: a row chunk and its copies, the probes of sizes summing to sum_k
    and their L-BFGS history."""
    return 3 * STREAM_CHUNK_BYTES + 8 * sum_k * n_l2 * n_classes * (2 * STREAM_HISTORY + 4)


def stage_sizes(
    stage: str, *, n_train: int, n_val: int, n_test: int, d: int, n_classes: int,
    n_l2: int = 5, n_sizes: int = 15, block: int = BLOCK, sum_k: int | None = None,
    n_families: int = 1, itemsize: int = 4,
) -> dict[str, int]:
    """Peak bytes of every path of ``stage`` (see the module docstring)."""
    n, n_o, f = n_train, n_val + n_test, n_families
    sum_k = n_sizes * d if sum_k is None else sum_k
    if stage == "pca":
        return {"feature": 8 * (3 * d * d + ROW_CHUNK * d),
                "sample": 8 * (3 * n * n + n_o * n + (n + n_o) * block)}
    if stage == "cka":
        return {"feature": 8 * (6 * d * d + 3 * ROW_CHUNK * d),
                "sample": 8 * ((n_sizes + 2) * n_test * n_test + n_test * block)}
    if stage == "probes":
        # sizes up to n on materialised columns, then the sizes above n from each family's
        # Grams (K, K_o, Φ, Φ_o; one eigh workspace and column block) and Φ's float32 copy
        grams = 8 * (f * (2 * n * n + 2 * n_o * n) + n * n + (n + n_o) * block)
        return {
            "feature": bank_bytes(n + n_val, d, n_classes, n_l2, f),
            "sample": max(materialised_bytes(n + n_val, n_test, min(n, d), n_classes, n_l2, f,
                                             itemsize),
                          grams + bank_bytes(n + n_val, n, n_classes, n_l2, f)
                          + 4 * f * (n + n_o) * n),
            "streaming": streamed_bytes(sum_k, n_classes, n_l2),
        }
    raise InvalidValueError(f"unknown stage {stage!r}; valid choices: cka, pca, probes")


def projection_sizes(n_rows: int, d: int, m: int, block: int = BLOCK) -> dict[str, int]:
    """Peak bytes of projecting n_rows rows of a d-wide layer onto m directions, per path
    (module docstring; the rows' float32 output counts up to the in-memory size, beyond it
    lives in a scratch file)."""
    output = min(4 * n_rows * m, IN_MEMORY_BYTES)
    return {"feature": PROJECTION_BLOCK_BYTES + ROW_CHUNK_BYTES + output,
            "sample": 8 * (5 * n_rows * n_rows + 2 * n_rows * block) + PROJECTION_BLOCK_BYTES
            + output}


def projection_path(kind: str, n_rows: int, d: int, m: int, budget: int,
                    block: int = BLOCK) -> str:
    """Where a projection of kind ``kind`` (``draws``) of n_rows rows onto m directions runs on
    a wide layer: "sample" when the kind has an exact sample-space draw, that path is the
    cheaper in work (:func:`~drprobe.wide.projections.in_sample_space`) and its peak fits
    ``budget``; else "feature". The one rule of the plan and of the run."""
    if in_sample_space(kind, n_rows, d, m) and \
            projection_sizes(n_rows, d, m, block)["sample"] <= budget:
        return "sample"
    return "feature"


def _projection_stages(selectors: Sequence[str], n_rows: int, d: int, m: int, budget: int,
                       block: int, work_limit: float) -> list[StagePlan]:
    """One stage per projection selector (its path, peak and work); refuses, on one line, a
    feature-space projection whose work is over ``work_limit``."""
    stages = []
    for s in selectors:
        cls = selector_class(s)
        if cls.yields != "projection" or wide_refusal(s) is not None:
            continue
        path = projection_path(cls.draws, n_rows, d, m, budget, block)
        work = projection_work(n_rows, d, m)[path]
        if path == "feature" and work > work_limit:
            raise InvalidValueError(
                f"selector {s!r} projects {n_rows} rows of this {d}-wide layer in feature space, "
                f"{work:.2g} multiply-adds (n·d·max k, max k={m}), over the limit of "
                f"{work_limit:.2g}; use {' or '.join(SAMPLE_SPACE_KINDS)} (drawn exactly in "
                f"sample space, n²·d, when n < d), or fewer rows"
            )
        sizes = projection_sizes(n_rows, d, m, block)
        stages.append(StagePlan(s, path, sizes[path], sizes, work))
    return stages


def streaming_bank_limit(
    n_rows: int, n_others: int, n_classes: int, n_l2: int, budget: int, ks: Sequence[int],
    n_families: int = 1, itemsize: int = 4,
) -> int:
    """When the probes stream, the largest k of ks the bank still trains on materialised columns
    (0 if none): :func:`materialised_bytes` within half the budget."""
    fits = [k for k in ks if materialised_bytes(n_rows, n_others, k, n_classes, n_l2, n_families,
                                                itemsize) <= budget // 2]
    return max(fits, default=0)


def plan_memory(
    *, n_train: int, n_val: int, n_test: int, d: int, n_classes: int,
    selectors: Sequence[str] = ("random",), n_l2: int = 5, n_sizes: int = 15,
    budget_bytes: int | None = None, block: int = BLOCK, ks: Sequence[int] | None = None,
    n_families: int = 1, itemsize: int = 4, work_limit: float = PROJECTION_WORK_LIMIT,
) -> MemoryPlan:
    """Choose each stage's path under ``budget_bytes`` (default :func:`default_budget_bytes`).

    ``ks``: the subset sizes, when known (their count replaces ``n_sizes``, their sum bounds
    the streaming solver's parameters). ``n_families``: the families trained together
    (:func:`probe_families`); ``itemsize``: bytes of a materialised feature value.
    ``work_limit``: the most multiply-adds of a feature-space projection on a wide layer.

    Raises InvalidValueError (one line: stage, size, budget, option) when a stage has no path
    that fits, or a projection's feature-space work is over ``work_limit``; nothing has been
    read or computed at that point.
    """
    for name, v in (("n_train", n_train), ("n_test", n_test), ("d", d), ("n_classes", n_classes)):
        if int(v) < 1:
            raise InvalidValueError(f"{name} must be >= 1; got {v}")
    budget = default_budget_bytes() if budget_bytes is None else int(budget_bytes)
    if ks is not None:
        n_sizes, sum_k = len(ks), int(sum(ks))
    else:
        sum_k = None
    sizes = {stage: stage_sizes(stage, n_train=n_train, n_val=n_val, n_test=n_test, d=d,
                                n_classes=n_classes, n_l2=n_l2, n_sizes=n_sizes, block=block,
                                sum_k=sum_k, n_families=n_families, itemsize=itemsize)
             for stage in ("pca", "cka", "probes")}
    probes = min(("feature", "sample"), key=lambda p: sizes["probes"][p])
    if sizes["probes"][probes] > budget:
        probes = "streaming"
        limit = streaming_bank_limit(n_train + n_val, n_test, n_classes, n_l2, budget, ks or (),
                                     n_families, itemsize)
        if limit:  # the bank's share first, then the streamed sizes only
            sizes["probes"]["streaming"] = max(
                materialised_bytes(n_train + n_val, n_test, limit, n_classes, n_l2, n_families,
                                   itemsize),
                streamed_bytes(sum(k for k in ks if k > limit), n_classes, n_l2))
    follow = "feature" if probes == "feature" else "sample"
    stages = (["pca"] if any(selector_class(s).yields == "pca" for s in selectors) else [])
    plans = []
    for stage in stages + ["cka", "probes"]:
        path = probes if stage == "probes" else follow
        if sizes[stage][path] > budget:
            raise InvalidValueError(
                f"stage {stage!r} needs {sizes[stage][path] / GIB:.2f} GiB even in its smallest "
                f"path ({path}; n_train={n_train}, n_test={n_test}, d={d}), over the memory "
                f"budget of {budget / GIB:.2f} GiB; raise {BUDGET_OPTION} (a config key and an "
                f"analyze_layer argument) or use fewer rows"
            )
        plans.append(StagePlan(stage, path, int(sizes[stage][path]), sizes[stage]))
    if probes != "feature":
        plans += _projection_stages(selectors, n_train + n_val + n_test, d,
                                    max(ks) if ks else d, budget, block, work_limit)
    return MemoryPlan(plans, budget)
