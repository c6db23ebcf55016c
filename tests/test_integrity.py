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
