"""Output-space conversion throughput on CPU (frames/s), ours beside the reference way, in one run.

* FLAME 413 -> 5023 vertices: a per-frame loop (the straightforward way: one LBS call per frame), smplx's
  batched torch ``lbs`` (the function UniTalker-style FLAME layers use; only when ``smplx`` is installed),
  ours in numpy (float64, blocks of 256 frames) and ours in torch (float32, one batch).
* ARKit weights -> vertices (blendshape matmul), numpy and torch.
* Vertices -> ARKit weights: scipy's ``lsq_linear`` (BVLS) frame by frame on the full (3V x K) system (the
  reference way) against ours (QR-reduced, batched active set). Both recover the generating weights; the
  error is reported.

Models are synth's stand-ins (FLAME-2020 shapes; a 1220-vertex ARKit basis, the real EmoTalk vertex count is
UNVERIFIED). ``--device cuda`` adds the torch arms on a GPU when one is present.

    python benchmarks/bench_spaces.py --frames 4000 --out spaces.json
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from a2fbench import spaces
from a2fbench.registry import get_space, space_channels
from a2fbench.sources.synth import write_blendshape_basis, write_flame_model
from a2fbench.sources.synth.face import make_face


def _time(fn, frames: int, repeat: int = 3) -> float:
    fn()  # warm-up
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return frames / best


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def flame_arms(T: int, device: str) -> tuple[list[dict], dict]:
    tmp = Path(tempfile.mkdtemp())
    write_flame_model(tmp / "generic_model.pkl", make_face(5023, seed=0), 1.0)
    a = spaces.read_flame_model(tmp / "generic_model.pkl")
    rng = np.random.default_rng(0)
    P = np.zeros((T, 413))
    P[:, :400] = rng.normal(0, 1, (T, 400))
    P[:, 400:403] = rng.normal(0, 0.2, (T, 3))
    conv = spaces.converter("flame_params_413", a)
    rows: list[dict] = []
    n_loop = min(T, 200)
    rows.append({"arm": "per-frame loop (numpy, one LBS call per frame)", "frames_per_s": _time(
        lambda: [conv.to_vertices(P[i:i + 1]) for i in range(n_loop)], n_loop, 1)})
    ref = conv.to_vertices(P)
    rows.append({"arm": "ours, numpy float64, blocks of 256", "frames_per_s": _time(lambda: conv.to_vertices(P), T)})
    checks = {}
    try:
        from smplx.lbs import lbs

        J = a["J_regressor"].shape[0]
        sd = np.concatenate([a["shapedirs"][:, :, :300], a["shapedirs"][:, :, 300:400]], 2)
        t = {k: torch.tensor(v, dtype=torch.float32) for k, v in {
            "v": a["v_template"], "sd": sd, "pd": a["posedirs"].reshape(-1, 9 * (J - 1)).T,
            "jr": a["J_regressor"], "w": a["weights"]}.items()}
        parents = torch.tensor(a["kintree_table"][0].astype(np.int64))
        parents[0] = -1
        betas = torch.tensor(P[:, :400], dtype=torch.float32)
        pose = torch.zeros(T, J * 3)
        pose[:, 6:9] = torch.tensor(P[:, 400:403], dtype=torch.float32)

        def run_smplx() -> torch.Tensor:
            out = []
            with torch.no_grad():
                for s in range(0, T, 256):
                    out.append(lbs(betas[s:s + 256], pose[s:s + 256], t["v"], t["sd"], t["pd"], t["jr"], parents,
                                   t["w"])[0])
            return torch.cat(out)

        rows.append({"arm": "smplx.lbs, torch float32, batches of 256", "frames_per_s": _time(run_smplx, T)})
        checks["smplx_vs_ours_max_abs"] = float(np.abs(run_smplx().numpy() - ref).max())
    except ImportError:
        rows.append({"arm": "smplx.lbs", "frames_per_s": None, "note": "smplx not installed"})
    for dev in ["cpu"] + ([device] if device != "cpu" else []):
        m = spaces.torch_converter("flame_params_413", a).to(dev)
        Pt = torch.tensor(P, dtype=torch.float32, device=dev)

        def run_torch() -> torch.Tensor:
            with torch.no_grad():
                out = torch.cat([m(Pt[s:s + 256]) for s in range(0, T, 256)])
            _sync(dev)
            return out

        rows.append({"arm": f"ours, torch float32 on {dev}, batches of 256", "frames_per_s": _time(run_torch, T)})
        checks[f"torch_{dev}_vs_numpy_max_abs"] = float(np.abs(run_torch().cpu().numpy() - ref).max())
    checks["vertex_extent"] = float(np.abs(ref).max())
    return rows, checks


def arkit_arms(T: int, device: str) -> tuple[list[dict], dict]:
    tmp = Path(tempfile.mkdtemp())
    sp = get_space("arkit52")
    write_blendshape_basis(tmp / "EmoTalk.npz", space_channels(sp) or [], make_face(1220, seed=0), 1.0)
    arrays = spaces.read_blendshape_basis(tmp / "EmoTalk.npz", sp)
    conv = spaces.converter(sp, arrays)
    rng = np.random.default_rng(1)
    w = rng.uniform(-0.3, 1.3, (T, 52)).clip(0, 1)
    v = conv.to_vertices(w)
    rows = [{"arm": "weights -> vertices, numpy float64", "frames_per_s": _time(lambda: conv.to_vertices(w), T)}]
    m = spaces.torch_converter(sp, arrays)
    wt = torch.tensor(w, dtype=torch.float32)
    with torch.no_grad():
        rows.append({"arm": "weights -> vertices, torch float32 cpu", "frames_per_s": _time(lambda: m(wt), T)})
    from scipy.optimize import lsq_linear

    n_ref = min(T, 300)
    A, d = conv.B.T, v.reshape(T, -1) - conv.mean
    ref_w = np.zeros((n_ref, 52))

    def run_ref() -> None:
        for i in range(n_ref):
            ref_w[i] = lsq_linear(A, d[i], bounds=(0, 1), method="bvls").x

    rows.append({"arm": "vertices -> weights, scipy lsq_linear (BVLS) per frame", "frames_per_s": _time(run_ref, n_ref, 1)})
    got = conv.to_weights(v)
    rows.append({"arm": "vertices -> weights, ours (batched active set)", "frames_per_s": _time(lambda: conv.to_weights(v), T)})
    vn = v + rng.normal(0, 0.005, v.shape)  # vertices no weights in [0,1] reproduce: many active bounds
    rows.append({"arm": "vertices -> weights, ours, noisy vertices", "frames_per_s": _time(lambda: conv.to_weights(vn), T)})
    checks = {"ours_max_abs_weight_error": float(np.abs(got - w).max()),
              "bvls_max_abs_weight_error": float(np.abs(ref_w - w[:n_ref]).max())}
    return rows, checks


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=4000)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    report = {"frames": a.frames, "torch_threads": torch.get_num_threads()}
    report["flame"], report["flame_checks"] = flame_arms(a.frames, a.device)
    report["arkit"], report["arkit_checks"] = arkit_arms(a.frames, a.device)
    for part in ("flame", "arkit"):
        print(f"| {part} | frames/s |\n|---|---|")
        for r in report[part]:
            fps = r["frames_per_s"]
            print(f"| {r['arm']} | {'n/a (' + r.get('note', '') + ')' if fps is None else f'{fps:,.0f}'} |")
        print(json.dumps(report[f"{part}_checks"]))
    if a.out:
        Path(a.out).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
