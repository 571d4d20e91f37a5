"""Manipulation checks of a pretrained network: did its treatment take?

Computed once, at the end of training, on the source task's test subset (what
:class:`~drprobe.pretrain.data.SourceData` holds), and stored under ``checks`` in the run's
``provenance.json``; :func:`checks_table` gathers them for a whole pretraining output folder.

- ``robust_acc``: accuracy under PGD (eval mode, random start, ``ATTACK_STEPS`` = 10 steps of
  2.5 * eps / steps) on the first ``ATTACK_IMAGES`` = 1000 test images, at two reference
  budgets every network gets (``l2``: eps 0.5, ``linf``: eps 8/255 written as the study config
  writes it, 0.0313725; [0, 1] pixel units) and, for an adversarial variant, at its training
  norm and eps (``train``; max(10, the recipe's steps) steps). Each attack's random start is
  drawn from a fresh generator seeded with the network's seed, so the numbers are repeatable.
- ``offdiag_cov_energy``: the off-diagonal share of the penultimate covariance's squared
  Frobenius mass (see :func:`offdiag_cov_energy`).
- ``prefix_acc``: each Matryoshka prefix's test accuracy (null for other heads).
- ``dead_fraction``: the share of penultimate neurons whose incoming weights kept their initial
  direction (see :func:`unchanged_fraction`).

Memory: the test subset's (n, d) penultimate features and logits, one attack batch of
``BATCH`` images with its activations for one backward pass, and a second copy of the
network's weights (its initial state).
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
import yaml

from drprobe.errors import InvalidValueError
from drprobe.pretrain.config import Recipe
from drprobe.pretrain.data import SourceData, pixels
from drprobe.pretrain.objectives import pgd
from drprobe.sources.builtin import state_sha256
from drprobe.sources.smallnets import MatryoshkaHead, build_network

__all__ = ["ATTACK_IMAGES", "ATTACK_STEPS", "REFERENCE_ATTACKS", "adversarial_examples",
           "checks_table", "format_checks_table", "incoming_parameters", "initial_state",
           "network_checks", "offdiag_cov_energy", "penultimate_features", "prefix_accuracies",
           "robust_accuracy", "unchanged_fraction"]

ATTACK_IMAGES, ATTACK_STEPS, BATCH = 1000, 10, 500
#: The common attacks every network gets: (norm, eps in [0, 1] pixel units).
REFERENCE_ATTACKS = {"l2": ("l2", 0.5), "linf": ("linf", 0.0313725)}
UNCHANGED_TOL = 1e-4
PROVENANCE_FILE = "provenance.json"


def penultimate_features(net: torch.nn.Module, normalise, images: torch.Tensor, size: int
                         ) -> torch.Tensor:
    """(n, d) float32 penultimate vectors of uint8 ``images`` in eval mode (``net.embed``: the
    classifier's input, what drprobe's ``penultimate`` layer reads), on the net's device.
    Memory: the (n, d) result and one batch of activations."""
    was_training = net.training
    net.eval()
    try:
        with torch.inference_mode():
            return torch.cat([net.embed(normalise(pixels(images[i:i + BATCH], size)))
                              for i in range(0, images.shape[0], BATCH)])
    finally:
        net.train(was_training)


def adversarial_examples(net: torch.nn.Module, normalise, x: torch.Tensor, y: torch.Tensor,
                         norm: str, eps: float, steps: int, generator: torch.Generator,
                         alpha: float | None = None, random_start: bool = True
                         ) -> torch.Tensor:
    """:func:`~drprobe.pretrain.objectives.pgd` on pixels ``x`` (b, 3, S, S) in [0, 1]:
    ``steps`` steps of ``alpha`` (default 2.5 * eps / steps) in the ``norm`` ball of radius
    ``eps``, from a random start drawn with ``generator`` unless ``random_start`` is False, the
    network in eval mode as the robustness library attacks (batch norm on its running
    statistics, untouched; dropout off); its mode is restored after. Memory: the batch's
    activations for one backward."""
    was_training = net.training
    net.eval()

    def loss(xa: torch.Tensor, ya: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(net(normalise(xa)), ya)

    try:
        return pgd(loss, x, y, norm, eps, steps, 2.5 * eps / steps if alpha is None else alpha,
                   random_start, generator)
    finally:
        net.train(was_training)


def robust_accuracy(net: torch.nn.Module, normalise, images: torch.Tensor,
                    labels: torch.Tensor, size: int, norm: str, eps: float, steps: int,
                    seed: int) -> float:
    """Accuracy on uint8 ``images`` after :func:`adversarial_examples` (random starts from
    ``torch.Generator().manual_seed(seed)``, batches of ``BATCH`` in order), predicted in
    eval mode; the network's mode is restored after. Memory: one batch and its activations
    for one backward pass."""
    was_training = net.training
    generator = torch.Generator().manual_seed(seed)
    correct = 0
    try:
        for i in range(0, images.shape[0], BATCH):
            x, y = pixels(images[i:i + BATCH], size), labels[i:i + BATCH]
            x_adv = adversarial_examples(net, normalise, x, y, norm, eps, steps, generator)
            net.eval()
            with torch.inference_mode():
                correct += int((net(normalise(x_adv)).argmax(1) == y).sum())
    finally:
        net.train(was_training)
    return correct / max(1, images.shape[0])


def offdiag_cov_energy(features: torch.Tensor | np.ndarray) -> float | None:
    """Off-diagonal share of the covariance's squared Frobenius mass, in [0, 1].

    With C the (d, d) covariance of the (n, d) ``features`` (columns centred; the 1/n cancels):
    ``sum_{i != j} C_ij^2 / sum_ij C_ij^2``. 0 = uncorrelated neurons, near 1 = the mass is in
    the correlations; DeCov, which penalises ``sum_{i != j} C_ij^2``, should lower it. None
    when C is zero (constant features). Memory: one float64 copy of the features and C.
    """
    z = torch.as_tensor(features).detach().cpu().double()
    z = z - z.mean(dim=0, keepdim=True)
    cov = z.T @ z
    total = float(cov.pow(2).sum())
    if not total > 0:
        return None
    return (total - float(torch.diagonal(cov).pow(2).sum())) / total


def prefix_accuracies(net: torch.nn.Module, z: torch.Tensor, labels: torch.Tensor
                      ) -> dict[str, float] | None:
    """``{"m": accuracy}`` of each nested head of a Matryoshka network on penultimate
    vectors ``z`` (n, d) (head m reads ``z[:, :m]``); None when the head is not Matryoshka.
    Memory: one (n, classes) logits tensor at a time."""
    head = getattr(net, net.classifier_name)
    if not isinstance(head, MatryoshkaHead):
        return None
    with torch.inference_mode():
        return {str(m): float((logits.argmax(1) == labels).float().mean())
                for m, logits in zip(head.widths, head.all_logits(z))}


def incoming_parameters(net: torch.nn.Module) -> list[str]:
    """Names of the parameters whose rows feed one penultimate neuron each (dim 0 = d).

    ResNet: the last block's second convolution and batch norm and its shortcut's
    convolution and batch norm (neuron i = pooled channel i of their sum). ViT: the final
    LayerNorm's gain and bias (and ``fc_norm``'s, when it has one): the only parameters that
    reach neuron i alone. Memory: none.
    """
    if hasattr(net, "layer4"):
        block = net.layer4[-1]
        modules = {"conv2": block.conv2, "bn2": block.bn2,
                   "downsample": getattr(block, "downsample", None)}
        prefix = f"layer4.{len(net.layer4) - 1}"
    else:
        modules = {"norm": net.norm, "fc_norm": getattr(net, "fc_norm", None)}
        prefix = ""
    names = []
    for key, module in modules.items():
        if module is None:
            continue
        for name, _ in module.named_parameters():
            names.append(".".join(p for p in (prefix, key, name) if p))
    if not names:
        raise InvalidValueError(f"{type(net).__name__} has no parameters feeding its "
                                "penultimate neurons one each")
    return names


def unchanged_fraction(state: dict, initial: dict, names: list[str],
                       tol: float = UNCHANGED_TOL) -> float:
    """Share of penultimate neurons whose incoming weights never received a gradient.

    Neuron i's incoming weights are row i of every parameter in ``names`` (see
    :func:`incoming_parameters`), joined into one vector per neuron, in ``state`` (trained)
    and ``initial``. A row with no gradient is still shrunk by weight decay (and, with
    momentum, by one scalar shared by all such rows), so "unchanged" means: ``w = c * w0``
    with ``0 <= c <= 1 + tol`` and ``||w - c w0|| <= tol * ||w0||``. A neuron the head never
    reads (FF-k: d - k of them) or a ReLU that never fires counts; a trained one does not.
    Memory: two (d, m) float64 matrices, m the incoming weights per neuron.
    """
    now = torch.cat([state[n].detach().cpu().double().flatten(1) if state[n].ndim > 1
                     else state[n].detach().cpu().double()[:, None] for n in names], dim=1)
    start = torch.cat([initial[n].detach().cpu().double().flatten(1) if initial[n].ndim > 1
                       else initial[n].detach().cpu().double()[:, None] for n in names], dim=1)
    size = start.pow(2).sum(1)
    scale = (now * start).sum(1) / size.clamp_min(1e-300)
    residual = (now - scale[:, None] * start).norm(dim=1)
    same = (residual <= tol * size.sqrt()) & (scale >= 0) & (scale <= 1 + tol)
    return float(same.double().mean())


def initial_state(args: dict, seed: int, init_sha256: str | None = None) -> dict:
    """The network's initial weights, rebuilt as training built them (``torch.manual_seed
    (seed)`` then ``build_network(**args)``) without touching the caller's RNG; checked
    against ``init_sha256`` when given. Memory: one copy of the weights."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = build_network(**args)
    if init_sha256 is not None and state_sha256(net) != init_sha256:
        raise InvalidValueError(f"the rebuilt initial network of seed {seed} does not match "
                                "init_sha256 of its provenance")
    return net.state_dict()


def _round(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else round(float(value), 6)


def network_checks(net: torch.nn.Module, normalise, source: SourceData, recipe: Recipe,
                   seed: int, initial: dict, n_attack: int = ATTACK_IMAGES) -> dict:
    """Every check of one trained network, as the plain dict ``provenance.json`` stores.

    ``initial`` is the state_dict the network started from (:func:`initial_state`).
    Attacks use the first ``n_attack`` test images; the other checks all of them. Attacks
    with the same (norm, eps, steps) are run once. Leaves the network's weights, buffers and
    mode, and the global RNG, as they were.
    """
    start, start_cpu = time.perf_counter(), time.process_time()
    size = recipe.data.image_size
    n = min(int(n_attack), source.test_x.shape[0])
    images, labels = source.test_x[:n], source.test_y[:n]
    attacks = {name: (norm, eps, ATTACK_STEPS) for name, (norm, eps) in REFERENCE_ATTACKS.items()}
    adv = recipe.adversarial
    if adv is not None:
        attacks = {"train": (adv.norm, adv.eps, max(ATTACK_STEPS, adv.steps)), **attacks}
    done: dict[tuple, float] = {}
    for setting in attacks.values():
        if setting not in done:
            done[setting] = robust_accuracy(net, normalise, images, labels, size, *setting, seed)
    z = penultimate_features(net, normalise, source.test_x, size)
    with torch.inference_mode():
        was_training = net.training
        net.eval()
        predicted = net.classify(z).argmax(1)
        net.train(was_training)
    hits = (predicted == source.test_y).float()
    prefixes = prefix_accuracies(net, z, source.test_y)
    state = {k: v.detach().cpu() for k, v in net.state_dict().items()}
    return {
        "n_attack": n, "n_test": int(source.test_x.shape[0]),
        "clean_acc": _round(float(hits[:n].mean())),
        "robust_acc": {"train": None, **{name: _round(done[s]) for name, s in attacks.items()}},
        "attacks": {"train": None, **{name: {"norm": s[0], "eps": s[1], "steps": s[2],
                                             "step_size": 2.5 * s[1] / s[2],
                                             "random_start": True, "mode": "eval"}
                                      for name, s in attacks.items()}},
        "offdiag_cov_energy": _round(offdiag_cov_energy(z)),
        "prefix_acc": None if prefixes is None else {m: _round(a) for m, a in prefixes.items()},
        "dead_fraction": _round(unchanged_fraction(state, initial, incoming_parameters(net))),
        "wall_seconds": round(time.perf_counter() - start, 3),
        "cpu_seconds": round(time.process_time() - start_cpu, 3),
    }


def _variant_order(folder: Path) -> list[str]:
    """Variant names in the order of the folder's ``pretrain.yaml`` (empty when absent)."""
    path = folder / "pretrain.yaml"
    try:
        data = yaml.safe_load(path.read_text()) if path.exists() else None
        return [str(v["name"]) for v in (data or {}).get("variants", [])]
    except (yaml.YAMLError, TypeError, KeyError, AttributeError):
        return []


def checks_table(run_folder: str | Path) -> pd.DataFrame:
    """One row per trained (variant, seed) of a ``drprobe pretrain`` output folder, read from
    its ``<variant>/seed<k>/provenance.json`` files: ``variant``, ``seed``, ``test_acc``,
    ``clean_acc`` (the attacked subset), ``robust_train`` / ``robust_l2`` / ``robust_linf``,
    ``offdiag_cov_energy``, ``dead_fraction`` and one ``prefix_acc_<m>`` per Matryoshka width
    found. Missing checks (older runs) are NaN. Rows follow the folder's ``pretrain.yaml``
    variant order, then seed.

    Raises:
        InvalidValueError: the folder holds no finished run.
    """
    folder = Path(run_folder)
    rows = []
    for path in sorted(folder.glob(f"*/seed*/{PROVENANCE_FILE}")):
        prov = json.loads(path.read_text())
        checks = prov.get("checks") or {}
        robust = checks.get("robust_acc") or {}
        row = {"variant": prov.get("variant", path.parent.parent.name),
               "seed": int(prov.get("seed", path.parent.name.removeprefix("seed"))),
               "test_acc": prov.get("test_acc"), "clean_acc": checks.get("clean_acc"),
               **{f"robust_{k}": robust.get(k) for k in ("train", *REFERENCE_ATTACKS)},
               "offdiag_cov_energy": checks.get("offdiag_cov_energy"),
               "dead_fraction": checks.get("dead_fraction")}
        for m, acc in sorted((checks.get("prefix_acc") or {}).items(), key=lambda t: int(t[0])):
            row[f"prefix_acc_{m}"] = acc
        rows.append(row)
    if not rows:
        raise InvalidValueError(f"{folder} holds no finished pretraining run "
                                f"(no */seed*/{PROVENANCE_FILE})")
    table = pd.DataFrame(rows)
    prefix_cols = sorted((c for c in table.columns if c.startswith("prefix_acc_")),
                         key=lambda c: int(c.rsplit("_", 1)[1]))
    table = table[[c for c in table.columns if not c.startswith("prefix_acc_")] + prefix_cols]
    order = {name: i for i, name in enumerate(_variant_order(folder))}
    table["_order"] = table["variant"].map(lambda v: order.get(v, len(order)))
    table = table.sort_values(["_order", "variant", "seed"], kind="stable")
    return table.drop(columns="_order").reset_index(drop=True).astype(
        {c: float for c in table.columns if c not in ("variant", "seed", "_order")})


def format_checks_table(table: pd.DataFrame) -> str:
    """:func:`checks_table` as compact text: 3 decimals, ``-`` for a check that does not
    apply, short headers (``rob_*`` robust accuracies, ``offdiag``, ``dead``, ``p<m>``
    Matryoshka prefixes; a prefix column empty in every row is left out)."""
    table = table.drop(columns=[c for c in table.columns
                                if c.startswith("prefix_acc_") and table[c].isna().all()])
    short = {"test_acc": "test", "clean_acc": "clean", "robust_train": "rob_train",
             "robust_l2": "rob_l2", "robust_linf": "rob_linf", "offdiag_cov_energy": "offdiag",
             "dead_fraction": "dead"}
    shown = table.rename(columns={**short, **{c: "p" + c.rsplit("_", 1)[1]
                                              for c in table.columns
                                              if c.startswith("prefix_acc_")}})
    return shown.to_string(index=False, na_rep="-", float_format=lambda v: f"{v:.3f}")
