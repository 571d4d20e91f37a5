"""One plan builder for the run and the dry run, and each setting in one home: the dry run's plan
of a job is the plan the run follows (fractions or counts), and a bad fraction, budget or device
gets the same one-line message from the command line and from the Python API."""

from __future__ import annotations

import numpy as np
import pytest
import yaml
from helpers import tiny_config

from drprobe.analysis.layer import analyze_layer
from drprobe.analysis.plan import layer_plan
from drprobe.cli import main
from drprobe.devices import check_device, resolve_device
from drprobe.errors import DrprobeError, InvalidValueError
from drprobe.experiment import job_runner
from drprobe.experiment.config import parse_config
from drprobe.experiment.cost import estimate_cost, task_sizes
from drprobe.experiment.plan import plan_jobs
from drprobe.experiment.widths import job_plans
from drprobe.probes import ProbeBank
from drprobe.selectors import PAPER_FRACTIONS
from drprobe.sources.models import load_model
from drprobe.wide.widths import layer_width


# ------------------------------------------------------------------ the dry run equals the run
def _wide_tiny(grid: dict) -> dict:
    """MobileNetV2 (random init) features.4 flattened at 32 px: d = 32·4·4 = 512 on 135 training
    rows, so the plan leaves feature space; two families trained together (random, pca_top)."""
    config = tiny_config("plan", n_train=150, n_test=60, selectors=["random", "pca_top"],
                         pooling="flatten", probe={"l2_grid": [0.1], "max_steps": 30})
    config["models"][0]["weights"] = ["random"]
    config["layers"] = ["features.4"]
    config["seeds"] = [1]
    del config["fractions"]
    return {**config, **grid}


@pytest.mark.parametrize("grid", [{"counts": [3, 40, 200]}, {"fractions": [0.05, 0.5]}],
                         ids=["counts", "fractions"])
def test_dry_run_plan_is_the_plan_the_run_follows(grid, tmp_path, feature_cache, monkeypatch):
    config = parse_config(_wide_tiny(grid))
    (job,) = plan_jobs(config)
    dry = job_plans(config, [job])[job.id]

    ran = []

    def recording(*args, **kwargs):
        ran.append(analyze_layer(*args, **kwargs))
        return ran[-1]

    monkeypatch.setattr(job_runner, "analyze_layer", recording)
    assert job_runner.run_job(config, job, tmp_path / "run", cache_dir=feature_cache)
    (res,) = ran
    rows = res.results[res.results["selector"] == "random"].sort_values("k")
    assert dry.d == int(rows["d"].iloc[0]) == 512
    assert dry.plan.ks == rows["k"].tolist()  # the sizes the run probed
    assert dry.plan.fractions == rows["fraction"].tolist()
    if "counts" in grid:
        assert dry.plan.ks == [3, 40, 200, 512]  # counts, plus the full layer
    run_plan, dry_plan = res.plan, dry.plan.memory
    assert res.plan.path("probes") != "feature"  # the wide path, decided by the plan
    assert dry_plan.budget_bytes == run_plan.budget_bytes
    assert [(s.stage, s.path, s.peak_bytes, s.sizes) for s in dry_plan.stages] == \
        [(s.stage, s.path, s.peak_bytes, s.sizes) for s in run_plan.stages]


def test_dry_run_width_and_plan_line_from_the_architecture():
    bundle = load_model("builtin:mobilenet_v2", weights="random")
    assert layer_width(bundle, "features.4", "flatten", 224) == 32 * 28 * 28
    assert layer_width(bundle, "features.4", "avg", 224) == 32
    data = {"name": "t", "models": [{"spec": "builtin:mobilenet_v2", "weights": ["random"]}],
            "layers": ["features.4"], "pooling": "flatten", "selectors": ["random", "pca_least"],
            "datasets": [{"name": "fashion-mnist", "n_train": 5000, "n_test": 1000,
                          "image_size": 224}]}
    config = parse_config(data)
    jobs = plan_jobs(config)
    (planned,) = job_plans(config, jobs).values()
    line = planned.describe()
    assert line.startswith("d=25,088 · pca: sample space") and "probes: sample space" in line
    assert planned.plan.ks == sorted({max(1, int(f * 25_088)) for f in PAPER_FRACTIONS})
    tight = parse_config({**data, "memory_budget_gb": 2**-10})
    (refused,) = job_plans(tight, jobs).values()
    assert refused.plan is None
    assert "refused" in refused.describe() and "memory_budget_gb" in refused.describe()


def test_task_sizes_and_cost_follow_the_config():
    data = {"name": "t", "models": [{"spec": "builtin:mobilenet_v2", "weights": ["random"]}],
            "datasets": [{"name": "cifar100"}, {"name": "digits", "n_train": 300,
                                                 "labels": "parity"}]}
    config = parse_config(data)
    assert task_sizes(config.datasets[0]) == (50_000, 10_000, 100)
    assert task_sizes(config.datasets[1]) == (300, 539, 2)  # two groups: even, odd
    jobs = plan_jobs(config)
    # the paper's grid (15 fractions, the full layer among them) x 3 seeds, per job
    assert estimate_cost(config, jobs)["probes"] == len(jobs) * 15 * 3
    counted = parse_config({**data, "counts": [4, 8]})
    assert estimate_cost(counted, jobs)["probes"] == len(jobs) * 3 * 3  # + the full layer


def test_neither_fractions_nor_counts_is_the_papers_grid_everywhere():
    kw = {"n_train": 90, "n_val": 10, "n_test": 50, "n_classes": 3}
    default = layer_plan(4096, **kw)
    assert default.fractions == list(PAPER_FRACTIONS)
    assert layer_plan(4096, fractions=[0.5], **kw).fractions == [0.5, 1.0]
    assert layer_plan(4096, counts=[7], **kw).ks == [7, 4096]


# ------------------------------------------------ one check, one message, CLI and Python API
def _api_message(**kwargs) -> str:
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(60, 8)).astype(np.float32), np.arange(60) % 2
    with pytest.raises(DrprobeError) as err:
        analyze_layer(X[:40], y[:40], X[40:], y[40:], seeds=[1], progress=False, **kwargs)
    return str(err.value)


def _cli_line(capsys, argv: list[str]) -> str:
    code = main(argv)
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1, lines
    return lines[0]


def test_a_bad_fraction_reads_the_same_from_the_cli_and_the_api(capsys, tmp_path):
    api = _api_message(fractions=[0.5, 1.5])
    assert api == "fraction 1.5 is outside the valid range (0, 1]"
    line = _cli_line(capsys, ["probe", str(tmp_path / "f.npz"), "--fractions", "0.5,1.5",
                              "--out", str(tmp_path / "out"), "--no-progress"])
    assert line == f"drprobe: error: probe options: fractions[1]: {api}"
    assert not (tmp_path / "out").exists()


def test_a_bad_budget_reads_the_same_from_the_cli_and_the_api(capsys, tmp_path):
    api = _api_message(memory_budget_gb=-0.5)
    assert api == "memory_budget_gb must be a positive number of GiB; got -0.5"
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({**tiny_config("b"), "memory_budget_gb": -0.5}))
    line = _cli_line(capsys, ["run", str(path), "--dry-run", "--out", str(tmp_path / "out")])
    assert line == f"drprobe: error: {path}: memory_budget_gb: {api}"


@pytest.mark.parametrize("device", ["mps", "tpu", "cuda:x"])
def test_a_bad_probe_device_reads_the_same_everywhere(capsys, tmp_path, device):
    with pytest.raises(InvalidValueError) as err:
        ProbeBank(device=device, progress=False).fit(
            np.eye(4, dtype=np.float32), np.arange(4) % 2, np.eye(4, dtype=np.float32),
            np.arange(4) % 2, [])
    api = str(err.value)
    assert device in api and "valid choices: auto (CUDA if present), cpu, cuda, cuda:N" in api
    with pytest.raises(InvalidValueError) as again:
        resolve_device(device, mps=False)
    assert str(again.value) == api
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({**tiny_config("d"), "device": device}))
    line = _cli_line(capsys, ["run", str(path), "--dry-run", "--out", str(tmp_path / "out")])
    assert line == f"drprobe: error: {path}: device: {api}"


def test_mps_is_a_device_for_extraction_only():
    assert check_device("mps") == "mps"
    with pytest.raises(InvalidValueError, match="'mps' serves feature extraction only"):
        check_device("mps", mps=False)
    assert check_device("cuda:1", mps=False) == "cuda:1"
    with pytest.raises(InvalidValueError, match="unknown device 'gpu'.*cuda:N, mps$"):
        check_device("gpu")
