"""The feature stage as one fitted object: scattering -> uncentred PCA -> unit rows.

:class:`ScatteringPCA` follows the scikit-learn transformer contract: ``fit`` learns the PCA basis on
training images, ``transform`` maps any images of the same size into that basis. Its state (settings,
basis, fingerprint) travels inside every model file trained on its output (see
:func:`selfexpress.models._files.pack_feature_transform`), so a saved model labels raw images in the
coordinates it was trained in, and feature vectors made in another basis are recognised and refused.

Why it matters: an uncentred PCA re-fitted on another set of images gives a different basis (near-equal
eigenvalues rotate into each other), and points projected on it are silently wrong for a model trained
in the first basis (MNIST: predict ACC 0.52 instead of 0.91).
"""

from __future__ import annotations

import hashlib
import json

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin

from .._device import resolve_device
from .cached import FEATURE_VERSION, _features, _transform_parts
from .scattering import _check_images, scattering_output_dim

__all__ = ["ScatteringPCA", "TRANSFORM_KIND", "features_sidecar", "read_features_sidecar"]

#: model-file kind of a stand-alone saved transform (``ScatteringPCA.save``)
TRANSFORM_KIND = "feature-transform"
_RESIZE = ("bilinear", "pad")


def _as_images(images, image_shape=None):
    """``(n, H, W)`` images; flat rows ``(n, H*W)`` are reshaped to ``image_shape`` when given."""
    arr = np.asarray(images)
    if image_shape is not None and arr.ndim == 2 and arr.shape[1] == image_shape[0] * image_shape[1]:
        arr = arr.reshape(arr.shape[0], *image_shape)
    return _check_images(arr)


class ScatteringPCA(TransformerMixin, BaseEstimator):
    """Scattering features of grey-scale images -> uncentred PCA -> unit-norm rows (the SENet/EnSC features).

    Parameters
    ----------
    n_components : int, default=500
        Dimension of the output features.
    J, L : int, default=3, 8
        Scattering scales and angles (order 2): ``(1 + J L + L^2 J (J - 1) / 2)`` maps per image.
    shape : tuple of int, default=(32, 32)
        Images are brought to this size before the scattering.
    resize : {"bilinear", "pad"}, default="bilinear"
        How: bilinear resize (the SENet reference) or central zero padding.
    center : bool, default=False
        Remove the mean before the PCA (classical PCA); the reference is uncentred.
    normalize : bool, default=True
        Scale every output row to unit Euclidean norm.
    batch_size : int, default=1000
        Images per scattering batch (does not change the result).
    cache_dir : path, None or False, default=None
        On-disk cache of scattering features (by image hash): None = the default folder
        (``$SELFEXPRESS_CACHE_DIR`` or ``~/.cache/selfexpress/features``), False = no cache.
    verbose : bool, default=False
        Progress bars and cache messages on stderr.
    device : str or torch.device, default="auto"
        Where the scattering and the projection run: "auto" (CUDA when available, else the CPU), "cpu",
        "cuda[:N]" (:func:`selfexpress._device.resolve_device`). Not part of the fingerprint; on the CPU the
        features are the same as without it.

    Attributes
    ----------
    components_ : ndarray of shape (n_components, n_scattering_features), float64
        PCA basis, rows in descending eigenvalue order.
    mean_ : ndarray of shape (n_scattering_features,) or None
    eigenvalues_ : ndarray of shape (n_components,)
    image_shape_ : tuple (H, W)
        Size of the images seen in ``fit``; ``transform`` needs the same size.
    n_samples_seen_ : int
    fingerprint_ : str
        16 hex digits of a SHA-256 over the settings and the basis: two transforms give the same
        features for the same images if and only if (up to hash collisions) their fingerprints agree.

    Examples
    --------
    >>> ft = ScatteringPCA(n_components=500).fit(train_images)        # doctest: +SKIP
    >>> model = SENet(n_clusters=10).fit(ft.transform(train_images))  # doctest: +SKIP
    >>> model.feature_transform_ = ft; model.save("m")                 # doctest: +SKIP
    """

    def __init__(self, n_components=500, *, J=3, L=8, shape=(32, 32), resize="bilinear", center=False,
                 normalize=True, batch_size=1000, cache_dir=None, verbose=False, device="auto"):
        self.n_components = n_components
        self.J = J
        self.L = L
        self.shape = shape
        self.resize = resize
        self.center = center
        self.normalize = normalize
        self.batch_size = batch_size
        self.cache_dir = cache_dir
        self.verbose = verbose
        self.device = device

    # ------------------------------------------------------------------ parameters
    def _settings(self):
        """The parameters that define the features, checked; a JSON-ready dict."""
        for name in ("n_components", "J", "L", "batch_size"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        shape = tuple(self.shape) if isinstance(self.shape, (tuple, list)) else None
        if shape is None or len(shape) != 2 or not all(isinstance(s, (int, np.integer)) and s >= 2 ** self.J
                                                       for s in shape):
            raise ValueError(f"shape must be two integers >= 2**J = {2 ** self.J}, got {self.shape!r}")
        if self.resize not in _RESIZE:
            raise ValueError(f"resize must be one of {_RESIZE}, got {self.resize!r}")
        dim = scattering_output_dim(int(self.J), int(self.L), shape)
        if int(self.n_components) > dim:
            raise ValueError(f"n_components={self.n_components} exceeds the {dim} scattering features")
        return {"n_components": int(self.n_components), "J": int(self.J), "L": int(self.L),
                "shape": [int(s) for s in shape], "resize": self.resize, "center": bool(self.center),
                "normalize": bool(self.normalize), "feature_version": FEATURE_VERSION}

    @property
    def n_scattering_features(self):
        return scattering_output_dim(int(self.J), int(self.L), tuple(self.shape))

    # ------------------------------------------------------------------ fit / transform
    def fit(self, X, y=None):
        """Learn the PCA basis on the scattering features of images ``X``.

        Parameters
        ----------
        X : array of shape (n, H, W), or (n, 784) for 28x28 images; uint8 (0..255) or float in [0, 1]
        y : ignored

        Returns
        -------
        self
        """
        self._fit_transform_parts([("images", _as_images(X))], "images")
        return self

    def fit_transform(self, X, y=None):
        """``fit(X)`` then the features of ``X`` (bit-identical to ``transform(X)`` after ``fit``)."""
        return self._fit_transform_parts([("images", _as_images(X))], "images")

    def _fit_transform_parts(self, parts, label):
        """Fit on the row-wise concatenation of ``parts`` ([(split label, images)]) and return its features.

        Used by :func:`selfexpress.features.dataset_features`, whose splits are cached separately.
        """
        settings = self._settings()
        resolve_device(self.device)  # a bad device fails here, also when every feature comes from the cache
        shapes = {tuple(np.asarray(im).shape[1:]) for _, im in parts}
        if len(shapes) != 1:
            raise ValueError(f"all images must have the same size, got {sorted(shapes)}")
        Z, pca, timings = _features(parts, label, settings["n_components"], settings["normalize"],
                                    settings["center"], self.cache_dir, self.verbose, settings["J"], settings["L"],
                                    int(self.batch_size), tuple(settings["shape"]), settings["resize"], True,
                                    device=self.device)
        self.components_ = np.ascontiguousarray(pca.components_, dtype=np.float64)
        self.mean_ = None if pca.mean_ is None else np.ascontiguousarray(pca.mean_, dtype=np.float64)
        self.eigenvalues_ = None if getattr(pca, "eigenvalues_", None) is None else np.asarray(pca.eigenvalues_)
        self.image_shape_ = tuple(int(s) for s in shapes.pop())
        self.n_samples_seen_ = int(Z.shape[0])
        self.timings_ = timings
        self.fingerprint_ = self._compute_fingerprint()
        return Z

    def transform(self, X):
        """Features ``(n, n_components)`` float32 of images ``X`` in the fitted basis.

        ``X``: ``(n, H, W)`` images of the fitted size ``image_shape_`` (or flat ``(n, H*W)`` rows).
        """
        self._check_fitted()
        arr = _as_images(X, self.image_shape_)
        if tuple(arr.shape[1:]) != tuple(self.image_shape_):
            raise ValueError(f"images are {arr.shape[1]}x{arr.shape[2]}, but this feature transform was fitted "
                             f"on {self.image_shape_[0]}x{self.image_shape_[1]} images")
        s = self._settings()
        resolve_device(self.device)
        Z, self.timings_ = _transform_parts([("images", arr)], self.components_, self.mean_, s["normalize"],
                                            self.cache_dir, self.verbose, s["J"], s["L"], int(self.batch_size),
                                            tuple(s["shape"]), s["resize"], device=self.device)
        return Z

    def accepts_images(self, X):
        """Whether array ``X`` looks like images for this transform (``(n, H, W)`` or flat ``(n, H*W)``)."""
        self._check_fitted()
        shape = np.shape(X)
        H, W = self.image_shape_
        if len(shape) == 3:
            return tuple(shape[1:]) == (H, W)
        if len(shape) == 4 and shape[1] == 1:
            return tuple(shape[2:]) == (H, W)
        return len(shape) == 2 and shape[1] == H * W and H * W != int(self.n_components)

    def get_feature_names_out(self, input_features=None):
        self._check_fitted()
        return np.asarray([f"scatteringpca{i}" for i in range(int(self.n_components))], dtype=object)

    def _check_fitted(self):
        if not hasattr(self, "components_"):
            from sklearn.exceptions import NotFittedError

            raise NotFittedError("This ScatteringPCA instance is not fitted yet; call 'fit' with training images.")

    def _compute_fingerprint(self):
        h = hashlib.sha256()
        h.update(json.dumps({**self._settings(), "image_shape": list(self.image_shape_)}, sort_keys=True).encode())
        h.update(np.ascontiguousarray(self.components_, dtype=np.float64).tobytes())
        if self.mean_ is not None:
            h.update(np.ascontiguousarray(self.mean_, dtype=np.float64).tobytes())
        return h.hexdigest()[:16]

    # ------------------------------------------------------------------ state for model files
    def to_state(self):
        """``(tensors, config)``: the fitted basis as float64 arrays and the settings as JSON."""
        self._check_fitted()
        tensors = {"components": self.components_}
        if self.mean_ is not None:
            tensors["mean"] = self.mean_
        if self.eigenvalues_ is not None:
            tensors["eigenvalues"] = np.asarray(self.eigenvalues_, dtype=np.float64)
        config = {"class": "ScatteringPCA", "settings": self._settings(), "image_shape": list(self.image_shape_),
                  "n_samples_seen": int(self.n_samples_seen_), "fingerprint": self.fingerprint_}
        return tensors, config

    @classmethod
    def from_state(cls, tensors, config, *, source="the model file"):
        """Rebuild a fitted transform from :meth:`to_state`'s output, checking every part before use.

        ``ValueError`` naming ``source`` for a wrong class or version, bad settings, a basis of the wrong
        shape or dtype, NaN or infinity, or a fingerprint that does not match the stored basis (tampering).
        """
        import torch

        bad = f"{source} holds an invalid feature transform"
        try:
            if not isinstance(config, dict) or config.get("class") != "ScatteringPCA":
                raise ValueError(f"unknown class {config.get('class') if isinstance(config, dict) else config!r}")
            s = dict(config["settings"])
            if s.get("feature_version") != FEATURE_VERSION:
                raise ValueError(f"feature version {s.get('feature_version')!r}, this library makes version "
                                 f"{FEATURE_VERSION}")
            ft = cls(n_components=s["n_components"], J=s["J"], L=s["L"], shape=tuple(s["shape"]),
                     resize=s["resize"], center=s["center"], normalize=s["normalize"])
            ft._settings()
            image_shape = tuple(config["image_shape"])
            if len(image_shape) != 2 or not all(isinstance(v, int) and v > 0 for v in image_shape):
                raise ValueError(f"image_shape must be two positive integers, got {config['image_shape']!r}")
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{bad}: {exc}") from None

        def array(name, shape, required=True):
            t = tensors.get(name)
            if t is None:
                if required:
                    raise ValueError(f"{bad}: its {name!r} array is missing")
                return None
            a = t.numpy() if isinstance(t, torch.Tensor) else np.asarray(t)
            if a.dtype != np.float64 or tuple(a.shape) != tuple(shape):
                raise ValueError(f"{bad}: {name!r} is {a.dtype} {list(a.shape)}, expected float64 {list(shape)}")
            if not np.isfinite(a).all():
                raise ValueError(f"{bad}: {name!r} contains NaN or infinity")
            return np.ascontiguousarray(a)

        k, d = int(ft.n_components), ft.n_scattering_features
        extra = sorted(set(tensors) - {"components", "mean", "eigenvalues"})
        if extra:
            raise ValueError(f"{bad}: unexpected arrays {extra}")
        ft.components_ = array("components", (k, d))
        ft.mean_ = array("mean", (d,), required=bool(ft.center))
        if ft.mean_ is not None and not ft.center:
            raise ValueError(f"{bad}: it holds a mean but center=False")
        ft.eigenvalues_ = array("eigenvalues", (k,), required=False)
        ft.image_shape_ = image_shape
        ft.n_samples_seen_ = int(config.get("n_samples_seen", 0) or 0)
        ft.fingerprint_ = ft._compute_fingerprint()
        if config.get("fingerprint") != ft.fingerprint_:
            raise ValueError(f"{bad}: its basis does not match its fingerprint ({config.get('fingerprint')!r} "
                             f"stored, {ft.fingerprint_!r} computed): the file was altered")
        return ft

    def save(self, path):
        """Save the fitted transform alone (``<path>.safetensors`` + ``<path>.json``); no pickle."""
        from ..io import save_model_file

        tensors, config = self.to_state()
        return save_model_file(path, tensors, config, kind=TRANSFORM_KIND)

    @classmethod
    def load(cls, path, *, cache_dir=None, verbose=False, device="auto"):
        """Load a transform written by :meth:`save`, or the one stored inside a model file (to run on ``device``)."""
        from ..io import load_model_file, read_model_kind

        kind = read_model_kind(path)
        tensors, config = load_model_file(path, kind=kind or TRANSFORM_KIND)
        if kind != TRANSFORM_KIND:
            from ..models._files import unpack_feature_transform

            ft = unpack_feature_transform(tensors, config, source=str(path))
            if ft is None:
                raise ValueError(f"model file {path} holds no feature transform (it was fitted on feature vectors "
                                 "given directly, or saved by an older version)")
        else:
            ft = cls.from_state(tensors, config, source=str(path))
        ft.cache_dir, ft.verbose, ft.device = cache_dir, verbose, device
        return ft


def features_sidecar(path, transform, source, transform_file=None):
    """Write ``<path>.json`` beside a features file: which transform (fingerprint) made the features, and the
    name of the saved transform file (in the same folder), if any."""
    from pathlib import Path

    from ..io import atomic_write_json

    path = Path(path)
    meta = {"format": "selfexpress-features", "fingerprint": transform.fingerprint_,
            "n_components": int(transform.n_components), "source": str(source),
            "transform_file": transform_file, "transform": transform.to_state()[1]}
    atomic_write_json(path.with_suffix(".json"), meta)
    return path.with_suffix(".json")


def read_features_sidecar(path):
    """The sidecar dict of a features file written by ``selfexpress features``, or None if there is none."""
    from pathlib import Path

    side = Path(path).with_suffix(".json")
    if Path(path).suffix == ".json" or not side.is_file():
        return None
    try:
        meta = json.loads(side.read_text("utf-8"))
    except (OSError, ValueError, RecursionError):
        return None
    return meta if isinstance(meta, dict) and meta.get("format") == "selfexpress-features" else None
