"""Input validation shared by every estimator, loader and the CLI.

Every public entry point calls these helpers so that bad input fails early with a
clear message naming the problem (scikit-learn exception types: ``ValueError`` for
bad values, ``sklearn.exceptions.NotFittedError`` for unfitted models).
"""

from __future__ import annotations

import numbers

import numpy as np
from sklearn.exceptions import NotFittedError

__all__ = [
    "check_data",
    "check_n_clusters",
    "check_positive",
    "check_fraction",
    "check_random_state_int",
    "check_is_fitted",
    "check_n_features",
]


def check_data(X, *, name="X", dtype=np.float32, min_samples=2, allow_zero_rows=False):
    """Validate a 2-D data matrix (rows are points) and return it as a C-contiguous array.

    Raises ``ValueError`` naming the problem for: non-numeric, complex or object dtype,
    ragged input, fewer than 2 dimensions or more than 2, empty input, NaN or inf,
    fewer than ``min_samples`` rows, and (unless ``allow_zero_rows``) all-zero rows,
    which cannot be normalised and have no self-expression.
    """
    if hasattr(X, "toarray") and not isinstance(X, np.ndarray):  # scipy.sparse / np.matrix
        X = X.toarray()
    try:
        arr = np.asarray(X)
    except ValueError as exc:  # ragged nested lists
        raise ValueError(f"{name} is ragged or not array-like: {exc}") from None
    if arr.dtype == object:
        try:
            arr = arr.astype(np.float64)
        except (TypeError, ValueError):
            raise ValueError(f"{name} has dtype object and could not be converted to float (ragged or non-numeric)") from None
    if np.iscomplexobj(arr):
        raise ValueError(f"{name} is complex; subspace clustering expects real-valued data")
    if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise ValueError(f"{name} must be numeric, got dtype {arr.dtype}")
    if arr.ndim == 1:
        raise ValueError(
            f"{name} is 1-D (shape {arr.shape}); expected a 2-D array of shape (n_samples, n_features). "
            "Reshape with X.reshape(-1, 1) for one feature or X.reshape(1, -1) for one sample."
        )
    if arr.ndim != 2:
        raise ValueError(f"{name} must be 2-D (n_samples, n_features), got {arr.ndim}-D with shape {arr.shape}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"{name} is empty (shape {arr.shape})")
    if arr.shape[0] < min_samples:
        raise ValueError(f"{name} has {arr.shape[0]} sample(s); at least {min_samples} are required")
    arr = np.ascontiguousarray(arr, dtype=dtype)
    if not np.isfinite(arr).all():
        bad = np.flatnonzero(~np.isfinite(arr).all(axis=1))
        raise ValueError(f"{name} contains NaN or infinity in {bad.size} row(s), first at row {bad[0]}")
    if not allow_zero_rows:
        zero = np.flatnonzero(~arr.any(axis=1))
        if zero.size:
            raise ValueError(
                f"{name} has {zero.size} all-zero row(s) (first at row {zero[0]}); a zero point cannot be "
                "normalised or self-expressed. Remove those rows."
            )
    return arr


def check_n_clusters(n_clusters, n_samples):
    """``n_clusters`` must be an integer with 2 <= n_clusters <= n_samples."""
    if isinstance(n_clusters, bool) or not isinstance(n_clusters, numbers.Integral):
        raise ValueError(f"n_clusters must be an integer, got {n_clusters!r}")
    if n_clusters < 2:
        raise ValueError(f"n_clusters must be at least 2, got {n_clusters}")
    if n_clusters > n_samples:
        raise ValueError(f"n_clusters={n_clusters} is larger than the number of samples ({n_samples})")
    return int(n_clusters)


def check_positive(value, name, *, integer=False, allow_zero=False):
    """A positive (or non-negative) finite number; integers when ``integer``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not np.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    if integer and not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if value < 0 or (value == 0 and not allow_zero):
        raise ValueError(f"{name} must be {'non-negative' if allow_zero else 'positive'}, got {value!r}")
    return int(value) if integer else float(value)


def check_fraction(value, name, *, low=0.0, high=1.0):
    """A number in the closed interval [low, high]."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not (low <= value <= high):
        raise ValueError(f"{name} must be in [{low}, {high}], got {value!r}")
    return float(value)


def check_random_state_int(random_state):
    """Turn ``random_state`` (None, int or numpy Generator/RandomState) into an int seed."""
    if random_state is None:
        return 0
    if isinstance(random_state, numbers.Integral):
        return int(random_state) % (2**32)
    if isinstance(random_state, np.random.RandomState):
        return int(random_state.randint(0, 2**31 - 1))
    if isinstance(random_state, np.random.Generator):
        return int(random_state.integers(0, 2**31 - 1))
    raise ValueError(f"random_state must be None, an int or a numpy random generator, got {random_state!r}")


def check_is_fitted(estimator, attribute):
    """Raise ``NotFittedError`` when ``estimator`` lacks the fitted ``attribute``."""
    if not hasattr(estimator, attribute):
        raise NotFittedError(
            f"This {type(estimator).__name__} instance is not fitted yet; call 'fit' before using it."
        )


def check_n_features(X, expected, name="X"):
    """Raise when ``X`` has a different number of features than the fitted model."""
    if X.shape[1] != expected:
        raise ValueError(f"{name} has {X.shape[1]} features, but the model was fitted with {expected} features")
