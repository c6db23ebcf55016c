"""Unpacking the archives a manifest names (VOCASET ``trainingdata.zip``, the UniTalker release zip) safely:
every member path is checked first and the whole archive is refused if any member would land outside the
target (absolute paths, ``..``, links, devices); files already present are kept.

Takes: a zip or tar file. Gives: the files written under the target folder."""

from __future__ import annotations

import os
import shutil
import tarfile
import zipfile
from pathlib import Path, PurePosixPath
from typing import Optional

from ..errors import RawDataError
from ..registry import Archive
from ..util.progress import bar as progress_bar


def _member_target(name: str, subdir: Optional[str], strip_top: Optional[str]) -> Optional[PurePosixPath]:
    parts = [p for p in PurePosixPath(name.replace("\\", "/")).parts if p not in ("", ".")]
    if subdir is not None:
        if subdir not in parts:
            return None
        parts = parts[parts.index(subdir) + 1:]
    elif strip_top is not None and parts and parts[0] == strip_top:
        parts = parts[1:]
    return PurePosixPath(*parts) if parts else None


def _unsafe(name: str) -> bool:
    n = name.replace("\\", "/")
    return n.startswith("/") or (len(n) > 1 and n[1] == ":") or ".." in PurePosixPath(n).parts


def safe_extract(archive: Path, dest: Path, subdir: Optional[str] = None) -> list[Path]:
    """Unpack ``archive`` (zip or tar) into ``dest`` and return the files written.

    With ``subdir``, only members below a folder of that name are taken (the prefix up to it dropped);
    otherwise a single top-level folder shared by every member is stripped. Every member is checked before
    anything is written, and the whole archive is refused (:class:`RawDataError`, nothing written) when a
    member's path is absolute or climbs out with ``..``, or a member is a link or a device. Files already
    present in ``dest`` are kept, not overwritten.
    """
    dest = Path(dest)
    is_zip = zipfile.is_zipfile(archive)
    if not is_zip and not tarfile.is_tarfile(archive):
        raise RawDataError(f"{archive}: expected a zip or tar archive, found neither; re-download it")
    try:
        if is_zip:
            zf = zipfile.ZipFile(archive)
            entries = [(i.filename, i.is_dir(), (i.external_attr >> 16) & 0o170000 not in (0, 0o100000, 0o040000))
                       for i in zf.infolist()]
        else:
            tf = tarfile.open(archive)
            entries = [(m.name, m.isdir(), not (m.isfile() or m.isdir())) for m in tf.getmembers()]
    except (zipfile.BadZipFile, tarfile.TarError, OSError, EOFError) as e:
        raise RawDataError(f"{archive}: expected a readable archive, found a corrupt one ({e}); re-download it") from None
    for name, _isdir, special in entries:
        if _unsafe(name):
            raise RawDataError(f"{archive}: expected member paths inside the target, found {name!r}; refusing the "
                               "archive (it may be malicious)")
        if special:
            raise RawDataError(f"{archive}: expected plain files and folders, found the link or device {name!r}; "
                               "refusing the archive")
    strip_top = None
    if subdir is None:
        tops = {PurePosixPath(n.replace("\\", "/")).parts[0] for n, _d, _s in entries if n.strip("/")}
        if len(tops) == 1 and any(len(PurePosixPath(n).parts) > 1 for n, _d, _s in entries):
            strip_top = next(iter(tops))
    plan: list[tuple[str, PurePosixPath]] = []
    for name, isdir, _s in entries:
        t = _member_target(name, subdir, strip_top)
        if t is not None and not isdir:
            plan.append((name, t))
    if not plan:
        raise RawDataError(f"{archive}: expected files{f' below a folder {subdir!r}' if subdir else ''}, found none; "
                           "check that this is the right archive")
    root = dest.resolve()
    written: list[Path] = []
    tmp = dest / f".unpack-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        for name, t in progress_bar(plan, desc=f"unpack {archive.name}", unit="file", leave=False):
            out = tmp / Path(*t.parts)
            if not out.resolve().is_relative_to(tmp.resolve()):  # belt and braces after the name checks
                raise RawDataError(f"{archive}: member {name!r} would land outside {dest}; refusing the archive")
            out.parent.mkdir(parents=True, exist_ok=True)
            src = zf.open(name) if is_zip else tf.extractfile(name)
            if src is None:
                continue
            with src, open(out, "wb") as fh:
                shutil.copyfileobj(src, fh, 1 << 20)
        for name, t in plan:
            src_p, final = tmp / Path(*t.parts), dest / Path(*t.parts)
            if not src_p.exists() or final.exists():
                continue
            if not final.resolve().is_relative_to(root):
                raise RawDataError(f"{archive}: member {name!r} would land outside {dest}; refusing the archive")
            final.parent.mkdir(parents=True, exist_ok=True)
            os.replace(src_p, final)
            written.append(final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        (zf if is_zip else tf).close()
    return written


def find_archive(a: Archive, root: Path) -> Optional[Path]:
    for cand in (root / a.file, root.parent / a.file):
        if cand.is_file():
            return cand
    return None
