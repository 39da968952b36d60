import warnings

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.metrics import adjusted_rand_score

from selfexpress.cluster import spectral_clustering, spectral_embedding


def _block_graph(sizes, p_in=0.5, n_links=3, w_link=0.01, seed=0):
    """Random dense-ish blocks joined by a few weak links (one connected component)."""
    rng = np.random.default_rng(seed)
    n = sum(sizes)
    labels = np.repeat(np.arange(len(sizes)), sizes)
    W = np.zeros((n, n))
    start = 0
    for s in sizes:
        blk = (rng.random((s, s)) < p_in) * rng.uniform(0.5, 1.0, (s, s))
        W[start:start + s, start:start + s] = blk
        start += s
    for _ in range(n_links * len(sizes)):
        i, j = rng.integers(n, size=2)
        W[i, j] = w_link
    W = np.triu(W, 1)
    W = W + W.T
    return sp.csr_matrix(W), labels


def _dense_reference_embedding(A, k):
    W = A.toarray().astype(np.float64)
    np.fill_diagonal(W, 0)
    d = W.sum(1)
    dinv = np.where(d > 0, 1 / np.sqrt(np.where(d > 0, d, 1)), 0)
    M = dinv[:, None] * W * dinv[None, :] + np.diag((d == 0).astype(float))
    vals, vecs = np.linalg.eigh(M)
    U = vecs[:, ::-1][:, :k]
    return U / np.linalg.norm(U, axis=1, keepdims=True)


@pytest.mark.parametrize("solver", ["dense", "arpack", "auto"])
def test_embedding_matches_dense_eigh(solver):
    A, _ = _block_graph([20, 25, 30], seed=1)
    U = spectral_embedding(A, 3, random_state=0, eigen_solver=solver)
    R = _dense_reference_embedding(A, 3)
    assert U.shape == (75, 3)
    np.testing.assert_allclose(np.linalg.norm(U, axis=1), 1.0, atol=1e-12)
    # row-normalised embeddings of the same subspace have the same Gram matrix
    np.testing.assert_allclose(U @ U.T, R @ R.T, atol=1e-6)


def test_embedding_isolated_nodes_no_nan():
    A, _ = _block_graph([15, 15], seed=2)
    A = A.tolil()
    A[4, :] = 0
    A[:, 4] = 0
    A = A.tocsr()
    A.eliminate_zeros()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for solver in ("dense", "arpack"):
            U = spectral_embedding(A, 3, random_state=0, eigen_solver=solver)
            assert np.isfinite(U).all()
            R = _dense_reference_embedding(A, 3)
            np.testing.assert_allclose(U @ U.T, R @ R.T, atol=1e-6)


@pytest.mark.parametrize("solver", ["dense", "arpack"])
def test_clustering_recovers_blocks(solver):
    A, labels = _block_graph([30, 40, 50, 35], seed=3)
    pred = spectral_clustering(A, 4, n_init=5, random_state=0, eigen_solver=solver)
    assert pred.dtype == np.int64 and pred.shape == labels.shape
    assert adjusted_rand_score(labels, pred) == 1.0


def test_clustering_deterministic():
    A, labels = _block_graph([20, 20, 20], p_in=0.2, w_link=0.3, n_links=20, seed=4)
    a = spectral_clustering(A, 3, n_components=4, n_init=3, random_state=7, eigen_solver="arpack")
    b = spectral_clustering(A, 3, n_components=4, n_init=3, random_state=7, eigen_solver="arpack")
    np.testing.assert_array_equal(a, b)


def test_disconnected_graph_warns():
    A, labels = _block_graph([10, 10, 10], n_links=0, seed=5)
    with pytest.warns(UserWarning, match="3 connected components"):
        pred = spectral_clustering(A, 2, n_init=2, random_state=0)
    assert pred.shape == (30,) and set(np.unique(pred)) <= {0, 1}
    # exactly n_clusters components: no warning, and the components are found
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pred = spectral_clustering(A, 3, n_init=2, random_state=0)
    assert adjusted_rand_score(labels, pred) == 1.0


def test_bad_input():
    A, _ = _block_graph([10, 10], seed=6)
    with pytest.raises(ValueError, match="square"):
        spectral_clustering(sp.random(4, 5, density=0.5), 2)
    bad = A.toarray()
    bad[0, 1] = bad[1, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        spectral_clustering(bad, 2)
    neg = A.toarray()
    neg[0, 1] = neg[1, 0] = -1.0
    with pytest.raises(ValueError, match="negative"):
        spectral_embedding(neg, 2)
    with pytest.raises(ValueError, match="n_clusters"):
        spectral_clustering(A, 0)
    with pytest.raises(ValueError, match="n_clusters"):
        spectral_clustering(A, 21)
    with pytest.raises(ValueError, match="eigen_solver"):
        spectral_embedding(A, 2, eigen_solver="magic")
    with pytest.raises(ValueError, match="n_components"):
        spectral_embedding(A, 0)


def test_asymmetric_input_is_symmetrised_with_warning():
    A, labels = _block_graph([15, 15], seed=7)
    Au = sp.triu(A).tocsr()  # upper triangle only
    with pytest.warns(UserWarning, match="not symmetric"):
        U = spectral_embedding(Au, 2, random_state=0)
    V = spectral_embedding(0.5 * (Au + Au.T), 2, random_state=0)
    np.testing.assert_allclose(U @ U.T, V @ V.T, atol=1e-8)


def test_lobpcg_agrees_with_arpack():
    pytest.importorskip("pyamg")
    # ~3000-node k-NN-like graph: 6 rings of 500 nodes (each node linked to its 3 successors),
    # joined by a few weak links; clear eigengap after the 6th eigenvalue.
    rng = np.random.default_rng(8)
    n_blocks, size = 6, 500
    rows, cols, vals = [], [], []
    for b in range(n_blocks):
        base = b * size
        for s in (1, 2, 3, 37):
            i = np.arange(size)
            rows.append(base + i)
            cols.append(base + (i + s) % size)
            vals.append(np.ones(size))
    links = rng.integers(0, n_blocks * size, size=(10, 2))
    rows.append(links[:, 0])
    cols.append(links[:, 1])
    vals.append(np.full(10, 1e-3))
    n = n_blocks * size
    W = sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n, n))
    W = W + W.T
    W.setdiag(0)
    W.eliminate_zeros()
    Ua = spectral_embedding(W, n_blocks, random_state=0, eigen_solver="arpack")
    Ul = spectral_embedding(W, n_blocks, random_state=0, eigen_solver="lobpcg")
    # compare the spanned subspaces (projectors) without forming n x n matrices
    Qa, _ = np.linalg.qr(Ua)
    Ql, _ = np.linalg.qr(Ul)
    s = np.linalg.svd(Qa.T @ Ql, compute_uv=False)
    assert s.min() > 1 - 1e-6
    idx = np.random.default_rng(0).choice(n, 300, replace=False)  # rotation-invariant Gram check
    np.testing.assert_allclose(Ua[idx] @ Ua[idx].T, Ul[idx] @ Ul[idx].T, atol=1e-5)
