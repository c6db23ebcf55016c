"""Which sequences a stand-in of a given size holds: ids in the dataset's naming, subjects, splits and
durations, and what that costs on disk, computed without writing anything."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Literal, Optional

import numpy as np

from ...registry import DatasetSpec, SynthSize, assign_splits, get_space, sentence_id

Size = Literal["tiny", "small", "full"]


@dataclass
class SeqPlan:
    id: str
    subject: str
    split: Optional[str]
    seconds: float
    index: int


def _subject_names(spec: DatasetSpec, n: Optional[int] = None) -> list[str]:
    if spec.subjects is not None:
        names = list(spec.subjects)
    else:
        fmt = spec.synth.subject_format or "S{i:03d}"
        names = [fmt.format(i=i + 1) for i in range(spec.subject_count)]
    return names if n is None else names[:n]


def _seconds_range(spec: DatasetSpec, size: SynthSize, split: Optional[str]) -> tuple[float, float]:
    if size.seconds is not None:
        return size.seconds
    s = spec.synth.seconds
    if isinstance(s, dict):
        return s.get(split or "train", next(iter(s.values())))
    return s


def plan(spec: DatasetSpec, size: Size, seed: int = 0) -> list[SeqPlan]:
    """The sequences a stand-in of ``size`` holds (ids, subjects, splits, durations)."""
    sz: SynthSize = getattr(spec.synth, size)
    rng = np.random.default_rng([seed, spec.number, 1])
    out: list[SeqPlan] = []

    def add(sid: str, subj: str, split: Optional[str]) -> None:
        lo, hi = _seconds_range(spec, sz, split)
        out.append(SeqPlan(sid, subj, split, float(rng.uniform(lo, hi)), len(out)))

    rule = spec.splits.rule
    if rule == "subject_sentence":
        all_subj = _subject_names(spec, sz.subjects)
        seen: set[str] = set()
        for split, s in spec.splits.sets.items():
            subs = all_subj if s.subjects == "all" else [x for x in s.subjects if x in all_subj]
            k = sz.subjects_per_split
            k = k.get(split) if isinstance(k, dict) else k
            subs = subs[:k] if k else subs
            for subj in subs:
                for sid in _ids_for(spec, subj, split, s.sentences, sz):
                    if sid not in seen:
                        seen.add(sid)
                        add(sid, subj, split)
        if size == "full" and spec.naming is not None:  # the whole subject x sentence grid, as the release
            hi = max((s.sentences[1] for s in spec.splits.sets.values() if s.sentences), default=0)
            for subj in all_subj:
                for sent in range(1, hi + 1):
                    sid = sentence_id(spec, subj, sent)
                    if sid not in seen:
                        seen.add(sid)
                        add(sid, subj, None)
    else:
        subs = _subject_names(spec, sz.subjects)
        per = sz.clips_per_subject or spec.synth.clips_per_subject or 4
        counts = [per] * len(subs)
        if sz.sequences:  # a total, spread evenly: the first subjects get one clip more
            q, r = divmod(sz.sequences, len(subs))
            counts = [q + (i < r) for i in range(len(subs))]
        splits = spec.split_names
        g = 0
        for subj, n in zip(subs, counts):
            for k in range(n):
                split = _release_split(k, n, g, splits) if rule == "release_json" else None
                add(f"{subj}_{k:03d}", subj, split)
                g += 1
    return out


_GOLDEN = 0.6180339887498949


def _release_split(k: int, n: int, g: int, splits: list[str]) -> str:
    """Split of clip ``k`` of ``n`` of a subject (``g``: running index over the dataset), about 80/10/10.

    Few clips per subject (tiny sizes): clip k goes to split k, so every subject is in every split. Many
    clips: the first three cover the splits, the rest by position. In between (D5: 4 clips of each of 719
    ids) a low-discrepancy sequence over the running index keeps the whole dataset at 80/10/10.
    """
    if n <= len(splits) or k < len(splits) and n >= 10:
        return splits[k % len(splits)]
    x = (k + 0.5) / n if n >= 10 else (g * _GOLDEN) % 1.0
    return "train" if x < 0.8 else ("val" if x < 0.9 else "test")


def _ids_for(spec: DatasetSpec, subj: str, split: str, sentences: Optional[tuple[int, int]],
             sz: SynthSize) -> list[str]:
    if sentences is not None:
        nums = list(range(sentences[0], sentences[1] + 1))
        if sz.sentences_per_split:
            nums = nums[: sz.sentences_per_split]
        return [sentence_id(spec, subj, n) for n in nums]
    # clip naming (RAVDESS-style): emotion x intensity x statement x repetition
    fmt = spec.synth.clip_format or "{subject}_{k:03d}"
    combos = [(1, 1, st, rp) for st in (1, 2) for rp in (1, 2)]
    combos += [(e, i, st, rp) for e in range(2, 9) for i in (1, 2) for st in (1, 2) for rp in (1, 2)]
    per = sz.clips_per_subject or spec.synth.clips_per_subject or 4
    return [fmt.format(emotion=e, intensity=i, sentence=st, repetition=rp, subject=subj, k=k)
            for k, (e, i, st, rp) in enumerate(combos[:per])]


def estimate_bytes(spec: DatasetSpec, size: Size, seed: int = 0,
                   keep: Callable[[SeqPlan], bool] = lambda p: True) -> int:
    """Bytes a stand-in takes on disk (motion + audio), to check free space first."""
    item = np.dtype(spec.dtype).itemsize if get_space(spec.space).is_vertex else 4
    dim = get_space(spec.space).dim
    total = 0
    for p in filter(keep, plan(spec, size, seed)):
        total += int(p.seconds * spec.fps_native) * dim * item + int(p.seconds * spec.synth.audio_rate) * 2
    return total


def plan_stats(spec: DatasetSpec, size: Size, seed: int = 0) -> dict:
    """What a stand-in of ``size`` holds, computed from :func:`plan` without writing anything: sequences,
    subjects, hours and native frames in all and per planned split (``None``: in no standard split), and the
    bytes it takes on disk."""
    plans = plan(spec, size, seed)

    def stats(ps: list[SeqPlan]) -> dict:
        return {"sequences": len(ps), "subjects": len({p.subject for p in ps}),
                "hours": round(sum(p.seconds for p in ps) / 3600, 3),
                "frames_native": sum(int(round(p.seconds * spec.fps_native)) for p in ps)}

    split_of = {p.id: p.split for p in plans}
    if spec.splits.rule == "subject_hash":  # assigned from the subject names, as prepare does
        got, _, _ = assign_splits(spec, plans)
        split_of = {sid: k for k, ids in got.items() for sid in ids}
    by: dict[str, list[SeqPlan]] = {}
    for p in plans:
        by.setdefault(str(split_of[p.id]), []).append(p)
    return {**stats(plans), "bytes": estimate_bytes(spec, size, seed), "splits": {k: stats(v) for k, v in by.items()}}
