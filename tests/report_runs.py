"""Tiny run folders for the query and report tests, built the way a study writes them.

Real MobileNetV2 features of scikit-learn's digits at 32 px, 300 train / 200 test images: by
default the ImageNet weights at ``features.14`` (160-d) and ``features.13`` (96-d) and the seeded
random-init twin at ``features.14`` only (so the layer heat map has an empty cell), selectors
random and pca_top, fractions 0.1, 0.5, 1 and seeds 1, 2. Each (weights, layer) job is analysed with
:func:`drprobe.analysis.layer.analyze_layer` and written as one results part; the DR summary
and the efficiency table go to ``summary.csv`` and ``efficiency.csv``.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd

from drprobe.analysis.layer import analyze_layer
from drprobe.experiment.store import PROBE_KEYS, write_part
from drprobe.features import get_features
from drprobe.probes import ProbeBank
from drprobe.report.run_tables import efficiency_table
from drprobe.sources.models import load_model

MODEL = "builtin:mobilenet_v2"
TIMING = ["fit_seconds", "select_seconds"]


def make_run(
    run: Path,
    cache: Path,
    *,
    jobs: tuple[tuple[str, str], ...] = (("pretrained", "features.14"),
                                         ("pretrained", "features.13"),
                                         ("random", "features.14")),
    selectors: tuple[str, ...] = ("random", "pca_top"),
) -> Path:
    """Write a run folder at ``run``: one results part per (weights, layer) of ``jobs``."""
    summaries, efficiency = [], []
    bundles = {w: load_model(MODEL, w, 0) for w in dict.fromkeys(w for w, _ in jobs)}
    for w, layer in jobs:
        feats = {split: get_features(bundles[w], layer, "digits", split, image_size=32, n=n,
                                     cache_dir=cache, progress=False)
                 for split, n in (("train", 300), ("test", 200))}
        context = {"run_id": "test-run", "model": MODEL, "weights": w, "layer": layer,
                   "pooling": "avg", "dataset": "digits", "image_size": 32}
        out = analyze_layer(feats["train"].X, feats["train"].y, feats["test"].X, feats["test"].y,
                            selectors=selectors, fractions=(0.1, 0.5, 1.0), seeds=(1, 2),
                            n_boot=50, context=context, progress=False,
                            bank=ProbeBank(tol=1e-3, keep_predictions=True, progress=False))
        write_part(out.results, run / "results", f"{w}-{layer}")
        summaries.append(out.summary)
        efficiency.append(efficiency_table(out.results).assign(model=MODEL, weights=w, layer=layer))
    pd.concat(summaries).to_csv(run / "summary.csv", index=False)
    pd.concat(efficiency).to_csv(run / "efficiency.csv", index=False)
    return run


def split_timings(run: Path, dest: Path) -> Path:
    """Copy ``run`` to ``dest`` with the fit and selection seconds moved out of the results parts
    into ``timings/*.parquet`` (keyed by the probe columns), as newer runners write them.
    """
    shutil.copytree(run, dest)
    for part in sorted((dest / "results").glob("*.parquet")):
        results = pd.read_parquet(part)
        write_part(results[list(PROBE_KEYS) + TIMING], dest / "timings", part.stem)
        write_part(results.drop(columns=TIMING), dest / "results", part.stem)
    return dest


def shared_run(cache: Path, dest: Path) -> Path:
    """A copy at ``dest`` of the default :func:`make_run` folder, built once per test session.

    The original lives beside the session's feature cache (``cache.parent``), so every test
    file of a session shares one build and each gets a copy it may change.
    """
    original = cache.parent / "report-run"
    if not original.is_dir():
        building = cache.parent / "report-run-tmp"
        shutil.rmtree(building, ignore_errors=True)
        make_run(building, cache)
        building.rename(original)
    shutil.copytree(original, dest)
    return dest
