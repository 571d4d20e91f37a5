"""Soft-vote probe ensembles: hand-computed votes and identities with single probes."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.datasets import load_digits

from drprobe.errors import InvalidValueError
from drprobe.probes import ProbeBank, ensemble_accuracy, ensemble_curve, soft_vote
from drprobe.probes.ensemble import bank_probas
from drprobe.selectors import SubsetFamily


@pytest.fixture(scope="module")
def fitted():
    X, y = load_digits(return_X_y=True)
    order = np.random.default_rng(1).permutation(len(y))
    X, y = X[order].astype(np.float32), y[order]
    Xtr, ytr, Xva, yva, Xte, yte = X[:800], y[:800], X[800:1100], y[800:1100], X[1100:], y[1100:]
    fams = [SubsetFamily("random", s, ks=[4, 12],
                         indices=np.random.default_rng(s).permutation(64)[:12]) for s in (1, 2, 3)]
    fams.append(SubsetFamily("prefix", 0, ks=[4], indices=np.arange(64)))
    bank = ProbeBank(l2_grid=(1e-2, 1e-1), keep_proba=True, progress=False)
    bank.fit(Xtr, ytr, Xva, yva, fams)
    return bank, Xte, yte


def test_soft_vote_by_hand():
    p1 = np.array([[0.6, 0.4, 0.0], [0.1, 0.2, 0.7], [0.5, 0.5, 0.0]])
    p2 = np.array([[0.0, 0.5, 0.5], [0.3, 0.3, 0.4], [0.2, 0.3, 0.5]])
    p3 = np.array([[0.4, 0.6, 0.0], [0.2, 0.6, 0.2], [0.1, 0.1, 0.8]])
    np.testing.assert_allclose(soft_vote([p1, p2, p3])[0], [1 / 3, 0.5, 1 / 6])
    # row 0: majority of argmaxes is class 0 (p1) / 1 (p3) / 1 or 2 (p2); mean -> class 1
    # row 1: mean [0.2, 0.367, 0.433] -> 2 ; row 2: mean [0.267, 0.3, 0.433] -> 2
    y = np.array([1, 2, 0])
    assert ensemble_accuracy([p1, p2, p3], y) == pytest.approx(2 / 3)
    labels = np.array([10, 20, 30])
    assert ensemble_accuracy([p1, p2, p3], labels[y], classes=labels) == pytest.approx(2 / 3)


def test_ensemble_of_identical_probes_is_the_single_probe(fitted):
    bank, Xte, yte = fitted
    results = bank.evaluate(Xte, yte)
    single = results[0]  # random seed 1, k = 4
    assert ensemble_accuracy([single.test_proba] * 3, yte, classes=bank.classes_) == \
        pytest.approx(single.test_acc)
    prefix = results[-1]
    assert ensemble_accuracy(bank, yte, Xte, k=4, selector="prefix") == \
        pytest.approx(prefix.test_acc)


def test_bank_ensemble_equals_manual_average(fitted):
    bank, Xte, yte = fitted
    results = bank.evaluate(Xte, yte)
    for k in (4, 12):
        members = [r.test_proba for r in results if r.selector == "random" and r.k == k]
        assert len(members) == 3
        manual = np.mean(members, axis=0)
        expected = np.mean(bank.classes_[manual.argmax(1)] == yte)
        got = ensemble_accuracy(bank, yte, Xte, k=k)
        assert got == pytest.approx(expected)
        for p, q in zip(bank_probas(bank, Xte, k), members):
            np.testing.assert_allclose(p, q, rtol=1e-6)
    curve = ensemble_curve(bank, Xte, yte)
    assert set(curve) == {4, 12}
    assert curve[12] == pytest.approx(ensemble_accuracy(bank, yte, Xte, k=12))


def test_ensemble_errors(fitted):
    bank, Xte, yte = fitted
    for call in (lambda: soft_vote([]),
                 lambda: soft_vote([np.ones((3, 2)), np.ones((4, 2))]),
                 lambda: ensemble_accuracy(bank, yte, Xte, k=5),
                 lambda: ensemble_accuracy(bank, yte),
                 lambda: ensemble_accuracy([np.ones((3, 2))], np.zeros(4))):
        with pytest.raises(InvalidValueError) as info:
            call()
        assert "\n" not in str(info.value)
