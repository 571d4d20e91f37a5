"""Model entries written as variants x seeds patterns."""

from __future__ import annotations

import pytest

from drprobe.errors import ConfigError
from drprobe.experiment.config import load_config, parse_config
from drprobe.experiment.patterns import expand_model_patterns
from drprobe.pretrain import load_pretrain_config

PATTERN = {"name": "{variant}/seed{seed}", "spec": "ckpt:OUT/{variant}/seed{seed}/model.pt",
           "variants": ["ce", "mrl"], "seeds": [0, 2]}


def test_a_pattern_is_one_entry_per_variant_and_seed_in_order():
    plain = {"name": "mobilenet", "spec": "builtin:mobilenet_v2"}
    data = {"name": "x", "models": [plain, {**PATTERN, "weights": ["pretrained", "random"]},
                                    {**PATTERN, "variants": ["ff16"], "weights": ["pretrained"]}]}
    got = expand_model_patterns(data)["models"]
    twins = ["pretrained", "random"]
    assert got == [
        plain,
        {"name": "ce/seed0", "spec": "ckpt:OUT/ce/seed0/model.pt", "weights": twins,
         "init_seed": 0},
        {"name": "ce/seed2", "spec": "ckpt:OUT/ce/seed2/model.pt", "weights": twins,
         "init_seed": 2},
        {"name": "mrl/seed0", "spec": "ckpt:OUT/mrl/seed0/model.pt", "weights": twins,
         "init_seed": 0},
        {"name": "mrl/seed2", "spec": "ckpt:OUT/mrl/seed2/model.pt", "weights": twins,
         "init_seed": 2},
        # no random twin asked for: init_seed left at its default
        {"name": "ff16/seed0", "spec": "ckpt:OUT/ff16/seed0/model.pt", "weights": ["pretrained"]},
        {"name": "ff16/seed2", "spec": "ckpt:OUT/ff16/seed2/model.pt", "weights": ["pretrained"]},
    ]
    assert data["models"][1]["variants"] == ["ce", "mrl"]  # the input is not modified


def test_an_explicit_init_seed_wins_and_one_list_alone_works():
    got = expand_model_patterns({"models": [{"name": "v/seed{seed}", "spec": "s{seed}",
                                             "seeds": [3, 4], "init_seed": 9}]})["models"]
    assert [(m["name"], m["spec"], m["init_seed"]) for m in got] == [("v/seed3", "s3", 9),
                                                                       ("v/seed4", "s4", 9)]
    got = expand_model_patterns({"models": [{"name": "{variant}", "spec": "ckpt:{variant}.pt",
                                             "variants": ["a", "b"]}]})["models"]
    assert got == [{"name": "a", "spec": "ckpt:a.pt"}, {"name": "b", "spec": "ckpt:b.pt"}]


@pytest.mark.parametrize("entry, problem", [
    ({**PATTERN, "seeds": "0, 1"}, "models.0.seeds: must be a non-empty list of integers"),
    ({**PATTERN, "seeds": [0, True]}, "models.0.seeds: must be a non-empty list of integers"),
    ({**PATTERN, "variants": []}, "models.0.variants: must be a non-empty list of names"),
    ({**PATTERN, "variants": ["ce", "ce"]}, "models.0.variants: repeated entries"),
    ({k: v for k, v in PATTERN.items() if k != "seeds"}, "uses {seed} without seeds"),
    ({**PATTERN, "name": "same"}, "models.0.name: a pattern entry needs a name with"),
])
def test_bad_patterns_are_one_line_config_errors(entry, problem):
    with pytest.raises(ConfigError) as err:
        parse_config({"name": "x", "models": [entry], "datasets": [{"name": "digits"}]}, "c.yaml")
    message = str(err.value)
    assert message.startswith("c.yaml: ") and problem in message and "\n" not in message


@pytest.mark.parametrize("name", ["downstream", "source"])
def test_the_study_configs_name_every_pretrained_network_by_pattern(name):
    grid = load_pretrain_config("configs/study/pretrain.yaml")
    cfg = load_config(f"configs/study/{name}.yaml")
    trained = sorted(f"{v.name}/seed{s}" for v in grid.variants for s in grid.seeds_of(v.name))
    names = [m.name for m in cfg.models]
    assert names[0] == "pixels" and sorted(names[1:]) == trained  # each network once
    for m in cfg.models[1:]:
        variant, seed = m.name.split("/seed")
        assert m.spec == f"ckpt:runs/study/pretrain/{variant}/seed{seed}/model.pt"
        twins = variant in ("ce", "width0.5", "width2", "vit")
        assert m.weights == (["pretrained", "random"] if twins else ["pretrained"])
        assert m.init_seed == (int(seed) if twins else 0)
