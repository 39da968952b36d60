"""The shared spine of every self-expressive clustering estimator.

data X -> coefficients C (scipy.sparse CSR, row i codes x_i: x_i ~ sum_j C[i, j] x_j, C[i, i] = 0)
       -> affinity graph (selfexpress.graph) -> spectral clustering (selfexpress.cluster) -> labels_.

A method subclasses :class:`SelfExpressiveClustering` and implements ``_fit_coef(X)`` only.
"""

from __future__ import annotations

import time

import numpy as np
from sklearn.base import BaseEstimator, ClusterMixin

from .._memory import check_allocation
from .._validation import check_data, check_distinct_points, check_n_clusters, check_positive, fit_seed

__all__ = ["SelfExpressiveClustering", "normalize_rows", "store_params"]


def store_params(estimator, params):
    """Store an ``__init__``'s arguments (``locals()``) as attributes of the same names, nothing else: scikit-learn's
    convention for estimators, written once for all of them."""
    for name, value in params.items():
        if name not in ("self", "__class__"):
            setattr(estimator, name, value)


def normalize_rows(X, eps=1e-12):
    """Scale every row of ``X`` to unit Euclidean norm (float32).

    Rows whose float32 norm overflows or underflows (entries beyond about 1e19 or below about 1e-19)
    are scaled in float64, so they too come out with unit norm instead of zero or NaN.
    """
    X = np.asarray(X, dtype=np.float32)
    with np.errstate(over="ignore", under="ignore"):
        norms = np.linalg.norm(X, axis=1, keepdims=True)
        out = X / np.maximum(norms, eps)
    bad = np.flatnonzero(~np.isfinite(norms[:, 0]) | (norms[:, 0] < 1e-15))
    if bad.size:
        X64 = X[bad].astype(np.float64)
        n64 = np.linalg.norm(X64, axis=1, keepdims=True)
        out[bad] = (X64 / np.where(n64 > 0, n64, 1.0)).astype(np.float32)
    return out


def _max_row_norm(X, chunk=8192):
    """Largest Euclidean row norm of ``X``, computed in float64 (no overflow), in chunks of rows."""
    return max(float(np.linalg.norm(X[s:s + chunk].astype(np.float64), axis=1).max()) for s in range(0, len(X), chunk))


class SelfExpressiveClustering(ClusterMixin, BaseEstimator):
    """Base class: coefficients -> affinity -> spectral clustering.

    Parameters shared by all subclasses (they list them in their own ``__init__``):

    n_clusters : int
    affinity : {"symmetric", "knn"}
        "symmetric": A = (|C_n| + |C_n|^T) / 2 with C_n the row-l2-normalised C;
        "knn": symmetrised ``n_neighbors``-NN connectivity graph over the rows of C_n
        (the reference code's setting for MNIST / Fashion-MNIST).
    n_neighbors : int, used by ``affinity="knn"``.
    n_components : int or None, number of eigenvectors (None: n_clusters).
    n_init : int, k-means restarts on the spectral embedding.
    normalize : bool, scale each input point to unit l2 norm first (the papers do).
    random_state : int or None.

    Fitted attributes: ``coef_`` (CSR, n x n), ``affinity_`` (CSR), ``labels_``,
    ``timings_`` (seconds per stage), ``n_features_in_``.
    """

    def _fit_coef(self, X):  # pragma: no cover - abstract
        raise NotImplementedError

    def _check_params(self):
        """Check the method's own parameters; called once, at the door of ``fit`` (:meth:`_check_common`)."""

    def _resolve_params(self, n_samples):
        """Resolve parameters whose value depends on the device or the data (SENet's ``"auto"`` defaults) into fitted
        attributes; called at the door of ``fit``, after :meth:`_check_params` and the sample-count checks. The
        parameters themselves are never changed (scikit-learn's convention)."""

    def _setting(self, name):
        """The value of parameter ``name`` that this estimator uses (a subclass with ``"auto"`` parameters returns
        the resolved one)."""
        return getattr(self, name)

    def _check_common(self, X):
        self._check_params()
        X = check_data(X, name="X", min_samples=2)
        check_n_clusters(self.n_clusters, X.shape[0])
        fit_seed(self, new=True)  # the one seed of this fit (random_state=None: fresh)
        self._resolve_params(X.shape[0])
        affinity = self._setting("affinity")
        if affinity not in ("symmetric", "knn"):
            raise ValueError(f"affinity must be 'symmetric' or 'knn', got {affinity!r}")
        if affinity == "knn":
            k = check_positive(self.n_neighbors, "n_neighbors", integer=True)
            if k >= X.shape[0]:
                raise ValueError(f"n_neighbors={k} must be smaller than the number of samples ({X.shape[0]})")
        if self.n_components is not None:
            check_positive(self.n_components, "n_components", integer=True)
        check_positive(self.n_init, "n_init", integer=True)
        normalize = getattr(self, "normalize", True)
        if normalize:
            X = normalize_rows(X)
        else:
            big = _max_row_norm(X)
            if big > 1e18:  # inner products of such rows overflow float32
                raise ValueError(f"X has rows of norm up to {big:.3g}; their inner products overflow float32. "
                                 "Rescale X or set normalize=True")
        check_distinct_points(X, self.n_clusters, normalized=normalize)
        return X

    def _memory_estimate(self, n_samples, n_features):
        """Peak bytes of the coefficient step and the hint to print when they do not fit.

        Subclasses with blockwise steps return ``[(nbytes, what, parameter_hint), ...]``; each entry is
        checked by :func:`selfexpress._memory.check_allocation` before any work starts.
        """
        return []

    def _check_memory(self, n_samples, n_features):
        for nbytes, what, hint in self._memory_estimate(n_samples, n_features):
            check_allocation(int(nbytes), what, hint, device=getattr(self, "_device", getattr(self, "device", "cpu")))

    def fit_coef(self, X):
        """Compute only the self-expressive coefficients ``coef_`` (no clustering)."""
        X = self._check_common(X)
        self._check_memory(*X.shape)
        self.n_features_in_ = X.shape[1]
        self.timings_ = {}
        t0 = time.perf_counter()
        self.coef_ = self._fit_coef(X).tocsr()
        self.timings_["coef"] = time.perf_counter() - t0
        return self

    def fit(self, X, y=None):
        """Compute coefficients, the affinity graph and the cluster labels of ``X``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : ignored

        Returns
        -------
        self
        """
        self.fit_coef(X)
        self._cluster_coef()
        return self

    def _cluster_coef(self):
        from ..cluster import spectral_clustering
        from ..graph import affinity_from_coef

        t0 = time.perf_counter()
        self.affinity_ = affinity_from_coef(self.coef_, method=self._setting("affinity"), n_neighbors=self.n_neighbors)
        self.timings_["graph"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        self.labels_ = spectral_clustering(
            self.affinity_, self.n_clusters, n_components=self.n_components,
            n_init=self.n_init, random_state=fit_seed(self),
        )
        self.timings_["spectral"] = time.perf_counter() - t0
        return self.labels_
