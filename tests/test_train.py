"""The shared trainer: schedule, clipping, callbacks, progress bar, checkpoint / resume."""

import json
import math

import numpy as np
import pytest
import torch

from selfexpress.train import Trainer, seeded, train


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _problem(seed=0, n=40, init_seed=None):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, 3, generator=g)
    y = X @ torch.tensor([1.0, -2.0, 0.5]) + 0.1 * torch.randn(n, generator=g)
    with seeded(seed if init_seed is None else init_seed):
        module = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))

    def loss_fn(idx):
        pred = module(X[idx]).squeeze(1)
        loss = ((pred - y[idx]) ** 2).mean()
        return loss, {"mse": float(loss.detach())}

    return module, loss_fn, n


def _params(module):
    return [p.detach().clone() for p in module.parameters()]


def test_loss_decreases_and_history():
    module, loss_fn, n = _problem()
    tr = train(module, loss_fn, n, n_iter=60, batch_size=10, lr=1e-2, random_state=0)
    h = tr.history["train"]
    assert tr.iteration == 60
    assert h["iter"] == list(range(1, 61))
    assert set(h) >= {"loss", "lr", "mse"}
    assert np.mean(h["loss"][-10:]) < 0.5 * np.mean(h["loss"][:10])
    assert not module.training  # left in eval mode


def test_cosine_schedule_per_epoch_to_lr_min():
    module, loss_fn, n = _problem()
    tr = train(module, loss_fn, n, n_iter=40, batch_size=10, lr=1e-2, lr_min=1e-4, random_state=0)
    lrs = tr.history["train"]["lr"]
    assert tr.iters_per_epoch == 4 and tr.n_epochs == 10
    # constant within an epoch, cosine across epochs
    for e in range(10):
        assert len(set(np.round(lrs[4 * e:4 * e + 4], 12))) == 1
        assert lrs[4 * e] == pytest.approx(1e-4 + (1e-2 - 1e-4) * (1 + math.cos(math.pi * e / 10)) / 2)
    assert tr.optimizer.param_groups[0]["lr"] == pytest.approx(1e-4)


def test_grad_clipping_bounds_the_global_norm():
    module, loss_fn, n = _problem()
    norms = []

    def cb(trainer, it, logs):  # grads are those of the step just taken (clipped)
        norms.append(torch.sqrt(sum((p.grad ** 2).sum() for p in trainer.params)).item())

    train(module, loss_fn, n, n_iter=10, batch_size=10, grad_clip=1e-3, callbacks=[cb], random_state=0)
    assert max(norms) <= 1e-3 * (1 + 1e-5)


def test_param_lrs_groups_and_unknown_name():
    module, loss_fn, n = _problem()
    tr = Trainer(module, loss_fn, n, n_iter=5, batch_size=10, lr=1e-3, param_lrs={"2.bias": 0.5})
    assert [g["lr"] for g in tr.optimizer.param_groups] == [1e-3, 0.5]
    with pytest.raises(ValueError, match="unknown parameters"):
        Trainer(module, loss_fn, n, n_iter=5, batch_size=10, param_lrs={"nope": 0.1})


def test_manual_backward_loss_fn():
    """A loss function may fill .grad itself and return a float (the two-pass SENet path)."""
    module2, loss_fn2, n = _problem()

    def manual(idx):
        loss, logs = loss_fn2(idx)
        loss.backward()
        return float(loss.detach()), logs

    train(module2, manual, n, n_iter=15, batch_size=10, random_state=3)
    module3, loss_fn3, _ = _problem()
    train(module3, loss_fn3, n, n_iter=15, batch_size=10, random_state=3)
    for a, b in zip(module2.parameters(), module3.parameters()):
        assert torch.equal(a, b)


def test_same_seed_same_run_and_global_rng_untouched():
    before = torch.get_rng_state()
    m1, f1, n = _problem()
    train(m1, f1, n, n_iter=12, batch_size=7, random_state=5)
    assert torch.equal(before, torch.get_rng_state())
    m2, f2, _ = _problem()
    train(m2, f2, n, n_iter=12, batch_size=7, random_state=5)
    for a, b in zip(m1.parameters(), m2.parameters()):
        assert torch.equal(a, b)
    m3, f3, _ = _problem()
    train(m3, f3, n, n_iter=12, batch_size=7, random_state=6)
    assert any(not torch.equal(a, b) for a, b in zip(m1.parameters(), m3.parameters()))


def test_every_epoch_visits_each_sample_once():
    seen = []
    module, loss_fn, n = _problem(n=30)

    def rec(idx):
        seen.append(idx.clone())
        return loss_fn(idx)

    train(module, rec, n, n_iter=6, batch_size=10, random_state=0)
    assert sorted(torch.cat(seen[:3]).tolist()) == list(range(30))
    assert sorted(torch.cat(seen[3:]).tolist()) == list(range(30))
    assert not torch.equal(torch.cat(seen[:3]), torch.cat(seen[3:]))


def test_callbacks_every_and_eval_history():
    module, loss_fn, n = _problem()

    def ev(trainer, it, logs):
        return {"score": it * 2.0}

    ev.every = 4
    tr = train(module, loss_fn, n, n_iter=10, batch_size=10, callbacks=[ev], random_state=0)
    assert tr.history["eval"]["iter"] == [4, 8, 10]  # and always at the last iteration
    assert tr.history["eval"]["score"] == [8.0, 16.0, 20.0]


def test_nonfinite_loss_raises():
    module, _, n = _problem()

    def bad(idx):
        return module(torch.full((len(idx), 3), float("nan"))).sum()

    with pytest.raises(FloatingPointError, match="iteration 1"):
        train(module, bad, n, n_iter=3, batch_size=10)


def test_progress_bar_shows_running_loss(capsys):
    module, loss_fn, n = _problem()
    train(module, loss_fn, n, n_iter=5, batch_size=10, verbose=True)
    err = capsys.readouterr().err
    assert "loss=" in err and "5/5" in err
    train(module, loss_fn, n, n_iter=5, batch_size=10, verbose=False)
    assert capsys.readouterr().err == ""


def test_checkpoint_resume_is_bit_identical(tmp_path):
    kw = dict(n_iter=23, batch_size=7, lr=1e-2, random_state=1, grad_clip=0.5, fingerprint={"run": 1})
    m_ref, f_ref, n = _problem()
    ref = train(m_ref, f_ref, n, **kw)

    m1, f1, _ = _problem()
    calls = []

    def crash(trainer, it, logs):
        calls.append(it)
        if it == 13:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(m1, f1, n, checkpoint_dir=tmp_path, checkpoint_every=5, callbacks=[crash], **kw)
    latest = json.loads((tmp_path / "latest.json").read_text())
    assert latest["iteration"] == 10
    assert len(list(tmp_path.glob("ckpt-*.safetensors"))) == 2  # keep_checkpoints=2

    m2, f2, _ = _problem(init_seed=9)  # different init: everything must come from the checkpoint
    res = train(m2, f2, n, checkpoint_dir=tmp_path, checkpoint_every=5, resume=True, **kw)
    assert res.iteration == 23
    for a, b in zip(m_ref.parameters(), m2.parameters()):
        assert torch.equal(a, b)
    assert res.history["train"]["loss"] == ref.history["train"]["loss"]
    assert res.history["train"]["lr"] == ref.history["train"]["lr"]
    assert json.loads((tmp_path / "latest.json").read_text())["iteration"] == 23


def test_resume_refuses_other_run_and_starts_fresh_without_checkpoint(tmp_path):
    m, f, n = _problem()
    train(m, f, n, n_iter=4, batch_size=10, checkpoint_dir=tmp_path, fingerprint={"a": 1})
    m2, f2, _ = _problem()
    with pytest.raises(ValueError, match="different run"):
        train(m2, f2, n, n_iter=4, batch_size=10, checkpoint_dir=tmp_path, resume=True, fingerprint={"a": 2})
    m3, f3, _ = _problem()
    tr = train(m3, f3, n, n_iter=4, batch_size=10, checkpoint_dir=tmp_path / "empty", resume=True)
    assert tr.iteration == 4


def test_resume_after_completion_is_a_no_op(tmp_path):
    m, f, n = _problem()
    train(m, f, n, n_iter=4, batch_size=10, checkpoint_dir=tmp_path)
    m2, f2, _ = _problem(init_seed=4)
    calls = []

    def g(idx):
        calls.append(1)
        return f2(idx)

    tr = train(m2, g, n, n_iter=4, batch_size=10, checkpoint_dir=tmp_path, resume=True)
    assert calls == [] and tr.iteration == 4
    for a, b in zip(m.parameters(), m2.parameters()):
        assert torch.equal(a, b)


@pytest.mark.parametrize("bad", [dict(n_iter=0), dict(batch_size=-1), dict(lr=0.0), dict(schedule="step"),
                                 dict(grad_clip=-1.0), dict(checkpoint_every=0)])
def test_bad_arguments(bad):
    module, loss_fn, n = _problem()
    kw = dict(n_iter=3, batch_size=5)
    kw.update(bad)
    with pytest.raises(ValueError):
        Trainer(module, loss_fn, n, **kw)


def test_eta_uses_the_moving_window_not_the_slow_start():
    from collections import deque

    from selfexpress.train import _eta

    assert _eta(deque([0.0]), 100) == "?"
    # 50 slow steps (1 s each) then 50 fast ones (0.1 s): the window of the last 50 gives 0.1 s per step
    ends = deque(maxlen=51)
    t = 0.0
    ends.append(t)
    for k in range(100):
        t += 1.0 if k < 50 else 0.1
        ends.append(t)
    assert _eta(ends, 600) == "0:01:00"
    assert _eta(deque([0.0, 2.0]), 3600) == "2:00:00"
