"""What the torch estimators share: one base for SSCN, DSC-Net, NCSC and the energy model.

:class:`TorchClustering` owns the parameter checks every one of them makes (``n_clusters``, ``random_state``,
``device``), the fit prologue (validated input, ``n_clusters`` against the data, the memory guard, the one seed of
the fit) and logging. :class:`AutoEncoderClustering` adds the auto-encoder front of SSCN, DSC-Net and NCSC: a
conv auto-encoder for images or the identity for feature vectors, its parameter checks, its input handling, the
"load or pre-train the auto-encoder" stage and the steps of loading a model file that SSCN and NCSC share (the
model-file helpers of every estimator are in :mod:`._files`). :class:`DSCPostprocessing` is DSC-Net's
post-processing of the coefficients (thresholding, SVD-based affinity), shared by SSCN (pseudo-labels) and DSC-Net.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClusterMixin, TransformerMixin

from .._memory import check_allocation
from .._validation import (check_data, check_distinct_points, check_is_fitted, check_n_clusters, check_n_features,
                           check_positive, check_random_state_int, fit_seed)
from ._autoencoder import (ConvAutoEncoder, IdentityAutoEncoder, as_input_shape, check_architecture,
                           conv_output_sizes, load_or_pretrain)
from ._files import config_n_features, estimator_from_config, load_network

__all__ = ["TorchClustering", "AutoEncoderClustering", "DSCPostprocessing", "EmbeddingTransformerMixin",
           "check_torch_device", "check_float32_scale", "flatten_points"]


def check_torch_device(device):
    """``ValueError`` unless ``device`` names a torch device ("cpu", "cuda:0", ...)."""
    try:
        torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"device {device!r} is not a valid torch device: {exc}") from None


def flatten_points(X, name="X"):
    """Accept (n, D), (n, H, W) or (n, C, H, W); return the validated (n, D) float32 array."""
    if hasattr(X, "shape") and getattr(X, "ndim", 2) > 2:
        arr = np.asarray(X)
        if arr.ndim not in (3, 4):
            raise ValueError(f"{name} must be (n, D), (n, H, W) or (n, C, H, W), got shape {arr.shape}")
        X = arr.reshape(arr.shape[0], -1)
    return check_data(X, name=name, min_samples=1, allow_zero_rows=True)


def check_float32_scale(X, name="X", chunk=8192):
    """``ValueError`` unless the float32 inner products of the rows of ``X`` neither overflow nor underflow: every
    non-zero row's Euclidean norm in ``[1e-18, 1e18]`` (squares within float32's normal range, 1.2e-38 to 3.4e38).

    The auto-encoder models self-express ``X`` (or its codes) without normalising it: rows of norm 1e30 make the
    loss infinite, rows of norm 1e-30 make it zero and the training blind; refused, with how to fix it."""
    lo, hi = np.inf, 0.0
    for s in range(0, X.shape[0], chunk):
        norms = np.linalg.norm(X[s:s + chunk].astype(np.float64), axis=1)
        hi = max(hi, float(norms.max(initial=0.0)))
        lo = min(lo, float(norms[norms > 0].min(initial=np.inf)))
    if hi > 1e18:
        raise ValueError(f"{name} has rows of norm up to {hi:.3g}; their inner products overflow float32. Rescale "
                         f"{name} (e.g. rows to unit norm, or pixels to [0, 1])")
    if lo < 1e-18:
        raise ValueError(f"{name} has rows of norm down to {lo:.3g}; their inner products underflow float32 to zero. "
                         f"Rescale {name} (e.g. rows to unit norm, or pixels to [0, 1])")


class EmbeddingTransformerMixin(TransformerMixin):
    """scikit-learn's transformer side of an estimator whose ``transform`` gives its learned embedding (NCSC, SSCN,
    the energy model): ``fit_transform`` and the transformer tags, which say the embedding is float32 whatever the
    input's float dtype (the networks compute in float32). Listed before the estimator's base class."""

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.transformer_tags.preserves_dtype = ["float32"]
        return tags


class TorchClustering(ClusterMixin, BaseEstimator):
    """Base of the torch estimators: common checks, the fit prologue, logging.

    A subclass sets ``_log_name`` and ``_min_samples`` and implements ``_check_params`` (calling
    :meth:`_check_common_params`), ``_flatten`` and ``_memory_estimate(n, n_features, ...)``.
    """

    _log_name = "model"
    _min_samples = 2
    #: the fitted attribute ``predict`` / ``transform`` need
    _fitted_attr = "module_"
    #: the parameter holding pretrained weights (a state_dict), part of a stage's checkpoint identity
    _pretrained_param = "pretrained_autoencoder"

    def _check_common_params(self):
        """``random_state`` and ``device``. ``n_clusters`` is checked with the data (:meth:`_validated`), after the
        number of samples, as every estimator of the package does (:func:`selfexpress._validation.check_n_clusters`)."""
        check_random_state_int(self.random_state)
        if isinstance(getattr(type(self), "_device", None), property):
            self._device  # noqa: B018  (a resolving device property validates ``device``)
        else:
            check_torch_device(self.device)

    def _flatten(self, X, name="X"):
        return flatten_points(X, name)

    def _validated(self, X):
        """Checked parameters, then ``(X as (n, D) float32, n_clusters checked against n)``; fewer distinct points
        than ``n_clusters`` are refused and duplicates warned about, as by every estimator of the package."""
        self._check_params()
        X = self._flatten(X)
        n = X.shape[0]
        if n < self._min_samples:
            raise ValueError(f"X has {n} sample(s) (shape={X.shape}); at least {self._min_samples} are required")
        K = check_n_clusters(self.n_clusters, n)
        check_distinct_points(X, K)
        return X, K

    def _start_fit(self, X):
        """The one seed of this fit (``random_state=None``: fresh), fresh ``timings_`` / ``history_``."""
        seed = fit_seed(self, new=True)
        self.n_features_in_ = X.shape[1]
        self.timings_, self.history_ = {}, {}
        return seed

    def _log(self, msg):
        if self.verbose:
            print(f"[{self._log_name}] {msg}", flush=True)

    def _prepare(self, X, name="X"):
        """``X`` validated for inference on the fitted model: (n, D) float32 with the fitted number of features."""
        check_is_fitted(self, self._fitted_attr)
        X = self._flatten(X, name)
        check_n_features(X, self.n_features_in_, name, estimator=self)
        return X

    def _stage_fingerprint(self, X, stage, skip=(), keep=None):
        """Identity of a training stage for its checkpoints: the parameters it depends on (all but ``skip``, or only
        those in ``keep``), the pretrained weights given and the data. A checkpoint resumes only a run with the
        same identity."""
        from ._files import data_fingerprint, state_dict_digest

        skip = set(skip) | {"verbose", "checkpoint_dir", "resume", "device", self._pretrained_param}
        params = {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.get_params().items()
                  if k not in skip and (keep is None or k in keep)}
        pre = state_dict_digest(getattr(self, self._pretrained_param))
        return {"model": self._model_kind, "stage": stage, "params": params, "pretrained": pre, **data_fingerprint(X)}


class AutoEncoderClustering(TorchClustering):
    """SSCN, DSC-Net and NCSC: a conv auto-encoder on images (``architecture="conv"``) or the identity on feature
    vectors (``"linear"``; ``"auto"`` picks by the number of features) in front of the clustering model."""

    #: the (memory) bytes of one more float32 copy of X per point, added to every memory-guard entry
    _extra_copy = True

    def _flatten(self, X, name="X"):
        """(n, D) float32 rows (:func:`flatten_points`) whose inner products float32 holds
        (:func:`check_float32_scale`): the self-expression does not normalise them."""
        X = flatten_points(X, name)
        check_float32_scale(X, name)
        return X

    def _check_autoencoder_params(self):
        if self.architecture not in ("auto", "conv", "linear"):
            raise ValueError(f"architecture must be 'auto', 'conv' or 'linear', got {self.architecture!r}")
        check_architecture(self.image_shape, self.kernel_sizes, self.channels, self.stride, self.paddings)
        check_positive(self.n_epochs_ae, "n_epochs_ae", integer=True, allow_zero=True)
        check_positive(self.batch_size_ae, "batch_size_ae", integer=True)
        check_positive(self.lr_ae, "lr_ae")
        if self.pretrained_autoencoder is not None and not isinstance(self.pretrained_autoencoder, dict):
            raise ValueError("pretrained_autoencoder must be None or a state_dict (dict of tensors), got "
                             f"{type(self.pretrained_autoencoder).__name__}")

    def _resolve_architecture(self, n_features):
        shape = as_input_shape(self.image_shape)
        n_pix = int(np.prod(shape))
        if self.architecture == "conv" and n_features != n_pix:
            raise ValueError(f"architecture='conv' needs {n_pix} features per point (image_shape={shape}), "
                             f"got {n_features}")
        if self.architecture == "linear" or (self.architecture == "auto" and n_features != n_pix):
            return "linear"
        return "conv"

    def _autoencoder(self, n_features, arch):
        if arch == "conv":
            return ConvAutoEncoder(as_input_shape(self.image_shape), self.kernel_sizes, self.channels, self.stride,
                                   self.paddings)
        return IdentityAutoEncoder(n_features)

    def _per_point_bytes(self, n_features, arch):
        """Rough training bytes per point: activations, ReLU outputs and their gradients (float32)."""
        if arch != "conv":
            return 12 * n_features
        shape, kernels, chans, stride, pads = check_architecture(self.image_shape, self.kernel_sizes,
                                                                 self.channels, self.stride, self.paddings)
        sizes = conv_output_sizes(shape[1:], kernels, stride, pads)
        acts = sum(c * h * w for c, (h, w) in zip(chans, sizes[1:]))
        return 12 * (3 * n_features + 4 * acts)

    def _pretrain_estimate(self, n, n_features, arch, who):
        """The memory-guard entries of the auto-encoder pretraining (none when it does not run)."""
        if arch != "conv" or self.pretrained_autoencoder is not None or int(self.n_epochs_ae) <= 0:
            return []
        m = min(int(self.batch_size_ae), n)
        return [(m * self._per_point_bytes(n_features, arch), f"{who} auto-encoder pretraining on batches of {m} "
                 "images", f"lower batch_size_ae (now {self.batch_size_ae})")]

    def _begin(self, X):
        """The fit prologue: ``(X (n, D), n_clusters, architecture, seed)`` after every check and the memory guard."""
        X, K = self._validated(X)
        n, D = X.shape
        arch = self._resolve_architecture(D)
        extra = 4 * n * D if self._extra_copy else 0
        device = getattr(self, "_device", self.device)
        for nbytes, what, hint in self._memory_estimate(n, D, arch):
            check_allocation(int(nbytes + extra), what, hint, device=device)
        seed = self._start_fit(X)
        self.architecture_ = arch
        return X, K, arch, seed

    def fit(self, X, y=None):
        """Fit the model on ``X`` and label it (``labels_``).

        Parameters
        ----------
        X : array-like (n_samples, n_features), (n, H, W) or (n, C, H, W)
            Images (pixels in [0, 1]) for the conv auto-encoder, or feature vectors for the identity one.
        y : ignored

        Returns
        -------
        self
        """
        X, K, arch, seed = self._begin(X)  # checks, memory guard, the one seed of this fit
        self._fit(X, K, arch, seed)
        return self

    def fit_predict(self, X, y=None):
        """Fit and return ``labels_``."""
        return self.fit(X).labels_

    # ------------------------------------------------------------------ model files
    @classmethod
    def _from_config(cls, config, device):
        """``(estimator, n_features, architecture)`` from a model file's configuration, each checked: the parameters
        as ``fit`` checks them (:func:`._files.estimator_from_config`), ``n_features_in`` a positive integer and
        ``architecture`` the one the parameters imply for it."""
        model, _ = estimator_from_config(cls, config, device)
        n_features = config_n_features(config)
        arch = config["architecture"]
        if arch not in ("conv", "linear") or arch != model._resolve_architecture(n_features):
            raise ValueError(f"architecture {arch!r} does not match the parameters and n_features_in")
        return model, n_features, arch

    def _restore_network(self, module, tensors, config, n_features, arch):
        """The fitted state a model file holds besides the labels: ``module_`` (``module`` loaded with the file's
        checked ``net.*`` tensors, in eval mode), ``n_features_in_``, ``architecture_``, ``n_parameters_`` and
        ``timings_``; the pretrained auto-encoder weights are not kept (``pretrained_autoencoder_`` is None)."""
        self.module_ = load_network(module, tensors)
        self.n_features_in_ = n_features
        self.architecture_ = arch
        self.n_parameters_ = int(sum(p.numel() for p in module.parameters() if p.requires_grad))
        self.pretrained_autoencoder_ = None
        self.timings_ = config.get("timings", {})

    def _start_network(self, module, X):
        """Record the network a fit trains (``module_``, ``n_parameters_``); return ``X`` as a float32 tensor on the
        device and the checkpoint folder (None without ``checkpoint_dir``)."""
        self.module_ = module
        self.n_parameters_ = int(sum(p.numel() for p in module.parameters() if p.requires_grad))
        Xt = torch.as_tensor(np.ascontiguousarray(X, dtype=np.float32), device=self._device)
        ckpt = getattr(self, "checkpoint_dir", None)
        return Xt, None if ckpt is None else Path(ckpt)

    def _pretrain(self, ae, Xt, X, arch, seed):
        """Load ``pretrained_autoencoder`` into ``ae`` or pre-train it (conv only); keep its weights and the time."""
        t0 = time.perf_counter()
        if arch == "conv":
            if self.pretrained_autoencoder is None and int(self.n_epochs_ae) > 0:
                self._log(f"pretraining the auto-encoder: {self.n_epochs_ae} epochs, batch {self.batch_size_ae}")
            ckpt = getattr(self, "checkpoint_dir", None)
            hist = load_or_pretrain(ae, Xt, pretrained=self.pretrained_autoencoder, n_epochs=self.n_epochs_ae,
                                    batch_size=self.batch_size_ae, lr=self.lr_ae, random_state=seed,
                                    verbose=self.verbose, checkpoint_dir=None if ckpt is None else Path(ckpt) / "ae",
                                    resume=getattr(self, "resume", False),
                                    fingerprint=None if ckpt is None else self._fingerprint(X, "ae"),
                                    autocast="env")
            if hist is not None:
                self.history_["ae"] = hist
        self.pretrained_autoencoder_ = {k: v.detach().cpu().clone() for k, v in ae.state_dict().items()}
        self.timings_["pretrain"] = time.perf_counter() - t0


class DSCPostprocessing:
    """DSC-Net's post-processing of self-expressive coefficients (SSCN's pseudo-labels, DSC-Net's labels):
    keep each column's largest entries up to ``noise_threshold`` of its mass, then the SVD-based affinity."""

    def _check_dsc_params(self):
        check_positive(self.max_cluster_dim, "max_cluster_dim", integer=True)
        for name in ("lambda_reconst", "lambda_reg", "lambda_ssc"):
            check_positive(getattr(self, name), name, allow_zero=True)
        check_positive(self.n_epochs, "n_epochs", integer=True, allow_zero=True)
        for name in ("n_neighbors", "block_size", "n_init"):
            check_positive(getattr(self, name), name, integer=True)
        for name in ("lr", "noise_alpha"):
            check_positive(getattr(self, name), name)
        if self.noise_threshold is not None:
            v = self.noise_threshold
            if isinstance(v, bool) or not isinstance(v, (int, float, np.floating)) or not 0 < v <= 1:
                raise ValueError(f"noise_threshold must be in (0, 1] or None, got {v!r}")
        if self.postprocess not in ("sparse", "dense"):
            raise ValueError(f"postprocess must be 'sparse' or 'dense', got {self.postprocess!r}")
        if self.max_nonzero is not None:
            check_positive(self.max_nonzero, "max_nonzero", integer=True)

    def _postprocess_estimate(self, n, who):
        b = min(int(self.block_size), n)
        kd = int(self.n_clusters) * int(self.max_cluster_dim)
        if self.postprocess == "dense":
            return (32 * n * n, f"{who} dense post-processing of {n} x {n} coefficients",
                    "use postprocess='sparse' (default)")
        return (24 * n * b + 72 * n * int(self.n_neighbors) + 48 * n * (kd + 1),
                f"{who} post-processing ({b} x {n} blocks of coefficients)",
                f"lower block_size (now {self.block_size}) or n_neighbors (now {self.n_neighbors})")

    def _dsc_labels(self, K, seed, t0, *, C=None, factor=None):
        """Post-processing (:meth:`_dsc_graph`) then spectral clustering: ``(thresholded coefficients or None,
        labels)``; sets ``affinity_`` and the "graph" (counted from ``t0``) and "spectral" times."""
        from ..cluster import spectral_clustering

        Cp, A = self._dsc_graph(K, C=C, factor=factor)
        self.affinity_ = A
        self.timings_["graph"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        labels = spectral_clustering(A, K, n_init=int(self.n_init), random_state=seed)
        self.timings_["spectral"] = time.perf_counter() - t0
        return Cp, labels

    def _dsc_graph(self, K, *, C=None, factor=None):
        """``(thresholded coefficients or None, sparse affinity)`` from dense coefficients ``C`` (DSC-Net: always
        thresholded) or from the factor ``H`` of ``C = H H^T`` (SSCN: thresholded when ``noise_threshold < 1``)."""
        import scipy.sparse as sp

        from ._dsc_postprocess import dsc_affinity, mass_threshold

        ro = self.noise_threshold
        kw = dict(rank=K * int(self.max_cluster_dim) + 1, alpha=float(self.noise_alpha),
                  n_neighbors=int(self.n_neighbors), dense=self.postprocess == "dense", block_size=int(self.block_size))
        Cp = None
        if C is not None or (ro is not None and ro < 1):
            Cp = mass_threshold(C=C, factor=factor, ro=float(ro) if ro is not None else 1.0,
                                max_nonzero=self.max_nonzero, block_size=int(self.block_size))
            A = dsc_affinity(Cp, **kw)
        else:
            A = dsc_affinity(factor=factor, **kw)
        if kw["dense"]:
            np.fill_diagonal(A, 0.0)
            A = sp.csr_matrix(A)
        return Cp, A
