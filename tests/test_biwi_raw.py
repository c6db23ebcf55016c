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
from a2fbench.util.fsutil import sha256_file

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


def cross_product_total(X: np.ndarray, T: np.ndarray) -> float:
    """Total triangle area with math.fsum (correctly rounded sum) of |(p1 - p2) x (p1 - p3)| / 2 per triangle."""
    p = np.asarray(X, np.float64)[T]
    return math.fsum(np.linalg.norm(np.cross(p[:, 0] - p[:, 1], p[:, 0] - p[:, 2]), axis=1)) / 2


@pytest.mark.parametrize("threads", [1, 3])
def test_normalise_matches_the_reference_and_is_deterministic(threads: int, monkeypatch) -> None:
    """On a 40 x 40 grid (3,042 triangles): each frame as the MATLAB steps written out (reference_process, with
    the mixed-Voronoi total), within float64 rounding; the same bits whatever the number of threads, the
    order of the frames in the call, and for one mesh alone."""
    import a2fbench.sources.biwi as biwi

    rng = np.random.default_rng(5)
    V, T = small_mesh(rng, 40)
    frames = np.stack([V + rng.normal(0, 3, 3) + rng.normal(0, 0.7, V.shape) for _ in range(19)]).astype(np.float32)
    monkeypatch.setattr(biwi, "THREADS", threads)
    got = codetalker_normalise(frames, T)
    for k in (0, 7, 18):
        want = reference_process(frames[k], T)
        # each output: a few roundings of a ~1e3 mm coordinate (rotation, centring on a mean of ~1.6e3 terms,
        # division) and the area's relative error (3e3 terms, pairwise vs one by one); 1e-12 bounds both
        assert np.abs(got[k] - want).max() <= 1e-12 * np.abs(want).max()
    monkeypatch.setattr(biwi, "THREADS", 1)
    one = codetalker_normalise(frames, T)
    rev = codetalker_normalise(frames[::-1], T)[::-1]
    assert got.tobytes() == one.tobytes() == rev.tobytes()
    assert codetalker_normalise(frames[4], T).tobytes() == got[4].tobytes()


def test_area_is_the_correctly_rounded_total_within_its_bound() -> None:
    """The kernel's total area against math.fsum of the same terms: a float64 sum of F positive terms is within
    about F x 2^-53 of the exact total (pairwise summation: much less); computed on raw (not rotated, not
    centred) coordinates, the area differs from the centred one by rounding only."""
    rng = np.random.default_rng(6)
    V, T = small_mesh(rng, 60)  # 6,962 triangles
    X = V.astype(np.float32)
    ref = cross_product_total(X, T)
    got = float(triangle_area_total(X, T))
    assert abs(got - ref) <= len(T) * 2.0 ** -52 * ref
    centred = X.astype(np.float64) - X.astype(np.float64).mean(0)
    assert abs(cross_product_total(centred, T) - ref) <= 1e-12 * ref


def test_biwi_ply_is_a_fixed_point(shared_resources: Path) -> None:
    """CodeTalker's BIWI.ply is processed output (centred, area 1): rotating it back to the raw orientation,
    scaling and moving it, then processing, returns it."""
    V0, F = read_mesh(shared_resources / "biwi" / "BIWI.ply")
    assert abs(triangle_area_total(V0, F) - 1.0) < 1e-6
    raw = (V0 * [1.0, -1.0, -1.0]) * 185.0 + [3.0, -40.0, 880.0]
    got = codetalker_normalise(raw, F)
    assert np.abs(got - (V0 - V0.mean(0)) / math.sqrt(triangle_area_total(V0, F))).max() < 1e-12


def test_obj_fast_reader_agrees_with_the_line_reader(tmp_path: Path) -> None:
    """The one-pass OBJ reader gives the line-by-line reader's exact values on a written template (v, vt,
    f v/vt), and steps aside (None) for what only the line reader handles."""
    from a2fbench.sources import meshes
    from a2fbench.sources.layouts.biwi_raw import write_obj

    rng = np.random.default_rng(9)
    V, T = small_mesh(rng, 30)
    write_obj(tmp_path / "t.obj", V * 1.2345678, T)
    text = (tmp_path / "t.obj").read_text()
    fast, slow = meshes._read_obj_triangles(text), meshes._read_obj_lines(text)
    assert fast is not None
    assert fast[0].tobytes() == slow[0].tobytes() and np.array_equal(fast[1], slow[1]) and fast[1].dtype == np.int64
    assert np.array_equal(read_mesh(tmp_path / "t.obj")[1], T)
    head = "v 0 0 0\nv 1 0 0\nv 0 1 0\nv 1 1 0\n"
    for other in ("f 1 2 3 4\n", "f -4 -3 -2\n", "v 1 2 3 1\nf 1 2 3\n", "f 1 2 3 x\n"):
        assert meshes._read_obj_triangles(head + other) is None, other
        if "x" not in other:
            assert meshes._read_obj(head + other)[1].shape[1] == 3


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
    assert m.tobytes() == codetalker_normalise(frames, T).reshape(len(frames), -1).tobytes()  # same bits
    tV, _ = read_mesh(raw_biwi / "D0" / "rigid_scans" / "F2.obj")
    assert ds.template("F2").tobytes() == codetalker_normalise(tV, T).reshape(-1).tobytes()
    want = reference_process(tV, T).reshape(-1)
    assert np.abs(ds.template("F2") - want).max() <= 1e-10 * np.abs(want).max()


def test_same_corpus_elsewhere_and_on_one_thread_gives_the_same_bits(raw_biwi: Path, tmp_path: Path, monkeypatch,
                                                                     capsys) -> None:
    """Determinism: the raw stand-in copied to another path and prepared with one processing thread (the
    default uses several) stores the same motion and template bits."""
    import a2fbench.sources.biwi as biwi

    rc, _, err = run_a2fbench(monkeypatch, capsys, "prepare", "D0", "--raw", raw_biwi, "--out", tmp_path / "a")
    assert rc == 0, err
    other = tmp_path / "elsewhere" / "raw"
    shutil.copytree(raw_biwi, other)
    monkeypatch.setattr(biwi, "THREADS", 1)
    rc, _, err = run_a2fbench(monkeypatch, capsys, "prepare", "D0", "--raw", other, "--out", tmp_path / "b")
    assert rc == 0, err
    da, db = a2fbench.open_dataset(tmp_path / "a", "D0"), a2fbench.open_dataset(tmp_path / "b", "D0")
    assert sorted(da.ids) == sorted(db.ids) and da.card["fingerprint"] == db.card["fingerprint"]
    for sid in da.ids:
        assert np.asarray(da[sid].motion).tobytes() == np.asarray(db[sid].motion).tobytes(), sid
    for s in {da[sid].subject for sid in da.ids}:
        assert np.asarray(da.template(s)).tobytes() == np.asarray(db.template(s)).tobytes(), s
    # the sha256 the loaders took from the bytes they read is each file's own sha256
    files = da.card["inputs"]["files"]
    assert {f["path"] for f in files} >= {"faces/F2/e37.tar", "videos/F2_e37.flv", "rigid_scans/F2.obj"}
    for f in files:
        assert f["sha256"] == sha256_file(raw_biwi / "D0" / f["path"]), f["path"]


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
