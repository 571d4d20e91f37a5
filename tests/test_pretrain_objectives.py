"""Each pretraining objective on a tiny network against a direct computation."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from drprobe.pretrain.objectives import decov_penalty, pgd, project, training_loss
from drprobe.sources.smallnets import (
    MatryoshkaHead,
    build_network,
    default_widths,
    penultimate_width,
)
from drprobe.sources.zoo.heads import PrefixLinear

TINY = {"base_channels": 2, "blocks": [1, 1, 1, 1]}  # d = 16


def _net(seed: int = 0, **kwargs) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_network(**{**TINY, **kwargs})


def _batch(b: int = 6, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, 3, 28, 28, generator=g), torch.randint(0, 10, (b,), generator=g)


def _cross_entropy(logits: np.ndarray, y: np.ndarray) -> float:
    """Mean negative log-likelihood of softmax(logits), written out in numpy."""
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_p = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    return float(-log_p[np.arange(len(y)), y].mean())


def test_network_widths_and_hookable_blocks():
    net = _net()
    assert penultimate_width("resnet", 1.0, base_channels=2) == 16
    assert penultimate_width("resnet", 2.0, base_channels=2) == 32
    x, _ = _batch()
    assert net.embed(x).shape == (6, 16) and net(x).shape == (6, 10)
    names = dict(net.named_modules())
    assert {"layer1", "layer2", "layer3", "layer4", "fc"} <= names.keys()
    vit = build_network("vit", embed_dim=8, depth=2, num_heads=2, patch_size=7, width=2.0)
    assert vit.embed(x).shape == (6, 16) and "blocks.1" in dict(vit.named_modules())


def test_default_matryoshka_widths():
    assert default_widths(128) == [8, 16, 32, 64, 128]
    assert default_widths(96) == [8, 16, 32, 64, 96]
    assert default_widths(8) == [8]


def test_matryoshka_loss_is_the_sum_of_the_prefix_losses():
    net = _net(head="matryoshka").eval()
    head = net.fc
    assert isinstance(head, MatryoshkaHead) and head.widths == [8, 16]
    x, y = _batch()
    loss, logits = training_loss(net, x, y)
    z = net.embed(x).detach().numpy()
    expected = 0.0
    for m, linear in zip([8, 16], head.heads):
        w, b = linear.weight.detach().numpy(), linear.bias.detach().numpy()
        expected += _cross_entropy(z[:, :m] @ w.T + b, y.numpy())
    assert float(loss.detach()) == pytest.approx(expected, rel=1e-5)
    full = head.heads[1]
    np.testing.assert_allclose(logits.detach().numpy(),
                               z @ full.weight.detach().numpy().T + full.bias.detach().numpy(),
                               rtol=1e-5, atol=1e-6)


def test_plain_loss_is_cross_entropy_and_decov_adds_its_penalty():
    net = _net().eval()
    x, y = _batch()
    z = net.embed(x).detach().numpy()
    w, b = net.fc.weight.detach().numpy(), net.fc.bias.detach().numpy()
    ce = _cross_entropy(z @ w.T + b, y.numpy())
    assert float(training_loss(net, x, y)[0].detach()) == pytest.approx(ce, rel=1e-5)
    cov = np.cov(z.T.astype(np.float64), bias=True)
    penalty = 0.5 * ((cov ** 2).sum() - (np.diag(cov) ** 2).sum())
    assert penalty > 0
    got = float(training_loss(net, x, y, decov_alpha=0.5)[0].detach())
    assert got == pytest.approx(ce + 0.5 * penalty, rel=1e-5)


def test_decov_penalty_equals_its_formula():
    z = torch.randn(50, 7, generator=torch.Generator().manual_seed(3), dtype=torch.float64) * 2
    z[:, 1] += 3 * z[:, 0]  # correlated columns make the off-diagonal large
    zn = z.numpy()
    centred = zn - zn.mean(axis=0)
    cov = centred.T @ centred / len(zn)
    off_diagonal = sum(cov[i, j] ** 2 for i in range(7) for j in range(7) if i != j)
    assert float(decov_penalty(z)) == pytest.approx(0.5 * off_diagonal, rel=1e-10)
    uncorrelated = torch.tensor([[1.0, 1.0], [1.0, -1.0], [-1.0, 1.0], [-1.0, -1.0]]) * 3
    assert float(decov_penalty(uncorrelated)) == 0.0


@pytest.mark.parametrize("norm,eps", [("l2", 0.5), ("linf", 0.03)])
@pytest.mark.parametrize("random_start", [False, True])
def test_pgd_raises_the_loss_and_stays_in_its_ball(norm, eps, random_start):
    net = _net().eval()
    x, y = _batch(8)
    x[:, :, :4] = 0.0  # pixels at the edges of [0, 1] must stay inside it
    x[:, :, -4:] = 1.0

    def loss_fn(images, labels):
        return torch.nn.functional.cross_entropy(net(images), labels)

    adv = pgd(loss_fn, x, y, norm, eps, steps=5, step_size=2.5 * eps / 5,
              random_start=random_start, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert float(loss_fn(adv, y)) > float(loss_fn(x, y))
    delta = (adv - x).flatten(1)
    size = delta.norm(dim=1) if norm == "l2" else delta.abs().max(dim=1).values
    assert (size <= eps * (1 + 1e-5)).all() and (size > 0).all()
    assert adv.min() >= 0 and adv.max() <= 1
    assert not adv.requires_grad and all(p.grad is None for p in net.parameters())


def test_projection_onto_the_balls():
    d = torch.tensor([[3.0, 4.0], [0.3, 0.4], [-2.0, 0.1]])
    np.testing.assert_allclose(project(d, "l2", 1.0).numpy(),
                               [[0.6, 0.8], [0.3, 0.4], (d[2] / d[2].norm()).numpy()], rtol=1e-6)
    np.testing.assert_allclose(project(d, "linf", 0.5).numpy(),
                               [[0.5, 0.5], [0.3, 0.4], [-0.5, 0.1]])


def test_fixed_feature_head_reads_only_the_first_k_neurons():
    net = _net(head="fixed_feature", head_args={"k": 5}).eval()
    assert isinstance(net.fc, PrefixLinear) and net.fc.in_features == 5
    g = torch.Generator().manual_seed(0)
    z = torch.randn(4, 16, generator=g)
    changed = z.clone()
    changed[:, 5:] = torch.randn(4, 11, generator=g) * 10
    torch.testing.assert_close(net.classify(z), net.classify(changed), rtol=0, atol=0)
    touched = z.clone()
    touched[:, 4] += 1.0
    assert not torch.allclose(net.classify(z), net.classify(touched))
    with pytest.raises(Exception, match="fixed_feature k must be in"):
        _net(head="fixed_feature", head_args={"k": 17})


def test_dropout_is_off_at_evaluation_and_on_in_training():
    net = _net(dropout=0.5)
    x, _ = _batch()
    net.eval()
    with torch.no_grad():
        torch.testing.assert_close(net(x), net(x), rtol=0, atol=0)
        net.train()
        assert not torch.allclose(net(x), net(x))
    plain = _net()  # same weights, no dropout: training-mode forwards agree
    plain.load_state_dict(net.state_dict())
    plain.train()
    with torch.no_grad():
        torch.testing.assert_close(plain(x), plain(x), rtol=0, atol=0)


def _bn_net() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
        torch.nn.Flatten(), torch.nn.Dropout(0.5), torch.nn.Linear(4 * 8 * 8, 3))


def _direct_linf_pgd(net, x, y, eps, steps, alpha, generator):
    """PGD linf written out: eval mode, uniform random start in the box, signed steps."""
    net.eval()
    delta = (torch.rand(x.shape, generator=generator) * 2 - 1) * eps
    delta = (x + delta).clamp(0, 1) - x
    for _ in range(steps):
        delta.requires_grad_(True)
        loss = torch.nn.functional.cross_entropy(net(x + delta), y)
        (grad,) = torch.autograd.grad(loss, delta)
        delta = (delta.detach() + alpha * grad.sign()).clamp(-eps, eps)
        delta = (x + delta).clamp(0, 1) - x
    net.train()
    return (x + delta).detach()


def test_the_training_attack_runs_in_eval_mode_from_a_random_start():
    from drprobe.pretrain.config import Adversarial
    from drprobe.pretrain.train import attack

    net = _bn_net().train()
    x = torch.rand(16, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    y = torch.arange(16) % 3
    net(x)  # running statistics that are not the defaults
    twin = copy.deepcopy(net)
    stats = [t.clone() for t in net[1].state_dict().values()]
    adv = Adversarial(norm="linf", eps=0.1, steps=4)
    assert adv.random_start  # the recipe's default
    got = attack(net, torch.nn.Identity(), x, y, adv, torch.Generator().manual_seed(5))
    assert net.training  # back in train mode for the training pass
    for before, after in zip(stats, net[1].state_dict().values()):
        assert torch.equal(before, after)  # the attack's passes left batch norm alone
    want = _direct_linf_pgd(twin, x, y, 0.1, 4, adv.alpha,
                            torch.Generator().manual_seed(5))
    torch.testing.assert_close(got, want, rtol=0, atol=1e-6)
    # the train-mode attack (batch statistics, dropout) is a different one: the test can tell
    net.train()
    train_mode = pgd(lambda xa, ya: torch.nn.functional.cross_entropy(net(xa), ya), x, y, "linf",
                     0.1, 4, adv.alpha, True, torch.Generator().manual_seed(5))
    assert not torch.allclose(train_mode, got, atol=1e-6)
