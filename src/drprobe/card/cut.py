"""The exported cut: keep k of an embedding's d_in coordinates (or k principal directions), then
re-normalise; saved as one small ``.npz`` and applied to new vectors or wrapped round a model.

Order matters: the cut truncates (or projects) first and re-normalises the k-vector after.
Normalising the full d_in-vector and truncating after leaves vectors of norm below 1 that vary
from row to row (the dropped coordinates carried some of each row's norm), so an inner-product
index or dot-product scores that assume unit vectors would rank by a mix of angle and that
leftover norm. sentence-transformers' ``truncate_dim`` truncates the model's output and its
``normalize_embeddings=True`` normalises after that (the cut's order); but a model whose last
module normalises (all-MiniLM-L6-v2 ends in ``Normalize``) hands back unit d_in-vectors, so its
``truncate_dim`` output alone is normalised-then-truncated, with norms well below 1.

File format (``Cut.save``): an ``.npz`` read with ``allow_pickle=False`` holding ``meta`` (a
one-element string array: JSON with format, strategy, d_in, k, model, data_fingerprint, seed,
normalize, drprobe_version, created_by = "drprobe card") and either ``indices`` (k,) int64 or
``components`` (d_in, k) float64 with an optional ``mean`` (d_in,) float64.
"""

from __future__ import annotations

import json
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from drprobe import __version__
from drprobe.card.search import normalize as normalize_rows
from drprobe.card.strategies import check_strategies, selector_of
from drprobe.errors import InvalidValueError, MissingDataError
from drprobe.files import atomic_path
from drprobe.selectors import SubsetFamily, is_seeded, selector_class

__all__ = ["CREATED_BY", "FORMAT", "Cut", "CutEncoder", "apply_cut", "cut_from_family"]

CREATED_BY = "drprobe card"
FORMAT = 1
#: Bytes of input rows a transform reads per block (float64 for projections).
_BLOCK_BYTES = 16 * 2**20
_META_FIELDS = ("format", "strategy", "d_in", "k", "model", "data_fingerprint", "seed",
                "normalize", "drprobe_version", "created_by")


def _is_int(x: Any) -> bool:
    return isinstance(x, (int, np.integer)) and not isinstance(x, (bool, np.bool_))


@dataclass(eq=False)
class Cut:
    """A fitted truncation: (n, d_in) vectors -> (n, k) vectors.

    Exactly one of ``indices`` (k,) int (keep ``X[:, indices]``: first-k, random-k, ranked-k)
    and ``components`` (d_in, k) float with ``mean`` (d_in,) or None (``(X - mean) @
    components``: pca-k) is set. ``normalize``: re-normalise each k-vector to unit length
    after cutting. ``seed``: the seed of a seeded strategy (random-k), else None. The
    constructor checks every field (one-line :class:`InvalidValueError`).
    """

    strategy: str
    d_in: int
    k: int
    indices: np.ndarray | None
    components: np.ndarray | None
    mean: np.ndarray | None
    model: str
    data_fingerprint: str
    seed: int | None = None
    normalize: bool = True

    def __post_init__(self) -> None:
        check_strategies([self.strategy])
        if not (_is_int(self.d_in) and _is_int(self.k) and 1 <= self.k <= self.d_in):
            raise InvalidValueError(f"a cut needs integers 1 <= k <= d_in; got k={self.k!r}, "
                                    f"d_in={self.d_in!r}")
        self.d_in, self.k = int(self.d_in), int(self.k)
        if not isinstance(self.model, str) or not isinstance(self.data_fingerprint, str):
            raise InvalidValueError("a cut's model and data_fingerprint must be strings")
        if self.seed is not None and not _is_int(self.seed):
            raise InvalidValueError(f"a cut's seed must be an integer or None; got {self.seed!r}")
        if not isinstance(self.normalize, (bool, np.bool_)):
            raise InvalidValueError(f"a cut's normalize must be true or false; got "
                                    f"{self.normalize!r}")
        self.normalize = bool(self.normalize)
        coordinate = selector_class(selector_of(self.strategy)).yields == "coordinate"
        if coordinate:
            self._check_indices()
        else:
            self._check_components()

    def _check_indices(self) -> None:
        if self.indices is None or self.components is not None or self.mean is not None:
            raise InvalidValueError(f"a {self.strategy} cut keeps coordinates: it needs indices "
                                    "and no components or mean")
        idx = np.asarray(self.indices)
        if (idx.shape != (self.k,) or not np.issubdtype(idx.dtype, np.integer)
                or idx.min() < 0 or idx.max() >= self.d_in or np.unique(idx).size != self.k):
            raise InvalidValueError(f"a cut's indices must be {self.k} distinct integers in "
                                    f"[0, {self.d_in - 1}]; got shape {idx.shape}")
        self.indices = idx.astype(np.int64)

    def _check_components(self) -> None:
        if self.components is None or self.indices is not None:
            raise InvalidValueError(f"a {self.strategy} cut projects: it needs components and "
                                    "no indices")
        comp = np.asarray(self.components, dtype=np.float64)
        if comp.shape != (self.d_in, self.k) or not np.all(np.isfinite(comp)):
            raise InvalidValueError(f"a cut's components must be finite ({self.d_in}, {self.k}); "
                                    f"got shape {comp.shape}")
        self.components = comp
        if self.mean is not None:
            mean = np.asarray(self.mean, dtype=np.float64)
            if mean.shape != (self.d_in,) or not np.all(np.isfinite(mean)):
                raise InvalidValueError(f"a cut's mean must be finite ({self.d_in},); got shape "
                                        f"{mean.shape}")
            self.mean = mean

    def transform(self, X: Any) -> np.ndarray:
        """Cut vectors: X (n, d_in) or (d_in,) (array, memmap, CPU tensor) -> float32 (n, k) or
        (k,): truncate (or centre and project), THEN scale each row to unit norm when
        ``normalize`` (zero rows stay zero).

        Rows go through in blocks of about 16 MiB, so peak memory grows as O(block·d_in + n·k)
        whatever n is (a memmap is read block by block).

        Raises:
            InvalidValueError: vectors of another width ("cut expects d_in=384 vectors, got
                768").
        """
        x = X if hasattr(X, "shape") and hasattr(X, "ndim") else np.asarray(X)
        single = x.ndim == 1
        if single:
            x = x[None, :]
        if x.ndim != 2:
            raise InvalidValueError(f"cut expects (n, {self.d_in}) or ({self.d_in},) vectors, "
                                    f"got shape {tuple(x.shape)}")
        if x.shape[1] != self.d_in:
            raise InvalidValueError(f"cut expects d_in={self.d_in} vectors, got {x.shape[1]}")
        n = x.shape[0]
        out = np.empty((n, self.k), dtype=np.float32)
        block = max(1, _BLOCK_BYTES // (8 * self.d_in))
        for s in range(0, n, block):
            xb = np.asarray(x[s:s + block])
            if self.indices is not None:
                yb = xb[:, self.indices]
            else:
                xb = xb.astype(np.float64)
                yb = (xb if self.mean is None else xb - self.mean) @ self.components
            out[s:s + block] = normalize_rows(yb) if self.normalize else yb
        return out[0] if single else out

    def meta(self) -> dict[str, Any]:
        """The cut's description as stored in its file (see the module docstring)."""
        return {
            "format": FORMAT, "strategy": self.strategy, "d_in": self.d_in, "k": self.k,
            "model": self.model, "data_fingerprint": self.data_fingerprint, "seed": self.seed,
            "normalize": self.normalize, "drprobe_version": __version__,
            "created_by": CREATED_BY,
        }

    def save(self, path: str | os.PathLike) -> Path:
        """Write the cut to ``path`` (an ``.npz``, written as named) whole or not at all;
        returns the path. Size: O(k) for coordinates, O(d_in·k) for a projection."""
        path = Path(path)
        arrays: dict[str, np.ndarray] = {"meta": np.array([json.dumps(self.meta())])}
        if self.indices is not None:
            arrays["indices"] = self.indices
        else:
            arrays["components"] = self.components
            if self.mean is not None:
                arrays["mean"] = self.mean
        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            np.savez(fh, **arrays)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> Cut:
        """Read a cut written by :meth:`save`, checking every field.

        Raises:
            MissingDataError: no such file.
            InvalidValueError: not a cut file, a missing or malformed field, an unknown
                strategy (with the valid choices) or format.
        """
        path = Path(path)
        bad = f"{path} is not a drprobe cut file"
        try:
            with np.load(path, allow_pickle=False) as z:
                arrays = {name: z[name] for name in z.files}
        except FileNotFoundError:
            raise MissingDataError(f"no cut file at {path}") from None
        except (OSError, ValueError, zipfile.BadZipFile, EOFError) as err:
            raise InvalidValueError(f"{bad} ({type(err).__name__})") from None
        if "meta" not in arrays:
            raise InvalidValueError(f"{bad} (no meta)")
        meta_arr = arrays["meta"]
        try:
            meta = json.loads(str(meta_arr.reshape(-1)[0]))
        except (ValueError, IndexError):
            raise InvalidValueError(f"{bad} (meta is not JSON)") from None
        if not isinstance(meta, dict):
            raise InvalidValueError(f"{bad} (meta is not a JSON object)")
        missing = [f for f in _META_FIELDS if f not in meta]
        if missing:
            raise InvalidValueError(f"{bad} (missing fields: {', '.join(missing)})")
        if meta["created_by"] != CREATED_BY or meta["format"] != FORMAT:
            raise InvalidValueError(f"{bad} (created by {meta['created_by']!r}, format "
                                    f"{meta['format']!r}; this drprobe reads format {FORMAT})")
        try:
            return cls(strategy=meta["strategy"], d_in=meta["d_in"], k=meta["k"],
                       indices=arrays.get("indices"), components=arrays.get("components"),
                       mean=arrays.get("mean"), model=meta["model"],
                       data_fingerprint=meta["data_fingerprint"], seed=meta["seed"],
                       normalize=meta["normalize"])
        except InvalidValueError as err:
            raise InvalidValueError(f"{path}: {err}") from None


def cut_from_family(family: SubsetFamily, k: int, strategy: str, model: str, fingerprint: str,
                    *, d_in: int | None = None) -> Cut:
    """The size-k map of a fitted family as a :class:`Cut` (normalize=True).

    ``indices[:k]`` for coordinate families, ``components[:, :k]`` and ``mean`` for PCA.
    ``d_in``: the embedding width. A projection family knows it (its components' rows); a
    coordinate family only knows its width m, which is d only when it was fitted up to k = d,
    so pass ``d_in`` whenever the family's largest size is below d.

    Raises:
        InvalidValueError: the family is not the strategy's selector, k outside [1, m],
            d_in inconsistent with the family.
    """
    check_strategies([strategy])
    if family.selector != selector_of(strategy):
        raise InvalidValueError(f"strategy {strategy} runs on selector {selector_of(strategy)!r}"
                                f"; the family is {family.selector!r}")
    if not _is_int(k) or not 1 <= k <= family.width:
        raise InvalidValueError(f"k must be an integer in [1, {family.width}]; got {k!r}")
    seed = int(family.seed) if is_seeded(family.selector, with_validation=False) else None
    common: dict[str, Any] = {"strategy": strategy, "k": int(k), "model": model,
                              "data_fingerprint": fingerprint, "seed": seed}
    if family.indices is not None:
        width = family.width if d_in is None else d_in
        return Cut(d_in=width, indices=np.array(family.indices[:k]), components=None, mean=None,
                   **common)
    assert family.components is not None
    d = int(family.components.shape[0])
    if d_in is not None and d_in != d:
        raise InvalidValueError(f"d_in={d_in} but the family's components have {d} rows")
    mean = None if family.mean is None else np.array(family.mean)
    return Cut(d_in=d, indices=None, components=np.array(family.components[:, :k]), mean=mean,
               **common)


def apply_cut(vectors: Any, cut: Cut | str | os.PathLike) -> np.ndarray:
    """Apply a cut (or the cut saved at a path) to vectors (n, d_in) or (d_in,) -> float32
    (n, k) or (k,); see :meth:`Cut.transform` (memory O(block·d_in + n·k))."""
    if not isinstance(cut, Cut):
        cut = Cut.load(cut)
    return cut.transform(vectors)


def _to_numpy(out: Any) -> np.ndarray:
    if hasattr(out, "detach"):
        return out.detach().cpu().float().numpy()
    if isinstance(out, (list, tuple)) and out and hasattr(out[0], "detach"):
        return np.stack([_to_numpy(t) for t in out])
    return np.asarray(out)


class CutEncoder:
    """A sentence-transformers-like model whose ``encode`` returns cut vectors.

    ``model``: any object with ``encode(sentences, **kwargs)`` returning (n, d_in) or (d_in,)
    vectors (numpy or torch); ``cut``: a :class:`Cut` or the path of a saved one. ``encode``
    asks the model for raw vectors (``normalize_embeddings=False``), passes every other keyword
    through, and returns ``apply_cut(raw, cut)`` as numpy float32 (n, k) or (k,). Keywords that
    it cannot honour are refused on one line: ``truncate_dim`` (the cut decides the width),
    ``output_value`` other than ``"sentence_embedding"``, ``precision`` other than
    ``"float32"``, and a ``normalize_embeddings`` that contradicts the cut's ``normalize``.
    Memory: the model's raw output plus O(n·k).
    """

    def __init__(self, model: Any, cut: Cut | str | os.PathLike) -> None:
        self.model = model
        self.cut = cut if isinstance(cut, Cut) else Cut.load(cut)
        dim = getattr(model, "get_embedding_dimension", None)
        dim = dim if callable(dim) else getattr(model, "get_sentence_embedding_dimension", None)
        width = dim() if callable(dim) else None
        if width is not None and width != self.cut.d_in:
            raise InvalidValueError(f"cut expects d_in={self.cut.d_in} vectors, got {width} "
                                    "from this model")

    def get_embedding_dimension(self) -> int:
        """k, the width of the vectors ``encode`` returns."""
        return self.cut.k

    def get_sentence_embedding_dimension(self) -> int:
        """k (the older sentence-transformers name of :meth:`get_embedding_dimension`)."""
        return self.cut.k

    def encode(self, sentences: Any, **kwargs: Any) -> np.ndarray:
        """Encode with the wrapped model, then cut (see the class docstring)."""
        if kwargs.get("truncate_dim") is not None:
            raise InvalidValueError(f"truncate_dim cannot be combined with a cut; this cut "
                                    f"already gives {self.cut.k} dimensions")
        if kwargs.get("output_value", "sentence_embedding") not in (None, "sentence_embedding"):
            raise InvalidValueError(f"output_value={kwargs['output_value']!r} cannot be cut; "
                                    "valid choices: sentence_embedding")
        if kwargs.get("precision", "float32") != "float32":
            raise InvalidValueError(f"precision={kwargs['precision']!r} cannot be cut (quantise "
                                    "after the cut); valid choices: float32")
        wanted = kwargs.pop("normalize_embeddings", None)
        if wanted is not None and bool(wanted) != self.cut.normalize:
            raise InvalidValueError(f"normalize_embeddings={wanted} contradicts the cut "
                                    f"(normalize={self.cut.normalize}); leave it out")
        raw = self.model.encode(sentences, normalize_embeddings=False, **kwargs)
        return apply_cut(_to_numpy(raw), self.cut)
