"""The plan of one layer's analysis, decided before any work: its subset sizes and memory plan.

:func:`layer_plan` is the one builder: :func:`~drprobe.analysis.layer.analyze_layer` calls it
with the sizes of the features it was given, and the dry run (``drprobe run --dry-run``,
:mod:`drprobe.experiment.widths`) with the sizes a config's job will have, so what the dry run
prints is what the run does. Nothing is read or computed: sizes in, plan out.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from drprobe.selectors.family import DEFAULT_SEEDS, probe_fractions, resolve_ks
from drprobe.wide.memory import MemoryPlan, budget_bytes, plan_memory, probe_families

__all__ = ["LayerPlan", "layer_plan"]


@dataclass(frozen=True)
class LayerPlan:
    """What a layer's analysis will do.

    Attributes:
        ks: (F,) subset sizes, ascending, the full layer d last.
        fractions: (F,) the fraction that produced each k (k/d for counts).
        memory: each stage's path and peak memory (:func:`drprobe.wide.plan_memory`).
    """

    ks: list[int]
    fractions: list[float]
    memory: MemoryPlan


def layer_plan(
    d: int, *, n_train: int, n_val: int, n_test: int, n_classes: int,
    selectors: Sequence[str] = ("random",), fractions: Sequence[float] | None = None,
    counts: Sequence[int] | None = None, seeds: Sequence[int] = DEFAULT_SEEDS, n_l2: int = 1,
    memory_budget_gb: float | None = None, itemsize: int = 4,
) -> LayerPlan:
    """The sizes and memory plan of probing a d-wide layer.

    Args:
        d: the layer's width.
        n_train, n_val, n_test: rows of the training part (after the validation split), of the
            validation part and of the test split.
        n_classes: the probes' classes.
        selectors, seeds: the families (one per seed of a seeded selector).
        fractions, counts: the sizes (:func:`~drprobe.selectors.family.probe_fractions`:
            neither gives the paper's grid; the full layer is always added), checked and
            resolved by :func:`~drprobe.selectors.resolve_ks`.
        n_l2: L2 strengths each probe is trained at (1 for heads that are not the bank's).
        memory_budget_gb: the plan's budget in GiB (None: a third of the machine's memory),
            checked and converted by :func:`drprobe.wide.memory.budget_bytes`.
        itemsize: bytes of a materialised feature value.

    Raises:
        InvalidValueError: a bad size or budget, or a stage with no path under the budget
            (one line each).
    """
    ks, fracs = resolve_ks(d, fractions=probe_fractions(fractions, counts), counts=counts)
    memory = plan_memory(
        n_train=n_train, n_val=n_val, n_test=n_test, d=d, n_classes=n_classes,
        selectors=selectors, n_l2=n_l2, ks=ks, budget_bytes=budget_bytes(memory_budget_gb),
        n_families=probe_families(selectors, len(seeds)), itemsize=itemsize)
    return LayerPlan(ks, fracs, memory)
