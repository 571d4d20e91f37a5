"""Variants over a run: networks grouped by pretraining recipe, DR_δ per variant × task × δ with
intervals over pretraining seeds, and differences against a reference variant.

A model label ``NAME/seedK`` (also ``NAME-seedK``, ``NAME_seedK``, ``NAME.seedK``) is network
``K`` of variant ``NAME``; any other label is a one-network variant. The variant's key also
carries the weights (``pretrained``/``checkpoint`` vs ``random``: a random-init twin of a
variant's networks is its own variant ``NAME [random]``). Statistics and intervals come from
:mod:`drprobe.metrics.compare` and need the per-probe ``test_correct`` column.

Comparison tables (:func:`variant_table` with a reference, :func:`task_table`) carry, for each
difference of a statistic X: X_diff with its interval X_diff_low / X_diff_high, the two-sided
p-value X_diff_p (dual to the interval), X_diff_se and X_diff_df, the power line
X_min_detectable (the smallest |difference| a two-sided test at level 1 − ci, 5% by default,
finds with 80% power: ≈ (t_{ν,0.975} + t_{ν,0.8})·se), and the
multiplicity adjustment over the table's family: X_diff_p_holm (Holm) and X_diff_adj_low /
X_diff_adj_high (Bonferroni simultaneous interval at level 1 − α/m, α = 1 − ci), with
X_diff_family = m. **The family is every comparison of that table with the same statistic and
δ** (all variants, layers, datasets and selectors in it); rows without a comparison (the
reference itself, a missing or mismatched reference) are not in it and get NaN.

``dr_chance`` (DR on the chance-corrected curve) needs the chance level: the rows' ``n_classes``
column (chance 1/n_classes) or ``chance`` = {dataset: rate} (e.g. majority-class rates); without
either its columns are NaN.

Memory: one (P, S, F, N) boolean array per (variant, task, layer, selector) at a time.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from drprobe.errors import InvalidValueError
from drprobe.metrics.compare import (
    STATS,
    Difference,
    Draws,
    Variant,
    compare_difference,
    curve_stats,
    difference,
    difference_range,
    draw,
    network_stats,
    replicate_curves,
    spread_interval,
    stat_range,
)
from drprobe.metrics.multiplicity import holm

__all__ = ["SEED_SUFFIX", "adjust_family", "curves_table", "split_label", "task_table",
           "variant_column", "variant_data", "variant_table"]

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


def variant_data(rows: pd.DataFrame, chance: float | None = None) -> Variant:
    """The (P, S, F, N) correctness of one (variant, layer, dataset, selector) group of rows,
    with the rows' ``n_classes`` and the given ``chance`` level (see the module docstring).

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
    name = f"variant {rows['variant'].iloc[0]!r} on {rows['dataset'].iloc[0]!r}"
    if len(rows) != np.prod(shape):
        raise InvalidValueError(
            f"{name}: expected {shape[0]} networks x {shape[1]} probe seeds x {shape[2]} "
            f"fractions = {np.prod(shape)} probes, found {len(rows)}")
    classes = rows["n_classes"].dropna().unique() if "n_classes" in rows else []
    if len(classes) > 1:
        raise InvalidValueError(f"{name}: the probes disagree on n_classes "
                                f"({sorted(int(c) for c in classes)}); one task has one count")
    correct = np.stack([np.asarray(c, dtype=bool) for c in rows["test_correct"]])
    return Variant(correct.reshape(*shape, -1), fractions, ks,
                   n_classes=int(classes[0]) if len(classes) else None, chance=chance)


GROUP = ["variant", "layer", "dataset", "selector"]
DIFF_STATS = ("dr", "dr_interp", "dr_chance")
TASK_STATS = ("k_star", "dr", "dr_interp", "dr_chance")
ADJUSTED = ("p_holm", "adj_low", "adj_high", "family")


def _usable(v: Variant, stat: str) -> bool:
    return stat != "dr_chance" or v.has_chance


def _diff_columns(stat: str, d: Difference | None, ci: float, method: str) -> dict:
    """The unadjusted comparison columns of ``stat`` (NaN without a comparison)."""
    if d is None:
        low = high = p = se = df = mdd = diff = np.nan
    else:
        (low, high), p, se, df = d.interval(ci, method), d.p_value(method), d.se, d.df
        diff, mdd = d.diff, d.min_detectable(1.0 - ci, method=method)
    return {f"{stat}_diff": diff, f"{stat}_diff_low": low, f"{stat}_diff_high": high,
            f"{stat}_diff_p": p, f"{stat}_diff_se": se, f"{stat}_diff_df": df,
            f"{stat}_min_detectable": mdd}


def adjust_family(rows: list[dict], diffs: list[tuple[int, str, Difference]], ci: float,
                  method: str, stats: Sequence[str]) -> None:
    """Add the multiplicity columns to ``rows`` in place: for each (statistic, δ) the m
    comparisons ``diffs`` ((row index, statistic, Difference)) get Holm-adjusted p-values and
    Bonferroni intervals at level 1 − (1 − ci)/m; every other row gets NaN."""
    for row in rows:
        for stat in stats:
            row.update({f"{stat}_diff_{c}": np.nan for c in ADJUSTED})
    family: dict[tuple[str, float], list[tuple[int, Difference]]] = defaultdict(list)
    for i, stat, d in diffs:
        family[(stat, rows[i]["delta"])].append((i, d))
    for (stat, _), members in family.items():
        m = len(members)
        adjusted = holm([d.p_value(method) for _, d in members])
        for (i, d), p in zip(members, adjusted):
            low, high = d.interval(1.0 - (1.0 - ci) / m, method)
            rows[i].update({f"{stat}_diff_p_holm": float(p), f"{stat}_diff_adj_low": low,
                            f"{stat}_diff_adj_high": high, f"{stat}_diff_family": m})


def variant_table(
    results: pd.DataFrame, deltas: Sequence[float] = (0.9,), *, reference: str | None = None,
    n_boot: int = 1000, ci: float = 0.95, random_state: int = 0, method: str = "t",
    chance: Mapping[str, float] | None = None,
) -> pd.DataFrame:
    """One row per (variant, layer, dataset, selector, δ): networks, d, full_acc (mean, and its
    spread sd over networks), dr / dr_low / dr_high / dr_sd_seeds, the same for k_star,
    dr_interp (interpolated f*) and dr_chance (chance-corrected) and, with ``reference`` (a
    variant name), the comparison columns of the module docstring for dr, dr_interp and
    dr_chance: X_diff = X(variant) − X(reference) on the same layer name, dataset and selector.

    Intervals (``method``, :mod:`drprobe.metrics.compare`) from the hierarchical bootstrap;
    every group of one dataset shares the test-example draws (so differences are paired over
    examples), each variant draws its own networks and probe seeds. Multiplicity: Holm and
    Bonferroni over the family of all rows with the same statistic and δ.
    """
    res = _baseline_rows(variant_column(results))
    if reference is not None and reference not in set(res["variant"]):
        raise InvalidValueError(f"unknown reference variant {reference!r}; valid choices: "
                                f"{', '.join(sorted(set(res['variant'])))}")
    rng = np.random.default_rng(random_state)
    tests: dict[tuple[str, int], np.ndarray] = {}
    curves: dict[tuple, tuple[Variant, np.ndarray]] = {}
    for key, rows in res.groupby(GROUP, sort=False):
        v = variant_data(rows, (chance or {}).get(key[2]))
        P, S, _, N = v.shape
        d = draw(rng, n_boot, P, S, N)
        shared = tests.setdefault((key[2], N), d.tests)
        curves[key] = (v, replicate_curves(v, Draws(d.seeds, d.probes, shared)))
    out: list[dict] = []
    diffs: list[tuple[int, str, Difference]] = []
    for key, (v, reps) in curves.items():
        full = v.correct[:, :, -1].mean(axis=(1, 2))
        ref = curves.get((reference, *key[1:])) if reference else None
        if ref is not None and ref[0].shape[3] != v.shape[3]:
            ref = None
        for delta in deltas:
            row = dict(zip(GROUP, key), delta=float(delta), networks=v.shape[0],
                       d=int(v.ks[-1]), full_acc=float(full.mean()),
                       full_acc_sd=float(full.std(ddof=1)) if len(full) > 1 else np.nan)
            boot: dict[str, np.ndarray] = {}
            for stat in STATS:
                value = low = high = sd = np.nan
                if _usable(v, stat):
                    per_net = network_stats(v, delta, stat)
                    boot[stat] = curve_stats(reps, v, delta, stat)
                    value = float(per_net.mean())
                    low, high = spread_interval(value, boot[stat], v.shape[0], ci, method,
                                                stat_range(v, stat))
                    sd = float(per_net.std(ddof=1)) if len(per_net) > 1 else np.nan
                row.update({stat: value, f"{stat}_low": low, f"{stat}_high": high,
                            f"{stat}_sd_seeds": sd})
            for stat in DIFF_STATS if reference else ():
                d = None
                usable = ref is not None and stat in boot and _usable(ref[0], stat)
                if usable and key[0] != reference:
                    d = difference(row[stat], float(network_stats(ref[0], delta, stat).mean()),
                                   boot[stat], curve_stats(ref[1], ref[0], delta, stat),
                                   v.shape[0], ref[0].shape[0],
                                   bounds=difference_range(v, ref[0], stat))
                    diffs.append((len(out), stat, d))
                row.update(_diff_columns(stat, d, ci, method))
                if usable and key[0] == reference:  # the reference against itself
                    row.update({f"{stat}_diff": 0.0, f"{stat}_diff_low": 0.0,
                                f"{stat}_diff_high": 0.0})
            out.append(row)
    if reference:
        adjust_family(out, diffs, ci, method, DIFF_STATS)
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
    ci: float = 0.95, random_state: int = 0, reference: str | None = None, method: str = "t",
    chance: Mapping[str, float] | None = None,
) -> pd.DataFrame:
    """Each variant's k*_δ and DR_δ on every dataset against the ``reference`` dataset (default,
    or when a variant lacks it: its first dataset in the rows' order).

    One row per (variant, layer, selector, dataset, δ) with, for X in k_star, dr, dr_interp and
    dr_chance: X and X_reference, and the comparison columns of the module docstring for
    X_diff (dataset − reference dataset), from hierarchical bootstrap replicates in which the
    networks are paired (the same networks on both tasks) and so are the test examples when
    both tasks have the same number of them (e.g. two label groupings of one test set).
    Multiplicity: Holm and Bonferroni over the family of all rows of this table with the same
    statistic and δ. Groups without a second dataset are left out.
    """
    res = _baseline_rows(variant_column(results))
    first = reference if reference is not None else (res["dataset"].iloc[0] if len(res) else None)
    out: list[dict] = []
    diffs: list[tuple[int, str, Difference]] = []
    for (variant, layer, sel), rows in res.groupby(["variant", "layer", "selector"], sort=False):
        data = {ds: variant_data(r, (chance or {}).get(ds))
                for ds, r in rows.groupby("dataset", sort=False)}
        ref_name = first if first in data else next(iter(data))
        ref = data[ref_name]
        for ds, v in data.items():
            if ds == ref_name or v.shape[0] != ref.shape[0]:
                continue
            for delta in deltas:
                row = {"variant": variant, "layer": layer, "selector": sel, "dataset": ds,
                       "reference_dataset": ref_name, "delta": float(delta)}
                for stat in TASK_STATS:
                    d = None
                    if _usable(v, stat) and _usable(ref, stat):
                        d = compare_difference(v, ref, delta, stat, n_boot=n_boot,
                                               paired_tests=v.shape[3] == ref.shape[3],
                                               paired_seeds=True, random_state=random_state)
                        diffs.append((len(out), stat, d))
                    row.update({stat: d.a if d else np.nan,
                                f"{stat}_reference": d.b if d else np.nan})
                    row.update(_diff_columns(stat, d, ci, method))
                out.append(row)
    adjust_family(out, diffs, ci, method, TASK_STATS)
    return pd.DataFrame(out)
