"""The leaderboard page in a real browser: headless Debian Chromium driven through Selenium.

Loads the served page and the exported file, sorts a column both ways, filters by kind, opens a drill-down
(fetched from the API when served, embedded when exported), reads the plot, and checks that hostile method
names show as text and run nothing; that a score made on a synthetic stand-in sits in its own table and its own
overall ranking, never beside real-data scores or papers' numbers; and that at 1366 and 1920 px wide the page
never scrolls sideways and the method column stays readable. Skips cleanly where Chromium, ChromeDriver or
Selenium is absent.
"""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import pytest

from leaderboard import db, render
from leaderboard.model import method_meta
from leaderboard.synthetic import make_results, streamed

pytestmark = pytest.mark.browser

HOSTILE = "<script>alert(1)</script>"
HOSTILE_IMG = '<img src=x onerror="window.__pwned=1">'
N_SEQ = 9
STAND_IN = "tiny-on-stand-ins"

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    webdriver = pytest.importorskip("selenium.webdriver")
    if not CHROMIUM or not CHROMEDRIVER:
        pytest.skip("needs a headless browser: Debian chromium and chromium-driver are not installed "
                    "(apt-get install chromium chromium-driver; .ci/run does this)")
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--window-size=1400,1000"):
        opts.add_argument(flag)
    opts.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")
    drv = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    drv.set_page_load_timeout(60)
    yield drv
    drv.quit()


@pytest.fixture(scope="module")
def board(tmp_path_factory):
    root = tmp_path_factory.mktemp("board")
    path = root / "lb.sqlite"
    conn = db.connect(path)
    specs = [(HOSTILE, 1.0, 0.020), (HOSTILE_IMG, 1.2, 0.050), ("m-good", 0.8, 0.400), ("m-bad", 1.6, 3.0)]
    for k, (name, scale, secs) in enumerate(specs):  # scored on "the real data" (what the document claims)
        db.submit_doc(conn, make_results(seed=k, scale=scale, n_seq=N_SEQ, synthetic=False),
                      method_meta(method=name, inference_s=secs))
    # a stand-in score 10x better than any real one, as the quickstart's tiny model makes: its own track
    db.submit_doc(conn, make_results(seed=9, scale=0.1, n_seq=N_SEQ), method_meta(method=STAND_IN, inference_s=0.01))
    html_path = root / "lb.html"
    render.export_html(conn, html_path)
    conn.close()
    from leaderboard.server import make_server, url_of

    srv = make_server(path, "127.0.0.1", 0)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield {"url": url_of(srv), "html": html_path, "n_evaluated": len(specs)}
    srv.shutdown()
    srv.server_close()


def _load(drv, url: str) -> None:
    from selenium.webdriver.support.ui import WebDriverWait

    drv.get(url)
    WebDriverWait(drv, 30).until(lambda d: d.find_element("tag name", "body").get_attribute("data-ready") == "1")


def _css(drv, sel: str):
    return drv.find_elements("css selector", sel)


def _no_script_ran(drv) -> None:
    from selenium.common.exceptions import NoAlertPresentException

    with pytest.raises(NoAlertPresentException):
        drv.switch_to.alert.text  # noqa: B018 (raises when no alert is open)
    assert drv.execute_script("return window.__pwned === undefined")
    assert _css(drv, "img") == []
    assert len(_css(drv, "script")) == 2  # the data island and the page's own script


def _hostile_names_show_as_text(drv) -> None:
    names = [b.text for b in _css(drv, 'section[data-dataset="D1"][data-track="real"] button.drill')]
    assert HOSTILE in names and HOSTILE_IMG in names
    overall = [td.text for td in _css(drv, "#overall-table tbody td:nth-child(2)")]
    assert HOSTILE in overall
    _no_script_ran(drv)


def _lve_column(drv) -> list[float | None]:
    """The D1 LVE cells in display units; None for a missing value or one shown as printed (its unit does not
    convert: SelfTalk's own-paper row)."""
    cells = _css(drv, 'table[data-dataset="D1"][data-track="real"] tbody td[data-metric="LVE"]')
    return [None if c.text.strip() == "\u2013" or "unconverted" in c.get_attribute("class")
            else float(c.text.split()[0].rstrip("\u2248")) for c in cells]


def test_served_page_sorts_filters_drills_down_and_escapes(browser, board):
    from selenium.webdriver.support.ui import WebDriverWait

    _load(browser, board["url"])
    _hostile_names_show_as_text(browser)

    # sort by LVE: ascending, then descending; rows without an LVE stay last either way
    th = _css(browser, 'table[data-dataset="D1"][data-track="real"] th[data-key="LVE"]')[0]
    th.click()
    th = _css(browser, 'table[data-dataset="D1"][data-track="real"] th[data-key="LVE"]')[0]
    assert th.get_attribute("aria-sort") == "ascending"
    vals = _lve_column(browser)
    nums = [v for v in vals if v is not None]
    assert nums == sorted(nums) and vals[: len(nums)] == nums and len(nums) == len(vals) - 1  # one row as printed
    th.click()
    th = _css(browser, 'table[data-dataset="D1"][data-track="real"] th[data-key="LVE"]')[0]
    assert th.get_attribute("aria-sort") == "descending"
    assert _lve_column(browser) == sorted(nums, reverse=True) + [None]  # unconvertible values sort last
    # the header says the unit; the paper's VOCA-Test LVE of FaceFormer (1.1696 x1e-5 m^2) reads 1.17 in it
    assert _css(browser, 'table[data-dataset="D1"][data-track="real"] th[data-key="LVE"] .unit')[0].text == "1e-5 m^2"
    assert 1.1696 in nums
    # at 1400 px the page never scrolls sideways
    assert browser.execute_script("return document.documentElement.scrollWidth <= window.innerWidth")
    # best-LVE evaluated entry is m-good (scale 0.8); sorting by method name orders the names
    _css(browser, 'table[data-dataset="D1"][data-track="real"] th[data-key="method"]')[0].click()
    names = [b.text for b in _css(browser, 'table[data-dataset="D1"][data-track="real"] button.drill')]
    assert names == sorted(names, key=str.lower)

    # drill-down: per-sequence scores fetched from /api/entry/<id>
    (btn,) = [b for b in _css(browser, 'table[data-dataset="D1"][data-track="real"] button.drill') if b.text == "m-good"]
    btn.click()
    WebDriverWait(browser, 30).until(lambda d: len(_css(d, "#per-sequence-table tbody tr")) == N_SEQ)
    assert browser.find_element("id", "detail-title").text == "m-good"
    assert _css(browser, "#per-sequence-table th")[0].text == "id"
    labels = [dt.text for dt in _css(browser, "#detail dt")]
    assert "results fingerprint" in labels and "LVE" in labels  # provenance came with the API answer
    _css(browser, "#detail .close")[0].click()
    assert not browser.find_element("id", "detail").is_displayed()

    # the hostile entry's drill-down shows its name as the heading text
    (btn,) = [b for b in _css(browser, 'table[data-dataset="D1"][data-track="real"] button.drill') if b.text == HOSTILE_IMG]
    btn.click()
    WebDriverWait(browser, 30).until(lambda d: len(_css(d, "#per-sequence-table tbody tr")) == N_SEQ)
    assert browser.find_element("id", "detail-title").text == HOSTILE_IMG
    _no_script_ran(browser)

    # plot of LVE against inference time: one point per evaluated entry with a time, names in tooltips; the
    # stand-in score is drawn in its own plot (its group is the synthetic track's)
    circles = _css(browser, "#plot-list circle.pt-evaluated")
    assert len(circles) == board["n_evaluated"] + 1
    captions = [f.text for f in _css(browser, "#plot-list figcaption")]
    assert sum("synthetic" in c for c in captions) == 1
    assert _css(browser, "#plot-list circle.pt-reported")  # the paper's rows with a time (Table 2) are drawn too
    titles = browser.execute_script(
        "return Array.from(document.querySelectorAll('#plot-list circle title')).map(t => t.textContent)")
    assert any(t.startswith(HOSTILE + ": LVE") for t in titles)

    # evaluated / reported filter
    _css(browser, 'input[name="kind"][value="reported"]')[0].click()
    rows = _css(browser, 'table[data-dataset="D1"][data-track="real"] tbody tr')
    assert rows and all("kind-reported" in r.get_attribute("class") for r in rows)
    assert _css(browser, "#plot-list circle.pt-evaluated") == []
    _css(browser, 'input[name="kind"][value="evaluated"]')[0].click()
    rows = _css(browser, 'table[data-dataset="D1"][data-track="real"] tbody tr')
    assert len(rows) == board["n_evaluated"] and all("kind-evaluated" in r.get_attribute("class") for r in rows)
    assert _css(browser, 'section[data-dataset="D0"][data-track="real"] tbody tr') == []  # D0 has reported rows only


def test_exported_file_works_offline_with_embedded_drill_down(browser, board):
    from selenium.webdriver.support.ui import WebDriverWait

    _load(browser, Path(board["html"]).resolve().as_uri())
    _hostile_names_show_as_text(browser)
    (btn,) = [b for b in _css(browser, 'table[data-dataset="D1"][data-track="real"] button.drill') if b.text == HOSTILE]
    btn.click()
    WebDriverWait(browser, 10).until(lambda d: len(_css(d, "#per-sequence-table tbody tr")) == N_SEQ)
    assert browser.find_element("id", "detail-title").text == HOSTILE
    # per-sequence table sorts too
    _css(browser, "#per-sequence-table th")[2].click()
    lve = [float(td.text) for td in _css(browser, "#per-sequence-table tbody td:nth-child(3)")]
    assert lve == sorted(lve)
    _no_script_ran(browser)


def test_stand_in_scores_have_their_own_tables_and_ranking(browser, board):
    """A score on a synthetic stand-in (10x better than any real one here) is never ranked or shown beside
    real-data scores or papers' numbers: its own table per dataset, after every real-data table, under a heading
    that says what it is, and its own overall table."""
    _load(browser, Path(board["html"]).resolve().as_uri())
    real = [b.text for b in _css(browser, 'section[data-track="real"] button.drill')]
    assert STAND_IN not in real and "m-good" in real and "FaceFormer" in real
    (sec,) = _css(browser, 'section[data-dataset="D1"][data-track="synthetic"]')
    assert [b.text for b in sec.find_elements("css selector", "button.drill")] == [STAND_IN]
    assert "synthetic stand-in" in sec.find_element("tag name", "h2").text
    assert sec.find_element("css selector", "td.rank").text == "1"      # ranked only among stand-in scores
    best_real = [r for r in _css(browser, 'table[data-dataset="D1"][data-track="real"] tbody tr')
                 if r.find_element("css selector", "button.drill").text == "m-good"][0]
    assert best_real.find_element("css selector", "td.rank").text == "1"  # the stand-in does not push it down
    # every real-data section comes before the first synthetic one, and a heading names the synthetic track
    tracks = browser.execute_script("return Array.from(document.querySelectorAll('#datasets section.dataset'))"
                                    ".map(s => s.getAttribute('data-track'))")
    assert tracks == sorted(tracks, key=["real", "synthetic"].index) and tracks[-1] == "synthetic"
    head = _css(browser, '.track-head[data-track="synthetic"]')[0].text
    assert "Synthetic stand-ins" in head and "NOT comparable" in head
    overall_real = [td.text for td in _css(browser, "#overall-table tbody td:nth-child(2)")]
    overall_syn = [td.text for td in _css(browser, "#overall-table-synthetic tbody td:nth-child(2)")]
    assert STAND_IN not in overall_real and overall_syn == [STAND_IN]
    assert [td.text for td in _css(browser, "#overall-table-synthetic tbody td:nth-child(1)")] == ["1"]


@pytest.mark.parametrize("width", [1366, 1920])
def test_page_never_scrolls_sideways_and_the_method_column_stays_readable(browser, board, width):
    """At a laptop's 1366 px and a desktop's 1920 px: no page-level horizontal scroll; method names wrap
    between words, never inside one (a one-word name is one line), in a column at least 150 px wide; at 1920 px
    every table fits without scrolling at all. The board holds the shipped reported rows of D0..D7 (BIWI's long
    unit labels included)."""
    browser.set_window_size(width, 1000)
    try:
        _load(browser, Path(board["html"]).resolve().as_uri())
        inner = browser.execute_script("return window.innerWidth")
        assert abs(inner - width) <= 20  # the viewport is the width asked for (headless: no window chrome)
        assert browser.execute_script("return document.documentElement.scrollWidth <= document.documentElement.clientWidth")
        cells = _css(browser, "table.board td.method")
        assert len(cells) > 50
        narrow = [c.text for c in cells if c.size["width"] < 150]
        assert not narrow, narrow[:3]
        broken = browser.execute_script(
            "return Array.from(document.querySelectorAll('table.board button.drill'))"
            ".filter(b => !/\\s/.test(b.textContent) && b.getClientRects().length > 1).map(b => b.textContent)")
        assert broken == []
        if width >= 1920:
            wide = browser.execute_script(
                "return Array.from(document.querySelectorAll('.board-wrap')).filter(w => w.scrollWidth > w.clientWidth)"
                ".map(w => w.parentNode.getAttribute('data-dataset') || w.parentNode.id)")
            assert wide == []
    finally:
        browser.set_window_size(1400, 1000)


def test_latency_column_says_offline_or_the_streaming_latency(browser, tmp_path):
    """Streaming entries (predictions made with `unitalker predict --chunk-ms`) show their algorithmic latency in
    a Latency column and the drill-down, offline entries say "offline" and papers' rows "–"; sorting by latency
    puts the lower latency first and offline after every streaming entry."""
    conn = db.connect(tmp_path / "lb.sqlite")
    base = make_results(seed=1, n_seq=N_SEQ, synthetic=False)
    for doc, name in ((base, "m-offline"), (streamed(base, 400), "m-400"),
                      (streamed(make_results(seed=2, n_seq=N_SEQ, synthetic=False), 200), "m-200")):
        db.submit_doc(conn, doc, method_meta(method=name))
    html = tmp_path / "lb.html"
    render.export_html(conn, html)
    conn.close()
    _load(browser, html.resolve().as_uri())

    table = 'table[data-dataset="D1"][data-track="real"]'

    def cells() -> dict[str, str]:
        rows = _css(browser, f"{table} tbody tr")
        return {r.find_element("css selector", "button.drill").text: r.find_element("css selector", "td.latency").text
                for r in rows}

    got = cells()
    assert got["m-offline"] == "offline" and got["m-400"] == "400 ms" and got["m-200"] == "200 ms"
    assert {v for k, v in got.items() if not k.startswith("m-")} == {"\u2013"}  # the shipped papers' rows
    _css(browser, f'{table} th[data-key="latency_ms"]')[0].click()
    names = [b.text for b in _css(browser, f"{table} button.drill")]
    assert names[:3] == ["m-200", "m-400", "m-offline"]  # offline is the longest latency; papers' rows last
    _css(browser, f'{table} th[data-key="latency_ms"]')[0].click()
    names = [b.text for b in _css(browser, f"{table} button.drill")]
    assert names[:3] == ["m-offline", "m-400", "m-200"]  # descending; papers' rows still last
    (btn,) = [b for b in _css(browser, f"{table} button.drill") if b.text == "m-200"]
    btn.click()
    items = dict(zip([dt.text for dt in _css(browser, "#detail dt")], [dd.text for dd in _css(browser, "#detail dd")]))
    assert items["latency"].startswith("200 ms algorithmic")
    assert browser.execute_script("return document.documentElement.scrollWidth <= window.innerWidth")
