"""SENet: Alg. 1 == Alg. 2, diagonal masking, blockwise coefficients, fit / predict, model files, determinism."""

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from sklearn.exceptions import NotFittedError

from selfexpress.data import make_union_of_subspaces
from selfexpress.models.senet import (KeyCache, SENet, SENetModule, elastic_net_penalty, senet_backward_two_pass,
                                      senet_loss_key_cache, senet_loss_sgd)

#: teacher=None: these tests are about the paper's training (Alg. 1 / 2), not the CPU "auto" default with the EnSC
#: teacher (its own tests: test_senet_defaults.py, test_teacher_ensc_*)
TINY = dict(hidden_sizes=(16, 16), embed_dim=16, n_iter=30, batch_size=20, block_size=17, gamma=50.0,
            affinity="symmetric", random_state=0, lr_threshold=0.05, n_init=3, teacher=None)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def data():
    X, y, B = make_union_of_subspaces(3, 2, 6, 25, random_state=1)
    # held-out points on the same subspaces
    rng = np.random.default_rng(7)
    a = rng.standard_normal((30, 2))
    a /= np.linalg.norm(a, axis=1, keepdims=True)
    yt = np.repeat(np.arange(3), 10)
    Xt = np.einsum("nij,nj->ni", B[yt], a)
    return X, y, Xt, yt


@pytest.fixture(scope="module")
def fitted(data):
    X, y, _, _ = data
    return SENet(3, **TINY).fit(X)


def _dense_coef(module, Q, K, exclude):
    with torch.no_grad():
        C = module.coef(module.query(Q), module.key(K))
        if exclude:
            C.fill_diagonal_(0.0)
    return C


# ------------------------------------------------------------------------------------- algorithms
@pytest.mark.parametrize("inactive_grad", ["zero", "kkt"])
@pytest.mark.parametrize("block", [4, 7, 23, 100])
def test_alg1_and_alg2_same_loss_and_gradients_float64(block, inactive_grad):
    torch.manual_seed(0)
    module = SENetModule(5, (12, 12), 8).double()
    with torch.no_grad():
        module.threshold.fill_(0.4)  # some coefficients exactly zero, some not
    X = torch.nn.functional.normalize(torch.randn(23, 5, dtype=torch.float64), dim=1)
    idx = torch.tensor([3, 7, 0, 22, 11, 12])
    module.zero_grad()
    loss1, rec1, reg1 = senet_loss_sgd(module, X, idx, 50.0, 0.9, block, inactive_grad)
    loss1.backward()
    g1 = {n: p.grad.clone() for n, p in module.named_parameters()}
    module.zero_grad()
    loss2, rec2, reg2 = senet_backward_two_pass(module, X, idx, 50.0, 0.9, block, inactive_grad)
    g2 = {n: p.grad.clone() for n, p in module.named_parameters()}
    assert float(loss1.detach()) == pytest.approx(float(loss2), rel=1e-12)
    assert float(rec1) == pytest.approx(float(rec2), rel=1e-12)
    assert float(reg1) == pytest.approx(float(reg2), rel=1e-12)
    for n in g1:
        torch.testing.assert_close(g1[n], g2[n], rtol=1e-10, atol=1e-13)
    assert g1["threshold"].abs().item() > 0  # b really gets a gradient


@pytest.mark.parametrize("b", [-0.1, 0.0, 0.4, 0.9])
def test_key_cache_step_equals_alg1_with_a_fresh_cache_float64(b):
    """With exact cached keys every active atom is a candidate: loss and gradients are Alg. 1's; b = -0.1 / 0 keep
    every atom, b = 0.9 leaves some queries with no active atom at all."""
    torch.manual_seed(0)
    module = SENetModule(5, (12, 12), 8).double()
    with torch.no_grad():
        module.threshold.fill_(b)
    X = torch.nn.functional.normalize(torch.randn(40, 5, dtype=torch.float64), dim=1)
    idx = torch.tensor([3, 7, 0, 39, 11, 12])
    module.zero_grad()
    loss1, rec1, reg1 = senet_loss_sgd(module, X, idx, 50.0, 0.9, 9)
    loss1.backward()
    g1 = {n: p.grad.clone() for n, p in module.named_parameters()}
    module.zero_grad()
    cache = KeyCache(1, 9)
    loss2, rec2, reg2 = senet_loss_key_cache(module, X, idx, 50.0, 0.9, cache)
    loss2.backward()
    g2 = {n: p.grad.clone() for n, p in module.named_parameters()}
    assert float(loss1.detach()) == pytest.approx(float(loss2.detach()), rel=1e-12)
    assert float(rec1) == pytest.approx(float(rec2), rel=1e-12) and float(reg1) == pytest.approx(float(reg2), rel=1e-12)
    for n in g1:
        torch.testing.assert_close(g1[n], g2[n], rtol=1e-10, atol=1e-13)
    if b <= 0:
        assert cache.last == 1.0
    else:  # the point of the cache: atoms no query can activate are skipped
        assert 0.0 < cache.last < 1.0


def test_key_cache_refreshes_every_k_steps_and_updates_the_candidates():
    torch.manual_seed(1)
    module = SENetModule(5, (12,), 8).double()
    X = torch.nn.functional.normalize(torch.randn(30, 5, dtype=torch.float64), dim=1)
    cache = KeyCache(3, 7)
    idx = torch.tensor([0, 1, 2])
    with torch.no_grad():  # b at the median of each atom's largest product: about half the atoms are candidates
        module.threshold.fill_(float((module.query(X[idx]) @ module.key(X).T).abs().amax(0).median()))
    senet_loss_key_cache(module, X, idx, 50.0, 0.9, cache)
    first = cache.keys
    with torch.no_grad():
        for p in module.key.parameters():
            p.add_(0.05)
        exact = module.key(X)
    senet_loss_key_cache(module, X, idx, 50.0, 0.9, cache)
    assert cache.keys is first  # within refresh_every: the same cache, ...
    changed = ~torch.isclose(cache.keys, exact).all(dim=1)
    assert 0 < int(changed.sum()) < 30  # ... exact keys written for this step's candidates only
    senet_loss_key_cache(module, X, idx, 50.0, 0.9, cache)
    senet_loss_key_cache(module, X, idx, 50.0, 0.9, cache)  # 4th call: full refresh
    torch.testing.assert_close(cache.keys, exact)


def test_key_cache_training_follows_alg1(data):
    X, _, _, _ = data
    kw = {**TINY, "n_iter": 10}
    a = SENet(3, **kw).fit(X)
    b = SENet(3, **{**kw, "algorithm": "key_cache", "key_refresh": 2}).fit(X)
    np.testing.assert_allclose(a.history_["train"]["loss"], b.history_["train"]["loss"], rtol=1e-3)
    assert len(b.history_["train"]["active"]) == len(b.history_["train"]["loss"])
    with pytest.raises(ValueError, match="inactive_grad='zero'"):
        SENet(3, **{**kw, "algorithm": "key_cache", "inactive_grad": "kkt"}).fit(X)
    with pytest.raises(ValueError, match="key_refresh"):
        SENet(3, **{**kw, "algorithm": "key_cache", "key_refresh": 0}).fit(X)


def test_kkt_gradient_of_zeroed_coefficients():
    """With every coefficient zeroed, "kkt" passes alpha * ST(-<x_j, q_i>/m, lmbd/m) to u; "zero" passes nothing."""
    torch.manual_seed(2)
    module = SENetModule(4, (8,), 6).double()
    X = torch.nn.functional.normalize(torch.randn(12, 4, dtype=torch.float64), dim=1)
    idx = torch.tensor([1, 5, 8])
    gamma, lmbd, m = 30.0, 0.9, 3
    with torch.no_grad():
        module.threshold.fill_(100.0)  # |u| <= 6 < b: all zero, rec = 0, q_i = gamma x_i
    grads = {}
    for mode in ("zero", "kkt"):
        module.zero_grad()
        loss, _, _ = senet_loss_sgd(module, X, idx, gamma, lmbd, 5, mode)
        assert float(loss.detach()) == pytest.approx(gamma / 2 * 3 / m)
        loss.backward()
        grads[mode] = {n: (None if p.grad is None else p.grad.clone()) for n, p in module.named_parameters()}
    assert all(g is None or torch.count_nonzero(g) == 0 for g in grads["zero"].values())
    # expected: d/dtheta of sum_ij G_ij * u_ij with G = alpha * ST(-<x_j, gamma x_i>/m, lmbd/m), diagonal masked
    g = -(gamma * X[idx]) @ X.T / m
    G = module.alpha * torch.sign(g) * torch.relu(g.abs() - lmbd / m)
    G[torch.arange(3), idx] = 0.0
    assert torch.count_nonzero(G) > 0
    module.zero_grad()
    (G * (module.query(X[idx]) @ module.key(X).T)).sum().backward()
    for n, p in module.named_parameters():
        if n == "threshold":
            assert grads["kkt"][n] is None or torch.count_nonzero(grads["kkt"][n]) == 0
        else:
            torch.testing.assert_close(grads["kkt"][n], p.grad, rtol=1e-10, atol=1e-14)


def test_kkt_gradient_equals_exact_gradient_when_nothing_is_zeroed():
    torch.manual_seed(3)
    module = SENetModule(4, (8,), 6).double()
    with torch.no_grad():
        module.threshold.fill_(-1e3)  # nothing thresholded
    X = torch.nn.functional.normalize(torch.randn(10, 4, dtype=torch.float64), dim=1)
    idx = torch.tensor([0, 4])
    out = []
    for mode in ("zero", "kkt"):
        module.zero_grad()
        senet_loss_sgd(module, X, idx, 20.0, 0.9, 3, mode)[0].backward()
        out.append({n: p.grad.clone() for n, p in module.named_parameters()})
    for n in out[0]:
        torch.testing.assert_close(out[0][n], out[1][n], rtol=1e-12, atol=1e-14)


def test_loss_matches_dense_formula_and_excludes_diagonal():
    torch.manual_seed(1)
    module = SENetModule(4, (8,), 6).double()
    X = torch.nn.functional.normalize(torch.randn(15, 4, dtype=torch.float64), dim=1)
    idx = torch.tensor([2, 9, 14])
    loss, rec, reg = senet_loss_sgd(module, X, idx, 10.0, 0.7, 4)
    C = _dense_coef(module, X[idx], X, exclude=False)
    C[torch.arange(3), idx] = 0.0
    R = X[idx] - C @ X
    want_rec = (R ** 2).sum()
    want_reg = 0.7 * C.abs().sum() + 0.15 * (C ** 2).sum()
    assert float(rec) == pytest.approx(float(want_rec), rel=1e-12)
    assert float(reg) == pytest.approx(float(want_reg), rel=1e-12)
    assert float(loss.detach()) == pytest.approx(float((5.0 * want_rec + want_reg) / 3), rel=1e-12)
    assert float(elastic_net_penalty(torch.tensor([0.0, -2.0]), 0.5)) == pytest.approx(0.5 * 2.0 + 0.25 * 4.0)


def test_network_shape_init_and_coefficient_bound():
    module = SENetModule(7, (32, 32, 32), 10)
    lin = [m for m in module.query if isinstance(m, torch.nn.Linear)]
    assert [l.out_features for l in lin] == [32, 32, 32, 10]
    assert all(torch.count_nonzero(l.bias) == 0 for l in lin)
    assert isinstance(module.query[-1], torch.nn.Tanh)
    assert module.threshold.shape == (1,) and module.threshold.item() == 0.0
    assert module.query[0].weight.data_ptr() != module.key[0].weight.data_ptr()
    X = torch.randn(9, 7)
    C = module.coef(module.query(X), module.key(X))
    assert C.abs().max() <= 1.0


# ------------------------------------------------------------------------------------- coefficients
@pytest.mark.filterwarnings("ignore:The affinity graph has")
def test_coef_is_sparse_csr_with_zero_diagonal_and_topk(data):
    X, y, _, _ = data
    m = SENet(3, **{**TINY, "n_nonzero": 5}).fit(X)
    C = m.coef_
    assert sp.isspmatrix_csr(C) and C.shape == (75, 75)
    assert np.all(C.diagonal() == 0)
    assert np.diff(C.indptr).max() <= 5


def test_blockwise_coefficients_equal_dense_computation(fitted, data):
    X, _, Xt, _ = data
    m = fitted
    Xn = X / np.linalg.norm(X, axis=1, keepdims=True)
    D = torch.as_tensor(Xn, dtype=torch.float32)
    dense = _dense_coef(m.module_, D, D, exclude=True).numpy()
    C = m.self_expressive_coefficients(n_nonzero=75).toarray()
    np.testing.assert_allclose(C, dense, atol=1e-6)
    np.testing.assert_allclose(m.coef_.toarray(), dense, atol=1e-6)  # n_nonzero=1000 > N: nothing dropped
    # out of sample: no diagonal to mask
    Xtn = Xt / np.linalg.norm(Xt, axis=1, keepdims=True)
    dense_t = _dense_coef(m.module_, torch.as_tensor(Xtn, dtype=torch.float32), D, exclude=False).numpy()
    Ct = m.self_expressive_coefficients(Xt, n_nonzero=75).toarray()
    np.testing.assert_allclose(Ct, dense_t, atol=1e-6)
    # top-k keeps the largest |c| per row
    C3 = m.self_expressive_coefficients(Xt, n_nonzero=3)
    assert np.diff(C3.indptr).max() <= 3
    kth = np.sort(np.abs(dense_t), axis=1)[:, -3]
    for i in range(C3.shape[0]):
        row = C3.getrow(i)
        assert np.all(np.abs(row.data) >= kth[i] - 1e-7)


def test_exclude_self_detection(fitted, data):
    X, _, Xt, _ = data
    assert np.all(fitted.self_expressive_coefficients(X).diagonal() == 0)  # same points -> masked
    Ctt = fitted.self_expressive_coefficients(Xt, dictionary=Xt)
    assert Ctt.shape == (30, 30) and np.all(Ctt.diagonal() == 0)
    with pytest.raises(ValueError, match="same points"):
        fitted.self_expressive_coefficients(Xt, exclude_self=True)


def test_objective_matches_dense(fitted, data):
    X, _, _, _ = data
    m = fitted
    Xn = X / np.linalg.norm(X, axis=1, keepdims=True)
    C = _dense_coef(m.module_, torch.as_tensor(Xn, dtype=torch.float32),
                    torch.as_tensor(Xn, dtype=torch.float32), exclude=True).double().numpy()
    rec = ((Xn - C @ Xn) ** 2).sum()
    reg = 0.9 * np.abs(C).sum() + 0.05 * (C ** 2).sum()
    obj = m.objective()
    assert obj["L_rec"] == pytest.approx(rec, rel=1e-4)
    assert obj["L_reg"] == pytest.approx(reg, rel=1e-4)
    assert obj["L"] == pytest.approx(25.0 * rec + reg, rel=1e-4)


# ------------------------------------------------------------------------------------- fit / predict
def test_fit_learns_and_history(data):
    X, y, Xt, yt = data
    m = SENet(3, **{**TINY, "n_iter": 40})
    m.fit(X)
    h = m.history_
    assert set(h["train"]) >= {"iter", "loss", "rec", "reg", "b", "lr"}
    assert len(h["train"]["loss"]) == 40
    assert not h.get("eval", {}).get("iter")  # curves against labels are the harness's (benchmarks/_monitor.py)
    assert m.train_indices_ is None
    assert np.mean(h["train"]["loss"][-5:]) < np.mean(h["train"]["loss"][:5])
    assert h["train"]["b"][-1] > 0  # the threshold is learned
    assert m.labels_.shape == (75,) and m.dictionary_labels_.shape == (75,)
    assert set(m.timings_) >= {"train", "inference", "graph", "spectral"}


def test_fit_takes_no_labels(data):
    """``fit(X, y)`` ignores ``y`` (scikit-learn's convention); the label-aware evaluation is gone from the
    estimator (``eval_set``, ``eval_every``); label-free callbacks still observe the training."""
    X, y, Xt, yt = data
    a = SENet(3, **TINY).fit(X)
    seen = []

    def observe(trainer, iteration, logs):
        seen.append(iteration)

    b = SENet(3, **TINY).fit(X, np.zeros_like(y), callbacks=[observe])
    np.testing.assert_array_equal(a.labels_, b.labels_)
    assert seen == list(range(1, TINY["n_iter"] + 1))
    np.testing.assert_array_equal(SENet(3, **TINY).fit_predict(X, y), a.labels_)
    with pytest.raises(TypeError):
        SENet(3, **TINY).fit(X, y, eval_set=(Xt, yt))
    with pytest.raises(TypeError):
        SENet(3, eval_every=10)


def test_n_train_indices_are_the_dictionary(data):
    X, _, _, _ = data
    m = SENet(3, **{**TINY, "n_train": 40})
    seen = []
    m.fit(X, callbacks=[lambda trainer, iteration, logs: seen.append(m.train_indices_)])
    assert m.train_indices_.shape == (40,) and np.all(np.diff(m.train_indices_) > 0)
    assert len(seen) == TINY["n_iter"] and all(s is m.train_indices_ for s in seen)  # a callback can read them
    np.testing.assert_array_equal(m.dictionary_labels_, m.labels_[m.train_indices_])
    assert m.dictionary_.shape == (40, X.shape[1])


def test_same_seed_same_labels_other_seed_other_weights(data):
    X, _, _, _ = data
    a = SENet(3, **TINY).fit(X)
    b = SENet(3, **TINY).fit(X)
    np.testing.assert_array_equal(a.labels_, b.labels_)
    assert (a.coef_ != b.coef_).nnz == 0
    c = SENet(3, **{**TINY, "random_state": 1}).fit(X)
    assert not torch.equal(a.module_.query[0].weight, c.module_.query[0].weight)


@pytest.mark.parametrize("inactive_grad", ["zero", "kkt"])
def test_two_pass_training_matches_sgd_training(data, inactive_grad):
    X, _, _, _ = data
    kw = {**TINY, "n_iter": 10, "inactive_grad": inactive_grad}
    a = SENet(3, **{**kw, "algorithm": "sgd"}).fit(X)
    b = SENet(3, **{**kw, "algorithm": "two_pass"}).fit(X)
    np.testing.assert_allclose(a.history_["train"]["loss"], b.history_["train"]["loss"], rtol=1e-4)
    for p, q in zip(a.module_.parameters(), b.module_.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-3, atol=1e-5)


def test_predict_rules(fitted, data):
    _, _, Xt, yt = data
    for rule in ("mass", "knn", "spectral"):
        lab = fitted.predict(Xt, rule=rule)
        assert lab.shape == (30,) and lab.dtype == np.int64
        assert lab.min() >= 0 and lab.max() < 3
    # predicting the training points themselves with the mass rule mostly reproduces labels_
    with pytest.raises(ValueError, match="rule"):
        fitted.predict(Xt, rule="vote")
    with pytest.raises(ValueError, match="features"):
        fitted.predict(Xt[:, :4])
    with pytest.raises(ValueError, match="spectral"):
        fitted.predict(Xt[:2], rule="spectral")
    assert fitted.predict(Xt[:1]).shape == (1,)  # a single new point is fine


def test_predict_falls_back_when_all_coefficients_are_thresholded(fitted, data):
    _, _, Xt, _ = data
    old = fitted.module_.threshold.detach().clone()
    try:
        with torch.no_grad():
            fitted.module_.threshold.fill_(1e6)
        assert fitted.self_expressive_coefficients(Xt).nnz == 0
        lab = fitted.predict(Xt)
        assert lab.shape == (30,)
    finally:
        with torch.no_grad():
            fitted.module_.threshold.copy_(old)


def test_n_train_subset(data):
    X, _, _, _ = data
    m = SENet(3, **{**TINY, "n_train": 40}).fit(X)
    assert m.dictionary_.shape == (40, 6)
    assert m.coef_.shape == (75, 75) and m.labels_.shape == (75,)
    assert m.dictionary_labels_.shape == (40,)


def test_not_fitted_and_bad_params(data):
    X, _, _, _ = data
    with pytest.raises(NotFittedError):
        SENet(3).predict(X)
    with pytest.raises(NotFittedError):
        SENet(3).self_expressive_coefficients(X)
    for bad in (dict(algorithm="adam"), dict(lmbd=1.5), dict(gamma=0), dict(hidden_sizes=(4, -1)),
                dict(n_iter=0), dict(embed_dim=2.5), dict(lr_threshold=-1.0), dict(device="gpu0!"),
                dict(inactive_grad="straight")):
        with pytest.raises(ValueError):
            SENet(3, **{**TINY, **bad}).fit(X)


def test_verbose_progress_bar(data, capsys):
    X, _, _, _ = data
    SENet(3, **{**TINY, "n_iter": 5, "verbose": True}).fit(X)
    assert "loss=" in capsys.readouterr().err
    SENet(3, **{**TINY, "n_iter": 5}).fit(X)
    assert "loss=" not in capsys.readouterr().err


# ------------------------------------------------------------------------------------- files
def test_save_load_identical_coefficients_and_predict(fitted, data, tmp_path):
    X, _, Xt, _ = data
    path = fitted.save(tmp_path / "model")
    assert (tmp_path / "model.safetensors").exists() and (tmp_path / "model.json").exists()
    m2 = SENet.load(path)
    # the file holds the values the fit used ("auto" resolved: settings_), so it rebuilds the same network anywhere
    assert m2.get_params() == {**fitted.get_params(), **fitted.settings_}
    assert m2.settings_ == fitted.settings_ and m2.recipe_ == fitted.recipe_
    for C1, C2 in ((fitted.self_expressive_coefficients(), m2.self_expressive_coefficients()),
                   (fitted.self_expressive_coefficients(Xt), m2.self_expressive_coefficients(Xt))):
        assert (C1 != C2).nnz == 0
    for rule in ("mass", "knn", "spectral"):
        np.testing.assert_array_equal(fitted.predict(Xt, rule=rule), m2.predict(Xt, rule=rule))
    np.testing.assert_array_equal(m2.labels_, fitted.labels_)
    assert m2.history_["train"]["loss"] == fitted.history_["train"]["loss"]


def test_load_drops_retired_parameters(fitted, tmp_path):
    """A model file written before ``eval_every`` left SENet (the learning curves moved to the harness) loads."""
    import json

    path = fitted.save(tmp_path / "old")
    meta = json.loads(path.with_suffix(".json").read_text())
    meta["config"]["params"]["eval_every"] = 5
    path.with_suffix(".json").write_text(json.dumps(meta))
    np.testing.assert_array_equal(SENet.load(path).labels_, fitted.labels_)


def test_load_rejects_other_kinds(tmp_path):
    from selfexpress.io import save_model_file

    save_model_file(tmp_path / "other", {"w": np.zeros(2)}, {"x": 1}, kind="ensc")
    with pytest.raises(ValueError, match="senet"):
        SENet.load(tmp_path / "other")
    with pytest.raises(ValueError, match="does not exist"):
        SENet.load(tmp_path / "missing")


def test_checkpoint_resume_matches_uninterrupted(data, tmp_path):
    X, _, _, _ = data
    ref = SENet(3, **{**TINY, "n_iter": 12}).fit(X)

    def crash(trainer, it, logs):
        if it == 9:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        SENet(3, **{**TINY, "n_iter": 12, "checkpoint_dir": tmp_path, "checkpoint_every": 4}).fit(X, callbacks=[crash])
    m = SENet(3, **{**TINY, "n_iter": 12, "checkpoint_dir": tmp_path, "checkpoint_every": 4, "resume": True}).fit(X)
    for p, q in zip(ref.module_.parameters(), m.module_.parameters()):
        assert torch.equal(p, q)
    np.testing.assert_array_equal(ref.labels_, m.labels_)
    with pytest.raises(ValueError, match="different run"):
        SENet(3, **{**TINY, "n_iter": 12, "gamma": 5.0, "checkpoint_dir": tmp_path, "resume": True}).fit(X)
    # same parameters, other data (one point moved): the checkpoint is not resumed either
    X2 = X.copy()
    X2[0] = -X2[0]
    with pytest.raises(ValueError, match="different run"):
        SENet(3, **{**TINY, "n_iter": 12, "checkpoint_dir": tmp_path, "resume": True}).fit(X2)


def test_data_fingerprint_identifies_values_and_shape():
    from selfexpress.models._files import data_fingerprint

    X = np.arange(12, dtype=np.float64).reshape(3, 4)
    fp = data_fingerprint(X)
    assert fp["shape"] == [3, 4]
    assert data_fingerprint(X.astype(np.float32)) == fp  # the float32 values are hashed
    assert data_fingerprint(np.asfortranarray(X)) == fp  # memory layout does not matter
    assert data_fingerprint(X.reshape(4, 3))["shape"] == [4, 3]
    X2 = X.copy()
    X2[2, 3] += 1.0
    assert data_fingerprint(X2)["data"] != fp["data"]


def test_plots_write_images(fitted, data, tmp_path):
    from selfexpress.plotting import plot_coefficient_grid, plot_coefficients, plot_learning_curves, sorted_abs_coef

    X, y, Xt, yt = data
    C = fitted.coef_
    img, lab, bounds = sorted_abs_coef(C, y, max_points=50)
    assert img.shape == (50, 50) and np.all(np.diff(lab) >= 0) and len(bounds) == 2
    p = plot_coefficients(C, y, tmp_path / "c.png", title="train")
    assert p.stat().st_size > 1000
    Ct = fitted.self_expressive_coefficients(Xt, dictionary=Xt)
    p = plot_coefficient_grid([[(C, y, "train")], [(Ct, yt, "test")]], tmp_path / "grid.png")
    assert p.stat().st_size > 1000
    m = SENet(3, **{**TINY, "n_iter": 6}).fit(X)
    p = plot_learning_curves(m.history_, tmp_path / "curves.png")  # the training loss (curves vs labels: test_monitor)
    assert p.stat().st_size > 1000
    with pytest.raises(ValueError, match="nothing to plot"):
        plot_learning_curves({})
    with pytest.raises(ValueError, match="labels"):
        plot_coefficients(C, y[:5])
    # command line
    from selfexpress.plotting import main

    fitted.save(tmp_path / "m")
    assert main(["curves", str(tmp_path / "m.json"), "--out", str(tmp_path / "k.png")]) == 0
    assert main(["coefficients", str(tmp_path / "m.json"), "--out", str(tmp_path / "cc.png")]) == 0
    assert (tmp_path / "k.png").exists() and (tmp_path / "cc.png").exists()


def test_distill_loss_with_all_atoms_and_zero_weight_equals_alg1_loss():
    import scipy.sparse as sp
    import torch

    from selfexpress.models.senet import SENetModule, senet_loss_distill, senet_loss_sgd

    torch.manual_seed(0)
    X = torch.nn.functional.normalize(torch.randn(40, 8, dtype=torch.float64), dim=1)
    module = SENetModule(8, (16,), 16).double()
    idx = torch.tensor([3, 7, 11])
    gen = torch.Generator().manual_seed(0)
    teacher = sp.csr_matrix((40, 40))
    # 2,000 random draws over 40 atoms: every atom is sampled, so the columns are the full dictionary.
    a, _, _ = senet_loss_distill(module, X, idx, teacher, 0.0, 2000, 50.0, 0.9, gen)
    b, _, _ = senet_loss_sgd(module, X, idx, 50.0, 0.9, 1000)
    assert torch.allclose(a, b, rtol=1e-10)


def test_teacher_ensc_training_fits_and_clusters():
    from selfexpress.data import make_union_of_subspaces
    from selfexpress.models.senet import SENet

    X, y, _ = make_union_of_subspaces(3, 3, 12, 40, random_state=0)
    m = SENet(3, hidden_sizes=(64, 64), embed_dim=64, gamma=50.0, n_iter=300, batch_size=40, teacher="ensc",
              n_sampled_atoms=40, lr_threshold=0.03, affinity="symmetric", random_state=0).fit(X)
    assert "teacher" in m.timings_
    from selfexpress.metrics import clustering_accuracy

    assert clustering_accuracy(y, m.labels_) >= 0.9
    with pytest.raises(ValueError, match="teacher"):
        SENet(3, teacher="oracle").fit(X)
