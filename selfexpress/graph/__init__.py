"""Sparse graphs from self-expressive coefficients, and per-row top-k helpers.

- :func:`affinity_from_coef` -- coefficients (CSR) -> symmetric affinity (CSR).
- :func:`topk_to_csr` -- per-row (n, k) arrays -> CSR.
- :func:`keep_largest_per_row` -- a CSR cut to its k largest-magnitude entries per row.
- :class:`StreamingTopK` -- running per-row top-|value| over column blocks (torch).
"""

from ._affinity import affinity_from_coef, knn_rows
from ._topk import StreamingTopK, keep_largest_per_row, topk_to_csr

__all__ = ["affinity_from_coef", "knn_rows", "keep_largest_per_row", "topk_to_csr", "StreamingTopK"]
