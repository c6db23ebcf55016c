"""The prepare pipeline for one dataset and for several in parallel: layout, pinned checksums, sequences,
templates, regions, splits, card, rename into place (see :mod:`a2fbench.prepare`)."""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import shutil
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Optional

import numpy as np

from .. import __version__
from ..errors import A2FBenchError, ChecksumMismatch, RawDataError, StoreError
from ..registry import DatasetSpec, assign_splits, get_space, get_spec
from ..sources.layouts import detect_layout, read
from ..sources.meshes import read_mesh
from ..sources.raw import SYNTH_MARKER, RawData, RawItem
from ..sources.regions import RegionFileMissing, load_region, region_path
from ..spaces import n_vertices as space_n_vertices
from ..spaces import read_space_files
from ..store import CARD_FILE, STORE_FORMAT, StoreWriter, incomplete_dir, store_dir
from ..util.constants import SAMPLE_RATE
from ..util.fsutil import read_json, sha256_file
from ..util.progress import bar as progress_bar
from .motion import av_mismatch, resample_motion

log = logging.getLogger("a2fbench.prepare")


# -------------------------------------------------------------------------------------------- checksums
def verify_pinned_files(spec: DatasetSpec, root: Path, synthetic: bool) -> list[dict]:
    """Check every URL-sourced file the manifest pins: present (if required) and matching sha256.

    Synthetic stand-ins hold stand-in resources: their hashes are recorded, not compared.
    """
    report = []
    for src in spec.sources:
        for f in src.files:
            if f.is_glob or not f.sha256:
                continue
            p = root / f.path
            if not p.is_file():
                if f.required:
                    raise RawDataError(f"{p}: expected {f.path} (sha256 {f.sha256[:12]}...), found nothing; run "
                                       f"`a2fbench download {spec.id} --raw {root.parent}`")
                report.append({"path": f.path, "status": "absent (optional)"})
                continue
            got = sha256_file(p)
            if got != f.sha256 and not synthetic:
                raise ChecksumMismatch(f"{p}: expected sha256 {f.sha256}, found {got}; the file is corrupt or a "
                                       f"different version; delete it and run `a2fbench download {spec.id}`")
            report.append({"path": f.path, "sha256": got,
                           "status": "verified" if got == f.sha256 else "synthetic stand-in (not the published file)"})
    return report


def _plan_fingerprint(spec: DatasetSpec, raw: RawData, root: Path) -> str:
    h = hashlib.sha256()
    h.update(json.dumps([STORE_FORMAT, spec.id, spec.version, raw.layout, spec.fps, SAMPLE_RATE,
                         spec.filters.model_dump()]).encode())
    for p in sorted(set(raw.inputs)):
        st = p.stat()
        h.update(f"{p.relative_to(root)}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()


# ------------------------------------------------------------------------------------------------- main
def prepare_dataset(spec: DatasetSpec, raw_root: str | os.PathLike, data: str | os.PathLike, *,
                    progress: bool = True, position: int = 0) -> dict:
    """Prepare one dataset (see module doc); returns its card."""
    root = Path(raw_root) / spec.id
    work = incomplete_dir(data, spec)
    t0 = time.time()
    try:
        card = _prepare(spec, root, Path(data), work, progress, position)
    except A2FBenchError:
        shutil.rmtree(work, ignore_errors=True)
        raise
    except (KeyboardInterrupt, SystemExit):
        log.warning("%s: interrupted; rerun the same command to resume from %s", spec.id, work)
        raise
    except OSError as e:
        shutil.rmtree(work, ignore_errors=True)
        if e.errno == errno.ENOSPC or "No space left" in str(e):
            raise StoreError(f"{data}: expected free disk for the {spec.id} store, found the disk full; free space "
                             f"(or use another --out) and run `a2fbench prepare {spec.id}` again") from None
        raise
    except Exception:
        shutil.rmtree(work, ignore_errors=True)
        raise
    log.info("%s: prepared %d sequences in %.1f s", spec.id, card["stats"]["n_sequences"], time.time() - t0)
    return card


def _region_file_entry(root: Path, src: Any) -> dict:
    """The file a region was read from (relative to the raw folder) and its sha256, as the card records it."""
    p = region_path(root, src)
    entry = {"file": p.relative_to(root).as_posix(), "format": src.format}
    if p.is_file():
        entry["sha256"] = sha256_file(p)
    return entry


def _prepare(spec: DatasetSpec, root: Path, data: Path, work: Path, progress: bool, position: int) -> dict:
    layout = detect_layout(root, spec)
    marker = root / SYNTH_MARKER
    synthetic = read_json(marker, what="the stand-in marker `a2fbench synth` wrote", error=RawDataError) \
        if marker.is_file() else None
    pinned = verify_pinned_files(spec, root, synthetic is not None)
    raw = read(layout, root, spec)
    _check_unique(raw, root)
    space = get_space(spec.space)
    space_arrays = read_space_files(space, root)
    n_v = space_n_vertices(space, space_arrays)
    regions, region_notes, region_files = {}, {}, {}
    for name, rs in spec.regions.sets.items():
        try:
            regions[name] = {w: load_region(root, getattr(rs, w), n_v, space_arrays, spec) for w in ("lips", "upper")}
        except RegionFileMissing as e:  # an optional set without its files; files present but wrong are errors
            if name == spec.regions.default:
                raise
            region_notes[name] = f"not available: {e}"
            log.info("%s: region set %r skipped (%s)", spec.id, name, e)
            continue
        region_files[name] = {w: _region_file_entry(root, getattr(rs, w)) for w in ("lips", "upper")}
    splits, unassigned, split_source = assign_splits(spec, raw.items)
    keep = {sid for ids in splits.values() for sid in ids}
    dropped = list(raw.dropped) + unassigned
    for d in dropped:
        log.info("%s: dropped %s: %s", spec.id, d["id"], d["reason"])

    # hash inputs in a background thread while sequences are processed (hashlib releases the GIL), except the
    # files the kept items' loaders hash from the bytes they read anyway (RawItem.hashed): not read twice
    inputs = sorted(set(raw.inputs))
    own = {p: it for it in raw.items if it.id in keep for p in it.hashed}
    rest = [p for p in inputs if p not in own]
    pool = ThreadPoolExecutor(max_workers=1)
    hashes = pool.map(sha256_file, rest)

    _check_free_disk(spec, inputs, data, work)
    writer = StoreWriter(work, _plan_fingerprint(spec, raw, root))
    try:
        items = [i for i in raw.items if i.id in keep]
        train = set(splits.get("train", ()))  # the minimum length applies to training clips only
        dtype: Optional[np.dtype] = writer.dtype()  # one dtype per dataset (the source's); kept on resume
        with progress_bar(total=len(items), desc=f"prepare {spec.id}", unit="seq", show=progress, position=position,
                  leave=False) as bar:
            for it in items:
                if writer.done(it.id):
                    bar.update(1)
                    continue
                res = _process(spec, it, it.id in train)
                if res is not None:
                    if dtype is None:
                        dtype = res[0].dtype
                    if res[0].dtype != dtype:
                        raise RawDataError(f"{it.files[0]}: expected {dtype} motion like the dataset's other "
                                           f"sequences, found {res[0].dtype}; re-export it as the others")
                if res is None:
                    why = f"training clip shorter than {spec.filters.min_duration_s} s (filters.min_duration_s)"
                    dropped.append({"id": it.id, "reason": why})
                    log.info("%s: dropped %s: %s", spec.id, it.id, why)
                else:
                    motion, audio, mismatch = res
                    writer.add_sequence(it.id, motion, audio, subject=it.subject, av_mismatch_s=mismatch,
                                        source=str(it.files[0].relative_to(root)))
                bar.update(1)
        short = {d["id"] for d in dropped}
        splits = {k: [s for s in v if s not in short] for k, v in splits.items()}
        kept = [i for i in items if i.id not in short]
        subjects = sorted({i.subject for i in kept})
        templates = {}
        for s in subjects:
            if s not in raw.templates:
                raise RawDataError(f"{root}: expected a template for subject {s!r}, found none in the layout's "
                                   "template file; the templates do not match the sequences")
            templates[s] = np.asarray(raw.templates[s])  # the source's array and dtype, untouched (FDD parity)
            if templates[s].dtype.kind not in "fiu" or not np.isfinite(templates[s]).all():
                raise RawDataError(f"{root}: expected finite numeric template values for subject {s!r}, found NaN, inf "
                                   "or non-numbers in the layout's template file; restore it")
        writer.put_group("templates", templates)
        writer.put_group("regions", regions)
        if space_arrays:
            writer.put_group("space", space_arrays)
        faces, mesh_note = _topology(spec, root, n_v, space_arrays)
        if faces is not None:
            writer.put_group("mesh", {"faces": faces})
        writer.put_splits(splits)
        writer.drop_sequences_except({i.id for i in kept})
        digest = dict(zip(rest, hashes))
        for p, it in own.items():  # a loader that did not run (resumed, dropped before reading): hashed here
            digest[p] = it.digests.get(p) or sha256_file(p)
        input_list = [{"path": str(p.relative_to(root)), "size": p.stat().st_size, "sha256": digest[p]} for p in inputs]
        card = _card(spec, raw, writer, splits, kept, input_list, pinned, dropped, synthetic, split_source, regions,
                     region_notes, region_files, n_v, str(spec.dtype if dtype is None else dtype))
        card["mesh"] = mesh_note
        writer.finalize(card)
    finally:
        writer.close()
        pool.shutdown(wait=True, cancel_futures=True)  # a failure does not wait for the remaining hashes
    (work / CARD_FILE).write_text(json.dumps(card, indent=1) + "\n")
    if dropped:
        (work / "dropped.json").write_text(json.dumps(dropped, indent=1) + "\n")
    target = store_dir(data, spec)
    if target.exists():
        old = data / f".{spec.id}.old-{os.getpid()}"
        os.replace(target, old)
        os.replace(work, target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(work, target)
    return card


def _check_free_disk(spec: DatasetSpec, inputs: list[Path], data: Path, work: Path) -> None:
    """Refuse to start when the store clearly cannot fit: about the raw bytes over the decimation factor."""
    need = sum(p.stat().st_size for p in inputs) / (spec.decimation or 1)
    need -= sum(p.stat().st_size for p in work.rglob("*") if p.is_file()) if work.exists() else 0
    data.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(data).free
    if need > free:
        raise StoreError(f"{data}: expected about {need / 1e9:.1f} GB free for the {spec.id} store, found "
                         f"{free / 1e9:.1f} GB; free space or use another --out")


def _check_unique(raw: RawData, root: Path) -> None:
    first: dict[str, RawItem] = {}
    for it in raw.items:
        if it.id in first:
            a, b = first[it.id].files[0], it.files[0]
            raise RawDataError(f"{root}: expected unique sequence ids, found {it.id!r} twice ({a.relative_to(root)} "
                               f"and {b.relative_to(root)}); remove or rename one")
        first[it.id] = it


def _topology(spec: DatasetSpec, root: Path, n_v: int, space_arrays: dict) -> tuple[Optional[np.ndarray], dict]:
    """Triangles (F, 3) int32 of the dataset's topology, from the manifest's ``mesh`` file or the FLAME model's
    ``f``, and the card's note on where they came from (None and a note when there is neither)."""
    if spec.mesh is not None and (root / spec.mesh.file).is_file():
        verts, faces = read_mesh(root / spec.mesh.file)
        if len(verts) != n_v:
            raise RawDataError(f"{root / spec.mesh.file}: expected the {n_v}-vertex topology of {spec.space}, found "
                               f"{len(verts)} vertices; put the dataset's own mesh file there "
                               f"(`a2fbench download {spec.id}`)")
        return faces.astype(np.int32), {"source": spec.mesh.file, "n_faces": int(len(faces))}
    if "f" in space_arrays:
        faces = np.asarray(space_arrays["f"], np.int64).reshape(-1, 3)
        if faces.size and 0 <= faces.min() and faces.max() < n_v:
            return faces.astype(np.int32), {"source": f"{get_space(spec.space).model_file} (f)", "n_faces": len(faces)}
    missing = f"{spec.mesh.file} is absent" if spec.mesh is not None else "the manifest names no mesh file"
    log.info("%s: no topology kept (%s); render and mesh export will triangulate the template", spec.id, missing)
    return None, {"source": None, "note": missing}


def _process(spec: DatasetSpec, it: RawItem, training: bool) -> Optional[tuple[np.ndarray, np.ndarray, float]]:
    """(motion at the benchmark fps, the whole recording at 16 kHz, audio seconds - motion seconds), or None for
    a training clip under ``filters.min_duration_s``. Validation and test clips are never dropped: one that
    cannot be prepared is an error naming it."""
    m = it.load_motion()
    m = resample_motion(m, it.fps, spec.fps)
    T = m.shape[0]
    if T == 0 and not training:
        raise RawDataError(f"{it.files[0]}: expected motion frames for {it.id} (an evaluation sequence, never "
                           "dropped), found none; restore the file")
    if not np.isfinite(m).all():
        bad = int(np.argwhere(~np.isfinite(m))[0][0])
        raise RawDataError(f"{it.files[0]}: expected finite motion, found NaN/inf at frame {bad} (at {spec.fps:g} fps); "
                           "repair or remove the sequence")
    if training and (T == 0 or T / spec.fps < spec.filters.min_duration_s):
        return None
    audio = it.load_audio()
    if audio.size == 0:
        raise RawDataError(f"{it.files[1] if len(it.files) > 1 else it.files[0]}: expected audio for {it.id}, found an "
                           "empty file; restore it")
    mismatch = av_mismatch(len(audio), T, spec.fps)
    if abs(mismatch) > spec.filters.max_av_mismatch_s:
        raise RawDataError(f"{it.files[-1]}: expected audio within {spec.filters.max_av_mismatch_s} s of the motion "
                           f"({T / spec.fps:.2f} s) of {it.id}, found {T / spec.fps + mismatch:.2f} s; check that the "
                           f"audio belongs to this sequence (`a2fbench doctor {spec.id}` lists every such problem)")
    return m, np.ascontiguousarray(audio, dtype=np.float32), float(mismatch)


def _card(spec: DatasetSpec, raw: RawData, writer: StoreWriter, splits: dict, kept: list, inputs: list, pinned: list,
          dropped: list, synthetic: Optional[dict], split_source: str, regions: dict, region_notes: dict,
          region_files: dict, n_v: int,
          dtype: str) -> dict:
    metas = {i.id: writer.meta(i.id) for i in kept}
    frames = {k: int(m["n_frames"]) for k, m in metas.items()}
    samples = {k: int(m["n_samples"]) for k, m in metas.items()}
    subj = {i.id: i.subject for i in kept}

    def stats(ids: list[str]) -> dict:
        n = sum(frames[s] for s in ids)
        return {"n_sequences": len(ids), "n_frames": n, "hours": round(n / spec.fps / 3600, 4),
                "audio_hours": round(sum(samples[s] for s in ids) / SAMPLE_RATE / 3600, 4),
                "n_subjects": len({subj[s] for s in ids})}

    mm = np.asarray([float(m.get("av_mismatch_s", 0.0)) for m in metas.values()], np.float64)
    one = 1.0 / spec.fps
    av = {"rule": "audio is the whole recording; motion and audio keep their own lengths (seq.motion_seconds, "
                  "seq.audio_seconds); av_mismatch_s = audio seconds - motion seconds",
          "audio_longer_over_one_frame": int((mm > one).sum()), "audio_shorter_over_one_frame": int((mm < -one).sum()),
          "max_abs_s": round(float(np.abs(mm).max()), 4) if mm.size else 0.0}

    space = get_space(spec.space)
    fp = hashlib.sha256(json.dumps([STORE_FORMAT, spec.id, spec.version, spec.fps, SAMPLE_RATE,
                                    spec.filters.model_dump(), sorted((d["path"], d["sha256"]) for d in inputs),
                                    splits]).encode()).hexdigest()
    return {
        "id": spec.id, "name": spec.name, "space": spec.space, "dim": space.dim, "n_vertices": n_v,
        "fps": spec.fps, "fps_native": spec.fps_native, "sample_rate": SAMPLE_RATE,
        "units": spec.units, "vertex_units": spec.vertex_units or spec.units, "dtype": dtype,
        "display": spec.display, "version": spec.version, "store_format": STORE_FORMAT,
        "a2fbench_version": __version__, "fingerprint": f"sha256:{fp}", "layout": raw.layout,
        "synthetic": synthetic, "split_source": split_source,
        "splits_defined_by_a2fbench": spec.splits.defined_by_a2fbench and split_source == "manifest",
        "stats": {**stats(list(frames)), "splits": {k: stats(v) for k, v in splits.items()}},
        "region_default": spec.regions.default,
        "regions": {k: {w: int(len(v[w])) for w in v} for k, v in regions.items()},
        "regions_unavailable": region_notes,
        "region_files": region_files,
        "inputs": {"n_files": len(inputs), "files": inputs, "pinned": pinned},
        "dropped": dropped, "audio_motion_lengths": av,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def _worker(args: tuple) -> tuple[str, Optional[dict], Optional[str]]:
    spec_id, raw, data, position = args
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        return spec_id, prepare_dataset(get_spec(spec_id), raw, data, position=position), None
    except A2FBenchError as e:
        return spec_id, None, str(e)


def prepare_many(specs: list[DatasetSpec], raw: str | os.PathLike, data: str | os.PathLike,
                 workers: int = 1) -> dict[str, tuple[Optional[dict], Optional[str]]]:
    """Prepare several datasets (in parallel processes with ``workers`` > 1); {id: (card, error)}."""
    results: dict[str, tuple[Optional[dict], Optional[str]]] = {}
    Path(data).mkdir(parents=True, exist_ok=True)
    if workers <= 1 or len(specs) == 1:
        for s in specs:
            _, card, err = _worker((s.id, raw, data, 0))
            results[s.id] = (card, err)
        return results

    with ProcessPoolExecutor(max_workers=workers) as ex:
        for sid, card, err in ex.map(_worker, [(s.id, raw, data, i) for i, s in enumerate(specs)]):
            results[sid] = (card, err)
    return results
