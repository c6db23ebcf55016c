"""``a2fbench download``: fetch the URL sources of a dataset, guide and check its manual sources.

URL sources (files with ``url`` + ``sha256`` in the manifest) are fetched to a hidden partial file beside the
target (``.<name>.<sha12>.part``) with a progress bar. A dropped connection is retried with an HTTP ``Range``
request that resumes from the bytes already on disk (and a later run resumes the same way); the file is
renamed into place only after its size and sha256 match the manifest, so a corrupt or half-fetched file never
takes the published name. A file already in place whose sha256 matches is left alone.

Manual (licence-gated) sources are never fetched: their steps (where to register, what to download, where to
put it) are printed, and the files the user placed are checked: presence and counts, the sha256 where the
manifest pins one, and otherwise the structure (``sources.layouts.check_structure``: layout, names, pairing,
templates, and every motion and audio header). Where the true checksum is unknown none is invented: the
observed size and sha256 of every file are recorded in ``RAW/<id>/.a2fbench-files.json``, so a later change
to a file is visible. An archive the manifest names (VOCASET ``trainingdata.zip``, the UniTalker release zip)
is unpacked when the files it holds are missing; every member path is checked first and the whole archive is
refused if any member would land outside the target (absolute paths, ``..``, links, devices).

Tests and mirrors redirect URLs with ``mirror={prefix: replacement}`` or the environment variable
``A2FBENCH_MIRROR="https://raw.githubusercontent.com/=http://127.0.0.1:8000/"`` (several separated by ``;``).
"""

from __future__ import annotations

import http.client
import os
import time
from pathlib import Path
from typing import Callable, Iterable, Optional
from urllib.error import HTTPError, URLError
from urllib.request import Request, urlopen

from .. import __version__
from ..errors import A2FBenchError, ChecksumMismatch, DownloadError
from ..registry import DatasetSpec, FileEntry, Source
from ..util.fsutil import read_json, sha256_file, write_json
from ..util.progress import bar as progress_bar
from .archives import find_archive, safe_extract
from .layouts import check_structure
from .raw import SYNTH_MARKER

MIRROR_ENV = "A2FBENCH_MIRROR"
FILES_RECORD = ".a2fbench-files.json"
_CHUNK = 1 << 16
Echo = Callable[[str], None]


# ------------------------------------------------------------------------------------------------ URLs
def parse_mirror(text: Optional[str]) -> dict[str, str]:
    """``"PREFIX=REPLACEMENT;PREFIX2=REPLACEMENT2"`` -> {prefix: replacement}."""
    out: dict[str, str] = {}
    for part in (text or "").split(";"):
        part = part.strip()
        if not part:
            continue
        if "=" not in part:
            raise A2FBenchError(f"{MIRROR_ENV}: expected PREFIX=REPLACEMENT entries separated by ';', found {part!r}")
        a, b = part.split("=", 1)
        out[a.strip()] = b.strip()
    return out


def rewrite_url(url: str, mirror: Optional[dict[str, str]] = None) -> str:
    """Apply the longest matching mirror prefix (``mirror`` or, when None, ``$A2FBENCH_MIRROR``)."""
    m = parse_mirror(os.environ.get(MIRROR_ENV)) if mirror is None else mirror
    best = max((p for p in m if url.startswith(p)), key=len, default=None)
    return url if best is None else m[best] + url[len(best):]


def part_path(dest: Path, sha256: str) -> Path:
    """The partial file a fetch of ``dest`` resumes from (named after the expected hash, so a manifest
    change never resumes a stale partial)."""
    return dest.with_name(f".{dest.name}.{sha256[:12]}.part")


def fetch(url: str, dest: Path, sha256: str, size: Optional[int] = None, *, verify: bool = True, retries: int = 3,
          timeout: float = 30.0, backoff: float = 1.0, progress: bool = True, echo: Optional[Echo] = None) -> Path:
    """Download ``url`` to ``dest``: resumable (Range), size- and sha256-checked, renamed into place when verified.

    Raises :class:`DownloadError` when the server cannot be reached or keeps dropping the connection (the
    partial file is kept: run again to resume) and :class:`ChecksumMismatch` when the bytes are not the
    published file (the partial file is deleted).
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = part_path(dest, sha256)
    last_err = ""
    for attempt in range(retries + 1):
        have = part.stat().st_size if part.exists() else 0
        if size is not None and have > size:
            part.unlink()
            have = 0
        if size is not None and have == size:
            break
        try:
            if _fetch_once(url, part, have, size, timeout, progress, dest.name):
                break
        except _Retry as e:
            last_err = str(e)
        if attempt < retries:
            time.sleep(backoff * (2 ** attempt))
    else:
        kept = part.stat().st_size if part.exists() else 0
        raise DownloadError(f"{url}: expected {size if size is not None else 'the whole file'} bytes, found the "
                            f"connection failing ({last_err}); kept {kept} bytes in {part.name}: run the same "
                            "command again to resume")
    got_size = part.stat().st_size
    if size is not None and got_size != size:
        part.unlink()
        raise ChecksumMismatch(f"{url}: expected {size} bytes, found {got_size}; the server sent a different file; "
                               "check the URL or your mirror")
    if verify:
        got = sha256_file(part)
        if got != sha256:
            part.unlink()
            raise ChecksumMismatch(f"{url}: expected sha256 {sha256}, found {got}; the server sent a different or "
                                   "corrupt file (deleted); check the URL or your mirror and retry")
    os.replace(part, dest)
    if echo:
        echo(f"  fetched   {dest}{'' if verify else ' (sha256 not checked)'}")
    return dest


class _Retry(Exception):
    pass


def _fetch_once(url: str, part: Path, have: int, size: Optional[int], timeout: float, progress: bool,
                label: str) -> bool:
    """One request; True when the file is complete, raises _Retry on a recoverable failure."""
    headers = {"User-Agent": f"a2fbench/{__version__}"}
    if have:
        headers["Range"] = f"bytes={have}-"
    try:
        r = urlopen(Request(url, headers=headers), timeout=timeout)
    except HTTPError as e:
        if e.code == 416 and have:  # nothing left to send: the partial file is whole (verified next)
            return True
        if 500 <= e.code < 600 or e.code == 429:
            raise _Retry(f"HTTP {e.code}") from None
        raise DownloadError(f"{url}: expected the file, found HTTP {e.code} {e.reason}; check the URL (or "
                            f"${MIRROR_ENV}) and your network") from None
    except (URLError, OSError, http.client.HTTPException) as e:
        raise _Retry(f"{type(e).__name__}: {getattr(e, 'reason', e)}") from None
    with r:
        start = 0
        if have and r.status == 206:
            cr = r.headers.get("Content-Range", "")
            try:
                start = int(cr.split()[1].split("-")[0])
            except (IndexError, ValueError):
                start = -1
            if start != have:  # a range we did not ask for: start over
                part.unlink(missing_ok=True)
                raise _Retry(f"server answered Content-Range {cr!r} to a resume from byte {have}")
        else:
            have = 0  # 200: the server ignored Range (or nothing to resume): write from scratch
        length = r.headers.get("Content-Length")
        expect = int(length) if length is not None else None
        total = have + expect if expect is not None else size
        got = 0
        with open(part, "ab" if have else "wb") as f, \
                progress_bar(total=total, initial=have, unit="B", unit_scale=True, unit_divisor=1024, desc=label,
                     show=progress, leave=False) as bar:
            while True:
                try:
                    chunk = r.read(_CHUNK)
                except (OSError, http.client.HTTPException) as e:
                    raise _Retry(f"{type(e).__name__} after {have + got} bytes") from None
                if not chunk:
                    break
                f.write(chunk)
                got += len(chunk)
                bar.update(len(chunk))
        if expect is not None and got < expect:
            raise _Retry(f"connection closed after {have + got} of {have + expect} bytes")
    return True


# -------------------------------------------------------------------------------------- manual sources
def _matches(root: Path, f: FileEntry) -> list[Path]:
    out: list[Path] = []
    for pat in (f.path, *f.alternatives):
        if any(c in pat for c in "*?["):
            out += sorted(p for p in root.glob(pat) if p.is_file() and not p.name.startswith("."))
        elif (root / pat).is_file():
            out.append(root / pat)
    return out


def _hash_files(root: Path, files: Iterable[Path], previous: dict, progress: bool) -> dict[str, dict]:
    """{relative path: {size, sha256}}, reusing the previous record for files whose size and mtime are unchanged."""
    out = {}
    files = sorted(set(files))
    for p in progress_bar(files, desc="sha256", unit="file", show=progress and len(files) >= 2, leave=False):
        rel = str(p.relative_to(root))
        st = p.stat()
        prev = previous.get(rel, {})
        if prev.get("size") == st.st_size and prev.get("mtime_ns") == st.st_mtime_ns and prev.get("sha256"):
            out[rel] = prev
        else:
            out[rel] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": sha256_file(p)}
    return out


def manual_steps(spec: DatasetSpec, src: Source, root: Path, missing: list[FileEntry]) -> list[str]:
    """The lines that tell a user how to obtain a manual source."""
    lines = [f"  MANUAL    {src.name} (licence: {src.licence})"]
    if src.homepage:
        lines.append(f"            where:  {src.homepage}")
    lines.append(f"            steps:  {src.instructions}")
    if src.archive:
        lines.append(f"            or put {src.archive.file} in {root} or {root.parent}: the next `a2fbench download "
                     f"{spec.id}` unpacks it")
    for f in missing:
        alt = f" (or {', '.join(f.alternatives)})" if f.alternatives else ""
        cnt = f" ({f.count} files)" if f.count else ""
        lines.append(f"            needed: {root / f.path}{alt}{cnt}{'' if f.required else ' [optional]'}")
    return lines


# ---------------------------------------------------------------------------------------------- driver
def download_dataset(spec: DatasetSpec, raw: str | os.PathLike, *, verify: bool = True, echo: Echo = print,
                     mirror: Optional[dict[str, str]] = None, retries: int = 3, timeout: float = 30.0,
                     backoff: float = 1.0, progress: bool = True) -> dict:
    """Fetch and check everything the manifest of ``spec`` lists under ``RAW/<id>/`` (see module doc).

    Returns a report {"fetched", "verified", "todo", "structure", "files"}. Raises an
    :class:`A2FBenchError` for a fetch that fails, a checksum mismatch, a refused archive or placed files
    that fail their checks; missing manual files are not an error (their steps are printed, and listed
    under ``todo``).
    """

    root = Path(raw) / spec.id
    if (root / SYNTH_MARKER).is_file():
        raise A2FBenchError(f"{root}: expected a folder for the real {spec.id} files, found a synthetic stand-in "
                            f"(written by `a2fbench synth`); download into another --raw or delete {root}")
    root.mkdir(parents=True, exist_ok=True)
    record_path = root / FILES_RECORD
    try:
        previous = read_json(record_path, what="the download record").get("files", {}) if record_path.is_file() else {}
    except (OSError, AttributeError, A2FBenchError):  # the record only saves re-hashing: rebuilt when unusable
        previous = {}
    report: dict = {"fetched": [], "verified": [], "todo": [], "structure": None, "files": {}}
    echo(f"{spec.id}  {spec.name} -> {root}")
    status: dict[str, str] = {}
    all_manual_present = True
    placed: list[Path] = []
    for src in spec.sources:
        if src.kind == "url":
            for f in src.files:
                assert f.url and f.sha256  # the schema guarantees both
                dest = root / f.path
                if dest.is_file():
                    if not verify:
                        status[f.path] = "present (sha256 not checked)"
                        echo(f"  present   {dest} (sha256 not checked)")
                        continue
                    got = sha256_file(dest)
                    if got == f.sha256:
                        status[f.path] = "verified"
                        report["verified"].append(f.path)
                        echo(f"  verified  {dest}")
                        continue
                    echo(f"  replacing {dest}: sha256 {got[:12]}... is not the pinned {f.sha256[:12]}...")
                fetch(rewrite_url(f.url, mirror), dest, f.sha256, f.size, verify=verify, retries=retries,
                      timeout=timeout, backoff=backoff, progress=progress, echo=echo)
                status[f.path] = "verified" if verify else "fetched (sha256 not checked)"
                report["fetched"].append(f.path)
            for f in src.files:
                if status.get(f.path) == "verified":
                    st = (root / f.path).stat()
                    report["files"][f.path] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": f.sha256,
                                               "status": "verified (pinned sha256)"}
            continue
        missing = [f for f in src.files if f.required and not _matches(root, f)]
        if missing and src.archive:
            arch = find_archive(src.archive, root)
            if arch is not None:
                echo(f"  unpacking {arch} into {root}")
                safe_extract(arch, root, src.archive.subdir)
                missing = [f for f in src.files if f.required and not _matches(root, f)]
        for f in src.files:
            found = _matches(root, f)
            placed += found
            if f.sha256 and verify:
                for p in found:
                    got = sha256_file(p)
                    if got != f.sha256:
                        raise ChecksumMismatch(f"{p}: expected sha256 {f.sha256}, found {got}; the file is corrupt or "
                                               "another version; obtain it again (see `a2fbench info "
                                               f"{spec.id}`)")
            if not found:
                status[f.path] = "missing" if f.required else "absent (optional)"
            elif f.count and len(found) < f.count:
                status[f.path] = f"{len(found)} of {f.count} files"
                echo(f"  note      {root / f.path}: found {len(found)} of {f.count} files ({f.note or 'incomplete?'})")
            else:
                status[f.path] = "present" + (" (sha256 verified)" if f.sha256 and verify else "")
        if missing:
            all_manual_present = False
            report["todo"] += [str(root / f.path) for f in missing]
            for line in manual_steps(spec, src, root, missing):
                echo(line)
        else:
            echo(f"  placed    {src.name}: all expected files present")
    if placed and verify:
        hashed = _hash_files(root, placed, previous, progress)
        pinned = {f.path for s in spec.sources for f in s.files if f.sha256}
        for rel, h in hashed.items():
            h["status"] = "verified (pinned sha256)" if rel in pinned else "observed (no published checksum)"
        report["files"].update(hashed)
    if all_manual_present and any(s.kind == "manual" for s in spec.sources):
        report["structure"] = check_structure(root, spec, progress=progress)
        st = report["structure"]
        echo(f"  checked   layout {st['layout']}: {st['sequences']} sequences of {st['subjects']} subjects; "
             f"motion shapes/dtypes and audio headers OK"
             + (f"; {len(st['dropped'])} files match no sequence name (ignored by prepare)" if st["dropped"] else ""))
    write_json(record_path, {"dataset": spec.id, "manifest_version": spec.version, "a2fbench_version": __version__,
                             "status": status, "files": report["files"],
                             "structure": report["structure"], "checked": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                                                         time.gmtime())})
    if report["todo"]:
        echo(f"  TO DO     {len(report['todo'])} manual file(s) above; then run `a2fbench download {spec.id}` again "
             "to check them")
    return report
