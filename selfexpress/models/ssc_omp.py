"""Sparse subspace clustering by orthogonal matching pursuit (SSC-OMP; You, Robinson & Vidal, CVPR 2016).

For every point ``y = x_i`` (row convention: row i of C codes x_i, C[i, i] = 0), greedy OMP over the dictionary of
all other points: start with r = y and an empty support S; repeat: add ``argmax_{j != i, j not in S} |<x_j, r>|``
to S, set c_S = the least-squares coefficients of y on {x_j : j in S} and r = y - sum_{j in S} c_j x_j; stop when
``||r||^2 <= thr * ||y||^2`` or |S| = ``n_nonzero``.

Stopping convention: the reference code (ChongYou/subspace-clustering) compares the *squared* residual norm with
``thr * ||y||`` (unsquared); we compare it with ``thr * ||y||^2``, which is scale invariant. For unit-norm points
(``normalize=True``, the default and what the papers do) the two are identical.

Vectorised over blocks of points: one (block, N) coherence matmul per greedy step (float32, never more than a block
of rows at once), then a batched least-squares solve in float64 on the (block, |S|, D) selected atoms.
"""

from __future__ import annotations

import time

import numpy as np
import scipy.sparse as sp
import torch

from .._device import device_property, resolve_device
from .._memory import check_allocation
from .._validation import check_positive
from .base import SelfExpressiveClustering, store_params

__all__ = ["SSCOMP", "omp_coef"]


def omp_coef(X, n_nonzero=10, thr=1e-6, block_size=1024, device="cpu", verbose=False, return_info=False):
    """SSC-OMP coefficients of ``X`` (rows are points, used as given) as an (n, n) CSR matrix.

    With ``return_info`` also returns ``{"n_steps": mean support size, "seconds": ...}``.
    """
    t_start = time.perf_counter()
    dev = resolve_device(device)
    X32 = torch.as_tensor(np.ascontiguousarray(X, dtype=np.float32), device=dev)
    N, D = X32.shape
    k_max = int(min(n_nonzero, N - 1))
    B = min(int(block_size), N)
    check_allocation(
        4 * B * N + 16 * B * k_max * D + 32 * B * D + 24 * N * k_max,
        f"SSC-OMP on {N} points (float32 coherence tiles of block_size x n_samples = {B} x {N}, float64 "
        f"least-squares of block_size x n_nonzero x n_features = {B} x {k_max} x {D})",
        f"lower block_size (now {block_size}) or n_nonzero (now {n_nonzero})", device=dev)
    rows_all, cols_all, vals_all = [], [], []
    n_blocks = (N + block_size - 1) // block_size
    iterator = range(0, N, block_size)
    if verbose:
        from tqdm import tqdm

        iterator = tqdm(iterator, total=n_blocks, desc="SSC-OMP", mininterval=2.0)
    for s0 in iterator:
        s1 = min(N, s0 + block_size)
        B = s1 - s0
        rows = torch.arange(s0, s1, device=dev)
        Y = X32[s0:s1].double()
        ynorm2 = (Y * Y).sum(1)
        supp = torch.full((B, k_max), -1, dtype=torch.int64, device=dev)
        coef = torch.zeros(B, k_max, dtype=torch.float64, device=dev)
        size = torch.zeros(B, dtype=torch.int64, device=dev)
        R = Y.clone()
        live = torch.arange(B, device=dev)
        for t in range(k_max):
            if live.numel() == 0:
                break
            V = (R[live].float() @ X32.T).abs_()
            V[torch.arange(live.numel(), device=dev), rows[live]] = -1.0  # self excluded
            if t:
                V.scatter_(1, supp[live, :t], -1.0)  # already selected
            supp[live, t] = V.argmax(1)
            del V
            XS = X32[supp[live, :t + 1]].double()  # (n, t+1, D)
            # driver "gels" (QR): the CPU default "gelsy" differs in the last bit between identical calls, which broke
            # same-seed determinism; OMP's atoms are independent (each new one correlates with a residual orthogonal
            # to the span of the others), so the full-rank QR solve is enough
            sol = torch.linalg.lstsq(XS.transpose(1, 2), Y[live].unsqueeze(2),
                                     driver="gels").solution.squeeze(2)  # (n, t+1)
            R[live] = Y[live] - torch.bmm(sol.unsqueeze(1), XS).squeeze(1)
            coef[live, :t + 1] = sol
            size[live] = t + 1
            res2 = (R[live] * R[live]).sum(1)
            live = live[res2 > thr * ynorm2[live]]
        valid = torch.arange(k_max, device=dev).unsqueeze(0) < size.unsqueeze(1)
        valid &= coef != 0
        r_idx = rows.unsqueeze(1).expand(B, k_max)[valid]
        rows_all.append(r_idx.cpu().numpy())
        cols_all.append(supp[valid].cpu().numpy())
        vals_all.append(coef[valid].cpu().numpy())
    C = sp.csr_matrix((np.concatenate(vals_all), (np.concatenate(rows_all), np.concatenate(cols_all))), shape=(N, N))
    if return_info:
        return C, {"n_steps": float(np.diff(C.indptr).mean()), "seconds": time.perf_counter() - t_start}
    return C


class SSCOMP(SelfExpressiveClustering):
    """Sparse subspace clustering by orthogonal matching pursuit.

    Parameters
    ----------
    n_clusters : int, default 8
    n_nonzero : int, the most atoms per point (reference default 10; subspace dimension for synthetic data; 5 for
        MNIST scattering features).
    thr : float, stop a point when ``||r||^2 <= thr * ||x||^2`` (reference default 1e-6; MNIST 1e-5).
    affinity, n_neighbors, n_components, n_init, normalize, random_state : see :class:`SelfExpressiveClustering`.
    block_size : int, points per coherence matmul (memory ~ 4 * block_size * N bytes).
    verbose : bool, progress bar over blocks.
    device : str or torch.device, default "auto" (CUDA when available, else the CPU; see selfexpress._device).

    Fitted attributes: ``coef_``, ``affinity_``, ``labels_``, ``timings_``.
    """

    # registry (selfexpress.models.registry)
    _method_name = "ssc-omp"
    _input_kind = "features"
    _model_kind = None
    _presets = {
        "synthetic": dict(n_nonzero=6),
        "image": dict(n_nonzero=5, thr=1e-5, n_components=15, affinity="symmetric"),
    }

    def __init__(self, n_clusters=8, *, n_nonzero=10, thr=1e-6, affinity="symmetric", n_neighbors=3, n_components=None,
                 n_init=20, normalize=True, random_state=None, block_size=1024, verbose=False, device="auto"):
        store_params(self, locals())

    _device = device_property()  # ``device`` resolved: the torch.device of every tensor (selfexpress._device)

    def _check_params(self):
        check_positive(self.n_nonzero, "n_nonzero", integer=True)
        check_positive(self.thr, "thr", allow_zero=True)
        check_positive(self.block_size, "block_size", integer=True)
        resolve_device(self.device)  # ValueError: malformed, unsupported, or CUDA asked for without CUDA

    def _fit_coef(self, X):
        return omp_coef(X, n_nonzero=self.n_nonzero, thr=self.thr, block_size=self.block_size, device=self._device,
                        verbose=self.verbose)
