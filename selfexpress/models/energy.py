"""Energy-based self-expressiveness (LDRSC; Li et al., arXiv 2110.15037, ``energy-based-ssc.txt``).

Siamese encoders learn a dictionary by self-supervision, and an energy network on pairs gives the
self-expressive coefficients, so that the coefficients of a point never need the whole data set in one batch:

1. **Encoders.** ``f_q`` (query, trained) and ``f_k`` (key): a backbone (a small conv net for 28 x 28 / 32 x 32
   images on a CPU, or a plain-torch ResNet-18 / ResNet-50 with a CIFAR stem; the paper uses ResNet-50) and a
   projection head (Linear-BN-ReLU-Linear), output ``z`` normalised to the unit sphere (dimension ``embed_dim``).
   Two augmentations per image (:class:`selfexpress.data.augment.Augment`: random resized crop or padded crop,
   horizontal flip, brightness / contrast; pure torch ops) give ``x^A`` and ``x^B``, ``z^A = f_q(x^A)``,
   ``z^B = f_k(x^B)``.
2. **Dictionary learning** (``contrastive``): "infonce" -- MoCo: ``f_k`` is a momentum copy of ``f_q``
   (``theta_k <- m theta_k + (1 - m) theta_q``), a memory bank ``Z^B`` (n x p) holds the newest key of every
   training point (Alg. 2: filled by one pass over the data, then ``Z^B[i] = z_i^B`` after each batch), and the
   loss is eq. (5)'s first term ``-log exp(z_i^A . z_i^B / tau) / sum_j exp(z_i^A . z_j^B / tau)`` with the fresh
   key as the positive and every other bank entry as a negative. "simsiam" -- the paper's stop-gradient
   alternative (Table 6): one shared encoder, a predictor MLP, ``-(cos(p^A, sg z^B) + cos(p^B, sg z^A)) / 2``.
   BatchNorm statistics are computed over ``bn_splits`` sub-batches, the key's on a shuffled order (MoCo's
   shuffling BN on one device), so that a query and its key never share batch statistics.
3. **Energy-based coefficients** (Alg. 1, eq. 6-7): ``e_ij = E(concat(z_i^A, z_j^B))`` with ``E`` an MLP with two
   hidden layers (``energy_hidden``, ReLU; the paper's best depth, Table 4), and
   ``c_ij = softmax_j(-beta e_ij)`` over the dictionary with ``c_ii = 0`` (the point's own entry is masked).
   ``E``'s first layer splits into ``W_a z_i + W_b z_j``, so a block of pairs costs one broadcast add and the
   second layer. ``coefficients="inner_product"``: the paper's attention baseline (Table 5), ``-e_ij = s z_i . z_j``
   with a learnable scale ``s`` (initialised to ``1 / temperature``) in place of the energy network.
4. **Joint training** (eq. 5, Alg. 2): after ``n_epochs_pretrain`` epochs of the self-supervised loss alone (the
   paper's two-stage strategy), ``n_epochs`` epochs of
   ``L_contrastive + lambda1 ||z_i^A - sum_j c_ij z_j^B||^2 + lambda2 ||c_i||^2`` (means over the batch), the
   coefficients taken on ``n_dictionary`` bank entries drawn afresh each step (all ``n`` when
   ``n_dictionary >= n``). The paper sets ``lambda2 = 1`` and searches ``lambda1`` in {5, 10, 15, 20, 25}.
   Every stage runs in the shared :class:`selfexpress.train.Trainer` (seeded batches, checkpoints, resume).
5. **Clustering.** On un-augmented images, ``z^A = f_q(x)`` and the dictionary ``Z^B = f_k(x)``; the rows of
   ``C`` are computed a block of rows at a time against the whole dictionary (memory O(block_size * n), never an
   n x n array), each row keeps its ``n_nonzero`` largest coefficients (``coef_``, CSR; row i reconstructs
   ``x_i``), the affinity is ``(|C| + |C^T|) / 2`` (:func:`selfexpress.graph.affinity_from_coef`) and
   :func:`selfexpress.cluster.spectral_clustering` cuts it. ``n_candidates`` restricts each row's energy
   evaluations to its nearest dictionary entries by inner product (for large n; an approximation).
6. :meth:`predict` labels unseen images through their coefficients on the training dictionary:
   ``argmax_k sum_{j: labels_j = k} c_j(x)`` (the coefficient mass on each cluster).
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .._device import as_float32, autocast_context, device_property, float32_region
from .._memory import check_allocation
from .._validation import check_is_fitted, check_positive, fit_seed
from ..data.augment import Augment
from ._deep import EmbeddingTransformerMixin, TorchClustering, flatten_points
from ._files import check_network_tensors, config_params, estimator_from_config, invalid_config, load_network
from .base import store_params

__all__ = ["EnergySubspaceClustering", "EnergyModule", "EnergyNet", "InnerProductEnergy", "SmallConvNet", "ResNet",
           "coefficients_from_energy"]

MODEL_KIND = "energy-ssc"
BACKBONES = ("small", "resnet18", "resnet50")


# ----------------------------------------------------------------------------------------------- backbones
def _conv_bn(cin, cout, stride):
    return [nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


class SmallConvNet(nn.Module):
    """Five 3 x 3 conv-BN-ReLU layers (widths w, 2w, 2w, 4w, 4w; strides 1, 2, 1, 2, 1) + global average pool.

    5.6 M multiply-adds per 28 x 28 image at ``width=16`` (22 M at 32); 64 output features at 16.
    """

    def __init__(self, in_channels=1, width=32):
        super().__init__()
        w = int(width)
        layers = (_conv_bn(in_channels, w, 1) + _conv_bn(w, 2 * w, 2) + _conv_bn(2 * w, 2 * w, 1)
                  + _conv_bn(2 * w, 4 * w, 2) + _conv_bn(4 * w, 4 * w, 1))
        self.features = nn.Sequential(*layers)
        self.out_dim = 4 * w

    def forward(self, x):
        return self.features(x).mean(dim=(2, 3))


class _Basic(nn.Module):
    expansion = 1

    def __init__(self, cin, planes, stride):
        super().__init__()
        self.c1 = nn.Conv2d(cin, planes, 3, stride, 1, bias=False)
        self.b1 = nn.BatchNorm2d(planes)
        self.c2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.b2 = nn.BatchNorm2d(planes)
        self.short = None
        if stride != 1 or cin != planes:
            self.short = nn.Sequential(nn.Conv2d(cin, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))

    def forward(self, x):
        out = F.relu(self.b1(self.c1(x)))
        out = self.b2(self.c2(out))
        return F.relu(out + (x if self.short is None else self.short(x)))


class _Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin, planes, stride):
        super().__init__()
        out = planes * 4
        self.c1 = nn.Conv2d(cin, planes, 1, bias=False)
        self.b1 = nn.BatchNorm2d(planes)
        self.c2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.b2 = nn.BatchNorm2d(planes)
        self.c3 = nn.Conv2d(planes, out, 1, bias=False)
        self.b3 = nn.BatchNorm2d(out)
        self.short = None
        if stride != 1 or cin != out:
            self.short = nn.Sequential(nn.Conv2d(cin, out, 1, stride, bias=False), nn.BatchNorm2d(out))

    def forward(self, x):
        y = F.relu(self.b1(self.c1(x)))
        y = F.relu(self.b2(self.c2(y)))
        y = self.b3(self.c3(y))
        return F.relu(y + (x if self.short is None else self.short(x)))


class ResNet(nn.Module):
    """ResNet-18 (basic blocks 2-2-2-2) or ResNet-50 (bottlenecks 3-4-6-3) in plain torch, with the CIFAR stem
    (one 3 x 3 conv, no max-pool) suited to 28 x 28 / 32 x 32 inputs; widths ``width * (1, 2, 4, 8)`` (64: the
    standard nets); output: global average pool (512 / 2048 features at ``width=64``)."""

    def __init__(self, depth=18, in_channels=1, width=64):
        super().__init__()
        if depth == 18:
            block, counts = _Basic, (2, 2, 2, 2)
        elif depth == 50:
            block, counts = _Bottleneck, (3, 4, 6, 3)
        else:
            raise ValueError(f"depth must be 18 or 50, got {depth!r}")
        w = int(width)
        self.stem = nn.Sequential(*_conv_bn(in_channels, w, 1))
        layers, cin = [], w
        for i, n_blocks in enumerate(counts):
            planes = w * 2 ** i
            for b in range(n_blocks):
                layers.append(block(cin, planes, 2 if (b == 0 and i > 0) else 1))
                cin = planes * block.expansion
        self.layers = nn.Sequential(*layers)
        self.out_dim = cin

    def forward(self, x):
        return self.layers(self.stem(x)).mean(dim=(2, 3))


def make_backbone(name, in_channels, width):
    if name == "small":
        return SmallConvNet(in_channels, width)
    if name == "resnet18":
        return ResNet(18, in_channels, width)
    if name == "resnet50":
        return ResNet(50, in_channels, width)
    raise ValueError(f"backbone must be one of {BACKBONES}, got {name!r}")


class Encoder(nn.Module):
    """Backbone + projection head (Linear-BN-ReLU-Linear); :meth:`forward` returns the raw projection."""

    def __init__(self, backbone, proj_hidden, embed_dim):
        super().__init__()
        self.backbone = backbone
        self.head = nn.Sequential(nn.Linear(backbone.out_dim, proj_hidden, bias=False), nn.BatchNorm1d(proj_hidden),
                                  nn.ReLU(inplace=True), nn.Linear(proj_hidden, embed_dim))

    def forward(self, x):
        return self.head(self.backbone(x))


# ----------------------------------------------------------------------------------------------- energies
class EnergyNet(nn.Module):
    """``e(z_a, z_b) = MLP(concat(z_a, z_b))`` with two hidden ReLU layers; :meth:`pairwise` gives the (a, b)
    matrix of energies of every query against every dictionary entry without forming the concatenations."""

    def __init__(self, embed_dim, hidden=(64, 64), init_scale=5.0):
        super().__init__()
        h1, h2 = (int(h) for h in hidden)
        self.fc1 = nn.Linear(2 * embed_dim, h1)
        self.fc2 = nn.Linear(h1, h2)
        self.fc3 = nn.Linear(h2, 1)
        self.embed_dim = int(embed_dim)
        if init_scale is not None:
            self.distance_init(float(init_scale))

    @torch.no_grad()
    def distance_init(self, scale):
        """Initialise ``e`` as an increasing function of ``||z_a - z_b||`` (about ``scale * ||z_a - z_b||``).

        First layer ``[W, -W]`` (features of the difference only, zero bias), non-negative second and third
        layers: ``e = w3 . relu(A relu(W (z_a - z_b)))``, and a sum of ReLUs of random projections grows like the
        norm. A default random initialisation gives energies that barely vary, i.e. uniform coefficients
        ``c = 1 / n`` that a CPU-sized schedule does not get away from; this one starts ``c`` as a soft
        nearest-neighbour distribution on the unit sphere with the range of the inner-product baseline
        (``scale = 1 / temperature``), and training reshapes it freely (the architecture is the paper's).
        """
        if self.fc1.weight.is_meta:  # shapes only (model-file checks)
            return
        p = self.embed_dim
        h1 = self.fc1.out_features
        W = torch.randn(h1, p) / math.sqrt(p)
        self.fc1.weight.copy_(torch.cat([W, -W], dim=1))
        self.fc1.bias.zero_()
        self.fc2.weight.uniform_(0.0, 2.0 / h1)
        self.fc2.bias.zero_()
        self.fc3.weight.uniform_(0.5, 1.5)
        self.fc3.bias.zero_()
        # calibrate: mean energy of two random unit vectors (||z_a - z_b|| ~ sqrt(2)) = scale * sqrt(2)
        za = F.normalize(torch.randn(256, p), dim=1)
        zb = F.normalize(torch.randn(256, p), dim=1)
        e = self.forward(torch.cat([za, zb], dim=1)).mean()
        if float(e) > 0:
            self.fc3.weight.mul_(scale * math.sqrt(2.0) / float(e))

    def forward(self, pairs):
        """Energies of concatenated pairs ``(m, 2p) -> (m,)`` (Alg. 1, literally)."""
        return self.fc3(F.relu(self.fc2(F.relu(self.fc1(pairs))))).squeeze(-1)

    def pairwise(self, za, zb, chunk=None):
        """``(a, p), (b, p) -> (a, b)`` energies; ``chunk`` dictionary columns at a time (memory a * chunk * h1)."""
        p = self.embed_dim
        W = self.fc1.weight
        U = za @ W[:, :p].T + self.fc1.bias  # (a, h1)
        V = zb @ W[:, p:].T  # (b, h1)
        if chunk is None or chunk >= V.shape[0]:
            return self._tail(U[:, None, :] + V[None, :, :])
        return torch.cat([self._tail(U[:, None, :] + V[None, c0:c0 + chunk, :])
                          for c0 in range(0, V.shape[0], chunk)], dim=1)

    def candidates(self, za, zb_cand):
        """``(a, p), (a, m, p) -> (a, m)``: energies of each query against its own candidate entries."""
        p = self.embed_dim
        W = self.fc1.weight
        U = za @ W[:, :p].T + self.fc1.bias
        V = zb_cand @ W[:, p:].T
        return self._tail(U[:, None, :] + V)

    def _tail(self, h):
        h = F.relu(h)
        h = F.relu(F.linear(h, self.fc2.weight, self.fc2.bias))
        return F.linear(h, self.fc3.weight, self.fc3.bias).squeeze(-1)


class InnerProductEnergy(nn.Module):
    """Attention baseline (Table 5): ``e_ij = -s z_i . z_j`` with a learnable scale ``s = exp(log_scale)``."""

    def __init__(self, init_scale):
        super().__init__()
        self.log_scale = nn.Parameter(torch.tensor(math.log(float(init_scale))))

    def forward(self, pairs):
        p = pairs.shape[-1] // 2
        return -self.log_scale.exp() * (pairs[..., :p] * pairs[..., p:]).sum(-1)

    def pairwise(self, za, zb, chunk=None):
        return -self.log_scale.exp() * (za @ zb.T)

    def candidates(self, za, zb_cand):
        return -self.log_scale.exp() * torch.einsum("ap,amp->am", za, zb_cand)


def coefficients_from_energy(energy, beta=1.0, exclude=None):
    """``c_ij = softmax_j(-beta e_ij)`` (eq. 7) for an (a, b) energy matrix.

    ``exclude``: (a,) long tensor, the column of each row to force to zero (``c_ii = 0``; -1: none).
    Rows sum to 1 (over the columns that are not excluded).
    """
    logits = -float(beta) * energy
    if exclude is not None:
        cols = torch.arange(energy.shape[1], device=energy.device)
        logits = logits.masked_fill(cols[None, :] == exclude[:, None], float("-inf"))
    return torch.softmax(logits, dim=1)


class EnergyModule(nn.Module):
    """Query encoder, key encoder (momentum copy; no gradient), energy network, SimSiam predictor, memory bank."""

    def __init__(self, in_channels, n_samples, backbone="small", width=32, proj_hidden=256, embed_dim=64,
                 energy_hidden=(32, 32), coefficients="energy", contrastive="infonce", temperature=0.2):
        super().__init__()
        self.contrastive = contrastive
        self.encoder_q = Encoder(make_backbone(backbone, in_channels, width), proj_hidden, embed_dim)
        if contrastive == "infonce":
            self.encoder_k = Encoder(make_backbone(backbone, in_channels, width), proj_hidden, embed_dim)
            self.encoder_k.load_state_dict(self.encoder_q.state_dict())
            for p in self.encoder_k.parameters():
                p.requires_grad_(False)
            self.predictor = None
        else:
            self.encoder_k = None  # SimSiam: one shared encoder
            self.predictor = nn.Sequential(nn.Linear(embed_dim, proj_hidden // 2, bias=False),
                                           nn.BatchNorm1d(proj_hidden // 2), nn.ReLU(inplace=True),
                                           nn.Linear(proj_hidden // 2, embed_dim))
        if coefficients == "energy":
            self.energy = EnergyNet(embed_dim, energy_hidden, init_scale=1.0 / float(temperature))
        else:
            self.energy = InnerProductEnergy(1.0 / float(temperature))
        self.register_buffer("bank", torch.zeros(int(n_samples), int(embed_dim)))

    @property
    def key_encoder(self):
        return self.encoder_q if self.encoder_k is None else self.encoder_k

    @torch.no_grad()
    def momentum_update(self, m):
        if self.encoder_k is None:
            return
        for pq, pk in zip(self.encoder_q.parameters(), self.encoder_k.parameters()):
            pk.mul_(m).add_(pq.detach(), alpha=1.0 - m)


def _split_forward(net, x, n_splits, perm=None):
    """``net(x)`` with BatchNorm statistics over ``n_splits`` sub-batches (of ``x[perm]`` when given)."""
    if perm is not None:
        x = x[perm]
    n_splits = max(1, min(int(n_splits), x.shape[0] // 2))
    out = torch.cat([net(part) for part in x.tensor_split(n_splits)]) if n_splits > 1 else net(x)
    if perm is not None:
        inv = torch.empty_like(perm)
        inv[perm] = torch.arange(perm.numel(), device=perm.device)
        out = out[inv]
    return out


# ----------------------------------------------------------------------------------------------- estimator
class EnergySubspaceClustering(EmbeddingTransformerMixin, TorchClustering):
    """Energy-based self-expressive subspace clustering of images (LDRSC); see the module docstring.

    Parameters
    ----------
    n_clusters : int, default 8
    image_shape : (H, W) or (C, H, W), default (28, 28)
        Shape of one image; ``X`` may be (n, H, W), (n, C, H, W) or flattened (n, C*H*W), pixels in [0, 1].
    backbone : {"small", "resnet18", "resnet50"}, default "small"
        The paper uses ResNet-50 (GPU); "small" is the CPU-sized default (22 M multiply-adds per 28 x 28 image).
    width : int, default 16
        Base width of the backbone (64 gives the standard ResNets).
    proj_hidden, embed_dim : int, default 256, 64
        Projection head; ``embed_dim`` is ``p``, the dimension of ``z`` and of the dictionary.
    energy_hidden : (int, int), default (32, 32)
        Widths of the energy MLP's two hidden layers (the paper gives the depth, not the widths). A training step
        evaluates ``batch_size * n_dictionary`` pairs: at (64, 64) and 2,048 entries the energy network cost 7x
        the encoders on a CPU (Fashion-MNIST 2k: stage 2 took 324 s against 47 s for inner products).
    coefficients : {"energy", "inner_product"}, default "energy"
        Energy network (the paper's method) or the attention / inner-product baseline of its Table 5.
    contrastive : {"infonce", "simsiam"}, default "infonce"
        MoCo's InfoNCE with momentum encoder and memory bank, or SimSiam's stop-gradient loss (Table 6).
    beta : float, default 1.0
        Inverse temperature of ``c = softmax(-beta e)`` (the paper sets 1).
    lambda1, lambda2 : float, default 10.0, 1.0
        Weights of the reconstruction and ``||c||^2`` terms (paper: lambda2 = 1, lambda1 in {5, ..., 25}).
    temperature : float, default 0.2 (tau of InfoNCE; MoCo v2)
    momentum : float, default 0.99 (key-encoder momentum m; MoCo uses 0.999 for much longer schedules)
    n_epochs_pretrain : int, default 50
        Epochs of the self-supervised loss alone (stage 1, cosine learning rate from ``lr``).
    n_epochs : int, default 5
        Epochs of the joint loss (stage 2, cosine from ``lr_joint``).
    batch_size : int, default 128
    lr, lr_joint : float, default 1e-3, 3e-4 (AdamW; encoder in stage 1, encoder in stage 2)
    lr_energy : float, default 1e-3
        Learning rate of the energy network (or of the inner-product scale) in stage 2.
    weight_decay : float, default 1e-4 (AdamW, both stages)
    n_dictionary : int, default 1024
        Bank entries the coefficients of a training batch are taken over (drawn afresh each step).
    bn_splits : int, default 4
        Sub-batches for the BatchNorm statistics (shuffled for the key encoder).
    crop : {"resized", "pad", "none"}, crop_scale : (float, float), padding : int, flip : float,
    jitter : float
        Augmentation (:class:`selfexpress.data.augment.Augment`; ``jitter`` is both the brightness and the
        contrast strength, applied with probability 0.8; grey-scale conversion 0.2 on colour images).
    n_nonzero : int, default 100
        Coefficients kept per row of ``coef_`` (top-k by value).
    normalize_rows : bool, default False
        Scale each row of ``coef_`` to unit l2 norm before the affinity (the paper does not).
    n_candidates : int or None, default None
        None: every row's coefficients over the whole dictionary (exact; O(n^2) energy evaluations).
        An int: only over its ``n_candidates`` nearest dictionary entries by inner product (large n).
    block_size : int, default 256
        Rows per block when computing ``C`` and in inference.
    n_init : int, default 20 (k-means restarts of the spectral clustering)
    pretrained_encoder : dict of tensors or None
        ``state_dict`` of a query encoder after stage 1 (``pretrained_encoder_`` of another fit of the same
        architecture); skips stage 1 (the key encoder starts as its copy). Lets an ablation share one pretraining.
    random_state : int or None
    device : str or torch.device, default "auto"
        "auto" (CUDA when available, else the CPU), "cpu", "cuda" / "cuda:N" or a torch.device
        (:func:`selfexpress._device.resolve_device`); every tensor of the fit lives there.
    verbose : bool, default False
    checkpoint_dir : path or None; resume : bool
        Checkpoints of the two stages in ``<dir>/pretrain`` and ``<dir>/joint``.

    Attributes
    ----------
    labels_ : ndarray (n,)
    coef_ : CSR (n, n), row i: the ``n_nonzero`` largest ``c_ij`` (``C[i, i] = 0``)
    affinity_ : CSR (n, n), ``(|C| + |C^T|) / 2``
    dictionary_ : tensor (n, embed_dim), ``Z^B = f_k(X)`` of the training images (used by :meth:`predict`)
    module_ : EnergyModule (eval mode; the memory bank emptied)
    n_parameters_ : int, trainable parameters
    history_ : dict ``{"pretrain", "joint"}`` of the trainers' histories
    timings_ : dict, seconds per stage
    """

    # registry (selfexpress.models.registry): raw pixels through its own contrastive encoder; images only
    _method_name = "energy"
    _input_kind = "pixels"
    _model_kind = MODEL_KIND
    _presets = {"image": dict(image_shape=(28, 28))}

    def __init__(self, n_clusters=8, *, image_shape=(28, 28), backbone="small", width=16, proj_hidden=256,
                 embed_dim=64, energy_hidden=(32, 32), coefficients="energy", contrastive="infonce", beta=1.0,
                 lambda1=10.0, lambda2=1.0, temperature=0.2, momentum=0.99, n_epochs_pretrain=50, n_epochs=5,
                 batch_size=128, lr=1e-3, lr_joint=3e-4, lr_energy=1e-3, weight_decay=1e-4, n_dictionary=1024,
                 bn_splits=4, crop="resized", crop_scale=(0.3, 1.0), padding=4, flip=0.5, jitter=0.4, n_nonzero=100,
                 normalize_rows=False, n_candidates=None, block_size=256, n_init=20, pretrained_encoder=None,
                 random_state=None, device="auto", verbose=False, checkpoint_dir=None, resume=False):
        store_params(self, locals())

    # ------------------------------------------------------------------ validation
    def _shape(self):
        s = self.image_shape
        if not isinstance(s, (tuple, list)) or len(s) not in (2, 3) or any(
                isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1 for v in s):
            raise ValueError(f"image_shape must be (H, W) or (C, H, W) of positive integers, got {s!r}")
        s = tuple(int(v) for v in s)
        shape = (1, *s) if len(s) == 2 else s
        if min(shape[1:]) < 8:
            raise ValueError(f"images must be at least 8 x 8 pixels, got image_shape={s!r}")
        return shape

    _device = device_property()  # ``device`` resolved: the torch.device of every tensor (selfexpress._device)

    _log_name = "energy"
    _min_samples = 4
    _fitted_attr = "dictionary_"
    _pretrained_param = "pretrained_encoder"

    def _check_params(self):
        self._check_common_params()
        self._shape()
        if self.backbone not in BACKBONES:
            raise ValueError(f"backbone must be one of {BACKBONES}, got {self.backbone!r}")
        if self.coefficients not in ("energy", "inner_product"):
            raise ValueError(f"coefficients must be 'energy' or 'inner_product', got {self.coefficients!r}")
        if self.contrastive not in ("infonce", "simsiam"):
            raise ValueError(f"contrastive must be 'infonce' or 'simsiam', got {self.contrastive!r}")
        eh = self.energy_hidden
        if not isinstance(eh, (tuple, list)) or len(eh) != 2:
            raise ValueError(f"energy_hidden must be two hidden-layer widths, got {eh!r}")
        for v in eh:
            check_positive(v, "energy_hidden", integer=True)
        for name in ("width", "proj_hidden", "embed_dim", "batch_size", "n_dictionary", "bn_splits", "n_nonzero",
                     "block_size", "n_init"):
            check_positive(getattr(self, name), name, integer=True)
        if int(self.proj_hidden) < 2:
            raise ValueError(f"proj_hidden must be at least 2, got {self.proj_hidden!r}")
        for name in ("n_epochs_pretrain", "n_epochs", "padding"):
            check_positive(getattr(self, name), name, integer=True, allow_zero=True)
        for name in ("beta", "temperature", "lr", "lr_joint", "lr_energy"):
            check_positive(getattr(self, name), name)
        for name in ("lambda1", "lambda2", "weight_decay", "jitter"):
            check_positive(getattr(self, name), name, allow_zero=True)
        m = self.momentum
        if isinstance(m, bool) or not isinstance(m, (int, float, np.floating)) or not 0 <= m < 1:
            raise ValueError(f"momentum must be in [0, 1), got {m!r}")
        if self.n_candidates is not None:
            check_positive(self.n_candidates, "n_candidates", integer=True)
        if self.pretrained_encoder is not None and not isinstance(self.pretrained_encoder, dict):
            raise ValueError("pretrained_encoder must be None or a state_dict (dict of tensors), got "
                             f"{type(self.pretrained_encoder).__name__}")
        Augment(crop=self.crop, crop_scale=self.crop_scale, padding=self.padding, flip=self.flip)
        cs = self.crop_scale
        if not isinstance(cs, (tuple, list)) or len(cs) != 2 or not 0 < float(cs[0]) <= float(cs[1]) <= 1:
            raise ValueError(f"crop_scale must be (low, high) with 0 < low <= high <= 1, got {cs!r}")

    def _flatten(self, X, name="X"):
        """Validate ``X`` ((n, D), (n, H, W) or (n, C, H, W); pixels in [0, 1]); return (n, D) float32."""
        X = flatten_points(X, name)
        shape = self._shape()
        D = int(np.prod(shape))
        if X.shape[1] != D:
            raise ValueError(f"{name} has {X.shape[1]} features per point but image_shape={tuple(self.image_shape)} "
                             f"implies {D}; set image_shape to the shape of one image")
        lo, hi = float(X.min(initial=0.0)), float(X.max(initial=0.0))
        if lo < 0 or hi > 1:
            raise ValueError(f"{name} must hold pixels in [0, 1] (got values in [{lo:.4g}, {hi:.4g}]); "
                             "divide uint8 images by 255")
        return X

    def _images(self, X):
        return torch.as_tensor(np.ascontiguousarray(X, dtype=np.float32)).reshape(-1, *self._shape()).to(self._device)

    def _build(self, n_samples):
        from ..train import seeded

        with seeded(fit_seed(self)):
            module = EnergyModule(self._shape()[0], n_samples, self.backbone, int(self.width), int(self.proj_hidden),
                                  int(self.embed_dim), tuple(int(h) for h in self.energy_hidden), self.coefficients,
                                  self.contrastive, float(self.temperature))
        return module.to(self._device)

    def _augment(self):
        return Augment(crop=self.crop, crop_scale=tuple(self.crop_scale), padding=int(self.padding),
                       flip=float(self.flip), brightness=float(self.jitter), contrast=float(self.jitter))

    def _fingerprint(self, X, stage):
        skip = {"n_nonzero", "normalize_rows", "n_candidates", "block_size", "n_init"}
        if stage == "pretrain":
            skip |= {"n_epochs", "lr_joint", "lr_energy", "lambda1", "lambda2", "n_dictionary", "beta"}
        return self._stage_fingerprint(X, stage, skip)

    def _memory_estimate(self, n):
        """Rough bytes of the largest stage: a training step (activations of 3 encoder passes + pair tensors)."""
        shape = self._shape()
        pix = int(np.prod(shape[1:]))
        b = min(int(self.batch_size), n)
        acts = 4 * 3 * b * pix * int(self.width) * 12 * (4 if self.backbone != "small" else 1)
        h1 = int(self.energy_hidden[0]) + int(self.energy_hidden[1])
        pairs = 4 * 4 * b * min(int(self.n_dictionary), n) * h1
        rows = 4 * 4 * int(self.block_size) * min(n, 4096) * h1 + 4 * 4 * int(self.block_size) * n
        return max(acts + pairs, rows)

    # ------------------------------------------------------------------ training
    def _loss_fn(self, module, images, aug, joint):
        """The Trainer's ``loss_fn`` for stage 1 (``joint=False``) or stage 2.

        Under bf16 autocast (``SELFEXPRESS_AUTOCAST=bf16``) the encoders, the predictor and InfoNCE's logits run
        in bf16 (its cross-entropy in float32, by autocast itself; SimSiam's cosines in float32, explicitly); the
        energy network, the coefficients ``c = softmax(-beta e)`` (which the top-k of inference selects from) and
        the self-expression residual ``z - c Z`` stay in float32 (``float32_region``).
        """
        tau = float(self.temperature)
        m = float(self.momentum)
        splits = int(self.bn_splits)
        n = images.shape[0]
        lam1, lam2, beta = float(self.lambda1), float(self.lambda2), float(self.beta)
        n_dict = min(int(self.n_dictionary), n)

        def loss_fn(idx):
            idx = idx.to(self._device)
            x = images[idx]
            xa, xb = aug(x), aug(x)
            logs = {}
            if module.contrastive == "infonce":
                module.momentum_update(m)
                za = F.normalize(_split_forward(module.encoder_q, xa, splits), dim=1)
                with torch.no_grad():
                    perm = torch.randperm(x.shape[0]).to(self._device)
                    zb = F.normalize(_split_forward(module.encoder_k, xb, splits, perm), dim=1)
                pos = (za * zb).sum(1, keepdim=True)
                neg = za @ module.bank.clone().T  # (B, n): every other bank entry is a negative (a copy: the
                # bank is updated in place below, before the backward pass)
                neg = neg.scatter(1, idx[:, None], float("-inf"))
                logits = torch.cat([pos, neg], dim=1) / tau
                loss_c = F.cross_entropy(logits, torch.zeros(x.shape[0], dtype=torch.long, device=self._device))
            else:
                pa = _split_forward(module.encoder_q, xa, splits)
                pb = _split_forward(module.encoder_q, xb, splits)
                qa, qb = module.predictor(pa), module.predictor(pb)
                qa, qb, pa, pb = as_float32(qa, qb, pa, pb)  # the cosines in float32 (CPU autocast would not)
                loss_c = -0.5 * (F.cosine_similarity(qa, pb.detach()).mean()
                                 + F.cosine_similarity(qb, pa.detach()).mean())
                za, zb = F.normalize(pa, dim=1), F.normalize(pb.detach(), dim=1)
            with torch.no_grad():
                module.bank[idx] = zb.detach().to(module.bank.dtype)  # Alg. 2 step 11: Z^B[i] = z_i^B
            logs["contrastive"] = float(loss_c.detach())
            if not joint:
                return loss_c, logs
            cols = torch.randperm(n)[:n_dict].to(self._device)
            Zd = module.bank[cols]
            with float32_region(za):  # no-ops without autocast
                za = as_float32(za)
                e = module.energy.pairwise(za, Zd)
                pos_of_self = torch.where(cols[None, :] == idx[:, None])  # c_ii = 0
                excl = torch.full((x.shape[0],), -1, dtype=torch.long, device=self._device)
                excl[pos_of_self[0]] = pos_of_self[1]
                c = coefficients_from_energy(e, beta, excl)
                rec = ((za - c @ Zd) ** 2).sum(1).mean()
                reg = (c * c).sum(1).mean()
            logs.update(rec=float(rec.detach()), reg=float(reg.detach()))
            return loss_c + lam1 * rec + lam2 * reg, logs

        return loss_fn

    @torch.no_grad()
    def _init_bank(self, module, images, aug):
        """Alg. 2's initialisation: the key of one augmented view of every training point."""
        module.train()
        b = max(int(self.batch_size), 2)
        for r0 in range(0, images.shape[0], b):
            xb = aug(images[r0:r0 + b])
            z = module.key_encoder(xb) if xb.shape[0] > 1 else module.key_encoder(torch.cat([xb, xb]))[:1]
            module.bank[r0:r0 + xb.shape[0]] = F.normalize(z, dim=1)

    def fit(self, X, y=None):
        """Train the encoders and the energy network, compute ``C``, its affinity and the spectral clustering.

        Parameters
        ----------
        X : array-like (n, D), (n, H, W) or (n, C, H, W), pixels in [0, 1]
        y : ignored

        Returns
        -------
        self
        """
        from ..cluster import spectral_clustering
        from ..graph import affinity_from_coef
        from ..train import Trainer

        X, K = self._validated(X)
        n = X.shape[0]
        if int(self.n_nonzero) >= n:
            raise ValueError(f"n_nonzero={self.n_nonzero} must be smaller than the number of samples ({n})")
        check_allocation(int(self._memory_estimate(n) + 8 * X.nbytes), "energy-based SSC training and inference",
                         f"lower batch_size (now {self.batch_size}), n_dictionary (now {self.n_dictionary}) or "
                         f"block_size (now {self.block_size})", device=self._device)
        seed = self._start_fit(X)  # the one seed of this fit
        module = self._build(n)
        self.module_ = module
        self.n_parameters_ = int(sum(p.numel() for p in module.parameters() if p.requires_grad))
        images = self._images(X)
        aug = self._augment()
        bs = min(int(self.batch_size), n)
        if bs < 2:
            raise ValueError("batch_size must be at least 2 (BatchNorm)")
        ipe = max(1, n // bs)
        ckpt = None if self.checkpoint_dir is None else Path(self.checkpoint_dir)
        wd = float(self.weight_decay)

        def adamw(groups):
            return torch.optim.AdamW(groups, weight_decay=wd)

        if self.pretrained_encoder is not None:
            try:
                module.encoder_q.load_state_dict(self.pretrained_encoder)
                if module.encoder_k is not None:
                    module.encoder_k.load_state_dict(self.pretrained_encoder)
            except RuntimeError as exc:
                raise ValueError(f"pretrained_encoder does not fit this architecture: {exc}") from None
        t0 = time.perf_counter()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed + 7)
            self._init_bank(module, images, aug)
        self.timings_["init_bank"] = time.perf_counter() - t0

        for stage, epochs, lr, joint, off in (("pretrain", self.n_epochs_pretrain, self.lr, False, 1),
                                              ("joint", self.n_epochs, self.lr_joint, True, 2)):
            t0 = time.perf_counter()
            if stage == "pretrain" and self.pretrained_encoder is not None:
                epochs = 0
            if int(epochs) > 0:
                self._log(f"{stage}: {epochs} epochs of {ipe} batches of {bs}")
                plr = None
                if joint:
                    plr = {f"energy.{k}": float(self.lr_energy) for k, _ in module.energy.named_parameters()}
                tr = Trainer(module, self._loss_fn(module, images, aug, joint), n, n_iter=int(epochs) * ipe,
                             batch_size=bs, lr=float(lr), param_lrs=plr, schedule="cosine", random_state=seed + off,
                             verbose=self.verbose, log_every=max(1, ipe // 4), optimizer=adamw,
                             checkpoint_dir=None if ckpt is None else ckpt / stage, resume=self.resume,
                             fingerprint=self._fingerprint(X, stage), desc=f"energy {stage}", autocast="env")
                tr.run()
                self.history_[stage] = tr.history
            if stage == "pretrain":
                self.pretrained_encoder_ = {k: v.detach().cpu().clone() for k, v in
                                            module.encoder_q.state_dict().items()}
            self.timings_[stage] = time.perf_counter() - t0

        module.eval()
        t0 = time.perf_counter()
        za = self._encode(images, module.encoder_q)
        self.dictionary_ = self._encode(images, module.key_encoder)
        module.bank.zero_()
        self.timings_["embed"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        self.coef_ = self._coef_rows(za, exclude_self=True)
        self.timings_["coefficients"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        self.affinity_ = affinity_from_coef(self.coef_, "symmetric", normalize_rows=bool(self.normalize_rows))
        self.timings_["graph"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        self.labels_ = np.asarray(spectral_clustering(self.affinity_, K, n_init=int(self.n_init),
                                                      random_state=seed), dtype=np.int64)
        self.timings_["spectral"] = time.perf_counter() - t0
        return self

    def fit_predict(self, X, y=None):
        """Fit and return ``labels_``."""
        return self.fit(X).labels_

    # ------------------------------------------------------------------ coefficients
    @torch.no_grad()
    def _encode(self, images, encoder):
        encoder.eval()
        b = max(int(self.block_size), 1)
        out = []
        for r0 in range(0, images.shape[0], b):
            with autocast_context(self._device):  # the encoder in bf16 when SELFEXPRESS_AUTOCAST=bf16
                z = encoder(images[r0:r0 + b])
            out.append(F.normalize(as_float32(z), dim=1))
        return torch.cat(out).cpu()

    @torch.no_grad()
    def _coef_blocks(self, za, exclude_self):
        """Yield ``(r0, c)`` with ``c`` the dense (b, n_dict) coefficients of rows ``r0 .. r0 + b`` (candidates:
        a (b, n_dict) tensor zero outside each row's candidates)."""
        energy = self.module_.energy.to(self._device).eval()
        D = self.dictionary_.to(self._device)
        nd = D.shape[0]
        b = max(int(self.block_size), 1)
        chunk = max(1, 2**22 // max(1, b * int(self.energy_hidden[0])))
        beta = float(self.beta)
        for r0 in range(0, za.shape[0], b):
            q = za[r0:r0 + b].to(self._device)
            rows = torch.arange(r0, r0 + q.shape[0], device=self._device)
            if self.n_candidates is None or int(self.n_candidates) >= nd - 1:
                e = energy.pairwise(q, D, chunk=chunk)
                yield r0, coefficients_from_energy(e, beta, rows if exclude_self else None)
                continue
            m = int(self.n_candidates)
            sim = q @ D.T
            if exclude_self:
                sim.scatter_(1, rows[:, None], float("-inf"))
            cand = sim.topk(m, dim=1).indices  # (b, m)
            c_c = coefficients_from_energy(energy.candidates(q, D[cand]), beta)
            yield r0, torch.zeros(q.shape[0], nd, device=self._device).scatter_(1, cand, c_c)

    def _coef_rows(self, za, exclude_self):
        """Sparse ``C`` (CSR, len(za) x n_dict): each row's ``n_nonzero`` largest coefficients."""
        import scipy.sparse as sp

        from ..graph import topk_to_csr

        k = min(int(self.n_nonzero), self.dictionary_.shape[0] - (1 if exclude_self else 0))
        parts = []
        for r0, c in self._coef_blocks(za, exclude_self):
            vals, idx = c.topk(k, dim=1)
            parts.append(topk_to_csr(vals.cpu(), idx.cpu(), self.dictionary_.shape[0]))
        return sp.vstack(parts, format="csr")

    def transform(self, X):
        """Embeddings ``z^A = f_q(x)`` (n, embed_dim), unit norm, of un-augmented images."""
        X = self._prepare(X)
        return self._encode(self._images(X), self.module_.encoder_q).numpy()

    def coefficients_of(self, X, n_nonzero=None):
        """Coefficients (CSR, n x n_train) of (possibly unseen) images on the training dictionary; no diagonal
        exclusion (use ``coef_`` for the training points). ``n_nonzero``: entries kept per row (default: the
        estimator's)."""
        X = self._prepare(X)
        za = self._encode(self._images(X), self.module_.encoder_q)
        old = self.n_nonzero
        try:
            if n_nonzero is not None:
                self.n_nonzero = check_positive(n_nonzero, "n_nonzero", integer=True)
            return self._coef_rows(za, exclude_self=False)
        finally:
            self.n_nonzero = old

    def predict_proba(self, X):
        """Coefficient mass on each cluster, ``P[i, k] proportional to sum_{j: labels_j = k} c_ij`` over each row's
        ``n_nonzero`` largest coefficients on the training dictionary (the entries the graph is built from);
        rows sum to 1."""
        X = self._prepare(X)
        za = self._encode(self._images(X), self.module_.encoder_q)
        K = int(self.n_clusters)
        k = min(int(self.n_nonzero), self.dictionary_.shape[0])
        lab = torch.as_tensor(self.labels_, dtype=torch.long, device=self._device)
        out = []
        for _, c in self._coef_blocks(za, exclude_self=False):
            vals, idx = c.topk(k, dim=1)
            P = torch.zeros(c.shape[0], K, device=self._device).scatter_add_(1, lab[idx], vals)
            out.append((P / P.sum(1, keepdim=True).clamp_min(1e-30)).cpu())
        return torch.cat(out).numpy()

    def predict(self, X):
        """Cluster of each (possibly unseen) image: the cluster holding most of its coefficient mass."""
        return self.predict_proba(X).argmax(axis=1).astype(np.int64)

    # ------------------------------------------------------------------ model files
    def _config_params(self):
        return config_params(self, ("pretrained_encoder",))

    def save(self, path):
        """Save the networks, the dictionary and the labels (safetensors) + parameters (JSON); no pickle."""
        from ..io import save_model_file

        check_is_fitted(self, "labels_")
        tensors = {f"net.{k}": v for k, v in self.module_.state_dict().items() if k != "bank"}
        tensors["dictionary"] = self.dictionary_
        tensors["labels"] = torch.as_tensor(np.asarray(self.labels_), dtype=torch.int64)
        config = {"params": self._config_params(), "n_features_in": int(self.n_features_in_),
                  "n_parameters": int(self.n_parameters_), "timings": getattr(self, "timings_", {})}
        return save_model_file(path, tensors, config, kind=MODEL_KIND)

    @classmethod
    def load(cls, path, device=None):
        """Load a model written by :meth:`save` (safetensors + JSON only).

        The kind, the parameters (same checks as ``fit``), every network tensor's name, shape, dtype and
        finiteness (against a network built on the meta device), the dictionary and the labels are checked;
        ``ValueError`` naming the file and the problem otherwise.
        """
        from ..io import load_model_file

        tensors, config = load_model_file(path, kind=MODEL_KIND)
        invalid = f"{path} is not a valid energy-based SSC model file"
        with invalid_config(invalid):
            model, _ = estimator_from_config(cls, config, device)
            n_features = config["n_features_in"]
            if isinstance(n_features, bool) or not isinstance(n_features, int) or \
                    n_features != int(np.prod(model._shape())):
                raise ValueError(f"n_features_in {n_features!r} does not match image_shape")
            with torch.device("meta"):
                net = EnergyModule(model._shape()[0], 1, model.backbone, int(model.width), int(model.proj_hidden),
                                   int(model.embed_dim), tuple(int(h) for h in model.energy_hidden),
                                   model.coefficients, model.contrastive, float(model.temperature))
            expected = {f"net.{k}": v for k, v in net.state_dict().items() if k != "bank"}
        check_network_tensors(tensors, expected, invalid, ("dictionary", "labels"))
        D, labels = tensors.get("dictionary"), tensors.get("labels")
        if D is None or D.ndim != 2 or D.shape[1] != int(model.embed_dim) or D.dtype != torch.float32 \
                or not bool(torch.isfinite(D).all()):
            raise ValueError(f"{invalid}: dictionary is missing or not a finite float32 (n, embed_dim) tensor")
        K = int(model.n_clusters)
        if labels is None or labels.dtype != torch.int64 or labels.ndim != 1 or labels.shape[0] != D.shape[0] or (
                labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= K)):
            raise ValueError(f"{invalid}: labels must be a 1-D int64 tensor in [0, n_clusters) with one entry per "
                             "dictionary row")
        model.module_ = load_network(model._build(D.shape[0]), tensors,
                                     extra={"bank": torch.zeros(D.shape[0], int(model.embed_dim))})
        model.dictionary_ = D.clone()
        model.labels_ = labels.numpy().astype(np.int64)
        model.n_features_in_ = n_features
        model.n_parameters_ = int(config.get("n_parameters", 0))
        model.timings_ = config.get("timings", {})
        return model
