"""Named benchmark datasets: ``load_dataset("mnist-full")`` and friends.

Files are looked up under a data folder (``data_dir=``, else the environment variable
``SELFEXPRESS_DATA_DIR``, else ``~/.cache/selfexpress/data``), one sub-folder per family::

    <data_dir>/mnist/          train-images-idx3-ubyte.gz  train-labels-idx1-ubyte.gz
                               t10k-images-idx3-ubyte.gz   t10k-labels-idx1-ubyte.gz
    <data_dir>/fashion-mnist/  (same four names)
    <data_dir>/mnist-10k/      images-idx3-ubyte.gz  labels-idx1-ubyte.gz   (local subset, no download)
    <data_dir>/emnist/         emnist-letters-train-images-idx3-ubyte.gz ... (from NIST's gzip.zip)
    <data_dir>/cifar10/cifar-10-batches-bin/   data_batch_1.bin ... data_batch_5.bin  test_batch.bin

A file is also found directly in ``data_dir`` (so ``data_dir`` may point at the family folder) and
without its ``.gz`` suffix.  Missing files raise ``ValueError`` naming the file, unless
``download=True``, which fetches them from the public mirrors with checksum verification.

Nothing is unpickled: CIFAR-10 is read from its *binary* distribution.
"""

from __future__ import annotations

import os
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .loaders import _copy_atomic, download_file, load_idx

__all__ = ["Dataset", "load_dataset", "list_datasets", "default_data_dir", "dataset_missing_files", "DATASETS"]


@dataclass
class Dataset:
    """A loaded dataset.

    ``images`` holds image data ``(n, H, W)`` (``uint8`` for the MNIST family, ``(n, 32, 32, 3)``
    ``uint8`` for CIFAR-10, ``float32`` in [0, 1] for ``digits``); ``X`` holds a ``(n, d)`` feature
    matrix when the dataset is not images (or both, for ``digits``).  ``labels`` is ``int64``.
    ``split`` is ``"train"``, ``"test"`` or ``"full"`` (train first, then test); ``splits`` maps
    each part to its ``(start, stop)`` row range.
    """

    name: str
    split: str
    labels: np.ndarray
    images: np.ndarray | None = None
    X: np.ndarray | None = None
    splits: dict = field(default_factory=dict)
    classes: list | None = None

    @property
    def n_samples(self) -> int:
        return int(self.labels.shape[0])

    @property
    def n_classes(self) -> int:
        return int(np.unique(self.labels).size)

    @property
    def data(self) -> np.ndarray:
        """``X`` if present, else the images flattened to ``(n, H*W[*C])`` (dtype unchanged)."""
        if self.X is not None:
            return self.X
        return self.images.reshape(self.images.shape[0], -1)

    def __repr__(self):
        shape = self.images.shape if self.images is not None else self.X.shape
        return f"Dataset(name={self.name!r}, split={self.split!r}, shape={shape}, n_classes={self.n_classes})"


# ----------------------------------------------------------------------------------------------- sources
_MNIST_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}

# family -> folder, mirrors (tried in order), per-file checksums of the *distributed* files
_FAMILIES = {
    "mnist": {
        "folder": "mnist",
        "mirrors": ["https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/"],
        "files": _MNIST_FILES,
        "md5": {
            "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
            "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
            "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
            "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
        },
        "sha256": {
            "train-images-idx3-ubyte.gz": "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
            "train-labels-idx1-ubyte.gz": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
            "t10k-images-idx3-ubyte.gz": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
            "t10k-labels-idx1-ubyte.gz": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
        },
        "n": {"train": 60000, "test": 10000},
    },
    "fashion-mnist": {
        "folder": "fashion-mnist",
        "mirrors": ["http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"],
        "files": _MNIST_FILES,
        # upstream (zalandoresearch) md5s; Debian's recompressed copies differ in bytes, not in payload
        "md5": {
            "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
            "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
            "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
            "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
        },
        "sha256": {},
        "n": {"train": 60000, "test": 10000},
        "classes": ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                    "Ankle boot"],
    },
    "mnist-10k": {
        "folder": "mnist-10k",
        "mirrors": [],  # a local subset (see the shared data README); not downloadable
        "files": {"all": ("images-idx3-ubyte.gz", "labels-idx1-ubyte.gz")},
        "md5": {},
        "sha256": {},
        "n": {"all": 10000},
    },
}

_EMNIST_ZIP_URL = "https://biometrics.nist.gov/cs_links/EMNIST/gzip.zip"
_EMNIST_ZIP_MD5 = "58c8d27c78d21e728a6bc7b3cc06412e"
_CIFAR_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"
_CIFAR_MD5 = "c32a1d4ab5d03f1284b67883e8d87530"
_CIFAR_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
_LETTERS = [chr(ord("a") + i) for i in range(26)]

# public name -> (family, parts)
DATASETS = {
    "mnist-full": ("mnist", ("train", "test")),
    "mnist-train": ("mnist", ("train",)),
    "mnist-test": ("mnist", ("test",)),
    "mnist-10k": ("mnist-10k", ("all",)),
    "fashion-mnist-full": ("fashion-mnist", ("train", "test")),
    "fashion-mnist-train": ("fashion-mnist", ("train",)),
    "fashion-mnist-test": ("fashion-mnist", ("test",)),
    "emnist-letters": ("emnist-letters", ("train", "test")),
    "emnist-letters-train": ("emnist-letters", ("train",)),
    "emnist-letters-test": ("emnist-letters", ("test",)),
    "emnist-lowercase": ("emnist-lowercase", ("train", "test")),
    "cifar10": ("cifar10", ("train", "test")),
    "cifar10-train": ("cifar10", ("train",)),
    "cifar10-test": ("cifar10", ("test",)),
    "digits": ("digits", ("all",)),
}

_DESCRIPTIONS = {
    "mnist-full": "MNIST train+test, 70,000 x 28x28 uint8, train first",
    "mnist-train": "MNIST train, 60,000 x 28x28",
    "mnist-test": "MNIST test (t10k), 10,000 x 28x28",
    "mnist-10k": "a local 10,000-digit MNIST subset (shared data only)",
    "fashion-mnist-full": "Fashion-MNIST train+test, 70,000 x 28x28",
    "fashion-mnist-train": "Fashion-MNIST train, 60,000",
    "fashion-mnist-test": "Fashion-MNIST test, 10,000",
    "emnist-letters": "EMNIST letters train+test, 145,600 x 28x28, labels 0..25 = a..z",
    "emnist-letters-train": "EMNIST letters train, 124,800",
    "emnist-letters-test": "EMNIST letters test, 20,800",
    "emnist-lowercase": "EMNIST byclass classes 36..61 (lowercase a..z), train+test = 190,998 (SENet benchmark)",
    "cifar10": "CIFAR-10 train+test, 60,000 x 32x32x3 uint8 (binary distribution)",
    "cifar10-train": "CIFAR-10 train, 50,000",
    "cifar10-test": "CIFAR-10 test, 10,000",
    "digits": "scikit-learn digits, 1,797 x 8x8 (bundled, no file)",
}


def list_datasets() -> list[str]:
    """Names accepted by :func:`load_dataset`."""
    return list(DATASETS)


def describe_datasets() -> dict:
    """``name -> one-line description``."""
    return dict(_DESCRIPTIONS)


def default_data_dir() -> Path:
    """``$SELFEXPRESS_DATA_DIR`` if set, else ``~/.cache/selfexpress/data``."""
    env = os.environ.get("SELFEXPRESS_DATA_DIR")
    return Path(env).expanduser() if env else Path("~/.cache/selfexpress/data").expanduser()


# ------------------------------------------------------------------------------------------- file lookup
def _candidates(root: Path, folder: str, filename: str):
    names = [filename] + ([filename[:-3]] if filename.endswith(".gz") else [])
    for d in (root / folder, root):
        for n in names:
            yield d / n


def _find(root: Path, folder: str, filename: str):
    for p in _candidates(root, folder, filename):
        if p.is_file():
            return p
    return None


def _missing(name, root: Path, folder: str, filename: str, downloadable: bool):
    where = root / folder
    msg = (f"dataset {name!r}: file {filename} not found in {where} (also looked in {root}). ")
    if downloadable:
        msg += ("Pass download=True to fetch it, or point data_dir= / --data-dir / SELFEXPRESS_DATA_DIR at "
                "a folder that holds it.")
    else:
        msg += "This dataset cannot be downloaded; point data_dir= / --data-dir / SELFEXPRESS_DATA_DIR at a " \
               "folder that holds it."
    return ValueError(msg)


def _fetch(urls, dest: Path, *, md5=None, sha256=None, verbose=True):
    errors = []
    for url in urls:
        try:
            return download_file(url, dest, sha256=sha256, md5=md5, verbose=verbose)
        except OSError as exc:
            errors.append(str(exc))
    raise OSError(f"could not download {dest.name}: " + "; ".join(errors))


def _idx_pair(name, root, folder, img_name, lab_name, fam, download, verbose):
    paths = []
    for fname in (img_name, lab_name):
        p = _find(root, folder, fname)
        if p is None:
            if not (download and fam["mirrors"]):
                raise _missing(name, root, folder, fname, bool(fam["mirrors"]))
            p = _fetch([m + fname for m in fam["mirrors"]], root / folder / fname,
                       md5=fam["md5"].get(fname), sha256=fam["sha256"].get(fname), verbose=verbose)
        paths.append(p)
    images, labels = load_idx(paths[0]), load_idx(paths[1])
    if images.ndim != 3 or labels.ndim != 1:
        raise ValueError(f"{paths[0]} / {paths[1]}: expected idx3 images and idx1 labels, got shapes "
                         f"{images.shape} and {labels.shape}")
    if images.shape[0] != labels.shape[0]:
        raise ValueError(f"{paths[0]} holds {images.shape[0]} images but {paths[1]} holds {labels.shape[0]} labels")
    return images, labels.astype(np.int64)


# --------------------------------------------------------------------------------------------- EMNIST
def _emnist_files(split_name, part):
    return (f"emnist-{split_name}-{part}-images-idx3-ubyte.gz", f"emnist-{split_name}-{part}-labels-idx1-ubyte.gz")


def _emnist_download(root: Path, wanted, verbose):
    folder = root / "emnist"
    zpath = _fetch([_EMNIST_ZIP_URL], folder / "gzip.zip", md5=_EMNIST_ZIP_MD5, verbose=verbose)
    with zipfile.ZipFile(zpath) as zf:
        members = {Path(m).name: m for m in zf.namelist()}
        for fname in wanted:
            if fname not in members:
                raise ValueError(f"{zpath} has no member {fname}")
            fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{fname}.", suffix=".part")
            os.close(fd)
            try:
                with zf.open(members[fname]) as src, open(tmp, "wb") as out:
                    while chunk := src.read(1 << 20):
                        out.write(chunk)
                _copy_atomic(Path(tmp), folder / fname)
            finally:
                os.unlink(tmp)


def _load_emnist(name, split_name, parts, root, download, verbose):
    out_images, out_labels = [], []
    wanted = [f for part in parts for f in _emnist_files(split_name, part)]
    if download and any(_find(root, "emnist", f) is None for f in wanted):
        _emnist_download(root, [f for f in wanted if _find(root, "emnist", f) is None], verbose)
    for part in parts:
        img, lab = _emnist_files(split_name, part)
        fam = {"mirrors": [_EMNIST_ZIP_URL], "md5": {}, "sha256": {}}
        images, labels = _idx_pair(name, root, "emnist", img, lab, fam, False, verbose)
        # EMNIST stores images transposed relative to MNIST; flip them upright
        out_images.append(np.ascontiguousarray(images.transpose(0, 2, 1)))
        out_labels.append(labels)
    return out_images, out_labels


# --------------------------------------------------------------------------------------------- CIFAR-10
_CIFAR_BATCHES = {"train": [f"data_batch_{i}.bin" for i in range(1, 6)], "test": ["test_batch.bin"]}
_CIFAR_RECORD = 1 + 3 * 32 * 32


def _read_cifar_bin(path: Path):
    raw = np.fromfile(path, dtype=np.uint8)
    if raw.size == 0 or raw.size % _CIFAR_RECORD:
        raise ValueError(f"{path} is truncated or not a CIFAR-10 binary batch: {raw.size} bytes is not a multiple "
                         f"of the {_CIFAR_RECORD}-byte record")
    rec = raw.reshape(-1, _CIFAR_RECORD)
    labels = rec[:, 0].astype(np.int64)
    if labels.max() > 9:
        raise ValueError(f"{path} is corrupt: label byte {labels.max()} > 9")
    images = rec[:, 1:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)  # CHW -> HWC
    return np.ascontiguousarray(images), labels


def _cifar_download(root: Path, verbose):
    folder = root / "cifar10"
    tpath = _fetch([_CIFAR_URL], folder / "cifar-10-binary.tar.gz", md5=_CIFAR_MD5, verbose=verbose)
    with tarfile.open(tpath, "r:gz") as tf:
        for member in tf.getmembers():
            base = Path(member.name).name
            if member.isfile() and base.endswith(".bin"):
                fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{base}.", suffix=".part")
                os.close(fd)
                try:
                    with tf.extractfile(member) as src, open(tmp, "wb") as out:
                        while chunk := src.read(1 << 20):
                            out.write(chunk)
                    _copy_atomic(Path(tmp), folder / "cifar-10-batches-bin" / base)
                finally:
                    os.unlink(tmp)


def _load_cifar(name, parts, root, download, verbose):
    def locate(fname):
        for d in (root / "cifar10" / "cifar-10-batches-bin", root / "cifar-10-batches-bin", root):
            if (d / fname).is_file():
                return d / fname
        return None

    needed = [f for part in parts for f in _CIFAR_BATCHES[part]]
    if any(locate(f) is None for f in needed):
        if not download:
            miss = next(f for f in needed if locate(f) is None)
            raise _missing(name, root, "cifar10/cifar-10-batches-bin", miss, True)
        _cifar_download(root, verbose)
    out_images, out_labels = [], []
    for part in parts:
        ims, labs = zip(*(_read_cifar_bin(locate(f)) for f in _CIFAR_BATCHES[part]))
        out_images.append(np.concatenate(ims))
        out_labels.append(np.concatenate(labs))
    return out_images, out_labels


# ------------------------------------------------------------------------------------------------ main
def dataset_missing_files(name, data_dir=None) -> list:
    """The files ``name`` needs that are not under ``data_dir`` (default :func:`default_data_dir`); ``[]`` when it
    can be loaded without a download (``digits`` needs no file). Looks only; reads nothing."""
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose one of: {', '.join(DATASETS)}")
    family, parts = DATASETS[name]
    root = Path(data_dir).expanduser() if data_dir is not None else default_data_dir()
    if family == "digits":
        return []
    if family in _FAMILIES:
        fam = _FAMILIES[family]
        wanted = [(fam["folder"], f) for part in parts for f in fam["files"][part]]
    elif family in ("emnist-letters", "emnist-lowercase"):
        split = "letters" if family == "emnist-letters" else "byclass"
        wanted = [("emnist", f) for part in parts for f in _emnist_files(split, part)]
    else:  # cifar10
        dirs = (root / "cifar10" / "cifar-10-batches-bin", root / "cifar-10-batches-bin", root)
        return [f for part in parts for f in _CIFAR_BATCHES[part] if not any((d / f).is_file() for d in dirs)]
    return [f for folder, f in wanted if _find(root, folder, f) is None]


def load_dataset(name, data_dir=None, download=False, verbose=True) -> Dataset:
    """Load a named dataset (see :func:`list_datasets`) as a :class:`Dataset`.

    ``*-full`` names (and ``emnist-letters``, ``emnist-lowercase``, ``cifar10``) concatenate the
    official train and test splits, train first; ``Dataset.splits`` gives each part's row range.
    Raises ``ValueError`` for an unknown name or a missing file (which names the file and says to
    pass ``download=True`` or a data folder).
    """
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose one of: {', '.join(DATASETS)}")
    family, parts = DATASETS[name]
    root = Path(data_dir).expanduser() if data_dir is not None else default_data_dir()
    classes = None
    if family == "digits":
        from sklearn.datasets import load_digits

        d = load_digits()
        images = (d.images / 16.0).astype(np.float32)
        return Dataset(name=name, split="all", labels=d.target.astype(np.int64), images=images,
                       X=images.reshape(len(images), -1), splits={"all": (0, len(images))},
                       classes=[str(i) for i in range(10)])
    if family in _FAMILIES:
        fam = _FAMILIES[family]
        ims, labs = [], []
        for part in parts:
            img_name, lab_name = fam["files"][part]
            images, labels = _idx_pair(name, root, fam["folder"], img_name, lab_name, fam, download, verbose)
            ims.append(images)
            labs.append(labels)
        classes = fam.get("classes", [str(i) for i in range(10)])
    elif family == "emnist-letters":
        ims, labs = _load_emnist(name, "letters", parts, root, download, verbose)
        labs = [lab - 1 for lab in labs]  # distributed as 1..26
        classes = _LETTERS
    elif family == "emnist-lowercase":
        ims, labs = _load_emnist(name, "byclass", parts, root, download, verbose)
        for i, (im, lab) in enumerate(zip(ims, labs)):
            keep = lab >= 36  # byclass: 0-9 digits, 10-35 upper case, 36-61 lower case
            ims[i], labs[i] = im[keep], lab[keep] - 36
        classes = _LETTERS
    elif family == "cifar10":
        ims, labs = _load_cifar(name, parts, root, download, verbose)
        classes = _CIFAR_CLASSES
    else:  # pragma: no cover - registry and branches out of sync
        raise AssertionError(family)

    splits, start = {}, 0
    for part, lab in zip(parts, labs):
        splits[part] = (start, start + len(lab))
        start += len(lab)
    images = ims[0] if len(ims) == 1 else np.concatenate(ims)
    labels = labs[0] if len(labs) == 1 else np.concatenate(labs)
    split = parts[0] if len(parts) == 1 else "full"
    return Dataset(name=name, split=split, labels=labels, images=images, splits=splits, classes=classes)
