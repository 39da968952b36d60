"""Self-expressive clustering methods, one file each, and the one registry of them.

Every estimator is importable from here (and from :mod:`selfexpress`), lazily: ``import selfexpress.models`` does
not import torch; the first access to a class imports its module::

    from selfexpress.models import SENet, ElasticNetSubspaceClustering, SSCOMP, NCSC, SSCN, DSCNet
    from selfexpress.models import EnergySubspaceClustering

Each class declares what the CLI and :mod:`selfexpress.pipeline` need to know about it (class attributes):
``_method_name`` (the ``--method`` name), ``_input_kind`` ("features": vectors such as scattering + PCA
features; "pixels": raw images through the method's own encoder), ``_model_kind`` (the ``kind`` written in its
model file, None when it cannot be saved) and ``_presets`` (dataset family -> default parameters). :func:`registry`
collects them; nothing else lists the methods.
"""

from __future__ import annotations

import importlib

#: public class name -> module (the package's export table; the registry is built from these classes)
_EXPORTS = {
    "SENet": "selfexpress.models.senet",
    "ElasticNetSubspaceClustering": "selfexpress.models.ensc",
    "SSCOMP": "selfexpress.models.ssc_omp",
    "NCSC": "selfexpress.models.ncsc",
    "SSCN": "selfexpress.models.sscn",
    "DSCNet": "selfexpress.models.dscnet",
    "EnergySubspaceClustering": "selfexpress.models.energy",
}

__all__ = [*_EXPORTS, "registry", "get_method", "method_info", "method_for_model_kind"]

INPUT_KINDS = ("features", "pixels")

_REGISTRY = None


def __getattr__(name):
    if name in _EXPORTS:
        cls = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = cls
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted([*globals(), *_EXPORTS])


def _declared(cls, attr):
    """A class's declaration ``attr`` (inherited ones count; None when it declares none)."""
    return getattr(cls, attr, None)


def registry():
    """``{method name: estimator class}`` from the classes' own declarations, in the export order."""
    global _REGISTRY
    if _REGISTRY is None:
        out = {}
        for cname in _EXPORTS:
            cls = __getattr__(cname)
            name = _declared(cls, "_method_name")
            kind = _declared(cls, "_input_kind")
            if not name or kind not in INPUT_KINDS:
                raise TypeError(f"{cname} must declare _method_name and _input_kind in {INPUT_KINDS}")
            if name in out:
                raise TypeError(f"{cname} and {out[name].__name__} both declare _method_name={name!r}")
            out[name] = cls
        _REGISTRY = out
    return _REGISTRY


def method_info(name):
    """``dict(cls, input_kind, model_kind, presets, paper_preset)`` of the method ``name``."""
    cls = get_method(name)
    return dict(cls=cls, input_kind=_declared(cls, "_input_kind"), model_kind=_declared(cls, "_model_kind"),
                presets=dict(_declared(cls, "_presets") or {}), paper_preset=_declared(cls, "_paper_preset"))


def get_method(name):
    """The estimator class of the method ``name`` (``ValueError`` naming the choices when unknown)."""
    reg = registry()
    if name not in reg:
        raise ValueError(f"unknown method {name!r}; choose one of {sorted(reg)}")
    return reg[name]


def method_for_model_kind(kind):
    """The estimator class whose model files carry ``kind`` (None when no class writes that kind)."""
    for name in registry():
        info = method_info(name)
        if info["model_kind"] is not None and info["model_kind"] == kind:
            return info["cls"]
    return None
