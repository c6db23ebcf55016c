"""The raw BIWI route (``biwi_raw`` layout) and ``a2fbench doctor``: the .vl format, take reading from folders
and archives, CodeTalker's processing against a slow line-by-line reference, audio from the .flv, the
end-to-end prepare of a raw stand-in, and damage named in one line."""

from __future__ import annotations

import io
import json
import math
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest

import a2fbench
from a2fbench.errors import RawDataError
from a2fbench.registry import expected_ids, get_spec
from a2fbench.sources.audio import read_video_audio
from a2fbench.sources.biwi import codetalker_normalise, parse_vl, read_take, triangle_area_total
from a2fbench.sources.layouts.biwi_raw import vl_bytes, write_flv
from a2fbench.sources.meshes import read_mesh

from _cli_helpers import run_a2fbench

N = 23370


# ------------------------------------------------------------------------------------- slow references
def mixed_voronoi_total(X: np.ndarray, T: np.ndarray) -> float:
    """cotLaplacian.m's mixed-Voronoi vertex areas, one triangle at a time, summed over the vertices."""
    area = np.zeros(len(X))
    for t in T:
        p = X[t]
        L = [np.linalg.norm(p[1] - p[2]), np.linalg.norm(p[0] - p[2]), np.linalg.norm(p[0] - p[1])]
        ang = [math.acos((L[1] ** 2 + L[2] ** 2 - L[0] ** 2) / (2 * L[1] * L[2])),
               math.acos((L[0] ** 2 + L[2] ** 2 - L[1] ** 2) / (2 * L[0] * L[2])),
               math.acos((L[0] ** 2 + L[1] ** 2 - L[2] ** 2) / (2 * L[0] * L[1]))]
        cot = [0.5 / math.tan(a) for a in ang]
        ar = np.linalg.norm(np.cross(p[0] - p[1], p[0] - p[2]))
        at = [0.25 * (L[(k + 1) % 3] ** 2 * cot[(k + 1) % 3] + L[(k + 2) % 3] ** 2 * cot[(k + 2) % 3]) for k in range(3)]
        for k in range(3):
            if cot[k] < 0:  # obtuse at corner k: barycentric-like split
                at = [ar / 4 if j == k else ar / 8 for j in range(3)]
        for j in range(3):
            area[t[j]] += at[j]
    return float(area.sum())


def reference_process(V: np.ndarray, T: np.ndarray) -> np.ndarray:
    """The MATLAB steps on one frame, written out: V * rotx(pi), minus the mean, over sqrt(mixed-Voronoi total)."""
    R = np.array([[1, 0, 0], [0, math.cos(math.pi), -math.sin(math.pi)], [0, math.sin(math.pi), math.cos(math.pi)]])
    X = np.asarray(V, np.float64) @ R
    X = X - X.mean(axis=0)
    return X / math.sqrt(mixed_voronoi_total(X, T))


def plain_blocks_normalise(V: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """The plain numpy form of the same steps (the first implementation, kept as the bit-level reference):
    blocks of 8 frames in the (T, N, 3) layout, mean over axis 1, per-triangle cross product on gathered
    coordinate rows, per-frame sum over the triangles."""
    X = np.array(V, dtype=np.float64)
    c, s = math.cos(math.pi), math.sin(math.pi)
    y, z = X[..., 1].copy(), X[..., 2].copy()
    X[..., 1] = y * c + z * s
    X[..., 2] = y * -s + z * c
    for a in range(0, len(X), 8):
        blk = X[a: a + 8]
        blk -= blk.mean(axis=1, keepdims=True)
        C = np.ascontiguousarray(np.moveaxis(blk, -1, -2))
        p, q, r = (np.take(C, faces[:, k], axis=-1) for k in range(3))
        u, v = p - q, p - r
        nx = u[..., 1, :] * v[..., 2, :] - u[..., 2, :] * v[..., 1, :]
        ny = u[..., 2, :] * v[..., 0, :] - u[..., 0, :] * v[..., 2, :]
        nz = u[..., 0, :] * v[..., 1, :] - u[..., 1, :] * v[..., 0, :]
        blk /= np.sqrt(np.sqrt(nx * nx + ny * ny + nz * nz).sum(-1) / 2)[:, None, None]
    return X


def small_mesh(rng: np.random.Generator, n: int = 7) -> tuple[np.ndarray, np.ndarray]:
    """A bumpy n x n grid with jittered vertices (some triangles obtuse) and its triangles."""
    g = np.stack(np.meshgrid(np.arange(n), np.arange(n), indexing="ij"), -1).reshape(-1, 2).astype(float)
    g += rng.uniform(-0.35, 0.35, g.shape)
    V = np.column_stack([g, 0.3 * np.sin(g[:, 0]) * np.cos(g[:, 1])]) * 40 + [5, -20, 900]
    T = [(i * n + j, i * n + j + 1, (i + 1) * n + j) for i in range(n - 1) for j in range(n - 1)]
    T += [(i * n + j + 1, (i + 1) * n + j + 1, (i + 1) * n + j) for i in range(n - 1) for j in range(n - 1)]
    return V, np.asarray(T, np.int64)


# ------------------------------------------------------------------------------------------ processing
def test_mixed_voronoi_total_is_the_triangle_area() -> None:
    rng = np.random.default_rng(0)
    V, T = small_mesh(rng)
    obtuse = 0
    for t in T:
        p = V[t]
        e = [p[1] - p[2], p[2] - p[0], p[0] - p[1]]
        obtuse += any(np.dot(-e[(k + 1) % 3], e[(k + 2) % 3]) < 0 for k in range(3))
    assert obtuse > 0  # the barycentric branch is exercised
    ref = mixed_voronoi_total(V, T)
    got = float(triangle_area_total(V, T))
    assert abs(got - ref) <= 1e-13 * ref  # ~100 terms of doubles


def test_normalise_matches_the_matlab_steps_frame_by_frame() -> None:
    rng = np.random.default_rng(1)
    V, T = small_mesh(rng)
    frames = np.stack([V + rng.normal(0, 2, 3) + rng.normal(0, 0.5, V.shape) for _ in range(11)]).astype(np.float32)
    got = codetalker_normalise(frames, T)
    assert got.dtype == np.float64
    for k in range(len(frames)):
        want = reference_process(frames[k], T)  # each frame's own centre and area
        assert np.abs(got[k] - want).max() <= 1e-12 * np.abs(want).max()
    # a rigid shift and a uniform scale of the raw frame change nothing: centring and area normalisation
    moved = codetalker_normalise(frames[0].astype(np.float64) * 3.0 + [10.0, -4.0, 7.0], T)
    assert np.abs(moved - got[0]).max() <= 1e-12


@pytest.mark.parametrize("threads", [1, 3])
def test_normalise_is_bit_identical_to_the_plain_block_form(threads: int, monkeypatch) -> None:
    """The per-frame, coordinate-major form gives the same bits as the plain block form: same elementwise
    operations, the mean as the same running sum, the triangle sum as the same pairwise sum (a 40 x 40 grid:
    3,042 triangles, so numpy's pairwise blocks of 128 are crossed), whatever the number of threads."""
    import a2fbench.sources.biwi as biwi

    monkeypatch.setattr(biwi, "THREADS", threads)
    rng = np.random.default_rng(5)
    V, T = small_mesh(rng, 40)
    frames = np.stack([V + rng.normal(0, 3, 3) + rng.normal(0, 0.7, V.shape) for _ in range(19)]).astype(np.float32)
    got, want = codetalker_normalise(frames, T), plain_blocks_normalise(frames, T)
    assert got.tobytes() == want.tobytes()
    assert codetalker_normalise(V, T).tobytes() == plain_blocks_normalise(V[None], T)[0].tobytes()


def test_biwi_ply_is_a_fixed_point(shared_resources: Path) -> None:
    """CodeTalker's BIWI.ply is processed output (centred, area 1): rotating it back to the raw orientation,
    scaling and moving it, then processing, returns it."""
    V0, F = read_mesh(shared_resources / "biwi" / "BIWI.ply")
    assert abs(triangle_area_total(V0, F) - 1.0) < 1e-6
    raw = (V0 * [1.0, -1.0, -1.0]) * 185.0 + [3.0, -40.0, 880.0]
    got = codetalker_normalise(raw, F)
    assert np.abs(got - (V0 - V0.mean(0)) / math.sqrt(triangle_area_total(V0, F))).max() < 1e-12


# -------------------------------------------------------------------------------------------- .vl format
def test_vl_header_width_is_read_from_the_file_size() -> None:
    P = np.random.default_rng(2).normal(size=(N, 3)).astype(np.float32)
    four = vl_bytes(P)
    eight = N.to_bytes(8, "little") + P.astype("<f4").tobytes()
    assert len(four) == 4 + 12 * N
    assert np.array_equal(parse_vl(four, "x"), P) and np.array_equal(parse_vl(eight, "x"), P)
    with pytest.raises(RawDataError, match="found 140222 bytes"):
        parse_vl(four[: len(four) // 2], "f.vl")
    with pytest.raises(RawDataError, match="expected 23370 vertices.*found 5"):
        parse_vl(vl_bytes(P[:5]), "f.vl")


def _frames(n: int, rng: np.random.Generator) -> list[bytes]:
    return [vl_bytes(rng.normal(size=(N, 3)).astype(np.float32) + k) for k in range(n)]


def _tar(path: Path, members: list[tuple[str, bytes]]) -> Path:
    with tarfile.open(path, "w:gz" if path.suffix == ".tgz" else "w") as tf:
        for name, b in members:
            ti = tarfile.TarInfo(name)
            ti.size = len(b)
            tf.addfile(ti, io.BytesIO(b))
    return path


def test_a_take_reads_the_same_from_a_folder_a_tar_and_a_tgz(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    fr = _frames(12, rng)
    want = np.stack([parse_vl(b, "") for b in fr])
    folder = tmp_path / "e05"
    folder.mkdir()
    for k, b in enumerate(fr, 1):
        (folder / f"frame_{k:03d}.vl").write_bytes(b)
    order = rng.permutation(12)  # stored out of order, under a folder prefix, with macOS resource forks
    members = [(f"x/e05/frame_{k + 1:03d}.vl", fr[k]) for k in order] + [("x/e05/._frame_001.vl", b"junk")]
    for src in (folder, _tar(tmp_path / "a.tar", members), _tar(tmp_path / "a.tgz", members)):
        assert np.array_equal(read_take(src), want)


def test_damaged_takes_are_named(tmp_path: Path) -> None:
    fr = _frames(5, np.random.default_rng(4))
    gap = _tar(tmp_path / "gap.tar", [(f"e01/frame_{k:03d}.vl", fr[k - 1]) for k in (1, 2, 4, 5)])
    with pytest.raises(RawDataError, match="frame_003.vl missing"):
        read_take(gap)
    with pytest.raises(RawDataError, match="found none"):
        read_take(_tar(tmp_path / "empty.tar", [("e01/readme.txt", b"x")]))
    dup = _tar(tmp_path / "dup.tar", [("a/frame_001.vl", fr[0]), ("b/frame_001.vl", fr[1])])
    with pytest.raises(RawDataError, match="frame 1 twice"):
        read_take(dup)
    good = _tar(tmp_path / "good.tgz", [(f"e01/frame_{k:03d}.vl", fr[k - 1]) for k in range(1, 6)])
    cut = tmp_path / "cut.tgz"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(RawDataError, match="cut.tgz.*unreadable or truncated"):
        read_take(cut)
    short = _tar(tmp_path / "short.tar", [("e01/frame_001.vl", fr[0]), ("e01/frame_002.vl", fr[1][:1000])])
    with pytest.raises(RawDataError, match="frame_002.vl.*found 1000 bytes"):
        read_take(short)


# ------------------------------------------------------------------------------------------------ audio
def test_flv_audio_tone_and_length(tmp_path: Path) -> None:
    sr, f0, secs = 44100, 330.0, 1.5
    t = np.arange(int(sr * secs)) / sr
    write_flv(tmp_path / "a.flv", 0.4 * np.sin(2 * np.pi * f0 * t), sr)
    a = read_video_audio(tmp_path / "a.flv")
    assert a.dtype == np.float32
    assert abs(len(a) / 16000 - secs) <= 2 * 1024 / sr  # AAC priming and padding: at most two 1024-sample frames
    peak = np.argmax(np.abs(np.fft.rfft(a))) * 16000 / len(a)
    assert abs(peak - f0) < 2.0


def test_flv_without_audio_or_unreadable(tmp_path: Path) -> None:
    import av

    with av.open(str(tmp_path / "v.flv"), "w", format="flv") as c:
        vs = c.add_stream("flv", rate=25)
        vs.width, vs.height, vs.pix_fmt = 32, 32, "yuv420p"
        for k in range(5):
            f = av.VideoFrame.from_ndarray(np.zeros((32, 32, 3), np.uint8), format="rgb24")
            f.pts = k
            for p in vs.encode(f):
                c.mux(p)
        for p in vs.encode(None):
            c.mux(p)
    with pytest.raises(RawDataError, match="v.flv: expected an audio stream"):
        read_video_audio(tmp_path / "v.flv")
    (tmp_path / "bad.flv").write_bytes(b"not a video at all" * 10)
    with pytest.raises(RawDataError, match="bad.flv: expected a readable video"):
        read_video_audio(tmp_path / "bad.flv")


# ------------------------------------------------------------------------------------------ end to end
@pytest.fixture(scope="module")
def raw_biwi(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from a2fbench.sources.synth import synth_dataset

    root = tmp_path_factory.mktemp("raw_biwi")
    synth_dataset(get_spec("D0"), root, size="tiny", seed=0, layout="raw", progress=False)
    return root


def test_expected_ids_of_the_biwi_splits() -> None:
    ids = expected_ids(get_spec("D0"))
    assert len(ids) == 6 * 40 + 8 * 4  # train/val/test: 6 subjects x e01-e40; test_b: 8 x e37-e40
    assert ids["F2_e01"] == "train" and ids["M5_e36"] == "val" and ids["M6_e40"] == "test_b"


def test_raw_stand_in_prepares_as_the_reference(raw_biwi: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    rc, out, err = run_a2fbench(monkeypatch, capsys, "prepare", "D0", "--raw", raw_biwi, "--out", tmp_path / "d")
    assert rc == 0, err
    ds = a2fbench.open_dataset(tmp_path / "d", "D0")
    assert ds.card["layout"] == "biwi_raw" and ds.card["dtype"] == "float64"
    assert set(ds.split("test_b")) == {"F1_e37", "F5_e37"}
    sid = "F2_e37"
    _, T = read_mesh(raw_biwi / "D0" / "rigid_scans" / "F2.obj")
    frames = read_take(raw_biwi / "D0" / "faces" / "F2" / "e37.tar")
    m = np.asarray(ds[sid].motion)
    assert m.shape == (len(frames), 3 * N)
    for k in (0, len(frames) - 1):  # the slow reference on two frames (46k triangles each)
        want = reference_process(frames[k], T).reshape(-1)
        assert np.abs(m[k] - want).max() <= 1e-10 * np.abs(want).max()
    assert m.tobytes() == plain_blocks_normalise(frames, T).reshape(len(frames), -1).tobytes()  # bit for bit
    tV, _ = read_mesh(raw_biwi / "D0" / "rigid_scans" / "F2.obj")
    assert np.abs(ds.template("F2").reshape(-1, 3) - codetalker_normalise(tV, T)).max() == 0.0
    assert ds.template("F2").tobytes() == plain_blocks_normalise(tV[None], T)[0].reshape(-1).tobytes()


def test_damaged_raw_corpus(raw_biwi: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    bad = tmp_path / "raw"
    shutil.copytree(raw_biwi, bad)
    (bad / "D0" / "faces" / "M3" / "e01.tar").unlink()  # the video stays: half a take
    rc, out, err = run_a2fbench(monkeypatch, capsys, "doctor", "D0", "--raw", bad, "--json")
    rep = json.loads(out)["reports"][0]
    assert rc == 1 and not rep["ok"]
    errs = [f for f in rep["findings"] if f["level"] == "error"]
    assert [f["id"] for f in errs] == ["M3_e01"] and "half a take" in errs[0]["problem"]
    rc, out, err = run_a2fbench(monkeypatch, capsys, "prepare", "D0", "--raw", bad, "--out", tmp_path / "d")
    lines = [ln for ln in err.splitlines() if ln.startswith("error")]
    assert rc == 1 and len(lines) == 1 and "M3_e01" in lines[0] and "a2fbench doctor" in lines[0]
    assert not any(p.is_file() for p in (tmp_path / "d").rglob("*"))
