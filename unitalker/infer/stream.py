"""Streaming inference: animate audio as it arrives, chunk by chunk, with a stated look-ahead.

UniTalker's encoder attends over the whole clip (non-causal), so a streamer cannot see the future: every
``chunk_ms`` of new audio it runs the model on a *window* (the ``context_ms`` of audio before the first frame
it still owes, through the newest sample) and emits every frame whose audio, plus ``lookahead_ms``, has
arrived. Frame ``t`` covers samples ``[t*sr/fps, (t+1)*sr/fps)``; after audio up to sample ``N`` it is out when
``(t+1)*sr/fps <= N - lookahead`` (at the end of the stream every remaining frame is). So the algorithmic
latency of a frame is at most ``chunk + lookahead``. A window is the offline model applied to that stretch of
audio (same frame count rule, ``round(seconds * fps)``), so with one chunk holding the clip a stream equals
``unitalker infer`` exactly.

Windows start on a grid of ``Q`` samples, the least multiple of the CNN's hop (320 samples) that is also a whole
number of frames (1600 samples = 100 ms at 30 fps, 640 at 25 fps), so every window's CNN frames and motion frames
line up with the clip's.

``cache=True`` (default) reuses work across chunks where the architecture allows it. The CNN feature extractor
is local (a feature frame depends on 400 samples), except WavLM-base's first-layer GroupNorm, whose per-channel
statistics run over the whole input. The streamer keeps the first conv layer's output (pre-norm, exactly local)
and the CNN features of the left context; per chunk it computes the first layer only for the new samples and the
other six layers only for the new feature frames, normalised with the statistics of the current window, and
reuses the cached features for the rest. The transformer (global attention, positional convolution), the
frequency adaptor and the decoder run on the whole window every chunk: new audio changes all of them.
``cache=False`` recomputes the whole window from the audio (the reference). They agree exactly for layer-normed
CNNs (wav2vec2-large); with a GroupNorm first layer the cached frames keep the statistics of the window they were
computed in (docs/unitalker.md reports the difference and the time saved).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from fractions import Fraction
from typing import Optional

import numpy as np
import torch
from torch import nn

from a2fbench.errors import ConfigError
from a2fbench.util.constants import SAMPLE_RATE

from ..model.encoder import conv_out_length, frames_for_samples, normalize_audio
from ..model.runtime import amp_context

DEFAULT_CONTEXT_MS = 2000.0


@dataclass(frozen=True)
class StreamSettings:
    """Chunk, look-ahead and left context (ms), and whether CNN features are cached across chunks."""

    chunk_ms: float
    lookahead_ms: float = 0.0
    context_ms: float = DEFAULT_CONTEXT_MS
    cache: bool = True

    def check(self, fps: float) -> "StreamSettings":
        """One-line errors for settings no streamer can honour (raises ConfigError)."""
        frame_ms = 1000.0 / fps
        for name, v in (("--chunk-ms", self.chunk_ms), ("--lookahead-ms", self.lookahead_ms),
                        ("--context-ms", self.context_ms)):
            if not math.isfinite(v):
                raise ConfigError(f"{name}: expected a finite number of milliseconds, found {v}")
        if self.chunk_ms < frame_ms:
            raise ConfigError(f"--chunk-ms: expected at least one frame ({frame_ms:.1f} ms at {fps:g} fps), found "
                              f"{self.chunk_ms:g}; pass e.g. --chunk-ms 200")
        if self.lookahead_ms < 0:
            raise ConfigError(f"--lookahead-ms: expected 0 or more, found {self.lookahead_ms:g}")
        if self.context_ms < 0:
            raise ConfigError(f"--context-ms: expected 0 or more, found {self.context_ms:g}")
        if self.lookahead_ms > self.context_ms:
            raise ConfigError(f"--lookahead-ms: expected at most the context ({self.context_ms:g} ms), found "
                              f"{self.lookahead_ms:g}; shorten the look-ahead or raise --context-ms")
        return self

    def record(self) -> dict:
        """The settings as the predictions record and stream.json store them."""
        return {"chunk_ms": _num(self.chunk_ms), "lookahead_ms": _num(self.lookahead_ms),
                "context_ms": _num(self.context_ms), "algorithmic_latency_ms": _num(self.chunk_ms + self.lookahead_ms),
                "cnn_cache": bool(self.cache)}


def _num(v: float) -> float | int:
    return int(v) if float(v).is_integer() else float(v)


@dataclass
class HeadOut:
    """One output head: dataset id, space, UniTalker scale and a ``finish(offsets (n, D) scaled) -> native`` map."""

    id: str
    space: str
    finish: object  # Callable[[np.ndarray], np.ndarray]


def grid_samples(fps: float, hop: int, sr: int = SAMPLE_RATE) -> tuple[int, int]:
    """(Q samples, frames per Q): the least multiple of the CNN hop that is a whole number of motion frames.

    >>> grid_samples(30.0, 320), grid_samples(25.0, 320)
    ((1600, 3), (640, 1))
    """
    per_hop = Fraction(hop) * Fraction(fps).limit_denominator(1000) / sr  # motion frames per CNN hop
    m = per_hop.denominator
    return hop * m, int(per_hop * m)


class Streamer:
    """Feed audio (16 kHz mono float32) with :meth:`push`, get frames back; :meth:`flush` at the end.

    Works for any head of one frame rate; the trunk runs once per chunk for all heads. ``push`` accepts pieces of
    any size (a microphone's callback); the model runs each time a whole chunk has arrived.
    """

    def __init__(self, model: nn.Module, heads: list[HeadOut], fps: float, identity: int, settings: StreamSettings,
                 device: torch.device, amp: str = "none"):
        self.model, self.heads, self.fps, self.identity = model, heads, float(fps), int(identity)
        self.settings = settings.check(self.fps)
        self.device, self.amp = device, amp
        enc = model.encoder
        self.enc = enc
        self.hop = int(np.prod(enc.strides))
        self.Q, self.fq = grid_samples(self.fps, self.hop)
        self._fps = Fraction(self.fps).limit_denominator(1000)
        self.chunk = max(1, int(round(settings.chunk_ms * SAMPLE_RATE / 1000)))
        self.look = int(round(settings.lookahead_ms * SAMPLE_RATE / 1000))
        self.context = int(round(settings.context_ms * SAMPLE_RATE / 1000))
        self.buf = np.zeros(0, np.float32)  # samples [a0, n_in)
        self.a0 = 0
        self.n_in = 0  # samples received
        self.n_run = 0  # samples the model has run up to
        self.emitted = 0  # frames out
        self.chunks: list[dict] = []
        self._l0: Optional[torch.Tensor] = None  # (C, n) first conv layer, pre-norm, global frames [l0_at, ...)
        self._l0_at = 0
        self._feat: Optional[torch.Tensor] = None  # (n, C) CNN features, global frames [feat_at, ...)
        self._feat_at = 0
        self._ident = torch.tensor([self.identity], device=device)
        self.closed = False

    # ----------------------------------------------------------------------------------------- public
    def push(self, samples: np.ndarray) -> dict[str, np.ndarray]:
        """Add audio; run the model for every whole chunk now complete. {head id: (n, D) new frames, n >= 0}."""
        self._append(samples)
        outs = [self._step(self.n_run + self.chunk, False) for _ in range((self.n_in - self.n_run) // self.chunk)]
        return self._cat(outs)

    def flush(self, samples: Optional[np.ndarray] = None) -> dict[str, np.ndarray]:
        """Add the last audio (optional) and emit every remaining frame; the stream is then closed.

        Pass the last piece here rather than to :meth:`push`: when it completes a chunk, ``push`` runs that chunk
        as one more of an open stream and ``flush`` then needs a step of its own for the frames still owed."""
        if samples is not None:
            self._append(samples)
        outs = [self._step(self.n_run + self.chunk, False) for _ in range((self.n_in - self.n_run - 1) // self.chunk)]
        outs.append(self._step(self.n_in, True))
        self.closed = True
        return self._cat(outs)

    def record(self) -> dict:
        """stream.json: settings, RTF (compute / audio time), compute_ms p50/p95/max, one entry per chunk."""
        ms = np.array([c["compute_ms"] for c in self.chunks] or [0.0])
        secs = self.n_in / SAMPLE_RATE
        return {**self.settings.record(), "fps": self.fps, "grid_ms": 1000 * self.Q / SAMPLE_RATE,
                "seconds": round(secs, 3), "frames": self.emitted, "device": str(self.device),
                "threads": torch.get_num_threads() if self.device.type == "cpu" else None,
                "rtf": float(ms.sum() / 1000 / secs) if secs > 0 else None,
                "compute_ms": {"p50": float(np.percentile(ms, 50)), "p95": float(np.percentile(ms, 95)),
                               "max": float(ms.max())},
                "chunks": list(self.chunks)}

    # ---------------------------------------------------------------------------------------- internals
    def _append(self, samples: np.ndarray) -> None:
        if self.closed:
            raise RuntimeError("this stream was flushed; open a new one")
        x = np.asarray(samples, np.float32).reshape(-1)
        self.buf = np.concatenate([self.buf, x])
        self.n_in += x.size

    def _cat(self, outs: list[dict]) -> dict[str, np.ndarray]:
        return {h.id: np.concatenate([o[h.id] for o in outs], 0) if outs else np.zeros((0, 0), np.float32)
                for h in self.heads}

    def _due(self, n: int, final: bool) -> int:
        """Frames out once the model has seen samples [0, n)."""
        if final:
            return max(1, frames_for_samples(n, self.fps))
        return max(self.emitted, math.floor(Fraction(n - self.look) * self._fps / SAMPLE_RATE))

    @torch.no_grad()
    def _step(self, n: int, final: bool) -> dict[str, np.ndarray]:
        t0 = time.perf_counter()
        target = self._due(n, final)
        out: dict[str, np.ndarray] = {}
        if target > self.emitted:
            start = Fraction(self.emitted) * SAMPLE_RATE / self._fps - self.context  # left context before frame
            ws = max(0, math.floor(start / self.Q)) * self.Q
            f0 = ws // self.Q * self.fq
            T = frames_for_samples(n - ws, self.fps)
            with amp_context(self.device, self.amp):
                feats = self._features(ws, n, T)
            for h in self.heads:
                off = self.model.head(h.space, feats)[0][0, self.emitted - f0: target - f0]
                out[h.id] = h.finish(off.float().cpu().numpy())
            self._forget(target)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        ms = (time.perf_counter() - t0) * 1000
        self.chunks.append({"end_ms": round(n * 1000 / SAMPLE_RATE, 3), "frames": max(0, target - self.emitted),
                            "compute_ms": round(ms, 3)})
        self.emitted = max(self.emitted, target)
        self.n_run = n
        return out if out else {h.id: np.zeros((0, 0), np.float32) for h in self.heads}

    def _window(self, ws: int, n: int) -> np.ndarray:
        return self.buf[ws - self.a0: n - self.a0]

    def _features(self, ws: int, n: int, T: int) -> torch.Tensor:
        """The decoder's (1, T, C) output for the window [ws, n): the offline trunk, or its cached-CNN variant."""
        m = self.model
        frames = torch.tensor([T], device=self.device)
        if not self.settings.cache:
            x = torch.from_numpy(np.ascontiguousarray(self._window(ws, n)))
            x = normalize_audio(x) if self.enc.normalize else x
            x = x[None].to(self.device, m.identity.weight.dtype)
            return m.features(x, torch.tensor([x.shape[1]], device=self.device), frames, self._ident, T=T, all_full=True)
        feats = self._cnn_cached(ws, n)
        flen = torch.tensor([feats.shape[1]], device=self.device)
        return m.features(None, flen, frames, self._ident, T=T, all_full=True, cnn=(feats, flen))

    def _cnn_cached(self, ws: int, n: int) -> torch.Tensor:
        """(1, L, C) CNN features of the window [ws, n), computing only the frames not cached yet."""
        layers = self.enc.hf.feature_extractor.conv_layers
        k0, s0 = self.enc.kernels[0], self.enc.strides[0]
        i_ws, i_end = ws // s0, (n - k0) // s0 + 1  # first-layer frames of the window
        if self._l0 is None or self._l0_at > i_ws:
            self._l0, self._l0_at = None, i_ws
        have = self._l0_at + (0 if self._l0 is None else self._l0.shape[1])
        if i_end > have:  # first conv layer on the new samples only (exact: a frame needs k0 samples)
            a = torch.from_numpy(np.ascontiguousarray(self.buf[have * s0 - self.a0: (i_end - 1) * s0 + k0 - self.a0]))
            if self.enc.normalize:  # the window's statistics, as the offline model would use on this window
                w = torch.from_numpy(np.ascontiguousarray(self._window(ws, n)))
                a = (a - w.mean()) / torch.sqrt(w.var(unbiased=False) + 1e-7)
            y = layers[0].conv(a[None, None].to(self.device, layers[0].conv.weight.dtype))[0]
            self._l0 = y if self._l0 is None else torch.cat([self._l0, y], 1)
        j_ws = ws // self.hop
        L = conv_out_length(n - ws, self.enc.kernels, self.enc.strides)
        if self._feat is None or self._feat_at > j_ws:
            self._feat, self._feat_at = None, j_ws
        fhave = self._feat_at + (0 if self._feat is None else self._feat.shape[0])
        if j_ws + L > fhave:
            per = self.hop // s0  # first-layer frames per feature frame
            lo = fhave * per - self._l0_at
            need = conv_in_length(j_ws + L - fhave, self.enc.kernels[1:], self.enc.strides[1:])
            y = self._l0[:, lo: lo + need]
            norm = getattr(layers[0], "layer_norm", None)
            if isinstance(norm, nn.GroupNorm):  # statistics of the whole window, in float32 (as offline)
                win = self._l0[:, i_ws - self._l0_at: i_end - self._l0_at].float()
                var, mean = torch.var_mean(win, 1, correction=0, keepdim=True)
                y = ((y.float() - mean) * torch.rsqrt(var + norm.eps) * norm.weight.float()[:, None]
                     + norm.bias.float()[:, None]).to(y.dtype)
            elif isinstance(norm, nn.LayerNorm):
                y = norm(y.transpose(0, 1)).transpose(0, 1)
            x = layers[0].activation(y)[None]
            for layer in layers[1:]:
                x = layer(x)
            new = x[0].transpose(0, 1)
            assert new.shape[0] == j_ws + L - fhave, (new.shape, j_ws + L - fhave)
            self._feat = new if self._feat is None else torch.cat([self._feat, new], 0)
        return self._feat[j_ws - self._feat_at: j_ws - self._feat_at + L][None]

    def _forget(self, emitted: int) -> None:
        """Drop audio and cached frames no later window can start before."""
        start = Fraction(emitted) * SAMPLE_RATE / self._fps - self.context
        ws = max(0, math.floor(start / self.Q)) * self.Q
        if ws > self.a0:
            self.buf, self.a0 = self.buf[ws - self.a0:], ws
        s0 = self.enc.strides[0]
        if self._l0 is not None and ws // s0 > self._l0_at:
            self._l0, self._l0_at = self._l0[:, ws // s0 - self._l0_at:], ws // s0
        if self._feat is not None and ws // self.hop > self._feat_at:
            self._feat, self._feat_at = self._feat[ws // self.hop - self._feat_at:], ws // self.hop


def conv_in_length(n_out: int, kernels: list[int], strides: list[int]) -> int:
    """Input frames a stack of valid convolutions needs for ``n_out`` output frames (inverse of conv_out_length)."""
    for k, s in zip(reversed(kernels), reversed(strides)):
        n_out = (n_out - 1) * s + k
    return n_out


# ------------------------------------------------------------------------------------ checkpoints and files
def stream_offsets(model: nn.Module, audio: np.ndarray, space: str, fps: float, identity: int,
                   settings: StreamSettings, device: torch.device, amp: str = "none") -> tuple[np.ndarray, dict]:
    """One clip fed chunk by chunk (as a microphone would) -> (offsets (T, D) in scaled units, stream record)."""
    s = Streamer(model, [HeadOut(space, space, lambda a: a)], fps, identity, settings, device, amp)
    parts = []
    for a in range(0, len(audio), s.chunk):
        piece = audio[a: a + s.chunk]
        parts.append((s.flush(piece) if a + s.chunk >= len(audio) else s.push(piece))[space])
    parts = [p for p in parts if p.size]
    return np.concatenate(parts, 0), s.record()


def predict_streaming(checkpoint, data, dataset: str, out, settings: StreamSettings, **kw):
    """``unitalker predict --chunk-ms``: :func:`unitalker.infer.predict.predict` with every clip streamed, the
    settings recorded as ``streaming`` in the predictions record (``kw``: split, identity, device, progress)."""
    from .predict import predict

    def clip(model, audio, space, fps, row, device, amp):
        settings.check(fps)
        return stream_offsets(model, audio, space, fps, row, settings, device, amp)[0]

    return predict(checkpoint, data, dataset, out, clip_fn=clip, record={"streaming": settings.record()}, **kw)


def open_streamer(checkpoint, head: str, *, identity: str = "pivot", chunk_ms: float = 200.0,
                  lookahead_ms: float = 0.0, context_ms: float = DEFAULT_CONTEXT_MS, cache: bool = True,
                  device: str = "auto", template=None) -> Streamer:
    """A :class:`Streamer` on a checkpoint (file, run folder or a loaded model) for the heads ``head`` names
    (``D1`` or ``D1,D5``, one frame rate); frames come out in native units (``template``: your neutral mesh)."""
    from ..model.load import Loaded, load_model
    from ..model.runtime import select_device
    from .predict import head_for, template_for, to_native, user_template

    dev = select_device(device) if not isinstance(checkpoint, Loaded) else next(checkpoint.model.parameters()).device
    loaded = checkpoint if isinstance(checkpoint, Loaded) else load_model(checkpoint, dev)
    targets = [head_for(loaded.meta, h.strip()) for h in str(head).split(",") if h.strip()]
    if not targets:
        raise ConfigError(f"--heads: expected dataset ids (e.g. D1,D3), found {head!r}")
    fps = {float(d.get("fps") or 30.0) for d in targets}
    if len(fps) != 1:
        raise ConfigError(f"expected heads of one frame rate in one streamer, found {sorted(fps)} fps; open one per rate")
    row = loaded.identities.lookup(identity)
    own = user_template(template, targets) if template is not None else None
    outs, templates = [], {}
    for d in targets:
        templates[d["id"]] = tmpl = own if own is not None else template_for(loaded, d, row)
        outs.append(HeadOut(d["id"], d["space"],
                            lambda off, t=tmpl.values, d=d: to_native(off, t, float(d["scale"]), d["space"])))
    settings = StreamSettings(float(chunk_ms), float(lookahead_ms), float(context_ms), bool(cache))
    s = Streamer(loaded.model, outs, fps.pop(), row, settings, dev, loaded.cfg["train"]["amp"])
    s.templates = templates  # what each head's frames sit on (stream_files writes them beside the frames)
    return s


def stream_files(checkpoint, audio_files, out, *, heads: str = "all", identity: str = "pivot",
                 settings: StreamSettings, device: str = "auto", template=None, force: bool = False) -> list:
    """``unitalker stream``: ``out/<stem>/<dataset>.npy`` (the frames ``unitalker infer`` writes), the sidecar
    ``infer`` writes (the clip's audio, each head's template, ``infer.json``: render and export read them) and
    ``out/<stem>/stream.json`` (settings, RTF, compute per chunk, frames per chunk)."""
    import json
    import time

    from a2fbench.outputs import sidecar
    from a2fbench.sources.audio import write_wav
    from a2fbench.util.constants import SAMPLE_RATE as SR
    from a2fbench.util.fsutil import atomic_path

    from ..model.load import load_model
    from ..model.runtime import select_device, set_threads
    from .checks import plan_infer, read_input_audio

    # every argument infer checks (clip names, heads, identity, template, the output rule of a2fbench.util.guard),
    # checked the same way and before the model loads
    plan = plan_infer(checkpoint, audio_files, out, heads, identity, template, force)
    groups: dict[float, list[str]] = {}
    for d in plan.targets:
        groups.setdefault(float(d.get("fps") or 30.0), []).append(d["id"])
    for fps in groups:
        settings.check(fps)
    stems, out = plan.stems, plan.out
    clips = [(stem, read_input_audio(f)) for stem, f in stems.items()]  # all decoded before anything is written
    dev = select_device(device)
    if dev.type == "cpu":
        set_threads(0)  # the cores not busy now: a busy neighbour stalls a full thread pool (runtime.auto_threads)
    loaded = load_model(checkpoint, dev)
    written = []
    for stem, x in clips:
        records = []
        with atomic_path(out / stem, is_dir=True) as tmp:
            write_wav(tmp / sidecar.AUDIO_FILE, x, SR)
            side = {"made_by": "unitalker stream", "audio": {"file": sidecar.AUDIO_FILE,
                    "source": str(stems[stem].resolve()), "sample_rate": SR, "seconds": round(x.size / SR, 3)},
                    "checkpoint": loaded.meta["path"], "identity": identity, "identity_row": plan.row,
                    "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "heads": {},
                    "streaming": "stream.json"}
            for fps, group in groups.items():
                s = open_streamer(loaded, ",".join(group), identity=identity, chunk_ms=settings.chunk_ms,
                                  lookahead_ms=settings.lookahead_ms, context_ms=settings.context_ms,
                                  cache=settings.cache, template=template)
                got: dict[str, list] = {h: [] for h in group}
                for a in range(0, x.size, s.chunk):
                    piece = x[a: a + s.chunk]
                    fr = s.flush(piece) if a + s.chunk >= x.size else s.push(piece)
                    for h in group:
                        if fr[h].size:
                            got[h].append(fr[h])
                for h in group:
                    d = next(t for t in plan.targets if t["id"] == h)
                    arr = np.concatenate(got[h], 0)
                    np.save(tmp / f"{h}.npy", arr, allow_pickle=False)
                    side["heads"][h] = {"file": f"{h}.npy", "space": d["space"], "fps": fps, "frames": len(arr),
                                        "shape": list(arr.shape),
                                        "template": sidecar.write_template(tmp, h, s.templates[h])}
                records.append({**s.record(), "heads": group})
            sidecar.write_sidecar(tmp, side)
            info = {"audio": str(stems[stem]), "identity": identity, "checkpoint": loaded.meta["path"],
                    "template": None if template is None else str(template), **records[0]}
            if len(records) > 1:
                info["streams"] = records
            (tmp / "stream.json").write_text(json.dumps(info, indent=1) + "\n")
        written.append(out / stem)
    return written
