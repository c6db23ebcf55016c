"""Output spaces: FLAME LBS against a plain per-frame reference, numpy/torch parity, the chumpy-style pickle,
blendshapes both ways (the bounded solve recovers generating weights), and one-line errors."""

from __future__ import annotations

import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.optimize import lsq_linear
from scipy.spatial.transform import Rotation

from a2fbench import spaces
from a2fbench.errors import A2FBenchError, RawDataError, SpaceError
from a2fbench.registry import get_space, space_channels
from a2fbench.sources.synth import write_blendshape_basis, write_flame_model
from a2fbench.sources.synth.face import make_face

LAYOUT = dict(get_space("flame_params_413").layout or {})


# ------------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def flame_pkl(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """synth's FLAME-2020-like generic_model.pkl on a 700-vertex face (same keys, shapes beyond V, pickle form)."""
    p = tmp_path_factory.mktemp("flame") / "generic_model.pkl"
    write_flame_model(p, make_face(700, seed=0), 1.0)
    return p


@pytest.fixture(scope="module")
def flame(flame_pkl: Path) -> dict:
    return spaces.read_flame_model(flame_pkl)


def _params(rng: np.random.Generator, T: int) -> np.ndarray:
    P = np.zeros((T, 413))
    P[:, 0:300] = rng.normal(0, 1.0, (T, 300))
    P[:, 300:400] = rng.normal(0, 1.0, (T, 100))
    P[:, 400:403] = rng.normal(0, 0.3, (T, 3))  # jaw, up to ~1 rad
    P[:, 403:413] = rng.normal(0, 1.0, (T, 10))  # rot6d, translation, scale: ignored
    P[0, 400:403] = 0.0  # exactly zero jaw
    P[1, 400:403] = [1e-9, 0, 0]  # the small-angle branch
    return P


def reference_lbs(a: dict, P: np.ndarray) -> np.ndarray:
    """Plain FLAME LBS, one frame at a time, written from the FLAME/SMPL paper (scipy rotations)."""
    V = a["v_template"].shape[0]
    J = a["J_regressor"].shape[0]
    parents = a["kintree_table"][0].astype(np.int64)
    out = np.zeros((len(P), V, 3))
    for t, p in enumerate(P):
        beta, psi = p[0:300], p[300:400]
        # shape and expression blend shapes: FLAME 2020 stores 300 shape then 100 expression directions
        v_shaped = a["v_template"] + a["shapedirs"][:, :, :300] @ beta + a["shapedirs"][:, :, 300:400] @ psi
        joints = a["J_regressor"] @ v_shaped  # (J, 3)
        pose = np.zeros((J, 3))
        pose[2] = p[400:403]  # jaw; global, neck, eyes stay zero
        R = [Rotation.from_rotvec(pose[j]).as_matrix() for j in range(J)]
        feat = np.concatenate([(R[j] - np.eye(3)).ravel() for j in range(1, J)])
        v_posed = v_shaped + a["posedirs"] @ feat
        world = []
        for j in range(J):
            local = np.eye(4)
            local[:3, :3] = R[j]
            local[:3, 3] = joints[j] - (joints[parents[j]] if j > 0 else 0)
            world.append(local if j == 0 else world[parents[j]] @ local)
        rel = []
        for j in range(J):
            undo = np.eye(4)
            undo[:3, 3] = -joints[j]
            rel.append(world[j] @ undo)
        for v in range(V):
            T = sum(a["weights"][v, j] * rel[j] for j in range(J))
            out[t, v] = (T @ np.append(v_posed[v], 1.0))[:3]
    return out


# ------------------------------------------------------------------------------------------------ FLAME
def test_flame_pickle_is_chumpy_style_and_loads_without_chumpy(flame_pkl: Path, flame: dict) -> None:
    raw = flame_pkl.read_bytes()
    assert b"chumpy.ch\nCh" in raw and b"scipy.sparse" in raw  # the objects FLAME 2020's pickle carries
    if "chumpy" not in sys.modules:
        try:
            import chumpy  # noqa: F401
        except ImportError:
            with pytest.raises(ModuleNotFoundError):
                pickle.loads(raw)  # a plain unpickler needs chumpy; ours does not
    assert "chumpy" not in sys.modules
    assert flame["v_template"].shape == (700, 3) and flame["shapedirs"].shape == (700, 3, 400)
    assert flame["posedirs"].shape == (700, 3, 36) and flame["J_regressor"].shape == (5, 700)
    assert flame["kintree_table"].tolist()[0][1:] == [0, 1, 1, 1]


def test_flame_numpy_matches_plain_reference_lbs(flame: dict) -> None:
    P = _params(np.random.default_rng(0), 5)
    conv = spaces.FlameConverter(flame, LAYOUT)
    np.testing.assert_allclose(conv.to_vertices(P), reference_lbs(flame, P), rtol=0, atol=1e-12)


def test_flame_ignores_rotation_translation_scale_and_jaw_moves_the_lower_face(flame: dict) -> None:
    conv = spaces.FlameConverter(flame, LAYOUT)
    P = _params(np.random.default_rng(1), 3)
    Q = P.copy()
    Q[:, 403:413] = 7.0
    np.testing.assert_array_equal(conv.to_vertices(P), conv.to_vertices(Q))
    Q = P.copy()
    Q[:, 400] += 0.2
    moved = np.linalg.norm(conv.to_vertices(Q) - conv.to_vertices(P), axis=2)
    lower = flame["weights"][:, 2] > 0.5  # the jaw joint's vertices
    assert moved[:, lower].mean() > 10 * moved[:, ~lower].mean()


def test_flame_torch_matches_numpy_any_batch_shape(flame: dict) -> None:
    P = _params(np.random.default_rng(2), 6)
    ref = spaces.FlameConverter(flame, LAYOUT).to_vertices(P)
    sp = get_space("flame_params_413")
    m64 = spaces.torch_converter(sp, flame, dtype=torch.float64)
    got = m64(torch.from_numpy(P).reshape(2, 3, 413)).numpy()
    assert got.shape == (2, 3, 700, 3)
    np.testing.assert_allclose(got.reshape(ref.shape), ref, rtol=0, atol=1e-12)
    m32 = spaces.torch_converter(sp, flame)
    got32 = m32(torch.from_numpy(P.astype(np.float32))).numpy()
    np.testing.assert_allclose(got32, ref, rtol=0, atol=2e-5 * np.abs(ref).max())
    assert not any(k in m32.state_dict() for k in ("dirs", "posedirs"))  # model arrays stay out of checkpoints


def test_flame_torch_gradient_is_finite_and_correct_at_zero_pose(flame: dict) -> None:
    sp = get_space("flame_params_413")
    m = spaces.torch_converter(sp, flame, dtype=torch.float64)
    P = torch.zeros(1, 413, dtype=torch.float64)
    P[0, 300] = 0.5
    P.requires_grad_(True)
    w = torch.from_numpy(np.random.default_rng(3).normal(size=(700, 3)))
    loss = (m(P)[0] * w).sum()
    (g,) = torch.autograd.grad(loss, P)
    assert torch.isfinite(g).all() and g[0, 400:403].abs().sum() > 0
    eps = 1e-6
    for i in (300, 400, 401, 402):  # central differences, through the zero-angle branch for the jaw
        d = torch.zeros(1, 413, dtype=torch.float64)
        d[0, i] = eps
        fd = ((m(P.detach() + d)[0] * w).sum() - (m(P.detach() - d)[0] * w).sum()) / (2 * eps)
        assert abs(float(fd) - float(g[0, i])) < 1e-6 * max(1.0, abs(float(fd)))


def test_rodrigues_matches_scipy_including_tiny_angles() -> None:
    r = np.concatenate([np.random.default_rng(4).normal(0, 1, (50, 3)), [[0, 0, 0], [1e-9, -2e-9, 0], [1e-5, 0, 0]]])
    want = Rotation.from_rotvec(r).as_matrix()
    np.testing.assert_allclose(spaces.rodrigues(r), want, atol=1e-14)
    from a2fbench.spaces.torch_modules import rodrigues as trod

    np.testing.assert_allclose(trod(torch.from_numpy(r)).numpy(), want, atol=1e-14)


def test_convert_flame_npz_round_trip(flame_pkl: Path, flame: dict, tmp_path: Path) -> None:
    out = spaces.convert_flame(flame_pkl, tmp_path / "flame.npz")
    z = np.load(out, allow_pickle=False)  # plain arrays only
    assert {"v_template", "shapedirs", "posedirs", "J_regressor", "kintree_table", "weights", "f"} <= set(z.files)
    again = spaces.read_flame_model(out)
    P = _params(np.random.default_rng(5), 4)
    np.testing.assert_array_equal(spaces.FlameConverter(again, LAYOUT).to_vertices(P),
                                  spaces.FlameConverter(flame, LAYOUT).to_vertices(P))
    # the prepare-time reader falls back to flame.npz when generic_model.pkl is absent
    assert spaces.read_flame_model(tmp_path / "generic_model.pkl")["v_template"].shape == (700, 3)


def _one_line(e: pytest.ExceptionInfo) -> str:
    msg = str(e.value)
    assert "\n" not in msg and isinstance(e.value, A2FBenchError)
    return msg


def test_flame_bad_files_and_bad_widths(flame: dict, tmp_path: Path) -> None:
    bad = dict(flame)
    del bad["posedirs"]
    with open(tmp_path / "generic_model.pkl", "wb") as f:
        pickle.dump(bad, f, protocol=2)
    with pytest.raises(RawDataError) as e:
        spaces.read_flame_model(tmp_path / "generic_model.pkl")
    assert "missing ['posedirs']" in _one_line(e)
    wrong = dict(flame, posedirs=flame["posedirs"][:, :, :30])
    with pytest.raises(RawDataError) as e:
        spaces.check_flame_arrays(wrong)
    assert "posedirs shaped (700, 3, 36)" in _one_line(e)
    with pytest.raises(RawDataError) as e:
        spaces.read_flame_model(tmp_path / "nothing" / "generic_model.pkl")
    assert "flame.is.tue.mpg.de" in _one_line(e)
    conv = spaces.FlameConverter(flame, LAYOUT)
    with pytest.raises(SpaceError) as e:
        conv.to_vertices(np.zeros((4, 412)))
    assert "width 413" in _one_line(e)
    m = spaces.torch_converter("flame_params_413", flame)
    with pytest.raises(SpaceError):
        m(torch.zeros(2, 300))


# ----------------------------------------------------------------------------------------- blendshapes
@pytest.fixture(scope="module", params=["arkit52", "arkit51"])
def basis(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict]:
    sp = get_space(request.param)
    p = tmp_path_factory.mktemp("basis") / (sp.basis_file or "b.npz")
    write_blendshape_basis(p, space_channels(sp) or [], make_face(900, seed=0), 1.0)
    return request.param, spaces.read_blendshape_basis(p, sp)


def _weights(rng: np.random.Generator, T: int, K: int) -> np.ndarray:
    w = rng.uniform(-0.4, 1.4, (T, K)).clip(0, 1)  # about a fifth exactly 0 and a fifth exactly 1
    w[0] = 0.0
    w[1] = 1.0
    return w


def test_blendshape_torch_matches_numpy(basis: tuple[str, dict]) -> None:
    name, arrays = basis
    conv = spaces.converter(name, arrays)
    w = _weights(np.random.default_rng(6), 7, conv.n_params)
    ref = conv.to_vertices(w)
    assert ref.shape == (7, 900, 3) and conv.channels == space_channels(get_space(name))
    m = spaces.torch_converter(name, arrays, dtype=torch.float64)
    np.testing.assert_allclose(m(torch.from_numpy(w)).numpy(), ref, atol=1e-12)
    np.testing.assert_allclose(ref.reshape(7, -1), w @ arrays["blendshape"].astype(np.float64)
                               + arrays["meanshape"].astype(np.float64).reshape(-1), atol=1e-12)


def test_arkit_solve_recovers_generating_weights(basis: tuple[str, dict]) -> None:
    name, arrays = basis
    conv = spaces.converter(name, arrays)
    w = _weights(np.random.default_rng(7), 300, conv.n_params)
    v = conv.to_vertices(w)
    got, info = conv.to_weights(v, return_info=True)
    assert np.abs(got - w).max() < 1e-4  # the bar; in practice ~1e-10
    assert np.abs(got - w).max() < 1e-8 and info["fallback_frames"] == 0
    np.testing.assert_allclose(conv.to_weights(v.reshape(300, -1)), got)  # (T, 3V) input too


def test_arkit_solve_is_the_bounded_least_squares_optimum(basis: tuple[str, dict]) -> None:
    """Vertices no weights in [0, 1] can make (noise, out-of-range weights): same answer as scipy's BVLS."""
    name, arrays = basis
    conv = spaces.converter(name, arrays)
    rng = np.random.default_rng(8)
    w = rng.normal(0.5, 0.8, (40, conv.n_params))
    v = conv.to_vertices(w) + rng.normal(0, 0.01, (40, 900, 3))
    got = conv.to_weights(v)
    assert got.min() >= 0.0 and got.max() <= 1.0
    A, d = conv.B.T, v.reshape(40, -1) - conv.mean
    for t in range(0, 40, 4):
        ref = lsq_linear(A, d[t], bounds=(0, 1), method="bvls", tol=1e-14).x
        cost = lambda x: np.sum((A @ x - d[t]) ** 2)  # noqa: E731
        assert cost(got[t]) <= cost(ref) * (1 + 1e-10)
        assert np.abs(got[t] - ref).max() < 1e-6
    lo = conv.to_weights(v, lower=-1.0, upper=2.0)  # other bounds are honoured
    assert lo.min() >= -1.0 and lo.max() <= 2.0 and not np.allclose(lo, got)


def test_arkit_51_and_52_reorder_round_trip() -> None:
    c52, c51 = space_channels(get_space("arkit52")), space_channels(get_space("arkit51"))
    assert len(c52) == 52 and len(c51) == 51 and c52 == sorted(c52, key=str.lower) and set(c52) - set(c51) == {"tongueOut"}
    w = np.random.default_rng(9).random((5, 51))
    w52 = spaces.reorder_channels(w, c51, c52)
    assert w52.shape == (5, 52) and (w52[:, c52.index("tongueOut")] == 0).all()
    np.testing.assert_array_equal(spaces.reorder_channels(w52, c52, c51), w)


def test_basis_bad_keys_shapes_and_widths(tmp_path: Path, basis: tuple[str, dict]) -> None:
    name, arrays = basis
    sp = get_space(name)
    np.savez(tmp_path / "a.npz", mean=arrays["meanshape"], blendshape=arrays["blendshape"])
    with pytest.raises(RawDataError) as e:
        spaces.read_blendshape_basis(tmp_path / "a.npz", sp)
    assert "meanshape and blendshape" in _one_line(e)
    np.savez(tmp_path / "b.npz", meanshape=arrays["meanshape"], blendshape=arrays["blendshape"][:10])
    with pytest.raises(RawDataError) as e:
        spaces.read_blendshape_basis(tmp_path / "b.npz", sp)
    assert f"({sp.n_params}, 2700)" in _one_line(e)
    conv = spaces.converter(name, arrays)
    with pytest.raises(SpaceError) as e:
        conv.to_vertices(np.zeros((3, 50)))
    assert f"width {sp.n_params}" in _one_line(e)
    with pytest.raises(SpaceError):
        conv.to_weights(np.zeros((3, 899, 3)))
    with pytest.raises(SpaceError):
        spaces.converter(name, {"meanshape": arrays["meanshape"]})


def test_vertex_space_converters() -> None:
    sp = get_space("flame_5023_verts")
    assert spaces.converter(sp, {}) is None
    m = spaces.torch_converter(sp, {})
    x = torch.arange(2 * 4 * 15069, dtype=torch.float32).reshape(2, 4, 15069)
    assert torch.equal(m(x), x.reshape(2, 4, 5023, 3))
    assert spaces.to_vertices(sp, {}, x[0].numpy()).shape == (4, 5023, 3)
    with pytest.raises(SpaceError):
        m(torch.zeros(3, 15068))


def test_solve_arkit_cli(tmp_path: Path, basis: tuple[str, dict]) -> None:
    name, arrays = basis
    np.savez(tmp_path / "basis.npz", **arrays)
    conv = spaces.converter(name, arrays)
    w = _weights(np.random.default_rng(10), 20, conv.n_params)
    np.save(tmp_path / "clip.npy", conv.to_vertices(w).astype(np.float64))
    exe = [sys.executable, "-m", "a2fbench.cli"]
    r = subprocess.run(exe + ["solve-arkit", str(tmp_path / "clip.npy"), "--basis", str(tmp_path / "basis.npz"),
                              "--space", name, "--out", str(tmp_path / "w.npy")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert np.abs(np.load(tmp_path / "w.npy") - w).max() < 1e-4
    np.save(tmp_path / "bad.npy", np.zeros((3, 10)))
    r = subprocess.run(exe + ["solve-arkit", str(tmp_path / "bad.npy"), "--basis", str(tmp_path / "basis.npz"),
                              "--out", str(tmp_path / "bad_w.npy")], capture_output=True, text=True)
    assert r.returncode == 1 and r.stderr.startswith("error: ") and r.stderr.count("\n") == 1
    assert "Traceback" not in r.stderr and not (tmp_path / "bad_w.npy").exists()
