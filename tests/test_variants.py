"""Variants over a run: the derived table against direct computations, and the report figures."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from drprobe.analysis.variants import curves_table, split_label, task_table, variant_table
from drprobe.errors import InvalidValueError
from drprobe.metrics.redundancy import critical_mass, diffused_redundancy

FRACTIONS = [0.1, 0.25, 0.5, 1.0]
D = 40


def test_split_label():
    assert split_label("adv_l2/seed3") == ("adv_l2", 3)
    assert split_label("width-2x-seed12") == ("width-2x", 12)
    assert split_label("builtin:mobilenet_v2") == ("builtin:mobilenet_v2", 0)
    assert split_label("seed1") == ("seed1", 0)


def fake_results(seed: int = 0, n_test: int = 200, harder: float = 0.0) -> pd.DataFrame:
    """Rows of a run: variants 'steep' and 'flat' (3 networks each, 3 probe seeds), their
    random twins under 'steep', on two datasets (10 and 4 classes); correctness drawn per
    example."""
    rng = np.random.default_rng(seed)
    rows = []
    for variant, knee in (("steep", 0.1), ("flat", 0.5)):
        for net in (1, 2, 3):
            for weights in (("checkpoint", "random") if variant == "steep" else ("checkpoint",)):
                for ds in ("mnist", "digits"):
                    full = 0.9 if weights != "random" else 0.6
                    jitter = rng.uniform(-0.03, 0.03)
                    for s in (1, 2, 3):
                        for f in FRACTIONS:
                            bend = knee + jitter + (harder if ds == "digits" else 0.0)
                            acc = full * min(1.0, f / bend) if f < 1 else full
                            correct = rng.random(n_test) < acc
                            rows.append({"model": f"{variant}/seed{net}", "weights": weights,
                                         "layer": "penultimate", "dataset": ds,
                                         "selector": "random", "seed": s, "fraction": f,
                                         "n_classes": 10 if ds == "mnist" else 4,
                                         "k": max(1, int(f * D)), "d": D,
                                         "test_acc": correct.mean(),
                                         "test_correct": correct.tolist()})
    return pd.DataFrame(rows)


def test_variant_table_matches_direct_per_network_computation():
    res = fake_results()
    table = variant_table(res, [0.8, 0.9], reference="steep", n_boot=200)
    assert set(table["variant"]) == {"steep", "flat", "steep [random]"}
    assert len(table) == 3 * 2 * 2
    for r in table.itertuples():
        sub = res[(res["dataset"] == r.dataset) & (res["model"].str.split("/").str[0]
                                                    == r.variant.split(" ")[0])
                  & ((res["weights"] == "random") == r.variant.endswith("[random]"))]
        drs, kss = [], []
        for _, net in sub.groupby("model"):
            curve = net.pivot_table(index="seed", columns="fraction", values="test_acc")
            full = curve[1.0].mean()
            drs.append(diffused_redundancy(FRACTIONS, curve.to_numpy(), full, r.delta))
            kss.append(critical_mass([4, 10, 20, 40], curve.to_numpy(), full, r.delta))
        assert r.dr == pytest.approx(np.mean(drs)) and r.k_star == pytest.approx(np.mean(kss))
        assert r.dr_low <= r.dr + 1e-9 and r.dr + 1e-9 >= r.dr_low and r.dr_high >= r.dr_low
        assert r.networks == 3 and r.d == D
    steep = table[(table["variant"] == "steep")]
    assert (steep["dr_diff"] == 0).all() and (steep[["dr_diff_low", "dr_diff_high"]] == 0).all().all()
    assert steep["dr_diff_p"].isna().all()  # the reference is no comparison
    flat = table[(table["variant"] == "flat") & (table["delta"] == 0.9)]
    assert (flat["dr_diff_high"] < 0).all()  # flat curves are less redundant than steep ones


def test_curves_table_is_a_mean_of_network_means():
    res = fake_results(1)
    curves = curves_table(res)
    row = curves[(curves["variant"] == "flat") & (curves["dataset"] == "mnist")
                 & (curves["fraction"] == 0.25)].iloc[0]
    nets = [g["test_acc"].mean() for _, g in res[(res["model"].str.startswith("flat"))
                                                 & (res["dataset"] == "mnist")
                                                 & (res["fraction"] == 0.25)].groupby("model")]
    assert row["acc"] == pytest.approx(np.mean(nets))
    assert (row["acc_min"], row["acc_max"]) == pytest.approx((min(nets), max(nets)))
    assert row["networks"] == 3 and row["k"] == 10


def test_bad_tables_are_one_line_errors():
    res = fake_results()
    with pytest.raises(InvalidValueError, match="unknown reference variant 'ce'; valid choices"):
        variant_table(res, reference="ce", n_boot=10)
    with pytest.raises(InvalidValueError, match="expected 3 networks x 3 probe seeds"):
        variant_table(res.iloc[1:], n_boot=10)
    with pytest.raises(InvalidValueError, match="no test_correct column"):
        variant_table(res.drop(columns="test_correct"), n_boot=10)


@pytest.mark.slow
def test_report_draws_variant_figures(tmp_path):
    from sklearn.datasets import load_digits

    from drprobe.experiment.config import parse_config
    from drprobe.experiment.runner import run_experiment
    from drprobe.report.build import build_report

    X, y = load_digits(return_X_y=True)
    paths = []
    for i, cols in enumerate((slice(0, 64), slice(0, 64, 2))):  # all pixels, every other one
        paths.append(tmp_path / f"px{i}.npz")
        np.savez(paths[-1], X_train=X[:1000, cols].astype(np.float32), y_train=y[:1000],
                 X_test=X[1000:, cols].astype(np.float32), y_test=y[1000:])
    models = [{"spec": "precomputed", "weights": ["pretrained"], "name": f"pix/seed{s}"}
              for s in (1, 2)]
    config = parse_config({"name": "v", "models": models, "layers": ["pixels"],
                           "datasets": [{"name": f"features:{p}", "label": f"px{i}"}
                                        for i, p in enumerate(paths)],
                           "fractions": [0.25, 0.5, 1.0], "seeds": [1, 2]})
    run_experiment(config, tmp_path / "run", progress=False)
    # a single variant: no variant figures, no table
    page = build_report(tmp_path / "run", tmp_path / "rep1", formats="png", progress=False)
    assert not (page.parent / "variants.csv").exists()
    # rename the networks of one dataset into a second variant
    import pyarrow.parquet as pq

    for part in (tmp_path / "run" / "results").glob("*px1*.parquet"):
        t = pq.read_table(part).to_pandas()
        t["model"] = t["model"].str.replace("pix", "half")
        t["dataset"] = "px0"
        t.to_parquet(part)
    page = build_report(tmp_path / "run", tmp_path / "rep2", formats="png", progress=False,
                        reference="pix")
    table = pd.read_csv(page.parent / "variants.csv")
    assert set(table["variant"]) == {"pix", "half"} and table["networks"].eq(2).all()
    assert (page.parent / "variants-dr.png").stat().st_size > 5000
    assert (page.parent / "variants-curves-px0.png").exists()
    text = page.read_text()
    assert "DR per pretraining variant" in text
    # the comparison table: raw and adjusted intervals side by side, the correction named
    assert "Variant comparison" in text and "ΔDR adj. CI" in text and "ΔDR p_holm" in text
    assert "Holm p-values" in text and "m = 1 comparisons" in text and "min_detectable" in text
    assert table.loc[table["variant"] == "half", "dr_diff_family"].eq(1).all()


def test_task_table_pairs_networks_across_tasks():
    res = fake_results(2, harder=0.3)  # digits needs 0.3 more of the layer than mnist
    table = task_table(res, [0.9], n_boot=200)
    assert set(table["dataset"]) == {"digits"} and set(table["reference_dataset"]) == {"mnist"}
    steep = table[table["variant"] == "steep"].iloc[0]
    nets = []
    for _, net in res[(res["model"].str.startswith("steep")) & (res["weights"] == "checkpoint")
                      & (res["dataset"] == "digits")].groupby("model"):
        curve = net.pivot_table(index="seed", columns="fraction", values="test_acc")
        nets.append(critical_mass([4, 10, 20, 40], curve.to_numpy(), curve[1.0].mean(), 0.9))
    assert steep["k_star"] == pytest.approx(np.mean(nets))
    assert steep["k_star_diff"] > 0 and steep["k_star_diff_low"] > 0
    assert steep["dr_diff_high"] < 0


def test_task_table_takes_the_named_reference_dataset():
    res = fake_results(2, harder=0.3)
    table = task_table(res, [0.9], n_boot=50, reference="digits")
    assert set(table["dataset"]) == {"mnist"} and set(table["reference_dataset"]) == {"digits"}
    flipped = task_table(res, [0.9], n_boot=50)
    steep = lambda t: t[t["variant"] == "steep"].iloc[0]
    assert steep(table)["k_star_diff"] == pytest.approx(-steep(flipped)["k_star_diff"])
