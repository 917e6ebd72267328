"""
GeeRPC over HTTP (docs/protocol.md 6) between txgeerpc and geepeer, over real TCP on
127.0.0.1, with both of Go's ``encoding/json`` engines:

- a Go client dialling like the reference's ``DialHTTP`` (``CONNECT
  /_geeprc_``, then the plain Go Option with its first request right behind
  it) against ``Server.port_factory()``;
- a txgeerpc ``http@`` client against ``geepeer server -http`` (the
  reference's ``HandleHTTP`` + ``http.Serve``): every example method, the error
  texts, 64 concurrent calls, the SAMPLE record, the handle timeout;
- one txgeerpc port for every protocol: Go clients over plain TCP and over
  HTTP at once, txgeerpc clients of both kinds, the debug page;
- ``GET /_geeprc_``: ``405 must CONNECT`` from both servers;
- the reference's lost bytes (defect 2, vector 19): the Go server drops what
  came with the CONNECT head, txgeerpc's port keeps it, and txgeerpc's
  ``http@`` client never loses a first call to the Go server.

Every test ends with no pending DelayedCall, no open socket in the reactor and
no live child process (the autouse ``_clean_reactor_and_children``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Protocol, connectionDone
from twisted.python.failure import Failure

from txgeerpc.errors import RemoteError
from txgeerpc.examples import Args

from ._geepeer import decode_replies, encode_requests, running_server
from ._reactor_go import (
    CALL_TIMEOUT,
    PLAIN_OPTION,
    SAMPLE,
    TIMEOUT_TEXT,
    OneShot,
    _clean_reactor_and_children,  # noqa: F401 - the autouse fixture, applied here
    call_every_method,
    canonical,
    check_basic,
    fresh_connections_failures,
    go_client_lines,
    run_go_client,
    txgeerpc_client,
    txgeerpc_server,
)

# What a Go GeeRPC client sends, and what a Go GeeRPC server answers (vector 06).
CONNECT_HEAD = b"CONNECT /_geeprc_ HTTP/1.0\n\n"
CONNECTED = b"HTTP/1.0 200 Connected to Gee RPC\n\n"
MUST_CONNECT = b"405 must CONNECT\n"

FRESH_CONNECTIONS = 30
AT_ONCE = 8


# -- raw HTTP on the reactor ---------------------------------------------------------


@dataclass
class HTTPResponse:
    status_line: bytes
    status: int
    headers: dict[bytes, bytes]  # lower-case names
    body: bytes


def parse_response(data: bytes) -> HTTPResponse:
    """A whole HTTP/1.x response read until the server closed."""
    head, separator, body = data.partition(b"\r\n\r\n")
    assert separator, f"no end of head in {data!r}"
    status_line, *header_lines = head.split(b"\r\n")
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(b":")
        headers[name.strip().lower()] = value.strip()
    if b"content-length" in headers:
        assert int(headers[b"content-length"]) == len(body), data
    return HTTPResponse(status_line, int(status_line.split()[1]), headers, body)


async def raw_session(address: str, payload: bytes, *, half_close: bool) -> bytes:
    """Write ``payload`` in one write (then half-close, or not) and return
    everything received until the server closes."""
    host, port = address.rsplit(":", 1)
    shot = OneShot(payload, half_close=half_close)
    await connectProtocol(TCP4ClientEndpoint(reactor, host, int(port), timeout=5), shot)
    shot.done.addTimeout(CALL_TIMEOUT, reactor)
    return await shot.done


async def http_get(address: str, path: str) -> HTTPResponse:
    request = f"GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n"
    return parse_response(await raw_session(address, request.encode(), half_close=False))


class _UntilReplies(Protocol):
    """Writes ``payload`` in one write, reads the 200 line and then gob
    messages until ``count`` of them are whole, and closes."""

    def __init__(self, payload: bytes, count: int) -> None:
        self.payload = payload
        self.count = count
        self.received = b""
        self.done: Deferred[bytes] = Deferred()

    def connectionMade(self) -> None:
        self.transport.write(self.payload)  # type: ignore[union-attr]

    def dataReceived(self, data: bytes) -> None:
        self.received += data
        if self.received.startswith(CONNECTED) and (
            _whole_gob_messages(self.received[len(CONNECTED) :]) >= self.count
        ):
            self.transport.loseConnection()  # type: ignore[union-attr]

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.done.callback(self.received)


def _whole_gob_messages(data: bytes) -> int:
    """How many whole gob messages ``data`` starts with."""
    count = pos = 0
    while pos < len(data):
        first = data[pos]
        if first < 0x80:
            length, start = first, pos + 1
        else:
            size = 256 - first
            if pos + 1 + size > len(data):
                break
            length = int.from_bytes(data[pos + 1 : pos + 1 + size], "big")
            start = pos + 1 + size
        if start + length > len(data):
            break
        count += 1
        pos = start + length
    return count


# -- A: Go client over HTTP -> txgeerpc's one port ------------------------------------


@pytest.mark.parametrize("wide_option", [False, True], ids=["plain-option", "wide-option"])
@pytest_twisted.ensureDeferred
async def test_go_http_client_basic_against_txgeerpc_port(geepeer: Path, wide_option: bool) -> None:
    """CONNECT, the 200 line, then the Go Option with the first request right
    behind it: every call of the basic scenario gets its exact reply."""
    async with txgeerpc_server(one_port=True) as served:
        lines = await go_client_lines(
            geepeer, served.address, "basic", http=True, wide_option=wide_option
        )
    check_basic(lines)
    assert [canonical(r) for r in served.records.received] == [canonical(SAMPLE)]
    assert served.tracker.accepted == 1


@pytest_twisted.ensureDeferred
async def test_go_http_client_handle_timeout_against_txgeerpc_port(geepeer: Path) -> None:
    async with txgeerpc_server(one_port=True) as served:
        lines = await go_client_lines(geepeer, served.address, "timeout", http=True)
    assert lines == [
        {"case": "sleep", "method": "Foo.Sleep", "reply": None, "error": TIMEOUT_TEXT},
        {"case": "sum_after_timeout", "method": "Foo.Sum", "reply": 5, "error": ""},
    ]


# -- B: txgeerpc http@ client -> Go server in -http mode ------------------------------


@pytest_twisted.ensureDeferred
async def test_txgeerpc_http_client_calls_every_method_of_go_http_server(geepeer: Path) -> None:
    server = running_server(geepeer, http=True)
    with server as address:
        async with txgeerpc_client(address, scheme="http") as client:
            await call_every_method(client)
        log = server.log
    assert "rpc server: read header error" not in log
    assert "rpc server: options error" not in log


@pytest_twisted.ensureDeferred
async def test_txgeerpc_http_client_handle_timeout_against_go_http_server(geepeer: Path) -> None:
    with running_server(geepeer, http=True) as address:
        async with txgeerpc_client(address, scheme="http", handle_timeout=0.25) as client:
            with pytest.raises(RemoteError) as info:
                await client.call("Foo.Sleep", Args(1, 0), timeout=CALL_TIMEOUT)
            assert info.value.message == TIMEOUT_TEXT
            assert await client.call("Foo.Sum", Args(2, 3), timeout=CALL_TIMEOUT) == 5


# -- C: one txgeerpc port for every protocol ------------------------------------------


@pytest_twisted.ensureDeferred
async def test_one_txgeerpc_port_serves_tcp_http_and_web_at_once(geepeer: Path) -> None:
    """A Go client over plain TCP and one over HTTP, at the same time, on the
    same port; then txgeerpc clients of both kinds and the debug page there."""
    async with txgeerpc_server(one_port=True) as served:
        tcp_run, http_run = await gatherResults(
            [
                Deferred.fromCoroutine(run_go_client(geepeer, served.address, "basic")),
                Deferred.fromCoroutine(run_go_client(geepeer, served.address, "basic", http=True)),
            ]
        )
        for scheme in ("tcp", "http"):
            async with txgeerpc_client(served.address, scheme=scheme) as client:
                assert await client.call("Foo.Sum", Args(20, 22), timeout=CALL_TIMEOUT) == 42
        page = await http_get(served.address, "/debug/geerpc")
    for run in (tcp_run, http_run):
        assert not run.killed and run.exit_code == 0, run.describe()
        check_basic(run.lines())
    assert page.status == 200, page
    for service in (b"Foo", b"Arith", b"Records"):
        assert service in page.body, page
    assert served.tracker.accepted == 5


# -- D: the RPC path refuses anything but CONNECT --------------------------------------


def _check_must_connect(response: HTTPResponse) -> None:
    assert response.status == 405, response
    assert response.headers.get(b"content-type") == b"text/plain; charset=utf-8", response
    assert response.body == MUST_CONNECT, response


@pytest_twisted.ensureDeferred
async def test_get_rpc_path_is_405_from_go_and_from_txgeerpc(geepeer: Path) -> None:
    """``GET /_geeprc_`` (vector 08) gets ``405 must CONNECT\\n`` from the Go
    server in -http mode and from txgeerpc's port alike."""
    with running_server(geepeer, http=True) as address:
        go = await http_get(address, "/_geeprc_")
    async with txgeerpc_server(one_port=True) as served:
        ours = await http_get(served.address, "/_geeprc_")
    _check_must_connect(go)
    assert go.status_line == b"HTTP/1.1 405 Method Not Allowed"
    _check_must_connect(ours)


# -- E: bytes sent with the CONNECT head (defect 2, vector 19) ---------------------------


@pytest_twisted.ensureDeferred
async def test_control_go_http_server_loses_bytes_sent_with_connect_head(geepeer: Path) -> None:
    """CONNECT, the plain Option and Foo.Sum{1,2} in one write (vector 19): the
    Go server answers the 200 line and nothing else, every time (its HTTP
    reader took the Option and the request with it); the same bytes to
    txgeerpc's port get the 200 line and the reply."""
    request = encode_requests(
        geepeer, [{"method": "Foo.Sum", "seq": 1, "arg": {"Num1": 1, "Num2": 2}}]
    )
    coalesced = CONNECT_HEAD + PLAIN_OPTION + request
    assert len(coalesced) == 245  # as in vector 19
    server = running_server(geepeer, http=True)
    with server as address:
        lost = await gatherResults(
            [
                Deferred.fromCoroutine(raw_session(address, coalesced, half_close=True))
                for _ in range(8)
            ]
        )
        log = server.log
    assert lost == [CONNECTED] * 8
    # What the Go server read after the 200 line: the client's half-close.
    assert log.count("rpc server: options error:  EOF") == 8, log

    async with txgeerpc_server(one_port=True) as served:
        host, port = served.address.rsplit(":", 1)
        endpoint = TCP4ClientEndpoint(reactor, host, int(port), timeout=5)

        async def session() -> bytes:
            # Header type, header, int body: three gob messages.
            shot = _UntilReplies(coalesced, count=3)
            await connectProtocol(endpoint, shot)
            shot.done.addTimeout(CALL_TIMEOUT, reactor)
            return await shot.done

        kept = await gatherResults([Deferred.fromCoroutine(session()) for _ in range(8)])
    for received in kept:
        assert received.startswith(CONNECTED), received
        assert decode_replies(geepeer, received[len(CONNECTED) :]) == [
            {"ServiceMethod": "Foo.Sum", "Seq": 1, "Error": "", "Reply": 3}
        ]


@pytest_twisted.ensureDeferred
async def test_txgeerpc_http_client_never_loses_first_call_to_go_http_server(
    geepeer: Path,
) -> None:
    """30 fresh ``http@`` connections, 8 at a time, each calling Foo.Sum as
    soon as it is connected: every call is answered by the Go -http server."""
    server = running_server(geepeer, http=True)

    with server as address:
        failures = await fresh_connections_failures("http@" + address, FRESH_CONNECTIONS, AT_ONCE)
        log = server.log
    assert not failures, "\n".join(failures) + f"\nGo server log:\n{log}"
    assert "rpc server:" not in log
