"""One wide layer end to end in sample space (or streaming): every probe and every CKA value.

:func:`analyze_wide` is what :func:`drprobe.experiment.analysis.analyze_layer` runs when the
memory plan puts a layer's probes in sample space or on the streaming path. Per split it makes a
neuron-major scratch copy (:class:`~drprobe.wide.columns.ColumnReader`), then

- CKA: the centred test Gram K once, then one pass per coordinate family along its neuron order
  (:func:`~drprobe.wide.gram.nested_gram_cka` with ``full_gram=K``); PCA families from the
  Grams of their test coordinates;
- PCA (``pca_top`` / ``pca_least``): dual PCA from the centred train Gram, sizes clipped to the
  non-null rank (:func:`~drprobe.wide.dual_pca.clip_to_rank`);
- probes: sizes k ≤ ``feature_limit`` (and every PCA size) are trained by the bank on the
  materialised columns, all families in one call; larger sizes either from their Grams (Φ,
  "sample", the families' passes in lockstep) or by :class:`~drprobe.wide.streaming.StreamingProbes`;
- ``variance``: the neuron order by decreasing train variance, from one pass over the train
  columns (then a coordinate family like ``random``);
- random projections (``randproj_uniform`` / ``randproj_gauss``): every split's rows projected
  onto the seed's first max(k) directions, block by block (n·d·max(k) multiply-adds, never a
  d×d matrix), then CKA and probes as for a coordinate family in the projection's order.

Peak memory: the plan's stage peaks (:mod:`drprobe.wide.memory`) plus the materialised small
sizes, (n_train + n_val + n_test)·Σ_families min(k_max, feature_limit) float32.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Self

import numpy as np

from drprobe.errors import InvalidValueError
from drprobe.metrics.fairness import per_class_accuracy
from drprobe.probes import ProbeBank, ProbeResult
from drprobe.selectors import SELECTORS
from drprobe.selectors.pca import clip_to_rank
from drprobe.selectors.projections import KINDS as PROJECTION_KINDS
from drprobe.wide.columns import IN_MEMORY_BYTES, ColumnReader
from drprobe.wide.dual_pca import dual_pca
from drprobe.wide.dual_probe import FeatureBlock, probe_blocks, sample_space_probes
from drprobe.wide.gram import DEFAULT_BLOCK, cka_from_grams, nested_cross_grams, nested_gram_cka
from drprobe.wide.memory import probe_families, streaming_bank_limit
from drprobe.wide.projections import project
from drprobe.wide.streaming import StreamingProbes

#: selectors the wide path runs: coordinate families with a fixed neuron order (from the seed, or
#: from the train variances), PCA, and random projections (the features projected block by
#: block, then treated as a coordinate family)
WIDE_SELECTORS = ("random", "prefix", "variance", "pca_top", "pca_least", *PROJECTION_KINDS)
_SEEDED = ("random", *PROJECTION_KINDS)


@dataclass
class WideOutput:
    """Probe results and CKA per (selector, seed) → {k: value}; ``seconds`` per phase;
    ``routes``: the coordinate-family sizes trained on each path ("feature", "sample",
    "streaming")."""

    probes: list[ProbeResult]
    cka: dict[tuple[str, int], dict[int, float]]
    cka_debiased: dict[tuple[str, int], dict[int, float]]
    seconds: dict[str, float] = field(default_factory=dict)
    routes: dict[str, list[int]] = field(default_factory=dict)


def neuron_order(selector: str, seed: int, d: int) -> np.ndarray:
    """(d,) the neuron order of a coordinate selector (its estimator, fitted on the width only)."""
    est = SELECTORS[selector](n_components=d, random_state=seed)
    return np.asarray(est.fit(np.empty((0, d), dtype=np.float32)).indices_)


def materialised_dtype(X: Any) -> np.dtype:
    """The dtype of materialised feature columns: the features' own, at least float32 (exact)."""
    return np.result_type(X.dtype, np.float32)


def variance_order(reader: ColumnReader, block: int = DEFAULT_BLOCK) -> np.ndarray:
    """(d,) neurons by decreasing variance of the reader's rows, ties by index — the order of
    :class:`~drprobe.selectors.VarianceRanked`, one block of columns at a time (memory O(n·b))."""
    var = np.concatenate([np.var(reader.columns(np.arange(lo, min(lo + block, reader.d))),
                                 axis=0) for lo in range(0, reader.d, block)])
    return np.argsort(-var, kind="stable")


def feature_limit(n_rows: int, n_test: int, n_classes: int, n_l2: int, budget: int,
                  ks: Sequence[int], n_train: int, path: str, n_families: int = 1,
                  itemsize: int = 4) -> int:
    """Largest size trained by the bank on materialised columns.

    Sample space: k ≤ n_train (the Gram route's width is the rank ≤ n_train − 1, so it pays only
    above that). Streaming: :func:`~drprobe.wide.memory.streaming_bank_limit` (the bank and the
    families' columns within half the budget).
    """
    if path == "sample":
        return n_train
    return streaming_bank_limit(n_rows, n_test, n_classes, n_l2, budget, ks, n_families,
                                itemsize)


def _check_selectors(selectors: Sequence[str], d: int, n: int) -> None:
    bad = [s for s in selectors if s not in WIDE_SELECTORS]
    if bad:
        raise InvalidValueError(
            f"selector {bad[0]!r} has no sample-space path (layer d={d} > n_train={n} or over "
            f"the memory budget); valid choices here: {', '.join(WIDE_SELECTORS)}"
        )


def analyze_wide(
    X_train: Any, y_train: np.ndarray, X_test: Any, y_test: np.ndarray, tr_idx: np.ndarray,
    va_idx: np.ndarray, *, selectors: Sequence[str], ks: Sequence[int],
    fractions: Sequence[float], seeds: Sequence[int], bank: ProbeBank, probes_path: str,
    budget_bytes: int, block: int = DEFAULT_BLOCK, scratch_dir: Any = None,
    progress: bool = False,
) -> WideOutput:
    """Probes and CKA of every (selector, seed, k) of one layer without any d×d object.

    X_train (n_all, d) and X_test (n_test, d) may be memmaps; tr_idx / va_idx split the train
    rows. ``probes_path`` is the plan's path of the probes stage ("sample" or "streaming").
    """
    d = int(X_train.shape[1])
    _check_selectors(selectors, d, len(tr_idx))
    if probes_path not in ("sample", "streaming"):
        raise InvalidValueError(f"probes_path {probes_path!r}; valid choices: sample, streaming")
    ytr, yva = np.asarray(y_train)[tr_idx], np.asarray(y_train)[va_idx]
    y_test = np.asarray(y_test)
    ks, fractions = [int(k) for k in ks], [float(f) for f in fractions]
    frac_of = dict(zip(ks, fractions))
    # deterministic selectors are one family with seed 0, as make_family records them
    families = [(s, seed) for s in selectors
                for seed in ([int(x) for x in seeds] if s in _SEEDED else [0])]
    coords = [(s, seed, neuron_order(s, seed, d)) for s, seed in families
              if s in ("random", "prefix")]
    n_rows, n_classes = len(tr_idx) + len(va_idx), int(max(ytr.max(), y_test.max())) + 1
    dtype = materialised_dtype(X_train)
    limit = feature_limit(n_rows, len(y_test), n_classes, len(np.atleast_1d(bank.l2_grid)),
                          budget_bytes, ks, len(tr_idx), probes_path,
                          probe_families(selectors, len(seeds)), dtype.itemsize)
    small, large = [k for k in ks if k <= limit], [k for k in ks if k > limit]
    out = WideOutput([], {}, {}, routes={"feature": small, probes_path: large})
    t0 = time.perf_counter()
    with ColumnReader(X_train, tr_idx, scratch_dir, progress=progress) as train, \
            ColumnReader(X_train, va_idx, scratch_dir, progress=progress) as val, \
            ColumnReader(X_test, None, scratch_dir, progress=progress) as test:
        if "variance" in selectors:
            coords.append(("variance", 0, variance_order(train, block)))
        out.seconds["scratch"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        (_, K_test, _), = nested_cross_grams(test, [], np.arange(d), [d], standardize=False,
                                             block=block, progress=progress)
        for sel, seed, order in coords:
            lin, deb, _ = nested_gram_cka(test, order, ks, full_gram=K_test, block=block,
                                          progress=progress)
            out.cka[(sel, seed)] = dict(zip(ks, lin))
            out.cka_debiased[(sel, seed)] = dict(zip(ks, deb))
        out.seconds["cka"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        blocks = [FeatureBlock(sel, seed, small, *(r.columns(order[: small[-1]], dtype)
                                                   for r in (train, val, test)),
                               fractions=[frac_of[k] for k in small])
                  for sel, seed, order in coords if small]
        pcas = [s for s in selectors if s in ("pca_top", "pca_least")]
        if pcas:  # one centred train Gram (and cross-Grams) serves both PCA selectors
            (_, K, Ko), = nested_cross_grams(train, [val, test], np.arange(d), [d],
                                             standardize=False, block=block, progress=progress)
            blocks += [_pca_block(sel, K, Ko, ks, fractions, d, K_test, out) for sel in pcas]
            del K, Ko
        out.seconds["pca"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        if blocks:
            out.probes += probe_blocks(bank, blocks, ytr, yva, y_test,
                                       standardize=bool(bank.standardize))
        del blocks
        out.seconds["probes_feature"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        if large and coords and probes_path == "sample":
            out.probes += sample_space_probes(
                bank, train, ytr, val, yva, test, y_test, coords, large,
                fractions=[frac_of[k] for k in large], block=block, progress=progress)
        elif large and coords:
            for sel, seed, order in coords:
                out.probes += _streaming(bank, X_train, ytr, yva, X_test, y_test, tr_idx,
                                         va_idx, sel, seed, order, large, frac_of, progress)
        out.seconds[f"probes_{probes_path}"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        for sel, seed in families:
            if sel in PROJECTION_KINDS:
                out.probes += _projection_family(
                    bank, sel, seed, X_train, ytr, yva, X_test, y_test, tr_idx, va_idx,
                    ks, small, large, frac_of, K_test, probes_path, block, scratch_dir,
                    progress, out)
        out.seconds["projections"] = time.perf_counter() - t0
    return out


def _projection_family(
    bank: ProbeBank, sel: str, seed: int, X_train: Any, ytr: np.ndarray, yva: np.ndarray,
    X_test: Any, y_test: np.ndarray, tr_idx: np.ndarray, va_idx: np.ndarray, ks: list[int],
    small: list[int], large: list[int], frac_of: dict[int, float], K_test: np.ndarray,
    probes_path: str, block: int, scratch_dir: Any, progress: bool, out: WideOutput,
) -> list[ProbeResult]:
    """One random-projection family: the rows projected onto its first max(ks) directions
    (:func:`~drprobe.wide.projections.project`, n·d·max(ks) multiply-adds), then CKA and probes
    exactly as for a coordinate family whose neuron order is the projection's column order.
    Records its CKA values in ``out``; returns its probes.

    Memory: the projected rows, (n_train + n_val + n_test)·max(ks) float32, held in memory up
    to the column reader's in-memory size and otherwise in scratch files, plus one block of P.
    """
    m, n_tr = ks[-1], len(tr_idx)
    rows = np.concatenate([tr_idx, va_idx])
    with _Projected(X_train, rows, sel, seed, m, scratch_dir) as Z, \
            _Projected(X_test, None, sel, seed, m, scratch_dir) as Z_test, \
            ColumnReader(Z.array, np.arange(n_tr), scratch_dir) as train, \
            ColumnReader(Z.array, np.arange(n_tr, rows.size), scratch_dir) as val, \
            ColumnReader(Z_test.array, None, scratch_dir) as test:
        order = np.arange(m)
        lin, deb, _ = nested_gram_cka(test, order, ks, full_gram=K_test, block=block,
                                      progress=progress)
        out.cka[(sel, seed)] = dict(zip(ks, lin))
        out.cka_debiased[(sel, seed)] = dict(zip(ks, deb))
        probes = []
        if small:
            columns = (r.columns(order[: small[-1]], np.float32) for r in (train, val, test))
            probes += probe_blocks(bank, [FeatureBlock(sel, seed, small, *columns,
                                                       fractions=[frac_of[k] for k in small])],
                                   ytr, yva, y_test, standardize=bool(bank.standardize))
        if large and probes_path == "sample":
            probes += sample_space_probes(
                bank, train, ytr, val, yva, test, y_test, [(sel, seed, order)], large,
                fractions=[frac_of[k] for k in large], block=block, progress=progress)
        elif large:
            probes += _streaming(bank, Z.array, ytr, yva, Z_test.array, y_test,
                                 np.arange(n_tr), np.arange(n_tr, rows.size), sel, seed, order,
                                 large, frac_of, progress)
    return probes


class _Projected:
    """X[rows] projected onto the first m directions of (sel, seed), float32, in memory when it
    takes at most the column reader's in-memory size, else in a scratch file removed on exit."""

    def __init__(self, X: Any, rows: Any, sel: str, seed: int, m: int, scratch_dir: Any):
        n = int(X.shape[0]) if rows is None else len(rows)
        self._path: str | None = None
        if n * m * 4 <= IN_MEMORY_BYTES:
            self.array = np.empty((n, m), dtype=np.float32)
        else:
            fd, self._path = tempfile.mkstemp(prefix="drprobe-projected-", suffix=".npy",
                                              dir=scratch_dir)
            os.close(fd)
            self.array = np.lib.format.open_memmap(self._path, mode="w+", dtype=np.float32,
                                                   shape=(n, m))
        try:
            project(X, sel, seed, m, rows=rows, out=self.array)
        except BaseException:
            self.__exit__()
            raise

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.array = None
        if self._path is not None:
            os.remove(self._path)


def _pca_block(
    sel: str, K: np.ndarray, K_others: list[np.ndarray], ks: list[int], fractions: list[float],
    d: int, K_test: np.ndarray, out: WideOutput,
) -> FeatureBlock:
    """Dual PCA coordinates of one PCA selector from the centred train Gram K and the
    cross-Grams of validation and test; records its CKA values; returns its bank block."""
    pca = dual_pca(K, K_others, ks[-1], least=sel == "pca_least", d=d)
    pks, pfr = clip_to_rank(ks, fractions, pca.rank, d)
    m = pks[-1]
    tr, (va, te) = pca.train[:, :m], [o[:, :m] for o in pca.others]
    te_c = te - te.mean(axis=0)
    out.cka[(sel, 0)], out.cka_debiased[(sel, 0)] = {}, {}
    for k in pks:
        L = te_c[:, :k] @ te_c[:, :k].T
        out.cka[(sel, 0)][k] = cka_from_grams(K_test, L)
        out.cka_debiased[(sel, 0)][k] = cka_from_grams(K_test, L, debiased=True)
    return FeatureBlock(sel, 0, pks, tr, va, te, fractions=pfr)


def _streaming(
    bank: ProbeBank, X_train: Any, ytr: np.ndarray, yva: np.ndarray, X_test: Any,
    y_test: np.ndarray, tr_idx: np.ndarray, va_idx: np.ndarray, sel: str, seed: int,
    order: np.ndarray, ks: list[int], frac_of: dict[int, float], progress: bool,
) -> list[ProbeResult]:
    """The sizes ks of one coordinate family by the streaming solver, scored like the bank."""
    t0 = time.perf_counter()
    sp = StreamingProbes(l2_grid=bank.l2_grid, tol=bank.tol, max_passes=bank.max_steps,
                         dtype=bank.dtype, progress=progress, n_threads=bank.n_threads)
    sp.fit(X_train, ytr, order, ks, rows=tr_idx)
    chosen, val_acc = sp.select(X_train, yva, rows=va_idx)
    logits = sp.decision_function(X_test)
    seconds = (time.perf_counter() - t0) / len(ks)
    n_classes = len(sp.classes_)
    results = []
    for i, k in enumerate(ks):
        z = logits[i, chosen[i]]
        proba = np.exp(z - z.max(axis=1, keepdims=True))
        proba /= proba.sum(axis=1, keepdims=True)
        pred = sp.classes_[proba.argmax(axis=1)]
        results.append(ProbeResult(
            selector=sel, seed=seed, k=k, fraction=frac_of.get(k),
            l2=float(sp.l2_grid_[chosen[i]]), val_acc=float(val_acc[i, chosen[i]]),
            test_acc=float(np.mean(pred == y_test)),
            per_class_acc=per_class_accuracy(np.searchsorted(sp.classes_, y_test),
                                             proba.argmax(axis=1), n_classes),
            n_steps=int(sp.n_passes_), fit_seconds=seconds,
            test_pred=pred if bank.keep_predictions else None,
            test_proba=proba if bank.keep_proba else None,
        ))
    return results
