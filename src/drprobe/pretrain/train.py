"""Train one (variant, seed): the epoch loop, its per-epoch resume state and the checkpoint.

A run folder ``<out>/<variant>/seed<k>/`` holds, while training, ``state.pt`` (written
atomically after every epoch: weights, optimiser and schedule, the torch / numpy / CUDA RNG
states, the data-order generator, the history and the wall time so far) and, when finished,
``model.pt`` (the network's constructor arguments, weights and input normalisation; loads as
``ckpt:<folder>/model.pt``) and ``provenance.json`` (written last: its presence marks the run
finished). A killed run restarts from its last finished epoch and, on the CPU, ends with the
same ``model.pt`` bytes as an uninterrupted one.

Memory: the network, its optimiser state (1-2 copies of the weights) and one batch of
activations (per PGD step, one at a time); the data are held by :class:`SourceData`.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from drprobe import __version__
from drprobe.errors import InvalidValueError
from drprobe.files import atomic_path, atomic_write_text
from drprobe.pretrain.checks import adversarial_examples, initial_state, network_checks
from drprobe.pretrain.config import Recipe
from drprobe.pretrain.data import SourceData, pixels
from drprobe.pretrain.objectives import training_loss
from drprobe.sources.adapters.ckpt import CHECKPOINT_FORMAT
from drprobe.sources.builtin import sha256_file, state_sha256
from drprobe.sources.smallnets import build_network

__all__ = ["CHECKPOINT_FORMAT", "MODEL_FILE", "PROVENANCE_FILE", "STATE_FILE", "evaluate",
           "train_one"]

MODEL_FILE, PROVENANCE_FILE, STATE_FILE = "model.pt", "provenance.json", "state.pt"
EVAL_BATCH = 512


class _Normalise(torch.nn.Module):
    def __init__(self, mean: tuple, std: tuple, device: torch.device) -> None:
        super().__init__()
        self.mean = torch.tensor(mean, device=device).view(1, 3, 1, 1)
        self.std = torch.tensor(std, device=device).view(1, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


def _optimizer(recipe: Recipe, net: torch.nn.Module, total_steps: int):
    opt_cfg = recipe.optimizer
    if opt_cfg.name == "sgd":
        opt = torch.optim.SGD(net.parameters(), lr=opt_cfg.lr, momentum=opt_cfg.momentum,
                              weight_decay=opt_cfg.weight_decay)
    else:
        opt = torch.optim.AdamW(net.parameters(), lr=opt_cfg.lr,
                                weight_decay=opt_cfg.weight_decay)
    if opt_cfg.schedule == "cosine":
        def factor(step: int) -> float:
            return 0.5 * (1 + math.cos(math.pi * min(step, total_steps) / total_steps))
    else:
        def factor(step: int) -> float:
            return 1.0
    return opt, torch.optim.lr_scheduler.LambdaLR(opt, factor)


def _rng_state(generator: torch.Generator, device: torch.device) -> dict:
    _kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "order": generator.get_state(),
             "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                       "has_gauss": int(has_gauss), "cached": float(cached)}}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict, generator: torch.Generator, device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    generator.set_state(state["order"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"],
                         n["has_gauss"], n["cached"]))
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


@torch.inference_mode()
def evaluate(net: torch.nn.Module, normalise: torch.nn.Module, images: torch.Tensor,
             labels: torch.Tensor, size: int) -> float:
    """Accuracy of ``net`` (in eval mode) on uint8 ``images``; the mode is restored after."""
    was_training = net.training
    net.eval()
    correct = 0
    for start in range(0, images.shape[0], EVAL_BATCH):
        x = normalise(pixels(images[start:start + EVAL_BATCH], size))
        correct += int((net(x).argmax(1) == labels[start:start + EVAL_BATCH]).sum())
    net.train(was_training)
    return correct / max(1, images.shape[0])


def _check_same(folder: Path, stored: dict, recipe: Recipe, seed: int, what: str) -> None:
    mine = recipe.model_dump(mode="json")
    if stored.get("config") != mine or stored.get("seed") != seed:
        raise InvalidValueError(
            f"{folder} holds a {what} of another config than variant {recipe.name!r} seed "
            f"{seed} now has; write to another --out or delete that folder")


def attack(net: torch.nn.Module, normalise: torch.nn.Module, x: torch.Tensor, y: torch.Tensor,
           adv, generator: torch.Generator) -> torch.Tensor:
    """The recipe's PGD examples of a training batch (its step count, step size and start),
    attacked in eval mode by :func:`~drprobe.pretrain.checks.adversarial_examples`; the network
    comes back in the mode it had (train, for the training pass)."""
    return adversarial_examples(net, normalise, x, y, adv.norm, adv.eps, adv.steps, generator,
                                adv.alpha, adv.random_start)


def _epoch(net, normalise, recipe: Recipe, source: SourceData, opt, sched,
           generator: torch.Generator, bar: tqdm | None) -> dict:
    """One pass over the training subset in the generator's order (last partial batch dropped
    when there is more than one batch). Returns the epoch's mean loss and accuracy."""
    net.train()
    n, bs, size = source.train_x.shape[0], recipe.batch_size, recipe.data.image_size
    order = torch.randperm(n, generator=generator).to(source.train_x.device)
    steps = max(1, n // bs)
    adv, alpha = recipe.adversarial, recipe.decov.alpha if recipe.decov else None
    loss_sum, correct, seen = 0.0, 0, 0
    for step in range(steps):
        idx = order[step * bs:(step + 1) * bs]
        x, y = pixels(source.train_x[idx], size), source.train_y[idx]
        if adv is not None:
            x = attack(net, normalise, x, y, adv, generator)
        loss, logits = training_loss(net, normalise(x), y, alpha)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        loss_sum += float(loss.detach()) * len(y)
        correct += int((logits.detach().argmax(1) == y).sum())
        seen += len(y)
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{loss_sum / seen:.3f}", acc=f"{correct / seen:.3f}")
    return {"train_loss": loss_sum / seen, "train_acc": correct / seen}


def train_one(recipe: Recipe, seed: int, folder: str | Path, source: SourceData,
              device: torch.device, progress: bool = True,
              after_epoch: Callable[[int], None] | None = None) -> tuple[dict, bool]:
    """Train (or resume, or skip) one variant with one seed into ``folder``.

    Args:
        recipe: the resolved variant; seed: seeds the init, dropout, PGD starts and data order.
        source: the loaded source task (its subset must be ``recipe.data``'s).
        device: where to train.
        after_epoch: called with the epoch number (1-based) after its state is saved (tests
            use it to interrupt a run).

    Returns:
        (the provenance record, True if it trained now / False if it was already finished).

    Raises:
        InvalidValueError: the folder holds a run of another recipe or seed.
    """
    folder = Path(folder)
    prov_path, state_path = folder / PROVENANCE_FILE, folder / STATE_FILE
    if prov_path.exists():
        provenance = json.loads(prov_path.read_text())
        _check_same(folder, provenance, recipe, seed, "finished run")
        return provenance, False
    folder.mkdir(parents=True, exist_ok=True)
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        numpy_state = np.random.get_state()
        try:
            provenance = _train(recipe, seed, folder, source, device, progress, after_epoch)
        finally:
            np.random.set_state(numpy_state)
    state_path.unlink(missing_ok=True)
    return provenance, True


def _train(recipe, seed, folder, source, device, progress, after_epoch) -> dict:
    state_path = folder / STATE_FILE
    torch.manual_seed(seed)
    np.random.seed(seed)
    generator = torch.Generator().manual_seed(seed)
    args = recipe.network_args(len(source.classes))
    net = build_network(**args)
    init_sha256 = state_sha256(net)  # the start a random-init twin of this seed reproduces
    net = net.to(device)
    normalise = _Normalise(source.mean, source.std, device)
    steps = max(1, source.train_x.shape[0] // recipe.batch_size)
    opt, sched = _optimizer(recipe, net, steps * recipe.epochs)
    history: list[dict] = []
    wall = cpu = 0.0
    if state_path.exists():
        state = torch.load(state_path, map_location="cpu", weights_only=True)
        _check_same(folder, json.loads(state["provenance"]), recipe, seed, "partial run")
        net.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        _set_rng_state(state["rng"], generator, device)
        history, wall = json.loads(state["history"]), float(state["wall_seconds"])
        cpu = float(state.get("cpu_seconds", 0.0))
    label = f"{recipe.name}/seed{seed}"
    epochs = tqdm(range(len(history), recipe.epochs), desc=label, initial=len(history),
                  total=recipe.epochs, unit="epoch", disable=not progress, leave=False)
    for epoch in epochs:
        start, start_cpu = time.perf_counter(), time.process_time()
        with tqdm(total=steps, desc=f"{label} epoch {epoch + 1}", unit="batch", leave=False,
                  disable=not progress) as bar:
            stats = _epoch(net, normalise, recipe, source, opt, sched, generator, bar)
        wall += time.perf_counter() - start
        cpu += time.process_time() - start_cpu
        history.append({"epoch": epoch + 1, **{k: round(v, 6) for k, v in stats.items()}})
        state = {"model": net.state_dict(), "optimizer": opt.state_dict(),
                 "scheduler": sched.state_dict(), "rng": _rng_state(generator, device),
                 "history": json.dumps(history), "wall_seconds": wall, "cpu_seconds": cpu,
                 "provenance": json.dumps({"config": recipe.model_dump(mode="json"),
                                           "seed": seed})}
        with atomic_path(state_path) as tmp:
            torch.save(state, tmp)
        if after_epoch is not None:
            after_epoch(epoch + 1)
    start, start_cpu = time.perf_counter(), time.process_time()
    test_acc = evaluate(net, normalise, source.test_x, source.test_y, recipe.data.image_size)
    wall += time.perf_counter() - start
    cpu += time.process_time() - start_cpu
    checkpoint = {"format": CHECKPOINT_FORMAT, "network": args,
                  "state_dict": {k: v.detach().cpu() for k, v in net.state_dict().items()},
                  "input_size": recipe.data.image_size, "mean": list(source.mean),
                  "std": list(source.std), "classes": list(source.classes)}
    model_path = folder / MODEL_FILE
    with atomic_path(model_path) as tmp:
        torch.save(checkpoint, tmp)
    # manipulation checks (drprobe.pretrain.checks), after the checkpoint is written; they
    # change neither the weights nor the RNG, and their time is not in wall/cpu_seconds
    checks = network_checks(net, normalise, source, recipe, seed,
                            initial_state(args, seed, init_sha256))
    provenance = {
        "variant": recipe.name, "seed": seed, "config": recipe.model_dump(mode="json"),
        "data": source.fingerprint, "epochs": recipe.epochs, "test_acc": round(test_acc, 6),
        "history": history, "model": MODEL_FILE, "sha256": sha256_file(model_path),
        "init_sha256": init_sha256,
        "d": recipe.arch.d, "network": args, "device": str(device),
        "torch": torch.__version__, "drprobe_version": __version__,
        "wall_seconds": round(wall, 3), "cpu_seconds": round(cpu, 3), "checks": checks,
    }
    atomic_write_text(folder / PROVENANCE_FILE, json.dumps(provenance, indent=2) + "\n")
    return provenance
