"""drprobe.probes: the probe trainers' one contract, batched linear probes (the probe bank), the
faithful trainer, a scikit-learn reference, ensembles."""

from drprobe.probes.bank import DEFAULT_L2_GRID, ProbeBank
from drprobe.probes.contract import ProbeTrainer
from drprobe.probes.ensemble import ensemble_accuracy, ensemble_curve, soft_vote
from drprobe.probes.reference import sklearn_objective, sklearn_probe
from drprobe.probes.results import ProbeResult, probe_result

__all__ = [
    "DEFAULT_L2_GRID", "ProbeBank", "ProbeResult", "ProbeTrainer", "ensemble_accuracy",
    "ensemble_curve", "probe_result", "sklearn_objective", "sklearn_probe", "soft_vote",
]
