"""selfexpress: scalable, inductive subspace clustering with learned self-expression.

The estimators are importable from here (lazily: ``import selfexpress`` does not import torch)::

    from selfexpress import SENet, ElasticNetSubspaceClustering, SSCOMP, NCSC, SSCN, DSCNet, EnergySubspaceClustering

and so is the fitted feature stage that travels inside their model files, ``ScatteringPCA``.
"""

__version__ = "0.1.0"

from .models import _EXPORTS as _MODEL_EXPORTS  # noqa: E402  (import selfexpress.models does not import torch)

__all__ = [*_MODEL_EXPORTS, "ScatteringPCA"]


def __getattr__(name):
    if name in _MODEL_EXPORTS:
        from . import models

        return getattr(models, name)
    if name == "ScatteringPCA":
        from .features.transform import ScatteringPCA

        return ScatteringPCA
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted([*globals(), *_MODEL_EXPORTS, "ScatteringPCA"])
