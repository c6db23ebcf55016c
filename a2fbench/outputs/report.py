"""``a2fbench report``: one self-contained HTML page per evaluation.

From the results JSON alone: the metric table with 95% CIs and the per-sequence distribution of each metric.
With the predictions folder and the store it was scored against (``--pred``, ``--data``): the per-vertex mean
error map on the template (front and side), the upper-face velocity mean and standard-deviation maps of the
predictions and of the ground truth (UniTalker's Fig. 6; :mod:`.maps` says how they are computed), and the
worst sequences with the command that renders each (or, with ``videos``, the rendered video beside the page).

Images are PNGs embedded as ``data:`` URIs; the page loads nothing, runs no script, and its
Content-Security-Policy allows only its own style and embedded images. Every string from the results or the
file system is HTML-escaped.
"""

from __future__ import annotations

import base64
import hashlib
import html
import os
import shlex
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from ..errors import OutputError
from ..scoring.metrics.table import METRICS
from ..scoring.results import load as load_results
from ..util.fsutil import atomic_path
from ..util.progress import bar
from . import figures
from ..util.guard import check_output
from .heads import AudioReader, Head, open_head
from .maps import VertexStats, vertex_stats
from .mouth import mouth_section
from .render import render

_CSS = """body{font:14px/1.45 system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#222;padding:0 1em}
h1{font-size:1.5em}h2{font-size:1.15em;margin-top:2em;border-bottom:1px solid #ddd}
table{border-collapse:collapse}td,th{padding:3px 10px;border-bottom:1px solid #eee;text-align:right}
th{background:#f5f5f5}td.l,th.l{text-align:left}code{font-size:12px;background:#f5f5f5;padding:1px 4px;
word-break:break-all}img{max-width:100%}.note{color:#666;font-size:12px}.warn{color:#a40}"""


def _e(x: Any) -> str:
    return html.escape(str(x), quote=True)


def _img(data: bytes, alt: str) -> str:
    return f'<img alt="{_e(alt)}" src="data:image/png;base64,{base64.b64encode(data).decode()}">'


def _num(v: Optional[float], scale: float) -> str:
    return "-" if v is None else f"{v / scale:.4f}"


def metric_table(doc: dict) -> str:
    rows = []
    for name, m in doc["metrics"].items():
        s = float(m.get("display_scale") or 1.0)
        ci = m.get("ci95") or (None, None)
        unit = f"x{s:.0e} {m['unit']}" if s != 1.0 else m["unit"]
        by_abs = name in METRICS and METRICS[name].ranked_by_abs  # a signed metric: its distance from 0 counts
        better = "higher" if m.get("higher_is_better") else ("closer to 0" if by_abs else "lower")
        rows.append(f"<tr><td class=l>{_e(name)}</td><td>{_num(m.get('value'), s)}</td><td>[{_num(ci[0], s)}, "
                    f"{_num(ci[1], s)}]</td><td class=l>{_e(unit)}</td><td class=l>{_e(m.get('aggregation', ''))}"
                    f"</td><td class=l>{better}</td></tr>")
    return ("<table><tr><th class=l>metric</th><th>value</th><th>95% CI</th><th class=l>unit</th>"
            "<th class=l>aggregation</th><th class=l>better</th></tr>" + "".join(rows) + "</table>")


def worst_rows(doc: dict, n: int, metric: str = "LVE") -> list[dict]:
    rows = [r for r in doc["per_sequence"] if r.get(metric) is not None]
    return sorted(rows, key=lambda r: -float(r[metric]))[:n]


def _worst_table(doc: dict, rows: list[dict], commands: dict[str, str], videos: dict[str, str]) -> str:
    metrics = [m for m in figures.REPORT_METRICS if m in doc["metrics"]]
    head = "".join(f"<th>{m}</th>" for m in metrics)
    out = [f"<table><tr><th class=l>sequence</th><th>frames</th>{head}<th class=l>render</th></tr>"]
    for r in rows:
        cells = "".join(f"<td>{_num(r.get(m), float(doc['metrics'][m].get('display_scale') or 1.0))}</td>"
                        for m in metrics)
        link = f'<a href="{_e(videos[r["id"]])}">video</a> ' if r["id"] in videos else ""
        out.append(f"<tr><td class=l>{_e(r['id'])}</td><td>{_e(r.get('frames'))}</td>{cells}<td class=l>{link}"
                   f"<code>{_e(commands[r['id']])}</code></td></tr>")
    return "".join(out) + "</table>"


def report_html(doc: dict, *, maps: Optional[dict[str, bytes]] = None, worst: int = 5,
                commands: Optional[dict[str, str]] = None, videos: Optional[dict[str, str]] = None,
                notes: Optional[list[str]] = None, title: Optional[str] = None) -> str:
    """The page for results ``doc`` (validated). ``maps``: extra PNG sections {heading: png}; ``commands``: the
    render command per sequence id; ``videos``: relative links per sequence id."""
    ds, pr = doc["dataset"], doc["protocol"]
    title = title or f"A2F-Bench report: {ds['id']} {ds['name']}, split {ds['split']}, protocol {pr['name']}"
    rows = worst_rows(doc, worst)
    cmds = commands or {r["id"]: " ".join(shlex.quote(str(a)) for a in (
        "a2fbench", "render", f"PRED/{r['id']}.npy", "--dataset", ds["id"], "--gt", "--errors", "--out",
        f"{r['id']}.mp4")) for r in rows}
    parts = [f"<h1>{_e(title)}</h1>",
             f"<p>{_e(ds['n_sequences'])} sequences, {_e(ds['n_frames'])} frames; regions "
             f"{_e(ds.get('regions', {}).get('set'))}; store {_e(str(ds.get('fingerprint', ''))[:19])}...; "
             f"predictions {_e(str(doc['predictions'].get('fingerprint', ''))[:19])}...; created {_e(doc['created'])}"
             + ("; <b class=warn>SYNTHETIC stand-in data</b>" if ds.get("synthetic") else "") + "</p>"]
    parts += [f"<p class=warn>{_e(n)}</p>" for n in notes or []]
    parts += ["<h2>Metrics</h2>", metric_table(doc),
              f"<p class=note>95% CIs: {_e(pr.get('bootstrap', {}).get('method', 'bootstrap'))} over sequences, "
              f"{_e(pr.get('bootstrap', {}).get('n', ''))} resamples. Definitions: docs/metrics.md.</p>",
              "<h2>Per-sequence distributions</h2>", _img(figures.distributions(doc), "per-sequence distributions"),
              "<p class=note>Each dot is one sequence; the box spans the quartiles; the red line is the aggregate "
              "(pooled over frames for LVE, MVE, UFVE; mean over sequences for FDD).</p>"]
    for heading, (data, caption) in (maps or {}).items():
        parts += [f"<h2>{_e(heading)}</h2>", _img(data, heading), f"<p class=note>{_e(caption)}</p>"]
    if rows:
        parts += [f"<h2>Worst {len(rows)} sequences by LVE</h2>", _worst_table(doc, rows, cmds, videos or {})]
    parts.append(f"<p class=note>a2fbench {_e(doc.get('a2fbench_version'))}; results "
                 f"{_e(doc.get('content_hash', ''))}</p>")
    csp = content_security_policy()
    return (f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8"><meta http-equiv="Content-Security-Policy" '
            f'content="{_e(csp)}"><title>{_e(title)}</title><style>{_CSS}</style></head>\n<body>\n'
            + "\n".join(parts) + "\n</body></html>\n")


def content_security_policy() -> str:
    """What a report page may load: its own style and embedded images, nothing else (also sent as a header by
    the leaderboard server)."""
    sha = base64.b64encode(hashlib.sha256(_CSS.encode()).digest()).decode()
    return f"default-src 'none'; img-src data:; style-src 'sha256-{sha}'; base-uri 'none'; form-action 'none'"


def map_sections(doc: dict, stats: VertexStats, head: Head) -> dict[str, tuple[bytes, str]]:
    """The error map (front, side) and the velocity maps (upper face) as report sections."""
    tmpl = head.template(doc["per_sequence"][0]["id"])
    u = head.error_units
    err = stats.error_mean
    sec = {"Per-vertex mean error": (figures.map_figure(
        [(f"mean error ({u})", [("prediction vs ground truth", err)], 0.0, figures.nice_max(err))], tmpl,
        head.faces, views=(0.0, 90.0)), f"Euclidean distance per vertex, mean over {stats.n_frames} frames of "
        f"{stats.n_files} prediction files, on the template of {doc['per_sequence'][0]['id']}'s subject.")}
    region = doc["dataset"].get("regions", {}).get("set")
    upper = np.asarray(head.ds.regions_for(region)["upper"], np.int64)
    mask = np.full(head.n_vertices, np.nan)
    mask[upper] = 0.0
    rows = []
    for what, p, g in (("mean", stats.pred_speed_mean, stats.gt_speed_mean),
                       ("std", stats.pred_speed_std, stats.gt_speed_std)):
        top = figures.nice_max(np.concatenate([p[upper], g[upper]]))
        rows.append((f"speed {what} ({u}/s)", [("ground truth", g + mask), ("prediction", p + mask)], 0.0, top))
    sec["Upper-face velocity (UniTalker Fig. 6)"] = (figures.map_figure(rows, tmpl, head.faces), (
        f"Per vertex of the upper face ({region}: {upper.size} vertices; grey elsewhere), the speed "
        f"|x[t+1] - x[t]| x fps over {stats.n_pairs} consecutive-frame pairs: its mean (top) and standard deviation "
        "(bottom). A prediction that moves the upper face less than the speaker shows darker maps."))
    if head.faces_note:
        for k, (img, cap) in sec.items():
            sec[k] = (img, cap + " " + head.faces_note)
    return sec


def write_report(results: str | os.PathLike, out: str | os.PathLike, *, pred: Optional[str | os.PathLike] = None,
                 data: Optional[str | os.PathLike] = None, worst: int = 5, videos: bool = False,
                 mesh: Optional[tuple[np.ndarray, np.ndarray]] = None, read_audio: Optional[AudioReader] = None,
                 progress: Optional[bool] = None, force: bool = False, inputs: Sequence[Any] = ()) -> Path:
    """Write the report page for a results file (see module doc); returns its path. ``force``: replace an
    existing page (and videos); ``inputs``: further files read (never written over, like results, pred, data)."""
    out = check_output(out, [results, pred, data, *inputs], force=force)
    doc = load_results(results)
    if videos and pred is None:
        raise OutputError("--videos: expected --pred (the predictions to render), found none")
    notes: list[str] = []
    maps, cmds, links = None, None, {}
    if pred is not None:
        if data is None:
            raise OutputError("--pred: expected --data (the store the results were evaluated against), found none")
        head = open_head(data, doc["dataset"]["id"], mesh)
        try:
            if head.ds.card.get("fingerprint") != doc["dataset"].get("fingerprint"):
                notes.append(f"the {head.id} store at {data} is not the one these results were scored against "
                             "(fingerprints differ): maps and videos may not match the numbers")
            n = int(doc["dataset"]["n_frames"])
            with bar(total=n, desc=f"report {head.id}", unit="frame", show=progress) as pbar:
                stats = vertex_stats(doc, pred, head, pbar.update)
            maps = map_sections(doc, stats, head)
            maps.update(mouth_section(doc, pred, head))
            cmds, links = _worst_commands(doc, worst, Path(pred), data, out, head, videos, read_audio, progress, force)
        finally:
            head.close()
    text = report_html(doc, maps=maps, worst=worst, commands=cmds, videos=links, notes=notes)
    with atomic_path(out) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return out


def _worst_commands(doc: dict, n: int, pred: Path, data: Any, out: Path, head: Head, videos: bool,
                    read_audio: Optional[AudioReader], progress: Optional[bool],
                    force: bool = False) -> tuple[dict, dict]:
    cmds, links = {}, {}
    folder = out.with_name(out.stem + "_videos")
    for r in worst_rows(doc, n):
        files = sorted(pred.glob(f"{r['id']}.npy")) or sorted(pred.glob(f"{r['id']}_condition_*.npy"))
        src = files[0] if files else pred / f"{r['id']}.npy"
        target = folder / f"{r['id']}.mp4"
        cmds[r["id"]] = " ".join(shlex.quote(str(a)) for a in (
            "a2fbench", "render", src, "--dataset", head.id, "--data", data, "--gt", "--errors", "--out", target))
        if videos and files:
            folder.mkdir(parents=True, exist_ok=True)
            render(src, head, target, gt=True, errors=True, size=384, read_audio=read_audio, progress=progress,
                   force=force, inputs=[pred, data, out])
            links[r["id"]] = f"{folder.name}/{target.name}"
    return cmds, links


