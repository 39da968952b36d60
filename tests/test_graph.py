import numpy as np
import pytest
import scipy.sparse as sp
import torch
from sklearn.neighbors import kneighbors_graph
from sklearn.preprocessing import normalize

from selfexpress.graph import StreamingTopK, affinity_from_coef, keep_largest_per_row, knn_rows, topk_to_csr


def _random_coef(n, density, seed, dtype=np.float64):
    rng = np.random.default_rng(seed)
    C = sp.random(n, n, density=density, random_state=seed, data_rvs=rng.standard_normal, format="csr")
    C.setdiag(0)
    C.eliminate_zeros()
    return C.astype(dtype)


def _dense_knn_reference(X, k):
    """Brute force: rank by ||x_i - x_j||^2 (equivalently 2 x_i.x_j - ||x_j||^2), ties -> smaller j."""
    D = X.toarray() if sp.issparse(X) else np.asarray(X)
    sq = (D * D).sum(1)
    G = D @ D.T
    out = []
    for i in range(D.shape[0]):
        s = 2 * G[i] - sq
        s[i] = -np.inf
        out.append(np.lexsort((np.arange(D.shape[0]), -s))[:k])
    return np.array(out)


def _check_affinity_props(A):
    assert sp.isspmatrix_csr(A)
    assert abs(A - A.T).max() == 0
    assert A.data.min() >= 0
    assert np.all(A.diagonal() == 0)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_symmetric_affinity_matches_dense(dtype):
    C = _random_coef(40, 0.2, 0, dtype)
    A = affinity_from_coef(C, method="symmetric")
    Cd = C.toarray().astype(np.float64)
    Cn = Cd / np.maximum(np.linalg.norm(Cd, axis=1, keepdims=True), 1e-300)
    ref = 0.5 * (np.abs(Cn) + np.abs(Cn).T)
    np.fill_diagonal(ref, 0)
    _check_affinity_props(A)
    np.testing.assert_allclose(A.toarray(), ref, rtol=1e-5 if dtype == np.float32 else 1e-12, atol=1e-7)
    assert A.dtype == dtype


def test_symmetric_affinity_zero_rows_dense_input_and_diag():
    C = _random_coef(30, 0.3, 1).toarray()
    C[3] = 0
    C[5, 5] = 7.0  # a stray diagonal entry must not appear in A
    A = affinity_from_coef(C, method="symmetric", normalize_rows=False)
    ref = 0.5 * (np.abs(C) + np.abs(C).T)
    np.fill_diagonal(ref, 0)
    np.testing.assert_allclose(A.toarray(), ref, atol=1e-12)
    _check_affinity_props(A)


def test_max_normalize():
    C = _random_coef(30, 0.3, 2)
    A = affinity_from_coef(C, method="symmetric", max_normalize=True)
    Cd = np.abs(C.toarray())
    Cm = Cd / Cd.max(axis=1, keepdims=True)
    ref = 0.5 * (Cm + Cm.T)
    np.testing.assert_allclose(A.toarray(), ref, atol=1e-12)


@pytest.mark.parametrize("density", [0.5, 0.1])
def test_knn_affinity_matches_sklearn(density):
    C = _random_coef(60, density, 3)
    A = affinity_from_coef(C, method="knn", n_neighbors=3)
    Cn = normalize(C)
    G = kneighbors_graph(Cn, 3, mode="connectivity", include_self=False)
    ref = 0.5 * (G + G.T)
    _check_affinity_props(A)
    np.testing.assert_array_equal(A.toarray(), ref.toarray())


def test_knn_affinity_matches_dense_reference_both_routes_and_ties():
    rng = np.random.default_rng(4)
    # Values +-1 / +-0.5 make norms and inner products exact, so many exact ties occur; a zero row
    # is a "hub" at distance 1 from every unit row.
    D = np.zeros((50, 30))
    for i in range(50):
        if i % 3 == 0:
            D[i, rng.integers(30)] = rng.choice([-1.0, 1.0])
        else:
            D[i, rng.choice(30, 4, replace=False)] = rng.choice([-0.5, 0.5], 4)
    D[7] = 0
    X = sp.csr_matrix(D)
    ref = _dense_knn_reference(X, 4)
    sparse_route = knn_rows(X, 4, dense_threshold=np.inf)
    dense_route = knn_rows(X, 4, dense_threshold=0.0, dense_block_size=7 * 50)
    np.testing.assert_array_equal(np.sort(sparse_route, 1), np.sort(ref, 1))
    np.testing.assert_array_equal(np.sort(dense_route, 1), np.sort(ref, 1))
    for density in (0.02, 0.3):
        C = normalize(_random_coef(70, density, 5))
        ref = _dense_knn_reference(C, 3)
        for th in (0.0, np.inf):
            np.testing.assert_array_equal(np.sort(knn_rows(C, 3, dense_threshold=th, dense_block_size=9 * 70), 1),
                                          np.sort(ref, 1))


def test_knn_sparse_route_small_blocks_matches():
    C = normalize(_random_coef(80, 0.05, 6))
    a = knn_rows(C, 3, block_flops=50)
    b = knn_rows(C, 3, dense_threshold=0.0, dense_block_size=80)
    np.testing.assert_array_equal(np.sort(a, 1), np.sort(b, 1))


@pytest.mark.parametrize("n_jobs", [1, 2, 3])
def test_knn_dense_route_threads_same_result(n_jobs):
    # ties (values +-0.5, a zero row) and a last block shorter than the others: same rows whatever the threads
    rng = np.random.default_rng(8)
    D = np.zeros((47, 30))
    for i in range(47):
        D[i, rng.choice(30, 4, replace=False)] = rng.choice([-0.5, 0.5], 4)
    D[11] = 0
    X = sp.csr_matrix(D)
    ref = _dense_knn_reference(X, 4)
    got = knn_rows(X, 4, dense_threshold=0.0, dense_block_size=5 * 47, n_jobs=n_jobs)
    np.testing.assert_array_equal(np.sort(got, 1), np.sort(ref, 1))
    C = normalize(_random_coef(90, 0.3, 9)).astype(np.float32)
    np.testing.assert_array_equal(knn_rows(C, 3, dense_threshold=0.0, dense_block_size=8 * 90, n_jobs=n_jobs),
                                  knn_rows(C, 3, dense_threshold=0.0, dense_block_size=8 * 90, n_jobs=1))


def test_knn_dense_route_block_products_run_concurrently(monkeypatch):
    """The dense route's row-block products (the whole cost of a "knn" graph: sum_j nnz(column j)^2 multiply-adds,
    8 minutes on one core for SENet's 70,000 x 1,000-non-zero coefficients) run on n_jobs threads at once: every
    block product here waits until a second one has started, which a serial loop never does."""
    import threading

    from selfexpress.graph import _affinity

    monkeypatch.delenv("SELFEXPRESS_MAX_MEMORY", raising=False)
    barrier = threading.Barrier(2, timeout=20)
    threads = set()
    inner = _affinity._knn_dense_scores

    def scores(*args):
        threads.add(threading.get_ident())
        barrier.wait()  # BrokenBarrierError (a failure) unless two blocks are in flight together
        return inner(*args)

    monkeypatch.setattr(_affinity, "_knn_dense_scores", scores)
    C = normalize(_random_coef(80, 0.2, 10))
    got = knn_rows(C, 3, dense_threshold=0.0, dense_block_size=10 * 80, n_jobs=2)  # 8 blocks
    assert len(threads) == 2
    np.testing.assert_array_equal(np.sort(got, 1), np.sort(_dense_knn_reference(C, 3), 1))
    with pytest.raises(ValueError, match="n_jobs"):
        knn_rows(C, 3, dense_threshold=0.0, n_jobs=0)


def test_affinity_bad_input():
    C = _random_coef(10, 0.3, 7)
    with pytest.raises(ValueError, match="method"):
        affinity_from_coef(C, method="nope")
    with pytest.raises(ValueError, match="n_neighbors"):
        affinity_from_coef(C, method="knn", n_neighbors=10)
    with pytest.raises(ValueError, match="square"):
        affinity_from_coef(sp.random(5, 6, density=0.5, format="csr"), method="symmetric")
    bad = C.toarray()
    bad[0, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        affinity_from_coef(bad)


def test_topk_to_csr_roundtrip():
    rng = np.random.default_rng(8)
    n, m, k = 20, 15, 4
    dense = np.zeros((n, m), dtype=np.float32)
    idx = np.stack([rng.choice(m, k, replace=False) for _ in range(n)])
    vals = rng.standard_normal((n, k)).astype(np.float32)
    vals[0, 1] = 0.0  # dropped
    idx[1, 2] = -1  # padding, dropped
    for i in range(n):
        for t in range(k):
            if idx[i, t] >= 0:
                dense[i, idx[i, t]] = vals[i, t]
    M = topk_to_csr(vals, idx, m)
    assert sp.isspmatrix_csr(M) and M.dtype == np.float32 and M.has_sorted_indices
    np.testing.assert_array_equal(M.toarray(), dense)
    assert M.nnz == n * k - 2
    # torch input works too
    M2 = topk_to_csr(torch.from_numpy(vals), torch.from_numpy(idx), m)
    np.testing.assert_array_equal(M2.toarray(), dense)
    with pytest.raises(ValueError):
        topk_to_csr(vals, idx, 3)
    dup = idx.copy()
    dup[2, 1] = dup[2, 0]
    with pytest.raises(ValueError, match="repeats"):
        topk_to_csr(vals, dup, m)


@pytest.mark.parametrize("largest_abs", [True, False])
def test_streaming_topk_matches_full_topk(largest_abs):
    g = torch.Generator().manual_seed(0)
    n_rows, n_cols, k = 13, 101, 7
    full = torch.randn(n_rows, n_cols, generator=g)
    st = StreamingTopK(n_rows, k, largest_abs=largest_abs)
    for c0 in range(0, n_cols, 10):  # ragged last block
        st.update(full[:, c0:c0 + 10], c0)
    vals, idx = st.result()
    key = full.abs() if largest_abs else full
    _, ref_idx = torch.topk(key, k, dim=1)
    ref_vals = torch.gather(full, 1, ref_idx)
    assert vals.dtype == np.float32 and idx.dtype == np.int64
    np.testing.assert_array_equal(idx, ref_idx.numpy())
    np.testing.assert_array_equal(vals, ref_vals.numpy())


def test_streaming_topk_k_larger_than_columns_and_exclusion():
    full = torch.tensor([[3.0, -5.0, 1.0], [0.5, 2.0, -4.0]])
    st = StreamingTopK(2, 5, exclude_cols=[1, -1])
    st.update(full[:, :2], 0).update(full[:, 2:], 2)
    vals, idx = st.result()
    np.testing.assert_array_equal(idx[0], [0, 2, -1, -1, -1])
    np.testing.assert_array_equal(vals[0], [3.0, 1.0, 0, 0, 0])
    np.testing.assert_array_equal(idx[1], [2, 1, 0, -1, -1])
    M = topk_to_csr(vals, idx, 3)
    np.testing.assert_array_equal(M.toarray(), [[3.0, 0, 1.0], [0.5, 2.0, -4.0]])


def test_streaming_topk_bad_input():
    st = StreamingTopK(2, 3)
    with pytest.raises(ValueError):
        st.update(torch.zeros(3, 4), 0)
    with pytest.raises(ValueError, match="NaN"):
        st.update(torch.tensor([[np.nan], [1.0]]), 0)
    with pytest.raises(ValueError):
        StreamingTopK(0, 3)


def test_keep_largest_per_row_hand_checked():
    C = sp.csr_matrix(np.array([[0.0, -3.0, 1.0, 2.0],
                                [0.5, 0.0, 0.0, 0.0],
                                [1.0, -1.0, 0.0, 0.25]]))
    K = keep_largest_per_row(C, 2).toarray()
    # row 0: |-3| and 2 stay; row 1 has one entry; row 2: the tie |1| = |-1| keeps both, 0.25 goes
    np.testing.assert_array_equal(K, [[0.0, -3.0, 0.0, 2.0], [0.5, 0.0, 0.0, 0.0], [1.0, -1.0, 0.0, 0.0]])
    K1 = keep_largest_per_row(C, 1).toarray()
    np.testing.assert_array_equal(K1, [[0.0, -3.0, 0.0, 0.0], [0.5, 0.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0]])
    assert keep_largest_per_row(C, 3).nnz == C.nnz
    with pytest.raises(ValueError, match="non-negative integer"):
        keep_largest_per_row(C, -1)


def test_affinity_leaves_the_callers_matrix_untouched():
    """Explicit zeros and duplicate entries are cleaned in a copy: the caller's CSR keeps its arrays."""
    C = sp.csr_matrix((np.array([0.5, 0.0, 0.25, 0.25, 1.0]), np.array([1, 2, 0, 0, 1]), np.array([0, 2, 4, 5])),
                      shape=(3, 3))
    before = (C.data.copy(), C.indices.copy(), C.indptr.copy())
    for method in ("symmetric", "knn"):
        A = affinity_from_coef(C, method=method, n_neighbors=1)
        assert A.shape == (3, 3)
        for got, want in zip((C.data, C.indices, C.indptr), before):
            np.testing.assert_array_equal(got, want)
