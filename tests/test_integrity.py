"""Integrity at the edges: a corpus of careless, hurried and hostile inputs (grow it with every feature).

Each refusal case asserts exit 1, one line on stderr, no traceback, and every input byte-identical afterwards.
Also: results signed here are verified and edited ones never are; conflicts name both files; control
characters never reach the terminal; SIGTERM leaves nothing partial; wild geometry renders under a memory cap.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import unicodedata
from pathlib import Path

import numpy as np
import pytest

from _cli_helpers import run_a2fbench

ESC = "\x1b]0;PWNED\x07\x1b[2J\x9b31m\u202e"


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory):
    """An $A2FBENCH_HOME of this module's own: the signing key made here signs only this module's files."""
    h = tmp_path_factory.mktemp("home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("A2FBENCH_HOME", str(h))
        yield h


@pytest.fixture(scope="module")
def world(home: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Tiny D1 stand-in (prepared), a predictions folder (ground truth x 1.01) and its results file."""
    import a2fbench
    from a2fbench.prepare import prepare_dataset
    from a2fbench.registry import get_spec
    from a2fbench.scoring.evaluate import evaluate
    from a2fbench.sources.synth import synth_dataset
    from a2fbench.util.fsutil import write_json

    root = tmp_path_factory.mktemp("integrity")
    spec = get_spec("D1")
    synth_dataset(spec, root / "raw", size="tiny", seed=0, progress=False)
    prepare_dataset(spec, root / "raw", root / "data", progress=False)
    ds = a2fbench.open_dataset(root / "data", "D1")
    pred = root / "pred"
    pred.mkdir()
    seqs = list(ds.split("test"))
    for s in seqs:
        np.save(pred / f"{s}.npy", np.asarray(ds[s].motion, np.float32) * 1.01)
    ds.close()
    res = root / "genuine.json"
    write_json(res, evaluate("D1", pred, root / "data", n_bootstrap=200, progress=False))
    return {"root": root, "data": root / "data", "pred": pred, "seq": seqs[0], "res": res}


def _snap(p: Path):
    if p.is_file():
        return hashlib.sha256(p.read_bytes()).hexdigest()
    return {str(f.relative_to(p)): _snap(f) for f in sorted(p.rglob("*")) if f.is_file()}


def _raw_controls(text: str) -> list[str]:
    return sorted({c for c in text if unicodedata.category(c) == "Cc" and c not in "\n\r\t"})


def _one_line_refusal(code: int, err: str) -> None:
    lines = [x for x in err.splitlines() if x.strip()]
    assert code == 1, err
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err


# ------------------------------------------------------------------ an output never overwrites an input
def _cases(w: dict, d: Path) -> dict[str, tuple[list[str], list[Path]]]:
    """name -> (a2fbench arguments whose --out names an input, the inputs to keep byte-identical)."""
    seq, data = w["seq"], str(w["data"])
    one = d / f"{seq}.npy"
    shutil.copy(w["pred"] / f"{seq}.npy", one)
    pred = d / "pred"
    shutil.copytree(w["pred"], pred)
    res = d / "r.json"
    shutil.copy(w["res"], res)
    link = d / "link.npy"
    link.symlink_to(one)
    return {
        "render_out_is_input": (["render", one, "--dataset", "D1", "--data", data, "--out", one], [one]),
        "render_out_is_input_via_symlink": (["render", one, "--dataset", "D1", "--data", data, "--out", link], [one]),
        "render_out_is_input_other_spelling": (["render", one, "--dataset", "D1", "--data", data, "--out",
                                                d / "pred" / ".." / one.name], [one]),
        "export_gltf_out_is_input": (["export", one, "--dataset", "D1", "--data", data, "--format", "gltf", "--out",
                                      one], [one]),
        "export_obj_out_contains_the_input": (["export", one, "--dataset", "D1", "--data", data, "--format", "obj",
                                               "--out", d], [pred, one]),
        "evaluate_out_inside_predictions": (["evaluate", pred, "--dataset", "D1", "--data", data, "--out",
                                             pred / f"{seq}.npy"], [pred]),
        "evaluate_out_is_the_store": (["evaluate", pred, "--dataset", "D1", "--data", data, "--out",
                                       Path(data) / "D1" / "store.h5"], [pred]),
        "report_out_is_the_results": (["report", res, "--out", res], [res]),
        "render_out_folder_contains_input": (["render", pred, "--dataset", "D1", "--data", data, "--out", d], [pred]),
    }


CASE_NAMES = ["render_out_is_input", "render_out_is_input_via_symlink", "render_out_is_input_other_spelling",
              "export_gltf_out_is_input", "export_obj_out_contains_the_input", "evaluate_out_inside_predictions",
              "evaluate_out_is_the_store", "report_out_is_the_results", "render_out_folder_contains_input"]


@pytest.mark.parametrize("force", [False, True], ids=["plain", "force"])
@pytest.mark.parametrize("name", CASE_NAMES)
def test_an_output_never_overwrites_an_input(world, tmp_path, monkeypatch, capsys, name, force) -> None:
    args, keep = _cases(world, tmp_path)[name]
    store = world["data"] / "D1"
    keep = keep + [store]
    before = {p: _snap(p) for p in keep}
    code, _, err = run_a2fbench(monkeypatch, capsys, *map(str, args), *(["--force"] if force else []))
    _one_line_refusal(code, err)
    assert "an output never replaces an input" in err
    assert {p: _snap(p) for p in keep} == before


# ------------------------------------------------------------------ an existing output needs --force
@pytest.mark.parametrize("cmd", ["evaluate", "report", "export-csv"])
def test_an_existing_output_needs_force(world, tmp_path, monkeypatch, capsys, cmd) -> None:
    target = tmp_path / {"evaluate": "mine.json", "report": "mine.html", "export-csv": "mine.csv"}[cmd]
    target.write_text("my own notes\n")
    args = {"evaluate": ["evaluate", world["pred"], "--dataset", "D1", "--data", world["data"], "--bootstrap", "100"],
            "report": ["report", world["res"]],
            "export-csv": ["export", world["pred"] / f"{world['seq']}.npy", "--dataset", "D1", "--data",
                           world["data"], "--format", "obj"]}[cmd]
    if cmd == "export-csv":  # OBJ folder: an existing *file* there is an existing output too
        target = tmp_path / "objs"
        target.mkdir()
        (target / "frame_000000.obj").write_text("v 0 0 0\n")
    before = _snap(target)
    code, _, err = run_a2fbench(monkeypatch, capsys, *map(str, args), "--out", str(target))
    _one_line_refusal(code, err)
    assert "pass --force to replace it" in err and _snap(target) == before
    code, _, err = run_a2fbench(monkeypatch, capsys, *map(str, args), "--out", str(target), "--force")
    assert code == 0, err
    assert _snap(target) != before
    assert not [p for p in target.parent.iterdir() if p.name.startswith(".")]  # no temporary left


def test_a_missing_output_folder_is_created(world, tmp_path, monkeypatch, capsys) -> None:
    out = tmp_path / "new" / "deeper" / "r.json"
    code, _, err = run_a2fbench(monkeypatch, capsys, "evaluate", str(world["pred"]), "--dataset", "D1", "--data",
                                str(world["data"]), "--bootstrap", "100", "--out", str(out))
    assert code == 0, err
    assert json.loads(out.read_text())["dataset"]["id"] == "D1"


# ------------------------------------------------------------------ read-only places: one line
# as root, a chmod 555 folder is writable unless the capabilities that bypass permissions are dropped
_WRAP = r"""
import ctypes, os, sys
if os.geteuid() == 0:
    libc = ctypes.CDLL(None, use_errno=True)
    for cap in (1, 2, 3):  # DAC_OVERRIDE, DAC_READ_SEARCH, FOWNER
        libc.prctl(24, cap, 0, 0, 0)
os.execvp(sys.argv[1], sys.argv[1:])
"""


def _run_unprivileged(*args, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", _WRAP, *map(str, args)], capture_output=True, text=True,
                          env=env or os.environ.copy(), timeout=300)


def _read_only(d: Path) -> bool:
    d.chmod(0o555)
    r = _run_unprivileged("touch", d / ".probe")
    if (d / ".probe").exists():
        (d / ".probe").unlink()
        return False
    return r.returncode != 0


def test_a_read_only_folder_is_one_line(world, tmp_path) -> None:
    ro = tmp_path / "ro"
    ro.mkdir()
    try:
        if not _read_only(ro):
            pytest.skip("cannot make a read-only folder on this machine (capabilities cannot be dropped)")
        r = _run_unprivileged(shutil.which("a2fbench"), "evaluate", world["pred"], "--dataset", "D1", "--data",
                              world["data"], "--bootstrap", "100", "--out", ro / "r.json")
        _one_line_refusal(r.returncode, r.stderr)
        assert "ermission denied" in r.stderr and "nothing partial was left" in r.stderr
        assert list(ro.iterdir()) == []
    finally:
        ro.chmod(0o755)


def test_a_read_only_leaderboard_database_is_one_line(world, tmp_path, monkeypatch, capsys) -> None:
    db = tmp_path / "lb.sqlite"
    code, _, err = run_a2fbench(monkeypatch, capsys, "leaderboard", "submit", str(world["res"]), "--method", "M",
                                "--db", str(db))
    assert code == 0, err
    for p in tmp_path.glob("lb.sqlite*"):
        p.chmod(0o444)
    try:
        before = _snap(db)
        r = _run_unprivileged(shutil.which("a2fbench"), "leaderboard", "edit", "1", "--params", "5M", "--db", db)
        if r.returncode == 0:
            pytest.skip("the read-only database was writable (capabilities cannot be dropped here)")
        _one_line_refusal(r.returncode, r.stderr)
        assert _snap(db) == before
    finally:
        for p in tmp_path.glob("lb.sqlite*"):
            p.chmod(0o644)


# ------------------------------------------------------------------ results the leaderboard can trust
def _edited(src: Path, dst: Path) -> Path:
    """``src`` with every score halved (aggregates still consistent) and content_hash recomputed, as anyone
    can: the hash alone proves nothing."""
    from a2fbench.scoring.results import content_hash

    doc = json.loads(src.read_text())
    for row in doc["per_sequence"]:
        for k, v in row.items():
            if k not in ("id", "frames") and isinstance(v, float):
                row[k] = v * 0.5
    for m in doc["metrics"].values():
        if isinstance(m.get("value"), float):
            m["value"] *= 0.5
        if m.get("ci95"):
            m["ci95"] = [c * 0.5 for c in m["ci95"]]
    doc["content_hash"] = content_hash(doc)
    dst.write_text(json.dumps(doc))
    return dst


def _board(monkeypatch, capsys, db: Path) -> dict[str, dict]:
    code, out, err = run_a2fbench(monkeypatch, capsys, "leaderboard", "show", "--json", "--db", str(db))
    assert code == 0, err
    return {e["method"]: e for e in json.loads(out)["entries"] if e["kind"] != "reported"}


def test_signature_statuses(world, tmp_path) -> None:
    from a2fbench.scoring.results import load, signature_status

    assert signature_status(load(world["res"])) == "valid"
    assert signature_status(load(_edited(world["res"], tmp_path / "e.json"))) == "invalid"
    doc = load(world["res"])
    doc["signature"]["key_id"] = "sha256:0000000000000000"
    assert signature_status(doc) == "foreign"
    del doc["signature"]
    assert signature_status(doc) == "unsigned"


def test_a_file_signed_here_is_verified_and_an_edited_copy_is_refused(world, tmp_path, monkeypatch, capsys) -> None:
    db = tmp_path / "lb.sqlite"
    code, out, err = run_a2fbench(monkeypatch, capsys, "leaderboard", "submit", str(world["res"]), "--method", "G",
                                  "--db", str(db))
    assert code == 0 and "[verified] (signature)" in out, err
    edited = _edited(world["res"], tmp_path / "edited.json")
    code, _, err = run_a2fbench(monkeypatch, capsys, "leaderboard", "submit", str(edited), "--method", "F",
                                "--db", str(db))
    _one_line_refusal(code, err)
    assert "conflict" in err and str(edited) in err and str(world["res"]) in err  # both files named
    board = _board(monkeypatch, capsys, db)
    assert set(board) == {"G"} and board["G"]["verified"] is True and board["G"]["verified_by"] == "signature"
    assert board["G"]["metrics"]["LVE"]["value"] == json.loads(world["res"].read_text())["metrics"]["LVE"]["value"]


def test_a_forged_file_submitted_first_is_displaced_by_the_genuine_one(world, tmp_path, monkeypatch, capsys) -> None:
    db = tmp_path / "lb.sqlite"
    forged = _edited(world["res"], tmp_path / "forged.json")
    doc = json.loads(forged.read_text())  # signed by "another installation": cannot be checked, so unverified
    doc["signature"]["key_id"] = "sha256:0123456789abcdef"
    from a2fbench.scoring.results import content_hash

    doc["content_hash"] = content_hash(doc)
    forged.write_text(json.dumps(doc))
    code, out, err = run_a2fbench(monkeypatch, capsys, "leaderboard", "submit", str(forged), "--method", "F",
                                  "--db", str(db))
    assert code == 0 and "verified" not in out, err
    # another method, unverified, same evaluation, other numbers: a conflict, not a duplicate
    other = tmp_path / "other.json"
    d2 = json.loads(world["res"].read_text())
    del d2["signature"]
    d2["content_hash"] = content_hash(d2)
    other.write_text(json.dumps(d2))
    code, _, err = run_a2fbench(monkeypatch, capsys, "leaderboard", "submit", str(other), "--method", "U",
                                "--db", str(db))
    _one_line_refusal(code, err)
    assert "conflict" in err and str(forged) in err and "duplicate" not in err
    code, out, err = run_a2fbench(monkeypatch, capsys, "leaderboard", "submit", str(world["res"]), "--method", "G",
                                  "--verify", str(world["pred"]), "--data", str(world["data"]), "--db", str(db))
    assert code == 0 and "conflict" in out and "disputed" in out, err
    board = _board(monkeypatch, capsys, db)
    assert board["G"]["verified"] is True and board["G"]["verified_by"] == "rescored"
    assert board["F"]["disputed_by"] == board["G"]["id"] and not board["F"]["verified"]
    assert board["F"]["metrics"]["LVE"].get("rank") is None  # shown apart, never ranked
    assert board["G"]["metrics"]["LVE"]["rank"] == 1


# ------------------------------------------------------------------ control characters and shell quoting
def test_printable_escapes_controls_and_bidi_overrides() -> None:
    from a2fbench.util.guard import printable

    assert printable("a\x1b[2Jb\nc\u202ed\x9b") == "a\\x1b[2Jb\\x0ac\\u202ed\\x9b"
    assert printable("FaceTalk_170809 ünïcode") == "FaceTalk_170809 ünïcode"


def test_control_characters_in_names_never_reach_the_terminal(world, tmp_path, monkeypatch, capsys) -> None:
    pred = tmp_path / "pred"
    shutil.copytree(world["pred"], pred)
    np.save(pred / f"x{ESC}.npy", np.zeros((3, 15069), np.float32))
    code, out, err = run_a2fbench(monkeypatch, capsys, "evaluate", str(pred), "--dataset", "D1", "--data",
                                  str(world["data"]), "--out", str(tmp_path / "r.json"))
    assert code == 1 and not _raw_controls(out + err) and "\\x1b" in err, err


def test_the_suggested_render_command_is_shell_quoted(world) -> None:
    import shlex

    from a2fbench.outputs.report import report_html
    from a2fbench.scoring.results import load

    doc = load(world["res"])
    doc["per_sequence"][0]["id"] = "a;touch x"
    page = report_html(doc, worst=len(doc["per_sequence"]))
    assert "&#x27;PRED/a;touch x.npy&#x27;" in page or shlex.quote("PRED/a;touch x.npy") in page.replace("&#x27;", "'")


# ------------------------------------------------------------------ finite or refused
def test_nan_in_a_checkpoint_is_refused_naming_the_tensor(tmp_path) -> None:
    torch = pytest.importorskip("torch")
    from a2fbench.errors import A2FBenchError
    from unitalker.release.convert import load_official

    sd = {"a.weight": torch.ones(2, 2), "decoder.audio_feature_map.weight": torch.ones(3, 3)}
    sd["decoder.audio_feature_map.weight"][1, 2] = float("inf")
    torch.save(sd, tmp_path / "x.pt")
    with pytest.raises(A2FBenchError, match=r"decoder\.audio_feature_map\.weight"):
        load_official(tmp_path / "x.pt")


# ------------------------------------------------------------------ SIGTERM leaves nothing partial
def test_sigterm_during_an_obj_export_leaves_nothing(world, tmp_path) -> None:
    long = tmp_path / "long.npy"
    np.save(long, np.concatenate([np.load(world["pred"] / f"{world['seq']}.npy")] * 20))
    out = tmp_path / "out"
    out.mkdir()
    p = subprocess.Popen([shutil.which("a2fbench"), "export", str(long), "--dataset", "D1", "--data",
                          str(world["data"]), "--format", "obj", "--out", str(out / "objs")],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    t0 = time.time()
    while p.poll() is None and not any(out.iterdir()) and time.time() - t0 < 120:
        time.sleep(0.02)
    time.sleep(0.2)
    if p.poll() is not None:
        pytest.skip("the export finished before it could be stopped")
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 128 + signal.SIGTERM and "Traceback" not in err, err
    assert "stopped by SIGTERM" in err and list(out.iterdir()) == []


# ------------------------------------------------------------------ bounded render memory
def _sphere(n: int = 40) -> tuple[np.ndarray, np.ndarray]:
    th, ph = np.meshgrid(np.linspace(0.1, np.pi - 0.1, n), np.linspace(0, 2 * np.pi, n))
    v = np.stack([np.sin(th) * np.cos(ph), np.cos(th), np.sin(th) * np.sin(ph)], -1).reshape(-1, 3) * 0.1
    i = np.arange(n * n).reshape(n, n)
    f = np.concatenate([np.stack([i[:-1, :-1], i[1:, :-1], i[:-1, 1:]], -1).reshape(-1, 3),
                        np.stack([i[1:, :-1], i[1:, 1:], i[:-1, 1:]], -1).reshape(-1, 3)])
    return v, f


@pytest.mark.parametrize("sigma", [0.0, 0.01, 0.3])
def test_sliced_rasterisation_is_bit_identical_to_one_pass(monkeypatch, sigma) -> None:
    from a2fbench.outputs import raster

    v, f = _sphere()
    v = v + np.random.default_rng(0).normal(0, sigma, v.shape)
    cam = raster.Camera.frontal(_sphere()[0], 96)
    one = raster.Renderer(f, cam).render(v)  # default budget: one resolve per frame here
    monkeypatch.setattr(raster, "_CELLS_PER_PIXEL", 0)
    monkeypatch.setattr(raster, "_MAX_CELLS", 256)  # many slices and many resolves
    many = raster.Renderer(f, cam).render(v)
    assert np.array_equal(one, many)


_WILD = r"""
import resource, sys
import numpy as np
resource.setrlimit(resource.RLIMIT_AS, (int(sys.argv[1]), int(sys.argv[1])))
from a2fbench.outputs.raster import Camera, Renderer
n = 70
th, ph = np.meshgrid(np.linspace(0.1, np.pi - 0.1, n), np.linspace(0, 2 * np.pi, n))
v = np.stack([np.sin(th) * np.cos(ph), np.cos(th), np.sin(th) * np.sin(ph)], -1).reshape(-1, 3) * 0.1
i = np.arange(n * n).reshape(n, n)
f = np.concatenate([np.stack([i[:-1, :-1], i[1:, :-1], i[:-1, 1:]], -1).reshape(-1, 3),
                    np.stack([i[1:, :-1], i[1:, 1:], i[:-1, 1:]], -1).reshape(-1, 3)])
r = Renderer(f, Camera.frontal(v, 256))
img = r.render(v + np.random.default_rng(1).normal(0, 1.0, v.shape))  # a random model's output: huge triangles
print(img.shape, int((img != 255).any(-1).sum()))
"""


def test_wild_geometry_renders_under_an_address_space_limit() -> None:
    # ~9,500 triangles, most covering the whole 256 x 256 image: ~600 M fragments if allocated by area (~15 GB)
    r = subprocess.run([sys.executable, "-c", _WILD, str(1536 << 20)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    shape, covered = r.stdout.split(")")
    assert shape == "(256, 256, 3" and int(covered) > 0


def test_prepare_never_replaces_its_raw_download(world, tmp_path, monkeypatch, capsys) -> None:
    raw = world["root"] / "raw"
    before = _snap(raw)
    link = tmp_path / "same"
    link.symlink_to(raw)
    code, _, err = run_a2fbench(monkeypatch, capsys, "prepare", "D1", "--raw", str(raw), "--out", str(link))
    _one_line_refusal(code, err)
    assert "apart from --raw" in err and _snap(raw) == before


# ------------------------------------------------------------------ inputs that lie about their size
def _refused(monkeypatch, capsys, args: list, keep: list[Path], *, runner=None) -> str:
    """Run ``args``; assert a one-line refusal (exit 1, no traceback) and every path in ``keep`` unchanged."""
    before = {p: _snap(p) for p in keep}
    code, _, err = (runner or run_a2fbench)(monkeypatch, capsys, *map(str, args))
    _one_line_refusal(code, err)
    assert {p: _snap(p) for p in keep} == before
    return err


def _ply(path: Path, n_v: int, n_f: int, body: bytes, fmt: str = "ascii") -> Path:
    head = (f"ply\nformat {fmt} 1.0\nelement vertex {n_v}\nproperty float x\nproperty float y\nproperty float z\n"
            f"element face {n_f}\nproperty list uchar int vertex_indices\nend_header\n")
    path.write_bytes(head.encode() + body)
    return path


@pytest.mark.parametrize("kind", ["ascii_vertices", "ascii_faces", "binary", "negative_count"])
def test_a_ply_whose_header_lies_is_one_line_naming_it(world, tmp_path, monkeypatch, capsys, kind) -> None:
    tri = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0]], "<f4")
    mesh = {"ascii_vertices": lambda p: _ply(p, 5023, 9976, b"0 0 0\n1 0 0\n"),
            "ascii_faces": lambda p: _ply(p, 3, 2, b"0 0 0\n1 0 0\n0 1 0\n3 0 1 2\n"),
            "binary": lambda p: _ply(p, 5023, 1, tri.tobytes(), "binary_little_endian"),
            "negative_count": lambda p: _ply(p, -3, 1, b"0 0 0\n")}[kind](tmp_path / "lie.ply")
    one = world["pred"] / f"{world['seq']}.npy"
    err = _refused(monkeypatch, capsys, ["render", one, "--dataset", "D1", "--data", world["data"], "--mesh", mesh,
                                         "--out", tmp_path / "o.mp4"], [mesh, one])
    assert str(mesh) in err and "PLY" in err and not (tmp_path / "o.mp4").exists()


def _truncated(src: Path, dst: Path, shape: tuple[int, ...]) -> Path:
    """``dst``: an .npy whose header says ``shape`` (float32) but whose body holds only ``src``'s first frames."""
    with open(dst, "wb") as f:
        np.lib.format.write_array_header_1_0(f, {"descr": "<f4", "fortran_order": False, "shape": shape})
        f.write(np.load(src)[:5].astype("<f4").tobytes())
    return dst


@pytest.mark.parametrize("cmd", ["render", "export", "evaluate"])
def test_a_truncated_npy_is_one_line_naming_it(world, tmp_path, monkeypatch, capsys, cmd) -> None:
    one = world["pred"] / f"{world['seq']}.npy"
    T, D = np.load(one, mmap_mode="r").shape
    if cmd == "evaluate":  # a predictions folder whose one file lost its tail in a copy
        pred = tmp_path / "pred"
        shutil.copytree(world["pred"], pred)
        bad = _truncated(one, pred / one.name, (T, D))
        args = ["evaluate", pred, "--dataset", "D1", "--data", world["data"], "--out", tmp_path / "r.json"]
    else:  # a 10-hour clip at 30 fps whose body is a few frames: never memory-mapped past the end
        bad = _truncated(one, tmp_path / "long.npy", (30 * 3600 * 10, D))
        args = [cmd, bad, "--dataset", "D1", "--data", world["data"], "--out", tmp_path / "o.glb"]
        args += ["--format", "gltf"] if cmd == "export" else []
    err = _refused(monkeypatch, capsys, args, [bad, world["data"] / "D1"])
    assert str(bad) in err and "truncated" in err
    assert not [p for p in tmp_path.iterdir() if p.name not in ("pred", bad.name)]


# ------------------------------------------------------------------ finite or refused (inputs a2fbench reads)
@pytest.fixture(scope="module")
def arkit_store(home: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """DATA root with the tiny D3 stand-in (an ARKit head: (T, 52) weights)."""
    from a2fbench.prepare import prepare_dataset
    from a2fbench.registry import get_spec
    from a2fbench.sources.synth import synth_dataset

    root = tmp_path_factory.mktemp("arkit")
    synth_dataset(get_spec("D3"), root / "raw", size="tiny", seed=0, progress=False)
    prepare_dataset(get_spec("D3"), root / "raw", root / "data", progress=False)
    return root / "data"


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf], ids=["nan", "inf", "-inf"])
def test_arkit_csv_refuses_non_finite_weights(arkit_store, tmp_path, monkeypatch, capsys, bad) -> None:
    w = np.full((40, 52), 0.25, np.float32)
    w[17, 3] = bad
    src = tmp_path / "w.npy"
    np.save(src, w)
    err = _refused(monkeypatch, capsys, ["export", src, "--dataset", "D3", "--data", arkit_store, "--format",
                                         "arkit-csv", "--out", tmp_path / "w.csv"], [src, arkit_store / "D3"])
    assert str(src) in err and "NaN or inf at frame 17" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.npy"]


def test_a_pca_file_with_nan_is_refused_naming_it_and_the_key(tmp_path) -> None:
    from a2fbench.errors import StoreError
    from a2fbench.spaces.pca import fit_array, load, save

    x = np.random.default_rng(0).normal(size=(50, 12))
    good = save(fit_array(x, 4), tmp_path / "pca.npz")
    assert np.isfinite(load(good).components).all()  # the untouched file loads
    z = dict(np.load(good, allow_pickle=False))
    z["components_to_data"][2, 5] = np.inf
    bad = tmp_path / "bad.npz"
    np.savez(bad, **z)
    with pytest.raises(StoreError, match=r"bad\.npz: expected finite numbers in components_to_data"):
        load(bad)


def test_a_template_with_nan_stops_prepare_naming_it(world, tmp_path, monkeypatch, capsys) -> None:
    import pickle

    raw = tmp_path / "raw"
    shutil.copytree(world["root"] / "raw", raw)
    from a2fbench.util.safepickle import load as safe_load

    t = safe_load(raw / "D1" / "templates.pkl")
    subj = sorted(t)[0]
    t[subj] = np.array(t[subj], np.float64)
    t[subj].reshape(-1)[7] = np.nan
    with open(raw / "D1" / "templates.pkl", "wb") as f:
        pickle.dump(t, f)
    err = _refused(monkeypatch, capsys, ["prepare", "D1", "--raw", raw, "--out", tmp_path / "data"], [raw])
    assert "finite" in err and subj in err and not (tmp_path / "data" / "D1").exists()


# ------------------------------------------------------------------ JSON input: bounded depth and size
def _deep(n: int) -> str:
    return '{"a": ' * n + "1" + "}" * n


def _json_cases(w: dict, d: Path, text: str) -> dict[str, tuple[list, Path]]:
    """name -> (a2fbench arguments, the JSON file they read, holding ``text``)."""
    res = d / "r.json"
    pred = d / "pred"
    shutil.copytree(w["pred"], pred)
    rec = pred / ".a2fbench-predictions.json"
    for f in (res, rec):
        f.write_text(text)
    return {"report": (["report", res, "--out", d / "r.html"], res),
            "compare": (["compare", res, w["res"]], res),
            "leaderboard_submit": (["leaderboard", "submit", res, "--method", "M", "--db", d / "lb.sqlite"], res),
            "evaluate_predictions_record": (["evaluate", pred, "--dataset", "D1", "--data", w["data"], "--out",
                                             d / "e.json"], rec)}


@pytest.mark.parametrize("depth", [100_000, 70], ids=["recursion", "over_the_limit"])
@pytest.mark.parametrize("cmd", ["report", "compare", "leaderboard_submit", "evaluate_predictions_record"])
def test_deeply_nested_json_is_one_line(world, tmp_path, monkeypatch, capsys, cmd, depth) -> None:
    args, f = _json_cases(world, tmp_path, _deep(depth))[cmd]
    err = _refused(monkeypatch, capsys, args, [f, world["res"]])
    assert str(f) in err and "nested at most 64 levels" in err
    assert not {"r.html", "e.json", "lb.sqlite"} & {p.name for p in tmp_path.iterdir()}


@pytest.mark.parametrize("cmd", ["report", "leaderboard_submit", "evaluate_predictions_record"])
def test_an_oversized_json_is_refused_before_it_is_read(world, tmp_path, monkeypatch, capsys, cmd) -> None:
    args, f = _json_cases(world, tmp_path, "{}")[cmd]
    with open(f, "r+b") as fh:  # sparse: 300 MiB long, no disk used, never read
        fh.truncate(300 << 20)
    err = _refused(monkeypatch, capsys, args, [world["res"]])
    assert str(f) in err and "at most 256 MiB, found 300 MiB" in err


def test_json_depth_and_the_limit_in_the_shared_reader(tmp_path) -> None:
    from a2fbench.errors import A2FBenchError
    from a2fbench.util.fsutil import json_depth, read_json

    assert [json_depth(x) for x in (1, [], [[1]], {"a": [{"b": 1}]}, [1, [2, [3]], {}])] == [0, 1, 2, 3, 3]
    ok = tmp_path / "ok.json"
    ok.write_text(_deep(64))
    assert json_depth(read_json(ok)) == 64  # the limit itself is accepted
    ok.write_text(_deep(65))
    with pytest.raises(A2FBenchError, match="nested at most 64 levels"):
        read_json(ok)


# ------------------------------------------------------------------ every number a user types is range-checked
def _usage_refusal(code: int, err: str, option: str) -> None:
    """Bad usage: exit 2, the usage line and one error line naming the option, no traceback."""
    lines = [x for x in err.splitlines() if x.strip()]
    assert code == 2 and "Traceback" not in err, err
    assert lines[-1].startswith("error: ") and option in lines[-1] and len(lines) <= 3, err


NUMBERS = {  # name -> (arguments, the option the error names)
    "evaluate_negative_seed": (["evaluate", "{pred}", "--dataset", "D1", "--data", "{data}", "--seed", "-1"], "--seed"),
    "evaluate_huge_bootstrap": (["evaluate", "{pred}", "--dataset", "D1", "--data", "{data}", "--bootstrap",
                                 "1000000000000"], "--bootstrap"),
    "evaluate_workers_zero": (["evaluate", "{pred}", "--dataset", "D1", "--data", "{data}", "--workers", "0"],
                              "--workers"),
    "compare_negative_seed": (["compare", "{res}", "{res}", "--seed", "-5"], "--seed"),
    "render_size_zero": (["render", "{one}", "--dataset", "D1", "--data", "{data}", "--out", "{tmp}/o.mp4", "--size",
                          "0"], "--size"),
    "render_size_huge": (["render", "{one}", "--dataset", "D1", "--data", "{data}", "--out", "{tmp}/o.mp4", "--size",
                          "100000"], "--size"),
    "synth_negative_seed": (["synth", "D1", "--out", "{tmp}/raw", "--seed", "-1"], "--seed"),
    "prepare_workers_zero": (["prepare", "D1", "--raw", "{tmp}/none", "--out", "{tmp}/data", "--workers", "0"],
                             "--workers"),
    "download_negative_retries": (["download", "D1", "--raw", "{tmp}/raw", "--retries", "-1"], "--retries"),
    "pca_negative_seed": (["pca", "D1", "--data", "{data}", "--seed", "-2"], "--seed"),
    "solve_arkit_nan_bound": (["solve-arkit", "{one}", "--dataset", "D3", "--out", "{tmp}/w.npy", "--upper", "nan"],
                              "--upper"),
    "leaderboard_edit_entry_zero": (["leaderboard", "edit", "0", "--params", "5M", "--db", "{tmp}/lb.sqlite"],
                                    "ENTRY_ID"),
    "leaderboard_remove_negative_entry": (["leaderboard", "remove", "--db", "{tmp}/lb.sqlite", "--", "-3"], "ENTRY_ID"),
}


@pytest.mark.parametrize("name", sorted(NUMBERS))
def test_every_number_a_user_types_is_range_checked(world, tmp_path, monkeypatch, capsys, name) -> None:
    args, option = NUMBERS[name]
    fill = {"pred": world["pred"], "data": world["data"], "res": world["res"], "tmp": tmp_path,
            "one": world["pred"] / f"{world['seq']}.npy"}
    keep = [world["pred"], world["res"], world["data"] / "D1"]
    before = {p: _snap(p) for p in keep}
    code, _, err = run_a2fbench(monkeypatch, capsys, *[a.format(**fill) for a in args])
    _usage_refusal(code, err, option)
    assert {p: _snap(p) for p in keep} == before and list(tmp_path.iterdir()) == []  # nothing made before the check


@pytest.mark.parametrize("override", ["train.lr=nan", "train.lr=-1", "train.seed=-1", "model.decoder.dropout=1.5",
                                      "train.grad_clip=-1", "train.keep_checkpoints=0", "data.max_seconds=inf"])
def test_every_number_in_a_training_config_is_range_checked(override) -> None:
    pytest.importorskip("torch")
    from a2fbench.errors import ConfigError
    from unitalker.model.config import load_config

    with pytest.raises(ConfigError, match=f"config key {override.split('=')[0]}: expected"):
        load_config("tiny", [override])
    load_config("tiny", [override.split("=")[0] + "=" + {"train.lr": "0.001", "train.seed": "0",
                                                           "model.decoder.dropout": "0.5", "train.grad_clip": "1",
                                                           "train.keep_checkpoints": "1",
                                                           "data.max_seconds": "5"}[override.split("=")[0]]])


def test_tests_never_touch_the_real_home(private_home: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    from a2fbench.util import paths, signing

    real = Path("~/.a2fbench").expanduser().resolve()
    base = tmp_path_factory.getbasetemp().resolve()
    for p in (paths.home(), paths.default_data(), paths.default_db(), signing.key_path()):
        assert base in p.resolve().parents and real not in p.resolve().parents and p.resolve() != real


# ------------------------------------------------------------------ the remaining writers: --force, never over inputs
def _mine(p: Path) -> Path:
    p.mkdir(parents=True, exist_ok=True)
    (p / "my notes.txt").write_text("mine\n")
    return p


def test_synth_never_replaces_a_real_download_without_force(tmp_path, monkeypatch, capsys) -> None:
    real = _mine(tmp_path / "raw" / "D1")  # a download: no stand-in marker
    err = _refused(monkeypatch, capsys, ["synth", "D1", "--out", tmp_path / "raw"], [real])
    assert "pass --force" in err and str(real) in err
    code, _, err = run_a2fbench(monkeypatch, capsys, "synth", "D1", "--out", str(tmp_path / "raw"), "--force")
    assert code == 0 and not (real / "my notes.txt").exists(), err
    code, _, err = run_a2fbench(monkeypatch, capsys, "synth", "D1", "--out", str(tmp_path / "raw"), "--seed", "1")
    assert code == 0, err  # an earlier stand-in is the command's own: replaced without --force


def test_prepare_never_replaces_a_folder_that_holds_no_store(world, tmp_path, monkeypatch, capsys) -> None:
    mine = _mine(tmp_path / "data" / "D1")
    err = _refused(monkeypatch, capsys, ["prepare", "D1", "--raw", world["root"] / "raw", "--out", tmp_path / "data"],
                   [mine, world["root"] / "raw"])
    assert "pass --force" in err and str(mine) in err


def test_export_hf_never_replaces_a_folder_without_force(world, tmp_path, monkeypatch, capsys) -> None:
    mine = _mine(tmp_path / "hf")
    err = _refused(monkeypatch, capsys, ["export-hf", "D1", "--data", world["data"], "--out", mine], [mine])
    assert "pass --force" in err
    err = _refused(monkeypatch, capsys, ["export-hf", "D1", "--data", world["data"], "--out",
                                         world["data"] / "D1", "--force"], [world["data"]])
    assert "an output never replaces an input" in err


def test_solve_arkit_and_convert_flame_need_force(arkit_store, tmp_path, monkeypatch, capsys) -> None:
    src = tmp_path / "v.npy"  # the outputs are checked before any input is read
    np.save(src, np.zeros((4, 3)))
    dst = tmp_path / "w.npy"
    dst.write_bytes(b"mine")
    err = _refused(monkeypatch, capsys, ["solve-arkit", src, "--dataset", "D3", "--data", arkit_store, "--out", dst],
                   [src, dst])
    assert "pass --force" in err
    err = _refused(monkeypatch, capsys, ["solve-arkit", src, "--dataset", "D3", "--data", arkit_store, "--out", src,
                                         "--force"], [src])
    assert "an output never replaces an input" in err
    flame = tmp_path / "generic_model.pkl"
    flame.write_bytes(b"not read")
    err = _refused(monkeypatch, capsys, ["convert-flame", flame, dst], [flame, dst])
    assert "pass --force" in err
    err = _refused(monkeypatch, capsys, ["convert-flame", flame, flame, "--force"], [flame])
    assert "an output never replaces an input" in err


def test_leaderboard_export_needs_force_and_never_writes_over_the_database(world, tmp_path, monkeypatch,
                                                                           capsys) -> None:
    db = tmp_path / "lb.sqlite"
    code, _, err = run_a2fbench(monkeypatch, capsys, "leaderboard", "submit", str(world["res"]), "--method", "M",
                                "--db", str(db))
    assert code == 0, err
    page = tmp_path / "board.html"
    page.write_text("my page\n")
    err = _refused(monkeypatch, capsys, ["leaderboard", "export", "--html", page, "--db", db], [page, db])
    assert "pass --force" in err
    err = _refused(monkeypatch, capsys, ["leaderboard", "export", "--html", db, "--force", "--db", db], [db])
    assert "an output never replaces an input" in err
    code, _, err = run_a2fbench(monkeypatch, capsys, "leaderboard", "export", "--html", str(page), "--force",
                                "--db", str(db))
    assert code == 0 and page.read_text() != "my page\n", err


def test_unitalker_runs_never_write_over_their_inputs(world, tmp_path, monkeypatch, capsys) -> None:
    pytest.importorskip("torch")
    from _cli_helpers import run_unitalker as _ru

    def run_unitalker(mp, cap, *args):  # (exit status, stdout, stderr) like run_a2fbench
        code, err = _ru(mp, cap, *args)
        return code, "", err

    run = _mine(tmp_path / "run")
    data = world["data"]
    cases = [["finetune", "--from", run, "--data", data, "--datasets", "D1", "--out", run],
             ["finetune", "--from", run, "--data", data, "--datasets", "D1", "--out", run / "ft"],
             ["train", "--data", data, "--datasets", "D1", "--out", data / "run", "--config", "tiny"],
             ["train", "--data", data, "--datasets", "D1", "--out", data, "--config", "tiny"]]
    for args in cases:
        err = _refused(monkeypatch, capsys, args, [run, data], runner=run_unitalker)
        assert "an output never replaces an input" in err, args
    assert not (data / "run").exists()
    png = tmp_path / "curves.png"
    png.write_bytes(b"mine")
    err = _refused(monkeypatch, capsys, ["plot", run, "--out", png], [png], runner=run_unitalker)
    assert "pass --force" in err


# ------------------------------------------------------------------ stale temporaries of a killed run
def test_stale_temporaries_are_cleaned_or_ignored_never_read(world, tmp_path, monkeypatch, capsys) -> None:
    from a2fbench.util import fsutil

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)  # a process that has exited
    out = tmp_path / "out"
    out.mkdir()
    old = time.time() - 2 * fsutil.STALE_AFTER_S
    stale = [out / f".r.json.incomplete-{pid}", out / f".v.mp4.0123456789ab-{pid}.part", out / f".objs.old-{pid}"]
    stale[0].write_text("{half")
    stale[1].write_bytes(b"\0" * 10)
    (stale[2]).mkdir()
    (stale[2] / "frame_000000.obj").write_text("v 0 0 0\n")
    kept = [out / f".x.json.incomplete-{pid}",  # too recent: perhaps a writer on another machine
            out / f".y.json.incomplete-{os.getppid()}",  # its process is alive
            out / ".D1.incomplete", out / ".big.npy.0123456789ab.part"]  # resumable: prepare's, download's
    for p in kept:
        p.write_text("{half")
    for p in stale + kept[1:]:
        os.utime(p, (old, old))
    # a predictions folder holding a killed run's temporary: hidden, never read as a prediction
    pred = tmp_path / "pred"
    shutil.copytree(world["pred"], pred)
    (pred / f".{world['seq']}.npy.incomplete-{pid}").write_bytes(b"garbage")
    code, _, err = run_a2fbench(monkeypatch, capsys, "evaluate", str(pred), "--dataset", "D1", "--data",
                                str(world["data"]), "--bootstrap", "100", "--out", str(out / "r.json"))
    assert code == 0, err
    assert json.loads((out / "r.json").read_text())["metrics"]["LVE"]["value"] == \
        json.loads(world["res"].read_text())["metrics"]["LVE"]["value"]
    assert not any(p.exists() for p in stale) and all(p.exists() for p in kept)


# ------------------------------------------------------------------ a full disk or a file-size limit
_FSIZE = r"""
import os, resource, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # write() then fails with EFBIG instead of killing the process
n = int(sys.argv[1])
resource.setrlimit(resource.RLIMIT_FSIZE, (n, n))
os.execvp(sys.argv[2], sys.argv[2:])
"""


@pytest.mark.parametrize("cmd", ["evaluate", "export_gltf", "export_obj", "render"])
def test_a_file_too_large_is_one_line_and_leaves_nothing(world, tmp_path, cmd) -> None:
    one = world["pred"] / f"{world['seq']}.npy"
    out = tmp_path / "out"
    out.mkdir()
    common = ["--dataset", "D1", "--data", world["data"]]
    args = {"evaluate": ["evaluate", world["pred"], *common, "--bootstrap", "100", "--out", out / "r.json"],
            "export_gltf": ["export", one, *common, "--format", "gltf", "--out", out / "x.glb"],
            "export_obj": ["export", one, *common, "--format", "obj", "--out", out / "objs"],
            "render": ["render", one, *common, "--size", "64", "--out", out / "v.mp4"]}[cmd]
    keep = [world["pred"], world["data"] / "D1"]
    before = {p: _snap(p) for p in keep}
    r = subprocess.run([sys.executable, "-c", _FSIZE, "2000", shutil.which("a2fbench"), *map(str, args)],
                       capture_output=True, text=True, timeout=300)
    _one_line_refusal(r.returncode, r.stderr)
    assert "File too large" in r.stderr and "ulimit -f" in r.stderr and "nothing partial was left" in r.stderr
    assert str(args[-1]) in r.stderr and ".part" not in r.stderr  # the file asked for, not a hidden temporary
    assert list(out.iterdir()) == [] and {p: _snap(p) for p in keep} == before
