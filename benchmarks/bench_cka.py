"""Benchmark: CKA of many neuron subsets, direct per subset vs one cross-product accumulator.

For n = 10,000 examples of a d = 1,280 layer (seeded synthetic ReLU features with a power-law
spectrum; equality, not realism, is what is checked) and 100 random subsets of mixed sizes:

  (a) direct:  linear_cka(X, X[:, S]) for each subset (every call re-centres X and forms XᵀX);
  (b) stats:   CrossProductStats.from_array(X) once + subset_cka(all subsets);

and the same for the debiased estimator (debiased_linear_cka per subset vs subset_cka_debiased
from the accumulated moments). Timings are measured side by side in one run; the build of the
accumulator is included in (b). Prints a table and writes benchmarks/results/cka.json.

    python benchmarks/bench_cka.py            # full size
    python benchmarks/bench_cka.py --quick    # n=2000, d=256, 20 subsets (seconds)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from drprobe.metrics.cka import debiased_linear_cka, linear_cka
from drprobe.metrics.cka_stats import CrossProductStats
from drprobe.selectors import resolve_ks


def synthetic_features(n: int, d: int, seed: int = 0) -> np.ndarray:
    """(n, d) float32 ReLU features with correlated columns and a power-law spectrum."""
    rng = np.random.default_rng(seed)
    Z = rng.standard_normal((n, d)) * np.arange(1, d + 1) ** -0.6
    Q = np.linalg.qr(rng.standard_normal((d, d)))[0]
    return np.maximum(Z @ Q * np.sqrt(d) + 0.3, 0.0).astype(np.float32)


def random_subsets(d: int, count: int, seed: int = 1) -> list[np.ndarray]:
    """``count`` random subsets, sizes drawn from the paper's fraction grid on width d."""
    rng = np.random.default_rng(seed)
    ks, _ = resolve_ks(d)
    return [rng.permutation(d)[:k] for k in rng.choice(ks, size=count)]


def timed(fn: Callable[[], np.ndarray]) -> tuple[float, np.ndarray]:
    """(seconds, result) of one call."""
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def run(n: int, d: int, n_subsets: int) -> dict[str, Any]:
    X = synthetic_features(n, d)
    subsets = random_subsets(d, n_subsets)
    linear_cka(X[:500], X[:500, :10])  # warm up BLAS threads so no path pays start-up
    CrossProductStats.from_array(X[:500]).subset_cka_debiased(subsets[:2])
    t_direct, direct = timed(lambda: np.array([linear_cka(X, X[:, s]) for s in subsets]))
    t_stats, fast = timed(
        lambda: CrossProductStats.from_array(X, debiased=False).subset_cka(subsets)
    )
    t_direct_u, direct_u = timed(
        lambda: np.array([debiased_linear_cka(X, X[:, s]) for s in subsets])
    )
    t_stats_u, fast_u = timed(
        lambda: CrossProductStats.from_array(X, debiased=True).subset_cka_debiased(subsets)
    )
    sizes = [len(s) for s in subsets]
    return {
        "n": n, "d": d, "n_subsets": n_subsets, "subset_sizes_min_max": [min(sizes), max(sizes)],
        "linear": {
            "direct_s": t_direct, "stats_s": t_stats, "speedup": t_direct / t_stats,
            "max_abs_diff": float(np.max(np.abs(direct - fast))),
        },
        "debiased": {
            "direct_s": t_direct_u, "stats_s": t_stats_u, "speedup": t_direct_u / t_stats_u,
            "max_abs_diff": float(np.max(np.abs(direct_u - fast_u))),
        },
        "targets": {"speedup_min": 50.0, "max_abs_diff_max": 1e-6},
        "machine": {
            "cpus": os.cpu_count(), "numpy": np.__version__, "python": platform.python_version()
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--d", type=int, default=1_280)
    parser.add_argument("--subsets", type=int, default=100)
    parser.add_argument("--quick", action="store_true", help="n=2000, d=256, 20 subsets")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "cka.json")
    args = parser.parse_args()
    n, d, count = (2000, 256, 20) if args.quick else (args.n, args.d, args.subsets)
    res = run(n, d, count)
    print(f"CKA of {count} subsets, n={n}, d={d} (seconds; stats include building the moments)")
    print(f"{'estimator':<10} {'direct':>9} {'stats':>9} {'speed-up':>9} {'max |diff|':>11}")
    for name in ("linear", "debiased"):
        r = res[name]
        print(f"{name:<10} {r['direct_s']:9.3f} {r['stats_s']:9.3f} {r['speedup']:8.1f}x "
              f"{r['max_abs_diff']:11.2e}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
