"""Random projection matrices drawn in column blocks from the seed, never as a dense d×d.

Column j of a seed's d×d projection is the j-th run of d draws of ``default_rng(seed)`` (uniform
[0, 1) for ``randproj_uniform``, standard normal for ``randproj_gauss``), scaled to unit norm.
Drawing the same stream b columns at a time gives the same numbers, so a block of columns
[lo, hi) is exact whatever the block size, and the first k columns are nested across k. For the
uniform kind (one 64-bit draw per value) a block can start anywhere by jumping the generator
ahead (``bit_generator.advance``); the Gaussian kind consumes a variable number of draws per
value and is walked from column 0.

Peak memory: one block of d·b float64.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from drprobe.errors import InvalidValueError

KINDS = ("randproj_uniform", "randproj_gauss")


def _check(kind: str, d: int, lo: int, hi: int) -> None:
    if kind not in KINDS:
        raise InvalidValueError(f"unknown projection kind {kind!r}; valid choices: "
                                f"{', '.join(KINDS)}")
    if not (0 <= lo < hi <= d):
        raise InvalidValueError(f"projection columns [{lo}, {hi}) must lie in [0, {d}]")


def _draw(rng: np.random.Generator, kind: str, b: int, d: int) -> np.ndarray:
    """b unit-norm columns (d, b) from the generator's next b·d draws."""
    W = (rng.random((b, d)) if kind == "randproj_uniform" else rng.standard_normal((b, d))).T
    return W / np.linalg.norm(W, axis=0)


def _walked(seed: Any, d: int, lo: int, chunk: int = 256) -> np.random.Generator:
    """A Gaussian generator advanced past the first ``lo`` columns (lo·d normal draws)."""
    rng = np.random.default_rng(seed)
    for start in range(0, lo, chunk):
        rng.standard_normal((min(chunk, lo - start), d))
    return rng


def projection_columns(kind: str, seed: Any, d: int, lo: int, hi: int) -> np.ndarray:
    """Columns [lo, hi) (d, hi − lo) of the seed's d×d projection matrix, exactly."""
    _check(kind, d, lo, hi)
    if kind == "randproj_uniform":
        rng = np.random.default_rng(seed)
        rng.bit_generator.advance(lo * d)  # one 64-bit draw per uniform value
    else:
        rng = _walked(seed, d, lo)
    return _draw(rng, kind, hi - lo, d)


def iter_projection_blocks(
    kind: str, seed: Any, d: int, m: int, block: int = 256
) -> Iterator[tuple[int, int, np.ndarray]]:
    """(lo, hi, P[:, lo:hi]) for consecutive blocks of the first m columns."""
    if m == 0:
        return
    _check(kind, d, 0, m)
    if block < 1:
        raise InvalidValueError(f"block must be >= 1; got {block}")
    rng = np.random.default_rng(seed)
    for lo in range(0, m, block):
        hi = min(lo + block, m)
        yield lo, hi, _draw(rng, kind, hi - lo, d)
