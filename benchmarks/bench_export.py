"""Export timings on a VOCASET-sized clip: 60 s at 30 fps (T = 1800), V = 5023 vertices.

    python benchmarks/bench_export.py [--out DIR] [--quick] [--extra-site DIR]

Two parts. (1) ``a2fbench export`` end to end (``outputs.export.export``: read the ``.npy``, project, write), on a
synthetic D1 store (FLAME-sized stand-in, V = 5023) with a 512-component ``pca.npz``, and without one (PCA fitted
on the clip); the ARKit CSV of a 60 s D3 clip. (2) The writers alone, beside the obvious ways.

Mesh: a 31 x 162 vertex grid plus one free vertex (V = 5023, F = 9660 triangles; VOCASET has 9976), so
sizes and costs match FLAME topology without shipping it. Motion: K = 512 random float32 targets and
(T, K) weights (worst case for nothing but compression, which we do not do). Prints one table; timings are
the best and median of ``--repeat`` runs, wall clock, page cache warm.

Baselines ("the obvious way"): trimesh exporting one mesh per frame into one .glb, and pygltflib building the
same morph-target file as ours (its own JSON/bytes path). pygltflib is looked for in ./.pydeps
(``--extra-site DIR`` after ``pip install --target DIR pygltflib``) so the project's environment stays
untouched.
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import a2fbench
from a2fbench.outputs.arkit_csv import write_arkit_csv
from a2fbench.outputs.export import export
from a2fbench.outputs.gltf import export_pca_glb, fit_pca_basis, vertex_normals, write_morph_glb
from a2fbench.outputs.heads import open_head
from a2fbench.outputs.obj import format_faces, write_obj_sequence
from a2fbench.prepare import prepare_dataset
from a2fbench.registry import get_spec
from a2fbench.sources.synth import synth_dataset
from a2fbench.spaces.pca import PCA, pca_path, save

REPO = Path(__file__).resolve().parents[1]
JS = REPO / "tools" / "js"

T, K, FPS = 1800, 512, 30.0


def vocaset_sized_mesh() -> tuple[np.ndarray, np.ndarray]:
    rows, cols = 31, 162
    xs, ys = np.meshgrid(np.linspace(-0.08, 0.08, cols), np.linspace(-0.1, 0.1, rows))
    v = np.stack([xs.ravel(), ys.ravel(), 0.05 * np.cos(10 * xs.ravel())], 1)
    v = np.vstack([v, [[0.0, 0.0, 0.12]]])
    i, j = np.meshgrid(np.arange(rows - 1), np.arange(cols - 1), indexing="ij")
    a = (i * cols + j).ravel()
    f = np.concatenate([np.stack([a, a + 1, a + cols], 1), np.stack([a + 1, a + cols + 1, a + cols], 1)])
    return v, f


def timeit(fn, repeat: int) -> tuple[float, float]:
    ts = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return min(ts), statistics.median(ts)


def row(name: str, best: float, med: float, size: str = "") -> None:
    print(f"| {name:<58} | {best:8.3f} | {med:8.3f} | {size:>10} |", flush=True)


def trimesh_per_frame(path: Path, frames: np.ndarray, faces: np.ndarray) -> None:
    import trimesh

    scene = trimesh.Scene()
    for t, v in enumerate(frames):
        scene.add_geometry(trimesh.Trimesh(v, faces, process=False), node_name=f"frame{t:06d}")
    scene.export(path)


def pygltflib_morph(path: Path, base, faces, targets, weights) -> None:
    """The same content as write_morph_glb, through pygltflib's object model and save_binary."""
    import pygltflib as g

    blobs, views, accs = [], [], []

    def add(arr, target=None, acc_type="VEC3", ct=g.FLOAT, minmax=False, stride=None):
        arr = np.ascontiguousarray(arr)
        off = sum(len(b) for b in blobs)
        blobs.append(arr.tobytes())
        views.append(g.BufferView(buffer=0, byteOffset=off, byteLength=arr.nbytes, target=target,
                                  byteStride=stride))
        count = arr.shape[0]
        kw = {}
        if minmax:
            kw = {"min": arr.min(0).tolist(), "max": arr.max(0).tolist()}
        accs.append(g.Accessor(bufferView=len(views) - 1, componentType=ct, count=count, type=acc_type, **kw))
        return len(accs) - 1

    pos = add(base.astype(np.float32), g.ARRAY_BUFFER, minmax=True)
    nrm = add(vertex_normals(base, faces).astype(np.float32), g.ARRAY_BUFFER)
    idx = add(faces.astype(np.uint16).reshape(-1), g.ELEMENT_ARRAY_BUFFER, "SCALAR", g.UNSIGNED_SHORT)
    tg = [g.Attributes(POSITION=add(t, g.ARRAY_BUFFER, minmax=True)) for t in targets]
    times = (np.arange(len(weights)) / FPS).astype(np.float32)
    ti = add(times, None, "SCALAR")
    accs[ti].min, accs[ti].max = [float(times[0])], [float(times[-1])]
    wo = add(weights.reshape(-1), None, "SCALAR")
    prim = g.Primitive(attributes=g.Attributes(POSITION=pos, NORMAL=nrm), indices=idx, targets=tg)
    gl = g.GLTF2(scene=0, scenes=[g.Scene(nodes=[0])], nodes=[g.Node(mesh=0)],
                 meshes=[g.Mesh(primitives=[prim], weights=[0.0] * len(targets),
                                extras={"targetNames": [f"pc{k:03d}" for k in range(len(targets))]})],
                 accessors=accs, bufferViews=views,
                 animations=[g.Animation(samplers=[g.AnimationSampler(input=ti, output=wo, interpolation="LINEAR")],
                                         channels=[g.AnimationChannel(sampler=0, target=g.AnimationChannelTarget(
                                             node=0, path="weights"))])])
    data = b"".join(blobs)
    gl.buffers = [g.Buffer(byteLength=len(data))]
    gl.set_binary_blob(data)
    gl.save_binary(str(path))


def end_to_end(out: Path, repeat: int) -> None:
    """``a2fbench export`` as the command runs it, on synthetic stores (the stand-ins' topologies, V = 5023)."""
    synth_dataset(get_spec("D1"), out / "raw", size="tiny", seed=0, progress=False)
    synth_dataset(get_spec("D3"), out / "raw", size="tiny", seed=0, progress=False)
    for d in ("D1", "D3"):
        prepare_dataset(get_spec(d), out / "raw", out / "data", progress=False)
    rng = np.random.default_rng(1)
    ds = a2fbench.open_dataset(out / "data", "D1")
    tmpl = np.asarray(ds.template(ds.subjects[0]), np.float64)
    comps = np.linalg.qr(rng.standard_normal((tmpl.size, K)))[0].T.astype(np.float32)  # (K, 3V) orthonormal
    clip = (tmpl + (rng.standard_normal((T, K)) * 1e-3).astype(np.float32) @ comps).astype(np.float32)
    np.save(out / "clip_d1.npy", clip)
    np.save(out / "clip_d3.npy", rng.uniform(0, 1, (T, 52)).astype(np.float32))
    pca = PCA(comps, np.zeros(tmpl.size, np.float32), np.ones(K, np.float32), np.full(K, 1.0 / K, np.float32),
              T, {"fingerprint": ds.card["fingerprint"], "dataset": "D1"})
    ds.close()
    for case in ("dataset PCA, K=512", "no pca.npz: PCA fitted on the clip"):
        if case.startswith("dataset"):
            save(pca, pca_path(out / "data", "D1"))
        else:
            pca_path(out / "data", "D1").unlink()
        head = open_head(out / "data", "D1")

        def run(head=head):
            export(out / "clip_d1.npy", head, "gltf", out / "e2e.glb", progress=False)

        b, m = timeit(run, repeat if case.startswith("dataset") else 2)
        head.close()
        size = f"{(out / 'e2e.glb').stat().st_size / 1e6:.1f} MB"
        row(f"a2fbench export --format gltf, 60 s D1 ({case})", b, m, size)
    head = open_head(out / "data", "D3")
    b, m = timeit(lambda: export(out / "clip_d3.npy", head, "arkit-csv", out / "e2e.csv", progress=False), repeat)
    row("a2fbench export --format arkit-csv, 60 s D3", b, m, f"{(out / 'e2e.csv').stat().st_size / 1e6:.1f} MB")
    b, m = timeit(lambda: export(out / "clip_d3.npy", head, "gltf", out / "e2e3.glb", progress=False), repeat)
    row("a2fbench export --format gltf, 60 s D3 (52 named targets)", b, m,
        f"{(out / 'e2e3.glb').stat().st_size / 1e6:.1f} MB")
    head.close()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, default=None, help="scratch folder (default: a temp dir, removed)")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="skip the slow baselines")
    ap.add_argument("--extra-site", default=None, help="site-packages holding pygltflib (baseline only)")
    args = ap.parse_args()
    if args.extra_site:
        sys.path.append(args.extra_site)  # appended: the environment's own packages win
    out = Path(tempfile.mkdtemp(prefix="a2f-bench-", dir=args.out))
    rng = np.random.default_rng(0)
    verts, faces = vocaset_sized_mesh()
    targets = (rng.standard_normal((K, len(verts), 3)) * 1e-3).astype(np.float32)
    weights = rng.standard_normal((T, K)).astype(np.float32)
    print(f"numpy {np.__version__}, {os.cpu_count()} CPUs; T={T} V={len(verts)} F={len(faces)} K={K}; "
          f"load average at start {os.getloadavg()[0]:.2f}\n")
    print(f"| {'task':<58} | {'best s':>8} | {'median s':>8} | {'size':>10} |")
    print(f"|{'-' * 60}|{'-' * 10}|{'-' * 10}|{'-' * 12}|")
    try:
        end_to_end(out, args.repeat)
        glb = out / "clip.glb"
        frames = verts[None].astype(np.float32) + np.einsum("tk,kvc->tvc", weights, targets)  # (T, V, 3)
        for fs in (False, True):
            b, m = timeit(lambda fs=fs: write_morph_glb(glb, verts, faces, targets, weights, FPS, fsync=fs),
                          args.repeat)
            row(f"gltf: write_morph_glb K={K} (fsync={fs})", b, m, f"{glb.stat().st_size / 1e6:.1f} MB")
        if shutil.which("node") and (JS / "node_modules" / "gltf-validator").is_dir():
            b, m = timeit(lambda: subprocess.run(["node", str(JS / "validate.mjs"), str(glb)], check=True,
                                                 capture_output=True), 1)
            row("gltf: Khronos validator on that file (node)", b, m)
        # dataset PCA path: project the predicted vertices on K = 512 components, then export_pca_glb
        comps = np.linalg.qr(rng.standard_normal((verts.size, K)))[0].T.astype(np.float32)  # (K, 3V)
        mean = verts.reshape(-1).astype(np.float32)
        coeffs = None

        def encode():
            nonlocal coeffs
            coeffs = (frames.reshape(T, -1) - mean) @ comps.T

        b, m = timeit(encode, args.repeat)
        row(f"gltf: PCA encode (T, 3V) @ (3V, K) float32, K={K}", b, m)
        pca_glb = out / "pca.glb"
        b, m = timeit(lambda: export_pca_glb(pca_glb, faces, mean, comps, coeffs, FPS), args.repeat)
        row(f"gltf: export_pca_glb (dataset PCA, K={K})", b, m, f"{pca_glb.stat().st_size / 1e6:.1f} MB")
        if importlib.util.find_spec("pygltflib"):
            pg = out / "pygltflib.glb"
            b, m = timeit(lambda: pygltflib_morph(pg, verts, faces, targets, weights), max(1, args.repeat // 2))
            row("gltf baseline: pygltflib, same morph content", b, m, f"{pg.stat().st_size / 1e6:.1f} MB")
        else:
            print("| pygltflib not found (pip install --target DIR pygltflib; --extra-site DIR) |")
        if not args.quick:
            tm = out / "trimesh.glb"
            b, m = timeit(lambda: trimesh_per_frame(tm, frames, faces), 1)
            row(f"gltf baseline: trimesh, {T} meshes (one per frame)", b, m, f"{tm.stat().st_size / 1e6:.1f} MB")
            tm.unlink()
        # PCA fit for vertex heads without a dataset PCA: a smooth low-rank clip (60 components) + noise
        low = np.einsum("tk,kd->td", np.cumsum(rng.standard_normal((T, 60)), 0) * 0.02,
                        rng.standard_normal((60, verts.size)) * 1e-4)
        seq = verts[None] + (low + rng.standard_normal(low.shape) * 1e-7).reshape(T, -1, 3)
        for crit in ("rms", "max"):
            basis = None

            def fit(crit=crit):
                nonlocal basis
                basis = fit_pca_basis(seq, max_error=1e-5, max_components=K, criterion=crit)

            b, m = timeit(fit, 2)
            row(f"pca: fit_pca_basis gram, max_error=1e-5 ({crit}) -> K={len(basis.targets)}", b, m)
        if not args.quick:
            xc = seq.reshape(T, -1) - seq.reshape(T, -1).mean(0)
            b, m = timeit(lambda: np.linalg.svd(xc, full_matrices=False), 1)
            row("pca: np.linalg.svd of the same centred (T, 3V) matrix", b, m)
        # ARKit CSV
        w52 = rng.uniform(0, 1, (T, 52))
        b, m = timeit(lambda: write_arkit_csv(out / "llf.csv", w52, FPS), args.repeat)
        row("arkit-csv: write_arkit_csv (T, 52)", b, m, f"{(out / 'llf.csv').stat().st_size / 1e6:.1f} MB")
        # OBJ sequence
        od = out / "objs"

        def obj_ours():
            write_obj_sequence(od, frames, faces, overwrite=True)

        b, m = timeit(obj_ours, 3)
        total = sum(p.stat().st_size for p in od.iterdir())
        row(f"obj: write_obj_sequence, {T} files", b, m, f"{total / 1e6:.0f} MB")
        n_sub = 100
        face_block = format_faces(faces, len(verts))

        def obj_printf():
            d = out / "printf"
            d.mkdir(exist_ok=True)
            for t in range(n_sub):
                s = ("v %.6f %.6f %.6f\n" * len(verts)) % tuple(frames[t].ravel().tolist())
                (d / f"frame_{t:06d}.obj").write_bytes(s.encode() + face_block)

        def obj_savetxt():
            d = out / "savetxt"
            d.mkdir(exist_ok=True)
            for t in range(n_sub):
                with open(d / f"frame_{t:06d}.obj", "w") as fh:
                    np.savetxt(fh, frames[t], fmt="v %.6f %.6f %.6f")
                    np.savetxt(fh, faces + 1, fmt="f %d %d %d")

        for name, fn in (("printf %-format per file", obj_printf), ("np.savetxt per file", obj_savetxt)):
            b, m = timeit(fn, 2)
            row(f"obj baseline: {name}, {n_sub} files x {T // n_sub} (extrapolated)", b * T / n_sub,
                m * T / n_sub)
        print(f"\nload average at end {os.getloadavg()[0]:.2f}")
    finally:
        shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    main()
