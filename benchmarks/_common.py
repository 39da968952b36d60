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


def commit() -> str:
    try:
        sha = subprocess.check_output(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, text=True).strip()
        dirty = subprocess.call(["git", "diff", "--quiet", "HEAD"], cwd=REPO) != 0
        return sha + ("-dirty" if dirty else "")
    except Exception:  # noqa: BLE001 - not a git checkout
        return "unknown"


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


def write_result(name: str, record: dict) -> Path:
    """Write one JSON record to benchmarks/results/<name>.json (atomically) and return its path."""
    from selfexpress.io import atomic_write_json

    record = dict(record)
    record.setdefault("machine", machine())
    record.setdefault("commit", commit())
    record.setdefault("date", _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
    record.setdefault("peak_rss_mb", round(peak_rss_mb(), 1))
    path = RESULTS / f"{name}.json"
    atomic_write_json(path, record)
    print(f"wrote {path}")
    return path


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
