"""One selector contract for both paths: a selector defined here, outside the package, runs
through analyze_layer on a narrow layer (feature space) and on a wide layer (sample space) with
no other change; refusals and the seeded rule come from the class's declaration."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import pytest
from helpers import relu_task

from drprobe.analysis.layer import analyze_layer
from drprobe.errors import InvalidValueError
from drprobe.metrics.cka import linear_cka
from drprobe.probes import ProbeBank
from drprobe.selectors import (
    SELECTORS,
    RandomProjectionUniform,
    Selector,
    SubsetFamily,
    is_seeded,
    make_family,
    register_selector,
    wide_refusal,
)
from drprobe.sources.datasets import train_val_split
from drprobe.wide.memory import probe_families


class MeanAbsRanked(Selector):
    """Neurons by decreasing mean absolute activation over the training rows (ties by index)."""

    def fit(self, X: Any, y: Any = None) -> MeanAbsRanked:
        d = self._width(X)
        score = np.mean(np.abs(np.asarray(X, dtype=np.float64)), axis=0)
        self.indices_ = np.argsort(-score, kind="stable")[: self._k(d)]
        return self

    @classmethod
    def order_from_columns(cls, d: int, blocks: Iterable[np.ndarray], y: Any,
                           seed: Any) -> np.ndarray:
        score = np.concatenate([np.mean(np.abs(b), axis=0) for b in blocks])
        return np.argsort(-score, kind="stable")


class ReversedRandom(Selector):
    """A seeded, data-free coordinate selector: the seed's permutation read backwards."""

    seeded = True

    def fit(self, X: Any, y: Any = None) -> ReversedRandom:
        d = self._width(X)
        self.indices_ = self.order_from_columns(d, (), y, self.random_state)[: self._k(d)]
        return self

    @classmethod
    def order_from_columns(cls, d: int, blocks: Iterable[np.ndarray], y: Any,
                           seed: Any) -> np.ndarray:
        return np.random.default_rng(seed).permutation(d)[::-1].copy()


class LastNeurons(Selector):
    """A coordinate selector with a feature-space fit only (no ``order_from_columns``)."""

    def fit(self, X: Any, y: Any = None) -> LastNeurons:
        d = self._width(X)
        self.indices_ = np.arange(d)[::-1][: self._k(d)].copy()
        return self


@pytest.fixture
def registered():
    """Register the test selectors for one test, and remove them after it."""
    names = {"mean_abs": MeanAbsRanked, "reversed_random": ReversedRandom,
             "last_neurons": LastNeurons}
    for name, cls in names.items():
        register_selector(name, cls)
    yield names
    for name in names:
        del SELECTORS[name]


def _bank() -> ProbeBank:
    return ProbeBank(l2_grid=(1e-2, 1e-1), max_steps=3000, tol=1e-7, dtype="float64",
                     progress=False, keep_predictions=True, n_threads=1)


def _reference_orders(X_rows: np.ndarray, d: int, seeds: list[int]) -> dict:
    """The test selectors' orders computed here, without the selector classes."""
    mean_abs = np.argsort(-np.abs(X_rows.astype(np.float64)).mean(axis=0), kind="stable")
    orders = {("mean_abs", 0): mean_abs}
    for s in seeds:
        orders[("reversed_random", s)] = np.random.default_rng(s).permutation(d)[::-1].copy()
    return orders


@pytest.mark.parametrize("wide", [False, True], ids=["narrow-feature", "wide-sample"])
def test_a_selector_defined_in_a_test_runs_through_analyze_layer(registered, tmp_path, wide):
    n_train, n_test, d = (150, 90, 400) if wide else (240, 90, 24)
    X, y = relu_task(n_train + n_test, d, seed=4)
    Xtr_all, ytr_all, Xte, yte = X[:n_train], y[:n_train], X[n_train:], y[n_train:]
    seeds = [1, 2]
    res = analyze_layer(Xtr_all, ytr_all, Xte, yte, selectors=["mean_abs", "reversed_random"],
                        fractions=[0.02, 0.2, 0.5], seeds=seeds, bank=_bank(), n_boot=20,
                        progress=False, scratch_dir=str(tmp_path))
    assert res.plan.path("probes") == ("sample" if wide else "feature")
    tr, va = train_val_split(ytr_all, 0.1, 0)
    if wide:
        assert max(res.results["k"]) > len(tr)  # sizes above n_train: the Gram route ran
    orders = _reference_orders(Xtr_all[tr], d, seeds)
    ks = sorted(set(res.results["k"]))
    families = [SubsetFamily(sel, seed, ks, indices=order) for (sel, seed), order in orders.items()]
    want = _bank().fit(Xtr_all[tr], ytr_all[tr], Xtr_all[va], ytr_all[va],
                       families).evaluate(Xte, yte)
    rows = res.results.set_index(["selector", "seed", "k"])
    assert len(rows) == len(want) == 3 * len(ks)
    for w in want:
        row = rows.loc[(w.selector, w.seed, w.k)]
        order = orders[(w.selector, w.seed)]
        assert row["cka"] == pytest.approx(linear_cka(Xte, Xte[:, order[: w.k]]), abs=1e-6)
        assert abs(row["test_acc"] - w.test_acc) <= 0.003, (w.selector, w.seed, w.k)
    assert set(res.summary["selector"]) == {"mean_abs", "reversed_random"}


def test_wide_refusal_is_one_line_from_the_declaration_listing_the_registry(registered):
    X, y = relu_task(200, 500)
    runs_wide = [n for n in SELECTORS if n not in ("weight_norm", "greedy", "last_neurons")]
    for name, reason in (("weight_norm", "full-layer feature-space probe"),
                         ("greedy", "d×d ridge Gram"),
                         ("last_neurons", "no neuron order from column blocks")):
        with pytest.raises(InvalidValueError) as err:
            analyze_layer(X[:150], y[:150], X[150:], y[150:], selectors=["random", name],
                          fractions=[0.1], seeds=[1], bank=_bank(), progress=False)
        text = str(err.value)
        assert "\n" not in text and f"selector {name!r} has no sample-space path" in text
        assert reason in text
        assert text.endswith("valid choices here: " + ", ".join(runs_wide))
        assert "mean_abs" in runs_wide and wide_refusal(name) is not None


def test_a_selector_without_a_wide_path_still_runs_in_feature_space(registered):
    X, y = relu_task(220, 12)
    res = analyze_layer(X[:160], y[:160], X[160:], y[160:], selectors=["last_neurons"],
                        counts=[2, 5], seeds=[1], bank=_bank(), n_boot=20, progress=False)
    assert res.plan.path("probes") == "feature"
    for k, cka in zip(res.results["k"], res.results["cka"]):
        assert cka == pytest.approx(linear_cka(X[160:], X[160:, 12 - k:]), abs=1e-9)


def test_seeded_is_the_class_declaration_everywhere(registered):
    X, y = relu_task(120, 10)
    assert is_seeded("reversed_random") and not is_seeded("mean_abs")
    assert make_family("reversed_random", X, [3], seed=5).seed == 5
    assert make_family("mean_abs", X, [3], seed=5).seed == 0
    # a wide layer trains one family per seed of a seeded selector together (projections apart)
    assert probe_families(["reversed_random", "mean_abs", "randproj_uniform"], 3) == 3 + 1
    # greedy scores on validation rows: seeded only when it draws them itself
    assert not is_seeded("greedy") and is_seeded("greedy", with_validation=False)
    assert make_family("greedy", X, [2], seed=3, y_train=y).seed == 3
    assert make_family("greedy", X[:90], [2], seed=3, y_train=y[:90], X_val=X[90:],
                       y_val=y[90:]).seed == 0


class _BadYield(Selector):
    yields = "subset"


class _BadDraws(RandomProjectionUniform):
    draws = "sparse"


@pytest.mark.parametrize("name,cls,match", [
    ("random", MeanAbsRanked, "'random' is already registered"),
    ("not a name", MeanAbsRanked, "must be an identifier"),
    ("plain", dict, "is not a Selector subclass"),
    ("bad_yield", _BadYield, "yields 'subset'; valid choices: coordinate, pca, projection"),
    ("bad_draws", _BadDraws, "draws 'sparse'; valid choices: randproj_uniform"),
])
def test_register_selector_refuses_what_breaks_the_contract(name, cls, match):
    before = dict(SELECTORS)
    with pytest.raises(InvalidValueError, match=match):
        register_selector(name, cls)
    assert SELECTORS == before
