import json

import numpy as np
import pytest
import torch

from selfexpress.io import atomic_save_npy, atomic_write_json, load_model_file, save_model_file


def test_atomic_json_and_npy_roundtrip(tmp_path):
    atomic_write_json(tmp_path / "a" / "r.json", {"x": np.float32(1.5), "y": np.arange(3)})
    assert json.loads((tmp_path / "a" / "r.json").read_text()) == {"x": 1.5, "y": [0, 1, 2]}
    atomic_save_npy(tmp_path / "l.npy", np.arange(4))
    assert np.load(tmp_path / "l.npy", allow_pickle=False).tolist() == [0, 1, 2, 3]
    assert not [p for p in tmp_path.rglob("*.tmp")]


def test_atomic_write_keeps_old_file_on_failure(tmp_path):
    p = tmp_path / "r.json"
    atomic_write_json(p, {"ok": 1})
    with pytest.raises(TypeError):
        atomic_write_json(p, {"bad": object()})
    assert json.loads(p.read_text()) == {"ok": 1}


def test_model_file_roundtrip_and_refusals(tmp_path):
    w = {"w": torch.arange(6.0).reshape(2, 3), "b": torch.zeros(2)}
    save_model_file(tmp_path / "m", w, {"n": 2}, kind="demo")
    tensors, cfg = load_model_file(tmp_path / "m.json", kind="demo")
    assert cfg == {"n": 2} and torch.equal(tensors["w"], w["w"])
    with pytest.raises(ValueError, match="not a 'other' model"):
        load_model_file(tmp_path / "m", kind="other")
    meta = json.loads((tmp_path / "m.json").read_text())
    meta["tensors"]["w"] = [3, 2]
    (tmp_path / "m.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="shape"):
        load_model_file(tmp_path / "m", kind="demo")
    meta["tensors"]["w"] = [2, 3]
    meta["format_version"] = 99
    (tmp_path / "m.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="format version"):
        load_model_file(tmp_path / "m", kind="demo")
    meta["format_version"] = 1
    (tmp_path / "m.json").write_text(json.dumps(meta))
    data = (tmp_path / "m.safetensors").read_bytes()
    (tmp_path / "m.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="corrupt or truncated"):
        load_model_file(tmp_path / "m", kind="demo")
    with pytest.raises(ValueError, match="does not exist"):
        load_model_file(tmp_path / "missing", kind="demo")
