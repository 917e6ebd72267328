"""
The live debug page in headless Chromium: the page refreshes itself, so the
numbers change WITHOUT a reload.  Chromium loads the page once and runs its
own timers in virtual time (``--virtual-time-budget``); a batch of real calls
is made right after the page was served, and the page's refresh is answered
once the batch is done (no sleeps), so the DOM Chromium dumps at the end,
from the one load, shows the batch.  Screenshots after load and after the
batch are kept in ``$TXGEERPC_ARTIFACTS`` (default ``artifacts/`` at the
repository root, git-ignored).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import ensureDeferred
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Site

from tests._processes import ROOT
from tests.integration.test_debug_browser import Tracked, listen, run_chromium, stop
from tests.integration.test_docs_site import check_picture
from tests.test_debug import parse_page
from txgeerpc import Server, connect
from txgeerpc.debug import DebugResource
from txgeerpc.errors import RemoteError
from txgeerpc.examples import Args, register_examples

WIDTH, HEIGHT = 1280, 1600
MULTIPLIES, DIVIDES = 7, 2


def artifacts() -> Path:
    """Where the screenshots go (made if missing)."""
    directory = Path(os.environ.get("TXGEERPC_ARTIFACTS") or ROOT / "artifacts")
    directory.mkdir(parents=True, exist_ok=True)
    return directory


class Gate(Resource):
    """The debug page, watched: counts page loads and refreshes; when armed,
    the next load starts ``batch`` and refreshes wait until it is done."""

    isLeaf = True

    def __init__(self, page: DebugResource, batch: Any) -> None:
        super().__init__()
        self._page = page
        self._batch = batch
        self.armed = False
        self.busy = False
        self.loads = 0
        self.refreshes = 0
        self._waiting: list[Any] = []
        self.failures: list[Any] = []

    def render(self, request: Any) -> Any:
        if not request.args.get(b"format"):  # the page itself: a load
            self.loads += 1
            body = self._page.render(request)
            if self.armed:
                self.armed = False
                self.busy = True
                reactor.callLater(0, self._run)  # type: ignore[attr-defined]
            return body
        self.refreshes += 1
        if not self.busy:
            return self._page.render(request)
        self._waiting.append(request)
        return NOT_DONE_YET

    def _run(self) -> None:
        def done(result: Any) -> None:
            if result is not None:
                self.failures.append(result)
            self.busy = False
            waiting, self._waiting = self._waiting, []
            for request in waiting:
                request.write(self._page.render(request))
                request.finish()

        ensureDeferred(self._batch()).addBoth(done)


def _chromium_flags(png: Path, budget_ms: int | None) -> list[str]:
    flags = ["--hide-scrollbars", f"--window-size={WIDTH},{HEIGHT}", f"--screenshot={png}"]
    if budget_ms is not None:
        flags.append(f"--virtual-time-budget={budget_ms}")
    return [*flags, "--dump-dom"]


@pytest_twisted.ensureDeferred
async def test_the_page_shows_new_calls_without_a_reload(tmp_path: Path) -> None:
    server = Server(reactor)
    register_examples(server)
    rpc = Tracked(server.factory())
    rpc_port, rpc_number = await listen(rpc)
    client = await connect(reactor, f"tcp@127.0.0.1:{rpc_number}", connect_timeout=5)

    async def batch() -> None:
        for n in range(MULTIPLIES):
            assert await client.call("Arith.Multiply", Args(n, 3), timeout=10) == 3 * n
        for _ in range(DIVIDES):
            with pytest.raises(RemoteError, match=r"^divide by zero$"):
                await client.call("Arith.Divide", Args(1, 0), timeout=10)

    root = Resource()
    debug = Resource()
    root.putChild(b"debug", debug)
    gate = Gate(DebugResource(server), batch)
    debug.putChild(b"geerpc", gate)
    site = Site(root)
    site.noisy = False
    web = Tracked(site)
    web_port, web_number = await listen(web)
    where = artifacts()
    before_png, after_png = where / "debug-live-before.png", where / "debug-live-after.png"
    for png in (before_png, after_png):
        png.unlink(missing_ok=True)
    try:
        try:
            assert await client.call("Foo.Sum", Args(1, 2), timeout=10) == 3
            url = f"http://127.0.0.1:{web_number}/debug/geerpc?refresh=1"
            # After load: one call so far.
            before_dom = await run_chromium(
                url, tmp_path / "p1", *_chromium_flags(before_png, None)
            )
            loads_before = gate.loads
            gate.armed = True
            after_dom = await run_chromium(url, tmp_path / "p2", *_chromium_flags(after_png, 6000))
        finally:
            await client.close()
        await rpc.all_closed()
        await web.all_closed()
    finally:
        await rpc.all_closed(abort=True)
        await web.all_closed(abort=True)
        await stop(rpc_port)
        await stop(web_port)

    assert gate.failures == []
    assert loads_before == 1
    assert gate.loads == 2, "the second run loaded the page once: no reload"
    assert gate.refreshes >= 1
    before = parse_page(before_dom)
    assert before.summary["total-calls"] == "1"
    assert before.services["Arith"]["Multiply"]["calls"] == "0"
    after = parse_page(after_dom)
    assert after.summary["total-calls"] == str(1 + MULTIPLIES + DIVIDES)
    assert after.services["Arith"]["Multiply"]["calls"] == str(MULTIPLIES)
    assert after.services["Arith"]["Divide"]["errors"] == str(DIVIDES)
    (refreshes,) = re.findall(r'<body [^>]*data-refreshes="(\d+)"', after_dom)
    assert int(refreshes) >= 1
    assert re.search(r'<table id="recent-errors".*divide by zero', after_dom, re.S)
    assert "live: refreshed" in after_dom
    # The histogram of Multiply drew its calls.
    multiply_row = after_dom.split('data-method="Multiply"')[1].split("</tr>")[0]
    counts = [int(c) for c in re.findall(r'data-count="(\d+)"', multiply_row)]
    assert sum(counts) == MULTIPLIES
    for png in (before_png, after_png):
        check_picture_of_size(png)


def check_picture_of_size(png: Path) -> None:
    """A real picture (not blank) of the window's size."""
    import tests.integration.test_docs_site as docs_site

    saved = docs_site.WIDTH, docs_site.HEIGHT
    docs_site.WIDTH, docs_site.HEIGHT = WIDTH, HEIGHT
    try:
        check_picture(png)
    finally:
        docs_site.WIDTH, docs_site.HEIGHT = saved
