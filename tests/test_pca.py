"""Streamed PCA: against an exact SVD (subspace angle, reconstruction error), numpy/torch parity, seeds,
bounded memory, the pca.npz file in UniTalker's layout, encode/decode, and bad input (one line, nothing written)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.linalg import subspace_angles

import a2fbench
from a2fbench.errors import A2FBenchError, SpaceError, StoreError
from a2fbench.spaces import pca


def lowrank(N: int, D: int, rank: int, noise: float, seed: int = 0) -> np.ndarray:
    """Rows = offset + decaying rank-``rank`` signal + isotropic noise."""
    rng = np.random.default_rng(seed)
    scales = 10.0 * 0.7 ** np.arange(rank)
    basis = np.linalg.qr(rng.normal(size=(D, rank)))[0].T
    return 3.0 + (rng.normal(size=(N, rank)) * scales) @ basis + noise * rng.normal(size=(N, D))


def exact(X: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    Xc = X - X.mean(0)
    _, s, Vt = np.linalg.svd(Xc, full_matrices=False)
    return Vt[:k], s[:k], s, float((s**2).sum())


def residual(X: np.ndarray, p: pca.PCA) -> float:
    return float(((X - p.decode(p.encode(X.astype(np.float64)))) ** 2).sum())


# ------------------------------------------------------------------------------------ tolerances
# Every tolerance below follows from the arithmetic of the fit, not from a run. The fit multiplies float32 blocks
# (sgemm over the D columns, then over up to NumpyAcc.flush_rows rows before each float64 flush), so the
# covariance it works with is M + dM with |dM| ~ sqrt(n) * u32 * ||M|| for n = D + flush_rows terms (the
# probabilistic rounding bound of Higham & Mary 2019; the worst case n * u32 never occurs with random rounding),
# and C = 8 covers the constant with room. Weyl: |d lambda_i| <= ||dM|| ~ sqrt(n) u32 lambda_1, so
# |d s_i| = |d lambda_i| / (2 s_i): the small components' singular values are the least precise, relative to
# s_1^2 / s_i^2. Stored components and mean are float32 (relative u32 each).
U32 = float(np.finfo(np.float32).eps)
C = 8.0


def sv_tolerance(s: np.ndarray, D: int) -> np.ndarray:
    """Absolute tolerance on each singular value of a fit on D columns (see above)."""
    n = D + pca.backends.NumpyAcc.flush_rows
    return C * np.sqrt(n) * U32 * s[0] ** 2 / (2 * s)


def residual_excess(s: np.ndarray, D: int) -> float:
    """How far above the optimal residual float32 components may put the reconstruction: each component row
    carries a rounding error of norm <= sqrt(D) u32 / 2, which leaks s_i^2 |e_i|^2 of the data's energy."""
    return C * float((s**2).sum()) * D * U32**2


# -------------------------------------------------------------------------------------------- accuracy
def test_matches_exact_svd_with_a_spectral_gap() -> None:
    """Against an exact float64 SVD, within the tolerances the float32 arithmetic allows (see above)."""
    X = lowrank(500, 700, 12, 1e-3)
    k, D = 12, 700
    Vt, s, s_all, total = exact(X, k)
    p = pca.fit_array(X, k, progress=False)
    assert p.components.shape == (k, D) and p.mean.shape == (D,)
    # float32 components: each direction is off by ~ sqrt(D) u32 = 2e-6 rad; 1e-4 rad leaves 50x
    assert subspace_angles(p.components.T.astype(np.float64), Vt.T).max() < 1e-4
    best = float((s_all[k:] ** 2).sum())
    assert best <= residual(X, p) <= best + residual_excess(s, D)
    tol = sv_tolerance(s, D)
    assert (np.abs(p.singular_values - s) <= tol).all(), (np.abs(p.singular_values - s) / tol).max()
    assert (np.abs(p.explained_variance_ratio - s**2 / total) <= 2 * s * tol / total).all()
    np.testing.assert_allclose(p.mean, X.mean(0), rtol=C * U32, atol=C * U32 * np.abs(X).max())
    np.testing.assert_allclose(p.components @ p.components.T, np.eye(k), atol=C * np.sqrt(D) * U32)


def test_flat_noise_tail_within_stated_tolerance() -> None:
    """Components inside isotropic noise are the hard case: residual within 1% of the optimum, the dominant
    subspace exact, and the stated variances never above the true ones."""
    X = lowrank(500, 700, 5, 0.05, seed=1)
    k = 30
    Vt, s, s_all, total = exact(X, k)
    p = pca.fit_array(X, k, progress=False)
    assert residual(X, p) <= float((s_all[k:] ** 2).sum()) * 1.01
    assert subspace_angles(p.components[:5].T.astype(np.float64), Vt[:5].T).max() < 1e-4
    assert p.explained_variance_ratio.sum() <= 1 - residual(X, p) / total + 1e-9
    more = pca.fit_array(X, k, passes=4, progress=False)  # more passes, closer to the optimum
    assert residual(X, more) <= residual(X, p)


def test_torch_path_matches_numpy_path() -> None:
    X = lowrank(400, 600, 10, 1e-3, seed=2)
    a = pca.fit_array(X, 10, progress=False)
    b = pca.fit_array(X, 10, device="torch:cpu", progress=False)
    assert subspace_angles(a.components.T.astype(np.float64), b.components.T.astype(np.float64)).max() < 1e-4
    # each path is within sv_tolerance of the exact values, so of each other within twice that
    assert (np.abs(a.singular_values - b.singular_values) <= 2 * sv_tolerance(a.singular_values, 600)).all()
    np.testing.assert_allclose(a.mean, b.mean, rtol=2 * C * U32, atol=2 * C * U32 * np.abs(X).max())
    np.testing.assert_allclose(np.abs((a.components * b.components).sum(1)), 1, atol=2 * C * np.sqrt(600) * U32)
    c = pca.fit(pca.ArraySource(X), 10, device="torch:cpu", cache_on_device=True, progress=False)  # GPU cache path
    np.testing.assert_allclose(c.components, b.components, atol=1e-6)


def test_deterministic_for_a_seed() -> None:
    X = lowrank(300, 400, 8, 0.02, seed=3)
    a = pca.fit_array(X, 16, seed=5, progress=False)
    b = pca.fit_array(X, 16, seed=5, progress=False)
    c = pca.fit_array(X, 16, seed=6, progress=False)
    assert np.array_equal(a.components, b.components) and np.array_equal(a.singular_values, b.singular_values)
    assert not np.array_equal(a.components, c.components)
    assert abs(residual(X, a) - residual(X, c)) < 0.01 * residual(X, a)


def test_scratch_files_give_the_same_fit_and_are_removed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    X = lowrank(400, 500, 10, 1e-3, seed=4)
    a = pca.fit(pca.ArraySource(X, block_rows=64), 10, progress=False)
    monkeypatch.setattr(pca.algorithm, "SPILL_BYTES", 0)  # force the Krylov blocks and the data into scratch files
    b = pca.fit(pca.ArraySource(X, block_rows=64), 10, progress=False, spill_dir=tmp_path, spill_data=True)
    # the scratch files hold the same float32 / float64 values: only the order of a few float64 sums changes
    np.testing.assert_allclose(a.components, b.components, atol=C * np.sqrt(500) * U32)
    assert (np.abs(a.singular_values - b.singular_values) <= 2 * sv_tolerance(a.singular_values, 500)).all()
    assert list(tmp_path.iterdir()) == []


class _Generated:
    """A stream of N rows produced block by block: nothing of size N is ever held."""

    def __init__(self, n: int, d: int = 1000):
        self.n_rows, self.dim, self.name, self.block_rows = n, d, "generated", 100
        rng = np.random.default_rng(0)
        self.basis = rng.normal(size=(6, d))

    def blocks(self):
        for a in range(0, self.n_rows, self.block_rows):
            rng = np.random.default_rng(a)
            n = min(self.block_rows, self.n_rows - a)
            yield rng.normal(size=(n, 6)) @ self.basis + 0.01 * rng.normal(size=(n, self.dim))


def test_peak_memory_does_not_grow_with_the_number_of_frames() -> None:
    # Both sizes fill the pipeline (three 384-row GEMM blocks in flight), so only growth with N would show.
    peaks = []
    for n in (3000, 18000):
        tracemalloc.start()
        pca.fit(_Generated(n), 16, progress=False)
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
    assert peaks[1] < 1.15 * peaks[0], peaks  # 6x the frames, same peak (the data alone would be 6x)
    assert peaks[1] < 0.25 * 18000 * 1000 * 8, peaks  # and far below the data matrix (144 MB as float64)


def test_encode_decode_round_trips_numpy_and_torch() -> None:
    X = lowrank(300, 400, 6, 0.01, seed=5)
    p = pca.fit_array(X, 30, progress=False)
    z = np.random.default_rng(0).normal(size=(4, 30))
    np.testing.assert_allclose(p.encode(p.decode(z)), z, atol=1e-4)
    x = X[:5]
    proj = p.decode(p.encode(x))
    np.testing.assert_allclose(p.decode(p.encode(proj)), proj, atol=1e-4)  # a projection: idempotent
    zt = p.encode(torch.from_numpy(x))
    assert isinstance(zt, torch.Tensor) and zt.dtype == torch.float64
    np.testing.assert_allclose(zt.numpy(), p.encode(x), atol=1e-6)
    np.testing.assert_allclose(p.decode(zt).numpy(), p.decode(p.encode(x)), atol=1e-6)
    m = p.to_torch(n=10)
    assert not m.state_dict()  # non-persistent buffers
    np.testing.assert_allclose(m(m.encode(torch.from_numpy(x))).numpy(), p.decode(p.encode(x, n=10)), atol=1e-4)
    s = p.scaled(0.2)
    np.testing.assert_allclose(s.decode(p.encode(x) * 0.2), 0.2 * p.decode(p.encode(x)), atol=1e-5)
    with pytest.raises(SpaceError):
        p.encode(np.zeros((2, 399)))
    with pytest.raises(SpaceError):
        p.decode(np.zeros((2, 31)))


# ------------------------------------------------------------------------------------ datasets & files
@pytest.fixture
def data(data_tiny: Path, tmp_path: Path) -> Path:
    """A private copy of the tiny D1 and D3 stores (fit_dataset writes into DATA/<id>/)."""
    root = tmp_path / "data"
    for d in ("D1", "D3"):
        shutil.copytree(data_tiny / d, root / d)
    return root


def test_fit_dataset_writes_unitalker_layout_matching_exact_svd(data: Path) -> None:
    path = pca.fit_dataset("D1", data, components=8, progress=False)
    assert path == data / "D1" / "pca.npz" and not [p for p in (data / "D1").iterdir() if p.name.startswith(".")]
    z = np.load(path, allow_pickle=False)
    for key in pca.UNITALKER_KEYS:
        assert key in z.files
    D = 5023 * 3
    assert z["components_to_data"].shape == (8, D) and z["original_data_mean"].shape == (D,)
    assert z["S"].shape == z["explained_variance_ratio"].shape == z["data_components_std"].shape == (8,)
    meta = json.loads(str(z["meta"][0]))
    ds = a2fbench.open_dataset(data, "D1")
    assert meta["fingerprint"] == ds.card["fingerprint"] and meta["split"] == "train" and meta["seed"] == 0
    assert meta["dataset"] == "D1" and meta["components"] == 8 and 0 < meta["explained_variance"] <= 1
    X = np.concatenate([np.asarray(ds[s].motion, np.float64) - np.asarray(ds.template(ds[s].subject), np.float64)
                        for s in ds.split("train")])
    assert meta["n_frames"] == len(X)
    Vt, s, s_all, total = exact(X, 8)
    W, mu = z["components_to_data"].astype(np.float64), z["original_data_mean"].astype(np.float64)
    got = float(((X - mu - ((X - mu) @ W.T) @ W) ** 2).sum())
    best = float((s_all[8:] ** 2).sum())
    assert got <= best * 1.01  # the acceptance bar; in practice much closer
    assert z["explained_variance_ratio"].sum() <= 1 - got / total + 1e-6
    p = pca.load_for(data, "D1")
    np.testing.assert_array_equal(p.components, z["components_to_data"])
    assert pca.load(path).meta == meta


def test_fit_dataset_is_deterministic_and_stale_files_are_refused(data: Path) -> None:
    a = np.load(pca.fit_dataset("D1", data, components=4, seed=3, progress=False))["components_to_data"]
    b = np.load(pca.fit_dataset("D1", data, components=4, seed=3, progress=False))["components_to_data"]
    assert np.array_equal(a, b)
    z = dict(np.load(data / "D1" / "pca.npz"))
    meta = json.loads(str(z["meta"][0]))
    meta["fingerprint"] = "sha256:" + "0" * 64
    z["meta"] = np.array([json.dumps(meta)])
    np.savez(data / "D1" / "pca.npz", **z)
    with pytest.raises(StoreError) as e:
        pca.load_for(data, "D1")
    assert "stale PCA" in str(e.value) and "a2fbench pca D1" in str(e.value)


def test_a_unitalker_release_file_without_meta_loads(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    W = np.linalg.qr(rng.normal(size=(30, 6)))[0].T.astype(np.float32)
    np.savez(tmp_path / "pca.npz", components_to_data=W, original_data_mean=np.ones(30, np.float32),
             explained_variance_ratio=np.ones(12), S=np.ones(12), data_components_mean=np.zeros(12),
             data_components_std=np.ones(12))
    p = pca.load(tmp_path / "pca.npz")
    assert p.meta == {} and p.n_components == 6 and p.singular_values.shape == (6,)


def _one_line(e: pytest.ExceptionInfo) -> str:
    assert isinstance(e.value, A2FBenchError) and "\n" not in str(e.value)
    return str(e.value)


def test_bad_input_one_line_nothing_written(data: Path) -> None:
    with pytest.raises(SpaceError) as e:
        pca.fit_dataset("D3", data, components=4, progress=False)
    assert "vertex dataset" in _one_line(e) and "arkit52" in str(e.value)
    ds = a2fbench.open_dataset(data, "D1")
    n = sum(ds[s].n_frames for s in ds.split("train"))
    with pytest.raises(SpaceError) as e:
        pca.fit_dataset("D1", data, components=n + 5, progress=False)
    assert f"fewer components than frames ({n})" in _one_line(e)
    with pytest.raises(SpaceError):
        pca.fit_dataset("D1", data, components=0, progress=False)
    with pytest.raises(SpaceError) as e:
        pca.fit_dataset("D1", data, components=4, device="tpu", progress=False)
    if not torch.cuda.is_available():
        with pytest.raises(SpaceError) as e:
            pca.fit_dataset("D1", data, components=4, device="cuda", progress=False)
        assert "--device cpu" in _one_line(e)
    # NaN in the stored motion: named by sequence and frame
    import h5py

    sid = ds.split("train")[1]
    ds.close()
    with h5py.File(data / "D1" / "store.h5", "a") as f:
        f[f"sequences/{sid}/motion"][3, 7] = np.nan
    with pytest.raises(SpaceError) as e:
        pca.fit_dataset("D1", data, components=4, progress=False)
    assert f"sequence {sid} frame 3" in _one_line(e)
    assert sorted(p.name for p in (data / "D1").iterdir()) == ["card.json", "store.h5"]
    assert sorted(p.name for p in (data / "D3").iterdir()) == ["card.json", "store.h5"]
    with pytest.raises(SpaceError):
        pca.fit_array(np.full((20, 5), np.nan), 2, progress=False)


def test_cli_checks_every_dataset_before_fitting_any(data: Path) -> None:
    exe = [sys.executable, "-m", "a2fbench.cli", "pca"]
    r = subprocess.run(exe + ["D1,D3", "--data", str(data), "--components", "4"], capture_output=True, text=True)
    assert r.returncode == 1 and r.stderr.startswith("error: ") and r.stderr.count("\n") == 1, r.stderr
    assert not (data / "D1" / "pca.npz").exists()
    r = subprocess.run(exe + ["D1", "--data", str(data), "--components", "4", "--seed", "1"], capture_output=True,
                       text=True)
    assert r.returncode == 0, r.stderr
    assert "D1: 4 components explain" in r.stdout and (data / "D1" / "pca.npz").is_file()
