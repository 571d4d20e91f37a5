"""`drprobe study` end to end on the tiny study (configs/study/tiny): pretrain, run, report."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from drprobe.errors import InvalidValueError
from drprobe.pipeline import run_configs, run_study

TINY = Path(__file__).resolve().parents[1] / "configs" / "study" / "tiny"


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
    parts = sorted((tmp_path / "runs/study-tiny").glob("*/*/*/model.pt")) + sorted(
        (tmp_path / "runs/study-tiny/downstream/results").glob("*.parquet"))
    stamps = [p.stat().st_mtime_ns for p in parts]
    run_study(TINY, "runs/study-tiny", jobs=1, progress=False, log=None,
              cache_dir=str(tmp_path / "cache"))  # everything is skipped
    assert len(parts) == 4 + 12 and [p.stat().st_mtime_ns for p in parts] == stamps
    calls = [json.loads(line) for line in
             (tmp_path / "runs/study-tiny/timings.jsonl").read_text().splitlines()]
    assert len(calls) == 2 and calls[0]["stages"] == timings  # the first call is kept
