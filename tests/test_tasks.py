"""Derived downstream tasks: label groupings and null baselines, alone and through a run."""

from __future__ import annotations

import numpy as np
import pytest

from drprobe.analysis.tasks import (
    GROUPINGS,
    apply_task,
    check_grouping,
    group_labels,
    resolve_grouping,
)
from drprobe.errors import ConfigError, InvalidValueError
from drprobe.experiment.config import parse_config


def test_named_groupings_known_answers():
    digits = np.arange(10)
    assert group_labels(digits, GROUPINGS["parity"]).tolist() == [0, 1] * 5
    assert group_labels(digits, GROUPINGS["ge5"]).tolist() == [0] * 5 + [1] * 5
    assert group_labels(digits, GROUPINGS["pairs"]).tolist() == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]
    # Fashion-MNIST: 5 sandal, 7 sneaker, 9 ankle boot are footwear; 8 is bag
    assert group_labels(digits, GROUPINGS["fashion3"]).tolist() == [0, 0, 0, 0, 0, 1, 0, 1, 2, 1]


@pytest.mark.parametrize("name", sorted(GROUPINGS))
def test_group_labels_matches_a_loop(name):
    y = np.random.default_rng(0).integers(0, 10, 500)
    mapping = resolve_grouping(name)
    assert group_labels(y, mapping).tolist() == [mapping[int(c)] for c in y]


def test_bad_groupings_are_one_line_errors():
    for bad, match in [({0: 0, 1: 0}, "at least 2 groups"), ({0: 0, 1: 2}, r"0\.\.1"),
                       ({0: -1, 1: 0}, ">= 0"), ({0: 0.5, 1: 0}, "integer")]:
        with pytest.raises(InvalidValueError, match=match):
            check_grouping(bad)
    with pytest.raises(InvalidValueError, match="valid choices: parity, ge5, pairs, fashion3"):
        resolve_grouping("odd")
    with pytest.raises(InvalidValueError, match=r"no group for classes \[7\]"):
        group_labels(np.array([0, 1, 7]), {0: 0, 1: 1})


def test_apply_task_nulls():
    rng = np.random.default_rng(1)
    Xtr, Xte = rng.standard_normal((40, 6)), rng.standard_normal((10, 6))
    ytr, yte = np.arange(40) % 4, np.arange(10) % 4
    a, b, c, d = apply_task(Xtr, ytr, Xte, yte, labels={0: 0, 1: 1, 2: 0, 3: 1},
                            null="shuffled_labels", seed=3)
    assert a is Xtr and c is Xte and d.tolist() == (yte % 2).tolist()
    assert sorted(b.tolist()) == sorted((ytr % 2).tolist()) and b.tolist() != (ytr % 2).tolist()
    a, b, c, d = apply_task(Xtr, ytr, Xte, yte, null="gaussian")
    assert a.shape == Xtr.shape and c.shape == Xte.shape and not np.allclose(a, Xtr)
    assert b is ytr and d is yte


def _config(path, **extra):
    return {"name": "tasks", "models": [{"spec": "precomputed", "weights": ["pretrained"]}],
            "layers": ["pixels"], "datasets": [{"name": f"features:{path}", **extra}],
            "fractions": [0.25, 1.0], "seeds": [1]}


def test_config_fields_are_validated(tmp_path):
    cfg = parse_config(_config(tmp_path / "x.npz", labels="parity"))
    assert cfg.datasets[0].display == f"features:{tmp_path / 'x.npz'}+parity"
    with pytest.raises(ConfigError, match=r"datasets\[0\]\.labels: unknown label grouping 'odd'"):
        parse_config(_config(tmp_path / "x.npz", labels="odd"))
    with pytest.raises(ConfigError, match=r"datasets\[0\]\.baseline: must be one of"):
        parse_config(_config(tmp_path / "x.npz", baseline="uniform"))
    with pytest.raises(ConfigError, match="groups must be 0..1"):
        parse_config(_config(tmp_path / "x.npz", labels={0: 0, 1: 3}))


def test_run_with_groupings_and_nulls(tmp_path, digits_npz):
    from drprobe.experiment.runner import run_experiment

    data = _config(digits_npz)
    base = data["datasets"][0]
    data["datasets"] = [base, {**base, "labels": "parity"}, {**base, "baseline": "shuffled_labels"},
                        {**base, "labels": "ge5", "baseline": "gaussian", "label": "noise"}]
    out = run_experiment(parse_config(data), tmp_path / "run", progress=False)
    res = out.results
    full = res[res["k"] == res["d"]].set_index("dataset")
    name = f"features:{digits_npz}"
    assert full.loc[name, "n_classes"] == 10 and full.loc[f"{name}+parity", "n_classes"] == 2
    assert full.loc[name, "test_acc"] > 0.9  # 8x8 pixels separate digits linearly
    assert full.loc[f"{name}+shuffled_labels", "test_acc"] < 0.3  # chance is 0.1
    assert full.loc["noise", "test_acc"] < 0.65  # chance for >=5 is about 0.5
    for acc, correct in zip(res["test_acc"], res["test_correct"]):
        assert acc == pytest.approx(np.mean(correct))
