"""``a2fbench render``: motion files of a dataset -> mp4 videos with sound.

One ``.npy`` makes one video; a predictions folder or an ``infer`` output makes a folder of videos
(``<name>.mp4``). Each clip is drawn from a fixed frontal camera framed on its subject's template, at the
dataset's fps, optionally beside its ground truth and coloured by the per-vertex distance to it, with the
audio of the sequence (the store's, an ``infer`` output's, or ``--audio``) muxed in. Frames stream from the
memory-mapped input through the rasteriser into the encoder.

Everything is checked before the first frame is drawn; a failure part-way removes every file this call wrote.
"""

from __future__ import annotations

import os
import shutil
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Sequence

import numpy as np

from ..errors import OutputError
from ..util.constants import SAMPLE_RATE
from ..util.guard import check_apart, check_output, make_parent, show
from ..util.progress import bar
from . import compose, video
from .heads import AudioReader, Frames, Head, InputItem, collect_inputs, gt_frames, load_frames


@dataclass
class Rendered:
    """One video written, and what the user should know about it."""

    path: Path
    info: video.VideoInfo
    notes: list[str] = field(default_factory=list)


@dataclass
class _Job:
    item: InputItem
    out: Path
    pred: Frames
    gt: Optional[Frames]
    notes: list[str]


def plan_outputs(items: list[InputItem], one_file: bool, out: str | os.PathLike, suffix: str, *,
                 inputs: Sequence[Any] = (), force: bool = False) -> list[Path]:
    """The output path of each item: ``out`` itself for one file, else ``out/<name><suffix>``; before any work,
    checks each against the command's ``inputs`` (never written over, not even with ``force``) and refuses an
    existing one unless ``force`` (:func:`a2fbench.util.guard.check_output`). Missing folders are made when
    writing starts (:func:`written_together`)."""
    out = Path(out)
    inputs = [*inputs, *(it.path for it in items)]
    if one_file:
        if out.is_dir():
            raise OutputError(f"--out {show(out)}: expected a {suffix} file path for one INPUT file, found a folder; "
                              f"name the file, e.g. {show(out / (items[0].name + suffix))}")
        return [check_output(out, inputs, force=force)]
    check_apart(out, inputs)
    if out.exists() and not out.is_dir():
        raise OutputError(f"--out {show(out)}: expected a folder for {len(items)} outputs, found a file; pass a folder")
    names = [it.name for it in items]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise OutputError(f"INPUT: expected distinct names, found {show(dup[0])!r} twice; rename one")
    return [check_output(out / f"{n}{suffix}", inputs, force=force) for n in names]


def written_together(paths: list[Path], folder: Optional[Path], one: Optional[Path] = None) -> Callable[[], None]:
    """Make the output folder (``folder``, else the folder of the one output file ``one``: ``mkdir -p``, the one
    rule) and return the clean-up for a failed output: remove the files written so far (and ``folder`` if this
    call created it)."""
    made = folder is not None and not folder.exists()
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
    elif one is not None:
        make_parent(one)

    def undo() -> None:
        for p in paths:
            if p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
            elif p.exists():
                p.unlink()
        if made and folder is not None and folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()

    return undo


def render(src: str | os.PathLike, head: Head, out: str | os.PathLike, *, gt: bool = False, errors: bool = False,
           size: int = 512, audio: Optional[np.ndarray] = None, read_audio: Optional[AudioReader] = None,
           progress: Optional[bool] = None, force: bool = False, inputs: Sequence[Any] = (),
           **encode: Any) -> list[Rendered]:
    """Render INPUT ``src`` (see module doc) of ``head``'s dataset to ``out`` (a file for one ``.npy``, else a
    folder). ``force``: replace existing videos; ``inputs``: further files the command reads (never written
    over; ``src`` and the store count already). ``audio``: mono float32 at 16 kHz for a single input (``--audio``); ``read_audio``: how to read an
    ``infer`` output's audio file (the command line passes :func:`a2fbench.sources.audio.read_audio`)."""
    items, one_file = collect_inputs(src, head)
    if audio is not None and not one_file:
        raise OutputError("--audio: expected one INPUT .npy file, found a folder; the folder's own audio is used")
    if size < 16 or size > 4096:
        raise OutputError(f"--size: expected 16..4096 pixels, found {size}")
    targets = plan_outputs(items, one_file, out, ".mp4", inputs=[src, head.ds.path, *inputs], force=force)
    jobs = [_job(it, t, head, gt, errors) for it, t in zip(items, targets)]  # all checked before drawing
    done: list[Path] = []
    undo = written_together(done, None if one_file else Path(out), targets[0] if one_file else None)
    results = []
    total = sum(len(j.pred) for j in jobs)
    try:
        with bar(total=total, desc=f"render {head.id}", unit="frame", show=progress) as pbar:
            for job in jobs:
                wav, notes = _audio(job, head, audio, read_audio)
                labels = ("prediction", "ground truth") if gt else (("prediction (error)",) if errors else ())
                frames = _counted(compose.frames(head.faces, job.pred, job.gt, size=size,
                                                 template=head.template(job.item.seq_id), error=errors,
                                                 error_scale=head.error_scale, units=f"error ({head.error_units})",
                                                 labels=labels, gt_panel=gt), pbar)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", UserWarning)  # the short-audio warning becomes a note below
                    info = video.write_mp4(job.out, frames, head.fps, wav, SAMPLE_RATE, **encode)
                done.append(job.out)
                if info.warnings:  # write_mp4's only warning: audio short by half a frame or more
                    notes.append(f"{job.item.name}: audio ({len(wav) / SAMPLE_RATE:.2f} s) is shorter than the motion "
                                 f"({info.duration_s:.2f} s): all {info.frames} frames rendered, the last "
                                 f"{info.audio_padded_s:.2f} s are silent")
                results.append(Rendered(job.out, info, job.notes + notes))
    except BaseException:
        undo()
        raise
    return results


def _job(item: InputItem, out: Path, head: Head, gt: bool, errors: bool) -> _Job:
    pred = load_frames(item, head)
    notes = []
    gtf = None
    if gt or errors:
        if item.seq_id is None:
            raise OutputError(f"{item.path}: --gt/--errors need the ground truth, found no {head.id} sequence named "
                              f"{item.name!r}; name the file <seq_id>.npy after a sequence of the store, or drop "
                              "--gt/--errors")
        gtf = gt_frames(head, item.seq_id)
        if len(gtf) != len(pred):
            n = min(len(gtf), len(pred))
            notes.append(f"{item.name}: prediction has {len(pred)} frames, ground truth {len(gtf)}: both cut to {n}")
            pred, gtf = pred.truncated(n), gtf.truncated(n)
    if head.faces_note:
        notes.append(head.faces_note)
    return _Job(item, out, pred, gtf, notes)


def _audio(job: _Job, head: Head, audio: Optional[np.ndarray],
           read_audio: Optional[AudioReader]) -> tuple[Optional[np.ndarray], list[str]]:
    if audio is not None:
        return np.asarray(audio, np.float32), []
    if job.item.seq_id is not None:
        return np.asarray(head.ds[job.item.seq_id].audio, np.float32), []
    if job.item.audio is not None and read_audio is not None:
        return np.asarray(read_audio(job.item.audio), np.float32), []
    return None, [f"{job.item.name}: no audio (not a sequence of {head.id}, no --audio): the video is silent"]


def _counted(frames: Iterator[np.ndarray], pbar: Any) -> Iterator[np.ndarray]:
    for f in frames:
        yield f
        pbar.update(1)
