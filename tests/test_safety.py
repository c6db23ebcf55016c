"""Bad inputs: one clear line naming the file, exit status 1, no traceback, nothing of that dataset written,
other datasets unaffected. And the restricted unpickler."""

from __future__ import annotations

import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import soundfile as sf
from _raw_helpers import clone, rewrite

import a2fbench
from a2fbench.errors import UnsafePickleError
from a2fbench.sources.raw import SYNTH_MARKER as MARKER
from a2fbench.util import safepickle

OK = "D4"  # a small dataset prepared in the same command, which must not be affected


def _cli(args: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> tuple[int, str, str]:
    from a2fbench.cli import main

    monkeypatch.setattr("sys.argv", ["a2fbench", *args])
    with pytest.raises(SystemExit) as e:
        main()
    out = capsys.readouterr()
    return int(e.value.code or 0), out.out, out.err


def _first(root: Path, pattern: str) -> Path:
    return sorted(root.glob(pattern))[0]


class Evil:
    def __init__(self, target: str):
        self.target = target

    def __reduce__(self):  # noqa: ANN204
        return (os.system, (f"touch {self.target}",))


def _npy_shape(bad: str) -> Callable[[Path], str]:
    def mutate(raw: Path) -> str:
        f = _first(raw / "D0" / "vertices_npy", "*.npy")
        m = np.load(f)
        f.unlink()
        np.save(f, m[:, :-3] if bad == "count" else m.astype(np.float32))
        return f.name
    return mutate


def _truncate(raw: Path) -> str:
    f = _first(raw / "D2" / "vertices_npy", "*.npy")
    data = f.read_bytes()
    f.unlink()
    f.write_bytes(data[: len(data) // 3])
    return f.name


def _missing_wav(raw: Path) -> str:
    w = _first(raw / "D2" / "wav", "*.wav")
    w.unlink()
    return w.name


def _nan(raw: Path) -> str:
    f = sorted((raw / "D2" / "vertices_npy").glob("*.npy"))[-1]
    m = np.load(f)
    m[5, 100] = np.nan
    f.unlink()
    np.save(f, m)
    return f.name


def _mixed_dtype(raw: Path) -> str:
    f = sorted((raw / "D2" / "vertices_npy").glob("*.npy"))[-1]
    m = np.load(f).astype(np.float64)
    f.unlink()
    np.save(f, m)
    return f.name


def _long_audio(raw: Path) -> str:
    w = _first(raw / "D3", "*.wav")
    x, sr = sf.read(str(w), dtype="float32")
    w.unlink()
    sf.write(str(w), np.concatenate([x, x, x]), sr, subtype="PCM_16")
    return w.name


def _garbage_wav(raw: Path) -> str:
    w = _first(raw / "D3", "*.wav")
    w.unlink()
    w.write_bytes(b"RIFF????WAVEjunk" * 10)
    return w.name


def _unsynthetic(raw: Path) -> str:
    (raw / "D0" / MARKER).unlink()  # a real folder: the stand-in's region files are not the published ones
    return "regions/lve.txt"


def _truncated_pickle(raw: Path) -> str:
    p = raw / "D2" / "templates.pkl"
    data = p.read_bytes()
    p.unlink()
    p.write_bytes(data[:500])
    return "templates.pkl"


def _missing_flame(raw: Path) -> str:
    (raw / "D5" / "generic_model.pkl").unlink()
    return "generic_model.pkl"


def _missing_annotation(raw: Path) -> str:
    import json

    doc = json.loads((raw / "D6" / "val.json").read_text())
    f = raw / "D6" / doc["data"][0]["annot_path"]
    f.unlink()
    return f.name


def _duplicate_ids(raw: Path) -> str:
    sub = raw / "D3" / "extra"
    sub.mkdir()
    src = _first(raw / "D3", "*.npy")
    shutil.copy(src, sub / src.name)
    shutil.copy(src.with_suffix(".wav"), sub / src.with_suffix(".wav").name)
    return src.stem


CASES = {
    "checksum mismatch (real folder)": ("D0", _unsynthetic, "expected sha256"),
    "wrong vertex count": ("D0", _npy_shape("count"), "expected motion shaped (T, 70110)"),
    "wrong dtype": ("D0", _npy_shape("dtype"), "expected float64 motion, found dtype float32"),
    "truncated npy": ("D2", _truncate, "truncated or corrupt"),
    "missing wav": ("D2", _missing_wav, "expected the audio of sequence"),
    "NaN motion": ("D2", _nan, "expected finite motion, found NaN/inf at frame 5"),
    "mixed dtypes": ("D2", _mixed_dtype, "like the dataset's other sequences"),
    "audio/motion mismatch": ("D3", _long_audio, "expected audio within 0.5 s"),
    "unreadable wav": ("D3", _garbage_wav, "unreadable"),
    "duplicate ids": ("D3", _duplicate_ids, "twice"),
    "truncated pickle": ("D2", _truncated_pickle, "corrupt or truncated"),
    "missing FLAME model": ("D5", _missing_flame, "FLAME"),
    "missing release annotation": ("D6", _missing_annotation, "expected the annotation"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_fails_cleanly(case: str, raw_tiny: Path, data_tiny: Path, tmp_path: Path,
                                 monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    bad, mutate, needle = CASES[case]
    raw = clone(raw_tiny, tmp_path / "raw")
    fname = mutate(raw)
    data = tmp_path / "data"
    code, out, err = _cli(["prepare", f"{bad},{OK}", "--raw", str(raw), "--out", str(data)], monkeypatch, capsys)
    assert code == 1
    assert "Traceback" not in err and "Traceback" not in out
    errors = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1, err
    assert needle in errors[0] and fname in errors[0], errors[0]
    assert not (data / bad).exists() and not (data / f".{bad}.incomplete").exists()
    assert sorted(p.name for p in data.iterdir()) == [OK]
    ok = a2fbench.open_dataset(data, OK)
    assert ok.card["fingerprint"] == a2fbench.open_dataset(data_tiny, OK).card["fingerprint"]


def test_a_failing_prepare_keeps_the_previous_store(raw_tiny: Path, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture) -> None:
    raw = clone(raw_tiny, tmp_path / "raw")
    data = tmp_path / "data"
    assert _cli(["prepare", "D2", "--raw", str(raw), "--out", str(data)], monkeypatch, capsys)[0] == 0
    before = a2fbench.open_dataset(data, "D2").card["fingerprint"]
    _nan(raw)
    code, _, err = _cli(["prepare", "D2", "--raw", str(raw), "--out", str(data), "--workers", "2"], monkeypatch, capsys)
    assert code == 1 and "NaN" in err
    assert a2fbench.open_dataset(data, "D2").card["fingerprint"] == before
    assert sorted(p.name for p in data.iterdir()) == ["D2"]


def test_parallel_workers_isolate_a_failure(raw_tiny: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture) -> None:
    raw = clone(raw_tiny, tmp_path / "raw")
    _long_audio(raw)
    code, out, err = _cli(["prepare", "D3,D4,D6", "--raw", str(raw), "--out", str(tmp_path / "d"), "--workers", "2"],
                          monkeypatch, capsys)
    assert code == 1 and "Traceback" not in err
    assert [ln for ln in err.splitlines() if ln.startswith("error:")][0].count("expected audio within") == 1
    assert "D4:" in out and "D6:" in out
    assert sorted(p.name for p in (tmp_path / "d").iterdir()) == ["D4", "D6"]


def test_malicious_pickle_is_refused_and_never_runs(raw_tiny: Path, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture) -> None:
    raw = clone(raw_tiny, tmp_path / "raw")
    sentinel = tmp_path / "pwned"
    p = rewrite(raw / "D1" / "templates.pkl")
    p.write_bytes(pickle.dumps({"FaceTalk_170728_03272_TA": Evil(str(sentinel))}))
    code, _, err = _cli(["prepare", f"D1,{OK}", "--raw", str(raw), "--out", str(tmp_path / "data")], monkeypatch,
                        capsys)
    assert not sentinel.exists()
    assert code == 1 and "Traceback" not in err
    line = next(ln for ln in err.splitlines() if ln.startswith("error:"))
    assert "templates.pkl" in line and "'posix.system'" in line and "refusing" in line
    assert not (tmp_path / "data" / "D1").exists() and (tmp_path / "data" / OK).is_dir()


def test_console_script_prints_no_traceback(raw_tiny: Path, tmp_path: Path) -> None:
    """The real entry point in a fresh process: one line on stderr, exit 1."""
    raw = clone(raw_tiny, tmp_path / "raw")
    _truncate(raw)
    r = subprocess.run([sys.executable, "-m", "a2fbench.cli", "prepare", "D2", "--raw", str(raw), "--out",
                        str(tmp_path / "data")], capture_output=True, text=True)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert [ln for ln in r.stderr.splitlines() if ln.startswith("error:")][0].endswith("re-download or re-export it")
    assert not (tmp_path / "data" / "D2").exists()


def test_missing_raw_folder_and_bad_usage(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture) -> None:
    code, _, err = _cli(["prepare", "D3", "--raw", str(tmp_path / "nowhere"), "--out", str(tmp_path / "d")],
                        monkeypatch, capsys)
    assert code == 1 and "a2fbench download D3" in err and "Traceback" not in err
    code, _, err = _cli(["prepare", "D3", "--workers", "two"], monkeypatch, capsys)
    assert code == 2


# ------------------------------------------------------------------------------------ safepickle
@pytest.mark.parametrize("payload", [
    lambda t: Evil(t),
    lambda t: {"a": [1, Evil(t)]},
])
def test_callable_pickles_are_refused(tmp_path: Path, payload) -> None:  # noqa: ANN001
    sentinel = tmp_path / "ran"
    for proto in (2, 4, 5):
        data = pickle.dumps(payload(str(sentinel)), protocol=proto)
        with pytest.raises(UnsafePickleError, match="refusing"):
            safepickle.loads(data, "evil.pkl")
    assert not sentinel.exists()


@pytest.mark.parametrize("ref", [b"cbuiltins\neval\n", b"csubprocess\nPopen\n", b"cnumpy\nload\n",
                                 b"cbuiltins\ngetattr\n", b"cnumpy.testing\nrun_module_suite\n",
                                 b"ccopyreg\n_reconstructor\n"])
def test_dangerous_globals_are_refused(ref: bytes) -> None:
    data = b"\x80\x02" + ref + b"X\x05\x00\x00\x00printq\x00\x85q\x01Rq\x02."
    with pytest.raises(UnsafePickleError):
        safepickle.loads(data, "x.pkl")


def test_plain_data_chumpy_and_sparse_load(tmp_path: Path) -> None:
    import collections
    import types

    import scipy.sparse as sp

    obj = {"a": np.arange(5, dtype=np.int64), "b": [1.5, "s", (2, 3)], "c": np.float32(2.5),
           "d": collections.OrderedDict(x=np.eye(2)), "e": {1, 2}, "f": np.zeros(3, dtype=[("x", "<f4")])}
    for proto in (2, 4):
        got = safepickle.loads(pickle.dumps(obj, protocol=proto))
        assert np.array_equal(got["a"], obj["a"]) and got["b"] == obj["b"] and got["c"] == obj["c"]
        assert np.array_equal(got["d"]["x"], np.eye(2)) and got["e"] == {1, 2} and got["f"].dtype == obj["f"].dtype
    # FLAME files carry chumpy arrays and scipy sparse matrices: both become plain data, chumpy never imported
    mod = types.ModuleType("chumpy.ch")

    class Ch:
        def __init__(self, x):  # noqa: ANN001
            self.x = x

        def __getstate__(self):  # noqa: ANN204
            return {"x": self.x, "_dirty_vars": set()}

    Ch.__module__, Ch.__qualname__ = "chumpy.ch", "Ch"
    mod.Ch = Ch
    sys.modules["chumpy"], sys.modules["chumpy.ch"] = types.ModuleType("chumpy"), mod
    try:
        data = pickle.dumps({"shapedirs": Ch(np.ones((4, 3, 2))), "J": sp.csc_matrix(np.eye(3))}, protocol=2)
    finally:
        del sys.modules["chumpy"], sys.modules["chumpy.ch"]
    got = safepickle.loads(data)
    assert type(got["shapedirs"]) is np.ndarray and got["shapedirs"].shape == (4, 3, 2)
    assert sp.issparse(got["J"]) and np.array_equal(got["J"].toarray(), np.eye(3))
    assert "chumpy" not in sys.modules


def test_real_flame_masks_load(shared_resources: Path) -> None:
    masks = safepickle.load(shared_resources / "flame" / "FLAME_masks.pkl")
    sizes = {k: np.asarray(v).size for k, v in masks.items()}
    assert sizes["lips"] == 254 and sizes["forehead"] == 133 and sizes["eye_region"] == 751 and sizes["face"] == 1787
    lips = np.asarray(masks["lips"])
    assert lips.dtype == np.int64 and (lips.min(), lips.max()) == (1576, 3928)


def test_not_enough_disk_is_refused_before_writing(raw_tiny: Path, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from collections import namedtuple

    from a2fbench.errors import StoreError
    from a2fbench.prepare import prepare_dataset
    from a2fbench.registry import get_spec

    du = namedtuple("du", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda p: du(10**9, 10**9 - 1000, 1000))
    with pytest.raises(StoreError, match="GB free for the D2 store"):
        prepare_dataset(get_spec("D2"), raw_tiny, tmp_path, progress=False)
    assert list(tmp_path.iterdir()) == []
