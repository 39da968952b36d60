"""bf16 autocast (issue 27), on the CPU: the switch (``SELFEXPRESS_AUTOCAST``, the Trainer's ``autocast``), what
runs in bf16 under it (the deep models' networks), what stays in float32 (their self-expression, SENet), and that
with the switch off nothing changes."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from selfexpress._device import (AUTOCAST_MODES, as_float32, autocast_context, autocast_dtype, autocast_mode,
                                 float32_region)
from selfexpress.train import Trainer

pytestmark = pytest.mark.usefixtures("one_torch_thread")

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def env(monkeypatch):
    """Set ``SELFEXPRESS_AUTOCAST`` for one test (None: unset)."""
    def _set(value):
        if value is None:
            # setenv first, so that monkeypatch records the variable and its teardown also removes a value that
            # the code under test wrote into os.environ (device_check.main(["--autocast", ...]) does)
            monkeypatch.setenv("SELFEXPRESS_AUTOCAST", "")
            monkeypatch.delenv("SELFEXPRESS_AUTOCAST")
        else:
            monkeypatch.setenv("SELFEXPRESS_AUTOCAST", value)
    _set(None)
    return _set


# ----------------------------------------------------------------------------------------------- the switch
@pytest.mark.parametrize("value, mode", [(None, "off"), ("", "off"), ("off", "off"), ("0", "off"), ("FP32", "off"),
                                         ("bf16", "bf16"), (" BFloat16 ", "bf16")])
def test_autocast_mode_from_the_environment(env, value, mode):
    env(value)
    assert autocast_mode() == mode
    assert autocast_dtype("cpu") == (torch.bfloat16 if mode == "bf16" else None)
    assert autocast_dtype("meta") is None  # shapes only: never autocast


@pytest.mark.parametrize("value", ["fp16", "on", "1", "bf-16"])
def test_an_invalid_value_is_a_value_error_naming_the_allowed_ones(env, value):
    env(value)
    for call in (autocast_mode, lambda: autocast_dtype("cpu"), lambda: autocast_context("cpu"),
                 lambda: Trainer(nn.Linear(2, 1), lambda i: torch.zeros(()), 4, n_iter=1, batch_size=2,
                                 autocast="env")):
        with pytest.raises(ValueError, match="SELFEXPRESS_AUTOCAST must be one of 'off', 'bf16'"):
            call()
    with pytest.raises(ValueError, match="autocast must be one of 'off', 'bf16'"):
        Trainer(nn.Linear(2, 1), lambda i: torch.zeros(()), 4, n_iter=1, batch_size=2, autocast="float16")
    assert AUTOCAST_MODES == ("off", "bf16")


def test_float32_region_and_as_float32():
    a, b = torch.randn(4, 3), torch.randn(3, 2)
    assert float32_region(a).__class__.__name__ == "nullcontext"  # no autocast: a no-op
    assert as_float32(a) is a and as_float32(a.double()).dtype == torch.float64
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert (a @ b).dtype == torch.bfloat16
        with float32_region(a):
            assert not torch.is_autocast_enabled("cpu")
            assert (as_float32(a @ b) @ b.T).dtype == torch.float32
        assert torch.is_autocast_enabled("cpu")


# ----------------------------------------------------------------------------------------------- the Trainer
class _Probe(nn.Module):
    """A two-layer net that records the dtype of its hidden product and whether autocast was on."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.a, self.b = nn.Linear(6, 8), nn.Linear(8, 1)
        self.seen = []

    def forward(self, x):
        h = self.a(x)
        self.seen.append((h.dtype, torch.is_autocast_enabled("cpu")))
        return self.b(torch.relu(h))


def _train(**kw):
    g = torch.Generator().manual_seed(1)
    X, y = torch.randn(40, 6, generator=g), torch.randn(40, 1, generator=g)
    module = _Probe()
    tr = Trainer(module, lambda idx: ((module(X[idx]).float() - y[idx]) ** 2).mean(), 40, n_iter=6, batch_size=10,
                 lr=1e-2, random_state=0, **kw)
    tr.run()
    return tr, module


def test_trainer_bf16_runs_the_forward_pass_under_autocast(env):
    tr, module = _train(autocast="bf16")
    assert tr.autocast == "bf16" and tr.autocast_dtype is torch.bfloat16
    assert module.seen == [(torch.bfloat16, True)] * 6
    assert all(math.isfinite(v) for v in tr.history["train"]["loss"])
    assert all(p.dtype == torch.float32 for p in module.parameters())  # weights and Adam state stay float32
    env("bf16")
    tr_env, module_env = _train(autocast="env")
    assert tr_env.autocast == "bf16" and module_env.seen == module.seen
    assert tr_env.history["train"]["loss"] == tr.history["train"]["loss"]


@pytest.mark.parametrize("value", [None, "off"])
def test_trainer_switch_off_is_bit_identical_to_no_switch(env, value):
    ref, ref_module = _train()  # the default: today's Trainer
    assert ref.autocast == "off" and ref.autocast_dtype is None
    assert ref_module.seen == [(torch.float32, False)] * 6
    env(value)
    for kw in ({"autocast": "env"}, {"autocast": "off"}, {"autocast": False}):
        tr, module = _train(**kw)
        assert tr.history["train"]["loss"] == ref.history["train"]["loss"]
        for p, q in zip(module.parameters(), ref_module.parameters()):
            assert torch.equal(p, q)
    env("bf16")  # the environment alone changes nothing for a Trainer that does not opt in (SENet's)
    tr, module = _train()
    assert tr.autocast == "off" and tr.history["train"]["loss"] == ref.history["train"]["loss"]


# ----------------------------------------------------------------------------------------------- the models
def _images():
    from test_energy import _tiny_images

    X, y = _tiny_images(16, 0)
    return X.reshape(len(X), -1), y


_CONV = dict(n_clusters=3, image_shape=(12, 12), kernel_sizes=(3, 3), channels=(3, 4), paddings=(1, 1),
             n_epochs_ae=2, batch_size_ae=40, random_state=0)
MODELS = {
    "NCSC": dict(_CONV, classifier_channels=(8, 8), n_epochs=2, batch_size=30),
    "SSCN": dict(_CONV, max_cluster_dim=2, n_epochs=2, batch_size=30, n_epochs_clf=2, batch_size_clf=30,
                 steps_per_batch=2, n_neighbors=10, n_init=2),
    "DSCNet": dict(_CONV, n_epochs=2, n_neighbors=10, n_init=2),
    "EnergySubspaceClustering": dict(n_clusters=3, image_shape=(12, 12), width=4, proj_hidden=16, embed_dim=8,
                                     energy_hidden=(8, 8), n_epochs_pretrain=1, n_epochs=1, batch_size=16,
                                     n_dictionary=32, bn_splits=2, n_nonzero=10, block_size=16, n_init=2,
                                     random_state=0),
}


def _losses(model):
    return {stage: h["train"]["loss"] if "train" in h else h["loss"] for stage, h in model.history_.items()
            if isinstance(h, dict)}


def _fit_recording(name, monkeypatch):
    """Fit ``name`` on tiny images, recording (dtype, autocast on?) at the self-expression's entry and the
    encoders' outputs."""
    from selfexpress import models
    from selfexpress.models import _autoencoder, energy, ncsc

    seen = {"enc": [], "se": []}

    def record(kind, t):
        seen[kind].append((t.dtype, torch.is_autocast_enabled("cpu")))

    orig_encode = _autoencoder.ConvAutoEncoder.encode
    monkeypatch.setattr(_autoencoder.ConvAutoEncoder, "encode",
                        lambda self, x: (lambda z: (record("enc", z), z)[1])(orig_encode(self, x)))
    if name == "NCSC":
        orig = ncsc.self_expressive_coefficients
        monkeypatch.setattr(ncsc, "self_expressive_coefficients",
                            lambda Z, *a, **k: (record("se", Z), orig(Z, *a, **k))[1])
    elif name == "EnergySubspaceClustering":
        orig_pw = energy.EnergyNet.pairwise
        monkeypatch.setattr(energy.EnergyNet, "pairwise",
                            lambda self, za, zb, chunk=None: (record("se", za), orig_pw(self, za, zb, chunk))[1])
        orig_enc = energy.Encoder.forward
        monkeypatch.setattr(energy.Encoder, "forward",
                            lambda self, x: (lambda z: (record("enc", z), z)[1])(orig_enc(self, x)))
    elif name in ("SSCN", "DSCNet"):
        mm = torch.Tensor.__matmul__

        def matmul(a, b):  # the self-expression products (Q = H H^T, Q Z, C Z) are the only @ in these losses
            if (a.requires_grad or b.requires_grad) and a.dtype != torch.float64:  # not R (float64)
                record("se", a)
            return mm(a, b)
        monkeypatch.setattr(torch.Tensor, "__matmul__", matmul)
    X, _ = _images()
    model = getattr(models, name)(**MODELS[name]).fit(X)
    return model, seen


@pytest.mark.parametrize("name", list(MODELS))
def test_models_under_bf16_networks_in_bf16_self_expression_in_float32(env, monkeypatch, name):
    env("bf16")
    model, seen = _fit_recording(name, monkeypatch)
    assert (torch.bfloat16, True) in seen["enc"]  # the networks ran under autocast
    assert seen["se"] and set(seen["se"]) == {(torch.float32, False)}, seen["se"]  # the self-expression did not
    for stage, losses in _losses(model).items():
        assert losses and all(math.isfinite(v) for v in losses), stage
    assert set(np.unique(model.labels_)) <= {0, 1, 2}
    if hasattr(model, "transform"):
        assert model.transform(_images()[0][:5]).dtype == np.float32


@pytest.mark.parametrize("name", list(MODELS))
def test_models_with_the_switch_off_are_bit_identical_to_no_switch(env, monkeypatch, name):
    from selfexpress import models

    X, _ = _images()
    ref = getattr(models, name)(**MODELS[name]).fit(X)
    env("off")
    other = getattr(models, name)(**MODELS[name]).fit(X)
    assert _losses(other) == _losses(ref)
    np.testing.assert_array_equal(other.labels_, ref.labels_)
    env("bf16")  # and the switch is really read: the losses move
    bf = getattr(models, name)(**MODELS[name]).fit(X)
    assert _losses(bf) != _losses(ref)


def test_senet_is_unaffected_by_the_switch(env):
    from selfexpress.data import make_union_of_subspaces
    from selfexpress.models import SENet

    X, _, _ = make_union_of_subspaces(3, 2, 8, 40, random_state=1)
    kw = dict(hidden_sizes=(8,), embed_dim=8, n_iter=8, batch_size=10, block_size=64, affinity="symmetric",
              n_init=2, random_state=0)
    off = SENet(3, **kw).fit(X)
    env("bf16")
    on = SENet(3, **kw).fit(X)
    assert on.history_["train"]["loss"] == off.history_["train"]["loss"]
    assert (on.coef_ != off.coef_).nnz == 0
    np.testing.assert_array_equal(on.labels_, off.labels_)


# ----------------------------------------------------------------------------------------------- device check
def test_device_check_autocast_option(tmp_path, monkeypatch, env):
    """--autocast bf16: the switch reaches the stage's model and the record (tagged bf16, not overwriting)."""
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    monkeypatch.setenv("SELFEXPRESS_BENCH_ALLOW_DIRTY", "1")
    monkeypatch.setattr(sys, "argv", ["pytest"])
    import device_check

    assert device_check.parse_args(["--autocast", "bf16"]).autocast == "bf16"
    with pytest.raises(SystemExit):
        device_check.parse_args(["--autocast", "fp16"])
    old = torch.get_num_threads()
    try:
        assert device_check.main(["--smoke", "--stage", "ncsc", "--autocast", "bf16",
                                  "--results-dir", str(tmp_path)]) == 0
    finally:
        torch.set_num_threads(old)
    rec = json.loads((tmp_path / "bf16_ncsc_smoke.json").read_text())
    assert rec["status"] == "done" and rec["autocast"] == "bf16"
