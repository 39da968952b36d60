"""ScatteringPCA: one fitted feature basis that travels with the model (issue 23).

Small images (12x12 -> 16x16, J=2) keep the scattering cheap; the maths is the same as for MNIST.
"""

import numpy as np
import pytest
import torch

from selfexpress.features import ScatteringPCA, scattering_features
from selfexpress.io import load_model_file, save_model_file
from selfexpress.models.senet import SENet

pytestmark = pytest.mark.usefixtures("one_torch_thread")

FT = dict(n_components=12, J=2, L=4, shape=(16, 16), cache_dir=False)
TINY = dict(hidden_sizes=(16, 16), embed_dim=16, n_iter=20, batch_size=20, gamma=50.0, affinity="symmetric",
            random_state=0, n_init=3)


def _images(n, seed, size=12):
    """Three 'classes' of blurry strokes: vertical, horizontal, diagonal, with noise."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 3
    ims = np.zeros((n, size, size))
    for i, c in enumerate(y):
        p = rng.integers(3, size - 3)
        if c == 0:
            ims[i, :, p] = 1.0
        elif c == 1:
            ims[i, p, :] = 1.0
        else:
            ims[i][np.eye(size, k=int(p) - size // 2, dtype=bool)] = 1.0
    ims += 0.15 * rng.random(ims.shape)
    return (np.clip(ims, 0, 1) * 255).astype(np.uint8), y


@pytest.fixture(scope="module")
def train():
    return _images(45, 0)


@pytest.fixture(scope="module")
def fitted_ft(train):
    ft = ScatteringPCA(**FT)
    Z = ft.fit_transform(train[0])
    return ft, Z


@pytest.fixture(scope="module")
def model(fitted_ft):
    ft, Z = fitted_ft
    m = SENet(3, **TINY).fit(Z)
    m.feature_transform_ = ft
    return m


def test_fit_transform_equals_transform_and_the_closed_form(fitted_ft, train):
    ft, Z = fitted_ft
    assert Z.shape == (45, 12) and Z.dtype == np.float32
    assert np.array_equal(ft.transform(train[0]), Z)  # one code path: bit-identical
    # closed form: scattering -> projection on the top eigenvectors of S^T S -> unit rows
    S = scattering_features(train[0], J=2, L=4, shape=(16, 16), verbose=False).astype(np.float64)
    evals, evecs = np.linalg.eigh(S.T @ S)
    top = evecs[:, ::-1][:, :12]
    P = S @ top
    P /= np.linalg.norm(P, axis=1, keepdims=True)
    assert np.allclose(np.abs(P), np.abs(Z), atol=1e-4)  # eigenvectors are defined up to sign
    assert np.allclose(ft.eigenvalues_, evals[::-1][:12], rtol=1e-6)
    assert np.allclose(np.linalg.norm(Z, axis=1), 1.0, atol=1e-5)


def test_transform_checks_image_size(fitted_ft):
    ft, _ = fitted_ft
    with pytest.raises(ValueError, match="fitted on 12x12 images"):
        ft.transform(np.zeros((3, 10, 10), dtype=np.uint8))
    assert ft.accepts_images(np.zeros((2, 12, 12))) and ft.accepts_images(np.zeros((2, 144)))
    assert not ft.accepts_images(np.zeros((2, 12)))


def test_a_basis_fitted_on_other_images_has_another_fingerprint(fitted_ft):
    ft, _ = fitted_ft
    other = ScatteringPCA(**FT).fit(_images(45, 1)[0])
    assert other.fingerprint_ != ft.fingerprint_
    again = ScatteringPCA(**FT).fit(_images(45, 0)[0])
    assert again.fingerprint_ == ft.fingerprint_


def test_saved_model_predicts_raw_images_as_features_in_the_training_basis(model, fitted_ft, tmp_path):
    ft, _ = fitted_ft
    test_images, _ = _images(30, 5)
    model.save(tmp_path / "m")
    loaded = SENet.load(tmp_path / "m")
    assert loaded.feature_transform_.fingerprint_ == ft.fingerprint_
    feats = ft.transform(test_images)
    assert np.array_equal(loaded.feature_transform_.transform(test_images), feats)  # bit-identical features
    assert np.array_equal(loaded.predict(test_images), model.predict(feats))
    assert np.array_equal(loaded.predict(feats), model.predict(feats))
    # flat rows of H*W pixels are images too
    assert np.array_equal(loaded.predict(test_images.reshape(30, -1)), model.predict(feats))


def test_standalone_transform_round_trip(fitted_ft, tmp_path):
    ft, Z = fitted_ft
    ft.save(tmp_path / "t")
    back = ScatteringPCA.load(tmp_path / "t")
    assert back.fingerprint_ == ft.fingerprint_ and back.image_shape_ == (12, 12)
    assert np.array_equal(back.components_, ft.components_)


def _tamper(path, name, fn):
    tensors, meta = load_model_file(path, kind="senet")
    tensors[name] = fn(tensors[name].clone())
    save_model_file(path, tensors, meta, kind="senet")


@pytest.mark.parametrize("name,fn,match", [
    ("features.components", lambda t: t[:, :-1].contiguous(), "expected float64"),
    ("features.components", lambda t: t.index_fill_(1, torch.tensor([0]), float("nan")), "NaN"),
    ("features.components", lambda t: t.mul_(1.0001), "does not match its fingerprint"),
    ("features.components", lambda t: t.float(), "expected float64"),
])
def test_a_tampered_basis_is_refused_on_load(model, tmp_path, name, fn, match):
    model.save(tmp_path / "m")
    _tamper(tmp_path / "m", name, fn)
    with pytest.raises(ValueError, match=match):
        SENet.load(tmp_path / "m")


def test_unexpected_transform_arrays_are_refused(model, tmp_path):
    model.save(tmp_path / "m")
    tensors, meta = load_model_file(tmp_path / "m", kind="senet")
    tensors["features.extra"] = torch.zeros(3, dtype=torch.float64)
    save_model_file(tmp_path / "m", tensors, meta, kind="senet")
    with pytest.raises(ValueError, match="unexpected arrays"):
        SENet.load(tmp_path / "m")


def test_wrong_input_to_a_feature_model_names_the_fix(model, fitted_ft):
    with pytest.raises(ValueError, match="12x12 images"):
        model.predict(np.zeros((4, 13), dtype=np.float32))
    bare = SENet(3, **TINY).fit(fitted_ft[1])  # fitted on features given directly: no transform
    with pytest.raises(ValueError, match="selfexpress features --basis-from"):
        bare.predict(np.zeros((4, 12, 12), dtype=np.uint8))


def test_cli_features_then_predict_refuses_another_basis(tmp_path, capsys):
    from selfexpress.cli import main

    tr, y = _images(45, 0)
    te, yt = _images(30, 5)
    np.save(tmp_path / "train.npy", tr)
    np.save(tmp_path / "test.npy", te)
    np.save(tmp_path / "y.npy", y)
    np.save(tmp_path / "yt.npy", yt)
    cache = str(tmp_path / "cache")
    assert main(["features", "--input", str(tmp_path / "train.npy"), "--output", str(tmp_path / "f.npy"),
                 "--n-components", "12", "-q", "--cache-dir", cache]) == 0
    assert main(["cluster", "--input", str(tmp_path / "f.npy"), "--labels", str(tmp_path / "y.npy"),
                 "--method", "senet", "--n-iter", "20", "--hidden-sizes", "16,16", "--embed-dim", "16", "-q",
                 "--save-model", str(tmp_path / "m")]) == 0
    loaded = SENet.load(tmp_path / "m")
    assert loaded.feature_transform_ is not None  # the features file brought its transform along
    # raw images through the model's transform == features made with --basis-from
    assert main(["predict", "--model", str(tmp_path / "m"), "--input", str(tmp_path / "test.npy"),
                 "--output", str(tmp_path / "p1")]) == 0
    assert main(["features", "--input", str(tmp_path / "test.npy"), "--basis-from", str(tmp_path / "m"),
                 "--output", str(tmp_path / "g.npy"), "-q", "--cache-dir", cache]) == 0
    assert main(["predict", "--model", str(tmp_path / "m"), "--input", str(tmp_path / "g.npy"),
                 "--output", str(tmp_path / "p2")]) == 0
    assert np.array_equal(np.load(tmp_path / "g.npy"), loaded.feature_transform_.transform(te))
    assert np.array_equal(np.load(tmp_path / "p1" / "labels.npy"), np.load(tmp_path / "p2" / "labels.npy"))
    capsys.readouterr()
    # features in a basis of their own: refused, exit 2, one line naming both fingerprints and the fix
    assert main(["features", "--input", str(tmp_path / "test.npy"), "--output", str(tmp_path / "h.npy"),
                 "--n-components", "12", "-q", "--cache-dir", cache]) == 0
    capsys.readouterr()
    assert main(["predict", "--model", str(tmp_path / "m"), "--input", str(tmp_path / "h.npy")]) == 2
    err = capsys.readouterr().err
    assert loaded.feature_transform_.fingerprint_ in err and "--basis-from" in err
    # bare feature vectors with no record of their basis: answered, with a warning naming the basis
    np.save(tmp_path / "bare.npy", np.load(tmp_path / "g.npy"))
    assert main(["predict", "--model", str(tmp_path / "m"), "--input", str(tmp_path / "bare.npy")]) == 0
    assert "no record of their basis" in capsys.readouterr().err


def test_predict_by_dataset_name_needs_a_stored_transform(tmp_path, capsys):
    from selfexpress.cli import main

    X = np.random.default_rng(0).standard_normal((40, 6)).astype(np.float32)
    np.save(tmp_path / "x.npy", X)
    assert main(["cluster", "--input", str(tmp_path / "x.npy"), "--n-clusters", "2", "--method", "senet",
                 "--n-iter", "5", "--hidden-sizes", "8", "--embed-dim", "8", "-q",
                 "--save-model", str(tmp_path / "m")]) == 0
    capsys.readouterr()
    assert main(["predict", "--model", str(tmp_path / "m"), "--dataset", "mnist-test"]) == 2
    assert "holds no feature transform" in capsys.readouterr().err


def test_scattering_pca_is_public():
    import selfexpress

    assert selfexpress.ScatteringPCA is ScatteringPCA and "ScatteringPCA" in selfexpress.__all__
