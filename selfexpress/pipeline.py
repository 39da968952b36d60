"""End-to-end runs: dataset -> features -> method -> coefficients -> graph -> labels -> metrics.

The CLI and the benchmarks call :func:`run`; nothing here is CLI-only.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

__all__ = ["METHODS", "PRESETS", "RAW_INPUT_METHODS", "BASELINES", "method_names", "make_estimator", "load_input",
           "run", "RunResult"]

#: methods that are not estimators of :mod:`selfexpress.models` but baselines run here (:class:`_SimpleBaseline`)
BASELINES = ("kmeans", "spectral")

# METHODS, PRESETS, RAW_INPUT_METHODS and PAPER_PRESETS are views derived from the registry
# (:func:`selfexpress.models.registry`: every estimator class declares its name, input kind, model-file kind and
# presets); they are built on first access (importing the model modules) and then kept, so they stay mutable dicts.
_DERIVED = ("METHODS", "PRESETS", "RAW_INPUT_METHODS", "PAPER_PRESETS")


def _derive(name):
    from .models import method_info, registry

    infos = {m: method_info(m) for m in registry()}
    if name == "METHODS":  # method name -> (module, class name)
        value = {m: (i["cls"].__module__, i["cls"].__name__) for m, i in infos.items()}
        value.update({b: (None, b) for b in BASELINES})
    elif name == "PRESETS":  # (method, dataset family) -> default parameters, from the papers / reference code
        value = {(m, fam): dict(p) for m, i in infos.items() for fam, p in i["presets"].items()}
    elif name == "RAW_INPUT_METHODS":  # methods that read raw pixels in [0, 1] (their own encoder)
        value = {m for m, i in infos.items() if i["input_kind"] == "pixels"}
    else:  # the papers' own settings (GPU scale), where a class declares them
        value = {m: dict(i["paper_preset"]) for m, i in infos.items() if i["paper_preset"]}
    globals()[name] = value
    return value


def __getattr__(name):
    if name in _DERIVED:
        return _derive(name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _view(name):
    """A derived view (:data:`METHODS`, ...) from inside this module (module ``__getattr__`` only serves outsiders)."""
    return globals()[name] if name in globals() else _derive(name)


def method_names():
    """Every ``method=`` name: the registered estimators, then the baselines."""
    from .models import registry

    return [*registry(), *BASELINES]


def dataset_family(name):
    if name == "file:images":  # a user's file of images turned into scattering features
        return "image"
    return "synthetic" if name in (None, "synthetic", "digits") or name.startswith("file:") else "image"


#: what ``features=`` may ask for: the method's own input, raw pixels in [0, 1], or scattering + PCA features
FEATURE_KINDS = ("auto", "pixels", "scattering")


def wants_raw_input(method, features="auto"):
    """Whether ``method`` reads an image dataset's raw pixels (True) or its scattering + PCA features (False).

    ``features="auto"``: the method's own input (:data:`RAW_INPUT_METHODS` read pixels); "pixels" / "scattering"
    force one. Methods without an encoder of their own (SENet, EnSC, ...) cannot take pixels through this switch.
    """
    if features not in FEATURE_KINDS:
        raise ValueError(f"features must be one of {FEATURE_KINDS}, got {features!r}")
    raw_methods = _view("RAW_INPUT_METHODS")
    if features == "auto":
        return method in raw_methods
    if features == "pixels" and method not in raw_methods:
        raise ValueError(f"method {method!r} clusters feature vectors; features='pixels' is for "
                         f"{sorted(raw_methods)}")
    return features == "pixels"


@dataclass
class RunResult:
    labels: np.ndarray
    metrics: dict = field(default_factory=dict)
    timings: dict = field(default_factory=dict)
    estimator: object = None
    params: dict = field(default_factory=dict)


def load_input(dataset="synthetic", input_path=None, labels_path=None, data_dir=None, cache_dir=None,
               n_components=500, random_state=0, verbose=False, raw=False, *, return_transform=False,
               feature_transform=None, image_features=False, device=None, skip_header=False):
    """Return ``(X, y, n_clusters_hint)`` for a built-in dataset name or a user file.

    ``dataset``: ``synthetic`` (5 subspaces of dim 6 in R^15, 200 points each, senet.txt §4.1),
    ``digits`` (scikit-learn's bundled 8x8 digits, no download), or an image dataset name
    (``mnist-full``, ``mnist-test``, ``fashion-mnist-full``, ...; scattering + PCA features, cached).
    ``input_path``: a ``.npy``, ``.csv``, ``.txt``, ``.mat`` or idx file of points (rows); ``labels_path``
    optionally gives ground truth for the metrics.
    ``raw=True`` (methods in :data:`RAW_INPUT_METHODS`): an image dataset's pixels flattened to
    ``(n, H*W[*C])`` float32 and scaled to [0, 1] (uint8 / 255), instead of features.

    Feature bases: the features of an image dataset come from a :class:`~selfexpress.features.ScatteringPCA`
    fitted on that dataset, or, with ``feature_transform``, from that fitted transform (a model's training
    basis). ``image_features=True`` treats ``input_path`` as grey-scale images and makes their features the
    same way. A features file written by ``selfexpress features`` brings its transform (read from its sidecar).
    ``return_transform=True`` returns ``(X, y, n_clusters_hint, transform_or_None)``. ``device``: where the
    scattering and the projection run (None: "auto", CUDA when available; see :mod:`selfexpress._device`).
    ``skip_header=True``: the first line of a text ``input_path`` (.csv, .txt, ...) is a header, not a point.
    """
    X, y, k, ft = _load_input(dataset, input_path, labels_path, data_dir, cache_dir, n_components, random_state,
                              verbose, raw, feature_transform, image_features, device, skip_header)
    return (X, y, k, ft) if return_transform else (X, y, k)


def _read_points(input_path, skip_header=False):
    from .data import load_array, load_idx, load_mat

    path = str(input_path)
    if path.endswith(".mat"):
        return load_mat(path)
    if "idx" in path.rsplit("/", 1)[-1]:
        arr = load_idx(path)
        return arr if arr.ndim == 3 else arr.reshape(len(arr), -1)
    if path.endswith(".npy"):
        return load_array(path, mmap_mode="r")  # memory-mapped: rows are read block by block where possible
    return load_array(path, skiprows=int(skip_header))


def _load_input(dataset, input_path, labels_path, data_dir, cache_dir, n_components, random_state, verbose, raw,
                feature_transform, image_features, device=None, skip_header=False):
    if input_path is not None and (image_features or feature_transform is not None):
        from .data import load_labels
        from .features import ScatteringPCA

        images = np.asarray(_read_points(input_path, skip_header))
        y = load_labels(labels_path) if labels_path else None
        if y is not None and len(y) != len(images):
            raise ValueError(f"labels file {labels_path} holds {len(y)} labels but {input_path} holds {len(images)} "
                             "images")
        if feature_transform is not None:
            if not feature_transform.accepts_images(images):
                H, W = feature_transform.image_shape_
                raise ValueError(f"{input_path} holds an array of shape {images.shape}, not {H}x{W} images as the "
                                 "feature transform expects")
            ft = feature_transform
            X = ft.transform(images)
        else:
            if images.ndim == 2 and images.shape[1] == 784:
                images = images.reshape(-1, 28, 28)
            if images.ndim != 3:
                raise ValueError(f"{input_path} holds an array of shape {images.shape}; scattering features need "
                                 "grey-scale images (n, H, W), or (n, 784) rows of 28x28 images")
            ft = ScatteringPCA(n_components=n_components, cache_dir=cache_dir, verbose=verbose, device=device or "auto")
            X = ft.fit_transform(images)
        return X, y, (len(np.unique(y)) if y is not None else None), ft
    if input_path is not None:
        X, y, k = _load_points(input_path, labels_path, skip_header)
        ft = None
        from .features import read_features_sidecar

        side = read_features_sidecar(input_path)
        if side is not None and side.get("transform_file"):
            from pathlib import Path

            from .features import ScatteringPCA

            tpath = Path(input_path).parent / side["transform_file"]
            ft = ScatteringPCA.load(tpath, cache_dir=cache_dir, verbose=verbose)
            if ft.fingerprint_ != side.get("fingerprint"):
                raise ValueError(f"{tpath} (fingerprint {ft.fingerprint_}) is not the transform that made "
                                 f"{input_path} (fingerprint {side.get('fingerprint')})")
        return X, y, k, ft
    if dataset in ("synthetic", "digits") or raw:
        X, y, k = _load_builtin(dataset, data_dir, random_state, verbose, raw)
        return X, y, k, None
    from .features import dataset_features

    X, y, ft = dataset_features(dataset, data_dir=data_dir, n_components=n_components, cache_dir=cache_dir,
                                verbose=verbose, basis=feature_transform, return_transform=True, device=device)
    return X, y, len(np.unique(y)), ft


def _load_points(input_path, labels_path, skip_header=False):
    from .data import load_labels

    X = _read_points(input_path, skip_header)
    if X.ndim == 3:
        X = X.reshape(len(X), -1)
    y = load_labels(labels_path) if labels_path else None
    if y is not None and len(y) != len(X):
        raise ValueError(f"labels file {labels_path} holds {len(y)} labels but {input_path} holds {len(X)} points")
    return X, y, (len(np.unique(y)) if y is not None else None)


def _load_builtin(dataset, data_dir, random_state, verbose, raw):
    if dataset == "synthetic":
        from .data import make_union_of_subspaces

        X, y, _ = make_union_of_subspaces(5, 6, 15, 200, random_state=random_state)
        return X, y, 5
    if dataset == "digits":
        from sklearn.datasets import load_digits

        d = load_digits()
        return d.data.astype(np.float32), d.target, 10
    if raw:
        from .data import load_dataset

        ds = load_dataset(dataset, data_dir=data_dir, verbose=verbose)
        X = ds.data.astype(np.float32)
        if ds.images is not None and ds.images.dtype == np.uint8:
            X /= 255.0
        return X, ds.labels, ds.n_classes
    raise ValueError(f"dataset {dataset!r} needs features; this is a bug in selfexpress.pipeline")


def _preset_family(method, dataset, features):
    """The PRESETS key's second half: the dataset family, or "image-features" for a pixel method on features."""
    family = dataset_family(dataset)
    if family == "image" and method in _view("RAW_INPUT_METHODS") and not wants_raw_input(method, features):
        if (method, "image-features") not in _view("PRESETS"):
            raise ValueError(f"method {method!r} has no variant for scattering features; use features='pixels'")
        family = "image-features"
    return family


def make_estimator(method, n_clusters, dataset="synthetic", random_state=0, verbose=False, features="auto",
                   **overrides):
    """Build the estimator for ``method`` with the dataset family's preset, then ``overrides``.

    ``features``: see :func:`wants_raw_input`; a pixel method given an image dataset's features gets the
    ``(method, "image-features")`` preset where there is one.
    """
    if method not in _view("METHODS"):
        raise ValueError(f"unknown method {method!r}; choose one of {method_names()}")
    params = dict(_view("PRESETS").get((method, _preset_family(method, dataset, features)), {}))
    params.update({k: v for k, v in overrides.items() if v is not None})
    if method in BASELINES:
        return _SimpleBaseline(method, n_clusters, random_state, params), params
    from .models import get_method

    est_cls = get_method(method)
    check_method_params(method, params)
    base = dict(n_clusters=n_clusters, random_state=random_state)
    if "verbose" in est_cls().get_params():
        base["verbose"] = verbose
    return est_cls(**base, **params), params


def check_method_params(method, params):
    """Refuse parameters that ``method`` does not take, naming the method and the parameters it takes."""
    if method in BASELINES:
        return
    from .models import get_method

    accepted = get_method(method)().get_params()
    unknown = sorted(set(params) - set(accepted))
    if unknown:
        shown = ", ".join(sorted(set(accepted) - {"n_clusters", "random_state", "verbose"}))
        raise ValueError(f"method {method!r} does not take {', '.join(unknown)}; its parameters are: {shown}")


class _SimpleBaseline:
    """k-means on the features, or spectral clustering of a symmetrised k-NN graph (Table 3 baselines)."""

    def __init__(self, kind, n_clusters, random_state, params):
        self.kind, self.n_clusters, self.random_state, self.params = kind, n_clusters, random_state, params
        self.timings_ = {}

    def fit(self, X):
        from ._validation import check_data, check_n_clusters

        X = check_data(X)
        check_n_clusters(self.n_clusters, X.shape[0])
        t0 = time.perf_counter()
        if self.kind == "kmeans":
            from sklearn.cluster import KMeans

            self.labels_ = KMeans(self.n_clusters, n_init=self.params.get("n_init", 10),
                                  random_state=self.random_state).fit_predict(X)
        else:
            from sklearn.neighbors import kneighbors_graph

            from .cluster import spectral_clustering

            k = self.params.get("n_neighbors", 10)
            G = kneighbors_graph(X, k, mode="connectivity", include_self=False)
            self.affinity_ = (0.5 * (G + G.T)).tocsr()
            self.labels_ = spectral_clustering(self.affinity_, self.n_clusters, random_state=self.random_state)
        self.timings_["cluster"] = time.perf_counter() - t0
        return self


def run(dataset="synthetic", method="senet", n_clusters=None, input_path=None, labels_path=None, data_dir=None,
        cache_dir=None, random_state=0, verbose=False, features="auto", skip_header=False, **params):
    """Run one method end to end; returns a :class:`RunResult` with labels, metrics and stage times.

    ``features``: "auto" (the method's own input), "pixels" or "scattering" for an image dataset
    (:func:`wants_raw_input`); e.g. ``run("mnist-full", "ncsc", features="scattering")``.
    """
    from .metrics import evaluate

    # an input file of images with features="scattering" is an image dataset of the user's
    image_file = input_path is not None and features == "scattering" and method not in _view("RAW_INPUT_METHODS")
    family_of = dataset if input_path is None else ("file:images" if image_file else "file:")
    if method in _view("METHODS"):  # bad method / features / parameters fail before the (long) feature stage
        _preset_family(method, family_of, features)
        check_method_params(method, {k: v for k, v in params.items() if v is not None})
    timings = {}
    t0 = time.perf_counter()
    X, y, k_hint, transform = load_input(dataset, input_path, labels_path, data_dir, cache_dir,
                                         random_state=random_state, verbose=verbose,
                                         raw=wants_raw_input(method, features), return_transform=True,
                                         image_features=image_file, device=params.get("device"),
                                         skip_header=skip_header)
    timings["load+features"] = time.perf_counter() - t0
    n_clusters = k_hint if n_clusters is None else n_clusters
    if n_clusters is None:
        raise ValueError("n_clusters is required when the input has no labels")
    est, used = make_estimator(method, n_clusters, family_of, random_state, verbose, features=features, **params)
    t0 = time.perf_counter()
    est.fit(X)
    if transform is not None:  # the model keeps its features' basis: predict maps raw images into it
        est.feature_transform_ = transform
    timings["fit"] = time.perf_counter() - t0
    timings.update({f"fit.{k}": v for k, v in getattr(est, "timings_", {}).items()})
    metrics = {}
    if y is not None:
        # SRE / CONN need the coefficients; both work on sparse C.
        metrics = evaluate(y, est.labels_, coef=getattr(est, "coef_", None))
    return RunResult(labels=np.asarray(est.labels_), metrics=metrics, timings=timings, estimator=est, params=used)
