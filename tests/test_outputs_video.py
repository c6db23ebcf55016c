"""mp4 writing (decoded back with PyAV; atomic replace; streaming) and the frames of a clip (panels, error
colouring, captions)."""

from __future__ import annotations

import gc
import os
import weakref

import numpy as np
import pytest

from a2fbench.outputs import compose, video

SR = 16000


def frames(n, h=48, w=64, channels=3):
    for i in range(n):
        f = np.zeros((h, w, channels), np.uint8)
        f[..., 0] = (i * 7) % 256
        f[:, i % w, 1] = 255
        if channels == 4:
            f[..., 3] = 255
        yield f


def tone(seconds):
    t = np.arange(int(seconds * SR)) / SR
    return (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)


@pytest.mark.parametrize("fps,n,channels", [(30, 45, 3), (25, 40, 4), (60, 30, 3)])
def test_mp4_decodes_back(tmp_path, fps, n, channels):
    path = tmp_path / "clip.mp4"
    info = video.write_mp4(path, frames(n, channels=channels), fps, tone(n / fps), SR)
    assert info.frames == n and info.fps == fps and (info.width, info.height) == (64, 48)
    assert info.audio_padded_s == 0 and not info.warnings
    data = path.read_bytes()
    assert data[4:8] == b"ftyp" and b"vide" in data and b"soun" in data
    got = video.probe(path)
    assert got["frames"] == n and got["fps"] == pytest.approx(fps)
    assert (got["width"], got["height"]) == (64, 48)
    assert got["video_codec"] == "h264" and got["audio_codec"] == "aac"
    assert got["sample_rate"] == SR
    # AAC works in 1024-sample frames: decoded length is within one frame of the video's.
    assert abs(got["audio_duration_s"] - n / fps) <= 1024 / SR + 1e-6
    assert sorted(os.listdir(tmp_path)) == ["clip.mp4"]


def test_pixels_survive_encoding(tmp_path):
    import av

    img = np.zeros((64, 64, 3), np.uint8)
    img[:32, :32] = (255, 0, 0)
    img[32:, 32:] = (0, 0, 255)
    video.write_mp4(tmp_path / "p.mp4", [img] * 5, 10, crf=10)
    with av.open(str(tmp_path / "p.mp4")) as c:
        out = next(c.decode(video=0)).to_ndarray(format="rgb24").astype(int)
    assert np.abs(out[8:24, 8:24] - (255, 0, 0)).max() < 30
    assert np.abs(out[40:56, 40:56] - (0, 0, 255)).max() < 30
    assert np.abs(out[8:24, 40:56]).max() < 30


def test_short_audio_is_padded_and_reported(tmp_path):
    path = tmp_path / "a.mp4"
    with pytest.warns(UserWarning, match="padded"):
        info = video.write_mp4(path, frames(60), 30, tone(0.5), SR)
    assert info.audio_padded_s == pytest.approx(1.5, abs=1e-3)
    assert info.warnings and info.frames == 60
    got = video.probe(path)
    assert got["frames"] == 60
    assert abs(got["audio_duration_s"] - 2.0) <= 1024 / SR + 1e-6


def test_rounding_shortfall_is_padded_silently(tmp_path, recwarn):
    info = video.write_mp4(tmp_path / "r.mp4", frames(20), 30, np.zeros(10666, np.float32), SR)
    assert 0 < info.audio_padded_s < 1e-3 and not info.warnings and not recwarn.list


def test_long_audio_is_cut_to_the_video(tmp_path):
    info = video.write_mp4(tmp_path / "b.mp4", frames(30), 30, tone(5.0), SR)
    assert info.audio_truncated_s == pytest.approx(4.0, abs=1e-3)
    assert abs(video.probe(tmp_path / "b.mp4")["audio_duration_s"] - 1.0) <= 1024 / SR + 1e-6


def test_no_audio_means_no_sound_track(tmp_path):
    info = video.write_mp4(tmp_path / "c.mp4", frames(10), 30)
    assert not info.has_audio
    assert video.probe(tmp_path / "c.mp4")["audio_codec"] is None


def test_odd_sizes_are_padded_to_even(tmp_path):
    info = video.write_mp4(tmp_path / "d.mp4", frames(5, h=31, w=45), 30)
    assert (info.width, info.height) == (46, 32)
    got = video.probe(tmp_path / "d.mp4")
    assert (got["width"], got["height"]) == (46, 32)


def test_failing_iterator_leaves_no_file(tmp_path):
    def broken():
        yield from frames(5)
        raise RuntimeError("renderer crashed")

    path = tmp_path / "e.mp4"
    with pytest.raises(RuntimeError, match="renderer crashed"):
        video.write_mp4(path, broken(), 30, tone(1.0), SR)
    assert os.listdir(tmp_path) == []


def test_failure_keeps_the_previous_file(tmp_path):
    path = tmp_path / "f.mp4"
    path.write_bytes(b"old")

    def bad():
        yield np.zeros((16, 16, 3), np.uint8)
        yield np.zeros((16, 18, 3), np.uint8)  # size change

    with pytest.raises(ValueError, match="size changed"):
        video.write_mp4(path, bad(), 30)
    assert path.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["f.mp4"]


@pytest.mark.parametrize("bad", [[], [np.zeros((8, 8), np.uint8)], [np.zeros((8, 8, 3))]])
def test_bad_input_raises_and_leaves_nothing(tmp_path, bad):
    with pytest.raises(ValueError):
        video.write_mp4(tmp_path / "g.mp4", iter(bad), 30)
    assert os.listdir(tmp_path) == []


def test_frames_stream_without_being_kept(tmp_path):
    refs = []

    def gen():
        for f in frames(20):
            refs.append(weakref.ref(f))
            if len(refs) > 3:
                gc.collect()
                assert refs[-4]() is None, "an old frame is still referenced"
            yield f

    assert video.write_mp4(tmp_path / "h.mp4", gen(), 30).frames == 20


def test_fractional_fps(tmp_path):
    info = video.write_mp4(tmp_path / "i.mp4", frames(30), 30000 / 1001, tone(1.01), SR)
    assert info.fps == pytest.approx(29.97, abs=1e-3)
    assert video.probe(tmp_path / "i.mp4")["fps"] == pytest.approx(29.97, abs=1e-2)


# ---------------------------------------------------------------- frames of a clip (compose)
def sheet_mesh(n=12):
    """A flat n x n vertex sheet facing +z."""
    xs, ys = np.meshgrid(np.linspace(-1, 1, n), np.linspace(-1, 1, n))
    v = np.column_stack([xs.ravel(), ys.ravel(), np.zeros(n * n)]).astype(np.float32)
    i = np.arange(n - 1)
    a = (i[:, None] * n + i[None, :]).ravel()
    faces = np.vstack([np.c_[a, a + 1, a + n + 1], np.c_[a, a + n + 1, a + n]])
    return v, faces


def sequence(v, t_steps, amp):
    return np.stack([v + [0, 0, amp * np.sin(t)] * np.c_[v[:, 1] < 0] for t in range(t_steps)])


def test_frames_shapes_and_panels():
    v, f = sheet_mesh()
    pred, gt = sequence(v, 6, 0.05), sequence(v, 6, 0.0)
    single = list(compose.frames(f, pred, size=64))
    assert len(single) == 6 and single[0].shape == (64, 64, 4)
    pair = next(compose.frames(f, pred, gt, size=64, labels=("pred", "gt")))
    assert pair.shape == (64, 128, 4)
    err = list(compose.frames(f, pred, gt, size=(96, 80), error=True))
    assert err[0].shape[0] == 80 and err[0].shape[1] > 2 * 96  # colour-bar strip between
    with pytest.raises(ValueError):
        next(compose.frames(f, pred, error=True))


def test_render_mp4_end_to_end(tmp_path):
    v, f = sheet_mesh()
    pred, gt = sequence(v, 20, 0.05), sequence(v, 20, 0.0)
    audio = np.zeros(16000, np.float32)
    info = compose.render_mp4(tmp_path / "o.mp4", f, pred, 25, audio, gt=gt, error=True,
                                 size=64, labels=("prediction", "ground truth"))
    assert info.frames == 20 and info.audio_truncated_s == pytest.approx(0.2)
    got = video.probe(tmp_path / "o.mp4")
    assert got["frames"] == 20 and got["audio_codec"] == "aac"
    assert got["width"] % 2 == 0 and got["height"] == 64


def test_nice_ceil():
    assert [compose.nice_ceil(x) for x in (3.61, 14, 1.0, 0.07, 0, np.nan)] == \
        [4.0, 20.0, 1.0, 0.08, 1.0, 1.0]
