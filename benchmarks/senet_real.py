"""SENet on real images at full scale (senet.txt section 4.2): features, training on sampled points, coefficients
of the whole dataset, graph, spectral clustering.

    python benchmarks/senet_real.py --dataset mnist-full [--cold-features] [SENet options]

Features (scattering + PCA, from the idx files; ``--cold-features`` uses an empty cache so the feature time is
included), SENet trained on ``--n-train`` sampled points, coefficients of all points against all points (streaming
top-k), graph, spectral clustering (15 eigenvectors). Writes ``benchmarks/results/senet_real/<dataset>.json`` with
per-stage wall times and peak RSS. The out-of-sample protocol (Table 2) is benchmarks/table2.py.
"""

from __future__ import annotations

import argparse
import tempfile

import _common  # noqa: F401  (sets sys.path)
import numpy as np
from _common import DATA_DIR, CACHE_DIR, Stages, write_result

PAPER = {  # senet.txt Tables 2 and 3 (ACC)
    ("mnist-full", "senet"): {"acc": 0.968, "nmi": 0.918, "ari": 0.931},
    ("fashion-mnist-full", "senet"): {"acc": 0.697, "nmi": 0.663, "ari": 0.556},
    ("mnist", 1000): 0.8087, ("mnist", 2000): 0.9545, ("mnist", 5000): 0.9580, ("mnist", 10000): 0.9666,
    ("mnist", 20000): 0.9625,
    ("fashion-mnist", 1000): 0.7046, ("fashion-mnist", 2000): 0.5871, ("fashion-mnist", 5000): 0.6067,
    ("fashion-mnist", 10000): 0.6292, ("fashion-mnist", 20000): 0.6464,
}


def senet_params(a):
    return dict(hidden_sizes=(a.width,) * a.depth, embed_dim=a.width, gamma=a.gamma, lmbd=0.9, n_iter=a.n_iter,
                batch_size=a.batch_size, lr=a.lr, lr_threshold=a.lr_threshold, inactive_grad=a.inactive_grad,
                n_nonzero=a.n_nonzero, affinity=a.affinity, teacher=a.teacher, n_components=15, random_state=a.seed,
                algorithm=a.algorithm, key_refresh=a.key_refresh)


def run_full(a):
    from selfexpress.features import dataset_features
    from selfexpress.metrics import evaluate
    from selfexpress.models.senet import SENet

    st = Stages()
    cache = tempfile.mkdtemp(prefix="selfexpress-cold-") if a.cold_features else str(CACHE_DIR)
    with st("features"):
        X, y = dataset_features(a.dataset, data_dir=str(DATA_DIR), cache_dir=cache, verbose=True)
    model = SENet(10, n_train=a.n_train, verbose=True, **senet_params(a))
    with st("senet"):
        model.fit(X)
    st.times.update({f"senet.{k}": round(v, 3) for k, v in model.timings_.items()})
    m = evaluate(y, model.labels_)
    print(f"{a.dataset}: ACC {m['acc']:.4f} NMI {m['nmi']:.4f} ARI {m['ari']:.4f}  stages {st.times}")
    write_result(a.dataset, {
        "dataset": a.dataset, "n_samples": int(len(y)), "method": "senet", "n_train": a.n_train,
        "params": senet_params(a), "metrics": m, "stage_seconds": st.times,
        "total_seconds": round(st.times["features"] + st.times["senet"], 3), "cold_features": a.cold_features,
        "paper": PAPER.get((a.dataset, "senet")), "threshold_b": float(model.module_.threshold.detach())})


def senet_arg_parser(doc):
    """The SENet options shared by this script and table2.py."""
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="mnist-full")
    p.add_argument("--n-train", type=int, nargs="+", default=[2000])
    p.add_argument("--n-iter", type=int, default=3000)
    p.add_argument("--width", type=int, default=256)
    p.add_argument("--depth", type=int, default=3)
    p.add_argument("--gamma", type=float, default=200.0)
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--lr-threshold", type=float, default=0.03)
    p.add_argument("--inactive-grad", default="kkt", choices=["zero", "kkt"])
    p.add_argument("--n-nonzero", type=int, default=100)
    p.add_argument("--affinity", default="symmetric", choices=["symmetric", "knn"])
    p.add_argument("--teacher", default=None, choices=["ensc"], help="EnSC teacher (CPU accelerator)")
    p.add_argument("--algorithm", default="sgd", choices=["sgd", "two_pass", "key_cache"])
    p.add_argument("--key-refresh", type=int, default=10, help="steps between key-cache refreshes (key_cache)")
    p.add_argument("--seed", type=int, default=0)
    return p


def main():
    p = senet_arg_parser(__doc__)
    p.add_argument("--cold-features", action="store_true")
    a = p.parse_args()
    a.n_train = a.n_train[0]
    run_full(a)


if __name__ == "__main__":
    main()
