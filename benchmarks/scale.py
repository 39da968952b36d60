"""Scale out (issue 10): SENet on a synthetic union of subspaces at N = 10^4, 10^5, 10^6 on this machine.

10 subspaces of dimension 6 in R^30, N / 10 unit-norm points on each. For every N, in a fresh process (so that the
peak RSS is that run's alone):

1. the points are written to a ``.npy`` file and read back as a *memory map* (streaming input);
2. SENet (3 x 128 nets, gamma 50, lambda 0.9) is trained on ``--n-train`` sampled points -- constant in N;
3. coefficients of all N points on all N points, top-``--n-nonzero`` per row, by the chosen backend (default faiss
   IVF candidate search with N / 250 cells, 4 searched: an exhaustive N x N pass is 2.6e14 flops at N = 10^6);
4. the affinity |C| + |C^T| (symmetric, sparse) and spectral clustering (LOBPCG + pyamg at every N by default;
   MiniBatchKMeans above 2e5 nodes).

Every stage records wall time and the peak RSS reached so far; ACC against the true subspaces. The parent fits the
log-log slope of the graph (coefficients + affinity) and spectral stage times against N and writes
``benchmarks/results/scale/summary.json`` (each size's own record: ``scale/n<N>.json``).

    python benchmarks/scale.py [--sizes 10000 100000 1000000] [--backend faiss|local|dask]

Target (issue 10): N = 10^6 within 60 minutes and 20 GB with ACC >= 0.95; graph and spectral time growing no worse
than ~N log N.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

import _common  # noqa: F401  (sets sys.path)
from _common import REPO, peak_rss_mb, result_path, write_result


def run_size(n, a):
    from selfexpress.cluster import spectral_clustering
    from selfexpress.data import make_union_of_subspaces
    from selfexpress.data.loaders import load_array
    from selfexpress.graph import affinity_from_coef
    from selfexpress.metrics import clustering_accuracy
    from selfexpress.models.senet import SENet

    stages, rss = {}, {}

    def stage(name, t0):
        stages[name] = round(time.perf_counter() - t0, 3)
        rss[name] = round(peak_rss_mb(), 1)
        print(f"[N={n}] {name}: {stages[name]:.1f} s, peak RSS {rss[name]:.0f} MiB", flush=True)

    t0 = time.perf_counter()
    X, y = make_union_of_subspaces(10, 6, 30, n // 10, random_state=a.seed)[:2]
    tmp = tempfile.mkdtemp(prefix="selfexpress-scale-")
    path = os.path.join(tmp, "X.npy")
    np.save(path, X.astype(np.float32))
    del X
    Xmm = load_array(path, mmap_mode="r")
    stage("data", t0)

    opts = {}
    if a.backend == "faiss":
        opts = {"faiss_index": a.faiss_index, "nprobe": a.nprobe}
        if a.points_per_cell:  # cells proportional to N: the IVF scan per query stays constant
            opts["nlist"] = max(1, n // a.points_per_cell)
    model = SENet(10, hidden_sizes=(128, 128, 128), embed_dim=128, gamma=50.0, lmbd=0.9, n_iter=a.n_iter,
                  lr_threshold=0.03, n_train=min(a.n_train, n), n_nonzero=a.n_nonzero, block_size=a.block_size,
                  affinity="symmetric", backend=a.backend, backend_options=opts, random_state=a.seed,
                  teacher=None, verbose=False)
    t0 = time.perf_counter()
    model.fit_coef(Xmm)
    stages["train"] = round(model.timings_["train"], 3)
    stage("coefficients_total", t0)
    stages["coefficients"] = round(model.timings_["inference"], 3)
    C = model.coef_
    t0 = time.perf_counter()
    A = affinity_from_coef(C, method="symmetric")
    stage("affinity", t0)
    t0 = time.perf_counter()
    labels = spectral_clustering(A, 10, n_components=10, n_init=10 if n > 200_000 else 20, random_state=a.seed,
                                 eigen_solver=a.eigen_solver)
    stage("spectral", t0)
    acc = clustering_accuracy(y, labels)
    print(f"[N={n}] ACC {acc:.4f}  nnz/row {C.nnz / n:.1f}", flush=True)
    os.remove(path)
    os.rmdir(tmp)
    write_result(f"n{n}", {"n_samples": n, "acc": round(float(acc), 4), "stage_seconds": stages,
                          "peak_rss_mb_after_stage": rss, "peak_rss_mb": round(peak_rss_mb(), 1),
                          "nnz_per_row": round(C.nnz / n, 2), "backend": a.backend, "backend_options": opts,
                          "n_train": min(a.n_train, n), "n_iter": a.n_iter, "n_nonzero": a.n_nonzero,
                          "eigen_solver": a.eigen_solver,
                          "total_seconds": round(sum(v for k, v in stages.items() if k != "coefficients"
                                                     and k != "train"), 1)})


def _slope(ns, ts):
    x, y = np.log(np.asarray(ns, float)), np.log(np.maximum(np.asarray(ts, float), 1e-3))
    return float(np.polyfit(x, y, 1)[0])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    ap.add_argument("--n-train", type=int, default=2000)
    ap.add_argument("--n-iter", type=int, default=500)
    ap.add_argument("--n-nonzero", type=int, default=10)
    ap.add_argument("--block-size", type=int, default=4096)
    ap.add_argument("--backend", default="faiss", choices=["local", "dask", "faiss"])
    ap.add_argument("--faiss-index", default="ivf", choices=["flat", "ivf"])
    ap.add_argument("--nprobe", type=int, default=4)
    ap.add_argument("--points-per-cell", type=int, default=250,
                    help="faiss IVF cells = N / this (0: the backend default 4 sqrt(N))")
    ap.add_argument("--eigen-solver", default="lobpcg", choices=["auto", "arpack", "lobpcg"],
                    help="one eigensolver at every N, so that the spectral slope compares like with like")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.child:
        run_size(a.child, a)
        return
    passthrough = [f"--{k.replace('_', '-')}={v}" for k, v in vars(a).items() if k not in ("sizes", "child")]
    rows = []
    for n in a.sizes:
        t0 = time.perf_counter()
        rc = subprocess.call([sys.executable, __file__, "--child", str(n), *passthrough], cwd=REPO)
        print(f"N={n}: exit {rc} after {time.perf_counter() - t0:.0f} s", flush=True)
        p = result_path(f"n{n}")
        if rc == 0 and p.exists():
            rows.append(json.loads(p.read_text()))
    rec = {"rows": rows, "params": {k: v for k, v in vars(a).items() if k != "child"}}
    if len(rows) >= 2:
        ns = [r["n_samples"] for r in rows]
        graph = [r["stage_seconds"]["coefficients"] + r["stage_seconds"]["affinity"] for r in rows]
        spec = [r["stage_seconds"]["spectral"] for r in rows]
        nlogn = [n * math.log(n) for n in ns]
        rec["loglog_slope"] = {"graph": round(_slope(ns, graph), 3), "spectral": round(_slope(ns, spec), 3),
                               "n_log_n_reference": round(_slope(ns, nlogn), 3),
                               "last_segment": {"graph": round(_slope(ns[-2:], graph[-2:]), 3),
                                                "spectral": round(_slope(ns[-2:], spec[-2:]), 3),
                                                "n_log_n_reference": round(_slope(ns[-2:], nlogn[-2:]), 3)}}
        print("log-log slopes:", rec["loglog_slope"])
    for r in rows:
        s = r["stage_seconds"]
        print(f"N={r['n_samples']:>8}: ACC {r['acc']:.4f}  train {s['train']:.0f} s  coefficients "
              f"{s['coefficients']:.0f} s  affinity {s['affinity']:.1f} s  spectral {s['spectral']:.0f} s  "
              f"peak RSS {r['peak_rss_mb']:.0f} MiB")
    write_result("summary", rec)


if __name__ == "__main__":
    main()
