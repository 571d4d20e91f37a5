"""drprobe.analysis: features and labels in, results out, free of configuration.

- :mod:`~drprobe.analysis.layer`: :func:`analyze_layer`, one layer and one task: every selector x
  size x seed probe with CKA, fairness and the DR summary; it picks the feature-space or the
  wide path from the memory plan;
- :mod:`~drprobe.analysis.protocol`: how heads are trained (``cached``: the probe bank on cached
  features; ``faithful``: through the frozen backbone);
- :mod:`~drprobe.analysis.tasks`: tasks derived from a dataset (label groupings, null inputs);
- :mod:`~drprobe.analysis.derived`: null baselines run beside the real features, the adaptive
  critical-fraction search;
- :mod:`~drprobe.analysis.summary`: the one way from per-probe rows to DR_delta;
- :mod:`~drprobe.analysis.variants`: networks grouped into variants (pretraining recipes), DR per
  variant and task with intervals over pretraining seeds, differences against a reference.

Configuration, plans, executors and storage live above, in :mod:`drprobe.experiment`.
"""

from drprobe.analysis.derived import analyze_with_nulls, refine_critical_fraction
from drprobe.analysis.layer import LayerAnalysis, analyze_layer, check_layer_inputs
from drprobe.analysis.protocol import FaithfulProtocol, as_trainer
from drprobe.analysis.summary import summarize
from drprobe.analysis.tasks import GROUPINGS, NULLS, apply_task, null_inputs, resolve_grouping
from drprobe.analysis.variants import task_table, variant_table

__all__ = [
    "GROUPINGS", "NULLS", "FaithfulProtocol", "LayerAnalysis", "analyze_layer",
    "analyze_with_nulls", "apply_task", "as_trainer", "check_layer_inputs",
    "null_inputs", "refine_critical_fraction", "resolve_grouping", "summarize", "task_table",
    "variant_table",
]
