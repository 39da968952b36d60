"""Shared helpers for benchmarks: run records with machine, commit, wall times and peak RSS."""

from __future__ import annotations

import datetime as _dt
import os
import platform
import resource
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
DATA_DIR = Path(os.environ.get("SELFEXPRESS_DATA_DIR", REPO.parent / "shared" / "data"))
CACHE_DIR = Path(os.environ.get("SELFEXPRESS_CACHE_DIR", REPO / ".cache" / "features"))

sys.path.insert(0, str(REPO))


def peak_rss_mb() -> float:
    """Peak resident set size of this process (and waited-for children) in MiB."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(own, kids) / 1024.0  # Linux reports KiB


def machine() -> dict:
    import torch

    return {
        "hostname": platform.node(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
    }


#: what a record's figures depend on: a change here that is not committed makes the record "-dirty"
CODE_PATHS = ("selfexpress", "benchmarks", "pyproject.toml", "constraints.txt")
#: set to 1 to write a record from uncommitted code anyway (the tests of this harness only; such a record says
#: "-dirty" and benchmarks/index.py flags it)
ALLOW_DIRTY_ENV = "SELFEXPRESS_BENCH_ALLOW_DIRTY"


def uncommitted_paths() -> list:
    """Paths of the code (:data:`CODE_PATHS`, records under benchmarks/results excepted) that differ from HEAD:
    modified, staged, deleted or untracked-and-not-ignored."""
    out = subprocess.check_output(["git", "status", "--porcelain", "--untracked-files=all", "--", *CODE_PATHS],
                                  cwd=REPO, text=True)
    paths = [line[3:].split(" -> ")[-1] for line in out.splitlines() if line.strip()]
    return [p for p in paths if not p.startswith("benchmarks/results/")]


def commit() -> str:
    """``HEAD``'s short hash, with ``-dirty`` when the code differs from it (:func:`uncommitted_paths`)."""
    try:
        sha = subprocess.check_output(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, text=True).strip()
        return sha + ("-dirty" if uncommitted_paths() else "")
    except Exception:  # noqa: BLE001 - not a git checkout
        return "unknown"


def check_committed():
    """Refuse to measure uncommitted code: ``RuntimeError`` naming the changed paths
    (``$SELFEXPRESS_BENCH_ALLOW_DIRTY=1`` lets the harness's own tests through). A record must name a commit that
    reproduces it."""
    if os.environ.get(ALLOW_DIRTY_ENV) == "1":
        return
    try:
        dirty = uncommitted_paths()
    except Exception as exc:  # noqa: BLE001 - not a git checkout: no commit to name
        raise RuntimeError(f"benchmarks must run in a git checkout to name the commit of their record: {exc}") from None
    if dirty:
        shown = ", ".join(dirty[:8]) + (f" and {len(dirty) - 8} more" if len(dirty) > 8 else "")
        raise RuntimeError(f"refusing to write a benchmark record from uncommitted code ({shown}); commit first, or "
                           "run in a clean worktree (git worktree add --detach DIR HEAD)")


class Stages:
    """Collects per-stage wall times: ``with stages("coef"): ...``."""

    def __init__(self):
        self.times = {}

    @contextmanager
    def __call__(self, name):
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.times[name] = round(self.times.get(name, 0.0) + time.perf_counter() - t0, 3)

    @property
    def total(self):
        return round(sum(self.times.values()), 3)


#: a record's tag: a file name without its ``.json`` (letters, digits, ``. _ + -``; no folders)
_TAG_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._+-")


def script_stem(script: str | os.PathLike | None = None) -> str:
    """The stem of the benchmark script a record belongs to: ``script`` (``"ensc_fast"``, ``"ensc_fast.py"`` or a
    path) or else the running script (``sys.argv[0]``, which must be a script in benchmarks/)."""
    if script is None:
        argv0 = sys.argv[0] if sys.argv else ""
        if not argv0.endswith(".py") or Path(argv0).resolve().parent != REPO / "benchmarks":
            raise ValueError(f"cannot tell which benchmark script writes this record (sys.argv[0] = {argv0!r} is not "
                             "a script in benchmarks/): pass script=")
        script = argv0
    stem = Path(script).name.removesuffix(".py")
    if not stem or stem[0] in "._" or not set(stem) <= _TAG_CHARS:
        raise ValueError(f"not a benchmark script name: {script!r}")
    return stem


def result_path(tag: str, suffix: str = ".json", script: str | os.PathLike | None = None) -> Path:
    """``benchmarks/results/<script-stem>/<tag><suffix>``: where the record ``tag`` of ``script`` (default: the
    running script, :func:`script_stem`) lives; side files (a text table, a figure) take another ``suffix``."""
    if not tag or tag[0] in "._-" or not set(tag) <= _TAG_CHARS:
        raise ValueError(f"a record tag is a plain file name (letters, digits, '._+-', not starting with '._-'): "
                         f"{tag!r}")
    return RESULTS / script_stem(script) / f"{tag}{suffix}"


def write_result(tag: str, record: dict, script: str | os.PathLike | None = None) -> Path:
    """Write one JSON record to ``benchmarks/results/<script-stem>/<tag>.json`` (atomically), regenerate the index
    and return its path. ``script``: the producing benchmark script (default: the running one, ``sys.argv[0]``).
    Refuses uncommitted code (:func:`check_committed`): the record names the commit that reproduces it."""
    from selfexpress.io import atomic_write_json

    check_committed()
    path = result_path(tag, script=script)
    name = f"{script_stem(script)}.py"
    record = dict(record)
    if record.setdefault("script", name) != name:
        raise ValueError(f"record says script {record['script']!r} but is written for {name!r}")
    record.setdefault("machine", machine())
    record.setdefault("commit", commit())
    record.setdefault("date", _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
    record.setdefault("peak_rss_mb", round(peak_rss_mb(), 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, record)
    print(f"wrote {path}")
    write_index()
    return path


def write_index():
    """Regenerate ``RESULTS``/INDEX.md (benchmarks/index.py) so that it lists every record."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("_bench_index", REPO / "benchmarks" / "index.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.main(["--results-dir", str(RESULTS)])


def matmul_gflops(n: int = 2048, repeats: int = 5) -> float:
    """The machine's fp32 matmul speed now (GFLOP/s, best of ``repeats`` n x n products with torch's threads).

    Recorded beside every timing so that a figure measured on a loaded or slower machine can be compared."""
    import torch

    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b  # warm-up
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    return round(2 * n ** 3 / best / 1e9, 1)


def matmul_gflops_since(before: float) -> dict:
    """``{"before", "after", "mean"}`` GFLOP/s: ``before`` (:func:`matmul_gflops` at the start of a run) and now."""
    after = matmul_gflops()
    return {"before": before, "after": after, "mean": round((before + after) / 2, 1)}


def cluster_by_graph(C, y, seed, sre=False, n_init=20, graphs=("symmetric", "knn")):
    """Spectral clustering of the coefficients ``C`` under ``graphs`` (default both: |C|+|C^T| and the 3-NN graph
    over rows of C; 15 eigenvectors, as many clusters as ``y`` has labels, k-means ``n_init``,
    ``random_state=seed``): ``{graph: (metrics, seconds of graph and spectral step)}``; ``sre``: the symmetric
    graph's metrics also score C itself (subspace-preserving error)."""
    import numpy as np

    from selfexpress.cluster import spectral_clustering
    from selfexpress.graph import affinity_from_coef
    from selfexpress.metrics import evaluate

    n_clusters = len(np.unique(y))
    out = {}
    for graph in graphs:
        t0 = time.perf_counter()
        lab = spectral_clustering(affinity_from_coef(C, graph, n_neighbors=3), n_clusters, n_components=15,
                                  n_init=n_init, random_state=seed)
        seconds = time.perf_counter() - t0
        out[graph] = (evaluate(y, lab, coef=C if sre and graph == "symmetric" else None), seconds)
    return out


def _refuse_early():
    """A benchmark script run from uncommitted code stops before it measures anything, not after."""
    script = Path(sys.argv[0]).resolve() if sys.argv and sys.argv[0] else None
    if script is not None and script.parent == REPO / "benchmarks" and script.name not in ("index.py",):
        try:
            check_committed()
        except RuntimeError as exc:
            sys.exit(f"{script.name}: {exc}")


_refuse_early()
