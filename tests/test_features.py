"""Scattering features, uncentred PCA and the on-disk feature cache (small inputs: seconds)."""

import logging
import os
from pathlib import Path

import numpy as np
import pytest

import selfexpress.features.cached as cached
from selfexpress.features import (
    PCAUncentred,
    dataset_features,
    pca_uncentred,
    prepare_images,
    scattering_features,
    scattering_pca,
)

REPO = Path(__file__).resolve().parents[1]
DATA_DIR = Path(os.environ.get("SELFEXPRESS_DATA_DIR", REPO.parent / "shared" / "data"))

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# a small scattering (25 maps of 4x4 = 400 features) keeps the cache tests fast
SMALL = dict(J=2, L=4, shape=(16, 16))


def _images(n, seed=0):
    rng = np.random.default_rng(seed)
    im = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
    im[:, :4] = 0  # MNIST-like empty border rows
    return im


def test_scattering_shape_and_map_normalisation():
    S = scattering_features(_images(4), verbose=False)
    assert S.shape == (4, 3472) and S.dtype == np.float32
    assert np.isfinite(S).all()
    maps = np.abs(S.reshape(4, 217, 16)).max(axis=2)
    np.testing.assert_allclose(maps, 1.0, rtol=1e-6)  # each map divided by its own max |.|


def test_scattering_zero_image_and_float_input():
    im = _images(3)
    im[1] = 0
    S = scattering_features(im, verbose=False)
    assert np.isfinite(S).all() and not S[1].any()  # all-zero maps stay zero (guarded division)
    Sf = scattering_features(im.astype(np.float32) / 255, verbose=False)
    assert np.abs(Sf - S).max() < 0.05  # float path differs from uint8 only by rounding to 1/255
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        scattering_features(im.astype(np.float32), verbose=False)
    with pytest.raises(ValueError, match="shape"):
        scattering_features(np.zeros((2, 3, 28, 28), np.uint8), verbose=False)


def test_resize_matches_pil_bilinear():
    PIL = pytest.importorskip("PIL.Image")
    im = _images(3)
    ref = np.stack([np.asarray(PIL.fromarray(x).resize((32, 32), PIL.BILINEAR)) for x in im])
    got = prepare_images(im).numpy()
    np.testing.assert_allclose(got, ref / 255.0, atol=1e-7)  # torchvision Resize on PIL + ToTensor, exactly


def _svd_reference(X, k, center=False):
    Xc = X - X.mean(axis=0) if center else X
    _, _, Vt = np.linalg.svd(Xc.astype(np.float64), full_matrices=False)
    return Xc @ Vt[:k].T


@pytest.mark.parametrize("n", [60, 8])  # n > d (primal Gram) and n < d (dual Gram)
@pytest.mark.parametrize("center", [False, True])
def test_pca_matches_svd_up_to_sign(n, center):
    rng = np.random.default_rng(3)
    X = (rng.normal(size=(n, 20)) * np.linspace(3, 0.1, 20) + 0.5).astype(np.float32)
    k = 5
    Z, model = pca_uncentred(X, k, center=center, block_size=7, return_model=True)
    ref = _svd_reference(X, k, center)
    assert Z.shape == (n, k) and Z.dtype == np.float32
    signs = np.sign((Z * ref).sum(axis=0))
    np.testing.assert_allclose(Z * signs, ref, rtol=1e-4, atol=1e-4)
    assert np.all(np.diff(model.eigenvalues_) <= 0)  # descending
    # out-of-sample projection with the same basis; a list of parts means their concatenation
    np.testing.assert_allclose(model.transform(X[:3]), Z[:3], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(PCAUncentred(k, center=center).fit_transform([X[:4], X[4:]]), Z, rtol=1e-4,
                               atol=1e-4)


def test_pca_validates():
    with pytest.raises(ValueError, match="n_components"):
        pca_uncentred(np.ones((4, 3)), 4)


def test_scattering_pca_cache_hit(tmp_path, monkeypatch, caplog):
    calls, saved = [], []
    real_scat, real_save = cached.scattering_features, cached.atomic_save_npy
    monkeypatch.setattr(cached, "scattering_features", lambda *a, **k: calls.append(1) or real_scat(*a, **k))
    monkeypatch.setattr(cached, "atomic_save_npy", lambda p, a: saved.append(Path(p)) or real_save(p, a))
    im = _images(12)
    kw = dict(n_components=4, cache_dir=tmp_path, cache_key="toy", verbose=False, **SMALL)
    Z1 = scattering_pca(im, **kw)
    assert len(calls) == 1 and Z1.shape == (12, 4)
    np.testing.assert_allclose(np.linalg.norm(Z1, axis=1), 1.0, rtol=1e-5)
    assert saved and all(p.parent.parent == tmp_path for p in saved)
    files = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file())
    assert not [f for f in files if f.endswith(".tmp")]  # atomic writes leave no temporaries
    assert any(f.startswith("scattering/toy.") and f.endswith(".npy") for f in files)
    assert any(f.startswith("pca/toy.") and f.endswith(".components.npy") for f in files)
    with caplog.at_level(logging.INFO, logger="selfexpress.features"):
        Z2, model = scattering_pca(im, return_model=True, **kw)
    assert len(calls) == 1, "scattering recomputed on a cache hit"
    assert "cache hit" in caplog.text
    np.testing.assert_array_equal(Z1, Z2)
    assert model.components_.shape == (4, 400)
    # a different PCA size reuses the cached scattering; different images miss
    Z3 = scattering_pca(im, **{**kw, "n_components": 3})
    assert len(calls) == 1 and Z3.shape == (12, 3)
    scattering_pca(_images(12, seed=5), **kw)
    assert len(calls) == 2


def test_scattering_pca_without_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SELFEXPRESS_CACHE_DIR", str(tmp_path / "env"))
    Z = scattering_pca(_images(6), n_components=3, cache_dir=False, verbose=False, **SMALL)
    assert Z.shape == (6, 3) and not (tmp_path / "env").exists()
    scattering_pca(_images(6), n_components=3, verbose=False, **SMALL)  # default dir from the environment
    assert (tmp_path / "env" / "pca").is_dir()


def test_corrupt_cache_is_recomputed(tmp_path):
    kw = dict(n_components=3, cache_dir=tmp_path, verbose=False, **SMALL)
    Z1 = scattering_pca(_images(6), **kw)
    for p in (tmp_path / "pca").glob("*.npy"):
        p.write_bytes(b"garbage")
    np.testing.assert_allclose(scattering_pca(_images(6), **kw), Z1, rtol=1e-5, atol=1e-6)


def test_dataset_features_shares_split_scattering(tmp_path, monkeypatch):
    """mnist-test, mnist-full and mnist-train share one cached scattering per split."""
    import gzip
    import struct

    def idx(arr):
        arr = np.asarray(arr, np.uint8)
        head = struct.pack(">I", 0x0800 + arr.ndim) + b"".join(struct.pack(">I", s) for s in arr.shape)
        return gzip.compress(head + arr.tobytes())

    d = tmp_path / "data" / "mnist"
    d.mkdir(parents=True)
    for prefix, n, seed in (("train", 6, 1), ("t10k", 4, 2)):
        (d / f"{prefix}-images-idx3-ubyte.gz").write_bytes(idx(_images(n, seed)))
        (d / f"{prefix}-labels-idx1-ubyte.gz").write_bytes(idx(np.arange(n) % 3))
    seen = []
    real = cached.scattering_features
    monkeypatch.setattr(cached, "scattering_features", lambda im, **k: seen.append(len(im)) or real(im, **k))
    kw = dict(data_dir=tmp_path / "data", n_components=3, cache_dir=tmp_path / "cache", verbose=False)
    Xt, yt = dataset_features("mnist-test", **kw)
    assert Xt.shape == (4, 3) and seen == [4]
    Xf, yf, timings = dataset_features("mnist-full", return_timings=True, **kw)
    assert Xf.shape == (10, 3) and seen == [4, 6]  # test split from the cache, train computed
    assert "scattering_load:mnist-test" in timings and "scattering:mnist-train" in timings
    np.testing.assert_array_equal(yf, np.r_[np.arange(6) % 3, np.arange(4) % 3])
    dataset_features("mnist-train", **kw)
    assert seen == [4, 6]
    names = sorted(p.name.split(".")[0] for p in (tmp_path / "cache" / "scattering").glob("*.npy"))
    assert names == ["mnist-test", "mnist-train"]
