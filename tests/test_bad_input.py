"""Bad input, through the command line and through the Python API.

CLI: every refusal is exactly one line on stderr, ``drprobe: error: ...``, naming the problem
(and the valid choices where there is a closed set), exit status 2, and nothing written into
``--out`` or the cache. API: the same refusals are one-line :class:`DrprobeError` subclasses.
Features are real (scikit-learn digits pixels, 64 columns); the refusals happen before any
extraction or probe, so the whole file runs in seconds.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import one_line as _one_line

import drprobe
from drprobe.analysis.layer import analyze_layer
from drprobe.cli import main
from drprobe.errors import (
    ConfigError,
    DrprobeError,
    InvalidValueError,
    MissingDataError,
    UnknownNameError,
)
from drprobe.experiment.config import load_config
from drprobe.probes import ProbeBank
from drprobe.selectors import make_family, resolve_ks
from drprobe.sources.datasets import load_dataset
from drprobe.sources.models import load_model

MNET = "builtin:mobilenet_v2"
SHAPE_KEY = "features.15.conv.0.0.weight"  # (960, 160, 1, 1) in MobileNetV2
CONFIG = """\
name: bad-input
models:
  - spec: builtin:mobilenet_v2
    weights: [pretrained]
layers: [features.14]
datasets:
  - name: digits
    n_train: 200
    n_test: 100
    image_size: 32
fractions: [0.5, 1.0]
seeds: [1]
"""


# ----------------------------------------------------------------------------- inputs


@pytest.fixture(scope="module")
def digits() -> dict[str, np.ndarray]:
    """Real features: digits pixels (n, 64) float32 and labels, train and test splits."""
    tr, te = load_dataset("digits", "train"), load_dataset("digits", "test")
    flat = {"train": tr.images.reshape(len(tr.labels), -1), "test": te.images.reshape(
        len(te.labels), -1)}
    return {"X_train": flat["train"][:300].astype(np.float32), "y_train": tr.labels[:300],
            "X_test": flat["test"][:100].astype(np.float32), "y_test": te.labels[:100]}


def _with(digits: dict, **change) -> dict:
    return {**digits, **change}


def _nan_train(d: dict) -> dict:
    X = d["X_train"].copy()
    X[7, 3] = np.nan
    return _with(d, X_train=X)


def _inf_test(d: dict) -> dict:
    X = d["X_test"].copy()
    X[2, 5] = np.inf
    return _with(d, X_test=X)


def _short_labels(d: dict) -> dict:
    return _with(d, y_train=d["y_train"][:250])


def _empty_test(d: dict) -> dict:
    return _with(d, X_test=d["X_test"][:0], y_test=d["y_test"][:0])


def _one_class(d: dict) -> dict:
    keep = d["y_train"] == 3
    return _with(d, X_train=d["X_train"][keep], y_train=d["y_train"][keep])


FEATURE_FAULTS = {
    "nan-features": (_nan_train, "train features contain NaN or infinite values"),
    "inf-features": (_inf_test, "test features contain NaN or infinite values"),
    "length-mismatch": (_short_labels, "300 feature rows and 250 labels"),
    "empty-split": (_empty_test, "test split is empty"),
    "one-class": (_one_class, "single class"),
}


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    """MobileNetV2 checkpoints, each broken in one way."""
    folder = tmp_path_factory.mktemp("checkpoints")
    state = dict(load_model(MNET, "random").module.state_dict())
    bad = {
        "missing-key": {k: v for k, v in state.items() if k != "features.14.conv.0.0.weight"},
        "wrong-shape": state | {SHAPE_KEY: torch.zeros(80, 160, 1, 1)},
        "pickled": {"model": state, "args": argparse.Namespace(lr=0.1)},
    }
    paths = {}
    for name, content in bad.items():
        paths[name] = folder / f"{name}.pth"
        torch.save(content, paths[name])
    return paths


# -------------------------------------------------------------------------- the CLI


def run_cli(capsys, argv: list[str]) -> tuple[int, list[str]]:
    code = main(argv)
    err = capsys.readouterr().err
    return code, [line for line in err.splitlines() if line.strip()]


def assert_refused(code: int, lines: list[str], needles: tuple[str, ...]) -> None:
    assert code == 2, lines
    assert len(lines) == 1, lines
    assert lines[0].startswith("drprobe: error: "), lines
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


def assert_empty(*folders: Path) -> None:
    for folder in folders:
        assert not folder.exists() or not any(folder.iterdir()), sorted(folder.rglob("*"))


def _config(tmp: Path, text: str) -> str:
    path = tmp / "experiment.yaml"
    path.write_text(text)
    return str(path)


# Each case: argv built from (tmp folder, checkpoints) and the needles of the one error line.
# demo's own unknown model/layer/dataset and out-of-range fractions are in test_cli.py.
CLI_CASES: dict[str, tuple[Callable[[Path, dict], list[str]], tuple[str, ...]]] = {
    "extract-unknown-model": (lambda t, c: ["extract", "nonet", "features.14", "digits"],
                              ("unknown model 'nonet'", MNET)),
    "extract-unknown-layer": (lambda t, c: ["extract", MNET, "features.99", "digits"],
                              ("unknown layer 'features.99'", "features.14")),
    "extract-unknown-dataset": (lambda t, c: ["extract", MNET, "features.14", "cifar11"],
                                ("unknown dataset 'cifar11'", "fashion-mnist")),
    "extract-unknown-pooling": (lambda t, c: ["extract", MNET, "features.14", "digits",
                                              "--pooling", "max"],
                                ("unknown pooling 'max'", "avg, flatten")),
    "extract-n-zero": (lambda t, c: ["extract", MNET, "features.14", "digits", "--n", "0"],
                       ("--n must be a positive integer", "0")),
    "extract-image-size-negative": (lambda t, c: ["extract", MNET, "features.14", "digits",
                                                  "--image-size", "-3"],
                                    ("--image-size must be a positive integer", "-3")),
    "extract-missing-keys": (lambda t, c: ["extract", MNET, "features.14", "digits",
                                           "--checkpoint", str(c["missing-key"])],
                             ("missing keys", "features.14.conv.0.0.weight")),
    "extract-wrong-shape": (lambda t, c: ["extract", MNET, "features.14", "digits",
                                          "--checkpoint", str(c["wrong-shape"])],
                            (SHAPE_KEY, "(80, 160, 1, 1)")),
    "extract-pickled-checkpoint": (lambda t, c: ["extract", MNET, "features.14", "digits",
                                                 "--checkpoint", str(c["pickled"])],
                                   ("argparse.Namespace", "trust")),
    "demo-pickled-checkpoint": (lambda t, c: ["demo", "--checkpoint", str(c["pickled"])],
                                ("argparse.Namespace", "trust")),
    "demo-wrong-shape": (lambda t, c: ["demo", "--checkpoint", str(c["wrong-shape"])],
                         (SHAPE_KEY,)),
    "demo-unknown-layer": (lambda t, c: ["demo", "--dataset", "digits", "--layers",
                                         "features.14,block9"],
                           ("unknown layer 'block9'",)),
    "demo-negative-fraction": (lambda t, c: ["demo", "--fractions=-0.1,1"], ("(0, 1]",)),
    "demo-bad-seeds": (lambda t, c: ["demo", "--seeds", "one,two"], ("--seeds", "integers")),
    "run-missing-config": (lambda t, c: ["run", str(t / "absent.yaml")], ("no such config",)),
    "run-malformed-yaml": (lambda t, c: ["run", _config(t, "name: x\nmodels: [spec: a\n")],
                           ("malformed YAML",)),
    "run-not-a-mapping": (lambda t, c: ["run", _config(t, "- a\n- b\n")], ("mapping",)),
    "run-wrong-type": (lambda t, c: ["run", _config(t, CONFIG.replace("n_train: 200",
                                                                      "n_train: many"))],
                       ("datasets[0].n_train", "many")),
    "run-unknown-field": (lambda t, c: ["run", _config(t, CONFIG + "colour: blue\n")],
                          ("colour: unknown field",)),
    "run-unknown-model": (lambda t, c: ["run", _config(t, CONFIG.replace(MNET, "builtin:x"))],
                          ("models[0].spec", "unknown model 'builtin:x'", MNET)),
    "run-unknown-dataset": (lambda t, c: ["run", _config(t, CONFIG.replace("name: digits",
                                                                           "name: cifar11"))],
                            ("unknown dataset 'cifar11'", "digits")),
    "run-unknown-selector": (lambda t, c: ["run", _config(t, CONFIG + "selectors: [rnd]\n")],
                             ("unknown selector 'rnd'", "random")),
    "run-zero-fraction": (lambda t, c: ["run", _config(t, CONFIG.replace("[0.5, 1.0]",
                                                                         "[0.0, 1.0]"))],
                          ("fractions[0]", "(0, 1]")),
    "run-fraction-above-one": (lambda t, c: ["run", _config(t, CONFIG.replace("[0.5, 1.0]",
                                                                              "[0.5, 1.5]"))],
                               ("fractions[1]", "(0, 1]")),
    "run-unknown-layer": (lambda t, c: ["run", _config(t, CONFIG.replace("[features.14]",
                                                                         "[features.99]"))],
                          ("unknown layer 'features.99'", "features.14")),
    "run-pickled-checkpoint": (lambda t, c: ["run", _config(t, CONFIG.replace(
        "weights: [pretrained]", f"weights: [pretrained]\n    checkpoint: {c['pickled']}"))],
                               ("argparse.Namespace", "trust")),
}

#: Commands whose --out is a run folder (extract's --out is an .npz file).
_OUT = {"demo": "out", "run": "out", "probe": "out", "extract": "out.npz"}


@pytest.mark.parametrize("case", list(CLI_CASES), ids=list(CLI_CASES))
def test_cli_refuses_on_one_line_and_writes_nothing(capsys, tmp_path, checkpoints, case):
    build, needles = CLI_CASES[case]
    argv = build(tmp_path, checkpoints)
    out, cache = tmp_path / _OUT[argv[0]], tmp_path / "cache"
    code, lines = run_cli(capsys, [*argv, "--out", str(out), "--cache-dir", str(cache),
                                   "--no-progress"])
    assert_refused(code, lines, needles)
    assert not out.exists() or (out.is_dir() and not any(out.iterdir()))
    assert_empty(cache)


def test_cli_cache_folder_that_is_a_file(capsys, tmp_path):
    cache = tmp_path / "cache"
    cache.write_text("a file")
    out = tmp_path / "out.npz"
    code, lines = run_cli(capsys, ["extract", MNET, "features.14", "digits", "--n", "50",
                                   "--image-size", "32", "--out", str(out), "--cache-dir",
                                   str(cache), "--no-progress"])
    assert_refused(code, lines, ("cannot write feature cache entry", str(cache)))
    assert not out.exists() and cache.read_text() == "a file"


@pytest.mark.parametrize("argv, needles", [
    (["demo", "--n-train", "abc"], ("'--n-train'", "'abc' is not a valid integer",
                                    "drprobe demo --help")),
    (["demo", "--image-size", "3.5"], ("'--image-size'", "'3.5'")),
    (["extract", MNET, "features.14", "digits", "--split", "val"],
     ("'--split'", "'val'", "train", "test")),
    (["run", "--executor", "slurm", "x.yaml"], ("'--executor'", "'slurm'", "local", "ray")),
    (["layers"], ("Missing argument 'MODEL'",)),
    (["demo", "--no-such-flag"], ("--no-such-flag",)),
    (["nosuch"], ("No such command 'nosuch'",)),
], ids=["int-option", "float-for-int", "split-choice", "executor-choice", "missing-argument",
        "unknown-option", "unknown-command"])
def test_cli_usage_errors_are_one_line_exit_2(capsys, tmp_path, monkeypatch, argv, needles):
    """Wrong option types and choices, unknown options or commands, missing arguments: the
    option parser's refusal, on one line like every other refusal."""
    monkeypatch.chdir(tmp_path)
    code, lines = run_cli(capsys, argv)
    assert_refused(code, lines, needles)
    assert list(tmp_path.iterdir()) == []


# Precomputed features with a fault, through `drprobe probe`: found while the run is checked,
# before the run folder is made.
@pytest.mark.parametrize("fault", list(FEATURE_FAULTS), ids=list(FEATURE_FAULTS))
def test_cli_probe_refuses_bad_features(capsys, tmp_path, digits, fault):
    make, needle = FEATURE_FAULTS[fault]
    path = tmp_path / "features.npz"
    np.savez(path, **make(digits))
    out = tmp_path / "out"
    code, lines = run_cli(capsys, ["probe", str(path), "--out", str(out), "--fractions",
                                   "0.5,1", "--seeds", "1", "--no-progress"])
    assert_refused(code, lines, (needle,))
    assert_empty(out)


@pytest.mark.parametrize("argv, needles", [
    (["--selectors", "rnd"], ("unknown selector 'rnd'", "random")),
    (["--fractions", "0,1"], ("fraction 0.0 is outside the valid range (0, 1]",)),
    (["--fractions", "0.5,1.5"], ("fraction 1.5 is outside the valid range (0, 1]",)),
], ids=["unknown-selector", "zero-fraction", "fraction-above-one"])
def test_cli_probe_refuses_bad_grid(capsys, tmp_path, digits, argv, needles):
    path = tmp_path / "features.npz"
    np.savez(path, **digits)
    out = tmp_path / "out"
    code, lines = run_cli(capsys, ["probe", str(path), "--out", str(out), *argv, "--seeds",
                                   "1", "--no-progress"])
    assert_refused(code, lines, needles)
    assert_empty(out)


def test_cli_probe_refuses_counts_above_d(capsys, tmp_path, digits):
    """A count above the layer's width is refused before anything is written (the API's
    resolve_ks refuses it too: test_selectors_refuse_bad_sizes_and_names)."""
    path = tmp_path / "features.npz"
    np.savez(path, **digits)
    out = tmp_path / "out"
    code, lines = run_cli(capsys, ["probe", str(path), "--out", str(out), "--counts", "8,999",
                                   "--seeds", "1", "--no-progress"])
    assert_refused(code, lines, ("counts [999]", "d=64", "valid counts: 1 to 64"))
    assert_empty(out)


# -------------------------------------------------------------------------- the API


@pytest.mark.parametrize("kwargs, kind, needles", [
    ({"model": "builtin:nonet"}, UnknownNameError, ("unknown model", MNET)),
    ({"layer": "features.99"}, UnknownNameError, ("unknown layer 'features.99'", "features.14")),
    ({"dataset": "cifar11"}, UnknownNameError, ("unknown dataset 'cifar11'", "digits")),
    ({"split": "val"}, UnknownNameError, ("unknown split 'val'", "test, train")),
    ({"n": 0}, InvalidValueError, ("positive", "0")),
    ({"pooling": "max"}, InvalidValueError, ("unknown pooling 'max'", "avg, flatten")),
    ({"dtype": "int8"}, UnknownNameError, ("int8", "float16, float32, float64")),
    ({"weights": "imagenet"}, InvalidValueError, ("unknown weights 'imagenet'", "random")),
], ids=["model", "layer", "dataset", "split", "n-zero", "pooling", "dtype", "weights"])
def test_get_features_refuses_before_touching_the_cache(tmp_path, kwargs, kind, needles):
    args = {"model": MNET, "layer": "features.14", "dataset": "digits", "split": "train"}
    args.update(kwargs)
    cache = tmp_path / "cache"
    with pytest.raises(kind) as err:
        drprobe.get_features(args.pop("model"), args.pop("layer"), args.pop("dataset"),
                             args.pop("split"), cache_dir=cache, image_size=32, progress=False,
                             **args)
    message = _one_line(err)
    for needle in needles:
        assert needle in message
    assert_empty(cache)


@pytest.mark.parametrize("name, needles", [
    ("missing-key", ("missing keys", "features.14.conv.0.0.weight")),
    ("wrong-shape", (SHAPE_KEY, "(80, 160, 1, 1)", "(960, 160, 1, 1)")),
    ("pickled", ("argparse.Namespace", "trust_checkpoint=True")),
])
def test_load_model_refuses_bad_checkpoints(checkpoints, name, needles):
    with pytest.raises(DrprobeError) as err:
        load_model(MNET, checkpoint=checkpoints[name])
    message = _one_line(err)
    for needle in needles:
        assert needle in message


def test_pickled_checkpoint_loads_with_the_trust_flag(checkpoints):
    bundle = load_model(MNET, checkpoint=checkpoints["pickled"], trust_checkpoint=True)
    reference = load_model(MNET, "random")
    for (k, a), b in zip(bundle.module.state_dict().items(),
                         reference.module.state_dict().values()):
        assert torch.equal(a, b), k


def test_missing_checkpoint_file(tmp_path):
    with pytest.raises(MissingDataError, match="does not exist") as err:
        load_model(MNET, checkpoint=tmp_path / "absent.pth")
    _one_line(err)


KW = {"fractions": [0.5, 1.0], "seeds": [1], "n_boot": 10, "progress": False}


@pytest.mark.parametrize("fault", list(FEATURE_FAULTS), ids=list(FEATURE_FAULTS))
def test_analyze_layer_refuses_bad_features(digits, fault):
    make, _ = FEATURE_FAULTS[fault]
    d = make(digits)
    with pytest.raises(InvalidValueError) as err:
        analyze_layer(d["X_train"], d["y_train"], d["X_test"], d["y_test"], **KW)
    message = _one_line(err)
    expected = {"nan-features": "train features contain NaN or infinite values (first at row 7, "
                                "column 3)",
                "inf-features": "test features contain NaN or infinite values (first at row 2, "
                                "column 5)",
                "length-mismatch": "got X (300, 64), y (250,)",
                "empty-split": "test split is empty",
                "one-class": "train split has a single class"}[fault]
    assert expected in message


@pytest.mark.parametrize("kwargs, needles", [
    ({"selectors": ["rnd"]}, ("unknown selector 'rnd'", "pca_top, prefix, random")),
    ({"fractions": [0.0, 1.0]}, ("fraction 0.0", "(0, 1]")),
    ({"fractions": [-0.5]}, ("fraction -0.5", "(0, 1]")),
    ({"fractions": [1.5]}, ("fraction 1.5", "(0, 1]")),
], ids=["selector", "zero-fraction", "negative-fraction", "fraction-above-one"])
def test_analyze_layer_refuses_bad_grid(digits, kwargs, needles):
    args = {**KW, **kwargs}
    with pytest.raises(DrprobeError) as err:
        analyze_layer(digits["X_train"], digits["y_train"], digits["X_test"], digits["y_test"],
                      **args)
    message = _one_line(err)
    for needle in needles:
        assert needle in message


def test_one_class_test_split_is_accepted_with_nan_for_absent_classes(digits):
    """Only the training split needs two classes; a test split of one class is a valid (if
    small) evaluation: the other classes' accuracies are NaN and left out of the Gini."""
    keep = digits["y_test"] == 4
    out = analyze_layer(digits["X_train"], digits["y_train"], digits["X_test"][keep],
                        digits["y_test"][keep], **KW)
    per_class = np.array(out.results["per_class_acc"].iloc[-1])
    assert np.isfinite(per_class[4]) and np.isnan(np.delete(per_class, 4)).all()
    assert (out.results["gini"] == 0).all()


def _family(X: np.ndarray) -> list:
    return [make_family("random", X, [8, 64], seed=1)]


@pytest.mark.parametrize("fault, needle", [
    ("nan-features", "X_train contains NaN or infinite values"),
    ("length-mismatch", "y_train has shape (250,); expected (300,)"),
    ("one-class", "y_train has 1 class; need at least 2"),
], ids=["nan-features", "length-mismatch", "one-class"])
def test_probe_bank_refuses_bad_training_data(digits, fault, needle):
    d = FEATURE_FAULTS[fault][0](digits)
    with pytest.raises(InvalidValueError) as err:
        ProbeBank(progress=False).fit(d["X_train"], d["y_train"], d["X_test"], d["y_test"],
                                      _family(digits["X_train"]))
    assert needle in _one_line(err)


def test_probe_bank_refuses_an_empty_validation_split(digits):
    with pytest.raises(InvalidValueError) as err:
        ProbeBank(progress=False).fit(digits["X_train"], digits["y_train"],
                                      digits["X_test"][:0], digits["y_test"][:0],
                                      _family(digits["X_train"]))
    assert "X_val has no rows" in _one_line(err)


@pytest.mark.parametrize("call, kind, needles", [
    (lambda X: make_family("rnd", X, [1, 2]), UnknownNameError,
     ("unknown selector 'rnd'", "random")),
    (lambda X: make_family("random", X, [8, 65]), InvalidValueError, ("[1, 64]", "[8, 65]")),
    (lambda X: make_family("random", X, [0, 8]), InvalidValueError, ("[1, 64]",)),
    (lambda X: resolve_ks(64, counts=[8, 65]), InvalidValueError, ("count 65", "[1, 64]")),
    (lambda X: resolve_ks(64, counts=[0]), InvalidValueError, ("count 0", "[1, 64]")),
    (lambda X: resolve_ks(64, fractions=[0]), InvalidValueError, ("fraction 0.0", "(0, 1]")),
    (lambda X: resolve_ks(64, fractions=[1.01]), InvalidValueError, ("fraction 1.01",)),
], ids=["unknown", "k-above-d", "k-zero", "count-above-d", "count-zero", "fraction-zero",
        "fraction-above-one"])
def test_selectors_refuse_bad_sizes_and_names(digits, call, kind, needles):
    with pytest.raises(kind) as err:
        call(digits["X_train"])
    message = _one_line(err)
    for needle in needles:
        assert needle in message


@pytest.mark.parametrize("text, needle", [
    ("name: x\nmodels: [spec: a\n", "malformed YAML"),
    (CONFIG.replace("seeds: [1]", "seeds: one"), "seeds"),
    (CONFIG.replace("n_test: 100", "n_test: 1.5"), "datasets[0].n_test"),
    (CONFIG.replace("weights: [pretrained]", "weights: pretrained"), "models[0].weights"),
], ids=["malformed", "seeds-not-a-list", "float-count", "weights-not-a-list"])
def test_load_config_refuses_malformed_yaml_and_wrong_types(tmp_path, text, needle):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    message = _one_line(err)
    assert message.startswith(f"{path}: ") and needle in message
