"""SENet: the self-expressive network of Zhang, You, Vidal & Li (CVPR 2021, ``senet.txt``).

A network ``f(x_i, x_j) = alpha * T_b(q(x_i) . k(x_j))`` outputs the coefficient with which dictionary
atom ``x_j`` helps reconstruct ``x_i`` (row convention of the library: row i of ``C`` codes ``x_i``). Its
parameter count does not depend on N, and it gives coefficients for points it never saw.

* ``q``, ``k``: separate (unshared) MLPs ``Linear+ReLU`` x len(hidden_sizes), then ``Linear`` + ``tanh``
  (Kaiming-uniform hidden weights, Xavier-uniform output weights, zero biases -- the reference init);
* ``T_b(u) = sign(u) max(|u| - b, 0)`` with one learnable scalar ``b`` (init 0), applied *before* the
  scaling ``alpha = 1 / embed_dim`` (so ``|c_ij| <= 1``);
* ``c_ii`` is excluded by masking the entries whose global query index equals the global dictionary index
  inside every block (not by subtracting it afterwards), which is also right for out-of-sample queries.

Training minimises eq. (10)/(11) with the reference scaling, per mini-batch B of queries::

    [ (gamma/2) sum_{i in B} ||x_i - sum_{j != i} c_ij x_j||^2 + sum_{i in B, j != i} r(c_ij) ] / |B|,
    r(c) = lmbd |c| + (1 - lmbd)/2 c^2,

with the whole training set as dictionary, by Adam + per-epoch cosine annealing + global gradient clipping
(:mod:`selfexpress.train`). ``algorithm="sgd"`` is Alg. 1 (keys of all N atoms computed with grad, in column
blocks, one backward); ``algorithm="two_pass"`` is Alg. 2 (pass 1 without grad gives the residual
``q_i = gamma (x_i - rec_i)``; pass 2 recomputes the keys of one column block at a time with grad and
back-propagates the surrogate ``sum_ij (r'(c_ij) - <x_j, q_i>) c_ij / |B|`` of eq. (12) block by block), whose
memory does not grow with N. Both give the same loss and gradients (tested in float64).

``inactive_grad="kkt"`` (not in the paper, off by default) also gives a gradient to coefficients that the
threshold has zeroed but that violate their optimality condition; it reaches a given loss / ACC several times
faster on a CPU budget (see the :class:`SENet` parameter and benchmarks/senet_table1.py).
"""

from __future__ import annotations

import time
import warnings

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn

from .._device import device_property, resolve_device
from .._memory import check_allocation
from .._validation import (check_data, check_fraction, check_is_fitted, check_n_features,
                           check_positive, fit_seed)
from ._senet_engine import soft_threshold
from .base import SelfExpressiveClustering, normalize_rows, store_params
from ._files import (apply_feature_transform, check_network_tensors, config_n_features, estimator_from_config,
                     invalid_config, load_network, pack_feature_transform, unpack_feature_transform)

__all__ = ["SENet", "SENetModule", "senet_loss_sgd", "senet_backward_two_pass", "senet_loss_distill",
           "elastic_net_penalty"]

MODEL_KIND = "senet"

#: the parameters whose default "auto" is resolved at the door of ``fit`` by the device (see :class:`SENet`)
AUTO_PARAMS = ("hidden_sizes", "embed_dim", "n_iter", "n_train", "teacher", "lr_threshold", "n_nonzero", "affinity")
#: what a model file that lacks one of :data:`AUTO_PARAMS` (written before that parameter existed) was fitted with:
#: the defaults before issue 25
_LEGACY_DEFAULTS = dict(hidden_sizes=(1024, 1024, 1024), embed_dim=1024, n_iter=5000, n_train=None, teacher=None,
                        lr_threshold=None, n_nonzero=1000, affinity="knn")


def _is_auto(value):
    return isinstance(value, str) and value == "auto"


def _hidden_tuple(hidden_sizes):
    """``hidden_sizes`` (a positive int or a sequence of them) as a tuple of ints; ``ValueError`` otherwise."""
    hs = (hidden_sizes,) if isinstance(hidden_sizes, (int, np.integer)) else hidden_sizes
    try:
        return tuple(check_positive(h, "hidden_sizes[i]", integer=True) for h in hs)
    except TypeError:
        raise ValueError(f"hidden_sizes must be a sequence of positive ints, got {hidden_sizes!r}") from None


# ----------------------------------------------------------------------------------------------- network
def _mlp(in_dim, hidden_sizes, out_dim):
    layers, d = [], in_dim
    for h in hidden_sizes:
        lin = nn.Linear(d, h)
        nn.init.kaiming_uniform_(lin.weight, nonlinearity="relu")
        nn.init.zeros_(lin.bias)
        layers += [lin, nn.ReLU()]
        d = h
    out = nn.Linear(d, out_dim)
    nn.init.xavier_uniform_(out.weight)
    nn.init.zeros_(out.bias)
    layers += [out, nn.Tanh()]  # nn.Tanh is not in-place (the reference's tanh_ is)
    return nn.Sequential(*layers)


class SENetModule(nn.Module):
    """Query net, key net and the soft threshold ``b`` of SENet (senet.txt eq. (6)-(9)).

    ``coef(q, k)`` maps query embeddings (m, p) and key embeddings (n, p) to the (m, n) coefficients
    ``alpha * T_b(q k^T)``, ``alpha = 1 / embed_dim``.
    """

    def __init__(self, in_dim, hidden_sizes=(1024, 1024, 1024), embed_dim=1024):
        super().__init__()
        self.query = _mlp(in_dim, hidden_sizes, embed_dim)
        self.key = _mlp(in_dim, hidden_sizes, embed_dim)
        self.threshold = nn.Parameter(torch.zeros(1))
        self.alpha = 1.0 / embed_dim

    def coef(self, q, k, kkt_deadzone=None):
        """Coefficients ``alpha * T_b(q k^T)``.

        ``kkt_deadzone``: None for the exact derivative of ``T_b`` (zero where ``|u| <= b``). A number ``t``
        switches on the KKT straight-through gradient for zeroed entries (see ``SENet(inactive_grad="kkt")``):
        an incoming gradient ``g`` of a zeroed coefficient is passed to ``u`` as ``alpha * sign(g) (|g| - t)_+``.
        """
        u = q @ k.T
        if kkt_deadzone is not None and torch.is_grad_enabled():
            return _SoftThresholdKKT.apply(u, self.threshold, self.alpha, float(kkt_deadzone))
        return self.alpha * soft_threshold(u, self.threshold)


class _SoftThresholdKKT(torch.autograd.Function):
    """``alpha * T_b(u)`` whose backward passes KKT violations of zeroed entries straight through.

    Active entries (``|u| > b``) and ``b`` get the exact gradient. For a zeroed entry the incoming gradient
    is ``g = dL/dc = (r'(0) - <x_j, q_i>) / m = -<x_j, q_i> / m``; the elastic-net optimality condition at
    ``c = 0`` holds iff ``|g| <= lmbd / m`` (= ``deadzone``). A violator gets the minimal-norm subgradient
    ``sign(g) (|g| - deadzone)`` times the active slope ``alpha`` as its gradient on ``u``; others get 0.
    """

    @staticmethod
    def forward(ctx, u, b, alpha, deadzone):
        active = u.abs() > b
        ctx.save_for_backward(u, active)
        ctx.alpha, ctx.deadzone, ctx.b_shape = alpha, deadzone, b.shape
        return alpha * soft_threshold(u, b)

    @staticmethod
    def backward(ctx, g):
        u, active = ctx.saved_tensors
        a = ctx.alpha
        leak = soft_threshold(g, ctx.deadzone)
        grad_u = a * torch.where(active, g, leak)
        grad_b = -a * torch.where(active, g * torch.sign(u), torch.zeros_like(g)).sum()
        return grad_u, grad_b.reshape(ctx.b_shape), None, None


def elastic_net_penalty(c, lmbd):
    """``sum r(c) = sum lmbd |c| + (1 - lmbd)/2 c^2`` (eq. (5))."""
    return lmbd * c.abs().sum() + 0.5 * (1.0 - lmbd) * (c * c).sum()


def _mask_self(c, rows_global, col_offset):
    """Zero ``c[r, j]`` where ``rows_global[r] == col_offset + j`` (out of place; -1 = no self)."""
    if rows_global is None:
        return c
    cols = torch.arange(col_offset, col_offset + c.shape[1], device=c.device)
    return c.masked_fill(rows_global[:, None] == cols[None, :], 0.0)


def _deadzone(inactive_grad, lmbd, m):
    if inactive_grad == "zero":
        return None
    if inactive_grad == "kkt":
        return lmbd / m
    raise ValueError(f"inactive_grad must be 'zero' or 'kkt', got {inactive_grad!r}")


def senet_loss_sgd(module, X, idx, gamma, lmbd, block_size, inactive_grad="zero"):
    """Alg. 1: the loss of the queries ``X[idx]`` against the full dictionary ``X`` with one autograd graph.

    Keys of all N atoms are computed with grad in column blocks of ``block_size`` (memory grows with N).
    Returns ``(loss, rec, reg)``: ``loss = (gamma/2 * rec + reg) / m`` is attached to the graph,
    ``rec = sum_i ||x_i - sum_j c_ij x_j||^2`` and ``reg = sum_ij r(c_ij)`` are detached sums over the batch.
    ``inactive_grad``: "zero" (exact gradient) or "kkt" (see :class:`SENet`).
    """
    xb = X[idx]
    m = xb.shape[0]
    dz = _deadzone(inactive_grad, lmbd, m)
    q = module.query(xb)
    rec = torch.zeros_like(xb)
    reg = xb.new_zeros(())
    for c0 in range(0, X.shape[0], block_size):
        xk = X[c0:c0 + block_size]
        c = _mask_self(module.coef(q, module.key(xk), dz), idx, c0)
        rec = rec + c @ xk
        reg = reg + elastic_net_penalty(c, lmbd)
    rec_loss = ((xb - rec) ** 2).sum()
    loss = (0.5 * gamma * rec_loss + reg) / m
    return loss, rec_loss.detach(), reg.detach()


def senet_backward_two_pass(module, X, idx, gamma, lmbd, block_size, inactive_grad="zero"):
    """Alg. 2: accumulate into ``.grad`` the gradient of the same loss as :func:`senet_loss_sgd`.

    Pass 1 (no grad) accumulates ``rec_i = sum_j c_ij x_j`` over column blocks and forms
    ``q_i = gamma (x_i - rec_i)`` (eq. (13)). Pass 2 recomputes each block's keys with grad and back-propagates
    the surrogate ``sum_ij w_ij c_ij`` with the fixed weights ``w_ij = (r'(c_ij) - <x_j, q_i>) / m``
    (eq. (12); ``r'(0) = 0``) -- one block at a time, so no graph ever spans more than one block of atoms.
    The query net is back-propagated once, from the gradient accumulated on a detached copy of its output.
    Memory is O(m * block_size + block_size * width), independent of N.
    Returns ``(loss, rec, reg)`` as detached tensors (values as in :func:`senet_loss_sgd`).
    """
    xb = X[idx]
    m = xb.shape[0]
    n = X.shape[0]
    dz = _deadzone(inactive_grad, lmbd, m)
    with torch.no_grad():
        q = module.query(xb)
        rec = torch.zeros_like(xb)
        reg = xb.new_zeros(())
        for c0 in range(0, n, block_size):
            xk = X[c0:c0 + block_size]
            c = _mask_self(module.coef(q, module.key(xk)), idx, c0)
            rec += c @ xk
            reg += elastic_net_penalty(c, lmbd)
        resid = gamma * (xb - rec)  # q_i of eq. (13)
        rec_loss = ((xb - rec) ** 2).sum()
        loss = (0.5 * gamma * rec_loss + reg) / m
    q_out = module.query(xb)
    q_det = q_out.detach().requires_grad_(True)
    for c0 in range(0, n, block_size):
        xk = X[c0:c0 + block_size]
        c = _mask_self(module.coef(q_det, module.key(xk), dz), idx, c0)
        with torch.no_grad():
            w = (lmbd * torch.sign(c) + (1.0 - lmbd) * c - resid @ xk.T) / m
        (w * c).sum().backward()
    q_out.backward(q_det.grad)
    return loss, rec_loss, reg


class KeyCache:
    """Key embeddings of the whole dictionary, computed without grad, for :func:`senet_loss_key_cache`.

    ``refresh_every`` steps all N keys are recomputed (forward only, in blocks); in between, the keys of the atoms a
    step activates are overwritten with the exact keys that step computed, so only atoms that stayed inactive are
    stale. ``last`` is the share of atoms the last step recomputed with grad.
    """

    def __init__(self, refresh_every, block_size):
        self.refresh_every, self.block_size = int(refresh_every), int(block_size)
        self.keys = None
        self.age = 0
        self.last = 1.0

    def keys_for(self, module, X):
        if self.keys is None or self.age >= self.refresh_every:
            with torch.no_grad():
                self.keys = torch.cat([module.key(X[c0:c0 + self.block_size])
                                       for c0 in range(0, X.shape[0], self.block_size)])
            self.age = 0
        self.age += 1
        return self.keys


#: candidates of a key-cache step: atoms whose cached product with some query of the batch exceeds
#: ``(1 - margin) * b`` in magnitude; the margin absorbs how far a stale key may move between refreshes
KEY_CACHE_MARGIN = 0.2


def senet_loss_key_cache(module, X, idx, gamma, lmbd, cache):
    """Alg. 1 with a key cache: the loss of :func:`senet_loss_sgd`, with keys recomputed (with grad) only for the
    atoms the batch can activate.

    The soft threshold gives an atom ``j`` with ``|q_i . k_j| <= b`` for every query ``i`` of the batch neither a
    coefficient nor a gradient, so its key need not be computed. Candidates are found from cached keys
    (:class:`KeyCache`) with a margin, then the step is exact on them: coefficients, loss and gradients equal
    Alg. 1's whenever every atom that is active under the exact keys is a candidate (always the case while
    ``b <= 0``, and with a fresh cache). Cost per step: the key net on the candidates instead of all N atoms, plus
    one ``m x N`` product with the cache. ``inactive_grad="kkt"`` is not supported (zeroed pairs get gradients).
    Returns ``(loss, rec, reg)`` as :func:`senet_loss_sgd`.
    """
    xb = X[idx]
    m = xb.shape[0]
    q = module.query(xb)
    keys = cache.keys_for(module, X)
    with torch.no_grad():
        b = float(module.threshold.detach())
        u = (q.detach() @ keys.T).abs().amax(dim=0)
        cand = torch.nonzero(u > (1.0 - KEY_CACHE_MARGIN) * b).squeeze(1) if b > 0 else \
            torch.arange(X.shape[0], device=X.device)
    cache.last = cand.numel() / X.shape[0]
    xk = X[cand]
    k = module.key(xk)
    with torch.no_grad():
        keys[cand] = k.detach()
    c = module.coef(q, k).masked_fill(idx[:, None] == cand[None, :], 0.0)
    rec_loss = ((xb - c @ xk) ** 2).sum()
    reg = elastic_net_penalty(c, lmbd)
    loss = (0.5 * gamma * rec_loss + reg) / m
    return loss, rec_loss.detach(), reg.detach()


def senet_loss_distill(module, X, idx, teacher, weight, n_sampled, gamma, lmbd, generator):
    """Teacher-guided SENet step (CPU accelerator, ``teacher="ensc"``): not in senet.txt.

    Columns = the teacher's support of the batch rows, the batch itself and ``n_sampled`` random atoms, so the
    cost per step does not grow with N. Loss = ``weight * sum (c_ij - c*_ij)^2 / m`` (c* = the EnSC solution of
    the same elastic-net problem on the training set, sparse CSR) + the SENet loss of eq. (10) restricted to
    those columns. Measured on MNIST (width 256, 3,000 steps, N = 1,000 train points, MNIST-test clustered
    with its own coefficients): ACC 0.844 with the teacher vs 0.61 without (plain or ``inactive_grad="kkt"``).
    """
    n = X.shape[0]
    rows = idx.cpu().numpy()
    sub = teacher[rows]
    extra = torch.randint(0, n, (int(n_sampled),), generator=generator)
    cols = torch.unique(torch.cat([torch.from_numpy(sub.indices.astype(np.int64)), idx.cpu(), extra])).to(X.device)
    target = torch.as_tensor(sub[:, cols.cpu().numpy()].toarray(), dtype=X.dtype, device=X.device)
    xb, xk = X[idx], X[cols]
    c = module.coef(module.query(xb), module.key(xk))
    c = c.masked_fill(cols[None, :] == idx[:, None], 0.0)
    m = xb.shape[0]
    rec_loss = ((xb - c @ xk) ** 2).sum()
    reg = elastic_net_penalty(c, lmbd)
    loss = (0.5 * gamma * rec_loss + reg + weight * ((c - target) ** 2).sum()) / m
    return loss, rec_loss.detach(), reg.detach()


# ----------------------------------------------------------------------------------------------- estimator
class SENet(SelfExpressiveClustering):
    """Self-Expressive Network subspace clustering (inductive: ``predict`` labels unseen points).

    Defaults that fit the device: the eight parameters that differ between the paper's GPU-scale model and the
    measured CPU recipe (``hidden_sizes``, ``embed_dim``, ``n_iter``, ``n_train``, ``teacher``, ``lr_threshold``,
    ``n_nonzero``, ``affinity``) default to ``"auto"``, resolved at the door of :meth:`fit` by the device the fit
    runs on (``device`` resolved), as scikit-learn's ``KMeans(n_init="auto")`` is; an explicit value always wins,
    and the parameters themselves are never changed (``get_params()`` still says ``"auto"`` after the fit).

    ============  ==========================================  ==========================================
    parameter     on a CUDA device: the paper                 on the CPU: the CPU recipe
    ============  ==========================================  ==========================================
    hidden_sizes  (1024, 1024, 1024)                          (256, 256, 256)
    embed_dim     1024                                        256
    n_iter        100,000                                     2,500
    n_train       None (train on every point)                 min(n_samples, 5000)
    teacher       None                                        "ensc"
    lr_threshold  None (= ``lr``)                             0.03
    n_nonzero     1000                                        100
    affinity      "knn" (the reference's 3-NN graph)          "symmetric"
    ============  ==========================================  ==========================================

    The GPU column is senet.txt / the reference code (``SENet._paper_preset``); the CPU column is the recipe
    measured on two CPU cores (``SENet._presets["image"]``: narrow nets, a sampled training set, the EnSC
    teacher; README, "SENet on a CPU"). Why the CPU does not get the paper's model: its 100,000 iterations of
    3 x 1024 nets are about 33 CPU-hours, and the shorter run the defaults used to be (the paper's nets, 5,000
    iterations, 3-NN graph, no teacher) took 1,591 s on a loaded 2-core CPU for 400 face images (40 people,
    32 x 32 pixels, unit rows) and scored ACC 0.230 where EnSC's defaults score 0.765 in 1 s. On 400 points on
    40 six-dimensional subspaces of R^1024 (10 points each, unit rows) the CPU recipe scores ACC 1.0 in 174 s
    on one thread of a loaded machine (EnSC 1.0 in 10 s); the same with ``affinity="knn"`` 0.84, which is why
    the CPU recipe uses the symmetric graph. The values a fit used are in ``settings_`` (and ``recipe_``);
    model files store them, so a model trained on a GPU loads on a CPU with the same network.

    Parameters
    ----------
    n_clusters : int, default 8
    hidden_sizes : tuple of int or "auto", default "auto"
        Hidden widths of the query and key MLPs (each its own weights). "auto": (1024, 1024, 1024) on CUDA,
        (256, 256, 256) on the CPU.
    embed_dim : int or "auto", default "auto"
        Output width ``p``; ``alpha = 1/p``. "auto": 1024 on CUDA, 256 on the CPU.
    gamma : float, default 200.0
        Weight of the reconstruction term (the reference: 200 MNIST/Fashion/CIFAR, 150 EMNIST, 50 synthetic).
    lmbd : float in [0, 1], default 0.9
        Elastic-net trade-off ``r(c) = lmbd |c| + (1-lmbd)/2 c^2``.
    n_iter : int or "auto", default "auto"
        Training iterations. "auto": 100,000 on CUDA (the reference), 2,500 on the CPU.
    batch_size : int, default 100
        Queries per iteration; an epoch is ``N // batch_size`` iterations.
    block_size : int, default 1000
        Dictionary atoms per column block, in training (both algorithms) and inference.
    algorithm : {"sgd", "two_pass", "key_cache"}, default "sgd"
        Alg. 1 (memory linear in N) or Alg. 2 (same gradients, memory independent of N), or Alg. 1 with a key
        cache (:func:`senet_loss_key_cache`): keys of all atoms are kept without grad and refreshed every
        ``key_refresh`` steps; each step recomputes with grad only the keys of the atoms the batch can activate
        (cached product above ``0.8 b``), since the soft threshold gives the others no gradient. Same model and
        loss; the step is exact whenever no atom outside the candidates is active, and cheaper by the share of
        atoms the batch leaves inactive.
    key_refresh : int, default 10
        Steps between full refreshes of the key cache (``algorithm="key_cache"`` only).
    lr : float, default 1e-3
        Adam learning rate, cosine-annealed per epoch to 0.
    lr_threshold : float, None or "auto", default "auto"
        Separate Adam learning rate for the soft threshold ``b`` (None: ``lr``). A larger one (e.g. 0.03)
        lets ``b`` catch up with the embeddings on short CPU runs (measurements.md). "auto": None on CUDA,
        0.03 on the CPU.
    grad_clip : float or None, default 0.001
        Global gradient-norm clip (the reference value).
    n_neighbors, affinity, n_components, n_init, normalize, random_state :
        See :class:`~selfexpress.models.base.SelfExpressiveClustering`. ``affinity="knn"`` is the
        reference's 3-NN graph over rows of C (MNIST); ``"symmetric"`` is ``|C| + |C|^T`` (synthetic, CIFAR).
        ``affinity`` defaults to "auto": "knn" on CUDA, "symmetric" on the CPU.
    n_nonzero : int or "auto", default "auto"
        Coefficients kept per row (largest |c|) in ``coef_`` and :meth:`self_expressive_coefficients`.
        "auto": 1000 on CUDA, 100 on the CPU.
    teacher : {None, "ensc", "auto"}, default "auto"
        CPU accelerator, not in senet.txt. "ensc": first solve the same elastic-net problem exactly on the
        training set with :class:`~selfexpress.models.ensc.ElasticNetSubspaceClustering` (``gamma``,
        ``tau=lmbd``, ``gamma_nz=False``, i.e. the minimiser of eq. (10) over free coefficients), then train
        the networks on the SENet loss plus ``teacher_weight * sum (c_ij - c*_ij)^2`` over the teacher's
        support of each batch row, the batch and ``n_sampled_atoms`` random atoms (cost per step independent
        of N; ``algorithm`` is then unused). Measured on MNIST (width 256, 3,000 steps, 1,000 train points,
        MNIST-test clustered with its own coefficients): ACC 0.844 vs 0.61 without a teacher.
        "auto": None on CUDA (the paper), "ensc" on the CPU.
    teacher_weight : float, default 3000.0
    n_sampled_atoms : int, default 1000
    inactive_grad : {"zero", "kkt"}, default "zero"
        Gradient of a coefficient that the soft threshold has zeroed (``|q_i . k_j| <= b``). "zero": the exact
        derivative of ``T_b`` (the paper's Alg. 1 / 2): such a pair gets no gradient, so an atom that should
        enter the support of ``x_i`` can only do so through side effects, and training is slow. "kkt": if the
        zeroed ``c_ij`` violates the elastic-net optimality condition at 0, ``|<x_j, q_i>| > lmbd`` with
        ``q_i = gamma (x_i - rec_i)`` (the loss would drop by making it non-zero), its minimal-norm subgradient
        ``-sign(<x_j, q_i>) (|<x_j, q_i>| - lmbd) / m`` is passed straight through ``T_b`` with the active slope
        ``alpha``; active pairs and ``b`` keep their exact gradients. Same model and objective; the update
        coincides with the exact gradient wherever every zeroed coefficient satisfies its optimality condition
        (e.g. at the EnSC solution), and Alg. 1 and Alg. 2 stay identical. Measured (R^9, 5 x 100 points,
        width 128, full batch, lr 3e-3, lr_threshold 1.0, 2,000 iterations): ACC 0.918 / L 580 with "kkt" vs
        0.668 / L 648 with "zero" (EnSC optimum L 556); "zero" needs 12,000 iterations to reach 0.918 / L 565.
    n_train : int, None or "auto", default "auto"
        Train on this many points drawn at random (seeded) from X, then compute ``coef_`` and ``labels_``
        for all of X with all of X as dictionary (the reference protocol for MNIST-full etc.). None: all.
        "auto": None on CUDA, ``min(n_samples, 5000)`` on the CPU.
    device : str or torch.device, default "auto"
        "auto" (CUDA when available, else the CPU), "cpu", "cuda" / "cuda:N" or a torch.device
        (:func:`selfexpress._device.resolve_device`); every tensor of the fit lives there.
    verbose : bool, progress bar with the running loss.
    checkpoint_dir, checkpoint_every, resume : see :class:`selfexpress.train.Trainer`.
    backend : {"local", "dask", "faiss"}, default "local"
        Engine of the coefficient stage (queries against the dictionary, top-``n_nonzero`` per row):
        in-process blocks, one ``dask.distributed`` task per block (same result), or faiss candidate search
        (approximate with an IVF index; needed for 10^6 points). See :mod:`selfexpress.models._senet_engine`.
    backend_options : dict or None
        Options of the backend: ``dask_address`` (None: a 2-worker ``LocalCluster``), ``n_workers``;
        ``n_candidates``, ``faiss_index`` ("flat" | "ivf"), ``nlist``, ``nprobe`` for faiss.
    distributed : bool or "auto", default "auto"
        Data-parallel training over the default ``torch.distributed`` process group (launch with ``torchrun``
        and call :func:`selfexpress.distributed.init_from_env`; see ``docs/scaling.md``). "auto": on iff a
        group of more than one process is initialised; True: requires one; False: train alone even inside a
        group. Every rank calls ``fit`` on the same ``X`` and trains on its slice of each mini-batch; the
        gradients are all-reduced so the run follows the single-process one (same loss curve up to float
        summation order; not exactly with ``teacher="ensc"``, whose columns depend on the batch rows), and
        every rank ends with the same weights. Coefficients and clustering after training are not split:
        every rank computes them (same labels); write outputs from rank 0 only.

    Attributes
    ----------
    settings_ : dict
        The values of the eight device-dependent parameters this fit used (``"auto"`` resolved, explicit values
        as given; ``hidden_sizes`` a tuple of ints, ``n_train`` the resolved count or None). Set at the door of
        :meth:`fit`, and by :meth:`load` from the model file.
    recipe_ : {"cpu", "paper"} or None
        Which column of the table above ``"auto"`` took: "paper" when the fit ran on CUDA, "cpu" otherwise
        (None for a model file written before the defaults followed the device).
    module_ : SENetModule (eval mode after fit)
    dictionary_ : ndarray (n_dict, n_features), the (normalised) training points = dictionary for predict
    dictionary_labels_ : ndarray (n_dict,), cluster labels of the dictionary atoms
    train_indices_ : ndarray or None, the rows of ``X`` the networks train on (the dictionary); None: all of ``X``.
        Set when training starts, so a :meth:`fit` callback can read it.
    coef_, affinity_, labels_, timings_ : as in the base class
    history_ : ``{"train": {"iter", "loss", "rec", "reg", "b", "lr"}}`` (plus ``"active"``, the share of keys
        recomputed with grad, with ``algorithm="key_cache"``), the training loss (``rec``/``reg``/``loss``
        are per-point batch means); plus ``"eval"`` with what :meth:`fit` callbacks returned, if any. Learning
        curves against true labels are the benchmark harness's (``benchmarks/_monitor.py``), not the estimator's.
    """

    # registry (selfexpress.models.registry): the CLI / pipeline name, input kind, model-file kind, presets
    _method_name = "senet"
    #: parameters of earlier versions that model files may still hold; ``load`` drops them (``eval_every``: the
    #: learning curves moved to the benchmark harness)
    _retired_params = ("eval_every",)
    _input_kind = "features"
    _model_kind = MODEL_KIND
    _presets = {
        "synthetic": dict(gamma=50.0, lmbd=0.9, n_iter=500, hidden_sizes=(128, 128, 128), embed_dim=128,
                          lr_threshold=0.03, affinity="symmetric"),
        # CPU preset (issue 12): narrow nets, a sampled training set, the EnSC teacher; the paper's own settings
        # are _paper_preset. Its AUTO_PARAMS values are also what "auto" means on the CPU (issue 25).
        "image": dict(gamma=200.0, lmbd=0.9, n_components=15, affinity="symmetric", n_train=5000, n_iter=2500,
                      hidden_sizes=(256, 256, 256), embed_dim=256, lr_threshold=0.03, teacher="ensc", n_nonzero=100),
    }
    #: senet.txt / reference-code settings (GPU scale: 100k iterations of 3 x 1024 nets); its AUTO_PARAMS values
    #: are what "auto" means on CUDA
    _paper_preset = dict(gamma=200.0, lmbd=0.9, n_components=15, affinity="knn", hidden_sizes=(1024, 1024, 1024),
                         embed_dim=1024, n_iter=100_000, batch_size=100, lr=1e-3, grad_clip=1e-3, n_nonzero=1000,
                         n_train=None, teacher=None, lr_threshold=None)

    def __init__(self, n_clusters=8, *, hidden_sizes="auto", embed_dim="auto", gamma=200.0, lmbd=0.9,
                 n_iter="auto", batch_size=100, block_size=1000, algorithm="sgd", key_refresh=10, lr=1e-3,
                 lr_threshold="auto", grad_clip=0.001, n_neighbors=3, affinity="auto", n_components=None, n_init=20,
                 n_nonzero="auto", normalize=True, n_train="auto", teacher="auto", teacher_weight=3000.0, n_sampled_atoms=1000,
                 inactive_grad="zero", random_state=None, device="auto",
                 verbose=False, checkpoint_dir=None, checkpoint_every=1000, resume=False, backend="local",
                 backend_options=None, distributed="auto"):
        store_params(self, locals())

    # ------------------------------------------------------------------ validation / building
    _device = device_property()  # ``device`` resolved: the torch.device of every tensor (selfexpress._device)

    def _check_params(self):
        """Check the parameters (``"auto"`` is accepted where it is a default); returns ``hidden_sizes`` as a tuple
        of ints, or ``"auto"``."""
        hs = self.hidden_sizes
        if not _is_auto(hs):
            hs = _hidden_tuple(hs)
        if not _is_auto(self.embed_dim):
            check_positive(self.embed_dim, "embed_dim", integer=True)
        check_positive(self.gamma, "gamma")
        check_fraction(self.lmbd, "lmbd")
        if not _is_auto(self.n_iter):
            check_positive(self.n_iter, "n_iter", integer=True)
        check_positive(self.batch_size, "batch_size", integer=True)
        check_positive(self.block_size, "block_size", integer=True)
        if self.algorithm not in ("sgd", "two_pass", "key_cache"):
            raise ValueError(f"algorithm must be 'sgd', 'two_pass' or 'key_cache', got {self.algorithm!r}")
        check_positive(self.key_refresh, "key_refresh", integer=True)
        if self.algorithm == "key_cache" and self.inactive_grad != "zero":
            raise ValueError("algorithm='key_cache' needs inactive_grad='zero': with 'kkt' every zeroed pair gets a "
                             "gradient, so no key may be skipped; use algorithm='sgd' with inactive_grad='kkt'")
        check_positive(self.lr, "lr")
        if self.lr_threshold is not None and not _is_auto(self.lr_threshold):
            check_positive(self.lr_threshold, "lr_threshold")
        if self.grad_clip is not None:
            check_positive(self.grad_clip, "grad_clip")
        if not _is_auto(self.n_nonzero):
            check_positive(self.n_nonzero, "n_nonzero", integer=True)
        if self.n_train is not None and not _is_auto(self.n_train):
            check_positive(self.n_train, "n_train", integer=True)
        if not (self.teacher is None or (isinstance(self.teacher, str) and self.teacher in ("ensc", "auto"))):
            raise ValueError(f"teacher must be None or 'ensc', got {self.teacher!r}")
        if not (isinstance(self.affinity, str) and self.affinity in ("auto", "symmetric", "knn")):
            raise ValueError(f"affinity must be 'symmetric' or 'knn', got {self.affinity!r}")
        check_positive(self.teacher_weight, "teacher_weight", allow_zero=True)
        check_positive(self.n_sampled_atoms, "n_sampled_atoms", integer=True, allow_zero=True)
        if self.inactive_grad not in ("zero", "kkt"):
            raise ValueError(f"inactive_grad must be 'zero' or 'kkt', got {self.inactive_grad!r}")
        if self.checkpoint_every is not None:
            check_positive(self.checkpoint_every, "checkpoint_every", integer=True)
        from ._senet_engine import BACKENDS

        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {self.backend!r}")
        allowed = {"dask_address", "n_workers", "n_candidates", "faiss_index", "nlist", "nprobe"}
        if self.backend_options is not None:
            if not isinstance(self.backend_options, dict):
                raise ValueError(f"backend_options must be a dict or None, got {type(self.backend_options).__name__}")
            unknown = sorted(set(self.backend_options) - allowed)
            if unknown:
                raise ValueError(f"unknown backend_options {unknown}; allowed: {sorted(allowed)}")
        if not (isinstance(self.distributed, bool) or (isinstance(self.distributed, str)
                                                        and self.distributed == "auto")):
            raise ValueError(f"distributed must be True, False or 'auto', got {self.distributed!r}")
        resolve_device(self.device)  # ValueError: malformed, unsupported, or CUDA asked for without CUDA
        return hs

    # ------------------------------------------------------------------ "auto" parameters
    def _recipe(self):
        """``"paper"`` when this estimator's tensors live on CUDA, else ``"cpu"``: the table of the class docstring."""
        return "paper" if self._device.type == "cuda" else "cpu"

    def _resolve_settings(self, n_samples=None):
        """``(settings, recipe)``: the :data:`AUTO_PARAMS` with ``"auto"`` replaced by the ``recipe``'s value for
        the resolved device (``n_train`` capped at ``n_samples`` when given), explicit values as given; nothing is
        stored."""
        recipe = self._recipe()
        source = self._paper_preset if recipe == "paper" else self._presets["image"]
        settings = {}
        for name in AUTO_PARAMS:
            value = getattr(self, name)
            if _is_auto(value):
                value = source[name]
                if name == "n_train" and value is not None and n_samples is not None:
                    value = min(int(n_samples), int(value))
            settings[name] = _hidden_tuple(value) if name == "hidden_sizes" else value
        return settings, recipe

    def _resolve_params(self, n_samples):
        """At the door of ``fit`` (after ``_check_params``): resolve the ``"auto"`` parameters into ``settings_``
        and ``recipe_`` (the parameters are not touched)."""
        self.settings_, self.recipe_ = self._resolve_settings(n_samples)

    def _settings(self, n_samples=None):
        """The device-dependent parameters as this estimator uses them: explicit values as given, ``"auto"`` as the
        last fit (or :meth:`load`) resolved it (``settings_``); before any fit, as a fit would resolve it now."""
        settings, _ = self._resolve_settings(n_samples)
        fitted = getattr(self, "settings_", None)
        if fitted is not None:
            settings.update({k: fitted[k] for k in AUTO_PARAMS if k in fitted and _is_auto(getattr(self, k))})
        return settings

    def _setting(self, name):
        """One parameter as this estimator uses it (see :meth:`_settings`)."""
        return self._settings()[name] if name in AUTO_PARAMS else getattr(self, name)

    def _hidden_sizes(self):
        """``hidden_sizes`` as used (``"auto"`` resolved), a tuple of ints."""
        return self._setting("hidden_sizes")

    def _build(self, in_dim):
        from ..train import seeded

        hs = self._hidden_sizes()
        with seeded(fit_seed(self)):
            module = SENetModule(in_dim, hs, int(self._setting("embed_dim")))
        return module.to(self._device)

    def _memory_estimate(self, n_samples, n_features):
        """Training (autograd graph) and inference (coefficient tiles) peak bytes; see ``_check_memory``."""
        s = self._settings(n_samples)
        hs = s["hidden_sizes"]
        p, D = int(s["embed_dim"]), n_features
        n_tr = min(int(s["n_train"] or n_samples), n_samples)
        m = min(int(self.batch_size), n_tr)
        dims = [D, *hs, p]
        n_params = 2 * sum((a + 1) * b for a, b in zip(dims[:-1], dims[1:]))
        per_atom = 8 * (D + 2 * sum(hs) + 2 * p)  # activations kept for backward + their gradients
        out = []
        if s["teacher"] is None:
            all_atoms = self.algorithm in ("sgd", "key_cache")  # keys with grad for up to every atom per step
            cols = n_tr if all_atoms else min(int(self.block_size), n_tr)
            hint = ("use algorithm='two_pass' (memory independent of n_samples), lower batch_size, or train on a "
                    "subset with n_train" if all_atoms else "lower block_size or batch_size")
            out.append((16 * n_params + cols * per_atom + 20 * m * cols + 4 * n_tr * D,
                        f"SENet training ({self.algorithm}: batch_size x {cols} coefficient blocks and the key "
                        f"network's activations for {cols} atoms of width {max(dims)})", hint))
        out.append((self._inference_bytes(n_samples, n_samples, D),
                    f"SENet coefficients of {n_samples} points (block_size x block_size tiles, n_nonzero per row)",
                    f"lower block_size (now {self.block_size}) or n_nonzero (now {s['n_nonzero']})"))
        return out

    def _inference_bytes(self, n_rows, n_dict, n_features):
        s = self._settings()
        hs = s["hidden_sizes"]
        p = int(s["embed_dim"])
        k = min(int(s["n_nonzero"]), n_dict)
        rb = min(max(int(self.block_size), 1), n_rows)
        cb = min(max(int(self.block_size), 2 * k), n_dict)
        return (4 * n_dict * p + 4 * max(rb, min(n_dict, 1000)) * (n_features + sum(hs) + p) + 16 * rb * cb
                + 12 * n_rows * k)

    def _tensor(self, X):
        return torch.as_tensor(np.ascontiguousarray(X, dtype=np.float32), device=self._device)

    # ------------------------------------------------------------------ fitting
    def fit(self, X, y=None, callbacks=None):
        """Train SENet on ``X`` (or an ``n_train`` subset), then coefficients -> graph -> spectral clustering.

        Parameters
        ----------
        X : array-like (n_samples, n_features)
        y : ignored (scikit-learn's convention; SENet is unsupervised)
        callbacks : iterable of callables ``cb(trainer, iteration, logs) -> dict | None``, optional
            Observers of the training, called every ``cb.every`` iterations (default 1) and after the last one
            (see :class:`selfexpress.train.Trainer`); a dict returned is recorded in ``history_["eval"]``. They see
            no labels: the estimator (``module_``, ``train_indices_``, :meth:`self_expressive_coefficients`) and
            the batch's ``logs``. For stopping on a time budget, snapshots, or the benchmark harness's learning
            curves (``benchmarks/_monitor.py``).

        Returns
        -------
        self
        """
        self._user_callbacks = list(callbacks or ())
        try:
            return super().fit(X)
        finally:
            del self._user_callbacks

    def fit_predict(self, X, y=None, callbacks=None):
        """Fit and return ``labels_`` of ``X`` (``y`` ignored)."""
        return self.fit(X, callbacks=callbacks).labels_

    def _used_params(self):
        """``get_params()`` with the ``"auto"`` parameters replaced by the values this estimator uses (JSON-ready:
        ``hidden_sizes`` as a list), for model files and checkpoint fingerprints."""
        params = self.get_params()
        params.update({k: list(v) if k == "hidden_sizes" else v for k, v in self._settings().items()})
        return params

    def _fingerprint(self, X):
        # the values this fit uses ("auto" resolved): a checkpoint resumes only a run with the same settings
        params = {k: v for k, v in self._used_params().items()
                  if k not in ("verbose", "checkpoint_dir", "checkpoint_every", "resume", "device", "n_init",
                               "n_components", "affinity", "n_neighbors", "n_nonzero", "distributed")}
        from ._files import data_fingerprint

        return {"model": MODEL_KIND, "params": params, **data_fingerprint(X)}

    def _fit_coef(self, X):
        from ..train import Trainer

        settings = self._settings(X.shape[0])
        seed = fit_seed(self)
        n = X.shape[0]
        n_train = settings["n_train"]
        train_idx = None
        if n_train is not None and n_train < n:
            train_idx = np.sort(np.random.default_rng(seed).choice(n, size=int(n_train), replace=False))
        self.train_indices_ = train_idx
        Xtr = X if train_idx is None else X[train_idx]
        if Xtr.shape[0] < 2:
            raise ValueError("SENet needs at least 2 training points")

        self.module_ = self._build(X.shape[1])
        self.dictionary_ = np.ascontiguousarray(Xtr, dtype=np.float32)
        Xt = self._tensor(Xtr)
        gamma, lmbd, bs = float(self.gamma), float(self.lmbd), int(self.block_size)
        module = self.module_
        step = senet_loss_sgd if self.algorithm == "sgd" else senet_backward_two_pass
        inactive_grad = self.inactive_grad
        key_cache = KeyCache(self.key_refresh, bs) if self.algorithm == "key_cache" else None

        teacher_coef = None
        if settings["teacher"] == "ensc":
            from .ensc import ElasticNetSubspaceClustering

            t0 = time.perf_counter()
            teacher_coef = ElasticNetSubspaceClustering(
                n_clusters=2, gamma=gamma, tau=lmbd, gamma_nz=False, normalize=False, device=self._device,
                verbose=self.verbose).fit_coef(Xtr).coef_.tocsr()
            self.timings_["teacher"] = time.perf_counter() - t0
            # the sampled atoms come from the trainer's forked torch RNG (seeded, and restored from a checkpoint:
            # a resumed run samples the atoms the uninterrupted one would have)
            gen = None
            tw, n_sampled = float(self.teacher_weight), int(self.n_sampled_atoms)

        def loss_fn(idx):
            idx = idx.to(Xt.device)
            if teacher_coef is not None:
                loss, rec, reg = senet_loss_distill(module, Xt, idx, teacher_coef, tw, n_sampled, gamma, lmbd, gen)
            elif key_cache is not None:
                loss, rec, reg = senet_loss_key_cache(module, Xt, idx, gamma, lmbd, key_cache)
            else:
                loss, rec, reg = step(module, Xt, idx, gamma, lmbd, bs, inactive_grad)
            m = idx.shape[0]
            logs = {"rec": float(rec) / m, "reg": float(reg) / m, "b": float(module.threshold.detach())}
            if key_cache is not None:
                logs["active"] = key_cache.last  # share of atoms whose keys this step recomputed with grad
            return loss, logs

        callbacks = list(getattr(self, "_user_callbacks", ()))
        lr_threshold, n_iter = settings["lr_threshold"], int(settings["n_iter"])
        param_lrs = None if lr_threshold is None else {"threshold": float(lr_threshold)}
        trainer = Trainer(
            module, loss_fn, Xtr.shape[0], n_iter=n_iter, batch_size=int(self.batch_size), lr=float(self.lr),
            param_lrs=param_lrs, lr_min=0.0, schedule="cosine", grad_clip=self.grad_clip, random_state=seed,
            verbose=self.verbose, callbacks=callbacks, log_every=max(1, n_iter // 2000),
            checkpoint_dir=self.checkpoint_dir, checkpoint_every=self.checkpoint_every, resume=self.resume,
            fingerprint=self._fingerprint(Xtr), desc="SENet", distributed=self.distributed)
        t0 = time.perf_counter()
        trainer.run()
        self.timings_["train"] = time.perf_counter() - t0
        self.history_ = trainer.history
        self.n_iter_ = trainer.iteration
        t0 = time.perf_counter()
        C = self._coefficients(X, X, exclude_self=True)
        self.timings_["inference"] = time.perf_counter() - t0
        if C.nnz == 0:
            warnings.warn(
                f"every SENet coefficient is zero: the learned threshold b = {float(module.threshold.detach()):.4g} "
                "outgrew all query-key inner products, so no gradient flows any more; lower lr_threshold (or lr)",
                RuntimeWarning, stacklevel=4)
        return C

    def _cluster_coef(self):
        labels = super()._cluster_coef()
        idx = self.train_indices_
        self.dictionary_labels_ = np.asarray(labels if idx is None else labels[idx], dtype=np.int64)
        return labels

    # ------------------------------------------------------------------ inference
    def _prepare(self, X, name="X"):
        X = apply_feature_transform(self, X)
        X = check_data(X, name=name, min_samples=1)
        check_n_features(X, self.n_features_in_, name, estimator=self)
        return normalize_rows(X) if self.normalize else X

    @torch.no_grad()
    def _embed(self, net, X):
        out = []
        for r0 in range(0, X.shape[0], max(int(self.block_size), 1000)):
            out.append(net(self._tensor(X[r0:r0 + max(int(self.block_size), 1000)])))
        return torch.cat(out)

    @torch.no_grad()
    def _coefficients(self, X, D, exclude_self, n_nonzero=None, threshold=None):
        """Top-``n_nonzero`` coefficients of rows ``X`` (normalised) on dictionary ``D``; CSR (n, n_dict)."""
        from ._senet_engine import blockwise_coefficients

        module = self.module_
        own_k = self._setting("n_nonzero")
        check_allocation(self._inference_bytes(X.shape[0], D.shape[0], D.shape[1]),
                         f"SENet coefficients of {X.shape[0]} points on {D.shape[0]} atoms",
                         f"lower block_size (now {self.block_size}) or n_nonzero (now {own_k})",
                         device=self._device)
        keys = self._embed(module.key, D)  # once for the whole dictionary
        k = min(int(n_nonzero or own_k), D.shape[0])
        rb = max(int(self.block_size), 1)
        thr = float(module.threshold if threshold is None else threshold)

        def queries(r0, r1):  # query embeddings one row block at a time (X may be a memory map)
            return module.query(self._tensor(X[r0:r1]))

        return blockwise_coefficients((queries, X.shape[0]), keys, alpha=float(module.alpha), threshold=thr,
                                      n_nonzero=k, exclude_self=exclude_self, block_size=rb,
                                      col_block=max(rb, 2 * k), backend=self.backend, verbose=self.verbose,
                                      **(self.backend_options or {}))

    def self_expressive_coefficients(self, X=None, dictionary=None, exclude_self=None, n_nonzero=None):
        """Self-expressive coefficients of the rows of ``X`` on ``dictionary``, as CSR (n_X, n_dict).

        Key embeddings are computed once for the dictionary; then blocks of ``block_size`` queries stream over
        column blocks keeping the ``n_nonzero`` largest |c| per row (:class:`selfexpress.graph.StreamingTopK`),
        so no dense n x n_dict array exists. Inputs are row-normalised like the training data.

        Parameters
        ----------
        X : array-like or None. None: the training dictionary itself.
        dictionary : array-like or None. None: the training dictionary (``dictionary_``). Pass ``X`` again
            for the self-expression of a new set within itself (senet.txt "SENet test").
        exclude_self : bool or None. Zero ``C[i, i]``; None: True iff X is the dictionary (X None, or X and the
            dictionary hold the same points).
        n_nonzero : int or None (default: the model's ``n_nonzero``, as its fit resolved it: ``settings_``).
        """
        check_is_fitted(self, "module_")
        Xn = self.dictionary_ if X is None else self._prepare(X)
        D = self.dictionary_ if dictionary is None else self._prepare(dictionary, "dictionary")
        if exclude_self is None:
            exclude_self = X is None and dictionary is None or (
                Xn.shape == D.shape and (Xn is D or np.array_equal(Xn, D)))
        if exclude_self and Xn.shape[0] != D.shape[0]:
            raise ValueError("exclude_self=True needs X and the dictionary to be the same points")
        return self._coefficients(Xn, D, bool(exclude_self), n_nonzero=n_nonzero)

    @torch.no_grad()
    def objective(self, X=None, dictionary=None, _normalized=False):
        """Exact (untruncated) loss terms of eq. (10), (14), (15) over all rows of ``X`` on ``dictionary``.

        Returns ``{"L": gamma/2 * L_rec + L_reg, "L_rec": sum_i ||x_i - sum_{j != i} c_ij d_j||^2,
        "L_reg": sum_ij r(c_ij)}``, computed blockwise (the diagonal is excluded when X is the dictionary).
        """
        check_is_fitted(self, "module_")
        if _normalized:
            Xn, D = X, dictionary
        else:
            Xn = self.dictionary_ if X is None else self._prepare(X)
            D = self.dictionary_ if dictionary is None else self._prepare(dictionary, "dictionary")
        same = Xn is D or (Xn.shape == D.shape and np.array_equal(Xn, D))
        module = self.module_
        keys = self._embed(module.key, D)
        Dt = self._tensor(D)
        bs = int(self.block_size)
        rec_total, reg_total = 0.0, 0.0
        for r0 in range(0, Xn.shape[0], bs):
            xb = self._tensor(Xn[r0:r0 + bs])
            q = module.query(xb)
            rows = torch.arange(r0, r0 + xb.shape[0], device=xb.device) if same else None
            rec = torch.zeros_like(xb)
            for c0 in range(0, D.shape[0], bs):
                c = _mask_self(module.coef(q, keys[c0:c0 + bs]), rows, c0)
                rec += c @ Dt[c0:c0 + bs]
                reg_total += float(elastic_net_penalty(c.double(), float(self.lmbd)))
            rec_total += float(((xb - rec).double() ** 2).sum())
        return {"L": 0.5 * float(self.gamma) * rec_total + reg_total, "L_rec": rec_total, "L_reg": reg_total}

    def predict(self, X, rule="mass"):
        """Cluster labels for (possibly unseen) points, in the label space of ``labels_``.

        ``rule="mass"`` (default): coefficients of each new point on the training dictionary (top
        ``n_nonzero``); the point gets the cluster whose atoms carry most of its |coefficient| mass,
        ``argmax_k sum_{j: label_j = k} |c_ij|``. A point whose coefficients are all thresholded to zero
        falls back to the same rule on the un-thresholded scores (``b = 0``).
        ``rule="knn"``: majority vote of the ``n_neighbors`` training points nearest to it in cosine
        similarity of query embeddings.
        ``rule="spectral"``: spectral clustering of the new points' own self-expressive graph (C of X on X);
        labels are then only defined up to a permutation and need >= n_clusters points: for batch use only.

        Why "mass": it is inductive (one point at a time, labels consistent with ``labels_``), costs one pass
        over the dictionary, reads the same subspace-preserving structure the training graph was built from,
        and it was the most accurate rule (or within 0.4 points of it) in every setting measured. Test ACC (%) of
        the three rules on held-out points (same trained model per row):

        ======================================================  =====  ========  =====
        setting (benchmark)                                      mass  spectral   knn
        ======================================================  =====  ========  =====
        R^15, 5 x 100 test points, width 1024, 500 it. (fig2)    99.2      99.6   97.6
        R^9, N_i = 20, mean of 5 draws (table1)                  39.8      39.0   37.8
        R^9, N_i = 100 (table1)                                  81.6      54.0   74.4
        R^9, N_i = 200 (table1)                                  89.6      54.9   84.2
        R^9, N_i = 1000 (table1)                                 96.2      94.6   93.9
        R^9, N_i = 2000 (table1)                                 95.4      94.6   94.5
        ======================================================  =====  ========  =====

        "spectral" (the paper's "SENet test") self-expresses the test set on itself, which the network never
        learned to do (its test L_rec is 10-100x the training one), and it collapses on small test sets;
        k-NN on query embeddings ignores the coefficient magnitudes. Current figures:
        ``benchmarks/results/senet_fig2/default.json`` and ``benchmarks/results/senet_table1/default.json``.
        """
        check_is_fitted(self, "dictionary_labels_")
        if rule not in ("mass", "knn", "spectral"):
            raise ValueError(f"rule must be 'mass', 'knn' or 'spectral', got {rule!r}")
        Xn = self._prepare(X)
        if rule == "spectral":
            from ..cluster import spectral_clustering
            from ..graph import affinity_from_coef

            if Xn.shape[0] < max(self.n_clusters, 2):
                raise ValueError(f"rule='spectral' needs at least n_clusters={self.n_clusters} points")
            C = self._coefficients(Xn, Xn, exclude_self=True)
            nn_ = min(self.n_neighbors, Xn.shape[0] - 1)
            A = affinity_from_coef(C, method=self._setting("affinity"), n_neighbors=nn_)
            return spectral_clustering(A, self.n_clusters, n_components=self.n_components, n_init=self.n_init,
                                       random_state=fit_seed(self))
        labels = self.dictionary_labels_
        K = int(labels.max()) + 1
        if rule == "knn":
            qd = torch.nn.functional.normalize(self._embed(self.module_.query, self.dictionary_), dim=1)
            qx = torch.nn.functional.normalize(self._embed(self.module_.query, Xn), dim=1)
            k = min(int(self.n_neighbors), qd.shape[0])
            lab_t = torch.as_tensor(labels, device=qd.device)
            out = []
            for r0 in range(0, qx.shape[0], 1000):
                nbr = torch.topk(qx[r0:r0 + 1000] @ qd.T, k, dim=1).indices
                votes = torch.nn.functional.one_hot(lab_t[nbr], K).sum(1).double()
                votes += torch.nn.functional.one_hot(lab_t[nbr[:, 0]], K) * 0.5  # ties -> nearest
                out.append(votes.argmax(1).cpu().numpy())
            return np.concatenate(out).astype(np.int64)
        onehot = sp.csr_matrix((np.ones(labels.size), (np.arange(labels.size), labels)), shape=(labels.size, K))
        C = self._coefficients(Xn, self.dictionary_, exclude_self=False)
        mass = np.asarray((abs(C) @ onehot).todense())
        empty = mass.sum(axis=1) == 0
        if empty.any():
            C0 = self._coefficients(Xn[empty], self.dictionary_, exclude_self=False, threshold=0.0)
            mass[empty] = np.asarray((abs(C0) @ onehot).todense())
        return mass.argmax(axis=1).astype(np.int64)

    # ------------------------------------------------------------------ model files
    def save(self, path):
        """Save weights, training dictionary and labels (safetensors) + configuration (JSON); no pickle."""
        check_is_fitted(self, "dictionary_labels_")
        tensors = {f"net.{k}": v for k, v in self.module_.state_dict().items()}
        tensors["dictionary"] = torch.tensor(self.dictionary_)
        tensors["dictionary_labels"] = torch.tensor(self.dictionary_labels_, dtype=torch.int64)
        tensors["labels"] = torch.tensor(np.asarray(self.labels_), dtype=torch.int64)
        params = self._used_params()  # the values the fit used, not "auto": the same network on any device
        params["checkpoint_dir"] = None if params["checkpoint_dir"] is None else str(params["checkpoint_dir"])
        params["device"] = str(params["device"])  # a torch.device too; load() does not reuse it
        config = {"params": params, "recipe": getattr(self, "recipe_", None), "n_features_in": int(self.n_features_in_),
                  "n_iter_done": int(self.n_iter_), "history": getattr(self, "history_", None),
                  "timings": getattr(self, "timings_", {})}
        pack_feature_transform(self, tensors, config)
        return save_model(path, tensors, config)

    @classmethod
    def load(cls, path, device=None):
        """Load a model written by :meth:`save`.

        Only safetensors + JSON are read (nothing is unpickled), and every part is checked before it is
        used: the file's kind and format version, the parameters (the same validation as ``fit``), the
        network's tensor names, shapes and dtypes against those the parameters imply (computed without
        allocating the network, so a tampered JSON cannot make it allocate a huge one), and the dictionary
        and labels (shapes, finite values, labels in ``[0, n_clusters)``). ``ValueError`` naming the file
        and the problem otherwise.
        """
        from ..io import load_model_file

        tensors, config = load_model_file(path, kind=MODEL_KIND)
        invalid = f"{path} is not a valid SENet model file"
        feature_transform = unpack_feature_transform(tensors, config, source=str(path))
        with invalid_config(invalid):
            config = _with_resolved_params(config)
            model, _ = estimator_from_config(cls, config, device)
            model.settings_, _ = model._resolve_settings()  # every one explicit: the values the fit used
            model.recipe_ = config.get("recipe")
            n_features = config_n_features(config)
            with torch.device("meta"):  # shapes only, no memory
                net = SENetModule(n_features, model._hidden_sizes(), int(model._setting("embed_dim")))
            expected = {f"net.{k}": v for k, v in net.state_dict().items()}
        check_network_tensors(tensors, expected, invalid, allowed_extra=("dictionary", "dictionary_labels", "labels"))
        D, dl, lab = (tensors.get(k) for k in ("dictionary", "dictionary_labels", "labels"))
        if D is None or dl is None or lab is None:
            raise ValueError(f"{invalid}: the dictionary or the labels are missing")
        if D.dtype != torch.float32 or D.ndim != 2 or D.shape[1] != n_features or D.shape[0] < 1:
            raise ValueError(f"{invalid}: dictionary is {D.dtype} {list(D.shape)}, expected float32 "
                             f"(n_atoms, {n_features})")
        if not bool(torch.isfinite(D).all()):
            raise ValueError(f"{invalid}: dictionary contains NaN or infinity")
        for name, t, n in (("dictionary_labels", dl, D.shape[0]), ("labels", lab, None)):
            if t.dtype != torch.int64 or t.ndim != 1 or (n is not None and t.shape[0] != n):
                raise ValueError(f"{invalid}: {name} is {t.dtype} {list(t.shape)}, expected int64 "
                                 f"({'n_atoms' if n is not None else 'n_samples'},)")
            if t.numel() and (int(t.min()) < 0 or int(t.max()) >= model.n_clusters):
                raise ValueError(f"{invalid}: {name} are not in [0, n_clusters={model.n_clusters})")
        model.n_features_in_ = n_features
        model.module_ = load_network(model._build(n_features), tensors)
        model.dictionary_ = D.numpy().astype(np.float32)
        model.dictionary_labels_ = dl.numpy().astype(np.int64)
        model.labels_ = lab.numpy().astype(np.int64)
        model.n_iter_ = int(config.get("n_iter_done", 0) or 0)
        model.history_ = config.get("history")
        model.timings_ = config.get("timings", {})
        if feature_transform is not None:
            model.feature_transform_ = feature_transform
        return model


def _with_resolved_params(config):
    """A model file's ``config`` whose parameters hold a value for each of :data:`AUTO_PARAMS`: a file written before
    a parameter existed gets the value those versions used (:data:`_LEGACY_DEFAULTS`). Files store the values their
    fit resolved, so ``"auto"`` in one is refused (``ValueError``): the network's shapes would depend on the device
    that loads it."""
    params = dict(config["params"])
    for name in AUTO_PARAMS:
        if name not in params:
            params[name] = _LEGACY_DEFAULTS[name]
        elif _is_auto(params[name]):
            raise ValueError(f"{name} is 'auto'; a SENet model file holds the values its fit used")
    return {**config, "params": params}


def save_model(path, tensors, config):
    from ..io import save_model_file

    return save_model_file(path, tensors, config, kind=MODEL_KIND)
