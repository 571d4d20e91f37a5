"""One wide layer end to end in sample space (or streaming): every probe and every CKA value.

:func:`analyze_wide` is what :func:`drprobe.analysis.layer.analyze_layer` runs when the
memory plan puts a layer's probes in sample space or on the streaming path. Per split it makes a
neuron-major scratch copy (:class:`~drprobe.wide.columns.ColumnReader`), then

- CKA: the centred test Gram K once, then one pass per coordinate family along its neuron order
  (:func:`~drprobe.wide.gram.nested_gram_cka` with ``full_gram=K``); PCA families from the
  Grams of their test coordinates;
- PCA selectors: dual PCA from the centred train Gram, sizes clipped to the non-null rank
  (:func:`~drprobe.wide.dual_pca.clip_to_rank`);
- probes: sizes k ≤ ``feature_limit`` (and every PCA size) are trained by the bank on the
  materialised columns, all families in one call; larger sizes either from their Grams (Φ,
  "sample", the families' passes in lockstep) or by :class:`~drprobe.wide.streaming.StreamingProbes`;
- the route of each selector is its declaration (:mod:`drprobe.selectors.base`), never its
  name: a coordinate selector gives its whole neuron order from
  ``order_from_columns`` (from the width and seed alone, e.g. ``random`` / ``prefix``, or from
  one blocked pass over the train columns, e.g. ``variance``); a PCA selector runs as dual PCA
  with its ``least``; a projection (``randproj_uniform`` / ``randproj_gauss``) projects every
  split's rows onto the seed's first max(k) directions of its ``draws`` — in sample space where
  :func:`~drprobe.wide.memory.projection_path` says so (the Gaussian kind: one factor F of the
  Gram of all N projected rows, shared by every seed, then F·A, N·r·max(k) multiply-adds, equal
  in law to the feature-space draw but not seed by seed), else block by block in feature space
  (N·d·max(k), never a d×d matrix) — then CKA and probes as for a coordinate family in the
  projection's order. A selector that declares a ``wide_refusal`` is refused.

Peak memory: the plan's stage peaks (:mod:`drprobe.wide.memory`) plus the materialised small
sizes, (n_train + n_val + n_test)·Σ_families min(k_max, feature_limit) float32.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Self

import numpy as np

from drprobe.errors import InvalidValueError
from drprobe.features.views import RowView
from drprobe.probes import ProbeBank, ProbeResult
from drprobe.selectors import SubsetFamily, is_seeded, selector_class, wide_refusal, wide_selectors
from drprobe.selectors.pca import clip_to_rank
from drprobe.wide.columns import IN_MEMORY_BYTES, ColumnReader
from drprobe.wide.dual_pca import dual_pca
from drprobe.wide.dual_probe import FeatureBlock, probe_blocks, sample_space_probes
from drprobe.wide.gram import DEFAULT_BLOCK, cka_from_grams, nested_cross_grams, nested_gram_cka
from drprobe.wide.memory import probe_families, projection_path, streaming_bank_limit
from drprobe.wide.projections import project, project_sample_space, row_factor
from drprobe.wide.streaming import StreamingProbes


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


def materialised_dtype(X: Any) -> np.dtype:
    """The dtype of materialised feature columns: the features' own, at least float32 (exact)."""
    return np.result_type(X.dtype, np.float32)


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
    """Refuse, on one line, the first selector whose declaration has no sample-space path."""
    for s in selectors:
        reason = wide_refusal(s)
        if reason is not None:
            raise InvalidValueError(
                f"selector {s!r} has no sample-space path: {reason} (layer d={d} > n_train={n} "
                f"or over the memory budget); valid choices here: {', '.join(wide_selectors())}"
            )


def _family_seeds(selector: str, seeds: Sequence[int]) -> list[tuple[int, int]]:
    """(recorded seed, drawing seed) of each family of ``selector``: one per seed when it is
    seeded; else one, recorded as 0 as :func:`~drprobe.selectors.make_family` records it and
    drawn with the first seed as :func:`~drprobe.analysis.layer.analyze_layer` fits it."""
    if is_seeded(selector):
        return [(int(x), int(x)) for x in seeds]
    return [(0, int(seeds[0]) if len(seeds) else 0)]


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
    cls = {s: selector_class(s) for s in selectors}
    families = [(s, seed, drawn) for s in selectors for seed, drawn in _family_seeds(s, seeds)]
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
        # each coordinate family's whole neuron order, from its class (reads the train columns
        # block by block only when its order depends on them)
        coords = [(s, seed, np.asarray(cls[s].order_from_columns(d, train.blocks(block), ytr,
                                                                 drawn)))
                  for s, seed, drawn in families if cls[s].yields == "coordinate"]
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
        pcas = [s for s in selectors if cls[s].yields == "pca"]
        if pcas:  # one centred train Gram (and cross-Grams) serves both PCA selectors
            (_, K, Ko), = nested_cross_grams(train, [val, test], np.arange(d), [d],
                                             standardize=False, block=block, progress=progress)
            blocks += [_pca_block(sel, cls[sel].least, K, Ko, ks, fractions, d, K_test, out)
                       for sel in pcas]
            del K, Ko
        out.seconds["pca"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        if blocks:
            out.probes += probe_blocks(bank, blocks, ytr, yva, y_test)
        del blocks
        out.seconds["probes_feature"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        if large and coords and probes_path == "sample":
            out.probes += sample_space_probes(
                bank, train, ytr, val, yva, test, y_test, coords, large,
                fractions=[frac_of[k] for k in large], block=block, progress=progress)
        elif large and coords:
            out.probes += _streaming(bank, RowView(X_train, tr_idx, None), ytr,
                                     RowView(X_train, va_idx, None), yva, X_test, y_test, coords,
                                     large, frac_of, progress)
        out.seconds[f"probes_{probes_path}"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        projections = [(sel, seed) for sel, seed, _ in families
                       if cls[sel].yields == "projection"]
        n_all, m = n_rows + len(y_test), ks[-1]
        factor = None  # the rows' Gram factor, once for every sample-space projection
        for sel, seed in projections:
            if projection_path(cls[sel].draws, n_all, d, m, budget_bytes, block) == "sample":
                if factor is None:
                    factor = row_factor([train, val, test], block=block)
                fill = _sample_fill(factor, seed, d, m)
            else:
                fill = _feature_fill(X_train, np.concatenate([tr_idx, va_idx]), X_test,
                                     cls[sel].draws, seed, m)
            out.probes += _projection_family(
                bank, sel, seed, fill, (len(tr_idx), len(va_idx), len(y_test)), ytr, yva,
                y_test, ks, small, large, frac_of, K_test, probes_path, block, scratch_dir,
                progress, out)
        del factor
        out.seconds["projections"] = time.perf_counter() - t0
    return out


def _feature_fill(X_train: Any, rows: np.ndarray, X_test: Any, kind: str, seed: int,
                  m: int) -> Callable[[Any], None]:
    """Fill (N, m) with X_train[rows] then X_test projected by P[:, :m] of (kind, seed)."""
    def fill(out: Any) -> None:
        project(X_train, kind, seed, m, rows=rows, out=out[: rows.size])
        project(X_test, kind, seed, m, out=out[rows.size:])
    return fill


def _sample_fill(factor: np.ndarray, seed: int, d: int, m: int) -> Callable[[Any], None]:
    """Fill (N, m) with the rows of ``factor`` projected in sample space (the Gaussian kind)."""
    def fill(out: Any) -> None:
        project_sample_space(factor, seed, d, m, out=out)
    return fill


def _projection_family(
    bank: ProbeBank, sel: str, seed: int, fill: Callable[[Any], None],
    n_split: tuple[int, int, int], ytr: np.ndarray, yva: np.ndarray, y_test: np.ndarray,
    ks: list[int], small: list[int], large: list[int], frac_of: dict[int, float],
    K_test: np.ndarray, probes_path: str, block: int, scratch_dir: Any, progress: bool,
    out: WideOutput,
) -> list[ProbeResult]:
    """One random-projection family (selector ``sel``): the train, validation and test rows
    (``n_split``) projected onto its first max(ks) directions by ``fill`` (feature or sample
    space), then CKA and probes exactly as for a coordinate family whose neuron order is the
    projection's column order. Records its CKA values in ``out``; returns its probes.

    Memory: the projected rows, (n_train + n_val + n_test)·max(ks) float32, held in memory up
    to the column reader's in-memory size and otherwise in a scratch file, plus what ``fill``
    takes (one block of P, or of the sample-space draw).
    """
    m = ks[-1]
    n_tr, n_va, n_te = n_split
    a, b = n_tr, n_tr + n_va
    with _Projected(b + n_te, m, fill, scratch_dir) as Z, \
            ColumnReader(Z.array, np.arange(a), scratch_dir) as train, \
            ColumnReader(Z.array, np.arange(a, b), scratch_dir) as val, \
            ColumnReader(Z.array, np.arange(b, b + n_te), scratch_dir) as test:
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
                                   ytr, yva, y_test)
        if large and probes_path == "sample":
            probes += sample_space_probes(
                bank, train, ytr, val, yva, test, y_test, [(sel, seed, order)], large,
                fractions=[frac_of[k] for k in large], block=block, progress=progress)
        elif large:
            probes += _streaming(bank, Z.array[:a], ytr, Z.array[a:b], yva, Z.array[b:],
                                 y_test, [(sel, seed, order)], large, frac_of, progress)
    return probes


class _Projected:
    """An (n, m) float32 array filled by ``fill``, in memory when it takes at most the column
    reader's in-memory size, else in a scratch file removed on exit."""

    def __init__(self, n: int, m: int, fill: Callable[[Any], None], scratch_dir: Any):
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
            fill(self.array)
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
    sel: str, least: bool, K: np.ndarray, K_others: list[np.ndarray], ks: list[int],
    fractions: list[float], d: int, K_test: np.ndarray, out: WideOutput,
) -> FeatureBlock:
    """Dual PCA coordinates of one PCA selector (``least``: its declaration) from the centred
    train Gram K and the cross-Grams of validation and test; records its CKA values; returns
    its bank block."""
    pca = dual_pca(K, K_others, ks[-1], least=least, d=d)
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
    bank: ProbeBank, X_train: Any, ytr: np.ndarray, X_val: Any, yva: np.ndarray, X_test: Any,
    y_test: np.ndarray, coords: Sequence[tuple[str, int, np.ndarray]], ks: list[int],
    frac_of: dict[int, float], progress: bool,
) -> list[ProbeResult]:
    """The sizes ks of the coordinate families ``coords`` ((selector, seed, neuron order) each)
    by the bank's streaming twin (:meth:`StreamingProbes.from_bank`), one family after another;
    X_* are (n_*, d) matrices read by row slices."""
    families = [SubsetFamily(sel, seed, ks, indices=order, fractions=[frac_of[k] for k in ks])
                for sel, seed, order in coords]
    sp = StreamingProbes.from_bank(bank, progress=progress)
    return sp.fit(X_train, ytr, X_val, yva, families).evaluate(X_test, y_test)
