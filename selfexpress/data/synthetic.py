"""Synthetic data: points drawn from a union of random linear subspaces.

This is the random model of You, Robinson & Vidal (SSC-OMP, CVPR 2016) used in the
SENet paper (senet.txt, Sec. 4.1): every subspace is drawn uniformly at random in the
ambient space and its points uniformly at random on the unit sphere of the subspace.
"""

from __future__ import annotations

import numbers

import numpy as np

__all__ = ["make_union_of_subspaces"]


def _check_pos_int(value, name):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _make_rng(random_state):
    if isinstance(random_state, (np.random.Generator, np.random.RandomState)):
        return random_state
    if random_state is None or (isinstance(random_state, numbers.Integral) and not isinstance(random_state, bool)):
        if random_state is not None and random_state < 0:
            raise ValueError(f"random_state must be a non-negative integer, got {random_state!r}")
        return np.random.default_rng(random_state)
    raise ValueError(
        f"random_state must be None, a non-negative int, a numpy Generator or RandomState, got {random_state!r}"
    )


def make_union_of_subspaces(n_subspaces, subspace_dim, ambient_dim, n_per_subspace, noise=0.0, random_state=None):
    """Sample points from a union of random linear subspaces.

    Each subspace ``S_k`` (k = 0, ..., n_subspaces - 1) has an orthonormal basis
    ``U_k`` of shape (ambient_dim, subspace_dim), the Q factor of the QR decomposition
    of a standard Gaussian matrix (with the signs of the columns fixed so that
    ``diag(R) > 0``, which makes ``U_k`` Haar-distributed), so the subspaces are
    independent and uniformly distributed. Each point of ``S_k`` is ``U_k @ a`` with
    ``a = g / ||g||``, ``g ~ N(0, I_subspace_dim)``: uniform on the unit sphere of the
    subspace, hence of unit Euclidean norm when ``noise == 0``. This is the model of
    You et al. (SSC-OMP) used in SENet Sec. 4.1 (there: 5 subspaces, d = 6, D = 15,
    200 points each).

    Parameters
    ----------
    n_subspaces : int
        Number of subspaces (clusters), at least 1.
    subspace_dim : int
        Dimension ``d`` of every subspace, ``1 <= d <= ambient_dim``.
    ambient_dim : int
        Dimension ``D`` of the ambient space, at least 1.
    n_per_subspace : int or sequence of int
        Number of points per subspace: one int for all subspaces, or one positive int
        per subspace (length ``n_subspaces``).
    noise : float, default=0.0
        Non-negative noise level. After sampling, every point gets additive Gaussian
        noise ``e ~ N(0, (noise**2 / ambient_dim) I_D)``, i.e. each coordinate has
        standard deviation ``noise / sqrt(ambient_dim)``, so ``E||e||^2 = noise**2``:
        ``noise`` is the root-mean-square norm of the noise relative to the unit-norm
        clean points, independent of ``D``. Noisy points are *not* renormalised.
        (The reference ``gen_union_of_subspaces`` of ChongYou/subspace-clustering uses
        per-coordinate std ``noise_level``; pass ``noise = noise_level * sqrt(D)`` to
        reproduce it.)
    random_state : None, int, numpy.random.Generator or numpy.random.RandomState, default=None
        Source of randomness. An int gives a reproducible draw
        (``numpy.random.default_rng(random_state)``); ``None`` draws fresh entropy.
        Draw order: for each subspace its basis and then its coefficients, and finally
        the noise for all points (only when ``noise > 0``).

    Returns
    -------
    X : ndarray of shape (n_samples, ambient_dim), float64
        The points, one per row, grouped by subspace (subspace 0 first).
        ``n_samples = sum(n_per_subspace)``.
    labels : ndarray of shape (n_samples,), int64
        Index of the subspace each point was drawn from (0 .. n_subspaces - 1).
    bases : ndarray of shape (n_subspaces, ambient_dim, subspace_dim), float64
        Orthonormal bases: ``bases[k].T @ bases[k] == I``.

    Raises
    ------
    ValueError
        If a dimension or count is not a positive integer, ``subspace_dim >
        ambient_dim``, ``n_per_subspace`` has the wrong length, ``noise`` is negative
        or not finite, or ``random_state`` has an unsupported type.

    Examples
    --------
    >>> X, y, B = make_union_of_subspaces(5, 6, 15, 200, random_state=0)
    >>> X.shape, y.shape, B.shape
    ((1000, 15), (1000,), (5, 15, 6))
    """
    n_subspaces = _check_pos_int(n_subspaces, "n_subspaces")
    subspace_dim = _check_pos_int(subspace_dim, "subspace_dim")
    ambient_dim = _check_pos_int(ambient_dim, "ambient_dim")
    if subspace_dim > ambient_dim:
        raise ValueError(f"subspace_dim ({subspace_dim}) must not exceed ambient_dim ({ambient_dim})")

    if isinstance(n_per_subspace, numbers.Integral) and not isinstance(n_per_subspace, bool):
        counts = [_check_pos_int(n_per_subspace, "n_per_subspace")] * n_subspaces
    else:
        if isinstance(n_per_subspace, (str, bytes)) or not hasattr(n_per_subspace, "__len__"):
            raise ValueError(
                f"n_per_subspace must be a positive int or a sequence of {n_subspaces} positive ints, "
                f"got {n_per_subspace!r}"
            )
        try:
            seq = np.asarray(n_per_subspace, dtype=object)
        except ValueError:  # ragged
            seq = np.empty(0, dtype=object)
        if seq.ndim != 1 or seq.shape[0] != n_subspaces:
            raise ValueError(
                f"n_per_subspace must have one count per subspace ({n_subspaces}), got {n_per_subspace!r}"
            )
        counts = [_check_pos_int(c, f"n_per_subspace[{k}]") for k, c in enumerate(seq)]

    if isinstance(noise, bool) or not isinstance(noise, numbers.Real) or not np.isfinite(noise) or noise < 0:
        raise ValueError(f"noise must be a finite non-negative number, got {noise!r}")
    noise = float(noise)

    rng = _make_rng(random_state)

    n_samples = sum(counts)
    X = np.empty((n_samples, ambient_dim), dtype=np.float64)
    labels = np.empty(n_samples, dtype=np.int64)
    bases = np.empty((n_subspaces, ambient_dim, subspace_dim), dtype=np.float64)
    start = 0
    for k, n_k in enumerate(counts):
        q, r = np.linalg.qr(rng.standard_normal((ambient_dim, subspace_dim)))
        signs = np.sign(np.diag(r))
        signs[signs == 0] = 1.0
        basis = q * signs
        coef = rng.standard_normal((n_k, subspace_dim))
        norms = np.linalg.norm(coef, axis=1, keepdims=True)
        norms[norms == 0] = 1.0  # probability zero; avoids 0/0
        coef /= norms
        X[start : start + n_k] = coef @ basis.T
        labels[start : start + n_k] = k
        bases[k] = basis
        start += n_k

    if noise > 0:
        X += rng.standard_normal(X.shape) * (noise / np.sqrt(ambient_dim))
    return X, labels, bases
