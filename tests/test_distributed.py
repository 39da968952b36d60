"""Data-parallel training: 2 processes (gloo, torchrun-style environment) against one process.

The two ranks are launched as subprocesses running this file with ``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``,
``MASTER_PORT`` and ``LOCAL_RANK`` set, as ``torchrun`` would; each calls
:func:`selfexpress.distributed.init_from_env` and then trains exactly what the test trains in one process:

* the shared :class:`~selfexpress.train.Trainer` on a toy regression without clipping, with an uneven batch
  (21 rows over 2 ranks): the all-reduced gradient must equal the single-process full-batch gradient;
* a tiny SENet (60 points of 3 subspaces, width 16, 20 iterations), Alg. 1 with batch 20 and Alg. 2 with
  batch 15 (8 + 7 rows): same loss curve and final weights as one process, identical weights on both ranks
  after every iteration, checkpoints written by rank 0 only, and a 2-process checkpoint resumed in one
  process continues the single-process run, and so does a 2-process resume where only rank 0 has the
  checkpoint;
* a configuration that differs between the ranks (here the seed) is refused on every rank.
"""

import hashlib
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import selfexpress.distributed as sdist

pytestmark = pytest.mark.skipif(
    not (torch.distributed.is_available() and torch.distributed.is_gloo_available()),
    reason="torch.distributed with the gloo backend is not available in this torch build")

WORLD = 2
RTOL = 1e-4  # float reductions run in another order across 2 processes


# ----------------------------------------------------------------------------------------- shared set-ups
def _data():
    from selfexpress.data import make_union_of_subspaces

    X, y = make_union_of_subspaces(3, 2, 8, 20, random_state=0)[:2]
    return X.astype(np.float32), y


def _senet(algorithm, batch_size, **kw):
    from selfexpress.models.senet import SENet

    return SENet(n_clusters=3, hidden_sizes=(16,), embed_dim=16, gamma=50.0, n_iter=20, batch_size=batch_size,
                 algorithm=algorithm, block_size=32, lr=1e-2, lr_threshold=None, grad_clip=None, n_nonzero=20,
                 affinity="symmetric", n_init=2, random_state=0, teacher=None, **kw)  # Alg. 1 / 2, not the teacher


SENET_RUNS = {"sgd": ("sgd", 20), "two_pass": ("two_pass", 15)}


def _toy_trainer(**kw):
    from selfexpress.train import Trainer, seeded

    g = torch.Generator().manual_seed(0)
    X = torch.randn(63, 3, generator=g)
    y = X @ torch.tensor([1.0, -2.0, 0.5]) + 0.1 * torch.randn(63, generator=g)
    with seeded(1):
        module = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))

    def loss_fn(idx):
        err = module(X[idx]).squeeze(1) - y[idx]
        loss = (err ** 2).mean()
        return loss, {"mae": float(err.detach().abs().mean())}

    grads = []

    def record(trainer, iteration, logs):  # after the step: .grad holds the (all-reduced) gradient
        grads.append([p.grad.detach().clone().numpy() for p in trainer.params])

    kw = {"random_state": 0, **kw}
    tr = Trainer(module, loss_fn, 63, n_iter=6, batch_size=21, lr=1e-2, callbacks=[record], **kw)
    tr.run()
    return tr, grads


def _param_digest(module):
    h = hashlib.sha1()
    for t in module.state_dict().values():
        h.update(t.detach().numpy().tobytes())
    return h.hexdigest()


def _digest_callback(digests):
    def cb(trainer, iteration, logs):
        digests.append(_param_digest(trainer.module))
    return cb


# ----------------------------------------------------------------------------------------- worker (one rank)
def _worker(out):
    torch.set_num_threads(1)
    assert sdist.init_from_env()
    rank = sdist.get_rank()
    result = {"rank": rank, "world_size": sdist.get_world_size()}
    t0 = time.perf_counter()

    tr, grads = _toy_trainer(distributed=True)
    result["toy"] = {"loss": tr.history["train"]["loss"], "mae": tr.history["train"]["mae"],
                     "rank": tr.rank, "world_size": tr.world_size}
    np.savez(out / f"toy_grads_{rank}.npz", *[g for step in grads for g in step])
    try:  # rank 1 uses another seed: every rank must refuse before training
        _toy_trainer(distributed=True, random_state=rank)
    except ValueError as exc:
        result["mismatch"] = str(exc)

    X, _ = _data()
    for name, (algorithm, bs) in SENET_RUNS.items():
        digests = []
        ckpt = out / f"ckpt_{name}_rank{rank}"
        model = _senet(algorithm, bs, checkpoint_dir=ckpt, checkpoint_every=10)
        model.fit(X, callbacks=[_digest_callback(digests)])
        result[name] = {"history": model.history_["train"], "digests": digests,
                        "labels": model.labels_.tolist(), "ckpt_written": ckpt.exists(),
                        "timings": model.timings_}
        np.savez(out / f"{name}_weights_{rank}.npz",
                 **{k: v.numpy() for k, v in model.module_.state_dict().items()})
    # resume the Alg. 1 run from its iteration-10 checkpoint on 2 ranks: only rank 0 has the checkpoint folder
    resume_dir = out / f"resume_rank{rank}"
    if rank == 0:
        resume_dir.mkdir()
        for suffix in (".json", ".safetensors"):
            src = out / "ckpt_sgd_rank0" / f"ckpt-000000010{suffix}"
            (resume_dir / src.name).write_bytes(src.read_bytes())
        (resume_dir / "latest.json").write_text(json.dumps({"checkpoint": "ckpt-000000010", "iteration": 10}))
    model = _senet("sgd", 20, checkpoint_dir=resume_dir, checkpoint_every=10, resume=True).fit(X)
    result["resumed"] = {"history": model.history_["train"], "n_iter": model.n_iter_}
    np.savez(out / f"resumed_weights_{rank}.npz", **{k: v.numpy() for k, v in model.module_.state_dict().items()})
    result["seconds"] = time.perf_counter() - t0
    (out / f"result_{rank}.json").write_text(json.dumps(result))
    sdist.shutdown()


# ----------------------------------------------------------------------------------------- launching
def _free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    """Run the worker on 2 ranks once for the module; returns (output folder, per-rank results, seconds)."""
    out = tmp_path_factory.mktemp("ddp")
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE")}
    root = str(Path(__file__).resolve().parents[1])
    env.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()), WORLD_SIZE=str(WORLD), OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")])))
    t0 = time.perf_counter()
    procs = [subprocess.Popen([sys.executable, __file__, str(out)], env={**env, "RANK": str(r), "LOCAL_RANK": str(r)},
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=root)
             for r in range(WORLD)]
    logs = []
    try:
        for p in procs:
            logs.append(p.communicate(timeout=240)[0].decode(errors="replace"))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    seconds = time.perf_counter() - t0
    for r, (p, log) in enumerate(zip(procs, logs)):
        assert p.returncode == 0, f"rank {r} failed (exit {p.returncode}):\n{log[-4000:]}"
    results = [json.loads((out / f"result_{r}.json").read_text()) for r in range(WORLD)]
    return out, results, seconds


# ----------------------------------------------------------------------------------------- tests
def test_helpers_without_a_process_group():
    assert not sdist.is_initialized() and not sdist.is_active()
    assert sdist.get_rank() == 0 and sdist.get_world_size() == 1 and sdist.is_main_process()
    assert sdist.init_from_env(environ={}) is False  # plain launch: nothing to do
    assert not sdist.launched_by_torchrun({}) and sdist.launched_by_torchrun({"RANK": "0", "WORLD_SIZE": "2"})
    assert sdist.resolve("auto") is False and sdist.resolve(False) is False
    with pytest.raises(ValueError, match="initialised torch.distributed process group"):
        sdist.resolve(True)
    with pytest.raises(ValueError, match="True, False or 'auto'"):
        sdist.resolve("yes")
    with pytest.raises(ValueError, match="MASTER_ADDR"):
        sdist.init_from_env(environ={"RANK": "0", "WORLD_SIZE": "2"})
    with pytest.raises(ValueError, match="RANK=2"):
        sdist.init_from_env(environ={"RANK": "2", "WORLD_SIZE": "2", "MASTER_ADDR": "x", "MASTER_PORT": "1"})


def test_distributed_option_is_validated_in_fit():
    X, _ = _data()
    with pytest.raises(ValueError, match="distributed"):
        _senet("sgd", 20, distributed="on").fit(X)
    with pytest.raises(ValueError, match="process group"):
        _senet("sgd", 20, distributed=True).fit(X)
    assert _senet("sgd", 20).get_params()["distributed"] == "auto"


def test_ranks_ran_data_parallel(two_ranks):
    _, results, seconds = two_ranks
    assert [r["rank"] for r in results] == [0, 1] and {r["world_size"] for r in results} == {WORLD}
    assert [r["toy"]["rank"] for r in results] == [0, 1] and {r["toy"]["world_size"] for r in results} == {WORLD}
    for r in results:  # a configuration that differs between ranks is refused on every rank
        assert "ranks [1] run a different configuration" in r["mismatch"]
    print(f"2-rank launch wall time {seconds:.1f} s (after init: {[round(r['seconds'], 1) for r in results]} s; "
          f"training: {[[round(r[n]['timings']['train'], 2) for n in SENET_RUNS] for r in results]} s)")


def test_all_reduced_gradient_equals_the_full_batch_gradient(two_ranks):
    """Uneven shards (11 + 10 rows of 21): weighting by m_r / M gives the single-process gradient."""
    out, results, _ = two_ranks
    tr, grads = _toy_trainer()
    ref = [g for step in grads for g in step]
    for r in range(WORLD):
        with np.load(out / f"toy_grads_{r}.npz") as f:
            got = [f[f"arr_{i}"] for i in range(len(f.files))]
        assert len(got) == len(ref)
        for a, b in zip(got, ref):
            np.testing.assert_allclose(a, b, rtol=RTOL, atol=1e-6)
        np.testing.assert_allclose(results[r]["toy"]["loss"], tr.history["train"]["loss"], rtol=RTOL)
        np.testing.assert_allclose(results[r]["toy"]["mae"], tr.history["train"]["mae"], rtol=RTOL)


@pytest.mark.parametrize("name", list(SENET_RUNS))
def test_senet_two_processes_match_one(two_ranks, name, tmp_path):
    out, results, _ = two_ranks
    X, _ = _data()
    algorithm, bs = SENET_RUNS[name]
    digests = []
    ref = _senet(algorithm, bs, checkpoint_dir=tmp_path / "ckpt", checkpoint_every=10)
    ref.fit(X, callbacks=[_digest_callback(digests)])
    h_ref = ref.history_["train"]
    weights_ref = {k: v.numpy() for k, v in ref.module_.state_dict().items()}
    for r in range(WORLD):
        h = results[r][name]["history"]
        assert h["iter"] == h_ref["iter"] == list(range(1, 21))
        for key in ("loss", "rec", "reg", "b", "lr"):  # the global batch values, not the rank's shard
            np.testing.assert_allclose(h[key], h_ref[key], rtol=RTOL, atol=1e-7, err_msg=f"{name} rank {r} {key}")
        with np.load(out / f"{name}_weights_{r}.npz") as f:
            for k, v in weights_ref.items():
                np.testing.assert_allclose(f[k], v, rtol=RTOL, atol=1e-6, err_msg=f"{name} rank {r} {k}")
        assert results[r][name]["labels"] == results[0][name]["labels"]
        with np.load(out / f"{name}_weights_{r}.npz") as f:
            worst_w = max(float(np.max(np.abs(f[k] - v) / np.maximum(np.abs(v), 1e-6))) for k, v in weights_ref.items())
        worst_l = float(np.max(np.abs(np.subtract(h["loss"], h_ref["loss"])) / np.abs(h_ref["loss"])))
        print(f"{name} rank {r}: max rel. difference to one process: loss {worst_l:.1e}, weights {worst_w:.1e}")
    # the same weights, bit for bit, on both ranks after every step
    assert results[0][name]["digests"] == results[1][name]["digests"] and len(results[0][name]["digests"]) == 20
    # only rank 0 wrote checkpoints
    assert results[0][name]["ckpt_written"] and not results[1][name]["ckpt_written"]
    assert not (out / f"ckpt_{name}_rank1").exists()


def test_two_process_checkpoint_resumes_in_one_process(two_ranks, tmp_path):
    """A checkpoint holds the global state only: resume the 2-rank run's iteration-10 checkpoint alone."""
    out, results, _ = two_ranks
    X, _ = _data()
    ckpt = out / "ckpt_sgd_rank0"
    assert (ckpt / "ckpt-000000010.json").exists()
    resumed_dir = tmp_path / "ckpt"
    resumed_dir.mkdir()
    for suffix in (".json", ".safetensors"):
        (resumed_dir / f"ckpt-000000010{suffix}").write_bytes((ckpt / f"ckpt-000000010{suffix}").read_bytes())
    (resumed_dir / "latest.json").write_text(json.dumps({"checkpoint": "ckpt-000000010", "iteration": 10}))
    model = _senet("sgd", 20, checkpoint_dir=resumed_dir, checkpoint_every=10, resume=True).fit(X)
    ref = _senet("sgd", 20).fit(X)
    assert model.n_iter_ == 20
    np.testing.assert_allclose(model.history_["train"]["loss"], ref.history_["train"]["loss"], rtol=RTOL)
    for k, v in ref.module_.state_dict().items():
        np.testing.assert_allclose(model.module_.state_dict()[k].numpy(), v.numpy(), rtol=RTOL, atol=1e-6)


def test_two_process_resume_reads_the_checkpoint_on_rank_0_only(two_ranks):
    """2 ranks resume from iteration 10; rank 1 has no checkpoint folder (rank 0 broadcasts the state)."""
    out, results, _ = two_ranks
    X, _ = _data()
    ref = _senet("sgd", 20).fit(X)
    for r in range(WORLD):
        assert results[r]["resumed"]["n_iter"] == 20
        np.testing.assert_allclose(results[r]["resumed"]["history"]["loss"], ref.history_["train"]["loss"], rtol=RTOL)
        with np.load(out / f"resumed_weights_{r}.npz") as f:
            for k, v in ref.module_.state_dict().items():
                np.testing.assert_allclose(f[k], v.numpy(), rtol=RTOL, atol=1e-6)
    assert not (out / "resume_rank1").exists()


if __name__ == "__main__":  # one rank of the two_ranks fixture
    _worker(Path(sys.argv[1]))
