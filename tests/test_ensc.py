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


def _exact_supports(X, K):
    """Each row's K atoms of largest float64 |<x_j, x_i>| (j != i), ties to the lower index (stable sort)."""
    X64 = X.astype(np.float64)
    corr = np.abs(X64 @ X64.T)
    np.fill_diagonal(corr, -np.inf)
    return np.argsort(-corr, axis=1, kind="stable")[:, :K]


def _restricted_kkt(X, C, alpha, supports, tau=TAU):
    """Largest violations of the restricted problems' optimality conditions, relative to alpha * tau:
    (outside: max |c| off the support, on: stationarity over non-zeros, off: max |<x_j, r>| over support zeros)."""
    X64 = X.astype(np.float64)
    Cd = C.toarray()
    outside, on_w, off_w = 0.0, 0.0, 0.0
    for i in range(X.shape[0]):
        supp = supports[i]
        mask = np.ones(X.shape[0], dtype=bool)
        mask[supp] = False
        outside = max(outside, np.abs(Cd[i, mask]).max(initial=0.0))
        c = Cd[i, supp]
        g = X64[supp] @ (X64[i] - Cd[i] @ X64)
        at = alpha[i] * tau
        on_w = max(on_w, (np.abs(g - alpha[i] * (tau * np.sign(c) + (1 - tau) * c))[c != 0] / at).max(initial=0.0))
        off_w = max(off_w, (np.abs(g[c == 0]) / at).max(initial=0.0))
    return outside, on_w, off_w


def test_max_rounds_zero_solves_restricted_problems_exactly():
    """max_rounds=0: no oracle, nothing certified; each row is the exact elastic net on its support_size most
    correlated atoms (checked against the KKT conditions of that restricted problem), and with a support that
    covers the whole dictionary it is the full solution.

    The support is defined exactly (float64 ranking of |<x_j, x_i>|, ties to the lower index): it used to come
    from a bfloat16 matmul on CPUs with native bfloat16, whose top-K differed from this one on near-ties
    (0.377994 vs 0.378039), which made this test fail on those machines."""
    X, _ = _data(n_per=40, seed=8)  # 200 points
    K = 30
    C, info = elastic_net_coef(X, gamma=GAMMA, tau=TAU, support_size=K, max_rounds=0, return_info=True)
    assert info["certified_fraction"] == 0.0 and info["n_uncertified"] == X.shape[0]
    assert info["algorithm"] == "restricted" and info["guarantee"] == "restricted"
    alpha = enet_alpha(X, GAMMA, TAU)
    outside, on, off = _restricted_kkt(X, C, alpha, _exact_supports(X, K))
    assert outside == 0.0
    assert on < 1e-8
    assert off <= 1 + 1e-3 / 4 + 1e-9
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


# ----------------------------------------------------------------------------------------------------------------
# the fast default: algorithm="restricted"
# ----------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("block_size", [7, 64, 2048])
def test_top_correlated_is_the_exact_top_k(block_size):
    """Exact K-sets (float64 ranking, ties to the lower index) whatever the panel size, also with exact ties
    (duplicated points) and a maximum computed in float64."""
    from selfexpress.models._ensc_fast import top_correlated

    rng = np.random.default_rng(0)
    X = rng.standard_normal((300, 12)).astype(np.float32)
    X[::5] = X[1]  # many exact ties
    X[7] = -X[1]  # |<.,.>| ties of opposite sign
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    for K in (1, 9, 40, 299):
        idx, info = top_correlated(X, K, block_size=block_size, return_info=True)
        ref = _exact_supports(X, K)
        for i in range(X.shape[0]):
            assert set(idx[i].tolist()) == set(ref[i].tolist()), (K, i)
        X64 = X.astype(np.float64)
        corr = np.abs(X64 @ X64.T)
        np.fill_diagonal(corr, -1.0)
        np.testing.assert_allclose(info["max_abs_product"].numpy(), corr.max(1), rtol=0, atol=1e-15)


def test_top_correlated_near_ties_are_resolved_in_float64():
    """Values closer than float32's error bound: the float32 ranking is re-checked exactly."""
    from selfexpress.models._ensc_fast import top_correlated

    rng = np.random.default_rng(1)
    base = rng.standard_normal(20)
    X = base + 1e-7 * rng.standard_normal((120, 20))  # all correlations within ~1e-7 of each other
    X = (X / np.linalg.norm(X, axis=1, keepdims=True)).astype(np.float32)
    idx, info = top_correlated(X, 10, block_size=32, return_info=True)
    assert info["rows_reranked"] > 0
    ref = _exact_supports(X, 10)
    for i in range(X.shape[0]):
        assert set(idx[i].tolist()) == set(ref[i].tolist())


def test_top_correlated_bad_k():
    from selfexpress.models._ensc_fast import top_correlated

    X = np.eye(5, dtype=np.float32)
    for k in (0, 5):
        with pytest.raises(ValueError, match="k must be"):
            top_correlated(X, k)


@pytest.mark.parametrize("gamma_nz", [True, False])
def test_restricted_satisfies_restricted_optimality(gamma_nz):
    """algorithm="restricted": zero outside each point's exact top-K support, and the KKT conditions of the
    restricted elastic net hold (non-zeros to float64 rounding, zeros within alpha tau (1 + tol / 4))."""
    X, _ = _data(n_per=60, seed=13)  # 300 points
    K = 25
    C, info = elastic_net_coef(X, gamma=GAMMA, tau=TAU, gamma_nz=gamma_nz, algorithm="restricted",
                               support_size=K, tol=1e-3, block_size=64, return_info=True)
    assert info["n_inexact"] == 0 and info["guarantee"] == "restricted"
    assert sp.isspmatrix_csr(C) and np.all(C.diagonal() == 0)
    alpha = enet_alpha(X, GAMMA, TAU, gamma_nz)
    outside, on, off = _restricted_kkt(X, C, alpha, _exact_supports(X, K))
    assert outside == 0.0
    assert on < 1e-8
    assert off <= 1 + 1e-3 / 4 + 1e-9
    # and it is a different problem from the full one: some row violates on the whole dictionary
    assert _kkt(X, C, alpha, TAU)[1].max() > 1 + 1e-3


def test_restricted_equals_certified_when_support_covers_the_dictionary():
    X, _ = _data(n_per=30, seed=14)  # 150 points
    full = elastic_net_coef(X, gamma=GAMMA, tau=TAU, tol=1e-9, algorithm="active_set")
    whole, info = elastic_net_coef(X, gamma=GAMMA, tau=TAU, tol=1e-9, algorithm="restricted",
                                   support_size=X.shape[0] - 1, return_info=True)
    assert info["support_size"] == X.shape[0] - 1
    assert abs(full - whole).max() <= 1e-9 * abs(full).max()
    assert ((full != 0) != (whole != 0)).nnz == 0
    on, off = _kkt(X, whole, enet_alpha(X, GAMMA, TAU), TAU)  # certified on the full dictionary too
    assert on.max() < 1e-9 and off.max() <= 1 + 1e-9


@pytest.mark.parametrize("algorithm", ["active_set", "refined"])
def test_full_gram_gather_equals_batched_grams(monkeypatch, algorithm):
    """Below ``_FULL_GRAM_MAX_N`` the restricted Grams are gathered from one X X^T; above, each block forms its own.
    Refinement against the data makes both the same solution: equal to float64 rounding, same supports."""
    import selfexpress.models.ensc as ensc

    X, _ = _data(n_per=60, seed=17)  # 300 points
    kw = dict(gamma=GAMMA, tau=TAU, tol=1e-9, algorithm=algorithm, support_size=25, oracle_passes=1,
              return_info=True)
    gathered, info = elastic_net_coef(X, **kw)
    # the solver corrects a wrong Gram by float64 retries (strict rows): the gathered one must need none
    assert all(r.get("retried", 0) == 0 and r.get("inexact", 0) == 0 for r in info["rounds"])
    monkeypatch.setattr(ensc, "_FULL_GRAM_MAX_N", 0)
    batched, _ = elastic_net_coef(X, **kw)
    assert abs(gathered - batched).max() <= 1e-10 * abs(batched).max()
    assert ((gathered != 0) != (batched != 0)).nnz == 0


def test_alpha_from_gram_is_exact_despite_float32_near_ties():
    """alpha from the float64 Gram equals the dense float64 one, also where two products differ by less than the
    float32 rounding (a float32 Gram's ranking alone would pick either)."""
    import torch

    from selfexpress.models.ensc import _alpha_from_gram

    X, _ = _data(n_per=30, seed=21)
    X = X.astype(np.float64)
    # x_2 almost equal to x_1: |<x_1, x_0>| and |<x_2, x_0>| differ by ~1e-9, far below float32 resolution
    X[2] = X[1] + 1e-9 * X[0]
    X = X.astype(np.float32)
    Xt = torch.from_numpy(X)
    for gamma_nz in (True, False):
        got = _alpha_from_gram(Xt.double() @ Xt.double().T, TAU, GAMMA, gamma_nz).numpy()
        np.testing.assert_allclose(got, enet_alpha(X, GAMMA, TAU, gamma_nz=gamma_nz), rtol=1e-13, atol=0)


def test_pivot_on_whole_dictionary_equals_certified_solution():
    """The whole-dictionary start by itself (block pivoting: row sums of the float32 Gram choose the exchanges,
    faces solved on the float64 Gram) finishes every point here and gives the certified solution; its candidates
    are the largest non-active |g_j|."""
    import torch

    from selfexpress.models.ensc import _alpha_from_gram, _pivot_whole_dictionary

    # seed 24: every non-active |g_j| at the optimum is below alpha tau by >= 9x the float32 error of the row sums
    # (seed 22 had 2x), so the exchanges cannot be misled by the summation order of another machine
    X, _ = _data(n_per=40, seed=24)  # 200 points
    N = X.shape[0]
    ref = elastic_net_coef(X, gamma=GAMMA, tau=TAU, tol=1e-9, algorithm="active_set", max_rounds=50,
                           block_size=64)
    X64 = torch.from_numpy(X).double()
    G64 = X64 @ X64.T
    alpha = _alpha_from_gram(G64, TAU, GAMMA, True)
    at, l2 = alpha * TAU, alpha * (1 - TAU)
    p = torch.arange(N)
    ids, valid, c, cand, done, r = _pivot_whole_dictionary(G64.float(), G64, X64, p, at, l2, 1e-9)
    assert bool(done.all())
    got = np.zeros((N, N))
    for i in range(N):
        v = valid[i].numpy()
        assert (c[i].numpy()[~v] == 0).all()
        got[i, ids[i].numpy()[v]] = c[i].numpy()[v]
        assert not set(cand[i].tolist()) & set(ids[i].numpy()[v].tolist()) and i not in cand[i].tolist()
    Cr = ref.toarray()
    assert np.abs(got - Cr).max() <= 1e-10 * np.abs(Cr).max()
    assert ((got != 0) == (Cr != 0)).all()
    np.testing.assert_allclose(r.numpy(), X.astype(np.float64) - got @ X.astype(np.float64), atol=1e-12)


def test_pivot_start_leaves_unfinished_points_to_the_monotone_rounds(monkeypatch):
    """With the pivoting stopped after two steps most points are unfinished: the rounds solve them from zero and
    certify every point, with the same solution."""
    import selfexpress.models.ensc as ensc

    X, _ = _data(n_per=40, seed=23)
    kw = dict(gamma=GAMMA, tau=TAU, tol=1e-9, algorithm="active_set", return_info=True)
    full, info_full = elastic_net_coef(X, **kw)
    assert info_full["pivot_unfinished"] == 0 and info_full["certified_fraction"] == 1.0
    monkeypatch.setattr(ensc, "_PIVOT_MAX_ITER", 2)
    part, info = elastic_net_coef(X, **kw)
    assert info["pivot_unfinished"] > X.shape[0] // 2
    assert info["certified_fraction"] == 1.0
    assert abs(full - part).max() <= 1e-8 * abs(full).max()
    on, off = _kkt(X, part, enet_alpha(X, GAMMA, TAU), TAU)
    assert on.max() < 1e-9 and off.max() <= 1 + 1e-9 + 1e-9


def test_restricted_closed_form_single_atom():
    """K = 1: c = soft(b, alpha tau) / (||x_j||^2 + alpha (1 - tau)) on the most correlated atom (closed form)."""
    X, _ = _data(n_per=20, seed=15)
    C = elastic_net_coef(X, gamma=GAMMA, tau=TAU, algorithm="restricted", support_size=1)
    X64 = X.astype(np.float64)
    alpha = enet_alpha(X, GAMMA, TAU)
    supp = _exact_supports(X, 1)[:, 0]
    for i in range(X.shape[0]):
        j = supp[i]
        b = X64[j] @ X64[i]
        c = np.sign(b) * max(abs(b) - alpha[i] * TAU, 0.0) / (X64[j] @ X64[j] + alpha[i] * (1 - TAU))
        assert C[i, j] == pytest.approx(c, rel=1e-12, abs=1e-15)
        assert C[i].nnz == (c != 0)


def test_restricted_deterministic_and_block_size_invariant():
    X, _ = _data(n_per=50, seed=16)
    a = elastic_net_coef(X, gamma=GAMMA, tau=TAU, algorithm="restricted", support_size=20, block_size=33)
    b = elastic_net_coef(X, gamma=GAMMA, tau=TAU, algorithm="restricted", support_size=20, block_size=33)
    c = elastic_net_coef(X, gamma=GAMMA, tau=TAU, algorithm="restricted", support_size=20, block_size=4096)
    assert abs(a - b).max() == 0
    assert abs(a - c).max() <= 1e-12 * abs(a).max()


# ----------------------------------------------------------------------------------------------------------------
# the large-N default: algorithm="refined" (restricted solves + oracle passes, no check after the last re-solve)
# ----------------------------------------------------------------------------------------------------------------


def _refined(X, K, passes, gamma_nz=True, tol=1e-3, block_size=64):
    from selfexpress.models._ensc_fast import _RestrictedSolver

    s = _RestrictedSolver(X, gamma=GAMMA, tau=TAU, gamma_nz=gamma_nz, support_size=K, max_rounds=0, tol=tol,
                          block_size=block_size, oracle_dtype="float32", device="cpu", verbose=False)
    s.oracle_passes = passes
    s.run()
    supports = [s.supp[i, :int(s.ksize[i])].numpy() for i in range(s.N)]
    return s, s.to_csr(), supports


@pytest.mark.parametrize("gamma_nz", [True, False])
def test_refined_satisfies_restricted_optimality_and_certifies_what_it_says(gamma_nz):
    """Every row is the exact elastic net on its final support; the rows reported certified satisfy the optimality
    conditions on the whole dictionary, the re-solved ones are reported uncertified."""
    X, _ = _data(n_per=60, seed=13)  # 300 points
    s, C, supports = _refined(X, 25, 1, gamma_nz=gamma_nz)
    assert bool(s.exact.all())
    alpha = enet_alpha(X, GAMMA, TAU, gamma_nz)
    outside, on, off = _restricted_kkt(X, C, alpha, supports)
    assert outside == 0.0 and on < 1e-8 and off <= 1 + 1e-3 / 4 + 1e-9
    on_full, off_full = _kkt(X, C, alpha, TAU)
    cert = s.certified.numpy()
    assert 0 < cert.sum() < X.shape[0]  # a partial certificate on this problem
    assert off_full[cert].max() <= 1 + 1e-3 + 1e-9 and on_full.max() < 1e-8
    resolved = s.stats["rounds"][-1]["solved"]
    assert resolved == X.shape[0] - cert.sum()
    Cf, info = elastic_net_coef(X, gamma=GAMMA, tau=TAU, gamma_nz=gamma_nz, algorithm="refined", support_size=25,
                                block_size=64, oracle_dtype="float32", return_info=True)
    assert info["guarantee"] == "partial" and info["algorithm"] == "refined"
    assert info["n_uncertified"] == resolved and info["certified_fraction"] == cert.sum() / X.shape[0]
    assert abs(Cf - C).max() == 0


def test_one_oracle_pass_adds_the_violators():
    """After the restricted solves, one pass: a point without violators keeps its restricted solution (certified);
    a violating point's new support holds its active atoms and its largest violators (all of them when they fit)."""
    X, _ = _data(n_per=60, seed=21)
    K, tol = 25, 1e-3
    C0 = elastic_net_coef(X, gamma=GAMMA, tau=TAU, algorithm="restricted", support_size=K, block_size=64, tol=tol)
    s, C1, supports = _refined(X, K, 1, tol=tol)
    X64 = X.astype(np.float64)
    alpha = enet_alpha(X, GAMMA, TAU)
    C0d = C0.toarray()
    g = np.abs((X64 - C0d @ X64) @ X64.T)
    np.fill_diagonal(g, 0.0)
    g[C0d != 0] = 0.0
    n_viol_rows = 0
    for i in range(X.shape[0]):
        viol = np.flatnonzero(g[i] > alpha[i] * TAU * (1 + tol))
        if viol.size == 0:
            assert bool(s.certified[i])
            assert np.array_equal(C1[i].toarray(), C0[i].toarray())
            continue
        n_viol_rows += 1
        assert not bool(s.certified[i])
        act = np.flatnonzero(C0d[i])
        new = set(supports[i].tolist())
        assert set(act.tolist()) <= new
        nfree = len(supports[i]) - act.size
        largest = viol[np.argsort(-g[i, viol], kind="stable")][:nfree]
        if viol.size < nfree:
            assert set(viol.tolist()) <= new
        # the largest violators are in (up to ties at the last place)
        assert len(set(largest[:-1].tolist()) - new) == 0
    assert n_viol_rows > 0


def test_refined_equals_certified_when_support_covers_the_dictionary():
    X, _ = _data(n_per=30, seed=14)  # 150 points
    full = elastic_net_coef(X, gamma=GAMMA, tau=TAU, tol=1e-9, algorithm="active_set")
    whole, info = elastic_net_coef(X, gamma=GAMMA, tau=TAU, tol=1e-9, algorithm="refined",
                                   support_size=X.shape[0] - 1, return_info=True)
    assert info["certified_fraction"] == 1.0 and info["n_uncertified"] == 0  # nothing to add: all certified
    assert abs(full - whole).max() <= 1e-9 * abs(full).max()
    assert ((full != 0) != (whole != 0)).nnz == 0


def test_refined_with_enough_passes_is_the_certified_solution():
    X, _ = _data(n_per=60, seed=13)
    full = elastic_net_coef(X, gamma=GAMMA, tau=TAU, tol=1e-6, algorithm="active_set", support_size=25)
    C, info = elastic_net_coef(X, gamma=GAMMA, tau=TAU, tol=1e-6, algorithm="refined", support_size=25,
                               oracle_passes=30, block_size=64, return_info=True)
    assert info["certified_fraction"] == 1.0
    assert abs(full - C).max() <= 1e-9 * abs(full).max()


def test_topk_rows_by_chunk_maxima_equals_topk():
    import torch

    from selfexpress.models.ensc import _topk_rows

    g = torch.Generator().manual_seed(0)
    V = torch.rand(40, 32 * 50, generator=g)
    V[3] = 0.5  # a row of ties
    V[5, ::7] = 2.0  # ties among the largest
    V = torch.round(V * 64) / 64  # many ties everywhere
    rows = torch.tensor([0, 3, 5, 7, 39])
    for k in (1, 5, 24):
        for r in (rows, torch.arange(40)):
            v, i = _topk_rows(V, r, k)
            ref = torch.topk(V[r], k, dim=1).values
            assert torch.equal(v, ref)
            assert torch.equal(torch.gather(V[r], 1, i), v)
            assert all(len(set(row.tolist())) == k for row in i)


def test_auto_algorithm_and_reported_guarantee(monkeypatch):
    from selfexpress.models import ensc

    X, y, _ = make_union_of_subspaces(3, 3, 10, 60, random_state=0)
    est = ElasticNetSubspaceClustering(3, gamma=GAMMA, random_state=0).fit(X)
    assert est.algorithm_ == "active_set" and est.guarantee_ == "certified" and est.support_size_ == 100
    assert est.certified_fraction_ == 1.0
    monkeypatch.setattr(ensc, "_AUTO_REFINED_ABOVE", 100)
    est = ElasticNetSubspaceClustering(3, gamma=GAMMA, random_state=0).fit(X)
    assert est.algorithm_ == "refined" and est.guarantee_ == "partial" and est.support_size_ == 50
    assert est.solver_info_["oracle_passes"] == 1
    assert 0.0 < est.certified_fraction_ <= 1.0
    assert est.n_uncertified_ == round(X.shape[0] * (1 - est.certified_fraction_))
    assert est.n_uncertified_ == est.solver_info_["rounds"][-1]["solved"]  # the points re-solved after the pass
    from selfexpress.metrics import clustering_accuracy

    assert clustering_accuracy(y, est.labels_) == 1.0
    est = ElasticNetSubspaceClustering(3, gamma=GAMMA, algorithm="restricted", random_state=0).fit(X)
    assert est.algorithm_ == "restricted" and est.guarantee_ == "restricted"
    assert est.support_size_ == 50 and est.certified_fraction_ == 0.0 and est.n_uncertified_ == X.shape[0]
    est = ElasticNetSubspaceClustering(3, gamma=GAMMA, algorithm="active_set", max_rounds=0).fit(X)
    assert est.algorithm_ == "restricted"
    est = ElasticNetSubspaceClustering(3, gamma=GAMMA, algorithm="refined", oracle_passes=0).fit(X)
    assert est.algorithm_ == "restricted"
    est = ElasticNetSubspaceClustering(3, gamma=GAMMA, max_rounds=0).fit(X)  # "auto" + no oracle rounds
    assert est.algorithm_ == "restricted"


def test_parameters_after_n_clusters_are_keyword_only():
    with pytest.raises(TypeError):
        ElasticNetSubspaceClustering(3, 50.0)
    assert ElasticNetSubspaceClustering(3).n_clusters == 3


@pytest.mark.parametrize("kw", [dict(algorithm="restricted", support_size=0), dict(algorithm="fast"),
                                dict(algorithm="restricted", block_size=0), dict(algorithm="restricted", gamma=1.0),
                                dict(algorithm="refined", oracle_passes=-1), dict(algorithm="refined", oracle_passes=1.5)])
def test_bad_restricted_parameters_raise(kw):
    X, _ = _data(n_per=10, seed=17)
    with pytest.raises(ValueError):
        ElasticNetSubspaceClustering(3, **kw).fit(X)


def test_elastic_net_coef_rejects_unknown_algorithm():
    X, _ = _data(n_per=10, seed=18)
    with pytest.raises(ValueError, match="algorithm"):
        elastic_net_coef(X, algorithm="lars")


def test_device_auto_means_the_cpu_and_other_devices_are_refused():
    from selfexpress.data import make_union_of_subspaces

    X, _, _ = make_union_of_subspaces(3, 2, 6, 20, random_state=0)
    a = ElasticNetSubspaceClustering(n_clusters=3, device="auto", random_state=0).fit(X)
    b = ElasticNetSubspaceClustering(n_clusters=3, device="cpu", random_state=0).fit(X)
    assert np.array_equal(a.labels_, b.labels_)
    with pytest.raises(ValueError, match="device"):
        ElasticNetSubspaceClustering(n_clusters=3, device="meta").fit(X)
