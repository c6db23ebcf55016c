"""The leaderboard links each evaluated entry to its report page: exported beside the page, served at
``/report/<id>``."""

from __future__ import annotations

import json
import re
import shutil
import threading
import urllib.error
import urllib.request

import pytest

from leaderboard import db, render, server
from leaderboard.model import method_meta
from leaderboard.synthetic import make_results


def _board(tmp_path):
    conn = db.connect(tmp_path / "lb.sqlite")
    for k, name in enumerate(["<b>m1</b>", "m2"]):
        db.submit_doc(conn, make_results(seed=k, n_seq=6), method_meta(method=name))
    return conn


def test_export_writes_a_report_per_evaluated_entry(tmp_path):
    conn = _board(tmp_path)
    render.export_html(conn, tmp_path / "plain.html")  # the default: no report pages, no links
    assert not (tmp_path / "plain_reports").exists() and '"report":' not in (tmp_path / "plain.html").read_text()
    render.export_html(conn, tmp_path / "lb.html", reports=True)
    evaluated = [e for e in db.fetch_entries(conn) if e["kind"] == "evaluated"]
    conn.close()
    pages = sorted(p.name for p in (tmp_path / "lb_reports").iterdir())
    assert pages == sorted(f"{e['id']}.html" for e in evaluated) and len(pages) == 2
    data = json.loads(re.search(r'<script id="lb-data" type="application/json">(.*?)</script>',
                                (tmp_path / "lb.html").read_text(), re.S).group(1))
    links = {r["id"]: r.get("report") for r in data["entries"]}
    for e in evaluated:
        assert links[e["id"]] == f"lb_reports/{e['id']}.html"
    page = (tmp_path / "lb_reports" / pages[0]).read_text()
    assert "data:image/png;base64," in page and "<script" not in page and "Per-sequence distributions" in page


def test_served_report_route(tmp_path):
    conn = _board(tmp_path)
    eid = next(e["id"] for e in db.fetch_entries(conn) if e["kind"] == "evaluated")
    conn.close()
    srv = server.make_server(tmp_path / "lb.sqlite", port=0)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        base = server.url_of(srv)
        with urllib.request.urlopen(f"{base}report/{eid}") as r:
            body = r.read().decode()
            assert r.status == 200 and "img-src data:" in r.headers["Content-Security-Policy"]
        assert "A2F-Bench report" in body
        try:
            urllib.request.urlopen(f"{base}report/999999")
            raise AssertionError("expected 404")
        except urllib.error.HTTPError as e:
            assert e.code == 404
    finally:
        srv.shutdown()
        srv.server_close()


@pytest.mark.browser
def test_drill_down_links_to_the_report_in_chromium(tmp_path):
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium not installed (the test extra)")
    chromium, driver_bin = shutil.which("chromium") or shutil.which("chromium-browser"), shutil.which("chromedriver")
    if not chromium or not driver_bin:
        pytest.skip("Debian chromium / chromium-driver not installed (apt-get install chromium chromium-driver)")
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    _board(tmp_path).close()
    srv = server.make_server(tmp_path / "lb.sqlite", port=0)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        opts.add_argument(flag)
    drv = webdriver.Chrome(service=Service(driver_bin), options=opts)
    try:
        drv.get(server.url_of(srv))
        WebDriverWait(drv, 30).until(lambda d: d.find_elements(By.CSS_SELECTOR, "button.drill"))
        next(b for b in drv.find_elements(By.CSS_SELECTOR, "button.drill") if b.text == "m2").click()
        link = WebDriverWait(drv, 30).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#detail a.report"))[0]
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+/report/\d+", link.get_attribute("href"))
        drv.get(link.get_attribute("href"))
        assert drv.title.startswith("A2F-Bench report") and len(drv.find_elements(By.TAG_NAME, "img")) == 1
        assert not [m for m in drv.get_log("browser") if m.get("level") == "SEVERE"]  # no CSP violation
    finally:
        drv.quit()
        srv.shutdown()
        srv.server_close()
