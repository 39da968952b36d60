"""Sparse graphs from self-expressive coefficients, and per-row top-k helpers.

- :func:`affinity_from_coef` -- coefficients (CSR) -> symmetric affinity (CSR).
- :func:`topk_to_csr` -- per-row (n, k) arrays -> CSR.
- :class:`StreamingTopK` -- running per-row top-|value| over column blocks (torch).
"""

from ._affinity import affinity_from_coef, knn_rows
from ._topk import StreamingTopK, topk_to_csr

__all__ = ["affinity_from_coef", "knn_rows", "topk_to_csr", "StreamingTopK"]
