"""Turn ranked entries into a terminal table, JSON rows, and one self-contained HTML page.

Escaping rule: user text reaches HTML only (a) through ``html.escape`` in the few server-rendered strings or
(b) as JSON inside ``<script type="application/json">`` with ``<``, ``>``, ``&``, U+2028 and U+2029 written as
``\\uXXXX`` escapes (so no ``</script>`` or comment opener can appear), and the page's script puts it into the
DOM with ``textContent`` only. The page carries a Content-Security-Policy that allows exactly its own inline
script (by sha256) and no other script, so even a missed escape could not run injected code.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import html
import json
import re
import sqlite3
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Optional, Sequence

from a2fbench.util.fsutil import atomic_path

from . import axes, db, ranking, tracks, units
from .model import METRICS

_STATIC = Path(__file__).with_name("static")
_JSON_ESC = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}
_JSON_ESC_RE = re.compile("[<>&\u2028\u2029]")


def json_for_html(obj: Any) -> str:
    """JSON safe to embed in an HTML ``<script>`` element (see the module docstring)."""
    text = json.dumps(obj, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return _JSON_ESC_RE.sub(lambda m: _JSON_ESC[m.group(0)], text)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


# ------------------------------------------------------------------------------------------ data
def load_ranked(conn: sqlite3.Connection, datasets: Optional[Sequence[str]] = None,
                kind: Optional[str] = None, track: Optional[str] = None) -> tuple[list[dict], list[dict]]:
    """All entries (optionally filtered) ranked, plus the overall Borda table.

    Ranking always uses every entry of a group (a kind/dataset/track filter selects rows to show, not the field
    they are ranked in), so ``show --dataset D1`` and the full page agree on ranks.
    """
    entries = db.fetch_entries(conn)
    scores = db.fetch_scores(conn)
    ranking.rank_entries(entries, scores)
    overall = ranking.overall(entries)
    if datasets:
        keep = set(datasets)
        entries = [e for e in entries if e["dataset"] in keep]
    if kind:
        entries = [e for e in entries if e["kind"] == kind]
    if track:
        entries = [e for e in entries if e["track"] == track]
        overall = [r for r in overall if r["track"] == track]
    entries.sort(key=sort_key)
    return entries, overall


def sort_key(e: dict) -> tuple:
    """The real-data track first (:mod:`leaderboard.tracks`), then by dataset, evaluated before reported, group, LVE rank."""
    lve = e["metrics"].get("LVE", {})
    r = lve.get("rank")
    return (tracks.order(e.get("track") or tracks.track_of(e)), int(e["dataset"][1:]) if e["dataset"][1:].isdigit() else 99, e["dataset"], e["kind"] != "evaluated",
            e["split"], e["protocol"], str(e.get("protocol_version")), str(e.get("length_policy")),
            str(e.get("dataset_fingerprint")), e.get("latency_ms") or 0.0,
            r if r is not None else 1 << 30, e["id"])


def add_display(entries: list[dict]) -> None:
    """Each metric gets ``display_value`` (the value in its dataset's display unit, None when its unit does not
    convert) and ``display_unit`` (:mod:`leaderboard.units`)."""
    for e in entries:
        du = units.display_units(e["dataset"])
        for name, m in e["metrics"].items():
            if axes.is_axis(name):  # shown in its own unit (ms, 1, the vertex unit)
                m["display_unit"], m["display_value"] = m.get("unit"), m.get("value")
                continue
            m["display_unit"] = du.get(name)
            m["display_value"] = units.to_display(m.get("value"), m.get("unit"), e["dataset"], name)


def fmt_params(p: Optional[int]) -> Optional[str]:
    """Parameters in millions, 3 significant digits (the page uses the same rule)."""
    return None if p is None else f"{p / 1e6:.3g}M"


def json_rows(entries: list[dict], overall: list[dict], source: str) -> dict:
    """The ``show --json`` document: ``{"entries": [...], "overall": [...]}`` (docs/leaderboard.md)."""
    add_display(entries)
    rows = []
    for e in entries:
        r = dict(e)
        r["rank"] = e["metrics"].get("LVE", {}).get("rank")
        rows.append(r)
    return {"schema": 1, "db": source, "generated": _now(), "entries": rows, "overall": overall}


# ------------------------------------------------------------------------------------------ terminal
def _num(v: Optional[float]) -> str:
    return "-" if v is None else f"{v:.4g}" if 1e-3 <= abs(v) < 1e4 or v == 0 else f"{v:.3e}"


def _cell(m: Optional[dict]) -> str:
    if not m or m.get("value") is None:
        return "-"
    mark = "*" if m.get("best") else "~" if m.get("tied") else ""
    if m.get("display_value") is None:
        return f"{m['value']:.5g}†"
    return f"{m['display_value']:.5g}{mark}"


def _fit(s: Optional[str], n: int) -> str:
    s = s or ""
    return s if len(s) <= n else s[: n - 1] + "…"


def entry_kind(e: dict) -> str:
    """What the board calls an entry: reported, verified, evaluated (unverified) or disputed."""
    if e["kind"] == "reported":
        return "reported"
    if e.get("disputed_by"):
        return "disputed"
    return "verified" if e.get("verified") else "evaluated"


def terminal_table(entries: list[dict], overall: list[dict], *, show_overall: bool = True) -> str:
    """One table per (data track, dataset), the real-data track first; then each track's overall table. A
    synthetic-track table says so in its heading, so a stand-in score is never read beside a real one."""
    add_display(entries)
    extra = axes.columns(entries)  # evaluation axes some entries have, by name and version
    cols = [("id", 5), ("rank", 4), ("method", 30), ("kind", 9), ("split/protocol", 26)] + \
           [(m, 10) for m in METRICS] + [(c, max(10, len(c))) for c in extra] + \
           [("params", 7), ("ms/10s", 8), ("latency", 8)]
    left = 5
    out: list[str] = []
    current = None
    for e in entries:
        track = e.get("track") or tracks.track_of(e)
        if (track, e["dataset"]) != current:
            if current is None or current[0] != track:
                out += ["", f"== {tracks.TITLE[track]}: {tracks.NOTE[track]}"]
            current = (track, e["dataset"])
            du = units.display_units(e["dataset"])
            stand_in = " (SYNTHETIC STAND-IN)" if track == tracks.SYNTHETIC else ""
            out.append("")
            here = [x for x in entries if x["dataset"] == e["dataset"]]
            out.append(f"{e['dataset']}  {e.get('dataset_name') or ''}{stand_in}   units: "
                       + ", ".join([f"{m} {du.get(m, '?')}" for m in METRICS]
                                   + [f"{c} {axes.unit(here, c)}" for c in extra if axes.unit(here, c)]))
            note = units.scaled_note(e["dataset"])
            if note:
                out.append(f"  ({note})")
            out.append("  ".join(f"{h:<{w}}" if i < left else f"{h:>{w}}" for i, (h, w) in enumerate(cols)))
        rank = e["metrics"].get("LVE", {}).get("rank")
        kind = entry_kind(e)
        name = e["method"] + (f" ({e['version']})" if e.get("version") else "")
        sp = e["group"].split(" / ", 1)[1].replace(" / ", "/")
        ms = None if e.get("inference_s") is None else e["inference_s"] * 1e3
        vals = [str(e["id"]), str(rank) if rank is not None else "-", _fit(name, 30), kind, _fit(sp, 26)]
        vals += [_cell(e["metrics"].get(m)) for m in METRICS]
        vals += [_cell(e["metrics"].get(c)) for c in extra]
        lat = "offline" if e.get("latency_ms") is None else f"{e['latency_ms']:g} ms"
        vals += [fmt_params(e.get("params")) or "-", _num(ms), lat if e["kind"] == "evaluated" else "-"]
        out.append("  ".join(f"{v:<{w}}" if i < left else f"{v:>{w}}" for i, (v, (_, w)) in enumerate(zip(vals, cols))))
    if not entries:
        out.append("(no entries; add one with `a2fbench leaderboard submit results.json --method NAME`)")
    out.append("")
    out.append("Values in each dataset's display units (the `units:` line). id = entry id (for `edit` and `remove`); "
               "rank = LVE rank in its group.")
    out.append("latency = algorithmic latency of predictions made in streaming mode (chunk + look-ahead), ranked "
               "only against entries of the same latency; offline = the model saw each whole clip.")
    out.append("* best in its group (dataset/split/protocol); ~ statistically tied with the best (95% paired "
               "bootstrap, or CI overlap).")
    out.append("reported = a number claimed by a paper or issue thread: protocol unverified, never ranked; "
               "† = shown as printed, its unit does not convert.")
    out.append("verified = computed by this installation (signed results) or re-scored here (submit --verify); "
               "evaluated = a results file not checked here; disputed = contradicted by a verified entry, not ranked.")
    if any((e.get("track") or tracks.track_of(e)) == tracks.SYNTHETIC for e in entries):
        out.append("synthetic = scored on a stand-in made by `a2fbench synth`: a test of the pipeline, not a result; "
                   "ranked only against other stand-in scores.")
    if show_overall and overall:
        for track in tracks.TRACKS:
            rows = [r for r in overall if r.get("track", tracks.REAL) == track]
            if not rows:
                continue
            out.append("")
            out.append(f"Overall, {tracks.TITLE[track].lower()} (Borda count over dataset groups x LVE, MVE, UFVE, "
                       "FDD_abs)")
            out.append(f"{'#':<4}  {'method':<40}  {'points':>6}  {'mean rank':>9}  groups")
            for r in rows:
                name = r["method"] + (f" ({r['version']})" if r.get("version") else "")
                out.append(f"{r['rank']:<4}  {_fit(name, 40):<40}  {r['borda']:>6}  {r['mean_rank']:>9.2f}  "
                           f"{', '.join(r['groups'])}")
    return "\n".join(out).lstrip("\n") + "\n"


# ------------------------------------------------------------------------------------------ HTML
#: Entry fields the page always needs; the group's fields live once in ``groups`` (see :func:`page_data`).
_PAGE_KEYS = ("id", "method", "version", "params", "inference_s", "inference_device", "training_data", "code_url",
              "trained_on_test_ids", "verified", "verified_by", "disputed_by", "synthetic", "citation", "source_url",
              "source_type", "note",
              "submitted_at")
#: Fields only the drill-down shows: embedded in an exported page, fetched from /api/entry/<id> when served.
_DETAIL_KEYS = ("fingerprint", "dataset_fingerprint", "predictions_fingerprint", "n_sequences", "n_frames",
                "created", "a2fbench_version", "verified_at")
_GROUP_KEYS = ("kind", "track", "dataset", "dataset_name", "split", "protocol", "protocol_version", "length_policy",
               "region_set", "latency_ms", "group", "group_size")
_TESTS = {"paired_bootstrap": "p", "ci_overlap": "c"}


class _Tables:
    """Interning of repeated strings (groups, units) so that a 10,000-entry page stays small."""

    def __init__(self) -> None:
        self.groups: list[dict] = []
        self.units: list[str] = []
        self._g: dict[tuple, int] = {}
        self._u: dict[str, int] = {}

    def group(self, e: dict) -> int:
        key = tuple(e.get(k) for k in _GROUP_KEYS)
        if key not in self._g:
            self._g[key] = len(self.groups)
            self.groups.append({k: v for k, v in zip(_GROUP_KEYS, key) if v is not None})
        return self._g[key]

    def unit(self, u: Optional[str]) -> Optional[int]:
        if u is None:
            return None
        if u not in self._u:
            self._u[u] = len(self.units)
            self.units.append(u)
        return self._u[u]


def page_entry(e: dict, tables: Optional[_Tables] = None, *, detail: bool = True) -> dict:
    """One entry as the page's script reads it: nulls dropped, metrics as compact lists.

    ``m[name] = [value, ci_lo, ci_hi, rank, best (1/0), tied (1/0/null), unit index, tie test ("p"/"c"/null),
    value in the dataset's display unit (null: does not convert), the CI in display units (lo, hi)]``.
    """
    t = tables or _Tables()
    keys = _PAGE_KEYS + _DETAIL_KEYS if detail else _PAGE_KEYS
    out = {k: e[k] for k in keys if e.get(k) is not None}
    out["g"] = t.group(e)
    m_out = {}
    for name, m in e["metrics"].items():
        ci = m.get("ci95") or (None, None)
        tied = m.get("tied")
        f = 1.0 if axes.is_axis(name) else units.factor(m.get("unit"), units.display_units(e["dataset"]).get(name))
        dv = [None if (x is None or f is None) else x * f for x in (m.get("value"), ci[0], ci[1])]
        m_out[name] = [m.get("value"), ci[0], ci[1], m.get("rank"), int(bool(m.get("best"))),
                       None if tied is None else int(tied), t.unit(m.get("unit")), _TESTS.get(m.get("tie_test")),
                       dv[0], dv[1], dv[2]]
    out["m"] = m_out
    if tables is None:
        out["groups"], out["units"] = t.groups, t.units
    return out


def report_href(entry_id: int, mode: str, reports_dir: Optional[str] = None) -> str:
    """Where an evaluated entry's report page is: served at ``report/<id>``, exported beside the page."""
    return f"report/{entry_id}" if mode == "serve" else f"{reports_dir}/{entry_id}.html"


def page_data(entries: list[dict], overall: list[dict], *, mode: str,
              per_sequence: Optional[dict[int, list]] = None, reports_dir: Optional[str] = None) -> dict:
    """Everything the page's script needs (``mode`` "export" embeds drill-down data, "serve" fetches it).
    Evaluated entries link to their report page (exported ones only when ``reports_dir`` is given)."""
    t = _Tables()
    rows = [page_entry(e, t, detail=mode != "serve") for e in entries]
    for e, r in zip(entries, rows):
        if e["kind"] == "evaluated" and (mode == "serve" or reports_dir):
            r["report"] = report_href(e["id"], mode, reports_dir)
    extra = axes.columns(entries)
    display = {}
    for ds in sorted({e["dataset"] for e in entries}):
        here = [e for e in entries if e["dataset"] == ds]
        display[ds] = {**units.display_units(ds), **{c: axes.unit(here, c) for c in extra if axes.unit(here, c)}}
    return {"schema": 3, "mode": mode, "generated": _now(), "metrics": [*METRICS, *extra], "groups": t.groups,
            "units": t.units, "display": display, "display_notes": {ds: n for ds in display for n in
                                                                    [units.scaled_note(ds)] if n},
            "entries": rows, "overall": overall,
            "tracks": [{"id": k, "title": tracks.TITLE[k], "note": tracks.NOTE[k]} for k in tracks.TRACKS],
            "per_sequence": {str(k): v for k, v in (per_sequence or {}).items()}}


@functools.lru_cache(maxsize=1)
def _assets() -> tuple[str, str, str]:
    return ((_STATIC / "page.html").read_text(encoding="utf-8"), (_STATIC / "page.css").read_text(encoding="utf-8"),
            (_STATIC / "page.js").read_text(encoding="utf-8"))


def _sha(text: str) -> str:
    return "sha256-" + base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode()


def content_security_policy(mode: str) -> str:
    _, css, js = _assets()
    connect = "'self'" if mode == "serve" else "'none'"
    return (f"default-src 'none'; script-src '{_sha(js)}'; style-src '{_sha(css)}'; img-src data:; "
            f"connect-src {connect}; base-uri 'none'; form-action 'none'")


def html_page(data: dict, title: str = "A2F-Bench leaderboard") -> str:
    """The whole page: markup, style, script and data in one file (no external resources)."""
    template, css, js = _assets()
    parts = {"TITLE": html.escape(title), "CSP": html.escape(content_security_policy(data["mode"]), quote=True),
             "CSS": css, "JS": js, "DATA": json_for_html(data)}
    return re.sub(r"\{\{([A-Z]+)\}\}", lambda m: parts[m.group(1)], template)


def per_sequence_rows(doc: dict) -> list[list]:
    return [[r["id"], r.get("frames"), *(r.get(k) for k in db.SEQ_COLUMNS)] for r in doc["per_sequence"]]


def entry_detail(conn: sqlite3.Connection, entry_id: int) -> Optional[dict]:
    """One entry with its per-sequence scores (the drill-down)."""
    rows = db.fetch_entries(conn, ids=[entry_id])
    if not rows:
        return None
    doc = db.fetch_document(conn, entry_id)
    return {"entry": page_entry(rows[0]), "columns": ["id", "frames", *db.SEQ_COLUMNS],
            "per_sequence": per_sequence_rows(doc) if doc else []}


def entry_report(conn: sqlite3.Connection, entry_id: int) -> Optional[str]:
    """The report page of an evaluated entry, from its stored results (``a2fbench report`` without --pred)."""
    # imported here: it pulls matplotlib, PyAV and scipy.optimize (0.9 s measured), which `show` never uses
    from a2fbench.outputs.report import report_html

    doc = db.fetch_document(conn, entry_id)
    return None if doc is None else report_html(doc)


def export_html(conn: sqlite3.Connection, out: Path, *, reports: bool = False) -> int:
    """Write the self-contained page (per-sequence scores embedded for the drill-down) and, with ``reports``, one
    report page per evaluated entry in the folder ``<OUT stem>_reports/`` beside it, linked from the drill-down
    (a report draws a plot: 0.2-0.6 s each, so a 10,000-entry export skips them by default). Returns entry count."""
    if reports:  # imported only then: it pulls matplotlib, PyAV and scipy.optimize (0.9 s measured)
        from a2fbench.outputs.report import report_html

    entries, overall = load_ranked(conn)
    per_seq, pages = {}, {}
    for e in entries:
        if e["kind"] == "evaluated":
            doc = db.fetch_document(conn, e["id"])
            if doc:
                per_seq[e["id"]] = per_sequence_rows(doc)
                if reports:
                    pages[e["id"]] = report_html(doc)
    folder = out.with_name(out.stem + "_reports")
    if pages:
        with atomic_path(folder, is_dir=True) as tmp:
            for i, text in pages.items():
                (tmp / f"{i}.html").write_text(text, encoding="utf-8")
    text = html_page(page_data(entries, overall, mode="export", per_sequence=per_seq,
                               reports_dir=folder.name if pages else None))
    with atomic_path(out) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return len(entries)
