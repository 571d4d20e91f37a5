"""The Gaussian random projection drawn in sample space: F·A equals X·P in distribution.

The argument is in docs/science.md ("Gaussian projections in sample space"). A seed's draw
differs between the two paths, so the comparisons are of distributions over seeds.
"""

from __future__ import annotations

import numpy as np
import pytest
from helpers import relu_task
from scipy import stats
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from drprobe.errors import InvalidValueError
from drprobe.metrics import linear_cka
from drprobe.probes import ProbeBank
from drprobe.selectors import resolve_ks
from drprobe.selectors.projections import projection_columns
from drprobe.wide import ColumnReader, plan_memory
from drprobe.wide.layer import analyze_wide
from drprobe.wide.memory import projection_path
from drprobe.wide.projections import (
    iter_sample_space_draws,
    project_sample_space,
    row_factor,
)

#: per-comparison level of the two-sample KS tests below; with the 4 comparisons of the main
#: test the chance that it fails when the two paths agree in law is at most 4 × 0.001 = 0.4%
#: (Bonferroni), fixed once by the fixed data seed: the test is deterministic
ALPHA = 1e-3


def _low_rank_task(n: int, d: int, rank: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(n, d) uncentred features carrying 3 classes, and labels: rank ``rank`` + 1 < d (a
    rank-``rank`` signal plus a mean off the origin)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    latent = rng.normal(size=(n, rank)) + 1.5 * rng.normal(size=(3, rank))[y]
    X = latent @ rng.normal(size=(rank, d)) + rng.normal(size=d)  # a mean off the origin
    return X, y


def test_draw_is_the_same_whatever_the_block_and_nested():
    one = np.concatenate([A for _, _, A in iter_sample_space_draws(5, 6, 40, 30, 30)], axis=1)
    blocks = np.concatenate([A for _, _, A in iter_sample_space_draws(5, 6, 40, 30, 7)], axis=1)
    np.testing.assert_array_equal(one, blocks)
    first = np.concatenate([A for _, _, A in iter_sample_space_draws(5, 6, 40, 12, 5)], axis=1)
    np.testing.assert_array_equal(first, one[:, :12])
    other = np.concatenate([A for _, _, A in iter_sample_space_draws(6, 6, 40, 30, 30)], axis=1)
    assert not np.allclose(other, one)
    with pytest.raises(InvalidValueError, match="0 < r <= d"):
        next(iter_sample_space_draws(5, 41, 40, 3, 3))


def test_row_factor_reproduces_the_gram_of_all_rows_at_their_rank():
    X, _ = _low_rank_task(70, 30, rank=8)
    F = row_factor([ColumnReader(X[:50]), ColumnReader(X[50:])], block=4)
    assert F.shape == (70, 9)
    np.testing.assert_allclose(F @ F.T, X @ X.T, atol=1e-8 * np.abs(X @ X.T).max())
    tall = np.random.default_rng(1).normal(size=(40, 9))  # more rows than neurons: r = d
    assert row_factor([ColumnReader(tall)], block=4).shape == (40, 9)


def test_draw_columns_have_the_law_of_a_unit_gaussian_column_seen_from_the_row_space():
    # Vᵀ p for p = g/‖g‖ in R^d and V (d, r) orthonormal: ‖Vᵀ p‖² ~ Beta(r/2, (d − r)/2) and
    # E[Vᵀ p pᵀ V] = I_r / d. The feature-space columns, seen through a fixed V, must pass the
    # same checks, and a draw without the χ² part (unit-norm a) must fail them.
    # (at most d columns a seed: 70 seeds' columns side by side)
    d, r, seeds = 60, 7, range(70)
    m = d * len(seeds)
    V = np.linalg.qr(np.random.default_rng(2).normal(size=(d, r)))[0]
    feature = np.hstack([V.T @ projection_columns("randproj_gauss", s, d, 0, d) for s in seeds])
    sample = np.hstack([A for s in seeds for _, _, A in iter_sample_space_draws(s, r, d, d, d)])
    beta = stats.beta(r / 2, (d - r) / 2).cdf
    for A in (feature, sample):
        assert stats.kstest(np.sum(A * A, axis=0), beta).pvalue > ALPHA
        np.testing.assert_allclose(A @ A.T / m, np.eye(r) / d, atol=0.15 / d)
    unit = sample / np.linalg.norm(sample, axis=0)
    assert stats.kstest(np.sum(unit * unit, axis=0), beta).pvalue < 1e-12


def _cka_and_accuracy(Z: np.ndarray, X_te: np.ndarray, y_tr: np.ndarray, y_te: np.ndarray,
                      n_tr: int, k: int) -> tuple[float, float]:
    """Linear CKA of the test rows' first k projected columns against the test features, and
    the test accuracy of a logistic probe on the standardised train columns."""
    scaler = StandardScaler().fit(Z[:n_tr, :k])
    probe = LogisticRegression(C=1.0, max_iter=500).fit(scaler.transform(Z[:n_tr, :k]), y_tr)
    acc = probe.score(scaler.transform(Z[n_tr:, :k]), y_te)
    return float(linear_cka(X_te, Z[n_tr:, :k])), float(acc)


def test_sample_space_projection_equals_feature_space_in_distribution_over_seeds():
    # a narrow layer whose rows have rank 31 < d = 120 (so the χ² part and the row space
    # matter), 200 train + 100 test rows; 40 seeds per path; CKA and probe accuracy at two sizes
    n_tr, n_te, d, ks, seeds = 200, 100, 120, (3, 12), range(40)
    X, y = _low_rank_task(n_tr + n_te, d, rank=30, seed=4)
    X_te, y_tr, y_te = X[n_tr:], y[:n_tr], y[n_tr:]
    F = row_factor([ColumnReader(X[:n_tr]), ColumnReader(X_te)], block=32)
    assert F.shape[1] == 31
    values: dict[str, np.ndarray] = {}
    for path in ("feature", "sample", "uniform"):
        rows = []
        for s in seeds:
            if path == "sample":
                Z = project_sample_space(F, s, d, max(ks))
            else:
                kind = "randproj_gauss" if path == "feature" else "randproj_uniform"
                Z = X @ projection_columns(kind, s, d, 0, max(ks))
            rows.append([v for k in ks for v in _cka_and_accuracy(Z, X_te, y_tr, y_te, n_tr, k)])
        values[path] = np.array(rows)  # (seeds, [cka, acc] per k)
    for j in range(values["feature"].shape[1]):
        test = stats.ks_2samp(values["feature"][:, j], values["sample"][:, j])
        assert test.pvalue > ALPHA, (j, test)
    # the same test tells a different projection apart: the uniform one's CKA
    assert stats.ks_2samp(values["feature"][:, 0], values["uniform"][:, 0]).pvalue < 1e-6


def _bank() -> ProbeBank:
    return ProbeBank(l2_grid=(1e-2,), max_steps=2000, tol=1e-7, dtype="float64", progress=False,
                     keep_predictions=True, n_threads=1)


def test_wide_layer_projects_gaussian_rows_in_sample_space_with_one_factor(tmp_path):
    n_all, n_te, d = 60, 30, 400
    X, y = relu_task(n_all + n_te, d, seed=5)
    tr, va = np.arange(40), np.arange(40, 60)
    ks, fr = resolve_ks(d, [0.02, 0.2, 1.0])
    assert projection_path("randproj_gauss", n_all + n_te, d, d, 2**30) == "sample"
    got = analyze_wide(X[:n_all], y[:n_all], X[n_all:], y[n_all:], tr, va,
                       selectors=["randproj_gauss"], ks=ks, fractions=fr, seeds=[1, 2],
                       bank=_bank(), probes_path="sample", budget_bytes=2**30, block=64,
                       scratch_dir=tmp_path)
    # the same rows (train, validation, test stacked), factor and draw, done by hand
    F = row_factor([ColumnReader(X[tr]), ColumnReader(X[va]), ColumnReader(X[n_all:])])
    for seed in (1, 2):
        Z_te = project_sample_space(F, seed, d, d)[n_all:]
        for k in ks:
            want = linear_cka(X[n_all:], Z_te[:, :k])
            assert got.cka[("randproj_gauss", seed)][k] == pytest.approx(want, abs=1e-5)
    assert sorted((p.seed, p.k) for p in got.probes) == [(s, k) for s in (1, 2) for k in ks]


def test_plan_prices_projections_on_wide_layers_and_refuses_a_costly_uniform_one():
    wide = {"n_train": 4500, "n_val": 500, "n_test": 1000, "d": 75_264, "n_classes": 10,
            "budget_bytes": 8 * 2**30}
    gauss = plan_memory(**wide, selectors=["random", "randproj_gauss"])
    (stage,) = [s for s in gauss.stages if s.stage == "randproj_gauss"]
    assert stage.path == "sample" and stage.work < 6000 * 75_264**2 / 5
    assert "randproj_gauss: sample space, peak" in gauss.describe()
    with pytest.raises(InvalidValueError, match=r"'randproj_uniform' projects 6000 rows .* "
                       r"3\.4e\+13 multiply-adds .* use randproj_gauss"):
        plan_memory(**wide, selectors=["randproj_uniform"])
    small = plan_memory(**wide, selectors=["randproj_uniform"], work_limit=1e14)
    assert small.stages[-1].path == "feature" and small.stages[-1].work == 6000 * 75_264**2
    narrow = plan_memory(n_train=4500, n_val=500, n_test=1000, d=256, n_classes=10,
                         selectors=["randproj_uniform"])
    assert [s.stage for s in narrow.stages] == ["cka", "probes"]  # feature space: unpriced
