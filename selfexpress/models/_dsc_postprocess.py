"""DSC-Net's post-processing of self-expressive coefficients, blockwise and sparse.

The post-processing of Ji et al. (DSC-Net, NeurIPS 2017), used unchanged by SSCN (reference-impls.md §3.4,
``thrC`` + ``post_proC``), turns coefficients ``C`` into an affinity for spectral clustering:

1. ``thrC(C, ro)``: in every column of ``C`` keep the entries of largest ``|C_ij|`` until their running sum
   first exceeds ``ro`` times the column's l1 mass (``ro = noise_threshold = 0.1`` in the SSCN / DSC-Net
   MNIST configs); zero the rest. Skipped when ``ro`` is None or >= 1.
2. ``C <- (C + C^T) / 2``, diagonal set to 1;
3. rank ``r = max_cluster_dim * n_clusters + 1`` truncated SVD ``C ~ U S V^T``; ``U <- U S^{1/2}``,
   rows scaled to unit l2 norm;
4. ``Z = U U^T`` with negatives clipped to 0, ``L = Z^alpha`` (``alpha = noise_alpha = 8``),
   ``L <- L / max(L)``, symmetrised; spectral clustering of ``L``.

The reference forms every one of these as a dense N x N array. Here:

* :func:`mass_threshold` runs step 1 one block of columns at a time (each block dense ``N x block_size``,
  from a dense ``C`` or from a factor ``H`` with ``C = H H^T``) and returns the kept entries as CSR;
* :func:`dsc_affinity` runs steps 2-3 with ``scipy.sparse.linalg.svds`` on the sparse thresholded ``C`` --
  or, without thresholding, on the implicit operator ``v -> H (H^T v) - q * v + v`` (``q_i = ||h_i||^2``,
  i.e. ``H H^T`` with its diagonal set to 1) so that no N x N matrix exists -- and replaces the dense
  ``L`` of step 4 by its ``n_neighbors`` largest entries per row (``Z`` computed one row block at a time from
  the rows of ``U``), mirrored to keep it symmetric: an exact truncation of the reference's ``L``.
  ``dense=True`` returns the reference's dense ``L`` (for small N and comparisons only).

The truncation must not be too aggressive: ``alpha = 8`` makes each dropped entry small (``z = 0.5`` gives
0.004), but a row has thousands of them and together they shape the spectral embedding. Measured on SSCN's
embedding of MNIST-test (10,000 points, ``benchmarks/sscn.py``, pseudo-label ACC): dense reference
post-processing (scikit-learn ``SpectralClustering``, discretize) 0.731, dense ``L`` with the library's
spectral clustering 0.733; sparse with 30 / 100 / 300 / 1,000 neighbours 0.674 / 0.671 / 0.734 / 0.733 (1,000
gives the dense labels exactly). Hence ``n_neighbors=300`` (about 3 % of N there, 30 % of a cluster).
"""

from __future__ import annotations

import numbers

import numpy as np
import scipy.sparse as sp
import torch
from scipy.sparse.linalg import LinearOperator, svds

from .._memory import check_allocation

__all__ = ["mass_threshold", "dsc_affinity"]


def _as_float_tensor(a, dtype=torch.float32):
    if isinstance(a, torch.Tensor):
        return a.detach().to("cpu", dtype)
    return torch.as_tensor(np.ascontiguousarray(a), dtype=dtype)


def mass_threshold(C=None, *, factor=None, ro=0.1, max_nonzero=None, block_size=1024):
    """DSC-Net's ``thrC``: per column, keep the largest-|.| entries holding a ``ro`` share of its l1 mass.

    For column ``j`` with entries sorted by decreasing ``|C_ij|``, the shortest prefix whose running sum
    exceeds ``ro * sum_i |C_ij|`` is kept (the reference's rule, ties in the order of ``torch.sort``).

    Parameters
    ----------
    C : array-like or tensor (n, n), optional
        Dense coefficients (e.g. DSC-Net's self-expressive layer). Exactly one of ``C`` and ``factor``.
    factor : array-like or tensor (n, p), optional
        ``H`` with ``C = H H^T`` (SSCN); columns of ``C`` are computed one block at a time.
    ro : float in (0, 1]
        Share of each column's l1 mass to keep; 1 keeps every non-zero entry.
    max_nonzero : int or None
        Cap on the entries kept per column (None: no cap). A capped column keeps its ``max_nonzero``
        largest entries only.
    block_size : int
        Columns per block; peak memory about ``32 * n * block_size`` bytes (values, sort order, running sums).

    Returns
    -------
    csr_matrix (n, n), float32: ``Cp[i, j] = C[i, j]`` for kept entries. ``Cp.capped_`` (an attribute
    set on the returned matrix) counts the columns where ``max_nonzero`` cut the prefix short.
    """
    if (C is None) == (factor is None):
        raise ValueError("give exactly one of C (dense coefficients) or factor (H with C = H H^T)")
    if isinstance(ro, bool) or not isinstance(ro, numbers.Real) or not 0 < ro <= 1:
        raise ValueError(f"ro must be in (0, 1], got {ro!r}")
    if factor is not None:
        H = _as_float_tensor(factor)
        if H.ndim != 2:
            raise ValueError(f"factor must be 2-D (n, p), got shape {tuple(H.shape)}")
        n = H.shape[0]
    else:
        Ct = _as_float_tensor(C)
        if Ct.ndim != 2 or Ct.shape[0] != Ct.shape[1]:
            raise ValueError(f"C must be square (n, n), got shape {tuple(Ct.shape)}")
        n = Ct.shape[0]
    if not bool(torch.isfinite(H if factor is not None else Ct).all()):
        raise ValueError("coefficients contain NaN or infinity")
    cap = n if max_nonzero is None else min(int(max_nonzero), n)
    if cap < 1:
        raise ValueError(f"max_nonzero must be positive, got {max_nonzero!r}")
    b = max(1, int(block_size))
    check_allocation(32 * n * min(b, n), f"DSC post-processing: thrC on {min(b, n)} columns x {n} rows",
                     f"lower block_size (now {block_size})")
    rows, cols, vals = [], [], []
    capped = kept = 0
    for j0 in range(0, n, b):
        j1 = min(j0 + b, n)
        # block of columns j0..j1, laid out as rows (bj, n)
        blk = (H[j0:j1] @ H.T) if factor is not None else Ct[:, j0:j1].T.contiguous()
        a = blk.abs()
        total = a.sum(dim=1, keepdim=True)
        if cap < n:
            sval, spos = torch.topk(a, cap, dim=1)
        else:
            sval, spos = torch.sort(a, dim=1, descending=True)
        csum = torch.cumsum(sval.double(), dim=1)
        need = (csum <= ro * total.double()).sum(dim=1) + 1  # shortest prefix exceeding ro * mass
        full = need > sval.shape[1]
        capped += int(full.sum()) if cap < n else 0
        need = need.clamp(max=sval.shape[1])
        need = torch.where(total[:, 0] > 0, need, torch.zeros_like(need))  # all-zero column: nothing
        keep = torch.arange(sval.shape[1])[None, :] < need[:, None]
        r_idx, c_pos = torch.nonzero(keep, as_tuple=True)
        src = spos[r_idx, c_pos]
        rows.append(src.numpy())
        cols.append((r_idx + j0).numpy())
        vals.append(blk[r_idx, src].numpy().astype(np.float32))
        kept += int(src.numel())
        # the output's size is data dependent: extrapolate from the columns done so far
        check_allocation(int(2 * 16 * kept * n / j1) - 16 * kept,
                         f"DSC post-processing: thrC keeps about {kept / j1:.0f} entries per column",
                         f"set max_nonzero (now {max_nonzero}) or lower ro (noise_threshold of SSCN / DSCNet)")
    rows = np.concatenate(rows) if rows else np.zeros(0, np.int64)
    cols = np.concatenate(cols) if cols else np.zeros(0, np.int64)
    vals = np.concatenate(vals) if vals else np.zeros(0, np.float32)
    out = sp.csr_matrix((vals, (rows, cols)), shape=(n, n), dtype=np.float32)
    out.eliminate_zeros()
    out.capped_ = capped
    return out


def _top_singular(op_or_matrix, n, rank, dense_matrix=None):
    """Top-``rank`` singular vectors and values of a symmetric n x n matrix, sorted by decreasing value."""
    if rank >= n - 1:  # svds needs k < n: tiny problems go dense
        check_allocation(8 * 3 * n * n, f"a dense {n} x {n} eigendecomposition (rank {rank} >= n - 1)",
                         "use more samples than max_cluster_dim * n_clusters + 2")
        M = dense_matrix() if dense_matrix is not None else op_or_matrix @ np.eye(n)
        w, V = np.linalg.eigh(0.5 * (M + M.T))
        order = np.argsort(-np.abs(w), kind="stable")[:rank]
        return V[:, order], np.abs(w[order])
    U, S, _ = svds(op_or_matrix, k=rank, v0=np.ones(n), solver="arpack")
    order = np.argsort(-S, kind="stable")
    return U[:, order], S[order]


def dsc_affinity(C=None, *, factor=None, rank, alpha=8.0, n_neighbors=300, dense=False, block_size=1024):
    """Affinity of DSC-Net's post-processing (steps 2-4 of the module docstring); sparse unless ``dense``.

    Parameters
    ----------
    C : scipy.sparse matrix or array (n, n), optional
        Coefficients after :func:`mass_threshold` (or any coefficients). Exactly one of ``C`` / ``factor``.
    factor : array-like (n, p), optional
        ``H`` with ``C = H H^T`` (SSCN without thresholding); used through matrix-vector products only.
    rank : int
        Rank of the truncated SVD (the reference: ``max_cluster_dim * n_clusters + 1``).
    alpha : float
        Exponent of ``L = Z^alpha`` (``noise_alpha``).
    n_neighbors : int, default 300
        Entries of ``L`` kept per row (largest first, self excluded), then mirrored (``max(A, A^T)``). Keep it
        a sizeable fraction of a cluster (module docstring: 100 lost 6 ACC points on MNIST, 300 did not).
    dense : bool
        Return the reference's dense ``L`` (n x n ndarray, diagonal included) instead.
    block_size : int
        Rows of ``Z`` computed at a time.

    Returns
    -------
    csr_matrix (n, n) float64, symmetric, non-negative, zero diagonal -- or a dense ndarray with ``dense``.
    """
    if (C is None) == (factor is None):
        raise ValueError("give exactly one of C or factor")
    if isinstance(rank, bool) or not isinstance(rank, numbers.Integral) or rank < 1:
        raise ValueError(f"rank must be a positive integer, got {rank!r}")
    if isinstance(alpha, bool) or not isinstance(alpha, numbers.Real) or not np.isfinite(alpha) or alpha <= 0:
        raise ValueError(f"alpha must be a positive number, got {alpha!r}")
    if factor is not None:
        H = np.ascontiguousarray(_as_float_tensor(factor, torch.float64).numpy())
        n = H.shape[0]
        q = np.einsum("ij,ij->i", H, H)

        def matvec(v):
            v = np.asarray(v, dtype=np.float64)
            v2 = v.reshape(n, -1)
            out = H @ (H.T @ v2) - q[:, None] * v2 + v2
            return out.reshape(v.shape)

        op = LinearOperator((n, n), matvec=matvec, rmatvec=matvec, matmat=matvec, rmatmat=matvec, dtype=np.float64)

        def dense_matrix():
            M = H @ H.T
            np.fill_diagonal(M, 1.0)
            return M
    else:
        if sp.issparse(C):
            Cs = sp.csr_matrix(C, dtype=np.float64)
        else:
            Cs = sp.csr_matrix(np.asarray(C, dtype=np.float64))
        if Cs.shape[0] != Cs.shape[1]:
            raise ValueError(f"C must be square, got shape {Cs.shape}")
        n = Cs.shape[0]
        Cs = 0.5 * (Cs + Cs.T)
        Cs = Cs.tolil()
        Cs.setdiag(1.0)
        op = Cs.tocsr()

        def dense_matrix():
            return op.toarray()
    r = min(int(rank), n)
    U, S = _top_singular(op, n, r, dense_matrix)
    U = U * np.sqrt(S)[None, :]
    norms = np.linalg.norm(U, axis=1, keepdims=True)
    U = U / np.where(norms > 0, norms, 1.0)
    if dense:
        check_allocation(8 * 3 * n * n, f"the dense {n} x {n} affinity of the reference post-processing",
                         "use the sparse post-processing (dense=False)")
        Z = U @ U.T
        Z[Z < 0] = 0.0
        L = np.abs(Z ** float(alpha))
        mx = L.max()
        if mx > 0:
            L /= mx
        return 0.5 * (L + L.T)
    k = int(n_neighbors)
    if k < 1:
        raise ValueError(f"n_neighbors must be positive, got {n_neighbors!r}")
    k = min(k, n - 1)
    if k < 1:
        raise ValueError("need at least 2 samples")
    b = max(1, min(int(block_size), n))
    check_allocation(8 * n * b * 2 + 24 * n * k, f"DSC post-processing: kNN of Z = U U^T ({b} x {n} blocks)",
                     f"lower block_size (now {block_size}) or n_neighbors (now {n_neighbors})")
    Ut = torch.from_numpy(U)
    rows, cols, vals = [], [], []
    for r0 in range(0, n, b):
        r1 = min(r0 + b, n)
        Zb = Ut[r0:r1] @ Ut.T
        Zb[torch.arange(r1 - r0), torch.arange(r0, r1)] = -np.inf
        v, idx = torch.topk(Zb, k, dim=1)
        rows.append(np.repeat(np.arange(r0, r1), k))
        cols.append(idx.reshape(-1).numpy())
        vals.append(v.reshape(-1).numpy())
    vals = np.concatenate(vals)
    vals = np.power(np.clip(vals, 0.0, None), float(alpha))  # diag(Z) = 1 = max(L): no rescaling needed
    A = sp.csr_matrix((vals, (np.concatenate(rows), np.concatenate(cols))), shape=(n, n))
    A = A.maximum(A.T).tocsr()
    A.eliminate_zeros()
    return A
