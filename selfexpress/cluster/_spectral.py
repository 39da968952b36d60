"""Normalised spectral embedding and spectral clustering of a sparse affinity graph.

Follows the reference pipeline (ChongYou/subspace-clustering, SENet): L = normalised Laplacian
(``scipy.sparse.csgraph.laplacian(A, normed=True)``: self-loops ignored, isolated nodes get
L_ii = 0), top eigenvectors of I - L = D^-1/2 A D^-1/2 (``eigsh(..., which="LA")``), rows
l2-normalised, k-means with ``n_init`` restarts.
"""

from __future__ import annotations

import numbers
import warnings

import numpy as np
import scipy.linalg
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components
from scipy.sparse.linalg import eigsh, lobpcg
from sklearn.cluster import KMeans, MiniBatchKMeans
from sklearn.preprocessing import normalize
from sklearn.utils import check_random_state

from .._memory import check_allocation

__all__ = ["spectral_embedding", "spectral_clustering", "check_affinity"]

_SOLVERS = ("auto", "arpack", "lobpcg", "dense")
#: "auto" uses a dense eigendecomposition up to this many nodes.
DENSE_MAX_NODES = 2000
#: "auto" switches from ARPACK to LOBPCG + AMG from this many nodes (when pyamg is importable).
LOBPCG_MIN_NODES = 200_000
#: spectral_clustering switches from KMeans to MiniBatchKMeans above this many nodes.
MINIBATCH_MIN_NODES = 200_000


def check_affinity(A, name="A", sym_tol=1e-8):
    """Validate an affinity matrix and return it as canonical float64 CSR.

    Raises ``ValueError`` when A is not 2-D and square, is empty, contains NaN/inf or negative
    entries. A non-symmetric A (max |A - A^T| > ``sym_tol`` * max |A|) is symmetrised to
    (A + A^T) / 2 with a ``UserWarning``.
    """
    if sp.issparse(A):
        A = sp.csr_matrix(A, dtype=np.float64, copy=True)
    else:
        arr = np.asarray(A)
        if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
            raise ValueError(f"{name} must be a numeric matrix, got dtype {arr.dtype}")
        if np.iscomplexobj(arr):
            raise ValueError(f"{name} is complex; an affinity must be real")
        if arr.ndim != 2:
            raise ValueError(f"{name} must be a 2-D square matrix, got shape {arr.shape}")
        A = sp.csr_matrix(arr.astype(np.float64))
    if A.shape[0] != A.shape[1]:
        raise ValueError(f"{name} must be square (n_samples, n_samples), got shape {A.shape}")
    if A.shape[0] == 0:
        raise ValueError(f"{name} is empty")
    A.sum_duplicates()
    if not np.isfinite(A.data).all():
        raise ValueError(f"{name} contains NaN or infinity")
    if A.data.size and A.data.min() < 0:
        raise ValueError(f"{name} has negative entries (min {A.data.min():.3g}); an affinity must be non-negative")
    A.eliminate_zeros()
    scale = float(A.data.max()) if A.data.size else 0.0
    diff = A - A.T
    asym = float(abs(diff).max()) if diff.nnz else 0.0
    if asym > sym_tol * max(scale, 1e-300):
        warnings.warn(
            f"{name} is not symmetric (max |A - A^T| = {asym:.3g}, max |A| = {scale:.3g}); "
            "using (A + A^T) / 2",
            UserWarning,
            stacklevel=3,
        )
        A = ((A + A.T) * 0.5).tocsr()
    A.sort_indices()
    return A


def _normalized_adjacency(A):
    """M = I - L(A, normed=True) = D^-1/2 W D^-1/2 (W = A without self-loops) + diag(isolated)."""
    W = A.tocoo()
    keep = W.row != W.col
    row, col, data = W.row[keep], W.col[keep], W.data[keep]
    n = A.shape[0]
    deg = np.bincount(row, weights=data, minlength=n)
    isolated = deg <= 0
    dinv = np.zeros(n)
    dinv[~isolated] = 1.0 / np.sqrt(deg[~isolated])
    M = sp.csr_matrix((data * dinv[row] * dinv[col], (row, col)), shape=(n, n))
    if isolated.any():
        M = (M + sp.diags(isolated.astype(np.float64))).tocsr()
    return M, deg, isolated


def _check_solver(eigen_solver):
    if eigen_solver not in _SOLVERS:
        raise ValueError(f"eigen_solver must be one of {_SOLVERS}, got {eigen_solver!r}")


def _pyamg_available():
    try:
        import pyamg  # noqa: F401
    except ImportError:
        return False
    return True


def _sign_flip(U):
    """Make the largest-|.| entry of every column positive (deterministic output)."""
    idx = np.argmax(np.abs(U), axis=0)
    signs = np.sign(U[idx, np.arange(U.shape[1])])
    signs[signs == 0] = 1.0
    return U * signs


def _top_eigvecs_lobpcg(M, deg, isolated, k, rng, tol=1e-6, maxiter=500):
    from pyamg import smoothed_aggregation_solver

    n = M.shape[0]
    L = (sp.identity(n, format="csr") - M).tocsr()
    # Preconditioner from a slightly shifted, non-singular copy (as sklearn's "amg" mode does).
    P = (L + 1e-5 * sp.identity(n, format="csr")).tolil()
    if isolated.any():
        idx = np.flatnonzero(isolated)
        P[idx, idx] = 1.0
    ml = smoothed_aggregation_solver(P.tocsr())
    prec = ml.aspreconditioner()
    m = min(k + max(2, k // 5), n - 1)
    X = rng.standard_normal((n, m))
    X[:, 0] = np.sqrt(np.maximum(deg, 0)) + isolated
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        vals, vecs = lobpcg(L, X, M=prec, tol=tol, maxiter=maxiter, largest=False)
    order = np.argsort(vals, kind="stable")[:k]
    vals, vecs = vals[order], vecs[:, order]
    resid = np.linalg.norm(L @ vecs - vecs * vals, axis=0).max()
    return 1.0 - vals, vecs, resid


def _top_eigvecs(M, deg, isolated, k, solver, rng):
    n = M.shape[0]
    if solver == "auto":
        if n <= DENSE_MAX_NODES:
            solver = "dense"
        elif n >= LOBPCG_MIN_NODES and _pyamg_available():
            solver = "lobpcg"
        else:
            solver = "arpack"
    hint = "pass eigen_solver='arpack' (sparse)"
    if solver != "dense" and k >= n - 1:
        if n > DENSE_MAX_NODES * 5:
            raise ValueError(f"n_components={k} must be smaller than n_samples - 1 = {n - 1}")
        solver = "dense"
        hint = f"use n_components < n_samples - 1 = {n - 1} (now {k}) so that a sparse eigensolver is used"
    if solver == "dense":
        check_allocation(3 * 8 * n * n, f"the dense eigendecomposition of the {n} x {n} affinity matrix", hint)
        vals, vecs = scipy.linalg.eigh(M.toarray(), subset_by_index=[n - k, n - 1])
        return vals[::-1], vecs[:, ::-1]
    if solver == "lobpcg":
        if not _pyamg_available():
            raise ValueError("eigen_solver='lobpcg' needs pyamg (pip install pyamg)")
        if n < 5 * (k + 5):
            solver = "arpack"
        else:
            vals, vecs, resid = _top_eigvecs_lobpcg(M, deg, isolated, k, rng)
            if resid <= 1e-3:
                return vals, vecs
            warnings.warn(
                f"LOBPCG did not converge (max residual {resid:.2e}); falling back to ARPACK",
                UserWarning,
                stacklevel=3,
            )
    v0 = rng.uniform(-1.0, 1.0, n)
    vals, vecs = eigsh(M, k=k, which="LA", v0=v0)
    order = np.argsort(-vals, kind="stable")
    return vals[order], vecs[:, order]


def _embed(A, n_components, random_state, eigen_solver):
    n = A.shape[0]
    if isinstance(n_components, bool) or not isinstance(n_components, numbers.Integral) or n_components < 1:
        raise ValueError(f"n_components must be a positive integer, got {n_components!r}")
    if n_components > n:
        raise ValueError(f"n_components={n_components} is larger than the number of nodes ({n})")
    _check_solver(eigen_solver)
    rng = check_random_state(random_state)
    M, deg, isolated = _normalized_adjacency(A)
    _, U = _top_eigvecs(M, deg, isolated, int(n_components), eigen_solver, rng)
    U = _sign_flip(np.ascontiguousarray(U, dtype=np.float64))
    return normalize(U, norm="l2", axis=1)


def spectral_embedding(A, n_components, random_state=None, eigen_solver="auto"):
    """Row-normalised top eigenvectors of D^-1/2 A D^-1/2.

    Parameters
    ----------
    A : scipy.sparse matrix or array (n, n)
        Symmetric, non-negative affinity; self-loops are ignored (as in
        ``scipy.sparse.csgraph.laplacian``). Isolated nodes (degree 0) are their own component
        (eigenvalue 1, indicator eigenvector), so no NaNs.
    n_components : int
    random_state : int, RandomState or None
        Seeds the ARPACK start vector ``v0`` (uniform in [-1, 1]) / the LOBPCG start block.
    eigen_solver : {"auto", "arpack", "lobpcg", "dense"}
        "arpack": ``eigsh(I - L, k, which="LA", v0)`` (the reference); "lobpcg": LOBPCG on L
        with a pyamg smoothed-aggregation preconditioner (for very large graphs; falls back to
        ARPACK with a warning if it does not converge); "dense": ``scipy.linalg.eigh`` (small
        graphs); "auto": dense up to 2,000 nodes, LOBPCG from 200,000 nodes when pyamg is
        installed, ARPACK otherwise.

    Returns
    -------
    ndarray (n, n_components), float64: eigenvectors by decreasing eigenvalue, each column's
    largest-|.| entry made positive, then every row scaled to unit l2 norm (all-zero rows stay 0).
    """
    A = check_affinity(A)
    return _embed(A, n_components, random_state, eigen_solver)


def spectral_clustering(A, n_clusters, n_components=None, n_init=20, random_state=None, eigen_solver="auto"):
    """Spectral clustering of an affinity graph: :func:`spectral_embedding` + k-means.

    Parameters
    ----------
    A : scipy.sparse matrix or array (n, n), symmetric non-negative affinity.
    n_clusters : int, 1 <= n_clusters <= n.
    n_components : int or None (None: n_clusters), number of eigenvectors.
    n_init : int, k-means restarts.
    random_state : int, RandomState or None; seeds the eigensolver start and k-means.
    eigen_solver : see :func:`spectral_embedding`.

    Returns
    -------
    labels : ndarray (n,), int64 in [0, n_clusters).

    k-means is ``sklearn.cluster.KMeans(n_clusters, n_init=n_init, random_state=random_state)``
    (``MiniBatchKMeans`` above 200,000 nodes). A ``UserWarning`` is issued when the graph has more
    connected components than ``n_clusters`` (the embedding is then not unique).
    """
    A = check_affinity(A)
    n = A.shape[0]
    if isinstance(n_clusters, bool) or not isinstance(n_clusters, numbers.Integral) or n_clusters < 1:
        raise ValueError(f"n_clusters must be a positive integer, got {n_clusters!r}")
    if n_clusters > n:
        raise ValueError(f"n_clusters={n_clusters} is larger than the number of nodes ({n})")
    if isinstance(n_init, bool) or not isinstance(n_init, numbers.Integral) or n_init < 1:
        raise ValueError(f"n_init must be a positive integer, got {n_init!r}")
    if n_components is None:
        n_components = n_clusters
    n_cc, _ = connected_components(A, directed=False)
    if n_cc > n_clusters:
        warnings.warn(
            f"The affinity graph has {n_cc} connected components (isolated nodes included), more than "
            f"n_clusters={n_clusters}: the spectral embedding is not unique and clusters may merge "
            "unrelated components. Consider a denser graph (e.g. more neighbours).",
            UserWarning,
            stacklevel=2,
        )
    rng = check_random_state(random_state)
    # One seed for the eigensolver, one for k-means, both derived from random_state.
    seed_eig, seed_km = (int(s) for s in rng.randint(0, 2**31 - 1, size=2)) if not isinstance(
        random_state, numbers.Integral) else (int(random_state), int(random_state))
    E = _embed(A, n_components, seed_eig, eigen_solver)
    if n_clusters == 1:
        return np.zeros(n, dtype=np.int64)
    if n > MINIBATCH_MIN_NODES:
        km = MiniBatchKMeans(n_clusters=n_clusters, n_init=n_init, random_state=seed_km, batch_size=4096)
    else:
        km = KMeans(n_clusters=n_clusters, n_init=n_init, random_state=seed_km)
    return np.asarray(km.fit_predict(E), dtype=np.int64)
