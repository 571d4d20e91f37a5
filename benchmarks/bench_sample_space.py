"""The factor behind the probes on Φ (wide layers): its cost, and the probes' accuracy.

(a) One thread: the eigendecomposition of an n × n Gram (numpy's ``eigh``, what dual PCA
    needs) against its pivoted Cholesky factor (LAPACK ``pstrf``, what the probes on Φ use), on
    the Gram of a centred Gaussian n × (n + 500) matrix.
(b) The probes on Φ of a real wide layer (MobileNetV2 ``features.4`` flattened, d = 25,088, on
    Fashion-MNIST at 224 px; ``--n`` images, 10% held out for validation, n/4 test images;
    the random selector, one seed, the paper's fractions): each size's test accuracy, validation
    accuracy and chosen L2 at the bank's tolerance and at ``--tight`` (the optimum's stand-in),
    and the mean distance of the first to the second over the sizes wider than the training
    rows. Run it with ``PYTHONPATH=TREE/src`` on two trees to compare them.

    python benchmarks/bench_sample_space.py              # (a) at n = 4,500 and (b) at 2,000
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
from scipy.linalg import lapack
from threadpoolctl import threadpool_limits


def factor_times(n: int) -> dict[str, float]:
    rng = np.random.default_rng(0)
    Z = rng.standard_normal((n, n + 500))
    Z -= Z.mean(axis=0)
    K = Z @ Z.T
    with threadpool_limits(1):
        t = time.perf_counter()
        np.linalg.eigh(K)
        eigh = time.perf_counter() - t
        t = time.perf_counter()
        lapack.dpstrf(K, lower=1, tol=-1)
        pstrf = time.perf_counter() - t
    return {"eigh_s": eigh, "pstrf_s": pstrf}


def phi_accuracies(n: int, tol: float):
    from bench_wide import features

    from drprobe.analysis.layer import analyze_layer
    from drprobe.probes import ProbeBank

    tr = features("features.4", "train", n, None)
    te = features("features.4", "test", n // 4, None)
    bank = ProbeBank(progress=False, tol=tol, max_steps=3000 if tol < 1e-4 else 300)
    t = time.perf_counter()
    res = analyze_layer(tr.X, tr.y, te.X, te.y, selectors=["random"], seeds=[1], bank=bank,
                        progress=False, n_boot=50)
    rows = res.results.sort_values("k")[["k", "test_acc", "val_acc", "l2"]]
    return rows.reset_index(drop=True), time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gram-n", type=int, default=4500, help="n of part (a) (0: skip it)")
    ap.add_argument("--n", type=int, default=2000, help="images of part (b) (0: skip it)")
    ap.add_argument("--tol", type=float, default=1e-3, help="the bank's tolerance")
    ap.add_argument("--tight", type=float, default=1e-6)
    args = ap.parse_args()
    import drprobe

    print(f"drprobe from {os.path.dirname(drprobe.__file__)}")
    if args.gram_n:
        times = factor_times(args.gram_n)
        print(f"(a) n = {args.gram_n}, one thread: eigh {times['eigh_s']:.2f} s, pivoted Cholesky "
              f"{times['pstrf_s']:.2f} s ({times['eigh_s'] / times['pstrf_s']:.1f}x)")
    if not args.n:
        return
    loose, t_loose = phi_accuracies(args.n, args.tol)
    tight, t_tight = phi_accuracies(args.n, args.tight)
    wide = loose["k"] > int(0.9 * args.n)
    diff = (loose["test_acc"] - tight["test_acc"])[wide]
    print(f"(b) features.4, {args.n} images: tol {args.tol:g} {t_loose:.1f} s, tol "
          f"{args.tight:g} {t_tight:.1f} s")
    print("     k  test(tol)  test(tight)  val(tol)  val(tight)  l2(tol)  l2(tight)")
    for (_, a), (_, b) in zip(loose[wide].iterrows(), tight[wide].iterrows()):
        print(f"{int(a.k):6d}  {a.test_acc:9.3f}  {b.test_acc:11.3f}  {a.val_acc:8.3f}  "
              f"{b.val_acc:10.3f}  {a.l2:7g}  {b.l2:9g}")
    print(f"mean |test(tol) - test(tight)| over the {int(wide.sum())} sizes on Φ: "
          f"{100 * np.abs(diff).mean():.2f} point")


if __name__ == "__main__":
    main()
