"""Helpers shared by the estimators' model files (safetensors + JSON): parameters to JSON and back, the checks
every ``load`` makes (the configuration, the network tensors, the labels) and loading the checked weights."""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np
import torch

from .._validation import check_n_clusters

__all__ = ["config_params", "estimator_from_config", "config_n_features", "invalid_config", "check_network_tensors",
           "check_label_tensor", "load_network", "state_dict_digest", "data_fingerprint", "pack_feature_transform",
           "unpack_feature_transform", "apply_feature_transform"]

#: prefix of the feature transform's arrays inside a model's safetensors file
FEATURE_PREFIX = "features."


def config_params(estimator, weights_params=()):
    """``estimator.get_params()`` as JSON values: tuples -> lists, numpy scalars -> Python, paths -> str.

    Parameters named in ``weights_params`` (e.g. a pretrained ``state_dict``) are stored as None: their weights
    are part of the saved network.
    """
    params = {}
    for k, v in estimator.get_params().items():
        if k in weights_params:
            v = None
        elif k in ("checkpoint_dir", "device"):  # a path / torch.device as a string
            v = None if v is None else str(v)
        elif isinstance(v, tuple):
            v = list(v)
        elif isinstance(v, np.integer):
            v = int(v)
        elif isinstance(v, np.floating):
            v = float(v)
        params[k] = v
    return params


def estimator_from_config(cls, config, device=None):
    """``(estimator, what its _check_params returned)``: ``cls`` built from a model file's ``config["params"]`` and
    checked as ``fit`` checks it (``n_clusters`` an integer >= 2).

    The parameters :func:`config_params` wrote as JSON lists (tuples: shapes, widths, ranges) become tuples again;
    those an earlier version had and ``cls._retired_params`` names are dropped. The estimator runs on ``device``
    (the one given to ``load``; None: "auto"), never on the device the file was saved from.
    """
    retired = getattr(cls, "_retired_params", ())
    params = {k: tuple(v) if isinstance(v, list) else v for k, v in dict(config["params"]).items()
              if k not in retired}
    params["device"] = "auto" if device is None else device
    model = cls(**params)
    checked = model._check_params()
    check_n_clusters(model.n_clusters, 2 ** 62)  # fit checks it against the data; a file has no data to check
    return model, checked


def config_n_features(config):
    """``config["n_features_in"]``, ``ValueError`` unless it is a positive integer."""
    n_features = config["n_features_in"]
    if isinstance(n_features, bool) or not isinstance(n_features, int) or n_features < 1:
        raise ValueError(f"n_features_in must be a positive integer, got {n_features!r}")
    return n_features


@contextmanager
def invalid_config(invalid):
    """Around the reading of a model file's configuration: a ``KeyError``, ``TypeError``, ``ValueError`` or
    ``RuntimeError`` (a missing entry, a refused parameter, a network the parameters cannot build) becomes one
    ``ValueError`` starting with ``invalid`` (which names the file)."""
    try:
        yield
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise ValueError(f"{invalid}: {exc}") from None


def check_network_tensors(tensors, expected, invalid, allowed_extra=()):
    """Check a loaded file's tensors against ``expected`` (name -> tensor, e.g. a network built on the meta
    device): every expected name present with the same shape and dtype, floating tensors finite, and no names
    besides ``expected`` and ``allowed_extra``. ``ValueError`` starting with ``invalid`` otherwise."""
    for k, v in expected.items():
        t = tensors.get(k)
        if t is None or tuple(t.shape) != tuple(v.shape) or t.dtype != v.dtype:
            got = "missing" if t is None else f"{t.dtype} {list(t.shape)}"
            raise ValueError(f"{invalid}: network tensor {k!r} is {got}, the parameters imply "
                             f"{v.dtype} {list(v.shape)}")
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise ValueError(f"{invalid}: network tensor {k!r} contains NaN or infinity")
    extra = sorted(set(tensors) - set(expected) - set(allowed_extra))
    if extra:
        raise ValueError(f"{invalid}: unexpected tensors {extra}")


def check_label_tensor(tensors, name, n_clusters, invalid):
    """``tensors[name]`` as an int64 numpy array, ``ValueError`` starting with ``invalid`` unless it is a 1-D int64
    tensor with values in ``[0, n_clusters)``."""
    t = tensors.get(name)
    if t is None or t.dtype != torch.int64 or t.ndim != 1:
        raise ValueError(f"{invalid}: {name} are missing or not a 1-D int64 tensor")
    if t.numel() and (int(t.min()) < 0 or int(t.max()) >= n_clusters):
        raise ValueError(f"{invalid}: {name} are not in [0, n_clusters={n_clusters})")
    return t.numpy().astype(np.int64)


def load_network(module, tensors, prefix="net.", extra=None):
    """``module`` in eval mode holding the checked ``prefix*`` tensors of a model file (plus ``extra``, buffers the
    file does not store); returned."""
    state = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
    state.update(extra or {})
    module.load_state_dict(state)
    return module.eval()


def data_fingerprint(X):
    """``{"data": SHA-1 of X as contiguous float32, "shape": list(X.shape)}``: the training data's part of a
    checkpoint fingerprint (a resumed fit must see the same data)."""
    import hashlib

    digest = hashlib.sha1(np.ascontiguousarray(X, dtype=np.float32).tobytes()).hexdigest()
    return {"data": digest, "shape": list(X.shape)}


def state_dict_digest(state):
    """SHA-1 hex digest of a ``state_dict`` (names and raw bytes, sorted by name); None for None.

    Identifies pretrained weights in checkpoint fingerprints."""
    if state is None:
        return None
    import hashlib

    h = hashlib.sha1()
    for k in sorted(state):
        h.update(k.encode())
        h.update(state[k].detach().cpu().numpy().tobytes())
    return h.hexdigest()


def pack_feature_transform(estimator, tensors, config):
    """Add the estimator's fitted ``feature_transform_`` (if any) to a model file's ``tensors`` and ``config``.

    Its arrays are stored under ``features.*`` and its settings and fingerprint under ``config["feature_transform"]``,
    so the model labels raw images in the basis it was trained in."""
    ft = getattr(estimator, "feature_transform_", None)
    if ft is None:
        return
    t, c = ft.to_state()
    tensors.update({FEATURE_PREFIX + k: torch.as_tensor(np.ascontiguousarray(v)) for k, v in t.items()})
    config["feature_transform"] = c


def unpack_feature_transform(tensors, config, source="the model file"):
    """Remove the ``features.*`` tensors from a loaded model file's ``tensors`` and rebuild the transform.

    Returns a fitted :class:`~selfexpress.features.ScatteringPCA` or None (a model fitted on feature vectors
    given directly). A tampered transform (wrong shape, NaN, fingerprint mismatch) raises ``ValueError``.
    """
    own = {k[len(FEATURE_PREFIX):]: tensors.pop(k) for k in [k for k in tensors if k.startswith(FEATURE_PREFIX)]}
    state = config.get("feature_transform")
    if state is None:
        if own:
            raise ValueError(f"{source} holds feature-transform arrays {sorted(own)} but no transform settings")
        return None
    from ..features.transform import ScatteringPCA

    return ScatteringPCA.from_state(own, state, source=source)


def apply_feature_transform(estimator, X):
    """``X`` as the estimator's input features.

    A model with a ``feature_transform_`` takes raw images of the size it was trained on (mapped into its
    training basis) or feature vectors (``n_components`` columns; the caller vouches for their basis: the CLI
    checks the fingerprint a features file carries). A model without one gets ``X`` unchanged; if ``X`` looks
    like raw pixels while the model expects far fewer features, the error says how to make features.
    """
    ft = getattr(estimator, "feature_transform_", None)
    shape = X.shape if hasattr(X, "shape") else np.shape(np.asarray(X))  # an array-like may refuse np.shape
    if ft is not None:
        if ft.accepts_images(X):
            return ft.transform(X)
        if len(shape) == 2 and shape[1] == int(ft.n_components):
            return X
        H, W = ft.image_shape_
        raise ValueError(f"X has shape {tuple(shape)}, but {type(estimator).__name__} takes {H}x{W} images "
                         f"(mapped by its stored feature transform) or {ft.n_components} features made in its basis "
                         "(`selfexpress features --basis-from MODEL`)")
    n_in = getattr(estimator, "n_features_in_", None)
    if n_in is None or len(shape) not in (2, 3):
        return X
    n_cols = int(np.prod(shape[1:]))
    if n_cols == n_in:  # feature vectors, or images for a model that reads pixels
        return X
    reads_pixels = getattr(estimator, "architecture_", None) == "conv" or (
        getattr(estimator, "_input_kind", "features") == "pixels" and getattr(estimator, "architecture_", None) != "linear")
    if reads_pixels:
        return X  # its own check names the wrong image size
    side = int(round(n_cols ** 0.5))
    if len(shape) == 3 or (side >= 8 and side * side == n_cols and n_cols > n_in):  # looks like raw images
        raise ValueError(f"X has {n_cols} features, but {type(estimator).__name__} is expecting {n_in} features as "
                         f"input; X looks like raw images (shape {tuple(shape)}) and this model holds no feature "
                         "transform to map them. Make the features in the model's training basis: `selfexpress "
                         "features --basis-from FEATURES.npy` (the features file it was trained on), or in Python set "
                         "model.feature_transform_ to the fitted ScatteringPCA that made its training features")
    return X  # the estimator's own check names the mismatch in scikit-learn's words
