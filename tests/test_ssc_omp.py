"""SSC-OMP: batched OMP against a straightforward per-point OMP; subspace preservation; parameters."""

import numpy as np
import pytest
import scipy.sparse as sp

from selfexpress.data import make_union_of_subspaces
from selfexpress.models.ssc_omp import SSCOMP, omp_coef


def _omp_reference(X, n_nonzero, thr):
    """One point at a time, as the reference code (float64, lstsq re-solved from scratch every step)."""
    X = np.asarray(X, dtype=np.float64)
    N = X.shape[0]
    C = np.zeros((N, N))
    for i in range(N):
        y = X[i]
        r = y.copy()
        S = []
        for _ in range(min(n_nonzero, N - 1)):
            coh = np.abs(X @ r)
            coh[i] = -1
            coh[S] = -1
            S.append(int(np.argmax(coh)))
            c = np.linalg.lstsq(X[S].T, y, rcond=None)[0]
            r = y - c @ X[S]
            if r @ r <= thr * (y @ y):
                break
        C[i, S] = c
    return C


def test_matches_per_point_omp():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((150, 12))
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    ref = _omp_reference(X, 6, 1e-6)
    C = omp_coef(X, n_nonzero=6, thr=1e-6, block_size=64)
    np.testing.assert_array_equal(C.toarray() != 0, ref != 0)
    np.testing.assert_allclose(C.toarray(), ref, atol=1e-5)


def test_subspace_preserving_on_independent_subspaces():
    X, y, _ = make_union_of_subspaces(4, 3, 20, 40, random_state=1)  # 4 x 3 = 12 <= 20: independent
    C = omp_coef(X, n_nonzero=3, thr=1e-10)
    rows, cols = C.nonzero()
    assert rows.size > 0
    assert np.all(y[rows] == y[cols])  # every non-zero inside the point's own subspace
    # noiseless: three atoms of the own subspace reconstruct exactly
    R = X - C @ X
    assert np.abs(R).max() < 1e-6
    np.testing.assert_array_equal(np.diff(C.indptr), 3)


def test_residual_threshold_stops_early():
    rng = np.random.default_rng(2)
    X = rng.standard_normal((60, 10))
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    C = omp_coef(X, n_nonzero=8, thr=1.0)  # ||r||^2 <= ||y||^2 always: one step each
    np.testing.assert_array_equal(np.diff(C.indptr), 1)
    C8 = omp_coef(X, n_nonzero=8, thr=0.0)
    assert np.diff(C8.indptr).max() == 8


def test_diagonal_zero_shape_and_determinism():
    X, _, _ = make_union_of_subspaces(3, 4, 12, 30, noise=0.05, random_state=3)
    a = SSCOMP(n_clusters=3, n_nonzero=4, random_state=0).fit(X)
    b = SSCOMP(n_clusters=3, n_nonzero=4, random_state=0).fit(X)
    assert sp.isspmatrix_csr(a.coef_) and a.coef_.shape == (90, 90)
    assert np.all(a.coef_.diagonal() == 0)
    assert abs(a.coef_ - b.coef_).max() == 0
    np.testing.assert_array_equal(a.labels_, b.labels_)


def test_estimator_clusters_independent_subspaces():
    from selfexpress.metrics import clustering_accuracy

    X, y, _ = make_union_of_subspaces(4, 3, 20, 40, random_state=4)
    est = SSCOMP(n_clusters=4, n_nonzero=3, random_state=0).fit(X)
    assert clustering_accuracy(y, est.labels_) == 1.0


@pytest.mark.parametrize(
    "kw", [dict(n_nonzero=0), dict(n_nonzero=2.5), dict(thr=-1.0), dict(thr=float("inf")), dict(block_size=0),
           dict(affinity="x"), dict(n_clusters=0), dict(device="nonsense")],
)
def test_bad_parameters_raise(kw):
    X, _, _ = make_union_of_subspaces(3, 2, 8, 10, random_state=5)
    with pytest.raises(ValueError):
        SSCOMP(**{"n_clusters": 3, **kw}).fit(X)
