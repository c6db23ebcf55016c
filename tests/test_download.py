"""`a2fbench download` against a local HTTP server on 127.0.0.1 (never the internet).

The server serves stand-in files with HTTP Range support and can misbehave on purpose: drop the connection
halfway, send the wrong bytes, ignore Range. Manifest URLs are redirected to it with the `mirror` mapping;
the pinned sha256 values are rewritten (in a copy of the manifests) to the stand-in files' hashes.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import socket
import tarfile
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from a2fbench.errors import A2FBenchError, ChecksumMismatch, DownloadError, RawDataError
from a2fbench.registry import get_spec
from a2fbench.sources import download as dl
from a2fbench.sources.raw import SYNTH_MARKER as MARKER
from a2fbench.util.fsutil import sha256_file

REAL_PREFIX = "https://raw.githubusercontent.com/"


@pytest.fixture(autouse=True)
def _no_internet(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any connection to a host other than the loopback fails the test."""
    real = socket.create_connection

    def guarded(address, *a, **k):  # noqa: ANN001, ANN002, ANN003
        host = address[0]
        if host not in ("127.0.0.1", "localhost", "::1"):
            raise AssertionError(f"test tried to reach {host}")
        return real(address, *a, **k)

    monkeypatch.setattr(socket, "create_connection", guarded)
    monkeypatch.delenv(dl.MIRROR_ENV, raising=False)


class Server:
    """Threaded http.server with Range support and scripted misbehaviour per path."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.mode: dict[str, str] = {}  # path -> "drop_once" | "drop_always" | "norange"
        self.requests: list[tuple[str, str | None]] = []
        srv = self

        class H(BaseHTTPRequestHandler):
            def log_message(self, *a):  # noqa: ANN002
                pass

            def do_GET(self) -> None:  # noqa: N802
                path = self.path.lstrip("/")
                rng = self.headers.get("Range")
                srv.requests.append((path, rng))
                if path not in srv.files:
                    self.send_error(404)
                    return
                body = srv.files[path]
                mode = srv.mode.get(path, "")
                start = 0
                if rng and mode != "norange":
                    start = int(rng.split("=")[1].split("-")[0])
                    if start >= len(body):
                        self.send_error(416)
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(len(body) - start))
                self.end_headers()
                chunk = body[start:]
                if mode in ("drop_once", "drop_always"):
                    if mode == "drop_once":
                        srv.mode[path] = ""
                    self.wfile.write(chunk[: len(chunk) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                self.wfile.write(chunk)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    s = Server()
    yield s
    s.close()


def _put(server: Server, name: str, body: bytes) -> tuple[str, str]:
    server.files[name] = body
    return server.base + name, hashlib.sha256(body).hexdigest()


# ------------------------------------------------------------------------------------------ fetch()
def test_fetch_verifies_and_renames(server: Server, tmp_path: Path) -> None:
    body = os.urandom(300_000)
    url, sha = _put(server, "a/b.bin", body)
    dest = tmp_path / "x" / "b.bin"
    dl.fetch(url, dest, sha, len(body), progress=False)
    assert dest.read_bytes() == body
    assert list(dest.parent.iterdir()) == [dest]  # no partial left


def test_fetch_wrong_checksum_leaves_nothing(server: Server, tmp_path: Path) -> None:
    url, _ = _put(server, "bad.bin", b"not the published bytes" * 100)
    dest = tmp_path / "bad.bin"
    with pytest.raises(ChecksumMismatch) as e:
        dl.fetch(url, dest, "0" * 64, progress=False, backoff=0)
    msg = str(e.value)
    assert "\n" not in msg and url in msg and "expected sha256 " + "0" * 64 in msg
    assert not any(tmp_path.iterdir())


def test_fetch_wrong_size_is_refused(server: Server, tmp_path: Path) -> None:
    body = b"x" * 1000
    url, sha = _put(server, "short.bin", body)
    with pytest.raises(ChecksumMismatch, match="expected 2000 bytes, found 1000"):
        dl.fetch(url, tmp_path / "short.bin", sha, 2000, progress=False, retries=1, backoff=0)
    assert not any(tmp_path.iterdir())


def test_dropped_connection_then_resumed_by_a_second_run(server: Server, tmp_path: Path) -> None:
    body = os.urandom(200_001)
    url, sha = _put(server, "drop.bin", body)
    server.mode["drop.bin"] = "drop_once"
    dest = tmp_path / "drop.bin"
    with pytest.raises(DownloadError) as e:
        dl.fetch(url, dest, sha, len(body), retries=0, progress=False)
    assert "run the same command again to resume" in str(e.value) and "\n" not in str(e.value)
    part = dl.part_path(dest, sha)
    assert not dest.exists() and part.stat().st_size == len(body) // 2
    assert part.read_bytes() == body[: len(body) // 2]
    dl.fetch(url, dest, sha, len(body), retries=0, progress=False)
    assert dest.read_bytes() == body and not part.exists()
    assert server.requests[-1] == ("drop.bin", f"bytes={len(body) // 2}-")  # resumed, not restarted


def test_dropped_connection_is_retried_within_one_call(server: Server, tmp_path: Path) -> None:
    body = os.urandom(150_000)
    url, sha = _put(server, "d2.bin", body)
    server.mode["d2.bin"] = "drop_once"
    dest = tmp_path / "d2.bin"
    dl.fetch(url, dest, sha, len(body), retries=2, backoff=0, progress=False)
    assert dest.read_bytes() == body
    assert [r for _, r in server.requests] == [None, f"bytes={len(body) // 2}-"]


def test_server_ignoring_range_restarts_cleanly(server: Server, tmp_path: Path) -> None:
    body = os.urandom(100_000)
    url, sha = _put(server, "nr.bin", body)
    dest = tmp_path / "nr.bin"
    dl.part_path(dest, sha).write_bytes(body[:40_000])
    server.mode["nr.bin"] = "norange"
    dl.fetch(url, dest, sha, len(body), progress=False)
    assert dest.read_bytes() == body


def test_always_dropping_server_fails_cleanly(server: Server, tmp_path: Path) -> None:
    body = os.urandom(64_000)
    url, sha = _put(server, "flaky.bin", body)
    server.mode["flaky.bin"] = "drop_always"
    with pytest.raises(DownloadError, match="kept .* bytes"):
        dl.fetch(url, tmp_path / "flaky.bin", sha, len(body), retries=2, backoff=0, progress=False)
    assert not (tmp_path / "flaky.bin").exists()


def test_http_404_is_one_line(server: Server, tmp_path: Path) -> None:
    with pytest.raises(DownloadError, match="HTTP 404"):
        dl.fetch(server.base + "nope", tmp_path / "n", "0" * 64, progress=False, backoff=0)


def test_mirror_rewrites_longest_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    m = {"https://a/": "http://x/", "https://a/b/": "http://y/"}
    assert dl.rewrite_url("https://a/b/c.txt", m) == "http://y/c.txt"
    assert dl.rewrite_url("https://a/c.txt", m) == "http://x/c.txt"
    assert dl.rewrite_url("https://z/c.txt", m) == "https://z/c.txt"
    monkeypatch.setenv(dl.MIRROR_ENV, "https://a/=http://127.0.0.1:1/ ; https://q/=http://127.0.0.1:2/")
    assert dl.rewrite_url("https://q/r") == "http://127.0.0.1:2/r"
    monkeypatch.setenv(dl.MIRROR_ENV, "garbage")
    with pytest.raises(A2FBenchError, match="PREFIX=REPLACEMENT"):
        dl.rewrite_url("https://q/r")


# ------------------------------------------------------------------------------------------ archives
def _zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as z:
        for n, b in members.items():
            z.writestr(n, b)
    return path


@pytest.mark.parametrize("evil", ["../escape.txt", "/tmp/abs_escape.txt", "ok/../../escape.txt", "C:/win.txt"])
def test_archive_refuses_escaping_paths(tmp_path: Path, evil: str) -> None:
    a = _zip(tmp_path / "a.zip", {"top/good.txt": b"fine", evil: b"evil"})
    dest = tmp_path / "dest"
    dest.mkdir()
    with pytest.raises(RawDataError, match="refusing the archive") as e:
        dl.safe_extract(a, dest)
    assert "\n" not in str(e.value)
    assert list(dest.iterdir()) == [] and not (tmp_path / "escape.txt").exists()


def test_archive_refuses_tar_links(tmp_path: Path) -> None:
    a = tmp_path / "a.tar"
    with tarfile.open(a, "w") as t:
        info = tarfile.TarInfo("top/link")
        info.type = tarfile.SYMTYPE
        info.linkname = "/etc/passwd"
        t.addfile(info)
        data = b"hello"
        info = tarfile.TarInfo("top/x.txt")
        info.size = len(data)
        t.addfile(info, io.BytesIO(data))
    dest = tmp_path / "dest"
    dest.mkdir()
    with pytest.raises(RawDataError, match="link or device"):
        dl.safe_extract(a, dest)
    assert list(dest.iterdir()) == []


def test_archive_strips_top_folder_and_selects_subdir(tmp_path: Path) -> None:
    a = _zip(tmp_path / "t.zip", {"trainingdata/x.npy": b"1", "trainingdata/sub/y.txt": b"2"})
    d = tmp_path / "d1"
    d.mkdir()
    got = dl.safe_extract(a, d)
    assert sorted(p.relative_to(d).as_posix() for p in got) == ["sub/y.txt", "x.npy"]
    assert (d / "x.npy").read_bytes() == b"1"
    rel = _zip(tmp_path / "r.zip", {"unitalker_data_release_V1/D6_unitalker_Chinese_speech/train.json": b"{}",
                                     "unitalker_data_release_V1/D7_unitalker_song/train.json": b"[]"})
    d6 = tmp_path / "d6"
    d6.mkdir()
    dl.safe_extract(rel, d6, "D6_unitalker_Chinese_speech")
    assert [p.name for p in d6.iterdir()] == ["train.json"] and (d6 / "train.json").read_bytes() == b"{}"
    (tmp_path / "junk.zip").write_bytes(b"PK not really")
    with pytest.raises(RawDataError, match="zip or tar|corrupt"):
        dl.safe_extract(tmp_path / "junk.zip", d6)


# --------------------------------------------------------------------------- download_dataset end to end
def _pinned_manifests(tmp_path: Path, raw_tiny: Path, server: Server, ids: list[str]) -> dict[str, str]:
    """A copy of the manifests whose URL files are pinned to the tiny stand-in's resource files, served by
    ``server`` under the same URL paths; returns the mirror mapping."""
    from a2fbench.registry import manifests_dir

    mdir = tmp_path / "manifests"
    shutil.copytree(manifests_dir(), mdir)
    for p in mdir.glob("D*.yaml"):
        doc = yaml.safe_load(p.read_text())
        if doc["id"] not in ids:
            continue
        for src in doc["sources"]:
            for f in src.get("files", []):
                if "url" not in f:
                    continue
                body = (raw_tiny / doc["id"] / f["path"]).read_bytes()
                f["sha256"], f["size"] = hashlib.sha256(body).hexdigest(), len(body)
                server.files[f["url"][len(REAL_PREFIX):]] = body
        p.write_text(yaml.safe_dump(doc, sort_keys=False))
    return {"mdir": str(mdir), REAL_PREFIX: server.base}


def test_download_d0_fetches_guides_and_checks(server: Server, raw_tiny: Path, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    m = _pinned_manifests(tmp_path, raw_tiny, server, ["D0"])
    monkeypatch.setenv("A2FBENCH_MANIFESTS", m.pop("mdir"))
    spec = get_spec("D0")
    raw = tmp_path / "raw"
    lines: list[str] = []
    rep = dl.download_dataset(spec, raw, echo=lines.append, mirror=m, progress=False, backoff=0)
    out = "\n".join(lines)
    assert sorted(rep["fetched"]) == ["BIWI.ply", "regions/fdd.txt", "regions/lve.txt"]
    for f in spec.files():
        if f.url:
            assert sha256_file(raw / "D0" / f.path) == f.sha256
    # manual source: the steps (where to register, what, where to put it) and what is missing
    assert "MANUAL" in out and spec.sources[0].homepage in out and "CodeTalker" in out
    assert f"needed: {raw / 'D0' / 'vertices_npy/*.npy'} (or faces/*/e*) (560 files)" in out  # processed, or raw
    assert len(rep["todo"]) == 3 and rep["structure"] is None
    n_requests = len(server.requests)

    # the user places the files: second run verifies (no refetch), checks structure, records hashes
    for name in ("vertices_npy", "wav"):
        shutil.copytree(raw_tiny / "D0" / name, raw / "D0" / name)
    shutil.copy(raw_tiny / "D0" / "templates.pkl", raw / "D0" / "templates.pkl")
    lines.clear()
    rep = dl.download_dataset(spec, raw, echo=lines.append, mirror=m, progress=False)
    out = "\n".join(lines)
    assert len(server.requests) == n_requests and sorted(rep["verified"]) == ["BIWI.ply", "regions/fdd.txt",
                                                                                "regions/lve.txt"]
    assert rep["todo"] == [] and rep["structure"]["layout"] == "vertices_npy"
    assert rep["structure"]["sequences"] == 16 and rep["structure"]["regions"]["lips"] > 0
    assert "found 16 of 560 files" in out
    rec = json.loads((raw / "D0" / dl.FILES_RECORD).read_text())
    some = sorted((raw / "D0" / "vertices_npy").glob("*.npy"))[0]
    entry = rec["files"][f"vertices_npy/{some.name}"]
    assert entry["sha256"] == sha256_file(some) and entry["status"].startswith("observed")
    assert rec["files"]["regions/lve.txt"]["status"].startswith("verified")

    # a placed file with the wrong structure is refused with one line naming it
    import numpy as np

    np.save(some, np.zeros((10, 99), np.float64))
    with pytest.raises(RawDataError) as e:
        dl.download_dataset(spec, raw, echo=lines.append, mirror=m, progress=False)
    assert some.name in str(e.value) and "70110" in str(e.value)

    # a pinned file that was tampered with is replaced by the verified one
    np.save(some, np.load(raw_tiny / "D0" / "vertices_npy" / some.name))
    (raw / "D0" / "regions" / "lve.txt").write_text("1, 2, 3")
    rep = dl.download_dataset(spec, raw, echo=lines.append, mirror=m, progress=False)
    assert rep["fetched"] == ["regions/lve.txt"]
    assert sha256_file(raw / "D0" / "regions" / "lve.txt") == spec.files()[3].sha256

    # and the downloaded (non-synthetic) folder prepares, with the pinned files verified
    from a2fbench.prepare import prepare_dataset

    card = prepare_dataset(spec, raw, tmp_path / "data", progress=False)
    assert card["synthetic"] is None and {p["status"] for p in card["inputs"]["pinned"]} == {"verified"}


def test_download_wrong_checksum_from_server(server: Server, raw_tiny: Path, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    m = _pinned_manifests(tmp_path, raw_tiny, server, ["D2"])
    monkeypatch.setenv("A2FBENCH_MANIFESTS", m.pop("mdir"))
    spec = get_spec("D2")
    bad = next(f for f in spec.files() if f.path == "forehead_mask.txt")
    server.files[bad.url[len(REAL_PREFIX):]] = b"0.0\n" * 6172  # same kind of file, other bytes
    raw = tmp_path / "raw"
    with pytest.raises(ChecksumMismatch) as e:
        dl.download_dataset(spec, raw, echo=lambda s: None, mirror=m, progress=False, backoff=0)
    assert "forehead_mask.txt" in str(e.value) and "\n" not in str(e.value)
    assert not (raw / "D2" / "forehead_mask.txt").exists()
    assert not [p for p in (raw / "D2").iterdir() if p.name.endswith(".part")]


def test_download_unpacks_a_placed_vocaset_zip(server: Server, raw_tiny: Path, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    m = _pinned_manifests(tmp_path, raw_tiny, server, ["D1"])
    monkeypatch.setenv("A2FBENCH_MANIFESTS", m.pop("mdir"))
    spec = get_spec("D1")
    raw = tmp_path / "raw"
    (raw / "D1").mkdir(parents=True)
    names = ["data_verts.npy", "raw_audio_fixed.pkl", "subj_seq_to_idx.pkl", "templates.pkl"]
    with zipfile.ZipFile(raw / "D1" / "trainingdata.zip", "w") as z:
        for n in names:
            z.write(raw_tiny / "D1" / n, f"trainingdata/{n}")
    rep = dl.download_dataset(spec, raw, echo=lambda s: None, mirror=m, progress=False)
    assert rep["todo"] == [] and rep["structure"]["layout"] == "vocaset_release"
    assert rep["structure"]["sequences"] == 8
    for n in names:
        assert sha256_file(raw / "D1" / n) == sha256_file(raw_tiny / "D1" / n)


def test_download_refuses_a_synthetic_folder(raw_tiny: Path, tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    (raw / "D3").mkdir(parents=True)
    (raw / "D3" / MARKER).write_text("{}")
    with pytest.raises(A2FBenchError, match="synthetic stand-in"):
        dl.download_dataset(get_spec("D3"), raw, echo=lambda s: None, progress=False)


def test_download_cli_prints_steps_and_exit_status(server: Server, raw_tiny: Path, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture) -> None:
    """The command: manual-only datasets print their steps (exit 0); a failing fetch is one line, exit 1."""
    from a2fbench.cli import main

    m = _pinned_manifests(tmp_path, raw_tiny, server, ["D2"])
    monkeypatch.setenv("A2FBENCH_MANIFESTS", m.pop("mdir"))
    monkeypatch.setenv(dl.MIRROR_ENV, f"{REAL_PREFIX}={server.base}")
    monkeypatch.setattr("sys.argv", ["a2fbench", "download", "D6,D2", "--raw", str(tmp_path / "raw")])
    with pytest.raises(SystemExit) as e:
        main()
    out = capsys.readouterr().out
    assert e.value.code == 0
    assert "MANUAL" in out and "1Un7TB0Z5A1CG6bgeqKlhnSOECFN-C6KK" in out and "inhouse_arkit.npz" in out
    assert (tmp_path / "raw" / "D2" / "weighted_mouth_mask.txt").is_file()
    server.files.clear()  # now every fetch 404s
    shutil.rmtree(tmp_path / "raw" / "D2")
    monkeypatch.setattr("sys.argv", ["a2fbench", "download", "D2", "--raw", str(tmp_path / "raw")])
    with pytest.raises(SystemExit) as e:
        main()
    err = capsys.readouterr().err
    assert e.value.code == 1 and "Traceback" not in err
    errs = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert len(errs) == 1 and "HTTP 404" in errs[0]
