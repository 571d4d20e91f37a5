"""End to end on the real MobileNetV2 weights and real Fashion-MNIST, at a small scale."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from drprobe.cli import main
from drprobe.errors import DrprobeError
from drprobe.experiment.store import read_results, write_part
from drprobe.report.run_tables import summary_table

CONTRACT = [
    "run_id", "model", "weights", "layer", "pooling", "dataset", "n_train", "n_val", "n_test",
    "n_classes", "selector", "fraction", "k", "d", "seed", "protocol", "l2", "val_acc",
    "test_acc", "per_class_acc", "gini", "worst_class_acc", "cka", "cka_debiased",
    "probe_params", "drprobe_version",
]
FRACTIONS = [0.005, 0.02, 0.1, 0.3, 1.0]


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory, feature_cache):
    out = tmp_path_factory.mktemp("demo") / "out"
    argv = ["demo", "--out", str(out), "--cache-dir", str(feature_cache), "--n-train", "1500",
            "--n-test", "500", "--image-size", "32", "--seeds", "1,2",
            "--fractions", ",".join(map(str, FRACTIONS)), "--no-progress"]
    assert main(argv) == 0
    return out


@pytest.mark.slow
def test_demo_writes_results_summary_and_figures(demo_run):
    out = demo_run
    for name in ("summary.csv", "summary.md", "efficiency.csv", "fairness.csv", "accuracy.png",
                 "cka.png", "gini.png"):
        assert (out / name).stat().st_size > 0, name
    assert (out / "accuracy.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    results = read_results(out / "results")
    assert set(CONTRACT) <= set(results.columns)
    # wall-clock seconds live apart, so results parts are the same in every run
    assert "fit_seconds" not in results.columns
    timings = read_results(out / "timings")
    assert len(timings) == len(results) and (timings["fit_seconds"] >= 0).all()
    # 2 weights x 2 layers x 2 seeds x 5 fractions, one probe each
    assert len(results) == 2 * 2 * 2 * len(FRACTIONS)
    assert set(results["weights"]) == {"pretrained", "random"}
    assert set(results["layer"]) == {"penultimate", "features.14"}
    assert (results["k"] == (results["fraction"] * results["d"]).astype(int).clip(lower=1)).all()
    per_class = results["per_class_acc"].iloc[0]
    assert len(per_class) == results["n_classes"].iloc[0] == 10
    full = results[results["fraction"] == 1.0]
    assert full["cka"].sub(1).abs().max() < 1e-6


@pytest.mark.slow
def test_demo_science_pretrained_beats_twin_and_curve_rises(demo_run):
    results = read_results(demo_run / "results")
    pen = results[results["layer"] == "penultimate"]
    full = pen[pen["fraction"] == 1.0].groupby("weights")["test_acc"].mean()
    assert full["pretrained"] > full["random"]
    curve = pen[pen["weights"] == "pretrained"].groupby("fraction")["test_acc"].mean()
    assert curve.iloc[-1] > curve.iloc[0] + 0.1  # 6 neurons vs 1280
    summary = pd.read_csv(demo_run / "summary.csv")
    row = summary[(summary["weights"] == "pretrained") & (summary["layer"] == "penultimate")
                  & (summary["delta"] == 0.9)].iloc[0]
    # DR agrees with the curve: the first fraction reaching 0.9 x full accuracy
    threshold = 0.9 * row["full_acc"]
    first = min(f for f, acc in curve.items() if acc >= threshold)
    assert row["f_star"] == pytest.approx(first)
    assert row["dr"] == pytest.approx(1 - first)
    assert row["dr_low"] <= row["dr"] <= row["dr_high"]


@pytest.mark.slow
def test_second_run_reuses_feature_cache(demo_run, feature_cache, tmp_path, monkeypatch):
    from drprobe import features

    def no_extraction(*args, **kwargs):
        raise AssertionError("features were extracted again")

    monkeypatch.setattr(features, "iter_layer_features", no_extraction)
    out = tmp_path / "again"
    argv = ["demo", "--out", str(out), "--cache-dir", str(feature_cache), "--n-train", "1500",
            "--n-test", "500", "--image-size", "32", "--seeds", "1",
            "--fractions", "0.1,1", "--no-progress"]
    assert main(argv) == 0
    assert len(read_results(out / "results")) == 2 * 2 * 2


@pytest.mark.slow
def test_default_demo_meets_the_foundation_claims(tmp_path, capsys):
    """`drprobe demo` with every default (10k / 2k Fashion-MNIST at 64 px, 10 fractions, 3
    seeds), as the README's first command runs it: the pretrained penultimate layer reaches
    0.80 and beats its random-init twin, the curve rises within seed noise, and the printed DR
    table is the one the curves give. About 2 minutes on 2 cores."""
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--cache-dir", str(tmp_path / "cache"),
                 "--no-progress"]) == 0
    printed = capsys.readouterr().out
    results = read_results(out / "results")
    assert sorted(set(results["fraction"])) == [0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5,
                                                 0.8, 1.0]
    assert set(results["seed"]) == {1, 2, 3} and set(results["n_test"]) == {2000}
    pen = results[results["layer"] == "penultimate"]
    full = pen[pen["fraction"] == 1.0].groupby("weights")["test_acc"].mean()
    assert full["pretrained"] >= 0.80 and full["pretrained"] > full["random"] + 0.1
    for weights, df in pen.groupby("weights"):
        by_seed = df.pivot_table(index="fraction", columns="seed", values="test_acc")
        mean, spread = by_seed.mean(axis=1), by_seed.max(axis=1) - by_seed.min(axis=1)
        # each step up in fraction loses at most the seed spread (plus 0.5 point)
        drops = mean.shift(1) - mean
        assert (drops.iloc[1:] <= spread.iloc[1:] + spread.shift(1).iloc[1:] + 0.005).all(), (
            weights, mean.round(4).tolist())
    summary = pd.read_csv(out / "summary.csv")
    for _, row in summary.iterrows():
        df = results[(results["weights"] == row["weights"]) & (results["layer"] == row["layer"])]
        curve = df.groupby("fraction")["test_acc"].mean()
        first = min(f for f, acc in curve.items() if acc >= row["delta"] * row["full_acc"])
        assert row["f_star"] == pytest.approx(first), (row["weights"], row["layer"], row["delta"])
    table = summary_table(summary)
    row = table[(table["weights"] == "pretrained") & (table["layer"] == "penultimate")].iloc[0]
    assert f"{row['full_acc']:.4f}" in printed and (out / "accuracy.png").stat().st_size > 0


def test_store_roundtrip_and_atomic(tmp_path):
    df = pd.DataFrame({"a": [1, 2], "per_class_acc": [[0.1, 0.2], [0.3, 0.4]]})
    path = write_part(df, tmp_path / "r", "job")
    assert path.name == "job.parquet"
    assert [p.name for p in (tmp_path / "r").iterdir()] == ["job.parquet"]
    back = read_results(tmp_path / "r")
    assert back["a"].tolist() == [1, 2]
    assert list(back["per_class_acc"].iloc[1]) == [0.3, 0.4]


def test_store_failed_write_leaves_nothing(tmp_path):
    class Unwritable:
        def to_parquet(self, path, index=False):
            Path(path).write_bytes(b"partial")
            raise OSError("disk full")

    with pytest.raises(DrprobeError, match="cannot write .*job.parquet.*disk full"):
        write_part(Unwritable(), tmp_path, "job")  # type: ignore[arg-type]
    assert list(tmp_path.iterdir()) == []


def test_summary_table_shows_only_the_deltas_the_run_has():
    keys = {"model": "m", "weights": "w", "layer": "l", "dataset": "x", "selector": "random",
            "d": 10, "full_acc": 0.9}
    rows = [{**keys, "delta": delta, "dr": dr, "dr_low": dr - 0.1, "dr_high": dr, "k_star": k}
            for delta, dr, k in ((0.8, 0.7, 3), (0.9, 0.5, 5))]
    table = summary_table(pd.DataFrame(rows))
    assert [c for c in table.columns if c.startswith("DR_")] == ["DR_0.8", "DR_0.9"]
    assert table.loc[0, "k*_0.9"] == 5 and table.loc[0, "CI_0.8"] == "[0.60, 0.70]"
    other = summary_table(pd.DataFrame(rows).assign(delta=[0.5, 0.7]))
    assert [c for c in other.columns if c.startswith("DR_")] == ["DR_0.5", "DR_0.7"]
