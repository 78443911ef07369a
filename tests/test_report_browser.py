"""The report opened in headless Chromium: the chart is in the page, the script ran, no console errors."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from PIL import Image

from oomguard.report import write_report
from report_rundirs import train_run

BROWSER = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)
pytestmark = pytest.mark.skipif(
    BROWSER is None, reason="Chromium not installed (apt-get install -y chromium)"
)
# Flags this sandboxed machine needs (closed network, root, no GPU); see the environment notes.
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--enable-logging=stderr", "--v=0", "--virtual-time-budget=3000"]


def chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    profile = tmp_path / f"profile-{len(list(tmp_path.glob('profile-*')))}"
    assert BROWSER is not None
    return subprocess.run([BROWSER, *FLAGS, f"--user-data-dir={profile}", *args],
                          capture_output=True, text=True, timeout=120, check=False)


def console_messages(stderr: str) -> list[str]:
    """What the page printed to its console (Chromium logs each as ``...:CONSOLE:<line>] "..."``)."""
    return [line for line in stderr.splitlines() if ":CONSOLE" in line or "Uncaught" in line]


def test_report_renders_in_chromium(tmp_path: Path) -> None:
    url = write_report(train_run(tmp_path / "run")).html.as_uri()

    dom = chromium(tmp_path, "--dump-dom", url)
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert console_messages(dom.stderr) == []
    assert '<figure id="memory-chart"><svg' in dom.stdout
    assert '<figure id="curves-chart"><svg' in dom.stdout
    # written by the page's script, so it ran to the end: checkpoints hidden until asked for
    assert '<p class="note" id="event-count">showing 14 of 25 events</p>' in dom.stdout
    assert dom.stdout.count('<tr data-kind="checkpoint" data-quiet="1" hidden="">') == 11
    assert '<button type="button" data-kind="kill">kill</button>' in dom.stdout

    screenshot = tmp_path / "report.png"
    shot = chromium(tmp_path, f"--screenshot={screenshot}", "--window-size=1280,2000", url)
    assert shot.returncode == 0, shot.stderr[-2000:]
    assert console_messages(shot.stderr) == []
    with Image.open(screenshot) as image:
        assert image.size == (1280, 2000)
        colours = image.convert("RGB").getcolors(maxcolors=1 << 20) or []
    # a rendered chart has many colours; a blank or error page has a handful
    assert len(colours) > 200
    rss_blue = sum(n for n, (r, g, b) in colours if abs(r - 0x1F) < 12 and abs(g - 0x77) < 12 and b > 0x9A)
    assert rss_blue > 500
