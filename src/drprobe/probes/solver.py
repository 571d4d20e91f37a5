"""Batched, preconditioned L-BFGS for many multinomial logistic-regression probes of one size.

One *group* is F probes ("members") that share the width p = k + 1 (k features plus a leading
column of ones for the bias), each trained for L values of the L2 strength at once ("slots"). A
slot minimises, over W of shape (p, C),

    f(W) = mean_i CE(softmax(z_i W), y_i) + (lam / 2) * ||W[1:]||_F^2      (bias row 0 unpenalised)

which is scikit-learn's ``LogisticRegression(C=1 / (lam * n))`` objective. Every slot runs its own
L-BFGS (own history, own Armijo step, own stopping test) in preconditioned coordinates v with
W = T v, T = L^{-T}, where L L^T = a * G + lam * D is the Cholesky factor of a curvature bound
built from the Gram matrix G = Z^T Z / n (D = identity without the bias entry). Cholesky factors
and their inverses are nested (the factor of a leading block is the leading block of the factor),
so one factorisation per (basis, lam) preconditions every prefix size, and a solution for size k
padded with zeros in v is exactly the same model at a larger size (warm start along the nesting).

Only the slots still running cost anything: an evaluation multiplies the features by the weights
of the active slots alone, so the data products narrow as slots converge. The products (the data
products on fixed row blocks, the change of coordinates per slot) run as single-threaded BLAS
calls spread over a thread pool (:mod:`drprobe.probes.products`), the factorisation on one thread, so the probes come
out bit-identical whatever the thread count or the machine's load (docs/reliability.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from drprobe.probes.products import RowBlockProducts, TorchProducts, blas_pool

HISTORY = 10  # L-BFGS memory
MAX_LINE_SEARCH = 25
ARMIJO_C1 = 1e-4
LOG_PROB_FLOOR = -60.0  # exp() below this is flushed to exactly e^-60: no denormal slow paths


@dataclass
class GroupProblem:
    """F members of width p, each with L slots (L2 strengths).

    Attributes:
        Z: per member, (n, p) features whose column 0 is all ones (may be strided views).
        y: (n,) int64 class indices in [0, n_classes).
        n_classes: C.
        lams: (F, L) L2 strengths.
        factors: per member, (L, p, p) upper-triangular T = L^{-T}, the inverse transposed
            Cholesky factors of the preconditioner (:func:`preconditioner_factors`); W = T v.
        v0: optional (F, L, p, C) starting point in preconditioned coordinates (default zeros).
        Z_val, y_val: optional validation features (per member (n_val, p)) and labels, used
            only for early stopping on validation accuracy (``patience``).
    """

    Z: list[torch.Tensor]
    y: torch.Tensor
    n_classes: int
    lams: torch.Tensor
    factors: list[torch.Tensor]
    v0: torch.Tensor | None = None
    Z_val: list[torch.Tensor] | None = None
    y_val: torch.Tensor | None = None


@dataclass
class GroupSolution:
    """Result of :func:`solve_group`; all (F, L, ...) tensors on the problem's device.

    Attributes:
        W: (F, L, p, C) weights, row 0 the bias.
        v: (F, L, p, C) the same point in preconditioned coordinates (for warm starts).
        loss: (F, L) objective values.
        grad_max: (F, L) max |gradient| of the objective in W coordinates.
        steps: (F, L) L-BFGS iterations run.
        converged: (F, L) True where grad_max <= tol was reached.
    """

    W: torch.Tensor
    v: torch.Tensor
    loss: torch.Tensor
    grad_max: torch.Tensor
    steps: torch.Tensor
    converged: torch.Tensor


class _Objective:
    """Objective, gradient and the change of coordinates for one group.

    An evaluation covers the members and slots still active: the data products then have fewer
    columns as slots converge. Entries of other slots come back as NaN loss and zero gradients;
    the caller ignores them.
    """

    def __init__(self, prob: GroupProblem, products: RowBlockProducts | TorchProducts) -> None:
        self.prob = prob
        self.products = products
        self.n = int(prob.y.shape[0])
        self.F, self.L = prob.lams.shape
        self.onehot = torch.nn.functional.one_hot(prob.y, prob.n_classes).to(prob.Z[0].dtype)

    def __call__(
        self, v: torch.Tensor, members: list[int], slots: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Loss (F, L), gradient in v (F, L, p, C), gradient in W and W itself, computed for
        the given members and slots (other entries: NaN loss, zeros)."""
        prob, n, products = self.prob, self.n, self.products
        C, p, S, M = prob.n_classes, v.shape[2], len(slots), len(members)
        rows = torch.as_tensor(members, device=v.device)[:, None]
        cols = slots[None, :]
        factors = [prob.factors[i] for i in members]
        Zs = [prob.Z[i] for i in members]
        W = products.change(factors, slots, v[rows, cols], transpose=False)  # (M, S, p, C)
        y, onehot = prob.y, self.onehot

        def residual(logits: torch.Tensor, block: slice) -> tuple[torch.Tensor, torch.Tensor]:
            """Softmax minus one-hot (r, S * C) and the summed cross-entropy (S,) of a block,
            in place on the block's logits."""
            lg = logits.view(-1, S, C)
            lg.sub_(lg.amax(dim=2, keepdim=True))  # gaps to the row's largest logit, <= 0
            picked = lg.gather(2, y[block].view(-1, 1, 1).expand(-1, S, 1))
            # exp of gaps below the floor would be denormal (slow on CPUs); they count as e^-60
            R = lg.clamp_(min=LOG_PROB_FLOOR).exp_()
            total = R.sum(dim=2, keepdim=True)
            ce = (total.log() - picked).squeeze(2).sum(0)
            R.div_(total).sub_(onehot[block].view(-1, 1, C))
            return R.view(-1, S * C), ce

        ce, G = products.forward_backward(Zs, W.permute(0, 2, 1, 3).reshape(M, p, S * C),
                                          residual)  # (M, S), (M, p, S * C)
        gW = G.view(M, p, S, C).permute(0, 2, 1, 3).contiguous().div_(n)
        lams = prob.lams[rows, cols]  # (M, S)
        gW[:, :, 1:] += lams[:, :, None, None] * W[:, :, 1:]
        loss = ce / n + 0.5 * lams * W[:, :, 1:].square().sum((2, 3))
        gv = products.change(factors, slots, gW, transpose=True)

        def full(x: torch.Tensor, fill: float) -> torch.Tensor:
            out = torch.full((self.F, self.L, *x.shape[2:]), fill, dtype=x.dtype,
                             device=x.device)
            out[rows, cols] = x
            return out
        return full(loss, float("nan")), full(gv, 0.0), full(gW, 0.0), full(W, 0.0)


def _dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-slot inner product: (F, L, p, C) x (F, L, p, C) -> (F, L), as one batched product."""
    F, L = a.shape[:2]
    return torch.bmm(a.reshape(F * L, 1, -1), b.reshape(F * L, -1, 1)).view(F, L)


def _direction(
    g: torch.Tensor, hist: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]],
    gamma: torch.Tensor,
) -> torch.Tensor:
    """L-BFGS two-loop recursion, per slot: returns -H g."""
    q = g.clone()
    alphas = []
    for s, y, rho in reversed(hist):
        a = rho * _dot(s, q)
        q.addcmul_(a[:, :, None, None], y, value=-1.0)
        alphas.append(a)
    q *= gamma[:, :, None, None]
    for (s, y, rho), a in zip(hist, reversed(alphas)):
        q.addcmul_((a - rho * _dot(y, q))[:, :, None, None], s)
    return q.neg_()


class _ValidationMonitor:
    """Best-validation-accuracy checkpoints per slot, for early stopping with a patience."""

    def __init__(self, prob: GroupProblem, W: torch.Tensor, v: torch.Tensor) -> None:
        assert prob.Z_val is not None and prob.y_val is not None
        self.Z, self.y, self.C = prob.Z_val, prob.y_val, prob.n_classes
        self.best = torch.full(W.shape[:2], -1, dtype=torch.int64, device=W.device)
        self.since = torch.zeros_like(self.best)
        self.W, self.v = W.clone(), v.clone()

    def update(self, W: torch.Tensor, v: torch.Tensor, members: list[int]) -> torch.Tensor:
        """Record the new iterate; returns (F, L) steps since the last improvement."""
        L, p, C = W.shape[1:]
        correct = torch.full_like(self.best, -1)
        for i in members:
            logits = self.Z[i] @ W[i].permute(1, 0, 2).reshape(p, L * C)
            correct[i] = (logits.view(-1, L, C).argmax(2) == self.y[:, None]).sum(0)
        better = correct > self.best
        self.best = torch.where(better, correct, self.best)
        self.since = torch.where(better, 0, self.since + 1)
        self.W = torch.where(better[:, :, None, None], W, self.W)
        self.v = torch.where(better[:, :, None, None], v, self.v)
        return self.since


def solve_group(
    prob: GroupProblem, max_steps: int, tol: float, patience: int | None = None
) -> GroupSolution:
    """Minimise every slot of ``prob`` until max |grad| <= tol, no progress, or max_steps.

    A slot leaves the active set when it converges or its line search fails (float round-off
    floor); a member whose slots are all inactive no longer costs any matrix product. With
    ``patience`` (and validation data in ``prob``) a slot also stops after ``patience`` steps
    without a gain in validation accuracy, and every slot returns its best-validation iterate.
    """
    with blas_pool(prob.Z[0].device) as products:
        return _minimise(_Objective(prob, products), max_steps, tol, patience)


def _minimise(obj: _Objective, max_steps: int, tol: float, patience: int | None
              ) -> GroupSolution:
    prob, F, L = obj.prob, obj.F, obj.L
    C, p = prob.n_classes, prob.Z[0].shape[1]
    ref = prob.Z[0]
    v = (prob.v0.clone() if prob.v0 is not None
         else torch.zeros(F, L, p, C, dtype=ref.dtype, device=ref.device))
    members = list(range(F))
    loss, gv, gW, W = obj(v, members, torch.arange(L, device=ref.device))
    gmax = gW.abs().amax((2, 3))
    active = gmax > tol
    monitor = _ValidationMonitor(prob, W, v) if patience else None
    if monitor is not None:
        monitor.update(W, v, members)
    steps = torch.zeros(F, L, dtype=torch.int64, device=ref.device)
    gamma = torch.ones(F, L, dtype=ref.dtype, device=ref.device)
    hist: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
    slack = 8 * torch.finfo(ref.dtype).eps
    for _ in range(max_steps):
        act_members = active.any(1).nonzero().flatten().tolist()
        if not act_members:
            break
        act_slots = active.any(0).nonzero().flatten()
        mask = active[:, :, None, None]
        d = _direction(gv, hist, gamma) * mask
        gd = _dot(gv, d)
        uphill = active & (gd >= 0)  # lost positive curvature: fall back to steepest descent
        d = torch.where(uphill[:, :, None, None], -gv, d)
        gd = _dot(gv, d)
        step = torch.ones(F, L, dtype=ref.dtype, device=ref.device)
        for _ls in range(MAX_LINE_SEARCH):
            v_new = v + step[:, :, None, None] * d
            loss_new, gv_new, gW_new, W_new = obj(v_new, act_members, act_slots)
            ok = torch.isfinite(loss_new) & (
                loss_new <= loss + ARMIJO_C1 * step * gd + slack * loss.abs()
            )
            if bool((ok | ~active).all()):
                break
            step = torch.where(ok, step, 0.5 * step)
        take = (ok & active)[:, :, None, None]
        s = torch.where(take, v_new - v, 0.0)
        yv = torch.where(take, gv_new - gv, 0.0)
        v = torch.where(take, v_new, v)
        gv = torch.where(take, gv_new, gv)
        gW = torch.where(take, gW_new, gW)
        W = torch.where(take, W_new, W)
        loss = torch.where(ok & active, loss_new, loss)
        sy, yy = _dot(s, yv), _dot(yv, yv)
        good = sy > 1e-12 * yy.clamp_min(1e-30).sqrt() * _dot(s, s).sqrt()
        good &= sy > 0
        rho = torch.where(good, 1.0 / torch.where(good, sy, 1.0), 0.0)
        gamma = torch.where(good, sy / torch.where(good, yy, 1.0), gamma)
        hist.append((s, yv, rho))
        if len(hist) > HISTORY:
            hist.pop(0)
        steps += active.to(torch.int64)
        gmax = gW.abs().amax((2, 3))
        active = active & ok & (gmax > tol)
        if monitor is not None:
            active &= monitor.update(W, v, act_members) < int(patience or 0)
    if monitor is not None:
        W, v = monitor.W, monitor.v
    return GroupSolution(W=W, v=v, loss=loss, grad_max=gmax, steps=steps, converged=gmax <= tol)


def preconditioner_factors(
    gram: torch.Tensor, lams: torch.Tensor, curvature: float
) -> torch.Tensor:
    """The change of coordinates T = L^{-T} for every lam: (p, p) -> (L, p, p) upper-triangular,
    where L L^T = ``curvature * gram + lam * D`` (Cholesky).

    ``gram`` is the (p, p) second-moment matrix of [1, Z] (bias first); D is the identity with
    D[0, 0] = 0. Factorised in ``gram``'s dtype, one single-threaded LAPACK task (potrf, trtri)
    per lam on the solver's thread pool (one summation order: the same factor on any machine);
    a small ridge is added if round-off makes a matrix indefinite (it only changes the
    preconditioner, not the objective). The leading (q, q) block of T is the same map for the
    leading q coordinates, which is what lets one factorisation serve every prefix size.
    """
    g64 = gram.to(torch.float64)
    p = g64.shape[0]
    eye = torch.ones(p, dtype=torch.float64, device=g64.device)
    eye[0] = 0.0
    M = curvature * g64.expand(len(lams), p, p).clone()
    M.diagonal(dim1=1, dim2=2).add_(lams.to(torch.float64)[:, None] * eye)
    jitter = 1e-10 * float(g64.diagonal().abs().mean().clamp_min(1e-12))
    for _ in range(8):
        with blas_pool(gram.device) as products:
            T = products.inverse_factors(M.to(gram.dtype))
        if T is not None:
            return T
        M.diagonal(dim1=1, dim2=2).add_(jitter)
        jitter *= 100.0
    raise FloatingPointError("preconditioner is not positive definite")
