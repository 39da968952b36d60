"""SENet's coefficient engine: blocks of query rows against a dictionary, sparse top-k per row, on one of three
backends; and the one soft threshold of the package (:func:`soft_threshold`).

The coefficient of query ``i`` on atom ``j`` is ``c_ij = alpha * T_b(q_i . k_j)`` (SENet's map; ``T_b`` the
soft threshold). The stage is embarrassingly parallel over blocks of query rows: a task takes the query
embeddings of one block, the key embeddings of the dictionary and returns the block's top-``k`` entries of
largest ``|c|`` per row. Three engines run those tasks:

``"local"``
    in this process, one block after another (column blocks streamed through :class:`StreamingTopK`);
``"dask"``
    one ``dask.distributed`` task per row block; the keys are scattered to every worker once. Works with a
    ``LocalCluster`` (started for the call when no address is given) or any scheduler address
    (``"tcp://host:8786"``). The tasks run the very same function as ``"local"`` (exact, same result);
``"faiss"``
    approximate candidate search: a faiss inner-product index over the keys returns, for ``q`` and for ``-q``,
    the ``n_candidates`` atoms of largest ``q . k`` and of smallest ``q . k``; the exact coefficients are then
    computed on those candidates only and the top-``k`` kept. ``|c|`` is monotone in ``|q . k|``, so with an
    exact (``"flat"``) index the result equals the exhaustive one whenever ``n_candidates >= k``; an
    ``"ivf"`` index (``nlist`` cells, ``nprobe`` searched) trades exactness for ~``nlist / nprobe`` less work.
"""

from __future__ import annotations

import math
import time

import numpy as np
import scipy.sparse as sp
import torch

from ..graph import StreamingTopK, topk_to_csr

__all__ = ["BACKENDS", "soft_threshold", "coef_topk_block", "blockwise_coefficients"]

BACKENDS = ("local", "dask", "faiss")


def _as_tensor(a):
    return a if isinstance(a, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))


def soft_threshold(u, threshold):
    """``T_b(u) = sign(u) max(|u| - b, 0)`` elementwise (torch; differentiable in ``u`` and ``b``)."""
    return torch.sign(u) * torch.relu(u.abs() - threshold)


@torch.no_grad()
def coef_topk_block(queries, keys, alpha, threshold, k, row_offset=None, col_block=4096):
    """Top-``k`` coefficients (by ``|c|``) of one block of query rows on all atoms.

    Parameters
    ----------
    queries : (b, p) array or tensor, query embeddings of the block.
    keys : (m, p) array or tensor, key embeddings of the dictionary.
    alpha, threshold : float, ``c = alpha * T_threshold(q . k)``.
    k : int, entries kept per row.
    row_offset : int or None. When the queries are the dictionary's own rows ``row_offset .. row_offset + b - 1``
        (self-expression), ``c_ii`` is excluded; None: nothing is excluded (out-of-sample queries).
    col_block : int, atoms per matmul tile (memory ``b * col_block`` floats).

    Returns
    -------
    (values float32 (b, k), indices int64 (b, k)) numpy arrays; index -1 marks an empty slot.
    """
    q, kt = _as_tensor(queries), _as_tensor(keys)
    b, m = q.shape[0], kt.shape[0]
    excl = None if row_offset is None else torch.arange(int(row_offset), int(row_offset) + b)
    top = StreamingTopK(b, min(int(k), m), largest_abs=True, exclude_cols=excl)
    for c0 in range(0, m, int(col_block)):
        top.update(alpha * soft_threshold(q @ kt[c0:c0 + int(col_block)].T, threshold), c0)
    return top.result()


def _dask_block(queries, keys, alpha, threshold, k, row_offset, col_block, n_threads):
    torch.set_num_threads(int(n_threads))  # one worker thread per task: workers share the machine's cores
    vals, idx = coef_topk_block(queries, keys, alpha, threshold, k, row_offset, col_block)
    return vals, idx


def _iter_blocks(queries, block_size):
    """(row_offset, block) pairs; ``queries`` is an array/tensor or a callable ``f(r0, r1) -> block``
    together with its row count as ``(callable, n_rows)``."""
    if isinstance(queries, tuple) and callable(queries[0]):
        fn, n = queries
        for r0 in range(0, int(n), block_size):
            yield r0, fn(r0, min(int(n), r0 + block_size))
    else:
        for r0 in range(0, queries.shape[0], block_size):
            yield r0, queries[r0:r0 + block_size]


def _n_rows(queries):
    return int(queries[1]) if isinstance(queries, tuple) and callable(queries[0]) else int(queries.shape[0])


def _to_numpy32(a):
    if isinstance(a, torch.Tensor):
        return a.detach().cpu().numpy().astype(np.float32, copy=False)
    return np.ascontiguousarray(a, dtype=np.float32)


def _run_local(queries, keys, alpha, threshold, k, exclude_self, block_size, col_block, progress):
    m = keys.shape[0]
    blocks = []
    for r0, q in _iter_blocks(queries, block_size):
        vals, idx = coef_topk_block(q, keys, alpha, threshold, k, r0 if exclude_self else None, col_block)
        blocks.append(topk_to_csr(vals, idx, m))
        progress(r0 + q.shape[0])
    return blocks


def _dask_client(address, n_workers):
    from distributed import Client, LocalCluster

    if address is None:
        cluster = LocalCluster(n_workers=int(n_workers), threads_per_worker=1, processes=True,
                               dashboard_address=None)
        return Client(cluster), cluster
    return Client(address), None


def _run_dask(queries, keys, alpha, threshold, k, exclude_self, block_size, col_block, progress, address,
              n_workers):
    try:
        import distributed  # noqa: F401
    except ImportError:
        raise ValueError("backend='dask' needs dask.distributed (pip install 'selfexpress[scale]')") from None
    client, cluster = _dask_client(address, n_workers)
    try:
        m = keys.shape[0]
        keys_f = client.scatter(_to_numpy32(keys), broadcast=True)
        futs = []
        for r0, q in _iter_blocks(queries, block_size):
            futs.append(client.submit(_dask_block, _to_numpy32(q), keys_f, float(alpha), float(threshold), int(k),
                                      r0 if exclude_self else None, int(col_block), 1, pure=False))
        blocks, done = [], 0
        for f in futs:  # in submission order: block i holds rows i * block_size ...
            vals, idx = f.result()
            blocks.append(topk_to_csr(vals, idx, m))
            done += vals.shape[0]
            progress(done)
        return blocks
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def _faiss_index(keys, index, nlist, nprobe):
    import faiss

    kf = _to_numpy32(keys)
    m, p = kf.shape
    if index == "flat":
        ix = faiss.IndexFlatIP(p)
    else:
        nl = int(nlist) if nlist else max(1, min(int(4 * math.sqrt(m)), m // 39))
        ix = faiss.IndexIVFFlat(faiss.IndexFlatIP(p), p, nl, faiss.METRIC_INNER_PRODUCT)
        rng = np.random.default_rng(0)
        # coarse quantiser: k-means on a sample (20 points per cell, 10 iterations): cells only route the search
        train = kf if m <= 20 * nl else kf[np.sort(rng.choice(m, 20 * nl, replace=False))]
        ix.cp.seed = 0
        ix.cp.niter = 10
        ix.cp.min_points_per_centroid = 1
        ix.train(train)
        ix.nprobe = int(nprobe)
    ix.add(kf)
    return ix


@torch.no_grad()
def _run_faiss(queries, keys, alpha, threshold, k, exclude_self, block_size, progress, n_candidates, index, nlist,
               nprobe):
    try:
        import faiss  # noqa: F401
    except ImportError:
        raise ValueError("backend='faiss' needs faiss-cpu (pip install 'selfexpress[scale]')") from None
    kt = _as_tensor(keys)
    m = kt.shape[0]
    M = int(min(m, max(int(n_candidates or 2 * k), k) + (1 if exclude_self else 0)))
    ix = _faiss_index(kt, index, nlist, nprobe)
    blocks = []
    for r0, q in _iter_blocks(queries, block_size):
        qn = _to_numpy32(q)
        b = qn.shape[0]
        _, ipos = ix.search(qn, M)  # largest q . k
        _, ineg = ix.search(-qn, M)  # smallest q . k
        cand = torch.from_numpy(np.concatenate([ipos, ineg], 1).astype(np.int64))
        if exclude_self:
            cand = torch.where(cand == torch.arange(r0, r0 + b)[:, None], torch.full_like(cand, -1), cand)
        # duplicates (an atom found by both searches) and padding (-1) get key -inf
        cs, _ = torch.sort(cand, 1)
        dup = torch.zeros_like(cs, dtype=torch.bool)
        dup[:, 1:] = cs[:, 1:] == cs[:, :-1]
        cand = cs
        valid = (cand >= 0) & ~dup
        safe = torch.where(valid, cand, torch.zeros_like(cand))
        u = (_as_tensor(qn)[:, None, :] * kt[safe]).sum(-1)
        c = alpha * soft_threshold(u, threshold)
        key = torch.where(valid, c.abs(), torch.full_like(c, -1.0))
        kk = min(int(k), cand.shape[1])
        kv, pos = torch.topk(key, kk, dim=1)
        vals = torch.gather(c, 1, pos)
        idx = torch.where(kv >= 0, torch.gather(cand, 1, pos), torch.full_like(pos, -1))
        blocks.append(topk_to_csr(vals.numpy().astype(np.float32), idx.numpy(), m))
        progress(r0 + b)
    return blocks


def blockwise_coefficients(queries, keys, *, alpha, threshold, n_nonzero, exclude_self=False, block_size=1000,
                           col_block=None, backend="local", dask_address=None, n_workers=2, n_candidates=None,
                           faiss_index="flat", nlist=None, nprobe=16, verbose=False):
    """Sparse top-``n_nonzero`` coefficient matrix ``C`` (CSR, n_rows x n_atoms) by the chosen backend.

    Parameters
    ----------
    queries : (n, p) array/tensor of query embeddings, or ``(fn, n)`` with ``fn(r0, r1)`` returning the embeddings
        of rows ``r0 .. r1 - 1`` (so that they need not all be held at once).
    keys : (m, p) array/tensor of key embeddings of the dictionary.
    alpha, threshold : float, the coefficient map ``alpha * T_threshold(q . k)``.
    n_nonzero : int, entries kept per row (largest ``|c|``).
    exclude_self : bool, the queries are the dictionary itself: ``C[i, i] = 0``.
    block_size : int, query rows per task.
    col_block : int or None, atoms per matmul tile (default ``max(block_size, 2 * n_nonzero)``).
    backend : {"local", "dask", "faiss"}; see the module docstring.
    dask_address : str or None, scheduler address for ``"dask"`` (None: a ``LocalCluster`` of ``n_workers``
        single-threaded worker processes for this call).
    n_candidates, faiss_index, nlist, nprobe : ``"faiss"`` options: candidates per sign (default
        ``2 * n_nonzero``), ``"flat"`` (exact search) or ``"ivf"``, its number of cells and cells searched.
    verbose : bool, one progress line per ~10 % of the rows.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if faiss_index not in ("flat", "ivf"):
        raise ValueError(f"faiss_index must be 'flat' or 'ivf', got {faiss_index!r}")
    n, m = _n_rows(queries), int(keys.shape[0])
    k = max(1, min(int(n_nonzero), m))
    bs = max(1, int(block_size))
    cb = int(col_block) if col_block else max(bs, 2 * k)
    t0, last = time.perf_counter(), [0]

    def progress(done):
        if verbose and (done - last[0] >= max(1, n // 10) or done == n):
            last[0] = done
            print(f"[coefficients:{backend}] {done}/{n} rows, {time.perf_counter() - t0:.1f} s", flush=True)

    if backend == "local":
        blocks = _run_local(queries, keys, alpha, threshold, k, exclude_self, bs, cb, progress)
    elif backend == "dask":
        blocks = _run_dask(queries, keys, alpha, threshold, k, exclude_self, bs, cb, progress, dask_address,
                           n_workers)
    else:
        blocks = _run_faiss(queries, keys, alpha, threshold, k, exclude_self, bs, progress, n_candidates,
                            faiss_index, nlist, nprobe)
    if not blocks:
        return sp.csr_matrix((n, m), dtype=np.float32)
    C = sp.vstack(blocks, format="csr") if len(blocks) > 1 else blocks[0].tocsr()
    C.eliminate_zeros()
    return C
