"""The one training loop shared by every torch model of the library (SENet, NCSC, SSCN, energy models).

A model supplies

* ``module``: a ``torch.nn.Module`` holding every trainable parameter (its ``state_dict`` is what a
  checkpoint saves), and
* ``loss_fn(batch_idx) -> loss`` or ``-> (loss, logs)``: the loss of one mini-batch, where ``batch_idx`` is a
  1-D ``torch.long`` tensor of sample indices in ``range(n_samples)`` and ``logs`` a dict of floats to
  record in the history (e.g. the two parts of the loss).

  If ``loss`` is a tensor attached to the autograd graph, the trainer calls ``loss.backward()``.
  Otherwise (a float or a detached tensor) the loss function must already have accumulated the gradients
  in ``param.grad`` itself; that is how memory-bounded algorithms such as SENet's two-pass Alg. 2, which
  back-propagate block by block, plug into the same loop.

The trainer does everything else: seeded epoch-wise shuffling into mini-batches (``n_samples // batch_size``
iterations per epoch, the last ragged batch of an epoch dropped, a fresh permutation every epoch), Adam,
cosine annealing of the learning rate stepped once per epoch down to ``lr_min`` (or a model's own
optimiser, e.g. SSCN's Cayley-Adam on the Stiefel manifold, and several steps per mini-batch), global gradient-norm
clipping, a tqdm progress bar showing the running loss (``verbose``), callbacks (learning curves,
evaluation), a history of logged values, and checkpoints every ``checkpoint_every`` iterations to
``checkpoint_dir`` (safetensors + JSON, written atomically; model weights, optimiser, scheduler and RNG
state, batch order and history), from which ``resume=True`` continues bit-for-bit where it stopped.

Checkpoint layout in ``checkpoint_dir``: ``ckpt-<iteration>.safetensors`` / ``.json`` pairs written
through :func:`selfexpress.io.save_model_file`, then ``latest.json`` (a pointer, written atomically last),
so a crash while writing leaves the previous checkpoint usable. Only the newest ``keep_checkpoints`` pairs
are kept.

Data-parallel training (``distributed=True`` or ``"auto"`` with an initialised ``torch.distributed`` process
group of W processes, see :mod:`selfexpress.distributed`): every rank draws the same global permutation from
the shared seed and takes its contiguous slice of each global mini-batch (``batch.tensor_split(W)[rank]``), so
the union of the ranks' slices is the single-process batch. After the local backward, gradients are scaled by
``m_r / M`` (rank r's share of the M rows) and summed over ranks with one ``all_reduce``: for a loss that is a
mean over the batch rows (SENet's, and the contract here) that is exactly the single-process gradient of the
full batch, also when M is not divisible by W. The loss and the logs are reduced the same way (so logs must be
batch means, or values equal on every rank), clipping and the optimiser step then run on identical gradients,
so every rank keeps identical parameters (broadcast from rank 0 at the start). Only rank 0 writes checkpoints
and shows the progress bar; on resume rank 0 reads the checkpoint and broadcasts it. A checkpoint holds the
global state only, so a run may resume with another number of processes. Callbacks run on every rank
(``trainer.rank`` tells them which). Results match a single process up to the order of float reductions.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from collections import deque
from pathlib import Path

import numpy as np
import torch

from . import distributed as _dist_helpers
from ._device import autocast_dtype, autocast_mode
from ._validation import check_positive, check_random_state_int
from .io import atomic_write_json, load_model_file, save_model_file

__all__ = ["Trainer", "train", "seeded", "CHECKPOINT_KIND"]

CHECKPOINT_KIND = "train-checkpoint"


@contextlib.contextmanager
def seeded(seed):
    """Run a block with torch's global CPU RNG seeded by ``seed``, restoring the caller's RNG state after.

    Used to initialise modules reproducibly without disturbing the user's global random stream.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        yield


def _jsonable(obj):
    """Convert a (nested) scheduler / optimiser state to JSON-safe Python values."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, torch.Tensor):
        return obj.item() if obj.numel() == 1 else obj.tolist()
    if isinstance(obj, (np.integer, np.floating)):
        return obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return repr(obj)
    return obj


class Trainer:
    """Mini-batch training of ``module`` on ``loss_fn`` (see the module docstring for the contract).

    Parameters
    ----------
    module : torch.nn.Module
    loss_fn : callable ``(batch_idx: LongTensor) -> loss | (loss, logs)``
    n_samples : int, number of training samples the batches index into.
    n_iter : int, total number of iterations (optimiser steps).
    batch_size : int, capped at ``n_samples``.
    lr : float, Adam learning rate of every parameter not named in ``param_lrs``.
    param_lrs : dict ``{parameter name: lr}`` or None. Parameters (as named by ``module.named_parameters()``)
        given here get their own Adam parameter group with that learning rate.
    lr_min : float, final learning rate of the cosine schedule (``eta_min``), the same for all groups.
    schedule : {"cosine", "constant"}. Cosine annealing is stepped once per epoch with
        ``T_max = max(1, n_iter // iters_per_epoch)`` epochs (as the SENet reference code does).
    grad_clip : float or None, maximum global gradient norm (``clip_grad_norm_``); None disables clipping.
    random_state : int or None, seeds the batch order (the module is initialised by the caller).
    verbose : bool, show a tqdm progress bar with the running loss (mean over the last 50 iterations).
    callbacks : iterable of callables ``cb(trainer, iteration, logs) -> dict | None``; called after every
        optimiser step (``iteration`` counts from 1). A callable may carry an ``every`` attribute (int) to be
        called only when ``iteration % every == 0`` or at the last iteration. A returned dict of floats is
        appended to ``history["eval"]`` together with the iteration.
    log_every : int, record the step logs in ``history["train"]`` every ``log_every`` iterations.
    checkpoint_dir : path or None; checkpoint_every : int or None (default: only at the end when a
        directory is given); resume : bool, continue from the newest checkpoint in ``checkpoint_dir`` if any.
    fingerprint : JSON-serialisable dict identifying the run (model configuration, data hash); resuming
        from a checkpoint with a different fingerprint raises ``ValueError``.
    keep_checkpoints : int, number of newest checkpoints kept on disk.
    desc : str, progress-bar label.
    optimizer : callable or None. ``optimizer(param_groups) -> torch.optim.Optimizer`` builds the optimiser
        from the parameter groups (dicts with ``params`` and ``lr``); None: ``torch.optim.Adam``. Its
        ``state_dict`` goes into checkpoints like Adam's.
    steps_per_batch : int, default 1. Optimiser steps taken on each mini-batch before the next one (SSCN's
        classifier: 10); an epoch is then ``iters_per_epoch * steps_per_batch`` iterations, and ``n_iter``
        counts steps.
    distributed : bool or "auto", default False
        Data-parallel training over the default ``torch.distributed`` process group (see the module
        docstring). "auto": on iff a group of more than one process is initialised; True: requires an
        initialised group (``ValueError`` otherwise). Needs ``batch_size >= world_size``, the same data,
        ``fingerprint`` and configuration on every rank (checked at the start), and a ``loss_fn`` whose loss
        and logs are means over the batch rows.
    autocast : {"off", "bf16", "env"}, default "off"
        Mixed precision: "bf16" calls ``loss_fn`` under ``torch.autocast(dtype=torch.bfloat16)`` on the module's
        device (CPU or CUDA; the backward pass runs outside it, as torch recommends; no gradient scaler is needed
        for bf16); "env" takes the mode from ``SELFEXPRESS_AUTOCAST`` (:func:`selfexpress._device.autocast_mode`;
        an invalid value is a ``ValueError`` naming the allowed ones). The default keeps full precision, so a model
        opts in where its loss is safe in bf16 (the deep models' networks, with their self-expression kept in
        float32 by :func:`selfexpress._device.float32_region`). SENet does not opt in: its soft-thresholded
        query-key products decide which coefficients are exactly zero, and bf16's 8-bit mantissa would move
        entries across the threshold. ``autocast_dtype`` is the dtype in use (None: full precision; also on the
        meta device and on a GPU without bf16).

    After :meth:`run`, ``history`` holds ``{"train": {"iter": [...], "loss": [...], "lr": [...], <logs>},
    "eval": {"iter": [...], <callback values>}}`` and ``iteration`` the number of steps done.
    ``rank`` and ``world_size`` are 0 and 1 unless training data-parallel; ``is_main`` is ``rank == 0``.
    """

    def __init__(self, module, loss_fn, n_samples, *, n_iter, batch_size, lr=1e-3, param_lrs=None, lr_min=0.0,
                 schedule="cosine", grad_clip=None, random_state=None, verbose=False, callbacks=(), log_every=1,
                 checkpoint_dir=None, checkpoint_every=None, resume=False, fingerprint=None, keep_checkpoints=2,
                 desc="train", optimizer=None, steps_per_batch=1, distributed=False, autocast="off"):
        if not isinstance(module, torch.nn.Module):
            raise TypeError(f"module must be a torch.nn.Module, got {type(module).__name__}")
        if not callable(loss_fn):
            raise TypeError("loss_fn must be callable")
        self.module = module
        self.loss_fn = loss_fn
        self.n_samples = check_positive(n_samples, "n_samples", integer=True)
        self.n_iter = check_positive(n_iter, "n_iter", integer=True)
        self.batch_size = min(check_positive(batch_size, "batch_size", integer=True), self.n_samples)
        self.lr = check_positive(lr, "lr")
        self.lr_min = check_positive(lr_min, "lr_min", allow_zero=True)
        if schedule not in ("cosine", "constant"):
            raise ValueError(f"schedule must be 'cosine' or 'constant', got {schedule!r}")
        self.schedule = schedule
        self.grad_clip = None if grad_clip is None else check_positive(grad_clip, "grad_clip")
        self.seed = check_random_state_int(random_state)
        self.verbose = bool(verbose)
        self.callbacks = list(callbacks or ())
        self.log_every = check_positive(log_every, "log_every", integer=True)
        self.checkpoint_dir = None if checkpoint_dir is None else Path(checkpoint_dir)
        if checkpoint_every is not None:
            checkpoint_every = check_positive(checkpoint_every, "checkpoint_every", integer=True)
        self.checkpoint_every = checkpoint_every
        self.resume = bool(resume)
        self.fingerprint = _jsonable(fingerprint or {})
        self.keep_checkpoints = check_positive(keep_checkpoints, "keep_checkpoints", integer=True)
        self.desc = desc

        self.steps_per_batch = check_positive(steps_per_batch, "steps_per_batch", integer=True)
        self.iters_per_epoch = max(1, self.n_samples // self.batch_size)
        self._steps_per_epoch = self.iters_per_epoch * self.steps_per_batch
        self.n_epochs = max(1, self.n_iter // self._steps_per_epoch)

        named = dict(module.named_parameters())
        param_lrs = dict(param_lrs or {})
        unknown = set(param_lrs) - set(named)
        if unknown:
            raise ValueError(f"param_lrs names unknown parameters {sorted(unknown)}; known: {sorted(named)}")
        groups = [{"params": [p for n, p in named.items() if n not in param_lrs and p.requires_grad], "lr": self.lr}]
        for n, plr in param_lrs.items():
            groups.append({"params": [named[n]], "lr": check_positive(plr, f"param_lrs[{n!r}]")})
        groups = [g for g in groups if g["params"]]
        self.params = [p for g in groups for p in g["params"]]
        if optimizer is None:
            self.optimizer = torch.optim.Adam(groups)
        elif callable(optimizer):
            self.optimizer = optimizer(groups)
            if not isinstance(self.optimizer, torch.optim.Optimizer):
                raise TypeError(f"optimizer(param_groups) must return a torch.optim.Optimizer, got "
                                f"{type(self.optimizer).__name__}")
        else:
            raise TypeError(f"optimizer must be None or a callable building an optimiser, got {optimizer!r}")
        if self.schedule == "cosine":
            self.scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
                self.optimizer, T_max=self.n_epochs, eta_min=self.lr_min)
        else:
            self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda _e: 1.0)

        self.distributed = _dist_helpers.resolve(distributed)
        self.rank = _dist_helpers.get_rank() if self.distributed else 0
        self.world_size = _dist_helpers.get_world_size() if self.distributed else 1
        self.is_main = self.rank == 0
        if self.batch_size < self.world_size:
            raise ValueError(f"batch_size={self.batch_size} is smaller than the number of processes "
                             f"({self.world_size}): every rank needs at least one row of each batch")

        if isinstance(autocast, str) and autocast.strip().lower() == "env":
            autocast = None  # autocast_mode(None): from SELFEXPRESS_AUTOCAST
        first = next(iter(module.parameters()), None)
        self._device_type = "cpu" if first is None else first.device.type
        self.autocast_dtype = autocast_dtype(self._device_type, autocast_mode(autocast))
        self.autocast = "off" if self.autocast_dtype is None else "bf16"

        self.generator = torch.Generator().manual_seed(self.seed)
        self.iteration = 0
        self._perm = None
        self.history = {"train": {"iter": [], "loss": [], "lr": []}, "eval": {"iter": []}}
        self.train_time = 0.0
        self._torch_rng = None

    # ------------------------------------------------------------------ batches
    def _batch(self):
        step = self.iteration % self._steps_per_epoch
        pos = step // self.steps_per_batch
        if step == 0 or self._perm is None:
            self._perm = torch.randperm(self.n_samples, generator=self.generator)
        return self._perm[pos * self.batch_size:(pos + 1) * self.batch_size]

    def _shard(self, idx):
        """This rank's slice of the global batch ``idx`` and its weight ``m_r / M`` (1 when not distributed)."""
        if not self.distributed:
            return idx, 1.0
        local = idx.tensor_split(self.world_size)[self.rank]
        return local, local.shape[0] / idx.shape[0]

    # ------------------------------------------------------------------ data parallel
    # A manual all_reduce of the gradients after the local backward, not torch's DistributedDataParallel:
    # the Trainer's contract lets loss_fn call sub-modules directly (SENet runs the key net over the whole
    # dictionary block by block) and back-propagate several times per step (SENet's Alg. 2 accumulates
    # ``.grad`` block by block), while DDP needs one forward through its wrapper and one backward per step.
    # One coalesced all_reduce per step after backward also weights uneven shards exactly (DDP averages with
    # equal weights); what it gives up, overlapping communication with backward, is small for these models
    # (a few MB of weights against a backward over the dictionary).
    def _sync_start(self):
        """Check that every rank runs the same configuration, then broadcast rank 0's weights."""
        import torch.distributed as dist

        mine = json.dumps({"seed": self.seed, "n_samples": self.n_samples, "n_iter": self.n_iter,
                           "batch_size": self.batch_size, "fingerprint": self.fingerprint,
                           "params": [[n, list(p.shape)] for n, p in self.module.named_parameters()]},
                          sort_keys=True, default=str)
        every = [None] * self.world_size
        dist.all_gather_object(every, mine)
        differ = [r for r, v in enumerate(every) if v != every[0]]
        if differ:
            raise ValueError(f"ranks {differ} run a different configuration or data than rank 0 (seed, "
                             "n_samples, n_iter, batch_size, fingerprint or parameter shapes differ); every "
                             "rank must train the same model on the same data")

    def _broadcast_module(self):
        import torch.distributed as dist

        with torch.no_grad():
            for t in self.module.state_dict().values():
                dist.broadcast(t, src=0)

    def _all_reduce(self, weight, loss_value, logs):
        """Sum ``weight * grad`` over ranks into every ``.grad``; return the global loss and logs."""
        import torch.distributed as dist

        params = self.params
        flat = []
        for p in params:
            g = p.grad
            flat.append((torch.zeros_like(p) if g is None else g * weight).reshape(-1))
        has_grad = torch.tensor([0.0 if p.grad is None else 1.0 for p in params], dtype=flat[0].dtype)
        buf = torch.cat([*flat, has_grad])
        dist.all_reduce(buf)
        keys = sorted(logs)
        scal = torch.tensor([loss_value, *(float(logs[k]) for k in keys)], dtype=torch.float64) * weight
        dist.all_reduce(scal)
        off = 0
        for p, used in zip(params, buf[-len(params):].tolist()):
            n = p.numel()
            if used > 0:  # some rank produced a gradient for p (None only when no rank did, as in one process)
                p.grad = buf[off:off + n].reshape(p.shape).to(p.dtype, copy=True)
            off += n
        vals = scal.tolist()
        return vals[0], dict(zip(keys, vals[1:]))

    # ------------------------------------------------------------------ loop
    def run(self):
        """Train until ``n_iter`` iterations are done (from a checkpoint when resuming); returns ``history``.

        The loop runs on a forked copy of torch's global CPU RNG, seeded from ``random_state`` (or restored
        from the checkpoint), so random layers (dropout, noise) are reproducible and the caller's global
        random stream is left untouched.
        """
        if self.distributed:
            self._sync_start()
        if self.resume and self.checkpoint_dir is not None:
            self.load_checkpoint()
        if self.distributed:
            self._broadcast_module()
        with torch.random.fork_rng(devices=[]):
            if self._torch_rng is not None:
                torch.set_rng_state(self._torch_rng)
            else:
                torch.manual_seed(self.seed + 1)
            return self._run()

    def _run(self):
        try:
            from tqdm.auto import tqdm
        except ImportError:  # pragma: no cover - tqdm is a dependency
            tqdm = None
        bar = None
        if self.verbose and self.is_main and tqdm is not None and self.iteration < self.n_iter:
            # the ETA is ours (see _eta), not tqdm's: tqdm's rate lags behind when the first steps are slower than the
            # rest (SENet: dense coefficients while the threshold is near zero), and it once said 1 h 26 min for 5.5 min
            bar = tqdm(total=self.n_iter, initial=self.iteration, desc=self.desc, dynamic_ncols=True, leave=True,
                       bar_format="{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} [{elapsed}{postfix}]")
        window = deque(maxlen=50)
        step_ends = deque(maxlen=51)  # wall clock at the end of the last 50 steps: the ETA's moving window
        step_ends.append(time.perf_counter())
        self.module.train()
        t0 = time.perf_counter()
        try:
            while self.iteration < self.n_iter:
                idx, weight = self._shard(self._batch())
                self.optimizer.zero_grad(set_to_none=True)
                if self.autocast_dtype is None:
                    out = self.loss_fn(idx)
                else:  # the forward pass and the loss under autocast; backward outside it (torch's advice)
                    with torch.autocast(device_type=self._device_type, dtype=self.autocast_dtype):
                        out = self.loss_fn(idx)
                loss, logs = (out if isinstance(out, tuple) else (out, {}))
                if isinstance(loss, torch.Tensor) and loss.requires_grad:
                    loss.backward()
                loss_value = float(loss.detach()) if isinstance(loss, torch.Tensor) else float(loss)
                if self.distributed:  # before the finiteness check, so that every rank raises together
                    loss_value, logs = self._all_reduce(weight, loss_value, logs)
                if not math.isfinite(loss_value):
                    raise FloatingPointError(
                        f"loss is {loss_value} at iteration {self.iteration + 1}; lower the learning rate or check the data")
                if self.grad_clip is not None:
                    torch.nn.utils.clip_grad_norm_(self.params, self.grad_clip)
                lr_now = self.optimizer.param_groups[0]["lr"]
                self.optimizer.step()
                self.iteration += 1
                if self.iteration % self._steps_per_epoch == 0:
                    self.scheduler.step()
                window.append(loss_value)

                if self.iteration % self.log_every == 0 or self.iteration == self.n_iter:
                    self._append("train", {"loss": loss_value, "lr": lr_now,
                                           **{k: float(v) for k, v in logs.items()}})
                for cb in self.callbacks:
                    every = getattr(cb, "every", 1) or 1
                    if self.iteration % every == 0 or self.iteration == self.n_iter:
                        res = cb(self, self.iteration, logs)
                        if res:
                            self._append("eval", {k: float(v) for k, v in res.items()})
                step_ends.append(time.perf_counter())
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix_str(f"eta {_eta(step_ends, self.n_iter - self.iteration)}, "
                                        f"loss={sum(window) / len(window):.4g}", refresh=False)
                if self.checkpoint_dir is not None and (
                        self.iteration == self.n_iter
                        or (self.checkpoint_every is not None and self.iteration % self.checkpoint_every == 0)):
                    self.train_time += time.perf_counter() - t0
                    t0 = time.perf_counter()
                    self.save_checkpoint()
        finally:
            self.train_time += time.perf_counter() - t0
            if bar is not None:
                bar.close()
            self.module.eval()
        return self.history

    def _append(self, part, values):
        h = self.history[part]
        n = len(h["iter"])
        h["iter"].append(self.iteration)
        for k, v in values.items():
            col = h.setdefault(k, [])
            col.extend([float("nan")] * (n - len(col)))  # a key that appears later
            col.append(v)
        for k, col in h.items():  # a key that is missing this time
            if len(col) < n + 1:
                col.append(float("nan"))

    # ------------------------------------------------------------------ checkpoints
    def _state(self):
        tensors = {f"model.{k}": v for k, v in self.module.state_dict().items()}
        opt = self.optimizer.state_dict()
        opt_scalars = {}
        for pid, st in opt["state"].items():
            for key, val in st.items():
                if isinstance(val, torch.Tensor):
                    tensors[f"optim.{pid}.{key}"] = val
                else:
                    opt_scalars.setdefault(str(pid), {})[key] = _jsonable(val)
        tensors["rng.batches"] = self.generator.get_state()
        tensors["rng.torch"] = torch.get_rng_state()  # inside run(): the forked, seeded stream
        if self._perm is not None:
            tensors["perm"] = self._perm
        config = {
            "iteration": self.iteration,
            "n_iter": self.n_iter,
            "fingerprint": self.fingerprint,
            "optimizer": {"param_groups": _jsonable(opt["param_groups"]), "scalars": opt_scalars},
            "scheduler": _jsonable(self.scheduler.state_dict()),
            "history": self.history,
            "train_time": self.train_time,
        }
        return tensors, config

    def save_checkpoint(self):
        """Write a checkpoint of the current state to ``checkpoint_dir`` (atomic; see the module docstring).

        Data-parallel: only rank 0 writes (the state is the same on every rank); other ranks return None.
        """
        if self.checkpoint_dir is None:
            raise ValueError("checkpoint_dir is not set")
        if not self.is_main:
            return None
        tensors, config = self._state()
        name = f"ckpt-{self.iteration:09d}"
        save_model_file(self.checkpoint_dir / name, tensors, config, kind=CHECKPOINT_KIND)
        atomic_write_json(self.checkpoint_dir / "latest.json", {"checkpoint": name, "iteration": self.iteration})
        old = sorted(self.checkpoint_dir.glob("ckpt-*.json"))[:-self.keep_checkpoints]
        for p in old:
            for q in (p, p.with_suffix(".safetensors")):
                with contextlib.suppress(OSError):
                    q.unlink()
        return self.checkpoint_dir / name

    def _read_checkpoint(self):
        """``(tensors, config)`` of the newest checkpoint of ``checkpoint_dir``, or None when there is none."""
        pointer = self.checkpoint_dir / "latest.json"
        if not pointer.exists():
            return None
        try:
            name = json.loads(pointer.read_text("utf-8"))["checkpoint"]
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise ValueError(f"checkpoint pointer {pointer} is corrupt: {exc}") from None
        tensors, config = load_model_file(self.checkpoint_dir / name, kind=CHECKPOINT_KIND)
        if config.get("fingerprint") != self.fingerprint or config.get("n_iter") != self.n_iter:
            raise ValueError(
                f"checkpoint {self.checkpoint_dir / name} was written by a different run (model configuration, "
                "data or n_iter differ); use another checkpoint_dir or resume=False")
        return tensors, config

    def load_checkpoint(self):
        """Restore the newest checkpoint of ``checkpoint_dir``; returns False when there is none.

        Data-parallel: rank 0 reads it (only its ``checkpoint_dir`` needs to exist) and broadcasts it; an error
        reading it is raised on every rank.
        """
        if not self.distributed:
            found = self._read_checkpoint()
        else:
            import torch.distributed as dist

            box, error = [None], None
            if self.is_main:
                try:
                    box[0] = ("ok", self._read_checkpoint())
                except Exception as exc:  # tell the other ranks before raising, or they wait forever
                    error = exc
                    box[0] = ("error", (isinstance(exc, ValueError), f"{type(exc).__name__}: {exc}"))
            dist.broadcast_object_list(box, src=0)
            status, found = box[0]
            if error is not None:
                raise error
            if status == "error":
                is_value_error, msg = found
                raise (ValueError if is_value_error else RuntimeError)(f"rank 0 could not resume: {msg}")
        if found is None:
            return False
        tensors, config = found
        self.module.load_state_dict({k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")})
        opt_state = {}
        for k, v in tensors.items():
            if k.startswith("optim."):
                _, pid, key = k.split(".", 2)
                opt_state.setdefault(int(pid), {})[key] = v
        for pid, st in config["optimizer"]["scalars"].items():
            for key, val in st.items():
                opt_state.setdefault(int(pid), {})[key] = val
        self.optimizer.load_state_dict({"state": opt_state, "param_groups": config["optimizer"]["param_groups"]})
        self.scheduler.load_state_dict(config["scheduler"])
        self.generator.set_state(tensors["rng.batches"])
        self._torch_rng = tensors["rng.torch"]
        self._perm = tensors.get("perm")
        self.iteration = int(config["iteration"])
        self.history = config["history"]
        self.train_time = float(config.get("train_time", 0.0))
        return True


def _eta(step_ends, remaining):
    """Time left as ``H:MM:SS`` from the mean duration of the steps in the moving window ``step_ends`` (the wall
    clock at the end of each of the last steps); ``?`` before two steps are known."""
    if len(step_ends) < 2:
        return "?"
    per_step = (step_ends[-1] - step_ends[0]) / (len(step_ends) - 1)
    sec = int(round(per_step * remaining))
    return f"{sec // 3600}:{sec // 60 % 60:02d}:{sec % 60:02d}"


def train(module, loss_fn, n_samples, **kwargs):
    """Functional form: ``Trainer(module, loss_fn, n_samples, **kwargs).run()``; returns the trainer."""
    trainer = Trainer(module, loss_fn, n_samples, **kwargs)
    trainer.run()
    return trainer

