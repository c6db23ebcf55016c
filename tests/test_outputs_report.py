"""``a2fbench report``: the per-vertex statistics against known answers and a slow whole-array reference, and the
page itself (self-contained, escaped, the sections it promises)."""

from __future__ import annotations

import html
import re
from pathlib import Path

import numpy as np
from _cli_helpers import run_a2fbench

import a2fbench
from a2fbench.outputs import heads
from a2fbench.outputs.heads import open_head
from a2fbench.outputs.maps import vertex_stats
from a2fbench.outputs.report import report_html, worst_rows
from a2fbench.scoring.evaluate import evaluate

_cli = run_a2fbench


def _predictions(data: Path, out: Path, fn) -> tuple[list[str], dict]:
    ds = a2fbench.open_dataset(data, "D1")
    out.mkdir()
    ids = ds.split("test")
    gts = {}
    for s in ids:
        g = np.asarray(ds[s].motion, np.float64).reshape(ds[s].n_frames, -1, 3)
        gts[s] = g
        np.save(out / f"{s}.npy", fn(g).astype(np.float32))
    return ids, gts


def test_constant_offset_gives_its_length_everywhere_and_unchanged_speeds(data_tiny, tmp_path):
    d = np.array([0.0006, -0.0008, 0.0])  # |d| = 1 mm
    ids, _ = _predictions(data_tiny, tmp_path / "pred", lambda g: g + d)
    doc = evaluate("D1", tmp_path / "pred", data_tiny, n_bootstrap=100, progress=False)
    head = open_head(data_tiny, "D1")
    st = vertex_stats(doc, tmp_path / "pred", head)
    # float32 predictions of coordinates ~0.1 m: each coordinate carries <= 2^-24 x 0.1 m ~ 6e-9 m of rounding,
    # i.e. ~1e-5 relative to the 1e-3 m offset
    np.testing.assert_allclose(st.error_mean, 1.0, rtol=3e-5)
    # the same offset on every frame: the speeds are the ground truth's (up to the same float32 rounding, x fps)
    np.testing.assert_allclose(st.pred_speed_mean, st.gt_speed_mean, atol=30 * 4e-8 * 1000)
    assert st.n_files == len(ids) and st.n_frames == doc["dataset"]["n_frames"]
    head.close()


def test_velocity_maps_match_a_whole_array_reference(data_tiny, tmp_path, monkeypatch):
    rng = np.random.default_rng(3)
    ids, gts = _predictions(data_tiny, tmp_path / "pred",
                            lambda g: g * 1.02 + rng.normal(0, 1e-4, g.shape))
    doc = evaluate("D1", tmp_path / "pred", data_tiny, n_bootstrap=100, progress=False)
    head = open_head(data_tiny, "D1")
    monkeypatch.setattr(heads, "BLOCK", 7)  # small blocks: the pairs across block boundaries must count too
    st = vertex_stats(doc, tmp_path / "pred", head)
    preds = {s: np.load(tmp_path / "pred" / f"{s}.npy").astype(np.float64) for s in ids}
    sp = np.concatenate([np.linalg.norm(np.diff(preds[s], axis=0), axis=-1) for s in ids]) * 30 * 1000
    sg = np.concatenate([np.linalg.norm(np.diff(gts[s], axis=0), axis=-1) for s in ids]) * 30 * 1000
    err = np.concatenate([np.linalg.norm(preds[s] - gts[s], axis=-1) for s in ids]) * 1000
    # float32 differences of ~0.1 m coordinates (6e-9 m) against speeds of ~1 mm/s... float32 sums of
    # squares over <= 100 frames: 1e-4 relative is ample
    np.testing.assert_allclose(st.pred_speed_mean, sp.mean(0), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(st.pred_speed_std, sp.std(0), rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(st.gt_speed_mean, sg.mean(0), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(st.gt_speed_std, sg.std(0), rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(st.error_mean, err.mean(0), rtol=1e-4)
    assert st.n_pairs == len(sp)
    head.close()


def test_report_page_with_predictions(data_tiny, tmp_path, monkeypatch, capsys):
    _predictions(data_tiny, tmp_path / "pred", lambda g: g * 1.02)
    rc, out, err = _cli(monkeypatch, capsys, "evaluate", tmp_path / "pred", "--dataset", "D1", "--data", data_tiny,
                        "--bootstrap", "200", "--out", tmp_path / "r.json")
    assert rc == 0, err
    rc, out, err = _cli(monkeypatch, capsys, "report", tmp_path / "r.json", "--pred", tmp_path / "pred", "--data",
                        data_tiny, "--out", tmp_path / "r.html", "--videos", "--worst", "1")
    assert rc == 0, err
    page = (tmp_path / "r.html").read_text()
    assert page.count("data:image/png;base64,") == 3  # distributions, error map, velocity maps
    for s in ("Per-vertex mean error", "Upper-face velocity", "Worst 1 sequences by LVE", "95% CI", "LVE", "FDD_abs"):
        assert s in page
    assert "<script" not in page and "http://" not in page and "https://" not in page  # loads and runs nothing
    worst = worst_rows(a2fbench.scoring.results.load(tmp_path / "r.json"), 1)[0]["id"]
    assert f'href="r_videos/{worst}.mp4"' in page and (tmp_path / "r_videos" / f"{worst}.mp4").is_file()


def test_report_from_results_alone_and_escaping(data_tiny, tmp_path):
    _predictions(data_tiny, tmp_path / "pred", lambda g: g * 1.02)
    doc = evaluate("D1", tmp_path / "pred", data_tiny, n_bootstrap=100, progress=False)
    doc["per_sequence"][0]["id"] = "<script>alert(1)</script>"
    page = report_html(doc, worst=5)
    assert page.count("data:image/png;base64,") == 1  # the distributions only
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    rows = re.findall(r"<tr><td class=l>([^<]*)</td><td>(\d+)</td>", page)
    want = sorted(doc["per_sequence"], key=lambda r: -r["LVE"])[:5]
    assert [html.unescape(r[0]) for r in rows] == [r["id"] for r in want]


def test_report_bad_input_is_one_line(data_tiny, tmp_path, monkeypatch, capsys):
    (tmp_path / "r.json").write_text("{not json")
    rc, out, err = _cli(monkeypatch, capsys, "report", tmp_path / "r.json", "--out", tmp_path / "r.html")
    assert rc == 1 and err.startswith("error: ") and err.count("\n") == 1
    rc, out, err = _cli(monkeypatch, capsys, "report", tmp_path / "r.json", "--out", tmp_path / "no" / "r.html")
    assert rc == 1 and "r.json" in err and err.count("\n") == 1  # a missing folder is made only when writing
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.json"]
