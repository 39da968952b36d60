"""Atomic file writes and safe model files (safetensors + JSON, never pickle)."""

from __future__ import annotations

import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np

FORMAT_VERSION = 1

__all__ = ["atomic_file", "atomic_write_bytes", "atomic_write_json", "atomic_save_npy", "save_model_file", "load_model_file", "read_model_kind", "FORMAT_VERSION"]


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


# safetensors dtype codes -> bytes per element (the ones torch writes)
_ST_DTYPES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
              "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8}
_MAX_HEADER = 100 * 2**20


def save_model_file(path, tensors: dict, config: dict, kind: str):
    """Save a model as ``<path>.safetensors`` (weights) + ``<path>.json`` (config, labels, version).

    ``path`` may be given with or without either suffix.  ``tensors`` maps names to torch
    tensors or numpy arrays; ``config`` must be JSON-serialisable. The JSON records the format
    version, the kind of model and every tensor's shape and dtype, which :func:`load_model_file`
    checks.
    """
    import torch
    from safetensors.torch import save as st_save

    base = _base_path(path)
    tensors = {k: (torch.as_tensor(v) if not isinstance(v, torch.Tensor) else v).detach().cpu().contiguous()
               for k, v in tensors.items()}
    atomic_write_bytes(base.with_suffix(".safetensors"), st_save(tensors))
    meta = {"format": "selfexpress-model", "format_version": FORMAT_VERSION, "kind": kind,
            "tensors": {k: list(v.shape) for k, v in tensors.items()},
            "dtypes": {k: str(v.dtype).removeprefix("torch.") for k, v in tensors.items()}, "config": config}
    atomic_write_json(base.with_suffix(".json"), meta)
    return base


def _check_safetensors_header(data: bytes, wpath):
    """Validate the header of safetensors ``data`` before the parser sees it; returns the header dict.

    Refuses (``ValueError`` naming the file) anything that is not exactly a safetensors file: a
    pickle, zip or other payload, a header length beyond the file, a non-JSON header, unknown
    dtypes, non-integer shapes, data offsets that disagree with dtype x shape, overlap, leave gaps
    or run past the end of the file.
    """
    bad = f"weights file {wpath} is corrupt or truncated"
    if len(data) < 8:
        raise ValueError(f"{bad}: {len(data)} bytes is too short for a safetensors file")
    n = int.from_bytes(data[:8], "little")
    if n > min(len(data) - 8, _MAX_HEADER):
        raise ValueError(f"{bad}: its header length {n} exceeds the file size {len(data)} (cut short, or not a "
                         "safetensors file at all: model weights are only read from safetensors, never from pickle)")
    try:
        header = json.loads(data[8:8 + n].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise ValueError(f"{bad}: the safetensors header is not valid JSON ({exc})") from None
    if not isinstance(header, dict):
        raise ValueError(f"{bad}: the safetensors header is not a JSON object")
    body = len(data) - 8 - n
    spans = []
    for name, entry in header.items():
        if name == "__metadata__":
            if not isinstance(entry, dict) or not all(isinstance(v, str) for v in entry.values()):
                raise ValueError(f"{bad}: __metadata__ must map strings to strings")
            continue
        if not isinstance(entry, dict) or set(entry) != {"dtype", "shape", "data_offsets"}:
            raise ValueError(f"{bad}: tensor {name!r} has header entry {entry!r}; expected dtype, shape, data_offsets")
        dtype, shape, offs = entry["dtype"], entry["shape"], entry["data_offsets"]
        if dtype not in _ST_DTYPES:
            raise ValueError(f"{bad}: tensor {name!r} has unknown dtype {dtype!r}")
        if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0
                                                  for d in shape):
            raise ValueError(f"{bad}: tensor {name!r} has invalid shape {shape!r}")
        if (not isinstance(offs, list) or len(offs) != 2
                or not all(isinstance(o, int) and not isinstance(o, bool) for o in offs)
                or not 0 <= offs[0] <= offs[1] <= body):
            raise ValueError(f"{bad}: tensor {name!r} has data offsets {offs!r} outside the {body}-byte data block")
        size = _ST_DTYPES[dtype]
        for d in shape:
            size *= d
        if offs[1] - offs[0] != size:
            raise ValueError(f"{bad}: tensor {name!r} ({dtype} {shape}) needs {size} bytes but its data offsets "
                             f"span {offs[1] - offs[0]}")
        spans.append(tuple(offs))
    pos = 0
    for a, b in sorted(spans):
        if a != pos:
            raise ValueError(f"{bad}: the tensors' data overlap or leave a gap at byte {pos}")
        pos = b
    if pos != body:
        raise ValueError(f"{bad}: {body - pos} trailing bytes after the last tensor")
    return header


def read_model_kind(path):
    """The ``kind`` recorded in a model file's JSON (``"senet"``, ``"feature-transform"``, ...), or None when the
    file is missing or unreadable (:func:`load_model_file` then reports the problem)."""
    try:
        meta = json.loads(_base_path(path).with_suffix(".json").read_bytes().decode("utf-8"))
    except (OSError, ValueError, RecursionError):
        return None
    kind = meta.get("kind") if isinstance(meta, dict) else None
    return kind if isinstance(kind, str) else None


def load_model_file(path, kind: str):
    """Load and check a file written by :func:`save_model_file`; returns ``(tensors, config)``.

    Refuses (``ValueError`` naming the file) a missing file, a JSON file that is not a selfexpress
    model file of this ``kind`` and format version, a weights file that is not a well-formed
    safetensors file (a pickle or zip renamed to ``.safetensors``, a tampered header: unknown
    dtype, wrong sizes or offsets, trailing bytes), and weights whose names, shapes or dtypes
    differ from those recorded in the JSON.  Nothing is unpickled or evaluated: the JSON is parsed
    with :func:`json.loads` and the weights by safetensors, so a file from an untrusted source
    cannot execute code.
    """
    from safetensors.torch import load as st_load

    base = _base_path(path)
    jpath, wpath = base.with_suffix(".json"), base.with_suffix(".safetensors")
    for p in (jpath, wpath):
        if not p.is_file():
            raise ValueError(f"model file {p} does not exist")
    try:
        meta = json.loads(jpath.read_bytes().decode("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise ValueError(f"model file {jpath} is not valid JSON: {exc}") from None
    if not isinstance(meta, dict) or meta.get("format") != "selfexpress-model":
        raise ValueError(f"{jpath} is not a selfexpress model file")
    if meta.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{jpath} has format version {meta.get('format_version')!r}; this library reads version {FORMAT_VERSION}")
    if meta.get("kind") != kind:
        raise ValueError(f"{jpath} holds a {meta.get('kind')!r} model, not a {kind!r} model")
    expected, dtypes, config = meta.get("tensors"), meta.get("dtypes", {}), meta.get("config")
    if (not isinstance(expected, dict) or not isinstance(dtypes, dict) or not isinstance(config, dict)
            or not all(isinstance(v, list) for v in expected.values())):
        raise ValueError(f"{jpath} is malformed: 'tensors', 'dtypes' and 'config' must be JSON objects")
    data = wpath.read_bytes()
    _check_safetensors_header(data, wpath)
    try:
        tensors = st_load(data)
    except Exception as exc:  # noqa: BLE001 - any parser failure is a corrupt file
        raise ValueError(f"weights file {wpath} is corrupt or truncated: {exc}") from None
    if set(expected) != set(tensors):
        raise ValueError(f"{wpath} has tensors {sorted(tensors)} but {jpath} lists {sorted(expected)}")
    for k, shape in expected.items():
        if list(tensors[k].shape) != list(shape):
            raise ValueError(f"tensor {k!r} in {wpath} has shape {list(tensors[k].shape)}, expected {shape}")
    for k, dt in dtypes.items():
        if k in tensors and str(tensors[k].dtype).removeprefix("torch.") != dt:
            raise ValueError(f"tensor {k!r} in {wpath} has dtype {tensors[k].dtype}, expected {dt}")
    return tensors, config


def _base_path(path):
    p = Path(path)
    if p.suffix in (".json", ".safetensors"):
        p = p.with_suffix("")
    return p
