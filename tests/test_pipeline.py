"""`drprobe study` end to end on the tiny study (configs/study/tiny): pretrain, run, report."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from drprobe.errors import InvalidValueError
from drprobe.pipeline import run_configs, run_study
from drprobe.sources.builtin import sha256_file

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "configs" / "study" / "tiny"


def _parts(out: Path) -> list[Path]:
    """The tiny study's checkpoints (4) and results parts (12) in ``out``."""
    return sorted(out.glob("*/*/*/model.pt")) + sorted(
        (out / "downstream/results").glob("*.parquet"))


def test_run_configs_skip_pretraining_grids(tmp_path):
    for name in ("pretrain.yaml", "pretrain-tiny.yaml", "b.yaml", "a.yaml", "notes.txt"):
        (tmp_path / name).write_text("name: x\n")
    assert [p.name for p in run_configs(tmp_path)] == ["a.yaml", "b.yaml"]
    with pytest.raises(InvalidValueError, match="has no pretrain.yaml"):
        run_study(tmp_path / "nowhere", tmp_path / "out", log=None)


@pytest.mark.slow
def test_tiny_study_end_to_end(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the configs name their checkpoints under runs/study-tiny
    timings = run_study(TINY, "runs/study-tiny", figures=tmp_path / "figs", jobs=1,
                        progress=False, log=None, cache_dir=str(tmp_path / "cache"))
    assert set(timings) == {"pretrain", "run downstream", "report downstream"}
    saved = json.loads((tmp_path / "runs/study-tiny/timings.json").read_text())
    assert saved == timings
    table = pd.read_csv(tmp_path / "figs" / "downstream-variants.csv")
    assert set(table["variant"]) == {"ce", "drop0.5", "ce [random]"}
    assert (table["networks"] == 2).all()
    assert set(table["dataset"]) == {"digits", "digits+parity"}
    ce = table[table["variant"] == "ce"]
    assert (ce["dr_diff"] == 0).all()  # the reference against itself
    assert (tmp_path / "figs" / "downstream-variants-dr.png").stat().st_size > 5000
    parts = _parts(tmp_path / "runs/study-tiny")
    stamps = [p.stat().st_mtime_ns for p in parts]
    run_study(TINY, "runs/study-tiny", jobs=1, progress=False, log=None,
              cache_dir=str(tmp_path / "cache"))  # everything is skipped
    assert len(parts) == 4 + 12 and [p.stat().st_mtime_ns for p in parts] == stamps
    calls = [json.loads(line) for line in
             (tmp_path / "runs/study-tiny/timings.jsonl").read_text().splitlines()]
    assert len(calls) == 2 and calls[0]["stages"] == timings  # the first call is kept


def _study(cwd: Path) -> subprocess.Popen:
    """`drprobe study` of the tiny study in ``cwd``, with its own feature cache, in a process
    group of its own (so a kill would take pretraining workers too; --jobs 1 spares their
    start-up, and results do not depend on jobs: test_pretrain_run.py)."""
    cwd.mkdir(exist_ok=True)
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1",
           "DRPROBE_CACHE": str(cwd / "cache")}
    return subprocess.Popen([sys.executable, "-m", "drprobe.cli", "study", str(TINY), "--out",
                             "runs/study-tiny", "--jobs", "1", "--threads", "1", "--no-progress"],
                            cwd=cwd, env=env, start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)


def _digests(cwd: Path) -> dict[str, str]:
    _, err = (proc := _study(cwd)).communicate(timeout=600)
    assert proc.returncode == 0, err[-2000:]
    out = cwd / "runs/study-tiny"
    return {p.relative_to(out).as_posix(): sha256_file(p) for p in _parts(out)}


@pytest.mark.slow
def test_killed_study_resumes_to_the_same_checkpoints_and_results(tmp_path):
    want = _digests(tmp_path / "a")
    assert len(want) == 4 + 12
    out = tmp_path / "b" / "runs/study-tiny"
    for pattern, total in (("pretrain/*/*/model.pt", 4), ("downstream/results/*.parquet", 12)):
        proc = _study(tmp_path / "b")  # started, then resumed after the pretraining kill
        deadline = time.monotonic() + 300
        while not any(out.glob(pattern)) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=60)
        assert proc.returncode == -signal.SIGKILL
        assert 0 < len(list(out.glob(pattern))) < total  # killed with the stage under way
    assert _digests(tmp_path / "b") == want  # resumed to the end
