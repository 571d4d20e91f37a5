"""Resume: `drprobe run` SIGKILLed at seeded-random moments, then rerun to completion, gives the
same results parts (byte for byte) and tables as an uninterrupted run, and leaves no temporary or
partial file in the run folder or the feature cache."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from helpers import tiny_config

from drprobe.experiment.config import load_config
from drprobe.experiment.runner import run_experiment
from drprobe.report.publish import publish_run

CONFIG = tiny_config("resume")
KILLS = 3
STARTUP_SECONDS = 4.0  # a fresh `drprobe run` process importing torch, roughly


def drprobe_run(config: Path, out: Path, cache: Path) -> subprocess.Popen:
    argv = [sys.executable, "-m", "drprobe.cli", "run", str(config), "--out", str(out),
            "--cache-dir", str(cache), "--no-progress"]
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def finish(proc: subprocess.Popen) -> None:
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err


def leftovers(*folders: Path) -> list[Path]:
    """Files or folders that look temporary or partial."""
    return [p for folder in folders for p in folder.rglob("*")
            if ".tmp" in p.name or p.name.endswith((".partial", ".part"))]


@pytest.mark.slow
def test_killed_runs_resume_to_identical_results(tmp_path):
    config = tmp_path / "resume.yaml"
    config.write_text(yaml.safe_dump(CONFIG))

    reference, ref_cache = tmp_path / "reference", tmp_path / "cache-ref"
    start = time.monotonic()
    done = run_experiment(load_config(config), reference, cache_dir=ref_cache, progress=False)
    publish_run(done.results, done.summary, reference)
    duration = time.monotonic() - start + STARTUP_SECONDS

    out, cache = tmp_path / "killed", tmp_path / "cache"
    rng = random.Random(20261124)
    for _ in range(KILLS):
        proc = drprobe_run(config, out, cache)
        deadline = time.monotonic() + rng.uniform(0.15, 0.85) * duration
        while proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=60)
    finish(drprobe_run(config, out, cache))

    names = sorted(p.name for p in (reference / "results").glob("*.parquet"))
    assert len(names) == 2
    assert sorted(p.name for p in (out / "results").glob("*.parquet")) == names
    for name in names:
        assert (out / "results" / name).read_bytes() == (reference / "results" / name).read_bytes()
    for table in ("summary.csv", "efficiency.csv", "fairness.csv", "plan.json", "config.yaml"):
        assert (out / table).read_text() == (reference / table).read_text(), table
    assert leftovers(out, cache) == []
    assert leftovers(reference, ref_cache) == []
