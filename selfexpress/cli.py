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


DEVICE_HELP = ("where the torch stages run: auto (default: CUDA when torch sees a GPU, else the CPU), cpu, cuda or "
               "cuda:N; cuda without a CUDA build of torch is refused (README, section GPU)")


def _device_arg(args):
    """``--device`` resolved to a string ("cpu", "cuda:0"), or None when not given (the estimators' "auto").

    A device that cannot be used here (cuda without CUDA, a typo) is a ValueError: one line, exit status 2.
    TF32 matmuls are allowed on CUDA unless ``SELFEXPRESS_TF32=0`` (:func:`selfexpress._device.configure_tf32`).
    """
    from ._device import configure_tf32, resolve_device

    given = getattr(args, "device", None)
    dev = resolve_device("auto" if given is None else given)
    if dev.type == "meta":
        raise ValueError("--device meta holds no values; choose auto, cpu, cuda or cuda:N")
    configure_tf32(device=dev)
    return None if given is None else str(dev)


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
    src.add_argument("--skip-header", action="store_true",
                     help="the first line of the --input text file (.csv, .txt) is a header: skip it")
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
                   help="EnSC: oracle rounds of the certified solver (default 20, until every row is certified; the "
                        "default up to 8,000 points, above which one oracle pass runs and the re-solved rows are "
                        "reported uncertified); 0 = restricted solves on the initial supports only, uncertified")
    m.add_argument("--affinity", choices=["symmetric", "knn"], help="graph from C")
    m.add_argument("--n-components", type=int, help="eigenvectors for spectral clustering")
    m.add_argument("--backend", choices=["local", "dask", "faiss"],
                   help="SENet coefficient stage: in-process blocks, Dask tasks, or faiss candidate search")
    m.add_argument("--dask-address", help="scheduler address for --backend dask (default: a local 2-worker cluster)")
    m.add_argument("--random-state", type=int, default=0)
    m.add_argument("--device", metavar="DEVICE", help=DEVICE_HELP)
    out = c.add_argument_group("output")
    out.add_argument("--output", type=Path, help="folder for labels.npy and metrics.json")
    out.add_argument("--save-model", type=Path,
                     help="save the fitted model to this path (<path>.safetensors + <path>.json) for `predict`; "
                          "methods with a model file: senet, ncsc, sscn, energy (checked before the run)")
    out.add_argument("--plot", action="store_true",
                     help="also write coefficients.png (|C| sorted by cluster) into --output (default: here); "
                          "methods with a coefficient matrix C only (it says so when it writes nothing)")
    out.add_argument("-q", "--quiet", action="store_true", help="no progress bars")

    pr = sub.add_parser("predict", help="label new points with a saved SENet, NCSC, SSCN or energy model",
                        description="Label points the model never saw. A model fitted on scattering features keeps "
                                    "its feature transform: give it raw images (--dataset or --input images.npy) and "
                                    "they are mapped into its training basis; feature vectors given with --input "
                                    "must come from that basis (`selfexpress features --basis-from MODEL`).")
    pr.add_argument("--model", type=Path, required=True, help="model file saved by `cluster --save-model`")
    pr.add_argument("--input", type=Path, help="file of images or feature vectors, one per row (.npy, .csv, .mat, idx)")
    pr.add_argument("--dataset", help="built-in dataset name instead of --input (raw images through the model's "
                                      "own feature transform)")
    pr.add_argument("--labels", type=Path, help="optional ground-truth labels file for the metrics")
    pr.add_argument("--data-dir", type=Path, help="folder with the dataset files (e.g. ../shared/data)")
    pr.add_argument("--cache-dir", type=Path, help="feature cache folder")
    pr.add_argument("--output", type=Path, help="folder for labels.npy and metrics.json")
    pr.add_argument("--device", metavar="DEVICE", help=DEVICE_HELP + "; the model loads there, whatever device it "
                    "was saved from")

    fe = sub.add_parser("features", help="make scattering + PCA features of images (to cluster or to predict)",
                        description="Scattering (J=3, L=8) + uncentred PCA + unit rows of grey-scale images. Writes "
                                    "the features (.npy), a sidecar .json naming the basis (fingerprint) and the "
                                    "fitted transform (<output stem>-transform.safetensors/.json). Without --basis-from a "
                                    "new basis is fitted on the images; with it, the images are projected on a "
                                    "saved model's (or features file's) basis, so a model can label them.")
    fsrc = fe.add_mutually_exclusive_group(required=True)
    fsrc.add_argument("--dataset", help="built-in image dataset name (mnist-test, fashion-mnist-full, ...)")
    fsrc.add_argument("--input", type=Path, help="file of grey-scale images: (n, H, W) .npy, idx, or (n, 784) rows")
    fe.add_argument("--output", type=Path, required=True, help="features file to write (.npy)")
    fe.add_argument("--basis-from", type=Path, help="a saved model, a saved transform, or a features .npy made by "
                                                    "this command: reuse its basis instead of fitting one")
    fe.add_argument("--n-components", type=int, default=500, help="feature dimension of a new basis (default 500)")
    fe.add_argument("--resize", choices=["bilinear", "pad"], default="bilinear",
                    help="how images become 32x32 for a new basis: bilinear resize (the SENet reference, default) "
                         "or zero padding")
    fe.add_argument("--data-dir", type=Path, help="folder with the dataset files (e.g. ../shared/data)")
    fe.add_argument("--cache-dir", type=Path, help="feature cache folder")
    fe.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    fe.add_argument("--device", metavar="DEVICE", help=DEVICE_HELP + " (scattering and projection)")

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
        "backend": args.backend, "device": _device_arg(args),
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
                  skip_header=args.skip_header, **params)
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
        record = {"source": source, "method": args.method, "params": res.params, "metrics": res.metrics,
                  "timings": res.timings, "n_samples": int(len(res.labels))}
        settings = getattr(res.estimator, "settings_", None)
        if settings is not None:  # SENet: its "auto" parameters as the device resolved them
            record["settings"] = {"recipe": getattr(res.estimator, "recipe_", None),
                                  **{k: list(v) if isinstance(v, tuple) else v for k, v in settings.items()}}
        atomic_write_json(args.output / "metrics.json", record)
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

    device = _device_arg(args)
    model = _load_model(args.model, device)
    if device is not None and getattr(model, "feature_transform_", None) is not None:
        model.feature_transform_.device = device
    if (args.input is None) == (args.dataset is None):
        raise ValueError("give exactly one of --input FILE or --dataset NAME")
    X, y = _predict_input(model, args)
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


def _predict_input(model, args):
    """``(X, y)`` for ``predict``: raw pixels for pixel models, features in the model's training basis otherwise.

    Never re-bases silently: a dataset is mapped through the model's stored transform (refused without one);
    feature vectors from a file are checked against the fingerprint of their sidecar."""
    from .features import read_features_sidecar
    from .pipeline import _read_points, load_input

    ft = getattr(model, "feature_transform_", None)
    # pixel models (registry input kind "pixels") read raw pixels, except NCSC / SSCN fitted on vectors ("linear")
    arch = getattr(model, "architecture_", None)
    pixels = arch == "conv" or (getattr(model, "_input_kind", "features") == "pixels" and arch != "linear")
    if pixels:
        X, y, _ = load_input(args.dataset, args.input, args.labels, args.data_dir, raw=True)
        return X, y
    if args.dataset is not None:
        if ft is None and args.dataset not in ("synthetic", "digits"):
            raise ValueError(f"model {args.model} holds no feature transform, so the basis of its training features "
                             f"is unknown and the features of {args.dataset!r} cannot be put in it (a new basis would "
                             "give wrong labels without any error). Save the model with this version "
                             "(`selfexpress cluster --dataset ... --save-model`), or give --input FEATURES.npy made in "
                             "its training basis")
        X, y, _ = load_input(args.dataset, None, args.labels, args.data_dir, args.cache_dir, feature_transform=ft,
                             verbose=False)
        return X, y
    points = _read_points(args.input)
    if ft is not None and ft.accepts_images(points):
        X, y, _ = load_input(input_path=args.input, labels_path=args.labels, cache_dir=args.cache_dir,
                             feature_transform=ft)
        return X, y
    side = read_features_sidecar(args.input)
    if ft is not None and side is None:
        print(f"selfexpress: warning: {args.input} holds feature vectors with no record of their basis; this model "
              f"was trained in basis {ft.fingerprint_} and their labels are only right if they were made in it. Make "
              f"them with `selfexpress features --basis-from {args.model}`, or give raw images", file=sys.stderr)
    elif ft is not None and side.get("fingerprint") != ft.fingerprint_:
        raise ValueError(f"{args.input} was made in feature basis {side.get('fingerprint')}, but model {args.model} "
                         f"was trained in basis {ft.fingerprint_}: its labels would be wrong. Make the features with "
                         f"`selfexpress features --basis-from {args.model}`, or give the raw images")
    elif ft is None and side is not None:
        print(f"selfexpress: warning: {args.input} was made in feature basis {side.get('fingerprint')}, but model "
              f"{args.model} holds no feature transform to check it against", file=sys.stderr)
    X, y, _ = load_input(input_path=args.input, labels_path=args.labels)
    return X, y


def _cmd_features(args):
    from .features import ScatteringPCA, features_sidecar, read_features_sidecar
    from .io import atomic_save_npy, read_model_kind
    from .pipeline import load_input

    if args.output.suffix != ".npy":
        raise ValueError(f"--output must be a .npy file, got {args.output}")
    if args.n_components < 1:
        raise ValueError(f"--n-components must be positive, got {args.n_components}")
    device = _device_arg(args) or "auto"
    basis = None
    if args.basis_from is not None:
        src = args.basis_from
        side = read_features_sidecar(src) if src.suffix == ".npy" else None
        if side is not None:
            src = src.parent / side["transform_file"]
        elif src.suffix == ".npy":
            raise ValueError(f"{src} has no sidecar .json naming its basis (only features made by "
                             "`selfexpress features` carry one); give a model file instead")
        elif read_model_kind(src) is None:
            raise ValueError(f"--basis-from {args.basis_from}: no such model, transform or features file")
        basis = ScatteringPCA.load(src, cache_dir=args.cache_dir, verbose=not args.quiet, device=device)
    t0 = time.perf_counter()
    if args.dataset is not None:
        if basis is None:
            from .features import dataset_features

            X, y, basis = dataset_features(args.dataset, data_dir=args.data_dir, n_components=args.n_components,
                                           cache_dir=args.cache_dir, verbose=not args.quiet, resize=args.resize,
                                           return_transform=True, device=device)
        else:
            X, y, _, basis = load_input(args.dataset, data_dir=args.data_dir, cache_dir=args.cache_dir,
                                        verbose=not args.quiet, feature_transform=basis, return_transform=True)
    else:
        images, y = _images_of(args.input), None
        if basis is None:
            basis = ScatteringPCA(n_components=args.n_components, resize=args.resize, cache_dir=args.cache_dir,
                                  verbose=not args.quiet, device=device)
            X = basis.fit_transform(images)
        elif basis.accepts_images(images):
            X = basis.transform(images)
        else:
            H, W = basis.image_shape_
            raise ValueError(f"{args.input} holds an array of shape {images.shape}, not the {H}x{W} images that the "
                             f"basis of {args.basis_from} was fitted on")
    atomic_save_npy(args.output, X)
    tbase = args.output.with_name(args.output.stem + "-transform")
    basis.save(tbase)
    side = features_sidecar(args.output, basis, args.dataset or args.input, transform_file=tbase.name)
    msg = f"wrote {args.output} ({X.shape[0]} x {X.shape[1]}, basis {basis.fingerprint_}), {side} and {tbase}.*"
    if y is not None:
        atomic_save_npy(args.output.with_name(args.output.stem + ".labels.npy"), y)
        msg += f" and {args.output.stem}.labels.npy"
    print(f"{msg} in {time.perf_counter() - t0:.1f} s")
    return 0


def _images_of(path):
    from .pipeline import _read_points

    return np.asarray(_read_points(path))


def _load_model(path, device=None):
    """Load a saved model, choosing the class from the kind recorded in its JSON (the registry's model-file kinds),
    onto ``device`` (None: "auto", CUDA when available, else the CPU; never the device it was saved from)."""
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
    return (cls or get_method("senet")).load(path, device=device)


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
    handler = {"cluster": _cmd_cluster, "predict": _cmd_predict, "features": _cmd_features,
               "datasets": _cmd_datasets}[args.command]
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
