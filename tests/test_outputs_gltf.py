"""GLB export: parse back by hand and rebuild every frame as base + sum_k w_k target_k (known answers).

Tolerance, from the arithmetic. Each stored float32 is the float64 input rounded to nearest, so with
u = 2**-24: |base32 - base| <= u |base|, |t32 - t| <= u |t|, |w32 - w| <= u |w|, hence per coordinate

    |w32 t32 - w t| <= (2u + u^2) |w| |t|
    |frame32 - frame| <= u |base| + (2u + u^2) sum_k |w_k| |t_k|  (+ the float64 summation, K eps64 terms)

where frame32 is rebuilt in float64 from the stored float32 values. Tests assert this element-wise bound.
"""
from __future__ import annotations

import os

import numpy as np
import pytest
from _output_helpers import accessor, grid_mesh, js_missing, read_glb, rebuild, validate

from a2fbench.outputs.gltf import (
    export_pca_glb,
    export_vertex_sequence_glb,
    fit_pca_basis,
    vertex_normals,
    write_morph_glb,
)


@pytest.fixture
def mesh():
    return grid_mesh()


U32 = 2.0 ** -24
EPS64 = np.finfo(np.float64).eps


def f32_bound(base, targets, weights):
    """Element-wise bound on |rebuilt - exact| (see module docstring); shapes (T, V, 3)."""
    k = len(targets)
    mag = np.einsum("tk,kvc->tvc", np.abs(weights), np.abs(targets))
    return U32 * np.abs(base)[None] + (2 * U32 + U32 ** 2 + 2 * k * EPS64) * mag + 4 * EPS64 * np.abs(base)[None]


def test_roundtrip_known_frames(tmp_path, mesh):
    verts, faces = mesh
    rng = np.random.default_rng(1)
    K, T, fps = 7, 25, 30.0
    targets = rng.standard_normal((K, len(verts), 3)) * 0.01
    weights = rng.uniform(-1.5, 1.5, (T, K))
    exact = verts[None] + np.einsum("tk,kvc->tvc", weights, targets)
    out = write_morph_glb(tmp_path / "a.glb", verts, faces, targets, weights, fps)
    got, *_ = rebuild(out)
    err = np.abs(got - exact)
    assert np.all(err <= f32_bound(verts, targets, weights)), err.max()
    assert err.max() > 0  # the check is not vacuous: float32 storage does lose bits


def test_structure(tmp_path, mesh):
    verts, faces = mesh
    rng = np.random.default_rng(2)
    names = [f"shape{i}" for i in range(4)]
    targets, weights = rng.standard_normal((4, len(verts), 3)) * 0.01, rng.uniform(0, 1, (10, 4))
    out = write_morph_glb(tmp_path / "s.glb", verts, faces, targets, weights, 25, names)
    _, base, tg, _w, gltf = rebuild(out)
    binary = read_glb(out)[1]
    mesh_js = gltf["meshes"][0]
    prim = mesh_js["primitives"][0]
    assert mesh_js["extras"]["targetNames"] == names
    assert mesh_js["weights"] == [0.0] * 4
    anim = gltf["animations"][0]
    assert anim["channels"] == [{"sampler": 0, "target": {"node": 0, "path": "weights"}}]
    sampler = anim["samplers"][0]
    assert sampler["interpolation"] == "LINEAR"
    times = accessor(gltf, binary, sampler["input"])[:, 0]
    np.testing.assert_array_equal(times, (np.arange(10) / 25.0).astype(np.float32))
    pos_acc = gltf["accessors"][prim["attributes"]["POSITION"]]
    assert pos_acc["min"] == base.min(0).tolist() and pos_acc["max"] == base.max(0).tolist()
    for t, tgt in zip(prim["targets"], tg):
        acc = gltf["accessors"][t["POSITION"]]
        assert acc["min"] == tgt.min(0).tolist() and acc["max"] == tgt.max(0).tolist()
    idx = accessor(gltf, binary, prim["indices"]).reshape(-1, 3)
    np.testing.assert_array_equal(idx, faces)
    nrm = accessor(gltf, binary, prim["attributes"]["NORMAL"]).astype(np.float64)
    np.testing.assert_allclose(np.linalg.norm(nrm, axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(nrm, vertex_normals(verts, faces), atol=1e-6)
    assert gltf["asset"]["extras"] == {"fps": 25.0, "frames": 10}


def test_uint32_indices_for_large_meshes(tmp_path):
    verts, faces = grid_mesh(300, 230)  # 69000 vertices > 65535
    out = write_morph_glb(tmp_path / "big.glb", verts, faces, np.zeros((1, len(verts), 3)), np.zeros((2, 1)), 30)
    gltf, binary = read_glb(out)
    acc = gltf["accessors"][gltf["meshes"][0]["primitives"][0]["indices"]]
    assert acc["componentType"] == 5125
    np.testing.assert_array_equal(accessor(gltf, binary, 2).reshape(-1, 3), faces)


def test_fit_pca_exact_low_rank(mesh):
    verts, _ = mesh
    rng = np.random.default_rng(3)
    basis_true = rng.standard_normal((5, len(verts), 3)) * 0.003
    frames = verts[None] + np.einsum("tk,kvc->tvc", rng.standard_normal((40, 5)), basis_true)
    b = fit_pca_basis(frames, max_error=1e-6, max_components=32)
    assert len(b.targets) == 5 and b.tolerance_met and b.max_error < 1e-9
    rebuilt = b.mean[None] + np.einsum("tk,kvc->tvc", b.weights.astype(np.float64), b.targets.astype(np.float64))
    assert np.abs(rebuilt - frames).max() < 1e-6  # float32 storage of weights / targets only
    np.testing.assert_allclose(b.weights.std(0), 1.0, rtol=1e-5)  # standardized


@pytest.mark.parametrize("criterion", ["max", "rms"])
def test_fit_pca_tolerance(mesh, criterion):
    verts, _ = mesh
    rng = np.random.default_rng(4)
    T, D = 60, verts.size
    spectrum = 0.01 * 0.7 ** np.arange(min(T, D))  # geometric decay, full rank
    q1, _ = np.linalg.qr(rng.standard_normal((T, T)))
    q2, _ = np.linalg.qr(rng.standard_normal((D, T)))
    frames = verts[None] + ((q1 * spectrum) @ q2.T).reshape(T, -1, 3)
    tol = 2e-5
    b = fit_pca_basis(frames, max_error=tol, max_components=200, criterion=criterion, method="svd")
    k = len(b.targets)
    xc = (frames - frames.mean(0)).reshape(T, -1)
    u, s, vt = np.linalg.svd(xc, full_matrices=False)

    def errors(n):
        r = (xc - (u[:, :n] * s[:n]) @ vt[:n]).reshape(T, -1, 3)
        per_vertex = np.linalg.norm(r, axis=2)
        return per_vertex.max(), np.sqrt((per_vertex ** 2).mean())

    mx, rms = errors(k)
    assert b.tolerance_met and 0 < k < 60
    np.testing.assert_allclose([b.max_error, b.rms_error], [mx, rms], rtol=1e-6)
    if criterion == "rms":
        assert rms <= tol < errors(k - 1)[1]  # exact minimum for rms
    else:
        assert mx <= tol < errors(k - 1)[0]
    g = fit_pca_basis(frames, max_error=tol, max_components=200, criterion=criterion, method="gram")
    assert len(g.targets) == k


def test_fit_pca_cap_reports_unmet(mesh):
    verts, _ = mesh
    frames = verts[None] + np.random.default_rng(5).standard_normal((30, len(verts), 3)) * 0.01
    b = fit_pca_basis(frames, max_error=1e-9, max_components=4)
    assert len(b.targets) == 4 and not b.tolerance_met and b.max_error > 1e-9


def test_vertex_sequence_roundtrip(tmp_path, mesh):
    verts, faces = mesh
    rng = np.random.default_rng(6)
    frames = verts[None] + np.einsum("tk,kvc->tvc", rng.standard_normal((50, 6)),
                                     rng.standard_normal((6, len(verts), 3)) * 0.002)
    b = export_vertex_sequence_glb(tmp_path / "v.glb", frames, faces, 30.0, max_error=1e-7)
    got, _base, tg, _w, gltf = rebuild(tmp_path / "v.glb")
    assert len(tg) == len(b.targets) == 6
    bound = f32_bound(b.mean, b.targets.astype(np.float64), b.weights.astype(np.float64)) + b.max_error
    assert np.all(np.abs(got - frames) <= bound + 1e-12)
    assert gltf["asset"]["extras"]["pca"]["components"] == 6


@pytest.mark.parametrize("standardize", [False, True])
def test_dataset_pca_roundtrip(tmp_path, mesh, standardize):
    verts, faces = mesh
    rng = np.random.default_rng(7)
    D, K, T = verts.size, 12, 33
    comps = np.linalg.qr(rng.standard_normal((D, K)))[0].T  # (K, D) orthonormal rows
    mean = rng.standard_normal(D) * 1e-3                     # displacement mean
    coeffs = rng.standard_normal((T, K)) * 0.05
    out = export_pca_glb(tmp_path / "p.glb", faces, mean, comps, coeffs, 30.0, template=verts,
                         standardize=standardize)
    exact = verts[None] + (coeffs @ comps + mean).reshape(T, -1, 3)
    got, _base, _tg, _w, _ = rebuild(out)
    sd = coeffs.std(0) if standardize else np.ones(K)
    bound = f32_bound(verts + mean.reshape(-1, 3), comps.reshape(K, -1, 3) * sd[:, None, None], coeffs / sd)
    # standardizing multiplies then divides by sd in float64 first: a few more eps64 per term
    assert np.all(np.abs(got - exact) <= bound * (1 + 1e-9) + 8 * EPS64 * np.abs(exact))


def test_failed_write_leaves_nothing(tmp_path, mesh, monkeypatch):
    verts, faces = mesh
    target = tmp_path / "keep.glb"
    target.write_bytes(b"old")
    with pytest.raises(ValueError):
        write_morph_glb(target, verts, faces, np.full((1, len(verts), 3), np.nan), np.zeros((3, 1)), 30)

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        write_morph_glb(target, verts, faces, np.zeros((1, len(verts), 3)), np.zeros((3, 1)), 30)
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.glb"]


def test_rejects_bad_input(tmp_path, mesh):
    verts, faces = mesh
    z = np.zeros((2, len(verts), 3))
    with pytest.raises(ValueError, match="faces index"):
        write_morph_glb(tmp_path / "x.glb", verts, faces + len(verts), z, np.zeros((3, 2)), 30)
    with pytest.raises(ValueError, match="weights"):
        write_morph_glb(tmp_path / "x.glb", verts, faces, z, np.zeros((3, 5)), 30)
    with pytest.raises(ValueError, match="unique"):
        write_morph_glb(tmp_path / "x.glb", verts, faces, z, np.zeros((3, 2)), 30, ["a", "a"])
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(js_missing() is not None, reason=str(js_missing()))
@pytest.mark.parametrize("kind", ["blendshape", "pca", "static"])
def test_khronos_validator_zero_errors(tmp_path, mesh, kind):
    verts, faces = mesh
    rng = np.random.default_rng(8)
    path = tmp_path / f"{kind}.glb"
    if kind == "blendshape":
        write_morph_glb(path, verts, faces, rng.standard_normal((52, len(verts), 3)) * 0.01,
                        rng.uniform(0, 1, (90, 52)), 30, [f"bs{i}" for i in range(52)])
    elif kind == "pca":
        frames = verts[None] + rng.standard_normal((40, len(verts), 3)) * 0.001
        export_vertex_sequence_glb(path, frames, faces, 25.0, max_error=1e-4)
    else:
        write_morph_glb(path, verts, faces, np.zeros((0, len(verts), 3)), np.zeros((1, 0)), 30)
    report = validate(path)
    issues = report["issues"]
    assert issues["numErrors"] == 0, issues["messages"]
    assert issues["numWarnings"] == 0, issues["messages"]
    assert report["info"]["hasMorphTargets"] == (kind != "static")


def test_third_party_reader_trimesh(tmp_path, mesh):
    trimesh = pytest.importorskip("trimesh", reason="trimesh not installed (optional cross-check)")
    verts, faces = mesh
    out = write_morph_glb(tmp_path / "t.glb", verts, faces, np.ones((3, len(verts), 3)) * 0.01,
                          np.zeros((5, 3)), 30)
    scene = trimesh.load(out, process=False)
    (geom,) = scene.geometry.values()
    np.testing.assert_allclose(geom.vertices, verts.astype(np.float32), atol=0)
    np.testing.assert_array_equal(geom.faces, faces)


def test_still_sequence_gives_static_mesh(tmp_path, mesh):
    verts, faces = mesh
    b = export_vertex_sequence_glb(tmp_path / "still.glb", np.stack([verts] * 6), faces, 30.0)
    assert len(b.targets) == 0 and b.max_error < 1e-15 and b.tolerance_met  # float64 mean rounding only
    gltf, binary = read_glb(tmp_path / "still.glb")
    assert "animations" not in gltf and "targets" not in gltf["meshes"][0]["primitives"][0]
    np.testing.assert_allclose(accessor(gltf, binary, 0), verts.astype(np.float32), atol=1e-7)
