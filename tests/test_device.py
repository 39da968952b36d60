"""Device plumbing (issue 27), on the CPU: one device resolution (selfexpress._device), every estimator and the
feature stage on the device they are given, model files that load on the device asked for (never the one they
were saved from), ``--device`` on the CLI, and the smoke run of the prepared GPU check (benchmarks/device_check)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from selfexpress._device import configure_tf32, device_property, resolve_device, tf32_enabled
from selfexpress.data import make_union_of_subspaces

pytestmark = pytest.mark.usefixtures("one_torch_thread")

REPO = Path(__file__).resolve().parents[1]
CPU = torch.device("cpu")


@pytest.fixture
def no_cuda(monkeypatch):
    """This machine as a CPU-only one, also where a GPU is present (the tests then pin the same behaviour)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


# ----------------------------------------------------------------------------------------------- resolve_device
@pytest.mark.parametrize("given", ["auto", "AUTO", None])
def test_auto_is_the_cpu_without_cuda(no_cuda, given):
    assert resolve_device(given) == CPU


def test_explicit_devices(no_cuda):
    assert resolve_device("cpu") == CPU
    assert resolve_device(torch.device("cpu")) == CPU
    assert resolve_device("meta") == torch.device("meta")
    assert resolve_device(torch.device("meta")) == torch.device("meta")


@pytest.mark.parametrize("given", ["cuda", "cuda:0", "cuda:3", torch.device("cuda")])
def test_cuda_without_cuda_is_one_clear_line(no_cuda, given):
    with pytest.raises(ValueError) as info:
        resolve_device(given)
    msg = str(info.value)
    assert "\n" not in msg
    assert "install a CUDA build of torch" in msg and "README" in msg and "cpu" in msg


@pytest.mark.parametrize("given", ["gpu", "", "cuda:x", "cpu:x", "tpu", 3, 1.5, ["cpu"]])
def test_bad_devices_are_refused(given):
    with pytest.raises(ValueError, match="device must be"):
        resolve_device(given)


def test_device_property_resolves_without_changing_the_parameter(no_cuda):
    from selfexpress.models import SENet

    est = SENet(3)
    assert est.get_params()["device"] == "auto" and est._device == CPU
    est.set_params(device=torch.device("cpu"))
    assert est._device == CPU

    class Holder:
        device = "meta"
        _device = device_property()

    assert Holder()._device == torch.device("meta")


def test_tf32_switch(monkeypatch):
    monkeypatch.setenv("SELFEXPRESS_TF32", "0")
    assert not tf32_enabled()
    monkeypatch.setenv("SELFEXPRESS_TF32", "1")
    assert tf32_enabled()
    monkeypatch.delenv("SELFEXPRESS_TF32")
    assert tf32_enabled()
    before = torch.backends.cuda.matmul.allow_tf32
    assert configure_tf32(True, device="cpu") is False  # a no-op on the CPU
    assert torch.backends.cuda.matmul.allow_tf32 == before


# ----------------------------------------------------------------------------------------------- estimators
def _tensors_of(est):
    """Every tensor an estimator holds: its networks' parameters and buffers and its tensor attributes."""
    out = []
    for name, v in vars(est).items():
        if isinstance(v, torch.nn.Module):
            out += [(f"{name}.{k}", t) for k, t in [*v.named_parameters(), *v.named_buffers()]]
        elif isinstance(v, torch.Tensor):
            out.append((name, v))
    return out


def _vectors():
    X, y, _ = make_union_of_subspaces(3, 2, 8, 40, random_state=1)
    return X, y


def _images(n_per=16, seed=0):
    from test_energy import _tiny_images

    return _tiny_images(n_per, seed)


TINY_NET = {
    "SENet": dict(hidden_sizes=(8,), embed_dim=8, n_iter=5, batch_size=10, block_size=64, affinity="symmetric",
                  n_init=2),
    "NCSC": dict(batch_size=60, n_epochs=2, classifier_channels=(8, 8), n_epochs_ae=0),
    "SSCN": dict(max_cluster_dim=2, n_epochs=2, batch_size=30, n_epochs_clf=1, batch_size_clf=30, steps_per_batch=1,
                 n_neighbors=10, n_init=2),
    "EnergySubspaceClustering": dict(image_shape=(12, 12), width=4, proj_hidden=16, embed_dim=8, energy_hidden=(8, 8),
                                     n_epochs_pretrain=1, n_epochs=1, batch_size=16, n_dictionary=32, bn_splits=2,
                                     n_nonzero=10, block_size=16, n_init=2),
    "DSCNet": dict(n_epochs=2, n_epochs_ae=0, n_neighbors=10, n_init=2),
    "SSCOMP": dict(n_init=2),
    "ElasticNetSubspaceClustering": dict(n_init=2),
}


def _fit(name, device):
    from selfexpress import models

    cls = getattr(models, name)
    X, _ = (_images()[0].reshape(48, -1), None) if name == "EnergySubspaceClustering" else _vectors()
    return cls(3, random_state=0, device=device, **TINY_NET[name]).fit(X), X


@pytest.mark.parametrize("name", list(TINY_NET))
def test_every_estimator_takes_a_torch_device_and_keeps_its_tensors_there(name):
    est, _ = _fit(name, torch.device("cpu"))
    assert est.get_params()["device"] == torch.device("cpu")  # the parameter is kept as given
    for what, t in _tensors_of(est):
        assert t.device == CPU, f"{name}: {what} is on {t.device}"
    assert len(np.asarray(est.labels_)) > 0


@pytest.mark.parametrize("name", ["SENet", "NCSC", "SSCN", "EnergySubspaceClustering", "DSCNet", "SSCOMP",
                                  "ElasticNetSubspaceClustering"])
def test_torch_estimators_default_to_auto_and_refuse_cuda_without_it(no_cuda, name):
    from selfexpress import models

    cls = getattr(models, name)
    assert cls().get_params()["device"] == "auto"
    X = _images()[0].reshape(48, -1) if name == "EnergySubspaceClustering" else _vectors()[0]
    with pytest.raises(ValueError, match="install a CUDA build of torch"):
        cls(3, device="cuda", **TINY_NET[name]).fit(X)


def test_ensc_refuses_meta_and_per_point_off_the_cpu():
    """EnSC's solvers need data (not 'meta'); the reference-style per-point solver is numpy, CPU only."""
    from selfexpress.models import ElasticNetSubspaceClustering
    from selfexpress.models.ensc import elastic_net_coef

    X, _ = _vectors()
    with pytest.raises(ValueError, match="not 'meta'"):
        ElasticNetSubspaceClustering(3, device="meta").fit(X)
    with pytest.raises(ValueError, match="not 'meta'"):
        elastic_net_coef(X, device="meta")
    with pytest.raises(ValueError, match="CPU only"):
        ElasticNetSubspaceClustering(3, algorithm="per_point", device=torch.device("meta")).fit(X)


@pytest.mark.parametrize("algorithm", ["active_set", "refined", "restricted"])
def test_ensc_solvers_create_every_tensor_on_their_device(algorithm):
    """The solvers name their device in one place: with torch's default device set to 'meta', a tensor made
    without the solver's device would land there and the solve would fail or differ. On the CPU device the result
    must equal the plain run bit for bit (the same code path, wherever the default points)."""
    from selfexpress.models.ensc import elastic_net_coef

    X, _ = _vectors()
    X = X / np.linalg.norm(X, axis=1, keepdims=True)
    kw = dict(gamma=20.0, tau=0.9, algorithm=algorithm, support_size=6, oracle_passes=2)
    C_plain, info_plain = elastic_net_coef(X, device="cpu", return_info=True, **kw)
    torch.set_default_device("meta")
    try:
        C_dev, info_dev = elastic_net_coef(X, device=torch.device("cpu"), return_info=True, **kw)
    finally:
        torch.set_default_device(None)
    assert torch.zeros(1).device == CPU
    assert (C_plain != C_dev).nnz == 0 and C_plain.nnz > 0
    assert info_dev["certified_fraction"] == info_plain["certified_fraction"]


def test_ensc_device_context_only_where_the_default_differs():
    """torch's device context intercepts every torch call in Python (a cost on each of the solvers' many small ops):
    the solvers enter it only when their device is not already the thread's default."""
    from torch.overrides import _get_current_function_mode_stack
    from torch.utils._device import DeviceContext

    from selfexpress.models.ensc import _on_device

    def modes():
        return [m for m in _get_current_function_mode_stack() if isinstance(m, DeviceContext)]

    with _on_device("cpu"):
        assert modes() == [] and torch.zeros(1).device == CPU
    torch.set_default_device("meta")
    try:
        with _on_device(torch.device("cpu")):
            assert torch.zeros(1).device == CPU
        assert torch.zeros(1).device.type == "meta"
    finally:
        torch.set_default_device(None)


def test_ensc_support_search_stays_on_the_data_device():
    from selfexpress.models._ensc_fast import top_correlated

    X, _ = _vectors()
    want = top_correlated(X, 5)
    torch.set_default_device("meta")
    try:
        got = top_correlated(torch.as_tensor(X, dtype=torch.float32, device="cpu"), 5)
    finally:
        torch.set_default_device(None)
    assert got.device == CPU and torch.equal(got, want)


def test_networks_build_on_the_meta_device():
    """Shapes without memory: each network-building step puts every parameter on the device it is given."""
    from selfexpress.models import NCSC, SSCN, EnergySubspaceClustering, SENet

    meta = torch.device("meta")
    nets = {"SENet": SENet(3, hidden_sizes=(16, 16), embed_dim=8, device=meta)._build(20)}
    for cls in (NCSC, SSCN):
        est = cls(3, device=meta, **({"max_cluster_dim": 2} if cls is SSCN else {}))
        nets[cls.__name__] = est._build(20, "linear")  # feature vectors: the identity auto-encoder
    en = EnergySubspaceClustering(3, image_shape=(12, 12), width=4, proj_hidden=16, embed_dim=8, energy_hidden=(8, 8),
                                  n_dictionary=32, bn_splits=2, device="meta", backbone="resnet18")
    nets["Energy"] = en._build(32)
    for name, net in nets.items():
        tensors = [*net.parameters(), *net.buffers()]
        assert tensors and all(t.device == meta for t in tensors), name


# ----------------------------------------------------------------------------------------------- features
def test_scattering_and_projection_take_a_device(no_cuda, tmp_path):
    # no_cuda: the default device 'auto' is the CPU here; with a GPU present it would be CUDA, whose scattering
    # differs from the CPU's in the last float32 bits (1.5e-6 on an H200; see the next test)
    from selfexpress.features import ScatteringPCA, scattering_features
    from selfexpress.features.scattering import _get_scattering

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (24, 28, 28), dtype=np.uint8)
    a = scattering_features(images, verbose=False)
    b = scattering_features(images, verbose=False, device=torch.device("cpu"))
    np.testing.assert_array_equal(a, b)  # the CPU path is unchanged
    with pytest.raises(ValueError, match="meta"):
        scattering_features(images, verbose=False, device="meta")
    S = _get_scattering(3, 8, (32, 32), torch.device("meta"))  # the filters follow the device
    assert all(t.device == torch.device("meta") for t in S.buffers())

    ft0 = ScatteringPCA(n_components=6, cache_dir=False)
    ft1 = ScatteringPCA(n_components=6, cache_dir=False, device=torch.device("cpu"))
    z0, z1 = ft0.fit_transform(images), ft1.fit_transform(images)
    np.testing.assert_array_equal(z0, z1)
    assert ft0.fingerprint_ == ft1.fingerprint_  # the device is not part of the basis
    assert "device" not in ft1.to_state()[1]["settings"]
    ft1.save(tmp_path / "t")
    assert ScatteringPCA.load(tmp_path / "t", device="cpu").device == "cpu"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_scattering_on_cuda_matches_the_cpu():
    from selfexpress.features import scattering_features

    images = np.random.default_rng(0).integers(0, 256, (24, 28, 28), dtype=np.uint8)
    on_cpu = scattering_features(images, verbose=False, device="cpu")
    np.testing.assert_allclose(scattering_features(images, verbose=False, device="cuda"), on_cpu, atol=1e-5)


def test_feature_projection_on_a_torch_device_matches_numpy():
    """The torch projection (what a GPU runs) computes what the numpy one does, here on the CPU."""
    from selfexpress.features.cached import _project, _project_torch
    from selfexpress.features.pca import PCAUncentred

    rng = np.random.default_rng(1)
    S = [rng.random((30, 40)).astype(np.float32), rng.random((11, 40)).astype(np.float32)]
    for center in (False, True):
        model = PCAUncentred(n_components=5, center=center).fit(S)
        np.testing.assert_allclose(_project_torch(model, S, True, CPU, block=7), _project(model, S, True), atol=2e-6)


def test_features_refuse_cuda_without_it(no_cuda):
    from selfexpress.features import ScatteringPCA

    images = np.zeros((4, 28, 28), dtype=np.uint8)
    with pytest.raises(ValueError, match="install a CUDA build of torch"):
        ScatteringPCA(n_components=2, cache_dir=False, device="cuda").fit(images)


# ----------------------------------------------------------------------------------------------- model files
def _as_if_saved_on_cuda(path, device="cuda"):
    meta_path = Path(f"{path}.json")
    meta = json.loads(meta_path.read_text())
    meta["config"]["params"]["device"] = device
    meta_path.write_text(json.dumps(meta))


@pytest.mark.parametrize("name", ["SENet", "NCSC", "SSCN", "EnergySubspaceClustering"])
def test_a_model_saved_on_cuda_loads_and_predicts_on_the_cpu(no_cuda, tmp_path, name):
    est, X = _fit(name, torch.device("cpu"))  # a torch.device parameter is saved as its string
    expected = est.predict(X)
    path = tmp_path / "model"
    est.save(path)
    assert json.loads(Path(f"{path}.json").read_text())["config"]["params"]["device"] == "cpu"
    for saved_on in ("cuda", "cuda:1"):
        _as_if_saved_on_cuda(path, saved_on)
        for asked in (None, "auto", "cpu", torch.device("cpu")):
            model = type(est).load(path, device=asked)
            assert model._device == CPU
            assert model.get_params()["device"] == ("auto" if asked is None else asked)
            assert all(t.device == CPU for _, t in _tensors_of(model))
            np.testing.assert_array_equal(model.predict(X), expected)
    with pytest.raises(ValueError, match="install a CUDA build of torch"):
        type(est).load(path, device="cuda")


# ----------------------------------------------------------------------------------------------- CLI
def _one_line_error(capsys, argv):
    from selfexpress.cli import main

    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


@pytest.mark.parametrize("argv", [
    ["cluster", "--device", "cuda"],
    ["cluster", "--method", "ssc-omp", "--device", "cuda:0"],
    ["predict", "--model", "nowhere", "--input", "x.npy", "--device", "cuda"],
    ["features", "--input", "x.npy", "--output", "x.npy", "--device", "cuda"],
])
def test_cli_device_cuda_without_cuda_exits_2_with_one_line(no_cuda, capsys, argv):
    line = _one_line_error(capsys, argv)
    assert line.startswith("selfexpress: error:") and "install a CUDA build of torch" in line


def test_cli_device_cuda_without_cuda_in_a_fresh_process(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: the in-process test above pins the CPU-only behaviour")
    r = subprocess.run([sys.executable, "-m", "selfexpress", "cluster", "--device", "cuda"], cwd=tmp_path,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 2
    assert len(r.stderr.strip().splitlines()) == 1 and "CUDA build of torch" in r.stderr


@pytest.mark.parametrize("device", ["gpu", "meta"])
def test_cli_bad_device_exits_2_with_one_line(capsys, device):
    assert "device" in _one_line_error(capsys, ["cluster", "--device", device])


def test_cli_device_reaches_the_estimator_and_the_features(no_cuda, tmp_path, monkeypatch, capsys):
    from selfexpress.cli import main
    from selfexpress.features import ScatteringPCA, scattering

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (30, 28, 28), dtype=np.uint8)
    np.save(tmp_path / "images.npy", images)
    # cluster: the feature stage is built with the device (its 500-dimensional PCA is skipped: random features)
    made = []

    def fake_fit_transform(self, X, y=None):
        made.append(self.device)
        return np.random.default_rng(0).random((len(X), 8)).astype(np.float32) + 0.1

    with monkeypatch.context() as m:
        m.setattr(ScatteringPCA, "fit_transform", fake_fit_transform)
        out = tmp_path / "out"
        assert main(["cluster", "--input", str(tmp_path / "images.npy"), "--features", "scattering", "--method",
                     "ssc-omp", "--n-clusters", "2", "--device", "cpu", "--cache-dir", str(tmp_path / "cache"),
                     "--output", str(out), "-q"]) == 0
    assert made == ["cpu"]
    assert json.loads((out / "metrics.json").read_text())["params"]["device"] == "cpu"
    # features: the scattering itself runs on the device
    seen = []
    real = scattering._get_scattering
    monkeypatch.setattr(scattering, "_get_scattering", lambda J, L, shape, device=None: (
        seen.append(device), real(J, L, shape, device))[1])
    assert main(["features", "--input", str(tmp_path / "images.npy"), "--output", str(tmp_path / "f.npy"),
                 "--n-components", "4", "--device", "cpu", "--cache-dir", str(tmp_path / "cache2"), "-q"]) == 0
    assert seen and all(d == CPU for d in seen)
    capsys.readouterr()


def test_cli_predict_loads_a_cuda_saved_model_on_the_cpu(no_cuda, tmp_path, capsys):
    from selfexpress.cli import main

    X, y = _vectors()
    np.save(tmp_path / "X.npy", X)
    np.save(tmp_path / "y.npy", y)
    model = tmp_path / "m"
    assert main(["cluster", "--input", str(tmp_path / "X.npy"), "--labels", str(tmp_path / "y.npy"), "--method",
                 "ncsc", "--n-clusters", "3", "--save-model", str(model), "-q"]) == 0
    _as_if_saved_on_cuda(model)
    for extra in ([], ["--device", "auto"], ["--device", "cpu"]):
        assert main(["predict", "--model", str(model), "--input", str(tmp_path / "X.npy"), "--output",
                     str(tmp_path / "pred"), *extra]) == 0
        assert len(np.load(tmp_path / "pred" / "labels.npy")) == len(X)
    capsys.readouterr()


# ----------------------------------------------------------------------------------------------- device check
def test_device_check_smoke_runs_every_stage(tmp_path, monkeypatch):
    """benchmarks/device_check.py --smoke: every stage end to end at tiny sizes, each writing its record."""
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    monkeypatch.setenv("SELFEXPRESS_BENCH_ALLOW_DIRTY", "1")
    monkeypatch.setattr(sys, "argv", ["pytest"])
    import device_check

    old = torch.get_num_threads()
    try:
        assert device_check.main(["--smoke", "--results-dir", str(tmp_path)]) == 0
    finally:
        torch.set_num_threads(old)
    for stage in device_check.STAGES:
        rec = json.loads((tmp_path / f"{stage}_smoke.json").read_text())
        assert rec["status"] == "done" and rec["smoke"] is True, rec
        assert rec["device"] == str(resolve_device("auto")) and rec["device_name"]
        assert 0.0 <= rec["metrics"]["acc"] <= 1.0
        assert "peak_gpu_memory_mb" in rec and rec["wall_seconds"] > 0 and rec["paper"]
    senet = json.loads((tmp_path / "senet_smoke.json").read_text())
    assert senet["n_iter_done"] <= senet["n_iter_schedule"] and "schedule" in senet["schedule"]


def test_device_check_sh_smoke(tmp_path):
    """The shell wrapper: pre-flight, one process per stage under its limit, exit status (one stage, to be quick)."""
    env = dict(os.environ, DEVICE_CHECK_STAGES="ncsc", PYTHON=sys.executable)
    r = subprocess.run(["bash", str(REPO / "benchmarks" / "device_check.sh"), "--smoke", "--results-dir",
                        str(tmp_path)], capture_output=True, text=True, timeout=600, env=env)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert json.loads((tmp_path / "ncsc_smoke.json").read_text())["status"] == "done"
    assert "all stages" in r.stdout


def test_device_check_runs_ensc_on_the_device_it_is_given(tmp_path, monkeypatch):
    """The EnSC stage fits on the stage's device (no CPU fallback any more) and records it."""
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    monkeypatch.setattr(sys, "argv", ["pytest"])
    import device_check

    X, y = _vectors()
    monkeypatch.setattr(device_check, "_features", lambda a, dev, rec: (X, y))
    a = device_check.parse_args(["--smoke", "--results-dir", str(tmp_path)])
    device_check.stage_ensc(a, torch.device("cpu"))
    rec = json.loads((tmp_path / "ensc_smoke.json").read_text())
    assert rec["status"] == "done" and rec["ensc_device"] == "cpu" and 0.0 < rec["metrics"]["acc"] <= 1.0
    # the solves are timed as "pivot" (the whole-dictionary start, up to 8,192 points) and "solve" (the rounds)
    assert "oracle" in rec["solver_seconds"] and {"solve", "pivot"} & set(rec["solver_seconds"])


def test_memory_guard_resolves_auto(no_cuda, monkeypatch):
    """The memory guard asks the device that "auto" means (the GPU's free memory where it means CUDA)."""
    from selfexpress import _memory

    monkeypatch.setenv("SELFEXPRESS_MAX_MEMORY", "1K")
    with pytest.raises(_memory.InsufficientMemoryError, match="available on cpu; lower it"):
        _memory.check_allocation(1 << 20, "a step", "lower it", device="auto")
