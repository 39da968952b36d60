import itertools

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from selfexpress.metrics import (
    ari,
    clustering_accuracy,
    connectivity,
    evaluate,
    nmi,
    subspace_preserving_error,
)


# ---------------------------------------------------------------- label metrics


def test_permuted_labels_score_one():
    y = np.array([0, 0, 1, 1, 2, 2, 2])
    perm = np.array([2, 0, 1])[y]  # relabel 0->2, 1->0, 2->1
    assert clustering_accuracy(y, perm) == 1.0
    assert nmi(y, perm) == pytest.approx(1.0)
    assert ari(y, perm) == pytest.approx(1.0)


def test_string_labels():
    assert clustering_accuracy(["a", "a", "b"], [5, 5, 7]) == 1.0


def test_hand_computed_accuracy():
    # true:  0 0 0 1 1 1 ; pred: 1 1 0 0 0 0
    # contingency rows=true, cols=pred: [[1, 2], [3, 0]] -> best matching 2 + 3 = 5 of 6
    y_true = [0, 0, 0, 1, 1, 1]
    y_pred = [1, 1, 0, 0, 0, 0]
    assert clustering_accuracy(y_true, y_pred) == pytest.approx(5 / 6)


def test_accuracy_more_predicted_clusters_than_true():
    # true 2 clusters, pred 3: best match uses 2 predicted clusters; the third counts as errors
    y_true = [0, 0, 0, 0, 1, 1]
    y_pred = [0, 0, 2, 2, 1, 1]
    assert clustering_accuracy(y_true, y_pred) == pytest.approx(4 / 6)
    # and the other way round
    assert clustering_accuracy(y_pred, y_true) == pytest.approx(4 / 6)


def test_accuracy_single_predicted_cluster():
    assert clustering_accuracy([0, 0, 0, 1, 1, 2], [0] * 6) == pytest.approx(3 / 6)


def _brute_force_acc(y_true, y_pred):
    t = np.unique(y_true)
    p = np.unique(y_pred)
    best = 0
    # every injective map from the smaller label set into the larger one
    if len(p) <= len(t):
        for image in itertools.permutations(t, len(p)):
            m = dict(zip(p, image))
            best = max(best, sum(m[b] == a for a, b in zip(y_true, y_pred)))
    else:
        for image in itertools.permutations(p, len(t)):
            m = dict(zip(t, image))
            best = max(best, sum(m[a] == b for a, b in zip(y_true, y_pred)))
    return best / len(y_true)


@settings(max_examples=60, deadline=None)
@given(
    st.integers(1, 9).flatmap(
        lambda n: st.tuples(
            st.lists(st.integers(0, 3), min_size=n, max_size=n),
            st.lists(st.integers(0, 4), min_size=n, max_size=n),
        )
    )
)
def test_accuracy_matches_brute_force(pair):
    y_true, y_pred = pair
    assert clustering_accuracy(y_true, y_pred) == pytest.approx(_brute_force_acc(y_true, y_pred))


def test_nmi_average_method():
    y_true = [0, 0, 0, 1, 1, 1, 2, 2]
    y_pred = [0, 0, 1, 1, 1, 1, 1, 2]
    g = nmi(y_true, y_pred)
    assert g == pytest.approx(nmi(y_true, y_pred, average_method="geometric"))
    assert g != pytest.approx(nmi(y_true, y_pred, average_method="arithmetic"))
    with pytest.raises(ValueError):
        nmi(y_true, y_pred, average_method="harmonic")


@pytest.mark.parametrize("fn", [clustering_accuracy, nmi, ari, evaluate])
def test_label_validation(fn):
    with pytest.raises(ValueError, match="length"):
        fn([0, 1, 1], [0, 1])
    with pytest.raises(ValueError, match="empty"):
        fn([], [])
    with pytest.raises(ValueError, match="1-D"):
        fn(np.zeros((3, 1)), np.zeros((3, 1)))
    with pytest.raises(ValueError, match="NaN"):
        fn([0.0, np.nan], [0, 1])


# ---------------------------------------------------------------- coefficient metrics


def _block_diag_coef(sizes, rng):
    blocks = []
    for m in sizes:
        b = rng.uniform(0.1, 1.0, size=(m, m)) * rng.choice([-1, 1], size=(m, m))
        np.fill_diagonal(b, 0.0)
        blocks.append(b)
    labels = np.repeat(np.arange(len(sizes)), sizes)
    return sp.block_diag(blocks, format="csr"), labels


def test_sre_zero_for_block_diagonal():
    C, labels = _block_diag_coef([4, 5, 3], np.random.default_rng(0))
    assert subspace_preserving_error(C, labels) == 0.0
    assert subspace_preserving_error(C.toarray(), labels) == 0.0


def test_sre_hand_computed():
    labels = np.array([0, 0, 0, 1, 1])
    C = np.zeros((5, 5))
    C[0, 1] = 0.5
    C[0, 2] = -0.25
    C[0, 3] = -0.25  # row 0: 0.25 of its l1 mass 1.0 is off-cluster -> 25 %
    C[1, 0] = 1.0
    C[2, 0] = 1.0
    C[3, 4] = 1.0
    C[4, 3] = 1.0
    # rows 1..4 contribute 0, so SRE = 25 / 5 = 5 %
    assert subspace_preserving_error(C, labels) == pytest.approx(5.0, abs=1e-8)
    # a matrix whose only nonzero row is row 0 (others all-zero contribute 0)
    C2 = np.zeros((5, 5))
    C2[0] = C[0]
    assert subspace_preserving_error(C2, labels) == pytest.approx(5.0, abs=1e-8)
    # every row fully off-cluster -> 100 %
    C3 = np.zeros((5, 5))
    C3[[0, 1, 2], 3] = 1.0
    C3[[3, 4], 0] = 2.0
    assert subspace_preserving_error(C3, labels) == pytest.approx(100.0, abs=1e-6)


def test_sre_sparse_equals_dense_and_reference_loop():
    rng = np.random.default_rng(1)
    n = 30
    labels = rng.integers(0, 3, size=n)
    dense = rng.standard_normal((n, n)) * (rng.random((n, n)) < 0.2)
    np.fill_diagonal(dense, 0.0)
    ref = np.mean(
        [np.abs(dense[i, labels != labels[i]]).sum() / (np.abs(dense[i]).sum() + 1e-10) for i in range(n)]
    ) * 100
    for C in (dense, sp.csr_matrix(dense), sp.coo_matrix(dense), sp.csr_array(dense)):
        assert subspace_preserving_error(C, labels) == pytest.approx(ref, rel=1e-12)


def test_sre_sparse_duplicates_summed():
    # COO with duplicate entries that cancel: the row has no mass, contributes 0
    C = sp.coo_matrix(([1.0, -1.0, 1.0], ([0, 0, 1], [1, 1, 0])), shape=(2, 2))
    assert subspace_preserving_error(C, [0, 1]) == pytest.approx(50.0)


def test_conn_disconnected_cluster_is_zero():
    # cluster 0 = {0,1,2,3} split into {0,1} and {2,3}; cluster 1 fully connected
    labels = np.array([0, 0, 0, 0, 1, 1, 1])
    C = np.zeros((7, 7))
    C[0, 1] = C[1, 0] = 1.0
    C[2, 3] = C[3, 2] = 1.0
    C[4:, 4:] = 1.0
    np.fill_diagonal(C, 0.0)
    assert connectivity(C, labels) == 0.0
    assert connectivity(sp.csr_matrix(C), labels) == 0.0
    # linking the two pieces through an off-cluster point does not help
    C[1, 4] = C[4, 2] = 1.0
    assert connectivity(C, labels) == 0.0


def test_conn_isolated_node_and_singleton_class_are_zero():
    labels = np.array([0, 0, 0, 1, 1])
    C = np.zeros((5, 5))
    C[0, 1] = C[1, 0] = 1.0  # node 2 isolated in class 0
    C[3, 4] = C[4, 3] = 1.0
    assert connectivity(C, labels) == 0.0
    C2 = np.zeros((3, 3))
    C2[0, 1] = C2[1, 0] = 1.0
    assert connectivity(C2, [0, 0, 1]) == 0.0  # class 1 is a single point


@pytest.mark.parametrize("m", [2, 3, 5, 8])
def test_conn_complete_graph_closed_form(m):
    # normalised Laplacian of K_m has eigenvalues 0 and m/(m-1) (multiplicity m-1)
    C = np.ones((m, m)) - np.eye(m)
    assert connectivity(C, np.zeros(m, dtype=int)) == pytest.approx(m / (m - 1))
    # two complete classes of different sizes -> the min
    C2 = sp.block_diag([C, np.ones((3, 3)) - np.eye(3)], format="csr")
    labels = np.repeat([0, 1], [m, 3])
    assert connectivity(C2, labels) == pytest.approx(min(m / (m - 1), 1.5))


def test_conn_scale_invariant_rows_and_path_graph():
    # row-normalisation: scaling a row does not change CONN for a symmetric pattern
    # path graph P3 with unit weights: normalised Laplacian eigenvalues 0, 1, 2
    C = np.array([[0, 1, 0], [0.5, 0, 0.5], [0, 1, 0]], dtype=float)
    # after l2 row normalisation rows 0, 2 -> [0,1,0]; row 1 -> [s,0,s] with s = 1/sqrt(2)
    s = 1 / np.sqrt(2)
    W = 0.5 * (np.array([[0, 1, 0], [s, 0, s], [0, 1, 0]]) + np.array([[0, 1, 0], [s, 0, s], [0, 1, 0]]).T)
    d = W.sum(1)
    L = np.eye(3) - W / np.sqrt(np.outer(d, d))
    expected = np.linalg.eigvalsh(L)[1]
    assert connectivity(C, [0, 0, 0]) == pytest.approx(expected)
    assert connectivity(10 * C, [0, 0, 0]) == pytest.approx(expected)
    assert connectivity(-C, [0, 0, 0]) == pytest.approx(expected)


def test_conn_sparse_equals_dense_and_eigsh_path(monkeypatch):
    rng = np.random.default_rng(2)
    C, labels = _block_diag_coef([12, 15], rng)
    C = C.multiply(sp.csr_matrix(rng.random(C.shape) < 0.5)).tocsr()
    C = C + sp.csr_matrix(rng.standard_normal(C.shape) * (rng.random(C.shape) < 0.05))  # off-cluster noise
    C.setdiag(0)
    C.eliminate_zeros()
    dense_val = connectivity(C.toarray(), labels)
    sparse_val = connectivity(C, labels)
    assert dense_val > 0
    assert sparse_val == pytest.approx(dense_val, rel=1e-10)
    import selfexpress.metrics as metrics

    monkeypatch.setattr(metrics, "_DENSE_EIG_MAX", 1)  # force the ARPACK branch
    assert connectivity(C, labels) == pytest.approx(dense_val, rel=1e-6)


def test_coef_validation():
    with pytest.raises(ValueError, match="square"):
        subspace_preserving_error(np.zeros((3, 4)), [0, 1, 1])
    with pytest.raises(ValueError, match="labels"):
        connectivity(np.zeros((3, 3)), [0, 1])
    with pytest.raises(ValueError, match="NaN"):
        subspace_preserving_error(np.full((2, 2), np.nan), [0, 1])
    with pytest.raises(ValueError, match="empty"):
        connectivity(np.zeros((0, 0)), [])


def test_evaluate_keys():
    y = np.array([0, 0, 1, 1])
    out = evaluate(y, 1 - y)
    assert out == {"acc": 1.0, "nmi": pytest.approx(1.0), "ari": pytest.approx(1.0), "nmi_average": "geometric"}
    C = sp.csr_matrix(np.array([[0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 1], [0, 0.5, 0.5, 0]]))
    out = evaluate(y, 1 - y, coef=C)
    assert out["sre"] == pytest.approx(12.5)
    assert out["conn"] == pytest.approx(2.0)  # two K_2 classes
