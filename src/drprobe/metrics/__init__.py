"""drprobe.metrics: CKA, diffused redundancy, per-class fairness and efficiency, on plain arrays."""

from __future__ import annotations

from drprobe.metrics.cka import debiased_linear_cka, linear_cka
from drprobe.metrics.cka_stats import CrossProductStats
from drprobe.metrics.efficiency import inference_flops, pareto_frontier, probe_params
from drprobe.metrics.fairness import (
    gini,
    gini_trend_test,
    per_class_accuracy,
    per_class_drop,
    worst_class,
)
from drprobe.metrics.multiplicity import benjamini_hochberg, holm
from drprobe.metrics.redundancy import (
    DEFAULT_DELTAS,
    adaptive_critical_fraction,
    bootstrap_critical_mass,
    bootstrap_dr,
    chance_corrected,
    chance_corrected_dr,
    chance_level,
    critical_fraction,
    critical_fraction_interpolated,
    critical_mass,
    diffused_redundancy,
    dr_summary,
)

__all__ = [
    "DEFAULT_DELTAS",
    "CrossProductStats",
    "adaptive_critical_fraction",
    "benjamini_hochberg",
    "bootstrap_critical_mass",
    "bootstrap_dr",
    "chance_corrected",
    "chance_corrected_dr",
    "chance_level",
    "critical_fraction",
    "critical_fraction_interpolated",
    "critical_mass",
    "debiased_linear_cka",
    "diffused_redundancy",
    "dr_summary",
    "gini",
    "gini_trend_test",
    "holm",
    "inference_flops",
    "linear_cka",
    "pareto_frontier",
    "per_class_accuracy",
    "per_class_drop",
    "probe_params",
    "worst_class",
]
