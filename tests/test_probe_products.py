"""The probe solver's row-block products against direct float64 formulas, and the same bits
whatever the number of worker threads."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from drprobe.probes.products import RowBlockProducts, TorchProducts, blas_pool, block_rows


def residual(logits: torch.Tensor, rows: slice) -> tuple[torch.Tensor, torch.Tensor]:
    """A non-linear per-row map and a per-column sum, like the solver's softmax residual."""
    shift = torch.arange(rows.start, rows.start + logits.shape[0], dtype=logits.dtype)
    R = torch.tanh(logits) + 1e-3 * shift[:, None]
    return R, logits.square().sum(0)


@pytest.fixture(scope="module")
def problem():
    rng = np.random.default_rng(0)
    n, d, p, m = 5000, 700, 650, 7
    full = rng.normal(size=(n, d)).astype(np.float32)
    Z = [torch.from_numpy(full)[:, :p], torch.from_numpy(full[:, ::-1].copy())[:, :p]]
    W = torch.from_numpy(rng.normal(size=(2, p, m)).astype(np.float32) / 20)
    T = [torch.from_numpy(np.triu(rng.normal(size=(3, p, p))).astype(np.float32))
         for _ in range(2)]
    x = torch.from_numpy(rng.normal(size=(2, 2, p, m)).astype(np.float32))
    return Z, W, T, x


def direct(Z, W):
    loss, G = [], []
    for z, w in zip(Z, W):
        z64 = z.numpy().astype(np.float64)
        lg = z64 @ w.numpy().astype(np.float64)
        R = np.tanh(lg) + 1e-3 * np.arange(len(lg))[:, None]
        loss.append((lg**2).sum(0))
        G.append(z64.T @ R)
    return np.stack(loss), np.stack(G)


def test_the_problem_spans_several_row_blocks(problem):
    Z = problem[0]
    assert Z[0].shape[0] > 2 * block_rows(Z[0].shape[1])


@pytest.mark.parametrize("make", [lambda: RowBlockProducts(2), TorchProducts])
def test_forward_backward_and_change_equal_direct_formulas(problem, make):
    Z, W, T, x = problem
    products = make()
    loss, G = products.forward_backward(Z, W, residual)
    ref_loss, ref_G = direct(Z, W)
    np.testing.assert_allclose(loss.numpy(), ref_loss, rtol=2e-4)
    np.testing.assert_allclose(G.numpy(), ref_G, rtol=2e-3, atol=2e-3 * np.abs(ref_G).max())
    slots = torch.tensor([2, 0])
    for transpose in (False, True):
        out = products.change(T, slots, x, transpose=transpose).numpy()
        for i in range(2):
            for j, s in enumerate(slots.tolist()):
                A = T[i][s].numpy().astype(np.float64)
                ref = (A.T if transpose else A) @ x[i, j].numpy().astype(np.float64)
                np.testing.assert_allclose(out[i, j], ref, rtol=1e-3,
                                           atol=1e-4 * np.abs(ref).max())


def test_results_have_the_same_bits_for_any_worker_count(problem):
    Z, W, T, x = problem
    runs = []
    for workers in (1, 2, 3):
        with blas_pool(torch.device("cpu")) as _:
            products = RowBlockProducts(workers)
            loss, G = products.forward_backward(Z, W, residual)
            changed = products.change(T, torch.tensor([1, 2]), x, transpose=True)
        runs.append((loss.numpy().tobytes(), G.numpy().tobytes(), changed.numpy().tobytes()))
    assert runs[0] == runs[1] == runs[2]


def test_inverse_factors_equal_torch_and_invert_the_cholesky_factor():
    rng = np.random.default_rng(3)
    A = rng.normal(size=(3, 40, 60))
    M = torch.from_numpy(A @ A.transpose(0, 2, 1) / 60 + 0.1 * np.eye(40))
    got = RowBlockProducts(2).inverse_factors(M)
    ref = TorchProducts().inverse_factors(M)
    for T, Tr, m in zip(got.numpy(), ref.numpy(), M.numpy()):
        np.testing.assert_allclose(T, Tr, rtol=1e-10, atol=1e-12)
        assert np.allclose(T, np.triu(T))
        np.testing.assert_allclose(T.T @ m @ T, np.eye(40), atol=1e-10)  # T = L^{-T}
    singular = M.clone()
    singular[1] = 0.0
    assert RowBlockProducts(2).inverse_factors(singular) is None
    assert TorchProducts().inverse_factors(singular) is None
