"""Experiment configs: every shipped config validates and plans offline; bad ones are refused
with one line naming the file, the field path and what is valid."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from drprobe.cli import main
from drprobe.errors import ConfigError
from drprobe.experiment.config import load_config, parse_config
from drprobe.experiment.cost import estimate_cost
from drprobe.experiment.dryrun import format_plan
from drprobe.experiment.plan import plan_jobs

# pretrain*.yaml are `drprobe pretrain` configs (tests/test_pretrain_run.py checks them)
CONFIGS = sorted(p for p in (Path(__file__).resolve().parents[1] / "configs").rglob("*.yaml")
                 if not p.name.startswith("pretrain"))
GOOD = """\
name: t
models:
  - spec: builtin:mobilenet_v2
datasets:
  - name: digits
  - name: fashion-mnist
    n_train: 100
"""


def test_configs_folder_has_the_promised_files():
    names = {p.relative_to(p.parents[1] if p.parent.name == "paper" else p.parent).as_posix()
             for p in CONFIGS}
    assert {"quickstart.yaml", "offline-study.yaml"} <= names
    assert len([p for p in CONFIGS if p.parent.name == "paper"]) >= 4


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_config_validates_and_plans_offline(path, monkeypatch):
    from drprobe.sources import models

    def no_loading(*args, **kwargs):
        raise AssertionError("planning loaded a model")

    monkeypatch.setattr(models, "load_model", no_loading)
    config = load_config(path)
    jobs = plan_jobs(config)
    n_variants = sum(len(m.weights) * len(config.layers_of(m)) for m in config.models)
    assert len(jobs) == n_variants * len(config.datasets)
    assert len({j.id for j in jobs}) == len(jobs)
    assert all(j.id.replace("-", "").replace("_", "").replace(".", "").isalnum() for j in jobs)
    text = format_plan(config, jobs)
    assert all(j.id in text for j in jobs)
    trained = "heads to train" if config.protocol == "faithful" else "probes to train"
    assert trained in text and "rough time" in text
    assert estimate_cost(config, jobs)["probes"] > 0


def test_shipped_layer_names_exist():
    """Layers other than penultimate, as named in the configs, exist in the architectures."""
    from drprobe.sources.layers import list_layers
    from drprobe.sources.models import load_model

    wanted: dict[str, set[str]] = {}
    for path in CONFIGS:
        config = load_config(path)
        for m in config.models:
            wanted.setdefault(m.spec, set()).update(set(config.layers_of(m)) - {"penultimate"})
    assert wanted["builtin:resnet50"] and wanted["builtin:efficientnet_lite0"]
    for spec, layers in wanted.items():
        if layers:
            names = {info.name for info in list_layers(load_model(spec, "random"), 64)}
            assert layers <= names, (spec, layers - names)


def test_quickstart_is_the_demo():
    from drprobe.experiment.demo import demo_config

    quick = load_config(Path(__file__).resolve().parents[1] / "configs" / "quickstart.yaml")
    assert quick.fingerprint() == demo_config().fingerprint()
    assert demo_config(twin=False).models[0].weights == ["pretrained"]


def test_defaults_and_roundtrip(tmp_path):
    path = tmp_path / "ok.yaml"
    path.write_text(GOOD)
    config = load_config(path)
    assert config.selectors == ["random"] and config.layers == ["penultimate"]
    assert config.probe.tol == 1e-3 and config.protocol == "cached"
    assert config.models[0].weights == ["pretrained", "random"]
    again = tmp_path / "again.yaml"
    again.write_text(config.to_yaml())
    assert load_config(again) == config
    assert load_config(again).run_id() == config.run_id()
    # resources do not change what is computed, the grid does
    data = config.canonical()
    data["resources"]["cpus"] = 4
    data["description"] = "edited"
    assert parse_config(data).run_id() == config.run_id()
    data["seeds"] = [7]
    assert parse_config(data).run_id() != config.run_id()


@pytest.mark.parametrize(
    "edit, expected",
    [
        (GOOD.replace("n_train: 100", "n_train: -5"),
         "datasets[1].n_train: must be a positive integer, got -5"),
        (GOOD.replace("  - name: digits", "  - name: digits\n    image_size: 3.5"),
         "datasets[0].image_size: must be an integer, got 3.5"),
        (GOOD + "colour: blue\n", "colour: unknown field; valid fields: name, description, models"),
        (GOOD.replace("spec: builtin:mobilenet_v2", "spec: builtin:mobilenet_v2\n    wieghts: [x]"),
         "models[0].wieghts: unknown field; valid fields: spec, weights"),
        (GOOD.replace("builtin:mobilenet_v2", "builtin:resnet9000"),
         ("models[0].spec: unknown model 'builtin:resnet9000'; valid choices: "
          "builtin:efficientnet_lite0")),
        (GOOD.replace("name: digits", "name: cifar11"),
         "datasets[0].name: unknown dataset 'cifar11'; valid choices: cifar10"),
        (GOOD + "selectors: [random, pca_biggest]\n",
         "selectors: unknown selector 'pca_biggest'; valid choices: greedy"),
        (GOOD + "fractions: [0.1, 1.5]\n",
         "fractions[1]: fraction 1.5 is outside the valid range (0, 1]"),
        (GOOD + "fractions: [0.1]\ncounts: [8]\n", "give fractions or counts, not both"),
        (GOOD + "probe:\n  tol: -1\n", "probe.tol: must be > 0"),
        (GOOD + "protocol: exact\n", "protocol: must be one of 'cached' or 'faithful', got 'exact'"),
        (GOOD + "pooling: max\n", "pooling: unknown pooling 'max'; valid choices: avg"),
        (GOOD + "seeds: [1, 1]\n", "seeds: seed 1 is listed twice"),
        (GOOD + "device: tpu\n",
         "device: unknown device 'tpu'; valid choices: auto (CUDA if present), cpu, cuda, cuda:N"),
        (GOOD + "device: mps\n", "device: device 'mps' serves feature extraction only"),
        (GOOD + "memory_budget_gb: 0\n",
         "memory_budget_gb: memory_budget_gb must be a positive number of GiB; got 0.0"),
        (GOOD.replace("name: t\n", ""), "name: required field is missing"),
        ("- just\n- a list\n", "must be a mapping of fields"),
    ],
)
def test_bad_field_is_one_line_with_file_and_path(tmp_path, edit, expected):
    path = tmp_path / "offline.yaml"
    path.write_text(edit)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: ")
    assert expected in message


def test_malformed_yaml_reports_line_and_column(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("name: t\nmodels:\n  - spec: [builtin:mobilenet_v2\ndatasets: []\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert message.startswith(f"{path}: line ") and "column" in message and "\n" not in message
    line = int(message.split("line ")[1].split(",")[0])
    assert 3 <= line <= 4  # the unclosed bracket opens on line 3; the parser stops on line 4


def test_duplicate_job_ids_are_refused(tmp_path):
    data = {"name": "t", "datasets": [{"name": "digits"}],
            "models": [{"spec": "builtin:mobilenet_v2", "checkpoint": "a.pt"},
                       {"spec": "builtin:mobilenet_v2", "checkpoint": "b.pt"}]}
    with pytest.raises(ConfigError, match="distinct `name`"):
        parse_config(data)
    data["models"][1]["name"] = "mobilenet-b"
    ids = [j.id for j in plan_jobs(parse_config(data))]
    assert "mobilenet-b-pretrained-digits-penultimate" in ids and len(set(ids)) == 4


def test_cli_dry_run_lists_jobs_and_writes_nothing(tmp_path, capsys):
    config = tmp_path / "c.yaml"
    config.write_text(GOOD + "layers: [penultimate, features.14]\n")
    out = tmp_path / "run"
    assert main(["run", str(config), "--out", str(out), "--dry-run"]) == 0
    text = capsys.readouterr().out
    assert "mobilenet_v2-random-fashion-mnist-features.14" in text
    assert "8 jobs" in text and "probes to train" in text
    assert not out.exists()


@pytest.mark.parametrize("edit, needle", [
    (GOOD.replace("n_train: 100", "n_train: 0"), "datasets[1].n_train"),
    (GOOD + "layers: [features.99]\n", "features.14"),
])
def test_cli_bad_config_exit_2_nothing_written(tmp_path, capsys, edit, needle):
    config = tmp_path / "c.yaml"
    config.write_text(edit)
    out, cache = tmp_path / "run", tmp_path / "cache"
    code = main(["run", str(config), "--out", str(out), "--cache-dir", str(cache),
                 "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and needle in err
    assert not out.exists() and not cache.exists()


def test_faithful_plan_costs_the_epochs_of_images():
    cached = parse_config(yaml.safe_load(GOOD))
    faithful = parse_config({**yaml.safe_load(GOOD), "protocol": "faithful",
                             "faithful": {"epochs": 10}})
    jobs = plan_jobs(cached)
    cost_c, cost_f = estimate_cost(cached, jobs), estimate_cost(faithful, jobs)
    assert cost_f["images"] == cost_c["images"]  # the clean features are extracted either way
    assert cost_f["seconds"] > cost_c["seconds"]
    longer = parse_config({**yaml.safe_load(GOOD), "protocol": "faithful",
                           "faithful": {"epochs": 20}})
    extra_f = cost_f["seconds"] - cost_c["seconds"]
    assert estimate_cost(longer, jobs)["seconds"] - cost_c["seconds"] > 1.5 * extra_f
    assert "heads to train" in format_plan(faithful, jobs)
