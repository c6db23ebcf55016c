"""OBJ sequence: counts, values and faces parse back; folder appears atomically; nothing left on error."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from _output_helpers import grid_mesh

from a2fbench.outputs import obj as objmod
from a2fbench.outputs.obj import format_vertices, write_obj, write_obj_sequence


@pytest.fixture
def mesh():
    return grid_mesh()


def parse_obj(path):
    """Minimal independent OBJ reader: (vertices (V, 3), faces (F, 3) 0-based)."""
    v, f = [], []
    for line in path.read_text(encoding="ascii").splitlines():
        tok = line.split()
        if tok and tok[0] == "v":
            v.append([float(t) for t in tok[1:4]])
        elif tok and tok[0] == "f":
            f.append([int(t.split("/")[0]) - 1 for t in tok[1:]])
    return np.array(v), np.array(f)


def test_sequence_roundtrip(tmp_path, mesh):
    verts, faces = mesh
    rng = np.random.default_rng(0)
    frames = verts[None] + rng.standard_normal((12, len(verts), 3)) * 0.01
    frames[0, 0] = (-123.4567891, 0.0, -0.0000004)  # wider integer part, negative zero after rounding
    seq = write_obj_sequence(tmp_path / "objs", frames, faces)
    names = sorted(p.name for p in (tmp_path / "objs").iterdir())
    assert names == [f"frame_{i:06d}.obj" for i in range(12)] == [p.name for p in seq.files]
    for i, p in enumerate(seq.files):
        v, f = parse_obj(p)
        assert v.shape == (len(verts), 3) and f.shape == faces.shape
        np.testing.assert_array_equal(f, faces)
        # 6 decimals: |error| <= half a unit in the last place (+ float64 parse/scale rounding)
        assert np.abs(v - frames[i]).max() <= 0.5e-6 + 1e-12 * np.abs(frames[i]).max()
    assert "-0.000000" not in seq.files[0].read_text()
    assert [p.name for p in tmp_path.iterdir()] == ["objs"]  # no temporary folder left


def test_prefix_and_digits_widen_to_fit(tmp_path, mesh):
    verts, faces = mesh
    seq = write_obj_sequence(tmp_path / "o", np.stack([verts] * 3), faces, prefix="f", digits=3)
    assert [p.name for p in seq.files] == ["f000.obj", "f001.obj", "f002.obj"]
    seq = write_obj_sequence(tmp_path / "p", np.stack([verts] * 12), faces, digits=1)
    assert seq.files[0].name == "frame_00.obj" and seq.files[-1].name == "frame_11.obj"


def test_third_party_reader(tmp_path, mesh):
    trimesh = pytest.importorskip("trimesh", reason="trimesh not installed (optional cross-check)")
    verts, faces = mesh
    p = write_obj(tmp_path / "one.obj", verts, faces)
    m = trimesh.load(p, process=False)
    assert m.vertices.shape == verts.shape and m.faces.shape == faces.shape
    np.testing.assert_allclose(m.vertices, verts, atol=0.5e-6 + 1e-12)
    np.testing.assert_array_equal(m.faces, faces)


def test_decimals_and_format():
    b = format_vertices(np.array([[0.01, -0.1, 1.25], [-12.0, 3.0, 0.0]]), decimals=3)
    assert b == b"v   0.010  -0.100   1.250\nv -12.000   3.000   0.000\n"


def test_existing_folder(tmp_path, mesh):
    verts, faces = mesh
    out = tmp_path / "objs"
    write_obj_sequence(out, np.stack([verts] * 2), faces)
    with pytest.raises(FileExistsError):
        write_obj_sequence(out, np.stack([verts] * 3), faces)
    write_obj_sequence(out, np.stack([verts] * 3), faces, overwrite=True)
    assert len(list(out.iterdir())) == 3 and [p.name for p in tmp_path.iterdir()] == ["objs"]


def test_error_midway_leaves_nothing(tmp_path, mesh, monkeypatch):
    verts, faces = mesh
    frames = np.stack([verts] * 5)
    calls = {"n": 0}
    real = objmod._write_file

    def flaky(path, *parts, **kw):
        calls["n"] += 1
        if calls["n"] == 4:
            raise OSError("disk full")
        return real(path, *parts, **kw)

    monkeypatch.setattr(objmod, "_write_file", flaky)
    with pytest.raises(OSError, match="disk full"):
        write_obj_sequence(tmp_path / "objs", frames, faces)
    assert list(tmp_path.iterdir()) == []
    bad = frames.copy()
    bad[3, 2, 1] = np.nan
    monkeypatch.setattr(objmod, "_write_file", real)
    with pytest.raises(ValueError, match="NaN"):
        write_obj_sequence(tmp_path / "objs", bad, faces)
    assert list(tmp_path.iterdir()) == []


def test_single_file_atomic(tmp_path, mesh, monkeypatch):
    verts, faces = mesh
    p = tmp_path / "x.obj"
    p.write_text("old")
    monkeypatch.setattr(os, "replace", lambda *a: (_ for _ in ()).throw(OSError("nope")))
    with pytest.raises(OSError):
        write_obj(p, verts, faces)
    assert p.read_text() == "old" and [q.name for q in tmp_path.iterdir()] == ["x.obj"]


def test_failed_rename_puts_the_previous_folder_back(tmp_path, mesh, monkeypatch):
    verts, faces = mesh
    out = tmp_path / "objs"
    write_obj_sequence(out, np.stack([verts] * 2), faces, fsync=True)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    real_replace, real_rename = os.replace, os.rename

    def fail_from_temp(real):
        def move(src, dst, *a, **kw):
            if Path(src).name.startswith(".objs.") and ".old" not in Path(src).name and Path(dst) == out:
                raise OSError("rename refused")
            return real(src, dst, *a, **kw)
        return move

    monkeypatch.setattr(os, "replace", fail_from_temp(real_replace))
    monkeypatch.setattr(os, "rename", fail_from_temp(real_rename))
    with pytest.raises(OSError, match="rename refused"):
        write_obj_sequence(out, np.stack([verts] * 3), faces, overwrite=True)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # the user's folder, back in place
    assert [p.name for p in tmp_path.iterdir()] == ["objs"]  # no temporary or set-aside folder left
