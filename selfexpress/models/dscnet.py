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
post-processing of ``C`` (:mod:`selfexpress.graph._dsc`, as in SSCN) and spectral clustering.

``C`` makes memory grow with the square of N (10,000 points: 400 MB for ``C``, about 3 GB with its gradient,
Adam's moments and temporaries); :meth:`DSCNet.fit` checks this with the shared memory guard first and
refuses with an error naming ``C``. The model is transductive: there is no ``predict`` for new points.
"""

from __future__ import annotations

import time

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClusterMixin
from torch import nn

from .._device import device_property
from .._memory import check_allocation
from .._validation import check_n_clusters, check_positive, check_random_state_int, fit_seed
from ._autoencoder import pretrain_autoencoder, reconstruction_loss
from .sscn import SSCN

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


class DSCNet(ClusterMixin, BaseEstimator):
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
        self.n_clusters = n_clusters
        self.max_cluster_dim = max_cluster_dim
        self.architecture = architecture
        self.image_shape = image_shape
        self.kernel_sizes = kernel_sizes
        self.channels = channels
        self.stride = stride
        self.paddings = paddings
        self.lambda_reconst = lambda_reconst
        self.lambda_reg = lambda_reg
        self.lambda_ssc = lambda_ssc
        self.n_epochs_ae = n_epochs_ae
        self.batch_size_ae = batch_size_ae
        self.lr_ae = lr_ae
        self.n_epochs = n_epochs
        self.lr = lr
        self.noise_threshold = noise_threshold
        self.noise_alpha = noise_alpha
        self.postprocess = postprocess
        self.n_neighbors = n_neighbors
        self.max_nonzero = max_nonzero
        self.block_size = block_size
        self.n_init = n_init
        self.pretrained_autoencoder = pretrained_autoencoder
        self.random_state = random_state
        self.device = device
        self.verbose = verbose

    # shared validation / shapes with SSCN (same parameter names and meanings)
    def _sscn_view(self):
        common = {k: v for k, v in self.get_params().items() if k in SSCN().get_params()}
        return SSCN(**common)

    _device = device_property()  # ``device`` resolved: the torch.device of every tensor (selfexpress._device)

    def _check_params(self):
        self._sscn_view()._check_params()
        check_positive(self.n_epochs, "n_epochs", integer=True, allow_zero=True)

    def _memory_estimate(self, n, n_features, arch):
        """``[(bytes, what, hint)]`` checked by the memory guard before fitting; the first one is ``C``'s."""
        view = self._sscn_view()
        out = [(32 * n * n + n * view._per_point_bytes(n_features, arch),
                f"DSC-Net's self-expressive layer C ({n} x {n} float32 Parameter, its gradient, Adam's two "
                "moments, temporaries) and the full-batch activations",
                "C grows with n_samples squared: fit DSC-Net on fewer samples (a subset of X), or use SSCN, whose "
                "memory does not grow with n_samples")]
        if arch == "conv" and self.pretrained_autoencoder is None and int(self.n_epochs_ae) > 0:
            m = min(int(self.batch_size_ae), n)
            out.append((m * view._per_point_bytes(n_features, arch),
                        f"DSC-Net auto-encoder pretraining on batches of {m} images",
                        f"lower batch_size_ae (now {self.batch_size_ae})"))
        out.append(view._postprocess_estimate(n, "DSC-Net"))
        return out

    def fit(self, X, y=None):
        """Pretrain the auto-encoder (unless given), train ``C`` and the auto-encoder jointly, cluster ``C``.

        Parameters
        ----------
        X : array-like (n_samples, n_features), (n, H, W) or (n, C, H, W)
        y : ignored
        """
        from ..cluster import spectral_clustering
        from ..graph import dsc_affinity, mass_threshold
        from ..train import Trainer, seeded

        self._check_params()
        view = self._sscn_view()
        X = view._flatten(X)
        n, D = X.shape
        if n < 2:
            raise ValueError(f"X has {n} sample(s); at least 2 are required")
        K = check_n_clusters(self.n_clusters, n)
        arch = view._resolve_architecture(D)
        for nbytes, what, hint in self._memory_estimate(n, D, arch):
            check_allocation(int(nbytes), what, hint, device=self._device)
        seed = fit_seed(self, new=True)  # the one seed of this fit
        self.n_features_in_ = D
        self.architecture_ = arch
        self.timings_, self.history_ = {}, {}
        with seeded(seed):
            ae = view._autoencoder(D, arch)
            module = DSCNetModule(ae, n).to(self._device)
        self.module_ = module
        self.n_parameters_ = int(sum(p.numel() for p in module.parameters() if p.requires_grad))
        Xt = torch.as_tensor(np.ascontiguousarray(X, dtype=np.float32), device=self._device)

        t0 = time.perf_counter()
        if arch == "conv":
            if self.pretrained_autoencoder is not None:
                try:
                    ae.load_state_dict(self.pretrained_autoencoder)
                except RuntimeError as exc:
                    raise ValueError(f"pretrained_autoencoder does not fit this architecture: {exc}") from None
            elif int(self.n_epochs_ae) > 0:
                tr = pretrain_autoencoder(ae, Xt, n_epochs=int(self.n_epochs_ae), batch_size=int(self.batch_size_ae),
                                          lr=float(self.lr_ae), random_state=seed, verbose=self.verbose)
                self.history_["ae"] = tr.history
        self.pretrained_autoencoder_ = {k: v.detach().cpu().clone() for k, v in ae.state_dict().items()}
        self.timings_["pretrain"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        lr_, lg, ls = float(self.lambda_reconst), float(self.lambda_reg), float(self.lambda_ssc)
        decode = arch == "conv"

        def loss_fn(idx):  # full batch: the batch is all of X (its order is irrelevant to the loss)
            Z = ae.encode(Xt)
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
                         schedule="constant", random_state=seed + 1, verbose=self.verbose, desc="DSC-Net")
            tr.run()
            self.history_["train"] = tr.history
        module.eval()
        self.timings_["train"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        C = module.C.detach().cpu()
        rank = K * int(self.max_cluster_dim) + 1
        ro = self.noise_threshold
        Cp = mass_threshold(C=C, ro=float(ro) if ro is not None else 1.0, max_nonzero=self.max_nonzero,
                            block_size=int(self.block_size))
        dense = self.postprocess == "dense"
        A = dsc_affinity(Cp, rank=rank, alpha=float(self.noise_alpha), n_neighbors=int(self.n_neighbors),
                         dense=dense, block_size=int(self.block_size))
        if dense:
            import scipy.sparse as sp

            np.fill_diagonal(A, 0.0)
            A = sp.csr_matrix(A)
        self.coef_ = Cp
        self.affinity_ = A
        self.timings_["graph"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        self.labels_ = spectral_clustering(A, K, n_init=int(self.n_init), random_state=seed)
        self.timings_["spectral"] = time.perf_counter() - t0
        return self

    def fit_predict(self, X, y=None):
        """Fit and return ``labels_`` (DSC-Net is transductive: no ``predict`` for new points)."""
        return self.fit(X).labels_
