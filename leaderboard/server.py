"""``a2fbench leaderboard serve``: a small read-only web app on the standard library's ThreadingHTTPServer.

Routes (GET and HEAD only):

* ``/``                   the leaderboard page (the same self-contained page as ``export --html``; its
                          drill-down fetches per-sequence scores from the API instead of embedding them)
* ``/api/entries``        the ``show --json`` document; ``?dataset=D1`` and ``?kind=evaluated|reported`` filter
* ``/api/entry/<id>``     one entry with its per-sequence scores
* ``/report/<id>``        an evaluated entry's report page (``a2fbench report`` of its stored results)
* ``/healthz``            ``ok``

The page is rebuilt only when the database changed: every write transaction bumps ``meta.generation``, and
a request costs one indexed read of that counter when nothing changed (the cached page, also pre-gzipped, is
sent as is; ``ETag``/``If-None-Match`` answers 304). Requests take SQLite connections from a small pool (WAL:
readers never block submitters, and submitters never block readers).
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
import logging
import os
import queue
import re
import sqlite3
import threading
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Iterator, Optional
from urllib.parse import parse_qs, urlsplit

from a2fbench.errors import A2FBenchError
from a2fbench.outputs.report import content_security_policy as report_csp
from a2fbench.registry import resolve

from . import db, render
from .model import LeaderboardError

log = logging.getLogger("leaderboard.server")

_SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
}


@dataclass
class _Page:
    generation: int
    body: bytes
    gz: bytes
    etag: str


class App:
    """Database access and the page cache shared by all request threads."""

    def __init__(self, db_path: str | os.PathLike, *, cache: bool = True):
        self.db_path = str(db_path)
        self.cache = cache
        self._pool: queue.SimpleQueue[sqlite3.Connection] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._page: Optional[_Page] = None
        self._token = os.urandom(4).hex()  # ETags from another server process never match
        db.connect(self.db_path).close()   # create/migrate/seed once, before serving

    @contextlib.contextmanager
    def conn(self) -> Iterator[sqlite3.Connection]:
        """A pooled connection (one per concurrently running request; WAL lets them all read at once)."""
        try:
            c = self._pool.get_nowait()
        except queue.Empty:
            c = db.connect(self.db_path, seed=False)
        try:
            yield c
        finally:
            self._pool.put(c)

    def page(self) -> _Page:
        with self.conn() as conn:
            gen = db.generation(conn)
            p = self._page
            if self.cache and p is not None and p.generation == gen:
                return p
            with self._lock:  # one rebuild at a time; requests arriving meanwhile get its result
                p = self._page
                gen = db.generation(conn)
                if self.cache and p is not None and p.generation == gen:
                    return p
                entries, overall = render.load_ranked(conn)
                body = render.html_page(render.page_data(entries, overall, mode="serve")).encode("utf-8")
                etag = f'"{self._token}-{gen}-{hashlib.sha256(body).hexdigest()[:16]}"'
                p = _Page(gen, body, gzip.compress(body, compresslevel=5), etag)
                self._page = p
                return p


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "a2fbench-leaderboard"
    sys_version = ""
    app: App  # set on the subclass made by make_server

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (stdlib signature)
        log.debug("%s - %s", self.address_string(), format % args)

    # ---- responses
    def _send(self, status: int, body: bytes, ctype: str, *, etag: Optional[str] = None, gz: Optional[bytes] = None,
              csp: Optional[str] = None) -> None:
        use_gz = gz is not None and "gzip" in (self.headers.get("Accept-Encoding") or "")
        payload = gz if use_gz else body
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(payload) if payload is not None else 0))
        self.send_header("Cache-Control", "no-cache")
        if etag:
            self.send_header("ETag", etag)
        if use_gz:
            self.send_header("Content-Encoding", "gzip")
        if gz is not None:
            self.send_header("Vary", "Accept-Encoding")
        for k, v in _SECURITY_HEADERS.items():
            self.send_header(k, v)
        self.send_header("Content-Security-Policy", csp or "default-src 'none'; frame-ancestors 'none'")
        self.end_headers()
        if self.command != "HEAD" and payload:
            self.wfile.write(payload)

    def _json(self, status: int, obj: object) -> None:
        body = json.dumps(obj, separators=(",", ":"), allow_nan=False).encode("utf-8")
        self._send(status, body, "application/json; charset=utf-8")

    def _error(self, status: int, message: str) -> None:
        self._json(status, {"error": message})

    # ---- routing
    def do_HEAD(self) -> None:  # noqa: N802 (stdlib naming)
        self.do_GET()

    def do_GET(self) -> None:  # noqa: N802
        url = urlsplit(self.path)
        try:
            if url.path in ("/", "/index.html"):
                p = self.app.page()
                if self.headers.get("If-None-Match") == p.etag:
                    self.send_response(HTTPStatus.NOT_MODIFIED)
                    self.send_header("ETag", p.etag)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self._send(200, p.body, "text/html; charset=utf-8", etag=p.etag, gz=p.gz,
                           csp=render.content_security_policy("serve") + "; frame-ancestors 'none'")
            elif url.path == "/api/entries":
                q = parse_qs(url.query)
                datasets = None
                if q.get("dataset"):

                    datasets = [s.id for s in resolve(q["dataset"][0])]
                kind = (q.get("kind") or [None])[0]
                if kind not in (None, "all", "evaluated", "reported"):
                    return self._error(400, "kind must be evaluated, reported or all")
                with self.app.conn() as conn:
                    entries, overall = render.load_ranked(conn, datasets, None if kind == "all" else kind)
                self._json(200, render.json_rows(entries, overall, self.app.db_path))
            elif (m := re.fullmatch(r"/api/entry/(\d{1,18})", url.path)):
                with self.app.conn() as conn:
                    detail = render.entry_detail(conn, int(m.group(1)))
                if detail is None:
                    return self._error(404, f"no entry #{m.group(1)}")
                self._json(200, detail)
            elif (m := re.fullmatch(r"/report/(\d{1,18})", url.path)):
                with self.app.conn() as conn:
                    page = render.entry_report(conn, int(m.group(1)))
                if page is None:
                    return self._error(404, f"no evaluated entry #{m.group(1)}")
                self._send(200, page.encode("utf-8"), "text/html; charset=utf-8",
                           csp=report_csp() + "; frame-ancestors 'none'")
            elif url.path == "/healthz":
                self._send(200, b"ok\n", "text/plain; charset=utf-8")
            else:
                self._error(404, "not found")
        except LeaderboardError as e:
            self._error(400, str(e))
        except Exception as e:  # one failed request must not take the server down

            if isinstance(e, A2FBenchError):
                return self._error(400, str(e))
            log.exception("request %s failed", self.path)
            self._error(500, "internal error; see the server's log")

    def do_POST(self) -> None:  # noqa: N802
        self._error(405, "read-only: submit with `a2fbench leaderboard submit`")


def make_server(db_path: str | os.PathLike, host: str = "127.0.0.1", port: int = 8000, *,
                cache: bool = True) -> ThreadingHTTPServer:
    """A ready server (not yet serving); ``port=0`` picks a free port (see ``server.server_address``)."""
    app = App(db_path, cache=cache)
    handler = type("BoundHandler", (Handler,), {"app": app})
    try:
        srv = ThreadingHTTPServer((host, port), handler)
    except OSError as e:
        raise LeaderboardError(f"cannot listen on {host}:{port} ({e.strerror or e}); pass another --port or --host") from None
    srv.daemon_threads = True
    return srv


def url_of(srv: ThreadingHTTPServer) -> str:
    host, port = srv.server_address[:2]
    shown = f"[{host}]" if ":" in str(host) else host
    return f"http://{shown}:{port}/"


def serve(db_path: Path, host: str, port: int, *, cache: bool = True) -> None:
    srv = make_server(db_path, host, port, cache=cache)
    print(f"serving the leaderboard in {db_path} at {url_of(srv)} (Ctrl-C to stop)", flush=True)
    if host not in ("127.0.0.1", "localhost", "::1"):
        print(f"warning: listening on {host}: other machines can read this leaderboard (it has no authentication)",
              flush=True)
    try:
        srv.serve_forever()
    finally:
        srv.server_close()
