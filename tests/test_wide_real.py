"""Sample space against feature space on real features: MobileNetV2 (packaged ImageNet weights),
flattened ``features.4`` at 32 px (32 x 4 x 4 = 512 neurons) on Fashion-MNIST, 160 training
images, so d is far above n."""

from __future__ import annotations

import numpy as np
import pytest

from drprobe.features import get_features
from drprobe.metrics import CrossProductStats
from drprobe.probes import ProbeBank
from drprobe.selectors import make_family, resolve_ks
from drprobe.selectors.pca import pca_nonnull_basis
from drprobe.wide.layer import analyze_wide

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def real(feature_cache):
    kw = {"pooling": "flatten", "image_size": 32, "cache_dir": feature_cache, "progress": False}
    spec, layer = "builtin:mobilenet_v2", "features.4"
    tr = get_features(spec, layer, "fashion-mnist", "train", n=200, **kw)
    te = get_features(spec, layer, "fashion-mnist", "test", n=150, **kw)
    return tr, te


def _bank() -> ProbeBank:
    return ProbeBank(l2_grid=(1e-2, 1e-1), max_steps=3000, tol=1e-6, dtype="float64",
                     progress=False, keep_predictions=True, n_threads=1)


def test_real_wide_layer_sample_space_equals_feature_space(real, tmp_path):
    tr, te = real
    d = tr.X.shape[1]
    va = np.arange(0, 200, 5)
    tri = np.setdiff1d(np.arange(200), va)
    ks, fr = resolve_ks(d, [0.01, 0.05, 0.3, 1.0])
    got = analyze_wide(tr.X, tr.y, te.X, te.y, tri, va, selectors=["random", "pca_least"],
                       ks=ks, fractions=fr, seeds=[1], bank=_bank(), probes_path="sample",
                       budget_bytes=2**33, block=64, scratch_dir=tmp_path)
    Xtr, Xva, Xte = (np.asarray(a, dtype=np.float64) for a in (tr.X[tri], tr.X[va], te.X))
    fam = make_family("random", Xtr, ks, seed=1, fractions=fr)
    want = _bank().fit(Xtr, tr.y[tri], Xva, tr.y[va], [fam]).evaluate(Xte, te.y)
    stats = CrossProductStats.from_array(Xte)
    lin, deb = stats.family_cka(fam), stats.subset_cka_debiased([fam.indices[:k] for k in ks])
    by_k = {p.k: p for p in got.probes if p.selector == "random"}
    for k, w, c, cd in zip(ks, want, lin, deb):
        assert abs(by_k[k].test_acc - w.test_acc) <= 0.003
        assert got.cka[("random", 1)][k] == pytest.approx(c, abs=1e-6)
        assert got.cka_debiased[("random", 1)][k] == pytest.approx(cd, abs=1e-6)
    # pca_least: every direction has training variance, and the sample-space curve matches
    # the feature-space basis restricted to non-null directions
    Xc = Xtr - Xtr.mean(0)
    V, w = pca_nonnull_basis(Xc.T @ Xc, d, least=True, n=len(tri))
    assert V.shape[1] == len(tri) - 1 < d
    assert np.all(np.var(Xc @ V, axis=0) > 0)
    least = sorted(p.k for p in got.probes if p.selector == "pca_least")
    assert least[-1] == V.shape[1]
    accs = [p.test_acc for p in sorted((p for p in got.probes if p.selector == "pca_least"),
                                       key=lambda p: p.k)]
    assert accs[-1] > 0.3  # the span of the training rows: far above chance (0.1)
