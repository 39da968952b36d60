"""Spectral embedding and spectral clustering of sparse affinity graphs."""

from ._spectral import check_affinity, spectral_clustering, spectral_embedding

__all__ = ["spectral_embedding", "spectral_clustering", "check_affinity"]
