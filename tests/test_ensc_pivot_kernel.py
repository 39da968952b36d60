"""The compiled kernel of the certified EnSC solver's whole-dictionary start (``selfexpress/models/_pivot.c``).

It runs the same method as the torch version (:func:`_pivot_whole_dictionary`), one point at a time: these tests
hold it to the torch version and to the certified solution, through its safeguards (monotone steps, the step
limit, the face-size cap) and its argument checks.
"""
import os

import numpy as np
import pytest
import torch

import selfexpress.models.ensc as ensc
from selfexpress.models.ensc import elastic_net_coef, enet_alpha

from test_ensc import GAMMA, TAU, _data, _kkt

needs_kernel = pytest.mark.skipif(ensc._pivot_kernel is None, reason="the C kernel was not built (no C compiler "
                                  "at install time); `pip install -e .` with gcc builds it")


def test_kernel_is_built_in_ci():
    """CI installs with a C compiler: a failed build there (the extension is optional, so the install would
    still succeed) must not pass unnoticed as the slower torch path."""
    if os.environ.get("CI", "").lower() not in ("1", "true", "yes"):
        pytest.skip("only checked in CI (CI=true)")
    assert ensc._pivot_kernel is not None


def _problem(n_per=40, seed=22, ambient=30):
    X, _ = _data(n_per=n_per, seed=seed, ambient=ambient)
    X64 = torch.from_numpy(X).double()
    G64 = X64 @ X64.T
    alpha = ensc._alpha_from_gram(G64, TAU, GAMMA, True)
    return X, X64, G64, alpha * TAU, alpha * (1 - TAU)


def _dense(ids, valid, c, N):
    C = np.zeros((ids.shape[0], N))
    for q in range(ids.shape[0]):
        v = valid[q].numpy()
        assert (c[q].numpy()[~v] == 0).all()
        C[q, ids[q].numpy()[v]] = c[q].numpy()[v]
    return C


@needs_kernel
@pytest.mark.parametrize("patience", [3, 1])
def test_compiled_start_equals_torch_start_and_certified_solution(monkeypatch, patience):
    """Both versions finish every point with the certified solution (to float64 rounding), the same candidates
    (the largest non-active |g_j|, self excluded) and the residuals of their coefficients. ``patience=1`` sends
    most points through the monotone steps (the safeguard against cycling) early."""
    monkeypatch.setattr(ensc, "_PIVOT_PATIENCE", patience)
    # seed 24: at the optimum every non-active |g_j| is below alpha tau by >= 9x the float32 error of the row sums,
    # so no summation order (SIMD width, FMA) can make a non-violator look like one and the exchanges cycle
    X, X64, G64, at, l2 = _problem(seed=24)
    N = X.shape[0]
    ref = elastic_net_coef(X, gamma=GAMMA, tau=TAU, tol=1e-9, algorithm="active_set", max_rounds=50,
                           block_size=64).toarray()
    p = torch.arange(N)
    out = {}
    for name, fn in (("compiled", ensc._pivot_whole_dictionary_compiled), ("torch", ensc._pivot_whole_dictionary)):
        ids, valid, c, cand, done, r = fn(G64.float(), G64, X64, p, at, l2, 1e-9)
        assert bool(done.all()), name
        C = _dense(ids, valid, c, N)
        assert np.abs(C - ref).max() <= 1e-10 * np.abs(ref).max(), name
        assert ((C != 0) == (ref != 0)).all(), name
        np.testing.assert_allclose(r.numpy(), X64.numpy() - C @ X64.numpy(), atol=1e-12)
        for i in range(N):
            assert i not in cand[i].tolist() and not set(cand[i].tolist()) & set(np.flatnonzero(C[i]).tolist())
        out[name] = cand
    same = [set(a.tolist()) == set(b.tolist()) for a, b in zip(out["compiled"], out["torch"])]
    assert np.mean(same) >= 0.95  # candidates past the violators may differ where float32 sums of |g_j| tie


@needs_kernel
def test_compiled_start_on_a_subset_of_points_in_any_order():
    """A block is any list of points: each row of the output belongs to its point, whatever the others."""
    X, X64, G64, at, l2 = _problem(n_per=30, seed=5)
    N = X.shape[0]
    p_all = torch.arange(N)
    full = ensc._pivot_whole_dictionary_compiled(G64.float(), G64, X64, p_all, at, l2, 1e-9)
    C_full = _dense(*full[:3], N)
    p = torch.tensor([17, 3, 149, 0, 88])
    part = ensc._pivot_whole_dictionary_compiled(G64.float(), G64, X64, p, at[p], l2[p], 1e-9)
    np.testing.assert_array_equal(_dense(*part[:3], N), C_full[p.numpy()])
    np.testing.assert_array_equal(part[5].numpy(), full[5][p].numpy())


@needs_kernel
def test_compiled_start_leaves_points_unfinished_at_the_step_limit_and_the_face_cap(monkeypatch):
    """After ``max_iter`` steps, or when a face would outgrow the work space, a point is returned unfinished: zero
    coefficients, its own point as residual. The solver's rounds then solve it (same certified solution)."""
    X, X64, G64, at, l2 = _problem()
    N = X.shape[0]
    p = torch.arange(N)
    ids, valid, c, cand, done, r = ensc._pivot_whole_dictionary_compiled(G64.float(), G64, X64, p, at, l2, 1e-9,
                                                                         max_iter=1)
    assert not bool(done.any()) and bool((c == 0).all())
    np.testing.assert_array_equal(r.numpy(), X64.numpy())
    assert bool((valid.sum(1) > 0).all())  # the atoms it had reached are kept as a support

    kw = dict(gamma=GAMMA, tau=TAU, tol=1e-9, algorithm="active_set", return_info=True)
    full, info_full = elastic_net_coef(X, **kw)
    monkeypatch.setattr(ensc, "_PIVOT_COMPILED_CAP", 8)  # the faces here have ~10 to 30 atoms
    capped, info = elastic_net_coef(X, **kw)
    assert info["pivot_kernel"] == "compiled" and info["pivot_unfinished"] > 0
    assert info["certified_fraction"] == 1.0
    assert abs(full - capped).max() <= 1e-8 * abs(full).max()


@pytest.mark.parametrize("kernel", ["compiled", "torch"])
def test_certified_solver_with_either_start(monkeypatch, kernel):
    """The certified solver's result does not depend on which start ran (the oracle certifies either), and the
    info says which one did."""
    if kernel == "compiled" and ensc._pivot_kernel is None:
        pytest.skip("the C kernel was not built")
    if kernel == "torch":
        monkeypatch.setattr(ensc, "_pivot_kernel", None)
    X, _ = _data(n_per=60, seed=31)
    C, info = elastic_net_coef(X, gamma=GAMMA, tau=TAU, tol=1e-9, algorithm="active_set", return_info=True)
    assert info["pivot_kernel"] == kernel and info["certified_fraction"] == 1.0
    on, off = _kkt(X, C, enet_alpha(X, GAMMA, TAU), TAU)
    assert on.max() < 1e-9 and off.max() <= 1 + 1e-9 + 1e-9


@needs_kernel
def test_compiled_kernel_refuses_mismatched_buffers():
    """The kernel checks every buffer's size against N, D and the number of points before touching memory."""
    X, X64, G64, at, l2 = _problem(n_per=10)
    N, D = X64.shape
    p = np.arange(N, dtype=np.int64)
    args = dict(G32=G64.float().numpy(), G64=G64.numpy(), X64=X64.numpy(), D=D, pts=p, at=at.numpy(),
                l2=l2.numpy(), thr=at.numpy(), m=6, max_iter=10, patience=3, cap=20,
                ids=np.zeros((N, 20), np.int64), c=np.zeros((N, 20)), k=np.zeros(N, np.int64),
                cand=np.zeros((N, 6), np.int64), done=np.zeros(N, np.uint8), r=np.zeros((N, D)))
    ensc._pivot_kernel.pivot(*args.values())  # as given: accepted
    for key, bad in (("G64", G64.float().numpy()), ("X64", np.ascontiguousarray(X64.numpy()[:, :-1])),
                     ("cand", np.zeros((N, 5), np.int64)), ("r", np.zeros((N, D + 1))), ("at", at.numpy()[:-1])):
        with pytest.raises(ValueError, match=f"buffer {key} has"):
            ensc._pivot_kernel.pivot(*{**args, key: bad}.values())
    with pytest.raises(ValueError, match="contiguous"):  # the buffer protocol refuses strided arrays
        ensc._pivot_kernel.pivot(*{**args, "X64": X64.numpy()[:, ::2]}.values())
    with pytest.raises(ValueError, match="out of range"):
        ensc._pivot_kernel.pivot(*{**args, "pts": p + 1}.values())
    with pytest.raises(TypeError, match="read-write"):  # outputs must be writable
        ro = np.zeros(N, np.uint8)
        ro.flags.writeable = False
        ensc._pivot_kernel.pivot(*{**args, "done": ro}.values())


def test_whole_dictionary_start_above_the_gathering_limit(monkeypatch):
    """The start runs up to ``_PIVOT_MAX_N`` points, above ``_FULL_GRAM_MAX_N`` (where the rounds would not form a
    Gram themselves): the rounds then gather from the start's float32 Gram, and the result is the same certified
    solution as without the start."""
    X, _ = _data(n_per=40, seed=24)  # 200 points
    kw = dict(gamma=GAMMA, tau=TAU, tol=1e-9, algorithm="active_set", return_info=True)
    monkeypatch.setattr(ensc, "_FULL_GRAM_MAX_N", 100)
    monkeypatch.setattr(ensc, "_PIVOT_MAX_N", 100)
    rounds, info_r = elastic_net_coef(X, **kw)
    assert "pivot" not in info_r["times"]
    monkeypatch.setattr(ensc, "_PIVOT_MAX_N", 200)
    pivot, info_p = elastic_net_coef(X, **kw)
    assert "pivot" in info_p["times"] and info_p["certified_fraction"] == 1.0
    assert abs(rounds - pivot).max() <= 1e-8 * abs(rounds).max()


@needs_kernel
@pytest.mark.parametrize("tau,gamma_nz", [(0.9, True), (0.999, False)])
def test_compiled_start_with_duplicate_points(monkeypatch, tau, gamma_nz):
    """Exact duplicates make Gram rows equal (ties in |g_j|, nearly singular faces as tau -> 1): the compiled start
    still finishes, and the certified result equals the torch start's."""
    X, _ = _data(n_per=30, seed=8)
    X = np.vstack([X, X[:20]])
    kw = dict(gamma=GAMMA, tau=tau, gamma_nz=gamma_nz, tol=1e-9, algorithm="active_set", return_info=True)
    compiled, info_c = elastic_net_coef(X, **kw)
    monkeypatch.setattr(ensc, "_pivot_kernel", None)
    torch_start, info_t = elastic_net_coef(X, **kw)
    assert info_c["pivot_kernel"] == "compiled" and info_t["pivot_kernel"] == "torch"
    assert info_c["certified_fraction"] == 1.0 and info_t["certified_fraction"] == 1.0
    assert abs(compiled - torch_start).max() <= 1e-8 * abs(torch_start).max()


@pytest.mark.parametrize("kernel", ["compiled", "torch"])
def test_float32_near_tie_does_not_make_a_non_violator_cycle(kernel):
    """The float32 Gram only proposes who enters; a proposal within the float32 rounding error of the row sums is
    checked in float64. Here one float32 Gram entry is off by 1.5x the smallest margin of a non-violator below the
    threshold (an error float32 rounding can make: within half the band, the first-order bound), so in float32 that
    atom looks like a violator at the optimum: without the check it would enter, take the wrong sign, leave, and
    enter again until the step limit left the point unfinished. With it the point finishes, certified solution."""
    if kernel == "compiled" and ensc._pivot_kernel is None:
        pytest.skip("the C kernel was not built")
    fn = ensc._pivot_whole_dictionary_compiled if kernel == "compiled" else ensc._pivot_whole_dictionary
    X, X64, G64, at, l2 = _problem(seed=24)
    N = X.shape[0]
    ref = elastic_net_coef(X, gamma=GAMMA, tau=TAU, tol=1e-9, algorithm="active_set", max_rounds=50,
                           block_size=64).toarray()
    g = G64.numpy() - ref @ G64.numpy()  # g_j at the optimum, float64
    margins = at.numpy()[:, None] - np.abs(g)
    margins[(ref != 0) | np.eye(N, dtype=bool)] = np.inf
    i, j = np.unravel_index(np.argmin(margins), margins.shape)
    margin = float(margins[i, j])
    band = float(ensc._float32_row_sum_band(int((ref[i] != 0).sum()), float(G64.diagonal().max()),
                                            torch.from_numpy(ref[i:i + 1]))[0])
    assert 0 < 1.5 * margin <= band / 2
    G32 = G64.float().clone()
    G32[i, j] += float(np.sign(g[i, j]) * 1.5 * margin)  # float32 now says |g_j| > alpha tau at the optimum
    p = torch.arange(N)
    ids, valid, c, cand, done, r = fn(G32, G64, X64, p, at, l2, 1e-9, max_iter=30)
    assert bool(done[i])
    np.testing.assert_allclose(_dense(ids, valid, c, N)[i], ref[i], rtol=0, atol=1e-10 * np.abs(ref).max())
