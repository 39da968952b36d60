"""scikit-learn's estimator checks (``parametrize_with_checks``) for EnSC, SSC-OMP and SENet.

Every check runs; the few that cannot pass by design are listed in ``EXPECTED_FAILED`` with the reason and the
test that covers their intent instead. They are strict xfails: a listed check that starts passing fails the run,
so the list cannot go stale. ``docs/reliability.md`` shows the same list (``test_docs_table_is_current``; rewrite
with ``python tests/test_sklearn_checks.py``).
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import adjusted_rand_score
from sklearn.utils.estimator_checks import (check_clustering, check_dont_overwrite_parameters, check_fit2d_1feature,
                                            check_fit2d_predict1d, check_methods_subset_invariance,
                                            estimator_checks_generator, parametrize_with_checks)

from selfexpress.data import make_union_of_subspaces
from selfexpress.models.ensc import ElasticNetSubspaceClustering
from selfexpress.models.senet import SENet
from selfexpress.models.ssc_omp import SSCOMP

sys.path.insert(0, str(Path(__file__).parent))
from docs_tables import cell, read_block, write_block  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SENET_FAST = dict(hidden_sizes=(8,), embed_dim=8, n_iter=5, batch_size=10, block_size=64, affinity="symmetric")
#: SENet trained long enough to cluster check_clustering's blobs (ARI 0.94, ~1 s per fit)
#: SENet trained long enough for 3 planes in R^6 (ARI 0.81, ~0.5 s per fit)
SENET_SUBSPACES = dict(hidden_sizes=(32,), embed_dim=32, n_iter=100, batch_size=60, block_size=64,
                       affinity="symmetric", lr=1e-2, lr_threshold=0.1, inactive_grad="kkt", gamma=50.0)
SENET_TRAINED = dict(hidden_sizes=(16,), embed_dim=16, n_iter=100, batch_size=50, block_size=64, affinity="knn",
                     lr=1e-2, lr_threshold=0.1, inactive_grad="kkt", gamma=50.0)

ESTIMATORS = {
    "EnSC": ElasticNetSubspaceClustering(n_clusters=3, n_init=3, random_state=0),
    "SSC-OMP": SSCOMP(n_clusters=3, n_init=3, random_state=0),
    "SENet": SENet(3, n_init=3, random_state=0, **SENET_FAST),
}

N_CLUSTERS_1 = ("sets `n_clusters=1`, which issue 9 requires to be refused (`n_clusters must be at least 2`): a "
                "one-cluster clustering is a user mistake, not a result")
N_CLUSTERS_1_COVER = "the same scikit-learn check, run with `n_clusters=1` mapped to 2 (`test_checks_with_two_clusters`)"
ZERO_ROW = ("casts `3 * uniform(20, 5)` to integers, which makes an all-zero row; a zero point has no direction and no "
            "self-expression, and zero rows are refused by design with a clear `ValueError`")
ZERO_ROW_COVER = "`test_dtypes_give_the_same_labels` (float16/32/64, int32/64 data without zero rows)"
EXPECTED_FAILED = {
    name: {
        "check_dont_overwrite_parameters": (N_CLUSTERS_1, N_CLUSTERS_1_COVER),
        "check_fit2d_1feature": (N_CLUSTERS_1, N_CLUSTERS_1_COVER),
        "check_fit2d_predict1d": (N_CLUSTERS_1, N_CLUSTERS_1_COVER),
        "check_methods_subset_invariance": (N_CLUSTERS_1, N_CLUSTERS_1_COVER),
        "check_estimators_dtypes": (ZERO_ROW, ZERO_ROW_COVER),
    }
    for name in ESTIMATORS
}
EXPECTED_FAILED["SSC-OMP"]["check_clustering"] = (
    "asks for ARI > 0.4 on three standardised Gaussian blobs in R^2. Seen as lines through the origin two blobs "
    "overlap (30-60 vs 51-94 degrees) and any two points span R^2, so OMP's two-atom supports carry no cluster "
    "information (ARI 0.05); blobs are not a union of subspaces (EnSC happens to pass)",
    "every other assertion of `check_clustering`, on a union of subspaces (`test_clustering_contract`)")
EXPECTED_FAILED["SENet"]["check_clustering"] = (
    "its ARI > 0.4 needs a trained network; the fast instance used for the other checks trains 5 steps",
    "the same scikit-learn check with 100 training steps, also on read-only memmaps "
    "(`test_senet_check_clustering_trained`)")


def _name(estimator):
    return next(k for k, v in ESTIMATORS.items() if type(v) is type(estimator))


@parametrize_with_checks(list(ESTIMATORS.values()), xfail_strict=True,
                         expected_failed_checks=lambda est: {k: v[0] for k, v in EXPECTED_FAILED[_name(est)].items()})
def test_sklearn_compatible(estimator, check):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # duplicate points / disconnected graphs in the checks' random data
        check(estimator)


# ----------------------------------------------------------------------------------------------- what the xfails cover
def _at_least_two(cls):
    """A subclass whose ``n_clusters=1`` becomes 2 (set by the checks that try one cluster), nothing else changed."""

    class AtLeastTwo(cls):
        @property
        def n_clusters(self):
            return self.__dict__["n_clusters"]

        @n_clusters.setter
        def n_clusters(self, value):
            self.__dict__["n_clusters"] = 2 if value == 1 else value

    AtLeastTwo.__name__ = AtLeastTwo.__qualname__ = cls.__name__
    return AtLeastTwo


@pytest.mark.parametrize("name", list(ESTIMATORS))
@pytest.mark.parametrize("check", [check_dont_overwrite_parameters, check_fit2d_1feature, check_fit2d_predict1d,
                                   check_methods_subset_invariance])
def test_checks_with_two_clusters(name, check):
    est = ESTIMATORS[name]
    shim = _at_least_two(type(est))(**est.get_params())
    shim.n_clusters = 1
    assert shim.n_clusters == 2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        check(type(est).__name__, shim)


@pytest.mark.parametrize("name", list(ESTIMATORS))
def test_dtypes_give_the_same_labels(name):
    X, _, _ = make_union_of_subspaces(3, 2, 6, 10, random_state=2)
    X = np.round(X * 100)  # integer-valued, no zero rows: every dtype below holds it exactly
    assert X.any(axis=1).all()
    labels = {dt: ESTIMATORS[name].fit(X.astype(dt)).labels_ for dt in (np.float32, np.float64, np.int32, np.int64)}
    for lab in labels.values():
        np.testing.assert_array_equal(lab, labels[np.float32])
    lab16 = ESTIMATORS[name].fit(X.astype(np.float16)).labels_
    assert lab16.shape == (30,) and lab16.dtype == np.int64


@pytest.mark.parametrize("name", list(ESTIMATORS))
def test_clustering_contract(name):
    """check_clustering's assertions on data that are a union of subspaces (no standardisation, which would
    destroy the subspaces): fit on arrays and lists, ARI, fit_predict == labels_, int labels, consecutive labels
    from 0 below n_clusters with extra noise points, read-only input.

    The data make the labels unique on every machine: three 3-dim subspaces of R^9, on which every estimator's
    affinity graph has at most n_clusters connected components (asserted). On 2-dim subspaces (the data used
    before) OMP stops after two atoms, which cuts each subspace into 2-3 components: the graph had 7 components
    for 3 clusters, the top eigenspace was degenerate, and which basis of it LAPACK returned decided the labels
    (ARI 0.42 on one machine, 0.28 on another). See ``test_ssc_omp_over_segments_two_dim_subspaces``."""
    from scipy.sparse.csgraph import connected_components

    est = ESTIMATORS[name]
    if name == "SENet":
        est = SENet(3, random_state=0, n_init=3, **SENET_SUBSPACES)
    X, y, _ = make_union_of_subspaces(3, 3, 9, 20, random_state=0)
    perm = np.random.default_rng(7).permutation(len(y))
    X, y = X[perm], y[perm]
    est.fit(X)
    est.fit(X.tolist())
    pred = est.labels_
    assert pred.shape == (60,) and pred.dtype in (np.int32, np.int64)
    assert connected_components(est.affinity_, directed=False)[0] <= 3  # the spectral embedding is unique
    assert adjusted_rand_score(y, pred) > 0.9
    np.testing.assert_array_equal(est.fit_predict(X), pred)
    X_ro = np.array(X, dtype=np.float32)
    X_ro.setflags(write=False)
    np.testing.assert_array_equal(est.fit_predict(X_ro), est.fit_predict(np.array(X, dtype=np.float32)))
    X_noise = np.vstack([X, np.random.default_rng(7).uniform(-3, 3, size=(5, X.shape[1]))])
    labels = np.unique(est.fit_predict(X_noise))
    np.testing.assert_array_equal(labels, np.arange(labels[0], labels[-1] + 1))
    assert labels[0] == 0 and labels[-1] <= 2


def test_ssc_omp_over_segments_two_dim_subspaces():
    """What the old contract data revealed: SSC-OMP's graph on 2-dim subspaces is subspace preserving but has more
    components than clusters (a known property of OMP; EnSC's l2 term is the remedy), and spectral clustering warns
    that its labels are then not unique."""
    from scipy.sparse.csgraph import connected_components

    X, y, _ = make_union_of_subspaces(3, 2, 6, 20, random_state=1)
    est = SSCOMP(n_clusters=3, n_init=3, random_state=0)
    with pytest.warns(UserWarning, match="connected components"):
        est.fit(X)
    n_cc, comp = connected_components(est.affinity_, directed=False)
    assert n_cc > 3
    assert all(np.unique(y[comp == c]).size == 1 for c in range(n_cc))  # every component inside one subspace


@pytest.mark.parametrize("readonly", [False, True])
def test_senet_check_clustering_trained(readonly):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        check_clustering("SENet", SENet(3, random_state=0, n_init=3, **SENET_TRAINED), readonly_memmap=readonly)


@pytest.mark.parametrize("name", list(ESTIMATORS))
def test_estimator_is_picklable_after_fit(name):
    import pickle

    X, _, _ = make_union_of_subspaces(3, 2, 6, 10, random_state=2)
    est = ESTIMATORS[name].fit(X)
    again = pickle.loads(pickle.dumps(est))
    np.testing.assert_array_equal(again.labels_, est.labels_)
    if name == "SENet":
        np.testing.assert_array_equal(again.predict(X), est.predict(X))
        assert not any(isinstance(v, torch.optim.Optimizer) for v in vars(again).values())


# ----------------------------------------------------------------------------------------------- the docs table
def render_table():
    rows = ["| Estimator | Checks run | Expected to fail (strict xfail) | Why | Covered instead by |",
            "|---|---|---|---|---|"]
    from sklearn.utils.estimator_checks import _check_name  # the name scikit-learn itself keys xfails by

    for name, est in ESTIMATORS.items():
        names = [_check_name(check) for _, check in estimator_checks_generator(est, legacy=True)]
        for i, (check, (why, cover)) in enumerate(sorted(EXPECTED_FAILED[name].items())):
            assert check in names, f"{check} is not a check scikit-learn runs on {name}"
            head = f"{name} | {len(names)} ({len(set(names))} distinct)" if i == 0 else " | "
            rows.append(f"| {head} | `{check}` | {cell(why)} | {cell(cover)} |")
    return "\n".join(rows) + "\n"


def test_docs_table_is_current():
    assert read_block("sklearn-checks") == render_table(), (
        "docs/reliability.md is out of date with EXPECTED_FAILED; run `python tests/test_sklearn_checks.py`")


if __name__ == "__main__":
    write_block("sklearn-checks", render_table())
    print("rewrote the sklearn-checks table of docs/reliability.md")
