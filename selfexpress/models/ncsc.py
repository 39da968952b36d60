"""NCSC: neural collaborative subspace clustering (Zhang, Ji, Harandi, Huang, Li; ICML 2019).

``ncsc.txt`` is the specification (no public code is known). A classifier and a self-expressive layer on
top of one convolutional auto-encoder supervise each other on every mini-batch; clustering is the
classifier's argmax, so :meth:`NCSC.predict` labels unseen points with one forward pass (no spectral
clustering, no N x N matrix: memory grows with the batch size, not with N).

Model (ncsc.txt §3-4), on a mini-batch ``X_b`` of ``B`` points, rows are points:

* ``Z = enc(X_b)`` (the shared conv auto-encoder of :mod:`selfexpress.models._autoencoder`; MNIST: kernels
  5, 3, 3, channels 10, 20, 30, stride 2, latent 4 x 4 x 30 = 480 > 9 x 10, §4);
* **self-expressive layer** ``C`` (``B x B``, diagonal 0, row i codes ``z_i``): the exact minimiser of the
  C-terms of Eq. (9), ``||C||_F^2 + lambda1/2 ||Z - C Z||_F^2`` s.t. ``diag(C) = 0``, which is
  ``C = I - diag(M)^{-1} M`` with ``M = (lambda1 Z Z^T + 2 I)^{-1}`` (:func:`self_expressive_coefficients`;
  the LSR closed form, computed in float64 through a ``d x d`` Woodbury solve when ``d < B``). A trained
  ``B x B`` parameter, as in DSC-Net, cannot follow re-shuffled batches; the closed form is the weight such a
  layer converges to, and it is differentiable in ``Z``, so Eq. (9) still trains the encoder through it;
* decoder on ``C Z`` -> ``X_hat``; ``L_sub = (||C||^2 + lambda1/2 ||Z - C Z||^2 + 1/2 ||X - X_hat||^2) / B``
  (Eq. 9, divided by B so the weights do not depend on the batch size);
* **classifier** head on ``Z`` (three ``k = 2`` convolutions + ReLU, then a 1 x 1 convolution to ``K``
  outputs, §5.1; an MLP for vector data), ``nu_i = softmax(logits_i) / ||softmax(logits_i)||_2``;
* ``A_c = nu nu^T`` (Eq. 1, in [0, 1]); ``A_s = (|C| + |C^T|) / 2`` divided by the largest off-diagonal
  value of its row, diagonal 1 (Eq. 4, §4) (:func:`subspace_affinity`);
* **collaborative loss** (Eqs. 5-7 with the soft masks of §3.3), off-diagonal pairs only,
  ``P = {A_s > u}``, ``N = {A_c < l}``::

      L_pos = -sum_P A_s log A_c / |P|              (A_s teaches the classifier: positive pairs)
      L_neg = -sum_N (1 - A_c) log(1 - A_s) / |N|    (A_c teaches the self-expressive layer: negative pairs)
      L_clf = -sum_{N \\ P} log(1 - A_c) / |N \\ P|   (the classifier's own negatives, see below)
      Omega = L_pos + alpha L_neg + beta L_clf

  (:func:`collaborative_loss`). Dividing by the pair counts is the paper's "alpha = ratio of the numbers of
  confident positive and negative pairs" (§3.3). ``L_clf`` is an addition: with ``L_pos`` and ``L_neg``
  alone nothing pushes two classifier outputs apart (every gradient on ``A_c`` raises it), so the classifier
  can collapse to one cluster; the negative half of the binary cross-entropy on the pairs the classifier is
  confident are different (DAC, Chang et al. 2017, whose threshold scheme ncsc.txt's u / l follow) prevents
  that. ``beta = 0`` gives the paper's literal Omega.
* ``loss = L_sub + lambda_cl Omega`` (Eq. 8), ``l`` = ``l_start`` in the first ``l_warmup_epochs`` epochs,
  then ``l_end`` (§5.1: u = 0.1, l = 0.7 then 0.9; the defaults here differ, see ``u``, ``lambda1``).
* ``lambda_balance`` adds :func:`balance_penalty` to Omega (also against collapse: without it the classifier's
  outputs stayed uniform, ``A_c = 1``, which minimises every other term); ``balance="uniform"`` uses
  ``KL(uniform || mean p)`` for the cluster sizes, which keeps pulling on outputs no point uses.
* ``normalize_latent`` (default): the self-expressive layer codes the unit-normalised ``z_i / ||z_i||``.

Training (Alg. 1, §4-5): auto-encoder pretraining on the reconstruction loss (Adam ``lr_ae``), then joint
training of everything on Eq. (8) with Adam, the auto-encoder at ``lr_ae_joint`` (1e-5) and the classifier at
``lr`` (1e-3). Alg. 1's three updates per batch (Eq. 9, Eq. 5, Eq. 8) are one update on Eq. (8) here: with
per-parameter-group learning rates, Eq. (8) contains the other two. Both stages run in the shared
:class:`selfexpress.train.Trainer` (seeded batches, checkpoints, resume). The paper's schedule (60 pretraining
epochs, batch 5,000, GPU) is the default; ``benchmarks/ncsc.py`` documents the shorter CPU schedule it used.
"""

from __future__ import annotations

import math
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .._device import as_float32, autocast_context, device_property, float32_region
from .._validation import check_fraction, check_is_fitted, check_n_features, check_positive, fit_seed
from ._autoencoder import reconstruction_loss
from ._deep import AutoEncoderClustering, EmbeddingTransformerMixin
from ._files import (apply_feature_transform, check_label_tensor, check_network_tensors, config_params,
                     invalid_config, pack_feature_transform, unpack_feature_transform)
from .base import store_params

__all__ = ["NCSC", "NCSCModule", "balance_penalty", "self_expressive_coefficients", "subspace_affinity",
           "classifier_affinity", "collaborative_loss"]

MODEL_KIND = "ncsc"
_EPS = 1e-7


# ----------------------------------------------------------------------------------------------- pieces
def self_expressive_coefficients(Z, lambda1, dtype=torch.float64):
    """``argmin_C ||C||_F^2 + lambda1/2 ||Z - C Z||_F^2`` s.t. ``diag(C) = 0`` for the rows ``Z`` (B, d).

    Row i of the result codes ``z_i`` (``z_i ~ sum_j C_ij z_j``). Closed form ``C = I - diag(M)^{-1} M`` with
    ``M = (lambda1 Z Z^T + 2 I)^{-1}`` (stationarity of each row with a multiplier for ``C_ii = 0``), evaluated
    in ``dtype`` (float64 by default; float32 is enough for unit-norm rows, where the condition number of the
    system is at most ``1 + lambda1 B / 2``); for ``d < B`` by Woodbury,
    ``M = I/2 - 1/4 Z (I/lambda1 + Z^T Z / 2)^{-1} Z^T``. Differentiable in ``Z``. Returns ``Z``'s dtype.
    """
    Zd = Z.to(dtype)
    B, d = Zd.shape
    lam = float(lambda1)
    if d < B:
        S = torch.eye(d, dtype=dtype, device=Z.device) / lam + 0.5 * (Zd.T @ Zd)
        M = -0.25 * (Zd @ torch.linalg.solve(S, Zd.T))
        M.diagonal().add_(0.5)
    else:
        M = torch.linalg.inv(lam * (Zd @ Zd.T) + 2.0 * torch.eye(B, dtype=dtype, device=Z.device))
    C = -M / M.diagonal()[:, None]
    C = C - torch.diag(C.diagonal())  # exactly 0 on the diagonal (it is -1 + 1 up to rounding)
    return C.to(Z.dtype)


def subspace_affinity(C):
    """``A_s`` of Eq. (4): ``(|C| + |C^T|)/2`` divided by its row's largest off-diagonal value, diagonal 1."""
    A = 0.5 * (C.abs() + C.abs().T)
    off = A - torch.diag(A.diagonal())
    cmax = off.max(dim=1, keepdim=True).values.clamp_min(1e-12)
    A = off / cmax
    return A + torch.eye(A.shape[0], dtype=A.dtype, device=A.device)


def classifier_affinity(logits):
    """``(A_c, nu)``: ``nu`` = l2-normalised softmax of ``logits`` (B, K), ``A_c = nu nu^T`` (Eq. 1), in [0, 1]."""
    nu = F.normalize(torch.softmax(logits, dim=1), dim=1)
    return nu @ nu.T, nu


def collaborative_loss(A_s, A_c, u, l, alpha=1.0, beta=1.0):
    """Collaborative loss Omega of Eqs. (5)-(7) with soft masks (module docstring); off-diagonal pairs only.

    Returns ``(omega, terms)`` with ``terms = {"pos", "neg", "clf", "n_pos", "n_neg", "n_clf"}`` (tensors for
    the three losses, ints for the pair counts). An empty pair set contributes 0.
    """
    B = A_s.shape[0]
    off = ~torch.eye(B, dtype=torch.bool, device=A_s.device)
    pos = (A_s > u) & off
    neg = (A_c < l) & off
    clf = neg & ~pos
    zero = A_s.new_zeros(())

    def mean_over(mask, values):
        k = int(mask.sum())
        return (values[mask].sum() / k if k else zero), k

    L_pos, n_pos = mean_over(pos, -A_s * torch.log(A_c.clamp(_EPS, 1.0)))
    L_neg, n_neg = mean_over(neg, -(1.0 - A_c) * torch.log((1.0 - A_s).clamp(_EPS, 1.0)))
    L_clf, n_clf = mean_over(clf, -torch.log((1.0 - A_c).clamp(_EPS, 1.0)))
    omega = L_pos + alpha * L_neg + beta * L_clf
    return omega, {"pos": L_pos, "neg": L_neg, "clf": L_clf, "n_pos": n_pos, "n_neg": n_neg, "n_clf": n_clf}


class ClassifierHead(nn.Module):
    """Classification module on the latent codes: conv (``k = 2``) layers + ReLU, 1 x 1 conv to ``K`` (§5.1).

    For a latent map ``(c, h, w)``: ``min(len(channels), min(h, w) - 1)`` convolutions of kernel 2 (4 x 4 -> 1 x 1
    for three), global average pooling, a 1 x 1 convolution to ``n_clusters`` logits. For vector latents
    (``latent_shape`` of length 1) the same widths as a ReLU MLP.
    """

    def __init__(self, latent_shape, n_clusters, channels=(64, 64, 64)):
        super().__init__()
        self.latent_shape = tuple(int(s) for s in latent_shape)
        layers = []
        if len(self.latent_shape) == 3:
            c, h, w = self.latent_shape
            for ch in channels[:max(0, min(len(channels), min(h, w) - 1))]:
                layers += [nn.Conv2d(c, ch, 2), nn.ReLU()]
                c = ch
            layers += [nn.AdaptiveAvgPool2d(1), nn.Conv2d(c, int(n_clusters), 1), nn.Flatten()]
        else:
            c = self.latent_shape[0]
            for ch in channels:
                layers += [nn.Linear(c, ch), nn.ReLU()]
                c = ch
            layers.append(nn.Linear(c, int(n_clusters)))
        self.net = nn.Sequential(*layers)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, z):
        return self.net(z.reshape(z.shape[0], *self.latent_shape))


class NCSCModule(nn.Module):
    """Auto-encoder + classifier head (the self-expressive layer is the closed form, no parameters)."""

    def __init__(self, autoencoder, n_clusters, classifier_channels=(64, 64, 64)):
        super().__init__()
        self.autoencoder = autoencoder
        latent = getattr(autoencoder, "latent_shape", (autoencoder.latent_dim,))
        self.classifier = ClassifierHead(latent, n_clusters, classifier_channels)

    def logits(self, x):
        return self.classifier(self.autoencoder.encode(x))


def _check_balance(kind):
    if kind not in ("entropy", "uniform"):
        raise ValueError(f"balance must be 'entropy' or 'uniform', got {kind!r}")


def balance_penalty(logits, kind="entropy"):
    """Penalty >= 0 that is zero iff every ``p_i = softmax(logits_i)`` is one-hot and the batch's clusters are equal
    in size; rules out the trivial minimisers of Omega (one cluster, or uniform ``p_i``: ``A_c = 1`` everywhere).

    ``kind="entropy"``: ``mean_i H(p_i) + log K - H(mean_i p_i)`` (minus the mutual information of points and
    clusters, plus ``log K``); ``log K`` for uniform outputs and for a collapse onto one cluster.
    ``kind="uniform"``: ``mean_i H(p_i) + KL(U || mean_i p_i)`` with ``U`` uniform over the ``K`` clusters;
    ``log K`` for uniform outputs, large (``-log 1e-12`` per empty cluster, the clamp) for a collapse. Only this
    one keeps a gradient for an output no point uses (``-log pbar_k`` grows without bound where
    ``-pbar_k log pbar_k`` vanishes): with ``"entropy"`` an output that dies early stays dead and two clusters
    stay merged.
    """
    _check_balance(kind)
    logp = torch.log_softmax(logits, dim=1)
    p = logp.exp()
    pbar = p.mean(dim=0)
    mean_h = -(p * logp).sum(dim=1).mean()
    if kind == "uniform":
        return mean_h - torch.log(pbar.clamp_min(1e-12)).mean() - math.log(p.shape[1])
    return mean_h + math.log(p.shape[1]) + (pbar * torch.log(pbar.clamp_min(1e-12))).sum()


def ncsc_batch_loss(module, xb, *, lambda1, lambda_cl, u, l, alpha, beta, lambda_balance=0.0, normalize=True,
                    decode=True, balance="entropy"):
    """Eq. (8) on one mini-batch; returns ``(loss, logs)`` (logs: floats, the parts and the pair counts; ``se`` is
    nan where it is not computed: fixed encoder and no decoder, so it has no gradient).

    Under bf16 autocast (``SELFEXPRESS_AUTOCAST=bf16``, through the Trainer) only the networks run in bf16 (encoder,
    decoder, classifier head); the closed-form ``C`` (``I - diag(M)^{-1} M`` with ``M`` close to ``I/2``: bf16's
    8-bit mantissa would cancel it away), the self-expression ``C Z`` and its residual, the affinities and the
    collaborative loss (``A_s > u``, ``A_c < l``: threshold comparisons) stay in float32 (``float32_region``).
    """
    ae = module.autoencoder
    Z = ae.encode(xb)
    B = Z.shape[0]
    # With a fixed encoder (the identity of the "linear" variant) and no decoder, the self-expression term has no
    # gradient: only C is needed (for A_s); skipping C Z saves a B x B x d product (measured: 0.085 s of a 0.49 s
    # step at B = 2,000, d = 500, two threads).
    need_se = decode or Z.requires_grad
    with float32_region(Z):  # no-ops without autocast
        Zf = as_float32(Z)
        Zn = Zf
        if normalize:  # self-expression of the directions z_i / ||z_i||; the decoder gets ||z_i|| (C Zs)_i
            norms = Zf.norm(dim=1, keepdim=True).clamp_min(1e-12)
            Zn = Zf / norms
            C = self_expressive_coefficients(Zn, lambda1, dtype=torch.float32)
        else:
            C = self_expressive_coefficients(Zf, lambda1)
        if need_se:
            Zc = C @ Zn
            se = ((C * C).sum() + 0.5 * lambda1 * ((Zn - Zc) ** 2).sum()) / B
            if normalize:
                Zc = norms * Zc
        else:
            se = Zf.new_full((), float("nan"))
    rec = 0.5 * reconstruction_loss(xb, ae.decode(Zc)) / B if decode else Zf.new_zeros(())
    logits = module.classifier(Z)
    with float32_region(Z):
        logits = as_float32(logits)
        A_s = subspace_affinity(C)
        A_c, _ = classifier_affinity(logits)
        omega, t = collaborative_loss(A_s, A_c, u, l, alpha, beta)
        bal = balance_penalty(logits, balance)
    loss = (se if need_se else 0.0) + rec + lambda_cl * (omega + lambda_balance * bal)
    pairs = B * (B - 1)
    logs = {"se": float(se.detach()), "reconst": float(rec.detach()), "omega": float(omega.detach()),
            "pos": float(t["pos"].detach()), "neg": float(t["neg"].detach()), "clf": float(t["clf"].detach()),
            "balance": float(bal.detach()),
            "frac_pos": t["n_pos"] / pairs, "frac_neg": t["n_neg"] / pairs, "l": float(l)}
    return loss, logs


# ----------------------------------------------------------------------------------------------- estimator
class NCSC(EmbeddingTransformerMixin, AutoEncoderClustering):
    """Neural collaborative subspace clustering: a classifier trained by self-expression, labels by argmax.

    Inductive: :meth:`predict` labels unseen points with the classifier. See the module docstring for the
    model, the loss and the choices made where ncsc.txt leaves gaps.

    Parameters
    ----------
    n_clusters : int, default 8
    architecture : {"auto", "conv", "linear"}, default "auto"
        "conv": the conv auto-encoder on images of ``image_shape``; "linear": identity encoder / decoder on the
        raw feature vectors (no reconstruction term, no pretraining), MLP classifier; "auto": "conv" when the
        number of features is ``prod(image_shape)``.
    image_shape : (H, W) or (C, H, W), default (28, 28)
        Inputs may be (n, H, W), (n, C, H, W) or flattened; pixels expected in [0, 1].
    kernel_sizes, channels, stride, paddings : conv auto-encoder, default the paper's MNIST encoder
        (5-3-3, 10-20-30, stride 2; latent 480).
    classifier_channels : tuple of int, default (64, 64, 64)
        Widths of the classifier's ``k = 2`` convolutions (ncsc.txt does not give them).
    lambda1 : float, default 1.0
        Self-expression weight of Eq. (9). The paper uses 10 on raw codes; with ``normalize_latent`` 1 gave the
        purer positive pairs (README: 82 % vs 76 % same-digit pairs at u = 0.7 on MNIST codes).
    lambda_cl : float, default 1.0
        Weight of the collaborative loss in Eq. (8).
    alpha : float, default 1.0
        Collaboration rate (weight of ``L_neg``; the terms are already means over their pair sets).
    beta : float, default 1.0
        Weight of the classifier's own negative term ``L_clf`` (0: the paper's literal Omega).
    balance : {"entropy", "uniform"}, default "entropy"
        Form of :func:`balance_penalty`: ``-H(mean p)`` or ``KL(uniform || mean p)`` for the cluster sizes. "uniform"
        revives outputs no point uses; it is what reached the README's figures on scattering features (MNIST-full
        0.665 vs 0.447 with "entropy", 350 steps of batch 2,000). The conv figures were measured with "entropy".
    lambda_balance : float, default 1.0
        Weight of :func:`balance_penalty` (mean entropy of the outputs minus the entropy of their mean, plus
        log K) inside the collaborative term; 0 with ``beta=0`` is the paper's literal loss, which collapsed.
    normalize_latent : bool, default True
        Self-expression of the unit-normalised codes ``z_i / ||z_i||`` (the decoder gets ``||z_i|| (C Zs)_i``);
        False: of the raw codes, as in the paper.
    u : float in [0, 1], default 0.7
        ``A_s > u`` selects positive pairs. The paper's 0.1 selects 41 % of all pairs on MNIST with the
        closed-form layer, 13 % of them same-digit (chance 10 %); 0.7: about 1 %, 82 % same-digit.
    l_start, l_end : float in [0, 1], default 0.7, 0.9
        ``A_c < l`` selects negative pairs; ``l = l_start`` for ``l_warmup_epochs`` epochs, then ``l_end``.
    l_warmup_epochs : int, default 1
    n_epochs_ae : int, default 60
        Auto-encoder pretraining epochs (paper: 60 at lr 1e-3). Ignored with ``pretrained_autoencoder``.
    batch_size_ae : int, default 256
    lr_ae : float, default 1e-3
    n_epochs : int, default 30
        Joint-training epochs (the paper does not state its count).
    batch_size : int, default 5000
        Joint-training batch (paper: 5,000); the self-expressive layer and the affinities are ``B x B``.
    lr : float, default 1e-3
        Adam rate of the classifier in joint training.
    lr_ae_joint : float, default 1e-5
        Adam rate of the auto-encoder in joint training (paper: 1e-5).
    block_size : int, default 4096
        Rows per forward pass at inference.
    pretrained_autoencoder : dict of tensors or None
        ``state_dict`` of a pretrained auto-encoder of the same architecture; skips pretraining.
    random_state : int or None
        Seeds the initialisation and every stage's batch order.
    device : str or torch.device, default "auto"
        "auto" (CUDA when available, else the CPU), "cpu", "cuda" / "cuda:N" or a torch.device
        (:func:`selfexpress._device.resolve_device`); every tensor of the fit lives there.
    verbose : bool, default False
        Progress bars and one line per epoch of joint training.
    checkpoint_dir : path or None
        Checkpoints of the two stages in ``<dir>/ae`` and ``<dir>/joint``; ``resume=True`` continues a killed fit.
    resume : bool, default False

    Attributes
    ----------
    module_ : NCSCModule (eval mode)
    labels_ : ndarray (n,), the classifier's argmax on the training points
    n_parameters_ : int, trainable parameters (auto-encoder + classifier)
    pretrained_autoencoder_ : dict, the auto-encoder ``state_dict`` after pretraining
    n_features_in_ : int
    architecture_ : str
    history_ : dict ``{"ae", "joint"}`` of the trainers' histories
    timings_ : dict, seconds per stage
    """

    # registry (selfexpress.models.registry)
    _method_name = "ncsc"
    _input_kind = "pixels"
    _model_kind = MODEL_KIND
    _presets = {
        # CPU schedule (benchmarks/ncsc.py; the paper's is the default: 60 AE epochs, batch 5,000)
        "image": dict(architecture="conv", image_shape=(28, 28), n_epochs_ae=3, batch_size=1000, lr=3e-3, n_epochs=5),
        "synthetic": dict(batch_size=500, n_epochs=50, classifier_channels=(64, 64), u=0.5, lambda1=10.0),
        # an image dataset's scattering + PCA features (features="scattering"): identity encoder, MLP classifier,
        # the KL-to-uniform balance (benchmarks/ncsc.py --features scattering; README figures)
        "image-features": dict(architecture="linear", batch_size=2000, lr=3e-3, u=0.7, balance="uniform",
                               n_epochs=25),
    }

    def __init__(self, n_clusters=8, *, architecture="auto", image_shape=(28, 28), kernel_sizes=(5, 3, 3),
                 channels=(10, 20, 30), stride=2, paddings=(2, 1, 1), classifier_channels=(64, 64, 64),
                 lambda1=1.0, lambda_cl=1.0, alpha=1.0, beta=1.0, balance="entropy", lambda_balance=1.0,
                 normalize_latent=True, u=0.7,
                 l_start=0.7, l_end=0.9,
                 l_warmup_epochs=1, n_epochs_ae=60, batch_size_ae=256, lr_ae=1e-3, n_epochs=30, batch_size=5000,
                 lr=1e-3, lr_ae_joint=1e-5, block_size=4096, pretrained_autoencoder=None, random_state=None,
                 device="auto", verbose=False, checkpoint_dir=None, resume=False):
        store_params(self, locals())

    # ------------------------------------------------------------------ validation
    # the auto-encoder's checks, input handling and pretraining are shared with SSCN and DSC-Net (models/_deep.py)
    _device = device_property()  # ``device`` resolved: the torch.device of every tensor (selfexpress._device)
    _log_name = "NCSC"
    #: parameters that identify the auto-encoder pretraining stage in its checkpoints
    _AE_STAGE_PARAMS = ("n_clusters", "architecture", "image_shape", "kernel_sizes", "channels", "stride", "paddings",
                        "n_epochs_ae", "batch_size_ae", "lr_ae", "n_epochs", "batch_size", "lr", "random_state")

    def _check_params(self):
        self._check_common_params()
        self._check_autoencoder_params()
        try:
            chans = tuple(self.classifier_channels)
        except TypeError:
            raise ValueError(f"classifier_channels must be a sequence of ints, got {self.classifier_channels!r}") \
                from None
        for c in chans:
            check_positive(c, "classifier_channels[i]", integer=True)
        for name in ("lambda1",):
            check_positive(getattr(self, name), name)
        _check_balance(self.balance)
        if not isinstance(self.normalize_latent, (bool, np.bool_)):
            raise ValueError(f"normalize_latent must be True or False, got {self.normalize_latent!r}")
        for name in ("lambda_cl", "alpha", "beta", "lambda_balance"):
            check_positive(getattr(self, name), name, allow_zero=True)
        for name in ("u", "l_start", "l_end"):
            check_fraction(getattr(self, name), name)
        for name in ("l_warmup_epochs", "n_epochs_ae", "n_epochs"):
            check_positive(getattr(self, name), name, integer=True, allow_zero=True)
        for name in ("batch_size_ae", "batch_size", "block_size"):
            check_positive(getattr(self, name), name, integer=True)
        if int(self.batch_size) < 2:
            raise ValueError(f"batch_size must be at least 2 (pairs of points), got {self.batch_size!r}")
        for name in ("lr_ae", "lr", "lr_ae_joint"):
            check_positive(getattr(self, name), name)

    def _build(self, n_features, arch):
        from ..train import seeded

        with seeded(fit_seed(self)):
            ae = self._autoencoder(n_features, arch)
            module = NCSCModule(ae, int(self.n_clusters), tuple(int(c) for c in self.classifier_channels))
        return module.to(self._device)

    def _memory_estimate(self, n, n_features, arch):
        b = min(int(self.batch_size), n)
        out = [(b * self._per_point_bytes(n_features, arch) + 160 * b * b,
                f"NCSC joint training on batches of {b} points (C, A_s, A_c and their gradients are {b} x {b})",
                f"lower batch_size (now {self.batch_size})")]
        return out + self._pretrain_estimate(n, n_features, arch, "NCSC")

    def _fingerprint(self, X, stage):
        return self._stage_fingerprint(X, stage, {"block_size"}, self._AE_STAGE_PARAMS if stage == "ae" else None)

    # ------------------------------------------------------------------ fitting
    def _fit(self, X, K, arch, seed):
        """Pretrain the auto-encoder, then train auto-encoder and classifier jointly on Eq. (8).

        Called by :meth:`AutoEncoderClustering.fit` after the checks, the memory guard and the seed.
        """
        from ..train import Trainer

        n = X.shape[0]
        module = self._build(X.shape[1], arch)
        Xt, ckpt = self._start_network(module, X)

        # 1. auto-encoder pretraining (reconstruction only), or the given weights
        ae = module.autoencoder
        self._pretrain(ae, Xt, X, arch, seed)

        # 2. joint training on Eq. (8)
        t0 = time.perf_counter()
        bs = min(int(self.batch_size), n)
        per_epoch = max(1, n // bs)
        hyper = dict(lambda1=float(self.lambda1), lambda_cl=float(self.lambda_cl), u=float(self.u),
                     alpha=float(self.alpha), beta=float(self.beta), lambda_balance=float(self.lambda_balance),
                     balance=self.balance,
                     normalize=bool(self.normalize_latent), decode=arch == "conv")
        warm = int(self.l_warmup_epochs)
        holder = {}

        def loss_fn(idx):
            epoch = holder["trainer"].iteration // per_epoch
            l = float(self.l_start) if epoch < warm else float(self.l_end)
            return ncsc_batch_loss(module, Xt[idx], l=l, **hyper)

        def report(trainer, iteration, logs):
            self._log(f"epoch {iteration // per_epoch}: " + " ".join(f"{k} {v:.4g}" for k, v in logs.items()))

        report.every = per_epoch
        if int(self.n_epochs) > 0:
            self._log(f"joint training: {self.n_epochs} epochs, batch {bs}")
            ae_lrs = {f"autoencoder.{k}": float(self.lr_ae_joint) for k, p in ae.named_parameters() if p.requires_grad}
            tr = Trainer(module, loss_fn, n, n_iter=int(self.n_epochs) * per_epoch, batch_size=bs, lr=float(self.lr),
                         param_lrs=ae_lrs, schedule="constant", random_state=seed + 1, verbose=self.verbose,
                         log_every=1, callbacks=[report], checkpoint_dir=None if ckpt is None else ckpt / "joint",
                         resume=self.resume, fingerprint=self._fingerprint(X, "joint"), desc="NCSC joint training",
                         autocast="env")
            holder["trainer"] = tr
            tr.run()
            self.history_["joint"] = tr.history
        module.eval()
        self.timings_["joint"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        self.labels_ = self._logits(X).argmax(dim=1).numpy().astype(np.int64)
        self.timings_["label"] = time.perf_counter() - t0
        self._log(f"cluster sizes: {np.bincount(self.labels_, minlength=K).tolist()}")

    # ------------------------------------------------------------------ inference
    @torch.no_grad()
    def _logits(self, X):
        """Classifier logits of validated flat rows, ``block_size`` rows at a time (float32 CPU tensor; the
        networks under bf16 autocast when ``SELFEXPRESS_AUTOCAST=bf16``)."""
        module = self.module_
        module.eval()
        b = max(int(self.block_size), 1)
        with autocast_context(self._device):
            out = [as_float32(module.logits(torch.as_tensor(np.ascontiguousarray(X[r:r + b], dtype=np.float32),
                                                            device=self._device))).cpu()
                   for r in range(0, X.shape[0], b)]
        return torch.cat(out) if out else torch.zeros((0, int(self.n_clusters)))

    def _prepare(self, X, name="X"):
        check_is_fitted(self, "module_")
        X = apply_feature_transform(self, X)
        X = self._flatten(X, name)
        check_n_features(X, self.n_features_in_, name, estimator=self)
        return X

    def transform(self, X):
        """Latent codes ``Z = enc(X)`` (n, latent_dim), float32 (the encoder under bf16 autocast when
        ``SELFEXPRESS_AUTOCAST=bf16``)."""
        X = self._prepare(X)
        with torch.no_grad(), autocast_context(self._device):
            ae = self.module_.autoencoder
            return torch.cat([as_float32(ae.encode(torch.as_tensor(np.ascontiguousarray(X[r:r + 4096],
                                                                                         dtype=np.float32),
                                                                   device=self._device))).cpu()
                              for r in range(0, X.shape[0], 4096)]).numpy()

    def decision_function(self, X):
        """Classifier logits (n, K)."""
        return self._logits(self._prepare(X)).numpy()

    def predict_proba(self, X):
        """Softmax of the classifier (n, K)."""
        return torch.softmax(self._logits(self._prepare(X)), dim=1).numpy()

    def predict(self, X):
        """Cluster labels of (possibly unseen) points: the classifier's argmax (Eq. 10), in the space of ``labels_``."""
        return self.decision_function(X).argmax(axis=1).astype(np.int64)

    # ------------------------------------------------------------------ model files
    def save(self, path):
        """Save the network and the labels (safetensors) + parameters (JSON); no pickle."""
        from ..io import save_model_file

        check_is_fitted(self, "labels_")
        tensors = {f"net.{k}": v for k, v in self.module_.state_dict().items()}
        tensors["labels"] = torch.as_tensor(np.asarray(self.labels_), dtype=torch.int64)
        config = {"params": config_params(self, ("pretrained_autoencoder",)), "n_features_in": int(self.n_features_in_),
                  "architecture": self.architecture_, "n_parameters": int(self.n_parameters_),
                  "timings": getattr(self, "timings_", {})}
        pack_feature_transform(self, tensors, config)
        return save_model_file(path, tensors, config, kind=MODEL_KIND)

    @classmethod
    def load(cls, path, device=None):
        """Load a model written by :meth:`save`.

        Only safetensors + JSON are read. The kind and format version, the parameters (same checks as ``fit``),
        every network tensor's name, shape, dtype and finiteness (against a network built on the meta device)
        and the labels are checked; ``ValueError`` naming the file and the problem otherwise.
        """
        from ..io import load_model_file

        tensors, config = load_model_file(path, kind=MODEL_KIND)
        invalid = f"{path} is not a valid NCSC model file"
        feature_transform = unpack_feature_transform(tensors, config, source=str(path))
        with invalid_config(invalid):
            model, n_features, arch = cls._from_config(config, device)
            with torch.device("meta"):
                net = NCSCModule(model._autoencoder(n_features, arch), int(model.n_clusters),
                                 tuple(int(c) for c in model.classifier_channels))
            expected = {f"net.{k}": v for k, v in net.state_dict().items()}
        check_network_tensors(tensors, expected, invalid, allowed_extra=("labels",))
        model.labels_ = check_label_tensor(tensors, "labels", int(model.n_clusters), invalid)
        model._restore_network(model._build(n_features, arch), tensors, config, n_features, arch)
        if feature_transform is not None:
            model.feature_transform_ = feature_transform
        return model
