"""
The documentation site, as a reader sees it: ``mkdocs build --strict`` builds
it into a temporary directory, a twisted.web ``File`` serves it on 127.0.0.1
(port 0), and headless Chromium screenshots the front page and an API page.
Each screenshot must be a real picture (a PNG of the window's size, many
colours, not a blank page), and is kept in :data:`ARTIFACTS` for people to
look at (README's Development section says where).

Chromium runs as in test_debug_browser.py: spawned through the reactor (which
keeps serving the site meanwhile), killed by PID past its deadline.
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest_twisted
from twisted.web.server import Site
from twisted.web.static import File

from tests._processes import ROOT
from tests.integration.test_debug_browser import Tracked, listen, run_chromium, stop

ARTIFACTS = ROOT / "build" / "artifacts"
"""Where the screenshots are kept (gitignored)."""

WIDTH, HEIGHT = 1280, 900


def build_site(into: Path) -> Path:
    """``mkdocs build --strict`` of this checkout into ``into``; the site's directory."""
    site = into / "site"
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet", "--site-dir", str(site)],
        cwd=ROOT,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return site


async def screenshot(url: str, png: Path, profile: Path) -> None:
    """Headless Chromium's screenshot of ``url`` into ``png``."""
    await run_chromium(
        url, profile, "--hide-scrollbars", f"--window-size={WIDTH},{HEIGHT}", f"--screenshot={png}"
    )


def check_picture(png: Path) -> None:
    """A PNG of the window's size whose pixels are not all alike."""
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{png} is not a PNG"
    width, height = struct.unpack(">II", data[16:24])
    assert (width, height) == (WIDTH, HEIGHT), (width, height)
    chunks, at = [], 8
    while at < len(data):
        (length,) = struct.unpack(">I", data[at : at + 4])
        if data[at + 4 : at + 8] == b"IDAT":
            chunks.append(data[at + 8 : at + 8 + length])
        at += 12 + length
    pixels = zlib.decompress(b"".join(chunks))
    # A blank or single-colour page has a handful of distinct bytes; text,
    # a header bar and code blocks (anti-aliased) have well over a hundred.
    assert len(set(pixels)) > 100, f"{png} looks blank ({len(set(pixels))} distinct bytes)"
    assert len(data) > 20_000, f"{png} is too small to show a page ({len(data)} bytes)"


@pytest_twisted.ensureDeferred
async def test_screenshots_of_the_site(tmp_path: Path) -> None:
    site = build_site(tmp_path)
    front, api = site / "index.html", site / "api" / "txgeerpc.client" / "index.html"
    assert "wire-compatible with the Go original" in front.read_text(encoding="utf-8")
    assert 'id="txgeerpc.client.Client.call"' in api.read_text(encoding="utf-8")

    web = Site(File(str(site)))
    web.noisy = False
    tracked = Tracked(web)
    port, number = await listen(tracked)
    shots = {"docs-front.png": "", "docs-api.png": "api/txgeerpc.client/"}
    try:
        for name, path in shots.items():
            await screenshot(f"http://127.0.0.1:{number}/{path}", tmp_path / name, tmp_path)
        await tracked.all_closed()  # Chromium is gone: its connections are closing
    finally:
        await tracked.all_closed(abort=True)
        await stop(port)

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for name in shots:
        check_picture(tmp_path / name)
        shutil.copy(tmp_path / name, ARTIFACTS / name)
