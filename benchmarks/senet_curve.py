"""SENet learning curves for issue 25: test ACC against training wall time, on one feature basis.

Protocol (senet.txt Table 2, as ``table2.py``): scattering + PCA fitted on the train split and applied to the test
split; SENet trained on ``--n-train`` points drawn from the train split; every ``--eval-every`` iterations the
test split is clustered from its own SENet coefficients (test points against the test points, top
``--n-nonzero`` per row) under both graphs (|C|+|C^T| and the reference's 3-NN graph over rows of C). Evaluation
time is excluded from the training clock; ``--budget`` (seconds of training) truncates the cosine schedule the
way a user's time limit would.

    python benchmarks/senet_curve.py --dataset mnist --n-train 2000 --width 1024 --n-iter 6000 \
        --eval-every 1000 --budget 2400 --out table2_mnist_w1024

``--cluster-full`` also clusters the whole dataset (train and test splits, 70k points, same basis) once training
ends, from the trained model's coefficients of every point against every point: the section 4.2 figure
(MNIST-full, Fashion-MNIST-full) from the same model, Alg. 2's inductive use. Its time after features is the
training time plus that inference and spectral step (the monitoring evaluations are excluded, as above).

``--eval-nonzero K1 K2 ...`` scores each evaluation (and ``--cluster-full``) also under those per-row truncations:
C is computed once at the largest of them and ``--n-nonzero``, then cut to each K's largest entries per row
(fields ``acc_symmetric_k<K>``; the unsuffixed fields stay ``--n-nonzero``'s). The reference keeps 1,000 per row.
Only the |C|+|C^T| graph is scored for them: the exact 3-NN graph over rows costs about N K^2 (hours at 70k x 1,000).

Writes ``benchmarks/results/senet_curve/<out>.json``: the SENet options, the curve (iteration, training seconds, b,
nnz per row, train loss, test ACC/NMI under both graphs, SRE), the machine's matmul GFLOP/s before and after, peak RSS.
"""

from __future__ import annotations

import time

import numpy as np

import _common  # noqa: F401  (sets sys.path)
from _common import CACHE_DIR, DATA_DIR, cluster_by_graph, matmul_gflops, matmul_gflops_since, peak_rss_mb, write_result
from selfexpress.graph import keep_largest_per_row
from senet_real import PAPER, senet_arg_parser, senet_params


class Curve:
    """Trainer callback: evaluates the test split every ``eval_every`` iterations; stops after ``budget`` s of
    training. Called every step (``every = 1``) so that the budget is checked each iteration."""

    every = 1

    def __init__(self, model, Xte, yte, eval_every, budget, n_nonzero, seed, extra_nonzero=()):
        self.model, self.Xte, self.yte = model, Xte, yte
        self.eval_every, self.budget, self.n_nonzero, self.seed = int(eval_every), budget, n_nonzero, seed
        self.extra_nonzero = tuple(k for k in extra_nonzero if k != n_nonzero)
        self.points = []
        self.t_start = time.perf_counter()
        self.eval_seconds = 0.0

    def train_seconds(self):
        return time.perf_counter() - self.t_start - self.eval_seconds

    def evaluate(self, iteration, logs):
        t0 = time.perf_counter()
        train_s = self.train_seconds()
        module = self.model.module_
        was = module.training
        module.eval()
        Cmax = self.model.self_expressive_coefficients(self.Xte, self.Xte,
                                                       n_nonzero=max((self.n_nonzero, *self.extra_nonzero)))
        module.train(was)
        C = keep_largest_per_row(Cmax, self.n_nonzero)
        point = {"iter": int(iteration), "train_seconds": round(train_s, 2), "b": float(module.threshold.detach()),
                 "nnz_per_row": round(C.nnz / C.shape[0], 1),
                 "rec": float(logs["rec"]), "reg": float(logs["reg"])}  # batch means per point
        if "active" in logs:  # algorithm="key_cache": share of keys the last step recomputed with grad
            point["active"] = round(float(logs["active"]), 4)
        for graph, (m, _seconds) in cluster_by_graph(C, self.yte, self.seed, sre=True).items():
            point[f"acc_{graph}"] = round(float(m["acc"]), 4)
            point[f"nmi_{graph}"] = round(float(m["nmi"]), 4)
            if "sre" in m:
                point["sre"] = round(float(m["sre"]), 2)
        for k in self.extra_nonzero:
            for graph, (m, _seconds) in cluster_by_graph(keep_largest_per_row(Cmax, k), self.yte, self.seed,
                                                     graphs=("symmetric",)).items():
                point[f"acc_{graph}_k{k}"] = round(float(m["acc"]), 4)
                point[f"nmi_{graph}_k{k}"] = round(float(m["nmi"]), 4)
        self.eval_seconds += time.perf_counter() - t0
        point["eval_seconds"] = round(time.perf_counter() - t0, 1)
        self.points.append(point)
        print(f"[curve] {point}", flush=True)

    def __call__(self, trainer, iteration, logs):
        over = self.budget is not None and self.train_seconds() > self.budget
        if iteration % self.eval_every == 0 or iteration == trainer.n_iter or over:
            self.evaluate(iteration, logs)
        if over and iteration < trainer.n_iter:
            trainer.n_iter = iteration  # the schedule keeps its length: a truncated run, as a time limit gives
        return None


def cluster_full(model, X, y, n_nonzero, seed, extra_nonzero=()):
    """Cluster all of ``X`` from the trained model's coefficients (every point against every point) into as many
    clusters as ``y`` has labels; also under each truncation in ``extra_nonzero`` (suffix ``_k<K>``)."""
    out = {"n_samples": int(len(y))}
    t0 = time.perf_counter()
    extra = tuple(k for k in extra_nonzero if k != n_nonzero)
    Cmax = model.self_expressive_coefficients(X, X, n_nonzero=max((n_nonzero, *extra)))
    out["coef_seconds"] = round(time.perf_counter() - t0, 1)
    for k, suffix in ((n_nonzero, ""), *((k, f"_k{k}") for k in extra)):
        t0 = time.perf_counter()
        C = keep_largest_per_row(Cmax, k)
        cut = time.perf_counter() - t0
        out[f"nnz_per_row{suffix}"] = round(C.nnz / C.shape[0], 1)
        graphs = ("symmetric", "knn") if k == n_nonzero else ("symmetric",)
        for graph, (m, seconds) in cluster_by_graph(C, y, seed, graphs=graphs).items():
            out[f"spectral_seconds_{graph}{suffix}"] = round(seconds + cut, 1)
            out.update({f"{key}_{graph}{suffix}": round(float(m[key]), 4) for key in ("acc", "nmi", "ari")})
    print(f"[full] {out}", flush=True)
    return out


def main():
    from selfexpress.features import dataset_features
    from selfexpress.models.senet import SENet

    p = senet_arg_parser(__doc__)
    p.add_argument("--eval-every", type=int, default=1000)
    p.add_argument("--budget", type=float, default=None, help="seconds of training (evaluations excluded)")
    p.add_argument("--cluster-full", action="store_true",
                   help="after training, also cluster train+test (the -full dataset) from the model's coefficients")
    p.add_argument("--eval-nonzero", type=int, nargs="*", default=[],
                   help="also score each evaluation with C cut to these many largest entries per row")
    p.add_argument("--out", required=True, help="record tag: senet_curve_<out>")
    a = p.parse_args()
    if a.dataset.endswith(("-full", "-train", "-test")):
        p.error("--dataset takes the base name (mnist, fashion-mnist); the train and test splits are used")
    n = a.n_train[0]
    gflops_before = matmul_gflops()
    t0 = time.perf_counter()
    Xtr, ytr, basis = dataset_features(f"{a.dataset}-train", data_dir=str(DATA_DIR), cache_dir=str(CACHE_DIR),
                                     return_transform=True)
    Xte, yte = dataset_features(f"{a.dataset}-test", data_dir=str(DATA_DIR), cache_dir=str(CACHE_DIR), basis=basis)
    features_s = time.perf_counter() - t0
    yte = np.asarray(yte)
    idx = np.random.default_rng(a.seed).choice(len(Xtr), n, replace=False)
    params = senet_params(a)
    model = SENet(10, verbose=False, n_train=None, **params)  # train on all n points (not the CPU "auto")
    curve = Curve(model, Xte, yte, a.eval_every, a.budget, a.n_nonzero, a.seed, a.eval_nonzero)
    model.fit(Xtr[idx], callbacks=[curve])
    full = None
    if a.cluster_full:
        full = cluster_full(model, np.concatenate([Xtr, Xte]), np.concatenate([np.asarray(ytr), yte]),
                            a.n_nonzero, a.seed, a.eval_nonzero)
        full["dataset"] = f"{a.dataset}-full"
        full["paper"] = PAPER.get((f"{a.dataset}-full", "senet"))
        for key in [k for k in full if k.startswith("spectral_seconds_symmetric")]:
            # training clock (monitoring excluded) + inference + spectral step
            full["seconds_after_features" + key[len("spectral_seconds_symmetric"):]] = round(
                curve.points[-1]["train_seconds"] + full["coef_seconds"] + full[key], 1)
    gflops = matmul_gflops_since(gflops_before)
    best = max(curve.points, key=lambda q: max(q["acc_symmetric"], q["acc_knn"]))
    write_result(a.out, {
        "dataset": f"{a.dataset}-test", "n_samples": int(len(yte)), "n_train": n,
        "protocol": "senet.txt Table 2 on one basis: train on n_train train-split points, cluster the test split "
                    "from its own coefficients",
        "params": {k: (list(v) if isinstance(v, tuple) else v) for k, v in params.items()},
        "eval_every": a.eval_every, "eval_nonzero": a.eval_nonzero, "budget_seconds": a.budget, "n_iter_done": int(model.n_iter_),
        "feature_basis": {"fitted_on": f"{a.dataset}-train", "fingerprint": basis.fingerprint_,
                          "resize": basis.resize},
        "features_seconds": round(features_s, 1), "train_seconds": model.timings_.get("train"),
        "curve": curve.points, "best": best, "final": curve.points[-1], "full": full,
        "paper_acc": PAPER.get((a.dataset, n)),
        "matmul_gflops": gflops,
        "peak_rss_mb": round(peak_rss_mb(), 1)})


if __name__ == "__main__":
    main()
