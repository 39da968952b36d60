"""benchmarks/senet_curve.py: the whole-dataset clustering from a trained model (``--cluster-full``)."""

import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def test_cluster_full_clusters_every_point_from_the_trained_model(monkeypatch):
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    monkeypatch.setattr(sys, "argv", ["pytest"])
    from senet_curve import cluster_full

    from selfexpress.data import make_union_of_subspaces
    from selfexpress.models.senet import SENet

    X, y, _ = make_union_of_subspaces(3, 3, 20, 60, random_state=0)
    model = SENet(3, hidden_sizes=(64, 64), embed_dim=64, n_iter=600, n_train=None, random_state=0,
                  n_nonzero=10).fit(X[::2])  # trained on half the points, applied to all of them
    out = cluster_full(model, X, y, n_nonzero=10, seed=0)
    assert out["n_samples"] == len(y)
    assert 0 < out["nnz_per_row"] <= 10
    assert out["acc_symmetric"] >= 0.6  # chance is about 0.4 for three balanced clusters
    for graph in ("symmetric", "knn"):
        assert 0.0 <= out[f"acc_{graph}"] <= 1.0 and out[f"spectral_seconds_{graph}"] >= 0.0
