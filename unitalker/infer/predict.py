"""Inference: predictions for a split (``predict``) and animation of audio files (``infer``).

Both cut clips longer than 25 s into 25 s windows overlapping by 5 s and cross-fade the overlaps linearly,
as UniTalker's demo does (``np.linspace(1, 0, 5 * fps)``); shorter clips run whole, several per batch (the
padded batch gives the same numbers as one clip at a time). Outputs are divided by the dataset's UniTalker
``scale`` and added to the native template, so they come out in the dataset's own units.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

import numpy as np
import torch

import a2fbench
from a2fbench.errors import ConfigError, PredictionError
from a2fbench.outputs import sidecar
from a2fbench.scoring.predictions import PROVENANCE_FILE, write_prediction, write_provenance
from a2fbench.scoring.protocols import UNITALKER as UNITALKER_PROTOCOL
from a2fbench.sources.audio import write_wav
from a2fbench.store import UNITALKER_MAX_SECONDS, UNITALKER_MIN_SECONDS
from a2fbench.store.templates import Template, choose_template
from a2fbench.util.constants import SAMPLE_RATE
from a2fbench.util.fsutil import atomic_path
from a2fbench.util.guard import check_apart, show
from a2fbench.util.progress import bar as progress_bar

from ..model import checkpoint as ck
from ..model.encoder import frames_for_samples, normalize_audio
from ..model.load import Loaded, load_model
from ..model.runtime import amp_context, select_device
from .checks import (  # noqa: F401 (re-exported: stream.py takes them from here)
    AudioInputError, InferPlan, head_for, plan_infer, read_input_audio, user_template)
from .rows import PIVOT_UNSEEN, subject_rows

log = logging.getLogger(__name__)
WINDOW_S = 25.0
OVERLAP_S = 5.0


def windows(n_samples: int, window_s: float = WINDOW_S, overlap_s: float = OVERLAP_S) -> list[tuple[int, int]]:
    """Sample ranges of the demo's windows: starts every ``window - overlap`` s until one reaches the end.

    >>> windows(16000 * 10)
    [(0, 160000)]
    >>> [(a // SAMPLE_RATE, b // SAMPLE_RATE) for a, b in windows(16000 * 50)]
    [(0, 25), (20, 45), (40, 50)]
    """
    win, hop = int(round(window_s * SAMPLE_RATE)), int(round((window_s - overlap_s) * SAMPLE_RATE))
    out = [(0, min(win, n_samples))]
    while out[-1][1] < n_samples:
        a = out[-1][0] + hop
        out.append((a, min(a + win, n_samples)))
    return out


@torch.no_grad()
def run_batch(model: torch.nn.Module, audios: Sequence[torch.Tensor], frames: Sequence[int], identities: Sequence[int],
              spaces: Sequence[str], device: torch.device, amp: str = "none") -> dict[str, list[np.ndarray]]:
    """Offsets (scaled units) for a batch of clips under every head in ``spaces``: {space: [(T_i, D)]}."""
    n = torch.tensor([len(a) for a in audios])
    x = torch.zeros(len(audios), int(n.max()))
    for b, a in enumerate(audios):
        x[b, : len(a)] = a
    t = torch.tensor([int(f) for f in frames])
    rows = torch.arange(len(audios))
    with amp_context(device, amp):
        out = model(x.to(device), n.to(device), t.to(device), torch.tensor(list(identities)).to(device),
                    {s: rows.to(device) for s in spaces})
    res = {}
    for s in spaces:
        off = out[s][0].float().cpu().numpy()
        res[s] = [off[b, : int(t[b])] for b in range(len(audios))]
    return res


def animate(model: torch.nn.Module, audio: torch.Tensor, n_frames: int, fps: float, identity: int,
            spaces: Sequence[str], device: torch.device, amp: str = "none",
            normalize: bool = False) -> dict[str, np.ndarray]:
    """One clip of any length -> {space: offsets (n_frames, D)}, windowed and cross-faded past 25 s.

    ``normalize``: each window is normalised again (zero mean, unit variance), as the reference demo does for
    encoders that normalise their input (xlsr-53); the caller normalises the whole clip first.
    """
    wins = windows(len(audio))
    pieces = [normalize_audio(audio[a:b]) if normalize else audio[a:b] for a, b in wins]
    if len(wins) == 1:
        return {s: v[0] for s, v in run_batch(model, pieces, [n_frames], [identity], spaces, device, amp).items()}
    fr = [(int(round(a / SAMPLE_RATE * fps)), int(round(b / SAMPLE_RATE * fps))) for a, b in wins]
    fr[-1] = (fr[-1][0], n_frames)
    outs = run_batch(model, pieces, [f1 - f0 for f0, f1 in fr], [identity] * len(wins), spaces, device, amp)
    result = {}
    for s in spaces:
        acc = np.zeros((n_frames, outs[s][0].shape[1]), np.float64)
        for k, ((f0, f1), o) in enumerate(zip(fr, outs[s])):
            o = o.astype(np.float64)
            if k == 0:
                acc[f0:f1] = o
                continue
            prev_end = fr[k - 1][1]
            ov = max(0, prev_end - f0)
            w = np.linspace(1.0, 0.0, ov)[:, None]
            acc[f0:prev_end] = w * acc[f0:prev_end] + (1 - w) * o[:ov]
            acc[prev_end:f1] = o[ov:]
        result[s] = acc.astype(np.float32)
    return result


def _prep_audio(a: np.ndarray, normalize: bool, windows_too: bool = False) -> torch.Tensor:
    """The clip as the encoder takes it; ``windows_too``: a clip that runs as one window is normalised a second
    time, as the demo normalises every window of the normalised clip (``animate`` does it for longer ones)."""
    x = torch.from_numpy(np.ascontiguousarray(a, np.float32))
    x = normalize_audio(x) if normalize else x
    return normalize_audio(x) if normalize and windows_too else x


def motion_audio(seq: Any, fps: float) -> np.ndarray:
    """A prepared clip's recording aligned to its motion: ``round(T / fps * 16000)`` samples.

    The model outputs the ground-truth frame count ``T`` (UniTalker interpolates its audio features to
    ``frame_num``), so a recording that runs past the motion is cut to it, and one that ends before the motion
    is padded with silence (the frames past the recording are scored, never dropped).
    """
    n = int(round(seq.n_frames / fps * SAMPLE_RATE))
    a = np.asarray(seq.audio, np.float32)[:n]
    return a if len(a) == n else np.concatenate([a, np.zeros(n - len(a), np.float32)])


# ------------------------------------------------------------------------------------------ predict
def _check_out_dir(out: Path, inputs: Sequence[Any], force: bool) -> None:
    check_apart(out, inputs)
    if out.exists():
        if not out.is_dir():
            raise PredictionError(f"--out {show(out)}: expected a folder for predictions, found a file; choose another "
                                  "path")
        other = [p.name for p in out.iterdir() if p.suffix != ".npy" and p.name != PROVENANCE_FILE]
        if other:
            raise PredictionError(f"--out {show(out)}: expected a new folder or an old predictions folder (only .npy "
                                  f"files), found {show(other[0])!r}; choose an empty or new folder")
        if not force and any(out.iterdir()):
            raise PredictionError(f"--out {show(out)}: expected a new or empty folder, found earlier predictions; pass "
                                  "--force to replace them, or choose another folder")


def predict_split(loaded: Loaded, data: str | os.PathLike, dataset: str, split: str, device: torch.device,
                  identity: str = "gt", amp: str = "none", progress: bool = True, protocol: str = "a2f",
                  record: Optional[dict] = None, clip_fn: Any = None) -> Iterator[tuple[str, np.ndarray]]:
    """(seq_id, prediction (T, D) in native units) for every clip of a split.

    ``protocol`` ``a2f`` (default): every clip whole, T = its ground-truth frames; the recording cut or padded
    with silence to the motion (:func:`motion_audio`); the store's template of the subject. ``unitalker`` (paper
    mode, as the official test loop): each clip cut to min(recording, motion, 20 s) before the model runs (T =
    round(duration x fps), samples = round(duration x 16000), nothing padded), fp32, the identity row's own
    template (the release's), clips under 0.5 s after the cut skipped. ``record``: filled with what produced
    each sequence (``sequences``: {id: identity row, template, frames, seconds, cut}) and the skipped clips.
    ``clip_fn(model, audio, space, fps, identity_row, device, amp) -> offsets (T, D)``: animate each clip alone
    this way instead (streaming mode, :func:`unitalker.infer.stream.predict_streaming`).
    """

    paper = protocol == UNITALKER_PROTOCOL
    if protocol not in ("a2f", UNITALKER_PROTOCOL):
        raise ConfigError(f"--protocol: expected a2f or {UNITALKER_PROTOCOL}, found {protocol!r}")
    amp = "none" if paper else amp
    head = head_for(loaded.meta, dataset)
    ds = a2fbench.open_dataset(data, dataset)
    spec = ds.spec
    scale = float(spec.unitalker.scale)
    fps = float(ds.card["fps"])
    space = head["space"]
    rec = record if record is not None else {}
    seqs_rec: dict[str, dict] = rec.setdefault("sequences", {})
    skipped: list[dict] = rec.setdefault("skipped", [])
    ids: list[str] = []
    plan: dict[str, tuple[int, Optional[int]]] = {}  # frames, samples fed (None: the motion's, padded)
    for sid in ds.split(split):
        seq = ds[sid]
        if paper:
            sec = seq.common_seconds(UNITALKER_MAX_SECONDS)
            if sec < UNITALKER_MIN_SECONDS:
                skipped.append({"id": sid, "seconds": round(sec, 6)})
                continue
            frames, samples = seq.common_length(UNITALKER_MAX_SECONDS)
            plan[sid] = (frames, samples)
        else:
            plan[sid] = (seq.n_frames, None)
        ids.append(sid)
    if skipped:
        log.info("%s %s: %d clips under %g s skipped (paper mode): %s", spec.id, split, len(skipped),
                 UNITALKER_MIN_SECONDS, ", ".join(x["id"] for x in skipped[:5]))
    subj = {sid: ds[sid].subject for sid in ids}
    rows = subject_rows(loaded, ds, list(dict.fromkeys(subj.values())), identity)
    unseen = sorted({s for s in subj.values() if rows[s].how == PIVOT_UNSEEN})
    if unseen:
        log.info("%s %s: subjects unseen in training use the pivot identity: %s", spec.id, split, ", ".join(unseen))

    def template(s: str) -> Template:
        key = rows[s].key
        if paper and key is not None and f"template.{key}" in loaded.aux:  # the row's own (release) template
            return choose_template(ds, given=Template(loaded.aux[f"template.{key}"].double().numpy() / scale,
                                                      "identity-row", f"{key} (row {rows[s].row})"))
        return choose_template(ds, subject=s)

    def audio(sid: str) -> np.ndarray:
        seq, (_, samples) = ds[sid], plan[sid]
        return motion_audio(seq, fps) if samples is None else np.asarray(seq.audio, np.float32)[:samples]

    def done(sid: str, off: np.ndarray, n_audio: int) -> tuple[str, np.ndarray]:
        s = subj[sid]
        tm = template(s)
        seq = ds[sid]
        seqs_rec[sid] = {"subject": s, **rows[s].record(), "template": tm.record(), "frames": int(plan[sid][0]),
                         "audio_s": round(min(n_audio, seq.n_samples) / SAMPLE_RATE, 6),
                         "padded_s": round(max(0, n_audio - seq.n_samples) / SAMPLE_RATE, 6),
                         "cut": "min(recording, motion, 20 s)" if paper else "whole clip (motion length)"}
        return sid, to_native(off, np.asarray(tm.values, np.float64), scale, space)

    order = sorted(ids, key=lambda sid: plan[sid][0])
    norm = loaded.model.encoder.normalize
    bar = progress_bar(total=len(ids), desc=f"predict {spec.id} {split}", show=progress, unit="clip")
    batch: list[str] = []

    def flush(batch: list[str]) -> Iterator[tuple[str, np.ndarray]]:
        raw = [audio(sid) for sid in batch]
        audios = [_prep_audio(a, norm, windows_too=True) for a in raw]
        offs = run_batch(loaded.model, audios, [plan[sid][0] for sid in batch],
                         [rows[subj[sid]].row for sid in batch], [space], device, amp)[space]
        for sid, a, o in zip(batch, raw, offs):
            yield done(sid, o, len(a))

    if clip_fn is not None:
        for sid in order:
            raw = audio(sid)
            off = clip_fn(loaded.model, raw, space, fps, rows[subj[sid]].row, device, amp)
            bar.update(1)
            yield done(sid, off, len(raw))
        bar.close()
        ds.close()
        return
    max_batch_s = 60.0 if device.type == "cpu" else 320.0
    for sid in order:
        n = plan[sid][0]
        if n / fps > WINDOW_S:
            raw = audio(sid)
            a = _prep_audio(raw, norm)
            off = animate(loaded.model, a, n, fps, rows[subj[sid]].row, [space], device, amp, norm)[space]
            bar.update(1)
            yield done(sid, off, len(raw))
            continue
        if batch and (len(batch) + 1) * n / fps > max_batch_s:
            yield from flush(batch)
            bar.update(len(batch))
            batch = []
        batch.append(sid)
    if batch:
        yield from flush(batch)
        bar.update(len(batch))
    bar.close()
    ds.close()


def to_native(offset_scaled: np.ndarray, template_native: np.ndarray, scale: float, space: str) -> np.ndarray:
    """Native units: offset / scale + template. The model's output as it is: blendshape weights are not clamped
    to [0, 1] (the official output is not; formats that demand the range, the ARKit CSV, clamp and say so)."""
    return (offset_scaled.astype(np.float64) / scale + np.asarray(template_native, np.float64)[None]).astype(np.float32)


def precision(device: torch.device, amp: str) -> str:
    """The arithmetic the model ran in, as the predictions record says it (:func:`amp_context`'s rule)."""
    return "bf16 autocast" if device.type == "cuda" and amp == "bf16" else "fp32"


def predictions_record(loaded: Loaded, dataset: str, split: str, identity: str, protocol: str, prec: str,
                       record: dict, **extra: Any) -> dict:
    """The predictions record (``PRED/.a2fbench-predictions.json``; ``evaluate`` copies it into the results as
    ``predictions.source``): what made the folder and, per sequence, the identity row, template, cut and frames.
    ``extra``: further settings a caller adds (recorded as given)."""
    paper = protocol == UNITALKER_PROTOCOL
    return {"method": "UniTalker", "checkpoint": str(loaded.meta["path"]), "encoder": loaded.cfg["model"]["encoder"][
            "name"], "dataset": dataset, "split": split, "identity": identity, "protocol": protocol, "mode": "paper" if paper else "default",
            "precision": prec, "clamp": "none (the model's output)",
            "cut": ("each clip cut to min(recording, motion, 20 s) before the model runs; no silence padded; clips "
                    f"under {UNITALKER_MIN_SECONDS:g} s skipped" if paper else
                    "whole clips; the recording cut to the motion, or padded with silence to it (padded_s)"),
            "template": "the identity row's own (release) template" if paper else "the store's template of the subject",
            "imported_release": (loaded.meta.get("official") or {}).get("release"),
            "mouth_lists": release_mouth_lists(loaded.meta, dataset),
            "sequences": record.get("sequences", {}), "skipped": record.get("skipped", []), **extra,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def release_mouth_lists(meta: dict, dataset: str) -> dict:
    """``{dataset: {"path", "sha256", "n"}}``: UniTalker's mouth list that ``import-official`` carried into the run
    from the release folder (``RUN/resources/<name>``), for ``evaluate --protocol unitalker`` on a store prepared
    without it; {} when the run has none for ``dataset``."""
    m = ((meta.get("official") or {}).get("mouth_lists") or {}).get(dataset)
    ckpt = Path(meta["path"])
    run = ckpt.parent.parent if ckpt.parent.name == ck.CKPT_DIR else ckpt.parent
    if not m or not (run / m["file"]).is_file():
        return {}
    return {dataset: {"path": str((run / m["file"]).resolve()), "sha256": m["sha256"], "n": m["n"]}}


def predict(checkpoint: str | os.PathLike, data: str | os.PathLike, dataset: str, out: str | os.PathLike,
            split: str = "test", identity: str = "gt", device: str = "auto", progress: bool = True,
            protocol: str = "a2f", clip_fn: Any = None, record: Optional[dict] = None, force: bool = False) -> Path:
    """Write ``out/<seq_id>.npy`` for every clip of the split (atomically: all or nothing) and the predictions
    record (:func:`predictions_record`). Earlier predictions in ``out`` are replaced only with ``force``.
    ``protocol``: ``a2f`` (whole clips) or ``unitalker`` (paper mode, see :func:`predict_split`); ``clip_fn``: see
    :func:`predict_split`; ``record``: more fields for the predictions record (e.g. ``streaming``)."""

    if identity not in ("gt", "pivot"):
        raise ConfigError(f"--identity: expected gt or pivot, found {identity!r}")
    dev = select_device(device)
    loaded = load_model(checkpoint, dev)
    out = Path(out)
    _check_out_dir(out, [checkpoint, data], force)
    amp = "none" if protocol == UNITALKER_PROTOCOL else loaded.cfg["train"]["amp"]
    seqs: dict = {}
    with atomic_path(out, is_dir=True) as tmp:
        n = 0
        for sid, arr in predict_split(loaded, data, dataset, split, dev, identity, amp, progress, protocol, seqs,
                                      clip_fn):
            write_prediction(tmp, sid, arr)
            n += 1
        write_provenance(tmp, **predictions_record(loaded, dataset, split, identity, protocol, precision(dev, amp),
                                                   seqs, **(record or {})))
    log.info("wrote %d predictions to %s (checkpoint %s)", n, out, loaded.meta["path"])
    return out


# -------------------------------------------------------------------------------------------- infer
def infer(checkpoint: str | os.PathLike, audio_files: Sequence[str | os.PathLike], out: str | os.PathLike,
          heads: str = "all", identity: str = "pivot", device: str = "auto",
          template: Optional[str | os.PathLike] = None, force: bool = False,
          plan: Optional[InferPlan] = None) -> list[Path]:
    """Animate audio files under each requested head: ``out/<stem>/<dataset>.npy`` (T, D) in native units, with
    the sidecar render and export read (:mod:`a2fbench.outputs.sidecar`: the clip's audio, each head's template).
    An existing ``out/<stem>/`` is replaced only with ``force``; no input is ever written over.

    Every argument is checked before the model loads (:func:`.checks.plan_infer`; ``plan``: its answer, when
    the caller already has it). ``template``: a neutral mesh of one vertex head's topology (native units);
    outputs are it plus the predicted offsets (the official demo adds its template the same way)."""
    plan = plan or plan_infer(checkpoint, audio_files, out, heads, identity, template, force)
    stems, targets, row, own, out = plan.stems, plan.targets, plan.row, plan.template, plan.out
    clips = [(stem, read_input_audio(f)) for stem, f in stems.items()]  # all read and checked before writing
    dev = select_device(device)
    loaded = load_model(checkpoint, dev)
    out.mkdir(parents=True, exist_ok=True)
    norm = loaded.model.encoder.normalize
    written = []
    for stem, x in clips:
        a = _prep_audio(x, norm)
        with atomic_path(out / stem, is_dir=True) as tmp:
            write_wav(tmp / sidecar.AUDIO_FILE, x, SAMPLE_RATE)
            record = {"audio": {"file": sidecar.AUDIO_FILE, "source": str(stems[stem].resolve()),
                                "sample_rate": SAMPLE_RATE, "seconds": round(x.size / SAMPLE_RATE, 3)},
                      "checkpoint": loaded.meta["path"], "identity": identity, "identity_row": row,
                      "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "heads": {}}
            for d in targets:
                fps = float(d.get("fps") or 30.0)
                n = max(1, frames_for_samples(x.size, fps))
                off = animate(loaded.model, a, n, fps, row, [d["space"]], dev, loaded.cfg["train"]["amp"],
                              norm)[d["space"]]
                tmpl = own if own is not None else template_for(loaded, d, row)
                arr = to_native(off, tmpl.values, float(d["scale"]), d["space"])
                np.save(tmp / f"{d['id']}.npy", arr, allow_pickle=False)
                record["heads"][d["id"]] = {"file": f"{d['id']}.npy", "space": d["space"], "fps": fps, "frames": n,
                                            "shape": list(arr.shape),
                                            "template": sidecar.write_template(tmp, d["id"], tmpl)}
            sidecar.write_sidecar(tmp, record)
        written.append(out / stem)
        log.info("animated %s (%.1f s) -> %s", stems[stem], x.size / SAMPLE_RATE, out / stem)
    return written


def template_for(loaded: Loaded, head: dict, row: int) -> Template:
    """The template (native units) an identity row's motion sits on under a dataset head: the identity's own
    template if it is one of that dataset's training subjects, else the dataset's mean training template."""
    idt, dataset, scale = loaded.identities, head["id"], float(head["scale"])
    if row < len(idt.keys) and idt.keys[row].startswith(f"{dataset}/"):
        key = f"template.{idt.keys[row]}"
        if key in loaded.aux:
            return Template(loaded.aux[key].double().numpy() / scale, "identity-row", f"{idt.keys[row]} (row {row})")
    key = f"template_mean.{dataset}"
    if key in loaded.aux:
        return Template(loaded.aux[key].double().numpy() / scale, "identity-row",
                        f"mean {dataset} training template (row {row} is no {dataset} subject)")
    raise ConfigError(f"the checkpoint stores no template for {dataset}; predict with --data instead")
