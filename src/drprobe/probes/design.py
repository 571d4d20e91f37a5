"""The probes' design matrices: rows of a (possibly memory-mapped, float16) feature matrix
mapped through each family's basis into torch tensors on the bank's device, chunk by chunk,
then z-scored with training statistics.

Numpy appears only here, at the boundary. Peak memory: the output tensors, (n, m + 1) per
basis, plus one chunk of about ``CHUNK_BYTES`` of the input.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from drprobe.errors import InvalidValueError
from drprobe.selectors import SubsetFamily, apply_basis

CHUNK_BYTES = 64 * 2**20  # rows of X read per chunk: about this many bytes of float32


class Basis:
    """The first ``m`` columns (default: all) of a family's d -> m map as torch tensors on a
    device; calling it maps (rows, d) -> (rows, m) with :func:`~drprobe.selectors.apply_basis`."""

    def __init__(self, fam: SubsetFamily, device: torch.device, dtype: torch.dtype,
                 m: int | None = None) -> None:
        self.width = fam.width if m is None else int(m)
        self.idx = self.comp = self.mean = None
        if fam.indices is not None:
            idx = np.asarray(fam.indices, dtype=np.int64)[:self.width]
            self.idx = torch.as_tensor(idx, device=device)
        else:
            comp = np.asarray(fam.components)[:, :self.width]
            self.comp = torch.as_tensor(comp, device=device).to(dtype)
            if fam.mean is not None:
                self.mean = torch.as_tensor(np.asarray(fam.mean), device=device).to(dtype)

    def __call__(self, X: torch.Tensor) -> torch.Tensor:
        """(rows, d) -> (rows, m)."""
        return apply_basis(X, self.idx, self.comp, self.mean)


def materialize(
    parts: Sequence[tuple[np.ndarray, str]], bases: Sequence[Basis],
    device: torch.device, dtype: torch.dtype,
) -> list[torch.Tensor]:
    """Stack the row blocks in ``parts`` and map them through every basis.

    Returns per basis an (n_total, m + 1) tensor whose column 0 is ones (the bias column) and
    whose other columns are raw basis coordinates. X is read once, in row chunks; non-finite
    values raise InvalidValueError naming the part.
    """
    n_total = sum(int(X.shape[0]) for X, _ in parts)
    out = [torch.empty(n_total, b.width + 1, dtype=dtype, device=device) for b in bases]
    for Z in out:
        Z[:, 0] = 1.0
    np_dtype = np.float64 if dtype == torch.float64 else np.float32
    row = 0
    for X, name in parts:
        step = max(1, CHUNK_BYTES // (4 * max(1, int(X.shape[1]))))
        for r0 in range(0, int(X.shape[0]), step):
            rows = np.array(X[r0:r0 + step], dtype=np_dtype)  # a private, writable copy
            chunk = torch.from_numpy(rows).to(device)
            if not bool(torch.isfinite(chunk).all()):
                raise InvalidValueError(f"{name} contains NaN or infinite values")
            for Z, basis in zip(out, bases):
                Z[row + r0:row + r0 + chunk.shape[0], 1:] = basis(chunk)
        row += int(X.shape[0])
    return out


NULL_SCALE = 1e-5  # relative std below which a column counts as a null direction


def standardize_(
    Z: torch.Tensor, n_fit: int, enabled: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """z-score columns 1: of Z in place with statistics of its first n_fit rows.

    Returns (mean, scale), each (m,). Constant columns, and columns whose standard deviation is
    below ``NULL_SCALE`` times the largest one in the basis, keep scale 1: such columns are the
    null directions of a rank-deficient basis (e.g. PCA with n_train < d), whose train values are
    rounding noise; z-scoring them would blow that noise up to unit variance and swamp the probe.
    With ``enabled`` False the statistics are 0 and 1 and Z is left as it is.
    """
    m = Z.shape[1] - 1
    if not enabled:
        return (torch.zeros(m, dtype=Z.dtype, device=Z.device),
                torch.ones(m, dtype=Z.dtype, device=Z.device))
    var, mean = torch.var_mean(Z[:n_fit, 1:], dim=0, correction=0)
    scale = var.sqrt()
    floor = torch.maximum(16 * torch.finfo(Z.dtype).eps * mean.abs().clamp_min(1.0),
                          NULL_SCALE * scale.max())
    scale = torch.where(scale > floor, scale, torch.ones_like(scale))
    Z[:, 1:].sub_(mean).div_(scale)
    return mean, scale
