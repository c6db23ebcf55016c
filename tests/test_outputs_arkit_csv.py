"""Live Link Face CSV: exact header, one row per frame, columns matched by name (one-hot), clamping."""
from __future__ import annotations

import os
import re

import numpy as np
import pytest

from a2fbench.outputs.arkit_csv import (
    EMOTALK_ORDER,
    HEADER,
    LIVE_LINK_FACE_ORDER,
    read_arkit_csv,
    timecodes,
    write_arkit_csv,
)

# Header row of a take exported by the Live Link Face app (anim/alex_rom_3.csv in
# github.com/alexdjulin/LiveLinkFace-CSV-Retarget-For-Motionbuilder), copied verbatim.
APP_HEADER = (
    "Timecode,BlendShapeCount,EyeBlinkLeft,EyeLookDownLeft,EyeLookInLeft,EyeLookOutLeft,EyeLookUpLeft,"
    "EyeSquintLeft,EyeWideLeft,EyeBlinkRight,EyeLookDownRight,EyeLookInRight,EyeLookOutRight,EyeLookUpRight,"
    "EyeSquintRight,EyeWideRight,JawForward,JawRight,JawLeft,JawOpen,MouthClose,MouthFunnel,MouthPucker,"
    "MouthRight,MouthLeft,MouthSmileLeft,MouthSmileRight,MouthFrownLeft,MouthFrownRight,MouthDimpleLeft,"
    "MouthDimpleRight,MouthStretchLeft,MouthStretchRight,MouthRollLower,MouthRollUpper,MouthShrugLower,"
    "MouthShrugUpper,MouthPressLeft,MouthPressRight,MouthLowerDownLeft,MouthLowerDownRight,MouthUpperUpLeft,"
    "MouthUpperUpRight,BrowDownLeft,BrowDownRight,BrowInnerUp,BrowOuterUpLeft,BrowOuterUpRight,CheekPuff,"
    "CheekSquintLeft,CheekSquintRight,NoseSneerLeft,NoseSneerRight,TongueOut,HeadYaw,HeadPitch,HeadRoll,"
    "LeftEyeYaw,LeftEyePitch,LeftEyeRoll,RightEyeYaw,RightEyePitch,RightEyeRoll")
TC = re.compile(r"^\d\d:\d\d:\d\d:\d\d\.\d\d\d$")


def rows(path):
    text = path.read_bytes().decode("ascii")
    assert text.endswith("\n") and "\r" not in text
    lines = text[:-1].split("\n")
    return lines[0], [ln.split(",") for ln in lines[1:]]


def test_header_exact_and_row_count(tmp_path):
    w = np.random.default_rng(0).uniform(0, 1, (37, 52))
    res = write_arkit_csv(tmp_path / "a.csv", w, 30)
    header, body = rows(res.path)
    assert header == APP_HEADER == ",".join(HEADER)
    assert res.frames == len(body) == 37 and res.clamped == 0
    for r in body:
        assert len(r) == 63 and TC.match(r[0]) and r[1] == "61"
        assert all(float(x) == 0.0 for x in r[-9:])  # head / eye rotations


def test_one_hot_lands_in_the_named_column(tmp_path):
    header_names = APP_HEADER.split(",")
    res = write_arkit_csv(tmp_path / "h.csv", np.eye(52), 60)  # frame j = channel j (EmoTalk order) at 1
    _, body = rows(res.path)
    for j, r in enumerate(body):
        vals = np.array(r[2:], dtype=float)
        (hot,) = np.nonzero(vals)
        assert len(hot) == 1 and vals[hot[0]] == 1.0
        assert header_names[2 + hot[0]].lower() == EMOTALK_ORDER[j].lower()


def test_51_channels_write_tongue_out_zero(tmp_path):
    w = np.full((4, 51), 0.25)
    _, body = rows(write_arkit_csv(tmp_path / "b.csv", w, 30).path)
    t = APP_HEADER.split(",").index("TongueOut")
    for r in body:
        assert float(r[t]) == 0.0
        assert sum(float(x) == 0.25 for x in r[2:54]) == 51


def test_custom_names_reorder_and_roundtrip(tmp_path):
    rng = np.random.default_rng(1)
    w = rng.uniform(0, 1, (20, 52))
    res = write_arkit_csv(tmp_path / "c.csv", w[:, ::-1], 30, names=list(LIVE_LINK_FACE_ORDER)[::-1],
                          decimals=10)
    # names were given in reversed Live Link order, so undo that to compare with EmoTalk order
    _, back, rot = read_arkit_csv(res.path)
    order = [LIVE_LINK_FACE_ORDER.index(n[0].upper() + n[1:]) for n in EMOTALK_ORDER]
    np.testing.assert_allclose(back, w[:, order], atol=0.5e-10)
    assert not rot.any()


def test_roundtrip_emotalk_order(tmp_path):
    w = np.random.default_rng(2).uniform(0, 1, (15, 52))
    tc, back, _ = read_arkit_csv(write_arkit_csv(tmp_path / "d.csv", w, 25, decimals=6).path)
    np.testing.assert_allclose(back, w, atol=0.5e-6 + 1e-12)
    assert tc == timecodes(15, 25)


def test_clamps_and_counts(tmp_path):
    w = np.zeros((3, 52))
    w[0, 0], w[1, 5], w[2, 7], w[2, 8] = -0.2, 1.7, 1.0, -0.0
    res = write_arkit_csv(tmp_path / "e.csv", w, 30)
    assert res.clamped == 2
    _, back, _ = read_arkit_csv(res.path)
    assert back[0, 0] == 0.0 and back[1, 5] == 1.0 and back[2, 7] == 1.0
    assert "-0.0" not in res.path.read_text()


def test_timecodes():
    assert timecodes(4, 30) == ["00:00:00:00.000", "00:00:00:02.000", "00:00:00:04.000", "00:00:00:06.000"]
    assert timecodes(3, 25) == ["00:00:00:00.000", "00:00:00:02.400", "00:00:00:04.800"]
    assert timecodes(2, 30, rate=30) == ["00:00:00:00.000", "00:00:00:01.000"]
    assert timecodes(31, 30)[30] == "00:00:01:00.000"
    assert timecodes(1, 30, start_seconds=23 * 3600 + 59 * 60 + 59.5)[0] == "23:59:59:30.000"
    assert timecodes(1, 30, start_seconds=24 * 3600 + 61.0)[0] == "00:01:01:00.000"  # wraps at 24 h


def test_bad_input_leaves_nothing(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="52 or 51"):
        write_arkit_csv(tmp_path / "x.csv", np.zeros((3, 50)), 30)
    with pytest.raises(ValueError, match="lack"):
        write_arkit_csv(tmp_path / "x.csv", np.zeros((3, 2)), 30, names=["jawOpen", "tongueOut"])
    with pytest.raises(ValueError, match="NaN"):
        write_arkit_csv(tmp_path / "x.csv", np.full((3, 52), np.nan), 30)
    target = tmp_path / "keep.csv"
    target.write_text("old")

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError):
        write_arkit_csv(target, np.zeros((3, 52)), 30)
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["keep.csv"]
