(function () {
  "use strict";
  // Every user-supplied string goes into the DOM through textContent / createTextNode, never innerHTML.
  var DATA = JSON.parse(document.getElementById("lb-data").textContent);
  var METRICS = DATA.metrics;
  // entries carry an index into DATA.groups (dataset, split, protocol, ...) and units as indices: expand
  DATA.entries.forEach(function (e) {
    var g = DATA.groups[e.g];
    Object.keys(g).forEach(function (k) { e[k] = g[k]; });
  });
  var ROW_LIMIT = 200;
  var M_VALUE = 0, M_LO = 1, M_HI = 2, M_RANK = 3, M_BEST = 4, M_TIED = 5, M_UNIT = 6, M_TEST = 7, M_DV = 8, M_DLO = 9, M_DHI = 10;
  var state = { kind: "all", hideTestIds: false, search: "", sort: {}, showAll: {}, selected: null };
  var order = {};
  DATA.entries.forEach(function (e, i) { order[e.id] = i; });

  function el(tag, props, kids) {
    var n = document.createElement(tag);
    if (props) {
      Object.keys(props).forEach(function (k) {
        if (k === "text") n.textContent = props[k];
        else if (k === "cls") n.className = props[k];
        else if (k.indexOf("data-") === 0 || k.indexOf("aria-") === 0 || k === "title" || k === "type" || k === "scope")
          n.setAttribute(k, props[k]);
        else n[k] = props[k];
      });
    }
    (kids || []).forEach(function (c) { if (c != null) n.appendChild(typeof c === "string" ? document.createTextNode(c) : c); });
    return n;
  }
  function svg(tag, attrs, text) {
    var n = document.createElementNS("http://www.w3.org/2000/svg", tag);
    Object.keys(attrs || {}).forEach(function (k) { n.setAttribute(k, attrs[k]); });
    if (text != null) n.textContent = text;
    return n;
  }
  function fmt(v) {
    if (v == null || typeof v !== "number" || !isFinite(v)) return "\u2013";
    var a = Math.abs(v);
    return (a !== 0 && (a < 1e-3 || a >= 1e4)) ? v.toExponential(3) : String(Number(v.toPrecision(4)));
  }
  // the same rule as the terminal (leaderboard.render.fmt_params): millions, 3 significant digits
  function fmtParams(p) { return p == null ? "\u2013" : Number((p / 1e6).toPrecision(3)) + "M"; }
  function fmtDisplay(v) { return v == null ? "\u2013" : String(Number(v.toPrecision(5))); }
  function unitOf(ds, m) { return (DATA.display[ds] || {})[m] || ""; }
  // a metric's sortable value: in the dataset's display unit; values that do not convert sort last
  function shown(x) { return x ? (x[M_DV] != null ? x[M_DV] : null) : null; }
  function fmtMs(s) { return s == null ? "\u2013" : fmt(s * 1000) + " ms"; }
  function safeHref(u) { return (typeof u === "string" && /^https?:\/\/[^\s]+$/i.test(u)) ? u : null; }
  function link(u, label) {
    var h = safeHref(u);
    if (!h) return document.createTextNode(u == null ? "" : String(u));
    var a = el("a", { text: label || u, rel: "noopener noreferrer nofollow", target: "_blank" });
    a.href = h;
    return a;
  }
  function reportLink(u) {  // only the two shapes the page writes: report/<id> (served), <stem>_reports/<id>.html
    if (typeof u !== "string" || !/^(report\/\d+|[A-Za-z0-9._-]+_reports\/\d+\.html)$/.test(u)) return null;
    var a = el("a", { cls: "report", text: "report page (metrics, distributions)", target: "_blank", rel: "noopener" });
    a.href = u;
    return a;
  }
  function yesNo(b) { return b === true ? "yes" : b === false ? "no" : "unknown"; }
  // streaming entries' algorithmic latency; a paper's reported row does not say how its predictions were made
  function latencyText(e) {
    if (e.kind !== "evaluated") return "\u2013";
    return e.latency_ms == null ? "offline" : fmt(e.latency_ms) + " ms";
  }
  function displayName(e) { return e.method + (e.version ? " (" + e.version + ")" : ""); }

  // ------------------------------------------------------------------ filtering and sorting
  function visible(e) {
    if (state.kind !== "all" && e.kind !== state.kind) return false;
    if (state.hideTestIds && e.trained_on_test_ids === true) return false;
    if (state.search && displayName(e).toLowerCase().indexOf(state.search) < 0) return false;
    return true;
  }
  function metric(e, m) { return e.m && e.m[m] ? e.m[m] : null; }
  var COLS = [
    { key: "id", label: "ID", num: true, title: "entry id (for `a2fbench leaderboard edit` and `remove`)",
      get: function (e) { return e.id; } },
    { key: "rank", label: "#", num: true, title: "LVE rank within the group (dataset / split / protocol)",
      get: function (e) { var m = metric(e, "LVE"); return m ? m[M_RANK] : null; } },
    { key: "method", label: "Method", get: function (e) { return displayName(e).toLowerCase(); } },
    { key: "kind", label: "Kind", get: function (e) { return e.kind; } },
    { key: "group", label: "Split / protocol", get: function (e) { return e.group; } }
  ].concat(METRICS.map(function (m) {
    return { key: m, label: m, num: true, metric: true, get: function (e) { return shown(metric(e, m)); } };
  })).concat([
    { key: "params", label: "Params", num: true, get: function (e) { return e.params; } },
    { key: "inference_s", label: "Time / 10 s", num: true, title: "wall time to animate a 10 s clip",
      get: function (e) { return e.inference_s; } },
    { key: "latency_ms", label: "Latency", num: true,
      title: "algorithmic latency of predictions made in streaming mode (chunk + look-ahead), ranked only against " +
             "entries of the same latency; offline = the model saw each whole clip, so it sorts as the longest latency",
      get: function (e) { return e.kind !== "evaluated" ? null : e.latency_ms == null ? Infinity : e.latency_ms; } },
    { key: "trained_on_test_ids", label: "Test IDs", title: "trained on the test identities?",
      get: function (e) { return yesNo(e.trained_on_test_ids); } }
  ]);
  function sortRows(rows, key) {  // key: the table's "track|dataset"
    var s = state.sort[key];
    if (!s) return rows.slice().sort(function (a, b) { return order[a.id] - order[b.id]; });
    var col = COLS.filter(function (c) { return c.key === s.key; })[0];
    var dir = s.dir === "descending" ? -1 : 1;
    var keyed = rows.map(function (e) { return { k: col.get(e), o: order[e.id], e: e }; });
    keyed.sort(function (a, b) {
      var x = a.k, y = b.k;
      if (x == null && y == null) return a.o - b.o;
      if (x == null) return 1;            // missing values last, whatever the direction
      if (y == null) return -1;
      if (x < y) return -dir;
      if (x > y) return dir;
      return a.o - b.o;
    });
    return keyed.map(function (r) { return r.e; });
  }

  // ------------------------------------------------------------------ tables
  function metricCell(e, m) {
    var x = metric(e, m);
    var td = el("td", { cls: "num", "data-metric": m });
    if (!x || x[M_VALUE] == null) { td.textContent = "\u2013"; return td; }
    var unit = x[M_UNIT] != null ? DATA.units[x[M_UNIT]] : "";
    if (x[M_DV] == null) {  // its unit does not convert to the dataset's: shown as printed, never compared
      td.appendChild(document.createTextNode(fmt(x[M_VALUE])));
      td.appendChild(el("span", { cls: "asprinted", text: "\u2020" }));
      td.setAttribute("title", "as printed (" + unit + "); does not convert to " + unitOf(e.dataset, m));
      td.className += " unconverted";
      return td;
    }
    td.appendChild(document.createTextNode(fmtDisplay(x[M_DV])));
    if (x[M_BEST]) td.className += " best";
    if (x[M_TIED] === 1) {
      td.appendChild(el("span", { cls: "tie", text: "\u2248",
        title: "statistically tied with the best (" + (x[M_TEST] === "p" ? "95% paired bootstrap" : "95% CI overlap") + ")" }));
    }
    if (x[M_DLO] != null && x[M_DHI] != null) td.appendChild(el("span", { cls: "ci", text: "[" + fmtDisplay(x[M_DLO]) + ", " + fmtDisplay(x[M_DHI]) + "]" }));
    var tip = [];
    if (unit) tip.push(fmt(x[M_VALUE]) + " " + unit);
    if (x[M_RANK] != null) tip.push("rank " + x[M_RANK]);
    if (tip.length) td.setAttribute("title", tip.join("; "));
    return td;
  }
  function row(e) {
    var tr = el("tr", { cls: "kind-" + e.kind + (state.selected === e.id ? " selected" : ""), "data-id": String(e.id) });
    tr.appendChild(el("td", { cls: "num muted id", text: String(e.id) }));
    var r = metric(e, "LVE");
    tr.appendChild(el("td", { cls: "num rank", text: r && r[M_RANK] != null ? String(r[M_RANK]) : "\u2013" }));
    var name = el("td", { cls: "method" });
    var btn = el("button", { cls: "drill", type: "button", text: displayName(e), title: "details and per-sequence scores" });
    btn.addEventListener("click", function () { openDetail(e); });
    name.appendChild(btn);
    if (e.verified) name.appendChild(el("span", { cls: "badge verified", text: "verified" }));
    if (e.synthetic) name.appendChild(el("span", { cls: "badge synthetic", text: "synthetic data", title: "scored on a synthetic stand-in, not the real dataset" }));
    if (e.trained_on_test_ids === true) name.appendChild(el("span", { cls: "badge testids", text: "test IDs seen" }));
    tr.appendChild(name);
    var kind = el("td", { cls: "kind" });
    kind.appendChild(el("span", { cls: "badge " + e.kind, text: e.kind === "reported" ? "reported (unverified)" : "evaluated" }));
    tr.appendChild(kind);
    tr.appendChild(el("td", { cls: "group", text: e.group.split(" / ").slice(1).join(" / ") }));
    METRICS.forEach(function (m) { tr.appendChild(metricCell(e, m)); });
    tr.appendChild(el("td", { cls: "num", text: fmtParams(e.params) }));
    tr.appendChild(el("td", { cls: "num", text: fmtMs(e.inference_s) }));
    tr.appendChild(el("td", { cls: "num latency", text: latencyText(e) }));
    tr.appendChild(el("td", { text: yesNo(e.trained_on_test_ids) }));
    return tr;
  }
  function header(key, ds) {
    var tr = el("tr");
    COLS.forEach(function (c) {
      var s = state.sort[key];
      var th = el("th", { cls: "sortable" + (c.num ? " num" : ""), scope: "col", "data-key": c.key, text: c.label });
      if (c.metric) th.appendChild(el("span", { cls: "unit", text: unitOf(ds, c.key) }));
      if (c.title) th.setAttribute("title", c.title);
      if (s && s.key === c.key) th.setAttribute("aria-sort", s.dir);
      th.addEventListener("click", function () {
        var cur = state.sort[key];
        state.sort[key] = { key: c.key, dir: cur && cur.key === c.key && cur.dir === "ascending" ? "descending" : "ascending" };
        renderSection(key);
      });
      tr.appendChild(th);
    });
    return el("thead", null, [tr]);
  }
  // one table per (data track, dataset): scores on synthetic stand-ins never share a table with real-data scores
  // or papers' numbers (leaderboard/tracks.py); entries arrive ordered real track first
  var BY_DS = {}, DS_ORDER = [];
  DATA.entries.forEach(function (e) {
    var k = e.track + "|" + e.dataset;
    if (!BY_DS[k]) { BY_DS[k] = []; DS_ORDER.push(k); }
    BY_DS[k].push(e);
  });
  var TRACKS = DATA.tracks || [];
  function trackInfo(id) { return TRACKS.filter(function (t) { return t.id === id; })[0] || { id: id, title: id, note: "" }; }
  function section(key) {
    var all = BY_DS[key], rows = sortRows(all.filter(visible), key), ds = all[0].dataset, track = all[0].track;
    var sec = el("section", { cls: "dataset track-" + track, "data-dataset": ds, "data-track": track });
    var h = el("h2", { text: ds + " \u2014 " + (all[0].dataset_name || "") });
    if (track === "synthetic") h.appendChild(el("span", { cls: "badge synthetic", text: "synthetic stand-in", title: trackInfo(track).note }));
    sec.appendChild(h);
    var groups = {};
    all.forEach(function (e) { if (e.kind === "evaluated") groups[e.group] = (groups[e.group] || 0) + 1; });
    var gl = Object.keys(groups);
    sec.appendChild(el("p", { cls: "group-note", text: rows.length + " of " + all.length + " rows shown. " +
      (gl.length ? "Ranked groups: " + gl.map(function (g) { return g + " (" + groups[g] + ")"; }).join("; ") + "." : "No evaluated entries yet.") }));
    if (rows.length) {
      var limit = state.showAll[key] ? rows.length : Math.min(rows.length, ROW_LIMIT);
      var tbody = el("tbody");
      for (var i = 0; i < limit; i++) tbody.appendChild(row(rows[i]));
      sec.appendChild(el("div", { cls: "board-wrap" }, [el("table", { cls: "board", "data-dataset": ds, "data-track": track }, [header(key, ds), tbody])]));
      if (limit < rows.length) {
        var more = el("button", { cls: "more", type: "button", text: "show all " + rows.length + " rows" });
        more.addEventListener("click", function () { state.showAll[key] = true; renderSection(key); });
        sec.appendChild(more);
      }
    }
    return { el: sec, shown: rows.length };
  }
  function renderSection(key) {  // sorting or expanding one table redraws only that table
    var all = BY_DS[key];
    var old = document.querySelector('section.dataset[data-dataset="' + all[0].dataset + '"][data-track="' + all[0].track + '"]');
    old.parentNode.replaceChild(section(key).el, old);
  }
  function trackHeading(track) {
    var t = trackInfo(track);
    return el("div", { cls: "track-head track-" + track, "data-track": track }, [el("h2", { text: t.title }), el("p", { cls: "group-note", text: t.note })]);
  }
  function renderDatasets() {  // filters change every table and the plots
    var host = document.getElementById("datasets");
    host.textContent = "";
    var shown = 0, track = null;
    DS_ORDER.forEach(function (key) {
      var t = BY_DS[key][0].track;
      if (t !== track) { track = t; host.appendChild(trackHeading(t)); }
      var s = section(key); shown += s.shown; host.appendChild(s.el);
    });
    document.getElementById("summary").textContent = shown + " of " + DATA.entries.length + " entries shown \u00b7 generated " + DATA.generated;
    renderPlots();
  }

  // ------------------------------------------------------------------ overall
  function renderOverall() {
    var host = document.getElementById("overall");
    host.textContent = "";
    host.appendChild(el("h2", { text: "Overall rank (Borda count)" }));
    host.appendChild(el("p", { cls: "group-note", text: "One point per method beaten, in every ranked group and each of LVE, MVE, UFVE and FDD_abs; a method's best entry counts. Evaluated entries only; one table per data track (real data; synthetic stand-ins), never mixed." }));
    if (!DATA.overall.length) { host.appendChild(el("p", { cls: "muted", text: "No evaluated entries yet." })); return; }
    TRACKS.forEach(function (t) {
      var rows = DATA.overall.filter(function (r) { return (r.track || "real") === t.id; });
      if (rows.length) overallTable(host, t, rows);
    });
  }
  function overallTable(host, t, all) {
    var key = "#overall-" + t.id;
    if (t.id !== "real") host.appendChild(el("h3", { text: t.title + " \u2014 " + t.note }));
    else if (all.length !== DATA.overall.length) host.appendChild(el("h3", { text: t.title }));
    var tb = el("tbody");
    var rows = state.showAll[key] ? all : all.slice(0, ROW_LIMIT);
    rows.forEach(function (r) {
      tb.appendChild(el("tr", null, [el("td", { cls: "num", text: String(r.rank) }),
        el("td", { text: r.method + (r.version ? " (" + r.version + ")" : "") }), el("td", { cls: "num", text: String(r.borda) }),
        el("td", { cls: "num", text: r.mean_rank.toFixed(2) }), el("td", { text: r.groups.join(", ") })]));
    });
    var hr = el("tr", null, ["#", "Method", "Points", "Mean rank", "Groups"].map(function (h) { return el("th", { text: h, scope: "col" }); }));
    host.appendChild(el("div", { cls: "board-wrap" }, [el("table", { id: t.id === "real" ? "overall-table" : "overall-table-" + t.id, cls: "overall", "data-track": t.id }, [el("thead", null, [hr]), tb])]));
    if (rows.length < all.length) {
      var more = el("button", { cls: "more", type: "button", text: "show all " + all.length + " methods" });
      more.addEventListener("click", function () { state.showAll[key] = true; renderOverall(); });
      host.appendChild(more);
    }
  }

  // ------------------------------------------------------------------ drill-down
  function closeDetail() {
    state.selected = null;
    var d = document.getElementById("detail");
    d.hidden = true;
    d.textContent = "";
    Array.prototype.forEach.call(document.querySelectorAll("tr.selected"), function (t) { t.classList.remove("selected"); });
  }
  function openDetail(e) {
    state.selected = e.id;
    Array.prototype.forEach.call(document.querySelectorAll("tr.selected"), function (t) { t.classList.remove("selected"); });
    Array.prototype.forEach.call(document.querySelectorAll('tr[data-id="' + e.id + '"]'), function (t) { t.classList.add("selected"); });
    var d = document.getElementById("detail");
    d.textContent = "";
    d.hidden = false;
    d.setAttribute("data-id", String(e.id));
    var close = el("button", { cls: "close", type: "button", text: "close" });
    close.addEventListener("click", closeDetail);
    d.appendChild(close);
    d.appendChild(el("h2", { id: "detail-title", text: displayName(e) }));
    var dl = el("dl");
    function item(k, v) { if (v == null || v === "") return; dl.appendChild(el("dt", { text: k })); dl.appendChild(el("dd", null, [typeof v === "string" ? document.createTextNode(v) : v])); }
    item("kind", e.kind === "reported" ? "reported: claimed by the source; protocol and units not verified" : (e.verified ? "evaluated, verified by re-running the evaluation" : "evaluated (not re-run)"));
    item("dataset", e.dataset + " " + (e.dataset_name || "") + (e.synthetic ? " (synthetic stand-in)" : ""));
    item("split / protocol", e.group);
    METRICS.forEach(function (m) {
      var x = metric(e, m);
      if (!x || x[M_VALUE] == null) return;
      var own = fmt(x[M_VALUE]) + (x[M_LO] != null ? "  95% CI [" + fmt(x[M_LO]) + ", " + fmt(x[M_HI]) + "]" : "") + (x[M_UNIT] != null ? "  " + DATA.units[x[M_UNIT]] : "");
      item(m, x[M_DV] != null ? fmtDisplay(x[M_DV]) + " \u00d7 " + unitOf(e.dataset, m) + "  (" + own + ")" : own + "  (as printed; does not convert to " + unitOf(e.dataset, m) + ")");
    });
    item("parameters", e.params != null ? fmtParams(e.params) : null);
    item("latency", e.kind !== "evaluated" ? null : latencyText(e) +
      (e.latency_ms == null ? " (the model saw each whole clip)" : " algorithmic (streaming: chunk + look-ahead)"));
    item("inference time (10 s clip)", e.inference_s != null ? fmtMs(e.inference_s) + (e.inference_device ? " on " + e.inference_device : "") : null);
    item("training data", e.training_data);
    item("trained on test identities", yesNo(e.trained_on_test_ids));
    item("code", e.code_url ? link(e.code_url) : null);
    item("citation", e.citation);
    item("source", e.source_url ? link(e.source_url) : null);
    item("source type", e.source_type);
    item("note", e.note);
    item("added", e.submitted_at);
    item("report", reportLink(e.report));
    function provenance(src) {
      item("verified at", src.verified_at);
      item("sequences / frames", src.n_sequences != null ? src.n_sequences + " / " + src.n_frames : null);
      item("results fingerprint", e.kind === "evaluated" ? src.fingerprint : null);
      item("data fingerprint", src.dataset_fingerprint);
      item("predictions fingerprint", src.predictions_fingerprint);
      item("evaluated", src.created ? src.created + (src.a2fbench_version ? " with a2fbench " + src.a2fbench_version : "") : null);
    }
    if (DATA.mode !== "serve") provenance(e);
    d.appendChild(dl);
    if (e.kind !== "evaluated") return;
    var host = el("div", { id: "per-sequence" }, [el("p", { cls: "muted", text: "loading per-sequence scores\u2026" })]);
    d.appendChild(host);
    if (DATA.mode === "serve") {
      fetch("api/entry/" + encodeURIComponent(e.id), { headers: { "Accept": "application/json" } })
        .then(function (r) { if (!r.ok) throw new Error("HTTP " + r.status); return r.json(); })
        .then(function (j) { if (state.selected === e.id) { provenance(j.entry); perSequence(host, j.columns, j.per_sequence); } })
        .catch(function (err) { host.textContent = "could not load per-sequence scores: " + err.message; });
    } else {
      perSequence(host, ["id", "frames", "LVE", "MVE", "UFVE", "FDD"], DATA.per_sequence[String(e.id)] || []);
    }
  }
  function perSequence(host, cols, rows) {
    host.textContent = "";
    host.appendChild(el("h3", { text: "Per-sequence scores (" + rows.length + " sequences)" }));
    var sort = { k: null, dir: 1 };
    var table = el("table", { id: "per-sequence-table" });
    function draw() {
      table.textContent = "";
      var hr = el("tr");
      cols.forEach(function (c, j) {
        var th = el("th", { cls: "sortable" + (j ? " num" : ""), scope: "col", text: c });
        if (sort.k === j) th.setAttribute("aria-sort", sort.dir > 0 ? "ascending" : "descending");
        th.addEventListener("click", function () { sort.dir = sort.k === j ? -sort.dir : 1; sort.k = j; draw(); });
        hr.appendChild(th);
      });
      table.appendChild(el("thead", null, [hr]));
      var data = rows.slice();
      if (sort.k != null) data.sort(function (a, b) { var x = a[sort.k], y = b[sort.k]; return x < y ? -sort.dir : x > y ? sort.dir : 0; });
      var tb = el("tbody");
      data.forEach(function (r) {
        tb.appendChild(el("tr", null, r.map(function (v, j) { return el("td", { cls: j ? "num" : "", text: j ? (j === 1 ? String(v) : fmt(v)) : String(v) }); })));
      });
      table.appendChild(tb);
    }
    draw();
    host.appendChild(table);
  }

  // ------------------------------------------------------------------ plots
  function renderPlots() {
    var host = document.getElementById("plot-list");
    host.textContent = "";
    var groups = {}, names = [];
    DATA.entries.forEach(function (e) {
      var x = metric(e, "LVE");
      if (!visible(e) || e.inference_s == null || !(e.inference_s > 0) || !x || x[M_DV] == null) return;
      var g = e.dataset + " / " + e.group.split(" / ").slice(1).join(" / ") + (e.track === "synthetic" ? " (synthetic stand-ins)" : "");
      if (!groups[g]) { groups[g] = []; names.push(g); }
      groups[g].push(e);
    });
    if (!names.length) { host.appendChild(el("p", { cls: "muted", text: "No shown entry gives an inference time (submit with --inference-time)." })); return; }
    names.forEach(function (g) { host.appendChild(plot(g, groups[g])); });
  }
  function plot(title, pts) {
    var W = 440, H = 280, L = 74, R = 14, T = 12, B = 40;
    var xs = pts.map(function (e) { return Math.log10(e.inference_s * 1000); });
    var ys = pts.map(function (e) { return e.m.LVE[M_DV]; });
    var x0 = Math.min.apply(null, xs), x1 = Math.max.apply(null, xs), y0 = Math.min.apply(null, ys), y1 = Math.max.apply(null, ys);
    if (x1 - x0 < 1e-9) { x0 -= 0.5; x1 += 0.5; }
    if (y1 - y0 < 1e-30) { y0 = y0 * 0.9; y1 = y1 * 1.1 + 1e-30; }
    var padX = (x1 - x0) * 0.06, padY = (y1 - y0) * 0.08;
    x0 -= padX; x1 += padX; y0 -= padY; y1 += padY;
    var px = function (v) { return L + (v - x0) / (x1 - x0) * (W - L - R); };
    var py = function (v) { return H - B - (v - y0) / (y1 - y0) * (H - T - B); };
    var s = svg("svg", { width: W, height: H, viewBox: "0 0 " + W + " " + H, role: "img", "aria-label": "LVE against inference time, " + title });
    s.appendChild(svg("line", { x1: L, y1: H - B, x2: W - R, y2: H - B, "class": "axis" }));
    s.appendChild(svg("line", { x1: L, y1: T, x2: L, y2: H - B, "class": "axis" }));
    for (var k = 0; k <= 4; k++) {
      var xv = x0 + (x1 - x0) * k / 4, yv = y0 + (y1 - y0) * k / 4;
      s.appendChild(svg("text", { x: px(xv), y: H - B + 14, "text-anchor": "middle" }, fmt(Math.pow(10, xv))));
      s.appendChild(svg("text", { x: L - 4, y: py(yv) + 3, "text-anchor": "end" }, fmt(yv)));
    }
    s.appendChild(svg("text", { x: (L + W - R) / 2, y: H - 6, "text-anchor": "middle" }, "inference time for a 10 s clip (ms, log scale)"));
    s.appendChild(svg("text", { x: 12, y: (T + H - B) / 2, "text-anchor": "middle", transform: "rotate(-90 12 " + (T + H - B) / 2 + ")" }, "LVE (" + unitOf(pts[0].dataset, "LVE") + ")"));
    pts.forEach(function (e, i) {
      var c = svg("circle", { cx: px(xs[i]), cy: py(ys[i]), r: 4, "class": "pt-" + e.kind, "data-id": String(e.id) });
      c.appendChild(svg("title", {}, displayName(e) + ": LVE " + fmt(ys[i]) + ", " + fmtMs(e.inference_s)));
      c.addEventListener("click", function () { openDetail(e); });
      s.appendChild(c);
    });
    return el("figure", { cls: "plot" }, [s, el("figcaption", { cls: "muted", text: title })]);
  }

  // ------------------------------------------------------------------ controls
  Array.prototype.forEach.call(document.querySelectorAll('input[name="kind"]'), function (r) {
    r.addEventListener("change", function () { if (r.checked) { state.kind = r.value; renderDatasets(); } });
  });
  document.getElementById("hide-test-ids").addEventListener("change", function (ev) { state.hideTestIds = ev.target.checked; renderDatasets(); });
  document.getElementById("search").addEventListener("input", function (ev) { state.search = ev.target.value.trim().toLowerCase(); renderDatasets(); });
  document.getElementById("controls").addEventListener("submit", function (ev) { ev.preventDefault(); });
  document.addEventListener("keydown", function (ev) { if (ev.key === "Escape") closeDetail(); });
  renderOverall();
  renderDatasets();
  document.body.setAttribute("data-ready", "1");
})();
