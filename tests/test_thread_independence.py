"""One analysis, the same answers whatever the thread count and the machine's load.

The same :func:`~drprobe.analysis.layer.analyze_layer` job (selectors random, pca_top, variance,
randproj_gauss; the default probe bank) runs in fresh interpreters under different thread
limits -- OMP / MKL / OPENBLAS_NUM_THREADS and ``torch.set_num_threads`` of 1, 2 and 4 -- and
once beside a busy-loop process. The single-threaded quiet run is the reference: every other
run must choose the same L2, reach the same accuracies and predictions, and give the same CKA
(within 1e-12). Below those, the test also compares the bits the analysis is built from: the
PCA basis and every probe's coefficients (a multi-threaded ``eigh`` or Cholesky changes them in
their last bits, which is how a tied L2 choice moves on a larger job).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
SELECTORS = ("random", "pca_top", "variance", "randproj_gauss")
EXACT = ("selector", "seed", "k", "l2", "val_acc", "test_acc", "test_correct")


def _dataset(seed: int = 0) -> tuple[np.ndarray, ...]:
    """A made ten-class task, (3000, 256) train and (500, 256) test float32 features: a
    24-dimensional class signal spread over every neuron, noise, then a ReLU (large enough that
    torch and BLAS take their multi-threaded paths)."""
    rng = np.random.default_rng(seed)
    d, n_classes, latent = 256, 10, 24
    mix = rng.standard_normal((latent, d)) * np.linspace(3.0, 0.5, latent)[:, None]
    means = rng.standard_normal((n_classes, latent))

    def draw(n: int) -> tuple[np.ndarray, np.ndarray]:
        y = rng.integers(0, n_classes, n)
        X = (means[y] + rng.standard_normal((n, latent))) @ mix
        X += 0.7 * rng.standard_normal((n, d))
        return np.maximum(X, 0.0).astype(np.float32), y

    return (*draw(3000), *draw(500))


def _digest(arrays) -> str:
    h = hashlib.sha256()
    for a in arrays:
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def _worker(threads: int, out: str) -> None:
    """Run the analysis with ``threads`` torch threads (the BLAS limits come from the
    environment, set before numpy was imported) and write what it found to ``out``."""
    import torch

    torch.set_num_threads(threads)
    from drprobe.analysis.layer import analyze_layer
    from drprobe.probes import ProbeBank
    from drprobe.selectors.estimators import PCATop

    X_train, y_train, X_test, y_test = _dataset()
    bank = ProbeBank(keep_predictions=True, progress=False)
    res = analyze_layer(X_train, y_train, X_test, y_test, selectors=SELECTORS,
                        fractions=(0.02, 0.1, 0.5), seeds=(1, 2), n_boot=20, bank=bank,
                        progress=False)
    rows = res.results[[*EXACT, "cka", "cka_debiased"]]
    pca = PCATop(n_components=X_train.shape[1]).fit(X_train).components_
    coefs = [bank.fitted_[key].coef.numpy() for key in sorted(bank.fitted_)]
    Path(out).write_text(json.dumps({
        "threads_seen": torch.get_num_threads(), "rows": rows.to_dict(orient="list"),
        "pca": _digest([pca]), "coef": _digest(coefs)}))


def _run(threads: int, out: Path) -> dict:
    env = {**os.environ, **{v: str(threads) for v in THREAD_VARS}}
    subprocess.run([sys.executable, __file__, str(threads), str(out)], env=env, check=True,
                   timeout=600)
    return json.loads(out.read_text())


@pytest.mark.slow  # four fresh interpreters, each importing torch and training ~100 probes
def test_results_do_not_depend_on_thread_count_or_load(tmp_path):
    reference = _run(1, tmp_path / "t1.json")
    runs = {f"{t} threads": _run(t, tmp_path / f"t{t}.json") for t in (2, 4)}
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        runs["2 threads, CPU loaded"] = _run(2, tmp_path / "loaded.json")
    finally:
        busy.kill()
        busy.wait()
    assert reference["threads_seen"] == 1
    ref = reference["rows"]
    assert set(ref["selector"]) == set(SELECTORS)
    for name, run in runs.items():
        rows = run["rows"]
        for col in EXACT:
            assert rows[col] == ref[col], f"{col} differs with {name}"
        for col in ("cka", "cka_debiased"):
            np.testing.assert_allclose(rows[col], ref[col], rtol=0, atol=1e-12,
                                       err_msg=f"{col} with {name}")
        assert run["pca"] == reference["pca"], f"PCA basis differs with {name}"
        assert run["coef"] == reference["coef"], f"probe coefficients differ with {name}"
    assert {r["threads_seen"] for r in runs.values()} == {2, 4}


if __name__ == "__main__":
    _worker(int(sys.argv[1]), sys.argv[2])
