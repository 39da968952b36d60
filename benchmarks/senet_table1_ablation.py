"""Why the small-N "SENet test" rows of senet.txt Table 1 are short: learning curves of one training setting.

Same data as ``benchmarks/senet_table1.py`` (5 subspaces of dim 6 in R^9, N_i points per subspace for training and
N_i fresh points on the same subspaces for testing, gamma = 50, lambda = 0.9). Trains one SENet setting and records,
every ``--every`` iterations, on the training set and on the test set (self-expressed on itself): L, L_rec, L_reg,
ACC and SRE (the harness's :class:`_monitor.SENetMonitor`, a training callback: ``SENet.fit`` takes no labels).

    python benchmarks/senet_table1_ablation.py --ni 100 --width 1024 --lr 1e-3 --batch 100 --iters 10000 \\
        --every 1000 --threads 1 --tag paper10k         # the paper's own setting (exact gradient, b at lr)
    python benchmarks/senet_table1_ablation.py --ni 100 --width 128 --lr 3e-3 --batch 500 --iters 2000 \\
        --kkt --lrb 0.3 --tag w128_lrb0.3               # the CPU benchmark's setting with b's lr changed

Writes ``benchmarks/results/senet_table1_ablation/<tag>.json``.
"""

from __future__ import annotations

import argparse
import time

import _common  # noqa: F401
from _common import write_result
from _monitor import SENetMonitor
from senet_table1 import draw_train_test, table1_senet

from selfexpress.cluster import spectral_clustering
from selfexpress.graph import affinity_from_coef
from selfexpress.metrics import clustering_accuracy


def test_acc_by_affinity(model, Xte, yte):
    """Spectral-clustering ACC of the test set's own coefficients under the affinities of the two reference codes.

    "symmetric": (|C_n| + |C_n|^T) / 2 (EnSC's default, what the monitor's curves and senet_table1.py use);
    "knn3" / "knn10": the k-NN graph between the l2-normalised coefficient rows (SENet's main.py default, k = 3);
    "symmetric_2k": symmetric with 2 x n_clusters eigenvectors (SENet's main.py separates spectral_dim).
    k-means is seeded like the monitor's, so "symmetric" equals the last ``test_acc``."""
    C = model.self_expressive_coefficients(Xte, dictionary=Xte)
    k = model.n_clusters
    sym = affinity_from_coef(C, "symmetric")
    graphs = {"symmetric": (sym, k), "symmetric_2k": (sym, 2 * k),
              "knn3": (affinity_from_coef(C, "knn", n_neighbors=3), k),
              "knn10": (affinity_from_coef(C, "knn", n_neighbors=10), k)}
    acc = {}
    for name, (A, n_components) in graphs.items():
        labels = spectral_clustering(A, k, n_components=n_components, random_state=model.random_state)
        acc[name] = float(clustering_accuracy(yte, labels))
    return acc


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ni", type=int, default=100, help="points per subspace (train and test each)")
    ap.add_argument("--width", type=int, default=1024, help="hidden and embedding width (alpha = 1/width)")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--iters", type=int, default=1000)
    ap.add_argument("--every", type=int, default=250, help="evaluate every this many iterations")
    ap.add_argument("--kkt", action="store_true", help='inactive_grad="kkt" (default: the exact gradient)')
    ap.add_argument("--lrb", type=float, default=None, help="Adam lr of the threshold b (default: --lr)")
    ap.add_argument("--clip", type=float, default=0.001, help="global gradient-norm clip (reference: 0.001)")
    ap.add_argument("--teacher", action="store_true", help='teacher="ensc" (distillation, not in the paper)')
    ap.add_argument("--tw", type=float, default=3000.0, help="teacher_weight")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0, help="data draw (and network initialisation unless --init-seed)")
    ap.add_argument("--init-seed", type=int, default=None, help="random_state of the network (default: --seed)")
    ap.add_argument("--tag", default="run")
    a = ap.parse_args(argv)
    import torch

    torch.set_num_threads(a.threads)
    ni, seed = a.ni, a.seed
    X, y, Xte, yte = draw_train_test(ni, seed)  # the draw of senet_table1.py
    m = table1_senet(a.width, seed if a.init_seed is None else a.init_seed, n_iter=a.iters, batch_size=a.batch,
                     lr=a.lr, lr_threshold=a.lrb, grad_clip=a.clip, inactive_grad="kkt" if a.kkt else "zero",
                     teacher="ensc" if a.teacher else None, teacher_weight=a.tw)
    monitor = SENetMonitor(m, X, y, eval_set=(Xte, yte), every=a.every)
    t0 = time.perf_counter()
    m.fit(X, callbacks=[monitor])
    secs = time.perf_counter() - t0
    curves = monitor.history
    print(f"{a.tag}: {secs:.0f} s; last eval: " + ", ".join(f"{k} {v[-1]:.3f}" for k, v in curves.items()))
    by_affinity = test_acc_by_affinity(m, Xte, yte)
    print("final test ACC by affinity: " + ", ".join(f"{k} {v:.3f}" for k, v in by_affinity.items()))
    write_result(a.tag, {"args": vars(a), "train_seconds": secs, "eval": curves,
                         "threshold_b": float(m.module_.threshold.detach()), "final_test_acc_by_affinity": by_affinity})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
