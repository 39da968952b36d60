"""The benchmark harness's SENet learning curves (benchmarks/_monitor.py): a training callback holding the labels,
recording what ``SENet.fit(X, y, eval_set=...)`` recorded in ``history_["eval"]`` before the evaluation left the
estimator (issue 24)."""

import importlib.util
import sys
from pathlib import Path

import pytest

from selfexpress.metrics import clustering_accuracy, subspace_preserving_error
from selfexpress.models.senet import SENet

sys.path.insert(0, str(Path(__file__).parent))
from test_senet import TINY, data  # noqa: E402,F401  (data: the fixture, 3 subspaces + held-out points)

REPO = Path(__file__).resolve().parents[1]
TINY = {**TINY, "n_iter": 40}

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _monitor_module():
    spec = importlib.util.spec_from_file_location("_bench_monitor", REPO / "benchmarks" / "_monitor.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


SENetMonitor = _monitor_module().SENetMonitor


@pytest.fixture(scope="module")
def monitored(data):
    X, y, Xt, yt = data
    m = SENet(3, **TINY)
    monitor = SENetMonitor(m, X, y, eval_set=(Xt, yt), every=20)
    m.fit(X, callbacks=[monitor])
    return m, monitor


def test_curves_every_n_iterations_on_train_and_test(monitored):
    m, monitor = monitored
    h = monitor.history
    assert h["iter"] == [20, 40]
    assert set(h) >= {"acc", "sre", "conn", "L", "L_rec", "L_reg", "test_acc", "test_sre", "test_conn", "test_L_rec"}
    assert all(len(v) == 2 for v in h.values())
    assert all(0.0 <= v <= 1.0 for v in h["conn"] + h["test_conn"] + h["acc"] + h["test_acc"])
    assert not m.history_["eval"]["iter"]  # the curves are the harness's: nothing in the estimator's history_


def test_last_point_is_the_fitted_model(monitored, data):
    """The evaluation after the last iteration clusters the same coefficients as ``fit`` does: its ACC, SRE and
    loss are the fitted model's (same seed, graph and spectral clustering)."""
    X, y, Xt, yt = data
    m, monitor = monitored
    h = monitor.history
    assert h["acc"][-1] == clustering_accuracy(y, m.labels_)
    assert h["sre"][-1] == pytest.approx(subspace_preserving_error(m.coef_, y), rel=1e-12)
    assert h["L"][-1] == pytest.approx(m.objective()["L"], rel=1e-12)
    Ct = m.self_expressive_coefficients(Xt, dictionary=Xt)
    assert h["test_sre"][-1] == pytest.approx(subspace_preserving_error(Ct, yt), rel=1e-12)
    assert h["test_L"][-1] == pytest.approx(m.objective(Xt, Xt)["L"], rel=1e-12)


def test_n_train_curves_use_the_training_subset(data):
    X, y, _, _ = data
    m = SENet(3, **{**TINY, "n_iter": 10, "n_train": 40})
    monitor = SENetMonitor(m, X, y)  # every: n_iter // 10
    m.fit(X, callbacks=[monitor])
    assert monitor.every == 1 and monitor.history["iter"] == list(range(1, 11))
    assert "test_acc" not in monitor.history
    ytr = y[m.train_indices_]
    C = m.self_expressive_coefficients()
    assert monitor.history["sre"][-1] == pytest.approx(subspace_preserving_error(C, ytr), rel=1e-12)


def test_learning_curves_plot(monitored, tmp_path):
    from selfexpress.plotting import plot_learning_curves

    m, monitor = monitored
    curves = monitor.learning_curves()
    assert curves["eval"] is monitor.history and curves["train"]["loss"] == m.history_["train"]["loss"]
    assert plot_learning_curves(curves, tmp_path / "curves.png").stat().st_size > 1000


def test_bad_input(data):
    X, y, Xt, yt = data
    m = SENet(3, **TINY)
    with pytest.raises(ValueError, match="y has 74 labels but X has 75 samples"):
        SENetMonitor(m, X, y[:-1])
    with pytest.raises(ValueError, match="eval_set"):
        SENetMonitor(m, X, y, eval_set=(Xt, yt[:5]))
    for every in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="every"):
            SENetMonitor(m, X, y, every=every)
