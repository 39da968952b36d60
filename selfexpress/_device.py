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

bf16 autocast (mixed precision): ``SELFEXPRESS_AUTOCAST=bf16`` (default ``off``; see :func:`autocast_mode`) runs
the *networks* of the deep models (the convolutional auto-encoders of NCSC, SSCN and DSC-Net, NCSC's classifier
head, the energy model's backbone, projection heads and contrastive loss) under
``torch.autocast(dtype=torch.bfloat16)``, in training (:class:`selfexpress.train.Trainer` with ``autocast=``) and in
their blockwise inference (:func:`autocast_context`). Their self-expression stays in float32
(:func:`float32_region`): the coefficients and the products with them (NCSC's closed-form ``C``, SSCN's
``Q = H H^T``, DSC-Net's ``C Z``, the energy network's coefficients), the residuals ``Z - C Z``, and whatever is
compared with a threshold (NCSC's affinities against ``u`` / ``l``, the top-k and mass thresholds of the
post-processing). SENet (soft-thresholded query-key products) and EnSC (elastic-net solves, optimality
certificates) never use it. Default off: bf16 keeps 8 bits of mantissa, so results move away from the float32
runs that the papers' figures and our records come from; turn it on for speed on a GPU.
"""

from __future__ import annotations

import contextlib
import os
import warnings

__all__ = ["resolve_device", "device_property", "configure_tf32", "tf32_enabled", "ieee_float32", "device_name",
           "CUDA_HINT",
           "AUTOCAST_MODES", "autocast_mode", "autocast_dtype", "autocast_context", "float32_region", "as_float32"]

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


@contextlib.contextmanager
def ieee_float32(device):
    """Within the block, float32 matmuls on ``device`` (when CUDA) are IEEE float32, TF32 off; restored after.

    For solvers whose correctness rests on float32 rounding-error bounds (EnSC's oracle and support search): TF32
    keeps about 10 bits of mantissa in the products, which those bounds do not allow. A no-op off CUDA.
    """
    import torch

    dev = torch.device(device)
    if dev.type != "cuda":
        yield
        return
    was = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = was


def device_name(device="auto") -> str:
    """A readable name of the resolved device: the GPU's name for CUDA, "cpu (<processor>)" otherwise."""
    import platform

    import torch

    dev = resolve_device(device)
    if dev.type == "cuda":
        return f"{dev} ({torch.cuda.get_device_name(dev)})"
    return f"{dev} ({platform.processor() or platform.machine()})"


# ----------------------------------------------------------------------------------------------- bf16 autocast
#: the values of ``SELFEXPRESS_AUTOCAST`` and of the ``autocast`` argument of the Trainer
AUTOCAST_MODES = ("off", "bf16")
_AUTOCAST_ALIASES = {"off": "off", "0": "off", "false": "off", "no": "off", "none": "off", "fp32": "off",
                     "float32": "off", "bf16": "bf16", "bfloat16": "bf16"}


def autocast_mode(mode=None) -> str:
    """``"off"`` or ``"bf16"``: ``mode``, or the environment variable ``SELFEXPRESS_AUTOCAST`` when ``mode`` is None
    (unset or empty: ``"off"``, the default).

    Accepts ``off`` / ``bf16`` (and the spellings ``0``, ``false``, ``no``, ``none``, ``fp32``, ``float32``,
    ``bfloat16``; any case), False (off) and ``torch.bfloat16``. Anything else is a ``ValueError``
    naming the allowed values.
    """
    source = "autocast"
    if mode is None:
        mode = os.environ.get("SELFEXPRESS_AUTOCAST", "").strip() or "off"
        source = "SELFEXPRESS_AUTOCAST"
    if mode is False:
        return "off"
    if not isinstance(mode, str):
        import torch

        if mode is torch.bfloat16:
            return "bf16"
        raise ValueError(f"{source} must be one of {', '.join(repr(m) for m in AUTOCAST_MODES)} (or torch.bfloat16), "
                         f"got {mode!r}")
    key = mode.strip().lower()
    if key not in _AUTOCAST_ALIASES:
        raise ValueError(f"{source} must be one of {', '.join(repr(m) for m in AUTOCAST_MODES)}, got {mode!r}")
    return _AUTOCAST_ALIASES[key]


def autocast_dtype(device, mode=None):
    """The autocast dtype for ``device`` (a device or its type) under ``mode`` (None: the environment): None when
    off, on a device other than CPU / CUDA (``meta``), or on a GPU without bf16 (pre-Ampere; a warning says that it
    runs in float32); else ``torch.bfloat16``. The mode is validated even where it does not apply."""
    import torch

    mode = autocast_mode(mode)
    kind = device if isinstance(device, str) else getattr(device, "type", str(device))
    kind = kind.split(":")[0]
    if mode == "off" or kind not in ("cpu", "cuda"):
        return None
    if kind == "cuda" and not torch.cuda.is_bf16_supported():
        warnings.warn("bf16 autocast was asked for but this GPU has no bf16 support: running in float32",
                      RuntimeWarning, stacklevel=2)
        return None
    return torch.bfloat16


def autocast_context(device, mode=None):
    """``torch.autocast(device.type, dtype=torch.bfloat16)`` when :func:`autocast_dtype` says so, else a no-op
    context (then nothing changes, to the bit). For the networks' forward passes only; see the module docstring."""
    import torch

    dtype = autocast_dtype(device, mode)
    if dtype is None:
        return contextlib.nullcontext()
    kind = device if isinstance(device, str) else device.type
    return torch.autocast(device_type=kind.split(":")[0], dtype=dtype)


def float32_region(tensor):
    """A context in which autocast is off on ``tensor``'s device, when it is on there (else a no-op context).

    For the parts of a loss that must stay in float32 under bf16 autocast (self-expressive coefficients and
    residuals, anything compared with a threshold): cast the network outputs that enter it with
    :func:`as_float32`. With autocast off nothing changes, to the bit.
    """
    import torch

    kind = tensor.device.type
    if kind in ("cpu", "cuda") and torch.is_autocast_enabled(kind):
        return torch.autocast(device_type=kind, enabled=False)
    return contextlib.nullcontext()


def as_float32(*tensors):
    """The tensors in float32 where they are half / bf16 (autocast outputs); others (float32, float64) unchanged
    (the same objects). One tensor in, one out; several in, a tuple out."""
    import torch

    out = tuple(t.float() if isinstance(t, torch.Tensor) and t.dtype in (torch.bfloat16, torch.float16) else t
                for t in tensors)
    return out[0] if len(out) == 1 else out
