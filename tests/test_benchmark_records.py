"""The benchmark records: every one names a commit in the history and is listed in the generated index; the
harness refuses to write a record from uncommitted code."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"


def _load(name):
    spec = importlib.util.spec_from_file_location(f"_bench_{name}", REPO / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _in_git_checkout():
    return subprocess.call(["git", "rev-parse", "--git-dir"], cwd=REPO, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL) == 0


pytestmark = pytest.mark.skipif(not _in_git_checkout(), reason="records are checked against the git history")


def test_every_record_names_a_commit_in_the_history():
    index = _load("index")
    table = index.rows()
    assert table, "no records found"
    missing = [r["name"] for r in table if not r["exists"]]
    assert not missing, f"records naming a commit that is not in the history: {missing}"


def test_the_index_lists_every_record_with_script_and_figure():
    text = (RESULTS / "INDEX.md").read_text("utf-8")
    for path in sorted(RESULTS.rglob("*.json")):
        name = path.relative_to(RESULTS).with_suffix("").as_posix()
        assert f"[{name}]({name}.json)" in text, f"{name} is not in INDEX.md: run python benchmarks/index.py"
    index = _load("index")
    assert all(r["script"] != "?" for r in index.rows()), "a record whose producing script is unknown"


def test_dirty_records_are_flagged():
    index = _load("index")
    text = index.render(index.rows())
    for path in RESULTS.glob("*.json"):
        commit = json.loads(path.read_text("utf-8")).get("commit", "")
        if commit.endswith("-dirty"):
            row = next(line for line in text.splitlines() if line.startswith(f"| [{path.stem}]("))
            assert "**dirty**" in row


def test_the_harness_refuses_uncommitted_code(monkeypatch, tmp_path):
    common = _load("_common")
    monkeypatch.setattr(common, "uncommitted_paths", lambda: ["selfexpress/models/senet.py"])
    monkeypatch.delenv(common.ALLOW_DIRTY_ENV, raising=False)
    monkeypatch.setattr(common, "RESULTS", tmp_path)
    with pytest.raises(RuntimeError, match="refusing to write a benchmark record from uncommitted code "
                                           r"\(selfexpress/models/senet.py\)"):
        common.write_result("x", {"acc": 1.0})
    assert not (tmp_path / "x.json").exists()
    monkeypatch.setenv(common.ALLOW_DIRTY_ENV, "1")  # the override is for tests like this one only
    monkeypatch.setattr(common, "write_index", lambda: None)
    monkeypatch.setattr(common, "machine", lambda: {})
    path = common.write_result("x", {"acc": 1.0})
    assert json.loads(path.read_text())["commit"].endswith("-dirty")


def test_a_benchmark_run_from_uncommitted_code_stops_before_measuring(tmp_path):
    """Only meaningful while the tree has uncommitted code; otherwise the script would run for real."""
    common = _load("_common")
    if not common.uncommitted_paths():
        pytest.skip("the checkout is clean")
    out = subprocess.run([sys.executable, str(REPO / "benchmarks" / "senet_fig2.py"), "--help"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode != 0 and "refusing to write a benchmark record from uncommitted code" in out.stderr
