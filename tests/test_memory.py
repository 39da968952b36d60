"""The memory guard (selfexpress/_memory.py): a step that would not fit in the available memory is refused before it
allocates, with an error naming the parameter to change; following the advice makes the run fit and gives the same
result. The available memory is patched to small values, so these tests need no large machine."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from selfexpress import _memory
from selfexpress._memory import InsufficientMemoryError, available_memory, check_allocation, format_bytes
from selfexpress.cluster import spectral_clustering
from selfexpress.data import make_union_of_subspaces
from selfexpress.models import ensc as ensc_module
from selfexpress.models.ensc import ElasticNetSubspaceClustering
from selfexpress.models.senet import SENet
from selfexpress.models.ssc_omp import SSCOMP, omp_coef

pytestmark = pytest.mark.usefixtures("one_torch_thread")

MiB = 2**20


@pytest.fixture
def available(monkeypatch):
    """``available(nbytes)`` pretends that only ``nbytes`` of memory are free."""
    def set_(nbytes):
        monkeypatch.setattr(_memory, "available_memory", lambda device="cpu": nbytes)
    return set_


def test_available_memory_is_read_and_capped_by_the_environment(monkeypatch):
    monkeypatch.delenv("SELFEXPRESS_MAX_MEMORY", raising=False)
    real = available_memory()
    assert isinstance(real, int) and real > 0
    for text, cap in (("512M", 512 * MiB), ("1.5G", 3 * 2**29), ("1024", 1024), ("2GiB", 2 * 2**30), ("64kb", 65536)):
        monkeypatch.setenv("SELFEXPRESS_MAX_MEMORY", text)
        assert available_memory() == min(real, cap)
    monkeypatch.setenv("SELFEXPRESS_MAX_MEMORY", "lots")
    with pytest.raises(ValueError, match="SELFEXPRESS_MAX_MEMORY='lots' is not a size"):
        available_memory()


def test_check_allocation_message_and_types(available):
    available(10 * MiB)
    assert check_allocation(10 * MiB, "x", "y") == 10 * MiB
    with pytest.raises(InsufficientMemoryError) as exc:
        check_allocation(3 * 2**30, "the tiles", "lower block_size (now 4096)")
    assert isinstance(exc.value, MemoryError) and isinstance(exc.value, ValueError)
    assert str(exc.value) == ("the tiles needs about 3.0 GiB but only 10.0 MiB is available on cpu; "
                              "lower block_size (now 4096)")
    assert format_bytes(512) == "512 B" and format_bytes(1536) == "1.5 KiB"


def test_unknown_available_memory_refuses_nothing(monkeypatch):
    monkeypatch.setattr(_memory, "_meminfo_available", lambda: None)
    monkeypatch.setattr(_memory, "_cgroup_available", lambda: None)
    monkeypatch.delenv("SELFEXPRESS_MAX_MEMORY", raising=False)
    assert available_memory() is None
    assert check_allocation(2**60, "x", "y") == 2**60


@pytest.fixture(scope="module")
def big():
    X, _, _ = make_union_of_subspaces(3, 2, 5, 1000, random_state=0)  # 3000 points in R^5
    return (X / np.linalg.norm(X, axis=1, keepdims=True)).astype(np.float32)


def test_ssc_omp_too_large_block_is_refused_and_the_advice_works(big, available):
    ref = omp_coef(big, n_nonzero=2, block_size=3000)
    available(8 * MiB)  # a 3000 x 3000 float32 tile alone is 34 MiB
    with pytest.raises(InsufficientMemoryError, match=r"SSC-OMP on 3000 points .* lower block_size \(now 3000\)"):
        omp_coef(big, n_nonzero=2, block_size=3000)
    with pytest.raises(InsufficientMemoryError, match="block_size"):
        SSCOMP(n_clusters=3, n_nonzero=2, block_size=3000).fit(big)
    C = omp_coef(big, n_nonzero=2, block_size=100)  # the advice: a smaller block fits, same coefficients
    assert abs(C - ref).max() < 1e-6


def test_ensc_guard_runs_before_the_solver(big, available, monkeypatch):
    def solver_started(*args, **kwargs):
        raise AssertionError("the solver started before the memory check")

    monkeypatch.setattr(ensc_module, "elastic_net_coef", solver_started)
    # the 3,000 x 3,000 float32 and float64 Grams (34 + 69 MiB) and the whole-dictionary start's (64-point blocks)
    # fit, the 3,000-wide tiles do not
    available(160 * MiB)
    est = ElasticNetSubspaceClustering(n_clusters=3, block_size=3000)
    with pytest.raises(InsufficientMemoryError, match=r"EnSC active-set solver on 3000 points .*lower block_size "
                                                      r"\(now 3000\) or support_size \(now 100\)"):
        est.fit(big)
    est.set_params(block_size=64)._check_memory(3000, 5)  # the advice fits
    est.set_params(algorithm="per_point")._check_memory(3000, 5)
    available(64 * 1024)
    with pytest.raises(InsufficientMemoryError, match="per-point solver"):
        est._check_memory(3000, 5)


def test_senet_sgd_on_many_points_is_refused_with_two_pass_advice(available):
    est = SENet(3, hidden_sizes=(256, 256, 256), embed_dim=256, block_size=100, n_nonzero=50, teacher=None,
                n_train=None)  # Alg. 1 on all points (the CPU "auto" would train on a 5,000-point sample with a teacher)
    available(32 * MiB)  # Alg. 1 keeps the key activations of all 3000 atoms (about 50 MiB)
    with pytest.raises(InsufficientMemoryError, match=r"SENet training \(sgd.*use algorithm='two_pass'"):
        est._check_memory(3000, 5)
    with pytest.raises(InsufficientMemoryError, match=r"SENet training \(key_cache.*use algorithm='two_pass'"):
        est.set_params(algorithm="key_cache")._check_memory(3000, 5)  # every atom may be a candidate
    est.set_params(algorithm="two_pass")._check_memory(3000, 5)  # memory independent of N
    est.set_params(algorithm="sgd", n_train=500)._check_memory(3000, 5)
    with pytest.raises(InsufficientMemoryError, match=r"SENet coefficients of 3000 points .*n_nonzero \(now 1000\)"):
        est.set_params(n_nonzero=1000)._check_memory(3000, 5)  # 3000 x 1000 kept coefficients


def test_senet_inference_guard_at_predict(available):
    X, _, _ = make_union_of_subspaces(3, 2, 6, 10, random_state=0)
    m = SENet(3, hidden_sizes=(8,), embed_dim=8, n_iter=2, batch_size=10, block_size=16, affinity="symmetric",
              random_state=0, n_init=2).fit(X)
    available(2 * 1024)
    with pytest.raises(InsufficientMemoryError, match=r"SENet coefficients of 30 points on 30 atoms .*lower "
                                                      r"block_size \(now 16\)"):
        m.predict(X)


def test_dense_spectral_fallback_is_guarded(available):
    A = sp.random(500, 500, density=0.05, random_state=0, format="csr")
    A = A + A.T
    available(1 * MiB)  # dense eigh of 500 x 500 needs about 6 MiB
    with pytest.raises(InsufficientMemoryError, match=r"dense eigendecomposition of the 500 x 500 .*eigen_solver="
                                                      r"'arpack'"):
        spectral_clustering(A, 3, random_state=0)
    labels = spectral_clustering(A, 3, random_state=0, eigen_solver="arpack", n_init=2)  # the advice works
    assert labels.shape == (500,)
    with pytest.raises(InsufficientMemoryError, match=r"n_components < n_samples - 1 = 499 \(now 499\)"):
        spectral_clustering(A, 3, n_components=499, random_state=0, eigen_solver="arpack")
