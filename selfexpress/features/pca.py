"""Uncentred PCA (the ``dim_reduction`` of EnSC / SENet) that scales to 70k x 3,472 on a laptop.

The reference computes ``eigh(X^T X)`` -- no mean removal -- and projects on the top eigenvectors.
Here ``X^T X`` is accumulated block by block in float64 (memory ``O(d^2)``, never a copy of X in
float64), only the top ``n_components`` eigenpairs are computed, and components are returned in
*descending* eigenvalue order (the reference keeps ascending order; the projection is the same up
to a permutation of columns).  Each component's sign is fixed so that its largest-magnitude entry
is positive, so results are deterministic.  ``center=True`` removes the (float64) mean first
(classical PCA; SENet uses mean subtraction for EMNIST).
"""

from __future__ import annotations

import numpy as np

__all__ = ["PCAUncentred", "pca_uncentred"]


def _as_blocks(X):
    """A list of 2-D arrays (one array, or the parts of a row-wise concatenation)."""
    parts = list(X) if isinstance(X, (list, tuple)) else [X]
    out = []
    for p in parts:
        a = p if isinstance(p, np.ndarray) else np.asarray(p)
        if a.ndim != 2:
            raise ValueError(f"X must be 2-D (n_samples, n_features), got shape {a.shape}")
        out.append(a)
    if not out or len({a.shape[1] for a in out}) != 1:
        raise ValueError("X parts must be a non-empty list of 2-D arrays with the same number of columns")
    return out


def _iter_rows(parts, block_size):
    for a in parts:
        for start in range(0, a.shape[0], block_size):
            yield a[start:start + block_size]


class PCAUncentred:
    """Projection on the top eigenvectors of ``X^T X`` (or of the covariance with ``center=True``).

    Attributes after :meth:`fit`: ``components_`` ``(n_components, n_features)`` float64 (rows,
    descending eigenvalue), ``eigenvalues_`` ``(n_components,)``, ``mean_`` (``None`` unless
    ``center``), ``n_features_in_``, ``n_samples_seen_``.  ``fit``/``transform`` accept one array or a
    list of arrays meaning their row-wise concatenation (no copy is made).
    """

    def __init__(self, n_components=500, center=False, block_size=8192):
        self.n_components = n_components
        self.center = center
        self.block_size = block_size

    def fit(self, X):
        import scipy.linalg

        parts = _as_blocks(X)
        n = sum(a.shape[0] for a in parts)
        d = parts[0].shape[1]
        k = int(self.n_components)
        if not 1 <= k <= d:
            raise ValueError(f"n_components must be in [1, n_features={d}], got {self.n_components}")
        if n == 0:
            raise ValueError("X is empty")
        mean = None
        if self.center:
            mean = np.zeros(d)
            for b in _iter_rows(parts, self.block_size):
                mean += b.sum(axis=0, dtype=np.float64)
            mean /= n
        if n < d and k <= n:
            # fewer points than features: the same eigenpairs from the smaller n x n Gram X X^T
            Xd = np.concatenate([np.asarray(a, dtype=np.float64) for a in parts])
            if mean is not None:
                Xd -= mean
            if not np.isfinite(Xd).all():
                raise ValueError("X contains NaN or infinity")
            evals, U = scipy.linalg.eigh(Xd @ Xd.T, subset_by_index=[n - k, n - 1], check_finite=False)
            evecs = Xd.T @ U
            evecs /= np.maximum(np.linalg.norm(evecs, axis=0), np.finfo(np.float64).tiny)
        else:
            G = np.zeros((d, d))
            for b in _iter_rows(parts, self.block_size):
                b = np.asarray(b, dtype=np.float64)
                if mean is not None:
                    b = b - mean
                if not np.isfinite(b).all():
                    raise ValueError("X contains NaN or infinity")
                G += b.T @ b  # numpy dispatches A.T @ A to BLAS syrk
            evals, evecs = scipy.linalg.eigh(G, subset_by_index=[d - k, d - 1], check_finite=False)
        order = np.arange(k)[::-1]
        evals, evecs = evals[order], evecs[:, order]
        signs = np.sign(evecs[np.argmax(np.abs(evecs), axis=0), np.arange(k)])
        signs[signs == 0] = 1.0
        self.components_ = (evecs * signs).T.copy()
        self.eigenvalues_ = evals
        self.mean_ = mean
        self.n_features_in_ = d
        self.n_samples_seen_ = n
        return self

    def transform(self, X, dtype=np.float32):
        """``(X - mean) @ components_.T`` computed block by block in ``dtype`` (float32 by default)."""
        if not hasattr(self, "components_"):
            from sklearn.exceptions import NotFittedError

            raise NotFittedError("This PCAUncentred instance is not fitted yet; call 'fit' first.")
        parts = _as_blocks(X)
        if parts[0].shape[1] != self.n_features_in_:
            raise ValueError(f"X has {parts[0].shape[1]} features, but PCAUncentred was fitted with "
                             f"{self.n_features_in_} features")
        V = self.components_.T.astype(dtype)
        mean = None if self.mean_ is None else self.mean_.astype(dtype)
        out = np.empty((sum(a.shape[0] for a in parts), V.shape[1]), dtype=dtype)
        pos = 0
        for b in _iter_rows(parts, self.block_size):
            b = np.asarray(b, dtype=dtype)
            if mean is not None:
                b = b - mean
            out[pos:pos + b.shape[0]] = b @ V
            pos += b.shape[0]
        return out

    def fit_transform(self, X, dtype=np.float32):
        return self.fit(X).transform(X, dtype=dtype)


def pca_uncentred(X, n_components=500, center=False, *, block_size=8192, return_model=False):
    """Project ``X`` (n, d) on the top ``n_components`` eigenvectors of ``X^T X`` (float32 result).

    ``center=True`` removes the mean first.  ``X`` may be a list of arrays (their row-wise
    concatenation).  With ``return_model=True`` returns ``(Z, model)``; ``model.transform(X_new)``
    projects new (out-of-sample) data on the same basis.
    """
    model = PCAUncentred(n_components=n_components, center=center, block_size=block_size)
    Z = model.fit_transform(X)
    return (Z, model) if return_model else Z
