"""
The debug page in a real browser: a txgeerpc server on 127.0.0.1 takes known
calls from a real client, then headless Chromium loads ``/debug/geerpc`` from
a twisted.web Site and dumps the DOM it built, which must show those calls.

Chromium is spawned through the reactor (which keeps serving the page while
it loads) and killed by PID if it overruns its deadline.  ``scripts/test``
installs it; without it this test fails rather than skips.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.internet.interfaces import IListeningPort
from twisted.internet.protocol import ProcessProtocol, connectionDone
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import Site

from tests.test_debug import parse_page
from txgeerpc import Server, connect
from txgeerpc.debug import DebugResource
from txgeerpc.errors import ConnectionShutdown, RemoteError
from txgeerpc.examples import Args, register_examples

CHROMIUM = "/usr/bin/chromium"
BROWSER_DEADLINE = 90.0
CLOSE_DEADLINE = 15.0


class _TrackedWrapper(ProtocolWrapper):
    factory: Tracked

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        super().connectionLost(reason)  # the wrapped protocol's teardown included
        self.factory.lost(self)


class Tracked(WrappingFactory):
    """A factory wrapper that can wait until every connection it made has
    been seen closed on this side, the wrapped protocol's ``connectionLost``
    included (so no socket or timer outlives the test)."""

    protocol = _TrackedWrapper

    def __init__(self, wrapped: Any) -> None:
        super().__init__(wrapped)
        self._closed: dict[Any, Deferred[None]] = {}

    def registerProtocol(self, p: Any) -> None:
        super().registerProtocol(p)
        self._closed[p] = Deferred()

    def lost(self, p: Any) -> None:
        closed = self._closed.pop(p, None)
        if closed is not None:
            closed.callback(None)

    async def all_closed(self, *, abort: bool = False) -> None:
        """Wait until every open connection is closed (aborting them first
        when ``abort``), at most :data:`CLOSE_DEADLINE` seconds."""
        waiting = list(self._closed.values())
        if abort:
            for p in list(self.protocols):
                p.transport.abortConnection()
        if waiting:
            await gatherResults(waiting).addTimeout(CLOSE_DEADLINE, reactor)


class Browser(ProcessProtocol):
    """Collects a process's output; :attr:`ended` fires with its exit code
    (``None`` when a signal ended it) once every pipe has closed."""

    def __init__(self) -> None:
        self.stdout: list[bytes] = []
        self.stderr: list[bytes] = []
        self.ended: Deferred[int | None] = Deferred()

    def connectionMade(self) -> None:
        self.transport.closeStdin()  # type: ignore[union-attr]

    def outReceived(self, data: bytes) -> None:
        self.stdout.append(data)

    def errReceived(self, data: bytes) -> None:
        self.stderr.append(data)

    def processEnded(self, reason: Failure) -> None:
        if reason.check(ProcessDone, ProcessTerminated):
            self.ended.callback(reason.value.exitCode)  # type: ignore[union-attr]
        else:
            self.ended.errback(reason)


async def run_chromium(url: str, profile: Path, *flags: str) -> str:
    """Headless Chromium on ``url`` with ``flags`` (what to do with the
    page); what it printed.

    :raises AssertionError: Chromium is missing, overran its deadline (it is
        then killed) or failed.
    """
    assert os.access(CHROMIUM, os.X_OK), (
        f"{CHROMIUM} is missing: ./scripts/test installs it (apt-get install chromium)"
    )
    argv: Sequence[str] = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--no-default-browser-check",
        "--disable-extensions",
        "--disable-background-networking",
        f"--user-data-dir={profile}",
        *flags,
        url,
    ]
    browser = Browser()
    process = reactor.spawnProcess(  # type: ignore[attr-defined]
        browser, CHROMIUM, list(argv), env={**os.environ, "HOME": str(profile)}
    )
    overran: list[bool] = []

    def kill() -> None:
        overran.append(True)
        process.signalProcess(signal.SIGKILL)

    killer = reactor.callLater(BROWSER_DEADLINE, kill)  # type: ignore[attr-defined]
    try:
        code = await browser.ended
    finally:
        if killer.active():
            killer.cancel()
    stderr = b"".join(browser.stderr).decode(errors="replace")
    assert not overran, f"chromium ran over {BROWSER_DEADLINE}s and was killed:\n{stderr}"
    assert code == 0, f"chromium exited with {code}:\n{stderr}"
    return b"".join(browser.stdout).decode("utf-8")


async def dump_dom(url: str, profile: Path) -> str:
    """The DOM headless Chromium builds for ``url``, serialized."""
    return await run_chromium(url, profile, "--dump-dom")


async def listen(factory: Any) -> tuple[IListeningPort, int]:
    """Listen on 127.0.0.1; the port and its number."""
    endpoint = TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1")
    port: IListeningPort = await endpoint.listen(factory)
    address = port.getHost()
    assert isinstance(address, IPv4Address)
    return port, address.port


async def stop(port: IListeningPort) -> None:
    stopped = port.stopListening()
    if stopped is not None:
        await stopped


@pytest_twisted.ensureDeferred
async def test_chromium_shows_the_calls(tmp_path: Path) -> None:
    server = Server(reactor)
    register_examples(server)
    rpc = Tracked(server.factory())
    root = Resource()
    debug = Resource()
    root.putChild(b"debug", debug)
    debug.putChild(b"geerpc", DebugResource(server))
    site = Site(root)
    site.noisy = False
    web = Tracked(site)
    rpc_port, rpc_number = await listen(rpc)
    web_port, web_number = await listen(web)
    try:
        client = await connect(reactor, f"tcp@127.0.0.1:{rpc_number}", connect_timeout=5)
        # In flight while Chromium looks; the close below fails it (and the
        # server cancels its timer when it sees the connection go).
        sleeping: list[object] = []
        client.call("Foo.Sleep", Args(600, 0), timeout=900).addBoth(sleeping.append)
        try:
            assert await client.call("Foo.Sum", Args(1, 2), timeout=10) == 3
            assert await client.call("Foo.Sum", Args(3, 4), timeout=10) == 7
            assert await client.call("Arith.Multiply", Args(6, 7), timeout=10) == 42
            with pytest.raises(RemoteError, match=r"^divide by zero$"):
                await client.call("Arith.Divide", Args(1, 0), timeout=10)

            url = f"http://127.0.0.1:{web_number}/debug/geerpc"
            page = parse_page(await dump_dom(url, tmp_path))
        finally:
            await client.close()
        (outcome,) = sleeping
        assert isinstance(outcome, Failure) and outcome.check(ConnectionShutdown), outcome
        await rpc.all_closed()
        await web.all_closed()  # Chromium is gone: its connections are closing
    finally:
        await rpc.all_closed(abort=True)
        await web.all_closed(abort=True)
        await stop(rpc_port)
        await stop(web_port)

    assert page.title == "txgeerpc services"
    assert page.heading == "txgeerpc services"
    assert list(page.services) == ["Arith", "Ctx", "Foo", "Records"]
    assert list(page.services["Foo"]) == ["Sleep", "Sum"]
    assert page.summary["connections"] == "1"
    assert page.summary["total-calls"] == "5"
    cells = ("calls", "errors", "in-flight")
    table = {
        (service, method): tuple(row[cell] for cell in cells)
        for service, methods in page.services.items()
        for method, row in methods.items()
    }
    assert table[("Foo", "Sum")] == ("2", "0", "0")
    assert table[("Foo", "Sleep")] == ("1", "0", "1")
    assert table[("Arith", "Multiply")] == ("1", "0", "0")
    assert table[("Arith", "Divide")] == ("1", "1", "0")
    assert table[("Arith", "Echo")] == ("0", "0", "0")
    sum_row = page.services["Foo"]["Sum"]
    assert sum_row["signature"] == "Sum(Args) -> int"
    assert sum_row["p50"].endswith(" ms") and sum_row["p99"].endswith(" ms")
    assert page.services["Foo"]["Sleep"]["p50"] == "—"
