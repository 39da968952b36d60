"""NCSC: self-expressive closed form, affinities, collaborative loss, fit / predict, model files, bad input."""

import math

import numpy as np
import pytest
import torch
from sklearn.exceptions import NotFittedError

from selfexpress.data import make_union_of_subspaces
from selfexpress.metrics import clustering_accuracy
from selfexpress.models.ncsc import (NCSC, balance_penalty, classifier_affinity, collaborative_loss,
                                     self_expressive_coefficients, subspace_affinity)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY = dict(n_clusters=3, batch_size=90, n_epochs=100, classifier_channels=(32, 32), lr=1e-2, u=0.5, lambda1=10.0,
            random_state=0)
# 12x12 "images": a 2-layer conv auto-encoder small enough for a test
TINY_CONV = dict(n_clusters=3, image_shape=(12, 12), kernel_sizes=(3, 3), channels=(3, 4), paddings=(1, 1),
                 classifier_channels=(8, 8), n_epochs_ae=2, batch_size_ae=40, n_epochs=2, batch_size=30,
                 random_state=0)


@pytest.fixture(scope="module")
def data():
    X, y, _ = make_union_of_subspaces(3, 2, 8, 60, random_state=1)
    return X, y


@pytest.fixture(scope="module")
def fitted(data):
    X, y = data
    return NCSC(**TINY).fit(X[::2])


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(0)
    return rng.random((60, 12, 12)).astype(np.float32)


# ------------------------------------------------------------------------------------- building blocks
def _constrained_lsq(Z, lam):
    """Row by row: argmin ||c||^2 + lam/2 ||z_i - c Z||^2 with c_i = 0 (normal equations on the other rows)."""
    B = Z.shape[0]
    C = np.zeros((B, B))
    for i in range(B):
        o = [j for j in range(B) if j != i]
        Zo = Z[o]
        c = np.linalg.solve(2 * np.eye(B - 1) + lam * Zo @ Zo.T, lam * Zo @ Z[i])
        C[i, o] = c
    return C


@pytest.mark.parametrize("B,d", [(7, 3), (4, 6)])  # Woodbury (d < B) and direct (d >= B) branches
def test_self_expressive_layer_is_the_constrained_minimiser(B, d):
    rng = np.random.default_rng(0)
    Z = rng.standard_normal((B, d))
    C = self_expressive_coefficients(torch.tensor(Z), 10.0).numpy()
    np.testing.assert_allclose(C, _constrained_lsq(Z, 10.0), atol=1e-9)
    assert np.all(np.diag(C) == 0)


def test_subspace_affinity_matches_hand_computation():
    C = torch.tensor([[0.0, 2.0, -1.0], [1.0, 0.0, 0.0], [0.0, 3.0, 0.0]])
    # (|C| + |C^T|)/2 = [[0, 1.5, .5], [1.5, 0, 1.5], [.5, 1.5, 0]]; every row max is 1.5; diagonal 1
    expected = torch.tensor([[1.0, 1.0, 1 / 3], [1.0, 1.0, 1.0], [1 / 3, 1.0, 1.0]])
    assert torch.allclose(subspace_affinity(C), expected)


def test_classifier_affinity_is_cosine_of_softmax_in_unit_interval():
    logits = torch.tensor([[10.0, 0.0, 0.0], [9.0, 0.0, 0.0], [0.0, 0.0, 10.0], [0.0, 0.0, 0.0]])
    A, nu = classifier_affinity(logits)
    assert torch.allclose(nu.norm(dim=1), torch.ones(4))
    assert torch.allclose(A.diagonal(), torch.ones(4))
    assert float(A.min()) >= 0 and float(A.max()) <= 1 + 1e-6
    assert A[0, 1] > 0.99 and A[0, 2] < 0.01
    assert torch.isclose(A[3, 0], torch.tensor(1 / math.sqrt(3)), atol=1e-3)  # uniform vs (almost) one-hot


def test_collaborative_loss_terms_match_hand_computation():
    A_s = torch.tensor([[1.0, 0.5, 0.05], [0.5, 1.0, 0.2], [0.05, 0.2, 1.0]])
    A_c = torch.tensor([[1.0, 0.9, 0.3], [0.9, 1.0, 0.6], [0.3, 0.6, 1.0]])
    omega, t = collaborative_loss(A_s, A_c, u=0.1, l=0.7, alpha=2.0, beta=3.0)
    # positives A_s > 0.1 (off-diagonal): (0,1), (1,0), (1,2), (2,1)
    pos = -(0.5 * math.log(0.9) * 2 + 0.2 * math.log(0.6) * 2) / 4
    # negatives A_c < 0.7: (0,2), (2,0), (1,2), (2,1); the student is A_s, weighted by 1 - A_c
    neg = -(0.7 * math.log(0.95) * 2 + 0.4 * math.log(0.8) * 2) / 4
    # the classifier's own negatives that are not positives: (0,2), (2,0)
    clf = -math.log(1 - 0.3)
    assert (t["n_pos"], t["n_neg"], t["n_clf"]) == (4, 4, 2)
    assert math.isclose(float(t["pos"]), pos, rel_tol=1e-6)
    assert math.isclose(float(t["neg"]), neg, rel_tol=1e-6)
    assert math.isclose(float(t["clf"]), clf, rel_tol=1e-6)
    assert math.isclose(float(omega), pos + 2.0 * neg + 3.0 * clf, rel_tol=1e-6)


def test_collaborative_loss_gradients_follow_the_teacher_student_roles():
    A_s = torch.tensor([[1.0, 0.5, 0.05], [0.5, 1.0, 0.2], [0.05, 0.2, 1.0]], requires_grad=True)
    A_c = torch.tensor([[1.0, 0.9, 0.3], [0.9, 1.0, 0.6], [0.3, 0.6, 1.0]], requires_grad=True)
    _, t = collaborative_loss(A_s, A_c, u=0.1, l=0.7)
    t["pos"].backward()
    assert A_c.grad[0, 1] < 0  # a positive pair: descending raises A_c
    A_c.grad = None
    A_s.grad = None
    t2 = collaborative_loss(A_s, A_c, u=0.1, l=0.7)[1]
    t2["neg"].backward()
    assert A_s.grad[0, 2] > 0  # a negative pair: descending lowers A_s
    A_c.grad = None
    collaborative_loss(A_s, A_c, u=0.1, l=0.7)[1]["clf"].backward()
    assert A_c.grad[0, 2] > 0 and A_c.grad[0, 1] == 0  # the classifier's own negative lowers A_c


def test_empty_pair_sets_give_zero_loss():
    A = torch.eye(3)
    omega, t = collaborative_loss(A, torch.ones(3, 3), u=0.5, l=0.1)
    assert float(omega) == 0 and t["n_pos"] == 0 and t["n_neg"] == 0


def test_balance_penalty_is_zero_for_balanced_one_hot_and_log_k_for_collapse():
    balanced = torch.tensor([[50.0, 0, 0], [0, 50.0, 0], [0, 0, 50.0]])
    assert abs(float(balance_penalty(balanced))) < 1e-6
    uniform = torch.zeros(4, 3)  # every output uniform: A_c = 1 everywhere
    one_cluster = torch.tensor([[50.0, 0, 0]] * 4)
    assert math.isclose(float(balance_penalty(uniform)), math.log(3), rel_tol=1e-6)
    assert math.isclose(float(balance_penalty(one_cluster)), math.log(3), rel_tol=1e-5)
    assert abs(float(balance_penalty(balanced, "uniform"))) < 1e-6
    assert math.isclose(float(balance_penalty(uniform, "uniform")), math.log(3), rel_tol=1e-6)
    assert float(balance_penalty(one_cluster, "uniform")) > 10 * math.log(3)
    with pytest.raises(ValueError, match="balance"):
        balance_penalty(uniform, "mutual")


def test_uniform_balance_revives_an_output_no_point_uses():
    # confident outputs on clusters 0 and 1 only: cluster 2 is dead
    logits = torch.tensor([[10.0, 0, -10], [0, 10.0, -10]] * 3, requires_grad=True)
    grads = {}
    for kind in ("entropy", "uniform"):
        logits.grad = None
        balance_penalty(logits, kind).backward()
        grads[kind] = -float(logits.grad[:, 2].sum())  # how hard descent pushes the dead logit up
    assert math.isclose(grads["uniform"], 1 / 3, rel_tol=1e-2)  # d KL(U || pbar) / d logit_dead = 1/K in total
    assert abs(grads["entropy"]) < 1e-4


# ------------------------------------------------------------------------------------- estimator
def test_fit_clusters_subspaces_and_predicts_unseen_points(fitted, data):
    X, y = data
    assert fitted.labels_.shape == (90,)
    assert np.array_equal(fitted.predict(X[::2]), fitted.labels_)
    assert clustering_accuracy(y[::2], fitted.labels_) > 0.6  # chance: about 0.4
    unseen = fitted.predict(X[1::2])  # never seen in training
    assert clustering_accuracy(y[1::2], unseen) > 0.6
    proba = fitted.predict_proba(X[1::2])
    assert np.allclose(proba.sum(axis=1), 1, atol=1e-5)
    assert fitted.transform(X[:4]).shape == (4, 8)  # identity encoder on vectors


def test_conv_fit_same_seed_same_labels_and_save_load_round_trip(tmp_path, images):
    a = NCSC(**TINY_CONV).fit(images)
    b = NCSC(**TINY_CONV).fit(images)
    assert np.array_equal(a.labels_, b.labels_)
    assert a.architecture_ == "conv" and set(a.timings_) >= {"pretrain", "joint"}
    a.save(tmp_path / "m")
    c = NCSC.load(tmp_path / "m")
    new = np.random.default_rng(5).random((7, 12, 12)).astype(np.float32)
    assert np.array_equal(c.labels_, a.labels_)
    np.testing.assert_allclose(c.decision_function(new), a.decision_function(new), rtol=1e-6, atol=1e-6)
    assert c.get_params()["classifier_channels"] == (8, 8)


def test_load_refuses_tampered_files(tmp_path, fitted):
    import json

    fitted.save(tmp_path / "m")
    meta = json.loads((tmp_path / "m.json").read_text())
    meta["config"]["params"]["classifier_channels"] = [16, 32]
    (tmp_path / "bad.json").write_text(json.dumps(meta))
    (tmp_path / "bad.safetensors").write_bytes((tmp_path / "m.safetensors").read_bytes())
    with pytest.raises(ValueError, match="network tensor"):
        NCSC.load(tmp_path / "bad")


@pytest.mark.parametrize("params,X,match", [
    (dict(n_clusters=1), None, "n_clusters"),
    (dict(u=1.5), None, "u must be in"),
    (dict(l_end=-0.1), None, "l_end must be in"),
    (dict(batch_size=1), None, "batch_size"),
    (dict(lambda1=0), None, "lambda1"),
    (dict(classifier_channels=(8, 0)), None, "classifier_channels"),
    (dict(balance="mutual"), None, "balance must be"),
    (dict(architecture="conv"), None, "architecture='conv' needs 784"),
    (dict(), np.full((10, 8), np.nan), "NaN"),
    (dict(n_clusters=500), None, "n_clusters=500 is larger"),
])
def test_bad_input_errors(params, X, match, data):
    X = data[0] if X is None else X
    with pytest.raises(ValueError, match=match):
        NCSC(**{**TINY, "n_epochs": 1, **params}).fit(X)


def test_predict_errors(fitted):
    with pytest.raises(NotFittedError):
        NCSC().predict(np.zeros((2, 8)))
    with pytest.raises(ValueError, match="features"):
        fitted.predict(np.zeros((2, 5)))


def test_cli_ncsc_on_scattering_features_fits_the_feature_variant_and_predicts_from_features(
        tmp_path, monkeypatch, capsys, data):
    """``cluster --method ncsc --features scattering`` on an image dataset: the loader is asked for features (not
    pixels), the estimator gets the "image-features" preset (identity encoder, uniform balance), and ``predict``
    with the saved model asks for features again."""
    from selfexpress import pipeline
    from selfexpress.cli import main

    from selfexpress.features import ScatteringPCA

    X, y = data
    asked = []
    # a fitted basis standing in for the dataset's scattering + PCA (the fake loader returns X as its features)
    basis = ScatteringPCA(n_components=X.shape[1], J=2, L=4, shape=(16, 16))
    q, _ = np.linalg.qr(np.random.default_rng(0).standard_normal((basis.n_scattering_features, X.shape[1])))
    basis.components_, basis.mean_, basis.eigenvalues_ = np.ascontiguousarray(q.T), None, None
    basis.image_shape_, basis.n_samples_seen_ = (12, 12), len(X)
    basis.fingerprint_ = basis._compute_fingerprint()

    def fake_load_input(dataset, input_path=None, labels_path=None, data_dir=None, cache_dir=None, *a, raw=False,
                        **k):
        given = k.get("feature_transform")
        asked.append((dataset, raw, None if given is None else given.fingerprint_))
        return (X.astype(np.float32), y, 3) + ((basis,) if k.get("return_transform") else ())

    monkeypatch.setattr(pipeline, "load_input", fake_load_input)
    monkeypatch.setitem(pipeline.PRESETS, ("ncsc", "image-features"),
                        {**pipeline.PRESETS[("ncsc", "image-features")], "batch_size": 90, "n_epochs": 3})
    model = tmp_path / "ncsc"
    assert main(["cluster", "--dataset", "mnist-test", "--method", "ncsc", "--features", "scattering", "-q",
                 "--save-model", str(model)]) == 0
    assert asked == [("mnist-test", False, None)]
    assert "ncsc on mnist-test: 180 points" in capsys.readouterr().out
    loaded = NCSC.load(model)
    assert loaded.architecture_ == "linear" and loaded.balance == "uniform"
    assert loaded.feature_transform_.fingerprint_ == basis.fingerprint_
    # predict asks for the dataset's features in the model's own basis, not a new one
    assert main(["predict", "--model", str(model), "--dataset", "mnist-test"]) == 0
    assert asked[-1] == ("mnist-test", False, basis.fingerprint_)


def test_features_switch_errors_and_defaults():
    from selfexpress.pipeline import make_estimator, run, wants_raw_input

    assert wants_raw_input("ncsc") and not wants_raw_input("senet")
    assert not wants_raw_input("ncsc", "scattering") and wants_raw_input("sscn", "pixels")
    with pytest.raises(ValueError, match="features must be one of"):
        wants_raw_input("ncsc", "hog")
    with pytest.raises(ValueError, match="clusters feature vectors"):
        wants_raw_input("senet", "pixels")
    with pytest.raises(ValueError, match="no variant for scattering features"):
        make_estimator("dscnet", 10, "mnist-test", features="scattering")
    with pytest.raises(ValueError, match="no variant for scattering features"):  # before any data is loaded
        run("mnist-test", "dscnet", data_dir="/nonexistent", features="scattering")
    est, _ = make_estimator("ncsc", 10, "mnist-test", features="scattering")
    assert est.architecture == "linear" and est.balance == "uniform"
    assert make_estimator("ncsc", 10, "mnist-test")[0].architecture == "conv"


def test_batch_loss_of_the_feature_variant_skips_the_gradient_free_self_expression_term(data):
    """Identity encoder, no decoder: the self-expression term is constant in the parameters, so it is not computed
    (``se`` logged as nan) and the loss is exactly the collaborative part; the conv variant still carries it."""
    from selfexpress.models.ncsc import ncsc_batch_loss

    X, _ = data
    model = NCSC(**{**TINY, "n_epochs": 0}).fit(X)
    xb = torch.as_tensor(X[:40], dtype=torch.float32)
    kw = dict(lambda1=10.0, lambda_cl=2.0, u=0.5, l=0.9, alpha=1.0, beta=1.0, lambda_balance=0.5, decode=False)
    loss, logs = ncsc_batch_loss(model.module_, xb, **kw)
    assert math.isnan(logs["se"])
    assert float(loss) == pytest.approx(2.0 * (logs["omega"] + 0.5 * logs["balance"]), rel=1e-6)
