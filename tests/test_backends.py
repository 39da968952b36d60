"""Coefficient-stage backends: the Dask and faiss engines against the in-process one."""

import numpy as np
import pytest
import torch

from selfexpress.models._senet_engine import blockwise_coefficients, coef_topk_block


def _emb(n, p, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.tanh(torch.randn(n, p, generator=g))


def _same_csr(A, B):
    A, B = A.tocsr(), B.tocsr()
    A.sort_indices(), B.sort_indices()
    return (A.shape == B.shape and np.array_equal(A.indptr, B.indptr) and np.array_equal(A.indices, B.indices)
            and np.array_equal(A.data, B.data))


def test_topk_block_matches_dense_brute_force():
    q, k = _emb(40, 8, 0), _emb(60, 8, 1)
    vals, idx = coef_topk_block(q, k, alpha=0.125, threshold=0.5, k=5, row_offset=None, col_block=7)
    u = (q @ k.T).numpy()
    c = 0.125 * np.sign(u) * np.maximum(np.abs(u) - 0.5, 0)
    for i in range(40):
        want = np.sort(np.abs(c[i]))[::-1][:5]
        np.testing.assert_allclose(np.sort(np.abs(vals[i]))[::-1], want, rtol=1e-6)
        np.testing.assert_allclose(vals[i][idx[i] >= 0], c[i, idx[i][idx[i] >= 0]], rtol=1e-6)


def test_self_exclusion():
    x = _emb(30, 6, 2)
    C = blockwise_coefficients(x, x, alpha=1.0, threshold=0.0, n_nonzero=29, exclude_self=True, block_size=7)
    assert C.diagonal().sum() == 0 and C.shape == (30, 30)
    assert (C.getnnz(axis=1) == 29).all()


@pytest.mark.parametrize("exclude_self", [True, False])
def test_dask_local_cluster_gives_the_identical_graph(exclude_self):
    pytest.importorskip("distributed")
    q = _emb(450, 16, 3)
    keys = q if exclude_self else _emb(300, 16, 4)
    kw = dict(alpha=1 / 16, threshold=0.3, n_nonzero=12, exclude_self=exclude_self, block_size=100)
    local = blockwise_coefficients(q, keys, backend="local", **kw)
    dask = blockwise_coefficients(q, keys, backend="dask", n_workers=2, **kw)
    assert local.nnz > 0
    assert _same_csr(local, dask)


def test_faiss_flat_equals_exhaustive_search():
    pytest.importorskip("faiss")
    q = _emb(300, 16, 5)
    kw = dict(alpha=1 / 16, threshold=0.2, n_nonzero=10, exclude_self=True, block_size=64)
    local = blockwise_coefficients(q, q, backend="local", **kw)
    approx = blockwise_coefficients(q, q, backend="faiss", faiss_index="flat", **kw)
    assert local.nnz > 0 and approx.diagonal().sum() == 0
    # same entries (up to float32 summation order of the inner products)
    np.testing.assert_array_equal(local.indptr, approx.indptr)
    np.testing.assert_array_equal(local.indices, approx.indices)
    np.testing.assert_allclose(local.data, approx.data, rtol=1e-5, atol=1e-7)


def test_faiss_ivf_recovers_most_entries():
    pytest.importorskip("faiss")
    q = _emb(2000, 16, 6)
    kw = dict(alpha=1 / 16, threshold=0.2, n_nonzero=10, exclude_self=True, block_size=500)
    local = blockwise_coefficients(q, q, backend="local", **kw)
    ivf = blockwise_coefficients(q, q, backend="faiss", faiss_index="ivf", nlist=16, nprobe=8, **kw)
    hit = local.multiply(ivf != 0).nnz / local.nnz
    assert hit > 0.9


def test_bad_backend_is_refused():
    x = _emb(10, 4, 7)
    with pytest.raises(ValueError, match="backend must be one of"):
        blockwise_coefficients(x, x, alpha=1.0, threshold=0.0, n_nonzero=3, backend="spark")
    from selfexpress.models.senet import SENet

    with pytest.raises(ValueError, match="backend"):
        SENet(2, hidden_sizes=(8,), embed_dim=8, n_iter=2, backend="spark").fit(np.random.rand(20, 5))
    with pytest.raises(ValueError, match="backend_options"):
        SENet(2, hidden_sizes=(8,), embed_dim=8, n_iter=2, backend_options={"bogus": 1}).fit(np.random.rand(20, 5))


def test_senet_faiss_backend_matches_local():
    pytest.importorskip("faiss")
    from selfexpress.data import make_union_of_subspaces
    from selfexpress.models.senet import SENet

    X, _ = make_union_of_subspaces(3, 3, 8, 40, random_state=0)[:2]
    kw = dict(n_clusters=3, hidden_sizes=(16,), embed_dim=16, n_iter=30, n_nonzero=8, random_state=0)
    a = SENet(**kw).fit(X)
    b = SENet(backend="faiss", **kw).fit(X)
    np.testing.assert_array_equal(a.coef_.indices, b.coef_.indices)
    np.testing.assert_allclose(a.coef_.data, b.coef_.data, rtol=1e-5, atol=1e-7)


def test_cli_npy_input_is_memory_mapped_and_backend_flag_works(tmp_path, capsys, monkeypatch):
    pytest.importorskip("faiss")
    from selfexpress import pipeline
    from selfexpress.cli import main
    from selfexpress.data import make_union_of_subspaces

    X, y = make_union_of_subspaces(2, 2, 6, 30, random_state=0)[:2]
    np.save(tmp_path / "X.npy", X.astype(np.float32))
    seen = {}
    real = pipeline.load_input

    def spy(*a, **k):
        out = real(*a, **k)
        seen["memmap"] = isinstance(out[0], np.memmap)
        return out

    monkeypatch.setattr(pipeline, "load_input", spy)
    rc = main(["cluster", "--input", str(tmp_path / "X.npy"), "--n-clusters", "2", "--n-iter", "5",
               "--hidden-sizes", "8", "--embed-dim", "8", "--backend", "faiss", "-q"])
    assert rc == 0 and seen["memmap"]
    assert "60 points" in capsys.readouterr().out
