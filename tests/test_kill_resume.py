"""Kill-and-resume: SENet training in a subprocess is SIGKILLed mid-run (twice), rerun with ``resume=True``, and ends
with exactly the weights and labels of an uninterrupted run with the same seed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from selfexpress.data import make_union_of_subspaces
from selfexpress.models.senet import SENet

pytestmark = pytest.mark.usefixtures("one_torch_thread")

KW = dict(hidden_sizes=(16, 16), embed_dim=16, n_iter=60, batch_size=20, block_size=17, gamma=50.0,
          affinity="symmetric", random_state=0, lr_threshold=0.05, n_init=3)

CHILD = r"""
import sys, time
import torch
torch.set_num_threads(1)
from selfexpress.data import make_union_of_subspaces
from selfexpress.models.senet import SENet

ckpt, out, pause = sys.argv[1], sys.argv[2], float(sys.argv[3])
X, _, _ = make_union_of_subspaces(3, 2, 6, 25, random_state=1)

def pace(trainer, iteration, logs):  # slows training down so that the parent can kill it mid-run
    time.sleep(pause)

kw = KW
SENet(3, checkpoint_dir=ckpt, checkpoint_every=3, resume=True, **kw).fit(X, callbacks=[pace]).save(out)
"""


def _latest(ckpt):
    try:
        return json.loads((ckpt / "latest.json").read_text())["iteration"]
    except (OSError, ValueError, KeyError):
        return 0


def _start(script, ckpt, out, pause):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, str(script), str(ckpt), str(out), str(pause)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def _kill_after(proc, ckpt, iteration, timeout=120):
    """SIGKILL ``proc`` once a checkpoint at >= ``iteration`` exists; returns the checkpointed iteration."""
    t0 = time.time()
    while _latest(ckpt) < iteration:
        if proc.poll() is not None:
            raise AssertionError(f"training ended before it could be killed: {proc.stdout.read().decode()[-2000:]}")
        if time.time() - t0 > timeout:
            proc.kill()
            raise AssertionError("no checkpoint appeared")
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    return _latest(ckpt)


def test_sigkill_then_resume_gives_the_uninterrupted_weights(tmp_path):
    script = tmp_path / "train.py"
    script.write_text(CHILD.replace("kw = KW", f"kw = {KW!r}"))
    ckpt, out = tmp_path / "ckpt", tmp_path / "model"

    first = _kill_after(_start(script, ckpt, out, 0.05), ckpt, 12)
    second = _kill_after(_start(script, ckpt, out, 0.05), ckpt, first + 15)  # killed again, after resuming
    assert first < second < KW["n_iter"] and not out.with_suffix(".json").exists()

    done = _start(script, ckpt, out, 0.0)
    log = done.communicate(timeout=300)[0].decode()
    assert done.returncode == 0, log[-3000:]
    assert _latest(ckpt) == KW["n_iter"]

    X, _, _ = make_union_of_subspaces(3, 2, 6, 25, random_state=1)
    ref = SENet(3, **KW).fit(X)  # uninterrupted, no checkpoints
    resumed = SENet.load(out)
    assert resumed.n_iter_ == KW["n_iter"]
    for (name, p), q in zip(ref.module_.state_dict().items(), resumed.module_.state_dict().values()):
        assert torch.equal(p, q), name
    np.testing.assert_array_equal(ref.labels_, resumed.labels_)
    assert resumed.history_["train"]["loss"] == ref.history_["train"]["loss"]
    assert not list(ckpt.glob("*.tmp"))  # a kill mid-write leaves no visible partial checkpoint behind
