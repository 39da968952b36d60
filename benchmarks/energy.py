"""Energy-based self-expressiveness (LDRSC, energy-based-ssc.txt) on Fashion-MNIST-10k and MNIST-10k, on a CPU.

    # the recorded runs (benchmarks/results/energy/*.json), about 47 / 31 / 20 minutes on the shared machine:
    python benchmarks/energy.py --dataset fashion-mnist-test --pretrain-epochs 25 --joint-epochs 3 --ablation \
        --out fashion10k
    python benchmarks/energy.py --dataset mnist-10k --pretrain-epochs 15 --joint-epochs 3 --out mnist10k
    python benchmarks/energy.py --dataset mnist-10k --pretrain-epochs 15 --joint-epochs 3 --flip 0 \
        --out mnist10k_noflip
    python benchmarks/energy.py --n 2000 ...            # a random subset (development)

1. Stage 1 (self-supervised dictionary learning: MoCo InfoNCE, momentum encoder, memory bank) once.
2. Stage 2 (joint loss, eq. 5) from the stage-1 encoder with energy coefficients, C on the clean images,
   (|C| + |C^T|) / 2, spectral clustering: ACC / NMI / ARI.
3. ``--ablation``: stage 2 again from the *same* stage-1 encoder, with inner-product (attention) coefficients and
   the same budget (epochs, batch, dictionary sample, learning rates): the paper's Table 5 side by side.

Diagnostics: k-means on the stage-1 embeddings (what the representation alone gives), and ``predict`` on the
training images against ``labels_`` (the inductive rule). The record (benchmarks/results/energy/<out>.json) holds the
machine, commit, schedule and hyper-parameters, wall time per stage, peak RSS, and the paper's figures; it is
rewritten after each step, so an interrupted run leaves what it finished.

Fashion-MNIST-test is the paper's 10k subset (1,000 images per class). Pixels / 255. One torch thread by default
(a shared 2-core machine).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import _common  # noqa: F401  (sets sys.path)
from _common import DATA_DIR, Stages, peak_rss_mb, write_result

PAPER = {  # energy-based-ssc.txt Tables 1, 2, 5 (ResNet-50 on a GPU; lambda1 searched in {5, ..., 25})
    "fashion-mnist-10k": {"acc": 0.863, "nmi": 0.802, "ari": 0.730},
    "fashion-mnist-1k_energy_vs_attention": {"energy": {"acc": 0.984, "nmi": 0.966, "ari": 0.965},
                                             "attention": {"acc": 0.977, "nmi": 0.954, "ari": 0.950}},
    "senet_fashion-mnist-10k": {"acc": 0.712, "nmi": 0.685, "ari": 0.575},
}


def _metrics(y, labels):
    from selfexpress.metrics import ari, clustering_accuracy, nmi

    return {"acc": round(float(clustering_accuracy(y, labels)), 4),
            "nmi": round(float(nmi(y, labels, average_method="geometric")), 4),
            "ari": round(float(ari(y, labels)), 4)}


def _load(name, n, seed):
    from selfexpress.data import load_dataset

    ds = load_dataset(name, data_dir=str(DATA_DIR), verbose=False)
    X = ds.images.reshape(len(ds.images), -1).astype(np.float32) / 255.0
    y = np.asarray(ds.labels)
    if n and n < len(X):
        sel = np.sort(np.random.default_rng(seed).choice(len(X), n, replace=False))
        X, y = X[sel], y[sel]
    return X, y


def _round(d):
    return {k: round(float(v), 2) for k, v in d.items()}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="fashion-mnist-test")
    p.add_argument("--n", type=int, default=0, help="random subset of this size (0: all)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--pretrain-epochs", type=int, default=40)
    p.add_argument("--joint-epochs", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--width", type=int, default=16)
    p.add_argument("--lambda1", type=float, default=10.0)
    p.add_argument("--lambda2", type=float, default=1.0)
    p.add_argument("--n-nonzero", type=int, default=100)
    p.add_argument("--n-dictionary", type=int, default=1024)
    p.add_argument("--flip", type=float, default=0.5, help="horizontal-flip probability (digits: 0)")
    p.add_argument("--ablation", action="store_true", help="also inner-product coefficients on the same budget")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--verbose", action="store_true", help="progress bars")
    p.add_argument("--save-model", help="save the fitted energy model here (safetensors + JSON) for re-evaluation")
    p.add_argument("--out", default="fashion10k", help="record tag: benchmarks/results/energy/<out>.json")
    a = p.parse_args()

    import torch
    from sklearn.cluster import KMeans

    from selfexpress.models.energy import EnergySubspaceClustering

    torch.set_num_threads(a.threads)
    st = Stages()
    with st("load"):
        X, y = _load(a.dataset, a.n, a.seed)
    params = dict(n_clusters=int(len(np.unique(y))), width=a.width, batch_size=a.batch_size, lambda1=a.lambda1,
                  lambda2=a.lambda2, n_nonzero=a.n_nonzero, n_dictionary=a.n_dictionary, flip=a.flip,
                  random_state=a.seed, verbose=a.verbose)
    record = {"benchmark": "energy", "dataset": a.dataset, "n_samples": int(len(X)), "seed": a.seed,
              "schedule": {"pretrain_epochs": a.pretrain_epochs, "joint_epochs": a.joint_epochs,
                           "batch_size": a.batch_size, "threads": a.threads},
              "paper": PAPER, "results": {}}

    def save():
        record["stage_seconds"] = dict(st.times)
        record["peak_rss_mb"] = round(peak_rss_mb(), 1)
        write_result(a.out, record)

    # 1. stage 1 + stage 2 with energy coefficients
    t0 = time.perf_counter()
    with st("fit_energy"):
        model = EnergySubspaceClustering(n_epochs_pretrain=a.pretrain_epochs, n_epochs=a.joint_epochs,
                                         coefficients="energy", **params).fit(X)
    record["params"] = {k: (list(v) if isinstance(v, tuple) else v) for k, v in model.get_params().items()
                        if k != "pretrained_encoder"}
    record["n_parameters"] = model.n_parameters_
    t = model.timings_
    res = {"metrics": _metrics(y, model.labels_), "timings": _round(t),
           "train_minutes": round((t.get("pretrain", 0) + t.get("joint", 0)) / 60, 2),
           "fit_minutes": round((time.perf_counter() - t0) / 60, 2)}
    h = model.history_.get("joint", {}).get("train", {})
    res["joint_last"] = {k: round(float(h[k][-1]), 4) for k in ("loss", "contrastive", "rec", "reg") if k in h}
    C = model.coef_
    res["coef_max_mean"] = round(float(C.max(axis=1).toarray().mean()), 5)
    with st("predict_train"):
        res["predict_agreement_with_labels"] = round(float(np.mean(model.predict(X) == model.labels_)), 4)
    record["results"]["energy"] = res
    print("energy", res, flush=True)
    if a.save_model:
        record["model_file"] = str(model.save(a.save_model))
    save()

    # diagnostic: what the stage-1 representation alone gives under k-means
    with st("diagnostic_kmeans"):
        pre = EnergySubspaceClustering(n_epochs_pretrain=0, n_epochs=0,
                                       pretrained_encoder=model.pretrained_encoder_, **params)
        pre._check_params()
        pre.module_ = pre._build(len(X))
        pre.module_.encoder_q.load_state_dict(model.pretrained_encoder_)
        pre.n_features_in_ = X.shape[1]
        pre.dictionary_ = torch.zeros(1, pre.embed_dim)
        Z = pre.transform(X)
        record["results"]["kmeans_on_stage1_embedding"] = _metrics(
            y, KMeans(params["n_clusters"], n_init=10, random_state=a.seed).fit_predict(Z))
        Zf = model.transform(X)
        record["results"]["kmeans_on_final_embedding"] = _metrics(
            y, KMeans(params["n_clusters"], n_init=10, random_state=a.seed).fit_predict(Zf))
    print("kmeans", record["results"]["kmeans_on_stage1_embedding"], record["results"]["kmeans_on_final_embedding"],
          flush=True)
    save()

    # 2. ablation: inner-product coefficients from the same stage-1 encoder, same stage-2 budget
    if a.ablation:
        t0 = time.perf_counter()
        with st("fit_inner_product"):
            ip = EnergySubspaceClustering(n_epochs_pretrain=a.pretrain_epochs, n_epochs=a.joint_epochs,
                                          coefficients="inner_product",
                                          pretrained_encoder=model.pretrained_encoder_, **params).fit(X)
        t = ip.timings_
        r = {"metrics": _metrics(y, ip.labels_), "timings": _round(t),
             "train_minutes_stage2": round(t.get("joint", 0) / 60, 2),
             "fit_minutes_excluding_shared_stage1": round((time.perf_counter() - t0) / 60, 2),
             "coef_max_mean": round(float(ip.coef_.max(axis=1).toarray().mean()), 5),
             "learned_scale": round(float(ip.module_.energy.log_scale.detach().exp()), 3)}
        record["results"]["inner_product"] = r
        print("inner_product", r, flush=True)
        save()


if __name__ == "__main__":
    main()
