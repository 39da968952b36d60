"""EnSC: exactness of the batched active-set solver against full-dictionary solves and optimality conditions."""

import warnings

import numpy as np
import pytest
import scipy.sparse as sp

from selfexpress.data import make_union_of_subspaces
from selfexpress.models.ensc import ElasticNetSubspaceClustering, elastic_net_coef, enet_alpha

GAMMA, TAU = 50.0, 0.9


def _data(n_per=400, ambient=30, noise=0.05, seed=0, n_sub=5, dim=6):
    X, y, _ = make_union_of_subspaces(n_sub, dim, ambient, n_per, noise=noise, random_state=seed)
    X = X / np.linalg.norm(X, axis=1, keepdims=True)
    return X.astype(np.float32), y


def _kkt(X, C, alpha, tau):
    """Largest violations of the optimality conditions on the full dictionary, relative to alpha * tau.

    on: max |<x_j, r> - alpha (tau sign c_j + (1 - tau) c_j)| over non-zeros; off: max |<x_j, r>| over zeros.
    """
    X64 = X.astype(np.float64)
    Cd = C.toarray()
    G = (X64 - Cd @ X64) @ X64.T
    np.fill_diagonal(G, 0.0)
    at = alpha * tau
    nz = Cd != 0
    on = (np.abs(G - alpha[:, None] * (tau * np.sign(Cd) + (1 - tau) * Cd)) * nz).max(1) / at
    off = (np.abs(G) * ~nz).max(1) / at
    return on, off


@pytest.fixture(scope="module")
def big():
    X, y = _data()
    C, info = elastic_net_coef(X, gamma=GAMMA, tau=TAU, tol=1e-6, return_info=True)
    return X, y, C, info


def test_every_row_certified_and_optimal_on_full_dictionary(big):
    X, _, C, info = big
    assert X.shape[0] == 2000
    assert info["n_uncertified"] == 0 and info["certified_fraction"] == 1.0
    on, off = _kkt(X, C, enet_alpha(X, GAMMA, TAU), TAU)
    assert on.max() < 1e-9  # non-zeros: stationarity to float64 rounding
    assert off.max() <= 1.0 + 1e-6 + 1e-9  # zeros: |<x_j, r>| <= alpha tau (1 + tol)
    assert (np.diff(C.indptr) > 0).all()


def test_matches_full_dictionary_sklearn_elastic_net(big):
    """Plain full-dictionary solve: sklearn's ElasticNet on the D x (N-1) design with alpha / D, l1_ratio = tau."""
    from sklearn.linear_model import ElasticNet

    X, _, C, _ = big
    X64 = X.astype(np.float64)
    D = X.shape[1]
    alpha = enet_alpha(X, GAMMA, TAU)
    rng = np.random.default_rng(0)
    for i in rng.choice(X.shape[0], 6, replace=False):
        dic = np.delete(X64, i, axis=0)
        m = ElasticNet(alpha=alpha[i] / D, l1_ratio=TAU, fit_intercept=False, tol=1e-14, max_iter=200_000)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            m.fit(dic.T, X64[i])
        ref = np.insert(m.coef_, i, 0.0)
        got = C[i].toarray().ravel()
        assert np.linalg.norm(got - ref) <= 1e-4 * np.linalg.norm(ref)


def test_diagonal_zero_and_csr(big):
    X, _, C, _ = big
    assert sp.isspmatrix_csr(C) and C.shape == (2000, 2000)
    assert np.all(C.diagonal() == 0)


def test_per_point_equals_active_set():
    X, _ = _data(n_per=60, noise=0.02, seed=3)
    kw = dict(gamma=GAMMA, tau=TAU, tol=1e-9, support_size=40)
    Ca, ia = elastic_net_coef(X, algorithm="active_set", return_info=True, **kw)
    Cp, ip = elastic_net_coef(X, algorithm="per_point", return_info=True, **kw)
    assert ia["n_uncertified"] == 0 and ip["n_uncertified"] == 0
    assert abs(Ca - Cp).max() <= 1e-6 * abs(Cp).max()
    assert (Ca != 0).nnz == (Cp != 0).nnz


def test_float32_oracle_matches_bfloat16_oracle():
    X, _ = _data(n_per=80, seed=4)
    C1 = elastic_net_coef(X, gamma=GAMMA, tau=TAU, tol=1e-6, oracle_dtype="bfloat16", support_size=30)
    C2 = elastic_net_coef(X, gamma=GAMMA, tau=TAU, tol=1e-6, oracle_dtype="float32", support_size=30)
    assert abs(C1 - C2).max() <= 1e-6 * abs(C2).max()


@pytest.mark.parametrize("gamma_nz", [True, False])
def test_gamma_nz_convention(gamma_nz):
    X, _ = _data(n_per=60, seed=5)
    gamma = 20.0
    C = elastic_net_coef(X, gamma=gamma, tau=TAU, gamma_nz=gamma_nz, tol=1e-6, support_size=40)
    right = enet_alpha(X, gamma, TAU, gamma_nz)
    if gamma_nz:
        S = np.abs(X.astype(np.float64) @ X.T.astype(np.float64))
        np.fill_diagonal(S, 0)
        np.testing.assert_allclose(right, S.max(1) / (TAU * gamma))
    else:
        np.testing.assert_allclose(right, 1.0 / gamma)
    on, off = _kkt(X, C, right, TAU)
    assert on.max() < 1e-9 and off.max() <= 1 + 1e-5
    wrong = enet_alpha(X, gamma, TAU, not gamma_nz)
    on_w, _ = _kkt(X, C, wrong, TAU)
    assert on_w.max() > 1e-3  # the other convention is a different problem


def test_gamma_nz_scale_invariance_and_nonzero():
    """gamma_nz: alpha follows the data scale, so every point gets a non-zero code for any gamma > 1."""
    X, _ = _data(n_per=40, seed=6)
    C = elastic_net_coef(X, gamma=1.5, tau=TAU, support_size=30)
    assert (np.diff(C.indptr) > 0).all()
    C2 = elastic_net_coef(3.0 * X, gamma=50.0, tau=TAU, tol=1e-9, support_size=30)
    C1 = elastic_net_coef(X, gamma=50.0, tau=TAU, tol=1e-9, support_size=30)
    # scaling X by s scales alpha0 by s^2: c minimises 0.5 s^2 ||y - Xc||^2 + s^2 alpha r(c)  ->  same c
    assert abs(C1 - C2).max() <= 1e-5 * abs(C1).max()


def test_small_problem_whole_dictionary_support():
    X, _ = _data(n_per=6, seed=7)  # 30 points < support_size
    C, info = elastic_net_coef(X, gamma=GAMMA, tau=TAU, return_info=True)
    assert info["n_uncertified"] == 0
    on, off = _kkt(X, C, enet_alpha(X, GAMMA, TAU), TAU)
    assert on.max() < 1e-9 and off.max() <= 1 + 1e-3


def test_max_rounds_zero_solves_restricted_problems_exactly():
    """max_rounds=0: no oracle, nothing certified; each row is the exact elastic net on its support_size most
    correlated atoms (checked against the KKT conditions of that restricted problem), and with a support that
    covers the whole dictionary it is the full solution."""
    X, _ = _data(n_per=40, seed=8)  # 200 points
    K = 30
    C, info = elastic_net_coef(X, gamma=GAMMA, tau=TAU, support_size=K, max_rounds=0, return_info=True)
    assert info["certified_fraction"] == 0.0 and info["n_uncertified"] == X.shape[0]
    alpha = enet_alpha(X, GAMMA, TAU)
    X64 = X.astype(np.float64)
    corr = np.abs(X64 @ X64.T)
    np.fill_diagonal(corr, -1.0)
    Cd = C.toarray()
    worst_off = 0.0
    for i in range(0, X.shape[0], 7):
        supp = np.argsort(-corr[i])[:K]
        assert set(np.flatnonzero(Cd[i])) <= set(supp)
        g = X64[supp] @ (X64[i] - Cd[i] @ X64)
        c = Cd[i, supp]
        on = np.abs(g - alpha[i] * (TAU * np.sign(c) + (1 - TAU) * c))[c != 0]
        assert on.max() < 1e-8 * alpha[i]
        worst_off = max(worst_off, np.abs(g[c == 0]).max(initial=0) / (alpha[i] * TAU))
    assert worst_off <= 1 + 1e-3
    # and the restricted problems are not the full ones here: some row violates on the whole dictionary
    assert _kkt(X, C, alpha, TAU)[1].max() > 1 + 1e-3
    full = elastic_net_coef(X, gamma=GAMMA, tau=TAU, tol=1e-6)
    whole = elastic_net_coef(X, gamma=GAMMA, tau=TAU, support_size=X.shape[0], max_rounds=0)
    assert abs(full - whole).max() < 1e-6


def test_lasso_tau_one():
    X, _ = _data(n_per=40, seed=8)
    C, info = elastic_net_coef(X, gamma=GAMMA, tau=1.0, tol=1e-6, support_size=30, return_info=True)
    on, off = _kkt(X, C, enet_alpha(X, GAMMA, 1.0), 1.0)
    assert info["certified_fraction"] >= 0.99
    assert on.max() < 1e-6 and off.max() <= 1 + 1e-5


def test_estimator_clusters_and_fitted_attributes():
    X, y, _ = make_union_of_subspaces(3, 3, 10, 60, random_state=0)
    est = ElasticNetSubspaceClustering(n_clusters=3, gamma=GAMMA, tau=TAU, random_state=0).fit(X)
    from selfexpress.metrics import clustering_accuracy

    assert clustering_accuracy(y, est.labels_) == 1.0
    assert est.n_uncertified_ == 0 and est.certified_fraction_ == 1.0
    assert np.all(est.coef_.diagonal() == 0)
    assert {"coef", "graph", "spectral"} <= set(est.timings_)


def test_n_nonzero_keeps_largest():
    X, _ = _data(n_per=40, seed=9)
    full = ElasticNetSubspaceClustering(n_clusters=5, gamma=GAMMA).fit_coef(X).coef_
    cut = ElasticNetSubspaceClustering(n_clusters=5, gamma=GAMMA, n_nonzero=3).fit_coef(X).coef_
    assert np.diff(cut.indptr).max() <= 3
    for i in range(0, X.shape[0], 17):
        a = np.sort(np.abs(full[i].data))[::-1][:3]
        np.testing.assert_allclose(np.sort(np.abs(cut[i].data))[::-1], a)


def test_deterministic():
    X, _ = _data(n_per=50, seed=10)
    a = ElasticNetSubspaceClustering(n_clusters=5, gamma=GAMMA, random_state=0).fit(X)
    b = ElasticNetSubspaceClustering(n_clusters=5, gamma=GAMMA, random_state=0).fit(X)
    assert abs(a.coef_ - b.coef_).max() == 0
    np.testing.assert_array_equal(a.labels_, b.labels_)


def test_parallel_solve_workers_give_identical_coefficients():
    """The restricted solves run on a pool of threads; blocks are independent, so 1 and 2 workers agree bit for
    bit (and the blocks are small enough here that several run at once)."""
    import torch

    X, _ = _data(n_per=60, seed=11)
    n = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = elastic_net_coef(X, gamma=GAMMA, block_size=64)
        torch.set_num_threads(2)
        two = elastic_net_coef(X, gamma=GAMMA, block_size=64)
    finally:
        torch.set_num_threads(n)
    assert one.nnz > 0 and abs(one - two).max() == 0


@pytest.mark.parametrize(
    "kw",
    [
        dict(gamma=0.0), dict(gamma=-1.0), dict(gamma=1.0), dict(gamma=float("nan")), dict(tau=0.0), dict(tau=1.5),
        dict(algorithm="lars"), dict(support_size=0), dict(max_rounds=-1), dict(algorithm="per_point", max_rounds=0), dict(tol=-1.0), dict(n_nonzero=0),
        dict(block_size=0), dict(oracle_dtype="float16"), dict(affinity="bogus"), dict(n_clusters=1),
        dict(device="nonsense"), dict(device="cuda"),
    ],
)
def test_bad_parameters_raise(kw):
    X, _ = _data(n_per=10, seed=11)
    with pytest.raises(ValueError):
        ElasticNetSubspaceClustering(**{"n_clusters": 3, **kw}).fit(X)


def test_bad_input_raises():
    X, _ = _data(n_per=10, seed=12)
    X[3, 2] = np.nan
    with pytest.raises(ValueError):
        ElasticNetSubspaceClustering(n_clusters=3).fit(X)
    with pytest.raises(ValueError):
        ElasticNetSubspaceClustering(n_clusters=3).fit(np.ones(5))
