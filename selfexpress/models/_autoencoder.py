"""The convolutional auto-encoder of DSC-Net / SSCN and helpers shared by both estimators.

Architecture (reference-impls.md §3.1, ``get_conv_autoencoder`` of the SSCN reference): ``len(kernel_sizes)``
``Conv2d(stride, padding[i]) + ReLU`` layers (MNIST: kernels 5, 3, 3; channels 10, 20, 30; stride 2;
padding 2, 1, 1: 28x28 -> 14 -> 7 -> 4, latent 4*4*30 = 480), flattened; the decoder mirrors it with
``ConvTranspose2d`` layers whose ``output_padding`` is computed to give back the exact encoder sizes, a ReLU
after every transposed convolution (the last one included, so outputs are >= 0 like pixels in [0, 1]).
Every weight is Xavier-uniform, every bias zero (``reset_layer``). The "linear" variant has identity
encoder and decoder (raw feature vectors, no parameters).
"""

from __future__ import annotations

import numbers

import numpy as np
from torch import nn

from .._validation import check_positive

__all__ = ["ConvAutoEncoder", "IdentityAutoEncoder", "conv_output_sizes", "check_architecture", "load_or_pretrain",
           "pretrain_autoencoder", "reconstruction_loss", "as_input_shape"]


def conv_output_sizes(image_size, kernel_sizes, stride, paddings):
    """Spatial sizes ``[(H, W), (H1, W1), ...]`` through the encoder (PyTorch's Conv2d formula)."""
    sizes = [tuple(int(s) for s in image_size)]
    for k, p in zip(kernel_sizes, paddings):
        h, w = sizes[-1]
        sizes.append(((h + 2 * p - k) // stride + 1, (w + 2 * p - k) // stride + 1))
    return sizes


def as_input_shape(image_shape):
    """``(H, W)`` or ``(C, H, W)`` -> ``(C, H, W)`` with positive ints; ``ValueError`` otherwise."""
    try:
        shape = tuple(image_shape)
    except TypeError:
        raise ValueError(f"image_shape must be (H, W) or (C, H, W), got {image_shape!r}") from None
    if len(shape) == 2:
        shape = (1, *shape)
    if len(shape) != 3 or not all(isinstance(s, numbers.Integral) and not isinstance(s, bool) and s > 0
                                  for s in shape):
        raise ValueError(f"image_shape must be (H, W) or (C, H, W) of positive ints, got {image_shape!r}")
    return tuple(int(s) for s in shape)


def check_architecture(image_shape, kernel_sizes, channels, stride, paddings):
    """Validate the conv auto-encoder parameters; returns ``(input_shape, kernels, channels, stride, paddings)``."""
    shape = as_input_shape(image_shape)

    def ints(v, name, allow_zero=False):
        try:
            vals = tuple(v)
        except TypeError:
            raise ValueError(f"{name} must be a sequence of ints, got {v!r}") from None
        return tuple(check_positive(x, f"{name}[i]", integer=True, allow_zero=allow_zero) for x in vals)

    kernels = ints(kernel_sizes, "kernel_sizes")
    chans = ints(channels, "channels")
    pads = ints(paddings, "paddings", allow_zero=True)
    if not kernels or len(kernels) != len(chans) or len(kernels) != len(pads):
        raise ValueError(f"kernel_sizes, channels and paddings must have the same (non-zero) length, got "
                         f"{len(kernels)}, {len(chans)}, {len(pads)}")
    stride = check_positive(stride, "stride", integer=True)
    sizes = conv_output_sizes(shape[1:], kernels, stride, pads)
    if min(min(s) for s in sizes) < 1:
        raise ValueError(f"image_shape {shape[1:]} is too small for the conv encoder (sizes {sizes})")
    return shape, kernels, chans, stride, pads


class ConvAutoEncoder(nn.Module):
    """Conv encoder / mirrored transposed-conv decoder (module docstring). Inputs (n, C*H*W) or (n, C, H, W)."""

    def __init__(self, input_shape=(1, 28, 28), kernel_sizes=(5, 3, 3), channels=(10, 20, 30), stride=2,
                 paddings=(2, 1, 1)):
        super().__init__()
        shape, kernels, chans, stride, pads = check_architecture(input_shape, kernel_sizes, channels, stride, paddings)
        self.input_shape = shape
        sizes = conv_output_sizes(shape[1:], kernels, stride, pads)
        self.latent_shape = (chans[-1], *sizes[-1])
        self.latent_dim = int(np.prod(self.latent_shape))
        enc, c_in = [], shape[0]
        for k, c, p in zip(kernels, chans, pads):
            enc += [nn.Conv2d(c_in, c, k, stride=stride, padding=p), nn.ReLU()]
            c_in = c
        self.encoder = nn.Sequential(*enc)
        dec = []
        ins = [shape[0], *chans[:-1]]
        for i in reversed(range(len(kernels))):
            target, source = sizes[i], sizes[i + 1]
            op = tuple(target[j] - ((source[j] - 1) * stride - 2 * pads[i] + kernels[i]) for j in range(2))
            if not all(0 <= o < stride for o in op):
                raise ValueError(f"cannot mirror conv layer {i} ({source} -> {target}): output_padding {op} "
                                 f"not in [0, stride)")
            dec += [nn.ConvTranspose2d(chans[i], ins[i], kernels[i], stride=stride, padding=pads[i],
                                       output_padding=op), nn.ReLU()]
        self.decoder = nn.Sequential(*dec)
        self.reset_parameters()

    def reset_parameters(self):
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def encode(self, x):
        """(n, C*H*W) or (n, C, H, W) -> latent codes (n, latent_dim)."""
        x = x.reshape(x.shape[0], *self.input_shape)
        return self.encoder(x).reshape(x.shape[0], -1)

    def decode(self, z):
        """(n, latent_dim) -> reconstructions (n, C*H*W)."""
        out = self.decoder(z.reshape(z.shape[0], *self.latent_shape))
        return out.reshape(z.shape[0], -1)

    def forward(self, x):
        return self.decode(self.encode(x))


class IdentityAutoEncoder(nn.Module):
    """Identity encoder and decoder (SSCN's / DSC-Net's "linear" variant on raw feature vectors)."""

    def __init__(self, n_features):
        super().__init__()
        self.latent_dim = int(n_features)

    def encode(self, x):
        return x.reshape(x.shape[0], -1)

    def decode(self, z):
        return z

    def forward(self, x):
        return x.reshape(x.shape[0], -1)


def reconstruction_loss(x, x_out):
    """``sum (x - x_out)^2`` (a sum, as in the reference)."""
    return ((x.reshape(x_out.shape) - x_out) ** 2).sum()


def pretrain_autoencoder(ae, X, *, n_epochs, batch_size, lr, random_state, verbose=False, checkpoint_dir=None,
                         resume=False, fingerprint=None, autocast="off"):
    """Pre-train ``ae`` on the reconstruction loss alone (Adam, constant ``lr``) with the shared Trainer.

    ``X`` is a float32 tensor (n, D). ``autocast``: the Trainer's (the whole loss is the auto-encoder's forward
    pass and a squared error summed in float32, so bf16 is safe here). Returns the trainer (``history`` holds the
    loss per step).
    """
    from ..train import Trainer

    n = X.shape[0]
    bs = min(int(batch_size), n)

    def loss_fn(idx):
        xb = X[idx]
        loss = reconstruction_loss(xb, ae(xb))
        return loss, {"per_point": float(loss.detach()) / xb.shape[0]}

    trainer = Trainer(ae, loss_fn, n, n_iter=int(n_epochs) * max(1, n // bs), batch_size=bs, lr=float(lr),
                      schedule="constant", random_state=random_state, verbose=verbose, checkpoint_dir=checkpoint_dir,
                      resume=resume, fingerprint=fingerprint, desc="AE pretraining",
                      autocast=autocast)
    trainer.run()
    return trainer


def load_or_pretrain(ae, X, *, pretrained=None, n_epochs, batch_size, lr, random_state, verbose=False,
                     checkpoint_dir=None, resume=False, fingerprint=None, autocast="off"):
    """Load ``pretrained`` (a ``state_dict``) into ``ae``, or pre-train it for ``n_epochs`` (if > 0).

    Returns the pretraining history (None when nothing was trained); ``ValueError`` when ``pretrained`` does
    not fit the architecture.
    """
    if pretrained is not None:
        try:
            ae.load_state_dict(pretrained)
        except RuntimeError as exc:
            raise ValueError(f"pretrained_autoencoder does not fit this architecture: {exc}") from None
        return None
    if int(n_epochs) <= 0:
        return None
    tr = pretrain_autoencoder(ae, X, n_epochs=int(n_epochs), batch_size=int(batch_size), lr=float(lr),
                              random_state=random_state, verbose=verbose, checkpoint_dir=checkpoint_dir,
                              resume=resume, fingerprint=fingerprint, autocast=autocast)
    return tr.history
