"""The public API: every estimator importable from ``selfexpress`` and ``selfexpress.models``, keyword-only
parameters after ``n_clusters`` (default 8 everywhere, as scikit-learn), ``random_state`` as in scikit-learn
(an int reproduces, None is fresh), and the one registry that the pipeline and the CLI read."""

from __future__ import annotations

import inspect
import subprocess
import sys

import numpy as np
import pytest

import selfexpress
import selfexpress.models as models
from selfexpress.data import make_union_of_subspaces

NAMES = ["SENet", "ElasticNetSubspaceClustering", "SSCOMP", "NCSC", "SSCN", "DSCNet", "EnergySubspaceClustering"]


def test_every_estimator_is_importable_from_the_package_and_models():
    from selfexpress import (DSCNet, ElasticNetSubspaceClustering, EnergySubspaceClustering, NCSC,  # noqa: F401
                             SENet, SSCN, SSCOMP)

    for name in NAMES:
        assert getattr(selfexpress, name) is getattr(models, name)
        assert name in selfexpress.__all__ and name in models.__all__ and name in dir(selfexpress)
    with pytest.raises(AttributeError):
        selfexpress.NotAnEstimator  # noqa: B018


def test_import_selfexpress_does_not_import_torch():
    code = "import sys, selfexpress, selfexpress.models, selfexpress.cli; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


@pytest.mark.parametrize("name", NAMES)
def test_parameters_after_n_clusters_are_keyword_only(name):
    cls = getattr(models, name)
    params = list(inspect.signature(cls.__init__).parameters.values())[1:]
    assert params[0].name == "n_clusters" and params[0].default == 8
    assert params[0].kind is inspect.Parameter.POSITIONAL_OR_KEYWORD
    assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in params[1:])
    with pytest.raises(TypeError):
        cls(3, 4)
    assert cls().n_clusters == 8


def test_random_state_int_reproduces_and_none_is_fresh():
    from selfexpress._validation import check_random_state_int

    assert check_random_state_int(5) == check_random_state_int(5) == 5
    assert len({check_random_state_int(None) for _ in range(5)}) == 5
    X, _, _ = make_union_of_subspaces(3, 2, 6, 10, random_state=0)
    kw = dict(n_clusters=3, hidden_sizes=(8,), embed_dim=8, n_iter=3, batch_size=10, block_size=64, n_init=2)

    def weights(random_state):
        est = models.SENet(random_state=random_state, **kw).fit(X)
        return next(iter(est.module_.parameters())).detach().numpy().copy()

    np.testing.assert_array_equal(weights(0), weights(0))
    assert not np.array_equal(weights(None), weights(None))


def test_one_seed_per_fit():
    """random_state=None draws one seed at the door of fit; the rest of the fit (and predict) reuses it."""
    X, _, _ = make_union_of_subspaces(3, 2, 6, 10, random_state=0)
    est = models.SSCOMP(n_clusters=3, n_init=2).fit(X)
    first = est._seed
    assert isinstance(first, int)
    est.fit(X)
    assert est._seed != first


def test_registry_declares_every_estimator_once():
    reg = models.registry()
    assert sorted(reg) == sorted(["senet", "ensc", "ssc-omp", "ncsc", "sscn", "dscnet", "energy"])
    assert {cls.__name__ for cls in reg.values()} == set(NAMES)
    for name in reg:
        info = models.method_info(name)
        assert info["input_kind"] in models.INPUT_KINDS
        assert info["presets"], f"{name} declares no preset"
        if info["model_kind"] is not None:
            assert models.method_for_model_kind(info["model_kind"]) is info["cls"]
            assert hasattr(info["cls"], "save") and hasattr(info["cls"], "load")
    with pytest.raises(ValueError, match="unknown method 'nope'"):
        models.get_method("nope")


def test_pipeline_views_are_derived_from_the_registry():
    from selfexpress import pipeline

    reg = models.registry()
    assert set(pipeline.METHODS) == set(reg) | set(pipeline.BASELINES)
    assert pipeline.RAW_INPUT_METHODS == {n for n in reg if models.method_info(n)["input_kind"] == "pixels"}
    assert pipeline.PRESETS[("ssc-omp", "synthetic")] == reg["ssc-omp"]._presets["synthetic"]
    assert pipeline.PAPER_PRESETS["senet"]["n_iter"] == 100_000
    assert pipeline.method_names()[:len(reg)] == list(reg)


def test_cli_method_choices_read_the_registry():
    from selfexpress.cli import build_parser
    from selfexpress.pipeline import method_names

    parser = build_parser()
    cluster = parser._subparsers._group_actions[0].choices["cluster"]
    action = next(a for a in cluster._actions if a.dest == "method")
    assert list(action.choices) == method_names()


@pytest.mark.parametrize("argv, message", [
    (["cluster", "--method", "senet", "--tau", "0.5"], "method 'senet' does not take tau; its parameters are:"),
    (["cluster", "--method", "ssc-omp", "--lmbd", "0.5"], "method 'ssc-omp' does not take lmbd"),
    (["cluster", "--method", "ensc", "--save-model", "m"], "--save-model: method 'ensc' has no model file"),
    (["cluster", "--method", "kmeans", "--save-model", "m"], "--save-model: method 'kmeans' has no model file"),
])
def test_cli_refuses_before_the_run_with_one_line(argv, message, capsys):
    from selfexpress.cli import main

    assert main([*argv, "-q"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""  # nothing ran
    assert captured.err.startswith("selfexpress: error: ") and message in captured.err
    assert captured.err.count("\n") == 1


@pytest.mark.parametrize("k", [0, 1, -3])
def test_cli_n_clusters_below_two_is_refused_before_the_run(k, capsys):
    from selfexpress.cli import main

    assert main(["cluster", "--n-clusters", str(k), "-q"]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and f"n_clusters must be at least 2, got {k}" in captured.err


def test_pipeline_n_clusters_zero_is_not_taken_for_missing():
    from selfexpress.pipeline import run

    with pytest.raises(ValueError, match="n_clusters must be at least 2, got 0"):
        run("synthetic", "ssc-omp", n_clusters=0)


def test_senet_checks_its_parameters_once_per_fit(monkeypatch):
    """The parameters are checked at the door of ``fit``, not again in every helper (issue 24: six times)."""
    calls = []
    original = models.SENet._check_params
    monkeypatch.setattr(models.SENet, "_check_params", lambda self: calls.append(1) or original(self))
    X, _, _ = make_union_of_subspaces(3, 2, 6, 10, random_state=0)
    models.SENet(3, hidden_sizes=(8,), embed_dim=8, n_iter=3, batch_size=10, block_size=64, n_init=2,
                 random_state=0).fit(X)
    assert len(calls) == 1
