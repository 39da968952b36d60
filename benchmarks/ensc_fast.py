"""EnSC's fast default at full scale (issue 26): ``algorithm="refined"`` / ``"restricted"`` on scattering features.

For each dataset, in a fresh process (so that the peak RSS is that run's alone):

- features: scattering (J=3, L=8) + per-map max normalisation + uncentred PCA-500 + unit rows, from
  ``selfexpress.features.dataset_features`` with the default on-disk cache; ``--resize bilinear`` (the SENet
  reference's 28 -> 32 resize, the library default) or ``--resize pad`` (zero padding); ``--cold`` computes them
  in a fresh temporary cache and times them (end-to-end figure);
- ``ElasticNetSubspaceClustering(algorithm="restricted", support_size=K, gamma=200, tau=0.9, gamma_nz=True)``:
  exact top-K supports (one symmetric matmul sweep), exact restricted elastic nets (``--oracle-rounds R > 0``:
  ``algorithm="active_set", max_rounds=R`` instead: R rounds, each a batch of solves followed by an oracle pass over
  the whole dictionary whose violators join the point's support for the next round, so the last pass only counts
  certificates; rows certified on the way are reported; ``--oracle-passes P > 0``: ``algorithm="refined",
  oracle_passes=P``, the large-N default: P oracle passes, each followed by the re-solve of the violating points,
  and no pass after the last re-solve, so those points are reported uncertified), then the graph of
  ``--affinity`` and spectral clustering (15 eigenvectors, k-means n_init=20); every other affinity of
  ``--also`` on the same coefficients;
- ACC / NMI (geometric) / ARI, seconds per stage, peak RSS, and the machine's fp32 matmul GFLOP/s measured in the
  same process before and after the run (``matmul_gflops``; the product seconds x GFLOP/s is the portable figure).

Records: ``benchmarks/results/ensc_fast/<dataset>_<resize>_k<K>[_r<R>|_p<P>][_cold].json``. Targets (issue 26): MNIST-full ACC
>= 0.975 in <= 150 s after features, Fashion-MNIST-full >= 0.65, peak RSS <= 4 GB; MNIST-test end to end <= 120 s
at ACC >= 0.97. senet.txt Table 3 (EnSC): MNIST-full 0.980, Fashion-MNIST-full 0.672.

Run: ``python benchmarks/ensc_fast.py --datasets mnist-full,fashion-mnist-full --resize pad --support-size 50
--oracle-passes 1`` (the default estimator above 8,000 points).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time

import numpy as np

from _common import DATA_DIR, REPO, Stages, matmul_gflops, matmul_gflops_since, peak_rss_mb, write_result  # noqa: E402

GAMMA, TAU, N_COMPONENTS, N_INIT = 200.0, 0.9, 15, 20
PAPER = {"mnist-full": {"acc": 0.980, "nmi": 0.945, "ari": 0.957}, "fashion-mnist-full": {"acc": 0.672}}


def _feature_compute_seconds(name, resize):
    """Seconds the cached features took to compute (scattering per split + PCA), from the cache's JSON record."""
    from selfexpress.features.cached import default_cache_dir

    for meta in sorted((default_cache_dir() / "pca").glob(f"{name}.*.json")):
        try:
            d = json.loads(meta.read_text())
        except (OSError, ValueError):
            continue
        if d.get("scattering_params", {}).get("resize") == resize and d.get("n_components") == 500:
            return {k: float(v) for k, v in d.get("timings", {}).items()}
    return None


def run_dataset(name, K, resize, affinity, also, cold, rounds=0, seed=0, passes=0):
    import torch

    from selfexpress.cluster import spectral_clustering
    from selfexpress.features import dataset_features
    from selfexpress.graph import affinity_from_coef
    from selfexpress.metrics import evaluate
    from selfexpress.models.ensc import ElasticNetSubspaceClustering

    torch.set_num_threads(min(2, torch.get_num_threads()))
    gflops_before = matmul_gflops()
    st = Stages()
    tmp = tempfile.TemporaryDirectory(prefix="ensc_fast_cache_") if cold else None
    with st("features"):
        X, y, ftimes = dataset_features(name, data_dir=str(DATA_DIR), verbose=False, return_timings=True,
                                        resize=resize, cache_dir=tmp.name if tmp else None)
    y = np.asarray(y)
    n_clusters = len(np.unique(y))
    if rounds and passes:
        raise SystemExit("--oracle-rounds and --oracle-passes are two different solvers: give one")
    algo = (dict(algorithm="active_set", max_rounds=rounds) if rounds else
            dict(algorithm="refined", oracle_passes=passes) if passes else dict(algorithm="restricted"))
    est = ElasticNetSubspaceClustering(n_clusters, gamma=GAMMA, tau=TAU, gamma_nz=True, **algo,
                                       support_size=K, affinity=affinity, n_components=N_COMPONENTS, n_init=N_INIT,
                                       random_state=seed, verbose=True)
    with st("fit"):
        est.fit(X)
    m = evaluate(y, est.labels_)
    t = est.timings_
    info = est.solver_info_
    rec = {
        "dataset": name, "n_samples": int(X.shape[0]), "n_features": int(X.shape[1]), "n_clusters": n_clusters,
        "method": (f"EnSC active set from the top-K supports, max_rounds={rounds} (algorithm='active_set')" if rounds
                   else f"EnSC refined: restricted solves, then {passes} oracle pass(es) each followed by the re-solve "
                        "of the violating points (selfexpress ElasticNetSubspaceClustering algorithm='refined')"
                   if passes else "EnSC restricted (selfexpress ElasticNetSubspaceClustering algorithm='restricted')"),
        "oracle_rounds": rounds, "oracle_passes": passes,
        "features": {"resize": resize, "scattering": "J=3 L=8, per-map max normalisation", "pca": "uncentred 500",
                     "unit_rows": True, "cold": bool(cold),
                     "timings": {k: round(float(v), 3) for k, v in (ftimes or {}).items()}},
        "params": {"gamma": GAMMA, "tau": TAU, "gamma_nz": True, "support_size": K, "affinity": affinity,
                   "n_components": N_COMPONENTS, "n_init": N_INIT, "random_state": seed,
                   "block_size": est.block_size},
        "algorithm": est.algorithm_, "guarantee": est.guarantee_, "certified_fraction": est.certified_fraction_,
        "n_uncertified": est.n_uncertified_, "rounds": info.get("rounds"),
        "acc": m["acc"], "nmi": m["nmi"], "ari": m["ari"], "nmi_average": m.get("nmi_average", "geometric"),
        "paper": PAPER.get(name),
        "times": {"features": st.times["features"], "support_search": info["times"].get("support_search"),
                  "solve": info["times"].get("solve"), "oracle": info["times"].get("oracle"),
                  "coef": round(t["coef"], 3), "graph": round(t["graph"], 3),
                  "spectral": round(t["spectral"], 3)},
        "seconds_after_features": round(t["coef"] + t["graph"] + t["spectral"], 3),
        "search": {k: info.get(k) for k in ("candidates_merged", "rows_reranked", "rows_full_float64",
                                            "products_float64")},
        "solver_times": info.get("times"), "n_inexact": info.get("n_inexact"),
        "nnz_per_row": round(est.coef_.nnz / X.shape[0], 2),
        "other_affinities": {},
    }
    if not cold:
        rec["features"]["compute_seconds_when_cached"] = _feature_compute_seconds(name, resize)
    if cold:
        rec["seconds_end_to_end"] = round(st.times["features"] + rec["seconds_after_features"], 3)
    for aff in also:
        if aff == affinity:
            continue
        t0 = time.perf_counter()
        A = affinity_from_coef(est.coef_, method=aff, n_neighbors=3)
        lab = spectral_clustering(A, n_clusters, n_components=N_COMPONENTS, n_init=N_INIT, random_state=seed)
        mo = evaluate(y, lab)
        rec["other_affinities"][aff] = {"acc": mo["acc"], "nmi": mo["nmi"], "ari": mo["ari"],
                                        "graph_and_spectral_seconds": round(time.perf_counter() - t0, 3)}
    rec["matmul_gflops"] = matmul_gflops_since(gflops_before)
    N, D = X.shape
    search_gflop = N * (N + 2048) / 2 * D * 2 / 1e9  # the symmetric sweep's products
    rec["search_gflop"] = round(search_gflop, 1)
    if rec["times"]["support_search"]:
        rec["search_achieved_gflops"] = round(search_gflop / rec["times"]["support_search"], 1)
    rec["gflop_equivalents_after_features"] = round(rec["seconds_after_features"] * rec["matmul_gflops"]["mean"], 1)
    rec["peak_rss_mb"] = round(peak_rss_mb(), 1)
    print(f"[{name} {resize} K={K}] ACC {m['acc']:.4f} NMI {m['nmi']:.4f} ARI {m['ari']:.4f}; "
          f"{rec['seconds_after_features']} s after features {rec['times']}; other {rec['other_affinities']}; "
          f"peak RSS {rec['peak_rss_mb']} MiB; matmul {rec['matmul_gflops']} GFLOP/s", flush=True)
    if tmp is not None:
        tmp.cleanup()
    write_result(f"{name}_{resize}_k{K}" + (f"_r{rounds}" if rounds else "") + (f"_p{passes}" if passes else "")
                 + ("_cold" if cold else ""), rec)
    return rec


def run_search_comparison(name, n, K, resize):
    """Support search only, on the first ``n`` points: ours (exact top-K of |<x_j, x_i>|, one symmetric sweep) vs
    faiss ``IndexFlatIP`` (exact top-(K+1) of the signed inner product, self removed) vs a plain blockwise torch
    matmul + ``topk`` over all columns; same threads, same process, interleaved twice."""
    import torch

    from selfexpress.features import dataset_features
    from selfexpress.models._ensc_fast import top_correlated
    from selfexpress.models.base import normalize_rows

    torch.set_num_threads(min(2, torch.get_num_threads()))
    X, _ = dataset_features(name, data_dir=str(DATA_DIR), verbose=False, resize=resize)
    X = normalize_rows(np.asarray(X)[:n])
    N, D = X.shape
    Xt = torch.as_tensor(X)

    def ours():
        return top_correlated(Xt, K).numpy()

    def plain(block=2048):
        out = np.empty((N, K), dtype=np.int64)
        for s0 in range(0, N, block):
            S = (Xt[s0:s0 + block] @ Xt.T).abs_()
            b = S.shape[0]
            S[torch.arange(b), torch.arange(s0, s0 + b)] = -1.0
            out[s0:s0 + b] = torch.topk(S, K, dim=1).indices.numpy()
        return out

    def faiss_ip():
        import faiss

        faiss.omp_set_num_threads(torch.get_num_threads())
        index = faiss.IndexFlatIP(D)
        index.add(X)
        _, idx = index.search(X, K + 1)
        keep = idx != np.arange(N)[:, None]
        return np.stack([row[m][:K] for row, m in zip(idx, keep)])

    runs = {"ours_symmetric_sweep": ours, "torch_matmul_topk": plain}
    try:
        import faiss  # noqa: F401

        runs["faiss_IndexFlatIP"] = faiss_ip
    except ImportError:
        pass
    gflops_before = matmul_gflops()
    times = {k: [] for k in runs}
    res = {}
    for _ in range(2):
        for k, f in runs.items():
            t0 = time.perf_counter()
            res[k] = f()
            times[k].append(round(time.perf_counter() - t0, 3))
    gflops = matmul_gflops_since(gflops_before)
    ref = res["ours_symmetric_sweep"]
    same = {k: float(np.mean([set(a) == set(b) for a, b in zip(v, ref)])) for k, v in res.items()}
    rec = {"dataset": name, "n_samples": N, "n_features": D, "support_size": K, "features": {"resize": resize},
           "what": "support search only: each point's K atoms of largest |<x_j, x_i>| (faiss: signed <x_j, x_i>)",
           "seconds": times, "best_seconds": {k: min(v) for k, v in times.items()},
           "rows_with_the_same_set_as_ours": same,
           "gflop_full_product": round(2 * N * N * D / 1e9, 1),
           "matmul_gflops": gflops,
           "peak_rss_mb": round(peak_rss_mb(), 1)}
    print(json.dumps(rec, indent=1), flush=True)
    write_result(f"search_{name}_{resize}_n{N}_k{K}", rec)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", default="mnist-full,fashion-mnist-full")
    ap.add_argument("--support-size", default="50", help="comma-separated K values")
    ap.add_argument("--resize", default="bilinear", choices=("bilinear", "pad"))
    ap.add_argument("--affinity", default="symmetric", choices=("symmetric", "knn"))
    ap.add_argument("--also", default="knn", help="other affinities evaluated on the same coefficients")
    ap.add_argument("--cold", action="store_true", help="compute the features in a fresh cache (end to end)")
    ap.add_argument("--search-only", type=int, default=0,
                    help="compare the support search alone (ours / faiss / torch topk) on the first N points")
    ap.add_argument("--oracle-rounds", type=int, default=0,
                    help="0: the restricted solver; R > 0: the active-set solver from the same supports, R rounds")
    ap.add_argument("--oracle-passes", type=int, default=0,
                    help="P > 0: algorithm='refined' (the large-N default), P oracle passes, no check after the last")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    also = [a for a in args.also.split(",") if a]
    if args.search_only:
        for name in [d for d in args.datasets.split(",") if d]:
            for K in [int(k) for k in args.support_size.split(",")]:
                run_search_comparison(name, args.search_only, K, args.resize)
        return
    if args.child:
        name, K = args.child.split(":")
        run_dataset(name, int(K), args.resize, args.affinity, also, args.cold, args.oracle_rounds,
                    passes=args.oracle_passes)
        return
    for name in [d for d in args.datasets.split(",") if d]:
        for K in [int(k) for k in args.support_size.split(",")]:
            t0 = time.perf_counter()
            cmd = [sys.executable, __file__, "--child", f"{name}:{K}", "--resize", args.resize,
                   "--affinity", args.affinity, "--also", args.also, "--oracle-rounds", str(args.oracle_rounds),
                   "--oracle-passes", str(args.oracle_passes)] + (
                ["--cold"] if args.cold else [])
            rc = subprocess.call(cmd, cwd=REPO)
            print(f"{name} K={K}: exit {rc} after {time.perf_counter() - t0:.1f} s", flush=True)


if __name__ == "__main__":
    main()
