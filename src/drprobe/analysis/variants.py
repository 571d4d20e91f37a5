"""Variants over a run: networks grouped by pretraining recipe, DR_δ per variant × task × δ with
intervals over pretraining seeds, and differences against a reference variant.

A model label ``NAME/seedK`` (also ``NAME-seedK``, ``NAME_seedK``, ``NAME.seedK``) is network
``K`` of variant ``NAME``; any other label is a one-network variant. The variant's key also
carries the weights (``pretrained``/``checkpoint`` vs ``random``: a random-init twin of a
variant's networks is its own variant ``NAME [random]``). Statistics and intervals come from
:mod:`drprobe.metrics.compare` and need the per-probe ``test_correct`` column.

Memory: one (P, S, F, N) boolean array per (variant, task, layer, selector) at a time.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
import pandas as pd

from drprobe.errors import InvalidValueError
from drprobe.metrics.compare import (
    Draws,
    Variant,
    compare_variants,
    curve_stats,
    draw,
    interval,
    network_stats,
    replicate_curves,
)

__all__ = ["SEED_SUFFIX", "curves_table", "split_label", "task_table", "variant_column",
           "variant_data", "variant_table"]

SEED_SUFFIX = re.compile(r"^(?P<variant>.+?)[/_.-]seed(?P<seed>\d+)$")
RANDOM = "random"


def split_label(label: str) -> tuple[str, int]:
    """``"adv_l2/seed3"`` -> ``("adv_l2", 3)``; a label without a seed suffix -> (label, 0)."""
    m = SEED_SUFFIX.match(str(label))
    return (m["variant"], int(m["seed"])) if m else (str(label), 0)


def variant_column(results: pd.DataFrame) -> pd.DataFrame:
    """``results`` with ``variant`` and ``pretrain_seed`` columns added (see module docstring)."""
    parts = [split_label(m) for m in results["model"]]
    out = results.assign(variant=[p[0] for p in parts], pretrain_seed=[p[1] for p in parts])
    rnd = out["weights"] == RANDOM
    out.loc[rnd, "variant"] = out.loc[rnd, "variant"] + f" [{RANDOM}]"
    return out


def _baseline_rows(rows: pd.DataFrame) -> pd.DataFrame:
    return rows[rows["baseline"] == "none"] if "baseline" in rows else rows


def variant_data(rows: pd.DataFrame) -> Variant:
    """The (P, S, F, N) correctness of one (variant, layer, dataset, selector) group of rows.

    Networks missing a (probe seed, fraction) probe, or with another test-set size, are refused.
    """
    if "test_correct" not in rows:
        raise InvalidValueError("the run's results have no test_correct column (made by "
                                "drprobe >= this version); rerun it to compare variants")
    rows = rows.sort_values(["pretrain_seed", "seed", "fraction"])
    fractions = np.sort(rows["fraction"].unique())
    ks = rows.groupby("fraction")["k"].first().reindex(fractions).to_numpy()
    nets, probe_seeds = rows["pretrain_seed"].unique(), rows["seed"].unique()
    shape = (len(nets), len(probe_seeds), len(fractions))
    if len(rows) != np.prod(shape):
        raise InvalidValueError(
            f"variant {rows['variant'].iloc[0]!r} on {rows['dataset'].iloc[0]!r}: expected "
            f"{shape[0]} networks x {shape[1]} probe seeds x {shape[2]} fractions = "
            f"{np.prod(shape)} probes, found {len(rows)}")
    correct = np.stack([np.asarray(c, dtype=bool) for c in rows["test_correct"]])
    return Variant(correct.reshape(*shape, -1), fractions, ks)


GROUP = ["variant", "layer", "dataset", "selector"]


def variant_table(
    results: pd.DataFrame, deltas: Sequence[float] = (0.9,), *, reference: str | None = None,
    n_boot: int = 1000, ci: float = 0.95, random_state: int = 0,
) -> pd.DataFrame:
    """One row per (variant, layer, dataset, selector, δ): networks, d, full_acc (mean, and its
    spread sd over networks), dr / dr_low / dr_high / dr_sd_seeds, the same for k_star and
    dr_interp (interpolated f*) and, with ``reference`` (a variant name), dr_diff /
    dr_diff_low / dr_diff_high = DR(variant) − DR(reference) on the same layer name, dataset
    and selector (and dr_interp_diff ...).

    Intervals: the hierarchical bootstrap of :mod:`drprobe.metrics.compare`; every group of one
    dataset shares the test-example draws (so differences are paired over examples), each
    variant draws its own networks and probe seeds.
    """
    res = _baseline_rows(variant_column(results))
    if reference is not None and reference not in set(res["variant"]):
        raise InvalidValueError(f"unknown reference variant {reference!r}; valid choices: "
                                f"{', '.join(sorted(set(res['variant'])))}")
    rng = np.random.default_rng(random_state)
    tests: dict[tuple[str, int], np.ndarray] = {}
    curves: dict[tuple, tuple[Variant, np.ndarray]] = {}
    for key, rows in res.groupby(GROUP, sort=False):
        v = variant_data(rows)
        P, S, _, N = v.shape
        d = draw(rng, n_boot, P, S, N)
        shared = tests.setdefault((key[2], N), d.tests)
        curves[key] = (v, replicate_curves(v, Draws(d.seeds, d.probes, shared)))
    out = []
    for key, (v, reps) in curves.items():
        full = v.correct[:, :, -1].mean(axis=(1, 2))
        ref = curves.get((reference, *key[1:])) if reference else None
        if ref is not None and ref[0].shape[3] != v.shape[3]:
            ref = None
        for delta in deltas:
            row = dict(zip(GROUP, key), delta=float(delta), networks=v.shape[0],
                       d=int(v.ks[-1]), full_acc=float(full.mean()),
                       full_acc_sd=float(full.std(ddof=1)) if len(full) > 1 else np.nan)
            for stat in ("dr", "k_star", "dr_interp"):
                per_net = network_stats(v, delta, stat)
                low, high = interval(curve_stats(reps, v, delta, stat), ci)
                row.update({stat: float(per_net.mean()), f"{stat}_low": low,
                            f"{stat}_high": high, f"{stat}_sd_seeds": float(
                                per_net.std(ddof=1)) if len(per_net) > 1 else np.nan})
            for stat in ("dr", "dr_interp") if reference else ():
                diff = low = high = np.nan
                if ref is not None:
                    reps_diff = (curve_stats(reps, v, delta, stat)
                                 - curve_stats(ref[1], ref[0], delta, stat))
                    diff = row[stat] - float(network_stats(ref[0], delta, stat).mean())
                    low, high = interval(reps_diff, ci)
                row.update({f"{stat}_diff": diff, f"{stat}_diff_low": low,
                            f"{stat}_diff_high": high})
            out.append(row)
    return pd.DataFrame(out)


def curves_table(results: pd.DataFrame) -> pd.DataFrame:
    """Accuracy against fraction per variant: one row per (variant, layer, dataset, selector,
    fraction) with the mean over networks of each network's probe-seed mean (acc), its min and
    max over networks (acc_min, acc_max), k and the number of networks."""
    res = _baseline_rows(variant_column(results))
    per_net = (res.groupby([*GROUP, "fraction", "pretrain_seed"], sort=False)
               .agg(acc=("test_acc", "mean"), k=("k", "first")).reset_index())
    return (per_net.groupby([*GROUP, "fraction"], sort=False)
            .agg(acc=("acc", "mean"), acc_min=("acc", "min"), acc_max=("acc", "max"),
                 k=("k", "first"), networks=("pretrain_seed", "nunique")).reset_index())


def task_table(
    results: pd.DataFrame, deltas: Sequence[float] = (0.9,), *, n_boot: int = 1000,
    ci: float = 0.95, random_state: int = 0, reference: str | None = None,
) -> pd.DataFrame:
    """Each variant's k*_δ and DR_δ on every dataset against the ``reference`` dataset (default,
    or when a variant lacks it: its first dataset in the rows' order).

    One row per (variant, layer, selector, dataset, δ) with k_star, dr, and the differences
    k_star_diff / dr_diff (dataset − reference dataset) with hierarchical bootstrap intervals
    in which the networks are paired (the same networks on both tasks) and so are the test
    examples when both tasks have the same number of them (e.g. two label groupings of one
    test set). Groups without a second dataset are left out.
    """
    res = _baseline_rows(variant_column(results))
    first = reference if reference is not None else (res["dataset"].iloc[0] if len(res) else None)
    out = []
    for (variant, layer, sel), rows in res.groupby(["variant", "layer", "selector"], sort=False):
        data = {ds: variant_data(r) for ds, r in rows.groupby("dataset", sort=False)}
        ref_name = first if first in data else next(iter(data))
        ref = data[ref_name]
        for ds, v in data.items():
            if ds == ref_name or v.shape[0] != ref.shape[0]:
                continue
            for delta in deltas:
                row = {"variant": variant, "layer": layer, "selector": sel, "dataset": ds,
                       "reference_dataset": ref_name, "delta": float(delta)}
                for stat in ("k_star", "dr", "dr_interp"):
                    diff = compare_variants(v, ref, delta, stat, n_boot=n_boot, ci=ci,
                                            paired_tests=v.shape[3] == ref.shape[3],
                                            paired_seeds=True, random_state=random_state)
                    row.update({stat: diff["a"], f"{stat}_reference": diff["b"],
                                f"{stat}_diff": diff["diff"], f"{stat}_diff_low": diff["low"],
                                f"{stat}_diff_high": diff["high"]})
                out.append(row)
    return pd.DataFrame(out)
