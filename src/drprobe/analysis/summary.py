"""The DR summary of per-probe results: one row per (job, selector, delta).

:func:`summarize` is the one way from a results table (results-contract columns) to diffused
redundancy: per curve, the seed-mean accuracy against the fraction gives f*_δ, DR_δ, k*_δ (and
the same on CKA); the full-layer accuracy is the mean test accuracy of the k = d probes of the
headline selector (:func:`drprobe.selectors.headline_selector`). Given each probe's per-example
correctness on the test split, a bootstrap interval over test examples and seeds is added
(:func:`drprobe.metrics.redundancy.bootstrap_dr`); without it the interval is NaN.

Memory: the results table plus, with correctness, one (n_seeds, n_fractions, n_test) boolean
array per curve.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from drprobe.metrics.redundancy import DEFAULT_DELTAS, bootstrap_dr, dr_summary
from drprobe.selectors import headline_selector

__all__ = ["summarize"]

#: (selector, seed, k) -> (n_test,) bool: whether that probe got each test example right.
Correctness = Mapping[tuple[str, int, int], np.ndarray]


def summarize(
    results: pd.DataFrame,
    correct: Correctness | None = None,
    *,
    by: Sequence[str] = (),
    deltas: Sequence[float] = DEFAULT_DELTAS,
    n_boot: int = 500,
    context: Mapping[str, object] | None = None,
) -> pd.DataFrame:
    """DR summary per (``by`` columns, selector, delta) of the per-probe rows ``results``.

    Args:
        results: one row per probe (selector, seed, fraction, k, d, test_acc, cka at least).
        correct: each probe's test correctness, for the bootstrap interval (``dr_low``,
            ``dr_high``); None leaves the interval NaN. Needs a single job (``by`` empty).
        by: the columns that tell jobs apart (e.g. model, weights, layer, dataset).
        context: constant columns put first in every row.

    Returns:
        Columns: the context, the ``by`` columns, selector, d, full_acc, delta, f_star,
        f_star_interp, dr, k_star, dr_low, dr_high, dr_cka, k_star_cka.
    """
    ctx = dict(context or {})
    groups = results.groupby(list(by), sort=False) if by else [((), results)]
    out = []
    for key, job in groups:
        head = {**ctx, **dict(zip(by, key if isinstance(key, tuple) else (key,)))}
        full = job[(job["selector"] == headline_selector(job["selector"]))
                   & (job["k"] == job["d"])]
        full_acc = float(np.mean(full["test_acc"].to_numpy()))
        if correct is not None:
            full_correct = np.stack([correct[(s, int(seed), int(k))] for s, seed, k in
                                     full[["selector", "seed", "k"]].itertuples(index=False)])
        for sel, df in job.groupby("selector", sort=False):
            curve = df.pivot_table(index="seed", columns="fraction", values="test_acc")
            fr = np.asarray(curve.columns, dtype=float)
            ks = df.groupby("fraction")["k"].first().reindex(fr).to_numpy()
            cka_curve = df.groupby("fraction")["cka"].mean().reindex(fr).to_numpy()
            acc_rows = dr_summary(fr, ks, curve.to_numpy(), full_acc, deltas=deltas)
            cka_rows = dr_summary(fr, ks, cka_curve[None, :], 1.0, deltas=deltas)
            if correct is not None:
                by_seed = df.sort_values("k", kind="stable").groupby("seed")["k"]
                seed_ks = {int(s): [int(k) for k in g] for s, g in by_seed}
                curve_correct = np.stack([
                    np.stack([correct[(sel, int(s), k)] for k in seed_ks[int(s)]])
                    for s in curve.index
                ])
            for acc_row, cka_row in zip(acc_rows, cka_rows):
                ci = {"low": np.nan, "high": np.nan}
                if correct is not None:
                    ci = bootstrap_dr(curve_correct, full_correct, fr, acc_row["delta"],
                                      n_boot=n_boot)
                out.append({
                    **head, "selector": sel, "d": int(df["d"].iloc[0]), "full_acc": full_acc,
                    "delta": acc_row["delta"], "f_star": acc_row["f_star"],
                    "f_star_interp": acc_row["f_star_interp"], "dr": acc_row["dr"],
                    "k_star": acc_row["k_star"], "dr_low": ci["low"], "dr_high": ci["high"],
                    "dr_cka": cka_row["dr"], "k_star_cka": cka_row["k_star"],
                })
    return pd.DataFrame(out)
