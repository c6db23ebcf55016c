"""Benchmark `unitalker import-official` on a UniTalker-L-size checkpoint against ``torch.load`` of the same file plus
writing its tensors once.

Run it under the heavy-job lock (it writes ~1.3 GB files and holds one in memory)::

    flock /tmp/a2f-heavy.lock python benchmarks/bench_import_official.py --work /tmp/a2f-bench-import

1. Setup (skipped when present): a random-weight state dict in the official UniTalker-L layout (the
   ``facebook/wav2vec2-large-xlsr-53`` architecture from our pinned config, built on the meta device and filled
   tensor by tensor, decoder and heads from the facts of shared/spec/official-release.md: 935 identities, six
   heads), ``torch.save``d; a fake release folder (D0-D2 ``pca.npz`` of 512 components, ``id_template.npy``).
2. In fresh subprocesses, interleaved, ``--repeat`` times (medians; peak RSS from VmHWM):
   ``baseline`` = ``torch.load(weights_only=True)`` of the file, then ``safetensors.save_file`` of its tensors;
   ``import`` = ``import_official`` (load, checks, release PCA and templates, run folder) end to end.
   The target: import within 2x the baseline's time, peak RSS under 2x the checkpoint's size.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve()


def _rss_mib() -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 1024.0


def build(work: Path) -> Path:
    """The L-size official checkpoint and release folder (see module doc)."""
    import numpy as np
    import torch
    from transformers import Wav2Vec2Config, Wav2Vec2Model

    from a2fbench.registry import get_space, get_spec
    from unitalker.model.encoder import KNOWN_ARCH

    ckpt = work / "UniTalker-L-D0-D7.pt"
    if ckpt.is_file():
        return ckpt
    cfg = {k: v for k, v in KNOWN_ARCH["facebook/wav2vec2-large-xlsr-53"].items()
           if k not in ("model_type", "normalize_audio")}
    with torch.device("meta"):
        enc = Wav2Vec2Model(Wav2Vec2Config(**cfg))
    g = torch.Generator().manual_seed(0)
    sd = {f"audio_encoder.{k}": torch.randn(v.shape, generator=g) * 0.02 for k, v in enc.state_dict().items()}
    C, E, H = 256, 64, 1024
    r = lambda *s: torch.randn(*s, generator=g) * 0.02  # noqa: E731
    sd["decoder.learnable_style_emb.weight"] = r(935, E)
    sd["decoder.audio_feature_map.weight"], sd["decoder.audio_feature_map.bias"] = r(C, H), r(C)
    for i in range(3):
        p = f"decoder.tcn.first_net.conv_layers.{i}."
        sd[p + "conv.weight"], sd[p + "conv.bias"] = r(C, C + E if i == 0 else C, 3), r(C)
        sd[p + "norm.weight"], sd[p + "norm.bias"] = torch.ones(C), torch.zeros(C)
    sd["decoder.tcn.first_net.conv_layers.0.residual_layer.0.weight"] = r(C, C + E, 3)
    sd["decoder.tcn.first_net.conv_layers.0.residual_layer.0.bias"] = r(C)
    heads = {"BIWI_23370_vertices": 512, "FLAME_5023_vertices": 512, "meshtalk_6172_vertices": 512,
             "3DETF_blendshape_weight": 52, "flame_params_from_dadhead": 413, "inhouse_blendshape_weight": 51}
    for h, n in heads.items():
        sd[f"out_head_dict.{h}.weight"], sd[f"out_head_dict.{h}.bias"] = r(n, C), r(n)
    rng = np.random.default_rng(0)
    rel = work / "unitalker_data_release_V1"
    for d in ("D0", "D1", "D2", "D3", "D4", "D5", "D6", "D7"):
        spec = get_spec(d)
        sp = get_space(spec.space)
        folder = rel / spec.unitalker.dirname
        folder.mkdir(parents=True, exist_ok=True)
        n = spec.unitalker.identities
        np.save(folder / "id_template.npy", rng.normal(0, 0.05, (n, sp.dim)).astype(np.float32))
        if sp.is_vertex:
            np.savez(folder / "pca.npz", components_to_data=rng.standard_normal((512, sp.dim), np.float32) / 100,
                     original_data_mean=np.zeros(sp.dim, np.float32),
                     data_components_mean=np.zeros(512, np.float32), data_components_std=np.ones(512, np.float32))
    torch.save(sd, work / "tmp.pt")
    os.replace(work / "tmp.pt", ckpt)
    n = sum(v.numel() for v in sd.values())
    print(f"built {ckpt} ({n / 1e6:.1f} M parameters, {ckpt.stat().st_size / 2**30:.2f} GiB)", file=sys.stderr)
    return ckpt


# ------------------------------------------------------------------------------------------ children
def child_baseline(ckpt: str, out: str) -> dict:
    import torch
    from safetensors.torch import save_file

    t = time.perf_counter()
    sd = torch.load(ckpt, map_location="cpu", weights_only=True)
    t_load = time.perf_counter() - t
    save_file({k: v.contiguous() for k, v in sd.items()}, out)
    return {"seconds": time.perf_counter() - t, "load_seconds": t_load, "rss_mib": _rss_mib()}


def child_import(ckpt: str, rel: str, out: str) -> dict:
    from unitalker.release.convert import import_official

    t = time.perf_counter()
    import_official(ckpt, rel, out)
    return {"seconds": time.perf_counter() - t, "rss_mib": _rss_mib()}


def _run(args: list[str]) -> dict:
    env = {**os.environ, "PYTHONPATH": str(HERE.parent.parent), "PYTHONWARNINGS": "ignore"}
    r = subprocess.run([sys.executable, str(HERE), "--child", *args], capture_output=True, text=True, env=env)
    if r.returncode:
        raise SystemExit(r.stderr[-3000:])
    return json.loads(r.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=Path("/tmp/a2f-bench-import"))
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--keep", action="store_true", help="keep the work folder")
    ap.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        kind, *rest = a.child
        print(json.dumps(child_baseline(*rest) if kind == "baseline" else child_import(*rest)))
        return
    a.work.mkdir(parents=True, exist_ok=True)
    sys.path.insert(0, str(HERE.parent.parent))
    ckpt = build(a.work)
    rel = a.work / "unitalker_data_release_V1"
    rows: dict[str, list[dict]] = {"baseline": [], "import": []}
    for i in range(a.repeat):
        for kind in ("baseline", "import"):
            tgt = a.work / f"out-{kind}"
            shutil.rmtree(tgt, ignore_errors=True)
            if tgt.is_file():
                tgt.unlink()
            args = [kind, str(ckpt), str(tgt)] if kind == "baseline" else [kind, str(ckpt), str(rel), str(tgt)]
            rows[kind].append(_run(args))
            print(f"run {i + 1} {kind}: {rows[kind][-1]}", file=sys.stderr)
            shutil.rmtree(tgt, ignore_errors=True) if tgt.is_dir() else tgt.unlink(missing_ok=True)
    size = ckpt.stat().st_size / 2**20
    med = {k: statistics.median(r["seconds"] for r in v) for k, v in rows.items()}
    rss = {k: max(r["rss_mib"] for r in v) for k, v in rows.items()}
    rep = {"checkpoint_mib": round(size, 1), "repeat": a.repeat,
           "baseline_s": round(med["baseline"], 2),
           "baseline_load_s": round(statistics.median(r["load_seconds"] for r in rows["baseline"]), 2),
           "import_s": round(med["import"], 2), "ratio": round(med["import"] / med["baseline"], 2),
           "baseline_peak_rss_mib": round(rss["baseline"]), "import_peak_rss_mib": round(rss["import"]),
           "import_rss_over_size": round(rss["import"] / size, 2), "loadavg": os.getloadavg()}
    print(json.dumps(rep, indent=1))
    if not a.keep:
        shutil.rmtree(a.work, ignore_errors=True)


if __name__ == "__main__":
    main()
