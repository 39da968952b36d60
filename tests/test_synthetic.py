import numpy as np
import pytest

from selfexpress.data import make_union_of_subspaces as reexported
from selfexpress.data.synthetic import make_union_of_subspaces


def test_reexported_from_data_package():
    assert reexported is make_union_of_subspaces


def test_shapes_types_and_labels():
    X, y, B = make_union_of_subspaces(5, 6, 15, 20, random_state=0)
    assert X.shape == (100, 15) and X.dtype == np.float64
    assert y.shape == (100,) and np.issubdtype(y.dtype, np.integer)
    assert B.shape == (5, 15, 6) and B.dtype == np.float64
    np.testing.assert_array_equal(y, np.repeat(np.arange(5), 20))


def test_points_lie_in_their_subspaces():
    d, D = 4, 12
    X, y, B = make_union_of_subspaces(3, d, D, [10, 7, 25], random_state=1)
    np.testing.assert_array_equal(np.bincount(y), [10, 7, 25])
    np.testing.assert_allclose(np.linalg.norm(X, axis=1), 1.0, atol=1e-12)
    for k in range(3):
        U = B[k]
        np.testing.assert_allclose(U.T @ U, np.eye(d), atol=1e-12)
        Xk = X[y == k]
        assert np.linalg.matrix_rank(Xk, tol=1e-8) == d
        resid = Xk - (Xk @ U) @ U.T
        assert np.abs(resid).max() < 1e-12
        # ...and not in the other subspaces (random subspaces with 3*4 <= 12 are independent)
        other = B[(k + 1) % 3]
        assert np.linalg.norm(Xk - (Xk @ other) @ other.T, axis=1).min() > 1e-3


def test_full_dimensional_subspace():
    X, y, B = make_union_of_subspaces(2, 3, 3, 5, random_state=0)
    np.testing.assert_allclose(np.abs(np.linalg.det(B[0])), 1.0)


def test_determinism():
    a = make_union_of_subspaces(3, 2, 6, 8, noise=0.1, random_state=42)
    b = make_union_of_subspaces(3, 2, 6, 8, noise=0.1, random_state=42)
    c = make_union_of_subspaces(3, 2, 6, 8, noise=0.1, random_state=43)
    for u, v in zip(a, b):
        np.testing.assert_array_equal(u, v)
    assert not np.allclose(a[0], c[0])
    g1 = make_union_of_subspaces(3, 2, 6, 8, random_state=np.random.default_rng(5))
    g2 = make_union_of_subspaces(3, 2, 6, 8, random_state=np.random.default_rng(5))
    np.testing.assert_array_equal(g1[0], g2[0])
    r = make_union_of_subspaces(3, 2, 6, 8, random_state=np.random.RandomState(5))
    assert r[0].shape == (24, 6)


def test_noise_convention():
    # noise is the rms norm of the additive noise: per-coordinate std noise / sqrt(D)
    D, noise = 50, 0.3
    clean, y, B = make_union_of_subspaces(2, 5, D, 2000, random_state=7)
    noisy, _, B2 = make_union_of_subspaces(2, 5, D, 2000, noise=noise, random_state=7)
    np.testing.assert_array_equal(B, B2)  # noise is drawn after the clean data
    E = noisy - clean
    assert E.std() == pytest.approx(noise / np.sqrt(D), rel=0.02)
    assert np.sqrt(np.mean(np.sum(E**2, axis=1))) == pytest.approx(noise, rel=0.02)


def test_directions_uniform_on_subspace_sphere():
    # coefficients in the basis are uniform on S^{d-1}: mean ~ 0, second moment ~ I/d
    d = 3
    X, y, B = make_union_of_subspaces(1, d, 8, 20000, random_state=3)
    A = X @ B[0]
    np.testing.assert_allclose(A.mean(axis=0), 0.0, atol=0.02)
    np.testing.assert_allclose(A.T @ A / len(A), np.eye(d) / d, atol=0.01)


@pytest.mark.parametrize(
    "args, kwargs, match",
    [
        ((0, 2, 5, 10), {}, "n_subspaces"),
        ((2, 6, 5, 10), {}, "subspace_dim"),
        ((2, 0, 5, 10), {}, "subspace_dim"),
        ((2, 2, 0, 10), {}, "ambient_dim"),
        ((2, 2, 5, 0), {}, "n_per_subspace"),
        ((2, 2, 5, 2.5), {}, "n_per_subspace"),
        ((2, 2, 5, [3]), {}, "n_per_subspace"),
        ((2, 2, 5, [3, 0]), {}, "n_per_subspace"),
        ((2, 2, 5, [3, 2.0]), {}, "n_per_subspace"),
        ((2, 2, 5, "ab"), {}, "n_per_subspace"),
        ((2.0, 2, 5, 3), {}, "n_subspaces"),
        ((True, 2, 5, 3), {}, "n_subspaces"),
        ((2, 2, 5, 3), {"noise": -0.1}, "noise"),
        ((2, 2, 5, 3), {"noise": np.nan}, "noise"),
        ((2, 2, 5, 3), {"random_state": "seed"}, "random_state"),
    ],
)
def test_bad_input_raises(args, kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_union_of_subspaces(*args, **kwargs)


def test_numpy_integer_inputs_accepted():
    X, y, B = make_union_of_subspaces(np.int64(2), np.int32(2), np.int64(4), np.array([3, 4]), random_state=0)
    assert X.shape == (7, 4)
