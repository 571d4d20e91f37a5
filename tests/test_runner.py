"""The runner end to end on real MobileNetV2 weights and scikit-learn digits, at a tiny scale:
parts and tables, skipping finished jobs, the demo through the same runner, extract + probe."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from helpers import TINY_JOBS, tiny_config

from drprobe.cli import main
from drprobe.errors import InvalidValueError
from drprobe.experiment.config import parse_config
from drprobe.experiment.runner import run_experiment
from drprobe.experiment.store import PROBE_KEYS as KEY_COLUMNS
from drprobe.experiment.store import TIMING_COLUMNS, read_results
from drprobe.report.publish import publish_run

TINY = tiny_config("tiny", n_train=400, n_test=200)
TABLES = ("summary.csv", "summary.md", "efficiency.csv", "fairness.csv")


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, feature_cache):
    out = tmp_path_factory.mktemp("runner") / "run"
    output = run_experiment(parse_config(TINY), out, cache_dir=feature_cache, progress=False)
    publish_run(output.results, output.summary, out)
    return out, output


@pytest.mark.slow
def test_parts_tables_and_run_files(tiny_run):
    out, output = tiny_run
    assert output.ran == TINY_JOBS and output.skipped == []
    plan = json.loads((out / "plan.json").read_text())
    assert [j["id"] for j in plan["jobs"]] == TINY_JOBS
    assert (out / "config.yaml").read_text().startswith("name: tiny")
    for kind in ("results", "summary", "timings"):
        assert sorted(p.stem for p in (out / kind).glob("*.parquet")) == sorted(TINY_JOBS)
    for name in (*TABLES, "accuracy.png", "cka.png", "gini.png"):
        assert (out / name).stat().st_size > 0, name

    results = read_results(out / "results")
    # 2 weights x 2 seeds x 3 subset sizes (0.1, 0.5 and the full layer)
    assert len(results) == 2 * 2 * 3
    assert set(results["k"]) == {16, 80, 160} and set(results["d"]) == {160}
    assert not set(TIMING_COLUMNS) & set(results.columns)
    assert results["test_acc"].between(0, 1).all()
    pd.testing.assert_frame_equal(results, output.results)
    timings = pd.concat([pd.read_parquet(p) for p in sorted((out / "timings").glob("*"))])
    assert list(timings.columns) == KEY_COLUMNS + TIMING_COLUMNS
    joined = results.merge(timings, on=KEY_COLUMNS, how="left", validate="one_to_one")
    assert joined["fit_seconds"].notna().all() and (joined["fit_seconds"] >= 0).all()

    summary = pd.read_csv(out / "summary.csv")
    assert list(summary.groupby(["weights"], sort=False).size().index) == ["pretrained", "random"]
    assert set(summary["delta"]) == {0.8, 0.9, 0.95, 0.99}
    full = results[results["k"] == 160].groupby("weights")["test_acc"].mean()
    acc = summary.groupby("weights")["full_acc"].first()
    assert acc.to_dict() == pytest.approx(full.to_dict())
    assert full["pretrained"] > full["random"]  # ImageNet features beat the random twin
    eff = pd.read_csv(out / "efficiency.csv")
    assert set(eff["weights"]) == {"pretrained", "random"} and eff["on_frontier"].any()


@pytest.mark.slow
def test_second_run_skips_every_job_and_tables_are_identical(tiny_run, feature_cache,
                                                             monkeypatch):
    from drprobe import features
    from drprobe.experiment import job_runner

    out, _ = tiny_run
    before = {name: (out / name).read_bytes() for name in TABLES}
    parts = {p: p.read_bytes() for p in (out / "results").glob("*.parquet")}

    def recompute(*args, **kwargs):
        raise AssertionError("a finished job was computed again")

    monkeypatch.setattr(job_runner, "analyze_layer", recompute)
    monkeypatch.setattr(features, "iter_layer_features", recompute)
    # what a killed run leaves: temporary parts/tables and a half-written cache entry
    stale = [out / "results" / f".{TINY_JOBS[0]}.parquet.tmp-999999",
             out / ".summary.csv.tmp-999999", feature_cache / ".tmp-killed" / "features.npy"]
    for path in stale:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"partial")
    again = run_experiment(parse_config(TINY), out, cache_dir=feature_cache, progress=False)
    publish_run(again.results, again.summary, out)
    assert again.ran == [] and again.skipped == TINY_JOBS
    assert not any(p.exists() for p in stale) and not (feature_cache / ".tmp-killed").exists()
    assert {name: (out / name).read_bytes() for name in TABLES} == before
    assert {p: p.read_bytes() for p in parts} == parts


@pytest.mark.slow
def test_a_different_config_is_refused(tiny_run, feature_cache):
    out, _ = tiny_run
    listing = sorted(p.name for p in out.rglob("*"))
    other = {**TINY, "seeds": [1, 2, 3]}
    with pytest.raises(InvalidValueError, match="holds a different experiment"):
        run_experiment(parse_config(other), out, cache_dir=feature_cache, progress=False)
    assert sorted(p.name for p in out.rglob("*")) == listing


@pytest.mark.slow
def test_demo_goes_through_the_runner_and_prints_the_table(tmp_path, feature_cache, capsys):
    out = tmp_path / "demo"
    argv = ["demo", "--out", str(out), "--cache-dir", str(feature_cache), "--dataset", "digits",
            "--n-train", "400", "--n-test", "200", "--image-size", "32", "--layers",
            "features.14", "--fractions", "0.1,0.5,1", "--seeds", "1,2", "--no-progress"]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "Diffused redundancy of builtin:mobilenet_v2 on digits (360 train / 40 val / 200 test)" \
        in text
    header = next(line for line in text.splitlines() if "full_acc" in line).split()
    assert header == ["model", "weights", "layer", "dataset", "selector", "d", "full_acc",
                      "DR_0.8", "CI_0.8", "k*_0.8", "DR_0.9", "CI_0.9", "k*_0.9", "DR_0.95",
                      "CI_0.95", "k*_0.95"]
    rows = [line.split() for line in text.splitlines() if line.startswith("builtin:")]
    assert [r[1] for r in rows] == ["pretrained", "random"]
    # the demo is the tiny config with the quickstart's name and deltas: same numbers
    demo = pd.read_csv(out / "summary.csv")
    assert (out / "config.yaml").read_text().startswith("name: quickstart")
    assert len(demo) == 2 * 4 and demo["full_acc"].between(0, 1).all()
    # `drprobe run` of the demo's resolved config into the demo folder has nothing left to do
    assert main(["run", str(out / "config.yaml"), "--out", str(out), "--cache-dir",
                 str(feature_cache), "--no-progress"]) == 0
    assert "ran 0 job(s), 2 already complete" in capsys.readouterr().out


@pytest.mark.slow
def test_extract_then_probe_with_counts(tmp_path, feature_cache, capsys, tiny_run):
    entries = sorted(feature_cache.glob("*/*/meta.json"))
    npz = tmp_path / "f14.npz"
    common = ["builtin:mobilenet_v2", "features.14", "digits", "--image-size", "32",
              "--cache-dir", str(feature_cache), "--out", str(npz), "--no-progress"]
    assert main(["extract", *common, "--split", "train", "--n", "400"]) == 0
    assert main(["extract", *common, "--split", "test", "--n", "200"]) == 0
    text = capsys.readouterr().out
    assert "200 x 160 float32, 10 classes" in text
    # the tiny run already cached these two entries: extract found them, made none
    assert sorted(feature_cache.glob("*/*/meta.json")) == entries
    printed = [line.split("entry: ")[1] for line in text.splitlines() if "entry: " in line]
    assert all((feature_cache / p).resolve() in {e.parent.resolve() for e in entries}
               for p in printed)
    with np.load(npz) as arrays:
        assert sorted(arrays.files) == ["X_test", "X_train", "y_test", "y_train"]
        assert arrays["X_train"].shape == (400, 160) and arrays["y_test"].shape == (200,)

    out = tmp_path / "probe"
    assert main(["probe", str(npz), "--layer", "features.14", "--counts", "8,32,160",
                 "--seeds", "1", "--out", str(out), "--no-progress"]) == 0
    assert "Diffused redundancy of" in capsys.readouterr().out
    results = read_results(out / "results")
    assert sorted(set(results["k"])) == [8, 32, 160]
    assert set(results["layer"]) == {"features.14"} and set(results["n_test"]) == {200}
    assert results.loc[results["k"] == 160, "test_acc"].iloc[0] > 0.8
    assert (out / "summary.csv").exists() and (out / "accuracy.png").exists()


def test_a_folder_of_other_files_is_refused(tmp_path, feature_cache):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    with pytest.raises(InvalidValueError, match="holds no drprobe run.*notes.txt"):
        run_experiment(parse_config(TINY), out, cache_dir=feature_cache, progress=False)
    assert [p.name for p in out.iterdir()] == ["notes.txt"]


FAITHFUL = {**TINY, "name": "faithful", "protocol": "faithful", "fractions": [0.25, 1.0],
            "seeds": [1], "models": [{"spec": "builtin:mobilenet_v2", "weights": ["pretrained"]}],
            "faithful": {"epochs": 3, "step_size": 2, "batch_size": 64, "lr": 0.05,
                         "weight_decay": 1e-4}}


@pytest.mark.slow
def test_faithful_protocol_through_the_runner_equals_the_faithful_bank(tmp_path, feature_cache):
    """The runner's faithful job trains the same heads as FaithfulBank called directly on the
    same images (same subsample, split and seeds), and records protocol 'faithful'."""
    from drprobe.probes.faithful import FaithfulBank
    from drprobe.selectors import make_family
    from drprobe.sources.datasets import load_dataset, subsample, train_val_split
    from drprobe.sources.models import load_model

    config = parse_config(FAITHFUL)
    run_experiment(config, tmp_path / "run", cache_dir=feature_cache, progress=False)
    got = read_results(tmp_path / "run" / "results").sort_values("k")
    assert set(got["protocol"]) == {"faithful"} and list(got["k"]) == [40, 160]
    assert set(got["l2"]) == {1e-4}  # the weight decay, as FaithfulBank reports it

    train, test = (subsample(load_dataset("digits", split), n, 0)
                   for split, n in (("train", 400), ("test", 200)))
    family = make_family("random", np.zeros((1, 160)), [40, 160], seed=1, fractions=[0.25, 1.0])
    tr, va = train_val_split(train.labels, 0.1, 0)  # the job's split (val_fraction, seed 0)
    bank = FaithfulBank(load_model("builtin:mobilenet_v2", "pretrained"), "features.14",
                        image_size=32, epochs=3, step_size=2, batch_size=64, lr=0.05,
                        weight_decay=1e-4, progress=False)
    want = bank.fit(train.images[tr], train.labels[tr], train.images[va], train.labels[va],
                    [family]).evaluate(test.images, test.labels)
    np.testing.assert_allclose(got["test_acc"], [r.test_acc for r in want], atol=1e-12)
    assert got["test_acc"].iloc[-1] > 0.3  # 10 classes (chance 0.1), 3 epochs of augmented images


def test_faithful_protocol_on_precomputed_features_is_refused(tmp_path, digits_npz):
    config = parse_config({
        "name": "pre", "models": [{"spec": "precomputed", "weights": ["pretrained"]}],
        "layers": ["x"], "protocol":
        "faithful", "datasets": [{"name": f"features:{digits_npz}"}], "fractions": [1.0]})
    with pytest.raises(InvalidValueError, match="protocol 'faithful'.*valid for precomputed"):
        run_experiment(config, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()


