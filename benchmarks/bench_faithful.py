"""Benchmark: the paper's faithful probe protocol against the cached one, side by side.

MobileNetV2 (ImageNet weights) -> Fashion-MNIST, penultimate layer (d = 1280), random neuron
subsets at fractions [0.01, 0.1, 0.5, 1.0] with 2 seeds, three protocols on the same train /
validation / test images (validation = the faithful protocol's 10% stratified hold-out):

  faithful   FaithfulBank: every head trained by SGD through the frozen backbone on freshly
             augmented images every epoch (one backbone forward per batch serves all 8 heads);
  cached     features of the clean images extracted once, ProbeBank (L-BFGS, L2 chosen on
             validation);
  cached+K   the same ProbeBank on K augmented views of every training image (clean validation
             and test features).

REDUCED SCALE (so it runs in minutes on 2 CPU cores): n_train 2000, n_test 1000, 64 px instead
of 224 px, 10 epochs with StepLR every 2 (the paper: 50, every 10; 100/20 for its ResNet50
grids) and batch 64 (the paper: 256, which would leave only 8 SGD steps per epoch on 1800
images). Weight decay 1e-4 (the paper's
value for non-CIFAR tasks). Wall seconds of each protocol are measured in one run; the clean
validation + test extraction is timed once and counted in both cached protocols. Process CPU
seconds are recorded beside wall seconds: on a shared machine they are the steadier measure.

    python benchmarks/bench_faithful.py            # the setting above (a few minutes)
    python benchmarks/bench_faithful.py --quick    # 400 train / 200 test, 32 px, 2 epochs
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch

from drprobe.features.extract import iter_features
from drprobe.probes import ProbeBank
from drprobe.probes.faithful import FaithfulBank, augmented_features
from drprobe.selectors import SubsetFamily, make_family, resolve_ks
from drprobe.sources.datasets import load_dataset, subsample, train_val_split
from drprobe.sources.models import ModelBundle, load_model

LAYER, D = "penultimate", 1280


def clean(bundle: ModelBundle, images: np.ndarray, size: int) -> np.ndarray:
    """(n, d) float32 features of the evaluation transform."""
    return np.concatenate(list(iter_features(bundle, LAYER, images, image_size=size,
                                             batch_size=256, progress=False)))


def bank_accuracy(X_tr: np.ndarray, y_tr: np.ndarray, X_va: np.ndarray, y_va: np.ndarray,
                  X_te: np.ndarray, y_te: np.ndarray, families: list[SubsetFamily]
                  ) -> dict[tuple[int, int], float]:
    """Test accuracy of the cached ProbeBank per (seed, k)."""
    bank = ProbeBank(progress=False).fit(X_tr, y_tr, X_va, y_va, families)
    return {(r.seed, r.k): r.test_acc for r in bank.evaluate(X_te, y_te)}


class Stopwatch:
    """Wall and process-CPU seconds of named parts (CPU time sums all threads of this process
    and is much less sensitive than wall time to other jobs on a shared machine)."""

    def __init__(self) -> None:
        self.parts: dict[str, dict[str, float]] = {}

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        wall, cpu = time.perf_counter(), time.process_time()
        yield
        self.parts[name] = {"wall": time.perf_counter() - wall, "cpu": time.process_time() - cpu}

    def total(self, names: list[str], kind: str) -> float:
        return sum(self.parts[n][kind] for n in names)


def run(args: argparse.Namespace) -> dict[str, Any]:
    torch.manual_seed(0)
    bundle = load_model("builtin:mobilenet_v2")
    train = subsample(load_dataset("fashion-mnist", "train"), args.n_train, 0)
    test = subsample(load_dataset("fashion-mnist", "test"), args.n_test, 0)
    ks, fracs = resolve_ks(D, args.fractions)
    families = [make_family("random", np.zeros((1, D)), ks, seed=s, fractions=fracs)
                for s in args.seeds]
    tr, va = train_val_split(train.labels, 0.1, 0)
    y_tr, y_va, y_te = train.labels[tr], train.labels[va], test.labels
    acc: dict[str, dict[tuple[int, int], float]] = {}
    clean(bundle, train.images[:32], args.size)  # warm-up: no protocol pays first-call costs

    clock = Stopwatch()
    with clock("clean val+test features (both cached)"):
        X_va = clean(bundle, train.images[va], args.size)
        X_te = clean(bundle, test.images, args.size)
    with clock("cached: train features"):
        X_tr = clean(bundle, train.images[tr], args.size)
    with clock("cached: probe bank"):
        acc["cached"] = bank_accuracy(X_tr, y_tr, X_va, y_va, X_te, y_te, families)
    kv = f"cached+{args.views}"
    with clock(f"{kv}: augmented train features"):
        X_k, y_k = augmented_features(bundle, LAYER, train.images[tr], y_tr, views=args.views,
                                      image_size=args.size, progress=False)
    with clock(f"{kv}: probe bank"):
        acc[kv] = bank_accuracy(X_k, y_k, X_va, y_va, X_te, y_te, families)
    with clock("faithful: fit"):
        faithful = FaithfulBank(
            bundle, LAYER, image_size=args.size, epochs=args.epochs, step_size=args.step,
            batch_size=args.batch, weight_decay=1e-4, random_state=0, progress=False,
        ).fit(train.images[tr], y_tr, train.images[va], y_va, families)  # the same hold-out
    with clock("faithful: test"):
        acc["faithful"] = {(r.seed, r.k): r.test_acc
                           for r in faithful.evaluate(test.images, test.labels)}
    members = {
        "cached": ["clean val+test features (both cached)", "cached: train features",
                   "cached: probe bank"],
        kv: ["clean val+test features (both cached)", f"{kv}: augmented train features",
             f"{kv}: probe bank"],
        "faithful": ["faithful: fit", "faithful: test"],
    }
    seconds = {name: clock.total(m, "wall") for name, m in members.items()}
    cpu_seconds = {name: clock.total(m, "cpu") for name, m in members.items()}

    rows = []
    for k, f in zip(ks, fracs):
        row: dict[str, Any] = {"fraction": f, "k": k}
        for name, table in acc.items():
            vals = [table[(s, k)] for s in args.seeds]
            row[name] = float(np.mean(vals))
            row[f"{name}_per_seed"] = vals
            full = np.mean([table[(s, ks[-1])] for s in args.seeds])
            row[f"{name}_relative"] = float(row[name] / full)
        rows.append(row)
    return {
        "setting": {
            "model": "builtin:mobilenet_v2", "layer": LAYER, "dataset": "fashion-mnist",
            "n_train": args.n_train, "n_val": len(va), "n_test": args.n_test,
            "image_size": args.size, "epochs": args.epochs, "step_size": args.step,
            "batch_size": args.batch, "lr": 0.1, "momentum": 0.9, "weight_decay": 1e-4,
            "views": args.views, "seeds": list(args.seeds), "fractions": list(fracs),
            "faithful_epoch_val_acc_mean": faithful.history_["val_acc"].mean(0).tolist(),
        },
        "accuracy": rows,
        "seconds": seconds,
        "cpu_seconds": cpu_seconds,
        "seconds_parts": clock.parts,
        "ratio_to_cached": {name: s / seconds["cached"] for name, s in seconds.items()},
        "cpu_ratio_to_cached": {name: s / cpu_seconds["cached"]
                                for name, s in cpu_seconds.items()},
        "machine": {"cpus": os.cpu_count(), "torch": torch.__version__,
                    "python": platform.python_version(),
                    "load_average_1min_at_end": os.getloadavg()[0]},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-train", type=int, default=2000)
    parser.add_argument("--n-test", type=int, default=1000)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--step", type=int, default=2)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--views", type=int, default=4)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--fractions", type=float, nargs="+", default=[0.01, 0.1, 0.5, 1.0])
    parser.add_argument("--quick", action="store_true", help="400/200 images, 32 px, 2 epochs")
    parser.add_argument("--out", type=Path,
                        default=Path(__file__).parent / "results" / "faithful.json")
    args = parser.parse_args()
    if args.quick:
        args.n_train, args.n_test, args.size, args.epochs, args.step = 400, 200, 32, 2, 1
    res = run(args)
    names = list(res["seconds"])
    print(f"MobileNetV2 -> Fashion-MNIST, {args.n_train} train / {args.n_test} test, "
          f"{args.size} px, test accuracy (mean of {len(args.seeds)} seeds)")
    print(f"{'fraction':>8} {'k':>5} " + " ".join(f"{n:>10}" for n in names))
    for row in res["accuracy"]:
        print(f"{row['fraction']:8.2f} {row['k']:5d} "
              + " ".join(f"{row[n]:10.3f}" for n in names))
    print(f"{'seconds':>14} " + " ".join(f"{res['seconds'][n]:10.1f}" for n in names))
    print(f"{'relative':>14} acc(f) / acc(1) at each fraction: " + "; ".join(
        f"{n} " + " ".join(f"{row[n + '_relative']:.2f}" for row in res["accuracy"])
        for n in names))
    print(f"{'x cached':>14} " + " ".join(f"{res['ratio_to_cached'][n]:10.1f}" for n in names))
    print(f"{'cpu seconds':>14} " + " ".join(f"{res['cpu_seconds'][n]:10.1f}" for n in names))
    print(f"{'cpu x cached':>14} " + " ".join(f"{res['cpu_ratio_to_cached'][n]:10.1f}"
                                            for n in names))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
