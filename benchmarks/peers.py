"""Our EnSC and SSC-OMP side by side with reference builds from well-kept libraries (issue 26).

The peers follow the published reference code (github:ChongYou/subspace-clustering, ``cluster/selfrepresentation.py``)
in structure, re-written here: one point at a time against the whole dictionary (the point itself removed),

- **EnSC reference** (You et al., CVPR 2016): ``alpha_i = max_{j != i} |<x_j, x_i>| / (tau gamma)``; the
  oracle-guided active support (ORGEN): initial support = the 100 most correlated atoms, solve the elastic net on
  it, dual ``delta = (y - c X_S) / alpha``, add the atoms with ``|<delta, x_j>| > tau + 1e-10`` (at most up to the
  support size, grown 1.1x when the active atoms fill 80 %), stop when none or after 40 rounds or when the objective
  stalls (relative 1e-10). Inner solver, two builds:
  ``spams`` (SPAMS ``lasso``: LARS-based elastic net, ``lambda1 = tau alpha``, ``lambda2 = (1 - tau) alpha``, as the
  reference) and ``sklearn`` (scikit-learn ``ElasticNet`` coordinate descent on the support, ``alpha / D``,
  ``l1_ratio = tau``, Gram precomputed, ``tol=1e-8``).
- **SSC-OMP reference** (You et al., CVPR 2016): greedy OMP per point with a least-squares re-fit at every step
  (numpy ``lstsq``), ``n_nonzero=5``, ``thr=1e-5`` (the reference's MNIST setting).

Ours (each timed before and after the references; ratios use the mean), on the same float32 unit-norm features:
EnSC certified (``algorithm="active_set"``), EnSC refined (``algorithm="refined"``, K = 50, ``oracle_passes=1``: the
large-N default of ``algorithm="auto"``; exact solves on each point's 50 most correlated atoms, one oracle pass over
the whole dictionary, re-solve of the violators; guarantee ``partial``), the same with 2 and 3 oracle passes
(``ours_ensc_refined_p2`` / ``_p3``), EnSC restricted (``algorithm="restricted"``,
K = 50, no oracle pass) and ``SSCOMP(n_nonzero=5, thr=1e-5)``. Every method's C goes through the same graphs
(``symmetric`` |C|+|C^T| and ``knn`` 3-NN over rows) and the same spectral step (15 eigenvectors, k-means n_init=20,
random_state 0), in this one process. Per method: ACC / NMI (geometric) / ARI per graph, coefficient seconds, peak
RSS while it ran (sampled from /proc every 20 ms) and its increase over the process baseline, and the EnSC objective
per point ``0.5 ||x_i - sum_j c_j x_j||^2 + alpha_i (tau ||c||_1 + (1 - tau)/2 ||c||^2)`` (float64): certified vs
each reference build (relative difference), refined and restricted vs certified (relative excess).

The record's ``summary`` states, against issue 26's acceptance (time ratio >= 10x at <= 0.5 points of ACC lost;
certified vs reference objective agree to 1e-4 relative), for each of our EnSC methods and each reference build: the
time ratio (reference seconds, extrapolated when sampled, over the mean of ours' two timings) and the ACC points lost
per graph (reference ACC minus ours; when the reference was sampled its ACC is not measured, and the certified
solver's ACC stands in for it, flagged ``acc_reference_proxy``), whether each part is met, and one plain line each.

``--n`` points (the first n rows of MNIST-test's features; ``--n 10000`` is the whole test split). A reference build
whose extrapolated time exceeds ``--budget`` seconds (default 1,200) is run on ``--sample`` random points only and its
time extrapolated to n (the record says ``sampled``); its ACC is then not measured, and the objective comparison is
made on the sampled points.

The peers need SPAMS, an optional extra: ``pip install 'selfexpress[peers]'`` (or ``pip install spams-bin``).

Run: ``python benchmarks/peers.py --n 2000`` (two torch threads) and ``OMP_NUM_THREADS=1 python benchmarks/peers.py
--n 10000`` (one thread; with the default budget the scikit-learn build runs in full, about 15 minutes; ``--budget
600`` samples it); ``--resize`` default ``bilinear``, the reference's features. Records:
``benchmarks/results/peers/mnist-test_<n>.json``; ``mnist-test_2000_1thread.json`` is the 2,000-point run with
``OMP_NUM_THREADS=1``, copied under that name.
"""

from __future__ import annotations

import argparse
import threading
import time
import warnings

import numpy as np
import scipy.sparse as sp

from _common import (DATA_DIR, cluster_by_graph, matmul_gflops, matmul_gflops_since, peak_rss_mb,  # noqa: E402
                     write_result)

GAMMA, TAU, N_COMPONENTS, N_INIT, SEED = 200.0, 0.9, 15, 20, 0
OMP_NONZERO, OMP_THR = 5, 1e-5


def require_spams():
    """Import SPAMS or exit with the line that installs it."""
    try:
        import spams  # noqa: F401
    except ImportError:  # pragma: no cover - depends on the environment
        raise SystemExit("benchmarks/peers.py needs SPAMS for the reference EnSC build. Install the optional extra: "
                         "pip install 'selfexpress[peers]'  (or: pip install spams-bin)") from None
    return spams


# ----------------------------------------------------------------------------------------------------------------
# memory: peak RSS while a block of code runs
# ----------------------------------------------------------------------------------------------------------------


def _rss_mb():
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


class RssPeak:
    """``with RssPeak() as m: ...``: ``m.peak_mb`` (largest RSS seen, sampled every 20 ms) and ``m.base_mb``."""

    def __enter__(self):
        self.base_mb = self.peak_mb = _rss_mb()
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()
        return self

    def _run(self):
        while not self._stop.wait(0.02):
            self.peak_mb = max(self.peak_mb, _rss_mb())

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()
        self.peak_mb = max(self.peak_mb, _rss_mb())


# ----------------------------------------------------------------------------------------------------------------
# the reference builds (one point at a time against the whole dictionary)
# ----------------------------------------------------------------------------------------------------------------


def _inner_spams(Xs, y, alpha, tau):
    spams = require_spams()
    c = spams.lasso(np.asfortranarray(y[:, None]), D=np.asfortranarray(Xs.T), lambda1=tau * alpha,
                    lambda2=(1.0 - tau) * alpha, numThreads=1)
    return np.asarray(c.todense()).ravel()


def _inner_sklearn(Xs, y, alpha, tau):
    from sklearn.linear_model import ElasticNet

    D = Xs.shape[1]
    m = ElasticNet(alpha=alpha / D, l1_ratio=tau, fit_intercept=False, precompute=Xs @ Xs.T, tol=1e-8,
                   max_iter=100_000, selection="cyclic")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m.fit(Xs.T, y)
    return m.coef_


INNER = {"spams": _inner_spams, "sklearn": _inner_sklearn}


def reference_ensc_point(X, i, gamma, tau, inner, support_size=100, maxiter=40):
    """One point of the reference EnSC (ORGEN active support); ``X`` float64 (N, D). Returns (cols, vals, alpha)."""
    N = X.shape[0]
    y = X[i]
    coh = np.abs(X @ y)
    coh[i] = 0.0
    alpha = coh.max() / tau / gamma
    others = np.flatnonzero(np.arange(N) != i)
    if N - 1 <= support_size:
        supp = others
    else:
        coh_sel = coh.copy()
        coh_sel[i] = -1.0
        supp = np.argpartition(-coh_sel, support_size)[:support_size]
    best = np.inf
    cs = np.zeros(supp.size)
    for _ in range(maxiter):
        Xs = X[supp]
        cs = inner(Xs, y, alpha, tau)
        delta = (y - cs @ Xs) / alpha
        obj = tau * np.abs(cs).sum() + (1 - tau) / 2 * (cs ** 2).sum() + alpha / 2 * (delta ** 2).sum()
        if best - obj < 1e-10 * best:
            break
        best = obj
        g = np.abs(X @ delta)
        g[supp] = 0.0
        g[i] = 0.0
        added = np.flatnonzero(g > tau + 1e-10)
        if added.size == 0:
            break
        active = supp[np.abs(cs) > 1e-10]
        if active.size > 0.8 * support_size:
            support_size = min(round(max(active.size, support_size) * 1.1), N - 1)
        room = support_size - active.size
        if added.size > room:
            added = added[np.argpartition(-g[added], room - 1)[:room]] if room > 0 else added[:0]
        supp = np.concatenate([active, added])
    nz = cs != 0
    return supp[nz], cs[nz], alpha


def reference_omp_point(X, i, n_nonzero=OMP_NONZERO, thr=OMP_THR):
    """One point of the reference SSC-OMP (greedy selection, least squares re-fit each step)."""
    y = X[i]
    r = y.copy()
    supp = []
    stop = np.linalg.norm(y) * thr
    c = np.zeros(0)
    for _ in range(n_nonzero):
        g = np.abs(X @ r)
        g[i] = 0.0
        supp.append(int(np.argmax(g)))
        c = np.linalg.lstsq(X[supp].T, y, rcond=None)[0]
        r = y - c @ X[supp]
        if (r ** 2).sum() < stop:
            break
    return np.asarray(supp), c


def run_reference(kind, X64, rows, inner=None):
    """Run a reference build on ``rows``; returns (C restricted to those rows as (len(rows), N) CSR, alphas, s)."""
    N = X64.shape[0]
    ri, ci, vi, alphas = [], [], [], []
    t0 = time.perf_counter()
    for r, i in enumerate(rows):
        if kind == "ensc":
            cols, vals, a = reference_ensc_point(X64, int(i), GAMMA, TAU, INNER[inner])
            alphas.append(a)
        else:
            cols, vals = reference_omp_point(X64, int(i))
        ri.append(np.full(cols.size, r))
        ci.append(cols)
        vi.append(vals)
    secs = time.perf_counter() - t0
    C = sp.csr_matrix((np.concatenate(vi), (np.concatenate(ri), np.concatenate(ci))), shape=(len(rows), N))
    C.sum_duplicates()
    return C, np.asarray(alphas), secs


# ----------------------------------------------------------------------------------------------------------------
# shared evaluation
# ----------------------------------------------------------------------------------------------------------------


def enet_objective(X64, C_rows, rows, alpha, tau=TAU):
    """EnSC objective of each row of ``C_rows`` (codes of points ``rows``), float64."""
    R = X64[rows] - C_rows @ X64
    l1 = np.asarray(abs(C_rows).sum(1)).ravel()
    l2 = np.asarray(C_rows.multiply(C_rows).sum(1)).ravel()
    return 0.5 * (R ** 2).sum(1) + alpha * (tau * l1 + (1 - tau) / 2 * l2)


def cluster_all_graphs(C, y):
    """ACC / NMI / ARI and seconds of C under both graphs (:func:`_common.cluster_by_graph`, n_init ``N_INIT``)."""
    return {aff: {"acc": m["acc"], "nmi": m["nmi"], "ari": m["ari"], "graph_spectral_seconds": round(seconds, 3)}
            for aff, (m, seconds) in cluster_by_graph(C, y, SEED, n_init=N_INIT).items()}


def _rel_stats(a, b):
    """Relative differences |a - b| / |b|: max, median, share <= 1e-4."""
    d = np.abs(a - b) / np.maximum(np.abs(b), 1e-300)
    return {"max": float(d.max()), "median": float(np.median(d)), "share_le_1e-4": float((d <= 1e-4).mean())}


#: our EnSC methods in the record, and those that are not certified (compared with the certified one)
OURS_ENSC = ("ours_ensc_certified", "ours_ensc_refined", "ours_ensc_refined_p2", "ours_ensc_refined_p3",
             "ours_ensc_restricted_k50")
FAST_ENSC = OURS_ENSC[1:]
#: issue 26's acceptance for the peers records
ACCEPT_RATIO, ACCEPT_ACC_LOST, ACCEPT_OBJ_REL = 10.0, 0.005, 1e-4
ACCEPTANCE = ("time ratio >= 10x at <= 0.5 points of ACC lost (each graph); certified vs reference objective agree "
              "to 1e-4 relative")


def acceptance_summary(methods):
    """Per our EnSC method and reference EnSC build: time ratio, ACC points lost per graph, and the verdicts.

    ``methods`` is the record's ``methods`` dict (after the final time ratios). ACC lost = reference ACC minus ours
    (in points, i.e. x 100); a sampled reference has no ACC, and the certified solver's ACC stands in for it
    (``acc_reference_proxy``: its objective agrees with the reference's, see ``objective``)."""
    refs = [n for n in methods if n.startswith("reference_ensc_")]
    ours = [n for n in OURS_ENSC if n in methods]
    rows, lines, objective = [], [], {}
    for ref in refs:
        R = methods[ref]
        o = R.get("objective_certified_vs_reference")
        if o is not None:
            objective[ref] = {"max_rel_diff": o["max"], "median_rel_diff": o["median"],
                              "points_compared": R.get("points_run"), "met": bool(o["max"] <= ACCEPT_OBJ_REL)}
            lines.append(f"objective certified vs {ref}: max rel diff {o['max']:.2e} over {R.get('points_run')} "
                         f"points -> {'MET' if o['max'] <= ACCEPT_OBJ_REL else 'NOT MET'} (<= 1e-4)")
        proxy = "graphs" not in R
        ref_graphs = methods["ours_ensc_certified"]["graphs"] if proxy else R["graphs"]
        for name in ours:
            ratio = R.get(f"time_ratio_vs_{name}")
            g = methods[name].get("graphs", {})
            lost = {aff: round(100 * (ref_graphs[aff]["acc"] - g[aff]["acc"]), 2) for aff in ref_graphs if aff in g}
            ratio_ok = ratio is not None and ratio >= ACCEPT_RATIO
            acc_ok = {aff: v <= 100 * ACCEPT_ACC_LOST + 1e-9 for aff, v in lost.items()}
            row = {"ours": name, "reference": ref, "time_ratio": ratio, "time_ratio_met": bool(ratio_ok),
                   "acc_points_lost": lost, "acc_met": acc_ok, "acc_reference_proxy": proxy,
                   "met": {aff: bool(ratio_ok and ok) for aff, ok in acc_ok.items()}}
            rows.append(row)
            acc_txt = ", ".join(f"{aff} {v:+.2f} pts lost ({'ok' if acc_ok[aff] else 'over 0.5'})"
                                for aff, v in lost.items())
            met_txt = ", ".join(f"{aff} {'MET' if m else 'NOT MET'}" for aff, m in row["met"].items())
            lines.append(f"{name} vs {ref}: time ratio {ratio}x ({'ok' if ratio_ok else 'under 10x'}); {acc_txt}"
                         f"{' [reference ACC not measured (sampled): certified ACC as proxy]' if proxy else ''}"
                         f" -> {met_txt}")
    return {"acceptance": ACCEPTANCE, "acc_points_lost": "reference ACC minus ours, x 100 (positive = lost)",
            "rows": rows, "objective": objective, "lines": lines}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=2000, help="first n points of MNIST-test's features")
    ap.add_argument("--budget", type=float, default=1200.0, help="seconds per reference build before sampling")
    ap.add_argument("--sample", type=int, default=300, help="points per sampled reference build")
    ap.add_argument("--resize", default="bilinear", choices=("bilinear", "pad"))
    ap.add_argument("--peers", default="spams,sklearn,omp")
    args = ap.parse_args(argv)
    require_spams()
    import torch

    from selfexpress.features import dataset_features
    from selfexpress.models.base import normalize_rows
    from selfexpress.models.ensc import ElasticNetSubspaceClustering
    from selfexpress.models.ssc_omp import SSCOMP

    torch.set_num_threads(min(2, torch.get_num_threads()))
    gflops_before = matmul_gflops()
    Xf, yf = dataset_features("mnist-test", data_dir=str(DATA_DIR), verbose=False, resize=args.resize)
    X = normalize_rows(np.asarray(Xf)[: args.n])
    y = np.asarray(yf)[: args.n]
    N = X.shape[0]
    X64 = X.astype(np.float64)
    n_clusters = len(np.unique(y))
    rec = {"dataset": "mnist-test" + (f"[:{N}]" if N < len(yf) else ""), "n_samples": N,
           "features": {"resize": args.resize, "pca": "uncentred 500 fitted on mnist-test", "unit_rows": True},
           "params": {"gamma": GAMMA, "tau": TAU, "gamma_nz": True, "n_components": N_COMPONENTS, "n_init": N_INIT,
                      "random_state": SEED, "omp": {"n_nonzero": OMP_NONZERO, "thr": OMP_THR},
                      "reference_active_support": {"support_init": "knn", "support_size": 100, "maxiter": 40}},
           "nmi_average": "geometric", "methods": {}}
    base_rss = _rss_mb()
    rec["rss_baseline_mb"] = round(base_rss, 1)

    def record(name, secs, C, mem, extra=None):
        r = {"coef_seconds": round(secs, 3), "peak_rss_mb": round(mem.peak_mb, 1),
             "rss_increase_mb": round(mem.peak_mb - mem.base_mb, 1)}
        if C is not None:
            r["graphs"] = cluster_all_graphs(C, y)
            r["nnz_per_row"] = round(C.nnz / C.shape[0], 2)
            r["max_nnz_row"] = int(np.diff(C.tocsr().indptr).max())
        r.update(extra or {})
        rec["methods"][name] = r
        g = r.get("graphs", {})
        print(f"[{name}] {secs:.1f} s " + " ".join(f"{k}: ACC {v['acc']:.4f}" for k, v in g.items()), flush=True)

    # ours: certified, restricted, SSC-OMP (timed again after the references: the machine's load drifts, so each
    # of ours is timed before and after them and the ratios use both)
    ours = {}

    def our_estimators():
        return (
            ("ours_ensc_certified", ElasticNetSubspaceClustering(n_clusters, gamma=GAMMA, tau=TAU,
                                                                 algorithm="active_set", normalize=False)),
            ("ours_ensc_refined", ElasticNetSubspaceClustering(n_clusters, gamma=GAMMA, tau=TAU,
                                                               algorithm="refined", support_size=50,
                                                               oracle_passes=1, normalize=False)),
            # more oracle passes (each: one pass over the dictionary, then the re-solve of its violators)
            *((f"ours_ensc_refined_p{p}", ElasticNetSubspaceClustering(n_clusters, gamma=GAMMA, tau=TAU,
                                                                      algorithm="refined", support_size=50,
                                                                      oracle_passes=p, normalize=False))
              for p in (2, 3)),
            ("ours_ensc_restricted_k50", ElasticNetSubspaceClustering(n_clusters, gamma=GAMMA, tau=TAU,
                                                                      algorithm="restricted", support_size=50,
                                                                      normalize=False)),
            ("ours_ssc_omp", SSCOMP(n_clusters, n_nonzero=OMP_NONZERO, thr=OMP_THR, normalize=False)),
        )

    for name, est in our_estimators():
        with RssPeak() as mem:
            t0 = time.perf_counter()
            est.fit_coef(X)
            secs = time.perf_counter() - t0
        ours[name] = est.coef_.tocsr()
        extra = {}
        if "ensc" in name:
            extra = {"algorithm": est.algorithm_, "guarantee": est.guarantee_, "support_size": est.support_size_,
                     "certified_fraction": est.certified_fraction_, "n_uncertified": est.n_uncertified_}
            if "pivot_kernel" in est.solver_info_:  # the certified solver's whole-dictionary start (N <= 12,288)
                extra["pivot_kernel"] = est.solver_info_["pivot_kernel"]
            if est.algorithm_ == "refined":
                extra["oracle_passes"] = est.oracle_passes
        record(name, secs, ours[name], mem, extra)

    from selfexpress.models.ensc import enet_alpha

    alpha_all = enet_alpha(X, GAMMA, TAU) if N <= 20000 else None
    allrows = np.arange(N)
    f_cert = enet_objective(X64, ours["ours_ensc_certified"], allrows, alpha_all)
    for fast in FAST_ENSC:
        f_fast = enet_objective(X64, ours[fast], allrows, alpha_all)
        ex = (f_fast - f_cert) / f_cert
        rec["methods"][fast]["objective_excess_over_certified"] = {
            "median": float(np.median(ex)), "max": float(ex.max()), "min": float(ex.min()),
            "share_le_1e-4": float((ex <= 1e-4).mean())}

    rng = np.random.default_rng(0)
    for peer in [p for p in args.peers.split(",") if p]:
        kind, inner = ("omp", None) if peer == "omp" else ("ensc", peer)
        name = f"reference_{'ssc_omp' if kind == 'omp' else 'ensc_' + inner}"
        # time a few points first: run in full only if the whole would fit the budget
        probe = rng.choice(N, size=min(20, N), replace=False)
        _, _, tp = run_reference(kind, X64, probe, inner)
        est_total = tp / probe.size * N
        sampled = est_total > args.budget
        rows = np.sort(rng.choice(N, size=min(args.sample, N), replace=False)) if sampled else allrows
        with RssPeak() as mem:
            C_rows, alphas, secs = run_reference(kind, X64, rows, inner)
        extra = {"sampled": bool(sampled), "points_run": int(rows.size),
                 "probe_seconds_per_point": round(tp / probe.size, 4)}
        if sampled:
            extra["extrapolated_coef_seconds"] = round(secs / rows.size * N, 1)
        total = secs / rows.size * N
        if kind == "ensc":
            f_ref = enet_objective(X64, C_rows, rows, alphas)
            extra["alpha_max_rel_diff_vs_ours"] = float(np.max(np.abs(alphas - alpha_all[rows]) / alpha_all[rows]))
            extra["objective_certified_vs_reference"] = _rel_stats(f_cert[rows], f_ref)
            extra["objective_reference_minus_certified_rel"] = {
                "median": float(np.median((f_ref - f_cert[rows]) / f_ref)),
                "max": float(((f_ref - f_cert[rows]) / f_ref).max()),
                "min": float(((f_ref - f_cert[rows]) / f_ref).min())}
            Cc = ours["ours_ensc_certified"][rows]
            extra["coef_max_abs_diff_vs_certified"] = float(abs(Cc - C_rows).max())
            extra["coef_max_abs"] = float(abs(C_rows).max())
            for ours_name in OURS_ENSC:
                extra[f"time_ratio_vs_{ours_name}"] = round(
                    total / rec["methods"][ours_name]["coef_seconds"], 2)
        else:
            extra["time_ratio_vs_ours_ssc_omp"] = round(total / rec["methods"]["ours_ssc_omp"]["coef_seconds"], 2)
            Co = ours["ours_ssc_omp"][rows]
            extra["coef_max_abs_diff_vs_ours"] = float(abs(Co - C_rows).max())
        record(name, secs, None if sampled else C_rows, mem, extra)
        if not sampled and kind == "ensc":
            g_ref = rec["methods"][name]["graphs"]
            for aff in g_ref:
                rec["methods"][name].setdefault("acc_points_lost_by_ours", {})[aff] = {
                    f"acc_lost_{o[len('ours_ensc_'):]}": round(g_ref[aff]["acc"] - rec["methods"][o]["graphs"][aff]
                                                               ["acc"], 4) for o in OURS_ENSC}
    for name, est in our_estimators():  # the second timing of ours, after the references
        t0 = time.perf_counter()
        est.fit_coef(X)
        secs = time.perf_counter() - t0
        r = rec["methods"][name]
        diff = float(abs(est.coef_.tocsr() - ours[name]).max())
        if diff != 0:  # recorded, not fatal: the record of a long run is worth more than the exception
            print(f"WARNING {name}: the second fit differs from the first (max |dC| = {diff:.3g})", flush=True)
            r["second_fit_max_abs_diff"] = diff
        r["coef_seconds_first"], r["coef_seconds_after_references"] = r["coef_seconds"], round(secs, 3)
        r["coef_seconds"] = round((r["coef_seconds_first"] + secs) / 2, 3)
    for name, r in rec["methods"].items():  # time ratios against the mean of ours' two timings
        if not name.startswith("reference_"):
            continue
        total = r.get("extrapolated_coef_seconds", r["coef_seconds"])
        for key in [k for k in r if k.startswith("time_ratio_vs_")]:
            ours_name = key[len("time_ratio_vs_"):]
            r[key] = round(total / rec["methods"][ours_name]["coef_seconds"], 2)
    rec["summary"] = acceptance_summary(rec["methods"])
    for line in rec["summary"]["lines"]:
        print(line, flush=True)
    rec["matmul_gflops"] = matmul_gflops_since(gflops_before)
    rec["peak_rss_mb"] = round(peak_rss_mb(), 1)
    write_result(f"mnist-test_{N}" + ("" if args.resize == "bilinear" else f"_{args.resize}"), rec)


if __name__ == "__main__":
    main()
