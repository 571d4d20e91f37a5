"""drprobe.probes: batched linear probes (the probe bank), a scikit-learn reference, ensembles."""

from drprobe.probes.bank import DEFAULT_L2_GRID, ProbeBank, ProbeResult
from drprobe.probes.ensemble import ensemble_accuracy, ensemble_curve, soft_vote
from drprobe.probes.reference import sklearn_objective, sklearn_probe

__all__ = [
    "DEFAULT_L2_GRID", "ProbeBank", "ProbeResult", "ensemble_accuracy", "ensemble_curve",
    "sklearn_objective", "sklearn_probe", "soft_vote",
]
