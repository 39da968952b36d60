"""SSCN (and the DSC-Net baseline): Stiefel optimiser, projection classifier, losses, post-processing, model files."""

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from sklearn.exceptions import NotFittedError

from selfexpress._memory import InsufficientMemoryError
from selfexpress.data import make_union_of_subspaces
from selfexpress.models._dsc_postprocess import dsc_affinity, mass_threshold
from selfexpress.models._autoencoder import ConvAutoEncoder, IdentityAutoEncoder
from selfexpress.models.dscnet import DSCNet
from selfexpress.models.sscn import (SSCN, CayleyAdam, RotationClassifier, SSCNModule, cayley_retraction,
                                     sscn_se_loss)
from selfexpress.train import Trainer

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY = dict(n_clusters=3, max_cluster_dim=2, n_epochs=20, batch_size=30, n_epochs_clf=5, batch_size_clf=30,
            steps_per_batch=3, n_neighbors=10, n_init=3, random_state=0)
# 12x12 "images": a 2-layer conv auto-encoder small enough for a test
TINY_CONV = dict(TINY, image_shape=(12, 12), kernel_sizes=(3, 3), channels=(3, 4), paddings=(1, 1),
                 n_epochs_ae=2, batch_size_ae=40, n_epochs=2, n_epochs_clf=2)


def _orth_error(R):
    R = R.detach().double()
    return float(torch.linalg.matrix_norm(R.T @ R - torch.eye(R.shape[0], dtype=torch.float64)))


@pytest.fixture(scope="module")
def data():
    X, y, _ = make_union_of_subspaces(3, 2, 6, 30, random_state=1)
    return X, y


@pytest.fixture(scope="module")
def fitted(data):
    return SSCN(**TINY).fit(data[0])


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(0)
    return (rng.random((60, 12, 12)) * (rng.random((60, 1, 1)) > 0.0)).astype(np.float32)


# ------------------------------------------------------------------------------------- Stiefel optimiser
def test_cayley_retraction_is_orthogonal_for_large_steps():
    torch.manual_seed(0)
    A = torch.randn(20, 20, dtype=torch.float64)
    W = A - A.T
    X = torch.linalg.qr(torch.randn(20, 7, dtype=torch.float64))[0]
    for t in (1e-3, 0.5, 10.0):
        Y = cayley_retraction(X, W, t)
        assert torch.allclose(Y.T @ Y, torch.eye(7, dtype=torch.float64), atol=1e-12)


def test_R_stays_orthonormal_after_500_cayley_updates():
    torch.manual_seed(0)
    K, d = 4, 3
    clf = RotationClassifier(K, d)
    H = torch.randn(200, K * d)
    y = torch.randint(0, K, (200,))
    opt = CayleyAdam(clf.parameters(), lr=0.1)
    for step in range(500):
        opt.zero_grad()
        idx = torch.randint(0, 200, (50,))
        torch.nn.functional.cross_entropy(clf(H[idx]), y[idx]).backward()
        opt.step()
    assert opt.state[clf.R]["step"] == 500
    assert _orth_error(clf.R) < 1e-5
    assert not torch.allclose(clf.R, torch.eye(K * d, dtype=torch.float64))  # it did move


def test_cayley_adam_descends_and_refuses_tall_parameters():
    torch.manual_seed(1)
    A = 0.3 * torch.randn(6, 6, dtype=torch.float64)
    target = torch.linalg.matrix_exp(A - A.T)  # a rotation away from I (no half-turns: no saddle on the way)
    R = torch.nn.Parameter(torch.eye(6, dtype=torch.float64))
    opt = CayleyAdam([R], lr=0.05)
    losses = []
    for _ in range(300):
        opt.zero_grad()
        loss = ((R - target) ** 2).sum()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.05 * losses[0] or losses[-1] < 1e-3
    tall = torch.nn.Parameter(torch.zeros(5, 3))
    tall.grad = torch.ones(5, 3)
    with pytest.raises(ValueError, match="p <= n"):
        CayleyAdam([tall]).step()


# ------------------------------------------------------------------------------------- projection classifier
def test_logits_are_minus_projection_distances():
    torch.manual_seed(0)
    K, d = 3, 2
    clf = RotationClassifier(K, d)
    with torch.no_grad():
        clf.R.copy_(torch.linalg.qr(torch.randn(K * d, K * d, dtype=torch.float64))[0])
    H = torch.randn(10, K * d)
    V = H.double() @ clf.R
    expected = torch.empty(10, K, dtype=torch.float64)
    for k in range(K):
        S = torch.zeros(K * d, d, dtype=torch.float64)
        S[k * d:(k + 1) * d] = torch.eye(d, dtype=torch.float64)
        expected[:, k] = -((V @ S @ S.T - V) ** 2).sum(1)
    assert torch.allclose(clf(H), expected, atol=1e-10)


def test_projection_assignment_recovers_rotated_coordinate_subspaces():
    """Points on rotated coordinate subspaces: the exact rotation labels them, and training finds one."""
    torch.manual_seed(0)
    K, d, n_per = 3, 2, 40
    D = K * d
    R0 = torch.linalg.qr(torch.randn(D, D, dtype=torch.float64))[0]
    y = torch.arange(K).repeat_interleave(n_per)
    coords = torch.zeros(K * n_per, D, dtype=torch.float64)
    for k in range(K):
        coords[y == k, k * d:(k + 1) * d] = torch.randn(n_per, d, dtype=torch.float64)
    H = (coords @ R0.T).float()  # h R0 lies in coordinate block y
    exact = RotationClassifier(K, d)
    with torch.no_grad():
        exact.R.copy_(R0)
    assert torch.equal(exact(H).argmax(1), y)
    # learn R from the identity with the shared trainer + CayleyAdam, labels as "pseudo-labels"
    clf = RotationClassifier(K, d)
    tr = Trainer(clf, lambda idx: torch.nn.functional.cross_entropy(clf(H[idx]), y[idx]), H.shape[0],
                 n_iter=600, batch_size=40, lr=0.1, schedule="constant", random_state=0,
                 optimizer=lambda g: CayleyAdam(g), steps_per_batch=10)
    tr.run()
    assert (clf(H).argmax(1) == y).float().mean() == 1.0
    assert _orth_error(clf.R) < 1e-8


def test_trainer_steps_per_batch_repeats_each_batch():
    seen = []
    lin = torch.nn.Linear(2, 1)
    X = torch.randn(20, 2)

    def loss_fn(idx):
        seen.append(idx.clone())
        return (lin(X[idx]) ** 2).sum()

    tr = Trainer(lin, loss_fn, 20, n_iter=12, batch_size=10, steps_per_batch=3, random_state=0)
    tr.run()
    assert tr.n_epochs == 2
    for b in range(4):
        assert all(torch.equal(seen[3 * b], seen[3 * b + j]) for j in (1, 2))
    assert not torch.equal(seen[0], seen[3])
    assert sorted(torch.cat(seen[0:6:3]).tolist()) == list(range(20))  # one epoch = every point once


# ------------------------------------------------------------------------------------- losses
def test_se_loss_matches_hand_computation():
    module = SSCNModule(IdentityAutoEncoder(2), n_clusters=1, max_cluster_dim=1)
    with torch.no_grad():
        module.se.weight.copy_(torch.tensor([[1.0, 0.5]]))
    X = torch.tensor([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]])
    # h = x . (1, 0.5) = [1, 1, 1.5];  Q = h h^T
    Q = np.outer([1.0, 1.0, 1.5], [1.0, 1.0, 1.5])
    QX = Q @ X.numpy()
    reg = (Q ** 2).sum()  # 1+1+2.25 twice + 2.25^2 ... = 18.0625
    ssc = 0.5 * ((X.numpy() - QX) ** 2).sum()
    assert reg == pytest.approx(18.0625)
    loss, parts = sscn_se_loss(module, X, 1.0, 1.0, 1.0, decode=False)
    assert parts["reg"] == pytest.approx(reg, rel=1e-6)
    assert parts["ssc"] == pytest.approx(ssc, rel=1e-6)
    assert float(loss.detach()) == pytest.approx(reg + ssc, rel=1e-6)
    # with the (identity) decoder: + lambda_reconst ||X - Q X||^2 = 2 * ssc; lambdas weight the terms
    loss2, parts2 = sscn_se_loss(module, X, 2.0, 3.0, 0.5, decode=True)
    assert parts2["reconst"] == pytest.approx(2 * ssc, rel=1e-6)
    assert float(loss2.detach()) == pytest.approx(2.0 * 2 * ssc + 3.0 * reg + 0.5 * ssc, rel=1e-6)


def test_conv_autoencoder_reference_shapes_and_parameter_count():
    ae = ConvAutoEncoder((1, 28, 28))
    assert ae.latent_dim == 480
    x = torch.rand(3, 784)
    assert ae.encode(x).shape == (3, 480) and ae(x).shape == (3, 784)
    assert (ae(x) >= 0).all()  # final ReLU
    module = SSCNModule(ae, 10, 9)
    assert sum(p.numel() for p in module.parameters() if p.requires_grad) == 66_291  # the poster's count
    assert all(float(m.bias.detach().abs().sum()) == 0 for m in ae.modules() if isinstance(m, torch.nn.Conv2d))


# ------------------------------------------------------------------------------------- post-processing
def _thrC_reference(C, ro):
    """The DSC-Net reference loop (column-wise), for comparison."""
    N = C.shape[1]
    Cp = np.zeros_like(C)
    S = np.abs(np.sort(-np.abs(C), axis=0))
    Ind = np.argsort(-np.abs(C), axis=0, kind="stable")
    for i in range(N):
        cL1 = S[:, i].sum()
        csum, t = 0.0, 0
        while True:
            csum += S[t, i]
            if csum > ro * cL1:
                Cp[Ind[:t + 1, i], i] = C[Ind[:t + 1, i], i]
                break
            t += 1
    return Cp


def test_mass_threshold_matches_reference_loop_dense_and_low_rank():
    rng = np.random.default_rng(0)
    H = rng.standard_normal((40, 5)).astype(np.float32)
    C = H @ H.T
    for ro in (0.1, 0.5):
        ref = _thrC_reference(C.astype(np.float64), ro)
        for kw in ({"C": C}, {"factor": H}):
            out = mass_threshold(**kw, ro=ro, block_size=7).toarray()
            assert np.array_equal(out != 0, ref != 0)
            assert np.allclose(out, ref, atol=1e-5)
    capped = mass_threshold(factor=H, ro=0.9, max_nonzero=3)
    assert capped.getnnz(axis=0).max() <= 3 and capped.capped_ > 0


def test_sparse_affinity_is_the_truncated_dense_one():
    rng = np.random.default_rng(1)
    H = rng.standard_normal((50, 4))
    Cp = mass_threshold(factor=H, ro=0.5)
    L = dsc_affinity(Cp, rank=5, dense=True)
    np.fill_diagonal(L, 0.0)
    A = dsc_affinity(Cp, rank=5, n_neighbors=49)  # every neighbour: exactly the dense affinity
    assert np.allclose(A.toarray(), L, atol=1e-10)
    A5 = dsc_affinity(Cp, rank=5, n_neighbors=5)
    assert (A5 != A5.T).nnz == 0 and A5.diagonal().sum() == 0
    assert np.all(A5.toarray() <= L + 1e-12)
    # without threshold, the implicit operator H H^T (diagonal 1) equals the explicit matrix
    C = H @ H.T
    np.fill_diagonal(C, 0.0)
    assert np.allclose(dsc_affinity(factor=H, rank=5, n_neighbors=8).toarray(),
                       dsc_affinity(sp.csr_matrix(C), rank=5, n_neighbors=8).toarray(), atol=1e-8)


# ------------------------------------------------------------------------------------- estimator
def test_fit_attributes_and_predict_consistency(fitted, data):
    X, y = data
    m = fitted
    assert m.architecture_ == "linear"
    assert m.labels_.shape == (90,) and set(np.unique(m.labels_)) <= {0, 1, 2}
    assert m.pseudo_labels_.shape == (90,)
    assert np.array_equal(m.predict(X), m.labels_)
    P = m.predict_proba(X)
    assert np.allclose(P.sum(1), 1.0) and m.transform(X).shape == (90, 6)
    assert sp.issparse(m.coef_) and m.coef_.diagonal().sum() == 0 and sp.issparse(m.affinity_)
    assert _orth_error(m.module_.classifier.R) < 1e-8
    assert m.n_parameters_ == 6 * 6 + 36  # se (6 -> 6) + R
    assert {"pretrain", "self_expression", "graph", "spectral", "classifier"} <= set(m.timings_)


def test_same_seed_same_labels(data, images):
    X, _ = data
    a = SSCN(**TINY).fit(X)
    b = SSCN(**TINY).fit(X)
    assert np.array_equal(a.labels_, b.labels_) and np.array_equal(a.pseudo_labels_, b.pseudo_labels_)
    c1 = SSCN(**TINY_CONV).fit(images)
    c2 = SSCN(**TINY_CONV).fit(images)
    assert c1.architecture_ == "conv"
    assert np.array_equal(c1.labels_, c2.labels_)
    for k, v in c1.module_.state_dict().items():
        assert torch.equal(v, c2.module_.state_dict()[k])


def test_save_load_round_trip_same_predictions(tmp_path, fitted, data, images):
    X, _ = data
    fitted.save(tmp_path / "lin")
    m = SSCN.load(tmp_path / "lin")
    Xn = np.random.default_rng(3).standard_normal((25, 6)).astype(np.float32)
    assert np.array_equal(m.predict(Xn), fitted.predict(Xn))
    assert np.array_equal(m.predict_proba(Xn), fitted.predict_proba(Xn))
    assert np.array_equal(m.labels_, fitted.labels_) and m.get_params() == fitted.get_params()
    conv = SSCN(**TINY_CONV).fit(images)
    conv.save(tmp_path / "conv.safetensors")
    m2 = SSCN.load(tmp_path / "conv.json")
    new = np.random.default_rng(4).random((7, 144)).astype(np.float32)
    assert np.array_equal(m2.predict(new), conv.predict(new))
    assert np.array_equal(m2.predict(new.reshape(7, 12, 12)), conv.predict(new))


def test_load_refuses_tampered_files(tmp_path, fitted):
    import json

    from safetensors.torch import load_file, save_file

    fitted.save(tmp_path / "m")
    tensors = load_file(tmp_path / "m.safetensors")
    tensors["net.classifier.R"] = tensors["net.classifier.R"] * 2.0  # not orthogonal any more
    save_file(tensors, tmp_path / "m.safetensors")
    with pytest.raises(ValueError, match="not orthogonal"):
        SSCN.load(tmp_path / "m")
    fitted.save(tmp_path / "k")
    meta = json.loads((tmp_path / "k.json").read_text())
    meta["config"]["params"]["max_cluster_dim"] = 3
    (tmp_path / "k.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="network tensor"):
        SSCN.load(tmp_path / "k")
    meta["kind"] = "senet"
    (tmp_path / "k.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="not a 'sscn' model"):
        SSCN.load(tmp_path / "k")


@pytest.mark.parametrize("params, X, match", [
    ({}, np.full((5, 6), np.nan), "NaN"),
    ({"n_clusters": 8}, "small", "larger than the number of samples"),
    ({"noise_threshold": 2.0}, None, "noise_threshold"),
    ({"postprocess": "fast"}, None, "postprocess"),
    ({"architecture": "conv"}, None, "needs 784 features"),
    ({"max_cluster_dim": 0}, None, "max_cluster_dim"),
    ({"kernel_sizes": (5, 3)}, None, "same"),
    ({"pretrained_autoencoder": "weights.pt"}, None, "pretrained_autoencoder"),
    ({}, np.zeros(6), "1-D"),
])
def test_bad_input_errors(params, X, match, data):
    if X is None:
        X = data[0]
    elif isinstance(X, str):
        X = data[0][:5]
    with pytest.raises(ValueError, match=match):
        SSCN(**{**TINY, **params}).fit(X)


def test_predict_errors(fitted):
    with pytest.raises(NotFittedError):
        SSCN().predict(np.zeros((2, 6)))
    with pytest.raises(ValueError, match="features"):
        fitted.predict(np.zeros((2, 5)))
    with pytest.raises(TypeError, match="sparse"):
        fitted.predict(sp.csr_matrix(np.ones((2, 6))))


# ------------------------------------------------------------------------------------- DSC-Net baseline
def test_dscnet_fits_keeps_zero_diagonal_and_is_memory_guarded(images, monkeypatch):
    m = DSCNet(**{k: v for k, v in TINY_CONV.items() if k not in ("batch_size", "n_epochs_clf", "batch_size_clf",
                                                                 "steps_per_batch")}).fit(images)
    assert m.labels_.shape == (60,)
    assert float(m.module_.C.detach().diagonal().abs().max()) == 0.0
    assert float(m.module_.C.detach().abs().max()) > 1e-6  # C was trained
    assert m.n_parameters_ == 60 * 60 + sum(p.numel() for p in m.module_.autoencoder.parameters())
    monkeypatch.setenv("SELFEXPRESS_MAX_MEMORY", "100K")
    with pytest.raises(InsufficientMemoryError, match="self-expressive layer C"):
        DSCNet(**{k: TINY_CONV[k] for k in ("n_clusters", "image_shape", "kernel_sizes", "channels",
                                             "paddings")}).fit(images)


def test_checkpoints_resume_to_the_same_model(tmp_path, data, fitted):
    X, _ = data
    a = SSCN(**TINY, checkpoint_dir=tmp_path).fit(X)
    assert np.array_equal(a.labels_, fitted.labels_)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clf", "se"]  # linear: no auto-encoder stage
    b = SSCN(**TINY, checkpoint_dir=tmp_path, resume=True).fit(X)  # every stage found finished
    assert np.array_equal(b.labels_, a.labels_)
    assert torch.equal(b.module_.classifier.R, a.module_.classifier.R)
    with pytest.raises(ValueError, match="different run"):
        SSCN(**{**TINY, "n_epochs_clf": 6}, checkpoint_dir=tmp_path, resume=True).fit(X)
