"""DSC-Net: deep subspace clustering networks (Ji et al., NeurIPS 2017), the baseline of ``sscn-poster.txt``.

A minimal version of the SSCN reference's ``DscNetConv`` (reference-impls.md §3.5): the conv auto-encoder of
:mod:`selfexpress.models._autoencoder` (pretrained on reconstruction, or given) and a dense self-expressive
layer ``C`` (an ``n_samples x n_samples`` Parameter, initialised to 1e-8), trained jointly on the whole data
set as one batch with Adam (lr 1e-3, 30 epochs = 30 steps) on::

    lambda_reconst ||X - dec(C Z)||^2 + lambda_reg ||C||_F^2 + lambda_ssc 0.5 ||Z - C Z||^2     (sums; all 1)

Row convention: row i of ``C`` codes ``z_i`` (``Z_se = C Z``). Two differences from the reference, both
deliberate: the diagonal of ``C`` is held at 0 (its gradient is masked, so ``z_i`` cannot code itself; the
reference leaves it free), and ``||C||^2`` contributes its gradient (the reference computes it on
``C.data``, so its regulariser never acts -- reference-impls.md §3.6). The labels come from the DSC-Net
post-processing of ``C`` (:mod:`selfexpress.models._dsc_postprocess`, as in SSCN) and spectral clustering.

``C`` makes memory grow with the square of N (10,000 points: 400 MB for ``C``, about 3 GB with its gradient,
Adam's moments and temporaries); :meth:`DSCNet.fit` checks this with the shared memory guard first and
refuses with an error naming ``C``. The model is transductive: there is no ``predict`` for new points.
"""

from __future__ import annotations

import time

import torch
from torch import nn

from .._device import as_float32, device_property, float32_region
from ._autoencoder import reconstruction_loss
from ._deep import AutoEncoderClustering, DSCPostprocessing
from .base import store_params

__all__ = ["DSCNet", "DSCNetModule"]


class DSCNetModule(nn.Module):
    """Auto-encoder + dense self-expressive layer ``C`` (n x n, diagonal held at zero)."""

    def __init__(self, autoencoder, n_samples, init=1e-8):
        super().__init__()
        self.autoencoder = autoencoder
        C = torch.full((n_samples, n_samples), float(init))
        C.fill_diagonal_(0.0)
        self.C = nn.Parameter(C)
        # after every backward, zero the diagonal of C's gradient in place (no n x n temporary): Adam then never
        # moves diag(C) away from 0
        self.C.register_post_accumulate_grad_hook(self._zero_diagonal)

    @staticmethod
    def _zero_diagonal(param):
        with torch.no_grad():
            param.grad.fill_diagonal_(0.0)


class DSCNet(DSCPostprocessing, AutoEncoderClustering):
    """Deep subspace clustering network with a dense ``n x n`` self-expressive layer (transductive baseline).

    Parameters
    ----------
    n_clusters, max_cluster_dim, architecture, image_shape, kernel_sizes, channels, stride, paddings,
    lambda_reconst, lambda_reg, lambda_ssc, n_epochs_ae, batch_size_ae, lr_ae, noise_threshold, noise_alpha,
    postprocess, n_neighbors, max_nonzero, block_size, n_init, pretrained_autoencoder, random_state, device,
    verbose :
        As in :class:`~selfexpress.models.sscn.SSCN` (``max_cluster_dim`` only sets the SVD rank
        ``n_clusters * max_cluster_dim + 1`` of the post-processing).
    n_epochs : int, default 30
        Full-batch Adam steps on the joint loss (the reference: 30).
    lr : float, default 1e-3

    Attributes
    ----------
    module_ : DSCNetModule
    coef_ : CSR (n, n), ``C`` after ``thrC`` (row i codes ``z_i``; every column keeps the entries holding a
        ``noise_threshold`` share of its l1 mass, as in the reference), or all of ``C`` without threshold
    affinity_ : CSR (n, n); labels_ : ndarray (n,)
    n_parameters_ : int (auto-encoder + n^2)
    history_, timings_, n_features_in_, pretrained_autoencoder_
    """

    # registry (selfexpress.models.registry): raw pixels through its own conv auto-encoder; no model file
    _method_name = "dscnet"
    _input_kind = "pixels"
    _model_kind = None
    _presets = {
        "image": dict(architecture="conv", image_shape=(28, 28)),
        "synthetic": dict(max_cluster_dim=6, n_neighbors=30),
    }

    def __init__(self, n_clusters=8, *, max_cluster_dim=9, architecture="auto", image_shape=(28, 28),
                 kernel_sizes=(5, 3, 3), channels=(10, 20, 30), stride=2, paddings=(2, 1, 1),
                 lambda_reconst=1.0, lambda_reg=1.0, lambda_ssc=1.0, n_epochs_ae=100, batch_size_ae=10000,
                 lr_ae=1e-3, n_epochs=30, lr=1e-3, noise_threshold=0.1, noise_alpha=8.0, postprocess="sparse",
                 n_neighbors=300, max_nonzero=None, block_size=1024, n_init=20, pretrained_autoencoder=None,
                 random_state=None, device="auto", verbose=False):
        store_params(self, locals())

    # validation, input, auto-encoder and post-processing shared with SSCN and NCSC (models/_deep.py)
    _device = device_property()  # ``device`` resolved: the torch.device of every tensor (selfexpress._device)
    _log_name = "DSC-Net"
    _extra_copy = False

    def _check_params(self):
        self._check_common_params()
        self._check_autoencoder_params()
        self._check_dsc_params()

    def _memory_estimate(self, n, n_features, arch):
        """``[(bytes, what, hint)]`` checked by the memory guard before fitting; the first one is ``C``'s."""
        out = [(32 * n * n + n * self._per_point_bytes(n_features, arch),
                f"DSC-Net's self-expressive layer C ({n} x {n} float32 Parameter, its gradient, Adam's two "
                "moments, temporaries) and the full-batch activations",
                "C grows with n_samples squared: fit DSC-Net on fewer samples (a subset of X), or use SSCN, whose "
                "memory does not grow with n_samples")]
        out += self._pretrain_estimate(n, n_features, arch, "DSC-Net")
        out.append(self._postprocess_estimate(n, "DSC-Net"))
        return out

    def _fit(self, X, K, arch, seed):
        """Pretrain the auto-encoder (unless given), train ``C`` and the auto-encoder jointly, cluster ``C``.

        Called by :meth:`AutoEncoderClustering.fit` after the checks, the memory guard and the seed.
        """
        from ..train import Trainer, seeded

        n, D = X.shape
        with seeded(seed):
            ae = self._autoencoder(D, arch)
            module = DSCNetModule(ae, n).to(self._device)
        Xt, _ = self._start_network(module, X)
        self._pretrain(ae, Xt, X, arch, seed)

        t0 = time.perf_counter()
        lr_, lg, ls = float(self.lambda_reconst), float(self.lambda_reg), float(self.lambda_ssc)
        decode = arch == "conv"

        def loss_fn(idx):  # full batch: the batch is all of X (its order is irrelevant to the loss)
            Z = ae.encode(Xt)
            # under bf16 autocast only the encoder / decoder run in bf16: C (the result) and the residual Z - C Z
            # (a small difference of large terms) stay in float32
            with float32_region(Z):
                Z = as_float32(Z)
                Zse = module.C @ Z
                reg = torch.linalg.vector_norm(module.C) ** 2
                ssc = 0.5 * ((Z - Zse) ** 2).sum()
                loss = lg * reg + ls * ssc
            logs = {"reg": float(reg.detach()), "ssc": float(ssc.detach())}
            if decode:
                rec = reconstruction_loss(Xt, ae.decode(Zse))
                loss = loss + lr_ * rec
                logs["reconst"] = float(rec.detach())
            return loss, logs

        if int(self.n_epochs) > 0:
            tr = Trainer(module, loss_fn, n, n_iter=int(self.n_epochs), batch_size=n, lr=float(self.lr),
                         schedule="constant", random_state=seed + 1, verbose=self.verbose, desc="DSC-Net",
                         autocast="env")
            tr.run()
            self.history_["train"] = tr.history
        module.eval()
        self.timings_["train"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        self.coef_, self.labels_ = self._dsc_labels(K, seed, t0, C=module.C.detach().cpu())
