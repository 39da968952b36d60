"""Image augmentations as pure torch tensor ops (no torchvision), batched and vectorised.

Every function takes a float batch ``x`` of shape ``(n, C, H, W)`` with values in ``[0, 1]`` and returns a new
tensor of the same shape, dtype and device with values in ``[0, 1]``; every sample draws its own random
parameters from ``generator`` (a ``torch.Generator``; None: torch's global RNG, which the shared trainer seeds).

Used by the contrastive models (:mod:`selfexpress.models.energy`); energy-based-ssc.txt's recipe (random resized
crop, colour jitter, horizontal flip, grey-scale) reduced to what grey-scale 28 x 28 / colour 32 x 32 images need.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = ["check_images", "random_crop", "random_resized_crop", "random_flip", "brightness_contrast",
           "random_grayscale", "Augment"]


def check_images(x, name="x"):
    """Validate a float batch ``(n, C, H, W)``; returns it (no copy)."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape (n, C, H, W), got {type(x).__name__}")
    if x.ndim != 4:
        raise ValueError(f"{name} must have shape (n, C, H, W), got {tuple(x.shape)}")
    if not torch.is_floating_point(x):
        raise ValueError(f"{name} must be a floating-point tensor with values in [0, 1], got {x.dtype}")
    return x


def _rand(n, generator, device, dtype=torch.float32):
    return torch.rand(n, generator=generator, dtype=dtype).to(device)


def random_crop(x, padding=4, generator=None):
    """Zero-pad by ``padding`` pixels on each side and take a random ``H x W`` crop per sample."""
    x = check_images(x)
    p = int(padding)
    if p < 0:
        raise ValueError(f"padding must be >= 0, got {padding!r}")
    if p == 0:
        return x.clone()
    n, c, h, w = x.shape
    xp = F.pad(x, (p, p, p, p))
    oy = torch.randint(0, 2 * p + 1, (n,), generator=generator).to(x.device)
    ox = torch.randint(0, 2 * p + 1, (n,), generator=generator).to(x.device)
    rows = (oy[:, None] + torch.arange(h, device=x.device))[:, None, :, None]  # (n, 1, h, 1)
    cols = (ox[:, None] + torch.arange(w, device=x.device))[:, None, None, :]  # (n, 1, 1, w)
    bidx = torch.arange(n, device=x.device)[:, None, None, None]
    cidx = torch.arange(c, device=x.device)[None, :, None, None]
    return xp[bidx, cidx, rows, cols]


def random_resized_crop(x, scale=(0.3, 1.0), ratio=(3 / 4, 4 / 3), generator=None):
    """Crop a random area fraction in ``scale`` with aspect ratio in ``ratio`` and resize it back to ``H x W``.

    Bilinear sampling (``F.affine_grid`` + ``F.grid_sample``); the crop window always lies inside the image.
    """
    x = check_images(x)
    lo, hi = float(scale[0]), float(scale[1])
    if not 0 < lo <= hi <= 1:
        raise ValueError(f"scale must satisfy 0 < low <= high <= 1, got {scale!r}")
    rlo, rhi = float(ratio[0]), float(ratio[1])
    if not 0 < rlo <= rhi:
        raise ValueError(f"ratio must satisfy 0 < low <= high, got {ratio!r}")
    n = x.shape[0]
    area = lo + (hi - lo) * _rand(n, generator, x.device)
    logr = math.log(rlo) + (math.log(rhi) - math.log(rlo)) * _rand(n, generator, x.device)
    r = torch.exp(logr)
    sw = torch.sqrt(area * r).clamp(max=1.0)  # width / height of the window, as fractions of the image
    sh = torch.sqrt(area / r).clamp(max=1.0)
    tx = (1 - sw) * (2 * _rand(n, generator, x.device) - 1)  # centre in normalised coordinates
    ty = (1 - sh) * (2 * _rand(n, generator, x.device) - 1)
    theta = torch.zeros(n, 2, 3, dtype=x.dtype, device=x.device)
    theta[:, 0, 0] = sw
    theta[:, 0, 2] = tx
    theta[:, 1, 1] = sh
    theta[:, 1, 2] = ty
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False).clamp_(0.0, 1.0)


def random_flip(x, p=0.5, generator=None):
    """Flip each sample left-right with probability ``p``."""
    x = check_images(x)
    m = (_rand(x.shape[0], generator, x.device) < float(p)).view(-1, 1, 1, 1)
    return torch.where(m, x.flip(-1), x)


def brightness_contrast(x, brightness=0.4, contrast=0.4, p=0.8, generator=None):
    """Colour jitter: with probability ``p``, scale by ``b ~ U[1-brightness, 1+brightness]`` and blend with the
    sample's mean by ``c ~ U[1-contrast, 1+contrast]`` (torchvision's definitions), in random order; clipped."""
    x = check_images(x)
    n = x.shape[0]
    b = 1 + float(brightness) * (2 * _rand(n, generator, x.device) - 1)
    c = 1 + float(contrast) * (2 * _rand(n, generator, x.device) - 1)
    apply = _rand(n, generator, x.device) < float(p)
    b = torch.where(apply, b, torch.ones_like(b)).view(-1, 1, 1, 1).to(x.dtype)
    c = torch.where(apply, c, torch.ones_like(c)).view(-1, 1, 1, 1).to(x.dtype)
    b_first = (_rand(n, generator, x.device) < 0.5).view(-1, 1, 1, 1)

    def _contrast(t):
        mean = t.mean(dim=(1, 2, 3), keepdim=True)
        return (c * t + (1 - c) * mean).clamp(0.0, 1.0)

    one = _contrast((x * b).clamp(0.0, 1.0))
    two = (_contrast(x) * b).clamp(0.0, 1.0)
    return torch.where(b_first, one, two)


def random_grayscale(x, p=0.2, generator=None):
    """Replace an RGB sample by its luminance (ITU-R 601) in all three channels with probability ``p``;
    single-channel images are returned unchanged (a copy)."""
    x = check_images(x)
    if x.shape[1] != 3:
        return x.clone()
    w = torch.tensor([0.299, 0.587, 0.114], dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    g = (x * w).sum(dim=1, keepdim=True).expand_as(x)
    m = (_rand(x.shape[0], generator, x.device) < float(p)).view(-1, 1, 1, 1)
    return torch.where(m, g, x)


class Augment:
    """The two-view augmentation of the contrastive models: a composition of the functions above.

    Parameters
    ----------
    crop : {"resized", "pad", "none"}, default "resized"
        "resized": :func:`random_resized_crop` with ``crop_scale``; "pad": :func:`random_crop` with ``padding``.
    crop_scale : (float, float), default (0.3, 1.0)
    padding : int, default 4
    flip : float, default 0.5, probability of a horizontal flip.
    brightness, contrast : float, default 0.4; jitter : float, default 0.8 (probability of colour jitter).
    grayscale : float, default 0.2 (colour images only).
    """

    def __init__(self, crop="resized", crop_scale=(0.3, 1.0), padding=4, flip=0.5, brightness=0.4, contrast=0.4,
                 jitter=0.8, grayscale=0.2):
        if crop not in ("resized", "pad", "none"):
            raise ValueError(f"crop must be 'resized', 'pad' or 'none', got {crop!r}")
        for name, v in (("flip", flip), ("jitter", jitter), ("grayscale", grayscale)):
            if not 0 <= float(v) <= 1:
                raise ValueError(f"{name} must be a probability in [0, 1], got {v!r}")
        self.crop, self.crop_scale, self.padding = crop, tuple(crop_scale), int(padding)
        self.flip, self.brightness, self.contrast = float(flip), float(brightness), float(contrast)
        self.jitter, self.grayscale = float(jitter), float(grayscale)

    def __call__(self, x, generator=None):
        x = check_images(x)
        if self.crop == "resized":
            x = random_resized_crop(x, self.crop_scale, generator=generator)
        elif self.crop == "pad":
            x = random_crop(x, self.padding, generator=generator)
        if self.flip > 0:
            x = random_flip(x, self.flip, generator=generator)
        if self.jitter > 0 and (self.brightness > 0 or self.contrast > 0):
            x = brightness_contrast(x, self.brightness, self.contrast, self.jitter, generator=generator)
        if self.grayscale > 0:
            x = random_grayscale(x, self.grayscale, generator=generator)
        return x
