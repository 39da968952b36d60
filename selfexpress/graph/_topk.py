"""Per-row top-k helpers: a streaming top-k over column blocks (torch) and (n, k) arrays -> CSR."""

from __future__ import annotations

import numbers

import numpy as np
import scipy.sparse as sp
import torch

__all__ = ["StreamingTopK", "keep_largest_per_row", "topk_to_csr"]


def _to_numpy(a):
    if isinstance(a, torch.Tensor):
        return a.detach().cpu().numpy()
    return np.asarray(a)


def keep_largest_per_row(C, k):
    """The ``k`` largest-magnitude entries of every row of the sparse matrix ``C``, as a CSR.

    Rows with at most ``k`` stored entries are kept whole; among equal magnitudes the entry stored first wins
    (a stable sort), so the result is deterministic. Returns ``C`` itself (as CSR) when no row has more than ``k``.
    """
    if isinstance(k, bool) or not isinstance(k, numbers.Integral) or k < 0:
        raise ValueError(f"k must be a non-negative integer, got {k!r}")
    C = sp.csr_matrix(C) if not sp.isspmatrix_csr(C) else C
    indptr, indices, data = C.indptr, C.indices, C.data
    counts = np.diff(indptr)
    if counts.max(initial=0) <= k:
        return C
    keep = np.ones(data.size, dtype=bool)
    for i in np.flatnonzero(counts > k):
        a, z = indptr[i], indptr[i + 1]
        order = np.argsort(-np.abs(data[a:z]), kind="stable")
        keep[a + order[k:]] = False
    rows = np.repeat(np.arange(C.shape[0]), counts)
    return sp.csr_matrix((data[keep], (rows[keep], indices[keep])), shape=C.shape)


def topk_to_csr(values, indices, n_cols):
    """Build an ``(n, n_cols)`` CSR matrix from per-row top-k arrays.

    Parameters
    ----------
    values : array-like (numpy or torch) of shape (n, k)
        Entry ``values[i, t]`` goes to row ``i``, column ``indices[i, t]``.
    indices : array-like of int, shape (n, k)
        Column indices; negative entries mark padding and are dropped.
    n_cols : int

    Returns
    -------
    scipy.sparse.csr_matrix of shape (n, n_cols), canonical (sorted indices, no duplicates),
    with zero-valued and padded entries dropped. float32 input stays float32, anything else
    becomes float64.

    Raises ``ValueError`` for mismatched shapes, non-integer or out-of-range indices, a column
    repeated within a row, or non-finite values.
    """
    values = _to_numpy(values)
    indices = _to_numpy(indices)
    if isinstance(n_cols, bool) or not isinstance(n_cols, numbers.Integral) or n_cols < 0:
        raise ValueError(f"n_cols must be a non-negative integer, got {n_cols!r}")
    n_cols = int(n_cols)
    if values.ndim != 2 or indices.ndim != 2 or values.shape != indices.shape:
        raise ValueError(
            f"values and indices must be 2-D arrays of the same shape, got {values.shape} and {indices.shape}"
        )
    if indices.size and not np.issubdtype(indices.dtype, np.integer):
        raise ValueError(f"indices must be integers, got dtype {indices.dtype}")
    dtype = np.float32 if values.dtype == np.float32 else np.float64
    values = values.astype(dtype, copy=False)
    n, k = values.shape
    if k == 0 or n == 0:
        return sp.csr_matrix((n, n_cols), dtype=dtype)
    if not np.isfinite(values).all():
        raise ValueError("values contains NaN or infinity")
    indices = indices.astype(np.int64, copy=False)
    if indices.max() >= n_cols:
        raise ValueError(f"indices contains column {int(indices.max())} >= n_cols={n_cols}")
    valid = (indices >= 0) & (values != 0)
    # Sort each row by column (padding last) to get canonical CSR and to detect duplicates.
    key = np.where(valid, indices, np.iinfo(np.int64).max)
    order = np.argsort(key, axis=1, kind="stable")
    key = np.take_along_axis(key, order, axis=1)
    vals = np.take_along_axis(values, order, axis=1)
    valid = np.take_along_axis(valid, order, axis=1)
    if k > 1:
        dup = (key[:, 1:] == key[:, :-1]) & valid[:, 1:]
        if dup.any():
            r = int(np.flatnonzero(dup.any(axis=1))[0])
            raise ValueError(f"indices repeats a column within row {r}")
    counts = valid.sum(axis=1)
    indptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(counts, out=indptr[1:])
    cols = key[valid]
    data = vals[valid]
    idx_dtype = np.int32 if max(n_cols, indptr[-1]) < np.iinfo(np.int32).max else np.int64
    out = sp.csr_matrix(
        (data, cols.astype(idx_dtype), indptr.astype(idx_dtype)), shape=(n, n_cols), dtype=dtype
    )
    out.has_sorted_indices = True
    return out


class StreamingTopK:
    """Running per-row top-k over column blocks, in torch (CPU or GPU).

    Keeps, for each of ``n_rows`` queries, the ``k`` entries of largest ``|value|``
    (``largest_abs=True``) or largest signed value (``largest_abs=False``) among all column blocks
    passed to :meth:`update`. Memory is O(n_rows * (k + b)) for blocks of b columns: each block is
    reduced to its own top-k and then merged with the running top-k.

    Parameters
    ----------
    n_rows : int
    k : int
    largest_abs : bool, default True
    exclude_cols : array-like of int of shape (n_rows,), optional
        Global column index to skip for each row (e.g. the query's own index, for the diagonal
        exclusion C[i, i] = 0). Use ``-1`` for rows with nothing to skip.

    Examples
    --------
    >>> topk = StreamingTopK(n_rows=q.shape[0], k=1000, exclude_cols=torch.arange(r0, r0 + q.shape[0]))
    >>> for c0 in range(0, n, block):
    ...     topk.update(q @ keys[c0:c0 + block].T, c0)
    >>> values, indices = topk.result()
    >>> C_rows = topk_to_csr(values, indices, n)
    """

    def __init__(self, n_rows, k, largest_abs=True, exclude_cols=None):
        for name, v in (("n_rows", n_rows), ("k", k)):
            if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        self.n_rows = int(n_rows)
        self.k = int(k)
        self.largest_abs = bool(largest_abs)
        if exclude_cols is not None:
            exclude_cols = torch.as_tensor(_to_numpy(exclude_cols) if not isinstance(exclude_cols, torch.Tensor)
                                           else exclude_cols).to(torch.int64).reshape(-1)
            if exclude_cols.numel() != self.n_rows:
                raise ValueError(f"exclude_cols must have n_rows={self.n_rows} entries, got {exclude_cols.numel()}")
        self._exclude = exclude_cols
        self._values = None  # (n_rows, <=k), the original signed values
        self._keys = None  # (n_rows, <=k), ranking keys (|value| or value; -inf = excluded)
        self._indices = None  # (n_rows, <=k) int64 global column indices
        self.n_cols_seen = 0

    def update(self, block, col_offset):
        """Merge a block of columns ``col_offset .. col_offset + block.shape[1] - 1``.

        ``block`` is a (n_rows, b) tensor (numpy arrays are accepted) of finite signed values.
        """
        if not isinstance(block, torch.Tensor):
            block = torch.as_tensor(np.asarray(block))
        if block.ndim != 2 or block.shape[0] != self.n_rows:
            raise ValueError(f"block must have shape ({self.n_rows}, b), got {tuple(block.shape)}")
        if not torch.is_floating_point(block):
            block = block.to(torch.float32)
        if isinstance(col_offset, bool) or not isinstance(col_offset, numbers.Integral) or col_offset < 0:
            raise ValueError(f"col_offset must be a non-negative integer, got {col_offset!r}")
        b = block.shape[1]
        if b == 0:
            return self
        if not torch.isfinite(block).all():
            raise ValueError("block contains NaN or infinity")
        device = block.device
        key = block.abs() if self.largest_abs else block.clone()
        if self._exclude is not None:
            excl = self._exclude.to(device) - int(col_offset)
            rows = torch.nonzero((excl >= 0) & (excl < b)).reshape(-1)
            if rows.numel():
                key[rows, excl[rows]] = float("-inf")
        kk = min(self.k, b)
        bkey, bpos = torch.topk(key, kk, dim=1)
        bval = torch.gather(block, 1, bpos)
        bidx = bpos.to(torch.int64) + int(col_offset)
        if self._keys is None:
            self._keys, self._values, self._indices = bkey, bval, bidx
        else:
            keys = torch.cat([self._keys.to(device), bkey], dim=1)
            vals = torch.cat([self._values.to(device=device, dtype=bval.dtype), bval], dim=1)
            idx = torch.cat([self._indices.to(device), bidx], dim=1)
            kk = min(self.k, keys.shape[1])
            self._keys, pos = torch.topk(keys, kk, dim=1)
            self._values = torch.gather(vals, 1, pos)
            self._indices = torch.gather(idx, 1, pos)
        self.n_cols_seen += b
        return self

    def result(self):
        """Return ``(values, indices)``: (n_rows, k) float32 and int64 numpy arrays.

        Rows are sorted by decreasing key. Slots that hold no column (k larger than the number of
        columns seen, or only the excluded column left) have value 0 and index -1;
        :func:`topk_to_csr` drops them.
        """
        values = np.zeros((self.n_rows, self.k), dtype=np.float32)
        indices = np.full((self.n_rows, self.k), -1, dtype=np.int64)
        if self._keys is not None:
            keys = self._keys.detach().cpu()
            vals = self._values.detach().cpu().to(torch.float32).numpy()
            idx = self._indices.detach().cpu().numpy()
            ok = torch.isfinite(keys).numpy()
            m = vals.shape[1]
            values[:, :m] = np.where(ok, vals, 0.0)
            indices[:, :m] = np.where(ok, idx, -1)
        return values, indices
