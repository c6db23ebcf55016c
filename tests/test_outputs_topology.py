"""Mesh topology: the PLY/OBJ reader (ASCII and binary PLY, OBJ with texture references, polygons), the faces
``prepare`` keeps in the store, and the frontal triangulation used where a dataset ships none."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from _raw_helpers import clone, rewrite

import a2fbench
from a2fbench.errors import RawDataError
from a2fbench.outputs.topology import frontal_triangulation
from a2fbench.prepare import prepare_dataset
from a2fbench.registry import get_spec
from a2fbench.sources.meshes import read_mesh
from a2fbench.sources.synth.resources import write_mesh


def _grid(n: int = 5) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = np.meshgrid(np.arange(n, dtype=float), np.arange(n, dtype=float))
    v = np.stack([xs.ravel(), ys.ravel(), 0.1 * xs.ravel() ** 2], 1)
    i, j = np.meshgrid(np.arange(n - 1), np.arange(n - 1), indexing="ij")
    a = (i * n + j).ravel()
    return v, np.concatenate([np.stack([a, a + 1, a + n + 1], 1), np.stack([a, a + n + 1, a + n], 1)])


@pytest.mark.parametrize("suffix", [".ply", ".obj"])
def test_ascii_files_round_trip(tmp_path, suffix):
    v, f = _grid()
    write_mesh(tmp_path / f"m{suffix}", v, f)
    rv, rf = read_mesh(tmp_path / f"m{suffix}")
    np.testing.assert_allclose(rv, v, rtol=1e-9)  # written with 10 significant digits
    np.testing.assert_array_equal(rf, f)


@pytest.mark.parametrize("order", ["<", ">"])
def test_binary_ply_with_mixed_polygons(tmp_path, order):
    v = np.array([[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0], [2, 0, 0]], np.float32)
    endian = "little" if order == "<" else "big"
    head = (f"ply\nformat binary_{endian}_endian 1.0\ncomment made by a test\nelement vertex 5\nproperty float x\n"
            "property float y\nproperty float z\nproperty uchar red\nelement face 2\n"
            "property list uchar uint16 vertex_indices\nend_header\n").encode()
    verts = np.zeros(5, [("x", order + "f4"), ("y", order + "f4"), ("z", order + "f4"), ("r", "u1")])
    verts["x"], verts["y"], verts["z"] = v.T
    body = verts.tobytes() + bytes([4]) + np.array([0, 1, 2, 3], order + "u2").tobytes()
    body += bytes([3]) + np.array([1, 4, 2], order + "u2").tobytes()
    (tmp_path / "m.ply").write_bytes(head + body)
    rv, rf = read_mesh(tmp_path / "m.ply")
    np.testing.assert_array_equal(rv, v)
    np.testing.assert_array_equal(rf, [[0, 1, 2], [0, 2, 3], [1, 4, 2]])  # the quad as a fan


def test_obj_with_texture_references_and_negative_indices(tmp_path):
    (tmp_path / "m.obj").write_text("# test\nv 0 0 0\nv 1 0 0\nv 1 1 0\nv 0 1 0\nvt 0 0\nvn 0 0 1\n"
                                    "f 1/1/1 2/1/1 3/1/1 4/1/1\nf -4 -2 -1\n")
    v, f = read_mesh(tmp_path / "m.obj")
    assert v.shape == (4, 3)
    np.testing.assert_array_equal(f, [[0, 1, 2], [0, 2, 3], [0, 2, 3]])


def test_broken_files_are_one_line(tmp_path):
    (tmp_path / "a.ply").write_bytes(b"ply\nformat binary_little_endian 1.0\nelement vertex 9\nproperty float x\n")
    (tmp_path / "b.obj").write_text("v 0 0 0\nf 1 2 3\n")
    for name in ("a.ply", "b.obj", "c.ply"):
        with pytest.raises(RawDataError) as e:
            read_mesh(tmp_path / name)
        assert name in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("name,nv,nf", [("flame/FLAME_sample.ply", 5023, 9976), ("biwi/BIWI.ply", 23370, 46068),
                                        ("meshtalk/face_template.obj", 6172, 12294)])
def test_published_topologies(shared_resources, name, nv, nf):
    if not (shared_resources / name).is_file():
        pytest.skip(f"{shared_resources / name} absent (public topology files of ../shared/resources)")
    v, f = read_mesh(shared_resources / name)
    assert v.shape == (nv, 3) and f.shape == (nf, 3) and f.min() == 0 and f.max() == nv - 1


def test_prepare_keeps_the_faces(raw_tiny, data_tiny):
    for ds_id in ("D0", "D1", "D2"):
        ds = a2fbench.open_dataset(data_tiny, ds_id)
        _, want = read_mesh(raw_tiny / ds_id / get_spec(ds_id).mesh.file)
        np.testing.assert_array_equal(ds.faces(), want)
        assert ds.card["mesh"] == {"source": get_spec(ds_id).mesh.file, "n_faces": len(want)}
    d5 = a2fbench.open_dataset(data_tiny, "D5")
    np.testing.assert_array_equal(d5.faces(), d5.space_arrays()["f"].reshape(-1, 3))
    d3 = a2fbench.open_dataset(data_tiny, "D3")
    assert d3.faces() is None and d3.card["mesh"]["source"] is None


def test_prepare_refuses_a_mesh_of_another_topology(raw_tiny, tmp_path):
    raw = clone(raw_tiny / "D1", tmp_path / "raw" / "D1")
    v, f = _grid()
    rewrite(raw / "FLAME_sample.ply")
    write_mesh(raw / "FLAME_sample.ply", v, f)
    with pytest.raises(RawDataError, match="expected the 5023-vertex topology .* found 25 vertices"):
        prepare_dataset(get_spec("D1"), tmp_path / "raw", tmp_path / "data", progress=False)
    (raw / "FLAME_sample.ply").unlink()  # optional: without it the store simply has no faces
    card = prepare_dataset(get_spec("D1"), tmp_path / "raw", tmp_path / "data", progress=False)
    assert card["mesh"]["source"] is None and "FLAME_sample.ply is absent" in card["mesh"]["note"]
    shutil.rmtree(tmp_path / "data")


def test_frontal_triangulation_covers_the_front_and_skips_holes():
    v, _ = _grid(11)
    keep = ~((np.abs(v[:, 0] - 5) <= 2.5) & (np.abs(v[:, 1] - 5) <= 2.5))  # a 6 x 6 hole: an open mouth
    tri = frontal_triangulation(v[keep])
    p = v[keep][:, :2]
    a, b, c = p[tri[:, 0]], p[tri[:, 1]], p[tri[:, 2]]
    cross = (b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0])
    assert (cross > 0).all()  # counter-clockwise seen from +z: facing the camera
    for q in ([5.0, 5.0], [3.6, 3.6], [6.4, 6.4], [3.6, 6.4], [6.4, 3.6]):  # points of the hole, away from its rim
        e = [(y[:, 0] - x[:, 0]) * (q[1] - x[:, 1]) - (y[:, 1] - x[:, 1]) * (q[0] - x[:, 0])
             for x, y in ((a, b), (b, c), (c, a))]
        assert not ((e[0] > 0) & (e[1] > 0) & (e[2] > 0)).any(), f"a triangle bridges the hole at {q}"
    assert np.array_equal(np.unique(tri), np.arange(keep.sum()))  # every vertex is drawn
    assert 100 - 36 <= np.abs(cross).sum() / 2 < 100 - 16  # the hole's inner 4 x 4 stays open


def test_store_without_faces_still_renders(data_tiny, tmp_path):
    from a2fbench.outputs.heads import open_head

    head = open_head(data_tiny, "D3")
    assert head.faces_note is not None and "approximate" in head.faces_note and len(head.faces) > 0
    head.close()


