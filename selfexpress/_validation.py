"""Input validation shared by every estimator, loader and the CLI.

Every public entry point calls these helpers so that bad input fails early with a
clear message naming the problem (scikit-learn exception types: ``ValueError`` for
bad values, ``TypeError`` for unsupported containers such as scipy.sparse matrices,
``sklearn.exceptions.NotFittedError`` for unfitted models). ``docs/reliability.md``
lists every bad input tested and the message it gives.
"""

from __future__ import annotations

import numbers
import warnings

import numpy as np
import scipy.sparse as sp
from sklearn.exceptions import NotFittedError

__all__ = [
    "DuplicatePointsWarning",
    "check_data",
    "check_distinct_points",
    "check_n_clusters",
    "check_positive",
    "check_fraction",
    "check_random_state_int",
    "fit_seed",
    "check_is_fitted",
    "check_n_features",
]


class DuplicatePointsWarning(UserWarning):
    """The data hold duplicate points (the result is returned, but may be degraded)."""


def check_data(X, *, name="X", dtype=np.float32, min_samples=2, allow_zero_rows=False):
    """Validate a 2-D data matrix (rows are points) and return it as a C-contiguous array.

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features)
        Dense numeric data. Lists, tuples, pandas frames and numpy arrays of any real numeric or
        bool dtype (or dtype object holding numbers) are accepted and converted to ``dtype``.
    name : str, default "X"
        Name of the argument, used in the messages.
    dtype : numpy dtype, default float32
    min_samples : int, default 2
    allow_zero_rows : bool, default False

    Returns
    -------
    ndarray of shape (n_samples, n_features) and dtype ``dtype``, C-contiguous.

    Raises
    ------
    TypeError
        For scipy.sparse input (not supported: the models need dense rows) and for object arrays
        holding non-numbers (dicts, ...).
    ValueError
        Naming the problem for: complex data, non-numeric dtypes, ragged input, fewer or more than
        2 dimensions, empty input, NaN or inf, values beyond the float32 range, fewer than
        ``min_samples`` rows, rows that underflow to zero in ``dtype`` (a silent change of the data), and (unless
        ``allow_zero_rows``) all-zero rows, which cannot be normalised and have no self-expression.
    """
    if sp.issparse(X):
        raise TypeError(
            f"{name} is a scipy.sparse matrix; sparse input is not supported (the models need dense rows). "
            f"Pass {name}.toarray() if it fits in memory ({X.shape[0]} x {X.shape[1]} x 4 bytes)."
        )
    try:
        arr = np.asarray(X)
    except ValueError as exc:  # ragged nested lists
        raise ValueError(f"{name} is ragged or not array-like: {exc}") from None
    if arr.dtype == object:
        try:
            arr = arr.astype(np.float64)
        except TypeError as exc:  # dicts, None, ... (numpy: "float() argument must be a string or a real number")
            raise TypeError(f"{name} has dtype object with non-numeric entries: {exc}") from None
        except ValueError as exc:  # ragged sequences, non-numeric strings
            raise ValueError(
                f"{name} has dtype object and could not be converted to float (ragged or non-numeric): {exc}"
            ) from None
    if np.iscomplexobj(arr):
        raise ValueError(f"Complex data not supported: {name} is complex; subspace clustering expects real values")
    if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise ValueError(f"{name} must be numeric, got dtype {arr.dtype}")
    if arr.ndim == 1:
        raise ValueError(
            f"{name} is 1-D (shape {arr.shape}); expected a 2-D array of shape (n_samples, n_features). "
            "Reshape your data with X.reshape(-1, 1) for one feature or X.reshape(1, -1) for one sample."
        )
    if arr.ndim != 2:
        raise ValueError(f"{name} must be 2-D (n_samples, n_features), got {arr.ndim}-D with shape {arr.shape}")
    shape = f"(shape=({arr.shape[0]}, {arr.shape[1]}))"
    if arr.shape[0] == 0:
        raise ValueError(f"{name} is empty: 0 sample(s) {shape} while a minimum of {min_samples} is required.")
    if arr.shape[1] == 0:
        raise ValueError(f"{name} is empty: 0 feature(s) {shape} while a minimum of 1 is required.")
    if arr.shape[0] < min_samples:
        raise ValueError(f"{name} has {arr.shape[0]} sample(s) {shape}; at least {min_samples} are required")
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        bad = np.flatnonzero(~np.isfinite(arr).all(axis=1))
        raise ValueError(f"{name} contains NaN or infinity in {bad.size} row(s), first at row {bad[0]}")
    out = np.ascontiguousarray(arr, dtype=dtype)
    if out.dtype.kind == "f" and not np.isfinite(out).all():  # finite before, not after: overflow of dtype
        bad = np.flatnonzero(~np.isfinite(out).all(axis=1))
        raise ValueError(
            f"{name} has values too large for {out.dtype} (|x| > {np.finfo(out.dtype).max:.3g}) in {bad.size} "
            f"row(s), first at row {bad[0]}; rescale {name}"
        )
    zero = np.flatnonzero(~out.any(axis=1))
    if zero.size:
        if arr[zero].any():
            first = zero[np.flatnonzero(arr[zero].any(axis=1))[0]]
            raise ValueError(
                f"{name} has row(s) (first at row {first}) whose values are too small for {out.dtype} and "
                f"become all zero; rescale {name}"
            )
        if not allow_zero_rows:
            raise ValueError(
                f"{name} has {zero.size} all-zero row(s) (first at row {zero[0]}); a zero point cannot be "
                "normalised or self-expressed. Remove those rows."
            )
    return out


def check_distinct_points(X, n_clusters, *, name="X", normalized=False):
    """Refuse data with fewer distinct rows than ``n_clusters``; warn about duplicate rows.

    ``X`` is the array the solver will see (after scaling rows to unit norm when ``normalized``,
    so points on the same ray count as duplicates). A duplicate self-expresses through its twin
    with coefficient 1, which can cut both off from their cluster in the affinity graph: the
    result is still returned, with a :class:`DuplicatePointsWarning`. Returns the number of
    distinct rows.
    """
    X = np.ascontiguousarray(X)
    rows = X.view(np.dtype((np.void, X.dtype.itemsize * X.shape[1]))).ravel()
    n_distinct = int(np.unique(rows).size)
    how = " (after scaling rows to unit norm)" if normalized else ""
    if n_distinct < n_clusters:
        kind = "is constant (every row is the same point)" if n_distinct == 1 else f"has only {n_distinct} distinct rows"
        one = (" With 1 feature(s) every point scales to +1 or -1: subspace clustering needs n_features >= 2."
               if normalized and X.shape[1] == 1 else "")
        raise ValueError(
            f"{name} {kind}{how}, fewer than n_clusters={n_clusters}; identical points cannot be split into "
            f"clusters. Lower n_clusters or remove duplicate rows.{one}"
        )
    n_dup = X.shape[0] - n_distinct
    if n_dup:
        warnings.warn(
            f"{name} has {n_dup} duplicate row(s){how}; a duplicate self-expresses through its twin only, which "
            "can cut it off from its cluster. Remove duplicates (e.g. np.unique(X, axis=0)).",
            DuplicatePointsWarning, stacklevel=4,
        )
    return n_distinct


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
    """Turn ``random_state`` (None, int or numpy Generator/RandomState) into an int seed.

    As scikit-learn: an int gives reproducible results, ``None`` fresh randomness (a seed drawn from the operating
    system's entropy on every call), a numpy generator a seed drawn from it. Estimators call this once at the door
    of ``fit`` (:func:`fit_seed`) and pass the seed down, so one fit uses one seed throughout.
    """
    if random_state is None:
        return int(np.random.SeedSequence().generate_state(1)[0])
    if isinstance(random_state, numbers.Integral):
        return int(random_state) % (2**32)
    if isinstance(random_state, np.random.RandomState):
        return int(random_state.randint(0, 2**31 - 1))
    if isinstance(random_state, np.random.Generator):
        return int(random_state.integers(0, 2**31 - 1))
    raise ValueError(f"random_state must be None, an int or a numpy random generator, got {random_state!r}")


def fit_seed(estimator, *, new=False):
    """The int seed of ``estimator``'s current (or last) fit, drawn once from its ``random_state``.

    ``new=True`` (at the door of ``fit``) draws it from ``random_state`` and stores it as ``estimator._seed``; later
    calls in the same fit (building modules, sampling, spectral clustering, ``predict``) return the same seed, so
    ``random_state=None`` is fresh per fit but consistent within one.
    """
    if new or getattr(estimator, "_seed", None) is None:
        estimator._seed = check_random_state_int(estimator.random_state)
    return estimator._seed


def check_is_fitted(estimator, attribute):
    """Raise ``NotFittedError`` when ``estimator`` lacks the fitted ``attribute``."""
    if not hasattr(estimator, attribute):
        raise NotFittedError(
            f"This {type(estimator).__name__} instance is not fitted yet; call 'fit' before using it."
        )


def check_n_features(X, expected, name="X", estimator=None):
    """Raise ``ValueError`` when ``X`` has a different number of features than the fitted model.

    The message follows scikit-learn's: "X has 3 features, but SENet is expecting 4 features as input".
    """
    if X.shape[1] != expected:
        who = type(estimator).__name__ if estimator is not None else "the model"
        raise ValueError(f"{name} has {X.shape[1]} features, but {who} is expecting {expected} features as input "
                         "(the number of features it was fitted with)")
