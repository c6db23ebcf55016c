"""Headless Chromium + three.js: GLTFLoader loads our .glb and AnimationMixer drives morphTargetInfluences.

Skips (saying what is missing) without chromium / chromedriver (apt-get install chromium chromium-driver),
selenium (the test extra) or tools/js/node_modules/three (``npm ci`` in tools/js); .ci/run installs all four.
"""
from __future__ import annotations

import functools
import http.server
import json
import os
import shutil
import threading
import time
import urllib.parse

import numpy as np
import pytest
from _output_helpers import NODE_MODULES, REPO, grid_mesh

from a2fbench.outputs.gltf import write_morph_glb

PLAYER = REPO / "tests" / "assets" / "gltf_player.html"


def _missing() -> str | None:
    lacks = []
    browser = next((shutil.which(b) for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)),
                   None)
    if browser is None:
        lacks.append("a chromium binary (apt-get install -y chromium)")
    if shutil.which("chromedriver") is None:
        lacks.append("chromedriver (apt-get install -y chromium-driver)")
    try:
        import selenium  # noqa: F401
    except ImportError:
        lacks.append("the selenium Python package")
    if not (NODE_MODULES / "three" / "build" / "three.module.js").is_file():
        lacks.append(f"{NODE_MODULES}/three (run `npm ci` in {NODE_MODULES.parent})")
    return "missing " + "; ".join(lacks) if lacks else None


MISSING = _missing()
pytestmark = [pytest.mark.browser, pytest.mark.skipif(MISSING is not None, reason=str(MISSING))]


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def served(tmp_path):
    """tmp_path served on 127.0.0.1 with the page and node_modules beside the test files."""
    (tmp_path / "node_modules").symlink_to(NODE_MODULES, target_is_directory=True)
    shutil.copy(PLAYER, tmp_path / "player.html")
    handler = functools.partial(_Quiet, directory=str(tmp_path))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield tmp_path, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def driver():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = next(shutil.which(b) for b in ("chromium", "chromium-browser", "google-chrome")
                                if shutil.which(b))
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--enable-unsafe-swiftshader",
                "--use-angle=swiftshader"):
        opts.add_argument(arg)
    drv = webdriver.Chrome(options=opts, service=Service(shutil.which("chromedriver")))
    try:
        yield drv
    finally:
        drv.quit()


def run_page(driver, base_url, name, fps, probe, steps, timeout=60.0):
    query = urllib.parse.urlencode({"src": name, "fps": fps, "probe": json.dumps(probe), "steps": steps})
    driver.get(f"{base_url}/player.html?{query}")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        res = driver.execute_script("return window.__result || null;")
        if res is not None:
            return res
        time.sleep(0.1)
    logs = driver.get_log("browser") if hasattr(driver, "get_log") else []
    raise AssertionError(f"page gave no result in {timeout} s; console: {logs}")


@pytest.mark.parametrize("n_targets", [52, 512])
def test_three_js_plays_morph_weights(served, driver, n_targets):
    root, url = served
    verts, faces = grid_mesh()
    rng = np.random.default_rng(9)
    fps, T = 30.0, 40
    names = [f"t{k}" for k in range(n_targets)]
    weights = rng.uniform(0, 1, (T, n_targets))
    write_morph_glb(root / "clip.glb", verts, faces, rng.standard_normal((n_targets, len(verts), 3)) * 0.01,
                    weights, fps, names, name="head")
    probe = [0, 7, 20, T - 1]
    res = run_page(driver, url, "clip.glb", fps, probe, steps=T - 1)
    assert res["ok"], res.get("error")
    assert res["vertexCount"] == len(verts)
    assert res["dictionary"] == {n: k for k, n in enumerate(names)}
    assert res["tracks"] == ["head.morphTargetInfluences"]
    assert abs(res["duration"] - (T - 1) / fps) < 1e-6
    w32 = weights.astype(np.float32).astype(np.float64)
    for k, got in zip(probe, res["samples"]):
        # at a keyframe time LINEAR interpolation returns that key (alpha ~ float32 time rounding)
        np.testing.assert_allclose(got, w32[k], atol=1e-5)
    assert res["changes"] == T - 1  # influences changed on every frame step
    print(f"three r{res['three']}, {n_targets} targets, render: {res['render']}")


@pytest.mark.skipif(not os.environ.get("A2FBENCH_BROWSER_BIG"), reason="opt-in (slow): set A2FBENCH_BROWSER_BIG=1 to "
                    "load a VOCASET-sized 60 s clip (V=5022, K=512, T=1800, ~35 MB) in Chromium")
def test_three_js_vocaset_sized_clip(served, driver):
    root, url = served
    verts, faces = grid_mesh(31, 162)  # 5022 vertices: VOCASET-sized
    rng = np.random.default_rng(10)
    T, K, fps = 1800, 512, 30.0
    weights = rng.standard_normal((T, K)).astype(np.float32)
    write_morph_glb(root / "big.glb", verts, faces, (rng.standard_normal((K, len(verts), 3)) * 1e-3)
                    .astype(np.float32), weights, fps, name="head")
    probe = [0, 900, T - 1]
    t0 = time.monotonic()
    res = run_page(driver, url, "big.glb", fps, probe, steps=T - 1, timeout=300)
    assert res["ok"], res.get("error")
    for k, got in zip(probe, res["samples"]):
        np.testing.assert_allclose(got, weights[k], atol=1e-4)
    assert res["changes"] == T - 1
    print(f"VOCASET-sized clip: page done in {time.monotonic() - t0:.1f} s, render: {res['render']}")
