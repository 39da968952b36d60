"""The benchmark records: each lies in its script's folder (results/<script>/<tag>.json; <script>/legacy/ for those
written from uncommitted code), names a commit in the history and is listed in the generated index; the harness
refuses to write a record from uncommitted code."""

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
    assert all((REPO / "benchmarks" / r["script"]).is_file() for r in index.rows()), "a record of an unknown script"


def test_every_record_follows_the_layout_and_only_legacy_records_are_dirty():
    """``results/<script>/<tag>.json`` from committed code, or ``results/<script>/legacy/<tag>.json``."""
    index = _load("index")
    table = index.rows()
    problems = {r["name"]: r["problems"] for r in table if r["problems"]}
    assert not problems, f"run python benchmarks/index.py --check: {problems}"
    assert not list(RESULTS.glob("*.json")), "a flat record: move it to benchmarks/results/<script>/<tag>.json"
    for r in table:
        assert r["dirty"] == r["legacy"], r["name"]


def test_legacy_records_are_listed_apart_with_their_base_commit():
    index = _load("index")
    text = index.render(index.rows())
    head, _, legacy = text.partition("## Legacy records from uncommitted code (not reproducible exactly)")
    for path in RESULTS.rglob("*.json"):
        name = path.relative_to(RESULTS).with_suffix("").as_posix()
        commit = json.loads(path.read_text("utf-8")).get("commit", "")
        if commit.endswith("-dirty"):
            row = next(line for line in legacy.splitlines() if line.startswith(f"| [{name}]("))
            assert f"`{commit.removesuffix('-dirty')}`" in row
            assert f"| [{name}](" not in head


def test_links_to_records_in_the_docs_resolve():
    """README.md and docs/*.md link records by their path in the layout; every such link and every literal
    ``benchmarks/results/...json`` path (placeholders and globs aside) names a file that exists."""
    import re

    checked = 0
    for doc in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]:
        text = doc.read_text("utf-8")
        for target in re.findall(r"\]\(([^)\s]*benchmarks/results/[^)\s]*)\)", text):
            assert (doc.parent / target).exists(), f"{doc.name} links {target}, which does not exist"
            checked += 1
        for target in re.findall(r"benchmarks/results/[\w./+-]+\.json", text):
            assert (REPO / target).is_file(), f"{doc.name} names {target}, which does not exist"
    assert checked, "no link to a record found in README.md or docs/"


def _head():
    return subprocess.check_output(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, text=True).strip()


def _committed(common, monkeypatch, results):
    """``common`` writing into ``results`` as if the checkout were clean (the records name HEAD)."""
    monkeypatch.setattr(common, "RESULTS", results)
    monkeypatch.setattr(common, "uncommitted_paths", lambda: [])
    monkeypatch.setattr(common, "machine", lambda: {})
    monkeypatch.delenv(common.ALLOW_DIRTY_ENV, raising=False)


def test_write_result_puts_the_record_in_the_folder_of_its_script(monkeypatch, tmp_path):
    common = _load("_common")
    _committed(common, monkeypatch, tmp_path)
    monkeypatch.setattr(sys, "argv", [str(REPO / "benchmarks" / "ensc_fast.py"), "--datasets", "mnist-test"])
    path = common.write_result("mnist-test_bilinear_k50", {"acc": 0.5})
    assert path == tmp_path / "ensc_fast" / "mnist-test_bilinear_k50.json"
    record = json.loads(path.read_text())
    assert record["script"] == "ensc_fast.py" and record["commit"] == _head() and record["acc"] == 0.5
    index = (tmp_path / "INDEX.md").read_text()  # regenerated in the same folder
    assert "| [ensc_fast/mnist-test_bilinear_k50](ensc_fast/mnist-test_bilinear_k50.json) | `ensc_fast.py` |" in index
    # an explicit script wins over sys.argv; the record's own "script" must agree with it
    assert common.write_result("x", {}, script="table3.py") == tmp_path / "table3" / "x.json"
    with pytest.raises(ValueError, match="says script 'peers.py'"):
        common.write_result("y", {"script": "peers.py"}, script="table3")
    # not run from a benchmark script and no script named: refused, nothing written
    monkeypatch.setattr(sys, "argv", [str(REPO / "tests" / "conftest.py")])
    with pytest.raises(ValueError, match="pass script="):
        common.write_result("z", {})
    for bad in ("", "a/b", "../x", ".hidden"):
        with pytest.raises(ValueError, match="tag"):
            common.write_result(bad, {}, script="table3")
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.json")) == [
        "ensc_fast/mnist-test_bilinear_k50.json", "table3/x.json"]


def _record(results, rel, commit):
    path = results / f"{rel}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"acc": 0.9, "commit": commit, "date": "2026-11-30T00:00:00+00:00"}))
    return path


def _check(index, results, capsys):
    capsys.readouterr()
    rc = index.main(["--check", "--results-dir", str(results)])
    return rc, capsys.readouterr().err


def test_index_check_flags_dirty_records_outside_legacy_and_missing_commits(tmp_path, capsys):
    index = _load("index")
    head = _head()
    _record(tmp_path, "ensc_fast/clean", head)
    assert index.main(["--results-dir", str(tmp_path)]) == 0
    assert _check(index, tmp_path, capsys) == (0, "")

    # a record from uncommitted code outside legacy/: refused even with a current index
    dirty = _record(tmp_path, "ensc_fast/dirty", f"{head}-dirty")
    index.main(["--results-dir", str(tmp_path)])
    rc, err = _check(index, tmp_path, capsys)
    assert rc == 1 and f"ensc_fast/dirty.json: written from uncommitted code ({head}-dirty)" in err
    assert "not in a legacy/ folder" in err

    # the same record under legacy/: accepted, listed apart with its base commit
    (tmp_path / "ensc_fast" / "legacy").mkdir()
    dirty.rename(tmp_path / "ensc_fast" / "legacy" / "dirty.json")
    rc, err = _check(index, tmp_path, capsys)
    assert rc == 1 and "out of date" in err  # the index still lists the old path
    index.main(["--results-dir", str(tmp_path)])
    assert _check(index, tmp_path, capsys) == (0, "")
    text = (tmp_path / "INDEX.md").read_text()
    legacy = text.split("## Legacy records from uncommitted code (not reproducible exactly)")[1]
    assert f"| [ensc_fast/legacy/dirty](ensc_fast/legacy/dirty.json) | `ensc_fast.py` | `{head}` |" in legacy

    # a summary whose own commit is clean but which embeds rows written from uncommitted code
    summary = tmp_path / "scale" / "summary.json"
    summary.parent.mkdir()
    summary.write_text(json.dumps({"commit": head, "date": "2026-11-30T00:00:00+00:00",
                                   "rows": [{"n": 10, "commit": head}, {"n": 20, "commit": f"{head}-dirty"}]}))
    index.main(["--results-dir", str(tmp_path)])
    rc, err = _check(index, tmp_path, capsys)
    assert rc == 1 and f"scale/summary.json: written from uncommitted code ({head}, embedding records from {head}-dirty)" in err
    summary.unlink()
    index.main(["--results-dir", str(tmp_path)])

    # a commit that is not in the history, in or out of legacy/
    for rel, commit in (("table3/ghost", "0" * 40), ("table3/legacy/ghost", "0" * 40 + "-dirty")):
        path = _record(tmp_path, rel, commit)
        index.main(["--results-dir", str(tmp_path)])
        rc, err = _check(index, tmp_path, capsys)
        assert rc == 1 and f"{rel}.json: its commit '{'0' * 40}' is not in the history" in err
        path.unlink()

    # a flat record, or a folder that names no script
    for rel in ("flat", "no_such_script/x"):
        path = _record(tmp_path, rel, head)
        index.main(["--results-dir", str(tmp_path)])
        rc, err = _check(index, tmp_path, capsys)
        assert rc == 1 and f"{rel}.json: " in err
        path.unlink()
    index.main(["--results-dir", str(tmp_path)])
    assert _check(index, tmp_path, capsys) == (0, "")


def test_the_harness_refuses_uncommitted_code(monkeypatch, tmp_path):
    common = _load("_common")
    monkeypatch.setattr(common, "uncommitted_paths", lambda: ["selfexpress/models/senet.py"])
    monkeypatch.delenv(common.ALLOW_DIRTY_ENV, raising=False)
    monkeypatch.setattr(common, "RESULTS", tmp_path)
    with pytest.raises(RuntimeError, match="refusing to write a benchmark record from uncommitted code "
                                           r"\(selfexpress/models/senet.py\)"):
        common.write_result("x", {"acc": 1.0}, script="senet_fig2.py")
    assert not list(tmp_path.rglob("*.json"))
    monkeypatch.setenv(common.ALLOW_DIRTY_ENV, "1")  # the override is for tests like this one only
    monkeypatch.setattr(common, "write_index", lambda: None)
    monkeypatch.setattr(common, "machine", lambda: {})
    path = common.write_result("x", {"acc": 1.0}, script="senet_fig2.py")
    assert path == tmp_path / "senet_fig2" / "x.json"
    assert json.loads(path.read_text())["commit"].endswith("-dirty")


def test_a_benchmark_run_from_uncommitted_code_stops_before_measuring(tmp_path):
    """Only meaningful while the tree has uncommitted code; otherwise the script would run for real."""
    common = _load("_common")
    if not common.uncommitted_paths():
        pytest.skip("the checkout is clean")
    out = subprocess.run([sys.executable, str(REPO / "benchmarks" / "senet_fig2.py"), "--help"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode != 0 and "refusing to write a benchmark record from uncommitted code" in out.stderr
