"""SENet training speed (iterations/s, Alg. 1 vs Alg. 2) and peak memory against N (senet.txt App. B.4, Fig. 11).

Every configuration runs in its own subprocess (so peak RSS is its own): it builds the network, draws N
points on a union of subspaces, runs ``--warmup`` iterations, then times ``--iters`` iterations of the real
training loop (:class:`selfexpress.train.Trainer`: loss, backward, clip, Adam). Memory is the growth of the
process's peak RSS (``ru_maxrss``) while training on the N points over its value after setup and two
warm-up iterations on 200 points, i.e. what the N-point iterations allocate (activations, graphs, coefficient
blocks), not the interpreter, torch's lazily loaded kernels and pools, or the data.

    python benchmarks/senet_speed.py                 # speed at N = 1k, 10k (width 1024), memory sweep
    python benchmarks/senet_speed.py --width 256 --memory-ns 1000,5000,20000 --tag w256

Record: ``benchmarks/results/senet_speed/<tag>.json`` (``default``: the default settings).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import _common  # noqa: F401
from _common import REPO, write_result


def _child(args):
    import numpy as np
    import torch

    from selfexpress.data import make_union_of_subspaces
    from selfexpress.models.senet import SENetModule, senet_backward_two_pass, senet_loss_sgd
    from selfexpress.train import Trainer

    torch.set_num_threads(args.threads)
    n_sub = 10
    X, _, _ = make_union_of_subspaces(n_sub, 6, args.dim, -(-args.n // n_sub), random_state=0)
    X = torch.as_tensor(X[: args.n] / np.linalg.norm(X[: args.n], axis=1, keepdims=True), dtype=torch.float32)
    torch.manual_seed(0)
    module = SENetModule(args.dim, (args.width,) * 3, args.width)
    step = senet_loss_sgd if args.algorithm == "sgd" else senet_backward_two_pass

    def make(n_iter, data):
        def loss_fn(idx):
            loss, rec, reg = step(module, data, idx, 200.0, 0.9, args.block_size)
            return loss, {}

        return Trainer(module, loss_fn, data.shape[0], n_iter=n_iter, batch_size=100, lr=1e-3, grad_clip=1e-3,
                       random_state=0)

    make(2, X[:200]).run()  # load kernels, thread pools, allocator pools on a tiny problem
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # before any iteration on the N points
    make(args.warmup, X).run()
    tr = make(args.iters, X)
    t0 = time.perf_counter()
    tr.run()
    secs = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"n": args.n, "algorithm": args.algorithm, "width": args.width, "block_size": args.block_size,
                      "iters": args.iters, "seconds": secs, "it_per_s": args.iters / secs,
                      "rss_after_setup_mb": base / 1024, "peak_rss_mb": peak / 1024,
                      "training_peak_growth_mb": (peak - base) / 1024,
                      "data_mb": X.numel() * 4 / 2**20}))


def _run(n, algorithm, width, iters, warmup, block_size, dim, threads):
    cmd = [sys.executable, __file__, "--child", "--n", str(n), "--algorithm", algorithm, "--width", str(width),
           "--iters", str(iters), "--warmup", str(warmup), "--block-size", str(block_size), "--dim", str(dim),
           "--threads", str(threads)]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"{cmd} failed:\n{out.stderr[-2000:]}")
    rec = json.loads(out.stdout.strip().splitlines()[-1])
    print(f"  N={n:>6} {algorithm:<8} width {width:<5} {rec['it_per_s']:7.3f} it/s   peak-RSS growth "
          f"{rec['training_peak_growth_mb']:8.1f} MiB", flush=True)
    return rec


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--n", type=int, default=1000, help=argparse.SUPPRESS)
    ap.add_argument("--algorithm", default="sgd", help=argparse.SUPPRESS)
    ap.add_argument("--width", type=int, default=1024)
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--block-size", type=int, default=1000)
    ap.add_argument("--dim", type=int, default=15, help="ambient dimension of the synthetic points")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--speed-ns", default="1000,10000")
    ap.add_argument("--memory-ns", default="1000,2000,5000,10000,20000")
    ap.add_argument("--memory-width", type=int, default=256)
    ap.add_argument("--memory-iters", type=int, default=2)
    ap.add_argument("--tag", default="default",
                    help="record tag: benchmarks/results/senet_speed/<tag>.json (name a run with other settings)")
    args = ap.parse_args(argv)
    if args.child:
        return _child(args)

    load = os.getloadavg()
    print(f"speed: width {args.width}, batch 100, block {args.block_size}, {args.threads} threads, load {load}")
    speed = [_run(n, alg, args.width, args.iters, args.warmup, args.block_size, args.dim, args.threads)
             for n in (int(t) for t in args.speed_ns.split(",")) for alg in ("sgd", "two_pass")]
    print(f"memory: width {args.memory_width}, block {args.block_size}")
    memory = [_run(n, alg, args.memory_width, args.memory_iters, 1, args.block_size, args.dim, args.threads)
              for alg in ("two_pass", "sgd") for n in (int(t) for t in args.memory_ns.split(","))]
    two = [m["training_peak_growth_mb"] for m in memory if m["algorithm"] == "two_pass"]
    one = [m["training_peak_growth_mb"] for m in memory if m["algorithm"] == "sgd"]
    record = {
        "benchmark": "senet_speed",
        "settings": {"width": args.width, "memory_width": args.memory_width, "batch_size": 100,
                     "block_size": args.block_size, "dim": args.dim, "threads": args.threads,
                     "load_average_at_start": load},
        "speed": speed,
        "memory": memory,
        "summary": {
            "it_per_s": {f"{s['algorithm']}@{s['n']}": round(s["it_per_s"], 3) for s in speed},
            "two_pass_peak_growth_mb": dict(zip(args.memory_ns.split(","), [round(v, 1) for v in two])),
            "sgd_peak_growth_mb": dict(zip(args.memory_ns.split(","), [round(v, 1) for v in one])),
            "two_pass_growth_ratio_largest_over_smallest_N": (two[-1] / two[0]) if two and two[0] > 0 else None,
        },
    }
    write_result(args.tag, record)
    return record


if __name__ == "__main__":
    main()
