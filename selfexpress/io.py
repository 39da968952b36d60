"""Atomic file writes and safe model files (safetensors + JSON, never pickle)."""

from __future__ import annotations

import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np

FORMAT_VERSION = 1

__all__ = ["atomic_file", "atomic_write_bytes", "atomic_write_json", "atomic_save_npy", "save_model_file", "load_model_file", "FORMAT_VERSION"]


@contextmanager
def atomic_file(path):
    """Open a temporary file beside ``path`` for binary writing; on success fsync and rename it to ``path``.

    A reader never sees a half-written file, and a crash leaves the old file intact.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path, data: bytes):
    """Write ``data`` to ``path`` atomically (temporary file + rename)."""
    with atomic_file(path) as fh:
        fh.write(data)


def _json_default(obj):
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def atomic_write_json(path, obj, indent=2):
    """Serialise ``obj`` to JSON (numpy scalars and arrays allowed) and write it atomically."""
    atomic_write_bytes(path, json.dumps(obj, indent=indent, default=_json_default).encode("utf-8"))


def atomic_save_npy(path, array):
    """Save a numpy array (no pickled objects) atomically, streaming it to a temporary file."""
    with atomic_file(path) as fh:
        np.save(fh, np.asarray(array), allow_pickle=False)


def save_model_file(path, tensors: dict, config: dict, kind: str):
    """Save a model as ``<path>.safetensors`` (weights) + ``<path>.json`` (config, labels, version).

    ``path`` may be given with or without either suffix.  ``tensors`` maps names to torch
    tensors or numpy arrays; ``config`` must be JSON-serialisable.
    """
    import torch
    from safetensors.torch import save as st_save

    base = _base_path(path)
    tensors = {k: (torch.as_tensor(v) if not isinstance(v, torch.Tensor) else v).detach().cpu().contiguous()
               for k, v in tensors.items()}
    atomic_write_bytes(base.with_suffix(".safetensors"), st_save(tensors))
    meta = {"format": "selfexpress-model", "format_version": FORMAT_VERSION, "kind": kind,
            "tensors": {k: list(v.shape) for k, v in tensors.items()}, "config": config}
    atomic_write_json(base.with_suffix(".json"), meta)
    return base


def load_model_file(path, kind: str):
    """Load and check a file written by :func:`save_model_file`; returns ``(tensors, config)``.

    Refuses (``ValueError``) a file of another kind or format version, a missing file, or
    weights whose names or shapes differ from those recorded in the JSON.  safetensors
    cannot execute code, so loading an untrusted file is safe.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    base = _base_path(path)
    jpath, wpath = base.with_suffix(".json"), base.with_suffix(".safetensors")
    for p in (jpath, wpath):
        if not p.exists():
            raise ValueError(f"model file {p} does not exist")
    try:
        meta = json.loads(jpath.read_text("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"model file {jpath} is not valid JSON: {exc}") from None
    if not isinstance(meta, dict) or meta.get("format") != "selfexpress-model":
        raise ValueError(f"{jpath} is not a selfexpress model file")
    if meta.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{jpath} has format version {meta.get('format_version')!r}; this library reads version {FORMAT_VERSION}")
    if meta.get("kind") != kind:
        raise ValueError(f"{jpath} holds a {meta.get('kind')!r} model, not a {kind!r} model")
    try:
        tensors = load_file(str(wpath))
    except (SafetensorError, OSError, ValueError) as exc:
        raise ValueError(f"weights file {wpath} is corrupt or truncated: {exc}") from None
    expected = meta.get("tensors", {})
    if set(expected) != set(tensors):
        raise ValueError(f"{wpath} has tensors {sorted(tensors)} but {jpath} lists {sorted(expected)}")
    for k, shape in expected.items():
        if list(tensors[k].shape) != list(shape):
            raise ValueError(f"tensor {k!r} in {wpath} has shape {list(tensors[k].shape)}, expected {shape}")
    return tensors, meta["config"]


def _base_path(path):
    p = Path(path)
    if p.suffix in (".json", ".safetensors"):
        p = p.with_suffix("")
    return p
