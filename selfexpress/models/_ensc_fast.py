"""Restricted EnSC for large N: exact top-K supports by one symmetric sweep, then exact restricted elastic nets.

Private module of :mod:`selfexpress.models.ensc` (``algorithm="restricted"``, and ``algorithm="refined"``: the
same, then oracle passes that re-support and re-solve the violating points, see :func:`restricted_elastic_net`).
What is solved, for every point
``y = x_i`` (row convention: row i of C codes x_i)::

    S_i = the K atoms j != i of largest |<x_j, x_i>|   (float64 ranking, ties to the lower index)
    min_{c supported on S_i}  0.5 * ||y - sum_{j in S_i} c_j x_j||^2 + alpha_i * (tau ||c||_1 + (1 - tau)/2 ||c||^2)

with EnSC's ``alpha_i`` (``gamma_nz``: ``max_{j != i} |<x_j, x_i>| / (tau gamma)``; the maximum lies in ``S_i``, so
it is the full-dictionary value). Each restricted problem is solved exactly (the batched active-set method and
float64 refinement of :mod:`.ensc`); nothing is checked against atoms outside ``S_i``: the result is the EnSC
solution *restricted to* ``S_i``, not certified on the whole dictionary. When ``K >= N - 1`` it is the full EnSC
solution.

The support search computes every inner product once (``X_I X_{[s0, N)}^T`` for consecutive row panels I, so half
the flops of a full ``X X^T``, into one reused tile buffer), keeps per row a running list of its ``K + 8`` largest ``|<x_i, x_j>|`` and merges
in only the products above the row's current ``(K+8)``-th value (a valid lower bound of the final one). The first
panel seeds every row's list exactly. The float32 ranking is then made exact: a row whose ``K``-th and
``(K+1)``-th float32 values are closer than twice the float32 error bound ``(D + 2) 2^-24 ||x_i|| max_j ||x_j||`` is
re-ranked in float64 on its ``K + 8`` candidates, and, if that cannot decide either, against the whole dictionary.
Memory is O(block N + N K); no N x N matrix is formed.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from .ensc import _ActiveSetSolver, _median, _on_device, _single_thread

__all__ = ["top_correlated", "restricted_elastic_net"]

_MARGIN = 8  # extra candidates kept per row beyond K (float64 re-ranking of near-ties)


def _merge(vals, idx, rows, cols, v):
    """Merge candidate triples (rows, cols, v) into the per-row lists ``vals``/``idx`` (in place).

    Lists keep, per row, the ``kk`` largest values (``vals`` >= 0; -1 marks an empty slot), sorted by decreasing
    value; among equal float32 values the earlier entry wins (the list before the candidates, candidates in their
    order; deterministic; exact ties are settled later in float64). One stable sort of the candidates by a
    composite int64 key (row, value bits), each row's ``kk`` best of them, then a stable row-wise sort of
    (list, those) of width ``2 kk``.
    """
    if rows.numel() == 0:
        return
    N, kk = vals.shape
    # candidate values are >= 0 (products above a threshold >= -1; the diagonal is -inf): they order like their
    # int32 bit patterns
    key = rows * (2 ** 32) + (2 ** 32 - 1 - v.view(torch.int32).to(torch.int64))
    o = torch.sort(key, stable=True).indices
    rows, cols, v = rows[o], cols[o], v[o]
    counts = torch.bincount(rows, minlength=N)
    u = torch.nonzero(counts).squeeze(1)
    start = torch.cumsum(counts, 0) - counts
    rank = torch.arange(rows.numel()) - start[rows]
    keep = rank < kk
    pos = torch.zeros(N, dtype=torch.int64)
    pos[u] = torch.arange(u.numel())
    nu = u.numel()
    cv = torch.full((nu, kk), -1.0, dtype=vals.dtype)
    ci = torch.full((nu, kk), -1, dtype=idx.dtype)
    pr = pos[rows[keep]]
    cv[pr, rank[keep]] = v[keep]
    ci[pr, rank[keep]] = cols[keep]
    av = torch.cat([vals[u], cv], 1)
    ai = torch.cat([idx[u], ci], 1)
    o = torch.sort(av, dim=1, descending=True, stable=True).indices[:, :kk]
    vals[u] = torch.gather(av, 1, o)
    idx[u] = torch.gather(ai, 1, o)


def _search_float32(X, kk, block_size, buffer_cap=4_000_000):
    """Per row the ``kk`` largest float32 ``|<x_i, x_j>|`` (j != i): (vals (N, kk) float32, idx (N, kk) int64),
    sorted by decreasing value (-1 / -1 padding when N - 1 < kk). One symmetric sweep (see the module docstring)."""
    B = int(block_size)
    nthreads = torch.get_num_threads()
    try:
        return _sweep(X, kk, B, buffer_cap, nthreads)
    finally:
        torch.set_num_threads(nthreads)


def _sweep(X, kk, B, buffer_cap, nthreads):
    N = X.shape[0]
    vals = torch.full((N, kk), -1.0, dtype=torch.float32)
    idx = torch.full((N, kk), -1, dtype=torch.int64)
    buf = []
    nbuf = 0
    n_cand = 0
    # one tile buffer and one mask buffer for all panels: a fresh (b, N) tile per panel costs about as much in page
    # faults as its matmul
    tile = torch.empty(min(B, N) * N, dtype=torch.float32)
    maskbuf = torch.empty(min(B, N) * N, dtype=torch.bool)
    for s0 in range(0, N, B):
        s1 = min(N, s0 + B)
        b = s1 - s0
        torch.set_num_threads(nthreads)
        S = tile[:b * (N - s0)].view(b, N - s0)
        torch.mm(X[s0:s1], X[s0:].T, out=S)  # (b, N - s0): rows I against atoms s0..N-1 (all threads)
        # the rest are memory-bound loops of small ops: one thread (OpenMP barriers cost more than they save,
        # and far more when the cores are shared)
        torch.set_num_threads(1)
        S.abs_()
        ar = torch.arange(b)
        S[ar, ar] = float("-inf")  # self excluded
        if s0 == 0:
            # first panel: exact lists for its own rows and for every later row against atoms 0..b-1
            k0 = min(kk, N - s0)
            v, i = torch.topk(S, k0, dim=1, sorted=True)
            ok = torch.isfinite(v)
            vals[:b, :k0] = torch.where(ok, v, torch.full_like(v, -1.0))
            idx[:b, :k0] = torch.where(ok, i, torch.full_like(i, -1))
            if N > s1:
                St = S[:, b:].T.contiguous()
                k1 = min(kk, b)
                v, i = torch.topk(St, k1, dim=1, sorted=True)
                vals[s1:, :k1] = v
                idx[s1:, :k1] = i
                del St
            continue
        thr = vals[:, kk - 1]  # current kk-th value: a lower bound of the final one (-1 while the list is short)
        # row part: rows I, atoms >= s0
        m = maskbuf[:S.numel()].view(S.shape)
        torch.ge(S, thr[s0:s1].unsqueeze(1), out=m)
        rI, cI = torch.nonzero(m, as_tuple=True)
        nb = rI.numel()
        if rI.numel():
            buf.append((rI + s0, cI + s0, S[rI, cI]))
        # column part: rows j >= s1 gain atoms in I
        if N > s1:
            T = S[:, b:]
            m = maskbuf[:T.numel()].view(T.shape)
            torch.ge(T, thr[s1:].unsqueeze(0), out=m)
            iJ, jJ = torch.nonzero(m, as_tuple=True)
            nb += iJ.numel()
            if iJ.numel():
                buf.append((jJ + s1, iJ + s0, T[iJ, jJ]))
        nbuf += nb
        n_cand += nb
        if nbuf > buffer_cap or s1 == N:
            if buf:
                rows, cols, v = (torch.cat(t) for t in zip(*buf))
                _merge(vals, idx, rows, cols, v)
            buf, nbuf = [], 0
    if buf:
        rows, cols, v = (torch.cat(t) for t in zip(*buf))
        _merge(vals, idx, rows, cols, v)
    return vals, idx, n_cand


def top_correlated(X, k, *, block_size=2048, return_info=False):
    """Each point's ``k`` most correlated atoms: the ``k`` indices ``j != i`` of largest ``|<x_j, x_i>|``.

    Parameters
    ----------
    X : array-like or torch.Tensor of shape (n_samples, n_features), float32
        Rows are points.
    k : int
        Atoms per point, ``1 <= k <= n_samples - 1``.
    block_size : int, default 2048
        Rows per panel of the sweep; memory ~ 5 * block_size * n_samples bytes.
    return_info : bool, default False
        Also return a dict with the number of merged candidates and of rows re-ranked in float64.

    Returns
    -------
    idx : torch.Tensor of shape (n_samples, k), int64
        Row i: the support of point i, sorted by decreasing ``|<x_j, x_i>|`` as computed in float32. The *set* is
        exact for the float32 data under the float64 ranking with ties to the lower index (see the module docstring).
    info : dict, only with ``return_info``.
    """
    X = torch.as_tensor(np.ascontiguousarray(X, dtype=np.float32)) if not isinstance(X, torch.Tensor) else X
    X = X.to(torch.float32).contiguous()
    N, D = X.shape
    k = int(k)
    if not 1 <= k <= N - 1:
        raise ValueError(f"k must be in [1, n_samples - 1] = [1, {N - 1}], got {k}")
    kk = min(k + _MARGIN, N - 1)
    with _on_device(X.device):  # everything on X's device
        vals, idx, n_cand = _search_float32(X, kk, block_size)
        with _single_thread():
            return _exact_sets(X, k, kk, vals, idx, n_cand, return_info)


def _exact_sets(X, k, kk, vals, idx, n_cand, return_info):
    """Make the float32 top-kk lists exact K-sets (float64 where float32 cannot decide); see the module docstring."""
    N, D = X.shape
    info = {"candidates_merged": int(n_cand), "rows_reranked": 0, "rows_full_float64": 0}
    norms = X.norm(dim=1).double()
    nmax = float(norms.max()) * (1 + 2.0 ** -20)
    E = 2 * (D + 2) * 2.0 ** -24 * norms * nmax  # twice the bound on |fl32 product - exact| for row i
    v = vals.double()
    top = torch.empty(N, dtype=torch.float64)  # max_j |<x_j, x_i>| in float64
    # exact float64 products where float32 cannot decide: near the maximum, and near the K-th value
    topband = v >= (v[:, :1] - E.unsqueeze(1))
    t = v[:, k - 1:k]
    kband = (v >= t - E.unsqueeze(1)) & (v <= t + E.unsqueeze(1)) if kk > k else torch.zeros_like(topband)
    need = topband | kband
    r, pcol = torch.nonzero(need, as_tuple=True)
    g = torch.full((N, kk), float("nan"), dtype=torch.float64)
    for c0 in range(0, r.numel(), 1 << 13):  # 8,192 pairs: two (8192, D) float64 gathers at a time
        rs, ps = r[c0:c0 + (1 << 13)], pcol[c0:c0 + (1 << 13)]
        g[rs, ps] = (X[idx[rs, ps]].double() * X[rs].double()).sum(1).abs()
    top = torch.where(topband, g, torch.full_like(g, -1.0)).amax(1)
    info["products_float64"] = int(r.numel())
    full = []
    if kk > k:
        amb = torch.nonzero(kband.sum(1) > 1).squeeze(1)  # more than the K-th atom itself inside the band
        info["rows_reranked"] = int(amb.numel())
        if amb.numel():
            va, ia, ba, ga = v[amb], idx[amb], kband[amb], g[amb]
            above = va > t[amb] + E[amb].unsqueeze(1)  # surely in: fewer than K atoms can exceed them
            nfree = k - above.sum(1)
            # band atoms by float64 value, descending, ties to the lower index
            score = torch.where(ba, ga, torch.full_like(ga, -1.0))
            o = torch.argsort(ia, dim=1, stable=True)
            o = torch.gather(o, 1, torch.argsort(-torch.gather(score, 1, o), dim=1, stable=True))
            rank = torch.empty_like(o)
            rank.scatter_(1, o, torch.arange(kk).expand_as(o).contiguous())
            sel = above | (ba & (rank < nfree.unsqueeze(1)))
            pos = torch.argsort((~sel).to(torch.int8), dim=1, stable=True)[:, :k]
            idx[amb, :k] = torch.gather(ia, 1, pos)
            # all band atoms must be candidates: the list's last value lies below the band
            unsure = va[:, kk - 1] >= t[amb, 0] - E[amb]
            full = amb[unsure].tolist()
    if kk < N - 1:  # the maximum too must be among the candidates
        full = sorted(set(full) | set(torch.nonzero(v[:, kk - 1] >= v[:, 0] - E).squeeze(1).tolist()))
    if full:
        full = torch.as_tensor(full, dtype=torch.int64)
        X64 = X.double()
        for c0 in range(0, full.numel(), 256):
            rows = full[c0:c0 + 256]
            G = (X64[rows] @ X64.T).abs_()
            G[torch.arange(rows.numel()), rows] = -1.0
            o = torch.argsort(-G, dim=1, stable=True)[:, :k]  # ties to the lower index
            idx[rows, :k] = o
            top[rows] = G.amax(1)
        info["rows_full_float64"] = int(full.numel())
    out = idx[:, :k].contiguous()
    info["max_abs_product"] = top
    return (out, info) if return_info else out


def restricted_elastic_net(X, *, gamma, tau, gamma_nz, support_size, tol, block_size, oracle_passes=0,
                           oracle_dtype="auto", device="cpu", verbose=False):
    """Restricted EnSC coefficients (see the module docstring): ``(C csr (N, N), info dict)``.

    ``oracle_passes = R > 0`` (``algorithm="refined"``): after the restricted solves, R times: one oracle pass
    over the whole dictionary for the points solved last, which certifies the points without violators and gives
    the others new supports (their active atoms, then their atoms of largest ``|<x_j, r_i>|``, violators first),
    then those points are solved again. The points solved after the last pass are *not* certified.

    ``info``: ``support_size``, ``n_inexact`` (rows whose restricted solve did not finish even with the float64
    Gram), ``n_certified``, per-stage ``times`` (``support_search``, ``solve``, ``oracle``), per-round statistics
    and the search counters (``candidates_merged``, ``rows_reranked``, ``rows_full_float64``). ``device``: where
    the solvers run (a torch device; ``C`` is a CPU CSR either way).
    """
    with _on_device(device):
        solver = _RestrictedSolver(X, gamma=gamma, tau=tau, gamma_nz=gamma_nz, support_size=support_size,
                                   max_rounds=0, tol=tol, block_size=block_size, oracle_dtype=oracle_dtype,
                                   device=device, verbose=verbose)
        solver.oracle_passes = int(oracle_passes)
        solver.run()
        C = solver.to_csr()
    info = dict(solver.stats)
    info["times"] = {k: round(v, 3) for k, v in info["times"].items()}
    info["support_size"] = int(solver.K0)
    info["n_inexact"] = int((~solver.exact).sum())
    info["n_certified"] = int(solver.certified.sum())
    return C, info


class _RestrictedSolver(_ActiveSetSolver):
    """The active-set solver's exact restricted solves on exact top-K supports; ``oracle_passes`` oracle passes,
    each followed by the re-solve of the points it gave new supports, and no check after the last re-solve."""

    oracle_passes = 0

    def init_supports(self):
        t0 = time.perf_counter()
        N, K = self.N, self.K0
        supp, sinfo = top_correlated(self.X, K, block_size=self.block, return_info=True)
        self._tick("support_search", t0)
        top = sinfo.pop("max_abs_product")
        alpha = top / self.tau / self.gamma if self.gamma_nz else torch.full((N,), 1.0 / self.gamma, dtype=torch.float64)
        self._start_state(supp, alpha)
        self.stats.update(sinfo)

    def _solve_exact(self, pts):
        """Solve the points ``pts``; a restricted solve that did not finish with the float32 Gram: once more, from
        zero, with the float64 Gram. Returns the number retried."""
        self.solve(pts)
        retry = pts[~self.exact[pts]]
        retry = retry[~self.strict[retry]]
        if retry.numel():
            self.strict[retry] = True
            self.coef[retry] = 0.0
            self.solve(retry)
        return int(retry.numel())

    def run(self):
        self.init_supports()
        t0 = time.perf_counter()
        pts = torch.arange(self.N)
        nretry = self._solve_exact(pts)
        self.stats["rounds"].append(dict(round=0, solved=self.N, retried=nretry, certified=0,
                                         oracle=False, seconds=round(time.perf_counter() - t0, 3)))
        self._log(f"restricted solves: {self.N} points on {self.K0} atoms each, "
                  f"{nretry} retried in float64, {int((~self.exact).sum())} inexact")
        for rnd in range(1, self.oracle_passes + 1):
            if pts.numel() == 0:
                break
            t0 = time.perf_counter()
            checked = int(pts.numel())
            changed, cert, nband = self.oracle(pts)
            self.certified[pts] = cert[pts] & self.exact[pts]
            pts = torch.nonzero(changed).squeeze(1)
            self.certified[pts] = False
            nretry = self._solve_exact(pts)
            info = dict(round=rnd, checked=checked, certified=int(self.certified.sum()), solved=int(pts.numel()),
                        retried=nretry, band_pairs=int(nband), max_support=int(self.ksize.max()),
                        median_violators_entering=_median(self._nviol), oracle=True,
                        seconds=round(time.perf_counter() - t0, 3))
            self.stats["rounds"].append(info)
            self._log(" ".join(f"{k}={v}" for k, v in info.items()))
        return self
