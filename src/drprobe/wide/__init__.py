"""drprobe.wide: exact sample-space (n×n) and streaming paths for layers much wider than n.

When a layer has d neurons and a split n rows with d > n, every d×d object of the feature-space
path (second moments for CKA and PCA, the probe bank's Gram and Cholesky factors) has an exact
n×n counterpart:

- :mod:`~drprobe.wide.columns`: the features read in column blocks in any neuron order, from a
  neuron-major scratch copy, so one pass over a seed's permutation touches each neuron once;
- :mod:`~drprobe.wide.gram`: nested Gram accumulation, linear and debiased CKA of every nested
  subset against the full layer in one pass;
- :mod:`~drprobe.wide.dual_pca`: PCA top / least directions from the centred train Gram, never
  from the null space;
- :mod:`~drprobe.wide.dual_probe`: an L2-penalised probe on standardised subset columns trained
  exactly on Φ = U Λ^{1/2} of the subset's train Gram;
- :mod:`~drprobe.wide.projections`: features projected by random projections drawn in column
  blocks from the seed (:mod:`drprobe.selectors.projections`);
- :mod:`~drprobe.wide.streaming`: a first-order solver streaming row chunks of a memmap, for when
  neither n² nor d² fits;
- :mod:`~drprobe.wide.memory`: the memory planner choosing a path per stage under a budget.

This package sits between :mod:`drprobe.metrics` and :mod:`drprobe.experiment`.
"""

from __future__ import annotations

from drprobe.selectors.pca import nonnull_count, pca_nonnull_basis
from drprobe.selectors.projections import iter_projection_blocks, projection_columns
from drprobe.wide.columns import ColumnReader
from drprobe.wide.dual_pca import dual_pca
from drprobe.wide.dual_probe import nested_probe_grams, sample_space_features
from drprobe.wide.gram import cka_from_grams, nested_gram_cka
from drprobe.wide.memory import MemoryPlan, StagePlan, default_budget_bytes, plan_memory
from drprobe.wide.projections import project
from drprobe.wide.streaming import StreamingProbes

__all__ = [
    "ColumnReader", "MemoryPlan", "StagePlan", "StreamingProbes", "cka_from_grams",
    "default_budget_bytes", "dual_pca", "iter_projection_blocks", "nested_gram_cka",
    "nested_probe_grams", "nonnull_count", "pca_nonnull_basis", "plan_memory", "project",
    "projection_columns", "sample_space_features",
]
