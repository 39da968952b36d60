import numpy as np
import pytest
from sklearn.exceptions import NotFittedError

from selfexpress._validation import (
    check_data, check_fraction, check_is_fitted, check_n_clusters, check_n_features, check_positive,
    check_random_state_int,
)


@pytest.mark.parametrize(
    "bad, match",
    [
        (np.array([1.0, 2.0, 3.0]), "1-D"),
        (np.zeros((0, 3)), "empty"),
        (np.array([[1.0, np.nan], [1.0, 2.0]]), "NaN"),
        (np.array([[1.0, np.inf], [1.0, 2.0]]), "NaN or infinity"),
        (np.ones((2, 2)) + 1j, "complex"),
        (np.array([["a", "b"], ["c", "d"]]), "numeric"),
        ([[1.0, 2.0], [3.0]], "ragged"),
        (np.array([[1.0, 2.0], [0.0, 0.0]]), "all-zero"),
        (np.ones((1, 3)), "at least 2"),
        (np.ones((2, 2, 2)), "2-D"),
    ],
)
def test_check_data_rejects_bad_input(bad, match):
    with pytest.raises(ValueError, match=match):
        check_data(bad)


def test_check_data_accepts_and_converts():
    X = check_data([[1, 2], [3, 4]])
    assert X.dtype == np.float32 and X.flags.c_contiguous and X.shape == (2, 2)
    assert check_data(np.array([[1.0, 0.0], [0.0, 0.0]]), allow_zero_rows=True).shape == (2, 2)


def test_scalar_checks():
    assert check_n_clusters(3, 10) == 3
    for bad in (1, 11, 2.5, True):
        with pytest.raises(ValueError):
            check_n_clusters(bad, 10)
    assert check_positive(2, "k", integer=True) == 2
    with pytest.raises(ValueError, match="k must be positive"):
        check_positive(0, "k")
    with pytest.raises(ValueError, match="integer"):
        check_positive(1.5, "k", integer=True)
    with pytest.raises(ValueError):
        check_fraction(1.5, "tau")
    fresh = {check_random_state_int(None) for _ in range(4)}  # None is fresh randomness, as scikit-learn
    assert len(fresh) == 4 and all(0 <= s < 2**32 for s in fresh)
    assert check_random_state_int(7) == 7
    assert check_random_state_int(np.random.RandomState(0)) == check_random_state_int(np.random.RandomState(0))
    with pytest.raises(ValueError):
        check_random_state_int("seed")


def test_fitted_and_feature_checks():
    class Est:
        pass

    with pytest.raises(NotFittedError, match="not fitted"):
        check_is_fitted(Est(), "coef_")
    with pytest.raises(ValueError, match="3 features"):
        check_n_features(np.ones((2, 3)), 4)
