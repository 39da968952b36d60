"""Elastic net subspace clustering (EnSC; You, Li, Robinson & Vidal, CVPR 2016), solved exactly at scale.

For every point ``y = x_i`` and the dictionary of all *other* points (row convention: row i of C codes x_i)::

    min_c  0.5 * ||y - sum_{j != i} c_j x_j||^2 + alpha * (tau * ||c||_1 + (1 - tau) / 2 * ||c||^2)

with ``alpha = alpha0 / gamma``, ``alpha0 = max_{j != i} |<x_j, y>| / tau`` (the smallest penalty giving c = 0)
when ``gamma_nz`` (the reference's default), else ``alpha = 1 / gamma`` (senet.txt's loss
``gamma/2 ||r||^2 + r(c)`` divided by gamma). With ``tau < 1`` the problem is strictly convex: its solution is
unique, and ``c`` is optimal if and only if, with ``r = y - sum_j c_j x_j`` and ``g_j = <x_j, r>``::

    |g_j| <= alpha * tau                          for c_j == 0,
    g_j == alpha * (tau * sign(c_j) + (1 - tau) * c_j)   for c_j != 0.

Three guarantees (the estimator's ``algorithm="auto"`` picks ``"refined"`` above 8,000 points, else
``"active_set"``):

- ``algorithm="restricted"`` (:mod:`._ensc_fast`): every point's elastic net restricted to its ``support_size``
  most correlated atoms (the exact top-K of ``|<x_j, x_i>|``, one symmetric matmul sweep), solved exactly by the
  batched active-set method below; *nothing is checked outside the supports* (``guarantee="restricted"``).
- ``algorithm="refined"`` (:mod:`._ensc_fast`): the restricted solves, then ``oracle_passes`` (default 1) passes
  of the oracle below over the whole dictionary, each followed by the exact re-solve of the points it found
  violating (their supports: active atoms plus the atoms of largest ``|<x_j, r_i>|``, violators first), with no
  check after the last re-solve (``guarantee="partial"``): the points that passed the last check are *certified*,
  the re-solved ones are exact on their new supports and *not certified*; ``certified_fraction`` says how many.
- ``algorithm="active_set"``: the EnSC optimum on the whole dictionary, *certified* row by row
  (``guarantee="certified"``).

``algorithm="active_set"`` is the oracle-guided active-support method (ORGEN) of the EnSC paper,
batched over blocks of points in torch. Up to ``_PIVOT_MAX_N`` = 12,288 points, steps 1 and 2 of the first round
are replaced by a solve on the whole dictionary: block principal pivoting on the Gram ``X X^T`` (each step one
weighted sum of float32 Gram rows per point gives ``g`` against every atom; wrong-signed atoms leave and the largest
violators enter in one exchange, with a fall-back to the monotone method below against cycling; the faces are
solved on the float64 Gram, so the coefficients need no refinement); the oracle then certifies every point as
below, and the rare point it rejects goes through the rounds. On the CPU this start runs as a compiled kernel
(``_pivot.c``, built at install by ``setup.py``: the same method one point at a time, with no padded batches, 2-3x
faster than the torch version); the torch version runs on a GPU, or where no C compiler built the kernel. On 2,000
MNIST points this certifies every point in one round in 0.5 s, against 6.4 s by the rounds on top-K supports.
Otherwise:

1. initial support of each point: its ``support_size`` most correlated atoms (self excluded), from a blockwise
   matmul (bfloat16 where the CPU has it natively, else float32) + top-k; ``alpha0`` is recomputed exactly on that support (guaranteed to hold the true maximum
   by a rounding-error bound, else the row is redone in float32);
2. all restricted elastic nets of a block solved at once and *exactly*: a batched monotone primal active-set
   method (face problems ``(G_AA + alpha(1-tau) I) c_A = b_A - alpha tau s_A`` by batched Cholesky in float64 on
   the (B, K, K) float32 Grams, line search to the first sign change, violators entering a few at a time), warm
   started from the previous round's solution, then two steps of iterative refinement against the data itself
   (float64 residuals), so coefficients are exact for the float32 data up to float64 rounding;
3. the oracle: ``|<x_j, r_i>|`` against **every** atom, blockwise (one (block, N) tile buffer, reused; after the
   matmul only linear passes: row maxima decide certified / violating rows, a row's largest scores come from its
   largest 32-column chunk maxima), in bfloat16 with a rigorous error bound ``|fl - exact| <= 2^-7 ||x_j|| ||r_i||``; undecided rows are redone in
   float32 (bound (D+2) 2^-24 ||x_j|| ||r_i||) and the atoms still inside that band exactly in float64. A point whose non-active atoms all satisfy
   ``|g_j| <= alpha tau (1 + tol)`` is *certified*; otherwise its support becomes its active atoms plus the
   atoms with the largest ``|g_j|`` (the violators first), growing ``support_size`` by 1.5x when the active
   atoms fill more than 80 % of it, and only those points are solved again.

The loop stops when every point is certified or after ``max_rounds`` rounds; ``n_uncertified_`` and
``certified_fraction_`` report the outcome. Memory is O(N K + block N), plus the float32 Gram X X^T (4 N^2 bytes)
up to ``_PIVOT_MAX_N`` = 12,288 points, where every restricted Gram is gathered from it, and during the
whole-dictionary start its float64 original (8 N^2 bytes): 12 N^2 bytes in all, 1.7 GiB at 12,288 points.

``algorithm="per_point"`` is the plain reference-style solver, one point at a time (scikit-learn coordinate
descent on the restricted problem, the same exact sign-pattern step in numpy float64, the oracle in float64
against the whole dictionary). It computes the same (unique) solution and is there for checking and timing.
"""

from __future__ import annotations

import contextlib
import time
import warnings
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import scipy.sparse as sp
import torch

from .._validation import check_fraction, check_positive
from ..graph import keep_largest_per_row
from .base import SelfExpressiveClustering

__all__ = ["ElasticNetSubspaceClustering", "elastic_net_coef", "enet_alpha"]

_ALGORITHMS = ("auto", "active_set", "refined", "restricted", "per_point")
#: ``algorithm="auto"`` runs the refined solver above this many points (certified below)
_AUTO_REFINED_ABOVE = 8000
#: default support size of the refined / restricted solvers (benchmarks/ensc_fast.py: MNIST / Fashion-MNIST)
_DEFAULT_SUPPORT_SIZE = 50

# |bf16 gemm (fp32 accumulation, bf16 output) - exact| <= _BF16_REL * ||x|| * ||r||:
# inputs rounded to bf16 (2^-9 each, so 2^-8 + 2^-18 on every product), fp32 accumulation (<= D * 2^-24 of the
# absolute sum), output rounded to bf16 (2^-9 of |value| <= ||x|| ||r||): < 1.6 * 2^-8; 2^-7 leaves margin.
_BF16_REL = 2.0 ** -7
#: up to this many points the solvers form the float32 Gram X X^T once (at most 256 MiB) and gather each point's
#: restricted Gram from it; above, each block of points gets its Gram from its own batched product
_FULL_GRAM_MAX_N = 8192
#: up to this many points the certified solver starts with the whole-dictionary start (``pivot_start``), whose
#: float64 and float32 Grams take 12 N^2 bytes (1.7 GiB at 12,288 points; the rounds then gather from the float32
#: one). On MNIST features, 2 threads (benchmarks/ensc_start.py): 10,000 points certified in 7.4 s with it against
#: 45 s by the rounds alone; at 16,384 points it would take 26 s at 3.8 GB peak against 88 s at 1.4 GB.
_PIVOT_MAX_N = 12288


def _gathers_gram(n_samples):
    """Whether the solvers on ``n_samples`` points gather their restricted Grams from one float32 X X^T."""
    return n_samples <= _FULL_GRAM_MAX_N


def enet_alpha(X, gamma, tau, gamma_nz=True):
    """Per-point penalty ``alpha`` (float64, shape (n,)) of EnSC for data ``X`` (rows are points).

    ``gamma_nz``: ``alpha_i = max_{j != i} |<x_j, x_i>| / (tau * gamma)``; else ``1 / gamma`` for every point.
    Dense O(n^2) helper for small data and tests.
    """
    X = np.asarray(X, dtype=np.float64)
    if not gamma_nz:
        return np.full(X.shape[0], 1.0 / gamma)
    S = np.abs(X @ X.T)
    np.fill_diagonal(S, 0.0)
    return S.max(axis=1) / tau / gamma


# ----------------------------------------------------------------------------------------------------------------
# batched building blocks (torch)
# ----------------------------------------------------------------------------------------------------------------


class _single_thread:
    """Run loops of small torch ops on one thread: OpenMP barriers on tiny ops cost far more than they save,
    and are catastrophic when the cores are shared."""

    def __enter__(self):
        self.n = torch.get_num_threads()
        torch.set_num_threads(1)

    def __exit__(self, *exc):
        torch.set_num_threads(self.n)


def _map_blocks(fn, jobs, workers):
    """``[fn(job) for job in jobs]`` on ``workers`` threads, each running torch on one thread: the solvers' loops of
    small torch ops gain from parallel workers (torch releases the GIL), not from OpenMP inside each op. Every block
    is computed independently, so the result does not depend on the number of workers."""
    with _single_thread():
        if workers > 1 and len(jobs) > 1:
            with ThreadPoolExecutor(workers) as ex:
                return list(ex.map(fn, jobs))
        return [fn(j) for j in jobs]


@contextlib.contextmanager
def _on_device(device):
    """The solvers' one place for the device: every tensor they create without naming a device lands on
    ``device`` (torch's device context, per thread), and float32 matmuls there are IEEE (no TF32: the oracle's
    rounding-error bounds assume float32). Where ``device`` already is the thread's default (the CPU, usually),
    torch's device context is not entered: it intercepts every torch call in Python, a cost paid on every one of
    the solvers' many small ops."""
    from .._device import ieee_float32

    dev = torch.device(device)
    cur = torch.get_default_device()
    here = cur.type == dev.type and (dev.index is None or cur.index == dev.index)
    with (contextlib.nullcontext() if here else dev), ieee_float32(dev):
        yield


def _solver_device(device, algorithm):
    """The torch.device the solvers of ``algorithm`` run on: ``device`` resolved (``ValueError`` for a malformed
    one or CUDA without CUDA), refusing 'meta' (no data) and ``"per_point"`` (numpy) off the CPU."""
    from .._device import resolve_device

    dev = resolve_device(device)
    if algorithm == "per_point" and dev.type != "cpu":
        raise ValueError(f"algorithm='per_point' (the reference-style numpy solver) runs on the CPU only, "
                         f"device={str(device)!r} was given; use device='cpu' or a batched algorithm")
    if dev.type == "meta":
        raise ValueError("the EnSC solvers need a device that holds data: device='cpu', 'cuda' or 'auto', "
                         "not 'meta'")
    return dev


def _gather_rows(X, idx):
    """``X[idx]`` for an index tensor ``idx`` of any shape (``index_select``: on the CPU three times faster than
    advanced indexing)."""
    return torch.index_select(X, 0, idx.reshape(-1)).view(*idx.shape, X.shape[1])


def _compact(A):
    """Positions of the True entries of each row first: (pos (B, ka), valid (B, ka), ka)."""
    na = A.sum(1)
    ka = int(na.max()) if A.shape[0] else 0
    pos = torch.argsort((~A).to(torch.int8), dim=1, stable=True)[:, :ka]
    valid = torch.arange(ka).unsqueeze(0) < na.unsqueeze(1)
    return pos, valid, ka


def _face_matrix(GA, vf, l2):
    """The face systems' matrices ``G_AA + l2 I`` in float64 for padded faces: ``GA`` (B, W, W), ``vf`` (B, W) 1.0
    on the face's atoms and 0.0 on padding (whose rows and columns become those of the identity), ``l2`` (B,)."""
    M = GA.to(torch.float64) * (vf.unsqueeze(2) * vf.unsqueeze(1))
    M.diagonal(dim1=1, dim2=2).add_(vf * l2.unsqueeze(1) + (1.0 - vf))
    return M


def _first_crossing(cl, cn, wrong):
    """Line search from the sign-consistent point ``cl`` towards the face solution ``cn`` (B, K): per row the step
    ``tmin`` (B,) to the first zero crossing among the ``wrong`` (sign-flipping) atoms (a fresh atom, ``cl == 0``,
    blocks at 0; 2.0 where no atom flips) and the atoms that reach zero there (B, K)."""
    den = cl - cn
    tk = torch.where(wrong, cl / torch.where(den == 0, torch.ones_like(den), den), torch.full_like(cl, 2.0))
    tk = torch.where(wrong & (cl == 0), torch.zeros_like(tk), tk).clamp(min=0.0)
    tmin = tk.min(1).values
    return tmin, wrong & (tk <= tmin.unsqueeze(1) + 1e-14)


def _float32_not_above(x):
    """``x`` (float64) rounded to a float32 that is <= x."""
    x32 = x.float()
    return torch.where(x32.double() > x, torch.nextafter(x32, torch.tensor(-float("inf"))), x32)


def _float32_not_below(x):
    """``x`` (float64) rounded to a float32 that is >= x."""
    x32 = x.float()
    return torch.where(x32.double() < x, torch.nextafter(x32, torch.tensor(float("inf"))), x32)


def _active_set(G, b, at, l2, c0, tol, max_iter=300, max_add=6):
    """Monotone primal active-set method for B restricted elastic nets at once (exact, finite).

    With the signs fixed, the elastic net is a strictly convex quadratic on each orthant face. Each step solves
    the face problem (G_AA + l2 I) c_A = b_A - at s_A (batched Cholesky, float64). If the face minimiser flips a
    sign, the point moves to the first zero crossing on the segment towards it and the atoms that reach zero leave
    (the objective decreases); otherwise the point is face-optimal, and if some inactive atom violates
    |g_j| <= at (1 + tol/4) (g = b - G c), the (up to ``max_add``) most violating ones enter with sign(g_j)
    (a newly entered atom whose face coefficient takes the wrong sign blocks at step 0 and leaves again; a single
    entering atom always has the right sign, so the method cannot cycle). ``G`` (B, K, K) float32 or float64,
    ``b`` (B, K), ``at`` = alpha tau and ``l2`` = alpha (1 - tau) (B,) float64, ``c0`` (B, K) the start (warm
    start: the previous solution; its non-zeros form the first active set). Returns (c float64 (B, K), done (B,)).
    """
    B, K = b.shape
    c = c0.to(torch.float64).clone()  # current point: sign-consistent, zero off A and on freshly entered atoms
    A, s = c != 0, torch.sign(c)
    b64 = b.to(torch.float64)
    done = torch.zeros(B, dtype=torch.bool)
    arK = torch.arange(K)
    Gf = G.reshape(-1)
    thr = at * (1.0 + 0.25 * tol)
    live = torch.arange(B)
    for it in range(max_iter):
        nl = live.numel()
        if nl == 0:
            break
        Al, sl_, bl, cl = A[live], s[live], b64[live], c[live]
        pos, valid, ka = _compact(Al)
        cn = torch.zeros(nl, K, dtype=torch.float64)
        base = (live * (K * K))[:, None, None]
        if ka > 0:
            vf = valid.to(torch.float64)
            GA = _face_matrix(torch.take(Gf, base + pos[:, :, None] * K + pos[:, None, :]), vf, l2[live])
            rhs = (torch.gather(bl, 1, pos) - at[live].unsqueeze(1) * torch.gather(sl_, 1, pos)) * vf
            L, info = torch.linalg.cholesky_ex(GA)
            cA = torch.cholesky_solve(rhs.unsqueeze(2), L).squeeze(2) * vf
            cn.scatter_(1, pos, cA)
        wrong = Al & (torch.sign(cn) != sl_)
        blocked = wrong.any(1)
        # line search to the first zero crossing (fresh atoms, c == 0, block at t = 0)
        tmin, drop = _first_crossing(cl, cn, wrong)
        step = torch.where(blocked, tmin, torch.ones_like(tmin)).unsqueeze(1)
        xn = cl + step * (cn - cl)
        Anew = Al & ~drop
        xn = torch.where(Anew, xn, torch.zeros_like(xn))
        # face-optimal rows: optimality of the non-active atoms
        fo = ~blocked
        finished = torch.zeros(nl, dtype=torch.bool)
        if bool(fo.any()):
            fr = torch.nonzero(fo).squeeze(1)
            posf, validf, kaf = _compact(Anew[fr])
            if kaf > 0:
                GC = torch.take(Gf, base[fr] + arK[None, :, None] * K + posf[:, None, :]).to(torch.float64)
                g = bl[fr] - torch.bmm(GC, (torch.gather(xn[fr], 1, posf) * validf).unsqueeze(2)).squeeze(2)
            else:
                g = bl[fr]
            viol = (~Anew[fr]) & (g.abs() > thr[live[fr]].unsqueeze(1))
            nv = viol.any(1)
            finished[fr[~nv]] = True
            if bool(nv.any()):
                gv = torch.where(viol, g.abs(), torch.zeros_like(g))
                kth = torch.topk(gv, min(max_add, K), dim=1).values[:, -1:]
                add = viol & (gv >= kth) & (gv > 0)
                An = Anew[fr]; An |= add; Anew[fr] = An
                sn = sl_[fr]; sn = torch.where(add, torch.sign(g), sn); sl_[fr] = sn
        snew = torch.where(Anew, torch.where(xn != 0, torch.sign(xn), sl_), torch.zeros_like(sl_))
        A[live], s[live], c[live] = Anew, snew, xn
        done[live[finished]] = True
        live = live[~finished]
    return c, done


def _refine(c, G, atoms, y64, X, at, l2, n_refine=2, sub=256):
    """Iterative refinement of sign-pattern solutions against the data (float64 residuals).

    The face systems are factorised from ``G`` (possibly the float32 Gram); each step solves the same system with
    the float64 residual ``rho = X_A r - at s_A - l2 c_A`` (r = y - c_A X_A), so c converges to the exact solution
    for the float32 data. Returns (c, r (B, D)).
    """
    B, K = c.shape
    c = c.clone()
    r_out = y64.clone()
    for s0 in range(0, B, sub):
        sl = slice(s0, min(B, s0 + sub))
        cb = c[sl]
        nb = cb.shape[0]
        pos, valid, ka = _compact(cb != 0)
        if ka == 0:
            continue
        vf = valid.to(torch.float64)
        ids = torch.gather(atoms[sl], 1, pos)
        # padded positions gather atom 0: harmless, their coefficients and residual products are masked to zero
        XA = _gather_rows(X, torch.where(valid, ids, torch.zeros_like(ids))).to(torch.float64)
        cA = torch.gather(cb, 1, pos) * vf
        sA = torch.sign(cA)
        atb, l2b = at[sl].unsqueeze(1), l2[sl].unsqueeze(1)
        yb = y64[sl]
        if n_refine:
            M = _face_matrix(torch.gather(torch.gather(G[sl], 1, pos.unsqueeze(2).expand(nb, ka, K)), 2,
                                          pos.unsqueeze(1).expand(nb, ka, ka)), vf, l2[sl])
            L, _info = torch.linalg.cholesky_ex(M)
        for it in range(n_refine + 1):
            r = yb - torch.bmm(cA.unsqueeze(1), XA).squeeze(1)
            if it == n_refine:
                break
            rho = (torch.bmm(XA, r.unsqueeze(2)).squeeze(2) - atb * sA - l2b * cA) * vf
            cA = cA + torch.cholesky_solve(rho.unsqueeze(2), L).squeeze(2) * vf
        cb = torch.zeros(nb, K, dtype=torch.float64)
        cb.scatter_(1, pos, cA)
        c[sl] = cb
        r_out[sl] = r
    return c, r_out


#: atoms entering per step of the whole-dictionary start (``_pivot_whole_dictionary``)
_PIVOT_MAX_ADD = 6
#: steps of the whole-dictionary start before a point is left to the monotone rounds
_PIVOT_MAX_ITER = 200
#: parallel workers of the whole-dictionary start (each holds a few (block, N) float32 rows; the memory estimate
#: counts this many, whatever the number of threads)
_PIVOT_MAX_WORKERS = 4
#: steps without fewer infeasible atoms before a point of the whole-dictionary start continues by monotone steps
_PIVOT_PATIENCE = 3


def _pivot_block_size(n_samples, block_size):
    """Points per block of the whole-dictionary start: at most ``block_size`` and 512, at least four blocks."""
    return max(32, min(512, int(block_size), -(-n_samples // 4)))


def _alpha_from_gram(gram64, tau, gamma, gamma_nz, rows=256):
    """EnSC's ``alpha`` (float64, (N,)) from the float64 Gram ``X X^T``: ``max_{j != i} |<x_i, x_j>|`` per row."""
    N = gram64.shape[0]
    if not gamma_nz:
        return torch.full((N,), 1.0 / gamma, dtype=torch.float64, device=gram64.device)
    top = torch.empty(N, dtype=torch.float64, device=gram64.device)
    for s0 in range(0, N, rows):
        s1 = min(N, s0 + rows)
        A = gram64[s0:s1].abs()
        A.diagonal(offset=s0).fill_(-1.0)  # self excluded
        top[s0:s1] = A.amax(1).clamp(min=0.0)
    return top / tau / gamma


def _float32_row_sum_band(k, gmax, c):
    """Twice the first-order bound on ``|g32 - g64|`` for the row sums ``g = G[p] - sum_u c_u G[a_u]`` over ``k``
    atoms in float32 (G and c rounded to float32, k + 1 float32 operations per entry, every ``|G_uj| <= gmax``, the
    largest diagonal entry): ``(k + 3) 2^-23 gmax (1 + sum |c_u|)`` per row of ``c`` (B, k). ``_pivot.c`` uses the
    same band."""
    return (k + 3) * 2.0 ** -23 * gmax * (1.0 + c.abs().sum(1))


def _pivot_whole_dictionary(gram, gram64, X64, p, at, l2, tol, max_add=None, max_iter=None):
    """The elastic nets of points ``p`` on the *whole* dictionary by block principal pivoting on the Gram.

    Each step solves the face problem of the current active set with its signs (batched Cholesky on the float64
    Gram ``gram64``: the face solution is exact up to float64 rounding), then, with ``g = G[p] - sum_a c_a G[a]``
    over all N atoms (one weighted sum of float32 Gram rows ``gram`` per point: it only chooses who enters, and the
    oracle checks the result), exchanges in one
    go: active atoms whose coefficient took the wrong sign leave, and the (up to ``max_add``) largest violators
    ``|g_j| > alpha tau (1 + tol/4)`` enter with sign(g_j) (each one's ``g_j`` checked in float64 first, so that
    float32 rounding near the threshold cannot make a non-violator enter and leave again). A point whose face
    solution keeps its signs and has no violator is finished. Such exchanges take few steps (median point: 8 to 10
    on MNIST features) but may cycle:
    a point whose count of infeasible atoms has not improved for ``_PIVOT_PATIENCE`` steps continues by the
    monotone method of :func:`_active_set` (line search to the first sign change), which is finite; after
    ``max_iter`` steps the rest are returned unfinished. Only the face Gram of the atoms that enter is gathered
    each step (the kept atoms' block is carried over).

    Returns (ids (B, W), valid (B, W), c float64 (B, W), cand (B, m), done (B,), r float64 (B, D)): per point its
    atoms (``valid``: active; the face solution ``c``, zero elsewhere), the ``m`` non-active atoms of largest
    ``|g_j|`` at the last step, whether it finished, and its residual ``x_p - sum_a c_a x_a`` against the float64
    data ``X64`` (N, D). An unfinished point's ``c`` is zero.
    """
    B, N = p.numel(), gram.shape[0]
    max_add = _PIVOT_MAX_ADD if max_add is None else max_add
    max_iter = _PIVOT_MAX_ITER if max_iter is None else max_iter
    Gf = gram64.reshape(-1)
    m = min(max_add, N - 1)
    thr = at * (1.0 + 0.25 * tol)
    ids = torch.zeros(B, 0, dtype=torch.int64)
    s = torch.zeros(B, 0, dtype=torch.float64)
    valid = torch.zeros(B, 0, dtype=torch.bool)
    GA = torch.zeros(B, 0, 0, dtype=torch.float64)  # the current faces' Grams
    live = torch.arange(B)
    unfinished = live[:0]
    best = torch.full((B,), N + 1, dtype=torch.int64)
    patience = torch.full((B,), _PIVOT_PATIENCE, dtype=torch.int64)
    mono = torch.zeros(B, dtype=torch.bool)  # points that continue by the monotone method
    cur = torch.zeros(B, 0, dtype=torch.float64)  # their current point (live rows; zero on entering atoms)
    thr32 = _float32_not_below(thr)
    gmax = float(gram64.diagonal().max())
    out = []  # (rows, ids, valid, c, cand) of the points as they finish (and of the unfinished at the end)
    for it in range(max_iter + 1):
        nl = live.numel()
        if nl == 0:
            break
        W = ids.shape[1]
        pl = p[live]
        cn = torch.zeros(nl, W, dtype=torch.float64)
        if W:
            vf = valid.to(torch.float64)
            M = _face_matrix(GA, vf, l2[live])
            rhs = (torch.take(Gf, pl.unsqueeze(1) * N + ids) - at[live].unsqueeze(1) * s) * vf
            L, _info = torch.linalg.cholesky_ex(M)
            cn = torch.cholesky_solve(rhs.unsqueeze(2), L).squeeze(2) * vf
        # g = G[p] - sum_a c_a G[a]: one weighted sum of Gram rows per point, the point's own row with weight -1
        g = torch.nn.functional.embedding_bag(torch.cat([pl.unsqueeze(1), ids], 1), gram, mode="sum",
                                              per_sample_weights=torch.cat([cn.new_full((nl, 1), -1.0), cn], 1)
                                              .to(gram.dtype)).neg_()
        wrong = valid & (torch.sign(cn) != s)
        ga = g.abs()
        ga[torch.arange(nl), pl] = -1.0  # self and active atoms never enter
        vr, vc = torch.nonzero(valid, as_tuple=True)
        ga[vr, ids[vr, vc]] = -1.0
        tv, ti = torch.topk(ga, m, dim=1)
        # the entering atoms: the float32 violators, where those within the float32 rounding error of the row sums
        # (_float32_row_sum_band) must also be violators in float64 (W products on the float64 Gram each);
        # otherwise a non-violator that float32 puts just above the threshold would enter, take the wrong sign,
        # leave, and enter again until max_iter
        tv64, thr_l = tv.to(torch.float64), thr[live].unsqueeze(1)
        ent = tv64 > thr_l
        gsign = torch.sign(torch.gather(g, 1, ti)).to(torch.float64)  # right wherever |g| > thr + band
        near = ent & (tv64 <= thr_l + _float32_row_sum_band(W, gmax, cn).unsqueeze(1))
        if bool(near.any()):
            nr = torch.nonzero(near.any(1)).squeeze(1)
            gx = torch.take(Gf, pl[nr].unsqueeze(1) * N + ti[nr])
            if W:
                gx = gx - (torch.take(Gf, ids[nr].unsqueeze(2) * N + ti[nr].unsqueeze(1)) * cn[nr].unsqueeze(2)).sum(1)
            ent[nr] = ent[nr] & (~near[nr] | (gx.abs() > thr_l[nr]))
            gsign[nr] = torch.where(near[nr], torch.sign(gx), gsign[nr])
        fin = ~wrong.any(1) & ~ent.any(1)
        keep = valid & ~wrong
        # safeguard against cycling: a point whose count of infeasible atoms (wrong signs plus violators) has not
        # fallen below its best for ``_PIVOT_PATIENCE`` steps continues by the monotone method (finite, see
        # :func:`_active_set`) from the sign-consistent point ``cur``: a face solution that flips signs is followed
        # only to the first zero crossing, where that atom leaves and nothing enters
        ninf = wrong.sum(1) + (ga > thr32[live].unsqueeze(1)).sum(1)
        improved = ninf < best[live]
        best[live] = torch.minimum(ninf, best[live])
        patience[live] = torch.where(improved, _PIVOT_PATIENCE, patience[live] - 1)
        ml = mono[live]
        xn = torch.where(keep, cn, torch.zeros_like(cn))  # the next start of a pivoting point (sign-consistent)
        blocked = ml & wrong.any(1)
        if bool(blocked.any()):
            cl = cur[live]
            tmin, drop = _first_crossing(cl, cn, wrong)
            mk = valid & ~drop
            keep = torch.where(blocked.unsqueeze(1), mk, keep)
            xn = torch.where(blocked.unsqueeze(1),
                             torch.where(mk, cl + tmin.unsqueeze(1) * (cn - cl), torch.zeros_like(cl)), xn)
            ent = ent & ~blocked.unsqueeze(1)
        mono[live] = ml | (patience[live] <= 0)
        if it == max_iter:  # the rest are left to the monotone rounds, from zero
            unfinished = live[~fin]
            cn = torch.where(fin.unsqueeze(1), cn, torch.zeros_like(cn))
            fin = torch.ones_like(fin)
        if bool(fin.any()):
            f = torch.nonzero(fin).squeeze(1)
            out.append((live[f], ids[f], valid[f], cn[f], ti[f]))
        nf = torch.nonzero(~fin).squeeze(1)
        if nf.numel() == 0:
            break
        # next step's layout: the kept atoms first (their Gram block carried over), then the entering ones
        pos, vk, kk = _compact(keep[nf])
        idk = torch.where(vk, torch.gather(ids[nf], 1, pos), torch.zeros_like(pos))
        sk = torch.where(vk, torch.gather(s[nf], 1, pos), torch.zeros((), dtype=torch.float64))
        ck = torch.where(vk, torch.gather(xn[nf], 1, pos), torch.zeros((), dtype=torch.float64))
        GAk = torch.gather(torch.gather(GA[nf], 1, pos.unsqueeze(2).expand(-1, -1, W)), 2,
                           pos.unsqueeze(1).expand(-1, kk, -1))
        en = ent[nf]
        idn = torch.where(en, ti[nf], torch.zeros_like(ti[nf]))
        sn = torch.where(en, gsign[nf], torch.zeros((), dtype=torch.float64))
        ids = torch.cat([idk, idn], 1)
        Gn = torch.take(Gf, idn.unsqueeze(2) * N + ids.unsqueeze(1))  # (nf, m, kk + m): rows of the entering atoms
        GA = torch.empty(nf.numel(), kk + m, kk + m, dtype=torch.float64)
        GA[:, :kk, :kk] = GAk
        GA[:, kk:, :] = Gn
        GA[:, :kk, kk:] = Gn[:, :, :kk].transpose(1, 2)
        s, valid = torch.cat([sk, sn], 1), torch.cat([vk, en], 1)
        cur = torch.zeros(B, kk + m, dtype=torch.float64)
        cur[live[nf]] = torch.cat([ck, torch.zeros(nf.numel(), m, dtype=torch.float64)], 1)
        live = live[nf]
    # one (B, W) layout for all points, in their order (the points finished at different widths)
    rows, ids, valid, c, cand = (list(f) for f in zip(*out))
    W = max(t.shape[1] for t in ids)
    order = torch.argsort(torch.cat(rows))

    def widen(parts, fill):
        return torch.cat([torch.nn.functional.pad(t, (0, W - t.shape[1]), value=fill) for t in parts])[order]

    done = torch.ones(B, dtype=torch.bool)
    done[unfinished] = False
    ids, valid, c = widen(ids, 0), widen(valid, False), widen(c, 0.0)
    # padded entries carry a zero coefficient
    r = X64[p] - torch.nn.functional.embedding_bag(ids, X64, per_sample_weights=c, mode="sum")
    return ids, valid, c, torch.cat(cand)[order], done, r


try:  # the compiled kernel of the whole-dictionary start (setup.py; optional: without it, the torch version runs)
    from . import _pivot as _pivot_kernel
except ImportError:  # pragma: no cover - exercised where no C compiler built it
    _pivot_kernel = None

#: widest face the compiled start holds per point (a point whose face would grow beyond it is left unfinished, to
#: the monotone rounds; MNIST faces have 40 atoms in the median)
_PIVOT_COMPILED_CAP = 512


def _pivot_whole_dictionary_compiled(gram, gram64, X64, p, at, l2, tol, max_add=None, max_iter=None):
    """:func:`_pivot_whole_dictionary` by the compiled kernel (``_pivot.c``; CPU tensors): the same method and the
    same outputs, one point at a time to its own end (no padded batches), the GIL released. The solutions agree
    with the torch version's to float64 rounding (the face systems are solved by a different Cholesky); where
    ``|g_j|`` ties, the candidates may differ in order."""
    (B, N), D = (p.numel(), gram.shape[0]), X64.shape[1]
    max_add = _PIVOT_MAX_ADD if max_add is None else max_add
    max_iter = _PIVOT_MAX_ITER if max_iter is None else max_iter
    m = min(max_add, N - 1)
    cap = max(1, min(N - 1, _PIVOT_COMPILED_CAP))
    at64 = at.to(torch.float64).contiguous()
    thr = at64 * (1.0 + 0.25 * tol)
    ids = np.zeros((B, cap), np.int64)
    c = np.zeros((B, cap), np.float64)
    k = np.zeros(B, np.int64)
    cand = np.zeros((B, m), np.int64)
    done = np.zeros(B, np.uint8)
    r = np.zeros((B, D), np.float64)
    _pivot_kernel.pivot(gram.contiguous().numpy(), gram64.contiguous().numpy(), X64.contiguous().numpy(), D,
                        p.to(torch.int64).contiguous().numpy(), at64.numpy(),
                        l2.to(torch.float64).contiguous().numpy(), thr.numpy(), m, max_iter, _PIVOT_PATIENCE, cap,
                        ids, c, k, cand, done, r)
    W = max(1, int(k.max()))
    valid = np.arange(W)[None, :] < k[:, None]
    return (torch.from_numpy(ids[:, :W].copy()), torch.from_numpy(valid), torch.from_numpy(c[:, :W].copy()),
            torch.from_numpy(cand), torch.from_numpy(done.astype(bool)), torch.from_numpy(r))


def _pivot_function(device):
    """The whole-dictionary start for tensors on ``device``: the compiled kernel on the CPU where it was built, else
    the torch version. Returns (function, name)."""
    if _pivot_kernel is not None and torch.device(device).type == "cpu":
        return _pivot_whole_dictionary_compiled, "compiled"
    return _pivot_whole_dictionary, "torch"


_CHUNK = 32  # columns per chunk of _topk_rows


def _topk_rows(V, rows, k, chunk=_CHUNK):
    """``torch.topk(V[rows], k, dim=1)`` (sorted, ties in any order) by way of chunk maxima: a row's k largest
    values lie in its k chunks of ``chunk`` consecutive columns with the largest maxima (a chunk holding one of
    them has a maximum >= the k-th value, and fewer than k chunks have a larger one), so one cheap pass of maxima
    over the wide rows, then topk on the (rows, k * chunk) candidates. ``V.shape[1]`` a multiple of ``chunk``."""
    n, W = V.shape
    if W % chunk or W // chunk <= 2 * k:
        return torch.topk(V[rows], k, dim=1, sorted=True)
    M = V.view(n, W // chunk, chunk).amax(2)[rows]
    ci = torch.topk(M, k, dim=1, sorted=False).indices
    cols = (ci.unsqueeze(2) * chunk + torch.arange(chunk)).reshape(ci.shape[0], k * chunk)
    cand = V[rows.unsqueeze(1), cols]
    v, j = torch.topk(cand, k, dim=1, sorted=True)
    return v, torch.gather(cols, 1, j)


def _median(parts):
    """Median of the concatenated integer tensors ``parts`` (0 when empty)."""
    v = torch.cat(parts) if parts else torch.zeros(0, dtype=torch.int64)
    return int(v.median()) if v.numel() else 0


def _solve_restricted(G, b, atoms, y64, X, at, l2, c0, *, tol, max_iter=300):
    """Solve B restricted elastic nets exactly: the active-set method from the warm start ``c0`` (its non-zeros
    and signs), then refinement against the data. Returns (c float64 (B, K), r float64 (B, D), exact bool (B,));
    ``exact``: the active-set method finished (signs consistent, every non-active support atom within ``alpha tau (1 + tol / 4)`` by the Gram) and
    refinement kept the signs. The oracle certifies against the whole dictionary afterwards.
    """
    c, done = _active_set(G, b, at, l2, c0, tol, max_iter)
    cf, r = _refine(c, G, atoms, y64, X, at, l2, n_refine=2)
    exact = done & (torch.sign(cf) == torch.sign(c)).all(1)
    return cf, r, exact


class _ActiveSetSolver:
    def __init__(self, X, *, gamma, tau, gamma_nz, support_size, max_rounds, tol, block_size, oracle_dtype,
                 device, verbose):
        self.device = torch.device(device)
        self.X = torch.as_tensor(np.ascontiguousarray(X, dtype=np.float32), device=self.device)
        self.N, self.D = self.X.shape
        self.gamma, self.tau, self.gamma_nz = float(gamma), float(tau), bool(gamma_nz)
        self.K0 = int(min(support_size, self.N - 1))
        self.max_rounds, self.tol = int(max_rounds), float(tol)
        self.block = int(block_size)
        self.solve_block = max(64, min(1024, self.block))
        self.oracle_dtype = (torch.bfloat16 if _resolve_oracle_dtype(oracle_dtype, self.device) == "bfloat16"
                             else torch.float32)
        self.Xo = self.X.to(self.oracle_dtype) if self.oracle_dtype != torch.float32 else self.X
        self.xnorm_max = float(self.X.norm(dim=1).max())
        self.verbose = verbose
        self.gram = None  # the float32 X X^T up to _FULL_GRAM_MAX_N (first solve) or _PIVOT_MAX_N (pivot_start)
        # the CPU solves blocks in parallel threads; on a GPU one stream of batched solves
        self.n_workers = max(1, torch.get_num_threads()) if self.device.type == "cpu" else 1
        self.stats = {"rounds": [], "times": {}}

    def _log(self, msg):
        if self.verbose:
            print(f"[EnSC] {msg}", flush=True)

    def _tick(self, name, t0):
        self.stats["times"][name] = self.stats["times"].get(name, 0.0) + time.perf_counter() - t0

    # -- initial supports and alpha -------------------------------------------------------------------------
    def init_supports(self):
        t0 = time.perf_counter()
        N, K = self.N, self.K0
        supp = torch.empty(N, K, dtype=torch.int64)
        alpha = torch.empty(N, dtype=torch.float64)
        exact_rows = []
        ar = torch.arange(N)
        for s0 in range(0, N, self.block):
            s1 = min(N, s0 + self.block)
            rows = ar[s0:s1]
            V = (self.Xo[s0:s1] @ self.Xo.T).abs_()
            V[torch.arange(s1 - s0), rows] = -1.0  # self excluded
            vals, idx = torch.topk(V, K, dim=1, sorted=True)
            del V
            vals = vals.float()
            rel = _BF16_REL if self.oracle_dtype != torch.float32 else (self.D + 2) * 2.0 ** -24
            e = rel * self.xnorm_max * self.X[s0:s1].norm(dim=1)
            need = (vals[:, 0] - vals[:, K - 1] <= 2 * e) & torch.tensor(K < N - 1)
            if bool(need.any()):
                # the maximum is not guaranteed inside the top-K: redo these rows one precision up
                if self.oracle_dtype != torch.float32:
                    rr = rows[need]
                    V = (self.X[rr] @ self.X.T).abs_()
                    V[torch.arange(rr.numel()), rr] = -1.0
                    idx[need] = torch.topk(V, K, dim=1, sorted=True)[1]
                    exact_rows.append(int(rr.numel()))
                else:
                    rr = rows[need]
                    V = (self.X.double() @ self.X[rr].double().T).T.abs_()
                    V[torch.arange(rr.numel()), rr] = -1.0
                    idx[need] = torch.topk(V, K, dim=1, sorted=True)[1]
                    exact_rows.append(int(rr.numel()))
            supp[s0:s1] = idx
        # exact alpha0 over the support (float64)
        for s0 in range(0, N, 256):
            s1 = min(N, s0 + 256)
            xs = self.X[supp[s0:s1]].double()  # (256, K, D)
            bb = torch.bmm(xs, self.X[s0:s1].double().unsqueeze(2)).squeeze(2)
            if self.gamma_nz:
                alpha[s0:s1] = bb.abs().amax(1) / self.tau / self.gamma
            else:
                alpha[s0:s1] = 1.0 / self.gamma
        self._start_state(supp, alpha)
        self.stats["fp32_redo_rows"] = int(sum(exact_rows))
        self._tick("init_support", t0)

    def pivot_start(self):
        """The start up to ``_PIVOT_MAX_N`` points: every point's elastic net on the whole dictionary by block
        principal pivoting (:func:`_pivot_whole_dictionary`; faces solved on the float64 Gram, so exact without
        refinement against the data). A point it finished starts the rounds solved, its support its active atoms
        plus its ``_PIVOT_MAX_ADD`` non-active atoms of largest ``|g_j|``; the oracle then certifies it as any
        other. The few it did not finish are solved by the monotone method in the first round. No top-K search."""
        t0 = time.perf_counter()
        N = self.N
        # the float64 Gram (exact faces and alpha; freed after the start) and its float32 rounding (the pivot's
        # row sums, and the rounds' restricted Grams): one float64 product replaces the refinement steps, which
        # cost more (2,000 MNIST points, one thread: 0.2 s per 500 points against 0.07 s for the product)
        self.X64 = self.X.double()
        self.gram64 = self.X64 @ self.X64.T
        self.gram = self.gram64.float()
        self.alpha = _alpha_from_gram(self.gram64, self.tau, self.gamma, self.gamma_nz)
        # at least four blocks, so that parallel workers stay busy; the partition does not depend on the workers
        bs = _pivot_block_size(N, self.block)
        jobs = [torch.arange(s0, min(N, s0 + bs)) for s0 in range(0, N, bs)]
        self._pivot, self.stats["pivot_kernel"] = _pivot_function(self.device)
        results = _map_blocks(self._pivot_block, jobs, min(self.n_workers, _PIVOT_MAX_WORKERS))
        W = max(res[0].shape[1] for res in results)
        self._start_state(torch.full((N, W), -1, dtype=torch.int64), self.alpha)
        for p, (supp, k, coef, resid, done) in zip(jobs, results):
            self.supp[p, :supp.shape[1]] = supp
            self.coef[p, :coef.shape[1]] = coef
            self.ksize[p] = k
            self.resid[p] = resid
            self.exact[p] = done  # a finished point's face was solved on the float64 Gram: exact
        del self.X64, self.gram64, self._pivot
        # with faces solved in float64 every finished point is exact: the two counts are the same
        self.stats["pivot_unfinished"] = self.stats["pivot_inexact"] = int((~self.exact).sum())
        self._tick("pivot", t0)

    def _pivot_block(self, p):
        with _on_device(self.device):  # worker threads do not inherit the caller's device context
            return self._pivot_block_here(p)

    def _pivot_block_here(self, p):
        at, l2 = self.alpha[p] * self.tau, self.alpha[p] * (1.0 - self.tau)
        ids, valid, c, cand, done, r = self._pivot(self.gram, self.gram64, self.X64, p, at, l2, self.tol)
        # support: the active atoms, then the candidates
        pos, vld, ka = _compact(valid)
        na = vld.sum(1)
        m = cand.shape[1]
        both = torch.cat([torch.gather(ids, 1, pos), cand], 1)  # (B, ka + m)
        j = torch.arange(ka + m).unsqueeze(0)
        src = torch.where(j < na.unsqueeze(1), j, ka + j - na.unsqueeze(1)).clamp(max=ka + m - 1)
        supp = torch.where(j < (na + m).unsqueeze(1), torch.gather(both, 1, src), torch.full_like(src, -1))
        coef = torch.gather(c, 1, pos) * vld
        return supp, na + m, coef, r, done

    def _start_state(self, supp, alpha):
        """Per-point solver state before any solve: supports ``supp`` (N, K), elastic-net weights ``alpha`` (N,)."""
        N, K = supp.shape
        self.supp = supp
        self.ksize = torch.full((N,), K, dtype=torch.int64)
        self.alpha = alpha
        self.coef = torch.zeros(N, K, dtype=torch.float64)
        self.resid = torch.zeros(N, self.D, dtype=torch.float64)
        self.exact = torch.zeros(N, dtype=torch.bool)
        self.certified = torch.zeros(N, dtype=torch.bool)
        self.strict = torch.zeros(N, dtype=torch.bool)

    # -- solve the restricted problems of a set of points ---------------------------------------------------------
    def solve(self, pts):
        t0 = time.perf_counter()
        if self.gram is None and _gathers_gram(self.N):
            # one GEMM instead of one (K+1) x K batched product per point and per round: cheaper whenever N is not
            # much larger than K^2, and every round gathers from it
            self.gram = self.X @ self.X.T
        key = self.ksize[pts] * 2 + self.strict[pts].long()
        jobs = []
        for kk in torch.unique(key).tolist():
            k, strict = kk // 2, bool(kk % 2)
            grp = pts[key == kk]
            bs = max(32, int(self.solve_block * (self.K0 / k) ** 2)) if k > self.K0 else self.solve_block
            # at least four blocks per group, so that parallel workers stay busy to the end (the partition must not
            # depend on the number of workers: batch composition changes the last bits of the batched solves)
            bs = max(32, min(bs, -(-grp.numel() // 4)))
            jobs += [(grp[s0:s0 + bs], k, strict) for s0 in range(0, grp.numel(), bs)]
        results = _map_blocks(self._solve_block, jobs, self.n_workers)
        for (p, k, _strict), (c, r, ex_) in zip(jobs, results):
            self.coef[p, :k] = c
            self.resid[p] = r
            self.exact[p] = ex_
        self._tick("solve", t0)

    def _solve_block(self, job):
        with _on_device(self.device):  # worker threads do not inherit the caller's device context
            return self._solve_block_here(job)

    def _solve_block_here(self, job):
        p, k, strict = job
        atoms = self.supp[p, :k]
        y32 = self.X[p]
        # strict points: the float32 Gram misled the restricted check or the active-set method; exact Gram
        dt = torch.float64 if strict else torch.float32
        if self.gram is not None and not strict:
            # gathered from the full Gram (refinement against the data makes the solution exact either way)
            G = torch.take(self.gram, atoms.unsqueeze(2) * self.N + atoms.unsqueeze(1))
            b = torch.take(self.gram, p.unsqueeze(1) * self.N + atoms)
        else:
            G = torch.empty(p.numel(), k, k, dtype=dt)
            b = torch.empty(p.numel(), k, dtype=dt)
            # the point's own row after its atoms: one product gives the Gram (first k rows) and b (the last row)
            rows = torch.cat([atoms, p.unsqueeze(1)], 1)
            for t0_ in range(0, p.numel(), 256):
                sl = slice(t0_, min(p.numel(), t0_ + 256))
                XS = _gather_rows(self.X, rows[sl]).to(dt)
                Gb = torch.bmm(XS, XS[:, :k].transpose(1, 2))
                G[sl] = Gb[:, :k]
                b[sl] = Gb[:, k]
                del XS, Gb
        al = self.alpha[p]
        at, l2 = al * self.tau, al * (1.0 - self.tau)
        return _solve_restricted(G, b, atoms, y32.double(), self.X, at, l2, self.coef[p, :k], tol=self.tol,
                                 max_iter=1000 if strict else 300)

    # -- oracle: check every atom, pick new supports -------------------------------------------------------------
    def _mask_products(self, V, p, atoms, act):
        """|V| in place, with each row's own column and its active atoms set to -1 (never violators)."""
        V.abs_()
        B = p.numel()
        V[torch.arange(B), p] = -1.0
        a_rows, a_pos = torch.nonzero(act, as_tuple=True)
        V[a_rows, atoms[a_rows, a_pos]] = -1.0
        return V

    def oracle(self, pts, resupport=True):
        """Certify or re-support every point of ``pts``. Returns (changed, cert, n_band_pairs) over all N.

        Per block of points one (block, N) matmul ``|R X^T|`` in ``oracle_dtype`` into a buffer reused across
        blocks (a fresh half-gigabyte tile per block costs as much in page faults as the matmul), then only
        passes that are linear in the tile: the row maxima decide most rows (no atom within the error band of the
        threshold: certified; one above it: violating); the atoms of the few undecided rows that lie in the band
        are recomputed (float32 after a bfloat16 screen, then exactly in float64). Violating rows get new supports
        from one ``topk`` over their tile rows (``resupport=False``: certify only).
        """
        t0 = time.perf_counter()
        nthreads = torch.get_num_threads()
        try:
            out = self._oracle(pts, resupport, nthreads)
        finally:
            torch.set_num_threads(nthreads)
        self._tick("oracle", t0)
        return out

    def _oracle(self, pts, resupport, nthreads):
        N, D, tol = self.N, self.D, self.tol
        changed = torch.zeros(N, dtype=torch.bool)
        cert = torch.zeros(N, dtype=torch.bool)
        n_band = 0
        self._nviol = []
        e32_rel = (D + 2) * 2.0 ** -24  # float32 dot products of length D: |error| <= this * ||x|| ||r||
        screen_rel = _BF16_REL if self.oracle_dtype != torch.float32 else e32_rel
        # atoms padded with zero rows to a multiple of the chunk of _topk_rows (the padding columns score -2)
        Np = -(-N // _CHUNK) * _CHUNK
        if getattr(self, "_Xop", None) is None:
            self._Xop = torch.cat([self.Xo, self.Xo.new_zeros(Np - N, D)]) if Np > N else self.Xo
        nb_max = min(self.block, pts.numel())
        buf = torch.empty(nb_max * Np, dtype=self.oracle_dtype)
        for s0 in range(0, pts.numel(), self.block):
            p = pts[s0:s0 + self.block]
            nb = p.numel()
            r64 = self.resid[p]
            rn = r64.norm(dim=1)
            thr = self.alpha[p] * self.tau * (1.0 + tol)
            kmax = int(self.ksize[p].max())
            act = self.coef[p, :kmax] != 0
            atoms = self.supp[p, :kmax]
            # stage 1: screening matmul (bfloat16 by default where native) with a rigorous error bound
            V = buf[:nb * Np].view(nb, Np)
            # the matmul on all threads; the rest are linear passes and small ops: one thread (OpenMP barriers cost
            # more than they save, and far more when the cores are shared)
            torch.set_num_threads(nthreads)
            torch.mm(r64.to(self.oracle_dtype), self._Xop.T, out=V)
            torch.set_num_threads(1)
            self._mask_products(V, p, atoms, act)
            V[:, N:] = -2.0
            e = screen_rel * self.xnorm_max * rn
            rowmax = V.amax(1).double()
            viol_rows = rowmax > thr + e
            maybe = (~viol_rows) & (rowmax > thr - e)
            W, mr = None, None
            if bool(maybe.any()):
                mr = torch.nonzero(maybe).squeeze(1)
                if self.oracle_dtype != torch.float32:
                    # stage 2: undecided rows again in float32 (band (D+2) 2^-24 instead of 2^-7)
                    W = self._mask_products(r64[mr].float() @ self.X.T, p[mr], atoms[mr], act[mr])
                    V[mr, :N] = W.to(V.dtype)  # better ranking for the new supports
                    e = e.clone()
                    e[mr] = e32_rel * self.xnorm_max * rn[mr]
                    rm = W.amax(1).double()
                    viol_rows[mr] = rm > thr[mr] + e[mr]
                    maybe[mr] = (~viol_rows[mr]) & (rm > thr[mr] - e[mr])
                    W = W[maybe[mr]]
                    mr = mr[maybe[mr]]
                else:
                    W = V[mr]
            if mr is not None and mr.numel():
                # stage 3: the atoms still inside the band, exactly in float64. The float32 test against the band's
                # lower edge rounded down to float32 selects every atom the float64 test would (and maybe more)
                lo = (thr - e)[mr]
                lo32 = _float32_not_above(lo)
                rr, cc = torch.nonzero(W > lo32.unsqueeze(1), as_tuple=True)
                n_band += rr.numel()
                gex = torch.empty(rr.numel(), dtype=torch.float64)
                for c0 in range(0, rr.numel(), 65536):
                    sl = slice(c0, c0 + 65536)
                    gex[sl] = (self.X[cc[sl]].double() * r64[mr[rr[sl]]]).sum(1)
                bad = gex.abs() > thr[mr[rr]]
                if bool(bad.any()):
                    V[mr[rr[bad]], cc[bad]] = float("inf")  # confirmed violators enter first
                    viol_rows[mr[torch.unique(rr[bad])]] = True
            del W
            cert[p] = ~viol_rows
            vr = torch.nonzero(viol_rows).squeeze(1)
            if vr.numel() and resupport:
                self._resupport(p[vr], V, vr, act[vr], (thr + e)[vr], changed)
        return changed, cert, n_band

    def _resupport(self, idx, V, vr, act, sure, changed):
        """New supports for violating points ``idx`` (rows ``vr`` of the oracle tile ``V``): their active atoms,
        then the atoms of largest |<x_j, r>| (violators first); 1.5x larger when the active atoms fill more than
        80 % of the support. ``V`` (block, N): scores of all atoms, the point itself and its active atoms scored
        -1; ``sure``: per row, the score above which an atom surely violates (for the statistics)."""
        N = self.N
        kold = self.ksize[idx]
        nact = act.sum(1)
        knew = torch.where(nact > 0.8 * kold, torch.clamp((kold * 3 + 1) // 2, max=N - 1), kold)
        nfree = knew - nact
        kf = int(nfree.max())
        topv, top = _topk_rows(V, vr, kf)
        # violators among the atoms that enter (all of them while a row has more violators than free places)
        entering = (topv.double() > sure.unsqueeze(1)) & (torch.arange(kf).unsqueeze(0) < nfree.unsqueeze(1))
        self._nviol.append(entering.sum(1))
        pos, valid, ka = _compact(act)
        kmax = act.shape[1]
        act_atoms = torch.gather(self.supp[idx, :kmax], 1, pos)
        act_coef = torch.gather(self.coef[idx, :kmax], 1, pos) * valid
        Kn = int(knew.max())
        j = torch.arange(Kn).unsqueeze(0)
        cat = torch.cat([act_atoms, top], 1)
        src = torch.where(j < nact.unsqueeze(1), j, ka + j - nact.unsqueeze(1)).clamp(max=cat.shape[1] - 1)
        new = torch.where(j < knew.unsqueeze(1), torch.gather(cat, 1, src), torch.full_like(src, -1))
        # unchanged support (a violator already inside it: the float32 restricted check was fooled)
        W = max(Kn, self.supp.shape[1])
        a_ = torch.full((idx.numel(), W), -1, dtype=torch.int64)
        a_[:, :Kn] = new
        b_ = torch.full((idx.numel(), W), -1, dtype=torch.int64)
        b_[:, :self.supp.shape[1]] = self.supp[idx]
        same = (torch.sort(a_, 1).values == torch.sort(b_, 1).values).all(1)
        if bool(same.any()):
            fresh = idx[same & ~self.strict[idx]]
            self.strict[fresh] = True
            changed[fresh] = True
        mv = ~same
        if not bool(mv.any()):
            return
        idx, new, knew = idx[mv], new[mv], knew[mv]
        if Kn > self.supp.shape[1]:
            pad = Kn - self.supp.shape[1]
            self.supp = torch.cat([self.supp, torch.full((N, pad), -1, dtype=torch.int64)], 1)
            self.coef = torch.cat([self.coef, torch.zeros(N, pad, dtype=torch.float64)], 1)
        self.supp[idx] = -1
        self.supp[idx, :Kn] = new
        self.coef[idx] = 0.0
        self.coef[idx, :ka] = act_coef[mv]
        self.ksize[idx] = knew
        changed[idx] = True

    def run(self):
        pivot = self.max_rounds > 0 and self.N <= _PIVOT_MAX_N
        if pivot:
            self.pivot_start()
        else:
            self.init_supports()
        if self.max_rounds == 0:
            # restricted solves on the initial supports only: exact on them, no oracle and no certificate
            t0 = time.perf_counter()
            self.solve(torch.arange(self.N))
            self.stats["rounds"].append(dict(round=0, solved=self.N, certified=0, oracle=False,
                                             seconds=round(time.perf_counter() - t0, 3)))
            self._log(f"restricted solves only (max_rounds=0): {self.N} points, no certificate")
            return self
        need = torch.ones(self.N, dtype=torch.bool)
        for rnd in range(self.max_rounds):
            pts = torch.nonzero(need).squeeze(1)
            if pts.numel() == 0:
                break
            t0 = time.perf_counter()
            if rnd == 0 and pivot:
                redo = pts[~self.exact[pts]]  # what the whole-dictionary start did not solve
                if redo.numel():
                    self.solve(redo)
            else:
                self.solve(pts)
            changed, cert, nband = self.oracle(pts)
            self.certified[pts] = cert[pts] & self.exact[pts]
            # inexact restricted solves (iteration limit, refinement sign flip): once more with the float64 Gram
            inexact = pts[~self.exact[pts]]
            retry = inexact[~self.strict[inexact]]
            self.strict[retry] = True
            need = changed
            need[retry] = True
            info = dict(round=rnd, solved=int(pts.numel()), certified=int(self.certified.sum()),
                        inexact=int(inexact.numel()), support_changed=int(changed.sum()),
                        band_pairs=int(nband), max_support=int(self.ksize.max()),
                        median_violators_entering=_median(self._nviol),
                        seconds=round(time.perf_counter() - t0, 3))
            self.stats["rounds"].append(info)
            self._log(" ".join(f"{k}={v}" for k, v in info.items()))
        return self

    def to_csr(self):
        N = self.N
        kmax = self.supp.shape[1]
        c = self.coef.cpu().numpy()
        s = self.supp.cpu().numpy()
        mask = (c != 0) & (s >= 0)
        rows = np.repeat(np.arange(N), kmax).reshape(N, kmax)[mask]
        return sp.csr_matrix((c[mask], (rows, s[mask])), shape=(N, N))


# ----------------------------------------------------------------------------------------------------------------
# the reference-style per-point solver
# ----------------------------------------------------------------------------------------------------------------


def _exact_point(G, b, atoms, y, X, at, l2, c_init, tol, max_iter=30):
    """numpy float64 sign-pattern step + primal active-set rule for one restricted problem."""
    K = b.shape[0]
    A = c_init != 0
    s = np.sign(c_init)
    for _ in range(max_iter):
        c = np.zeros(K)
        ia = np.flatnonzero(A)
        if ia.size:
            M = G[np.ix_(ia, ia)] + l2 * np.eye(ia.size)
            c[ia] = np.linalg.solve(M, b[ia] - at * s[ia])
        bad = A & (np.sign(c) != s)
        g = b - G @ c
        viol = (~A) & (np.abs(g) > at * (1.0 + 0.25 * tol))
        if not bad.any() and not viol.any():
            return c, True
        if bad.any():
            A = A & ~bad
        else:
            A = A | viol
            s = np.where(viol, np.sign(g), s)
    return c_init, False


def _per_point(X, *, gamma, tau, gamma_nz, support_size, max_rounds, tol, verbose):
    from sklearn.linear_model import ElasticNet

    X64 = np.asarray(X, dtype=np.float64)
    N, D = X64.shape
    K0 = min(support_size, N - 1)
    rows, cols, vals = [], [], []
    n_cert = 0
    iterator = range(N)
    if verbose:
        from tqdm import tqdm

        iterator = tqdm(iterator, desc="EnSC per-point", mininterval=2.0)
    for i in iterator:
        y = X64[i]
        corr = X64 @ y
        corr[i] = 0.0
        acorr = np.abs(corr)
        alpha = acorr.max() / tau / gamma if gamma_nz else 1.0 / gamma
        at, l2 = alpha * tau, alpha * (1.0 - tau)
        acorr[i] = -1.0
        K = K0
        supp = np.argpartition(-acorr, K - 1)[:K]
        c_prev = None
        certified = False
        for _ in range(max_rounds):
            XS = X64[supp]
            G = XS @ XS.T
            b = XS @ y
            model = ElasticNet(alpha=alpha / D, l1_ratio=tau, fit_intercept=False, precompute=G, max_iter=20000,
                               tol=1e-10, selection="cyclic", warm_start=c_prev is not None)
            if c_prev is not None:
                model.coef_ = c_prev.copy()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                model.fit(XS.T, y)
            c, ok = _exact_point(G, b, supp, y, X64, at, l2, model.coef_.copy(), tol)
            c_supp = supp
            r = y - c @ XS
            g = np.abs(X64 @ r)
            g[i] = -1.0
            g[supp[c != 0]] = -1.0
            if g.max() <= at * (1.0 + tol):
                certified = ok
                break
            act = supp[c != 0]
            if act.size > 0.8 * K:
                K = min(N - 1, (3 * K + 1) // 2)
            nfree = K - act.size
            top = np.argpartition(-g, nfree - 1)[:nfree]
            supp = np.concatenate([act, top])
            c_prev = np.concatenate([c[c != 0], np.zeros(nfree)])
        nz = c != 0
        rows.append(np.full(int(nz.sum()), i))
        cols.append(c_supp[nz])
        vals.append(c[nz])
        n_cert += int(certified)
    C = sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(N, N))
    return C, n_cert


def _cpu_has_native_bf16():
    """True when the CPU multiplies bfloat16 natively (AVX512-BF16 or AMX). Without it a bfloat16 matmul is
    emulated and ~8x *slower* than float32 (measured on an AVX2 EPYC: 4.7 vs 39 GFLOP/s)."""
    try:
        with open("/proc/cpuinfo") as fh:
            flags = next((ln for ln in fh if ln.startswith("flags")), "")
    except OSError:
        return False
    return any(f in flags.split() for f in ("avx512_bf16", "amx_bf16"))


def _resolve_oracle_dtype(oracle_dtype, device="cpu"):
    """"auto": bfloat16 on CPUs that have it natively, float32 elsewhere (and on CUDA, where the float32 oracle
    with TF32 off is already fast and its error band narrow)."""
    if oracle_dtype == "auto":
        return "bfloat16" if torch.device(device).type == "cpu" and _cpu_has_native_bf16() else "float32"
    return oracle_dtype


def elastic_net_coef(X, gamma=50.0, tau=0.9, gamma_nz=True, algorithm="active_set", support_size=100,
                     max_rounds=20, tol=1e-3, block_size=2048, oracle_dtype="auto", device="cpu",
                     verbose=False, return_info=False, oracle_passes=1):
    """EnSC coefficients of ``X`` (rows are points, used as given: no normalisation here) as an (n, n) CSR.

    See the module docstring for the problem, the conventions and the algorithms. ``algorithm="restricted"``
    (and ``"active_set"`` with ``max_rounds=0``, the same thing) solves every point's elastic net exactly on its
    ``support_size`` most correlated atoms and certifies nothing outside them (:mod:`._ensc_fast`);
    ``algorithm="refined"`` adds ``oracle_passes`` oracle passes, each followed by the re-solve of the points it
    found violating, without a check after the last one (``guarantee="partial"``: the points that pass certified,
    the re-solved ones not). With ``return_info`` also returns a dict: ``algorithm`` (the one that ran),
    ``guarantee`` ("certified", "partial" or "restricted"), ``n_uncertified``, ``certified_fraction``, per-round
    statistics and per-stage times (``"active_set"`` up to 12,288 points: the whole-dictionary start's time as
    ``times["pivot"]``, ``pivot_unfinished`` / ``pivot_inexact``: the points it left to the rounds, and
    ``pivot_kernel``: "compiled" where the C kernel ran, else "torch").

    ``device`` ("cpu", "cuda", "cuda:N", "auto" or a torch.device): where the batched solvers run (every tensor they
    make lands there; TF32 is off inside them). ``"per_point"`` runs on the CPU only. The result is a CPU CSR.
    """
    if algorithm not in ("active_set", "refined", "restricted", "per_point"):
        raise ValueError(f"algorithm must be 'active_set', 'refined', 'restricted' or 'per_point', got {algorithm!r}")
    device = _solver_device(device, algorithm)
    X = np.asarray(X, dtype=np.float32)
    N = X.shape[0]
    t0 = time.perf_counter()
    if algorithm == "refined" and int(oracle_passes) == 0:
        algorithm = "restricted"
    if algorithm in ("restricted", "refined") or (algorithm == "active_set" and max_rounds == 0):
        from ._ensc_fast import restricted_elastic_net

        passes = int(oracle_passes) if algorithm == "refined" else 0
        C, info = restricted_elastic_net(X, gamma=gamma, tau=tau, gamma_nz=gamma_nz,
                                         support_size=min(int(support_size), N - 1), tol=tol,
                                         block_size=block_size, oracle_passes=passes, oracle_dtype=oracle_dtype,
                                         device=device, verbose=verbose)
        n_cert = info.pop("n_certified")
        info.update(algorithm="refined" if passes else "restricted", guarantee="partial" if passes else "restricted",
                    oracle_passes=passes, n_uncertified=N - n_cert, certified_fraction=n_cert / N,
                    seconds=time.perf_counter() - t0)
        return (C, info) if return_info else C
    if algorithm == "active_set":
        with _on_device(device):
            solver = _ActiveSetSolver(X, gamma=gamma, tau=tau, gamma_nz=gamma_nz, support_size=support_size,
                                      max_rounds=max_rounds, tol=tol, block_size=block_size,
                                      oracle_dtype=oracle_dtype, device=device, verbose=verbose).run()
            C = solver.to_csr()
        n_cert = int(solver.certified.sum())
        info = dict(solver.stats)
        info["times"] = {k: round(v, 3) for k, v in info["times"].items()}
    else:
        C, n_cert = _per_point(X, gamma=gamma, tau=tau, gamma_nz=gamma_nz, support_size=support_size,
                               max_rounds=max_rounds, tol=tol, verbose=verbose)
        info = {}
    info.update(algorithm=algorithm, guarantee="certified", n_uncertified=N - n_cert, certified_fraction=n_cert / N,
                seconds=time.perf_counter() - t0)
    return (C, info) if return_info else C


class ElasticNetSubspaceClustering(SelfExpressiveClustering):
    """Elastic net subspace clustering (EnSC) with an exact, batched, oracle-certified active-set solver (and, for
    large N, the same exact solves on top-K supports refined by one oracle pass; ``guarantee_`` says which).

    Parameters
    ----------
    n_clusters : int
    gamma : float, > 1 when ``gamma_nz`` (else the solution is zero).
    tau : float in (0, 1], the l1 share of the elastic net (senet.txt's lambda). tau = 1 is the Lasso (SSC-BP);
        the solution is unique only for tau < 1.
    gamma_nz : bool. True: alpha_i = max_{j != i} |<x_j, x_i>| / (tau gamma) (EnSC reference). False:
        alpha = 1 / gamma, i.e. senet.txt's loss gamma/2 ||r||^2 + r(c) (its Table 1 uses this).
    algorithm : {"auto", "active_set", "refined", "restricted", "per_point"}, default "auto"
        What is solved and what is guaranteed (the fitted ``algorithm_`` and ``guarantee_`` say which ran):

        - ``"active_set"``: the EnSC problem on the whole dictionary, every row **certified** optimal (module
          docstring); ``certified_fraction_`` is the share of rows certified within ``max_rounds``.
        - ``"refined"``: ``"restricted"`` (below), then ``oracle_passes`` oracle passes over the whole dictionary,
          each followed by the exact re-solve of the points it found violating, on supports made of their active
          atoms and their atoms of largest ``|<x_j, r_i>|`` (violators first); no check after the last re-solve
          (``guarantee_ = "partial"``): the points the last pass found free of violators are **certified**
          (``certified_fraction_``), the re-solved ones are exact on their new supports but **not certified**.
          On MNIST-70k one pass lifts the restricted ACC 0.963 to EnSC's 0.978 (``benchmarks/ensc_fast.py``).
        - ``"restricted"``: every point's elastic net restricted to its ``support_size`` most correlated atoms
          (exact top-K of ``|<x_j, x_i>|``), each solved exactly; **not certified** against the other atoms
          (``certified_fraction_`` 0). One symmetric matmul sweep and one batch of small solves. Equal to
          ``"active_set"`` when ``support_size >= n_samples - 1`` (so is ``"refined"``).
        - ``"auto"``: ``"refined"`` when ``n_samples > 8000``, else ``"active_set"``.
        - ``"per_point"``: the reference-style loop, one point at a time, certified (for checking and timing).
    support_size : int or None, default None
        ``"active_set"`` / ``"per_point"``: initial active-support size K of every point (grows 1.5x when the
        active atoms fill 80 %); None means 100. ``"restricted"`` / ``"refined"``: the size K of the initial
        top-K supports; None means 50 (measured on MNIST / Fashion-MNIST, ``benchmarks/ensc_fast.py``).
    max_rounds : int, oracle rounds of ``"active_set"``; points still violating afterwards are reported in
        ``n_uncertified_``. ``max_rounds=0`` (with ``"active_set"`` or ``"auto"``) skips the oracle: the same as
        ``algorithm="restricted"``.
    oracle_passes : int, default 1, oracle passes of ``"refined"`` (0: the same as ``"restricted"``).
    tol : float, relative slack of the certificate: a non-active atom violates when |<x_j, r>| > alpha tau (1 + tol).
    n_nonzero : int or None, keep only the n_nonzero largest |c| per row of ``coef_`` (None: all).
    block_size : int, points per matmul tile in the support search and the oracle (memory ~ 6 * block_size * N bytes).
    oracle_dtype : {"auto", "bfloat16", "float32"}, precision of the screening matmuls. "auto": bfloat16 on CPUs
        with native bfloat16 (AVX512-BF16 / AMX, where it is faster), else float32 (on AVX2-only CPUs bfloat16 is
        emulated and ~8x slower). The certificate stays exact either way (error bound and float64 rechecks).
    affinity, n_neighbors, n_components, n_init, normalize, random_state : see :class:`SelfExpressiveClustering`.
    verbose : bool, print one line per oracle round (per-point: a progress bar).
    device : str or torch.device, default "auto", where the batched solvers run: "auto" (CUDA when torch sees it,
        else the CPU), "cpu", "cuda", "cuda:N". Every solver tensor lives there and TF32 is off inside the
        solvers (the certificate's error bounds assume IEEE float32); the support search, the solves and the oracle
        are dense linear algebra. The graph and spectral steps run on the CPU (sparse). "cuda" without CUDA: a
        ``ValueError`` naming the fix. ``algorithm="per_point"`` runs on the CPU only.

    Fitted attributes: ``coef_``, ``affinity_``, ``labels_``, ``timings_`` (``coef`` is split further in
    ``solver_info_["times"]``), ``algorithm_`` (the algorithm that ran), ``guarantee_`` ("certified": rows
    checked on the whole dictionary; "partial": every row exact on its final support, the ``certified_fraction_``
    of them certified on the whole dictionary, the others not; or "restricted": exact on each point's support
    only), ``support_size_``, ``n_uncertified_``, ``certified_fraction_``, ``solver_info_``.
    """

    # registry (selfexpress.models.registry)
    _method_name = "ensc"
    _input_kind = "features"
    _model_kind = None
    _presets = {
        "synthetic": dict(gamma=50.0, tau=0.9),
        # the fast default (algorithm="auto": refined, K = 50, one oracle pass, above 8,000 points; certified
        # below) with |C| + |C^T|; restricted (no pass), same features: MNIST-test 0.957 vs 0.941 (3-NN),
        # Fashion-MNIST-full 0.646 vs 0.589, MNIST-full 0.959 vs 0.965; certified, 2,000 MNIST-test points: 0.942
        # vs 0.916 (benchmarks/ensc_fast.py, benchmarks/peers.py)
        "image": dict(gamma=200.0, tau=0.9, gamma_nz=True, n_components=15, affinity="symmetric"),
    }
    #: the EnSC reference's MNIST setting: certified solver, 3-NN graph (MNIST-full 0.980, ~20 min on 2 cores)
    _paper_preset = dict(gamma=200.0, tau=0.9, gamma_nz=True, n_components=15, algorithm="active_set",
                         affinity="knn")

    def __init__(self, n_clusters=8, *, gamma=50.0, tau=0.9, gamma_nz=True, algorithm="auto", support_size=None,
                 max_rounds=20, tol=1e-3, n_nonzero=None, block_size=2048, oracle_dtype="auto",
                 affinity="symmetric", n_neighbors=3, n_components=None, n_init=20, normalize=True,
                 random_state=None, verbose=False, device="auto", oracle_passes=1):
        self.n_clusters = n_clusters
        self.gamma = gamma
        self.tau = tau
        self.gamma_nz = gamma_nz
        self.algorithm = algorithm
        self.support_size = support_size
        self.max_rounds = max_rounds
        self.tol = tol
        self.n_nonzero = n_nonzero
        self.block_size = block_size
        self.oracle_dtype = oracle_dtype
        self.affinity = affinity
        self.n_neighbors = n_neighbors
        self.n_components = n_components
        self.n_init = n_init
        self.normalize = normalize
        self.random_state = random_state
        self.verbose = verbose
        self.device = device
        self.oracle_passes = oracle_passes

    def _check_params(self):
        gamma = check_positive(self.gamma, "gamma")
        tau = check_fraction(self.tau, "tau")
        if tau == 0.0:
            raise ValueError("tau must be in (0, 1]; tau = 0 is ridge regression, not a sparse self-expression")
        if self.gamma_nz and gamma <= 1.0:
            raise ValueError(f"gamma must be > 1 when gamma_nz=True (else every coefficient is zero), got {gamma}")
        if self.algorithm not in _ALGORITHMS:
            raise ValueError(f"algorithm must be one of {', '.join(map(repr, _ALGORITHMS))}, got {self.algorithm!r}")
        if self.support_size is not None:
            check_positive(self.support_size, "support_size", integer=True)
        check_positive(self.max_rounds, "max_rounds", integer=True, allow_zero=self.algorithm != "per_point")
        check_positive(self.oracle_passes, "oracle_passes", integer=True, allow_zero=True)
        check_positive(self.tol, "tol", allow_zero=True)
        if self.n_nonzero is not None:
            check_positive(self.n_nonzero, "n_nonzero", integer=True)
        check_positive(self.block_size, "block_size", integer=True)
        if self.oracle_dtype not in ("auto", "bfloat16", "float32"):
            raise ValueError(f"oracle_dtype must be 'auto', 'bfloat16' or 'float32', got {self.oracle_dtype!r}")
        _solver_device(self.device, self.algorithm)  # refused at the door of fit, before any work

    def _check_common(self, X):
        self._check_params()
        return super()._check_common(X)

    def _resolve(self, n_samples):
        """(algorithm, support size) that a fit on ``n_samples`` points runs."""
        algo = self.algorithm
        if algo == "auto":
            algo = "refined" if n_samples > _AUTO_REFINED_ABOVE else "active_set"
        # max_rounds=0 skips the oracle whatever "auto" picked; so does oracle_passes=0 for "refined"
        if (self.algorithm in ("auto", "active_set") and self.max_rounds == 0) or (
                algo == "refined" and self.oracle_passes == 0):
            algo = "restricted"
        K = self.support_size
        if K is None:
            K = _DEFAULT_SUPPORT_SIZE if algo in ("restricted", "refined") else 100
        return algo, int(min(int(K), max(1, n_samples - 1)))

    def _memory_estimate(self, n_samples, n_features):
        N, D = n_samples, n_features
        algo, K = self._resolve(N)
        if algo == "per_point":
            return [(8 * N * D + 64 * N, f"the EnSC per-point solver on {N} x {D} float64 data",
                     "reduce n_samples or n_features (e.g. PCA)")]
        B = min(int(self.block_size), N)
        gram = 4 * N * N if _gathers_gram(N) else 0  # the float32 X X^T (see _ActiveSetSolver.solve)
        gram_txt = f", float32 Gram {N} x {N}" if gram else ""
        if algo in ("restricted", "refined"):
            # support sweep: tile + mask 5 B N, lists 40 N (K + 8); the solves: float64 residuals and coefficients
            # 16 N (D + K); the oracle pass: a B x N tile and a padded copy of the data (8 B N + 4 N D at most)
            return [(5 * B * N + 40 * N * (K + 8) + 28 * N * D + 16 * N * K + 8 * max(64, min(1024, B)) * K * K
                     + gram,
                     f"{algo} EnSC on {N} points (block_size x n_samples tiles {B} x {N}, supports {N} x {K}"
                     f"{gram_txt})",
                     f"lower block_size (now {self.block_size})")]
        if N <= _PIVOT_MAX_N:
            # the whole-dictionary start: the float32 and float64 Grams, a float64 copy of the data, and per worker
            # a few (block, N) float32 rows
            gram = 12 * N * N + 8 * N * D + 10 * N * min(N, _pivot_block_size(N, B) * _PIVOT_MAX_WORKERS)
            gram_txt = f", float32 and float64 Grams {N} x {N}"
        return [(6 * B * N + 16 * N * K + 14 * N * D + 8 * max(64, min(1024, B)) * K * K + gram,
                 f"the EnSC active-set solver on {N} points (block_size x n_samples tiles {B} x {N}, "
                 f"n_samples x support_size supports {N} x {K}{gram_txt})",
                 f"lower block_size (now {self.block_size}) or support_size (now {self.support_size or 100})")]

    def _fit_coef(self, X):
        algo, K = self._resolve(X.shape[0])
        C, info = elastic_net_coef(
            X, gamma=self.gamma, tau=self.tau, gamma_nz=self.gamma_nz, algorithm=algo,
            support_size=K, max_rounds=self.max_rounds, tol=self.tol, block_size=self.block_size,
            oracle_dtype=self.oracle_dtype, device=self.device, verbose=self.verbose,
            return_info=True,
            oracle_passes=self.oracle_passes,
        )
        self.algorithm_ = info["algorithm"]
        self.guarantee_ = info["guarantee"]
        self.support_size_ = K
        self.n_uncertified_ = int(info["n_uncertified"])
        self.certified_fraction_ = float(info["certified_fraction"])
        self.solver_info_ = info
        if self.n_uncertified_ and self.verbose and self.guarantee_ == "certified":
            print(f"[EnSC] {self.n_uncertified_} point(s) not certified after {self.max_rounds} rounds")
        if self.n_nonzero is not None:
            C = keep_largest_per_row(C, int(self.n_nonzero))
        return C
