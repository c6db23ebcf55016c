"""``a2fbench doctor``: is a downloaded corpus (and a prepared store) whole, before numbers are computed on it?

Raw folder (``RAW/<id>/``): the layout, the files the manifest pins (sha256), every sequence's motion (readable,
not truncated, no frame gap, the right width and dtype, finite) and audio (readable, not empty, its length
against the motion's), half sequences, and the sequences of the standard splits that are absent (those a
public source reports missing from the corpus, the manifest's ``known_missing``, are listed as such).
Prepared store (``DATA/<id>/``): complete and current, each sequence's dtype, width, finiteness and lengths,
the splits, the absent sequences, and the pinned hashes of the inputs it was prepared from.

Levels: ``error`` (``prepare`` refuses it, or the store is damaged), ``warning`` (numbers may differ: audio and
motion apart by more than one frame, sequences of the splits absent), ``note`` (known-missing, dropped).

Takes: a spec, ``RAW`` and/or ``DATA``. Gives: a report ``{dataset, raw, data, ok, counts, findings}``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import numpy as np

from ..errors import A2FBenchError, RawDataError
from ..registry import DatasetSpec, expected_ids, get_space
from ..sources.layouts import LAYOUTS, detect_layout, read
from ..sources.raw import SYNTH_MARKER, RawItem
from ..store import open_dataset
from ..util.constants import SAMPLE_RATE
from ..util.fsutil import sha256_file
from ..util.progress import bar as progress_bar

LEVELS = ("error", "warning", "note")


def _f(level: str, where: str, sid: str, file: object, problem: str, **extra: object) -> dict:
    return {"level": level, "where": where, "id": sid, "file": str(file or ""), "problem": problem, **extra}


def _lengths(spec: DatasetSpec, where: str, sid: str, file: object, n_samples: int, n_frames: int,
             fps: float) -> list[dict]:
    mm = n_samples / SAMPLE_RATE - n_frames / fps
    say = (f"audio {n_samples / SAMPLE_RATE:.3f} s for {n_frames} frames ({n_frames / fps:.3f} s): "
           f"{'longer' if mm > 0 else 'shorter'} by {abs(mm):.3f} s")
    if abs(mm) > spec.filters.max_av_mismatch_s:
        return [_f("error", where, sid, file, f"{say}, over the {spec.filters.max_av_mismatch_s} s prepare accepts "
                   "(filters.max_av_mismatch_s); the audio does not belong to this motion or is cut")]
    if abs(mm) > 1 / fps + 1e-9:
        return [_f("warning", where, sid, file, f"{say}, more than one frame")]
    return []


def _check_motion(spec: DatasetSpec, where: str, sid: str, file: object, m: np.ndarray) -> list[dict]:
    dim = get_space(spec.space).dim
    if m.ndim != 2 or m.shape[1] != dim:
        return [_f("error", where, sid, file, f"motion shaped {m.shape}, expected (T, {dim})")]
    if m.shape[0] == 0:
        return [_f("error", where, sid, file, "no motion frames")]
    if not np.issubdtype(m.dtype, np.floating) or m.dtype.name not in spec.accepted_dtypes:
        return [_f("error", where, sid, file, f"motion dtype {m.dtype}, expected {' or '.join(spec.accepted_dtypes)}")]
    ok = np.isfinite(m).all(axis=1)
    if not ok.all():
        return [_f("error", where, sid, file, f"NaN/inf in motion frame {int(np.argmin(ok))} "
                   f"({int((~ok).sum())} frame(s))")]
    return []


def _check_item(spec: DatasetSpec, it: RawItem) -> list[dict]:
    try:
        m = it.load_motion()
    except RawDataError as e:
        return [_f("error", "raw", it.id, it.files[0], str(e))]
    out = _check_motion(spec, "raw", it.id, it.files[0], m)
    n_frames = int(m.shape[0])
    del m
    if out:
        return out
    try:
        a = it.load_audio()
    except RawDataError as e:
        return [_f("error", "raw", it.id, it.files[-1], str(e))]
    if a.size == 0:
        return [_f("error", "raw", it.id, it.files[-1], "empty audio")]
    if not np.isfinite(a).all():
        return [_f("error", "raw", it.id, it.files[-1], "NaN/inf in the audio")]
    return _lengths(spec, "raw", it.id, it.files[-1], int(a.shape[0]), n_frames, it.fps)


def _absent(spec: DatasetSpec, where: str, present: set[str]) -> list[dict]:
    """One finding per split for the sequences it names that are absent; known-missing ones apart."""
    known = set(spec.known_missing.ids) if spec.known_missing else set()
    by: dict[tuple[str, bool], list[str]] = {}
    expected = expected_ids(spec)
    for sid, split in expected.items():
        if sid not in present:
            by.setdefault((split, sid in known), []).append(sid)
    out = []
    for (split, is_known), ids in by.items():
        n_split = sum(1 for s in expected.values() if s == split)
        head = ", ".join(ids[:6]) + (", ..." if len(ids) > 6 else "")
        if is_known:
            src = spec.known_missing.source if spec.known_missing else ""
            out.append(_f("note", where, "", "", f"split {split}: {len(ids)} known-missing sequence(s) absent "
                          f"({head}); source: {' '.join(src.split())}", ids=ids))
        else:
            out.append(_f("warning", where, "", "", f"split {split}: {len(ids)} of {n_split} sequences absent "
                          f"({head})", ids=ids))
    return out


def _pinned(spec: DatasetSpec, root: Path, synthetic: bool) -> list[dict]:
    out = []
    for f in spec.files():
        if f.is_glob or not f.sha256:
            continue
        p = root / f.path
        if not p.is_file():
            level = "error" if f.required else "note"
            out.append(_f(level, "raw", "", p, f"pinned file absent (sha256 {f.sha256[:12]}...); run `a2fbench "
                          f"download {spec.id}`"))
        elif sha256_file(p) != f.sha256:
            out.append(_f("note" if synthetic else "error", "raw", "", p, "sha256 differs from the pinned one"
                          + (" (a synthetic stand-in's file)" if synthetic else "; the file is corrupt or another "
                             f"version, run `a2fbench download {spec.id}`")))
    return out


def check_raw(spec: DatasetSpec, raw_root: Path, progress: bool = True) -> list[dict]:
    """Findings for ``raw_root/<id>/`` (module doc); reads every sequence, one at a time."""
    root = Path(raw_root) / spec.id
    try:
        layout = detect_layout(root, spec)
    except RawDataError as e:
        return [_f("error", "raw", "", root, str(e))]
    out = _pinned(spec, root, (root / SYNTH_MARKER).is_file())
    mod = LAYOUTS[layout]
    if hasattr(mod, "survey"):
        raw, problems = mod.survey(root, spec)
        out += [_f("error", "raw", p["id"], p["file"], p["problem"]) for p in problems]
    else:
        try:
            raw = read(layout, root, spec)
        except RawDataError as e:
            return out + [_f("error", "raw", "", root, str(e))]
        problems = []
    out += [_f("note", "raw", d["id"], "", f"not read: {d['reason']}") for d in raw.dropped]
    for it in progress_bar(raw.items, desc=f"doctor {spec.id}", unit="seq", show=progress):
        out += _check_item(spec, it)
    present = {i.id for i in raw.items} | {p["id"] for p in problems} | {d["id"] for d in raw.dropped}
    return out + _absent(spec, "raw", present)


def check_store(spec: DatasetSpec, data: Path, progress: bool = True) -> list[dict]:
    """Findings for the prepared store ``data/<id>/`` (module doc)."""
    try:
        ds = open_dataset(data, spec.id)
    except A2FBenchError as e:
        return [_f("error", "store", "", Path(data) / spec.id, str(e))]
    out: list[dict] = []
    try:
        card, fps = ds.card, float(ds.card["fps"])
        where = ds.path / "store.h5"
        for sid in progress_bar(ds.ids, desc=f"doctor {spec.id} store", unit="seq", show=progress):
            seq = ds[sid]
            m = np.asarray(seq.motion)
            found = _check_motion(spec, "store", sid, where, m)
            if not found and m.dtype.name != card.get("dtype"):
                found = [_f("error", "store", sid, where, f"motion dtype {m.dtype}, the card says {card.get('dtype')}")]
            if not found and m.shape[0] != seq.n_frames:
                found = [_f("error", "store", sid, where, f"{m.shape[0]} frames, the store says {seq.n_frames}")]
            del m
            if not found:
                a = np.asarray(seq.audio)
                found = ([_f("error", "store", sid, where, "empty or non-finite audio")]
                         if a.size == 0 or not np.isfinite(a).all() else
                         _lengths(spec, "store", sid, where, int(a.shape[0]), seq.n_frames, fps))
            out += found
        ids = set(ds.ids)
        for name in ds.split_names:
            lost = [s for s in ds.split(name) if s not in ids]
            if lost:
                out.append(_f("error", "store", "", where, f"split {name} names {len(lost)} sequence(s) the store "
                              f"lacks ({', '.join(lost[:6])})", ids=lost))
        dropped = card.get("dropped", [])
        out += [_f("note", "store", d["id"], "", f"dropped by prepare: {d['reason']}") for d in dropped]
        pins = {f.path: f.sha256 for f in spec.files() if f.sha256 and not f.is_glob}
        for rec in card.get("inputs", {}).get("files", []):
            want = pins.get(rec.get("path"))
            if want and rec.get("sha256") != want and not card.get("synthetic"):
                out.append(_f("error", "store", "", rec["path"], f"prepared from a file whose sha256 is not the "
                              f"pinned {want[:12]}...; re-download it and prepare again"))
        out += _absent(spec, "store", ids | {d["id"] for d in dropped})
    finally:
        ds.close()
    return out


def doctor(spec: DatasetSpec, raw: Optional[Path], data: Optional[Path], progress: bool = True) -> dict:
    """The report on one dataset: its raw folder under ``raw`` and/or its store under ``data``."""
    findings = (check_raw(spec, raw, progress) if raw is not None else []) + \
               (check_store(spec, data, progress) if data is not None else [])
    counts = {lv: sum(1 for f in findings if f["level"] == lv) for lv in LEVELS}
    return {"dataset": spec.id, "raw": str(Path(raw) / spec.id) if raw is not None else None,
            "data": str(Path(data) / spec.id) if data is not None else None,
            "ok": counts["error"] == 0, "counts": counts, "findings": findings}


def format_report(rep: dict) -> str:
    """The terminal table of one report."""
    where = " and ".join(x for x in (rep["raw"] and f"raw {rep['raw']}", rep["data"] and f"store {rep['data']}") if x)
    c = rep["counts"]
    lines = [f"{rep['dataset']}  {where}: {c['error']} error(s), {c['warning']} warning(s), {c['note']} note(s)"]
    if rep["findings"]:
        lines.append(f"  {'level':<8} {'where':<6} {'sequence':<16} problem")
    for f in sorted(rep["findings"], key=lambda f: LEVELS.index(f["level"])):
        text = f["problem"] if not f["file"] or f["problem"].startswith(f["file"]) else f"{f['file']}: {f['problem']}"
        lines.append(f"  {f['level']:<8} {f['where']:<6} {f['id'] or '-':<16} {text}")
    return "\n".join(lines)


def to_json(reports: list[dict]) -> str:
    return json.dumps({"reports": reports, "ok": all(r["ok"] for r in reports)}, indent=1)
