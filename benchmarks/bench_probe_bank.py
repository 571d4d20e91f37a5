"""Probe bank vs scikit-learn, and the paper's full probe grid for one layer.

(a) random selector, 15 fractions x 5 seeds: scikit-learn ``LogisticRegression`` (lbfgs), one
    subset and one L2 at a time with the same grid and validation rule, against the bank;
    speed ratio and per-probe test-accuracy differences.
(b) the paper's whole grid end to end (``analyze_layer``): 4 selectors (random, pca_top,
    pca_least, randproj_uniform) x 5 seeds x 15 fractions, with selector bases, L2 selection,
    test evaluation, CKA, Gini and DR with bootstrap CIs.

Timings are wall and process-CPU seconds of each phase; scikit-learn and the bank alternate
seed by seed so that both see the same machine load (the machine may be shared).
Features: MobileNetV2 penultimate (d = 1280) on Fashion-MNIST, 10k train (9k / 1k validation)
and 2k test at 64 px, extracted once into drprobe's feature cache.
Prints a table and writes ``benchmarks/results/probe_bank.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch
from threadpoolctl import threadpool_limits

from drprobe.analysis.layer import analyze_layer
from drprobe.probes import ProbeBank, sklearn_probe
from drprobe.selectors import PAPER_FRACTIONS, SubsetFamily, is_seeded, make_family

FRACTIONS = PAPER_FRACTIONS
SEEDS = (1, 2, 3, 4, 5)
SELECTORS = ("random", "pca_top", "pca_least", "randproj_uniform")
GRID = (1e-4, 1e-3, 1e-2, 1e-1, 1.0)
#: The stopping test of both solvers (scikit-learn's default; the bank's own default is looser).
TOL = 1e-4
THREADS: int | None = None  # --threads: torch threads of the bank and BLAS threads of sklearn
T = TypeVar("T")


def real_features(n_train: int, n_test: int, cache_dir: str | None) -> tuple[dict, str]:
    """MobileNetV2 penultimate features of Fashion-MNIST (64 px), split as ``analyze_layer`` does."""
    from drprobe.features import get_features
    from drprobe.sources.datasets import train_val_split

    kw = {"pooling": "avg", "image_size": 64, "cache_dir": cache_dir}
    tr = get_features("builtin:mobilenet_v2", "penultimate", "fashion-mnist", "train",
                      n=n_train, **kw)
    te = get_features("builtin:mobilenet_v2", "penultimate", "fashion-mnist", "test",
                      n=n_test, **kw)
    i_tr, i_va = train_val_split(tr.y, 0.1, 0)
    X = np.asarray(tr.X, dtype=np.float32)
    data = {"X_train": X[i_tr], "y_train": tr.y[i_tr], "X_val": X[i_va], "y_val": tr.y[i_va],
            "X_test": np.asarray(te.X, dtype=np.float32), "y_test": te.y}
    return data, f"builtin:mobilenet_v2 penultimate, fashion-mnist {n_train}/{n_test} at 64 px"


def cpu_model() -> str:
    """The CPU's model name as ``lscpu`` prints it (from /proc/cpuinfo), else the platform's."""
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()


def sizes(d: int) -> tuple[list[int], list[float]]:
    """k = max(1, floor(f d)) per fraction, duplicates dropped (first fraction kept)."""
    chosen: dict[int, float] = {}
    for f in FRACTIONS:
        chosen.setdefault(max(1, int(np.floor(f * d + 1e-9))), f)
    ks = sorted(chosen)
    return ks, [chosen[k] for k in ks]


def families(data: dict, selectors: tuple[str, ...]) -> list[SubsetFamily]:
    """Nested families per selector and seed, as ``analyze_layer`` builds them."""
    ks, fr = sizes(data["X_train"].shape[1])
    return [make_family(sel, data["X_train"], ks, seed=s, fractions=fr)
            for sel in selectors for s in (SEEDS if is_seeded(sel) else SEEDS[:1])]


@dataclass
class Clock:
    """Wall and process-CPU seconds of a phase, and the 1-minute load average at its end."""

    wall: float = 0.0
    cpu: float = 0.0
    load: float = 0.0

    def add(self, other: Clock) -> None:
        self.wall, self.cpu, self.load = self.wall + other.wall, self.cpu + other.cpu, other.load


def timed(fn: Callable[..., T], *args: object, **kw: object) -> tuple[T, Clock]:
    t, c = time.perf_counter(), time.process_time()
    out = fn(*args, **kw)
    return out, Clock(time.perf_counter() - t, time.process_time() - c, os.getloadavg()[0])


def run_bank(data: dict, fams: list[SubsetFamily], **kw: object) -> tuple[list, Clock]:
    def go() -> list:
        bank = ProbeBank(l2_grid=GRID, tol=TOL, progress=False, n_threads=THREADS, **kw)
        bank.fit(data["X_train"], data["y_train"], data["X_val"], data["y_val"], fams)
        return bank.evaluate(data["X_test"], data["y_test"])
    return timed(go)


def run_sklearn(data: dict, fam: SubsetFamily) -> tuple[list[dict], Clock]:
    def go() -> list[dict]:
        out = []
        with threadpool_limits(THREADS):
            out += fit_all(fam)
        return out

    def fit_all(fam: SubsetFamily) -> list[dict]:
        out = []
        for k in fam.ks:
            Z = [fam.transform(data[s], k) for s in ("X_train", "X_val", "X_test")]
            r = sklearn_probe(Z[0], data["y_train"], Z[1], data["y_val"], Z[2], data["y_test"],
                              GRID)
            out.append({"seed": fam.seed, "k": k, "test_acc": r["test_acc"], "l2": r["l2"],
                        "seconds": r["fit_seconds"]})
        return out
    return timed(go)


def phase(name: str, n: int, clock: Clock, ref: Clock | None = None,
          diffs: list[float] | None = None) -> dict:
    row = {"run": name, "probes": n, "wall_s": clock.wall, "cpu_s": clock.cpu,
           "load_1min": clock.load}
    if ref is not None:
        row.update(speedup_wall=ref.wall / clock.wall, speedup_cpu=ref.cpu / clock.cpu)
    if diffs:
        row.update(mean_abs_dacc=float(np.mean(diffs)), max_abs_dacc=float(np.max(diffs)))
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-train", type=int, default=10_000, help="train images (10%% validation)")
    ap.add_argument("--n-test", type=int, default=2_000)
    ap.add_argument("--cache-dir", default=None, help="feature cache (default: drprobe's)")
    ap.add_argument("--sklearn-seeds", type=int, default=len(SEEDS),
                    help="seeds of the random selector fitted with scikit-learn (default all)")
    ap.add_argument("--threads", type=int, default=None,
                    help="threads for both solvers (default: library defaults); use 1 on a "
                         "machine shared with other busy processes")
    ap.add_argument("--bank-only", type=int, default=0, metavar="REPEATS",
                    help="only fit the bank on the first seed's family REPEATS times and print "
                         "each fit's wall / CPU seconds (no scikit-learn, no grid, no JSON)")
    ap.add_argument("--no-grid", action="store_true",
                    help="skip (b), the paper's whole grid (minutes on 2 cores)")
    ap.add_argument("--out", type=Path,
                    default=Path(__file__).parent / "results" / "probe_bank.json")
    args = ap.parse_args()
    global THREADS
    THREADS = args.threads
    data, source = real_features(args.n_train, args.n_test, args.cache_dir)
    d = data["X_train"].shape[1]
    shapes = {k: list(v.shape) for k, v in data.items()}
    print(f"features: {source}; shapes {shapes}; threads {THREADS or 'library default'}; "
          f"CPU {cpu_model()}; torch {torch.__version__}")

    rand, sel_clock = timed(families, data, ("random",))
    if args.bank_only:
        clocks = [run_bank(data, rand[:1])[1] for _ in range(args.bank_only)]
        print("bank alone, seed 1:", ", ".join(f"{c.wall:.2f} s wall / {c.cpu:.2f} s CPU"
                                              for c in clocks), f"(load {clocks[-1].load:.1f})")
        return
    rand = rand[: args.sklearn_seeds]

    # (a) side by side, seed by seed (so both see the same machine load): scikit-learn on the
    # 15 subsets of one seed, then the bank on the same family alone; then all seeds batched.
    sk, sk_clock, one_clock, one, rows, bank_a = [], Clock(), Clock(), [], [], []
    for fam in rand:
        fitted, c_sk = run_sklearn(data, fam)
        res, c_one = run_bank(data, [fam])
        sk += fitted
        one += res
        sk_clock.add(c_sk)
        one_clock.add(c_one)
        print(f"  seed {fam.seed}: sklearn {c_sk.wall:.1f}s, bank {c_one.wall:.1f}s "
              f"(load {c_one.load:.1f})", flush=True)

    def dacc(res: list) -> list[float]:
        return [abs(b.test_acc - s["test_acc"]) for b, s in zip(res, sk)]

    if rand:
        bank_a, a_clock = run_bank(data, rand)
        bank_nd, nd_clock = run_bank(data, rand, dedupe=False)
        rows += [
            phase("sklearn, one probe at a time", len(sk), sk_clock),
            phase("bank, one seed at a time", len(one), one_clock, sk_clock, dacc(one)),
            phase("bank, all seeds", len(bank_a), a_clock, sk_clock, dacc(bank_a)),
            phase("bank, all seeds, dedupe off", len(bank_nd), nd_clock, sk_clock,
                  dacc(bank_nd)),
        ]
    # (b) the paper's whole grid for the layer, end to end from cached features: selector
    # bases, every probe with L2 selection, CKA (linear and debiased), Gini, DR and its CIs.
    grid = None
    if not args.no_grid:
        train = np.concatenate([data["X_train"], data["X_val"]])
        y_train = np.concatenate([data["y_train"], data["y_val"]])
        grid, grid_clock = timed(
            analyze_layer, train, y_train, data["X_test"], data["y_test"], selectors=SELECTORS,
            fractions=PAPER_FRACTIONS, seeds=SEEDS, progress=False,
            bank=ProbeBank(keep_predictions=True, tol=TOL, progress=False, n_threads=THREADS))
        rows.append(phase("paper grid, analyze_layer", len(grid.results), grid_clock))
    print(f"\n{'run':30s} {'probes':>6s} {'wall s':>7s} {'cpu s':>7s} {'load':>5s} "
          f"{'x wall':>7s} {'x cpu':>6s} {'mean|dacc|':>10s} {'max|dacc|':>9s}")
    for r in rows:
        sp = (f"{r['speedup_wall']:7.1f} {r['speedup_cpu']:6.1f}" if "speedup_wall" in r
              else f"{'':7s} {'':6s}")
        acc = (f"{100 * r['mean_abs_dacc']:9.2f}p {100 * r['max_abs_dacc']:8.2f}p"
               if "mean_abs_dacc" in r else "")
        print(f"{r['run']:30s} {r['probes']:6d} {r['wall_s']:7.1f} {r['cpu_s']:7.1f} "
              f"{r['load_1min']:5.1f} {sp} {acc}")
    print(f"(random bases built in {sel_clock.wall:.1f}s, outside the (a) timings; accuracy "
          "differences in points vs scikit-learn)")

    figures = {
        "features": source, "shapes": shapes, "d": d, "l2_grid": GRID,
        "fractions": FRACTIONS, "ks": sizes(d)[0], "seeds": SEEDS, "selectors": SELECTORS,
        "threads": THREADS, "torch_threads_default": torch.get_num_threads(),
        "cpu_count": os.cpu_count(), "cpu_model": cpu_model(), "torch": torch.__version__,
        "selector_seconds": sel_clock.wall, "phases": rows,
        "a_per_probe": [{"seed": s["seed"], "k": s["k"], "sklearn_acc": s["test_acc"],
                         "bank_acc": b.test_acc, "sklearn_l2": s["l2"], "bank_l2": b.l2,
                         "sklearn_seconds": s["seconds"], "bank_seconds": b.fit_seconds}
                        for s, b in zip(sk, bank_a)],
        "b_mean_test_acc": None if grid is None else
        grid.results.groupby(["selector", "k"])["test_acc"].mean().unstack(0).to_dict(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(figures, indent=1, default=float))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
