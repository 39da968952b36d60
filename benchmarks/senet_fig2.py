"""senet.txt Fig. 2 / Fig. 4: SENet on 5 subspaces of dim 6 in R^15, 500 train / 500 test points.

gamma = 50, lambda = 0.9, Alg. 1, 500 iterations (batch 100, Adam 1e-3, cosine, clip 0.001). Records, at
iterations 100 / 300 / 500, |C_tr| and |C_ts| (test points self-expressed on the test set) sorted by cluster
with their SRE (Fig. 2), learning curves of L, L_rec, L_reg, ACC and SRE on train and test (Fig. 4), and
compares the out-of-sample labelling rules of ``SENet.predict``. The learning curves are recorded by the harness's
:class:`_monitor.SENetMonitor` (a training callback holding the labels; ``SENet.fit`` takes none).

Acceptance (issue 4): train ACC >= 0.97, spectral clustering of the test coefficients ACC >= 0.90.

    python benchmarks/senet_fig2.py [--width 1024] [--lr-threshold 0.2] [--seed 0] [--tag default]

Record: ``benchmarks/results/senet_fig2/<tag>.json`` (figures beside it, ``<tag>_coefficients.png`` and
``<tag>_curves.png``, not committed); ``--tag`` names a run with other settings than the defaults.
"""

from __future__ import annotations

import argparse
import time

import _common  # noqa: F401  (puts the repo on sys.path)
import numpy as np
from _common import Stages, result_path, write_result
from _monitor import SENetMonitor

from selfexpress.data import make_union_of_subspaces
from selfexpress.metrics import clustering_accuracy, connectivity, subspace_preserving_error
from selfexpress.models.senet import SENet
from selfexpress.plotting import plot_coefficient_grid, plot_learning_curves


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--width", type=int, default=1024, help="hidden and embedding width (paper: 1024)")
    ap.add_argument("--n-iter", type=int, default=500)
    ap.add_argument("--lr-threshold", type=float, default=0.2,
                    help="Adam lr of the soft threshold b (None = lr; see measurements in the record)")
    ap.add_argument("--inactive-grad", choices=["zero", "kkt"], default="zero",
                    help="gradient of zeroed coefficients: the paper's exact one (default) or the KKT one")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--eval-every", type=int, default=50, help="learning-curve points every this many iterations")
    ap.add_argument("--quiet", action="store_true")
    ap.add_argument("--tag", default="default",
                    help="record tag: benchmarks/results/senet_fig2/<tag>.json (name a run with other settings)")
    args = ap.parse_args(argv)

    stages = Stages()
    X, y, _ = make_union_of_subspaces(5, 6, 15, 200, random_state=args.seed)
    perm = np.random.default_rng(args.seed).permutation(len(X))
    tr, te = perm[:500], perm[500:]
    Xtr, ytr, Xte, yte = X[tr], y[tr], X[te], y[te]

    snaps = {}
    snap_at = {100, 300, 500, args.n_iter}

    model = SENet(5, hidden_sizes=(args.width,) * 3, embed_dim=args.width, gamma=50.0, lmbd=0.9,
                  n_iter=args.n_iter, batch_size=100, algorithm="sgd", lr=1e-3, lr_threshold=args.lr_threshold,
                  inactive_grad=args.inactive_grad, affinity="symmetric", random_state=args.seed,
                  teacher=None, n_nonzero=1000, n_train=None,  # the paper's (and the records'), not the CPU "auto"
                  verbose=not args.quiet)
    monitor = SENetMonitor(model, Xtr, ytr, eval_set=(Xte, yte), every=args.eval_every)

    def snapshot(trainer, it, logs):
        if it in snap_at:
            snaps[it] = (model.self_expressive_coefficients(Xtr), model.self_expressive_coefficients(Xte, dictionary=Xte))

    with stages("fit (train + evals + clustering)"):
        model.fit(Xtr, callbacks=[monitor, snapshot])

    with stages("test rules"):
        rules = {}
        for rule in ("mass", "spectral", "knn"):
            t0 = time.perf_counter()
            lab = model.predict(Xte, rule=rule)
            rules[rule] = {"acc": clustering_accuracy(yte, lab), "seconds": round(time.perf_counter() - t0, 3)}
    C_tr = model.coef_
    C_te = model.self_expressive_coefficients(Xte, dictionary=Xte)
    res = {
        "train_acc": clustering_accuracy(ytr, model.labels_),
        "train_sre": subspace_preserving_error(C_tr, ytr),
        "train_conn": connectivity(C_tr, ytr),
        "test_acc_spectral": rules["spectral"]["acc"],
        "test_sre": subspace_preserving_error(C_te, yte),
        "test_conn": connectivity(C_te, yte),
        "predict_rules_test_acc": rules,
        "objective_train": model.objective(),
        "objective_test": model.objective(Xte, Xte),
        "b_final": float(model.module_.threshold.detach()),
        "nnz_per_row_train": C_tr.nnz / C_tr.shape[0],
        "snapshots_sre": {str(k): {"train": subspace_preserving_error(a, ytr), "test": subspace_preserving_error(b, yte)}
                          for k, (a, b) in sorted(snaps.items())},
    }
    res["accept"] = {"train_acc>=0.97": res["train_acc"] >= 0.97, "test_acc_spectral>=0.90": res["test_acc_spectral"] >= 0.90}

    with stages("figures"):
        grid = [[(snaps[k][0], ytr, f"train, it {k} (SRE {res['snapshots_sre'][str(k)]['train']:.1f}%)")
                 for k in sorted(snaps)],
                [(snaps[k][1], yte, f"test, it {k} (SRE {res['snapshots_sre'][str(k)]['test']:.1f}%)")
                 for k in sorted(snaps)]]
        png = result_path(args.tag, "_coefficients.png")
        png.parent.mkdir(parents=True, exist_ok=True)
        f1 = plot_coefficient_grid(grid, png, suptitle="|C| sorted by subspace (senet.txt Fig. 2)")
        f2 = plot_learning_curves(monitor.learning_curves(), result_path(args.tag, "_curves.png"),
                                  title="SENet learning curves, synthetic R^15 (senet.txt Fig. 4)")
    record = {
        "benchmark": "senet_fig2",
        "setting": {"subspaces": 5, "dim": 6, "ambient": 15, "n_train": 500, "n_test": 500, "gamma": 50.0,
                    "lmbd": 0.9, "n_iter": args.n_iter, "batch_size": 100, "algorithm": "sgd", "width": args.width,
                    "lr": 1e-3, "lr_threshold": args.lr_threshold, "inactive_grad": args.inactive_grad,
                    "seed": args.seed},
        "results": res,
        "history_eval": monitor.history,
        "figures": [str(f1.name), str(f2.name)],
        "stage_seconds": stages.times,
        "train_seconds": model.timings_.get("train"),
        "iterations_per_second": args.n_iter / model.timings_["train"],
    }
    write_result(args.tag, record)
    print(f"train ACC {res['train_acc']:.3f} SRE {res['train_sre']:.2f}%  |  test (spectral) ACC "
          f"{res['test_acc_spectral']:.3f} SRE {res['test_sre']:.2f}%  |  rules "
          + ", ".join(f"{k} {v['acc']:.3f}" for k, v in rules.items()))
    return record


if __name__ == "__main__":
    main()
