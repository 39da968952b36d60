"""NCSC (ncsc.txt) on MNIST / Fashion-MNIST, inductively, and against DSC-Net on a small subset.

    python benchmarks/ncsc.py full --dataset mnist-full --budget-min 55          # -> results/ncsc/mnist-full.json
    python benchmarks/ncsc.py full --dataset fashion-mnist-full --budget-min 55
    python benchmarks/ncsc.py inductive --n-train 10000                          # -> results/ncsc/inductive.json
    python benchmarks/ncsc.py vs-dscnet --n 2000                                 # -> results/ncsc/vs_dscnet_2000.json

``full``: NCSC on all of a data set (raw pixels / 255). The CPU schedule is sized to a wall-time budget: the
auto-encoder is pretrained for ``--epochs-ae`` epochs, then the cost of one joint-training step is measured and
the number of joint epochs chosen so that the whole fit ends within ``--budget-min`` minutes (at least one
epoch). ``labels_`` (the classifier's argmax on every point) give ACC / NMI / ARI.

``inductive``: fit on the first ``--n-train`` images of MNIST-train (all 60,000 with ``--n-train 60000``), label
the 10,000 MNIST-test images with ``predict``; training ACC vs test ACC.

``vs-dscnet``: DSC-Net (dense n x n self-expressive layer + spectral clustering) and NCSC on the first ``--n``
MNIST-test images, both from the same pretrained auto-encoder; each in its own process (its own peak RSS).

Every record has n_samples, wall time per stage, peak RSS, machine, commit, the schedule used and the paper's
(ncsc.txt: 60 pretraining epochs at lr 1e-3, batch 5,000, lr 1e-3 / 1e-5 for classifier / auto-encoder, u = 0.1,
l = 0.7 -> 0.9, lambda1 = 10; MNIST 94.09 / 86.12 / 87.52, Fashion-MNIST 72.14 / 68.60 / 59.17 ACC / NMI / ARI).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

import numpy as np

import _common  # noqa: F401  (sets sys.path)
from _common import DATA_DIR, REPO, Stages, peak_rss_mb, write_result

WORK = REPO / ".cache" / "ncsc_bench"
PAPER = {"mnist-full": {"acc": 0.9409, "nmi": 0.8612, "ari": 0.8752},
         "fashion-mnist-full": {"acc": 0.7214, "nmi": 0.6860, "ari": 0.5917},
         "schedule": {"n_epochs_ae": 60, "lr_ae": 1e-3, "batch_size": 5000, "lr": 1e-3, "lr_ae_joint": 1e-5,
                      "u": 0.1, "l": [0.7, 0.9], "lambda1": 10, "hardware": "one TITAN X GPU, ~15 min (MNIST)"}}


def _load(name, n=None, features="pixels"):
    """``(X, y)``: pixels / 255 (the conv auto-encoder's input) or the cached scattering + PCA(500) features."""
    if features == "scattering":
        from selfexpress.features import dataset_features

        X, y = dataset_features(name, data_dir=str(DATA_DIR), verbose=False)
        X, y = np.ascontiguousarray(X, dtype=np.float32), np.asarray(y)
    else:
        from selfexpress.data import load_dataset

        ds = load_dataset(name, data_dir=str(DATA_DIR), verbose=False)
        X = ds.images.reshape(len(ds.images), -1).astype(np.float32) / 255.0
        y = np.asarray(ds.labels)
    return (X, y) if n is None else (X[:n], y[:n])


def _metrics(y, labels):
    from selfexpress.metrics import ari, clustering_accuracy, nmi

    return {"acc": clustering_accuracy(y, labels), "nmi": nmi(y, labels, average_method="geometric"),
            "nmi_arithmetic": nmi(y, labels, average_method="arithmetic"), "ari": ari(y, labels)}


def _fmt(m):
    return " ".join(f"{k} {v:.4f}" for k, v in m.items() if isinstance(v, float))


def _params(a):
    return dict(n_clusters=10, batch_size=a.batch_size, batch_size_ae=a.batch_size_ae, lr=a.lr, u=a.u,
                lambda1=a.lambda1, lambda_balance=a.lambda_balance, balance=a.balance, random_state=a.seed,
                verbose=True, architecture="linear" if a.features == "scattering" else "auto")


def _step_seconds(model, X, n_steps=3):
    """Measured wall time of one joint-training step (forward + backward + Adam) on a batch of ``batch_size``."""
    import torch

    from selfexpress.models.ncsc import ncsc_batch_loss

    arch = model.architecture_
    module = model._build(X.shape[1], arch)
    module.autoencoder.load_state_dict(model.pretrained_autoencoder_)
    opt = torch.optim.Adam(module.parameters(), 1e-9)
    xb = torch.as_tensor(X[:model.batch_size])
    times = []
    for _ in range(n_steps):
        t0 = time.perf_counter()
        loss, _ = ncsc_batch_loss(module, xb, lambda1=model.lambda1, lambda_cl=1.0, u=model.u, l=0.9, alpha=1.0,
                                  beta=1.0, lambda_balance=model.lambda_balance, balance=model.balance,
                                  decode=arch == "conv")
        opt.zero_grad()
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def fit_in_budget(X, a, st):
    """Pretrain, then as many joint epochs as the remaining budget allows; returns ``(model, schedule)``."""
    from selfexpress.models.ncsc import NCSC

    t_start = time.perf_counter()
    with st("pretrain"):
        pre = NCSC(**_params(a), n_epochs_ae=a.epochs_ae, n_epochs=0).fit(X)
    with st("probe"):
        step = _step_seconds(pre, X)
    n = len(X)
    per_epoch = max(1, n // min(a.batch_size, n)) * step * 1.3 + n * 2e-5  # margin for a loaded machine; + labelling
    left = a.budget_min * 60 - (time.perf_counter() - t_start)
    n_epochs = max(1, int(left // per_epoch)) if a.n_epochs is None else a.n_epochs
    print(f"[bench] step {step:.2f} s, epoch ~{per_epoch:.0f} s, {left:.0f} s left -> {n_epochs} joint epochs",
          flush=True)
    model = NCSC(**_params(a), n_epochs=n_epochs, pretrained_autoencoder=pre.pretrained_autoencoder_,
                 l_warmup_epochs=1)
    with st("joint+label"):
        model.fit(X)
    model.timings_["pretrain"] = pre.timings_["pretrain"]
    schedule = {"n_epochs_ae": a.epochs_ae, "batch_size_ae": a.batch_size_ae, "n_epochs": n_epochs,
                "batch_size": a.batch_size, "lr": a.lr, "lr_ae": 1e-3, "lr_ae_joint": model.lr_ae_joint,
                "u": a.u, "l": [model.l_start, model.l_end], "lambda1": a.lambda1, "lambda_balance": a.lambda_balance,
                "normalize_latent": model.normalize_latent, "beta": model.beta, "balance": model.balance,
                "input": a.features, "architecture": model.architecture_, "step_seconds": round(step, 3),
                "budget_min": a.budget_min}
    return model, schedule


# ----------------------------------------------------------------------------------------------- parts
def part_full(a):
    st = Stages()
    with st("load"):
        X, y = _load(a.dataset, features=a.features)
    model, schedule = fit_in_budget(X, a, st)
    m = _metrics(y, model.labels_)
    print(f"NCSC on {a.dataset} ({len(y)}): {_fmt(m)}", flush=True)
    return {"dataset": a.dataset, "n_samples": int(len(y)), "fit": m, "paper": PAPER.get(a.dataset),
            "cluster_sizes": np.bincount(model.labels_, minlength=10).tolist(), "schedule": schedule,
            "paper_schedule": PAPER["schedule"], "n_parameters": model.n_parameters_,
            "stage_seconds": {**{f"fit.{k}": round(v, 3) for k, v in model.timings_.items()}, **st.times},
            "wall_seconds": st.total, "within_60_min": st.total <= 3600, "peak_rss_mb": round(peak_rss_mb(), 1)}


def part_inductive(a):
    st = Stages()
    with st("load"):
        if a.features == "scattering":  # one basis: fitted on the training split, applied to the test split
            from selfexpress.features import dataset_features

            Xf, yf, basis = dataset_features("mnist-train", data_dir=str(DATA_DIR), verbose=False,
                                             return_transform=True)
            Xt, yt = dataset_features("mnist-test", data_dir=str(DATA_DIR), verbose=False, basis=basis)
            X, y = np.ascontiguousarray(Xf[:a.n_train]), np.asarray(yf[:a.n_train])
            Xt, yt = np.ascontiguousarray(Xt), np.asarray(yt)
        else:
            X, y = _load("mnist-train", a.n_train)
            Xt, yt = _load("mnist-test")
    model, schedule = fit_in_budget(X, a, st)
    fit = _metrics(y, model.labels_)
    with st("predict_test"):
        pred = model.predict(Xt)
    test = _metrics(yt, pred)
    print(f"NCSC fit on {len(y)} MNIST-train: {_fmt(fit)}\n  predict 10,000 MNIST-test: {_fmt(test)}", flush=True)
    return {"n_samples": int(len(y)), "n_samples_predicted": int(len(yt)), "fit": fit, "predict_test": test,
            "acc_gap_points": round(100 * (fit["acc"] - test["acc"]), 2), "schedule": schedule,
            "stage_seconds": {**{f"fit.{k}": round(v, 3) for k, v in model.timings_.items()}, **st.times},
            "wall_seconds": st.total, "peak_rss_mb": round(peak_rss_mb(), 1)}


def part_pretrain_small(a):
    from safetensors.torch import save_file

    from selfexpress.models.ncsc import NCSC

    st = Stages()
    X, _ = _load("mnist-test", a.n)
    with st("pretrain"):
        pre = NCSC(**_params(a), n_epochs_ae=a.epochs_ae, n_epochs=0).fit(X)
    WORK.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in pre.pretrained_autoencoder_.items()}, str(WORK / f"ae_{a.n}.safetensors"))
    return {"n_samples": len(X), "stage_seconds": st.times, "peak_rss_mb": round(peak_rss_mb(), 1)}


def part_small(a, method):
    from safetensors.torch import load_file

    st = Stages()
    X, y = _load("mnist-test", a.n)
    ae = load_file(str(WORK / f"ae_{a.n}.safetensors"))
    if method == "dscnet":
        from selfexpress.models.dscnet import DSCNet

        model = DSCNet(n_clusters=10, pretrained_autoencoder=ae, random_state=a.seed, n_neighbors=min(300, a.n // 10),
                       verbose=True)
    else:
        from selfexpress.models.ncsc import NCSC

        model = NCSC(**{**_params(a), "batch_size": min(a.batch_size, a.n)}, n_epochs=a.n_epochs or 30,
                     pretrained_autoencoder=ae)
    with st("fit"):
        model.fit(X)
    m = _metrics(y, model.labels_)
    print(f"{method} on {len(y)} MNIST-test images: {_fmt(m)}", flush=True)
    return {"n_samples": int(len(y)), "n_parameters": model.n_parameters_, "fit": m,
            "stage_seconds": {**{f"fit.{k}": round(v, 3) for k, v in model.timings_.items()}, **st.times},
            "params": {k: v for k, v in model.get_params().items() if k != "pretrained_autoencoder"},
            "peak_rss_mb": round(peak_rss_mb(), 1)}


def _child(a, part):
    """Run one part in a fresh process (its own peak RSS); returns its JSON record."""
    out = WORK / f"{part}.json"
    argv = [sys.executable, __file__, "_child", "--child-part", part, "--child-out", str(out)] + a.passthrough
    subprocess.run(argv, check=True)
    return json.loads(out.read_text())


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("part", choices=["full", "inductive", "vs-dscnet", "_child"])
    p.add_argument("--dataset", default="mnist-full")
    p.add_argument("--n-train", type=int, default=10000)
    p.add_argument("--n", type=int, default=2000)
    p.add_argument("--budget-min", type=float, default=55.0)
    p.add_argument("--epochs-ae", type=int, default=5)
    p.add_argument("--n-epochs", type=int, default=None, help="joint epochs (default: fill the budget)")
    p.add_argument("--batch-size", type=int, default=1000)
    p.add_argument("--batch-size-ae", type=int, default=256)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--u", type=float, default=0.7)
    p.add_argument("--lambda1", type=float, default=1.0)
    p.add_argument("--lambda-balance", type=float, default=1.0)
    p.add_argument("--balance", choices=["entropy", "uniform"], default="entropy")
    p.add_argument("--features", choices=["pixels", "scattering"], default="pixels",
                   help="pixels: conv auto-encoder (the paper); scattering: cached scattering + PCA(500) features, "
                        "identity encoder and MLP classifier (no pretraining)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", default=None, help="record tag: benchmarks/results/ncsc/<out>.json (default: the "
                                                "dataset, inductive or vs_dscnet_<n>)")
    p.add_argument("--child-part"), p.add_argument("--child-out")
    a = p.parse_args(argv)
    import torch

    if a.threads:
        torch.set_num_threads(a.threads)
    a.passthrough = [x for x in (argv if argv is not None else sys.argv[1:])[1:]]
    t0 = time.perf_counter()
    if a.part == "_child":
        rec = {"pretrain_small": part_pretrain_small, "dscnet": lambda a: part_small(a, "dscnet"),
               "ncsc": lambda a: part_small(a, "ncsc")}[a.child_part](a)
        from selfexpress.io import atomic_write_json

        atomic_write_json(a.child_out, rec)
        return 0
    if a.part == "full":
        rec = part_full(a)
        name = a.out or a.dataset
    elif a.part == "inductive":
        rec = part_inductive(a)
        name = a.out or "inductive"
    else:
        WORK.mkdir(parents=True, exist_ok=True)
        rec = {"n_samples": a.n, "data": f"first {a.n} MNIST-test images",
               "pretrain": _child(a, "pretrain_small"), "dscnet": _child(a, "dscnet"), "ncsc": _child(a, "ncsc"),
               "note": "both from the same pretrained auto-encoder (pretraining time listed once)"}
        name = a.out or f"vs_dscnet_{a.n}"
    rec["total_seconds"] = round(time.perf_counter() - t0, 1)
    write_result(name, rec)
    return 0


if __name__ == "__main__":
    sys.exit(main())
