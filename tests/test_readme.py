"""README's everyday commands, run in order, as printed, right after `unitalker quickstart` (issue 22 item 3).

The session's one quickstart (conftest ``quickstart_tiny``) is the fresh clone's first step; then every line of
README's "Everyday use" block runs in a shell, in the order printed, with that quickstart's ``$A2FBENCH_HOME``.
Verbatim except ``ID``, which README says is the id `submit` prints (the test reads it from that output). Two
lines need a person: `remove` asks on a terminal (the test gives it one and answers "y"), and `serve` runs until
stopped (the test waits until it answers, then stops it). The Python example runs there too. The real-data block
(downloads, licences) is not run: it needs the network and the datasets.
"""

from __future__ import annotations

import json
import os
import pty
import re
import select
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore:Support for mismatched key_padding_mask")]
README = Path(__file__).resolve().parent.parent / "README.md"


def _block(text: str, heading: str, lang: str) -> list[str]:
    """The lines of the first ```lang block after ``heading``, comments and blank lines dropped."""
    section = text.split(heading, 1)[1]
    body = section.split(f"```{lang}\n", 1)[1].split("```", 1)[0]
    return [ln for ln in body.splitlines() if ln.strip()]


def _sh(line: str, cwd: Path, env: dict, timeout: int = 900) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-c", line], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


def _on_a_terminal(line: str, cwd: Path, env: dict, answer: str, timeout: float = 120) -> tuple[int, str]:
    """Run ``line`` with a pseudo-terminal as stdin/stdout and type ``answer`` when it asks."""
    master, slave = pty.openpty()
    p = subprocess.Popen(["bash", "-c", line], cwd=cwd, env=env, stdin=slave, stdout=slave, stderr=slave)
    os.close(slave)
    out, sent, t0 = b"", False, time.time()
    while time.time() - t0 < timeout:
        r, _, _ = select.select([master], [], [], 0.5)
        if r:
            try:
                chunk = os.read(master, 4096)
            except OSError:  # the child closed the terminal
                break
            if not chunk:
                break
            out += chunk
            if not sent and b"?" in out:
                os.write(master, answer.encode() + b"\n")
                sent = True
        elif p.poll() is not None:
            break
    rc = p.wait(timeout=30)
    os.close(master)
    return rc, out.decode(errors="replace")


def _serve(line: str, cwd: Path, env: dict) -> str:
    """Start the `serve` line, wait for its page to answer on the port README names, stop it."""
    url = re.search(r"http://127\.0\.0\.1:\d+", line).group(0)
    p = subprocess.Popen(["bash", "-c", f"exec {line.split('#')[0]}"], cwd=cwd, env=env, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    try:
        t0 = time.time()
        while time.time() - t0 < 60:
            if p.poll() is not None:
                err = p.stderr.read()
                if "in use" in err.lower():
                    pytest.skip(f"README's serve line: port of {url} is taken on this machine ({err.strip()[-120:]})")
                raise AssertionError(f"`{line}` exited {p.returncode}: {err[-500:]}")
            try:
                with urllib.request.urlopen(url + "/", timeout=5) as r:
                    return r.read().decode("utf-8", errors="replace")
            except OSError:
                time.sleep(0.5)
        raise AssertionError(f"`{line}` did not answer on {url} within 60 s")
    finally:
        p.terminate()
        p.wait(timeout=30)


def test_readme_everyday_commands_run_in_order_after_the_quickstart(quickstart_tiny):
    text = README.read_text(encoding="utf-8")
    lines = _block(text, "## Everyday use", "bash")
    env = quickstart_tiny.env
    cd = lines.pop(0)
    assert cd.startswith("cd ")
    cwd = Path(_sh(f"{cd.split('#')[0]} && pwd", Path("/"), env).stdout.strip())
    assert cwd == quickstart_tiny.out  # README's folder is where the quickstart worked
    ran, entry_id = [], None
    for line in lines:
        cmd = line.split("#")[0].strip()
        if re.search(r"\bID\b", cmd):
            assert entry_id is not None, f"{cmd}: no id printed by an earlier submit"
            cmd = re.sub(r"\bID\b", str(entry_id), cmd)
        if " leaderboard serve" in cmd:
            page = _serve(line, cwd, env)
            assert "my-method" not in page  # removed just before
            ran.append(cmd)
            continue
        if " leaderboard remove " in cmd:
            rc, out = _on_a_terminal(cmd, cwd, env, "y")
            assert rc == 0 and f"removed entry #{entry_id}" in out, out[-500:]
            ran.append(cmd)
            continue
        r = _sh(cmd, cwd, env)
        assert r.returncode == 0 and "Traceback" not in r.stderr, f"README line failed: {cmd}\n{r.stderr[-1500:]}"
        if " leaderboard submit " in cmd:
            entry_id = int(re.search(r"entry #(\d+)", r.stdout).group(1))
        ran.append(cmd)
    assert len(ran) == len(lines) >= 18
    # what the lines made is what they say
    assert (cwd / "RUN" / "training.png").is_file()
    mp4 = (cwd / "clip.mp4").read_bytes()
    assert mp4[4:8] == b"ftyp" and b"soun" in mp4
    assert (cwd / "clip.glb").read_bytes()[:4] == b"glTF" and "data:image/" in (cwd / "report.html").read_text()
    doc = json.loads((cwd / "results.json").read_text())
    assert doc["protocol"]["name"] == "unitalker" and doc["predictions"]["method"] == "my-method"
    show = _sh("a2fbench leaderboard show --json", cwd, env)
    assert entry_id not in {e["id"] for e in json.loads(show.stdout)["entries"]}  # edited, then removed
    # the Python example, in the same folder
    code = text.split("```python\n", 1)[1].split("```", 1)[0]
    r = subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-800:]
