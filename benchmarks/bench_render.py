"""Frames/s of mesh-sequence rendering at 512x512, render only and render + encode (H.264 + AAC mp4).

Ours (``a2fbench.outputs``: the numpy rasteriser, ``compose`` and the PyAV writer) beside "the obvious ways":
matplotlib ``plot_trisurf`` per frame, and, where they install, pyrender (OSMesa) and moderngl (EGL, Mesa
llvmpipe on the CPU). Each case runs in its own subprocess (GL back ends do not mix in one process); every
case runs in one invocation:

    python benchmarks/bench_render.py [--frames 150] [--json results.json]
    python benchmarks/bench_render.py --encoders [--frames 150]   # x264 preset/threads/crf sweep

pyrender and moderngl are not project dependencies: ``--extra-site DIR`` appends a site-packages folder that
holds them (``pip install --target DIR pyrender PyOpenGL==3.1.7 moderngl``; pyrender pins PyOpenGL 3.1.0,
which fails under OSMesa; apt ``libosmesa6``, and Mesa's EGL for moderngl) to the baseline subprocesses only.
A case whose packages are missing prints "unavailable".

Meshes: FLAME (VOCASET, 5023 vertices) and BIWI (23370 vertices) from the shared resources folder
(``$A2FBENCH_SHARED_RESOURCES``, default ../shared/resources), animated with a synthetic jaw-like
displacement. Audio: a 16 kHz tone of the clip's length.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

from a2fbench.outputs import compose, raster, video
from a2fbench.sources.meshes import read_mesh

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RES = os.environ.get("A2FBENCH_SHARED_RESOURCES", os.path.join(os.path.dirname(REPO), "shared", "resources"))
MESHES = {"FLAME": "flame/FLAME_sample.ply", "BIWI": "biwi/BIWI.ply"}
SIZE, FPS, SR = 512, 30, 16000
CASES = [  # name, cap on frames (slow baselines get fewer)
    ("numpy render", None), ("numpy render+encode", None),
    ("numpy render+encode, cull back faces", None),
    ("numpy gt side-by-side + error map + encode (1074x512)", None),
    ("matplotlib plot_trisurf render", 6), ("matplotlib plot_trisurf render+encode", 6),
    ("pyrender OSMesa render", 40), ("pyrender OSMesa render+encode", 40),
    ("moderngl EGL render", None), ("moderngl EGL render+encode", None),
]


def load(name: str, frames: int):
    v, faces = read_mesh(os.path.join(RES, MESHES[name]))
    v = v.astype(np.float32)
    h = np.ptp(v[:, 1])
    jaw = np.clip((v[:, 1].mean() - v[:, 1]) / (0.3 * h), 0, 1) * (v[:, 2] > np.median(v[:, 2]))
    t = np.arange(frames)
    open_ = 0.04 * h * np.abs(np.sin(t / 5.0))  # jaw opens and closes
    seq = v[None] - open_[:, None, None] * jaw[None, :, None] * np.float32([0, 1, 0.3])
    gt = v[None] - 0.8 * open_[:, None, None] * jaw[None, :, None] * np.float32([0, 1, 0.3])
    return v, faces, seq.astype(np.float32), gt.astype(np.float32)


def audio_for(frames: int) -> np.ndarray:
    t = np.arange(int(frames / FPS * SR)) / SR
    return (0.2 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)


def matplotlib_frames(v0, faces, seq):
    import matplotlib  # noqa: PLC0415 - each baseline imports only in its own subprocess

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    lo, hi = v0.min(0), v0.max(0)
    fig = plt.figure(figsize=(SIZE / 100, SIZE / 100), dpi=100)
    for v in seq:
        fig.clf()
        ax = fig.add_axes((0, 0, 1, 1), projection="3d")
        ax.plot_trisurf(v[:, 0], v[:, 1], v[:, 2], triangles=faces, color=(0.78, 0.74, 0.7),
                        linewidth=0, antialiased=False, shade=True)
        ax.view_init(elev=90, azim=-90)
        ax.set_xlim(lo[0], hi[0]), ax.set_ylim(lo[1], hi[1]), ax.set_zlim(lo[2], hi[2])
        ax.set_axis_off()
        fig.canvas.draw()
        yield np.asarray(fig.canvas.buffer_rgba()).copy()


def pyrender_frames(v0, faces, seq):
    os.environ.setdefault("PYOPENGL_PLATFORM", "osmesa")
    import pyrender
    import trimesh

    scene = pyrender.Scene(bg_color=[1.0, 1.0, 1.0, 1.0], ambient_light=[0.3] * 3)
    lo, hi = v0.min(0), v0.max(0)
    pose = np.eye(4)
    pose[:3, 3] = [(lo[0] + hi[0]) / 2, (lo[1] + hi[1]) / 2,
                   hi[2] + np.ptp(v0[:, 1]) / 0.9 / 2 / np.tan(np.radians(7.5))]
    scene.add(pyrender.PerspectiveCamera(yfov=np.radians(15)), pose=pose)
    scene.add(pyrender.DirectionalLight(intensity=3.0), pose=pose)
    r = pyrender.OffscreenRenderer(SIZE, SIZE)
    node = None
    for v in seq:  # the usual pattern: a new mesh per frame
        if node is not None:
            scene.remove_node(node)
        mesh = trimesh.Trimesh(v, faces, process=False)
        node = scene.add(pyrender.Mesh.from_trimesh(mesh, smooth=True))
        yield r.render(scene)[0]
    r.delete()


def moderngl_frames(v0, faces, seq):
    import moderngl

    ctx = moderngl.create_standalone_context(backend="egl")
    prog = ctx.program(vertex_shader="""#version 330
        in vec3 p; in vec3 n; uniform mat4 m; out float s;
        void main() { gl_Position = m * vec4(p, 1.0);
          s = 0.25 + 0.75 * max(dot(normalize(n), normalize(vec3(0.3, 0.4, 1.0))), 0.0); }""",
                       fragment_shader="""#version 330
        in float s; out vec4 c; void main() { c = vec4(vec3(0.78, 0.74, 0.70) * s, 1.0); }""")
    lo, hi = v0.min(0), v0.max(0)
    k = 1.8 / max(hi[:2] - lo[:2])
    m = np.diag([k, k, -k, 1]).astype(np.float32)
    m[:3, 3] = [-(lo[0] + hi[0]) / 2 * k, -(lo[1] + hi[1]) / 2 * k, (lo[2] + hi[2]) / 2 * k]
    prog["m"].write(m.T.copy().tobytes())
    vbo = ctx.buffer(reserve=v0.nbytes * 2)
    vao = ctx.vertex_array(prog, [(vbo, "3f 3f", "p", "n")],
                           ctx.buffer(faces.astype(np.int32).tobytes()))
    fbo = ctx.simple_framebuffer((SIZE, SIZE))
    fbo.use()
    ctx.enable(moderngl.DEPTH_TEST)
    f0, f1, f2 = faces.T
    for v in seq:
        fn = np.cross(v[f1] - v[f0], v[f2] - v[f0])
        vn = np.stack([np.bincount(faces.ravel(), np.repeat(fn[:, i], 3), minlength=len(v))
                       for i in range(3)], 1)
        vbo.write(np.hstack([v, vn]).astype(np.float32).tobytes())
        fbo.clear(1.0, 1.0, 1.0, 1.0)
        vao.render()
        yield np.frombuffer(fbo.read(components=4), np.uint8).reshape(SIZE, SIZE, 4)[::-1]


def run_case(case: str, mesh: str, frames: int) -> dict:
    v0, faces, seq, gt = load(mesh, frames)
    if case.startswith("numpy gt"):
        gen = compose.frames(faces, seq, gt, size=SIZE, error=True,
                                labels=("prediction", "ground truth"))
    elif case.startswith("numpy"):
        ren = raster.Renderer(faces, raster.Camera.frontal(v0, SIZE),
                              cull_backfaces="cull" in case)
        gen = (ren.render_rgba(v) for v in seq)
    else:
        make = {"matplotlib": matplotlib_frames, "pyrender": pyrender_frames,
                "moderngl": moderngl_frames}[case.split()[0]]
        gen = make(v0, faces, seq)
        next(gen)  # start-up (GL context, figure) is not timed; the rest are
    start, cpu = time.perf_counter(), time.process_time()
    if "encode" in case:
        with tempfile.TemporaryDirectory() as d:
            info = video.write_mp4(os.path.join(d, "b.mp4"), gen, FPS, audio_for(len(seq)), SR)
            size = os.path.getsize(os.path.join(d, "b.mp4"))
        n = info.frames
    else:
        n, size = sum(1 for _ in gen), None
    wall = time.perf_counter() - start
    return {"case": case, "mesh": mesh, "frames": n, "fps": n / wall,
            "ms_per_frame": 1e3 * wall / n,
            "cpu_ms_per_frame": 1e3 * (time.process_time() - cpu) / n, "mp4_bytes": size}


def encoder_sweep(frames: int) -> None:
    """x264 preset / threads / crf on pre-rendered FLAME frames (encode only)."""
    v0, faces, seq, _ = load("FLAME", frames)
    ren = raster.Renderer(faces, raster.Camera.frontal(v0, SIZE))
    imgs = [ren.render_rgba(v).copy() for v in seq]
    print("| preset | threads | crf | ms/frame | CPU ms/frame | KiB per 10 s |")
    print("|---|---|---|---|---|---|")
    grid = [(p, t, 20) for p in ("ultrafast", "superfast", "veryfast", "faster", "medium")
            for t in (0, 1, 2)] + [("veryfast", 0, c) for c in (16, 23, 28)]
    with tempfile.TemporaryDirectory() as d:
        for preset, threads, crf in grid:
            out = os.path.join(d, "e.mp4")
            start, cpu = time.perf_counter(), time.process_time()
            video.write_mp4(out, iter(imgs), FPS, audio_for(len(imgs)), SR, crf=crf,
                            preset=preset, threads=threads)
            wall, cpu = time.perf_counter() - start, time.process_time() - cpu
            kib = os.path.getsize(out) / 1024 * (10 * FPS / len(imgs))
            print(f"| {preset} | {threads} | {crf} | {1e3 * wall / len(imgs):.2f} "
                  f"| {1e3 * cpu / len(imgs):.2f} | {kib:.0f} |", flush=True)


def machine() -> dict:
    out = {"python": sys.version.split()[0], "numpy": np.__version__,
           "cpus": os.cpu_count(), "loadavg_start": os.getloadavg()}
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines():
            if line.startswith("Model name"):
                out["cpu"] = line.split(":", 1)[1].strip()
    except OSError:
        pass
    import av

    out["av"] = av.__version__
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--frames", type=int, default=150)
    ap.add_argument("--json", default=None)
    ap.add_argument("--only", default=None, help="substring of case names to run")
    ap.add_argument("--encoders", action="store_true", help="sweep x264 settings instead")
    ap.add_argument("--extra-site", default=None, help="site-packages with pyrender/moderngl for the baselines")
    ap.add_argument("--one", nargs=2, metavar=("CASE", "MESH"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print(json.dumps(run_case(args.one[0], args.one[1], args.frames)))
        return
    info = machine()
    if args.encoders:
        print(f"# {info.get('cpu', '?')}, {info['cpus']} CPUs, load {info['loadavg_start'][0]:.2f}")
        return encoder_sweep(args.frames)
    print(f"# {info.get('cpu', '?')}, {info['cpus']} CPUs, numpy {info['numpy']}, "
          f"PyAV {info.get('av', '-')}, load {info['loadavg_start'][0]:.2f}")
    print("| mesh | case | frames | fps | ms/frame | CPU ms/frame |\n|---|---|---|---|---|---|")
    results = []
    for mesh in MESHES:
        if not os.path.exists(os.path.join(RES, MESHES[mesh])):
            print(f"| {mesh} | (mesh not found under {RES}) | | | | |")
            continue
        for case, cap in CASES:
            if args.only and args.only not in case:
                continue
            n = min(args.frames, cap) if cap else args.frames
            env = dict(os.environ)
            if args.extra_site and not case.startswith("numpy"):  # appended: the venv's own packages win
                env["PYTHONPATH"] = os.pathsep.join(filter(None, [env.get("PYTHONPATH"), args.extra_site]))
            p = subprocess.run([sys.executable, __file__, "--frames", str(n), "--one", case, mesh],
                               capture_output=True, text=True, timeout=1800, env=env)
            if p.returncode:
                err = (p.stderr.strip().splitlines() or ["failed"])[-1][:80]
                print(f"| {mesh} | {case} | - | unavailable: {err} | | |", flush=True)
                continue
            r = json.loads(p.stdout.strip().splitlines()[-1])
            results.append(r)
            print(f"| {mesh} | {case} | {r['frames']} | {r['fps']:.1f} | {r['ms_per_frame']:.1f} "
                  f"| {r['cpu_ms_per_frame']:.1f} |", flush=True)
    info["loadavg_end"] = os.getloadavg()
    print(f"# load average at end {info['loadavg_end'][0]:.2f}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"machine": info, "results": results}, fh, indent=1)


if __name__ == "__main__":
    main()
