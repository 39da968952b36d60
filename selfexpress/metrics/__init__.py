"""Clustering and self-expression quality metrics.

Label agreement: :func:`clustering_accuracy` (ACC), :func:`nmi`, :func:`ari`.
Coefficient quality (row convention: row i of ``C`` reconstructs ``x_i``):
:func:`subspace_preserving_error` (SRE, percent) and :func:`connectivity` (CONN).
:func:`evaluate` bundles them into one dict.

ACC, SRE and CONN follow ``metrics/cluster/accuracy.py`` of ChongYou/subspace-clustering
(the EnSC / SSC-OMP reference, also the numbers reported by SENet); NMI uses
``average_method="geometric"`` like both references (scikit-learn's default is
``"arithmetic"``). All coefficient metrics accept a dense array or any scipy.sparse
matrix and never densify an n x n sparse matrix.
"""

from __future__ import annotations


import numpy as np
import scipy.sparse as sp
from scipy.optimize import linear_sum_assignment
from scipy.sparse.csgraph import connected_components, laplacian
from scipy.sparse.linalg import eigsh
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score
from sklearn.metrics.cluster import contingency_matrix

__all__ = [
    "clustering_accuracy",
    "nmi",
    "ari",
    "subspace_preserving_error",
    "connectivity",
    "evaluate",
]

_NMI_AVERAGES = ("min", "geometric", "arithmetic", "max")
# Class blocks up to this many points use a dense eigensolver for CONN; larger ones ARPACK.
_DENSE_EIG_MAX = 2000


def _check_labels(labels, name):
    arr = np.asarray(labels)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D (n_samples,), got shape {arr.shape}; use .ravel() for a column vector")
    if arr.shape[0] == 0:
        raise ValueError(f"{name} is empty")
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        raise ValueError(f"{name} contains NaN or infinity")
    if arr.dtype.kind == "c":
        raise ValueError(f"{name} is complex")
    return arr


def _check_label_pair(y_true, y_pred):
    y_true = _check_labels(y_true, "y_true")
    y_pred = _check_labels(y_pred, "y_pred")
    if y_true.shape[0] != y_pred.shape[0]:
        raise ValueError(f"y_true and y_pred have different lengths ({y_true.shape[0]} != {y_pred.shape[0]})")
    return y_true, y_pred


def _check_coef(C, labels, name="C"):
    """Return (C as canonical CSR float64, labels as int codes 0..K-1)."""
    labels = _check_labels(labels, "labels")
    if sp.issparse(C):
        C = sp.csr_matrix(C, dtype=np.float64)  # copies only when needed
        if not C.has_canonical_format:
            C = C.copy()
            C.sum_duplicates()
    else:
        arr = np.asarray(C)
        if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
            raise ValueError(f"{name} must be numeric, got dtype {arr.dtype}")
        if np.iscomplexobj(arr):
            raise ValueError(f"{name} is complex")
        if arr.ndim != 2:
            raise ValueError(f"{name} must be 2-D (n_samples, n_samples), got shape {arr.shape}")
        C = sp.csr_matrix(arr.astype(np.float64, copy=False))
    if C.shape[0] != C.shape[1]:
        raise ValueError(f"{name} must be square (n_samples, n_samples), got shape {C.shape}")
    if C.shape[0] != labels.shape[0]:
        raise ValueError(f"{name} has {C.shape[0]} rows but labels has {labels.shape[0]} entries")
    if not np.isfinite(C.data).all():
        raise ValueError(f"{name} contains NaN or infinity")
    _, codes = np.unique(labels, return_inverse=True)
    return C, codes.ravel()


def clustering_accuracy(y_true, y_pred):
    """Clustering accuracy (ACC) under the best one-to-one matching of cluster labels.

    ``ACC = max_sigma (1/n) sum_i [y_true[i] == sigma(y_pred[i])]`` over injective maps
    ``sigma`` between predicted and true labels, solved with the Hungarian algorithm
    (``scipy.optimize.linear_sum_assignment``) on the contingency matrix, as in the
    EnSC/SENet reference. The numbers of true and predicted clusters may differ:
    unmatched clusters count as errors. Label values are arbitrary (ints or strings).

    Parameters
    ----------
    y_true, y_pred : array-like of shape (n_samples,)
        Ground-truth and predicted labels.

    Returns
    -------
    float
        Accuracy in [0, 1].

    Raises
    ------
    ValueError
        If an input is empty, not 1-D, contains NaN, or the lengths differ.
    """
    y_true, y_pred = _check_label_pair(y_true, y_pred)
    M = contingency_matrix(y_true, y_pred)
    rows, cols = linear_sum_assignment(M, maximize=True)
    return float(M[rows, cols].sum()) / y_true.shape[0]


def nmi(y_true, y_pred, average_method="geometric"):
    """Normalised mutual information.

    Thin wrapper of ``sklearn.metrics.normalized_mutual_info_score``. The default
    ``average_method="geometric"`` (``MI / sqrt(H(y_true) H(y_pred))``) is what the
    SENet and EnSC references use and report; scikit-learn's own default is
    ``"arithmetic"``, which gives slightly different values.

    Parameters
    ----------
    y_true, y_pred : array-like of shape (n_samples,)
    average_method : {"geometric", "arithmetic", "min", "max"}, default="geometric"

    Returns
    -------
    float
        NMI in [0, 1].
    """
    if average_method not in _NMI_AVERAGES:
        raise ValueError(f"average_method must be one of {_NMI_AVERAGES}, got {average_method!r}")
    y_true, y_pred = _check_label_pair(y_true, y_pred)
    return float(normalized_mutual_info_score(y_true, y_pred, average_method=average_method))


def ari(y_true, y_pred):
    """Adjusted Rand index (``sklearn.metrics.adjusted_rand_score``), in [-0.5, 1]."""
    y_true, y_pred = _check_label_pair(y_true, y_pred)
    return float(adjusted_rand_score(y_true, y_pred))


def subspace_preserving_error(C, labels):
    """Subspace-preserving representation error (SRE), in percent.

    ``SRE = 100/n * sum_i  sum_{j: labels[j] != labels[i]} |C[i, j]| / (sum_j |C[i, j]| + 1e-10)``

    i.e. the fraction of the l1 mass of each row of ``C`` (row i reconstructs ``x_i``)
    that falls on points of other classes, averaged over rows. This is
    ``self_representation_loss`` of the EnSC reference times 100. A row with no
    nonzero entry contributes 0. Sparse input is processed through its CSR structure
    (O(nnz) time and memory); dense input is converted to CSR.

    Parameters
    ----------
    C : array-like or scipy.sparse matrix of shape (n_samples, n_samples)
        Self-expressive coefficients, row convention.
    labels : array-like of shape (n_samples,)
        Ground-truth labels.

    Returns
    -------
    float
        SRE in [0, 100]; 0 iff ``C`` is subspace-preserving.
    """
    C, codes = _check_coef(C, labels)
    n = C.shape[0]
    rows = np.repeat(np.arange(n), np.diff(C.indptr))
    mass = np.abs(C.data)
    wrong = codes[C.indices] != codes[rows]
    total = np.bincount(rows, weights=mass, minlength=n)
    off = np.bincount(rows[wrong], weights=mass[wrong], minlength=n)
    return float(np.mean(off / (total + 1e-10)) * 100.0)


def _algebraic_connectivity(W, seed):
    """Second-smallest eigenvalue of the normalised Laplacian of the symmetric graph W (CSR)."""
    m = W.shape[0]
    if m < 2:
        return 0.0  # the reference's eigsh(k=2) fails on a single node -> counted as 0
    n_comp, _ = connected_components(W, directed=False)
    if n_comp > 1:  # includes isolated nodes
        return 0.0
    L = laplacian(W, normed=True)
    try:
        if m <= _DENSE_EIG_MAX:
            vals = np.linalg.eigvalsh(L.toarray())
            lam2 = vals[1]
        else:
            v0 = np.random.RandomState(seed).uniform(-1.0, 1.0, size=m)
            M = sp.identity(m, format="csr") - L
            vals = eigsh(M, k=2, which="LA", return_eigenvectors=False, v0=v0)
            lam2 = 1.0 - np.min(vals)
    except Exception:  # ARPACK no convergence, LinAlgError: counted as 0 like the reference
        return 0.0
    if not np.isfinite(lam2):
        return 0.0
    return float(max(lam2, 0.0))


def connectivity(C, labels):
    """Connectivity (CONN) of the coefficient graph within each true class.

    As in the EnSC reference (``self_representation_connectivity``): the rows of ``C``
    are l2-normalised (all-zero rows stay zero); for every class k the within-class
    block gives ``W_k = 0.5 (|C_kk| + |C_kk|^T)``; CONN is the minimum over classes of
    the second-smallest eigenvalue of the normalised Laplacian
    ``I - D^-1/2 W_k D^-1/2`` (``scipy.sparse.csgraph.laplacian(normed=True)``, which
    ignores self-loops). Blocks of at most 2000 points use a dense ``eigvalsh``; larger
    ones ``eigsh(I - L, k=2, which="LA")`` with a fixed start vector. A class whose
    graph is disconnected, has an isolated node, has a single point, or whose
    eigensolver fails contributes 0.

    Differences from the reference: the minimum is not capped at 1 (the reference
    starts its running minimum at 1.0), so e.g. a complete graph on m nodes gives
    ``m / (m - 1)``; two-point classes are solved exactly instead of failing ARPACK's
    ``k < n`` and being counted as 0. SENet's own ``utils.connectivity`` (no
    row-normalisation or symmetrisation) is not what is computed here.

    Parameters
    ----------
    C : array-like or scipy.sparse matrix of shape (n_samples, n_samples)
        Self-expressive coefficients, row convention.
    labels : array-like of shape (n_samples,)
        Ground-truth labels.

    Returns
    -------
    float
        CONN >= 0 (at most 2); 0 means some class is not connected.
    """
    C, codes = _check_coef(C, labels)
    C = abs(C)
    row_norm = np.sqrt(np.asarray(C.multiply(C).sum(axis=1)).ravel())
    scale = np.divide(1.0, row_norm, out=np.zeros_like(row_norm), where=row_norm > 0)
    C = sp.csr_matrix(sp.diags(scale) @ C)
    conn = np.inf
    for k in range(codes.max() + 1):
        idx = np.flatnonzero(codes == k)
        block = C[idx][:, idx]
        W = (0.5 * (block + block.T)).tocsr()
        W.eliminate_zeros()
        conn = min(conn, _algebraic_connectivity(W, seed=k))
        if conn == 0.0:
            break
    return float(conn)


def evaluate(y_true, y_pred, coef=None):
    """All metrics in one dict.

    Parameters
    ----------
    y_true, y_pred : array-like of shape (n_samples,)
    coef : array-like or scipy.sparse matrix of shape (n_samples, n_samples), optional
        Self-expressive coefficients; when given, ``sre`` and ``conn`` are added
        (computed against ``y_true``).

    Returns
    -------
    dict
        ``{"acc", "nmi", "ari"}`` as fractions, ``"nmi_average": "geometric"``, and with
        ``coef`` also ``"sre"`` (percent) and ``"conn"``.
    """
    y_true, y_pred = _check_label_pair(y_true, y_pred)
    out = {
        "acc": clustering_accuracy(y_true, y_pred),
        "nmi": nmi(y_true, y_pred, average_method="geometric"),
        "ari": ari(y_true, y_pred),
        "nmi_average": "geometric",
    }
    if coef is not None:
        out["sre"] = subspace_preserving_error(coef, y_true)
        out["conn"] = connectivity(coef, y_true)
    return out
