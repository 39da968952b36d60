"""The certified EnSC solver's whole-dictionary start against its alternatives, by problem size.

For each size N (the first N rows of MNIST-full's scattering features, reference bilinear variant, unit rows; EnSC
gamma=200, tau=0.9, gamma_nz=True, tol 1e-3), each variant in a fresh process (so that the peak RSS is its own):

- ``certified``: ``elastic_net_coef(algorithm="active_set")`` as shipped: the whole-dictionary start up to
  ``_PIVOT_MAX_N`` points (compiled kernel where it was built), then the oracle rounds;
- ``certified_torch_start``: the same with the torch version of the start (the compiled kernel hidden);
- ``certified_rounds``: the start switched off (``_PIVOT_MAX_N = 0``): top-K supports, then the rounds;
- ``certified_forced_start``: above ``_PIVOT_MAX_N`` only, the start forced on, to show what the limit avoids;
- ``refined``: ``algorithm="refined"`` (K = 50, one oracle pass; not certified), the large-N default.

Per run: seconds of the solve, its stage times, rounds, certified fraction, which start ran, peak RSS; and the
largest coefficient difference of every certified variant from ``certified`` (the same optimum: differences of the
order of ``tol``). The machine's matmul GFLOP/s is measured before and after.

Run: ``python benchmarks/ensc_start.py [--sizes 2000,5000,10000,12288,16384]``
(record ``benchmarks/results/ensc_start/mnist-full_sizes.json``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from _common import (CACHE_DIR, DATA_DIR, REPO, matmul_gflops, matmul_gflops_since, peak_rss_mb,  # noqa: E402
                     write_result)

os.environ.setdefault("SELFEXPRESS_CACHE_DIR", str(CACHE_DIR))

GAMMA, TAU = 200.0, 0.9
CERTIFIED = ("certified", "certified_torch_start", "certified_rounds", "certified_forced_start")


def run_child(n, variant, out_dir):
    """One solve in this process; writes its figures (JSON) and coefficients (npz) to ``out_dir``."""
    import scipy.sparse as sp
    import torch

    import selfexpress.models.ensc as ensc
    from selfexpress.features import dataset_features
    from selfexpress.models.base import normalize_rows

    torch.set_num_threads(min(2, torch.get_num_threads()))
    Xf, _ = dataset_features("mnist-full", data_dir=str(DATA_DIR), verbose=False)
    X = normalize_rows(np.asarray(Xf)[:n]).astype(np.float32)
    algorithm = "refined" if variant == "refined" else "active_set"
    if variant == "certified_torch_start":
        ensc._pivot_kernel = None
    elif variant == "certified_rounds":
        ensc._PIVOT_MAX_N = 0
    elif variant == "certified_forced_start":
        ensc._PIVOT_MAX_N = n
    t0 = time.perf_counter()
    C, info = ensc.elastic_net_coef(X, gamma=GAMMA, tau=TAU, algorithm=algorithm, return_info=True)
    secs = time.perf_counter() - t0
    rec = {"seconds": round(secs, 3), "times": {k: round(v, 3) for k, v in info["times"].items()},
           "rounds": len(info["rounds"]), "certified_fraction": info["certified_fraction"],
           "pivot_kernel": info.get("pivot_kernel", "none"), "peak_rss_mb": round(peak_rss_mb(), 1),
           "nnz_per_row": round(C.nnz / n, 2)}
    out = Path(out_dir)
    sp.save_npz(out / f"{n}_{variant}.npz", C.tocsr())
    (out / f"{n}_{variant}.json").write_text(json.dumps(rec))
    print(f"[{n} {variant}] {secs:.2f} s, {rec['times']}, certified {rec['certified_fraction']:.4f}, "
          f"start {rec['pivot_kernel']}, peak RSS {rec['peak_rss_mb']} MiB", flush=True)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="2000,5000,10000,12288,16384")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--out", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        n, variant = args.child.split(":")
        run_child(int(n), variant, args.out)
        return
    import scipy.sparse as sp

    from selfexpress.models.ensc import _PIVOT_MAX_N

    gflops_before = matmul_gflops()
    sizes = [int(s) for s in args.sizes.split(",") if s]
    rec = {"dataset": "mnist-full[:N]", "features": {"resize": "bilinear", "pca": "uncentred 500", "unit_rows": True},
           "params": {"gamma": GAMMA, "tau": TAU, "gamma_nz": True, "tol": 1e-3, "torch_threads": 2},
           "pivot_max_n": _PIVOT_MAX_N, "runs": {}}
    with tempfile.TemporaryDirectory() as out:
        for n in sizes:
            variants = ["certified", "certified_torch_start", "certified_rounds", "refined"]
            if n > _PIVOT_MAX_N:  # the start is off by default there: the torch variant is the rounds again
                variants = ["certified", "certified_forced_start", "refined"]
            runs = rec["runs"][str(n)] = {}
            for variant in variants:
                cmd = [sys.executable, __file__, "--child", f"{n}:{variant}", "--out", out]
                rc = subprocess.call(cmd, cwd=REPO)
                if rc != 0:
                    runs[variant] = {"exit_code": rc}
                    continue
                runs[variant] = json.loads((Path(out) / f"{n}_{variant}.json").read_text())
            base = Path(out) / f"{n}_certified.npz"
            if base.exists():
                C0 = sp.load_npz(base)
                for variant in variants:
                    path = Path(out) / f"{n}_{variant}.npz"
                    if variant in CERTIFIED and variant != "certified" and path.exists():
                        runs[variant]["max_abs_coef_diff_vs_certified"] = float(abs(sp.load_npz(path) - C0).max())
                runs["certified"]["max_abs_coef"] = float(abs(C0).max())
    rec["matmul_gflops"] = matmul_gflops_since(gflops_before)
    write_result("mnist-full_sizes", rec)


if __name__ == "__main__":
    main()
