"""The pretraining objectives: cross-entropy, Matryoshka, DeCov and PGD adversarial examples.

Pure functions on tensors (plus the network for :func:`training_loss` and :func:`pgd`);
nothing here keeps state. Images enter in [0, 1] pixel space; the network sees them through
``normalise`` so that PGD budgets are in pixel units whatever the normalisation.

Memory: per batch of b images, the network's activations (times ``steps`` + 1 for PGD, one
at a time) and, for DeCov, one d x d covariance.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from drprobe.errors import InvalidValueError
from drprobe.sources.smallnets import MatryoshkaHead

__all__ = ["NORMS", "decov_penalty", "matryoshka_loss", "pgd", "project", "training_loss"]

NORMS = ("l2", "linf")
Normalise = Callable[[torch.Tensor], torch.Tensor]


def decov_penalty(z: torch.Tensor) -> torch.Tensor:
    """DeCov (Cogswell et al. 2016): ``1/2 (||S||_F^2 - ||diag S||_2^2)`` with S the (d, d)
    covariance of the batch ``z`` (b, d), normalised by b (the paper's 1/N)."""
    centred = z - z.mean(dim=0, keepdim=True)
    cov = centred.T @ centred / z.shape[0]
    return 0.5 * (cov.pow(2).sum() - torch.diagonal(cov).pow(2).sum())


def matryoshka_loss(head: MatryoshkaHead, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Sum over the head's nested widths m of the cross-entropy of the prefix ``z[:, :m]``."""
    return sum(F.cross_entropy(logits, y) for logits in head.all_logits(z))


def project(delta: torch.Tensor, norm: str, eps: float) -> torch.Tensor:
    """``delta`` (b, ...) moved into the ``norm`` ball of radius ``eps``, per example."""
    if norm == "linf":
        return delta.clamp(-eps, eps)
    if norm == "l2":
        size = delta.flatten(1).norm(dim=1).clamp_min(1e-12)
        scale = (eps / size).clamp(max=1.0)
        return delta * scale.view(-1, *([1] * (delta.ndim - 1)))
    raise InvalidValueError(f"unknown norm {norm!r}; valid choices: {', '.join(NORMS)}")


def _ascent(grad: torch.Tensor, norm: str) -> torch.Tensor:
    """The steepest-ascent direction of unit ``norm`` for the gradient ``grad``."""
    if norm == "linf":
        return grad.sign()
    size = grad.flatten(1).norm(dim=1).clamp_min(1e-12)
    return grad / size.view(-1, *([1] * (grad.ndim - 1)))


def pgd(
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor,
    norm: str,
    eps: float,
    steps: int,
    step_size: float,
    random_start: bool = False,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Projected gradient ascent on ``loss_fn(x_adv, y)`` (a batch mean) from ``x``.

    Each step moves by ``step_size`` along the normalised gradient (its sign for ``linf``),
    projects the perturbation into the ``eps`` ball and clips the image to [0, 1]. The returned
    batch is detached; no gradient reaches the network's parameters.

    Args:
        loss_fn: ``(images in [0, 1], labels) -> scalar`` loss to raise.
        x: (b, C, H, W) clean images in [0, 1]; y: (b,) labels.
        norm: ``"l2"`` or ``"linf"``; eps: the ball's radius in pixel units.
        random_start: start from a uniform point of the linf box / a random point of the l2
            ball, drawn with ``generator``.

    Returns:
        (b, C, H, W) adversarial images, ``||x_adv - x|| <= eps`` and inside [0, 1].
    """
    if norm not in NORMS:
        raise InvalidValueError(f"unknown norm {norm!r}; valid choices: {', '.join(NORMS)}")
    delta = torch.zeros_like(x)
    if random_start:
        noise = torch.rand(x.shape, generator=generator, device="cpu").to(x.device) * 2 - 1
        delta = project(noise * eps if norm == "linf" else noise, norm, eps)
        delta = (x + delta).clamp(0, 1) - x
    for _ in range(steps):
        delta.requires_grad_(True)
        loss = loss_fn(x + delta, y)
        (grad,) = torch.autograd.grad(loss, delta)
        delta = project(delta.detach() + step_size * _ascent(grad, norm), norm, eps)
        delta = (x + delta).clamp(0, 1) - x
    return (x + delta).detach()


def training_loss(
    net: nn.Module, x: torch.Tensor, y: torch.Tensor, decov_alpha: float | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The loss of one batch of normalised images and the full head's logits.

    Cross-entropy of the head, or the Matryoshka sum when the head is a
    :class:`~drprobe.sources.smallnets.MatryoshkaHead`; plus ``decov_alpha`` times the DeCov
    penalty of the penultimate vector (before dropout) when given.

    Returns:
        (scalar loss, (b, n_classes) logits of the full-width head).
    """
    z = net.embed(x)
    head = getattr(net, net.classifier_name)
    dropped = net.penultimate_dropout(z)
    logits = head(dropped)
    if isinstance(head, MatryoshkaHead):
        loss = matryoshka_loss(head, dropped, y)
    else:
        loss = F.cross_entropy(logits, y)
    if decov_alpha:
        loss = loss + decov_alpha * decov_penalty(z)
    return loss, logits
