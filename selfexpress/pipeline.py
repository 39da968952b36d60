"""End-to-end runs: dataset -> features -> method -> coefficients -> graph -> labels -> metrics.

The CLI and the benchmarks call :func:`run`; nothing here is CLI-only.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

__all__ = ["METHODS", "PRESETS", "RAW_INPUT_METHODS", "make_estimator", "load_input", "run", "RunResult"]

#: method name -> (module, class name)
METHODS = {
    "senet": ("selfexpress.models.senet", "SENet"),
    "ensc": ("selfexpress.models.ensc", "ElasticNetSubspaceClustering"),
    "ssc-omp": ("selfexpress.models.ssc_omp", "SSCOMP"),
    "energy": ("selfexpress.models.energy", "EnergySubspaceClustering"),
    "sscn": ("selfexpress.models.sscn", "SSCN"),
    "dscnet": ("selfexpress.models.dscnet", "DSCNet"),
    "ncsc": ("selfexpress.models.ncsc", "NCSC"),
    "kmeans": (None, "kmeans"),
    "spectral": (None, "spectral"),
}

#: (method, dataset family) -> default parameters, from the papers / reference code.
PRESETS = {
    ("ensc", "synthetic"): dict(gamma=50.0, tau=0.9),
    ("ensc", "image"): dict(gamma=200.0, tau=0.9, gamma_nz=True, n_components=15, affinity="knn"),  # 0.980 vs 0.83 (symmetric) on MNIST-full
    ("ssc-omp", "synthetic"): dict(n_nonzero=6),
    ("ssc-omp", "image"): dict(n_nonzero=5, thr=1e-5, n_components=15, affinity="symmetric"),
    ("senet", "synthetic"): dict(gamma=50.0, lmbd=0.9, n_iter=500, hidden_sizes=(128, 128, 128), embed_dim=128, lr_threshold=0.03,
                                 affinity="symmetric"),
    # CPU preset (issue 12): narrow nets, a sampled training set, the EnSC teacher; the paper's own settings
    # are PAPER_PRESETS["senet"].
    ("senet", "image"): dict(gamma=200.0, lmbd=0.9, n_components=15, affinity="symmetric", n_train=5000,
                             n_iter=2500, hidden_sizes=(256, 256, 256), embed_dim=256, lr_threshold=0.03,
                             teacher="ensc", n_nonzero=100),
}

# SSCN / DSC-Net: raw pixels in [0, 1] through their own conv auto-encoder (the reference's MNIST settings are
# the estimators' defaults); vector data goes through the identity ("linear") variant.
PRESETS.update({
    ("sscn", "image"): dict(architecture="conv", image_shape=(28, 28)),
    ("sscn", "synthetic"): dict(max_cluster_dim=6, n_epochs=100, batch_size=200, batch_size_clf=200, n_neighbors=30),
    ("dscnet", "image"): dict(architecture="conv", image_shape=(28, 28)),
    ("dscnet", "synthetic"): dict(max_cluster_dim=6, n_neighbors=30),
    # NCSC CPU schedule (benchmarks/ncsc.py; the paper's is the estimator's default: 60 AE epochs, batch 5,000)
    ("ncsc", "image"): dict(architecture="conv", image_shape=(28, 28), n_epochs_ae=3, batch_size=1000, lr=3e-3,
                            n_epochs=5),
    ("ncsc", "synthetic"): dict(batch_size=500, n_epochs=50, classifier_channels=(64, 64), u=0.5, lambda1=10.0),
    # NCSC on an image dataset's scattering + PCA features (``features="scattering"``): identity encoder, MLP
    # classifier, the KL-to-uniform balance (benchmarks/ncsc.py --features scattering; README figures).
    ("ncsc", "image-features"): dict(architecture="linear", batch_size=2000, lr=3e-3, u=0.7, balance="uniform",
                                     n_epochs=25),
})

#: methods that read raw pixels in [0, 1] (their own encoder), not scattering + PCA features
RAW_INPUT_METHODS = {"sscn", "dscnet", "ncsc"}

# Energy-based SSC (LDRSC): raw pixels through its own contrastive encoder; images only (no vector variant).
PRESETS[("energy", "image")] = dict(image_shape=(28, 28))
RAW_INPUT_METHODS.add("energy")

#: senet.txt / reference-code settings (GPU scale: 100k iterations of 3 x 1024 nets).
PAPER_PRESETS = {
    "senet": dict(gamma=200.0, lmbd=0.9, n_components=15, affinity="knn", hidden_sizes=(1024, 1024, 1024),
                  embed_dim=1024, n_iter=100_000, batch_size=100, lr=1e-3, grad_clip=1e-3, n_nonzero=1000),
}


def dataset_family(name):
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
    if features == "auto":
        return method in RAW_INPUT_METHODS
    if features == "pixels" and method not in RAW_INPUT_METHODS:
        raise ValueError(f"method {method!r} clusters feature vectors; features='pixels' is for "
                         f"{sorted(RAW_INPUT_METHODS)}")
    return features == "pixels"


@dataclass
class RunResult:
    labels: np.ndarray
    metrics: dict = field(default_factory=dict)
    timings: dict = field(default_factory=dict)
    estimator: object = None
    params: dict = field(default_factory=dict)


def load_input(dataset="synthetic", input_path=None, labels_path=None, data_dir=None, cache_dir=None,
               n_components=500, random_state=0, verbose=False, raw=False):
    """Return ``(X, y, n_clusters_hint)`` for a built-in dataset name or a user file.

    ``dataset``: ``synthetic`` (5 subspaces of dim 6 in R^15, 200 points each, senet.txt §4.1),
    ``digits`` (scikit-learn's bundled 8x8 digits, no download), or an image dataset name
    (``mnist-full``, ``mnist-test``, ``fashion-mnist-full``, ...; scattering + PCA features, cached).
    ``input_path``: a ``.npy``, ``.csv``, ``.txt``, ``.mat`` or idx file of points (rows); ``labels_path``
    optionally gives ground truth for the metrics.
    ``raw=True`` (methods in :data:`RAW_INPUT_METHODS`): an image dataset's pixels flattened to
    ``(n, H*W[*C])`` float32 and scaled to [0, 1] (uint8 / 255), instead of features.
    """
    if input_path is not None:
        from .data import load_array, load_idx, load_labels, load_mat

        path = str(input_path)
        if path.endswith(".mat"):
            X = load_mat(path)
        elif "idx" in path.rsplit("/", 1)[-1]:
            arr = load_idx(path)
            X = arr.reshape(len(arr), -1)
        elif path.endswith(".npy"):
            X = load_array(path, mmap_mode="r")  # memory-mapped: rows are read block by block where possible
        else:
            X = load_array(path)
        y = load_labels(labels_path) if labels_path else None
        if y is not None and len(y) != len(X):
            raise ValueError(f"labels file {labels_path} holds {len(y)} labels but {input_path} holds {len(X)} points")
        return X, y, (len(np.unique(y)) if y is not None else None)
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
    from .features import dataset_features

    X, y = dataset_features(dataset, data_dir=data_dir, n_components=n_components, cache_dir=cache_dir,
                            verbose=verbose)
    return X, y, len(np.unique(y))


def _preset_family(method, dataset, features):
    """The PRESETS key's second half: the dataset family, or "image-features" for a pixel method on features."""
    family = dataset_family(dataset)
    if family == "image" and method in RAW_INPUT_METHODS and not wants_raw_input(method, features):
        if (method, "image-features") not in PRESETS:
            raise ValueError(f"method {method!r} has no variant for scattering features; use features='pixels'")
        family = "image-features"
    return family


def make_estimator(method, n_clusters, dataset="synthetic", random_state=0, verbose=False, features="auto",
                   **overrides):
    """Build the estimator for ``method`` with the dataset family's preset, then ``overrides``.

    ``features``: see :func:`wants_raw_input`; a pixel method given an image dataset's features gets the
    ``(method, "image-features")`` preset where there is one.
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {sorted(METHODS)}")
    params = dict(PRESETS.get((method, _preset_family(method, dataset, features)), {}))
    params.update({k: v for k, v in overrides.items() if v is not None})
    module, cls = METHODS[method]
    if module is None:
        return _SimpleBaseline(method, n_clusters, random_state, params), params
    import importlib

    est_cls = getattr(importlib.import_module(module), cls)
    accepted = est_cls().get_params() if _no_required_args(est_cls) else None
    if accepted is not None:
        unknown = sorted(set(params) - set(accepted))
        if unknown:
            raise ValueError(f"method {method!r} does not take parameter(s) {unknown}")
    base = dict(n_clusters=n_clusters, random_state=random_state)
    if accepted is None or "verbose" in accepted:
        base["verbose"] = verbose
    return est_cls(**base, **params), params


def _no_required_args(cls):
    import inspect

    sig = inspect.signature(cls.__init__)
    return all(p.default is not inspect.Parameter.empty for n, p in sig.parameters.items()
               if n != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD))


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
        cache_dir=None, random_state=0, verbose=False, features="auto", **params):
    """Run one method end to end; returns a :class:`RunResult` with labels, metrics and stage times.

    ``features``: "auto" (the method's own input), "pixels" or "scattering" for an image dataset
    (:func:`wants_raw_input`); e.g. ``run("mnist-full", "ncsc", features="scattering")``.
    """
    from .metrics import evaluate

    if method in METHODS:  # bad method / features combinations fail before the (possibly long) feature stage
        _preset_family(method, dataset if input_path is None else "file:", features)
    timings = {}
    t0 = time.perf_counter()
    X, y, k_hint = load_input(dataset, input_path, labels_path, data_dir, cache_dir,
                              random_state=random_state, verbose=verbose, raw=wants_raw_input(method, features))
    timings["load+features"] = time.perf_counter() - t0
    n_clusters = n_clusters or k_hint
    if n_clusters is None:
        raise ValueError("n_clusters is required when the input has no labels")
    est, used = make_estimator(method, n_clusters, dataset if input_path is None else "file:", random_state,
                               verbose, features=features, **params)
    t0 = time.perf_counter()
    est.fit(X)
    timings["fit"] = time.perf_counter() - t0
    timings.update({f"fit.{k}": v for k, v in getattr(est, "timings_", {}).items()})
    metrics = {}
    if y is not None:
        # SRE / CONN need the coefficients; both work on sparse C.
        metrics = evaluate(y, est.labels_, coef=getattr(est, "coef_", None))
    return RunResult(labels=np.asarray(est.labels_), metrics=metrics, timings=timings, estimator=est, params=used)
