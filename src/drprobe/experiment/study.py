"""A study: models x layers on one dataset, each layer analysed, results stored and reported.

``drprobe demo`` is :func:`run_study` with :class:`StudySpec`'s defaults: MobileNetV2 (ImageNet
weights) and its seeded random-init twin on Fashion-MNIST, penultimate layer and block 14.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pandas as pd

from drprobe.errors import InvalidValueError
from drprobe.experiment.analysis import DEFAULT_DELTAS, analyze_layer
from drprobe.experiment.derived import efficiency_table, fairness_trend
from drprobe.experiment.store import atomic_write_text, write_part
from drprobe.features import get_features
from drprobe.probes import ProbeBank
from drprobe.selectors import resolve_ks
from drprobe.sources.datasets import load_dataset
from drprobe.sources.layers import resolve_layer
from drprobe.sources.models import load_model

DEMO_FRACTIONS = (0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.8, 1.0)


@dataclass
class StudySpec:
    """What to measure. Defaults are the demo's.

    ``checkpoint``: a weights file that replaces the ``"pretrained"`` weights (formats of
    :func:`drprobe.sources.models.load_model`); the ``"random"`` twin stays the seeded init.
    ``probe_tol``: the probes' stopping tolerance on max |gradient|. The library default (1e-4,
    scikit-learn's) costs three times the time of 1e-3 for accuracies within 0.3 point on the
    demo (``docs/performance.md``).
    """

    model: str = "builtin:mobilenet_v2"
    weights: tuple[str, ...] = ("pretrained", "random")
    init_seed: int = 0
    layers: tuple[str, ...] = ("penultimate", "features.14")
    pooling: str = "avg"
    dataset: str = "fashion-mnist"
    n_train: int | None = 10_000
    n_test: int | None = 2_000
    image_size: int | None = 64
    selectors: tuple[str, ...] = ("random",)
    fractions: tuple[float, ...] = DEMO_FRACTIONS
    seeds: tuple[int, ...] = (1, 2, 3)
    deltas: tuple[float, ...] = DEFAULT_DELTAS
    data_root: str | None = None
    checkpoint: str | None = None
    probe_tol: float = 1e-3
    extra: dict = field(default_factory=dict)

    def run_id(self) -> str:
        """A short content hash of the spec: same spec, same id."""
        blob = json.dumps(asdict(self), sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:12]


def prepare_output(out: str | os.PathLike) -> Path:
    """Check that ``out`` can be a results folder (it must not be a file); do not create it."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InvalidValueError(f"output folder {str(out)!r} exists and is a file; pass a folder path")
    return out


def validate(spec: StudySpec) -> list:
    """Resolve every name in ``spec`` before any work or write; return the loaded model bundles."""
    resolve_ks(1 << 30, fractions=spec.fractions)  # raises on a fraction outside (0, 1]
    bundles = [
        load_model(spec.model, "checkpoint", checkpoint=spec.checkpoint)
        if w == "pretrained" and spec.checkpoint else load_model(spec.model, w, spec.init_seed)
        for w in spec.weights
    ]
    for layer in spec.layers:
        resolve_layer(bundles[0], layer)
    load_dataset(spec.dataset, "test", root=spec.data_root)
    return bundles


def run_study(
    spec: StudySpec,
    out: str | os.PathLike,
    *,
    cache_dir: str | os.PathLike | None = None,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Run every (weights, layer) job of ``spec`` and write results under ``out``.

    Writes ``out/results/<job>.parquet`` (one part per job), ``out/summary.csv`` and
    ``out/summary.md`` (DR table), ``out/efficiency.csv`` (accuracy against probe size, Pareto
    frontier) and ``out/fairness.csv`` (the Gini trend test). Returns (per-probe results, summary).
    """
    out = prepare_output(out)
    bundles = validate(spec)
    run_id = spec.run_id()
    results, summaries, efficiency, fairness = [], [], [], []
    for bundle in bundles:
        for layer in spec.layers:
            name = resolve_layer(bundle, layer)
            feats = {
                split: get_features(
                    bundle, name, spec.dataset, split, pooling=spec.pooling,
                    image_size=spec.image_size, n=n, data_root=spec.data_root,
                    cache_dir=cache_dir, progress=progress,
                )
                for split, n in (("train", spec.n_train), ("test", spec.n_test))
            }
            context = {
                "run_id": run_id, "model": bundle.spec, "weights": bundle.weights,
                "layer": name, "pooling": spec.pooling, "dataset": spec.dataset,
                "image_size": spec.image_size or bundle.input_size,
            }
            log(f"probing {bundle.spec} [{bundle.weights}] {name} (d={feats['train'].X.shape[1]})")
            res = analyze_layer(
                feats["train"].X, feats["train"].y, feats["test"].X, feats["test"].y,
                selectors=spec.selectors, fractions=spec.fractions, seeds=spec.seeds,
                deltas=spec.deltas, context=context, progress=progress,
                bank=ProbeBank(tol=spec.probe_tol, keep_predictions=True, progress=progress),
            )
            job = f"{bundle.weights}-{name}".replace("/", "_")
            write_part(res.results, out / "results", job)
            results.append(res.results)
            summaries.append(res.summary)
            job_keys = {k: context[k] for k in ("model", "weights", "layer")}
            efficiency.append(efficiency_table(res.results).assign(**job_keys))
            fairness.append(fairness_trend(res.results).assign(**job_keys))
    summary = pd.concat(summaries, ignore_index=True)
    atomic_write_text(out / "summary.csv", summary.to_csv(index=False))
    atomic_write_text(out / "summary.md", summary_markdown(summary))
    for name, frames in (("efficiency", efficiency), ("fairness", fairness)):
        table = pd.concat(frames, ignore_index=True)
        atomic_write_text(out / f"{name}.csv", table.to_csv(index=False))
    return pd.concat(results, ignore_index=True), summary


def summary_table(summary: pd.DataFrame, deltas: tuple[float, ...] = (0.8, 0.9, 0.95)) -> pd.DataFrame:
    """Wide table: one row per (model, weights, layer, selector) with full accuracy, DR and k*."""
    keys = [c for c in ("model", "weights", "layer", "dataset", "selector") if c in summary]
    rows = []
    for key, df in summary.groupby(keys, sort=False):
        row = dict(zip(keys, key))
        row["d"] = int(df["d"].iloc[0])
        row["full_acc"] = round(float(df["full_acc"].iloc[0]), 4)
        for delta in deltas:
            r = df[df["delta"].round(6) == round(delta, 6)].iloc[0]
            row[f"DR_{delta:g}"] = round(float(r["dr"]), 3)
            row[f"CI_{delta:g}"] = f"[{r['dr_low']:.2f}, {r['dr_high']:.2f}]"
            row[f"k*_{delta:g}"] = None if pd.isna(r["k_star"]) else int(r["k_star"])
        rows.append(row)
    return pd.DataFrame(rows)


def summary_markdown(summary: pd.DataFrame) -> str:
    """The wide summary table as a GitHub-flavoured markdown table."""
    table = summary_table(summary)
    cols = list(table.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in table.itertuples(index=False)]
    return "\n".join(lines) + "\n"
