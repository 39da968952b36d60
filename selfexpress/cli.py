"""Command-line interface: ``selfexpress cluster | predict | datasets``.

Thin: parses arguments and calls :mod:`selfexpress.pipeline`; user errors end with a one-line
message and exit status 2 (``--debug`` shows the traceback).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

EPILOG = """examples:
  selfexpress cluster                                   # SENet on a synthetic union of subspaces
  selfexpress cluster --dataset digits --method ensc    # EnSC on scikit-learn's digits
  selfexpress cluster --dataset mnist-full --method senet --data-dir ../shared/data
  selfexpress cluster --input points.npy --n-clusters 5 --method ensc --output out/
  selfexpress cluster --dataset mnist-test --method sscn --data-dir ../shared/data --save-model sscn
  selfexpress predict --model sscn --dataset mnist-train --data-dir ../shared/data
"""


def _tuple_of_ints(text):
    try:
        return tuple(int(t) for t in text.split(",") if t.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


class _MethodChoices:
    """``--method`` choices read from the registry (:func:`selfexpress.models.registry`) when first needed, so that
    building the parser (``selfexpress datasets``, ``--help`` of other commands) does not import torch."""

    def _names(self):
        from .pipeline import method_names

        return method_names()

    def __contains__(self, item):
        return item in self._names()

    def __iter__(self):
        return iter(self._names())


DESCRIPTION = ("Scalable subspace clustering with self-expression: SENet, EnSC, SSC-OMP, NCSC, SSCN, DSC-Net and "
               "the energy-based LDRSC (`selfexpress cluster --help` lists the --method names), plus k-means and "
               "spectral baselines.")


def build_parser():
    p = argparse.ArgumentParser(
        prog="selfexpress",
        description=DESCRIPTION,
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    c = sub.add_parser("cluster", help="cluster a dataset or a file and report metrics",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = c.add_argument_group("input")
    src.add_argument("--dataset", default="synthetic",
                     help="built-in dataset: synthetic (default), digits, mnist-full, mnist-test, mnist-train, "
                          "fashion-mnist-full, ... (see `selfexpress datasets`)")
    src.add_argument("--input", type=Path, help="file of points, one per row (.npy, .csv, .txt, .mat, idx)")
    src.add_argument("--labels", type=Path, help="optional ground-truth labels file for the metrics")
    src.add_argument("--data-dir", type=Path, help="folder with the dataset files (e.g. ../shared/data)")
    src.add_argument("--cache-dir", type=Path, help="feature cache folder")
    m = c.add_argument_group("method")
    m.add_argument("--method", default="senet", choices=_MethodChoices(), metavar="METHOD",
                   help="senet (default), ensc, ssc-omp, ncsc, sscn, dscnet, energy, or the baselines kmeans, "
                        "spectral; a parameter the method does not take is refused before the run")
    m.add_argument("--features", choices=["auto", "pixels", "scattering"], default="auto",
                   help="input of an image dataset: auto (default) = the method's own (pixels for sscn, dscnet, "
                        "energy, ncsc; scattering + PCA features for the others); scattering with --method ncsc runs "
                        "NCSC's feature variant (identity encoder, MLP classifier)")
    m.add_argument("--n-clusters", type=int, help="number of clusters, at least 2 (default: from the labels)")
    m.add_argument("--gamma", type=float, help="weight of the reconstruction term (EnSC, SENet)")
    m.add_argument("--tau", type=float, help="EnSC l1/l2 trade-off in [0, 1]")
    m.add_argument("--lmbd", type=float, help="SENet l1/l2 trade-off in [0, 1]")
    m.add_argument("--n-iter", type=int, help="SENet training iterations")
    m.add_argument("--hidden-sizes", type=_tuple_of_ints, help="SENet hidden widths, e.g. 1024,1024,1024")
    m.add_argument("--embed-dim", type=int, help="SENet embedding width")
    m.add_argument("--n-train", type=int, help="SENet: train on this many sampled points, infer on all")
    m.add_argument("--n-nonzero", type=int, help="non-zeros kept per row of C (SSC-OMP: max support)")
    m.add_argument("--support-size", type=int, help="EnSC: initial support of every point (its most correlated atoms)")
    m.add_argument("--max-rounds", type=int,
                   help="EnSC: oracle rounds (default 20, until every row is certified); 0 = restricted solves on the "
                        "initial supports only, uncertified, several times faster on large data")
    m.add_argument("--affinity", choices=["symmetric", "knn"], help="graph from C")
    m.add_argument("--n-components", type=int, help="eigenvectors for spectral clustering")
    m.add_argument("--backend", choices=["local", "dask", "faiss"],
                   help="SENet coefficient stage: in-process blocks, Dask tasks, or faiss candidate search")
    m.add_argument("--dask-address", help="scheduler address for --backend dask (default: a local 2-worker cluster)")
    m.add_argument("--random-state", type=int, default=0)
    out = c.add_argument_group("output")
    out.add_argument("--output", type=Path, help="folder for labels.npy and metrics.json")
    out.add_argument("--save-model", type=Path,
                     help="save the fitted model to this path (<path>.safetensors + <path>.json) for `predict`; "
                          "methods with a model file: senet, ncsc, sscn, energy (checked before the run)")
    out.add_argument("--plot", action="store_true",
                     help="also write coefficients.png (|C| sorted by cluster) into --output (default: here); "
                          "methods with a coefficient matrix C only (it says so when it writes nothing)")
    out.add_argument("-q", "--quiet", action="store_true", help="no progress bars")

    pr = sub.add_parser("predict", help="label new points with a saved SENet, SSCN or NCSC model")
    pr.add_argument("--model", type=Path, required=True)
    pr.add_argument("--input", type=Path)
    pr.add_argument("--dataset", help="built-in dataset name instead of --input")
    pr.add_argument("--labels", type=Path)
    pr.add_argument("--data-dir", type=Path)
    pr.add_argument("--output", type=Path)

    ds = sub.add_parser("datasets", help="list the built-in datasets and which are present locally")
    ds.add_argument("--data-dir", type=Path, help="folder with the dataset files (default: $SELFEXPRESS_DATA_DIR or "
                                                  "~/.cache/selfexpress/data)")
    return p


def _cmd_cluster(args):
    from . import distributed
    from .io import atomic_save_npy, atomic_write_json
    from .pipeline import run

    params = {
        "gamma": args.gamma, "tau": args.tau, "lmbd": args.lmbd, "n_iter": args.n_iter,
        "hidden_sizes": args.hidden_sizes, "embed_dim": args.embed_dim, "n_nonzero": args.n_nonzero,
        "affinity": args.affinity, "n_components": args.n_components, "n_train": args.n_train,
        "support_size": args.support_size, "max_rounds": args.max_rounds,
        "backend": args.backend,
        "backend_options": {"dask_address": args.dask_address} if args.dask_address else None,
    }
    # Launched by torchrun (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT set): join the gloo process group, so SENet
    # (distributed="auto") trains data-parallel; every rank runs the same command, only rank 0 prints and writes.
    if args.n_clusters is not None and args.n_clusters < 2:  # 0 is not "absent": refuse it before the run
        raise ValueError(f"n_clusters must be at least 2, got {args.n_clusters}")
    if args.save_model:  # refuse before the (possibly long) run, not after it
        _check_can_save(args.method)
    is_main = not distributed.init_from_env() or distributed.is_main_process()
    t0 = time.perf_counter()
    try:
        res = run(dataset=args.dataset, method=args.method, n_clusters=args.n_clusters, input_path=args.input,
                  labels_path=args.labels, data_dir=args.data_dir, cache_dir=args.cache_dir,
                  random_state=args.random_state, verbose=not args.quiet and is_main, features=args.features,
                  **params)
    finally:
        distributed.shutdown()
    if not is_main:
        return 0
    total = time.perf_counter() - t0
    source = str(args.input) if args.input else args.dataset
    print(f"{args.method} on {source}: {len(res.labels)} points, {len(np.unique(res.labels))} clusters, {total:.1f} s")
    for k, v in res.timings.items():
        print(f"  time {k:<16} {v:8.2f} s")
    for k, v in res.metrics.items():
        if isinstance(v, float):
            print(f"  {k.upper():<5} {v:.4f}")
    if args.output:
        atomic_save_npy(args.output / "labels.npy", res.labels)
        atomic_write_json(args.output / "metrics.json", {
            "source": source, "method": args.method, "params": res.params, "metrics": res.metrics,
            "timings": res.timings, "n_samples": int(len(res.labels))})
        print(f"wrote {args.output / 'labels.npy'} and {args.output / 'metrics.json'}")
    if args.save_model:
        res.estimator.save(args.save_model)
        print(f"saved model to {args.save_model}")
    if args.plot:
        from .plotting import plot_coefficients

        folder = args.output or Path(".")
        est = res.estimator
        if getattr(est, "coef_", None) is not None:
            path = plot_coefficients(est.coef_, est.labels_, folder / "coefficients.png")
            print(f"wrote {path}")
        else:
            print(f"--plot: method {args.method!r} has no coefficient matrix C (coef_) to draw; no figure written")
    return 0


def _check_can_save(method):
    from .models import method_info
    from .pipeline import BASELINES, method_names

    if method in BASELINES or method not in method_names() or method_info(method)["model_kind"] is None:
        savable = [m for m in method_names() if m not in BASELINES and method_info(m)["model_kind"] is not None]
        raise ValueError(f"--save-model: method {method!r} has no model file (its labels are the result); methods "
                         f"that save one: {', '.join(savable)}")


def _cmd_predict(args):
    from .io import atomic_save_npy, atomic_write_json
    from .metrics import evaluate
    from .pipeline import load_input

    model = _load_model(args.model)
    if args.input is None and args.dataset is None:
        raise ValueError("give --input FILE or --dataset NAME")
    # SSCN / NCSC / energy models read raw pixels in [0, 1] unless fitted on feature vectors ("linear"); SENet features
    raw = type(model).__name__ in ("SSCN", "NCSC", "EnergySubspaceClustering")
    raw = raw and getattr(model, "architecture_", "conv") != "linear"
    X, y, _ = load_input(args.dataset, args.input, args.labels, args.data_dir, raw=raw)
    labels = model.predict(X)
    print(f"predicted {len(labels)} points")
    metrics = evaluate(y, labels) if y is not None else {}
    for k, v in metrics.items():
        if isinstance(v, float):
            print(f"  {k.upper():<5} {v:.4f}")
    if args.output:
        atomic_save_npy(args.output / "labels.npy", labels)
        atomic_write_json(args.output / "metrics.json", {"metrics": metrics, "n_samples": int(len(labels))})
    return 0


def _load_model(path):
    """Load a saved model, choosing the class from the kind recorded in its JSON (the registry's model-file kinds)."""
    from .models import get_method, method_for_model_kind

    kind = None
    try:
        p = Path(path)
        meta = p.with_suffix(".json") if p.suffix in (".json", ".safetensors") else Path(f"{p}.json")
        kind = json.loads(meta.read_text("utf-8")).get("kind")
    except (OSError, ValueError, AttributeError, RecursionError):
        pass  # the loader below reports missing or malformed files (deeply nested JSON included)
    cls = method_for_model_kind(kind) if isinstance(kind, str) else None
    # unknown or missing kind: SENet's loader reports what is wrong with the file
    return (cls or get_method("senet")).load(path)


def _cmd_datasets(args):
    from .data import dataset_missing_files, default_data_dir, list_datasets
    from .data.datasets import describe_datasets

    root = args.data_dir if args.data_dir is not None else default_data_dir()
    about = describe_datasets()
    print(f"data folder: {root} (--data-dir or $SELFEXPRESS_DATA_DIR to change)")
    print(f"  {'name':<22} {'here':<5} what")
    print(f"  {'synthetic':<22} {'yes':<5} 5 subspaces of dim 6 in R^15, 200 points each (generated, no files)")
    n_present = 1
    for name in list_datasets():
        missing = dataset_missing_files(name, root)
        n_present += not missing
        more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
        note = f" (missing {missing[0]}{more})" if missing else ""
        print(f"  {name:<22} {'no' if missing else 'yes':<5} {about.get(name, '')}{note}")
    print(f"{n_present} of {len(list_datasets()) + 1} present; missing files are looked for in <folder>/<family>/ "
          "and <folder>/ (load_dataset(name, download=True) fetches the downloadable ones)")
    return 0


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    handler = {"cluster": _cmd_cluster, "predict": _cmd_predict, "datasets": _cmd_datasets}[args.command]
    try:
        return handler(args)
    except (ValueError, FileNotFoundError, PermissionError, KeyError) as exc:
        if args.debug:
            raise
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(f"selfexpress: error: {msg}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("selfexpress: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
