"""ARKit blendshape weights -> Live Link Face CSV (the take export of Epic's iOS app).

Layout, as the app writes it (see README "Sources"): one header row, then one row per frame::

    Timecode,BlendShapeCount,EyeBlinkLeft,EyeLookDownLeft,...,TongueOut,HeadYaw,HeadPitch,HeadRoll,
    LeftEyeYaw,LeftEyePitch,LeftEyeRoll,RightEyeYaw,RightEyePitch,RightEyeRoll
    12:27:47:47.169,61,0.0000000000,...

* ``Timecode`` is ``HH:MM:SS:FF.sss``: FF counts frames of the timecode rate (60 in the app's files, which
  step by 2 for a 30 Hz capture) and ``.sss`` is the sub-frame fraction in thousandths.
* ``BlendShapeCount`` is 61: the 52 ARKit coefficients plus the 9 head/eye rotation columns.
* The 52 names are Apple's ARKit names in PascalCase, in the app's (ARFaceAnchor) order, not alphabetical.
  Rotation columns are written as 0 (audio-driven models predict no head or gaze).
* Values are written with 10 decimals and LF line endings, as in the app's files.

Input is (T, 52) or (T, 51) weights in EmoTalk's alphabetical order (:data:`EMOTALK_ORDER`; 51 = without
``tongueOut``, written as 0) or in any order given by ``names``. Columns are matched by name
(case-insensitive), never by position. Weights are clamped to [0, 1], ARKit's range; the number of clamped
entries is returned. The file is written beside the target under a temporary name and renamed into place.

numpy and the standard library only.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np

from .files import atomic_file

__all__ = [
    "BLEND_SHAPE_COUNT",
    "EMOTALK_ORDER",
    "HEADER",
    "LIVE_LINK_FACE_ORDER",
    "ROTATION_COLUMNS",
    "CsvResult",
    "read_arkit_csv",
    "timecodes",
    "to_live_link_order",
    "write_arkit_csv",
]

EMOTALK_ORDER: tuple[str, ...] = (
    "browDownLeft", "browDownRight", "browInnerUp", "browOuterUpLeft", "browOuterUpRight", "cheekPuff",
    "cheekSquintLeft", "cheekSquintRight", "eyeBlinkLeft", "eyeBlinkRight", "eyeLookDownLeft",
    "eyeLookDownRight", "eyeLookInLeft", "eyeLookInRight", "eyeLookOutLeft", "eyeLookOutRight",
    "eyeLookUpLeft", "eyeLookUpRight", "eyeSquintLeft", "eyeSquintRight", "eyeWideLeft", "eyeWideRight",
    "jawForward", "jawLeft", "jawOpen", "jawRight", "mouthClose", "mouthDimpleLeft", "mouthDimpleRight",
    "mouthFrownLeft", "mouthFrownRight", "mouthFunnel", "mouthLeft", "mouthLowerDownLeft",
    "mouthLowerDownRight", "mouthPressLeft", "mouthPressRight", "mouthPucker", "mouthRight", "mouthRollLower",
    "mouthRollUpper", "mouthShrugLower", "mouthShrugUpper", "mouthSmileLeft", "mouthSmileRight",
    "mouthStretchLeft", "mouthStretchRight", "mouthUpperUpLeft", "mouthUpperUpRight", "noseSneerLeft",
    "noseSneerRight", "tongueOut")
"""The 52 ARKit names in alphabetical order (EmoTalk's output columns)."""

LIVE_LINK_FACE_ORDER: tuple[str, ...] = (
    "EyeBlinkLeft", "EyeLookDownLeft", "EyeLookInLeft", "EyeLookOutLeft", "EyeLookUpLeft", "EyeSquintLeft",
    "EyeWideLeft", "EyeBlinkRight", "EyeLookDownRight", "EyeLookInRight", "EyeLookOutRight", "EyeLookUpRight",
    "EyeSquintRight", "EyeWideRight", "JawForward", "JawRight", "JawLeft", "JawOpen", "MouthClose",
    "MouthFunnel", "MouthPucker", "MouthRight", "MouthLeft", "MouthSmileLeft", "MouthSmileRight",
    "MouthFrownLeft", "MouthFrownRight", "MouthDimpleLeft", "MouthDimpleRight", "MouthStretchLeft",
    "MouthStretchRight", "MouthRollLower", "MouthRollUpper", "MouthShrugLower", "MouthShrugUpper",
    "MouthPressLeft", "MouthPressRight", "MouthLowerDownLeft", "MouthLowerDownRight", "MouthUpperUpLeft",
    "MouthUpperUpRight", "BrowDownLeft", "BrowDownRight", "BrowInnerUp", "BrowOuterUpLeft", "BrowOuterUpRight",
    "CheekPuff", "CheekSquintLeft", "CheekSquintRight", "NoseSneerLeft", "NoseSneerRight", "TongueOut")
"""The 52 blendshape columns of a Live Link Face CSV, in the app's order and capitalisation."""

ROTATION_COLUMNS: tuple[str, ...] = ("HeadYaw", "HeadPitch", "HeadRoll", "LeftEyeYaw", "LeftEyePitch",
                                     "LeftEyeRoll", "RightEyeYaw", "RightEyePitch", "RightEyeRoll")
HEADER: tuple[str, ...] = ("Timecode", "BlendShapeCount") + LIVE_LINK_FACE_ORDER + ROTATION_COLUMNS
BLEND_SHAPE_COUNT = len(LIVE_LINK_FACE_ORDER) + len(ROTATION_COLUMNS)  # 61, as the app writes

_LLF_INDEX = {n.lower(): i for i, n in enumerate(LIVE_LINK_FACE_ORDER)}


class CsvResult(NamedTuple):
    path: Path
    frames: int
    clamped: int  # entries outside [0, 1] that were clamped


def to_live_link_order(weights: np.ndarray, names: Sequence[str] | None = None) -> np.ndarray:
    """(T, 52|51) weights in ``names`` order (default: EmoTalk's alphabetical order, minus ``tongueOut``
    when 51 wide) -> (T, 52) float64 in :data:`LIVE_LINK_FACE_ORDER`, matched by case-insensitive name.
    Only ``tongueOut`` may be missing (it is then 0); unknown or repeated names raise ValueError."""
    w = np.asarray(weights, dtype=np.float64)
    if w.ndim != 2:
        raise ValueError(f"weights must be (T, C), got shape {w.shape}")
    if names is None:
        if w.shape[1] == 52:
            names = EMOTALK_ORDER
        elif w.shape[1] == 51:
            names = EMOTALK_ORDER[:51]
        else:
            raise ValueError(f"expected 52 or 51 ARKit channels in EmoTalk order, got {w.shape[1]}; "
                             "pass names= for another layout")
    keys = [str(n).lower() for n in names]
    if len(keys) != w.shape[1]:
        raise ValueError(f"{len(keys)} names for {w.shape[1]} weight columns")
    unknown = [n for n, k in zip(names, keys) if k not in _LLF_INDEX]
    if unknown or len(set(keys)) != len(keys):
        raise ValueError(f"names must be distinct ARKit blendshape names; unknown: {unknown}")
    missing = [n for n in LIVE_LINK_FACE_ORDER if n.lower() not in set(keys)]
    if missing not in ([], ["TongueOut"]):
        raise ValueError(f"weights lack ARKit channels {missing}; only TongueOut may be absent")
    out = np.zeros((len(w), len(LIVE_LINK_FACE_ORDER)))
    out[:, [_LLF_INDEX[k] for k in keys]] = w
    return out


def timecodes(n_frames: int, fps: float, rate: int = 60, start_seconds: float = 0.0) -> list[str]:
    """``HH:MM:SS:FF.sss`` for frame i at ``start_seconds + i / fps``: FF in frames of ``rate`` per second,
    ``.sss`` the sub-frame in thousandths (rounded); hours wrap at 24 as timecode does."""
    if not (np.isfinite(fps) and fps > 0) or int(rate) != rate or rate < 1:
        raise ValueError(f"fps must be > 0 and rate a positive integer, got fps={fps} rate={rate}")
    rate = int(rate)
    sec = start_seconds + np.arange(n_frames, dtype=np.float64) / float(fps)
    q = np.rint(sec * rate * 1000.0).astype(np.int64)  # thousandths of a timecode frame
    whole, sub = np.divmod(q, 1000)
    secs, ff = np.divmod(whole, rate)
    mins, ss = np.divmod(secs, 60)
    hh, mm = np.divmod(mins, 60)
    hh %= 24
    fmt = "%02d:%02d:%02d:%02d.%03d"
    return [fmt % row for row in zip(hh.tolist(), mm.tolist(), ss.tolist(), ff.tolist(), sub.tolist())]


def write_arkit_csv(path: str | os.PathLike, weights: np.ndarray, fps: float, *,
                    names: Sequence[str] | None = None, timecode_rate: int = 60, start_seconds: float = 0.0,
                    decimals: int = 10, fsync: bool = True) -> CsvResult:
    """Write (T, 52|51) ARKit weights as a Live Link Face CSV (header + T rows; see module doc).

    fps: the weights' frame rate (row i is at ``i / fps`` s). timecode_rate: frames per second of the
    Timecode column (60 like the app). Values are clamped to [0, 1]; the count is returned.
    """
    path = Path(path)
    w = to_live_link_order(weights, names)
    if not np.all(np.isfinite(w)):
        raise ValueError("weights hold NaN or infinite values")
    clamped = int(np.count_nonzero((w < 0.0) | (w > 1.0)))
    w = np.clip(w, 0.0, 1.0) + 0.0  # + 0.0 turns -0.0 into 0.0 (no "-0.0000000000")
    n = len(w)
    table = np.concatenate([w, np.zeros((n, len(ROTATION_COLUMNS)))], axis=1)
    row_fmt = "%s," + str(BLEND_SHAPE_COUNT) + ("," + f"%.{int(decimals)}f") * table.shape[1] + "\n"
    tcs = timecodes(n, fps, timecode_rate, start_seconds)
    body_fmt = row_fmt * n  # one C-level formatting pass over the whole table, no per-row Python loop
    args: list = [None] * (n * (table.shape[1] + 1))
    stride = table.shape[1] + 1
    args[0::stride] = tcs
    for j in range(table.shape[1]):
        args[j + 1::stride] = table[:, j].tolist()
    text = ",".join(HEADER) + "\n" + (body_fmt % tuple(args))

    with atomic_file(path, fsync=fsync) as fh:
        fh.write(text.encode("ascii"))
    return CsvResult(path, n, clamped)


def read_arkit_csv(path: str | os.PathLike) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Read a Live Link Face CSV (ours or the app's): (timecodes, (T, 52) weights in
    :data:`EMOTALK_ORDER`, (T, 9) rotations in :data:`ROTATION_COLUMNS` order; absent columns are 0).
    Columns are found by header name, so files with another column order also load."""
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    if not lines or not lines[0].startswith("Timecode,"):
        raise ValueError(f"{path}: not a Live Link Face CSV (first header column must be Timecode)")
    header = [h.strip() for h in lines[0].split(",")]
    rows = [ln.split(",") for ln in lines[1:] if ln.strip()]
    bad = [i for i, r in enumerate(rows) if len(r) != len(header)]
    if bad:
        raise ValueError(f"{path}: rows {bad[:5]} have a column count other than the header's {len(header)}")
    col = {h.lower(): i for i, h in enumerate(header)}
    data = np.array([r[2:] for r in rows], dtype=np.float64).reshape(len(rows), len(header) - 2)
    weights = np.zeros((len(rows), 52))
    for j, name in enumerate(EMOTALK_ORDER):
        if name.lower() in col:
            weights[:, j] = data[:, col[name.lower()] - 2]
    rot = np.zeros((len(rows), len(ROTATION_COLUMNS)))
    for j, name in enumerate(ROTATION_COLUMNS):
        if name.lower() in col:
            rot[:, j] = data[:, col[name.lower()] - 2]
    return [r[0] for r in rows], weights, rot
