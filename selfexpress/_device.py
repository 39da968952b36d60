"""Where the torch stages run: one device resolution for every estimator, the features stage and the CLI.

``device`` everywhere accepts:

* ``"auto"`` (or ``None``): CUDA (``cuda:0``, or the current CUDA device) when torch sees one, else the CPU;
* ``"cpu"``;
* ``"cuda"`` / ``"cuda:N"``: refused with one line naming the fix when this torch build has no CUDA or sees
  fewer than N + 1 devices (install a CUDA build of torch: README, section "GPU");
* ``"meta"``: shapes only, no memory (building networks, checking shapes; nothing can be fitted on it);
* a :class:`torch.device` of those kinds.

Anything else is a ``ValueError`` that lists the choices. Resolution is cheap (no CUDA context is created for
``"cpu"``), so estimators resolve at the door of ``fit`` / ``predict`` and wherever they place a tensor.

TF32: :func:`configure_tf32` lets float32 matmuls and convolutions on CUDA use TF32 tensor cores (about 10 bits
of mantissa in the products, float32 accumulation; what the papers' PyTorch versions did by default on Ampere).
``SELFEXPRESS_TF32=0`` (or ``configure_tf32(False)``) keeps full float32. It changes nothing on the CPU.
"""

from __future__ import annotations

import os

__all__ = ["resolve_device", "device_property", "configure_tf32", "tf32_enabled", "device_name", "CUDA_HINT"]

#: the fix named by every "no CUDA" error (the README's GPU section gives the exact command)
CUDA_HINT = ("install a CUDA build of torch (e.g. pip install torch==2.13.0 --index-url "
             "https://download.pytorch.org/whl/cu126; README, section 'GPU') or use --device cpu / device='cpu'")
_CHOICES = "'auto', 'cpu', 'cuda', 'cuda:N', 'meta' or a torch.device"


def resolve_device(device="auto"):
    """The :class:`torch.device` that ``device`` names on this machine (see the module docstring).

    ``ValueError`` (one line) for a malformed device, an unsupported kind, or CUDA asked for where there is none.
    """
    import torch

    if device is None or (isinstance(device, str) and device.strip().lower() == "auto"):
        if torch.cuda.is_available():
            return torch.device("cuda", torch.cuda.current_device())
        return torch.device("cpu")
    if isinstance(device, torch.device):
        dev = device
    elif isinstance(device, str):
        try:
            dev = torch.device(device.strip())
        except (RuntimeError, ValueError, TypeError):
            raise ValueError(f"device must be {_CHOICES}, got {device!r}") from None
    else:
        raise ValueError(f"device must be {_CHOICES}, got {type(device).__name__} {device!r}")
    if dev.type in ("cpu", "meta"):
        return dev
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            why = "this torch build has no CUDA" if torch.version.cuda is None else "torch sees no CUDA device"
            raise ValueError(f"device {str(dev)!r} was asked for but {why} (torch {torch.__version__}): {CUDA_HINT}")
        n = torch.cuda.device_count()
        if dev.index is not None and dev.index >= n:
            raise ValueError(f"device {str(dev)!r} was asked for but torch sees {n} CUDA device(s) "
                             f"(cuda:0..cuda:{n - 1})")
        return dev if dev.index is not None else torch.device("cuda", torch.cuda.current_device())
    raise ValueError(f"device must be {_CHOICES}, got {str(dev)!r}")


def device_property():
    """A read-only property ``_device`` for an estimator class: ``resolve_device(self.device)``.

    One line in the class body (``_device = device_property()``); scikit-learn's ``get_params`` does not see it,
    so the ``device`` parameter stays what the user gave ("auto" stays "auto" in ``get_params`` and model files).
    """
    return property(lambda self: resolve_device(getattr(self, "device", "auto")),
                    doc="The torch.device this estimator's tensors live on (``device`` resolved).")


def tf32_enabled() -> bool:
    """Whether TF32 is wanted: ``SELFEXPRESS_TF32`` unset, ``1``, ``true``, ``yes`` or ``on`` (default on)."""
    return os.environ.get("SELFEXPRESS_TF32", "1").strip().lower() not in ("0", "false", "no", "off")


def configure_tf32(enable=None, device=None):
    """Let float32 matmuls / convolutions on CUDA use TF32 (``enable=None``: from ``SELFEXPRESS_TF32``).

    Safe where used: the networks' forward/backward passes, the scattering convolutions and the blockwise
    coefficient products (top-k selection tolerates 1e-3 relative error in the products); exact solves (EnSC's
    restricted elastic nets, NCSC's closed forms) run in float64 or are not matmul-bound. A no-op, returning
    False, when ``device`` is not CUDA (or CUDA is absent). Returns whether TF32 is now on.
    """
    import torch

    if enable is None:
        enable = tf32_enabled()
    if device is not None and resolve_device(device).type != "cuda":
        return False
    if not torch.cuda.is_available():
        return False
    torch.backends.cuda.matmul.allow_tf32 = bool(enable)
    torch.backends.cudnn.allow_tf32 = bool(enable)
    return bool(enable)


def device_name(device="auto") -> str:
    """A readable name of the resolved device: the GPU's name for CUDA, "cpu (<processor>)" otherwise."""
    import platform

    import torch

    dev = resolve_device(device)
    if dev.type == "cuda":
        return f"{dev} ({torch.cuda.get_device_name(dev)})"
    return f"{dev} ({platform.processor() or platform.machine()})"
