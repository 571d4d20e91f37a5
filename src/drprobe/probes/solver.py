"""Batched, preconditioned L-BFGS for many multinomial logistic-regression probes of one size.

One *group* is F probes ("members") that share the width p = k + 1 (k features plus a leading
column of ones for the bias), each trained for L values of the L2 strength at once ("slots"). A
slot minimises, over W of shape (p, C),

    f(W) = mean_i CE(softmax(z_i W), y_i) + (lam / 2) * ||W[1:]||_F^2      (bias row 0 unpenalised)

which is scikit-learn's ``LogisticRegression(C=1 / (lam * n))`` objective. Every slot runs its own
L-BFGS (own history, own Armijo step, own stopping test) in preconditioned coordinates
v = L^T W, where L L^T = a * G + lam * D is the Cholesky factor of a curvature bound built from
the Gram matrix G = Z^T Z / n (D = identity without the bias entry). Because Cholesky factors are
nested (the factor of a leading block is the leading block of the factor), one factorisation per
(basis, lam) preconditions every prefix size, and a solution for size k padded with zeros in v is
exactly the same model at a larger size (warm start along the nesting).

The Cholesky factorisation and the two triangular solves per evaluation run on one thread: their
multi-threaded kernels round differently per thread count, the rest (products, reductions) does
not, so the probes come out bit-identical on any machine (docs/reliability.md).

All arithmetic is torch on the members' device; the member loop is only around matrix products.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from drprobe.devices import torch_threads

HISTORY = 10  # L-BFGS memory
MAX_LINE_SEARCH = 25
ARMIJO_C1 = 1e-4
LOG_PROB_FLOOR = -60.0  # exp() below this is flushed to exactly e^-60: no denormal slow paths
STACK_BYTES = 64 * 2**20  # members are stacked into batched tensors up to this size


@dataclass
class GroupProblem:
    """F members of width p, each with L slots (L2 strengths).

    Attributes:
        Z: per member, (n, p) features whose column 0 is all ones (may be strided views).
        y: (n,) int64 class indices in [0, n_classes).
        n_classes: C.
        lams: (F, L) L2 strengths.
        chol: per member, (L, p, p) lower-triangular Cholesky factors of the preconditioner.
        v0: optional (F, L, p, C) starting point in preconditioned coordinates (default zeros).
        Z_val, y_val: optional validation features (per member (n_val, p)) and labels, used
            only for early stopping on validation accuracy (``patience``).
    """

    Z: list[torch.Tensor]
    y: torch.Tensor
    n_classes: int
    lams: torch.Tensor
    chol: list[torch.Tensor]
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

    Small groups are stacked into batched tensors (one bmm / one triangular solve per step for
    all members: few, large kernels); large ones loop over members on views of their features.
    """

    def __init__(self, prob: GroupProblem) -> None:
        self.prob = prob
        self.n = int(prob.y.shape[0])
        self.F, self.L = prob.lams.shape
        ref = prob.Z[0]
        F, L, n, p = self.F, self.L, self.n, ref.shape[1]
        self.onehot = torch.nn.functional.one_hot(prob.y, prob.n_classes).to(ref.dtype)
        self.logits = torch.empty(F, n, L * prob.n_classes, dtype=ref.dtype, device=ref.device)
        size = ref.element_size()
        self.Zb = torch.stack(prob.Z) if F * n * p * size <= STACK_BYTES else None
        self.Lb = torch.stack(prob.chol) if F * L * p * p * size <= STACK_BYTES else None

    def _solve(self, v: torch.Tensor, members: list[int], transpose: bool) -> torch.Tensor:
        """L^{-T} v (transpose) or L^{-1} v per member: (F, L, p, C) -> (F, L, p, C), on one
        thread (a multi-threaded triangular solve rounds differently per thread count)."""
        with torch_threads(1):
            if self.Lb is not None:
                A = self.Lb.mT if transpose else self.Lb
                return torch.linalg.solve_triangular(A, v, upper=transpose)
            out = torch.zeros_like(v)
            for i in members:
                A = self.prob.chol[i].mT if transpose else self.prob.chol[i]
                out[i] = torch.linalg.solve_triangular(A, v[i], upper=transpose)
            return out

    def __call__(
        self, v: torch.Tensor, members: list[int]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Loss (F, L), gradient in v (F, L, p, C), gradient in W and W itself."""
        prob, n, F, L = self.prob, self.n, self.F, self.L
        C = prob.n_classes
        p = v.shape[2]
        W = self._solve(v, members, transpose=True)
        Wm = W.permute(0, 2, 1, 3).reshape(F, p, L * C)
        if self.Zb is not None:
            torch.bmm(self.Zb, Wm, out=self.logits)
        else:
            for i in members:
                torch.matmul(prob.Z[i], Wm[i], out=self.logits[i])
        lg = self.logits.view(F, n, L, C)
        top = lg.amax(dim=3, keepdim=True)
        # exp of gaps below the floor would be denormal (slow on CPUs); they count as e^-60
        R = torch.exp((lg - top).clamp_(min=LOG_PROB_FLOOR))  # (F, n, L, C)
        total = R.sum(dim=3, keepdim=True)
        lse = (top + total.log()).squeeze(3)  # (F, n, L)
        picked = lg.gather(3, prob.y.view(1, n, 1, 1).expand(F, n, L, 1)).squeeze(3)
        loss = (lse - picked).mean(dim=1) + 0.5 * prob.lams * W[:, :, 1:].square().sum((2, 3))
        R.div_(total).sub_(self.onehot.view(1, n, 1, C)).div_(n)
        if self.Zb is not None:
            G = torch.bmm(self.Zb.mT, R.view(F, n, L * C))
        else:
            G = torch.zeros(F, p, L * C, dtype=v.dtype, device=v.device)
            for i in members:
                torch.matmul(prob.Z[i].T, R[i].view(n, L * C), out=G[i])
        gW = G.view(F, p, L, C).permute(0, 2, 1, 3).contiguous()
        gW[:, :, 1:] += prob.lams[:, :, None, None] * W[:, :, 1:]
        return loss, self._solve(gW, members, transpose=False), gW, W


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
    obj = _Objective(prob)
    F, L = obj.F, obj.L
    C, p = prob.n_classes, prob.Z[0].shape[1]
    ref = prob.Z[0]
    v = (prob.v0.clone() if prob.v0 is not None
         else torch.zeros(F, L, p, C, dtype=ref.dtype, device=ref.device))
    members = list(range(F))
    loss, gv, gW, W = obj(v, members)
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
        mask = active[:, :, None, None]
        d = _direction(gv, hist, gamma) * mask
        gd = _dot(gv, d)
        uphill = active & (gd >= 0)  # lost positive curvature: fall back to steepest descent
        d = torch.where(uphill[:, :, None, None], -gv, d)
        gd = _dot(gv, d)
        step = torch.ones(F, L, dtype=ref.dtype, device=ref.device)
        for _ls in range(MAX_LINE_SEARCH):
            v_new = v + step[:, :, None, None] * d
            loss_new, gv_new, gW_new, W_new = obj(v_new, act_members)
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
    """Cholesky factors of ``curvature * gram + lam * D`` for every lam: (p, p) -> (L, p, p).

    ``gram`` is the (p, p) second-moment matrix of [1, Z] (bias first); D is the identity with
    D[0, 0] = 0. Computed in float64 and returned in ``gram``'s original dtype; a small ridge is
    added if round-off makes a matrix indefinite (it only changes the preconditioner, not the
    objective).
    """
    g64 = gram.to(torch.float64)
    p = g64.shape[0]
    eye = torch.ones(p, dtype=torch.float64, device=g64.device)
    eye[0] = 0.0
    M = curvature * g64.expand(len(lams), p, p).clone()
    M.diagonal(dim1=1, dim2=2).add_(lams.to(torch.float64)[:, None] * eye)
    jitter = 1e-10 * float(g64.diagonal().abs().mean().clamp_min(1e-12))
    for _ in range(8):
        with torch_threads(1):  # one summation order: the same factor on any machine
            fac, info = torch.linalg.cholesky_ex(M)
        if not bool((info != 0).any()):
            return fac.to(gram.dtype)
        M.diagonal(dim1=1, dim2=2).add_(jitter)
        jitter *= 100.0
    raise FloatingPointError("preconditioner is not positive definite")
