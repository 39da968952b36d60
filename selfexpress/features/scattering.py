"""Scattering-transform features of small grey-scale images (the EnSC / SENet MNIST features).

Reference pipeline (shared/reference-impls.md §1.7): images resized to 32x32 by torchvision
``Resize((32, 32))`` on PIL images (bilinear) then ``ToTensor`` ([0, 1]); kymatio
``Scattering2D(J=3, shape=(32, 32), L=8)`` -> ``(217, 4, 4)`` per image; every one of the 217 maps
divided by its own max |.|; flattened to 3,472 features.

Resizing without torchvision: ``torch.nn.functional.interpolate(mode="bilinear",
antialias=True, align_corners=False)``.  On ``uint8`` input this runs torch's uint8 resampler, which
reproduces PIL's bilinear resize (what torchvision applies to PIL images) **bit for bit** --
checked on MNIST: 0 of 512,000 pixels differ -- and the result is then divided by 255, exactly as
``ToTensor`` does.  (For an upscale, ``antialias`` does not change the kernel; it selects the
PIL-compatible code path.)  Float input in [0, 1] is resized in float32 with the same kernel and is
not rounded to 1/255 steps, so it can differ from the uint8 path by up to 1/255 per pixel.
"""

from __future__ import annotations

import sys

import numpy as np

__all__ = ["scattering_features", "scattering_output_dim", "prepare_images"]

_SCATTERING = {}  # (J, L, shape, device) -> ScatteringTorch2D (filters are built once per process and device)


def scattering_output_dim(J=3, L=8, shape=(32, 32)) -> int:
    """Number of features: ``(1 + J L + L^2 J (J - 1) / 2) * (H / 2^J) * (W / 2^J)`` (3,472 by default)."""
    channels = 1 + J * L + L * L * J * (J - 1) // 2
    return channels * (shape[0] // 2**J) * (shape[1] // 2**J)


def _get_scattering(J, L, shape, device=None):
    import torch

    device = torch.device("cpu") if device is None else device
    key = (J, L, tuple(shape), str(device))
    if key not in _SCATTERING:
        # `import kymatio.torch` pulls in the 3-D frontend, which imports scipy.special.sph_harm (removed in
        # recent scipy); the 2-D torch frontend alone imports cleanly.
        from kymatio.scattering2d.frontend.torch_frontend import ScatteringTorch2D

        S = ScatteringTorch2D(J=J, shape=tuple(shape), L=L)
        _SCATTERING[key] = S if device.type == "cpu" else S.to(device)  # its filters are buffers
    return _SCATTERING[key]


def _check_images(images):
    arr = np.asarray(images)
    if arr.ndim == 4 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim == 2 and arr.shape[1] == 784:
        arr = arr.reshape(-1, 28, 28)
    if arr.ndim != 3:
        raise ValueError(f"images must have shape (n, H, W) (grey-scale), got {arr.shape}")
    if arr.shape[0] == 0:
        raise ValueError("images is empty")
    if arr.dtype == np.uint8:
        return arr
    if not np.issubdtype(arr.dtype, np.floating):
        raise ValueError(f"images must be uint8 (0..255) or float in [0, 1], got dtype {arr.dtype}")
    if not np.isfinite(arr).all():
        raise ValueError("images contain NaN or infinity")
    lo, hi = float(arr.min()), float(arr.max())
    if lo < -1e-6 or hi > 1 + 1e-6:
        raise ValueError(f"float images must lie in [0, 1], got values in [{lo:g}, {hi:g}]; divide uint8 pixel "
                         "values by 255 (or pass the uint8 array itself)")
    return arr


def prepare_images(images, shape=(32, 32), resize="bilinear"):
    """A float32 torch tensor ``(n, H, W)`` in [0, 1] at ``shape`` (see the module docstring).

    ``resize="bilinear"`` (reference) resizes; ``resize="pad"`` zero-pads centrally instead.
    """
    import torch
    import torch.nn.functional as F

    arr = _check_images(images)
    arr = np.ascontiguousarray(arr)
    t = torch.from_numpy(arr if arr.flags.writeable else arr.copy())  # a memory map is read-only
    if tuple(arr.shape[1:]) != tuple(shape):
        if resize == "bilinear":
            x = t[:, None]
            if t.dtype != torch.uint8:
                x = x.float()
            x = F.interpolate(x, size=tuple(shape), mode="bilinear", antialias=True, align_corners=False)
            t = x[:, 0]
        elif resize == "pad":
            dh, dw = shape[0] - arr.shape[1], shape[1] - arr.shape[2]
            if dh < 0 or dw < 0:
                raise ValueError(f"cannot pad images of shape {arr.shape[1:]} to {shape}")
            t = F.pad(t, (dw // 2, dw - dw // 2, dh // 2, dh - dh // 2))
        else:
            raise ValueError(f"resize must be 'bilinear' or 'pad', got {resize!r}")
    if t.dtype == torch.uint8:
        return t.float().div_(255.0)
    return t.float()


def scattering_features(images, J=3, L=8, batch_size=1000, verbose=True, *, shape=(32, 32),
                        resize="bilinear", normalize_maps=True, device=None):
    """Scattering features ``(n, 3472)`` float32 of grey-scale images ``(n, H, W)``.

    ``images``: ``uint8`` (0..255) or float in [0, 1], any size (resized to ``shape``, default 32x32
    as in the reference).  Order-2 scattering ``Scattering2D(J, shape, L)`` gives
    ``(n, 217, 4, 4)``; with ``normalize_maps`` each of the 217 maps of each image is divided by its
    own max |.| (an all-zero map stays zero) and the result is flattened.  Runs in batches of
    ``batch_size`` with a progress bar when ``verbose``. ``device``: where the scattering runs ("auto" or None:
    CUDA when available, else the CPU; see :func:`selfexpress._device.resolve_device`); the images are
    prepared on the CPU and the features come back as a numpy array.
    """
    import torch
    from tqdm.auto import tqdm

    arr = _check_images(images)
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    n = arr.shape[0]
    if min(shape) < 2**J:
        raise ValueError(f"shape {shape} is too small for J={J} (needs at least {2**J} pixels per side)")
    from .._device import resolve_device

    dev = resolve_device(device)
    if dev.type == "meta":
        raise ValueError("scattering features need a device with memory ('auto', 'cpu' or 'cuda'), not 'meta'")
    S = _get_scattering(J, L, shape, dev)
    out = np.empty((n, scattering_output_dim(J, L, shape)), dtype=np.float32)
    with torch.inference_mode(), tqdm(total=n, desc="scattering", unit="img", disable=not verbose,
                                      file=sys.stderr) as bar:
        for start in range(0, n, batch_size):
            stop = min(start + batch_size, n)
            x = prepare_images(arr[start:stop], shape=shape, resize=resize).contiguous()
            if dev.type != "cpu":
                x = x.to(dev, non_blocking=True)
            s = S(x)  # (b, C, H/2^J, W/2^J)
            if normalize_maps:
                m = s.abs().amax(dim=(2, 3), keepdim=True)
                s = s / torch.where(m > 0, m, torch.ones_like(m))
            out[start:stop] = s.reshape(stop - start, -1).cpu().numpy()
            bar.update(stop - start)
    return out
