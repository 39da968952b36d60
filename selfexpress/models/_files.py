"""Helpers shared by the estimators' model files (safetensors + JSON): parameters to JSON, tensor checks."""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["config_params", "check_network_tensors", "state_dict_digest", "data_fingerprint"]


def config_params(estimator, weights_params=()):
    """``estimator.get_params()`` as JSON values: tuples -> lists, numpy scalars -> Python, paths -> str.

    Parameters named in ``weights_params`` (e.g. a pretrained ``state_dict``) are stored as None: their weights
    are part of the saved network.
    """
    params = {}
    for k, v in estimator.get_params().items():
        if k in weights_params:
            v = None
        elif k == "checkpoint_dir":
            v = None if v is None else str(v)
        elif isinstance(v, tuple):
            v = list(v)
        elif isinstance(v, np.integer):
            v = int(v)
        elif isinstance(v, np.floating):
            v = float(v)
        params[k] = v
    return params


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
