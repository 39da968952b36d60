"""Multi-process (data-parallel) training helpers: a ``torchrun``-style launch on one or more hosts.

:class:`selfexpress.train.Trainer` trains data-parallel whenever its ``distributed`` option is on (SENet's
default ``distributed="auto"``: on iff a ``torch.distributed`` process group with more than one process is
initialised). This module sets that process group up from the environment variables ``torchrun`` exports
(``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``), with the ``gloo`` backend (CPU), and
answers "which rank am I" for the code around training (writing outputs on rank 0 only)::

    # torchrun --nproc_per_node 2 train.py
    from selfexpress import distributed
    from selfexpress.models import SENet

    distributed.init_from_env()          # no-op (returns False) when not launched by torchrun
    model = SENet(n_clusters=10, random_state=0).fit(X)   # every rank: same X, its share of each batch
    if distributed.is_main_process():
        model.save("senet")              # only rank 0 writes
    distributed.shutdown()

The command line does the same by itself: ``torchrun --nproc_per_node 2 -m selfexpress cluster ...`` (see
``docs/scaling.md``, "Multi-process training").
"""

from __future__ import annotations

import datetime
import os

__all__ = ["init_from_env", "is_initialized", "is_active", "get_rank", "get_world_size", "is_main_process",
           "shutdown", "launched_by_torchrun", "resolve"]

ENV_VARS = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def _dist():
    import torch.distributed as dist

    return dist


def is_initialized():
    """True when ``torch.distributed`` is available and its default process group is initialised."""
    dist = _dist()
    return bool(dist.is_available() and dist.is_initialized())


def get_world_size():
    """Number of processes of the default group (1 when no group is initialised)."""
    return _dist().get_world_size() if is_initialized() else 1


def get_rank():
    """Rank of this process in the default group (0 when no group is initialised)."""
    return _dist().get_rank() if is_initialized() else 0


def is_main_process():
    """True on rank 0 (and in a plain single process): the rank that writes files and prints."""
    return get_rank() == 0


def is_active():
    """True when a process group with more than one process is initialised (data-parallel training is on)."""
    return get_world_size() > 1


def launched_by_torchrun(environ=None):
    """True when the ``torchrun`` environment variables (``RANK``, ``WORLD_SIZE``, ...) are set."""
    env = os.environ if environ is None else environ
    return "WORLD_SIZE" in env and "RANK" in env


def _env_int(env, name):
    try:
        return int(env[name])
    except (KeyError, ValueError):
        raise ValueError(f"environment variable {name} must be set to an integer for a torchrun-style launch, "
                         f"got {env.get(name)!r}") from None


def init_from_env(backend="gloo", timeout=None, environ=None):
    """Initialise the default process group from the ``torchrun`` environment; returns True when initialised.

    Reads ``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT`` (and ``LOCAL_RANK``, unused on CPU) as set by
    ``torchrun`` -- or by hand, one process per rank. Without ``WORLD_SIZE`` (a plain ``python`` launch) it does
    nothing and returns False; if a group is already initialised it is kept and True is returned.

    Parameters
    ----------
    backend : str, default "gloo"
        ``torch.distributed`` backend; gloo runs on CPUs over TCP, within a host and across hosts.
    timeout : float or None
        Seconds a collective may wait for the other ranks before raising (None: torch's default, 30 min).
    environ : mapping or None
        Environment to read (None: ``os.environ``; given for tests).

    Raises ``ValueError`` when the variables are incomplete or inconsistent, ``RuntimeError`` when
    ``torch.distributed`` or the backend is not available.
    """
    env = os.environ if environ is None else environ
    if is_initialized():
        return True
    if "WORLD_SIZE" not in env:
        return False
    world_size = _env_int(env, "WORLD_SIZE")
    rank = _env_int(env, "RANK")
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"RANK={rank} must be in [0, WORLD_SIZE={world_size})")
    missing = [k for k in ("MASTER_ADDR", "MASTER_PORT") if not env.get(k)]
    if missing:
        raise ValueError(f"environment variables {missing} must be set for a torchrun-style launch "
                         "(torchrun sets them; by hand: the address and a free port of the rank-0 host)")
    port = _env_int(env, "MASTER_PORT")
    dist = _dist()
    if not dist.is_available():
        raise RuntimeError("torch.distributed is not available in this torch build")
    if backend == "gloo" and not dist.is_gloo_available():
        raise RuntimeError("the gloo backend of torch.distributed is not available in this torch build")
    kwargs = {}
    if timeout is not None:
        kwargs["timeout"] = datetime.timedelta(seconds=float(timeout))
    dist.init_process_group(backend=backend, init_method=f"tcp://{env['MASTER_ADDR']}:{port}", rank=rank,
                            world_size=world_size, **kwargs)
    return True


def shutdown():
    """Destroy the default process group if one is initialised (call once, at the end of the script)."""
    if is_initialized():
        _dist().destroy_process_group()


def resolve(distributed):
    """Turn a ``distributed`` option (False, True or "auto") into a bool; see :class:`~selfexpress.train.Trainer`.

    "auto": True iff a process group with more than one process is initialised. True: requires an initialised
    group (of any size; one process then trains exactly like ``False``). ``ValueError`` otherwise.
    """
    if isinstance(distributed, str) and distributed == "auto":
        return is_active()
    if not isinstance(distributed, bool):
        raise ValueError(f"distributed must be True, False or 'auto', got {distributed!r}")
    if distributed and not is_initialized():
        raise ValueError("distributed=True needs an initialised torch.distributed process group: launch with "
                         "torchrun and call selfexpress.distributed.init_from_env() (or "
                         "torch.distributed.init_process_group) first")
    return distributed
