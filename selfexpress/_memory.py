"""Memory guard shared by every blockwise code path.

Before a step that allocates memory in proportion to a user-chosen size (a ``block_size`` tile of
``block_size x n_samples`` products, the activations of all ``n_samples`` keys, a dense ``n x n``
fallback), the caller estimates the bytes it needs and calls :func:`check_allocation`. When the
estimate exceeds the memory available now, the step is refused *before* anything is allocated,
with an :class:`InsufficientMemoryError` whose message says what needed the memory and which
parameter to change. This turns an out-of-memory kill (or a machine swapping for an hour) into a
one-line error.

Available memory is read from ``/proc/meminfo`` (``MemAvailable``), capped by a cgroup (container)
limit when one is set, or from torch for a CUDA device. The environment variable
``SELFEXPRESS_MAX_MEMORY`` (bytes, or with a suffix ``K``, ``M``, ``G``, ``T``; e.g. ``8G``) caps
it further, e.g. on a shared machine.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["InsufficientMemoryError", "available_memory", "check_allocation", "format_bytes"]

_SUFFIX = {"": 1, "B": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}


class InsufficientMemoryError(MemoryError, ValueError):
    """A step would allocate more memory than is available.

    Both a :class:`MemoryError` (what it is) and a :class:`ValueError` (it is caused by a parameter
    value the user can change, and the CLI reports it as a one-line user error).
    """


def format_bytes(n):
    """``1536 -> '1.5 KiB'``."""
    n = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"  # pragma: no cover


def _parse_bytes(text):
    t = str(text).strip().upper().removesuffix("IB").removesuffix("B")
    suffix = t[-1:] if t[-1:] in _SUFFIX and not t[-1:].isdigit() else ""
    number = t[: len(t) - len(suffix)] if suffix else t
    try:
        return int(float(number) * _SUFFIX[suffix])
    except ValueError:
        raise ValueError(f"SELFEXPRESS_MAX_MEMORY={text!r} is not a size (e.g. 8G, 512M or a number of bytes)") from None


def _read_int(path):
    try:
        text = Path(path).read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def _meminfo_available():
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):  # pragma: no cover - non-POSIX
        return None


def _cgroup_available():
    limit = _read_int("/sys/fs/cgroup/memory.max")  # cgroup v2 ("max" when unlimited -> None)
    if limit is not None:
        used = _read_int("/sys/fs/cgroup/memory.current") or 0
        return max(limit - used, 0)
    limit = _read_int("/sys/fs/cgroup/memory/memory.limit_in_bytes")  # cgroup v1
    if limit is not None and limit < 2**60:
        used = _read_int("/sys/fs/cgroup/memory/memory.usage_in_bytes") or 0
        return max(limit - used, 0)
    return None


def _device_name(device):
    """``device`` as a string, "auto" / None resolved to the device it means here (selfexpress._device)."""
    if device is None or (isinstance(device, str) and device.strip().lower() == "auto"):
        from ._device import resolve_device

        return str(resolve_device(device))
    return str(device)


def available_memory(device="cpu"):
    """Bytes that can be allocated now on ``device`` (``None`` when unknown: then nothing is refused)."""
    device = _device_name(device)
    values = []
    if device.startswith("cuda"):
        try:
            import torch

            values.append(int(torch.cuda.mem_get_info(torch.device(device))[0]))
        except Exception:  # noqa: BLE001 - no CUDA runtime: unknown
            pass
    else:
        values += [v for v in (_meminfo_available(), _cgroup_available()) if v is not None]
    cap = os.environ.get("SELFEXPRESS_MAX_MEMORY")
    if cap:
        values.append(_parse_bytes(cap))
    return min(values) if values else None


def check_allocation(nbytes, what, parameter_hint, *, device="cpu"):
    """Refuse a step that needs about ``nbytes`` when less memory is available.

    Parameters
    ----------
    nbytes : int
        Estimated peak bytes of the step.
    what : str
        What needs the memory, e.g. ``"SSC-OMP coherence tiles (block_size x n_samples float32)"``.
    parameter_hint : str
        What to change, e.g. ``"lower block_size (now 1024)"``; ends the message.
    device : str, default "cpu"
        Where the memory is allocated (a CUDA device is asked through torch).

    Raises
    ------
    InsufficientMemoryError
        When ``nbytes`` exceeds :func:`available_memory`.
    """
    device = _device_name(device)
    avail = available_memory(device)
    if avail is not None and nbytes > avail:
        raise InsufficientMemoryError(
            f"{what} needs about {format_bytes(nbytes)} but only {format_bytes(avail)} is available "
            f"on {device}; {parameter_hint}"
        )
    return nbytes
