"""SENet's defaults that fit the device (issue 25): ``"auto"`` parameters resolved at the door of ``fit`` by the
device -- the paper's settings on CUDA, the measured CPU recipe on the CPU -- explicit values winning, the
parameters untouched, the resolved values in ``settings_`` and in model files."""

import json

import numpy as np
import pytest
import torch
from sklearn.base import clone

from selfexpress.data import make_union_of_subspaces
from selfexpress.metrics import clustering_accuracy
from selfexpress.models.senet import AUTO_PARAMS, SENet

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CPU_RECIPE = dict(hidden_sizes=(256, 256, 256), embed_dim=256, n_iter=2500, teacher="ensc", lr_threshold=0.03,
                  n_nonzero=100, affinity="symmetric")
PAPER = dict(hidden_sizes=(1024, 1024, 1024), embed_dim=1024, n_iter=100_000, n_train=None, teacher=None,
             lr_threshold=None, n_nonzero=1000, affinity="knn")


@pytest.fixture(scope="module")
def X():
    return make_union_of_subspaces(3, 2, 6, 25, random_state=1)[0]


@pytest.fixture
def on_cuda(monkeypatch):
    """The estimator believes its tensors live on CUDA (no CUDA tensor is ever made: only resolution is tested)."""
    monkeypatch.setattr(SENet, "_device", property(lambda self: torch.device("cuda", 0)))


def test_defaults_are_auto_and_the_recipes_are_the_presets():
    params = SENet().get_params()
    assert all(params[k] == "auto" for k in AUTO_PARAMS)
    assert {k: SENet._presets["image"][k] for k in CPU_RECIPE} == CPU_RECIPE
    assert {k: SENet._paper_preset[k] for k in PAPER} == PAPER


def test_auto_is_the_cpu_recipe_on_the_cpu_and_parameters_stay_auto(X):
    est = SENet(3, n_iter=3, random_state=0, n_init=2)
    est.fit(X)
    assert est.recipe_ == "cpu"
    assert est.settings_ == {**CPU_RECIPE, "n_iter": 3, "n_train": 75}  # n_train: min(n_samples, 5000)
    assert est.get_params() == SENet(3, n_iter=3, random_state=0, n_init=2).get_params()  # "auto" after fit
    assert all(clone(est).get_params()[k] == "auto" for k in AUTO_PARAMS if k != "n_iter")
    # what the fit used: the CPU recipe's network, teacher and graph
    assert est.module_.query[0].weight.shape == (256, 6) and est.module_.alpha == 1 / 256
    assert "teacher" in est.timings_ and est.coef_.getnnz(axis=1).max() <= 100
    assert est._resolve_settings(n_samples=12_000)[0]["n_train"] == 5000  # the cap on larger data


def test_auto_is_the_paper_on_cuda(on_cuda, X):
    est = SENet(3)
    est._check_common(X)  # the door of fit: checks and resolution, no tensor made
    assert est.recipe_ == "paper" and est.settings_ == PAPER
    assert all(est.get_params()[k] == "auto" for k in AUTO_PARAMS)
    fp = est._fingerprint(X)["params"]  # checkpoints identify the resolved run
    assert fp["hidden_sizes"] == [1024, 1024, 1024] and fp["n_iter"] == 100_000 and fp["teacher"] is None
    # the memory guard sizes the paper's network and its Alg. 1 graph (no teacher on CUDA)
    assert any("SENet training (sgd" in what for _, what, _ in est._memory_estimate(75, 6))


@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_explicit_values_win(device, monkeypatch, X):
    if device == "cuda":
        monkeypatch.setattr(SENet, "_device", property(lambda self: torch.device("cuda", 0)))
    explicit = dict(hidden_sizes=8, embed_dim=8, n_iter=3, n_train=40, teacher=None, lr_threshold=None,
                    n_nonzero=7, affinity="knn")
    est = SENet(3, **explicit)
    est._check_common(X)
    assert est.settings_ == {**explicit, "hidden_sizes": (8,)}
    flipped = dict(teacher="ensc", lr_threshold=0.5, n_train=None, affinity="symmetric")
    est = SENet(3, **flipped)
    est._check_common(X)
    assert {k: est.settings_[k] for k in flipped} == flipped


def test_bad_values_are_refused_with_the_usual_messages(X):
    for bad, match in ((dict(teacher="oracle"), "teacher must be None or 'ensc'"),
                       (dict(affinity="full"), "affinity must be 'symmetric' or 'knn'"),
                       (dict(n_iter="many"), "n_iter must be a finite number"),
                       (dict(embed_dim="AUTO"), "embed_dim must be a finite number"),
                       (dict(hidden_sizes=(4, -1)), r"hidden_sizes\[i\] must be positive"),
                       (dict(hidden_sizes="auto "), r"hidden_sizes\[i\] must be a finite number"),
                       (dict(n_train=0), "n_train must be positive"),
                       (dict(n_nonzero=2.5), "n_nonzero must be an integer"),
                       (dict(lr_threshold="fast"), "lr_threshold must be a finite number")):
        with pytest.raises(ValueError, match=match):
            SENet(3, **bad).fit(X)


def test_model_file_keeps_the_resolved_network(X, tmp_path, monkeypatch):
    est = SENet(3, hidden_sizes=(16,), embed_dim=16, n_iter=3, random_state=0, n_init=2).fit(X)
    path = est.save(tmp_path / "m")
    meta = json.loads(path.with_suffix(".json").read_text())
    assert meta["config"]["recipe"] == "cpu"
    assert {k: meta["config"]["params"][k] for k in AUTO_PARAMS} == {**est.settings_, "hidden_sizes": [16]}
    # loaded where "auto" would mean the paper (a GPU machine): the file's values, not the loader's
    monkeypatch.setattr(SENet, "_recipe", lambda self: "paper")
    m2 = SENet.load(path)
    assert m2.settings_ == est.settings_ and m2.recipe_ == "cpu"
    assert {k: tuple(v.shape) for k, v in m2.module_.state_dict().items()} == \
        {k: tuple(v.shape) for k, v in est.module_.state_dict().items()}
    assert (m2.self_expressive_coefficients() != est.self_expressive_coefficients()).nnz == 0
    np.testing.assert_array_equal(m2.predict(X), est.predict(X))
    # a file written before these parameters existed: the values those versions used
    for k in ("teacher", "n_train", "lr_threshold"):
        del meta["config"]["params"][k]
    del meta["config"]["recipe"]
    path.with_suffix(".json").write_text(json.dumps(meta))
    old = SENet.load(path)
    assert old.teacher is None and old.n_train is None and old.lr_threshold is None and old.recipe_ is None
    # "auto" in a file would make the network depend on the loading machine: refused
    meta["config"]["params"]["embed_dim"] = "auto"
    path.with_suffix(".json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="not a valid SENet model file: embed_dim is 'auto'"):
        SENet.load(path)


def test_teacher_run_resumes_bit_for_bit(X, tmp_path):
    """The CPU default trains with the EnSC teacher; its sampled atoms come from the trainer's checkpointed RNG."""
    kw = dict(hidden_sizes=(16,), embed_dim=16, n_iter=12, batch_size=20, teacher="ensc", n_sampled_atoms=20,
              random_state=0, n_init=2)
    ref = SENet(3, **kw).fit(X)

    def crash(trainer, it, logs):
        if it == 9:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        SENet(3, checkpoint_dir=tmp_path, checkpoint_every=4, **kw).fit(X, callbacks=[crash])
    m = SENet(3, checkpoint_dir=tmp_path, checkpoint_every=4, resume=True, **kw).fit(X)
    for p, q in zip(ref.module_.parameters(), m.module_.parameters()):
        assert torch.equal(p, q)


def test_cpu_recipe_clusters_forty_small_subspaces():
    """40 subspaces of dimension 6 in R^64, 10 points each: the CPU recipe ("auto") with a short schedule.

    Measured (one thread of a loaded 2-core machine): ACC 0.975 in 15 s at 600 iterations; the full default
    (2,500 iterations) 0.9975 in 44 s; EnSC 1.0 in 2 s."""
    X, y, _ = make_union_of_subspaces(40, 6, 64, 10, random_state=0)
    est = SENet(40, n_iter=600, random_state=0).fit(X)
    assert est.recipe_ == "cpu" and est.settings_["teacher"] == "ensc"
    assert clustering_accuracy(y, est.labels_) >= 0.9


def test_cli_presets_still_override_and_the_record_shows_the_settings(X, tmp_path):
    """`selfexpress cluster --method senet` on a file: the synthetic preset's explicit values win over "auto", the
    rest follows the device, and metrics.json records what the fit used."""
    from selfexpress.cli import main

    np.save(tmp_path / "X.npy", X)
    assert main(["cluster", "--input", str(tmp_path / "X.npy"), "--n-clusters", "3", "--method", "senet",
                 "--n-iter", "5", "--output", str(tmp_path / "out"), "-q"]) == 0
    settings = json.loads((tmp_path / "out" / "metrics.json").read_text())["settings"]
    assert settings == {"recipe": "cpu", "hidden_sizes": [128, 128, 128], "embed_dim": 128, "n_iter": 5,
                        "lr_threshold": 0.03, "affinity": "symmetric",  # the preset / the command line
                        "n_train": 75, "teacher": "ensc", "n_nonzero": 100}  # "auto" on the CPU
