"""Affinity graphs from self-expressive coefficients (sparse, never N x N dense)."""

from __future__ import annotations

import numbers
from collections import deque
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import scipy.sparse as sp
import torch
from sklearn.preprocessing import normalize

__all__ = ["affinity_from_coef", "knn_rows"]

_METHODS = ("symmetric", "knn")


def _check_coef(C, square):
    if sp.issparse(C):
        C = sp.csr_matrix(C)
    else:
        arr = np.asarray(C)
        if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
            raise ValueError(f"C must be a numeric matrix, got dtype {arr.dtype}")
        if arr.ndim != 2:
            raise ValueError(f"C must be 2-D, got shape {arr.shape}")
        C = sp.csr_matrix(arr)
    if np.iscomplexobj(C.data):
        raise ValueError("C is complex; expected real coefficients")
    if C.shape[0] == 0 or C.shape[1] == 0:
        raise ValueError(f"C is empty (shape {C.shape})")
    if square and C.shape[0] != C.shape[1]:
        raise ValueError(f"C must be square (n_samples, n_samples) for method='symmetric', got shape {C.shape}")
    if C.dtype not in (np.float32, np.float64):
        C = C.astype(np.float64)
    if not np.isfinite(C.data).all():
        raise ValueError("C contains NaN or infinity")
    if not C.has_canonical_format or not C.data.all():
        # sp.csr_matrix(C) shares the caller's arrays: clean a copy, never the caller's matrix
        C = C.copy()
        C.sum_duplicates()
        C.eliminate_zeros()
    return C


def _drop_diagonal(A):
    A = A.tocoo()
    keep = A.row != A.col
    out = sp.csr_matrix((A.data[keep], (A.row[keep], A.col[keep])), shape=A.shape)
    out.sum_duplicates()
    out.eliminate_zeros()
    return out


def knn_rows(X, n_neighbors, *, block_flops=2e7, dense_block_size=2**25, dense_threshold=0.02, n_jobs=None):
    """Exact ``n_neighbors`` nearest rows (Euclidean) of a sparse matrix, self excluded.

    Returns an (n, n_neighbors) int64 array of neighbour indices, closest first, ties broken by
    the smaller index. Uses ||a - b||^2 = ||a||^2 + ||b||^2 - 2 a.b, so per query row the ranking
    score is ``2 a.b - ||b||^2``, with the inner products from a blockwise sparse product
    ``X[block] @ X.T``. Nothing of size N x N is ever formed:

    - when the products are dense-ish (estimated density > ``dense_threshold``) each row block is
      densified into a (block, N) array of ``dense_block_size`` entries and reduced with
      ``torch.topk``; the row blocks' sparse products (scipy, which releases the GIL) run on
      ``n_jobs`` threads (None: ``torch.get_num_threads()``; fewer when memory is short), the top-k in order on
      the calling thread, so the result does not depend on ``n_jobs``. These products are the cost of the graph:
      sum_j nnz(column j)^2 multiply-adds, 7e10 for 70,000 rows of 1,000 non-zeros (SENet's ``n_nonzero``),
      about 8 minutes on one core;
    - otherwise the sparse product (blocks of about ``block_flops`` multiply-adds) is reduced with
      a segmented arg-max, and pairs without a shared non-zero column (a.b = 0) are ranked through
      the row norms only.
    """
    X = sp.csr_matrix(X)
    X.sum_duplicates()
    X.sort_indices()
    if X.dtype not in (np.float32, np.float64):
        X = X.astype(np.float64)
    n = X.shape[0]
    k = int(n_neighbors)
    if not 1 <= k < n:
        raise ValueError(f"n_neighbors={k} must be in [1, n_samples - 1] with n_samples={n}")
    sq = np.asarray(X.multiply(X).sum(axis=1), dtype=np.float64).ravel()
    XT = X.T.tocsr()
    col_nnz = np.diff(XT.indptr).astype(np.float64)
    pattern = sp.csr_matrix((np.ones_like(X.data, dtype=np.float64), X.indices, X.indptr), shape=X.shape)
    row_flops = pattern @ col_nnz
    out = np.empty((n, k), dtype=np.int64)
    if row_flops.sum() > dense_threshold * float(n) * n:
        _knn_dense(X, XT, sq, k, out, max(1, int(dense_block_size) // n), n_jobs)
        return out
    sq_order = np.argsort(sq, kind="stable")  # best non-overlapping candidates first
    sq_min = float(sq[sq_order[0]])
    cum = np.cumsum(row_flops + 1.0)
    start = 0
    while start < n:
        base = cum[start - 1] if start else 0.0
        stop = int(np.searchsorted(cum, base + block_flops, side="right"))
        stop = min(max(stop, start + 1), n)
        _knn_sparse_block(X, XT, sq, sq_order, sq_min, start, stop, k, out)
        start = stop
    return out


def _knn_workers(n_jobs, n_blocks, block_bytes):
    """Threads for the dense route's block products: ``n_jobs`` (None: torch's thread count), at most one per
    block, and at most as many as half the available memory holds (a block in flight keeps its product S and
    its dense scores, about 3 x ``block_bytes``)."""
    from .._memory import available_memory

    workers = torch.get_num_threads() if n_jobs is None else int(n_jobs)
    if workers < 1:
        raise ValueError(f"n_jobs must be a positive integer or None, got {n_jobs!r}")
    workers = min(workers, n_blocks)
    avail = available_memory()
    if avail is not None:
        workers = min(workers, max(1, int(avail // 2 // (3 * block_bytes)) - 1))
    return workers


def _knn_dense_scores(X, XT, negsq, start, stop):
    """Dense (stop - start, n) scores ``2 a.b - ||b||^2`` of rows ``start:stop`` against every row.

    scipy's row slice, product and densification run without the GIL, so blocks run in parallel on threads."""
    S = (X[start:stop] @ XT).tocsr()
    D = np.zeros((stop - start, X.shape[0]), dtype=X.dtype)
    S.toarray(out=D)
    del S
    D *= 2
    D += negsq
    return D


def _knn_dense(X, XT, sq, k, out, block_rows, n_jobs=None):
    n = X.shape[0]
    negsq = (-sq).astype(X.dtype)
    block_rows = min(block_rows, n)
    starts = range(0, n, block_rows)
    kk = min(k + 1, n)

    def reduce(start, D):
        stop = start + D.shape[0]
        b = stop - start
        r = np.arange(b)
        D[r, r + start] = -np.inf
        Dt = torch.from_numpy(D)
        vals, idx = torch.topk(Dt, kk, dim=1)
        res = idx[:, :k].numpy().astype(np.int64)
        if kk > k:  # a tie across the k-th place: resolve by the smaller index
            amb = torch.nonzero(vals[:, k - 1] == vals[:, k]).reshape(-1).numpy()
            for a in amb:
                row = D[a]
                cand = np.flatnonzero(row >= row[idx[a, k - 1].item()])
                res[a] = cand[np.lexsort((cand, -row[cand]))[:k]]
        out[start:stop] = res

    def scores(start):
        return _knn_dense_scores(X, XT, negsq, start, min(start + block_rows, n))

    workers = _knn_workers(n_jobs, len(starts), block_rows * n * X.dtype.itemsize)
    if workers == 1:
        for start in starts:
            reduce(start, scores(start))
        return
    # at most `workers` blocks in flight: their dense scores are the memory of this step
    with ThreadPoolExecutor(workers) as ex:
        todo = iter(starts)
        pending = deque()
        for start in todo:
            pending.append((start, ex.submit(scores, start)))
            if len(pending) == workers:
                break
        while pending:
            start, fut = pending.popleft()
            D = fut.result()
            nxt = next(todo, None)
            if nxt is not None:
                pending.append((nxt, ex.submit(scores, nxt)))
            reduce(start, D)
            del D


def _knn_sparse_block(X, XT, sq, sq_order, sq_min, start, stop, k, out):
    b = stop - start
    S = (X[start:stop] @ XT).tocsr()
    S.sum_duplicates()
    S.sort_indices()
    indptr = S.indptr.astype(np.int64)
    cols = S.indices.astype(np.int64)
    lens = np.diff(indptr)
    rows = np.repeat(np.arange(b, dtype=np.int64), lens)
    # score = 2 a.b - |b|^2 (larger = closer); the self pair is excluded
    score = 2.0 * S.data.astype(np.float64) - sq[cols]
    score[cols == rows + start] = -np.inf
    sel_col = np.full((b, k), -1, dtype=np.int64)
    sel_score = np.full((b, k), -np.inf)
    nonempty = lens > 0
    starts = indptr[:-1][nonempty]
    for t in range(k):
        if score.size == 0:
            break
        m = np.full(b, -np.inf)
        m[nonempty] = np.maximum.reduceat(score, starts)
        hit = np.flatnonzero((score == m[rows]) & np.isfinite(score))
        if hit.size == 0:
            break
        r = rows[hit]
        first = np.ones(hit.size, dtype=bool)
        first[1:] = r[1:] != r[:-1]
        hit, r = hit[first], r[first]
        sel_col[r, t] = cols[hit]
        sel_score[r, t] = score[hit]
        score[hit] = -np.inf
    # Pairs without shared columns score -|b|^2 >= -sq_min... at best -sq_min; rows whose k-th
    # overlap score does not beat that (or have fewer than k) need the exact merge below.
    need = np.flatnonzero(sel_score[:, k - 1] <= -sq_min)
    for r in need:
        i = start + r
        pat = cols[indptr[r]:indptr[r + 1]]
        cand = []
        L = k + 1
        while True:
            pref = sq_order[:L]
            pos = np.searchsorted(pat, pref)
            pos = np.minimum(pos, max(pat.size - 1, 0))
            inpat = (pat[pos] == pref) if pat.size else np.zeros(pref.size, dtype=bool)
            cand = pref[~inpat & (pref != i)]
            if cand.size >= k or L >= sq_order.size:
                break
            L = min(2 * L, sq_order.size)
        cand = cand[:k]
        ok = sel_col[r] >= 0
        all_col = np.concatenate([sel_col[r][ok], cand])
        all_score = np.concatenate([sel_score[r][ok], -sq[cand]])
        order = np.lexsort((all_col, -all_score))[:k]
        sel_col[r] = all_col[order]
    out[start:stop] = sel_col


def affinity_from_coef(C, method="symmetric", n_neighbors=3, normalize_rows=True, max_normalize=False, n_jobs=None):
    """Affinity graph from a self-expressive coefficient matrix.

    Parameters
    ----------
    C : scipy.sparse matrix or array of shape (n_samples, n_samples)
        Row i holds the coefficients that reconstruct x_i (``C[i, i] = 0``). For ``method="knn"``
        any (n_samples, n_dict) matrix works: the rows are compared as vectors.
    method : {"symmetric", "knn"}
        "symmetric": ``A = (|C_n| + |C_n|^T) / 2``.
        "knn": ``A = (G + G^T) / 2`` with G the ``n_neighbors``-NN connectivity graph (binary,
        self excluded) in Euclidean distance between the rows of ``C_n`` -- the same graph as
        ``sklearn.neighbors.kneighbors_graph(C_n, n_neighbors, mode="connectivity",
        include_self=False)``, computed with exact blockwise sparse products.
    n_neighbors : int, used by "knn".
    normalize_rows : bool, default True
        ``C_n`` = C with rows scaled to unit l2 norm (``sklearn.preprocessing.normalize``);
        all-zero rows stay zero.
    max_normalize : bool, default False
        Then also divide each point's coefficient vector (a row here; a column in the
        column-convention SSC code, whose ``BuildAdjacency`` does this) by its largest |entry|.
    n_jobs : int or None, default None
        Threads for the "knn" graph's sparse products (None: torch's thread count; see :func:`knn_rows`).

    Returns
    -------
    scipy.sparse.csr_matrix (n_samples, n_samples): symmetric, non-negative, zero diagonal,
    canonical. "symmetric" keeps float32 input as float32 (else float64); "knn" is float64.
    """
    if method not in _METHODS:
        raise ValueError(f"method must be one of {_METHODS}, got {method!r}")
    C = _check_coef(C, square=(method == "symmetric"))
    if normalize_rows:
        C = normalize(C, norm="l2", axis=1, copy=True).tocsr()
    if max_normalize:
        m = np.asarray(abs(C).max(axis=1).todense()).ravel()
        scale = np.divide(1.0, m, out=np.zeros_like(m, dtype=np.float64), where=m > 0)
        C = sp.csr_matrix(sp.diags(scale.astype(C.dtype)) @ C)
    n = C.shape[0]
    if method == "symmetric":
        Ca = abs(C)
        A = (Ca + Ca.T.tocsr()) * C.dtype.type(0.5)
        A = _drop_diagonal(A).astype(C.dtype, copy=False)
    else:
        if isinstance(n_neighbors, bool) or not isinstance(n_neighbors, numbers.Integral) or n_neighbors < 1:
            raise ValueError(f"n_neighbors must be a positive integer, got {n_neighbors!r}")
        if n_neighbors >= n:
            raise ValueError(f"n_neighbors={n_neighbors} must be smaller than the number of samples ({n})")
        nbr = knn_rows(C, n_neighbors, n_jobs=n_jobs)
        k = nbr.shape[1]
        G = sp.csr_matrix(
            (np.ones(n * k), nbr.ravel(), np.arange(0, n * k + 1, k, dtype=np.int64)), shape=(n, n)
        )
        A = (G + G.T.tocsr()) * 0.5
        A = _drop_diagonal(A)
    A.sort_indices()
    return A
