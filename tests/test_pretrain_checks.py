"""Manipulation checks of drprobe pretrain (drprobe.pretrain.checks), each against a direct
computation on a tiny pretraining grid of real Fashion-MNIST images."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from helpers import one_torch_thread  # noqa: F401 (fixture)

from drprobe.cli import main
from drprobe.errors import DrprobeError
from drprobe.pretrain import checks_table, format_checks_table, parse_pretrain_config, run
from drprobe.pretrain import train as train_module
from drprobe.pretrain.checks import (
    REFERENCE_ATTACKS,
    adversarial_examples,
    incoming_parameters,
    initial_state,
    network_checks,
    offdiag_cov_energy,
    penultimate_features,
    robust_accuracy,
    unchanged_fraction,
)
from drprobe.pretrain.data import load_source, pixels
from drprobe.pretrain.train import MODEL_FILE, evaluate, train_one
from drprobe.sources.builtin import sha256_file
from drprobe.sources.layers import layer_features
from drprobe.sources.models import load_model
from drprobe.sources.smallnets import build_network

TINY = {
    "data": {"dataset": "fashion-mnist", "n_train": 192, "n_test": 100},
    "arch": {"base_channels": 2},  # d = 16
    "epochs": 2, "batch_size": 64, "device": "cpu", "seeds": [0],
    "variants": [
        {"name": "ce"},
        {"name": "ff4", "fixed_feature": 4},
        {"name": "mrl", "matryoshka": {}},
        {"name": "adv", "adversarial": {"norm": "linf", "eps": 0.03}},
        {"name": "vitff", "fixed_feature": 4,
         "arch": {"name": "vit", "patch_size": 7, "embed_dim": 16, "depth": 1, "num_heads": 2},
         "optimizer": {"name": "adamw", "lr": 0.003, "weight_decay": 0.05}},
    ],
}
D, K = 16, 4


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def grid(tmp_path_factory):
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("grid")
    return out, {r.variant: r for r in run(TINY, out, progress=False)}


@pytest.fixture(scope="module")
def source():
    recipe = parse_pretrain_config(TINY).resolved("ce")
    return load_source(recipe.data, torch.device("cpu"))


def _normaliser(bundle):
    """The input normalisation stored in the checkpoint, as a function of [0, 1] pixels."""
    mean = torch.tensor(bundle.mean).view(1, 3, 1, 1)
    std = torch.tensor(bundle.std).view(1, 3, 1, 1)
    return lambda x: (x - mean) / std


def _bundle_and_inputs(result, source):
    """The trained network loaded as the probes load it, and the normalised test images."""
    bundle = load_model(result.spec)
    return bundle, _normaliser(bundle)(pixels(source.test_x, 28))


def test_provenance_records_every_check(grid):
    _, results = grid
    for name, r in results.items():
        c = r.provenance["checks"]
        assert c["n_attack"] == c["n_test"] == 100 and c["clean_acc"] == r.provenance["test_acc"]
        assert set(c["robust_acc"]) == {"train", "l2", "linf"} and c["wall_seconds"] > 0
        assert c["attacks"]["l2"] == {"norm": "l2", "eps": 0.5, "steps": 10, "step_size": 0.125,
                                      "random_start": True, "mode": "eval"}
        assert c["attacks"]["linf"]["eps"] == pytest.approx(8 / 255, abs=1e-6)
        assert 0 <= c["offdiag_cov_energy"] <= 1
        for attack, acc in c["robust_acc"].items():
            if acc is not None:  # a loss-raising attack does not help on these networks
                assert 0 <= acc <= c["clean_acc"], (name, attack)
        assert (c["robust_acc"]["train"] is None) == (name != "adv")
        assert (c["prefix_acc"] is None) == (name != "mrl")
    adv = results["adv"].provenance["checks"]["attacks"]["train"]
    assert (adv["norm"], adv["eps"], adv["steps"]) == ("linf", 0.03, 10)
    assert adv["step_size"] == pytest.approx(2.5 * 0.03 / 10)


def test_dead_fraction_is_the_unread_neurons_of_ff_k_and_none_of_ce(grid):
    _, results = grid
    assert results["ff4"].provenance["checks"]["dead_fraction"] == (D - K) / D
    assert results["vitff"].provenance["checks"]["dead_fraction"] == (D - K) / D
    assert results["ce"].provenance["checks"]["dead_fraction"] == 0
    assert results["mrl"].provenance["checks"]["dead_fraction"] == 0


def test_unchanged_fraction_against_direct_row_edits():
    torch.manual_seed(0)
    net = build_network(base_channels=2)
    names = incoming_parameters(net)
    assert names == ["layer4.0.conv2.weight", "layer4.0.bn2.weight", "layer4.0.bn2.bias",
                     "layer4.0.downsample.0.weight", "layer4.0.downsample.1.weight",
                     "layer4.0.downsample.1.bias"]
    start = {k: v.clone() for k, v in net.state_dict().items()}
    assert unchanged_fraction(start, start, names) == 1.0
    shrunk = {k: v * 0.9 if k in names else v for k, v in start.items()}  # weight decay only
    assert unchanged_fraction(shrunk, start, names) == 1.0
    moved = {k: v.clone() for k, v in shrunk.items()}
    moved["layer4.0.conv2.weight"][3, 0, 0, 0] += 0.05  # neuron 3 got a gradient
    moved["layer4.0.downsample.1.bias"][7] += 0.05  # neuron 7 too
    assert unchanged_fraction(moved, start, names) == (D - 2) / D
    grown = {k: v * 1.5 if k in names else v for k, v in start.items()}  # not weight decay
    assert unchanged_fraction(grown, start, names) == 0.0
    vit = build_network("vit", image_size=28, patch_size=7, embed_dim=16, num_heads=2, depth=1)
    assert incoming_parameters(vit) == ["norm.weight", "norm.bias"]


def test_initial_state_is_the_recorded_start_and_refuses_another(grid):
    _, results = grid
    prov = results["ff4"].provenance
    state = initial_state(prov["network"], prov["seed"], prov["init_sha256"])
    rng = torch.get_rng_state()
    twin = load_model(results["ff4"].spec, weights="random", seed=prov["seed"])
    for name, value in twin.module.state_dict().items():
        assert torch.equal(value, state[name])
    assert torch.equal(rng, torch.get_rng_state())
    with pytest.raises(DrprobeError, match="does not match init_sha256"):
        initial_state(prov["network"], prov["seed"] + 1, prov["init_sha256"])


def test_offdiag_energy_and_prefix_accuracy_against_the_probe_features(grid, source):
    _, results = grid
    for name in ("ce", "mrl", "vitff"):
        r = results[name]
        bundle, x = _bundle_and_inputs(r, source)
        z = layer_features(bundle, "penultimate", x)
        # the checks read the same penultimate as the probes
        mine = penultimate_features(bundle.module, _normaliser(bundle), source.test_x, 28)
        torch.testing.assert_close(mine, z, atol=1e-5, rtol=1e-5)
        z = z.double().numpy()
        cov = np.cov(z, rowvar=False, bias=True)
        share = (cov ** 2 - np.diag(np.diag(cov) ** 2)).sum() / (cov ** 2).sum()
        assert r.provenance["checks"]["offdiag_cov_energy"] == pytest.approx(share, abs=2e-6)
        assert offdiag_cov_energy(z) == pytest.approx(share, rel=1e-12)
    y = source.test_y.numpy()
    bundle, x = _bundle_and_inputs(results["mrl"], source)
    z = layer_features(bundle, "penultimate", x)
    head = bundle.module.fc
    with torch.no_grad():
        direct = {str(m): float((lin(z[:, :m]).argmax(1).numpy() == y).mean())
                  for m, lin in zip(head.widths, head.heads)}
    assert list(direct) == ["8", "16"]
    assert results["mrl"].provenance["checks"]["prefix_acc"] == pytest.approx(direct, abs=1e-6)
    assert direct["16"] == pytest.approx(results["mrl"].provenance["test_acc"], abs=1e-6)


def test_offdiag_energy_extremes():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(5000, 8, generator=g, dtype=torch.float64)
    assert offdiag_cov_energy(z * torch.arange(1, 9)) < 0.01  # independent neurons
    assert offdiag_cov_energy(z[:, :1].repeat(1, 8)) == pytest.approx(1 - 1 / 8)  # copies
    assert offdiag_cov_energy(torch.ones(10, 4)) is None


def _direct_pgd(net, norm, x, y, kind, eps, steps, seed) -> torch.Tensor:
    """PGD written out, the network in eval mode: a uniform start in the linf box or the
    uniform cube scaled into the l2 ball, 10 steps of 2.5 eps / 10 along the gradient's sign
    (linf) or its unit vector (l2), projected to the ball and clipped to [0, 1]."""
    net.eval()
    g = torch.Generator().manual_seed(seed)

    def ball(delta):
        if kind == "linf":
            return delta.clamp(-eps, eps)
        size = delta.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
        return delta * torch.where(size > eps, eps / size, torch.ones_like(size))

    noise = torch.rand(x.shape, generator=g) * 2 - 1
    delta = ball(noise * eps if kind == "linf" else noise)
    delta = (x + delta).clamp(0, 1) - x
    for _ in range(steps):
        delta.requires_grad_(True)
        (grad,) = torch.autograd.grad(F.cross_entropy(net(norm(x + delta)), y), delta)
        step = grad.sign() if kind == "linf" else grad / grad.flatten(1).norm(dim=1).view(
            -1, 1, 1, 1)
        delta = ball(delta.detach() + 2.5 * eps / steps * step)
        delta = (x + delta).clamp(0, 1) - x
    return (x + delta).detach()


def test_robust_accuracy_against_a_direct_pgd_and_equal_to_clean_at_zero_eps(grid, source):
    _, results = grid
    r = results["adv"]
    bundle, _ = _bundle_and_inputs(r, source)
    net, norm = bundle.module, _normaliser(bundle)
    x, y = pixels(source.test_x, 28), source.test_y
    checks = r.provenance["checks"]
    attacks = {"train": ("linf", 0.03), **REFERENCE_ATTACKS}
    for name, (kind, eps) in attacks.items():
        net.train()  # the attack must put it in eval mode (and give the mode back)
        mine = adversarial_examples(net, norm, x, y, kind, eps, 10,
                                    torch.Generator().manual_seed(0))
        assert net.training
        direct = _direct_pgd(net, norm, x, y, kind, eps, 10, 0)
        torch.testing.assert_close(mine, direct, atol=1e-6, rtol=0)
        size = (direct - x).flatten(1).abs().amax(1) if kind == "linf" else (
            direct - x).flatten(1).norm(dim=1)
        assert float(size.max()) <= eps * (1 + 1e-5) and float(size.max()) > 0.5 * eps
        with torch.no_grad():
            acc = float((net(norm(direct)).argmax(1) == y).float().mean())
        assert checks["robust_acc"][name] == pytest.approx(acc, abs=1e-9), name
    other = _direct_pgd(net, norm, x, y, "linf", 0.03, 10, 1)  # the seed matters
    assert not torch.allclose(other, _direct_pgd(net, norm, x, y, "linf", 0.03, 10, 0))
    clean = evaluate(net, norm, source.test_x, y, 28)
    for kind in ("l2", "linf"):
        assert robust_accuracy(net, norm, source.test_x, y, 28, kind, 0.0, 10, 0) == clean
    net.train()  # checked in eval mode, left in its mode
    assert robust_accuracy(net, norm, source.test_x, y, 28, "l2", 0.0, 10, 0) == clean
    assert net.training


def test_checks_change_neither_the_network_nor_the_rng_nor_model_pt(grid, source, tmp_path,
                                                                   monkeypatch):
    _, results = grid
    r = results["mrl"]
    bundle, _ = _bundle_and_inputs(r, source)
    net = bundle.module.train()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    recipe = parse_pretrain_config(TINY).resolved("mrl")
    initial = initial_state(r.provenance["network"], 0, r.provenance["init_sha256"])
    rng = torch.get_rng_state()
    again = network_checks(net, _normaliser(bundle), source, recipe, 0, initial)
    assert net.training and torch.equal(rng, torch.get_rng_state())
    for k, v in net.state_dict().items():
        assert torch.equal(v, before[k]), k
    stored = r.provenance["checks"]
    assert {k: again[k] for k in ("robust_acc", "offdiag_cov_energy", "prefix_acc")} == {
        k: stored[k] for k in ("robust_acc", "offdiag_cov_energy", "prefix_acc")}
    # model.pt has the same bytes with the checks as without them
    ce = parse_pretrain_config(TINY).resolved("ce")
    monkeypatch.setattr(train_module, "network_checks", lambda *a, **k: {})
    without, _ = train_one(ce, 0, tmp_path / "none", source, torch.device("cpu"), False)
    assert without["checks"] == {}
    assert sha256_file(tmp_path / "none" / MODEL_FILE) == results["ce"].provenance["sha256"]


def test_checks_table_has_one_row_per_network(grid):
    out, results = grid
    table = checks_table(out)
    assert list(table["variant"]) == [v["name"] for v in TINY["variants"]]
    assert list(table["seed"]) == [0] * 5
    assert list(table.columns) == ["variant", "seed", "test_acc", "clean_acc", "robust_train",
                                   "robust_l2", "robust_linf", "offdiag_cov_energy",
                                   "dead_fraction", "prefix_acc_8", "prefix_acc_16"]
    row = table.set_index("variant").loc["adv"]
    c = results["adv"].provenance["checks"]
    assert row["robust_train"] == c["robust_acc"]["train"]
    assert row["robust_linf"] == c["robust_acc"]["linf"]
    assert np.isnan(table.set_index("variant").loc["ce", "robust_train"])
    text = format_checks_table(table)
    lines = text.splitlines()
    assert len(lines) == 6 and lines[0].split()[:3] == ["variant", "seed", "test"]
    assert "p8" in lines[0] and "0.750" in text
    with pytest.raises(DrprobeError, match="holds no finished pretraining run"):
        checks_table(out / "ce")


def test_command_prints_the_checks_table(tmp_path, capsys):
    path = tmp_path / "cfg.yaml"
    cfg = {**TINY, "epochs": 1, "variants": [{"name": "ff4", "fixed_feature": 4}]}
    path.write_text(yaml.safe_dump(cfg))
    code = main(["pretrain", str(path), "--out", str(tmp_path / "out"), "--no-progress"])
    printed = capsys.readouterr().out
    assert code == 0 and "manipulation checks" in printed
    header = next(line for line in printed.splitlines() if line.startswith("variant"))
    assert header.split() == ["variant", "seed", "test", "clean", "rob_train", "rob_l2",
                              "rob_linf", "offdiag", "dead"]
    row = printed.splitlines()[printed.splitlines().index(header) + 1].split()
    assert row[:2] == ["ff4", "0"] and row[4] == "-" and row[-1] == "0.750"
    prov = json.loads((tmp_path / "out" / "ff4" / "seed0" / "provenance.json").read_text())
    assert prov["checks"]["dead_fraction"] == 0.75
