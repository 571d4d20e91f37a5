"""The CLI: listings work, and every bad input is one line on stderr, exit 2, nothing written."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import run_cli as run

from drprobe.cli import main
from drprobe.experiment.store import read_results

SMALL = ["--n-train", "200", "--n-test", "100", "--image-size", "32", "--seeds", "1",
         "--fractions", "0.1,1", "--layers", "penultimate", "--no-progress"]


def test_models_lists_builtins(capsys):
    code, out, _ = run(capsys, "models")
    assert code == 0
    assert "builtin:mobilenet_v2" in out.split()
    assert "builtin:efficientnet_lite0" in out.split()


def test_layers_lists_shapes(capsys):
    code, out, _ = run(capsys, "layers", "builtin:mobilenet_v2", "--input-size", "64")
    assert code == 0
    rows = {line.split()[0]: line.split()[-1] for line in out.splitlines() if line.strip()}
    assert rows["penultimate"] == "1280"
    assert rows["features.14"] == "160x2x2"
    assert rows["features.18"] == "1280x2x2"


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["layers", "builtin:resnet9000"], "builtin:mobilenet_v2"),
        (["demo", "--model", "nonet"], "builtin:mobilenet_v2"),
        (["demo", "--layers", "features.99"], "features.14"),
        (["demo", "--dataset", "cifar11"], "fashion-mnist"),
        (["demo", "--fractions", "0,0.5"], "(0, 1]"),
        (["demo", "--fractions", "0.5,1.5"], "(0, 1]"),
        (["demo", "--fractions", "half"], "comma-separated"),
        (["demo", "--n-train", "0"], "--n-train"),
    ],
)
def test_bad_input_is_one_line_exit_2_nothing_written(capsys, tmp_path, argv, needle):
    out = tmp_path / "out"
    cache = tmp_path / "cache"
    extra = ["--out", str(out), "--cache-dir", str(cache)] if argv[0] == "demo" else []
    code, _, err = run(capsys, *argv, *extra)
    assert code == 2
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert needle in lines[0]
    assert not out.exists() and not cache.exists()


def test_missing_dataset_files(capsys, tmp_path):
    out = tmp_path / "out"
    code, _, err = run(capsys, "demo", "--out", str(out), "--data-root", str(tmp_path / "nowhere"),
                       "--cache-dir", str(tmp_path / "cache"), *SMALL)
    assert code == 2
    assert len(err.strip().splitlines()) == 1
    assert "dataset-fashion-mnist" in err
    assert not out.exists()


def test_output_folder_that_is_a_file(capsys, tmp_path):
    out = tmp_path / "taken"
    out.write_text("not a folder")
    code, _, err = run(capsys, "demo", "--out", str(out), "--cache-dir", str(tmp_path / "c"), *SMALL)
    assert code == 2
    assert "is a file" in err and len(err.strip().splitlines()) == 1
    assert out.read_text() == "not a folder"
    assert not (tmp_path / "c").exists()


def test_usage_error_exit_2(capsys):
    code, _, err = run(capsys, "demo", "--no-such-flag")
    assert code == 2
    assert "no-such-flag" in err


def test_console_script_exit_code(tmp_path):
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-m", "drprobe.cli", "layers", "nonet"], capture_output=True, text=True,
        cwd=tmp_path, check=False,
    )
    assert proc.returncode == 2
    assert proc.stderr.startswith("drprobe: error: unknown model")
    assert list(Path(tmp_path).iterdir()) == []


def test_checkpoint_with_wrong_keys_is_refused(capsys, tmp_path):
    import torch

    bad = tmp_path / "bad.pt"
    torch.save({"conv.weight": torch.zeros(3)}, bad)
    out = tmp_path / "out"
    code, _, err = run(capsys, "demo", "--checkpoint", str(bad), "--out", str(out),
                       "--cache-dir", str(tmp_path / "cache"), *SMALL)
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and "conv.weight" in err
    assert not out.exists() and not (tmp_path / "cache").exists()


COMMANDS = ["demo", "run", "pretrain", "card", "extract", "probe", "layers", "models", "datasets",
            "report", "results", "study"]


def test_every_command_is_covered_here():
    from drprobe.cli import app

    assert sorted(COMMANDS) == sorted(app.commands)


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_help_has_an_example(capsys, command):
    code, out, _ = run(capsys, command, "--help")
    assert code == 0
    assert "Example:" in out and f"drprobe {command}" in out.split("Example:")[1]


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["run", "nothere.yaml"], "nothere.yaml: no such config file"),
        (["run", "nothere.yaml", "--address", "127.0.0.1:1"], "--address needs --executor ray"),
        (["extract", "nonet", "penultimate", "digits"], "builtin:mobilenet_v2"),
        (["extract", "builtin:mobilenet_v2", "features.99", "digits"], "features.14"),
        (["extract", "builtin:mobilenet_v2", "penultimate", "cifar11"], "fashion-mnist"),
        (["extract", "builtin:mobilenet_v2", "penultimate", "digits", "--n", "0"], "--n "),
        (["extract", "builtin:mobilenet_v2", "penultimate", "digits", "--out", "f.csv"], ".npz"),
        (["probe", "nothere.npz"], "nothere.npz"),
        (["study", "nowhere"], "has no pretrain.yaml"),
        (["probe", "nothere.npz", "--selectors", "rand"], "unknown selector 'rand'"),
        (["probe", "nothere.npz", "--fractions", "2"], "(0, 1]"),
    ],
)
def test_new_commands_bad_input_one_line_exit_2(capsys, tmp_path, monkeypatch, argv, needle):
    monkeypatch.chdir(tmp_path)
    cache = tmp_path / "cache"
    extra = ["--cache-dir", str(cache)] if argv[0] in ("run", "extract") else []
    code, _, err = run(capsys, *argv, *extra)
    assert code == 2
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert needle in lines[0]
    assert [p.name for p in tmp_path.iterdir()] == []  # nothing written: no cache, no run folder


@pytest.fixture(scope="module")
def probe_run(tmp_path_factory):
    """``drprobe probe`` on scikit-learn digits as pixel features (no network): a run folder."""
    import numpy as np

    from drprobe.sources.datasets import load_dataset

    tmp = tmp_path_factory.mktemp("cli-run")
    splits = {s: load_dataset("digits", s) for s in ("train", "test")}
    arrays = {}
    for split, ds in splits.items():
        arrays[f"X_{split}"] = ds.images.reshape(len(ds.labels), -1).astype(np.float32) / 255
        arrays[f"y_{split}"] = ds.labels
    np.savez(tmp / "pixels.npz", **arrays)
    out = tmp / "run"
    code = main(["probe", str(tmp / "pixels.npz"), "--out", str(out), "--fractions", "0.1,0.5,1",
                 "--seeds", "1,2", "--selectors", "random,pca_top", "--no-progress"])
    assert code == 0
    return out


def test_results_prints_the_runs_table(probe_run, capsys):
    code, out, _ = run(capsys, "results", str(probe_run))
    assert code == 0
    parts = read_results(probe_run / "results")
    full = parts[parts["k"] == parts["d"]].groupby("selector")["test_acc"].mean()
    rows = {line.split()[4]: line.split() for line in out.splitlines()[1:] if line.strip()}
    assert set(rows) == {"random", "pca_top"}
    for selector, acc in full.items():
        assert f"{acc:.4f}".rstrip("0") in " ".join(rows[selector])
    code, out, _ = run(capsys, "results", str(probe_run), "--sql",
                       "SELECT count(*) AS n FROM results")
    assert code == 0 and out.split()[-1] == str(len(parts))


@pytest.mark.slow  # draws and renders every figure of a run
def test_report_draws_every_figure_it_lists(probe_run, capsys, tmp_path):
    code, out, _ = run(capsys, "report", str(probe_run), "--out", str(tmp_path / "rep"),
                       "--formats", "svg", "--no-progress")
    assert code == 0 and out.strip() == f"report: {tmp_path / 'rep' / 'report.html'}"
    page = (tmp_path / "rep" / "report.html").read_text()
    drawn = sorted(p.name for p in (tmp_path / "rep").glob("*.svg"))
    assert drawn and all(f'id="fig-{name[:-4]}"' in page for name in drawn)
    assert "selectors-" in " ".join(drawn)  # two selectors: the comparison is drawn


@pytest.mark.parametrize("command", ["report", "results"])
def test_report_and_results_refuse_a_folder_that_is_no_run(capsys, tmp_path, command):
    code, _, err = run(capsys, command, str(tmp_path / "nowhere"))
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and "not a run folder" in err
    assert list(tmp_path.iterdir()) == []


HOLD = """
import sys, time
import click
import numpy as np
from drprobe import cli
from drprobe.wide.columns import ColumnReader

@cli.app.command("hold")
@click.argument("folder")
def hold(folder):
    with ColumnReader(np.ones((50, 40), dtype=np.float32), scratch_dir=folder, in_memory_bytes=0):
        print("ready", flush=True)
        time.sleep(120)

sys.exit(cli.main(["hold", sys.argv[1]]))
"""


@pytest.mark.slow  # a fresh interpreter importing the whole CLI (torch included): about 6 s
def test_sigterm_unwinds_like_ctrl_c_and_removes_scratch_files(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path)], text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout.readline().strip() == "ready"
    assert len(list(tmp_path.iterdir())) == 1  # the scratch copy exists while the command runs
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert "drprobe: interrupted" in err
    assert list(tmp_path.iterdir()) == []
