"""SSCN: self-expression metrics for scalable and inductive subspace clustering (Busch et al., 2020).

``sscn-poster.txt``; reference implementation github:buschju/sscn (reference-impls.md §3). A tiny model
(66,291 trainable parameters on MNIST) learns self-expressive coefficients as inner products of embeddings,
so its memory does not grow with N, and labels unseen points with a projection classifier:

1. **Auto-encoder pretraining** (reconstruction loss only): the conv auto-encoder of
   :mod:`selfexpress.models._autoencoder` (kernels 5, 3, 3; channels 10, 20, 30; stride 2; padding 2, 1, 1;
   Xavier-uniform weights, zero biases), or identity encoder/decoder for vector data (``architecture="linear"``).
2. **Self-expression training**: ``H = se(Z)`` with ``se = Linear(latent_dim -> K*d, bias=False)``
   (``K = n_clusters``, ``d = max_cluster_dim``) and ``Z = enc(X)``; on each mini-batch the coefficients are
   ``Q = H H^T`` (symmetric PSD, rank <= K*d, no diagonal exclusion -- the low rank and the ``||Q||^2``
   penalty rule out ``Q = I``). Loss, sums over the batch as in the reference::

       lambda_reconst * ||X - dec(Q Z)||^2 + lambda_reg * ||Q||_F^2 + lambda_ssc * 0.5 * ||Z - Q Z||^2

   (the linear variant has no decoder term). Row convention of the library: row i of ``Q`` codes ``z_i``
   (``z_i ~ sum_j Q_ij z_j``); ``Q`` is symmetric, so rows and columns agree.
3. **Pseudo-labels**: DSC-Net's post-processing (``thrC`` with ``noise_threshold``, symmetrise, diagonal 1,
   rank ``K*d + 1`` SVD, ``U S^{1/2}`` row-normalised, ``Z = U U^T`` clipped at 0, ``Z^alpha`` with
   ``alpha = noise_alpha = 8``) and spectral clustering of ``Q = H H^T`` on the whole training set.
   The reference builds all of these as dense N x N arrays. Here (:mod:`selfexpress.models._dsc_postprocess`) ``thrC``
   runs on blocks of columns of ``H H^T`` and returns a sparse matrix, the SVD runs on that sparse matrix
   (or, with ``noise_threshold=None``, on the implicit operator ``H H^T`` with diagonal 1, never formed),
   and the affinity keeps the ``n_neighbors`` (300) largest entries of ``Z^alpha`` per row (computed from the
   rows of ``U`` one block at a time), mirrored; :func:`selfexpress.cluster.spectral_clustering` (normalised
   embedding + k-means) clusters that sparse graph. ``postprocess="dense"`` keeps the reference's dense ``L``
   (small N only). ``benchmarks/sscn.py`` compares both on MNIST-test.
4. **Rotation classifier**: fixed coordinate subspaces ``S_k`` = coordinate block ``[k d, (k+1) d)`` of
   ``R^{K d}`` and a learnable orthogonal ``R`` (``K d x K d``, initialised to the identity, stored in
   float64); ``logit_k(h) = -||P_k(h R) - h R||^2`` (minus the squared distance of the rotated embedding to
   ``S_k``), soft assignments ``softmax(logits)``. ``R`` is trained with cross-entropy against the
   pseudo-labels, ``H`` frozen, by :class:`CayleyAdam` (the reference's AdamG: Riemannian Adam with a scalar
   second moment, step ``min(lr, 1/||W||_1)``), except that the Cayley retraction is solved exactly
   (``R <- (I + t/2 W)^{-1} (I - t/2 W) R``) instead of by 5 fixed-point iterations plus a random QR
   re-orthonormalisation, so ``R`` stays orthonormal to rounding.
5. ``labels_`` = argmax of the soft assignments of the training points (the reference evaluates the
   training set with its classifier too); :meth:`predict` does the same for unseen points, with no spectral
   clustering and no dictionary: O(N K d) after the encoder.

Every stage runs in the shared :class:`selfexpress.train.Trainer` (seeded batches, checkpoints, resume).
Choices where the poster and the reference leave gaps are listed under the parameters they concern.
"""

from __future__ import annotations

import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .._device import as_float32, autocast_context, device_property, float32_region
from .._validation import check_is_fitted, check_positive, fit_seed
from ._autoencoder import reconstruction_loss
from ._deep import AutoEncoderClustering, DSCPostprocessing, EmbeddingTransformerMixin
from ._files import check_label_tensor, check_network_tensors, invalid_config
from .base import store_params

__all__ = ["SSCN", "SSCNModule", "RotationClassifier", "CayleyAdam", "cayley_retraction", "sscn_se_loss"]

MODEL_KIND = "sscn"


# ----------------------------------------------------------------------------------------------- Stiefel
def cayley_retraction(X, W, t):
    """``(I + t/2 W)^{-1} (I - t/2 W) X`` for a skew-symmetric ``W`` (n x n) and ``X`` (n x p), solved exactly.

    The Cayley transform of a skew matrix is orthogonal, so orthonormal columns of ``X`` stay orthonormal
    (to rounding). Computed in float64.
    """
    Xd, Wd = X.double(), W.double()
    eye = torch.eye(Wd.shape[0], dtype=torch.float64, device=Wd.device)
    return torch.linalg.solve(eye + 0.5 * t * Wd, Xd - 0.5 * t * (Wd @ Xd)).to(X.dtype)


class CayleyAdam(torch.optim.Optimizer):
    """Adam on the Stiefel manifold with an exact Cayley retraction (after AdamG, Li et al., ICLR 2020).

    For a parameter ``P`` (p x n, p <= n, orthonormal rows ``P P^T = I``; SSCN's square ``R``) with gradient
    ``G``, working with ``X = P^T`` (n x p, orthonormal columns) as the reference does::

        m <- b1 m + (1 - b1) G^T;   v <- b2 v + (1 - b2) ||G||_F^2          (scalar second moment)
        M = m / (1 - b1^t);  V = v / (1 - b2^t)
        W_hat = M X^T - 1/2 X (X^T M X^T);  W = (W_hat - W_hat^T) / sqrt(V + eps)   (skew)
        a = min(lr, 1 / (||W||_1 + 1e-8))
        X <- (I + a/2 W)^{-1} (I - a/2 W) X                                     (exact Cayley step)
        m <- W X_old sqrt(V + eps) (1 - b1^t)                                   (momentum kept tangent)

    The reference solves the Cayley step with 5 fixed-point iterations and re-orthonormalises by QR at
    random (probability 1/101 per step); the exact solve needs neither. State (``step``, ``m``, ``v``) is a
    plain ``state_dict``, so the shared trainer checkpoints it.

    Parameters
    ----------
    params : iterable of parameters or parameter groups
    lr : float, default 0.1 (the reference)
    betas : (float, float), default (0.9, 0.99) (the reference's momentum and beta2)
    eps : float, default 1e-8
    """

    def __init__(self, params, lr=0.1, betas=(0.9, 0.99), eps=1e-8):
        check_positive(lr, "lr")
        b1, b2 = (float(b) for b in betas)
        if not (0 <= b1 < 1 and 0 <= b2 < 1):
            raise ValueError(f"betas must be in [0, 1), got {betas!r}")
        super().__init__(params, dict(lr=float(lr), betas=(b1, b2), eps=float(eps)))

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            b1, b2 = (float(b) for b in group["betas"])
            eps, lr = float(group["eps"]), float(group["lr"])
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.ndim != 2 or p.shape[0] > p.shape[1]:
                    raise ValueError(f"CayleyAdam needs a (p, n) parameter with p <= n, got shape {tuple(p.shape)}")
                X = p.detach().double().T  # (n, p), orthonormal columns
                G = p.grad.detach().double().T
                st = self.state[p]
                if "m" not in st:
                    st["step"] = 0
                    st["m"] = torch.zeros_like(X)
                    st["v"] = torch.zeros((), dtype=torch.float64, device=X.device)
                t = int(st["step"]) + 1
                m = b1 * st["m"] + (1.0 - b1) * G
                v = b2 * st["v"] + (1.0 - b2) * (G * G).sum()
                m_hat = m / (1.0 - b1 ** t)
                scale = torch.sqrt(v / (1.0 - b2 ** t) + eps)
                MX = m_hat @ X.T
                W_hat = MX - 0.5 * X @ (X.T @ MX)
                W = (W_hat - W_hat.T) / scale
                a = min(lr, 1.0 / (float(W.abs().sum(dim=0).max()) + 1e-8))
                X_new = cayley_retraction(X, W, a)
                st["m"] = (W @ X) * scale * (1.0 - b1 ** t)
                st["v"] = v
                st["step"] = t
                p.copy_(X_new.T.to(p.dtype))
        return loss


# ----------------------------------------------------------------------------------------------- modules
class RotationClassifier(nn.Module):
    """Projection classifier: ``logit_k(h) = -||P_k(h R) - h R||^2`` for the coordinate blocks ``S_k``.

    ``R`` (``K d x K d``, float64) is initialised to the identity and kept orthogonal by :class:`CayleyAdam`;
    ``S_k`` spans coordinates ``[k d, (k+1) d)`` (fixed, not stored). Since ``P_k`` is a coordinate projection,
    ``||P_k v - v||^2 = ||v||^2 - ||v_{[k d, (k+1) d)}||^2``.
    """

    def __init__(self, n_clusters, max_cluster_dim):
        super().__init__()
        self.n_clusters = int(n_clusters)
        self.max_cluster_dim = int(max_cluster_dim)
        self.R = nn.Parameter(torch.eye(self.n_clusters * self.max_cluster_dim, dtype=torch.float64))

    def forward(self, H):
        V = H.to(self.R.dtype) @ self.R
        total = (V * V).sum(dim=1, keepdim=True)
        blocks = (V * V).reshape(V.shape[0], self.n_clusters, self.max_cluster_dim).sum(dim=2)
        return -(total - blocks)


class SSCNModule(nn.Module):
    """Auto-encoder + self-expression embedding ``se`` (no bias) + rotation classifier."""

    def __init__(self, autoencoder, n_clusters, max_cluster_dim):
        super().__init__()
        self.autoencoder = autoencoder
        self.se = nn.Linear(autoencoder.latent_dim, int(n_clusters) * int(max_cluster_dim), bias=False)
        nn.init.xavier_uniform_(self.se.weight)
        self.classifier = RotationClassifier(n_clusters, max_cluster_dim)

    def embed(self, x):
        return self.se(self.autoencoder.encode(x))


def sscn_se_loss(module, xb, lambda_reconst=1.0, lambda_reg=1.0, lambda_ssc=1.0, decode=True):
    """Self-expression loss of one mini-batch; returns ``(loss, {"reconst", "reg", "ssc"})`` (floats in the dict).

    ``Z = enc(x)``, ``H = se(Z)``, ``Q = H H^T``; ``loss = lambda_reconst ||x - dec(Q Z)||^2 + lambda_reg ||Q||_F^2
    + lambda_ssc 0.5 ||Z - Q Z||^2`` (sums). ``decode=False`` drops the first term (linear variant).

    Under bf16 autocast only the encoder and the decoder run in bf16; the self-expression (``H``, ``Q = H H^T``,
    ``Q Z``, the residual) stays in float32: ``Q`` is the coefficient matrix whose columns the pseudo-labelling
    thresholds by mass, and ``Z - Q Z`` is a small difference of large terms.
    """
    ae = module.autoencoder
    Z = ae.encode(xb)
    with float32_region(Z):  # no-ops without autocast
        Z = as_float32(Z)
        H = module.se(Z)
        Q = H @ H.T
        Zse = Q @ Z
        reg = (Q * Q).sum()
        ssc = 0.5 * ((Z - Zse) ** 2).sum()
        loss = lambda_reg * reg + lambda_ssc * ssc
    rec = torch.zeros((), dtype=Z.dtype)
    if decode:
        rec = reconstruction_loss(xb, ae.decode(Zse))
        loss = loss + lambda_reconst * rec
    return loss, {"reconst": float(rec.detach()), "reg": float(reg.detach()), "ssc": float(ssc.detach())}


# ----------------------------------------------------------------------------------------------- estimator
class SSCN(EmbeddingTransformerMixin, DSCPostprocessing, AutoEncoderClustering):
    """Siamese subspace clustering network: self-expression as ``Q = H H^T``, pseudo-labels, Stiefel rotation.

    Inductive: :meth:`predict` labels unseen points with the projection classifier (no spectral clustering).
    See the module docstring for the model and the stages.

    Parameters
    ----------
    n_clusters : int, default 8
        ``K``.
    max_cluster_dim : int, default 9
        ``d``, the dimension of each coordinate subspace; the embedding has ``K d`` dimensions.
    architecture : {"auto", "conv", "linear"}, default "auto"
        "conv": the conv auto-encoder on images of ``image_shape``; "linear": identity encoder and decoder
        on the raw feature vectors (the reference's ``SscnLinear``: no reconstruction term, no pretraining);
        "auto": "conv" when the number of features equals ``prod(image_shape)``, else "linear".
    image_shape : (H, W) or (C, H, W), default (28, 28)
        Shape of one image; inputs may be (n, H, W), (n, C, H, W) or flattened (n, C*H*W). Pixels are
        expected in [0, 1] (the reference's ``ToTensor``; the decoder's final ReLU outputs >= 0).
    kernel_sizes, channels, stride, paddings : conv auto-encoder (reference MNIST values by default).
    lambda_reconst, lambda_reg, lambda_ssc : float, default 1.0
        Weights of the three loss terms (all 1 in the reference).
    n_epochs_ae : int, default 100
        Auto-encoder pretraining epochs (the reference: 100 at batch 10,000, Adam 1e-3, i.e. 100 full-batch
        steps on MNIST-test). Ignored when ``pretrained_autoencoder`` is given. These 100 steps leave the
        auto-encoder far from converged (reconstruction error 26-30 per MNIST image, from 89), yet a better one
        clustered worse: with ``batch_size_ae=1000`` (1,000 steps, same compute; error 2.7-3.2 per image) the
        pseudo-label / fit / out-of-sample ACC on MNIST fell from 0.734 / 0.713 / 0.705 to 0.655 / 0.656 / 0.653
        (seed 0) and from 0.681 / 0.664 / 0.650 to 0.652 / 0.647 / 0.637 (seed 1). The reference's value is kept.
    batch_size_ae : int, default 10000
    lr_ae : float, default 1e-3
    n_epochs : int, default 30
        Self-expression epochs (batch ``batch_size``, Adam ``lr``, constant rate, last ragged batch dropped).
    batch_size : int, default 1000
    lr : float, default 1e-3
    n_epochs_clf : int, default 30
        Classifier epochs; ``steps_per_batch`` :class:`CayleyAdam` steps on each batch of ``batch_size_clf``.
    batch_size_clf : int, default 1000
    steps_per_batch : int, default 10
    lr_clf : float, default 0.1
    momentum, beta2 : float, default 0.9, 0.99 (CayleyAdam's ``betas``)
    noise_threshold : float in (0, 1] or None, default 0.1
        ``ro`` of DSC-Net's ``thrC`` on ``Q`` before the SVD (the reference's value); None (or 1) skips it
        and runs the SVD on the implicit low-rank operator instead.
    noise_alpha : float, default 8.0
        Exponent of the affinity ``Z^alpha``.
    postprocess : {"sparse", "dense"}, default "sparse"
        "sparse": the ``n_neighbors`` largest affinities per row (no N x N array); "dense": the reference's
        dense affinity (memory-guarded; for small N and comparisons).
    n_neighbors : int, default 300
        Affinities kept per row by the sparse post-processing. Measured on MNIST-test (pseudo-label ACC, same
        embeddings): 30 / 100 / 300 / 1,000 neighbours 0.674 / 0.671 / 0.734 / 0.733, the dense reference
        0.731 (:mod:`selfexpress.models._dsc_postprocess`); the affinity holds about ``2 * n_neighbors`` entries per row.
    max_nonzero : int or None, default None
        Cap on the entries ``thrC`` keeps per column (None: none; the count is data dependent).
    block_size : int, default 1024
        Columns / rows per block in the post-processing; embedding batches at inference.
    n_init : int, default 20
        k-means restarts of the spectral clustering.
    pretrained_autoencoder : dict of tensors or None
        ``state_dict`` of a pretrained auto-encoder of the same architecture (e.g. ``pretrained_autoencoder_``
        of another fit, as the reference loads one from disk); skips pretraining.
    random_state : int or None
        Seeds the initialisation, every stage's batch order, the SVD start (fixed ``v0 = 1``) and k-means.
    device : str or torch.device, default "auto"
        "auto" (CUDA when available, else the CPU), "cpu", "cuda" / "cuda:N" or a torch.device
        (:func:`selfexpress._device.resolve_device`); every tensor of the fit lives there.
    verbose : bool, default False
        Progress bars and one line per stage.
    checkpoint_dir : path or None
        Checkpoints of the three training stages in ``<dir>/ae``, ``<dir>/se``, ``<dir>/clf``;
        with ``resume=True`` a killed fit continues where it stopped.
    resume : bool, default False

    Attributes
    ----------
    module_ : SSCNModule (eval mode)
    labels_ : ndarray (n,), argmax of the classifier on the training points
    pseudo_labels_ : ndarray (n,), the spectral-clustering pseudo-labels the classifier was trained on
    coef_ : scipy.sparse CSR (n, n) or None
        ``Q`` after ``thrC`` (row i codes ``z_i``; diagonal dropped), None without thresholding.
    affinity_ : CSR (n, n), the graph the pseudo-labels came from
    pretrained_autoencoder_ : dict, the auto-encoder ``state_dict`` after pretraining (before SE training)
    n_parameters_ : int, trainable parameters (auto-encoder + ``se`` + ``R``; 66,291 on MNIST)
    n_features_in_ : int
    history_ : dict ``{"ae", "se", "clf"}`` of the trainers' histories
    timings_ : dict, seconds per stage
    """

    # registry (selfexpress.models.registry): raw pixels in [0, 1] through its own conv auto-encoder (the
    # reference's MNIST settings are the defaults); vector data goes through the identity ("linear") variant
    _method_name = "sscn"
    _input_kind = "pixels"
    _model_kind = MODEL_KIND
    _presets = {
        "image": dict(architecture="conv", image_shape=(28, 28)),
        "synthetic": dict(max_cluster_dim=6, n_epochs=100, batch_size=200, batch_size_clf=200, n_neighbors=30),
    }

    def __init__(self, n_clusters=8, *, max_cluster_dim=9, architecture="auto", image_shape=(28, 28),
                 kernel_sizes=(5, 3, 3), channels=(10, 20, 30), stride=2, paddings=(2, 1, 1),
                 lambda_reconst=1.0, lambda_reg=1.0, lambda_ssc=1.0, n_epochs_ae=100, batch_size_ae=10000,
                 lr_ae=1e-3, n_epochs=30, batch_size=1000, lr=1e-3, n_epochs_clf=30, batch_size_clf=1000,
                 steps_per_batch=10, lr_clf=0.1, momentum=0.9, beta2=0.99, noise_threshold=0.1, noise_alpha=8.0,
                 postprocess="sparse", n_neighbors=300, max_nonzero=None, block_size=1024, n_init=20,
                 pretrained_autoencoder=None, random_state=None, device="auto", verbose=False, checkpoint_dir=None,
                 resume=False):
        store_params(self, locals())

    # ------------------------------------------------------------------ validation
    _device = device_property()  # ``device`` resolved: the torch.device of every tensor (selfexpress._device)

    def _check_params(self):
        self._check_common_params()
        self._check_autoencoder_params()
        self._check_dsc_params()
        check_positive(self.n_epochs_clf, "n_epochs_clf", integer=True, allow_zero=True)
        for name in ("batch_size", "batch_size_clf", "steps_per_batch"):
            check_positive(getattr(self, name), name, integer=True)
        check_positive(self.lr_clf, "lr_clf")
        for name in ("momentum", "beta2"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float, np.floating)) or not 0 <= v < 1:
                raise ValueError(f"{name} must be in [0, 1), got {v!r}")

    def _build(self, n_features, arch):
        from ..train import seeded

        with seeded(fit_seed(self)):
            module = SSCNModule(self._autoencoder(n_features, arch), int(self.n_clusters), int(self.max_cluster_dim))
        return module.to(self._device)

    def _memory_estimate(self, n, n_features, arch):
        """``[(bytes, what, hint)]`` of the stages, each checked by the memory guard before fitting."""
        out = self._pretrain_estimate(n, n_features, arch, "SSCN")
        per_point = self._per_point_bytes(n_features, arch)
        m = min(int(self.batch_size), n)
        out.append((m * per_point + 16 * m * m, f"SSCN self-expression training on batches of {m} points "
                    f"(Q = H H^T is {m} x {m})", f"lower batch_size (now {self.batch_size})"))
        out.append(self._postprocess_estimate(n, "SSCN"))
        return out

    def _tensor(self, X):
        return torch.as_tensor(np.ascontiguousarray(X, dtype=np.float32), device=self._device)

    #: parameters that only matter from the pseudo-labels on (not part of the AE / SE checkpoints' identity)
    _LATE_PARAMS = ("noise_threshold", "noise_alpha", "postprocess", "n_neighbors", "max_nonzero", "block_size",
                    "n_init", "n_epochs_clf", "batch_size_clf", "steps_per_batch", "lr_clf", "momentum", "beta2")

    def _fingerprint(self, X, stage):
        """Identity of a training stage for its checkpoints: the parameters it depends on and the data."""
        return self._stage_fingerprint(X, stage, () if stage == "clf" else self._LATE_PARAMS)

    # ------------------------------------------------------------------ fitting
    def _fit(self, X, K, arch, seed):
        """Pretrain the auto-encoder, train the self-expression, pseudo-label, train the rotation classifier.

        Called by :meth:`AutoEncoderClustering.fit` after the checks, the memory guard and the seed.
        """
        from ..train import Trainer

        n = X.shape[0]
        module = self._build(X.shape[1], arch)
        Xt, ckpt = self._start_network(module, X)

        # 1. auto-encoder pretraining (or the given weights)
        self._pretrain(module.autoencoder, Xt, X, arch, seed)

        # 2. self-expression training
        t0 = time.perf_counter()
        lam = (float(self.lambda_reconst), float(self.lambda_reg), float(self.lambda_ssc))
        decode = arch == "conv"
        se_net = nn.ModuleDict({"autoencoder": module.autoencoder, "se": module.se})
        bs = min(int(self.batch_size), n)

        def se_loss(idx):
            return sscn_se_loss(module, Xt[idx], *lam, decode=decode)

        if int(self.n_epochs) > 0:
            self._log(f"self-expression training: {self.n_epochs} epochs, batch {bs}")
            tr = Trainer(se_net, se_loss, n, n_iter=int(self.n_epochs) * max(1, n // bs), batch_size=bs,
                         lr=float(self.lr), schedule="constant", random_state=seed + 1, verbose=self.verbose,
                         log_every=max(1, n // bs), checkpoint_dir=None if ckpt is None else ckpt / "se",
                         resume=self.resume, fingerprint=self._fingerprint(X, "se"), desc="SSCN self-expression",
                         autocast="env")
            tr.run()
            self.history_["se"] = tr.history
        module.eval()
        self.timings_["self_expression"] = time.perf_counter() - t0

        # 3. pseudo-labels: DSC-Net post-processing of Q = H H^T + spectral clustering
        t0 = time.perf_counter()
        H = self._embed(X)
        Cp, self.pseudo_labels_ = self._dsc_labels(K, seed, t0, factor=H)
        self.coef_ = None
        if Cp is not None:
            self.n_capped_columns_ = int(Cp.capped_)
            coef = Cp.T.tocsr()
            coef.setdiag(0.0)
            coef.eliminate_zeros()
            self.coef_ = coef
        self._log(f"pseudo-labels: {np.bincount(self.pseudo_labels_, minlength=K).tolist()}")

        # 4. rotation classifier on the frozen embeddings
        t0 = time.perf_counter()
        clf = module.classifier
        Ht = H.to(self._device)
        pl = torch.as_tensor(self.pseudo_labels_, dtype=torch.long, device=self._device)
        bsc = min(int(self.batch_size_clf), n)
        steps = int(self.steps_per_batch)
        betas = (float(self.momentum), float(self.beta2))

        def clf_loss(idx):
            return F.cross_entropy(clf(Ht[idx]), pl[idx])

        if int(self.n_epochs_clf) > 0:
            self._log(f"rotation classifier: {self.n_epochs_clf} epochs, batch {bsc}, {steps} steps per batch")
            n_iter = int(self.n_epochs_clf) * max(1, n // bsc) * steps
            # no autocast here: R is float64 (not autocast-eligible), kept orthogonal by the Cayley retraction
            tr = Trainer(clf, clf_loss, n, n_iter=n_iter, batch_size=bsc, lr=float(self.lr_clf), schedule="constant",
                         random_state=seed + 2, verbose=self.verbose, log_every=steps,
                         checkpoint_dir=None if ckpt is None else ckpt / "clf", resume=self.resume,
                         fingerprint=self._fingerprint(X, "clf"), desc="SSCN rotation classifier",
                         optimizer=lambda groups: CayleyAdam(groups, betas=betas), steps_per_batch=steps)
            tr.run()
            self.history_["clf"] = tr.history
        module.eval()
        self.labels_ = self._logits_of_embedding(Ht).argmax(dim=1).cpu().numpy().astype(np.int64)
        self.timings_["classifier"] = time.perf_counter() - t0

    # ------------------------------------------------------------------ inference
    @torch.no_grad()
    def _embed(self, X):
        """``H = se(enc(X))`` for validated flat rows, in batches of ``block_size`` (float32 CPU tensor; the encoder
        under bf16 autocast when ``SELFEXPRESS_AUTOCAST=bf16``, ``se`` in float32: ``H H^T`` are the coefficients)."""
        module = self.module_
        module.eval()
        out = []
        b = max(int(self.block_size), 1)
        for r0 in range(0, X.shape[0], b):
            with autocast_context(self._device):
                Z = module.autoencoder.encode(self._tensor(X[r0:r0 + b]))
            out.append(module.se(as_float32(Z)).cpu())
        return torch.cat(out)

    @torch.no_grad()
    def _logits_of_embedding(self, H):
        return self.module_.classifier(H.to(self._device))

    def transform(self, X):
        """Self-expression embeddings ``H`` (n, K d) of ``X``; ``H H^T`` are the coefficients."""
        return self._embed(self._prepare(X)).numpy()

    def decision_function(self, X):
        """Logits ``-||P_k(h R) - h R||^2`` (n, K)."""
        return self._logits_of_embedding(self._embed(self._prepare(X))).cpu().numpy()

    def predict_proba(self, X):
        """Soft assignments ``softmax(logits)`` (n, K)."""
        logits = self._logits_of_embedding(self._embed(self._prepare(X)))
        return torch.softmax(logits, dim=1).cpu().numpy()

    def predict(self, X):
        """Cluster labels of (possibly unseen) points: argmax of the soft assignments, in the space of ``labels_``.

        One encoder pass and one ``(K d) x (K d)`` rotation per point; no spectral clustering, no dictionary.
        """
        return self.decision_function(X).argmax(axis=1).astype(np.int64)

    # ------------------------------------------------------------------ model files
    def _config_params(self):
        from ._files import config_params

        return config_params(self, ("pretrained_autoencoder",))

    def save(self, path):
        """Save the network and the labels (safetensors) + parameters (JSON); no pickle."""
        from ..io import save_model_file

        check_is_fitted(self, "labels_")
        tensors = {f"net.{k}": v for k, v in self.module_.state_dict().items()}
        tensors["labels"] = torch.as_tensor(np.asarray(self.labels_), dtype=torch.int64)
        tensors["pseudo_labels"] = torch.as_tensor(np.asarray(self.pseudo_labels_), dtype=torch.int64)
        config = {"params": self._config_params(), "n_features_in": int(self.n_features_in_),
                  "architecture": self.architecture_, "n_parameters": int(self.n_parameters_),
                  "timings": getattr(self, "timings_", {})}
        return save_model_file(path, tensors, config, kind=MODEL_KIND)

    @classmethod
    def load(cls, path, device=None):
        """Load a model written by :meth:`save`.

        Only safetensors + JSON are read. The file's kind and format version, the parameters (same checks as
        ``fit``), every network tensor's name, shape, dtype and finiteness (against a network built on the
        meta device, so a tampered JSON cannot make it allocate), the orthogonality of ``R`` and the labels
        are checked; ``ValueError`` naming the file and the problem otherwise.
        """
        from ..io import load_model_file

        tensors, config = load_model_file(path, kind=MODEL_KIND)
        invalid = f"{path} is not a valid SSCN model file"
        with invalid_config(invalid):
            model, n_features, arch = cls._from_config(config, device)
            if arch == "linear" and n_features * int(model.n_clusters) * int(model.max_cluster_dim) > 2**31:
                raise ValueError("the linear embedding implied by the parameters is implausibly large")
            with torch.device("meta"):  # shapes only, no memory
                net = SSCNModule(model._autoencoder(n_features, arch), int(model.n_clusters),
                                 int(model.max_cluster_dim))
            expected = {f"net.{k}": v for k, v in net.state_dict().items()}
        check_network_tensors(tensors, expected, invalid, ("labels", "pseudo_labels"))
        R = tensors["net.classifier.R"]
        dev = float(torch.linalg.matrix_norm(R.T @ R - torch.eye(R.shape[0], dtype=R.dtype)))
        if dev > 1e-4:
            raise ValueError(f"{invalid}: the rotation R is not orthogonal (||R^T R - I|| = {dev:.3g})")
        K = int(model.n_clusters)
        model.labels_, model.pseudo_labels_ = (check_label_tensor(tensors, name, K, invalid)
                                               for name in ("labels", "pseudo_labels"))
        if model.labels_.shape != model.pseudo_labels_.shape:
            raise ValueError(f"{invalid}: labels and pseudo_labels differ in length")
        model._restore_network(model._build(n_features, arch), tensors, config, n_features, arch)
        return model
