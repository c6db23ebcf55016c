"""Make the pictures of docs/outputs.md: every output of ``a2fbench render / export / report``, made by the
commands the page shows, on the synthetic stand-ins (plus the published topologies, when present).

    PYTHONPATH=. python tools/output_figures.py [--out docs/img/outputs] [--work /tmp/a2f-figures]

Needs: the project installed (``a2fbench`` on PATH), and for the glTF and report pictures headless Chromium +
chromedriver + selenium and ``tools/js/node_modules/three`` (``npm ci`` in tools/js); those pictures are
skipped, saying why, without them.
"""

from __future__ import annotations

import argparse
import csv
import functools
import http.server
import json
import os
import shlex
import shutil
import subprocess
import sys
import threading
import urllib.parse
from pathlib import Path

import av
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image

import a2fbench
from a2fbench.outputs import compose, gltf, raster
from a2fbench.sources.meshes import read_mesh

REPO = Path(__file__).resolve().parents[1]
RES = Path(os.environ.get("A2FBENCH_SHARED_RESOURCES", REPO.parent / "shared" / "resources"))
COMMANDS: list[str] = []


def sh(*args: object) -> None:
    cmd = [str(a) for a in args]
    COMMANDS.append(" ".join(shlex.quote(c) for c in cmd))
    print("$", COMMANDS[-1], flush=True)
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)


def frame_of(mp4: Path, index: int) -> np.ndarray:
    with av.open(str(mp4)) as c:
        for i, fr in enumerate(c.decode(video=0)):
            if i == index:
                return fr.to_ndarray(format="rgb24")
    raise ValueError(f"{mp4} has fewer than {index + 1} frames")


def save_png(img: np.ndarray, path: Path, width: int = 900) -> None:
    im = Image.fromarray(img)
    if im.width > width:
        im = im.resize((width, round(im.height * width / im.width)), Image.LANCZOS)
    im.save(path, optimize=True)
    print("  ->", path)


def real_meshes(out: Path) -> None:
    """One frame per published topology: prediction (error colours) | colour bar | ground truth."""
    rows = []
    for name, rel in (("FLAME (VOCASET, 5,023 vertices)", "flame/FLAME_sample.ply"),
                      ("BIWI (23,370 vertices)", "biwi/BIWI.ply"), ("MeshTalk (6,172 vertices)", "meshtalk/face_template.obj")):
        if not (RES / rel).is_file():
            print(f"  skipped {name}: {RES / rel} absent")
            continue
        v, f = read_mesh(RES / rel)
        v = v.astype(np.float32)
        h = np.ptp(v[:, 1])
        jaw = np.clip((v[:, 1].mean() - v[:, 1]) / (0.3 * h), 0, 1) * (v[:, 2] > np.median(v[:, 2]))
        pred = v - 0.05 * h * jaw[:, None] * np.float32([0, 1, 0.3])
        gt = v - 0.035 * h * jaw[:, None] * np.float32([0, 1, 0.3])
        scale, unit = (1000.0, "mm") if "FLAME" in name else ((1.0, "mm") if "MeshTalk" in name else (1.0, "units"))
        img = next(compose.frames(f, pred[None], gt[None], size=384, template=v, error=True, error_scale=scale,
                                  units=f"error ({unit})", labels=(name, "ground truth")))
        rows.append(img[..., :3])
    if rows:
        w = max(r.shape[1] for r in rows)
        save_png(np.concatenate([np.pad(r, ((0, 0), (0, w - r.shape[1]), (0, 0)), constant_values=255) for r in rows]),
                 out / "render_real_topologies.png")


def csv_plot(path: Path, out: Path) -> None:
    rows = list(csv.reader(open(path)))
    head, body = rows[0], rows[1:]
    fig = Figure(figsize=(9, 3.2), layout="constrained")
    ax = fig.add_subplot(1, 1, 1)
    t = np.arange(len(body)) / 30.0
    for name in ("JawOpen", "MouthClose", "MouthFunnel", "MouthSmileLeft", "EyeBlinkLeft", "BrowInnerUp"):
        j = head.index(name)
        ax.plot(t, [float(r[j]) for r in body], label=name)
    ax.set_xlabel("time (s)")
    ax.set_ylabel("weight")
    ax.set_ylim(0, 1)
    ax.legend(ncol=3, fontsize=8)
    ax.set_title(f"{path.name}: {len(body)} rows x {len(head)} columns (Live Link Face layout)", fontsize=10)
    FigureCanvasAgg(fig)
    fig.savefig(out, dpi=100)
    print("  ->", out)


def obj_strip(folder: Path, template_from: Path, out: Path) -> None:
    files = sorted(folder.glob("*.obj"))
    picks = [files[i] for i in np.linspace(0, len(files) - 1, 4).astype(int)]
    v0, f = read_mesh(picks[0])
    cam = raster.Camera.frontal(v0, 256)
    ren = raster.Renderer(f, cam)
    imgs = [ren.render(read_mesh(p)[0].astype(np.float32)) for p in picks]
    save_png(np.concatenate(imgs, axis=1), out)


def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chromium, drv = shutil.which("chromium") or shutil.which("chromium-browser"), shutil.which("chromedriver")
    if not chromium or not drv:
        raise RuntimeError("chromium / chromedriver not installed")
    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--enable-unsafe-swiftshader",
              "--use-angle=swiftshader", "--hide-scrollbars", "--window-size=1300,1400"):
        opts.add_argument(a)
    return webdriver.Chrome(options=opts, service=Service(drv))


GLB_PAGE = """<!doctype html><html><head><meta charset="utf-8"><script type="importmap">
{"imports": {"three": "./node_modules/three/build/three.module.js",
             "three/addons/": "./node_modules/three/examples/jsm/"}}</script>
<style>body{margin:0;background:#fff}</style></head><body><script type="module">
import * as THREE from "three";
import { GLTFLoader } from "three/addons/loaders/GLTFLoader.js";
const q = new URLSearchParams(location.search);
const gltf = await new GLTFLoader().loadAsync(q.get("src"));
const times = JSON.parse(q.get("t"));
const renderer = new THREE.WebGLRenderer({ antialias: true, preserveDrawingBuffer: true });
renderer.setSize(320 * times.length, 360);
renderer.setScissorTest(true);
document.body.appendChild(renderer.domElement);
const scene = new THREE.Scene();
scene.background = new THREE.Color(0xffffff);
scene.add(gltf.scene, new THREE.AmbientLight(0xffffff, 0.6));
const light = new THREE.DirectionalLight(0xffffff, 1.6); light.position.set(0.3, 0.4, 1); scene.add(light);
const box = new THREE.Box3().setFromObject(gltf.scene), c = box.getCenter(new THREE.Vector3());
const size = box.getSize(new THREE.Vector3());
const cam = new THREE.PerspectiveCamera(15, 300 / 360, size.z * 0.1, size.z * 100);
cam.position.set(c.x, c.y, box.max.z + 1.1 * size.y / (2 * Math.tan(7.5 * Math.PI / 180)));
cam.lookAt(c);
const mixer = new THREE.AnimationMixer(gltf.scene);
mixer.clipAction(gltf.animations[0]).play();
times.forEach((t, i) => {
  mixer.setTime(t);
  renderer.setViewport(300 * i, 0, 300, 360); renderer.setScissor(300 * i, 0, 300, 360);
  renderer.render(scene, cam);
});
window.__done = true;
</script></body></html>"""


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


def flame_glb(out: Path) -> Path | None:
    """The published FLAME sample mesh with a 2 s jaw opening and closing, as a glTF of a clip PCA (the same
    writer as ``a2fbench export --format gltf`` without a dataset PCA)."""
    if not (RES / "flame/FLAME_sample.ply").is_file():
        return None
    v, f = read_mesh(RES / "flame/FLAME_sample.ply")
    h = np.ptp(v[:, 1])
    jaw = np.clip((v[:, 1].mean() - v[:, 1]) / (0.3 * h), 0, 1) * (v[:, 2] > np.median(v[:, 2]))
    t = np.arange(60) / 30.0
    frames = v[None] - (0.06 * h * np.sin(np.pi * t) ** 2)[:, None, None] * jaw[None, :, None] * [0, 1, 0.3]
    gltf.export_vertex_sequence_glb(out, frames, f, 30.0, max_error=1e-6)
    return out


def glb_shot(glb: Path, out: Path, times: list[float]) -> None:
    nm = REPO / "tools" / "js" / "node_modules"
    if not (nm / "three").is_dir():
        print(f"  skipped glTF picture: {nm}/three absent (npm ci in tools/js)")
        return
    site = glb.parent / "site"
    site.mkdir(exist_ok=True)
    (site / "node_modules").unlink(missing_ok=True)
    (site / "node_modules").symlink_to(nm, target_is_directory=True)
    shutil.copy(glb, site / glb.name)
    (site / "view.html").write_text(GLB_PAGE)
    handler = functools.partial(_Quiet, directory=str(site))
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    drv = browser()
    try:
        q = urllib.parse.urlencode({"src": glb.name, "t": json.dumps(times)})
        drv.get(f"http://127.0.0.1:{srv.server_address[1]}/view.html?{q}")
        for _ in range(300):
            if drv.execute_script("return window.__done === true"):
                break
            import time

            time.sleep(0.1)
        png = drv.find_element("tag name", "canvas").screenshot_as_png
        out.write_bytes(png)
        print("  ->", out)
    finally:
        drv.quit()
        srv.shutdown()


def page_shot(html: Path, out: Path) -> None:
    drv = browser()
    try:
        drv.get(html.resolve().as_uri())
        h = drv.execute_script("return document.body.scrollHeight")
        drv.set_window_size(1100, min(int(h) + 40, 4000))
        out.write_bytes(drv.get_screenshot_as_png())
        print("  ->", out)
    finally:
        drv.quit()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "img" / "outputs")
    ap.add_argument("--work", type=Path, default=Path("/tmp/a2f-figures"))
    args = ap.parse_args()
    out, w = args.out, args.work
    shutil.rmtree(w, ignore_errors=True)
    w.mkdir(parents=True)
    out.mkdir(parents=True, exist_ok=True)
    sh("a2fbench", "synth", "D1,D3", "--out", w / "raw", "--size", "tiny")
    sh("a2fbench", "prepare", "D1,D3", "--raw", w / "raw", "--out", w / "data")
    for d in ("D1", "D3"):  # "predictions": the test split's ground truth, exaggerated by 2 %
        ds = a2fbench.open_dataset(w / "data", d)
        (w / f"pred{d}").mkdir()
        for s in ds.split("test"):
            np.save(w / f"pred{d}" / f"{s}.npy", np.asarray(ds[s].motion, np.float32) * 1.02)
    sid = a2fbench.open_dataset(w / "data", "D1").split("test")[0]
    sid3 = a2fbench.open_dataset(w / "data", "D3").split("test")[0]
    sh("a2fbench", "render", w / "predD1" / f"{sid}.npy", "--dataset", "D1", "--data", w / "data", "--gt", "--errors",
       "--out", w / "clip.mp4")
    save_png(frame_of(w / "clip.mp4", 20), out / "render_d1_gt_errors.png")
    sh("a2fbench", "render", w / "predD3" / f"{sid3}.npy", "--dataset", "D3", "--data", w / "data", "--gt", "--size",
       "384", "--out", w / "clip_d3.mp4")
    save_png(frame_of(w / "clip_d3.mp4", 20), out / "render_d3_arkit.png")
    real_meshes(out)
    sh("a2fbench", "export", w / "predD3" / f"{sid3}.npy", "--dataset", "D3", "--data", w / "data", "--format",
       "arkit-csv", "--out", w / "clip.csv")
    csv_plot(w / "clip.csv", out / "export_arkit_csv.png")
    sh("a2fbench", "export", w / "predD3" / f"{sid3}.npy", "--dataset", "D3", "--data", w / "data", "--format", "gltf",
       "--out", w / "clip_d3.glb")
    sh("a2fbench", "export", w / "predD1" / f"{sid}.npy", "--dataset", "D1", "--data", w / "data", "--format", "gltf",
       "--out", w / "clip_d1.glb")
    try:
        glb_shot(flame_glb(w / "flame_jaw.glb") or w / "clip_d1.glb", out / "export_gltf_three.png",
                 [0.0, 0.5, 1.0, 1.5])
    except Exception as e:  # noqa: BLE001 - a missing browser skips one picture
        print(f"  skipped glTF picture: {e}")
    sh("a2fbench", "export", w / "predD1" / f"{sid}.npy", "--dataset", "D1", "--data", w / "data", "--format", "obj",
       "--out", w / "clip_obj")
    obj_strip(w / "clip_obj", w / "clip_obj", out / "export_obj_frames.png")
    sh("a2fbench", "evaluate", w / "predD1", "--dataset", "D1", "--data", w / "data", "--out", w / "results.json")
    sh("a2fbench", "report", w / "results.json", "--pred", w / "predD1", "--data", w / "data", "--out",
       w / "report.html", "--videos")
    try:
        page_shot(w / "report.html", out / "report_page.png")
    except Exception as e:  # noqa: BLE001
        print(f"  skipped report picture: {e}")
    (out / "commands.txt").write_text("\n".join(c.replace(str(w), "$W") for c in COMMANDS) + "\n")


if __name__ == "__main__":
    sys.exit(main())
