"""What a finished run gets from the report: its tables and quick-look figures, written beside
its parts (the CLI calls :func:`publish_run` after :func:`~drprobe.experiment.runner.
run_experiment`; ``drprobe report`` draws the full report)."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from drprobe.report.curves import plot_study
from drprobe.report.run_tables import write_tables

__all__ = ["publish_run"]


def publish_run(results: pd.DataFrame, summary: pd.DataFrame, out: str | os.PathLike,
                plot: bool = True) -> list[Path]:
    """Write the run's tables (:func:`~drprobe.report.run_tables.write_tables`) and, with
    ``plot``, ``accuracy.png``, ``cka.png`` and ``gini.png``; return the figures written."""
    write_tables(results, summary, out)
    return plot_study(results, out) if plot else []
