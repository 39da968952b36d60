"""senet.txt Table 3 on this machine: k-means, spectral clustering, SSC-OMP, EnSC and SENet on MNIST-full and
Fashion-MNIST-full (70,000 images each; scattering + PCA-500 features, unit rows).

Every (dataset, method) runs in its own process through :func:`selfexpress.pipeline.run` -- the code path of
``selfexpress cluster --dataset D --method M`` with the same presets -- so its peak RSS is its own. Each writes
``benchmarks/results/table3/<dataset>_<method>.json`` (dataset, n_samples, method, parameters, ACC/NMI/ARI,
per-stage wall times, peak RSS, the paper's row); the parent prints the table side by side with senet.txt's
(and writes it to ``benchmarks/results/table3/summary.md``).

Features come from the on-disk cache (``$SELFEXPRESS_CACHE_DIR``, default ``.cache/features``); their compute
time (recorded in the cache) is reported separately, so ``seconds_after_features`` is comparable across methods.

    python benchmarks/table3.py [--datasets mnist-full,fashion-mnist-full] [--methods kmeans,spectral,ssc-omp,ensc,senet]
    python benchmarks/table3.py --datasets mnist-test --methods ensc        # a quick row on 10k points
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

import _common  # noqa: F401  (sets sys.path)
from _common import CACHE_DIR, DATA_DIR, REPO, Stages, peak_rss_mb, result_path, write_result

#: senet.txt Table 3 (ACC / NMI / ARI, %).
PAPER = {
    ("mnist-full", "kmeans"): (54.1, 50.7, 36.7), ("mnist-full", "spectral"): (72.8, 85.6, 66.7),
    ("mnist-full", "ssc-omp"): (92.8, 84.2, 84.9), ("mnist-full", "ensc"): (98.0, 94.5, 95.7),
    ("mnist-full", "senet"): (96.8, 91.8, 93.1),
    ("fashion-mnist-full", "kmeans"): (50.5, 57.8, 40.3), ("fashion-mnist-full", "spectral"): (62.5, 70.0, 49.4),
    ("fashion-mnist-full", "ssc-omp"): (27.4, 42.1, 19.6), ("fashion-mnist-full", "ensc"): (67.2, 70.5, 56.5),
    ("fashion-mnist-full", "senet"): (69.7, 66.3, 55.6),
}


def _scattering_seconds(dataset):
    """Seconds the cached scattering transforms of ``dataset``'s splits took to compute (the cache records them;
    the PCA on top takes 30-100 s more and is redone by the run itself when not cached)."""
    base = dataset.rsplit("-", 1)[0]
    splits = ("train", "test") if dataset.endswith("-full") else (dataset.rsplit("-", 1)[1],)
    total = 0.0
    for split in splits:
        for meta in sorted((CACHE_DIR / "scattering").glob(f"{base}-{split}.*.json")):
            try:
                total += float(json.loads(meta.read_text()).get("seconds", 0.0))
                break
            except (OSError, ValueError):
                continue
    return round(total, 1) or None


def run_one(dataset, method, seed):
    from selfexpress.pipeline import run

    st = Stages()
    with st("total"):
        res = run(dataset=dataset, method=method, data_dir=str(DATA_DIR), cache_dir=str(CACHE_DIR),
                  random_state=seed, verbose=True)
    m = res.metrics
    t = {k: round(float(v), 3) for k, v in res.timings.items()}
    rec = {"dataset": dataset, "n_samples": int(len(res.labels)), "method": method,
           "params": {k: (list(v) if isinstance(v, tuple) else v) for k, v in res.params.items()},
           "metrics": {k: m[k] for k in ("acc", "nmi", "ari") if k in m},
           "stage_seconds": t, "seconds_after_features": round(t["fit"], 3),
           "scattering_compute_seconds": _scattering_seconds(dataset), "paper_percent": PAPER.get((dataset, method)),
           "peak_rss_mb": round(peak_rss_mb(), 1), "random_state": seed}
    for extra in ("certified_fraction_", "n_uncertified_"):
        if hasattr(res.estimator, extra):
            rec[extra.rstrip("_")] = getattr(res.estimator, extra)
    print(f"[{dataset} {method}] ACC {m.get('acc', float('nan')):.4f} NMI {m.get('nmi', float('nan')):.4f} "
          f"ARI {m.get('ari', float('nan')):.4f}  fit {t['fit']:.1f} s  peak RSS {rec['peak_rss_mb']} MiB", flush=True)
    write_result(f"{dataset}_{method}", rec)


def _fmt(x):
    return "-" if x is None else f"{x:.1f}"


def summary(datasets, methods):
    lines = ["| dataset | method | ACC | NMI | ARI | paper ACC/NMI/ARI | s after features | peak RSS MiB |",
             "|---|---|---|---|---|---|---|---|"]
    for d in datasets:
        for meth in methods:
            p = result_path(f"{d}_{meth}")
            if not p.exists():
                continue
            r = json.loads(p.read_text())
            mm = r["metrics"]
            paper = "/".join(_fmt(v) for v in (r.get("paper_percent") or (None,) * 3))
            lines.append(f"| {d} | {meth} | {100 * mm['acc']:.1f} | {100 * mm['nmi']:.1f} | {100 * mm['ari']:.1f} | "
                         f"{paper} | {r['seconds_after_features']:.0f} | {r['peak_rss_mb']:.0f} |")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", default="mnist-full,fashion-mnist-full")
    ap.add_argument("--methods", default="kmeans,spectral,ssc-omp,ensc,senet")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.child:
        d, m = a.child.split(":")
        run_one(d, m, a.seed)
        return
    datasets = [d for d in a.datasets.split(",") if d]
    methods = [m for m in a.methods.split(",") if m]
    for d in datasets:
        for m in methods:
            t0 = time.perf_counter()
            rc = subprocess.call([sys.executable, __file__, "--child", f"{d}:{m}", "--seed", str(a.seed)], cwd=REPO)
            print(f"{d} {m}: exit {rc} after {time.perf_counter() - t0:.0f} s", flush=True)
    table = summary(datasets, methods)
    print(table)
    md = result_path("summary", ".md")
    md.parent.mkdir(parents=True, exist_ok=True)
    md.write_text(table + "\n")


if __name__ == "__main__":
    main()
