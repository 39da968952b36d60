"""SENet on real images at full scale (issue: real data) and the out-of-sample protocol of senet.txt Table 2.

    python benchmarks/senet_real.py full  --dataset mnist-full [--cold-features] [SENet options]
    python benchmarks/senet_real.py table2 --dataset mnist --n-train 1000 2000 [SENet options]

``full``: features (scattering + PCA, from the idx files; ``--cold-features`` uses an empty cache so the
feature time is included), SENet trained on ``--n-train`` sampled points, coefficients of all points against
all points (streaming top-k), graph, spectral clustering (15 eigenvectors). ``table2``: SENet trained on N
points of the train split, coefficients of the test split against itself, spectral clustering of the test split.
Writes one JSON per run to benchmarks/results/ with per-stage wall times and peak RSS.
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
                n_nonzero=a.n_nonzero, affinity=a.affinity, teacher=a.teacher, n_components=15, random_state=a.seed)


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
    write_result(f"senet_full_{a.dataset}", {
        "dataset": a.dataset, "n_samples": int(len(y)), "method": "senet", "n_train": a.n_train,
        "params": senet_params(a), "metrics": m, "stage_seconds": st.times,
        "total_seconds": round(st.times["features"] + st.times["senet"], 3), "cold_features": a.cold_features,
        "paper": PAPER.get((a.dataset, "senet")), "threshold_b": float(model.module_.threshold.detach())})


def run_table2(a):
    from selfexpress.cluster import spectral_clustering
    from selfexpress.features import dataset_features
    from selfexpress.graph import affinity_from_coef
    from selfexpress.metrics import evaluate
    from selfexpress.models.senet import SENet

    Xtr, ytr = dataset_features(f"{a.dataset}-train", data_dir=str(DATA_DIR), cache_dir=str(CACHE_DIR))
    Xte, yte = dataset_features(f"{a.dataset}-test", data_dir=str(DATA_DIR), cache_dir=str(CACHE_DIR))
    rows = []
    for n in a.n_train:
        st = Stages()
        idx = np.random.default_rng(a.seed).choice(len(Xtr), n, replace=False)
        model = SENet(10, verbose=True, **senet_params(a))
        with st("train"):
            model.fit_coef(Xtr[idx])
        with st("test_coefficients"):
            C = model.self_expressive_coefficients(Xte, Xte, n_nonzero=a.n_nonzero)
        with st("graph+spectral"):
            lab = spectral_clustering(affinity_from_coef(C, a.affinity), 10, n_components=15, random_state=a.seed)
        m = evaluate(yte, lab, coef=C)
        print(f"N={n}: test ACC {m['acc']:.4f} SRE {m['sre']:.2f}  {st.times}")
        rows.append({"n_train": n, "metrics": m, "stage_seconds": st.times, "paper_acc": PAPER.get((a.dataset, n))})
    write_result(f"senet_table2_{a.dataset}", {"dataset": f"{a.dataset}-test", "n_samples": int(len(yte)),
                                              "method": "senet", "params": senet_params(a), "rows": rows})


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("mode", choices=["full", "table2"])
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
    p.add_argument("--cold-features", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    if a.mode == "full":
        a.n_train = a.n_train[0]
        run_full(a)
    else:
        run_table2(a)


if __name__ == "__main__":
    main()
