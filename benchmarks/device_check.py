"""The prepared device check (issue 27): the papers' headline runs on one GPU, one stage per call.

    python benchmarks/device_check.py --stage senet            # one stage, on --device auto (CUDA if present)
    python benchmarks/device_check.py --stage all --smoke      # every stage, tiny sizes, seconds, any machine
    bash benchmarks/device_check.sh [--smoke]                  # what to run when a GPU is lent (<= 8 min)

Stages and the settings they run (the papers' where they fit in the time; what was cut is written in the record):

* ``senet``: SENet on MNIST-full (70,000 scattering + PCA(500) features, computed on the device), senet.txt's
  setting: query/key MLPs 3 x 1024, p = 1024, gamma 200, lambda 0.9, batch 100, Adam 1e-3 with the cosine schedule
  of 100,000 iterations and gradient clipping, trained on N = 5,000 sampled points (Table 6's row: 2,599 s on a
  1080Ti), coefficients of all 70,000 points, kNN graph, spectral clustering. The schedule is the paper's,
  *truncated* at ``--senet-budget`` seconds of training (the record says how many of the 100,000 iterations ran).
* ``ensc``: EnSC on MNIST-full (the same features; gamma 200, tau 0.9, the image preset's graph) with its solvers
  (support search, restricted solves, oracle) on the device; ``algorithm="auto"`` runs the refined solver at 70k.
* ``ncsc``: NCSC on MNIST-full pixels (ncsc.txt: conv auto-encoder pretrained at lr 1e-3, batch 5,000, lr 1e-3 /
  1e-5, u 0.1, l 0.7 -> 0.9, lambda1 10) with ``--ncsc-epochs-ae`` / ``--ncsc-epochs`` epochs (the paper: 60 + ?).
* ``energy``: the energy model (LDRSC) on Fashion-MNIST-10k (the test split) with the paper's ResNet-50 backbone
  (width 64), lambda1 10, lambda2 1, batch 256, ``--energy-epochs-pretrain`` + ``--energy-epochs`` epochs.

Each stage writes ``<results-dir>/[<tag>_]<stage>[_smoke].json`` (by default
``benchmarks/results/device_check/<stage>.json``; first with status "running", then "done"): ACC /
NMI / ARI, wall time per part, peak GPU memory (torch.cuda.max_memory_allocated; None on the CPU), the device and
its name, TF32, torch / CUDA versions, the schedule that ran and the paper's figures, machine and commit.

``--autocast bf16`` (or ``SELFEXPRESS_AUTOCAST=bf16``): the deep models' networks under bf16 autocast (NCSC and
the energy model here; SENet and EnSC stay float32, see selfexpress/_device.py); the records then get the tag
``bf16`` unless ``--tag`` names another, so they do not overwrite the float32 ones, and say ``"autocast"``.

``--smoke``: the same code paths at tiny sizes (a few hundred MNIST images, or random images when the data are
absent; nets of width 16; a few iterations), so that the first real GPU run does not fail on a typo. It runs in
the test suite on the CPU.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import sys
import time
import traceback
from pathlib import Path

import numpy as np

import _common  # noqa: F401  (sets sys.path)
from _common import CACHE_DIR, DATA_DIR, RESULTS, commit, machine, peak_rss_mb

STAGES = ("senet", "ensc", "ncsc", "energy")
PAPER = {
    "senet": {"dataset": "mnist-full", "acc": 0.968, "nmi": 0.918, "ari": 0.931, "n_train": 5000, "n_iter": 100_000,
              "seconds_1080ti": {"N=5000": 2599.21, "N=10000": 4203.35},
              "source": "senet.txt Table 3 (ACC/NMI/ARI) and Table 6 (train + inference time, MNIST-full, 1080Ti)"},
    "ensc": {"dataset": "mnist-full", "acc": 0.980, "nmi": 0.945, "ari": 0.957,
             "source": "senet.txt Table 3 (EnSC, active-set solver on a Xeon E5-2630 CPU)"},
    "ncsc": {"dataset": "mnist-full", "acc": 0.9409, "nmi": 0.8612, "ari": 0.8752,
             "schedule": {"n_epochs_ae": 60, "lr_ae": 1e-3, "batch_size": 5000, "lr": 1e-3, "lr_ae_joint": 1e-5,
                          "u": 0.1, "l": [0.7, 0.9], "lambda1": 10},
             "source": "ncsc.txt (one TITAN X, ~15 min on MNIST)"},
    "energy": {"dataset": "fashion-mnist-10k", "acc": 0.863, "nmi": 0.802, "ari": 0.730, "backbone": "resnet50",
               "source": "energy-based-ssc.txt Table 1 (ResNet-50, GPU)"},
}


# ----------------------------------------------------------------------------------------------- helpers
class TimeBudget:
    """Trainer callback: ends training (by lowering ``trainer.n_iter``) once ``seconds`` of training have passed.
    The learning-rate schedule keeps the length it was built for, so the run is that schedule, truncated."""

    every = 1

    def __init__(self, seconds):
        self.seconds = float(seconds)
        self.t0 = None
        self.stopped_at = None

    def __call__(self, trainer, iteration, logs):
        if self.t0 is None:
            self.t0 = time.perf_counter()
        elif time.perf_counter() - self.t0 > self.seconds and iteration < trainer.n_iter:
            self.stopped_at = iteration
            trainer.n_iter = iteration
        return None


def _metrics(y, labels):
    from selfexpress.metrics import evaluate

    m = evaluate(y, labels)
    return {k: (round(float(v), 4) if isinstance(v, float) else v) for k, v in m.items()}


def _sync(dev):
    import torch

    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def record_path(a, stage):
    """``<results-dir>/[<tag>_]<stage>[_smoke].json``."""
    return Path(a.results_dir) / ("_".join(x for x in (a.tag, stage, "smoke" if a.smoke else "") if x) + ".json")


class Record:
    """One stage's JSON record, rewritten at every step (an interrupted stage leaves what it finished)."""

    def __init__(self, a, stage, dev):
        import torch

        from selfexpress._device import autocast_dtype, device_name, tf32_enabled

        self.path = record_path(a, stage)
        self.dev = dev
        self.t0 = time.perf_counter()
        self.data = {
            "benchmark": "device_check", "stage": stage, "status": "running", "smoke": bool(a.smoke),
            "device": str(dev), "device_name": device_name(dev),
            "tf32": bool(dev.type == "cuda" and torch.backends.cuda.matmul.allow_tf32), "tf32_env": tf32_enabled(),
            "autocast": ("bf16" if stage in AUTOCAST_STAGES and autocast_dtype(dev) is not None else "off"),
            "torch": torch.__version__, "cuda": torch.version.cuda, "paper": PAPER[stage],
            "stage_seconds": {}, "machine": machine(), "commit": commit(),
            "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        }
        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats(dev)
        self.write()

    def part(self, name):
        rec = self

        class _Part:
            def __enter__(self):
                _sync(rec.dev)
                self.t = time.perf_counter()

            def __exit__(self, *exc):
                _sync(rec.dev)
                rec.data["stage_seconds"][name] = round(time.perf_counter() - self.t, 3)
                rec.write()

        return _Part()

    def write(self, **extra):
        import torch

        from selfexpress.io import atomic_write_json

        self.data.update(extra)
        self.data["wall_seconds"] = round(time.perf_counter() - self.t0, 3)
        self.data["peak_gpu_memory_mb"] = (round(torch.cuda.max_memory_allocated(self.dev) / 2 ** 20, 1)
                                           if self.dev.type == "cuda" else None)
        self.data["peak_rss_mb"] = round(peak_rss_mb(), 1)
        atomic_write_json(self.path, self.data)

    def done(self, **extra):
        self.write(status="done", **extra)
        acc = self.data.get("metrics", {}).get("acc")
        print(f"[device_check] {self.data['stage']}: ACC {acc} in {self.data['wall_seconds']:.1f} s on "
              f"{self.data['device_name']}, peak GPU memory {self.data['peak_gpu_memory_mb']} MiB -> {self.path}",
              flush=True)


def _images(a, name, n_smoke):
    """``(images uint8 (n, 28, 28), labels)`` of a dataset; in smoke mode its first ``n_smoke`` images, or random
    images with random labels when the data files are absent."""
    from selfexpress.data import load_dataset

    try:
        ds = load_dataset(name if not a.smoke else name.replace("-full", "-test"), data_dir=a.data_dir,
                          verbose=False)
    except (ValueError, FileNotFoundError):
        if not a.smoke:
            raise
        rng = np.random.default_rng(0)
        return rng.integers(0, 256, (n_smoke, 28, 28), dtype=np.uint8), rng.integers(0, 10, n_smoke)
    if a.smoke:
        return ds.images[:n_smoke], ds.labels[:n_smoke]
    return ds.images, ds.labels


def _features(a, dev, rec):
    """MNIST-full scattering + PCA(500) features made on ``dev`` (smoke: 160 images, 20 dimensions)."""
    from selfexpress.features import ScatteringPCA, dataset_features

    with rec.part("features"):
        if a.smoke:
            images, y = _images(a, "mnist-full", 160)
            X = ScatteringPCA(n_components=20, cache_dir=a.cache_dir, device=dev).fit_transform(images)
        else:
            X, y = dataset_features("mnist-full", data_dir=a.data_dir, cache_dir=a.cache_dir, verbose=True,
                                    device=dev)
    return X, np.asarray(y)


# ----------------------------------------------------------------------------------------------- stages
def stage_senet(a, dev):
    from selfexpress.models import SENet

    rec = Record(a, "senet", dev)
    X, y = _features(a, dev, rec)
    params = dict(SENet._paper_preset)  # 3 x 1024, p 1024, gamma 200, lambda 0.9, 100k it., batch 100, lr 1e-3
    params.update(n_train=5000, random_state=0)
    budget = a.senet_budget
    if a.smoke:
        params.update(hidden_sizes=(16, 16, 16), embed_dim=16, n_iter=30, batch_size=20, n_train=100, n_nonzero=20,
                      n_components=10)
        budget = 60.0
    stop = TimeBudget(budget)
    model = SENet(10, device=dev, verbose=not a.smoke and a.verbose, **params)
    rec.write(params={k: (list(v) if isinstance(v, tuple) else v) for k, v in params.items()}, n_samples=len(y),
              train_budget_seconds=budget)
    with rec.part("fit"):
        model.fit(X, callbacks=[stop])
    n_done = int(model.n_iter_)
    m = _metrics(y, model.labels_)
    rec.done(metrics=m, n_iter_done=n_done, n_iter_schedule=int(params["n_iter"]),
             schedule=(f"the paper's cosine schedule of {params['n_iter']} iterations (batch {params['batch_size']}), "
                       f"truncated after {n_done} iterations ({budget:.0f} s training budget)"
                       if n_done < params["n_iter"] else f"the full schedule of {n_done} iterations"),
             fit_timings={k: round(float(v), 3) for k, v in model.timings_.items()},
             device_of_network=str(next(model.module_.parameters()).device))


def stage_ensc(a, dev):
    from selfexpress.models import ElasticNetSubspaceClustering, method_info

    rec = Record(a, "ensc", dev)
    X, y = _features(a, dev, rec)
    params = dict(method_info("ensc")["presets"]["image"])  # gamma 200, tau 0.9, kNN graph, 15 eigenvectors
    params.update(random_state=0)
    if a.smoke:
        params.update(n_components=10, support_size=30)
    rec.write(params=params, n_samples=len(y))
    with rec.part("fit"):  # the support search, the restricted solves and the oracle on the device
        model = ElasticNetSubspaceClustering(10, device=dev, verbose=not a.smoke and a.verbose, **params).fit(X)
    rec.done(metrics=_metrics(y, model.labels_), algorithm=getattr(model, "algorithm_", None),
             guarantee=getattr(model, "guarantee_", None), ensc_device=str(dev),
             solver_seconds=model.solver_info_.get("times"),
             fit_timings={k: round(float(v), 3) for k, v in model.timings_.items()})


def stage_ncsc(a, dev):
    from selfexpress.models import NCSC

    rec = Record(a, "ncsc", dev)
    with rec.part("load"):
        images, y = _images(a, "mnist-full", 160)
        X = images.reshape(len(images), -1).astype(np.float32) / 255.0
    s = PAPER["ncsc"]["schedule"]
    params = dict(n_epochs_ae=a.ncsc_epochs_ae, lr_ae=s["lr_ae"], batch_size=s["batch_size"], lr=s["lr"],
                  lr_ae_joint=s["lr_ae_joint"], u=s["u"], l_start=s["l"][0], l_end=s["l"][1], lambda1=s["lambda1"],
                  n_epochs=a.ncsc_epochs, random_state=0)
    if a.smoke:
        params.update(n_epochs_ae=1, n_epochs=1, batch_size=80, batch_size_ae=80, channels=(4, 4, 4),
                      classifier_channels=(16, 16))
    model = NCSC(10, device=dev, verbose=not a.smoke and a.verbose, **params)
    _fit_and_record(rec, model, X, y, params,
                    f"{params['n_epochs_ae']} pretraining epochs (paper 60) + {params['n_epochs']} joint epochs, "
                    "bounded to fit the device check's time")


def stage_energy(a, dev):
    from selfexpress.models import EnergySubspaceClustering

    rec = Record(a, "energy", dev)
    with rec.part("load"):
        images, y = _images(a, "fashion-mnist-test", 96)
        X = images.reshape(len(images), -1).astype(np.float32) / 255.0
    params = dict(backbone="resnet50", width=64, lambda1=10.0, lambda2=1.0, batch_size=256,
                  n_epochs_pretrain=a.energy_epochs_pretrain, n_epochs=a.energy_epochs, n_dictionary=1024,
                  random_state=0)
    if a.smoke:
        params.update(width=4, proj_hidden=16, embed_dim=8, energy_hidden=(8, 8), batch_size=32, n_dictionary=64,
                      n_epochs_pretrain=1, n_epochs=1, n_nonzero=10, block_size=48, bn_splits=2, n_init=3)
    model = EnergySubspaceClustering(10, device=dev, verbose=not a.smoke and a.verbose, **params)
    _fit_and_record(rec, model, X, y, params,
                    f"{params['n_epochs_pretrain']} self-supervised + {params['n_epochs']} joint epochs "
                    "(bounded; the paper trains to convergence)")


def _fit_and_record(rec, model, X, y, params, schedule_note):
    """Write the stage's parameters, fit the torch model (timed) and finish the record with its metrics."""
    rec.write(params={k: (list(v) if isinstance(v, tuple) else v) for k, v in params.items()}, n_samples=len(y),
              schedule_note=schedule_note)
    with rec.part("fit"):
        model.fit(X)
    rec.done(metrics=_metrics(y, model.labels_), fit_timings={k: round(float(v), 3) for k, v in
                                                               getattr(model, "timings_", {}).items()},
             device_of_network=str(next(model.module_.parameters()).device))


RUN = {"senet": stage_senet, "ensc": stage_ensc, "ncsc": stage_ncsc, "energy": stage_energy}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--stage", default="all", choices=["all", *STAGES])
    p.add_argument("--smoke", action="store_true", help="tiny sizes: the code paths in seconds, on any machine")
    p.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:N")
    p.add_argument("--data-dir", default=str(DATA_DIR))
    p.add_argument("--cache-dir", default=None, help="feature cache (default: benchmarks' cache; smoke: none)")
    p.add_argument("--results-dir", default=str(RESULTS / "device_check"),
                   help="where the records go (default: benchmarks/results/device_check)")
    p.add_argument("--tag", default="", help="prefix of the record names (<tag>_<stage>.json; default none, "
                                              "'bf16' under --autocast bf16)")
    p.add_argument("--autocast", default=None, choices=["off", "bf16"],
                   help="bf16 autocast of the deep models' networks (NCSC, energy); default: $SELFEXPRESS_AUTOCAST, "
                        "else off")
    p.add_argument("--senet-budget", type=float, default=60.0, help="seconds of SENet training (default 60)")
    p.add_argument("--ncsc-epochs-ae", type=int, default=15)
    p.add_argument("--ncsc-epochs", type=int, default=8)
    p.add_argument("--energy-epochs-pretrain", type=int, default=12)
    p.add_argument("--energy-epochs", type=int, default=2)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's; smoke: 1)")
    p.add_argument("-v", "--verbose", action="store_true", help="progress bars")
    a = p.parse_args(argv)
    if a.cache_dir is None:
        a.cache_dir = False if a.smoke else str(CACHE_DIR)
    return a


#: the stages whose models use the autocast switch (SENet and EnSC stay in float32)
AUTOCAST_STAGES = ("ncsc", "energy")


def main(argv=None):
    import torch

    from selfexpress._device import autocast_mode, configure_tf32, resolve_device

    a = parse_args(argv)
    if a.autocast is not None:  # the models read the switch from the environment
        os.environ["SELFEXPRESS_AUTOCAST"] = a.autocast
    autocast = autocast_mode()  # ValueError naming the allowed values for a bad $SELFEXPRESS_AUTOCAST
    if autocast == "bf16" and not a.tag:
        a.tag = "bf16"
    if a.threads or a.smoke:
        torch.set_num_threads(a.threads or 1)
    dev = resolve_device(a.device)  # ValueError for cuda without CUDA: one line, before any work
    tf32 = configure_tf32(device=dev)
    print(f"[device_check] torch {torch.__version__} (CUDA {torch.version.cuda}), device {dev}, TF32 {tf32}, "
          f"autocast {autocast} ({', '.join(AUTOCAST_STAGES)}), "
          f"{'smoke' if a.smoke else 'full'} run", flush=True)
    failed = []
    for stage in (STAGES if a.stage == "all" else (a.stage,)):
        t0 = time.perf_counter()
        try:
            RUN[stage](a, dev)
        except Exception as exc:  # noqa: BLE001 - record the failure, go on with the next stage
            failed.append(stage)
            print(f"[device_check] {stage} FAILED after {time.perf_counter() - t0:.1f} s: {exc!r}", file=sys.stderr)
            traceback.print_exc()
            path = record_path(a, stage)
            try:
                data = json.loads(path.read_text()) if path.exists() else {"stage": stage}
                data.update(status="failed", error=f"{type(exc).__name__}: {exc}")
                from selfexpress.io import atomic_write_json

                atomic_write_json(path, data)
            except Exception:  # noqa: BLE001
                pass
    return 1 if failed else 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
