"""Energy-based self-expressiveness (LDRSC): augmentations, coefficients, losses, estimator, model files."""

import numpy as np
import pytest
import torch
from sklearn.exceptions import NotFittedError

from selfexpress.data.augment import (Augment, brightness_contrast, random_crop, random_flip, random_grayscale,
                                      random_resized_crop)
from selfexpress.models.energy import (EnergyModule, EnergyNet, EnergySubspaceClustering, InnerProductEnergy, ResNet,
                                       SmallConvNet, coefficients_from_energy)
from selfexpress.train import Trainer

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY = dict(n_clusters=3, image_shape=(12, 12), width=4, proj_hidden=16, embed_dim=8, energy_hidden=(8, 8),
            n_epochs_pretrain=2, n_epochs=2, batch_size=16, n_dictionary=32, bn_splits=2, n_nonzero=10,
            block_size=16, n_init=3, random_state=0)


def _tiny_images(n_per=16, seed=0):
    """Three kinds of 12 x 12 images: horizontal bars, vertical bars, a centred blob; random intensity + noise."""
    rng = np.random.default_rng(seed)
    out, y = [], []
    yy, xx = np.mgrid[:12, :12]
    for k in range(3):
        for _ in range(n_per):
            if k == 0:
                img = ((yy + rng.integers(0, 3)) % 3 == 0).astype(np.float32)
            elif k == 1:
                img = ((xx + rng.integers(0, 3)) % 3 == 0).astype(np.float32)
            else:
                img = np.exp(-((yy - 5.5) ** 2 + (xx - 5.5) ** 2) / rng.uniform(4, 12)).astype(np.float32)
            img = np.clip(img * rng.uniform(0.6, 1.0) + 0.1 * rng.random((12, 12)), 0, 1)
            out.append(img)
            y.append(k)
    return np.stack(out).astype(np.float32), np.array(y)


@pytest.fixture(scope="module")
def images():
    return _tiny_images()


@pytest.fixture(scope="module")
def fitted(images):
    return EnergySubspaceClustering(**dict(TINY, n_epochs_pretrain=15, n_epochs=5)).fit(images[0])


# ------------------------------------------------------------------------------------- augmentations
@pytest.mark.parametrize("shape", [(5, 1, 28, 28), (4, 3, 32, 32)])
@pytest.mark.parametrize("fn", [lambda x, g: random_crop(x, 4, generator=g),
                                lambda x, g: random_resized_crop(x, (0.2, 1.0), generator=g),
                                lambda x, g: random_flip(x, 0.5, generator=g),
                                lambda x, g: brightness_contrast(x, 0.8, 0.8, 1.0, generator=g),
                                lambda x, g: random_grayscale(x, 0.5, generator=g),
                                lambda x, g: Augment()(x, generator=g),
                                lambda x, g: Augment(crop="pad")(x, generator=g)])
def test_augmentations_keep_shape_dtype_and_range(shape, fn):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(shape)
    x[0] = 1.0  # saturated image
    x[1] = 0.0  # empty image
    out = fn(x, g)
    assert out.shape == x.shape and out.dtype == x.dtype
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    assert torch.isfinite(out).all()
    # reproducible from the generator's seed
    assert torch.equal(out, fn(x, torch.Generator().manual_seed(0)))


def test_augmentations_do_what_they_say():
    x = torch.rand(6, 1, 10, 10)
    assert torch.equal(random_flip(x, 1.0), x.flip(-1))
    assert torch.equal(random_flip(x, 0.0), x)
    assert torch.equal(random_crop(x, 0), x)
    # a padded crop is a shifted copy: every output is a window of the zero-padded input
    out = random_crop(x, 2, generator=torch.Generator().manual_seed(1))
    xp = torch.nn.functional.pad(x, (2, 2, 2, 2))
    for i in range(6):
        assert any(torch.equal(out[i], xp[i, :, a:a + 10, b:b + 10]) for a in range(5) for b in range(5))
    # full-area, unit-ratio resized crop is the identity (up to interpolation)
    same = random_resized_crop(x, (1.0, 1.0), (1.0, 1.0))
    assert torch.allclose(same, x, atol=1e-5)
    # no jitter: unchanged
    assert torch.allclose(brightness_contrast(x, 0.0, 0.0, 1.0), x)
    # two views differ
    a = Augment()
    assert not torch.equal(a(x), a(x))


def test_augmentation_bad_input():
    with pytest.raises(TypeError):
        random_flip(np.zeros((2, 1, 4, 4)))
    with pytest.raises(ValueError, match=r"\(n, C, H, W\)"):
        random_flip(torch.zeros(2, 4, 4))
    with pytest.raises(ValueError, match="floating-point"):
        random_flip(torch.zeros(2, 1, 4, 4, dtype=torch.uint8))
    with pytest.raises(ValueError, match="scale"):
        random_resized_crop(torch.zeros(2, 1, 4, 4), (0.0, 1.0))
    with pytest.raises(ValueError, match="padding"):
        random_crop(torch.zeros(2, 1, 4, 4), -1)
    with pytest.raises(ValueError, match="crop"):
        Augment(crop="zoom")
    with pytest.raises(ValueError, match="flip"):
        Augment(flip=1.5)


# ------------------------------------------------------------------------------------- networks, coefficients
def test_backbones_output_shapes():
    x28, x32 = torch.rand(3, 1, 28, 28), torch.rand(3, 3, 32, 32)
    assert SmallConvNet(1, 4)(x28).shape == (3, 16)
    assert ResNet(18, 3, 4)(x32).shape == (3, 32)
    assert ResNet(50, 1, 2)(x28).shape == (3, 64)
    with pytest.raises(ValueError, match="depth"):
        ResNet(34)


def test_pairwise_energy_is_the_mlp_on_concatenations():
    torch.manual_seed(0)
    net = EnergyNet(5, (7, 6), init_scale=None)
    za, zb = torch.randn(4, 5), torch.randn(9, 5)
    pairs = torch.cat([za[:, None, :].expand(4, 9, 5), zb[None, :, :].expand(4, 9, 5)], dim=2)
    ref = net(pairs.reshape(-1, 10)).reshape(4, 9)
    assert torch.allclose(net.pairwise(za, zb), ref, atol=1e-6)
    assert torch.allclose(net.pairwise(za, zb, chunk=2), ref, atol=1e-6)
    cand = torch.tensor([[0, 3], [8, 1], [2, 2], [5, 6]])
    assert torch.allclose(net.candidates(za, zb[cand]), ref.gather(1, cand), atol=1e-6)
    ip = InnerProductEnergy(5.0)
    assert torch.allclose(ip.pairwise(za, zb), -5.0 * za @ zb.T, atol=1e-5)
    assert torch.allclose(ip(pairs.reshape(-1, 10)).reshape(4, 9), -5.0 * za @ zb.T, atol=1e-5)


def test_coefficients_have_zero_diagonal_and_rows_summing_to_one():
    torch.manual_seed(0)
    e = torch.randn(6, 6) * 3
    c = coefficients_from_energy(e, beta=1.0, exclude=torch.arange(6))
    assert torch.all(torch.diagonal(c) == 0)
    assert torch.allclose(c.sum(1), torch.ones(6), atol=1e-6)
    assert torch.all(c >= 0)
    # lower energy -> larger coefficient (Gibbs distribution)
    row = coefficients_from_energy(torch.tensor([[0.0, 1.0, 2.0]]))
    assert row[0, 0] > row[0, 1] > row[0, 2]


@pytest.mark.parametrize("coefficients", ["energy", "inner_product"])
def test_fitted_coefficients_zero_diagonal_rows_sum_to_one(images, coefficients):
    X = images[0]
    n = X.shape[0]
    m = EnergySubspaceClustering(**dict(TINY, coefficients=coefficients, n_nonzero=n - 1, n_epochs_pretrain=1,
                                        n_epochs=1)).fit(X)
    C = m.coef_
    assert C.shape == (n, n)
    assert np.all(C.diagonal() == 0)
    np.testing.assert_allclose(np.asarray(C.sum(axis=1)).ravel(), 1.0, atol=1e-5)
    A = m.affinity_
    assert abs(A - A.T).max() < 1e-6 and A.min() >= 0
    # the unseen-point coefficients over the whole dictionary sum to one as well
    np.testing.assert_allclose(m.predict_proba(X[:5]).sum(1), 1.0, atol=1e-5)


def test_candidate_coefficients_match_exact_when_all_candidates(images, fitted):
    X = images[0]
    exact = fitted.coefficients_of(X[:8], n_nonzero=20).toarray()
    fitted.n_candidates = X.shape[0]  # every entry is a candidate
    try:
        approx = fitted.coefficients_of(X[:8], n_nonzero=20).toarray()
    finally:
        fitted.n_candidates = None
    np.testing.assert_allclose(approx, exact, atol=1e-6)


# ------------------------------------------------------------------------------------- training
@pytest.mark.parametrize("contrastive", ["infonce", "simsiam"])
def test_joint_loss_decreases_on_a_tiny_problem(images, contrastive):
    X = images[0].reshape(len(images[0]), -1)
    est = EnergySubspaceClustering(**dict(TINY, contrastive=contrastive))
    est._check_params()
    module = est._build(X.shape[0])
    imgs = est._images(X)
    aug = est._augment()
    est._init_bank(module, imgs, aug)
    loss_fn = est._loss_fn(module, imgs, aug, joint=True)
    idx = torch.arange(16)

    def fixed_loss():
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(123)
            module.train()
            return float(loss_fn(idx)[0].detach())

    before = fixed_loss()
    Trainer(module, loss_fn, X.shape[0], n_iter=60, batch_size=16, lr=3e-3, schedule="constant",
            random_state=0).run()
    after = fixed_loss()
    assert after < before


def test_fit_clusters_the_tiny_problem_and_predicts(images, fitted):
    X, y = images
    from selfexpress.metrics import clustering_accuracy

    assert fitted.labels_.shape == (X.shape[0],)
    assert set(np.unique(fitted.labels_)) <= {0, 1, 2}
    assert clustering_accuracy(y, fitted.labels_) > 0.5
    assert np.mean(fitted.predict(X) == fitted.labels_) > 0.8
    assert fitted.transform(X).shape == (X.shape[0], 8)
    assert fitted.dictionary_.shape == (X.shape[0], 8)
    assert {"pretrain", "joint", "coefficients", "spectral"} <= set(fitted.timings_)
    assert set(fitted.history_["joint"]["train"]) >= {"loss", "contrastive", "rec", "reg"}


def test_same_random_state_same_labels(images, fitted):
    again = EnergySubspaceClustering(**dict(TINY, n_epochs_pretrain=15, n_epochs=5)).fit(images[0])
    np.testing.assert_array_equal(again.labels_, fitted.labels_)


def test_pretrained_encoder_skips_stage_one(images, fitted):
    m = EnergySubspaceClustering(**dict(TINY, coefficients="inner_product",
                                        pretrained_encoder=fitted.pretrained_encoder_)).fit(images[0])
    assert "pretrain" not in m.history_ and "joint" in m.history_
    with pytest.raises(ValueError, match="pretrained_encoder"):
        EnergySubspaceClustering(**dict(TINY, width=8, pretrained_encoder=fitted.pretrained_encoder_)).fit(images[0])


def test_image_layouts_are_equivalent(images, fitted):
    X = images[0]
    np.testing.assert_array_equal(fitted.predict(X.reshape(len(X), -1)), fitted.predict(X))
    np.testing.assert_array_equal(fitted.predict(X[:, None]), fitted.predict(X))


# ------------------------------------------------------------------------------------- model files
def test_save_load_round_trip(tmp_path, images, fitted):
    X = images[0]
    path = fitted.save(tmp_path / "energy")
    loaded = EnergySubspaceClustering.load(path)
    np.testing.assert_array_equal(loaded.labels_, fitted.labels_)
    np.testing.assert_array_equal(loaded.predict(X), fitted.predict(X))
    np.testing.assert_allclose(loaded.predict_proba(X), fitted.predict_proba(X), atol=1e-6)
    assert torch.equal(loaded.dictionary_, fitted.dictionary_)
    assert loaded.get_params()["coefficients"] == "energy"


def test_load_rejects_tampered_files(tmp_path, fitted):
    import json

    from safetensors.torch import load_file, save_file

    path = fitted.save(tmp_path / "m")
    js = path.with_suffix(".json")
    meta = json.loads(js.read_text())
    meta["config"]["params"]["embed_dim"] = 9
    js.write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="not a valid energy-based SSC model"):
        EnergySubspaceClustering.load(path)
    path = fitted.save(tmp_path / "m2")
    st = path.with_suffix(".safetensors")
    t = load_file(str(st))
    t["labels"] = t["labels"] + 5  # out of [0, n_clusters)
    save_file(t, str(st))
    with pytest.raises(ValueError, match="labels"):
        EnergySubspaceClustering.load(path)


# ------------------------------------------------------------------------------------- bad input
def test_bad_input_errors(images, fitted):
    X = images[0]
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        EnergySubspaceClustering(**TINY).fit(X * 255)
    with pytest.raises(ValueError, match="image_shape"):
        EnergySubspaceClustering(**TINY).fit(X[:, :10, :10])
    with pytest.raises(ValueError, match="NaN|infinity|finite"):
        Xn = X.copy()
        Xn[0, 0, 0] = np.nan
        EnergySubspaceClustering(**TINY).fit(Xn)
    with pytest.raises(ValueError, match="n_clusters"):
        EnergySubspaceClustering(**dict(TINY, n_clusters=1)).fit(X)
    with pytest.raises(ValueError, match="coefficients"):
        EnergySubspaceClustering(**dict(TINY, coefficients="attention")).fit(X)
    with pytest.raises(ValueError, match="contrastive"):
        EnergySubspaceClustering(**dict(TINY, contrastive="byol")).fit(X)
    with pytest.raises(ValueError, match="backbone"):
        EnergySubspaceClustering(**dict(TINY, backbone="vit")).fit(X)
    with pytest.raises(ValueError, match="energy_hidden"):
        EnergySubspaceClustering(**dict(TINY, energy_hidden=(8,))).fit(X)
    with pytest.raises(ValueError, match="momentum"):
        EnergySubspaceClustering(**dict(TINY, momentum=1.0)).fit(X)
    with pytest.raises(ValueError, match="n_nonzero"):
        EnergySubspaceClustering(**dict(TINY, n_nonzero=len(X))).fit(X)
    with pytest.raises(ValueError, match="lambda1"):
        EnergySubspaceClustering(**dict(TINY, lambda1=-1.0)).fit(X)
    with pytest.raises(NotFittedError):
        EnergySubspaceClustering(**TINY).predict(X)
    with pytest.raises(ValueError, match="features|image_shape"):
        fitted.predict(np.zeros((2, 100), dtype=np.float32))
    with pytest.raises(TypeError):
        import scipy.sparse as sp

        EnergySubspaceClustering(**TINY).fit(sp.csr_matrix(X.reshape(len(X), -1)))


def test_module_bank_is_not_a_parameter():
    m = EnergyModule(1, 10, width=4, proj_hidden=8, embed_dim=4, energy_hidden=(4, 4))
    names = {n for n, p in m.named_parameters() if p.requires_grad}
    assert not any(n.startswith("encoder_k") for n in names)
    assert "bank" in m.state_dict()
