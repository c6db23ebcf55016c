"""``a2fbench render`` / ``export`` end to end on the tiny stand-ins, with known answers, and every bad input of
issue 12: one line, exit 1, nothing left behind."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from _cli_helpers import run_a2fbench
from _output_helpers import js_missing, rebuild, validate

import a2fbench
from a2fbench.outputs import video
from a2fbench.outputs.arkit_csv import LIVE_LINK_FACE_ORDER, read_arkit_csv
from a2fbench.registry import get_space, space_channels
from a2fbench.spaces import converter
from a2fbench.spaces.pca import fit_dataset

_cli = run_a2fbench


def _one_error_line(rc: int, err: str) -> str:
    assert rc == 1, err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    return lines[0]


def _pred(data: Path, ds_id: str, out: Path, scale: float = 1.02) -> tuple[list[str], Path]:
    ds = a2fbench.open_dataset(data, ds_id)
    out.mkdir(parents=True, exist_ok=True)
    ids = ds.split("test")
    for s in ids:
        np.save(out / f"{s}.npy", np.asarray(ds[s].motion, np.float32) * scale)
    ds.close()
    return ids, out


def _listing(d: Path) -> list[str]:
    return sorted(p.name for p in d.iterdir())


# ------------------------------------------------------------------------------------------- render
def test_render_one_file_with_gt_errors_and_sound(data_tiny, tmp_path, monkeypatch, capsys):
    ids, pred = _pred(data_tiny, "D1", tmp_path / "pred")
    rc, out, err = _cli(monkeypatch, capsys, "render", pred / f"{ids[0]}.npy", "--dataset", "D1", "--data", data_tiny,
                        "--gt", "--errors", "--size", "128", "--out", tmp_path / "v.mp4")
    assert rc == 0, err
    got = video.probe(tmp_path / "v.mp4")
    T = a2fbench.open_dataset(data_tiny, "D1")[ids[0]].n_frames
    assert got["frames"] == T and got["fps"] == pytest.approx(30.0)
    assert got["video_codec"] == "h264" and got["audio_codec"] == "aac"
    assert got["height"] == 128 and got["width"] > 2 * 128  # prediction | colour bar | ground truth
    assert abs(got["audio_duration_s"] - T / 30.0) <= 1024 / 16000 + 1e-6  # the store's audio, cut to the clip
    assert _listing(tmp_path) == ["pred", "v.mp4"]


@pytest.mark.parametrize("ds_id", ["D3", "D5"])
def test_render_parameter_spaces_through_their_converters(data_tiny, tmp_path, monkeypatch, capsys, ds_id):
    ids, pred = _pred(data_tiny, ds_id, tmp_path / "pred", scale=1.0)
    rc, out, err = _cli(monkeypatch, capsys, "render", pred, "--dataset", ds_id, "--data", data_tiny, "--size", "64",
                        "--out", tmp_path / "videos")
    assert rc == 0, err
    assert _listing(tmp_path / "videos") == sorted(f"{s}.mp4" for s in ids)
    if ds_id == "D3":  # ARKit basis without faces: the frontal triangulation, said once
        assert err.count("approximate faces") == 1


def test_render_frames_match_known_geometry_through_the_encoder(tmp_path):
    """A flat square facing the camera, rendered, encoded to H.264 and decoded: its pixels are the square's."""
    from a2fbench.outputs import compose, raster

    v = np.array([[8, 8, 0], [56, 8, 0], [56, 40, 0], [8, 40, 0]], np.float32)  # world x, y; camera maps y up
    faces = np.array([[0, 1, 2], [0, 2, 3]])
    cam = raster.Camera(64, 48, (32.0, 24.0, 100.0), 1.0, orthographic=True)
    frames = compose.frames(faces, np.stack([v] * 5), camera=cam, color=(1.0, 0.0, 0.0), background=(0.0, 0.0, 1.0),
                            ambient=1.0, diffuse=0.0)
    video.write_mp4(tmp_path / "q.mp4", frames, 10, crf=0)
    import av

    with av.open(str(tmp_path / "q.mp4")) as c:
        img = next(c.decode(video=0)).to_ndarray(format="rgb24").astype(int)
    inside = np.zeros((48, 64), bool)
    inside[8:40, 8:56] = True  # rows: y = 24 - (Y - 24); the square spans Y 8..40 -> rows 8..40
    ring = np.zeros_like(inside)  # chroma subsampling (4:2:0) blurs colour across the edge by a pixel or two
    ring[6:42, 6:58] = True
    ring[10:38, 10:54] = False
    assert np.abs(img[inside & ~ring] - (255, 0, 0)).max() <= 12
    assert np.abs(img[~inside & ~ring] - (0, 0, 255)).max() <= 12


def test_render_short_audio_renders_everything_and_says_so(data_tiny, tmp_path, monkeypatch, capsys):
    ids, pred = _pred(data_tiny, "D1", tmp_path / "pred")
    sf.write(tmp_path / "short.wav", np.zeros(8000, np.float32), 16000)  # 0.5 s
    rc, out, err = _cli(monkeypatch, capsys, "render", pred / f"{ids[0]}.npy", "--dataset", "D1", "--data", data_tiny,
                        "--audio", tmp_path / "short.wav", "--size", "64", "--out", tmp_path / "v.mp4")
    assert rc == 0, err
    assert "shorter than the motion" in err and err.count("\n") == 1
    T = a2fbench.open_dataset(data_tiny, "D1")[ids[0]].n_frames
    assert video.probe(tmp_path / "v.mp4")["frames"] == T


# ------------------------------------------------------------------------------------------- export
def test_export_arkit_csv_of_weights_lands_in_named_columns(data_tiny, tmp_path, monkeypatch, capsys):
    names = space_channels(get_space("arkit52"))
    w = np.zeros((52, 52), np.float32)
    w[np.arange(52), np.arange(52)] = 0.75  # frame j: channel j (EmoTalk order) at 0.75
    np.save(tmp_path / "clip.npy", w)
    rc, out, err = _cli(monkeypatch, capsys, "export", tmp_path / "clip.npy", "--dataset", "D3", "--data", data_tiny,
                        "--format", "arkit-csv", "--out", tmp_path / "a.csv")
    assert rc == 0, err
    rows = list(csv.reader(open(tmp_path / "a.csv")))
    assert rows[0][2:54] == list(LIVE_LINK_FACE_ORDER) and len(rows) == 53
    for j, r in enumerate(rows[1:]):
        vals = np.array(r[2:54], float)
        (hot,) = np.nonzero(vals)
        assert len(hot) == 1 and vals[hot[0]] == 0.75 and rows[0][2 + hot[0]].lower() == names[j].lower()


def test_export_arkit_csv_solves_vertices_of_a_blendshape_topology(data_tiny, tmp_path, monkeypatch, capsys):
    ds = a2fbench.open_dataset(data_tiny, "D3")
    conv = converter(get_space("arkit52"), ds.space_arrays())
    w = np.random.default_rng(0).uniform(0.05, 0.95, (12, 52))
    np.save(tmp_path / "verts.npy", conv.to_vertices(w))
    rc, out, err = _cli(monkeypatch, capsys, "export", tmp_path / "verts.npy", "--dataset", "D3", "--data", data_tiny,
                        "--format", "arkit-csv", "--out", tmp_path / "a.csv")
    assert rc == 0, err
    _, back, _ = read_arkit_csv(tmp_path / "a.csv")
    # bounded solve is exact for interior weights (float64, basis stored float32: conditioning ~1e3) and the CSV
    # keeps 10 decimals
    assert np.abs(back - w).max() < 1e-6


def test_export_gltf_of_arkit_head_holds_the_basis_and_the_weights(data_tiny, tmp_path, monkeypatch, capsys):
    w = np.random.default_rng(1).uniform(0, 1, (20, 52)).astype(np.float32)
    np.save(tmp_path / "clip.npy", w)
    rc, out, err = _cli(monkeypatch, capsys, "export", tmp_path / "clip.npy", "--dataset", "D3", "--data", data_tiny,
                        "--format", "gltf", "--out", tmp_path / "m.glb")
    assert rc == 0, err
    frames, base, tg, weights, gltf = rebuild(tmp_path / "m.glb")
    assert gltf["meshes"][0]["extras"]["targetNames"] == space_channels(get_space("arkit52"))
    np.testing.assert_array_equal(weights.astype(np.float32), w)
    conv = converter(get_space("arkit52"), a2fbench.open_dataset(data_tiny, "D3").space_arrays())
    exact = conv.to_vertices(w.astype(np.float64))
    # float32 storage of base, targets and weights: |err| <= u|base| + 2u sum|w||t| (u = 2^-24), 52 terms
    bound = 2.0 ** -24 * np.abs(base)[None] + 3 * 2.0 ** -24 * np.einsum("tk,kvc->tvc", np.abs(weights), np.abs(tg))
    assert np.all(np.abs(frames - exact) <= bound + 1e-12)


def test_export_gltf_of_vertex_head_uses_the_dataset_pca(data_tiny, tmp_path, monkeypatch, capsys):
    import shutil

    data = tmp_path / "data"
    shutil.copytree(data_tiny / "D1", data / "D1")
    fit_dataset("D1", data, components=8, progress=False)
    ids, pred = _pred(data, "D1", tmp_path / "pred")
    rc, out, err = _cli(monkeypatch, capsys, "export", pred / f"{ids[0]}.npy", "--dataset", "D1", "--data", data,
                        "--format", "gltf", "--out", tmp_path / "m.glb")
    assert rc == 0, err
    assert "8 morph targets from" in err and "pca.npz" in err
    frames, *_ , gltf = rebuild(tmp_path / "m.glb")
    from a2fbench.spaces.pca import load_for

    p = load_for(data, "D1")
    ds = a2fbench.open_dataset(data, "D1")
    tmpl = np.asarray(ds.template(ds[ids[0]].subject), np.float64)
    x = np.load(pred / f"{ids[0]}.npy").astype(np.float64)
    want = (tmpl + p.decode(p.encode(x - tmpl)).astype(np.float64)).reshape(len(x), -1, 3)
    # the file stores that projection in float32 (targets, weights, base): metres of size ~0.1, 8 terms
    assert np.abs(frames - want).max() < 1e-6


def test_export_gltf_without_pca_fits_the_clip(data_tiny, tmp_path, monkeypatch, capsys):
    ids, pred = _pred(data_tiny, "D1", tmp_path / "pred")
    rc, out, err = _cli(monkeypatch, capsys, "export", pred / f"{ids[0]}.npy", "--dataset", "D1", "--data", data_tiny,
                        "--format", "gltf", "--out", tmp_path / "m.glb")
    assert rc == 0, err
    assert "PCA of the clip" in err
    frames, *_ = rebuild(tmp_path / "m.glb")
    x = np.load(pred / f"{ids[0]}.npy").astype(np.float64).reshape(len(frames), -1, 3)
    # tolerance 1e-4 x the head's size (the stand-in head is ~0.3 m: 3e-5 m) plus float32 storage
    assert np.abs(frames - x).max() < 1e-4 * 0.5


def test_export_obj_frames_hold_the_motion_and_the_faces(data_tiny, tmp_path, monkeypatch, capsys):
    ids, pred = _pred(data_tiny, "D2", tmp_path / "pred")
    rc, out, err = _cli(monkeypatch, capsys, "export", pred, "--dataset", "D2", "--data", data_tiny, "--format", "obj",
                        "--out", tmp_path / "objs")
    assert rc == 0, err
    assert _listing(tmp_path / "objs") == sorted(ids)
    faces = a2fbench.open_dataset(data_tiny, "D2").faces()
    x = np.load(pred / f"{ids[0]}.npy").reshape(-1, 6172, 3)
    files = sorted((tmp_path / "objs" / ids[0]).iterdir())
    assert len(files) == len(x)
    lines = files[3].read_text().splitlines()
    v = np.array([ln.split()[1:] for ln in lines if ln.startswith("v ")], float)
    f = np.array([ln.split()[1:] for ln in lines if ln.startswith("f ")], int) - 1
    assert np.abs(v - x[3]).max() <= 0.5e-6 * 1.0001 + 1e-12 * np.abs(x).max() and np.array_equal(f, faces)


# ---------------------------------------------------------------------------------------- bad input
def test_bad_vertex_count_names_the_dataset_that_fits(data_tiny, tmp_path, monkeypatch, capsys):
    np.save(tmp_path / "x.npy", np.zeros((10, 6172 * 3), np.float32))
    for cmd in (["render", "--out", tmp_path / "v.mp4"], ["export", "--format", "gltf", "--out", tmp_path / "m.glb"]):
        rc, out, err = _cli(monkeypatch, capsys, cmd[0], tmp_path / "x.npy", "--dataset", "D1", "--data", data_tiny,
                            *cmd[1:])
        line = _one_error_line(rc, err)
        assert "6172 vertices" in line and "--dataset D2" in line
    assert _listing(tmp_path) == ["x.npy"]


def test_unreadable_audio_is_one_line(data_tiny, tmp_path, monkeypatch, capsys):
    ids, pred = _pred(data_tiny, "D1", tmp_path / "pred")
    (tmp_path / "bad.wav").write_bytes(b"RIFF\x00\x00not audio")
    rc, out, err = _cli(monkeypatch, capsys, "render", pred / f"{ids[0]}.npy", "--dataset", "D1", "--data", data_tiny,
                        "--audio", tmp_path / "bad.wav", "--out", tmp_path / "v.mp4")
    assert "bad.wav" in _one_error_line(rc, err)
    assert _listing(tmp_path) == ["bad.wav", "pred"]


@pytest.mark.parametrize("k", [52, 51])
def test_export_arkit_csv_through_a_basis_on_a_vertex_topology(data_tiny, tmp_path, monkeypatch, capsys, k):
    """``--basis`` on D1's topology: vertices made from known weights through a 52- or 51-channel basis come back
    as those weights (the channel count picks arkit52 or arkit51); a damaged basis file is one line, no CSV."""
    ds = a2fbench.open_dataset(data_tiny, "D1")
    mean = np.asarray(ds.template(ds.subjects[0]), np.float32).reshape(-1, 3)
    ds.close()
    rng = np.random.default_rng(k)
    B = (rng.standard_normal((k, mean.size)) * 1e-3).astype(np.float32)
    np.savez(tmp_path / "basis.npz", meanshape=mean, blendshape=B)
    w = rng.uniform(0.05, 0.95, (10, k))
    np.save(tmp_path / "verts.npy", (mean.reshape(1, -1) + w @ B.astype(np.float64)).astype(np.float32))
    rc, out, err = _cli(monkeypatch, capsys, "export", tmp_path / "verts.npy", "--dataset", "D1", "--data", data_tiny,
                        "--format", "arkit-csv", "--basis", tmp_path / "basis.npz", "--out", tmp_path / "a.csv")
    assert rc == 0, err
    _, back, _ = read_arkit_csv(tmp_path / "a.csv")
    # float32 vertices (relative rounding 6e-8 of coordinates ~0.1) through a random, well-conditioned basis
    assert np.abs(back[:, :k] - w).max() < 1e-3
    (tmp_path / "bad.npz").write_bytes((tmp_path / "basis.npz").read_bytes()[:200])
    rc, out, err = _cli(monkeypatch, capsys, "export", tmp_path / "verts.npy", "--dataset", "D1", "--data", data_tiny,
                        "--format", "arkit-csv", "--basis", tmp_path / "bad.npz", "--out", tmp_path / "b.csv")
    assert "bad.npz" in _one_error_line(rc, err)
    assert not (tmp_path / "b.csv").exists()


@pytest.mark.parametrize("cmd", [["render"], ["export", "--format", "gltf"], ["export", "--format", "obj"]])
def test_output_in_a_missing_folder_is_made_and_a_failure_leaves_none(data_tiny, tmp_path, monkeypatch, capsys, cmd):
    # the one rule for missing folders (util.guard.make_parent): created when writing starts, as in every command
    ids, pred = _pred(data_tiny, "D1", tmp_path / "pred")
    target = tmp_path / "new" / "deeper" / "x.out"
    rc, out, err = _cli(monkeypatch, capsys, cmd[0], pred / f"{ids[0]}.npy", "--dataset", "D1", "--data", data_tiny,
                        *cmd[1:], "--out", target)
    assert rc == 0 and target.exists(), err
    np.save(tmp_path / "bad.npy", np.zeros((3, 7), np.float32))  # fits no head: refused before anything is made
    rc, out, err = _cli(monkeypatch, capsys, cmd[0], tmp_path / "bad.npy", "--dataset", "D1", "--data", data_tiny,
                        *cmd[1:], "--out", tmp_path / "nope" / "deeper" / "x.out")
    assert "bad.npy" in _one_error_line(rc, err)
    assert _listing(tmp_path) == ["bad.npy", "new", "pred"]


def test_arkit_csv_of_a_space_without_arkit_meaning_is_one_line(data_tiny, tmp_path, monkeypatch, capsys):
    for ds_id in ("D1", "D5"):
        ids, pred = _pred(data_tiny, ds_id, tmp_path / f"pred{ds_id}")
        rc, out, err = _cli(monkeypatch, capsys, "export", pred, "--dataset", ds_id, "--data", data_tiny,
                            "--format", "arkit-csv", "--out", tmp_path / "csv")
        assert "no ARKit meaning" in _one_error_line(rc, err)
    assert not (tmp_path / "csv").exists()


def test_failure_part_way_leaves_no_file(data_tiny, tmp_path, monkeypatch, capsys):
    ids, pred = _pred(data_tiny, "D1", tmp_path / "pred")
    x = np.load(pred / f"{ids[-1]}.npy")
    x[len(x) // 2, 7] = np.nan  # the second clip breaks half-way through
    np.save(pred / f"{ids[-1]}.npy", x)
    for cmd in (["render", "--size", "32"], ["export", "--format", "obj"]):
        rc, out, err = _cli(monkeypatch, capsys, cmd[0], pred, "--dataset", "D1", "--data", data_tiny, *cmd[1:],
                            "--out", tmp_path / "out")
        assert "NaN" in _one_error_line(rc, err)
        assert not (tmp_path / "out").exists()
    assert _listing(tmp_path) == ["pred"]


def test_gt_needs_a_sequence_name(data_tiny, tmp_path, monkeypatch, capsys):
    ids, pred = _pred(data_tiny, "D1", tmp_path / "pred")
    os.rename(pred / f"{ids[0]}.npy", tmp_path / "mine.npy")
    rc, out, err = _cli(monkeypatch, capsys, "render", tmp_path / "mine.npy", "--dataset", "D1", "--data", data_tiny,
                        "--gt", "--out", tmp_path / "v.mp4")
    assert "--gt" in _one_error_line(rc, err)
    assert not (tmp_path / "v.mp4").exists()


def test_render_and_export_an_infer_output(data_tiny, tmp_path, monkeypatch, capsys):
    """``unitalker infer`` writes <stem>/<dataset>.npy + meta.json naming the audio: that audio is muxed in."""
    ds = a2fbench.open_dataset(data_tiny, "D1")
    sid = ds.split("test")[0]
    for stem, secs in (("hello", 1.0), ("world", 1.2)):
        (tmp_path / "inf" / stem).mkdir(parents=True)
        np.save(tmp_path / "inf" / stem / "D1.npy", np.asarray(ds[sid].motion, np.float32)[: int(secs * 30)])
        np.save(tmp_path / "inf" / stem / "D3.npy", np.zeros((int(secs * 30), 52), np.float32))
        sf.write(tmp_path / f"{stem}.wav", np.zeros(int(secs * 16000), np.float32), 16000)
        (tmp_path / "inf" / stem / "meta.json").write_text(f'{{"audio": "{tmp_path / f"{stem}.wav"}"}}')
    rc, out, err = _cli(monkeypatch, capsys, "render", tmp_path / "inf", "--dataset", "D1", "--data", data_tiny,
                        "--size", "48", "--out", tmp_path / "videos")
    assert rc == 0, err
    got = video.probe(tmp_path / "videos" / "world.mp4")
    assert got["frames"] == 36 and got["audio_codec"] == "aac" and abs(got["audio_duration_s"] - 1.2) < 0.07
    rc, out, err = _cli(monkeypatch, capsys, "export", tmp_path / "inf" / "hello", "--dataset", "D3", "--data",
                        data_tiny, "--format", "arkit-csv", "--out", tmp_path / "csv")
    assert rc == 0, err
    assert _listing(tmp_path / "csv") == ["hello.csv"]
    rc, out, err = _cli(monkeypatch, capsys, "render", tmp_path / "inf", "--dataset", "D2", "--data", data_tiny,
                        "--out", tmp_path / "v2")
    assert "D2.npy" in _one_error_line(rc, err) and not (tmp_path / "v2").exists()


def test_mesh_option_gives_the_faces(data_tiny, tmp_path, monkeypatch, capsys):
    from a2fbench.outputs.heads import open_head
    from a2fbench.sources.synth.resources import write_mesh

    head = open_head(data_tiny, "D3")
    write_mesh(tmp_path / "basis.obj", head.template(), head.faces)  # any faces on the basis' 1220 vertices
    write_mesh(tmp_path / "other.obj", head.template()[:100], np.array([[0, 1, 2]]))
    head.close()
    np.save(tmp_path / "w.npy", np.full((6, 52), 0.3, np.float32))
    rc, out, err = _cli(monkeypatch, capsys, "export", tmp_path / "w.npy", "--dataset", "D3", "--data", data_tiny,
                        "--format", "obj", "--mesh", tmp_path / "basis.obj", "--out", tmp_path / "objs")
    assert rc == 0, err
    assert "approximate" not in err and len(list((tmp_path / "objs").iterdir())) == 6
    rc, out, err = _cli(monkeypatch, capsys, "render", tmp_path / "w.npy", "--dataset", "D3", "--data", data_tiny,
                        "--mesh", tmp_path / "other.obj", "--out", tmp_path / "v.mp4")
    assert "100 vertices" in _one_error_line(rc, err) and not (tmp_path / "v.mp4").exists()


@pytest.mark.skipif(js_missing() is not None, reason=str(js_missing()))
@pytest.mark.parametrize("ds_id", ["D1", "D3", "D5"])
def test_exported_gltf_passes_the_khronos_validator(data_tiny, tmp_path, monkeypatch, capsys, ds_id):
    ids, pred = _pred(data_tiny, ds_id, tmp_path / "pred")
    rc, out, err = _cli(monkeypatch, capsys, "export", pred / f"{ids[0]}.npy", "--dataset", ds_id, "--data", data_tiny,
                        "--format", "gltf", "--out", tmp_path / "m.glb")
    assert rc == 0, err
    report = validate(tmp_path / "m.glb")
    assert report["issues"]["numErrors"] == 0 and report["issues"]["numWarnings"] == 0, report["issues"]["messages"]
    assert report["info"]["hasMorphTargets"] and report["info"]["animationCount"] == 1
