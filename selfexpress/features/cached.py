"""Scattering -> PCA -> unit rows, cached on disk.

Cache layout (``cache_dir``: argument, else ``$SELFEXPRESS_CACHE_DIR``, else
``~/.cache/selfexpress/features``)::

    <cache_dir>/scattering/<label>.<key>.npy        (n, 3472) float32, one file per split of images
    <cache_dir>/scattering/<label>.<key>.json       parameters, shape, seconds
    <cache_dir>/pca/<label>.<key>.npy               (n, n_components) float32 final features
    <cache_dir>/pca/<label>.<key>.components.npy    (n_components, 3472) float64 PCA basis
    <cache_dir>/pca/<label>.<key>.mean.npy          mean (only with center=True)
    <cache_dir>/pca/<label>.<key>.json              parameters, eigenvalues, timings

``<key>`` is the first 24 hex digits of a sha256 over the image bytes (dtype and shape included),
every parameter and :data:`FEATURE_VERSION`; ``<label>`` is only a readable name (lookups go by key),
so the same images hit the same entry whatever they are called.  The scattering of a dataset is
cached per split (train / test), so ``mnist-train``, ``mnist-test`` and ``mnist-full`` share it and
only the (fast) PCA differs.  Every file is written atomically (temporary file + rename).
Bump :data:`FEATURE_VERSION` when a change alters the features.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import sys
import time
from pathlib import Path

import numpy as np

from ..io import atomic_save_npy, atomic_write_json
from .pca import PCAUncentred
from .scattering import _check_images, scattering_features, scattering_output_dim

__all__ = ["FEATURE_VERSION", "default_cache_dir", "scattering_pca", "dataset_features", "image_hash"]

FEATURE_VERSION = 1
logger = logging.getLogger("selfexpress.features")


def default_cache_dir() -> Path:
    """``$SELFEXPRESS_CACHE_DIR`` if set, else ``~/.cache/selfexpress/features``."""
    env = os.environ.get("SELFEXPRESS_CACHE_DIR")
    return Path(env).expanduser() if env else Path("~/.cache/selfexpress/features").expanduser()


def _say(msg, verbose):
    logger.info(msg)
    if verbose:
        print(f"[selfexpress.features] {msg}", file=sys.stderr, flush=True)


def image_hash(images) -> str:
    """sha256 of an image array's bytes, dtype and shape."""
    arr = np.ascontiguousarray(images)
    h = hashlib.sha256()
    h.update(f"{arr.dtype.str}|{arr.shape}|".encode())
    h.update(memoryview(arr).cast("B"))
    return h.hexdigest()


def _key(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:24]


def _label(label) -> str:
    s = re.sub(r"[^A-Za-z0-9_.-]+", "_", str(label or "images")).strip("._") or "images"
    return s[:80]


def _lookup(folder: Path, key: str):
    hits = sorted(folder.glob(f"*.{key}.npy")) if folder.is_dir() else []
    return hits[0] if hits else None


def _load_cached(path: Path, shape, verbose):
    try:
        arr = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        _say(f"ignoring unreadable cache file {path}: {exc}", verbose)
        return None
    if tuple(arr.shape) != tuple(shape):
        _say(f"ignoring cache file {path}: shape {arr.shape}, expected {shape}", verbose)
        return None
    return arr


def _resolve_cache_dir(cache_dir):
    """The cache folder: ``None`` -> the default folder, ``False`` -> no cache (``None``)."""
    if cache_dir is False:
        return None
    return default_cache_dir() if cache_dir is None else cache_dir


def _scattering_params(J, L, shape, resize, batch_size):
    """``(params, key_params)`` of the scattering; the key leaves out the batch size (it does not change results)."""
    params = {"J": int(J), "L": int(L), "shape": [int(s) for s in shape], "resize": resize,
              "normalize_maps": True, "batch_size": int(batch_size)}
    return params, {k: v for k, v in params.items() if k != "batch_size"}


def _scattering_keys(parts, key_params):
    """``(image hashes, cache keys)`` of the scattering of each split in ``parts`` ([(label, images)])."""
    hashes = [image_hash(im) for _, im in parts]
    keys = [_key({"kind": "scattering", "images_sha256": h, "n": int(np.asarray(im).shape[0]), **key_params,
                  "feature_version": FEATURE_VERSION}) for h, (_, im) in zip(hashes, parts)]
    return hashes, keys


def _scattering_of_parts(parts, hashes, keys, cache_dir, params, key_params, verbose, timings, device):
    """The scattering of every split, each from the cache or computed and stored."""
    return [_cached_scattering(im, plabel, cache_dir, params, key_params, k, h, verbose, timings, device)[0]
            for (plabel, im), k, h in zip(parts, keys, hashes)]


def _features(parts, label, n_components, normalize, center, cache_dir, verbose, J, L, batch_size, shape,
              resize, return_model, device=None):
    """parts: list of (split label, images). Returns (Z, model_or_None, timings). ``device``: where the scattering
    and the projection run (None / "auto": CUDA when available; the PCA fit itself is float64 on the CPU)."""
    cache_dir = _resolve_cache_dir(cache_dir)
    timings = {}
    params, key_params = _scattering_params(J, L, shape, resize, batch_size)
    n = sum(np.asarray(im).shape[0] for _, im in parts)
    dim = scattering_output_dim(J, L, shape)
    n_components = int(n_components)
    if not 1 <= n_components <= dim:
        raise ValueError(f"n_components must be in [1, {dim}], got {n_components}")

    # keys of the scattering parts (cheap: one sha256 over the images) decide the PCA key up front
    part_hashes, part_keys = _scattering_keys(parts, key_params)
    pmeta = {"kind": "pca", "scattering_keys": part_keys, "n_components": n_components, "center": bool(center),
             "normalize": bool(normalize), "feature_version": FEATURE_VERSION}
    pkey = _key(pmeta)
    pfolder = None if cache_dir is None else Path(cache_dir) / "pca"
    if pfolder is not None:
        hit = _lookup(pfolder, pkey)
        if hit is not None:
            t0 = time.perf_counter()
            Z = _load_cached(hit, (n, n_components), verbose)
            model = None
            if Z is not None and return_model:
                model = _load_model(hit, n_components, dim, bool(center), verbose)
                if model is None:
                    Z = None
            if Z is not None:
                _say(f"cache hit: features {label} ({n} x {n_components}) <- {hit}", verbose)
                timings["features_load"] = round(time.perf_counter() - t0, 3)
                return Z, model, timings

    S_parts = _scattering_of_parts(parts, part_hashes, part_keys, cache_dir, params, key_params, verbose, timings,
                                   device)
    _say(f"PCA of {label}: {n} x {dim} -> {n_components} (center={bool(center)})", verbose)
    t0 = time.perf_counter()
    model = PCAUncentred(n_components=n_components, center=bool(center)).fit(S_parts)
    Z = _project(model, S_parts, normalize, device)
    sec = time.perf_counter() - t0
    timings["pca"] = round(sec, 3)
    _say(f"PCA {label}: {sec:.1f} s", verbose)
    if pfolder is not None:
        base = pfolder / f"{_label(label)}.{pkey}"
        atomic_save_npy(base.with_name(base.name + ".components.npy"), model.components_)
        if model.mean_ is not None:
            atomic_save_npy(base.with_name(base.name + ".mean.npy"), model.mean_)
        atomic_write_json(base.with_name(base.name + ".json"),
                          {**pmeta, "label": label, "parts": [p for p, _ in parts], "shape": list(Z.shape),
                           "scattering_params": key_params, "eigenvalues": model.eigenvalues_,
                           "timings": timings})
        atomic_save_npy(base.with_name(base.name + ".npy"), Z)  # last: its presence marks a complete entry
    return Z, (model if return_model else None), timings


def _project(model, S_parts, normalize, device=None):
    """Features of scattering rows: the PCA projection (float32), then unit rows. One code path for the
    training features and for every later transform, so both are bit-identical for the same images.
    On a CUDA ``device`` the projection runs there (float32, same formula); on the CPU it is numpy's, unchanged."""
    from .._device import resolve_device

    dev = resolve_device(device)
    if dev.type != "cpu":
        return _project_torch(model, S_parts, normalize, dev)
    Z = model.transform(S_parts)
    if normalize:
        norms = np.linalg.norm(Z, axis=1, keepdims=True)
        Z /= np.where(norms > 0, norms, 1.0)
    return Z


def _project_torch(model, S_parts, normalize, dev, block=8192):
    """:func:`_project` on a torch device: ``(S - mean) @ components_.T`` in float32 blocks, then unit rows."""
    import torch

    if dev.type == "meta":
        raise ValueError("the feature projection needs a device with memory ('auto', 'cpu' or 'cuda'), not 'meta'")
    V = torch.as_tensor(np.ascontiguousarray(model.components_.T, dtype=np.float32), device=dev)
    mean = None if model.mean_ is None else torch.as_tensor(np.asarray(model.mean_, dtype=np.float32), device=dev)
    out = np.empty((sum(np.shape(s)[0] for s in S_parts), V.shape[1]), dtype=np.float32)
    pos = 0
    with torch.inference_mode():
        for S in S_parts:
            for r0 in range(0, np.shape(S)[0], block):
                b = torch.as_tensor(np.ascontiguousarray(S[r0:r0 + block], dtype=np.float32), device=dev)
                if mean is not None:
                    b = b - mean
                z = b @ V
                if normalize:
                    nrm = z.norm(dim=1, keepdim=True)
                    z = z / torch.where(nrm > 0, nrm, torch.ones_like(nrm))
                out[pos:pos + z.shape[0]] = z.cpu().numpy()
                pos += z.shape[0]
    return out


def _transform_parts(parts, components, mean, normalize, cache_dir, verbose, J, L, batch_size, shape, resize,
                     device=None):
    """Features of images ``parts`` ([(label, images)]) on a fitted basis; returns ``(Z, timings)``.

    The scattering goes through the same on-disk cache as :func:`_features` (by image hash)."""
    cache_dir = _resolve_cache_dir(cache_dir)
    timings = {}
    params, key_params = _scattering_params(J, L, shape, resize, batch_size)
    S_parts = _scattering_of_parts(parts, *_scattering_keys(parts, key_params), cache_dir, params, key_params,
                                   verbose, timings, device)
    t0 = time.perf_counter()
    model = PCAUncentred(n_components=components.shape[0], center=mean is not None)
    model.components_, model.mean_, model.n_features_in_ = components, mean, components.shape[1]
    Z = _project(model, S_parts, normalize, device)
    timings["projection"] = round(time.perf_counter() - t0, 3)
    return Z, timings


def _cached_scattering(images, label, cache_dir, params, key_params, key, img_hash, verbose, timings, device=None):
    """Scattering of one split: from the cache if present, else computed and stored."""
    n = np.asarray(images).shape[0]
    dim = scattering_output_dim(params["J"], params["L"], tuple(params["shape"]))
    folder = None if cache_dir is None else Path(cache_dir) / "scattering"
    if folder is not None:
        hit = _lookup(folder, key)
        if hit is not None:
            t0 = time.perf_counter()
            arr = _load_cached(hit, (n, dim), verbose)
            if arr is not None:
                _say(f"cache hit: scattering {label} ({n} images) <- {hit}", verbose)
                timings[f"scattering_load:{label}"] = round(time.perf_counter() - t0, 3)
                return arr, key
    _say(f"computing scattering of {label} ({n} images)", verbose)
    t0 = time.perf_counter()
    S = scattering_features(images, J=params["J"], L=params["L"], batch_size=params["batch_size"],
                            verbose=verbose, shape=tuple(params["shape"]), resize=params["resize"], device=device)
    sec = time.perf_counter() - t0
    timings[f"scattering:{label}"] = round(sec, 3)
    _say(f"scattering {label}: {sec:.1f} s", verbose)
    if folder is not None:
        base = folder / f"{_label(label)}.{key}"
        atomic_write_json(base.with_name(base.name + ".json"),
                          {"kind": "scattering", "label": label, "images_sha256": img_hash, "n": n, **key_params,
                           "feature_version": FEATURE_VERSION, "shape": list(S.shape), "seconds": round(sec, 3)})
        atomic_save_npy(base.with_name(base.name + ".npy"), S)
    return S, key


def _load_model(hit: Path, k, d, center, verbose):
    stem = hit.name[: -len(".npy")]
    comp = _load_cached(hit.with_name(stem + ".components.npy"), (k, d), verbose) \
        if hit.with_name(stem + ".components.npy").exists() else None
    if comp is None:
        return None
    model = PCAUncentred(n_components=k, center=center)
    model.components_ = comp
    model.mean_ = None
    if center:
        mp = hit.with_name(stem + ".mean.npy")
        model.mean_ = _load_cached(mp, (d,), verbose) if mp.exists() else None
        if model.mean_ is None:
            return None
    try:
        meta = json.loads(hit.with_name(stem + ".json").read_text("utf-8"))
        model.eigenvalues_ = np.asarray(meta["eigenvalues"], dtype=np.float64)
        model.n_samples_seen_ = int(meta["shape"][0])
    except (OSError, ValueError, KeyError):
        model.eigenvalues_ = None
    model.n_features_in_ = d
    return model


def scattering_pca(images, n_components=500, normalize=True, center=False, cache_dir=None, cache_key=None,
                   verbose=True, *, J=3, L=8, batch_size=1000, shape=(32, 32), resize="bilinear",
                   return_model=False, key=None, device=None):
    """Scattering features -> PCA to ``n_components`` -> unit-l2 rows (``normalize``), cached on disk.

    ``images``: ``(n, H, W)`` uint8 or float in [0, 1] (see :func:`scattering_features`).
    ``center``: remove the mean before PCA (default: uncentred, as in the reference).
    ``cache_dir``: folder of the cache (default ``$SELFEXPRESS_CACHE_DIR`` or
    ``~/.cache/selfexpress/features``); ``False`` disables caching.  ``cache_key``: a readable label
    for the cache files (lookups use a hash of the images and parameters, never the label alone);
    ``key`` is an alias of ``cache_key``.
    Returns ``(n, n_components)`` float32, or ``(Z, model)`` with ``return_model`` (a fitted
    :class:`PCAUncentred` to project scattering features of new images). ``device``: where the scattering and
    the projection run (None / "auto": CUDA when available, else the CPU).
    """
    cache_key = cache_key if cache_key is not None else key
    arr = _check_images(images)
    Z, model, _ = _features([(cache_key or "images", arr)], cache_key or "images", n_components, normalize, center,
                            cache_dir, verbose, J, L, batch_size, shape, resize, return_model, device)
    return (Z, model) if return_model else Z


_SPLIT_SUFFIX = re.compile(r"-(full|train|test)$")


def dataset_features(name, data_dir=None, n_components=500, cache_dir=None, verbose=True, *, center=None,
                     normalize=True, download=False, return_timings=False, resize="bilinear", basis=None,
                     return_transform=False, device=None):
    """``(X, labels)``: scattering + PCA features of a named image dataset (see ``load_dataset``).

    The scattering is computed (and cached) once per official split, so ``mnist-train``,
    ``mnist-test`` and ``mnist-full`` share it. The PCA basis is fitted on the requested dataset, or,
    with ``basis`` (a fitted :class:`~selfexpress.features.ScatteringPCA`, e.g. fitted on a training
    split or taken from a model), the images are projected on that basis: use this for every split that
    a model trained elsewhere will see, so that training and test features share one basis.
    ``center`` defaults to ``True`` for EMNIST datasets (SENet's setting) and ``False`` otherwise.
    ``return_timings`` adds the seconds per stage (``scattering_load:*`` / ``features_load`` mark cache
    hits); ``return_transform`` adds the fitted (or given) transform: ``(X, labels[, timings][, transform])``.
    ``device``: where the scattering and the projection run (None: the basis's ``device``, else "auto" = CUDA when
    available, else the CPU); it does not change the cache keys or the fingerprint.
    """
    from ..data.datasets import load_dataset
    from .transform import ScatteringPCA

    ds = load_dataset(name, data_dir=data_dir, download=download, verbose=verbose)
    if ds.images is None or ds.images.ndim != 3:
        raise ValueError(f"dataset {name!r} is not grey-scale images (shape "
                         f"{None if ds.images is None else ds.images.shape}); scattering features need (n, H, W) "
                         "grey-scale images. Use its raw data (load_dataset(...).data) instead")
    base = _SPLIT_SUFFIX.sub("", name)
    parts = [(f"{base}-{part}" if part in ("train", "test") else name, ds.images[a:b])
             for part, (a, b) in ds.splits.items()]
    if basis is not None:
        Z, timings = _transform_parts(parts, basis.components_, basis.mean_, bool(basis.normalize), cache_dir,
                                      verbose, int(basis.J), int(basis.L), int(basis.batch_size),
                                      tuple(basis.shape), basis.resize,
                                      device=device if device is not None else getattr(basis, "device", None))
        ft = basis
    else:
        if center is None:
            center = name.startswith("emnist")
        ft = ScatteringPCA(n_components=n_components, center=center, normalize=normalize, resize=resize,
                           cache_dir=cache_dir, verbose=verbose, device="auto" if device is None else device)
        Z = ft._fit_transform_parts(parts, name)
        timings = ft.timings_
    out = (Z, ds.labels) + ((timings,) if return_timings else ()) + ((ft,) if return_transform else ())
    return out
