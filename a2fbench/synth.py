"""``a2fbench synth``: stand-in raw data in each dataset's native layout.

The real datasets are licence-gated. The stand-ins have the real structure (layout, file names, dtypes, frame
and audio rates, vertex counts or parameter widths, subject names and split membership) and motion that
depends on the audio (see :mod:`a2fbench.synth_face`). Sizes: ``tiny`` (seconds, for tests), ``small``,
``full`` (the scale of the paper's Table 1: tens of GB for the vertex datasets). Non-public resources
(region masks, blendshape bases, a FLAME-like model) are written in their real formats too.

Each stand-in folder carries ``.a2fbench-synth.json``; ``prepare`` records it in the dataset card, so a score
on synthetic data can never pass for a score on the real dataset.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Literal, Optional

import numpy as np
from tqdm.auto import tqdm

from . import __version__
from .audio import write_wav
from .errors import A2FBenchError
from .fsutil import atomic_path
from .registry import DatasetSpec, SynthSize, get_space, space_channels
from .synth_face import (FaceModel, make_drive, make_face, motion_coefficients, render_audio, subject_shape,
                         subject_style, vertex_motion)

Size = Literal["tiny", "small", "full"]
MARKER = ".a2fbench-synth.json"


@dataclass
class SeqPlan:
    id: str
    subject: str
    split: Optional[str]
    seconds: float
    index: int


# ------------------------------------------------------------------------------------------- planning
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
                    sid = _sentence_id(spec, subj, sent)
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


def _sentence_id(spec: DatasetSpec, subj: str, sent: int) -> str:
    pat = spec.naming.pattern if spec.naming else ""
    if "_e(?P<sentence>" in pat:
        return f"{subj}_e{sent:02d}"
    if "_sentence(?P<sentence>" in pat:
        return f"{subj}_sentence{sent:02d}"
    if "_SEN_(?P<sentence>" in pat:
        return f"{subj}_SEN_{sent:02d}"
    raise A2FBenchError(f"{spec.id}: synth cannot build names for pattern {pat!r}")


def _ids_for(spec: DatasetSpec, subj: str, split: str, sentences: Optional[tuple[int, int]],
             sz: SynthSize) -> list[str]:
    if sentences is not None:
        nums = list(range(sentences[0], sentences[1] + 1))
        if sz.sentences_per_split:
            nums = nums[: sz.sentences_per_split]
        return [_sentence_id(spec, subj, n) for n in nums]
    # clip naming (RAVDESS-style): emotion x intensity x statement x repetition
    fmt = spec.synth.clip_format or "{subject}_{k:03d}"
    combos = [(1, 1, st, rp) for st in (1, 2) for rp in (1, 2)]
    combos += [(e, i, st, rp) for e in range(2, 9) for i in (1, 2) for st in (1, 2) for rp in (1, 2)]
    per = sz.clips_per_subject or spec.synth.clips_per_subject or 4
    return [fmt.format(emotion=e, intensity=i, sentence=st, repetition=rp, subject=subj, k=k)
            for k, (e, i, st, rp) in enumerate(combos[:per])]


# ------------------------------------------------------------------------------------------ generation
class _Gen:
    """Per-dataset generator state: the face, subject styles and shapes."""

    def __init__(self, spec: DatasetSpec, seed: int):
        self.spec = spec
        self.seed = seed
        self.space = get_space(spec.space)
        self.scale = spec.synth.coord_scale
        n_v = self.space.n_vertices if self.space.is_vertex else (5023 if self.space.kind == "flame" else 1220)
        self.face: FaceModel = make_face(int(n_v), seed=0)
        self._styles: dict[str, dict[str, float]] = {}
        self._shapes: dict[str, np.ndarray] = {}

    def style(self, subj: str) -> dict[str, float]:
        if subj not in self._styles:
            rng = np.random.default_rng([self.seed, self.spec.number, _h(subj)])
            self._styles[subj] = subject_style(rng)
        return self._styles[subj]

    def template(self, subj: str) -> np.ndarray:
        """(V, 3) neutral template of a subject, in dataset units."""
        if subj not in self._shapes:
            rng = np.random.default_rng([self.seed, self.spec.number, _h(subj), 2])
            self._shapes[subj] = (self.face.points + subject_shape(self.face, rng)) * self.scale
        return self._shapes[subj]

    def sequence(self, p: SeqPlan) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        """(audio at synth rate, coefficient curves at native fps, raw curves) for one planned sequence."""
        rng = np.random.default_rng([self.seed, self.spec.number, p.index, 3])
        n_frames = int(round(p.seconds * self.spec.fps_native))
        dur = n_frames / self.spec.fps_native
        drive = make_drive(rng, dur)
        st = self.style(p.subject)
        audio = render_audio(rng, drive, self.spec.synth.audio_rate, st["f0"])
        t = np.arange(n_frames) / self.spec.fps_native
        coefs = motion_coefficients(drive, st, t)
        return audio, coefs, {"rng_state": np.array([p.index])}

    def vertices(self, p: SeqPlan, coefs: dict[str, np.ndarray]) -> np.ndarray:
        rng = np.random.default_rng([self.seed, self.spec.number, p.index, 4])
        return vertex_motion(self.face, self.template(p.subject), coefs, self.scale, rng,
                             dtype=np.dtype(self.spec.dtype).type)

    def params(self, p: SeqPlan, coefs: dict[str, np.ndarray]) -> np.ndarray:
        rng = np.random.default_rng([self.seed, self.spec.number, p.index, 5])
        if self.space.kind == "blendshape":
            return blendshape_weights(space_channels(self.space) or [], coefs, rng, self.style(p.subject))
        return flame_params(coefs, rng, np.random.default_rng([self.seed, self.spec.number, _h(p.subject), 6]))


def _h(s: str) -> int:
    import hashlib

    return int.from_bytes(hashlib.sha256(s.encode()).digest()[:4], "little")


def blendshape_weights(channels: list[str], coefs: dict[str, np.ndarray], rng: np.random.Generator,
                       style: dict[str, float]) -> np.ndarray:
    """(T, K) ARKit weights in [0, 1] driven by the articulatory curves."""
    T = len(coefs["jaw"])
    W = np.zeros((T, len(channels)), np.float32)
    sp = coefs["spread"]
    rules: dict[str, np.ndarray] = {
        "jawOpen": 0.9 * coefs["jaw"],
        "mouthFunnel": 0.7 * np.clip(-sp, 0, None),
        "mouthPucker": 0.8 * np.clip(-sp, 0, None),
        "mouthStretchLeft": 0.6 * np.clip(sp, 0, None),
        "mouthStretchRight": 0.6 * np.clip(sp, 0, None),
        "mouthSmileLeft": 0.3 * np.clip(sp, 0, None),
        "mouthSmileRight": 0.3 * np.clip(sp, 0, None),
        "mouthClose": 0.15 * np.clip(0.5 - coefs["jaw"], 0, None),
        "eyeBlinkLeft": coefs["blink"],
        "eyeBlinkRight": coefs["blink"],
        "browInnerUp": 0.4 + 0.5 * coefs["brow"],
        "browOuterUpLeft": 0.3 + 0.4 * coefs["brow"],
        "browOuterUpRight": 0.3 + 0.4 * coefs["brow"],
        "cheekSquintLeft": 0.5 * coefs["cheek"],
        "cheekSquintRight": 0.5 * coefs["cheek"],
    }
    for j, name in enumerate(channels):
        if name in rules:
            W[:, j] = rules[name]
        else:
            W[:, j] = 0.03 * rng.random() + 0.01 * np.abs(np.sin(np.linspace(0, rng.uniform(1, 6), T)))
    return np.clip(W, 0.0, 1.0)


def flame_params(coefs: dict[str, np.ndarray], rng: np.random.Generator, subj_rng: np.random.Generator) -> np.ndarray:
    """(T, 413) UniTalker FLAME parameters: shape | expression | jaw | rot6d | translation | scale."""
    T = len(coefs["jaw"])
    P = np.zeros((T, 413), np.float32)
    betas = np.zeros(300)
    betas[:20] = subj_rng.normal(0, 1.0, 20)
    P[:, 0:300] = betas
    P[:, 300] = 2.0 * coefs["spread"]
    P[:, 301] = 2.0 * coefs["cheek"]
    P[:, 302] = 2.0 * coefs["brow"]
    P[:, 303] = 2.0 * coefs["blink"]
    P[:, 304:310] = 0.05 * subj_rng.normal(size=6)
    P[:, 400] = 0.25 * coefs["jaw"]
    P[:, 403:409] = np.array([1, 0, 0, 0, 1, 0], np.float32) + rng.normal(0, 0.01, size=(T, 6))
    P[:, 409:412] = rng.normal(0, 0.002, size=(T, 3))
    P[:, 412] = 1.0
    return P


# --------------------------------------------------------------------------------------- resource files
def write_index_list(path: Path, idx: np.ndarray, sep: str = ", ") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(sep.join(str(int(i)) for i in idx))


def write_weights(path: Path, n: int, idx: np.ndarray) -> None:
    w = np.zeros(n)
    w[idx] = 1.0
    np.savetxt(path, w, fmt="%.18e")


def write_mesh(path: Path, verts: np.ndarray, faces: np.ndarray) -> None:
    """A small OBJ or ASCII PLY writer for the stand-in topology files."""
    verts = np.asarray(verts, np.float64)
    if path.suffix == ".obj":
        lines = [f"v {x:.9e} {y:.9e} {z:.9e}" for x, y, z in verts]
        lines += [f"f {a + 1} {b + 1} {c + 1}" for a, b, c in faces]
        path.write_text("\n".join(lines) + "\n")
    else:
        head = ["ply", "format ascii 1.0", f"element vertex {len(verts)}", "property double x", "property double y",
                "property double z", f"element face {len(faces)}", "property list uchar int vertex_indices", "end_header"]
        body = [f"{x:.9e} {y:.9e} {z:.9e}" for x, y, z in verts] + [f"3 {a} {b} {c}" for a, b, c in faces]
        path.write_text("\n".join(head + body) + "\n")


def _region_indices(gen: _Gen, which: str) -> np.ndarray:
    f = gen.face
    return {"lips": f.lips, "upper": f.upper, "forehead": f.forehead, "eye_region": f.eyes}[which]


def write_resources(gen: _Gen, root: Path) -> None:
    """Region masks, topology meshes, blendshape bases and the FLAME-like model, in their real formats."""
    spec, space, face = gen.spec, gen.space, gen.face
    mean_tmpl = face.points * gen.scale
    if space.kind == "blendshape":
        write_blendshape_basis(root / (space.basis_file or "basis.npz"), space_channels(space) or [], face, gen.scale)
    if space.kind == "flame":
        write_flame_model(root / (space.model_file or "generic_model.pkl"), face, gen.scale)
    for rs in spec.regions.sets.values():
        for which in ("lips", "upper"):
            src = getattr(rs, which)
            p = root / src.file
            if p.exists() or src.format == "basis_channels":
                continue
            p.parent.mkdir(parents=True, exist_ok=True)
            idx = _region_indices(gen, which)
            if src.format == "index_list":
                write_index_list(p, idx, ", " if spec.id == "D0" else ",")
            elif src.format == "index_npy":
                np.save(p, idx.astype(np.int64))
            elif src.format == "weights":
                write_weights(p, len(face.points), idx)
            elif src.format == "pickle_dict":
                masks = {"lips": face.lips, "forehead": face.forehead, "eye_region": face.eyes,
                         "face": np.arange(len(face.points)), "nose": np.flatnonzero(np.abs(face.points[:, 0]) < 0.1)}
                with open(p, "wb") as fh:
                    pickle.dump({k: np.asarray(v, np.int64) for k, v in masks.items()}, fh, protocol=2)
    for f in spec.files():
        if f.is_glob or (root / f.path).exists():
            continue
        if f.path.endswith((".ply", ".obj")):
            write_mesh(root / f.path, mean_tmpl, face.faces)


def write_blendshape_basis(path: Path, channels: list[str], face: FaceModel, scale: float) -> None:
    """An npz in UniTalker's layout: ``meanshape`` (V, 3) and ``blendshape`` (K, 3V) deltas.

    Each channel moves its region with the face's motion fields (jaw, lips, blink, brow, cheek), plus a small
    bump of its own near that region, so that no two channels share a shape: like a real ARKit basis, the
    basis has full rank and weights can be recovered from vertices (``spaces.BlendshapeConverter.to_weights``).
    """
    rng = np.random.default_rng([len(channels), 11])
    F = face.fields
    x, y = face.points[:, 0], face.points[:, 1]
    mouth = (0.0, -0.55)
    deltas = []
    for name in channels:
        side = -1 if name.endswith("Left") else (1 if name.endswith("Right") else 0)
        sidew = np.where(side == 0, 1.0, np.clip(0.5 + side * x * 2, 0, 1))[:, None]
        if name.startswith("jaw"):
            d = F["jaw"] * (1.0 if name == "jawOpen" else 0.3)
            c = (mouth[0], mouth[1] - 0.35)
        elif name in ("mouthFunnel", "mouthPucker", "mouthRollLower", "mouthRollUpper"):
            d = -F["spread"] * sidew
            c = mouth
        elif name.startswith("mouth"):
            d = F["spread"] * sidew * (1.0 if "Stretch" in name or "Smile" in name else rng.uniform(0.2, 0.5))
            c = mouth
        elif name.startswith("eye"):
            d = F["blink"] * sidew * (1.0 if "Blink" in name or "Squint" in name else rng.uniform(-0.4, 0.4))
            c = (0.38, 0.42)
        elif name.startswith("brow"):
            d = F["brow"] * sidew * (-1.0 if "Down" in name else 1.0)
            c = (0.35, 0.72)
        elif name.startswith("cheek"):
            d = F["cheek"] * sidew
            c = (0.45, -0.25)
        else:  # nose*, tongueOut
            d = 0.2 * F["cheek"] * sidew
            c = (0.0, -0.05) if name.startswith("nose") else mouth
        cx = (c[0] if side >= 0 else -c[0]) * (1 if side else rng.choice([-1, 1])) + rng.normal(0, 0.12)
        cy = c[1] + rng.normal(0, 0.12)
        bump = np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * 0.08**2))
        direction = rng.normal(size=3)
        d = d + 0.5 * max(float(np.abs(d).max()), 0.01) * bump[:, None] * (direction / np.linalg.norm(direction))
        deltas.append((d * scale).reshape(-1))
    np.savez(path, meanshape=(face.points * scale).astype(np.float32),
             blendshape=np.asarray(deltas, np.float32))


def write_flame_model(path: Path, face: FaceModel, scale: float) -> None:
    """A FLAME-2020-like ``generic_model.pkl``: same keys, shapes and pickle form (J_regressor sparse).

    5 joints (global, neck, jaw, left eye, right eye) as FLAME; 300 shape + 100 expression directions whose
    first expression directions are the face's lip/cheek/brow/blink fields; jaw-driven lower face via LBS.
    """
    import scipy.sparse as sp

    rng = np.random.default_rng(12)
    V = len(face.points)
    v_template = face.points * scale
    x, y = face.points[:, 0], face.points[:, 1]
    basis = np.stack([np.ones_like(x), x, y, x * y, x**2, y**2], axis=1)  # (V, 6)
    shapedirs = np.zeros((V, 3, 400))
    for k in range(300):
        c = rng.normal(0, 0.01 / (1 + k / 10), size=(6, 3))
        shapedirs[:, :, k] = basis @ c
    for k, name in enumerate(["spread", "cheek", "brow", "blink"]):
        shapedirs[:, :, 300 + k] = face.fields[name] * 0.5
    for k in range(304, 400):
        shapedirs[:, :, k] = basis @ rng.normal(0, 0.001, size=(6, 3))
    shapedirs *= scale
    posedirs = rng.normal(0, 1e-4, size=(V, 3, 36)) * scale
    below = np.clip((-0.53 - y) / 0.25, 0, 1)
    weights = np.zeros((V, 5))
    weights[:, 2] = below
    weights[:, 1] = 1 - below
    groups = [np.arange(V), np.flatnonzero(y < -1.0), np.flatnonzero(np.abs(y + 0.55) < 0.08),
              np.flatnonzero(np.hypot(x + 0.38, y - 0.42) < 0.1), np.flatnonzero(np.hypot(x - 0.38, y - 0.42) < 0.1)]
    rows, cols, vals = [], [], []
    for j, g in enumerate(groups):
        g = g if len(g) else np.arange(V)
        rows += [j] * len(g)
        cols += list(g)
        vals += [1.0 / len(g)] * len(g)
    J_regressor = sp.csc_matrix((vals, (rows, cols)), shape=(5, V))
    model = {
        "f": face.faces.astype(np.uint32),
        "v_template": _ChumpyArray(v_template),  # chumpy objects, as in FLAME 2020's pickle
        "shapedirs": _ChumpyArray(shapedirs),
        "posedirs": _ChumpyArray(posedirs),
        "J_regressor": J_regressor,
        "kintree_table": np.array([[4294967295, 0, 1, 1, 1], [0, 1, 2, 3, 4]], dtype=np.int64),
        "weights": _ChumpyArray(weights),
        "bs_style": "lbs",
        "bs_type": "lrotmin",
    }
    with open(path, "wb") as fh:
        _ChumpyPickler(fh, protocol=2).dump(model)


class _ChumpyArray:
    """An array that pickles the way a plain ``chumpy.ch.Ch`` does (``NEWOBJ`` of the global ``chumpy.ch Ch``
    with its ``__dict__`` as state, ``x`` holding the values), written without chumpy installed."""

    def __init__(self, x: np.ndarray):
        self.x = np.asarray(x, np.float64)

    def __reduce_ex__(self, protocol: int):  # noqa: ANN204
        import copyreg

        state = {"x": self.x, "_dirty_vars": set(), "_itr": None, "_depends_on_deps": {}, "_make_dense": False,
                 "_make_sparse": False}
        return (copyreg.__newobj__, (type(self),), state)


class _ChumpyPickler(pickle._Pickler):  # type: ignore[name-defined]  # the Python pickler lets us name the class
    def save_global(self, obj, name=None):  # noqa: ANN001, ANN201
        if obj is _ChumpyArray:
            self.write(pickle.GLOBAL + b"chumpy.ch\nCh\n")
            self.memoize(obj)
            return
        super().save_global(obj, name)


# ------------------------------------------------------------------------------------------ layouts
def _write_vertices_npy(gen: _Gen, root: Path, plans: list[SeqPlan], bar: tqdm) -> None:
    (root / "vertices_npy").mkdir(parents=True, exist_ok=True)
    (root / "wav").mkdir(exist_ok=True)
    templates = {}
    for p in plans:
        audio, coefs, _ = gen.sequence(p)
        np.save(root / "vertices_npy" / f"{p.id}.npy", gen.vertices(p, coefs))
        write_wav(root / "wav" / f"{p.id}.wav", audio, gen.spec.synth.audio_rate)
        templates[p.subject] = gen.template(p.subject).astype(np.dtype(gen.spec.dtype))
        bar.update(1)
    with open(root / "templates.pkl", "wb") as fh:
        pickle.dump(templates, fh, protocol=2)


def _write_vocaset_release(gen: _Gen, root: Path, plans: list[SeqPlan], bar: tqdm) -> None:
    sr = gen.spec.synth.audio_rate
    V = gen.space.n_vertices or 0
    total = sum(int(round(p.seconds * gen.spec.fps_native)) for p in plans)
    verts = np.lib.format.open_memmap(root / "data_verts.npy", mode="w+", dtype=np.dtype(gen.spec.dtype),
                                      shape=(total, V, 3))
    idx: dict = {}
    audio_d: dict = {}
    templates = {}
    at = 0
    for p in plans:
        audio, coefs, _ = gen.sequence(p)
        m = gen.vertices(p, coefs).reshape(-1, V, 3)
        verts[at: at + len(m)] = m
        subj, seq = p.id.rsplit("_", 1)
        idx.setdefault(subj, {})[seq] = {f: at + f - 1 for f in range(1, len(m) + 1)}
        pcm = np.clip(np.round(audio * 32767), -32768, 32767).astype(np.int16)
        audio_d.setdefault(subj, {})[seq] = {"audio": pcm, "sample_rate": sr}
        templates[subj] = gen.template(subj).astype(np.dtype(gen.spec.dtype))
        at += len(m)
        bar.update(1)
    verts.flush()
    del verts
    for name, obj in (("subj_seq_to_idx.pkl", idx), ("raw_audio_fixed.pkl", audio_d), ("templates.pkl", templates)):
        with open(root / name, "wb") as fh:
            pickle.dump(obj, fh, protocol=2)


def _write_clip_pairs(gen: _Gen, root: Path, plans: list[SeqPlan], bar: tqdm) -> None:
    for p in plans:
        audio, coefs, _ = gen.sequence(p)
        np.save(root / f"{p.id}.npy", gen.params(p, coefs))
        write_wav(root / f"{p.id}.wav", audio, gen.spec.synth.audio_rate)
        bar.update(1)


def _write_unitalker_release(gen: _Gen, root: Path, plans: list[SeqPlan], bar: tqdm) -> None:
    subjects = list(dict.fromkeys(p.subject for p in plans))
    ids = {s: i for i, s in enumerate(subjects)}
    entries: dict[str, list] = {s: [] for s in gen.spec.split_names}
    sums: dict[str, list] = {s: [] for s in subjects}
    for p in plans:
        split = p.split or "train"
        (root / split).mkdir(parents=True, exist_ok=True)
        audio, coefs, _ = gen.sequence(p)
        motion = gen.params(p, coefs) if not gen.space.is_vertex else gen.vertices(p, coefs)
        np.save(root / split / f"{p.id}.npy", motion)
        sums[p.subject].append(motion)
        if gen.spec.synth.audio_format == "npy":
            from .audio import resample

            apath = f"{split}/{p.id}_audio.npy"
            np.save(root / apath, resample(audio, gen.spec.synth.audio_rate, 16000))
        else:
            apath = f"{split}/{p.id}.wav"
            write_wav(root / apath, audio, gen.spec.synth.audio_rate)
        entries[split].append({"annot_type": gen.spec.space, "annot_path": f"{split}/{p.id}.npy",
                               "audio_path": apath, "id": ids[p.subject], "fps": int(gen.spec.fps_native),
                               "dataset": gen.spec.id})
        bar.update(1)
    for split, data in entries.items():
        with open(root / f"{split}.json", "w") as fh:
            json.dump({"info": {"id_list": subjects}, "data": data}, fh, indent=1)
    tmpl = np.stack([np.concatenate(sums[s]).mean(0) for s in subjects]).astype(np.float32)
    np.save(root / "id_template.npy", tmpl)


_WRITERS: dict[str, Callable[[_Gen, Path, list[SeqPlan], tqdm], None]] = {
    "vertices_npy": _write_vertices_npy,
    "vocaset_release": _write_vocaset_release,
    "clip_pairs": _write_clip_pairs,
    "unitalker_release": _write_unitalker_release,
}


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
    if spec.splits.rule == "subject_hash":  # assigned by prepare from the subject names: ask it
        from .prepare import assign_splits
        from .readers import RawItem

        got, _, _ = assign_splits(spec, [RawItem(p.id, p.subject, spec.fps_native, lambda: None, lambda: None, [])
                                         for p in plans])
        split_of = {sid: k for k, ids in got.items() for sid in ids}
    by: dict[str, list[SeqPlan]] = {}
    for p in plans:
        by.setdefault(str(split_of[p.id]), []).append(p)
    return {**stats(plans), "bytes": estimate_bytes(spec, size, seed), "splits": {k: stats(v) for k, v in by.items()}}


def synth_dataset(spec: DatasetSpec, out: str | os.PathLike, size: Size = "tiny", seed: int = 0,
                  layout: Optional[str] = None, progress: bool = True,
                  splits: Optional[list[str]] = None) -> Path:
    """Write the stand-in of one dataset to ``out/<id>/`` (atomically) and return that folder.

    ``splits`` keeps only the sequences of those splits (benchmarks use it to build, e.g., the full-size
    BIWI training split without the rest).
    """
    layout = layout or spec.layouts[0]
    if layout not in spec.layouts:
        raise A2FBenchError(f"{spec.id} has no layout {layout!r}; expected one of {', '.join(spec.layouts)}")
    target = Path(out) / spec.id
    keep = (lambda p: p.split in splits) if splits else (lambda p: True)
    need = estimate_bytes(spec, size, seed, keep)
    Path(out).mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(out).free
    if need > 0.95 * free:
        raise A2FBenchError(f"synth {spec.id} --size {size}: expected {need / 1e9:.1f} GB free disk, found "
                            f"{free / 1e9:.1f} GB; free space or choose a smaller --size")
    plans = [p for p in plan(spec, size, seed) if keep(p)]
    gen = _Gen(spec, seed)
    with atomic_path(target, is_dir=True) as tmp:
        with tqdm(total=len(plans), desc=f"synth {spec.id}", unit="seq", disable=not progress, leave=False) as bar:
            _WRITERS[layout](gen, tmp, plans, bar)
        write_resources(gen, tmp)
        (tmp / MARKER).write_text(json.dumps({"dataset": spec.id, "size": size, "seed": seed, "layout": layout,
                                              "a2fbench_version": __version__, "n_sequences": len(plans)}, indent=1))
    return target
