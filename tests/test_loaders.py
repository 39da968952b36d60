"""File readers, the downloader and named datasets (no network; real data only when present)."""

import gzip
import hashlib
import os
import struct
from pathlib import Path

import numpy as np
import pytest
import scipy.io

from selfexpress.data import download_file, list_datasets, load_array, load_dataset, load_idx, load_labels, load_mat

REPO = Path(__file__).resolve().parents[1]
DATA_DIR = Path(os.environ.get("SELFEXPRESS_DATA_DIR", REPO.parent / "shared" / "data"))
needs_data = pytest.mark.skipif(not (DATA_DIR / "mnist").is_dir(),
                                reason=f"shared data folder {DATA_DIR} is absent (set SELFEXPRESS_DATA_DIR)")


def idx_bytes(arr, magic=None):
    arr = np.asarray(arr, dtype=np.uint8)
    magic = magic if magic is not None else 0x0800 + arr.ndim
    return struct.pack(">I", magic) + b"".join(struct.pack(">I", s) for s in arr.shape) + arr.tobytes()


def write(path, data, gz=False):
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


# --------------------------------------------------------------------------------------------------- idx
@pytest.mark.parametrize("gz", [False, True])
def test_idx_roundtrip(tmp_path, gz):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(5, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, size=5, dtype=np.uint8)
    ip = write(tmp_path / ("im-idx3-ubyte" + (".gz" if gz else "")), idx_bytes(images), gz)
    lp = write(tmp_path / ("lab-idx1-ubyte" + (".gz" if gz else "")), idx_bytes(labels), gz)
    assert int.from_bytes(idx_bytes(images)[:4], "big") == 2051
    assert int.from_bytes(idx_bytes(labels)[:4], "big") == 2049
    got = load_idx(ip)
    assert got.dtype == np.uint8 and got.shape == (5, 28, 28) and got.flags.writeable
    np.testing.assert_array_equal(got, images)
    np.testing.assert_array_equal(load_idx(lp), labels)
    lab = load_labels(lp)
    assert lab.dtype == np.int64
    np.testing.assert_array_equal(lab, labels)


@pytest.mark.parametrize("gz", [False, True])
def test_idx_truncated_names_file(tmp_path, gz):
    data = idx_bytes(np.zeros((4, 28, 28), np.uint8))
    p = write(tmp_path / "trunc-idx3-ubyte.gz", data[:-100], gz)
    with pytest.raises(ValueError, match="trunc-idx3-ubyte.gz.*truncated"):
        load_idx(p)


def test_idx_trailing_bytes_and_short_header(tmp_path):
    data = idx_bytes(np.zeros(3, np.uint8))
    with pytest.raises(ValueError, match="extra-idx1"):
        load_idx(write(tmp_path / "extra-idx1", data + b"\0"))
    with pytest.raises(ValueError, match="short-idx3"):
        load_idx(write(tmp_path / "short-idx3", idx_bytes(np.zeros((2, 2, 2), np.uint8))[:9]))


def test_idx_wrong_magic(tmp_path):
    p = write(tmp_path / "bad-idx3-ubyte", b"\x12\x34\x56\x78" + bytes(100))
    with pytest.raises(ValueError, match="bad-idx3-ubyte.*magic"):
        load_idx(p)


def test_idx_corrupt_gzip(tmp_path):
    blob = gzip.compress(idx_bytes(np.arange(200, dtype=np.uint8)))
    p = write(tmp_path / "corrupt-idx1.gz", blob[: len(blob) // 2])
    with pytest.raises(ValueError, match="corrupt-idx1.gz"):
        load_idx(p)


def test_idx_missing_file(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        load_idx(tmp_path / "nope-idx1-ubyte")


# ---------------------------------------------------------------------------------------- mat / npy / csv
def test_load_mat(tmp_path):
    X = np.arange(12.0).reshape(4, 3)
    y = np.array([[1, 2, 1, 2]])
    p = tmp_path / "d.mat"
    scipy.io.savemat(p, {"fea": X, "gnd": y})
    np.testing.assert_array_equal(load_mat(p), X)  # the single 2-D numeric array (gnd is a vector)
    X2, lab = load_mat(p, labels_key="gnd")
    np.testing.assert_array_equal(lab, [1, 2, 1, 2])
    np.testing.assert_array_equal(load_labels(p, key="gnd"), [1, 2, 1, 2])
    scipy.io.savemat(p, {"A": X, "B": X.T})
    with pytest.raises(ValueError, match=r"2 2-D numeric arrays.*A \(4, 3\).*B \(3, 4\)"):
        load_mat(p)
    np.testing.assert_array_equal(load_mat(p, key="B"), X.T)
    with pytest.raises(ValueError, match="no variable 'C'"):
        load_mat(p, key="C")
    bad = write(tmp_path / "bad.mat", b"not a mat file at all" * 10)
    with pytest.raises(ValueError, match="bad.mat"):
        load_mat(bad)


def test_load_npy(tmp_path):
    X = np.random.default_rng(0).normal(size=(5, 3)).astype(np.float32)
    p = tmp_path / "x.npy"
    np.save(p, X)
    np.testing.assert_array_equal(load_array(p), X)
    mm = load_array(p, mmap_mode="r")
    assert isinstance(mm, np.memmap)
    np.testing.assert_array_equal(mm, X)
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="obj.npy.*pickle"):
        load_array(tmp_path / "obj.npy")
    with pytest.raises(ValueError, match="unsupported"):
        load_array(write(tmp_path / "x.bin", b"123"))


def test_load_csv_txt(tmp_path):
    p = write(tmp_path / "x.csv", b"1,2,3\n4,5,6\n")
    np.testing.assert_array_equal(load_array(p), [[1, 2, 3], [4, 5, 6]])
    p = write(tmp_path / "x.txt", b"# comment\n1 2\n3 4\n\n")
    np.testing.assert_array_equal(load_array(p), [[1, 2], [3, 4]])
    p = write(tmp_path / "h.csv", b"a,b\n1,2\n")
    np.testing.assert_array_equal(load_array(p, skiprows=1), [[1, 2]])
    np.testing.assert_array_equal(load_labels(write(tmp_path / "y.txt", b"0\n1\n1\n")), [0, 1, 1])
    with pytest.raises(ValueError, match="integer"):
        load_labels(write(tmp_path / "yf.txt", b"0.5\n1\n"))


def test_ragged_csv_names_file_and_line(tmp_path):
    p = write(tmp_path / "ragged.csv", b"1,2,3\n4,5,6\n7,8\n")
    with pytest.raises(ValueError, match=r"ragged.csv: line 3 has 2 fields.*3"):
        load_array(p)
    p = write(tmp_path / "word.csv", b"1,2\n3,x\n")
    with pytest.raises(ValueError, match="word.csv"):
        load_array(p)


# -------------------------------------------------------------------------------------------- download
def test_download_file_url(tmp_path):
    src = write(tmp_path / "src.bin", os.urandom(3000))
    digest = hashlib.sha256(src.read_bytes()).hexdigest()
    dest = tmp_path / "out" / "dl.bin"
    got = download_file(src.as_uri(), dest, sha256=digest, verbose=False)
    assert got == dest and dest.read_bytes() == src.read_bytes()
    md5 = hashlib.md5(src.read_bytes()).hexdigest()
    assert download_file(src.as_uri(), dest, md5=md5, verbose=False) == dest  # existing + matching: kept
    assert [p.name for p in dest.parent.iterdir()] == ["dl.bin"]  # no temporary left behind


def test_download_checksum_mismatch(tmp_path):
    src = write(tmp_path / "src.bin", b"hello world")
    dest = tmp_path / "out" / "dl.bin"
    with pytest.raises(ValueError, match="checksum mismatch.*sha256"):
        download_file(src.as_uri(), dest, sha256="0" * 64, verbose=False)
    assert not dest.exists()
    assert list(dest.parent.iterdir()) == []  # the partial file was removed


def test_download_missing_source(tmp_path):
    with pytest.raises(OSError, match="could not download"):
        download_file((tmp_path / "absent.bin").as_uri(), tmp_path / "x.bin", verbose=False)


# ---------------------------------------------------------------------------------------------- datasets
def test_list_and_unknown():
    names = list_datasets()
    for n in ["mnist-full", "mnist-train", "mnist-test", "mnist-10k", "fashion-mnist-full", "emnist-letters",
              "cifar10", "digits"]:
        assert n in names
    with pytest.raises(ValueError, match="unknown dataset"):
        load_dataset("nope")


def test_missing_files_message(tmp_path):
    with pytest.raises(ValueError, match=r"t10k-images-idx3-ubyte.gz.*download=True"):
        load_dataset("mnist-test", data_dir=tmp_path)
    with pytest.raises(ValueError, match=r"test_batch.bin.*download=True"):
        load_dataset("cifar10-test", data_dir=tmp_path)


def test_dataset_from_written_files(tmp_path, monkeypatch):
    rng = np.random.default_rng(1)
    d = tmp_path / "fashion-mnist"
    d.mkdir()
    for prefix, n in (("train", 6), ("t10k", 4)):
        write(d / f"{prefix}-images-idx3-ubyte.gz", idx_bytes(rng.integers(0, 256, (n, 28, 28))), gz=True)
        write(d / f"{prefix}-labels-idx1-ubyte", idx_bytes(rng.integers(0, 10, n)))  # un-gzipped also found
    monkeypatch.setenv("SELFEXPRESS_DATA_DIR", str(tmp_path))
    full = load_dataset("fashion-mnist-full")
    test = load_dataset("fashion-mnist-test")
    assert full.images.shape == (10, 28, 28) and full.split == "full"
    assert full.splits == {"train": (0, 6), "test": (6, 10)}
    np.testing.assert_array_equal(full.images[6:], test.images)
    np.testing.assert_array_equal(full.labels[6:], test.labels)


def test_emnist_letters_and_cifar_from_written_files(tmp_path):
    rng = np.random.default_rng(2)
    d = tmp_path / "emnist"
    d.mkdir()
    im = rng.integers(0, 256, (3, 28, 28))
    write(d / "emnist-letters-test-images-idx3-ubyte.gz", idx_bytes(im), gz=True)
    write(d / "emnist-letters-test-labels-idx1-ubyte.gz", idx_bytes([1, 26, 5]), gz=True)
    ds = load_dataset("emnist-letters-test", data_dir=tmp_path)
    np.testing.assert_array_equal(ds.labels, [0, 25, 4])
    np.testing.assert_array_equal(ds.images, im.transpose(0, 2, 1))  # stored transposed upstream
    c = tmp_path / "cifar10" / "cifar-10-batches-bin"
    c.mkdir(parents=True)
    rec = rng.integers(0, 256, (2, 3073), dtype=np.uint8)
    rec[:, 0] = [3, 7]
    (c / "test_batch.bin").write_bytes(rec.tobytes())
    ds = load_dataset("cifar10-test", data_dir=tmp_path)
    assert ds.images.shape == (2, 32, 32, 3) and ds.images.dtype == np.uint8
    np.testing.assert_array_equal(ds.labels, [3, 7])
    np.testing.assert_array_equal(ds.images[1, :, :, 2], rec[1, 1 + 2048:].reshape(32, 32))
    (c / "test_batch.bin").write_bytes(rec.tobytes()[:-5])
    with pytest.raises(ValueError, match="test_batch.bin.*truncated"):
        load_dataset("cifar10-test", data_dir=tmp_path)


def test_digits():
    ds = load_dataset("digits")
    assert ds.X.shape == (1797, 64) and ds.images.shape == (1797, 8, 8) and ds.n_classes == 10
    assert 0 <= ds.X.min() and ds.X.max() <= 1


@needs_data
def test_real_mnist_test():
    ds = load_dataset("mnist-test", data_dir=DATA_DIR)
    assert ds.images.shape == (10000, 28, 28) and ds.images.dtype == np.uint8
    np.testing.assert_array_equal(np.bincount(ds.labels),
                                  [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009])


@needs_data
def test_real_mnist_10k_and_fashion_test():
    ds = load_dataset("mnist-10k", data_dir=DATA_DIR)
    np.testing.assert_array_equal(np.bincount(ds.labels), [1001, 1127, 991, 1032, 980, 863, 1014, 1070, 944, 978])
    fm = load_dataset("fashion-mnist-test", data_dir=DATA_DIR)
    assert fm.images.shape == (10000, 28, 28)
    np.testing.assert_array_equal(np.bincount(fm.labels), [1000] * 10)
