"""
The registry protocol (docs/protocol.md 9 and 10) between txgeerpc and geepeer, with
real processes on 127.0.0.1: ``twistd geerpc-registry``, ``twistd geerpc``
servers heartbeating to it (``--registry URL --advertise proto@addr``),
``geepeer server -registry URL`` (the reference's heartbeat) and ``geepeer
xclient`` (the reference's registry discovery and XClient):

- the Go requests of vectors 09-14, replayed byte for byte against a running
  ``twistd geerpc-registry``, get the recorded answers;
- geepeer's heartbeat and discovery requests are the reference's bytes
  (vectors 10 and 12), so the tests below put the reference's wire on txgeerpc;
- Go servers (one ``tcp@``, one ``http@``) found by txgeerpc: an XClient on a
  RegistryDiscovery, round robin, spreads its calls over both, and each Go
  server's own count (``Peer.Calls``) shows it ran its half; their periodic
  heartbeats refresh their entries;
- txgeerpc servers (one advertised ``tcp@``, one ``http@``) found by Go: the
  Go XClient spreads over both and broadcasts to both, and each server's debug
  page counts exactly the calls the Go client sent it;
- one registry, one Go and one txgeerpc server, a Go and a txgeerpc client:
  both clients spread and broadcast over both servers; when the txgeerpc
  server stops it deregisters, and both clients move to the Go server.

Who answered is counted by the servers themselves (``Peer.Calls``, the debug
page), not only by the clients. Nothing waits by sleeping: a server counts as
registered once it says so (geepeer's ``HEARTBEAT 200 OK`` line after its first
beat, ``twistd geerpc``'s "registered at" log line), and the one poll (for a
periodic heartbeat) fails at a deadline. Every process is stopped by its PID
at the end of its test, and the live-reactor tests end with no DelayedCall,
socket or child process left (``_clean_reactor_and_children``).

The replay runs under trial too (a SynchronousTestCase: no reactor, no Go);
the rest needs pytest's geepeer fixtures, like every interop module.
"""

from __future__ import annotations

import json
import socket
import subprocess
import threading
import urllib.request
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from contextlib import ExitStack, asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest_twisted  # type: ignore[import-untyped]
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.trial.unittest import SynchronousTestCase

from tests._live_reactor import _selectables
from tests._processes import start, stop, wait_for
from txgeerpc import connect
from txgeerpc.examples import Args
from txgeerpc.registry import RegistryDiscovery, agent_request
from txgeerpc.selection import RoundRobinSelect
from txgeerpc.xclient import XClient

from .._helpers import vector
from ..integration.test_sockets import until
from ..test_registry import _status_and_headers, _vector_names
from ._geepeer import GeepeerServer, run_xclient, running_server
from ._reactor_go import (
    CALL_TIMEOUT,
    _clean_reactor_and_children,  # noqa: F401 - the autouse fixture, applied here
    txgeerpc_client,
)

REGISTRY_PATH = "/_geerpc_/registry"
CALLS = 10  # calls spread over two servers: 5 each, whichever comes first
# Go servers' heartbeat period where a test waits for their next beat (each
# prints a line; a test lasts seconds, far from filling the stdout pipe).
FAST_HEARTBEAT = "250ms"


# -- processes ---------------------------------------------------------------------


@contextmanager
def registry_process(tmp_path: Path) -> Iterator[str]:
    """``twistd geerpc-registry`` on 127.0.0.1:0; its URL. Stopped by PID."""
    process = start(tmp_path, "geerpc-registry", "--listen", "tcp:0:interface=127.0.0.1")
    try:
        port = wait_for(process, rb"Site starting on (\d+)")
        yield f"http://127.0.0.1:{port}{REGISTRY_PATH}"
    finally:
        stop(process)


@dataclass
class TwistdServer:
    advertised: str  # tcp@127.0.0.1:PORT or http@127.0.0.1:PORT
    process: subprocess.Popen[bytes]

    @property
    def hostport(self) -> str:
        return self.advertised.split("@", 1)[1]

    def stop(self) -> None:
        """SIGTERM: the server deregisters, then exits (reaped)."""
        stop(self.process)


@contextmanager
def txgeerpc_servers(
    tmp_path: Path, registry: str, *protocols: str
) -> Iterator[list[TwistdServer]]:
    """One ``twistd geerpc`` (the example services) per protocol (``tcp`` or
    ``http``: how it advertises itself), heartbeating to ``registry``; entered
    once every one of them is registered. Stopped by PID on exit."""
    processes: list[subprocess.Popen[bytes]] = []
    try:
        for protocol in protocols:
            processes.append(
                start(
                    tmp_path,
                    "geerpc",
                    *("--listen", "tcp:0:interface=127.0.0.1"),
                    # Port 0: the port the listener gets.
                    *("--registry", registry, "--advertise", f"{protocol}@127.0.0.1:0"),
                )
            )
        yield [
            TwistdServer(wait_for(process, rb"heartbeat: (\S+) registered at"), process)
            for process in processes
        ]
    finally:
        for process in processes:
            stop(process)


@contextmanager
def go_servers(
    binary: Path, registry: str, *protocols: str, **options: Any
) -> Iterator[list[GeepeerServer]]:
    """One ``geepeer server -registry`` per protocol (``tcp``, or ``http`` for
    ``-http``); entered once each has had its first heartbeat answered.
    Killed by PID on exit."""
    with ExitStack() as stack:
        servers = []
        for protocol in protocols:
            server = running_server(binary, http=protocol == "http", registry=registry, **options)
            stack.enter_context(server)
            assert server.first_heartbeat == "200 OK", server.log
            servers.append(server)
        yield servers


# -- HTTP, synchronously (only processes answer) ------------------------------------


def listing(registry: str) -> list[dict[str, Any]]:
    """The registry's entries (its JSON listing)."""
    request = urllib.request.Request(registry, headers={"Accept": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        entries: list[dict[str, Any]] = json.load(response)["servers"]
    return entries


def listed(registry: str) -> list[str]:
    """What a Go client reads: ``X-Geerpc-Servers``, split."""
    with urllib.request.urlopen(registry, timeout=10) as response:
        header: str = response.headers["X-Geerpc-Servers"]
    return header.split(",") if header else []


def debug_calls(hostport: str, service_method: str) -> int:
    """How many calls of ``service_method`` a txgeerpc server ran, from its
    debug page."""
    url = f"http://{hostport}/debug/geerpc?format=json"
    with urllib.request.urlopen(url, timeout=10) as response:
        page = json.load(response)
    service, method = service_method.split(".")
    for entry in page["services"]:
        if entry["name"] == service:
            for stats in entry["methods"]:
                if stats["name"] == method:
                    return int(stats["calls"])
    raise AssertionError(f"{service_method} is not on the debug page of {hostport}")


def exchange(port: int, request: bytes) -> bytes:
    """Send ``request`` in one write; the one whole answer (its head, then
    Content-Length bytes: a Go request keeps the connection open)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
        connection.sendall(request)
        received = b""
        while True:
            _, separator, body = received.partition(b"\r\n\r\n")
            if separator:
                length = int(_status_and_headers(received)[1].get(b"content-length", b"0"))
                if len(body) >= length:
                    return received
            chunk = connection.recv(65536)
            if not chunk:
                raise AssertionError(f"closed before a whole answer: {received!r}")
            received += chunk


@contextmanager
def fake_registry(answer: bytes) -> Iterator[tuple[str, list[bytes]]]:
    """A registry URL whose server (a thread) takes one request, records its
    head and answers ``answer``; and the recorded requests."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(20)
    requests: list[bytes] = []

    def serve() -> None:
        try:
            connection, _ = listener.accept()
        except OSError:  # the test ended without a request
            return
        with connection:
            connection.settimeout(10)
            received = b""
            while b"\r\n\r\n" not in received:
                chunk = connection.recv(4096)
                if not chunk:
                    break
                received += chunk
            requests.append(received)
            connection.sendall(answer)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}{REGISTRY_PATH}", requests
    finally:
        try:
            listener.shutdown(socket.SHUT_RDWR)  # wakes a thread still in accept()
        except OSError:
            pass
        listener.close()
        thread.join(20)


# -- a txgeerpc XClient on the test reactor --------------------------------------------


@asynccontextmanager
async def xclient_through(registry: str) -> AsyncIterator[tuple[XClient, RegistryDiscovery]]:
    """A round-robin XClient on a RegistryDiscovery of ``registry``, entered
    after the first listing; closed (connections and discovery) on exit."""
    before = _selectables()
    discovery = RegistryDiscovery(reactor, agent_request(reactor), registry)
    discovery.startService()
    try:
        await discovery.ready()
        xclient = XClient(
            discovery,
            lambda address: connect(reactor, address, connect_timeout=5),
            reactor,
            selector=RoundRobinSelect(),
        )
        try:
            yield xclient, discovery
        finally:
            await xclient.close()
    finally:
        discovery.stopService()
    # The registry requests' connections (Agent's, not kept alive) close
    # asynchronously after their answer.
    await until(lambda: not _selectables() - before)


async def spread(xclient: XClient, calls: int = CALLS) -> None:
    """``calls`` Foo.Sum calls through ``xclient``, one after another."""
    for n in range(1, calls + 1):
        reply = await xclient.call("Foo.Sum", Args(n, 1000 * n), timeout=CALL_TIMEOUT)
        assert reply == 1001 * n


async def next_change(discovery: RegistryDiscovery) -> list[str]:
    """Refresh ``discovery`` now; the list it changes to."""
    changed: Deferred[list[str]] = Deferred()
    unsubscribe = discovery.on_change(
        lambda servers: None if changed.called else changed.callback(servers)
    )
    try:
        discovery.refresh()
        changed.addTimeout(CALL_TIMEOUT, reactor)
        return await changed
    finally:
        unsubscribe()


def go_spread(lines: list[dict[str, Any]]) -> Counter[str]:
    """Checks the spread scenario's replies; calls per server."""
    assert [(x["case"], x["reply"], x["error"]) for x in lines] == [
        ("spread", 1001 * n, "") for n in range(1, len(lines) + 1)
    ], lines
    return Counter(x["server"] for x in lines)


def go_broadcast(lines: list[dict[str, Any]]) -> list[str]:
    """Checks the broadcast scenario's replies; the servers called."""
    assert [(x["case"], x["reply"], x["error"]) for x in lines] == [("broadcast", 3, "")] * len(
        lines
    ), lines
    return sorted(x["server"] for x in lines)


async def go_server_calls(server: GeepeerServer, service_method: str) -> int:
    """How many ``service_method`` calls a Go server ran (``Peer.Calls``)."""
    scheme = "http" if server.http else "tcp"
    assert server.address is not None
    async with txgeerpc_client(server.address, scheme=scheme) as client:
        return int(await client.call("Peer.Calls", service_method, timeout=CALL_TIMEOUT))


# -- a: the Go vectors against a running registry -------------------------------------


class GoVectorsAgainstRunningRegistry(SynchronousTestCase):
    def test_recorded_requests_get_the_recorded_answers(self) -> None:
        """Vectors 09 to 14 in order, each on its own connection: the empty
        list, heartbeats for a tcp@ and an http@ server, the sorted list of
        both (12), POST without the header (500), PUT (405). Status line,
        every recorded header but Date, and the (empty) body are the
        recording's; txgeerpc adds only Server, and X-Geerpc-Timeout to
        heartbeat answers."""
        tmp_path = Path(self.mktemp())
        tmp_path.mkdir(parents=True)
        with registry_process(tmp_path) as url:
            port = urlsplit(url).port
            assert port is not None
            for prefix in ["09", "10", "11", "12", "13", "14"]:
                name = next(_vector_names(prefix))
                request = vector(name + ".c2s.bin")
                status, headers, body = _status_and_headers(vector(name + ".s2c.bin"))
                ours = _status_and_headers(exchange(port, request))
                self.assertEqual(ours[0], status, name)
                del headers[b"date"]
                self.assertEqual({k: ours[1].get(k) for k in headers}, headers, name)
                heartbeat = request.startswith(b"POST") and status.endswith(b"200 OK")
                added = {b"server", b"date"} | ({b"x-geerpc-timeout"} if heartbeat else set())
                self.assertEqual(set(ours[1]) - set(headers), added, name)
                self.assertEqual((ours[2], body), (b"", b""), name)
            # 12's list is what the registry now holds.
            self.assertEqual(listed(url), ["http@127.0.0.1:37587", "tcp@127.0.0.1:43827"])


# -- geepeer's registry requests are the reference's ------------------------------------


def test_geepeer_registry_requests_are_the_reference_bytes(geepeer_jsonv2: Path) -> None:
    """geepeer's first heartbeat is vector 10's request and its discovery GET
    vector 12's, but for the ports (``Host`` and the advertised address)."""
    answer = vector("10-registry-heartbeat-post.s2c.bin")
    with fake_registry(answer) as (url, requests):
        server = running_server(geepeer_jsonv2, registry=url)
        with server:
            assert server.first_heartbeat == "200 OK"
            advertised = server.advertised
    recorded = vector("10-registry-heartbeat-post.c2s.bin")
    host = url.split("/")[2]
    assert requests == [
        recorded.replace(b"127.0.0.1:39689", host.encode()).replace(
            b"tcp@127.0.0.1:43827", advertised.encode()
        )
    ]

    empty = vector("09-registry-get-empty.s2c.bin")
    with fake_registry(empty) as (url, requests):
        assert run_xclient(geepeer_jsonv2, url, "broadcast") == []  # nothing listed: no call
    recorded = vector("12-registry-get-list.c2s.bin")
    assert requests == [recorded.replace(b"127.0.0.1:39689", url.split("/")[2].encode())]


# -- b: Go servers found by a txgeerpc XClient ----------------------------------------


@pytest_twisted.ensureDeferred
async def test_txgeerpc_xclient_spreads_over_go_servers(geepeer: Path, tmp_path: Path) -> None:
    with (
        registry_process(tmp_path) as url,
        go_servers(geepeer, url, "tcp", "http", heartbeat=FAST_HEARTBEAT) as servers,
    ):
        addresses = sorted(server.advertised for server in servers)
        assert listed(url) == addresses
        async with xclient_through(url) as (xclient, discovery):
            assert discovery.servers() == addresses
            await spread(xclient)
            assert xclient.calls_sent == {address: CALLS // 2 for address in addresses}
            assert await xclient.broadcast("Foo.Sum", Args(1, 2), timeout=CALL_TIMEOUT) == 3
        for server in servers:
            assert await go_server_calls(server, "Foo.Sum") == CALLS // 2 + 1, server.advertised

        # They keep beating: every entry gets a later heartbeat than now.
        first = {entry["address"]: entry["last_heartbeat"] for entry in listing(url)}
        assert sorted(first) == addresses
        for server in servers:  # each prints a line once its next beat is answered
            assert server.next_heartbeat() == "200 OK", server.log
        assert all(entry["last_heartbeat"] > first[entry["address"]] for entry in listing(url))
        for server in servers:
            assert "heartbeat error" not in server.log


# -- c: txgeerpc servers found by the Go XClient -------------------------------------


def test_go_xclient_spreads_over_txgeerpc_servers(geepeer_jsonv2: Path, tmp_path: Path) -> None:
    """The plain Go Option with the first request right behind it, on tcp@
    and (CONNECT first) http@ entries of ``twistd geerpc`` servers.  One
    engine: a Go client's bytes do not depend on it (docs/protocol.md 0.4)."""
    with (
        registry_process(tmp_path) as url,
        txgeerpc_servers(tmp_path, url, "tcp", "http") as servers,
    ):
        addresses = sorted(server.advertised for server in servers)
        assert listed(url) == addresses
        sent = go_spread(run_xclient(geepeer_jsonv2, url, "spread", calls=CALLS))
        assert sent == {address: CALLS // 2 for address in addresses}
        assert go_broadcast(run_xclient(geepeer_jsonv2, url, "broadcast")) == addresses
        for server in servers:
            assert debug_calls(server.hostport, "Foo.Sum") == CALLS // 2 + 1, server.advertised


# -- d: both kinds of server, both kinds of client -------------------------------------


@pytest_twisted.ensureDeferred
async def test_one_registry_for_go_and_txgeerpc(geepeer: Path, tmp_path: Path) -> None:
    with (
        registry_process(tmp_path) as url,
        go_servers(geepeer, url, "tcp") as (go,),
        txgeerpc_servers(tmp_path, url, "tcp") as (ours,),
    ):
        addresses = sorted([go.advertised, ours.advertised])
        assert listed(url) == addresses
        # geepeer's own server loses requests sent with the plain Option
        # (docs/protocol.md 3.3): the Go client widens it, as the reference cannot.
        lines = run_xclient(geepeer, url, "spread", calls=CALLS, wide_option=True)
        assert go_spread(lines) == {address: CALLS // 2 for address in addresses}
        lines = run_xclient(geepeer, url, "broadcast", wide_option=True)
        assert go_broadcast(lines) == addresses
        async with xclient_through(url) as (xclient, discovery):
            await spread(xclient)
            assert xclient.calls_sent == {address: CALLS // 2 for address in addresses}
            assert await xclient.broadcast("Foo.Sum", Args(1, 2), timeout=CALL_TIMEOUT) == 3
            # Each server ran half of each client's calls and one of each broadcast.
            assert await go_server_calls(go, "Foo.Sum") == CALLS + 2
            assert debug_calls(ours.hostport, "Foo.Sum") == CALLS + 2

            # The txgeerpc server stops: it leaves the registry before it
            # exits, and both clients move to the Go server.
            ours.stop()
            assert listed(url) == [go.advertised]
            lines = run_xclient(geepeer, url, "spread", calls=2, wide_option=True)
            assert go_spread(lines) == {go.advertised: 2}
            assert await next_change(discovery) == [go.advertised]
            assert xclient.connections == [go.advertised]
            calls_before = xclient.calls_sent[go.advertised]
            await spread(xclient, 2)
            assert xclient.calls_sent[go.advertised] == calls_before + 2
        assert await go_server_calls(go, "Foo.Sum") == CALLS + 2 + 4
