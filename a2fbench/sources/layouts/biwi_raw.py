"""Layout ``biwi_raw``: the BIWI B3D(AC)^2 corpus as its authors ship it, processed without MATLAB:
``rigid_scans/<subj>.obj`` (templates), ``faces/<subj>/<eNN>`` (each take an extracted folder, ``.tar``,
``.tgz`` or ``.tar.gz`` of ``frame_NNN.vl``), ``videos/<subj>_<eNN>.flv`` (the audio).

Only the emotional takes e01-e40 are read (CodeTalker's ``creatDataset_BIWI.m`` loops ``e01``..``e40``); other
takes are listed as dropped. Motion, templates and audio are processed as CodeTalker's recipe does
(:mod:`a2fbench.sources.biwi`, :func:`a2fbench.sources.audio.read_video_audio`).

Takes: a raw folder (or, for the stand-in, a generator and sequence plans). Gives: :class:`RawData` (``read``;
``survey`` lists every problem instead of stopping at the first, for ``a2fbench doctor``), the files in this
layout (``write``).
"""

from __future__ import annotations

import io
import re
import tarfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Optional

import numpy as np

from ...errors import RawDataError
from ...registry import DatasetSpec
from ..audio import read_video_audio
from ..biwi import N_VERTICES, process_frames, read_take_frames, read_template, take_name, take_path
from ..raw import RawData, RawItem

NAME = "biwi_raw"
#: the layout of a corpus as its authors ship it (``a2fbench synth --layout raw``)
RAW_CORPUS = True
_EMOTIONAL = re.compile(r"^e(\d{2})$")
_VIDEO = re.compile(r"^(?P<subject>[^_]+)_(?P<take>[^.]+)\.flv$")


def detect(root: Path, spec: DatasetSpec) -> bool:
    return (root / "faces").is_dir() and (root / "rigid_scans").is_dir()


def _emotional(take: str) -> bool:
    m = _EMOTIONAL.match(take)
    return bool(m) and 1 <= int(m.group(1)) <= 40


def survey(root: Path, spec: DatasetSpec) -> tuple[RawData, list[dict]]:
    """Read the corpus's structure; every problem found becomes ``{"id", "file", "problem"}`` instead of an
    error. Items are made for complete takes only (frames and video); they read their data when called."""
    problems: list[dict] = []
    faces_dir, videos_dir, scans = root / "faces", root / "videos", root / "rigid_scans"
    takes: dict[str, Path] = {}
    videos: dict[str, Path] = {}
    for sdir in sorted(p for p in faces_dir.iterdir() if p.is_dir()) if faces_dir.is_dir() else []:
        for p in sorted(sdir.iterdir()):
            t = take_name(p)
            if t is not None and f"{sdir.name}_{t}" not in takes:
                takes[f"{sdir.name}_{t}"] = take_path(sdir, t) or p
    for p in sorted(videos_dir.glob("*.flv")) if videos_dir.is_dir() else []:
        m = _VIDEO.match(p.name)
        if m:
            videos[f"{m['subject']}_{m['take']}"] = p
    dropped, items, inputs = [], [], []
    templates: dict[str, np.ndarray] = {}
    faces_of: dict[str, np.ndarray] = {}
    bad_subjects: set[str] = set()
    for sid in sorted(set(takes) | set(videos)):
        subj, take = sid.split("_", 1)
        if not _emotional(take) or spec.parse_name(sid) is None:
            why = ("not an emotional take e01-e40 (CodeTalker creatDataset_BIWI.m reads e01..e40 only)"
                   if spec.parse_name(f"{subj}_e01") else f"subject {subj!r} is not a BIWI subject")
            dropped.append({"id": sid, "reason": why})
            continue
        if sid not in takes or sid not in videos:
            have, lack = (takes[sid], f"videos/{sid}.flv") if sid in takes else \
                (videos[sid], f"faces/{subj}/{take} (a folder, .tar or .tgz of frame_NNN.vl)")
            problems.append({"id": sid, "file": str(have), "problem": f"half a take: {lack} is missing (found "
                             f"{have.relative_to(root)}); restore it, or move the rest of {sid} away"})
            continue
        if subj not in faces_of and subj not in bad_subjects:
            obj = scans / f"{subj}.obj"
            try:
                if not obj.is_file():
                    raise RawDataError(f"{obj}: expected the template of subject {subj}, found nothing; restore "
                                       "rigid_scans/ from the corpus")
                tpl, faces_of[subj] = read_template(obj)
                templates[subj] = tpl.reshape(-1)
                inputs.append(obj)
            except RawDataError as e:
                bad_subjects.add(subj)
                problems.append({"id": subj, "file": str(obj), "problem": str(e)})
        if subj not in faces_of:
            continue
        src, vid = takes[sid], videos[sid]
        own = (sorted(src.rglob("*.vl")) if src.is_dir() else [src]) + [vid]
        digests: dict[Path, str] = {}  # the loaders hash what they read (prepare records it; no second read)
        items.append(RawItem(sid, subj, spec.fps_native,
                             lambda s=src, f=faces_of[subj], d=digests: load_take_motion(s, f, d),
                             lambda v=vid, d=digests: read_video_audio(v, digests=d), [src, vid],
                             hashed=own, digests=digests))
        inputs += own
    if not items and not problems:
        problems.append({"id": "", "file": str(faces_dir), "problem": "expected takes faces/<subj>/eNN(.tar|.tgz) "
                         "with videos/<subj>_eNN.flv, found none"})
    return RawData(NAME, items, templates, inputs, dropped), problems


def read(root: Path, spec: DatasetSpec) -> RawData:
    """The raw BIWI corpus (module doc); the first structural problem is an error naming its file."""
    raw, problems = survey(root, spec)
    if problems:
        p = problems[0]
        more = f" ({len(problems) - 1} more problem(s))" if len(problems) > 1 else ""
        msg = p["problem"] if p["problem"].startswith(p["file"]) else f"{p['file']}: {p['problem']}"
        raise RawDataError(f"{msg}{more}; run `a2fbench doctor {spec.id} --raw {root.parent}` for the full list")
    return raw


def load_take_motion(src: Path, faces: np.ndarray, digests: Optional[dict[Path, str]] = None) -> np.ndarray:
    """One take as (T, 3N) float64, processed as CodeTalker does (:func:`a2fbench.sources.biwi.process_frames`),
    straight from the float32 views of the bytes read into the float64 result (no other copy of the take)."""
    with ThreadPoolExecutor(1) as hasher:  # the take's sha256 runs while its frames are processed
        frames = read_take_frames(src, digests=digests, hasher=hasher)
        out = np.empty((len(frames), N_VERTICES, 3), np.float64)
        process_frames(frames, faces, out)
    return out.reshape(len(frames), -1)


# ------------------------------------------------------------------------------------------- stand-in
#: millimetres per stand-in unit and the head's place in the scanner (raw BIWI frames are in mm, about 1 m
#: from the camera); rotx(pi) is its own inverse, so writing applies it too
_MM, _AT = 160.0, np.array([0.0, 0.0, 900.0])


def _to_raw(P: np.ndarray) -> np.ndarray:
    return (P * np.array([1.0, -1.0, -1.0])) * _MM + _AT


def vl_bytes(P: np.ndarray) -> bytes:
    """One ``.vl`` frame: a 4-byte count, then the vertices as float32 xyz."""
    P = np.ascontiguousarray(P, "<f4")
    return len(P).to_bytes(4, "little") + P.tobytes()


def write_obj(path: Path, V: np.ndarray, faces: np.ndarray) -> None:
    """A textured OBJ as the corpus ships templates: ``v``, ``vt``, ``f v/vt`` (1-based)."""
    with open(path, "w") as fh:
        fh.write("# a2fbench stand-in rigid scan template\n")
        fh.writelines(f"v {x:.6f} {y:.6f} {z:.6f}\n" for x, y, z in V)
        fh.writelines(f"vt {u:.6f} {v:.6f}\n" for u, v in (V[:, :2] - V[:, :2].min(0)) / np.ptp(V[:, :2], 0))
        fh.writelines(f"f {a}/{a} {b}/{b} {c}/{c}\n" for a, b, c in faces + 1)


def write_flv(path: Path, audio: np.ndarray, sr: int) -> None:
    """An audio-only FLV (AAC) holding ``audio``; the real videos also hold the rendered face."""
    import av

    x = np.asarray(audio, np.float32)
    with av.open(str(path), "w", format="flv") as c:
        st = c.add_stream("aac", rate=sr)
        st.layout = "mono"
        for i in range(0, len(x), 1024):
            fr = av.AudioFrame.from_ndarray(x[None, i: i + 1024], format="flt", layout="mono")
            fr.sample_rate, fr.pts = sr, i
            for pkt in st.encode(fr):
                c.mux(pkt)
        for pkt in st.encode(None):
            c.mux(pkt)


def write(gen: Any, root: Path, plans: list, bar: Any) -> None:
    """The stand-in in the corpus's layout: each take a ``.tar`` of ``eNN/frame_NNN.vl`` (float32, mm, the
    raw orientation), ``rigid_scans/<subj>.obj`` and ``videos/<subj>_<eNN>.flv`` (AAC)."""
    for d in ("faces", "videos", "rigid_scans"):
        (root / d).mkdir(parents=True, exist_ok=True)
    faces = np.asarray(gen.face.faces, np.int64)
    if gen.space.n_vertices != N_VERTICES:
        raise RawDataError(f"the BIWI raw layout needs the {N_VERTICES}-vertex space, found {gen.space.n_vertices}")
    for subj in sorted({p.subject for p in plans}):
        write_obj(root / "rigid_scans" / f"{subj}.obj", _to_raw(gen.template(subj)), faces)
    for p in plans:
        subj, take = p.id.split("_", 1)
        audio, coefs, _ = gen.sequence(p)
        m = gen.vertices(p, coefs).reshape(-1, N_VERTICES, 3)
        (root / "faces" / subj).mkdir(exist_ok=True)
        with tarfile.open(root / "faces" / subj / f"{take}.tar", "w", format=tarfile.USTAR_FORMAT) as tf:
            for k, P in enumerate(m, 1):
                b = vl_bytes(_to_raw(P))
                ti = tarfile.TarInfo(f"{take}/frame_{k:03d}.vl")
                ti.size, ti.mtime = len(b), 0
                tf.addfile(ti, io.BytesIO(b))
        write_flv(root / "videos" / f"{p.id}.flv", audio, gen.spec.synth.audio_rate)
        bar.update(1)
