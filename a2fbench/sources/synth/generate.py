"""One stand-in sequence: audio at the dataset's native rate and motion at its native fps, driven by the
same articulation curves (vertex motion through the face model, or ARKit / FLAME parameters)."""

from __future__ import annotations

import hashlib

import numpy as np

from ...registry import DatasetSpec, get_space, space_channels
from .face import (
    FaceModel,
    make_drive,
    make_face,
    motion_coefficients,
    render_audio,
    subject_shape,
    subject_style,
    vertex_motion,
)
from .plan import SeqPlan


class Generator:
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
