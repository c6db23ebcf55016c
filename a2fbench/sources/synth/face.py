"""Building blocks of the synthetic stand-ins: a speech-like audio generator and a face whose motion it drives.

The audio is a sequence of syllables: a glottal harmonic series at the speaker's pitch, shaped by two vowel
formants and an amplitude envelope, separated by pauses and noise-burst consonants. The motion is driven by
*what is audible*: jaw opening follows the envelope times the vowel's openness (F1), lip spread/rounding
follows the vowel's front/back quality (F2), each scaled by a per-subject style. The upper face has blinks and
brow motion that are independent of the audio. A model can therefore learn the lower face from audio, and a
static template cannot match it.

Everything is deterministic given a ``numpy.random.Generator``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# vowel: (F1 Hz, F2 Hz, openness, spread)  spread > 0 spread lips, < 0 round/pucker
VOWELS = {
    "a": (800.0, 1300.0, 1.00, 0.15),
    "e": (500.0, 1900.0, 0.60, 0.60),
    "i": (300.0, 2300.0, 0.30, 1.00),
    "o": (500.0, 900.0, 0.70, -0.60),
    "u": (320.0, 800.0, 0.35, -1.00),
}
_VOWEL_KEYS = list(VOWELS)


@dataclass
class Drive:
    """Articulatory curves sampled at arbitrary times (seconds)."""

    times: np.ndarray  # (S,) syllable onsets
    ends: np.ndarray  # (S,) syllable ends
    openness: np.ndarray  # (S,)
    spread: np.ndarray  # (S,)
    blink_times: np.ndarray
    brow_knots: np.ndarray  # (K,) brow values at 1 s knots
    duration: float

    def envelope(self, t: np.ndarray) -> np.ndarray:
        """Per-syllable raised-cosine envelope; returns (S, len(t)) weights (zero outside a syllable)."""
        on, off = self.times[:, None], self.ends[:, None]
        x = (t[None, :] - on) / np.maximum(off - on, 1e-6)
        w = np.where((x >= 0) & (x <= 1), np.sin(np.pi * np.clip(x, 0, 1)) ** 2, 0.0)
        return w

    def curves(self, t: np.ndarray) -> dict[str, np.ndarray]:
        w = self.envelope(t)
        jaw = (w * self.openness[:, None]).sum(0)
        spread = (w * self.spread[:, None]).sum(0)
        blink = np.zeros_like(t)
        for bt in self.blink_times:
            blink = np.maximum(blink, np.exp(-0.5 * ((t - bt) / 0.045) ** 2))
        knots_t = np.arange(len(self.brow_knots), dtype=np.float64)
        brow = np.interp(t, knots_t, self.brow_knots)
        return {"jaw": jaw, "spread": spread, "blink": blink, "brow": brow}


def make_drive(rng: np.random.Generator, duration: float) -> Drive:
    onsets, ends, opn, spr = [], [], [], []
    t = rng.uniform(0.02, 0.15)
    while t < duration - 0.1:
        length = rng.uniform(0.12, 0.28)
        v = VOWELS[_VOWEL_KEYS[rng.integers(len(_VOWEL_KEYS))]]
        onsets.append(t)
        ends.append(min(t + length, duration))
        loud = rng.uniform(0.7, 1.0)
        opn.append(v[2] * loud)
        spr.append(v[3] * loud)
        t += length + (rng.uniform(0.25, 0.5) if rng.random() < 0.15 else rng.uniform(0.02, 0.08))
    n_blinks = rng.poisson(max(duration / 3.0, 0.3))
    blinks = np.sort(rng.uniform(0, duration, size=n_blinks))
    brow = np.cumsum(rng.normal(0, 0.3, size=int(np.ceil(duration)) + 2))
    brow = 0.5 * np.tanh(brow)
    return Drive(np.array(onsets), np.array(ends), np.array(opn), np.array(spr), blinks, brow, duration)


def render_audio(rng: np.random.Generator, drive: Drive, sr: int, f0: float) -> np.ndarray:
    """Speech-like mono float32 audio in [-1, 1] for ``drive`` at sample rate ``sr``."""
    n = int(round(drive.duration * sr))
    t = np.arange(n) / sr
    out = np.zeros(n)
    # pitch contour: slow declination + per-syllable accent
    for on, off, o, s in zip(drive.times, drive.ends, drive.openness, drive.spread):
        i0, i1 = int(on * sr), min(int(off * sr), n)
        if i1 <= i0:
            continue
        tt = t[i0:i1] - on
        x = tt / max(off - on, 1e-6)
        env = np.sin(np.pi * x) ** 2
        # recover the vowel formants from (openness, spread) so the audio carries them
        f1 = 250.0 + 600.0 * o
        f2 = 1400.0 + 850.0 * s
        pitch = f0 * (1.0 + 0.08 * np.sin(np.pi * x))
        phase = 2 * np.pi * np.cumsum(pitch) / sr
        seg = np.zeros(i1 - i0)
        nh = int(min(4500.0, 0.45 * sr) // f0)
        for h in range(1, nh + 1):
            fh = h * f0
            gain = np.exp(-0.5 * ((fh - f1) / 120.0) ** 2) + 0.7 * np.exp(-0.5 * ((fh - f2) / 180.0) ** 2) + 0.02
            seg += gain / h**0.3 * np.sin(h * phase)
        out[i0:i1] += env * seg
        # a consonant burst before the vowel
        b = int(0.03 * sr)
        j0 = max(i0 - b, 0)
        if i0 > j0:
            burst = rng.normal(0, 0.15, i0 - j0) * np.hanning(i0 - j0)
            out[j0:i0] += np.diff(burst, prepend=0.0)
    out += rng.normal(0, 0.003, n)
    peak = np.max(np.abs(out)) or 1.0
    return (0.8 * out / peak).astype(np.float32)


# ------------------------------------------------------------------------------------------------ face
@dataclass
class FaceModel:
    """A synthetic face: template (V,3) and named displacement fields (V,3), in unit-face coordinates."""

    points: np.ndarray  # (V, 3) unit face, x in [-1,1], y in [-1.3,1.3]
    fields: dict[str, np.ndarray]
    lips: np.ndarray  # vertex indices
    upper: np.ndarray
    eyes: np.ndarray
    forehead: np.ndarray
    faces: np.ndarray  # (F, 3) triangles


MOUTH = np.array([0.0, -0.55])


def make_face(n_vertices: int, seed: int = 0) -> FaceModel:
    """A deterministic face-like surface with ``n_vertices`` vertices and its motion fields."""
    rng = np.random.default_rng([seed, n_vertices, 7])
    # quasi-uniform points on the (x, y) ellipse, mouth region denser
    pts = []
    while sum(len(p) for p in pts) < n_vertices:
        xy = rng.uniform([-1, -1.3], [1, 1.3], size=(n_vertices, 2))
        inside = (xy[:, 0] ** 2 + (xy[:, 1] / 1.3) ** 2) <= 1.0
        pts.append(xy[inside])
        dense = MOUTH + rng.normal(0, 0.18, size=(n_vertices // 6, 2))
        pts.append(dense[(dense[:, 0] ** 2 + (dense[:, 1] / 1.3) ** 2) <= 1.0])
    xy = np.concatenate(pts)[:n_vertices]
    order = np.lexsort((xy[:, 0], np.round(xy[:, 1], 2)))
    xy = xy[order]
    z = 0.6 * np.sqrt(np.clip(1 - xy[:, 0] ** 2 - (xy[:, 1] / 1.3) ** 2, 0, None))
    nose = 0.25 * np.exp(-((xy[:, 0] / 0.12) ** 2 + ((xy[:, 1] + 0.05) / 0.3) ** 2))
    points = np.column_stack([xy, z + nose])
    x, y = xy[:, 0], xy[:, 1]
    r_mouth = np.hypot((x - MOUTH[0]) / 1.3, y - MOUTH[1])
    lips = np.flatnonzero(r_mouth < 0.2)
    below = np.clip((MOUTH[1] + 0.02 - y) / 0.7, 0, 1)  # 0 at the mouth, 1 at the chin
    jaw = np.zeros_like(points)
    jaw[:, 1] = -0.12 * np.where(y < MOUTH[1] + 0.02, 0.35 + 0.65 * below, 0.0)
    jaw[:, 2] = -0.03 * below
    lipw = np.exp(-((r_mouth / 0.16) ** 2))
    spread = np.zeros_like(points)
    spread[:, 0] = 0.10 * lipw * np.tanh((x - MOUTH[0]) / 0.08)
    spread[:, 2] = -0.06 * lipw
    eye_r = np.minimum(np.hypot(x - 0.38, y - 0.42), np.hypot(x + 0.38, y - 0.42))
    eyes = np.flatnonzero(eye_r < 0.16)
    blink = np.zeros_like(points)
    blink[:, 1] = -0.05 * np.exp(-((eye_r / 0.1) ** 2))
    brow_w = np.exp(-(((y - 0.72) / 0.12) ** 2)) * (np.abs(x) < 0.8)
    brow = np.zeros_like(points)
    brow[:, 1] = 0.05 * brow_w
    cheek = np.zeros_like(points)
    cheek_w = np.exp(-((np.hypot(np.abs(x) - 0.45, y + 0.25) / 0.18) ** 2))
    cheek[:, 2] = 0.04 * cheek_w
    upper = np.flatnonzero(y > 0.3)
    forehead = np.flatnonzero(y > 0.65)
    try:
        from scipy.spatial import Delaunay

        faces = Delaunay(xy).simplices.astype(np.int64)
    except Exception:  # noqa: BLE001 - degenerate tiny meshes
        faces = np.zeros((0, 3), np.int64)
    return FaceModel(points, {"jaw": jaw, "spread": spread, "blink": blink, "brow": brow, "cheek": cheek},
                     lips, upper, eyes, forehead, faces)


def subject_style(rng: np.random.Generator) -> dict[str, float]:
    return {
        "jaw": float(rng.uniform(0.75, 1.25)),
        "spread": float(rng.uniform(0.7, 1.3)),
        "f0": float(rng.uniform(95.0, 230.0)),
        "brow": float(rng.uniform(0.5, 1.0)),
    }


def subject_shape(face: FaceModel, rng: np.random.Generator) -> np.ndarray:
    """A smooth per-subject deformation of the template (unit-face coordinates)."""
    x, y = face.points[:, 0], face.points[:, 1]
    c = rng.normal(0, 0.03, size=(3, 4))
    basis = np.stack([np.ones_like(x), x, y, x * y])
    return (c @ basis).T


def motion_coefficients(drive: Drive, style: dict[str, float], t: np.ndarray) -> dict[str, np.ndarray]:
    """Field weights per frame time ``t``: jaw, spread, blink, brow, cheek."""
    c = drive.curves(t)
    return {
        "jaw": style["jaw"] * c["jaw"],
        "spread": style["spread"] * c["spread"],
        "blink": c["blink"],
        "brow": style["brow"] * c["brow"],
        "cheek": 0.5 * style["spread"] * np.clip(c["spread"], 0, None),
    }


def vertex_motion(face: FaceModel, template: np.ndarray, coefs: dict[str, np.ndarray], scale: float,
                  rng: np.random.Generator, dtype: type = np.float32) -> np.ndarray:
    """Absolute vertex positions (T, 3V) = template + sum_k coef_k(t) * field_k, in dataset units."""
    names = list(face.fields)
    C = np.stack([coefs[k] for k in names], axis=1)  # (T, K)
    F = np.stack([face.fields[k].reshape(-1) for k in names])  # (K, 3V)
    m = template.reshape(1, -1) + scale * (C @ F)
    m += rng.normal(0, 2e-4 * scale, size=m.shape)
    return m.astype(dtype)
