"""drprobe pretrain end to end on a few hundred real Fashion-MNIST images and a tiny ResNet:
resume after a kill, skip when finished, load as ``ckpt:``, refuse bad configs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from helpers import one_torch_thread  # noqa: F401 (fixture)

from drprobe.cli import main
from drprobe.errors import DrprobeError
from drprobe.pretrain import load_pretrain_config, parse_pretrain_config, run, run_folder
from drprobe.pretrain.data import load_source
from drprobe.pretrain.train import MODEL_FILE, PROVENANCE_FILE, STATE_FILE, train_one
from drprobe.sources.builtin import sha256_file, state_sha256
from drprobe.sources.layers import layer_features, list_layers
from drprobe.sources.models import load_model

ROOT = Path(__file__).resolve().parents[1]
TINY = {
    "data": {"dataset": "fashion-mnist", "n_train": 192, "n_test": 100},
    "arch": {"base_channels": 2},
    "epochs": 3, "batch_size": 64, "device": "cpu", "seeds": [0],
    "variants": [{"name": "ce"}],
}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


class Interrupt(Exception):
    pass


def _stop_after(n: int):
    def hook(epoch: int) -> None:
        if epoch == n:
            raise Interrupt
    return hook


def test_killed_run_resumes_to_the_same_checkpoint(tmp_path):
    cfg = parse_pretrain_config({**TINY, "epochs": 2,
                                 "variants": [{"name": "drop", "dropout": 0.3}]})
    recipe = cfg.resolved("drop")
    source = load_source(recipe.data, torch.device("cpu"))
    whole, _ = train_one(recipe, 0, tmp_path / "a", source, torch.device("cpu"), False)
    with pytest.raises(Interrupt):
        train_one(recipe, 0, tmp_path / "b", source, torch.device("cpu"), False, _stop_after(1))
    assert (tmp_path / "b" / STATE_FILE).exists() and not (tmp_path / "b" / MODEL_FILE).exists()
    resumed, trained = train_one(recipe, 0, tmp_path / "b", source, torch.device("cpu"), False)
    assert trained and not (tmp_path / "b" / STATE_FILE).exists()
    assert resumed["sha256"] == whole["sha256"] == sha256_file(tmp_path / "b" / MODEL_FILE)
    assert resumed["history"] == whole["history"] and len(whole["history"]) == 2
    other, _ = train_one(recipe, 1, tmp_path / "c", source, torch.device("cpu"), False)
    assert other["sha256"] != whole["sha256"]  # the seed matters


def test_a_variant_may_have_its_own_seeds(tmp_path):
    cfg = {**TINY, "epochs": 1, "seeds": [0, 1],
           "variants": [{"name": "ce"}, {"name": "few", "dropout": 0.2, "seeds": [1]}]}
    results = run(cfg, tmp_path, progress=False)
    assert [(r.variant, r.seed) for r in results] == [("ce", 0), ("ce", 1), ("few", 1)]
    assert not run_folder(tmp_path, "few", 0).exists()
    rows = (tmp_path / "models.csv").read_text().splitlines()[1:]
    assert [r.split(",")[:2] for r in rows] == [["ce", "0"], ["ce", "1"], ["few", "1"]]
    assert parse_pretrain_config(cfg).resolved("few").dropout == 0.2


def test_grid_writes_provenance_skips_finished_and_refuses_another_config(tmp_path):
    results = run(TINY, tmp_path, progress=False)
    assert [(r.variant, r.seed, r.trained) for r in results] == [("ce", 0, True)]
    folder = run_folder(tmp_path, "ce", 0)
    prov = json.loads((folder / PROVENANCE_FILE).read_text())
    assert prov["sha256"] == sha256_file(folder / MODEL_FILE)
    assert prov["data"]["dataset"] == "fashion-mnist" and prov["data"]["train"]["n"] == 192
    assert len(prov["data"]["train"]["indices_sha256"]) == 64
    assert prov["seed"] == 0 and prov["epochs"] == 3 and 0 <= prov["test_acc"] <= 1
    assert prov["config"]["arch"]["base_channels"] == 2 and prov["wall_seconds"] > 0
    assert prov["drprobe_version"]
    again = run(TINY, tmp_path, progress=False)
    assert not again[0].trained and again[0].provenance == prov
    index = (tmp_path / "models.csv").read_text().splitlines()
    assert len(index) == 2 and index[1].startswith(f"ce,0,ckpt:{folder.as_posix()}/model.pt")
    with pytest.raises(DrprobeError, match="another config"):
        run({**TINY, "epochs": 2}, tmp_path, progress=False)


def test_checkpoint_loads_as_a_model_source_with_a_d_wide_penultimate(tmp_path):
    variants = [{"name": "ff", "fixed_feature": 4}, {"name": "mrl", "matryoshka": {}}]
    results = run({**TINY, "epochs": 1, "variants": variants}, tmp_path, progress=False)
    x = torch.rand(5, 3, 28, 28)
    for r in results:
        bundle = load_model(r.spec)
        assert bundle.weights_sha256 == r.provenance["sha256"] and bundle.input_size == 28
        assert layer_features(bundle, "penultimate", x).shape == (5, 16)
        assert layer_features(bundle, "layer3", x).shape == (5, 8)
        names = [row.name for row in list_layers(bundle)]
        assert {"layer1", "layer4", "penultimate"} <= set(names)
        twin = load_model(r.spec, weights="random", seed=1)
        assert twin.weights_sha256 is None
        # the twin of the pretraining seed is the network's own start, the others are not
        start = load_model(r.spec, weights="random", seed=r.provenance["seed"])
        assert state_sha256(start.module) == r.provenance["init_sha256"]
        assert state_sha256(twin.module) != r.provenance["init_sha256"]
        assert state_sha256(bundle.module) != r.provenance["init_sha256"]
        assert not torch.allclose(layer_features(twin, "penultimate", x),
                                  layer_features(bundle, "penultimate", x))
    # the extracted penultimate is what the trained head reads: logits from it match the net
    bundle = load_model(results[0].spec)
    z = layer_features(bundle, "penultimate", x)
    with torch.no_grad():
        torch.testing.assert_close(bundle.module.fc(z), bundle.module(x))


@pytest.mark.parametrize("patch,needle", [
    ({"epochs": 0}, "cfg.yaml: epochs: must be a positive integer, got 0"),
    ({"optimiser": {}}, "cfg.yaml: optimiser: unknown field; valid fields: name,"),
    ({"variants": [{"name": "a", "adversarial": {"norm": "l1", "eps": 1}}]},
     "variants[0].adversarial.norm: must be one of 'l2' or 'linf', got 'l1'"),
    ({"variants": [{"name": "a", "fixed_feature": 17}]},
     "variant 'a' (variants[0]): fixed_feature k = 17 exceeds the penultimate width d = 16"),
    ({"variants": [{"name": "a", "fixed_feature": 4, "matryoshka": {}}]},
     "matryoshka and fixed_feature cannot be combined"),
    ({"variants": [{"name": "a"}, {"name": "a"}]}, "variant 'a' is listed twice"),
    ({"variants": [{"name": "a", "seeds": [1, 1]}]}, "seed 1 is listed twice"),
    ({"variants": [{"name": "a/b"}]}, "variant name 'a/b' must be letters"),
    ({"data": {"dataset": "cifar11"}}, "data.dataset: unknown dataset 'cifar11'"),
    ({"device": "tpu"}, "unknown device 'tpu'"),
])
def test_bad_config_is_one_line_and_exit_2(tmp_path, capsys, patch, needle):
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump({**TINY, **patch}))
    code = main(["pretrain", str(path), "--out", str(tmp_path / "out"), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and needle in err and err.count("\n") == 1
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("name", ["pretrain.yaml", "pretrain-tiny.yaml"])
def test_study_configs_are_valid_and_cover_every_variant_kind(name):
    cfg = load_pretrain_config(ROOT / "configs" / "study" / name)
    recipes = [cfg.resolved(v.name) for v in cfg.variants]
    assert {r.adversarial.norm for r in recipes if r.adversarial} == {"l2", "linf"}
    assert any(r.matryoshka for r in recipes) and any(r.decov for r in recipes)
    assert any(r.dropout for r in recipes) and any(r.fixed_feature for r in recipes)
    assert {r.arch.name for r in recipes} == {"resnet", "vit"}
    assert len({r.arch.width for r in recipes}) > 1 and len({r.data.n_train for r in recipes}) > 1
    assert len({r.dropout for r in recipes}) > 2 or name != "pretrain.yaml"


def test_every_shipped_pretrain_config_validates():
    paths = sorted((ROOT / "configs").rglob("pretrain*.yaml"))
    assert len(paths) >= 2
    for path in paths:
        load_pretrain_config(path)


@pytest.mark.slow
def test_cli_killed_for_real_resumes_to_the_same_model(tmp_path):
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump({**TINY, "epochs": 3, "data": {**TINY["data"],
                                                                  "n_train": 384}}))
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    argv = [sys.executable, "-m", "drprobe.cli", "pretrain", str(path), "--no-progress",
            "--threads", "1"]
    subprocess.run([*argv, "--out", str(tmp_path / "a")], env=env, check=True)
    proc = subprocess.Popen([*argv, "--out", str(tmp_path / "b")], env=env)
    state = run_folder(tmp_path / "b", "ce", 0) / STATE_FILE
    deadline = time.monotonic() + 300
    while not state.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (run_folder(tmp_path / "b", "ce", 0) / MODEL_FILE).exists()
    subprocess.run([*argv, "--out", str(tmp_path / "b")], env=env, check=True)
    a, b = (sha256_file(run_folder(tmp_path / d, "ce", 0) / MODEL_FILE) for d in "ab")
    assert a == b


@pytest.mark.slow
def test_worker_processes_give_the_same_models_as_one_process(tmp_path):
    cfg = {**TINY, "epochs": 1, "seeds": [0, 1],
           "variants": [{"name": "ce"}, {"name": "adv", "adversarial": {"norm": "linf",
                                                                         "eps": 0.03}}]}
    one = run(cfg, tmp_path / "one", progress=False, threads=1)
    two = run(cfg, tmp_path / "two", progress=False, jobs=2)
    assert [(r.variant, r.seed) for r in two] == [(r.variant, r.seed) for r in one]
    assert [r.provenance["sha256"] for r in two] == [r.provenance["sha256"] for r in one]
    assert len({r.provenance["sha256"] for r in one}) == 4
    with pytest.raises(DrprobeError, match="jobs must be a positive integer"):
        run(cfg, tmp_path / "three", jobs=0)


@pytest.mark.parametrize("option,needle", [
    (["--device", "tpu"], "unknown device 'tpu'; valid choices: auto"),
    (["--device", "cuda"], "device 'cuda' is not available here"),
    (["--jobs", "0"], "jobs must be a positive integer, got 0"),
    (["--threads", "0"], "threads must be a positive integer, got 0"),
    (["--variants", "ce,nope"], "unknown variant 'nope'; valid choices: ce"),
])
def test_bad_option_is_one_line_and_exit_2(tmp_path, capsys, option, needle):
    if option == ["--device", "cuda"] and torch.cuda.is_available():
        pytest.skip("CUDA is present: --device cuda is valid here")
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(TINY))
    code = main(["pretrain", str(path), "--out", str(tmp_path / "out"), "--no-progress",
                 *option])
    err = capsys.readouterr().err
    assert code == 2 and needle in err and err.count("\n") == 1
    assert not (tmp_path / "out").exists()


def test_ckpt_refuses_missing_and_foreign_files(tmp_path):
    from drprobe.errors import InvalidValueError, MissingDataError

    with pytest.raises(MissingDataError, match="does not exist"):
        load_model(f"ckpt:{tmp_path / 'none.pt'}")
    plain = tmp_path / "plain.pt"
    torch.save({"fc.weight": torch.zeros(2, 2)}, plain)
    with pytest.raises(InvalidValueError, match="not a drprobe pretrain checkpoint"):
        load_model(f"ckpt:{plain}")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a torch file")
    with pytest.raises(MissingDataError, match="cannot read checkpoint"):
        load_model(f"ckpt:{junk}")


def _children(pid: int) -> list[int]:
    """PIDs whose parent is ``pid`` (Linux /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    try:
        return (Path(f"/proc/{pid}") / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.slow
def test_workers_exit_when_the_command_is_killed(tmp_path):
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump({**TINY, "epochs": 50, "seeds": [0, 1]}))
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "drprobe.cli", "pretrain", str(path),
                             "--no-progress", "--jobs", "2", "--out", str(tmp_path / "out")],
                            env=env)
    deadline = time.monotonic() + 300
    state = run_folder(tmp_path / "out", "ce", 0) / STATE_FILE
    while not state.exists() and time.monotonic() < deadline:  # workers are training
        time.sleep(0.1)
    workers = [p for p in _children(proc.pid) if "spawn_main" in
               Path(f"/proc/{p}/cmdline").read_bytes().decode(errors="replace")]
    assert workers
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 30
    while any(_alive(p) for p in workers) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not any(_alive(p) for p in workers)
