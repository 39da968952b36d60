"""Every bad input tried against the seven estimators, the loaders, model files, checkpoints and the CLI.

``CASES`` is the one list: :func:`test_bad_input` runs every (case, target) pair and checks the exception type
and message (for the CLI: exit status 2 and a one-line message without traceback); :func:`test_docs_table_is_current`
renders the same runs into the table of ``docs/reliability.md`` and compares it with the file, so the table
cannot drift from the tests. After a deliberate change run ``python tests/test_reliability.py`` to rewrite it.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import json
import pickle
import re
import sys
import warnings
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from sklearn.exceptions import NotFittedError

from selfexpress import _memory
from selfexpress._validation import DuplicatePointsWarning
from selfexpress.cli import main
from selfexpress.data import load_dataset, make_union_of_subspaces
from selfexpress.io import load_model_file, save_model_file
from selfexpress.models.dscnet import DSCNet
from selfexpress.models.energy import EnergySubspaceClustering
from selfexpress.models.ensc import ElasticNetSubspaceClustering
from selfexpress.models.ncsc import NCSC
from selfexpress.models.senet import SENet
from selfexpress.models.ssc_omp import SSCOMP
from selfexpress.models.sscn import SSCN
from selfexpress.pipeline import load_input

sys.path.insert(0, str(Path(__file__).parent))
from docs_tables import cell, read_block, write_block  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")

#: the estimators that normalise their input (coefficients -> graph -> spectral clustering)
SHALLOW = ("EnSC", "SSC-OMP", "SENet")
#: the auto-encoder models, on the same feature vectors (identity auto-encoder; they also take images)
DEEP = ("NCSC", "SSCN", "DSC-Net")
#: the energy model takes images only: its data are 30 flattened 8 x 8 images (pixels in [0, 1])
PIXELS = ("Energy",)
VECTORS = SHALLOW + DEEP
ESTIMATORS = VECTORS + PIXELS
SENET_TINY = dict(hidden_sizes=(8,), embed_dim=8, n_iter=3, batch_size=10, block_size=16, affinity="symmetric")
TINY = {
    "NCSC": (NCSC, dict(n_epochs=2, batch_size=30, classifier_channels=(8, 8))),
    "SSCN": (SSCN, dict(max_cluster_dim=2, n_epochs=2, batch_size=30, n_epochs_clf=1, batch_size_clf=30,
                        steps_per_batch=1, n_neighbors=5, n_init=2)),
    "DSC-Net": (DSCNet, dict(n_epochs=2, n_neighbors=5, n_init=2)),
    "Energy": (EnergySubspaceClustering, dict(image_shape=(8, 8), width=4, proj_hidden=16, embed_dim=8,
                                              energy_hidden=(8, 8), n_epochs_pretrain=1, n_epochs=1, batch_size=16,
                                              n_dictionary=32, bn_splits=2, n_nonzero=10, block_size=16, n_init=2)),
}


def make(target, **params):
    """A small, fast estimator of each kind (3 clusters)."""
    base = {"n_clusters": 3, "random_state": 0}
    if target == "EnSC":
        return ElasticNetSubspaceClustering(**{**base, "n_init": 2, **params})
    if target == "SSC-OMP":
        return SSCOMP(**{**base, "n_init": 2, "n_nonzero": 2, **params})
    if target == "SENet":
        return SENet(**{**base, "n_init": 2, **SENET_TINY, **params})
    cls, tiny = TINY[target]
    return cls(**{**base, **tiny, **params})


@lru_cache(maxsize=None)
def _data(pixels=False):
    if pixels:  # three kinds of 8 x 8 images (horizontal bars, vertical bars, a blob) with noise, flattened
        rng = np.random.default_rng(0)
        yy, xx = np.mgrid[:8, :8]
        kinds = [(yy % 2 == 0), (xx % 2 == 0), np.hypot(yy - 3.5, xx - 3.5) < 2.5]
        X = np.stack([np.clip(0.7 * kinds[k] + 0.3 * rng.random((8, 8)), 0, 1).ravel()
                      for k in range(3) for _ in range(10)])
        return X, np.repeat(np.arange(3), 10)
    X, y, _ = make_union_of_subspaces(3, 2, 6, 10, random_state=0)  # 30 points in R^6, 3 lines... planes
    return np.asarray(X, dtype=np.float64), y


#: the target of the case being run (``data()`` gives the energy model images)
_TARGET = None


def data():
    X, y = _data(_TARGET in PIXELS)
    return X.copy(), y.copy()


def as_images(X):
    """``X`` as a 3-D stack of images: (n, 2, 3) for the 6 features, (n, 8, 8) for the pixels."""
    return X.reshape(len(X), *((2, 3) if X.shape[1] == 6 else (8, 8)))


@lru_cache(maxsize=None)
def fitted_senet():
    return make("SENet").fit(data()[0])


@lru_cache(maxsize=None)
def fitted(target):
    return fitted_senet() if target == "SENet" else make(target).fit(data()[0])


def cli(*argv):
    """Run the CLI in-process; returns ``(exit status, stdout, stderr)``."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main([str(a) for a in argv])
    return rc, out.getvalue(), err.getvalue()


class _Exploit:
    """Unpickling this writes ``marker``: a stand-in for arbitrary code execution."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (Path.write_text, (Path(self.marker), "code was executed"))


# ----------------------------------------------------------------------------------------------- cases
@dataclass(frozen=True)
class Case:
    id: str
    what: str  # the input tried, as a user would describe it
    targets: tuple
    act: Callable  # act(target, tmp) -> value; CLI targets return (rc, stdout, stderr)
    expect: type | None  # exception type for library targets (CLI: exit status 2); None: it succeeds
    match: str  # regex searched in the message (CLI: in stderr)
    warns: type | None = None
    check: Callable | None = None  # check(value, target, tmp): more assertions (run after errors too)
    memory: int | None = None  # available memory patched to this many bytes (CLI: SELFEXPRESS_MAX_MEMORY)


def fit(X, **params):
    """Fit each estimator on ``X()`` with ``params``; returns labels_."""
    def act(target, tmp):
        return make(target, **params).fit(X()).labels_
    return act


def X_(edit=None):
    """The clean 30 x 6 data, optionally edited: ``edit(X) -> X``."""
    def build():
        X = data()[0]
        return X if edit is None else edit(X)
    return build


def _set(X, idx, value):
    X[idx] = value
    return X


def same_labels_as_clean(value, target, tmp):
    """A rescaled input must give the labels of the clean input (no silent wrong answer)."""
    ref = make(target).fit(data()[0]).labels_
    np.testing.assert_array_equal(value, ref)


def predict(X):
    def act(target, tmp):
        if target != "CLI":
            return fitted(target).predict(X())
        fitted_senet().save(tmp / "model")
        np.save(tmp / "new.npy", X())
        return cli("predict", "--model", tmp / "model", "--input", tmp / "new.npy")
    return act


def file_input(write, labels=None, n_clusters=3):
    """``write(tmp) -> path`` of a points file; loader target: pipeline.load_input, CLI: ``cluster --input``."""
    def act(target, tmp):
        path = write(tmp)
        lab = labels(tmp) if labels else None
        if target == "loader":
            return load_input(input_path=path, labels_path=lab)
        extra = ["--labels", lab] if lab else []
        return cli("cluster", "--input", path, *extra, "--n-clusters", n_clusters, "--method", "ensc", "-q")
    return act


def npy(array, **kw):
    def write(tmp):
        np.save(tmp / "X.npy", array() if callable(array) else array, **kw)
        return tmp / "X.npy"
    return write


def text(content, name="X.csv"):
    def write(tmp):
        (tmp / name).write_bytes(content if isinstance(content, bytes) else content.encode())
        return tmp / name
    return write


def _idx_bytes(arr, magic):
    return magic.to_bytes(4, "big") + b"".join(int(d).to_bytes(4, "big") for d in arr.shape) + arr.tobytes()


def named_dataset(name, files):
    """``files(folder)`` writes a dataset's files; loader: load_dataset, CLI: ``cluster --dataset``."""
    def act(target, tmp):
        files(tmp)
        if target == "loader":
            return load_dataset(name, data_dir=tmp, verbose=False)
        return cli("cluster", "--dataset", name, "--data-dir", tmp, "--method", "ensc", "-q")
    return act


def mnist_test(images_raw, labels_raw, compress=True):
    def files(tmp):
        d = tmp / "mnist"
        d.mkdir(exist_ok=True)
        for fname, raw in (("t10k-images-idx3-ubyte", images_raw), ("t10k-labels-idx1-ubyte", labels_raw)):
            raw = raw() if callable(raw) else raw
            (d / (fname + ".gz")).write_bytes(gzip.compress(raw, mtime=0) if compress else raw)
    return files


_IMGS = np.zeros((10, 28, 28), np.uint8)
_LABS = np.arange(10, dtype=np.uint8)
_IMG_RAW = _idx_bytes(_IMGS, 2051)
_LAB_RAW = _idx_bytes(_LABS, 2049)


def _truncated_gzip():
    z = gzip.compress(_IMG_RAW, mtime=0)
    return z[: len(z) // 2]


def model_file(tamper):
    """Save the fitted SENet to ``tmp/model``, ``tamper(base, tmp)``, then SENet.load / ``predict --model``."""
    def act(target, tmp):
        base = tmp / "model"
        fitted_senet().save(base)
        tamper(base, tmp)
        if target == "SENet.load":
            return SENet.load(base)
        np.save(tmp / "new.npy", data()[0])
        return cli("predict", "--model", base, "--input", tmp / "new.npy")
    return act


def _st(base):
    return base.with_suffix(".safetensors")


def _js(base):
    return base.with_suffix(".json")


def _edit_json(fn):
    def tamper(base, tmp):
        meta = json.loads(_js(base).read_text())
        fn(meta)
        _js(base).write_text(json.dumps(meta))
    return tamper


def _edit_header(fn):
    """Rewrite the safetensors header (JSON after the 8-byte length) with ``fn(header)``, data unchanged."""
    def tamper(base, tmp):
        raw = _st(base).read_bytes()
        n = int.from_bytes(raw[:8], "little")
        header = json.loads(raw[8:8 + n])
        fn(header)
        h = json.dumps(header).encode()
        _st(base).write_bytes(len(h).to_bytes(8, "little") + h + raw[8 + n:])
    return tamper


def _resave(fn):
    """Consistently rewrite both files (as a forger would): ``fn(tensors, config)`` edits them in place."""
    def tamper(base, tmp):
        tensors, config = load_model_file(base, kind="senet")
        fn(tensors, config)
        save_model_file(base, tensors, config, kind="senet")
    return tamper


def _raw(fn):
    def tamper(base, tmp):
        fn(base, tmp)
    return tamper


def no_code_executed(value, target, tmp):
    assert not (tmp / "pwned").exists(), "loading the file executed code"


def checkpoint(tamper, **changes):
    """Train SENet with checkpoints, ``tamper(dir)``, then fit again with ``resume=True`` (and ``changes``)."""
    def act(target, tmp):
        ck = tmp / "ckpt"
        make("SENet", checkpoint_dir=ck, checkpoint_every=1).fit(data()[0])
        tamper(ck)
        return make("SENet", checkpoint_dir=ck, checkpoint_every=1, resume=True, **changes).fit(data()[0]).labels_
    return act


def _truncate_newest(ck):
    name = json.loads((ck / "latest.json").read_text())["checkpoint"]
    p = (ck / name).with_suffix(".safetensors")
    p.write_bytes(p.read_bytes()[:100])


E, FILES, MODEL = ESTIMATORS, ("loader", "CLI"), ("SENet.load", "CLI")
INDUCTIVE = ("SENet", "NCSC", "SSCN", "Energy")
X3 = X_(lambda X: X[:3])

CASES = [
    # --------------------------------------------------------------------------------- data given to fit
    Case("nan", "`X` with a NaN", E, fit(X_(lambda X: _set(X, (4, 2), np.nan))), ValueError,
         r"contains NaN or infinity in 1 row\(s\), first at row 4"),
    Case("inf", "`X` with +inf", E, fit(X_(lambda X: _set(X, (0, 0), np.inf))), ValueError, r"NaN or infinity"),
    Case("empty-rows", "empty `X` (0 samples)", E, fit(lambda: np.zeros((0, 6))), ValueError, r"0 sample\(s\)"),
    Case("empty-cols", "empty `X` (0 features)", E, fit(lambda: np.zeros((30, 0))), ValueError,
         r"0 feature\(s\) \(shape=\(30, 0\)\) while a minimum of 1 is required"),
    Case("1-d", "1-D `X`", E, fit(lambda: data()[0][:, 0]), ValueError, r"1-D .*reshape"),
    Case("3-d", "3-D `X`", SHALLOW, fit(lambda: data()[0].reshape(30, 2, 3)), ValueError, r"must be 2-D"),
    Case("3-d-images", "3-D `X` (n, H, W) for a model that takes images", DEEP + PIXELS,
         fit(lambda: as_images(data()[0])), None, ""),
    Case("one-sample", "a single sample", E, fit(lambda: data()[0][:1]), ValueError, r"1 sample\(s\).*at least \d"),
    Case("object-numbers", "dtype object holding numbers", E, fit(lambda: data()[0].astype(object)), None, ""),
    Case("object-strings", "dtype object holding words", E,
         fit(lambda: np.array([["a", "b"], ["c", "d"], ["e", "f"]], dtype=object), n_clusters=2), ValueError,
         r"dtype object and could not be converted"),
    Case("object-dict", "dtype object holding a dict", E,
         fit(X_(lambda X: _set(X.astype(object), (0, 0), {"a": 1}))), TypeError,
         r"non-numeric entries: .*argument must be a string or a.*number"),
    Case("strings", "string dtype", E, fit(lambda: np.array([["1", "2"], ["3", "4"]]), n_clusters=2), ValueError,
         r"must be numeric, got dtype <U1"),
    Case("complex", "complex dtype", E, fit(lambda: data()[0] + 1j), ValueError, r"Complex data not supported"),
    Case("ragged", "ragged nested lists", E, fit(lambda: [[1.0, 2.0], [3.0]], n_clusters=2), ValueError, r"ragged"),
    Case("sparse", "a scipy.sparse matrix", E, fit(lambda: sp.csr_matrix(data()[0])), TypeError,
         r"sparse input is not supported.*toarray"),
    Case("constant", "constant `X` (every point the same)", E, fit(lambda: np.ones_like(data()[0])), ValueError,
         r"constant .*fewer than n_clusters=3"),
    Case("few-distinct", "fewer distinct points than `n_clusters`", E,
         fit(lambda: np.repeat(data()[0][:2], 15, axis=0)), ValueError, r"X has only 2 distinct rows.*n_clusters=3"),
    Case("duplicates", "duplicate points", E, fit(lambda: np.vstack([data()[0], data()[0][:5]])), None, "",
         warns=DuplicatePointsWarning),
    Case("zero-row", "an all-zero row", SHALLOW, fit(X_(lambda X: _set(X, 7, 0.0))), ValueError,
         r"1 all-zero row\(s\) \(first at row 7\).*Remove those rows"),
    Case("zero-row-blank", "an all-zero row for a model that takes images (a blank image)", DEEP + PIXELS,
         fit(X_(lambda X: _set(X, 7, 0.0))), None, ""),
    Case("underflow", "a row below the float32 range (1e-50)", E, fit(X_(lambda X: _set(X, 3, X[3] * 1e-50))),
         ValueError, r"too small for float32"),
    Case("overflow", "values beyond the float32 range (1e300)", E, fit(X_(lambda X: _set(X, 3, X[3] * 1e300))),
         ValueError, r"too large for float32"),
    Case("huge-scale", "every point scaled by 1e30", SHALLOW, fit(X_(lambda X: X * 1e30)), None, "",
         check=same_labels_as_clean),
    Case("tiny-scale", "every point scaled by 1e-30", SHALLOW, fit(X_(lambda X: X * 1e-30)), None, "",
         check=same_labels_as_clean),
    Case("huge-scale-deep", "every point scaled by 1e30, for a model that does not normalise", DEEP,
         fit(X_(lambda X: X * 1e30)), ValueError, r"rows of norm up to .*inner products overflow float32\. Rescale X"),
    Case("tiny-scale-deep", "every point scaled by 1e-30, for a model that does not normalise", DEEP,
         fit(X_(lambda X: X * 1e-30)), ValueError,
         r"rows of norm down to .*inner products underflow float32 to zero\. Rescale X"),
    Case("huge-unnormalized", "values of 1e30 with `normalize=False`", SHALLOW, fit(X_(lambda X: X * 1e30),
         normalize=False), ValueError, r"overflow float32.*normalize=True"),
    Case("pixels-range", "pixels outside [0, 1] (uint8 values)", PIXELS, fit(X_(lambda X: X * 255)), ValueError,
         r"X must hold pixels in \[0, 1\] \(got values in \[.*\]\); divide uint8 images by 255"),
    Case("image-shape", "images of another size than `image_shape`", PIXELS, fit(X_(lambda X: X[:, :49])),
         ValueError, r"X has 49 features per point but image_shape=\(8, 8\) implies 64"),
    Case("int", "integer dtype", VECTORS, fit(lambda: (data()[0] * 10).astype(np.int64)), None, ""),
    # --------------------------------------------------------------------------------- parameters
    Case("k=1", "`n_clusters=1`", E, fit(X_(), n_clusters=1), ValueError, r"n_clusters must be at least 2, got 1"),
    Case("k=0", "`n_clusters=0`", E, fit(X_(), n_clusters=0), ValueError, r"at least 2, got 0"),
    Case("k>n", "`n_clusters` > n_samples", VECTORS, fit(X3, n_clusters=4), ValueError,
         r"n_clusters=4 is larger than the number of samples \(3\)"),
    Case("k-float", "`n_clusters=2.5`", E, fit(X_(), n_clusters=2.5), ValueError, r"n_clusters must be an integer"),
    Case("k-str", "`n_clusters='3'`", E, fit(X_(), n_clusters="3"), ValueError, r"n_clusters must be an integer"),
    Case("nn>=n", "`n_neighbors` >= n_samples (`affinity='knn'`)", SHALLOW,
         fit(X3, n_clusters=2, affinity="knn", n_neighbors=3), ValueError,
         r"n_neighbors=3 must be smaller than the number of samples \(3\)"),
    Case("nn=0", "`n_neighbors=0`", SHALLOW, fit(X_(), affinity="knn", n_neighbors=0), ValueError,
         r"n_neighbors must be positive"),
    Case("block=0", "`block_size=0`", E, fit(X_(), block_size=0), ValueError, r"block_size must be positive"),
    Case("affinity", "unknown `affinity`", SHALLOW, fit(X_(), affinity="cosine"), ValueError, r"affinity must be"),
    Case("seed", "`random_state='seed'`", E, fit(X_(), random_state="seed"), ValueError, r"random_state must be"),
    Case("memory", "a step larger than the available memory (patched to 1 KiB)", E, fit(X_()),
         _memory.InsufficientMemoryError, r"needs about .* but only 1\.0 KiB is available on cpu; (lower block_size|"
         r"use algorithm='two_pass'|lower batch_size|C grows with n_samples squared)", memory=1024),
    # --------------------------------------------------------------------------------- predict
    Case("predict-unfitted", "`predict` before `fit`", INDUCTIVE, lambda t, tmp: make(t).predict(data()[0]),
         NotFittedError, r"not fitted yet; call 'fit'"),
    Case("save-unfitted", "`save` before `fit`", INDUCTIVE, lambda t, tmp: make(t).save(tmp / "m"),
         NotFittedError, r"not fitted yet"),
    Case("predict-transductive", "`predict` on a transductive model", ("EnSC", "SSC-OMP", "DSC-Net"),
         lambda t, tmp: make(t).predict(data()[0]), AttributeError, r"has no attribute 'predict'"),
    Case("predict-features", "wrong feature count at `predict`", ("SENet", "NCSC", "SSCN", "CLI"),
         predict(lambda: data()[0][:, :4]), ValueError, r"X has 4 features, but \w+ is expecting 6 features as input"),
    Case("predict-nan", "NaN at `predict`", INDUCTIVE + ("CLI",), predict(X_(lambda X: _set(X, (1, 1), np.nan))),
         ValueError, r"NaN or infinity"),
    Case("predict-1d", "1-D `X` at `predict`", INDUCTIVE, predict(lambda: data()[0][0]), ValueError, r"1-D"),
    Case("predict-rule", "unknown `predict` rule", ("SENet",),
         lambda t, tmp: fitted_senet().predict(data()[0], rule="vote"), ValueError, r"rule must be"),
    # --------------------------------------------------------------------------------- data files
    Case("file-missing", "a data file that does not exist", FILES, file_input(lambda tmp: tmp / "none.npy"),
         ValueError, r"file <dir>/none.npy does not exist"),
    Case("npy-truncated", "a truncated `.npy` file", FILES,
         file_input(lambda tmp: (npy(data()[0])(tmp), (tmp / "X.npy").write_bytes((tmp / "X.npy").read_bytes()[:300]),
                                 tmp / "X.npy")[-1]), ValueError, r"<dir>/X.npy is not a valid .npy file"),
    Case("npy-pickle", "a `.npy` file holding pickled objects (with a code-executing payload)", FILES,
         file_input(npy(lambda: np.array([_Exploit("pwned")] * 4, dtype=object).reshape(2, 2), allow_pickle=True)),
         ValueError, r"<dir>/X.npy holds Python objects \(pickled\); refusing to load it", check=no_code_executed),
    Case("csv-ragged", "a ragged CSV file", FILES, file_input(text("1,2,3\n4,5,6\n7,8\n")), ValueError,
         r"<dir>/X.csv: line 3 has 2 fields but the first data row has 3 \(ragged rows\)"),
    Case("csv-words", "a CSV file with words", FILES, file_input(text("1,2\nx,4\n")), ValueError,
         r"could not read <dir>/X.csv as a numeric table"),
    Case("csv-empty", "an empty CSV file", FILES, file_input(text("")), ValueError,
         r"<dir>/X.csv holds no data rows"),
    Case("csv-binary", "binary garbage named `.csv`", FILES, file_input(text(bytes(range(256)) * 4)), ValueError,
         r"<dir>/X.csv"),
    Case("mat-corrupt", "a corrupt `.mat` file", FILES, file_input(text(b"MATLAB 5.0 MAT-file" + bytes(200), "X.mat")),
         ValueError, r"<dir>/X.mat is not a readable .mat file"),
    Case("idx-truncated", "a truncated idx file", FILES, file_input(text(_IMG_RAW[:500], "X-idx3-ubyte")),
         ValueError, r"<dir>/X-idx3-ubyte is truncated: header declares shape \(10, 28, 28\)"),
    Case("idx-magic", "an idx file with a wrong magic number", FILES,
         file_input(text(b"\x01\x02\x03\x04" + _IMG_RAW[4:], "X-idx3-ubyte")), ValueError,
         r"<dir>/X-idx3-ubyte is not an idx file: magic number"),
    Case("labels-length", "a labels file of the wrong length", FILES,
         file_input(npy(X_()), labels=lambda tmp: (np.save(tmp / "y.npy", np.arange(5)), tmp / "y.npy")[1]),
         ValueError, r"labels file <dir>/y.npy holds 5 labels but <dir>/X.npy holds 30 points"),
    Case("csv-nan", "a CSV file with `nan`", ("CLI",), file_input(text("1,nan\n2,3\n3,4\n"), n_clusters=2),
         ValueError, r"X contains NaN or infinity in 1 row\(s\), first at row 0"),
    Case("npy-complex", "a complex `.npy` file", ("CLI",), file_input(npy(lambda: data()[0] + 1j)), ValueError,
         r"Complex data not supported"),
    Case("npy-1d", "a 1-D `.npy` file", ("CLI",), file_input(npy(lambda: data()[0][:, 0]), n_clusters=2),
         ValueError, r"X is 1-D"),
    Case("npy-constant", "a file of identical points", ("CLI",), file_input(npy(np.ones((10, 3))), n_clusters=2),
         ValueError, r"X is constant"),
    Case("mnist-gzip", "a truncated `.gz` file of a named dataset", FILES,
         named_dataset("mnist-test", mnist_test(_truncated_gzip, _LAB_RAW, compress=False)), ValueError,
         r"<dir>/mnist/t10k-images-idx3-ubyte.gz is a corrupt or truncated gzip file"),
    Case("mnist-count", "dataset images and labels of different lengths", FILES,
         named_dataset("mnist-test", mnist_test(_IMG_RAW, _idx_bytes(_LABS[:9], 2049))), ValueError,
         r"<dir>/mnist/t10k-images-idx3-ubyte.gz holds 10 images but <dir>/mnist/t10k-labels-idx1-ubyte.gz "
         r"holds 9 labels"),
    Case("mnist-missing", "a named dataset whose files are missing", FILES,
         named_dataset("mnist-test", lambda tmp: None), ValueError, r"t10k-images-idx3-ubyte"),
    Case("cifar-truncated", "a truncated CIFAR-10 batch", FILES,
         named_dataset("cifar10-test", lambda tmp: (tmp / "test_batch.bin").write_bytes(bytes(5000))), ValueError,
         r"<dir>/test_batch.bin is truncated or not a CIFAR-10 binary batch"),
    # --------------------------------------------------------------------------------- model files
    Case("model-missing", "a model file that does not exist", MODEL,
         model_file(lambda base, tmp: (_js(base).unlink(), _st(base).unlink())), ValueError,
         r"model file <dir>/model.json does not exist"),
    Case("model-truncated", "truncated weights (`.safetensors`)", MODEL,
         model_file(lambda base, tmp: _st(base).write_bytes(_st(base).read_bytes()[:400])), ValueError,
         r"weights file <dir>/model.safetensors is corrupt or truncated"),
    Case("model-pickle", "a pickle with a code-executing payload renamed to `.safetensors`", MODEL,
         model_file(lambda base, tmp: _st(base).write_bytes(pickle.dumps(_Exploit("pwned")))), ValueError,
         r"<dir>/model.safetensors is corrupt or truncated: its header length \d+ exceeds .*never from pickle",
         check=no_code_executed),
    Case("model-torch", "a malicious `torch.save` file renamed to `.safetensors`", MODEL,
         model_file(lambda base, tmp: torch.save(_Exploit("pwned"), _st(base))), ValueError,
         r"<dir>/model.safetensors is corrupt or truncated: its header length \d+ exceeds", check=no_code_executed),
    Case("json-pickle", "a pickle with a code-executing payload renamed to `.json`", MODEL,
         model_file(lambda base, tmp: _js(base).write_bytes(pickle.dumps(_Exploit("pwned")))), ValueError,
         r"model file <dir>/model.json is not valid JSON", check=no_code_executed),
    Case("json-nested", "a deeply nested JSON file", MODEL, model_file(lambda b, tmp: _js(b).write_text("[" * 200000)),
         ValueError, r"<dir>/model.json is not valid JSON"),
    Case("json-other", "a JSON file that is not a model file", MODEL,
         model_file(lambda base, tmp: _js(base).write_text('{"a": 1}')), ValueError,
         r"<dir>/model.json is not a selfexpress model file"),
    Case("json-version", "a model file of another format version", MODEL,
         model_file(_edit_json(lambda m: m.update(format_version=99))), ValueError,
         r"<dir>/model.json has format version 99; this library reads version 1"),
    Case("json-kind", "a model file of another kind", MODEL, model_file(_edit_json(lambda m: m.update(kind="ensc"))),
         ValueError, r"holds a 'ensc' model, not a 'senet' model"),
    Case("json-shape", "JSON shapes that disagree with the weights", MODEL,
         model_file(_edit_json(lambda m: m["tensors"].update(dictionary=[3, 3]))), ValueError,
         r"tensor 'dictionary' in <dir>/model.safetensors has shape \[30, 6\], expected \[3, 3\]"),
    Case("json-missing-key", "a model file without its parameters", MODEL,
         model_file(_edit_json(lambda m: m["config"].pop("params"))), ValueError,
         r"not a valid SENet model file: 'params'"),
    Case("json-bad-param", "a model file with an invalid parameter", MODEL,
         model_file(_edit_json(lambda m: m["config"]["params"].update(lmbd=7))), ValueError,
         r"not a valid SENet model file: lmbd must be in \[0.0, 1.0\]"),
    Case("json-huge-net", "a model file whose JSON asks for a huge network", MODEL,
         model_file(_edit_json(lambda m: m["config"]["params"].update(hidden_sizes=[10**9]))), ValueError,
         r"network tensor 'net.query.0.weight' is torch.float32 \[8, 6\], the parameters imply torch.float32 "
         r"\[1000000000, 6\]"),
    Case("header-dtype", "a weights header with an unknown dtype", MODEL,
         model_file(_edit_header(lambda h: h["dictionary"].update(dtype="X99"))), ValueError,
         r"tensor 'dictionary' has unknown dtype 'X99'"),
    Case("header-shape", "a weights header whose shape does not match its data", MODEL,
         model_file(_edit_header(lambda h: h["dictionary"].update(shape=[300, 6]))), ValueError,
         r"tensor 'dictionary' \(F32 \[300, 6\]\) needs 7200 bytes but its data offsets span 720"),
    Case("header-length", "a weights file whose header length exceeds the file", MODEL,
         model_file(lambda base, tmp: _st(base).write_bytes(b"\xff" * 8 + _st(base).read_bytes()[8:])), ValueError,
         r"header length \d+ exceeds the file size"),
    Case("header-key", "a weights header entry with extra keys", MODEL,
         model_file(_edit_header(lambda h: h["labels"].update(evil=1))), ValueError,
         r"tensor 'labels' has header entry .*expected dtype, shape, data_offsets"),
    Case("trailing", "bytes appended to the weights", MODEL,
         model_file(lambda base, tmp: _st(base).write_bytes(_st(base).read_bytes() + b"x" * 16)), ValueError,
         r"16 trailing bytes after the last tensor"),
    Case("extra-tensor", "an extra tensor (listed in both files)", MODEL,
         model_file(_resave(lambda t, c: t.update(evil=torch.zeros(3)))), ValueError, r"unexpected tensors \['evil'\]"),
    Case("weight-dtype", "network weights of another dtype (both files)", MODEL,
         model_file(_resave(lambda t, c: t.update({"net.key.0.bias": t["net.key.0.bias"].double()}))), ValueError,
         r"network tensor 'net.key.0.bias' is torch.float64 \[8\], the parameters imply torch.float32 \[8\]"),
    Case("weight-nan", "a NaN network weight", MODEL,
         model_file(_resave(lambda t, c: t["net.key.0.weight"].__setitem__((0, 0), float("nan")))), ValueError,
         r"network tensor 'net.key.0.weight' contains NaN or infinity"),
    Case("dictionary-features", "a dictionary of the wrong width", MODEL,
         model_file(_resave(lambda t, c: t.update(dictionary=t["dictionary"][:, :4].contiguous()))), ValueError,
         r"dictionary is torch.float32 \[30, 4\], expected float32 \(n_atoms, 6\)"),
    Case("labels-range", "labels outside `[0, n_clusters)`", MODEL,
         model_file(_resave(lambda t, c: t.update(labels=t["labels"] + 10))), ValueError,
         r"labels are not in \[0, n_clusters=3\)"),
    # --------------------------------------------------------------------------------- checkpoints
    Case("ckpt-pointer", "a corrupt checkpoint pointer (`latest.json`)", ("SENet",),
         checkpoint(lambda ck: (ck / "latest.json").write_text("{")), ValueError,
         r"checkpoint pointer <dir>/ckpt/latest.json is corrupt"),
    Case("ckpt-truncated", "a truncated checkpoint", ("SENet",), checkpoint(_truncate_newest), ValueError,
         r"weights file <dir>/ckpt/ckpt-000000003.safetensors is corrupt or truncated"),
    Case("ckpt-other-run", "resuming a checkpoint of another run", ("SENet",),
         checkpoint(lambda ck: None, gamma=5.0), ValueError, r"was written by a different run"),
    # --------------------------------------------------------------------------------- CLI only
    Case("cli-no-k", "no `--n-clusters` and no labels", ("CLI",),
         lambda t, tmp: (np.save(tmp / "X.npy", data()[0]), cli("cluster", "--input", tmp / "X.npy", "-q"))[1],
         ValueError, r"n_clusters is required when the input has no labels"),
    Case("cli-k1", "`--n-clusters 1`", ("CLI",), file_input(npy(X_()), n_clusters=1), ValueError,
         r"n_clusters must be at least 2, got 1"),
    Case("cli-k>n", "`--n-clusters` larger than the file", ("CLI",), file_input(npy(X_()), n_clusters=40), ValueError,
         r"n_clusters=40 is larger than the number of samples \(30\)"),
    Case("cli-knn", "`--affinity knn` on 3 points (`n_neighbors=3`)", ("CLI",),
         lambda t, tmp: (np.save(tmp / "X.npy", data()[0][:3]), cli("cluster", "--input", tmp / "X.npy",
                                                                      "--n-clusters", 2, "--affinity", "knn",
                                                                      "--method", "ensc", "-q"))[1],
         ValueError, r"n_neighbors=3 must be smaller than the number of samples \(3\)"),
    Case("cli-dataset", "an unknown dataset name", ("CLI",),
         lambda t, tmp: cli("cluster", "--dataset", "no-such-set", "--method", "ensc", "-q"), ValueError,
         r"unknown dataset 'no-such-set'"),
    Case("cli-param", "an invalid method parameter (`--n-iter 0`)", ("CLI",),
         lambda t, tmp: (np.save(tmp / "X.npy", data()[0]), cli("cluster", "--input", tmp / "X.npy", "--n-clusters",
                                                                  3, "--method", "senet", "--n-iter", 0, "-q"))[1],
         ValueError, r"n_iter must be positive, got 0"),
    Case("cli-memory", "a run larger than the memory cap (`SELFEXPRESS_MAX_MEMORY=64K`)", ("CLI",),
         file_input(npy(X_())), _memory.InsufficientMemoryError,
         r"the EnSC active-set solver on 30 points .* needs about .* but only 64\.0 KiB is available on cpu; lower "
         r"block_size \(now 2048\) or support_size \(now 100\)", memory=64 * 1024),
]

_IDS = [c.id for c in CASES]
assert len(set(_IDS)) == len(_IDS), "duplicate case ids"


# ----------------------------------------------------------------------------------------------- runner
@dataclass
class Outcome:
    raised: type | None
    message: str
    value: Any = None
    rc: int | None = None
    warned: tuple = ()


def run_case(case, target, tmp, monkeypatch):
    """Run one (case, target) with warnings recorded; returns an :class:`Outcome` (paths shown as ``<dir>``)."""
    monkeypatch.setattr(sys.modules[__name__], "_TARGET", target)  # data(): images for the energy model
    tmp.mkdir(parents=True, exist_ok=True)
    monkeypatch.chdir(tmp)  # relative paths (the payloads' marker file) land in tmp
    if case.memory is not None:
        if target == "CLI":
            monkeypatch.setenv("SELFEXPRESS_MAX_MEMORY", str(case.memory))
        else:
            monkeypatch.setattr(_memory, "available_memory", lambda device="cpu": case.memory)
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        try:
            value = case.act(target, tmp)
        except Exception as exc:  # noqa: BLE001 - the outcome is what we record
            out = Outcome(type(exc), str(exc).strip().splitlines()[0] if str(exc).strip() else "")
        else:
            if target == "CLI":
                rc, _, err = value
                out = Outcome(None, err.strip(), value=value, rc=rc)
            else:
                out = Outcome(None, "", value=value)
    out.warned = tuple(w.category for w in rec)
    dup = [w for w in rec if issubclass(w.category, DuplicatePointsWarning)]
    if out.raised is None and target != "CLI":
        out.message = "result returned" + (f"; DuplicatePointsWarning: {dup[0].message}" if dup else "")
    out.message = out.message.replace(str(tmp), "<dir>")
    if case.check is not None:
        case.check(out.value, target, tmp)
    return out


def assert_outcome(case, target, out):
    if target == "CLI":
        assert out.raised is None, f"the CLI raised {out.raised.__name__}: {out.message}"
        rc, stdout, err = out.value
        if case.expect is None:
            assert rc == 0, err
            return
        assert rc == 2, f"exit status {rc}, stderr {err!r}"
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("selfexpress: error: "), err
        assert "Traceback" not in err
        assert re.search(case.match, out.message), f"{out.message!r} does not match {case.match!r}"
        return
    if case.expect is None:
        assert out.raised is None, f"{out.raised.__name__}: {out.message}"
        value = out.value
        if isinstance(value, np.ndarray):
            assert value.ndim == 1 and value.dtype == np.int64
        if case.warns is not None:
            assert case.warns in out.warned, out.warned
        return
    assert out.raised is not None, f"no exception, got {out.value!r}"
    assert issubclass(out.raised, case.expect), f"{out.raised.__name__}: {out.message}"
    assert re.search(case.match, out.message), f"{out.message!r} does not match {case.match!r}"


PAIRS = [pytest.param(c, t, id=f"{c.id}-{t}") for c in CASES for t in c.targets]


@pytest.mark.parametrize("case, target", PAIRS)
def test_bad_input(case, target, tmp_path, monkeypatch):
    assert_outcome(case, target, run_case(case, target, tmp_path, monkeypatch))


# ----------------------------------------------------------------------------------------------- the docs table
def _shown(case, target, out):
    if target == "CLI":
        return f"exit {out.value[0]}: `{cell(out.message)}`"
    if out.raised is None:
        return cell(out.message)
    return f"`{out.raised.__name__}`: {cell(out.message)}"


def render_table(tmp):
    """Run every case and render the Markdown table of docs/reliability.md."""
    rows = ["| # | Bad input | Where | What the user sees |", "|---|---|---|---|"]
    for i, case in enumerate(CASES, 1):
        groups = {}
        for target in case.targets:
            with pytest.MonkeyPatch.context() as mp:
                out = run_case(case, target, tmp / case.id / target.replace(".", "_"), mp)
            assert_outcome(case, target, out)
            groups.setdefault(_shown(case, target, out), []).append(target)
        for j, (shown, targets) in enumerate(groups.items()):
            label = f"{i}" if j == 0 else ""
            what = f"{case.what} <sub>`{case.id}`</sub>" if j == 0 else ""
            rows.append(f"| {label} | {what} | {', '.join(targets)} | {shown} |")
    return "\n".join(rows) + "\n"


def test_docs_table_is_current(tmp_path):
    current = read_block("bad-inputs")
    assert current is not None, "docs/reliability.md has no bad-inputs block"
    assert current == render_table(tmp_path), (
        "docs/reliability.md is out of date with tests/test_reliability.py::CASES; "
        "run `python tests/test_reliability.py` to regenerate it")


# ----------------------------------------------------------------------------------------------- more guarantees
def test_the_malicious_payloads_are_live(tmp_path):
    """Sanity check of the pickle cases: unpickling the payload really executes code, so refusing it matters."""
    marker = tmp_path / "pwned"
    pickle.loads(pickle.dumps(_Exploit(marker)))
    assert marker.exists()


@pytest.mark.parametrize("target", ESTIMATORS)
def test_same_seed_same_labels_and_no_global_rng_use(target, monkeypatch):
    """random_state fixes the result; the global numpy / torch random streams neither change it nor are consumed."""
    monkeypatch.setattr(sys.modules[__name__], "_TARGET", target)
    X = data()[0]
    fits = []
    for seed in (1, 2):
        np.random.seed(seed)
        torch.manual_seed(seed)
        state_np, state_torch = np.random.get_state()[1].copy(), torch.get_rng_state().clone()
        fits.append(make(target, random_state=7).fit(X))
        np.testing.assert_array_equal(np.random.get_state()[1], state_np)
        assert torch.equal(torch.get_rng_state(), state_torch)
    a, b = fits
    np.testing.assert_array_equal(a.labels_, b.labels_)
    if not hasattr(a, "coef_"):  # NCSC labels with its classifier
        return
    # coefficients agree to rounding: LAPACK/BLAS kernels may round differently with the memory alignment of their
    # inputs (measured: SSC-OMP's batched least squares, one entry of ~1e-17 differing by 1.7e-18 in 3 of 30 runs)
    assert abs(a.coef_ - b.coef_).max() <= 1e-12 * max(1.0, abs(a.coef_).max())


if __name__ == "__main__":  # regenerate the docs table
    import tempfile

    import torch as _torch

    _torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as d:
        write_block("bad-inputs", render_table(Path(d)))
    print("rewrote the bad-inputs table of docs/reliability.md")
