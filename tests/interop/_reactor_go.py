"""
Helpers shared by the interop tests that run on the live reactor
(``test_interop.py``, ``test_interop_http.py``): Go clients spawned under the
reactor with a kill timeout, a txgeerpc server on 127.0.0.1:0 that reports when
its connections are gone, the SAMPLE record, and the autouse cleanliness
fixture (import ``_clean_reactor_and_children`` into a test module to apply it
there).
"""

from __future__ import annotations

import json
import os
import signal
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, fields, is_dataclass
from pathlib import Path
from typing import Any

import pytest
from twisted.internet import reactor
from twisted.internet.defer import Deferred, DeferredList, gatherResults
from twisted.internet.defer import TimeoutError as DeferredTimeoutError
from twisted.internet.endpoints import TCP4ServerEndpoint, serverFromString
from twisted.internet.error import ProcessExitedAlready
from twisted.internet.protocol import Factory, ProcessProtocol, Protocol, connectionDone
from twisted.python.failure import Failure

from tests._live_reactor import reactor_left_clean
from txgeerpc import Client, Server, connect
from txgeerpc.errors import RemoteError
from txgeerpc.examples import Args, Arith, Foo, Point, Record, Records

from ._geepeer import EXPECTED_BASIC

CALL_TIMEOUT = 10.0  # seconds for one txgeerpc call
GO_CALL_TIMEOUT = "10s"  # the Go client's own per-call limit
GO_KILL_TIMEOUT = 40.0  # a Go client still running after this is killed
CLOSE_TIMEOUT = 10.0  # for the txgeerpc server to see its connections go

TIMEOUT_TEXT = "rpc server: request handle timeout: expect within 250ms"

# The Option exactly as Go's client writes it (101 bytes with the newline).
PLAIN_OPTION = (
    b'{"MagicNumber":3927900,"CodecType":"application/gob",'
    b'"ConnectTimeout":10000000000,"HandleTimeout":0}\n'
)


# -- hygiene -------------------------------------------------------------------


def _children() -> set[int]:
    """PIDs of this process's children (zombies included)."""
    pids: set[int] = set()
    for task in Path("/proc/self/task").iterdir():
        try:
            pids.update(int(pid) for pid in (task / "children").read_text().split())
        except OSError:  # a thread that just ended
            continue
    return pids


@pytest.fixture(autouse=True)
def _clean_reactor_and_children() -> Iterator[None]:
    """What the dirty-reactor check of tests/integration demands, plus: every
    child process started during the test is gone (killed and reaped)."""
    children_before = _children()
    try:
        with reactor_left_clean():
            yield
    finally:
        leftover_children = _children() - children_before
        for pid in leftover_children:
            os.kill(pid, signal.SIGKILL)  # only PIDs this test started
    assert not leftover_children, f"child processes still alive: {leftover_children}"


# -- Go clients under the reactor ------------------------------------------------


@dataclass
class GoRun:
    """A finished ``geepeer client`` run."""

    argv: list[str]
    exit_code: int | None
    signal: int | None
    killed: bool
    stdout: bytes
    stderr: bytes

    def describe(self) -> str:
        how = "killed after the timeout" if self.killed else f"exit {self.exit_code}"
        if self.signal is not None:
            how += f", signal {self.signal}"
        return (
            f"{' '.join(self.argv[1:])}: {how}\n"
            f"stdout:\n{self.stdout.decode('utf-8', 'replace')}\n"
            f"stderr:\n{self.stderr.decode('utf-8', 'replace')}"
        )

    def lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.stdout.decode("utf-8").splitlines() if line]


class _Collector(ProcessProtocol):
    def __init__(self, stdin: bytes) -> None:
        self.stdin = stdin
        self.stdout = bytearray()
        self.stderr = bytearray()
        self.ended: Deferred[BaseException] = Deferred()

    def connectionMade(self) -> None:
        self.transport.write(self.stdin)  # type: ignore[union-attr]
        self.transport.closeStdin()  # type: ignore[union-attr]

    def outReceived(self, data: bytes) -> None:
        self.stdout += data

    def errReceived(self, data: bytes) -> None:
        self.stderr += data

    def processEnded(self, reason: Failure) -> None:
        self.ended.callback(reason.value)  # ProcessDone or ProcessTerminated


async def run_go_client(
    binary: Path,
    address: str,
    scenario: str,
    stdin: bytes = b"",
    *,
    http: bool = False,
    wide_option: bool = False,
    extra_args: Sequence[str] = (),
    kill_timeout: float = GO_KILL_TIMEOUT,
) -> GoRun:
    """Run ``geepeer client`` without blocking the reactor; kill it (by its
    PID, through its process transport) if it is still running after
    ``kill_timeout`` seconds. ``http`` dials with ``CONNECT /_geeprc_``
    first (``-http``)."""
    argv = [
        str(binary),
        "client",
        "-addr",
        address,
        "-scenario",
        scenario,
        "-call-timeout",
        GO_CALL_TIMEOUT,
    ]
    if http:
        argv.append("-http")
    if wide_option:
        argv.append("-wide-option")
    argv += extra_args
    return await run_go(argv, stdin, kill_timeout)


async def run_go(
    argv: list[str], stdin: bytes = b"", kill_timeout: float = GO_KILL_TIMEOUT
) -> GoRun:
    """Run the Go program ``argv`` without blocking the reactor; kill it (by
    its PID, through its process transport) if it is still running after
    ``kill_timeout`` seconds, or if the wait is interrupted."""
    collector = _Collector(stdin)
    process = reactor.spawnProcess(  # type: ignore[attr-defined]
        collector, argv[0], argv, env=dict(os.environ)
    )
    killed = False

    def kill() -> None:
        nonlocal killed
        killed = True
        try:
            process.signalProcess("KILL")
        except ProcessExitedAlready:
            pass

    killer = reactor.callLater(kill_timeout, kill)  # type: ignore[attr-defined]
    try:
        reason = await collector.ended
    finally:
        if killer.active():
            killer.cancel()
        if not collector.ended.called:  # interrupted: do not leave the process behind
            kill()
            await collector.ended
    return GoRun(
        argv,
        getattr(reason, "exitCode", None),
        getattr(reason, "signal", None),
        killed,
        bytes(collector.stdout),
        bytes(collector.stderr),
    )


async def go_client_lines(binary: Path, address: str, scenario: str, **kwargs: Any) -> list[Any]:
    """Run a Go client that must succeed; its output lines."""
    run = await run_go_client(binary, address, scenario, **kwargs)
    assert not run.killed and run.exit_code == 0, run.describe()
    return run.lines()


# -- a txgeerpc server on the test reactor -----------------------------------------


class _TrackingFactory(Factory):
    """Builds the txgeerpc server's protocols and reports when all are gone."""

    def __init__(self, inner: Factory) -> None:
        self.inner = inner
        self.protocols: set[Protocol] = set()
        self.accepted = 0
        self._idle: list[Deferred[None]] = []

    def buildProtocol(self, addr: Any) -> Protocol | None:
        protocol = self.inner.buildProtocol(addr)
        if protocol is None:
            return None
        self.accepted += 1
        self.protocols.add(protocol)
        lost = protocol.connectionLost

        def connectionLost(reason: Failure = connectionDone) -> None:
            try:
                lost(reason)
            finally:
                self.protocols.discard(protocol)
                if not self.protocols:
                    waiters, self._idle = self._idle, []
                    for waiter in waiters:
                        waiter.callback(None)

        protocol.connectionLost = connectionLost  # type: ignore[method-assign]
        return protocol

    async def all_closed(self, timeout: float = CLOSE_TIMEOUT) -> None:
        if not self.protocols:
            return
        waiter: Deferred[None] = Deferred()
        self._idle.append(waiter)
        waiter.addTimeout(timeout, reactor)
        try:
            await waiter
        except DeferredTimeoutError:
            raise AssertionError(
                f"{len(self.protocols)} txgeerpc server connections still open"
                f" {timeout}s after their peers went away"
            ) from None


class RecordingRecords(Records):
    """Records whose Echo remembers what it decoded."""

    def __init__(self) -> None:
        self.received: list[Record] = []

    def Echo(self, record: Record) -> Record:
        self.received.append(record)
        return record


@dataclass
class Served:
    server: Server
    address: str  # host:port, as geepeer wants it
    tracker: _TrackingFactory
    records: RecordingRecords


@asynccontextmanager
async def txgeerpc_server(*, one_port: bool = False, **settings: Any) -> AsyncIterator[Served]:
    """The example services on 127.0.0.1:0 (Records.Echo remembering what it
    got); on exit, waits for every connection to close and stops listening.

    ``one_port`` listens with ``Server.port_factory()`` (raw streams, HTTP
    CONNECT and plain HTTP on one port) instead of ``Server.factory()``."""
    server = Server(reactor, **settings)
    server.register(Foo(server.clock))
    server.register(Arith())
    records = RecordingRecords()
    server.register(records, name="Records")
    if one_port:
        tracker = _TrackingFactory(server.port_factory())
        endpoint = serverFromString(reactor, "tcp:0:interface=127.0.0.1")
    else:
        tracker = _TrackingFactory(server.factory())
        endpoint = TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1")
    port = await endpoint.listen(tracker)
    try:
        yield Served(server, f"127.0.0.1:{port.getHost().port}", tracker, records)
    finally:
        try:
            await tracker.all_closed()
        finally:
            await port.stopListening()


@asynccontextmanager
async def txgeerpc_client(
    address: str, *, scheme: str = "tcp", **kwargs: Any
) -> AsyncIterator[Client]:
    """A txgeerpc client of ``scheme@address`` (``http`` for CONNECT first),
    closed on exit."""
    client = await connect(reactor, f"{scheme}@{address}", connect_timeout=5, **kwargs)
    try:
        yield client
    finally:
        await client.close()


# -- Records and scenario checks ------------------------------------------------------

SAMPLE = Record(
    Name="sample ✓ ünïcode",
    ID=2**64 - 1,
    Score=-2.5,
    Active=True,
    Data=bytes([0, 1, 2, 255]),
    Tags=["a", "b c", ""],
    Points=[Point(1, 2), Point(-3, 4), Point(0, 0)],
    Counts={"x": 1, "y": -2, "z": 0},
    Matrix=[[1.5, 2.0], [], [-0.25]],
    Z=complex(1.5, -2),
    Child=Record(Name="child", weight=7, Tags=["t"], Child=Record(Name="grandchild")),
    weight=42,
    Extra="extra",
)


def canonical(value: Any) -> Any:
    """A form of ``value`` whose ``==`` also compares types (so True differs
    from 1 and 1.0 from 1); -0.0 still equals 0.0 (gob does not send a zero
    float field, whatever its sign)."""
    if is_dataclass(value) and not isinstance(value, type):
        return (
            type(value).__name__,
            *((f.name, canonical(getattr(value, f.name))) for f in fields(value)),
        )
    if isinstance(value, list):
        return ("list", *(canonical(item) for item in value))
    if isinstance(value, dict):
        return ("dict", *sorted((k, canonical(v)) for k, v in value.items()))
    return (type(value).__name__, value)


def check_basic(lines: list[dict[str, Any]]) -> None:
    simple = [
        (x["case"], x["method"], x["reply"], x["error"]) for x in lines[: len(EXPECTED_BASIC)]
    ]
    assert simple == EXPECTED_BASIC
    record = lines[len(EXPECTED_BASIC)]
    assert (record["case"], record["error"], record["equal"]) == ("record", "", True), record
    concurrent = lines[len(EXPECTED_BASIC) + 1 :]
    assert [(x["case"], x["method"], x["error"]) for x in concurrent] == [
        ("concurrent", "Foo.Sum", "")
    ] * 64
    # Line i is the call Foo.Sum{i, 1000*i}: each reply reached its own call.
    assert [x["reply"] for x in concurrent] == [1001 * i for i in range(64)]


# -- raw sessions -----------------------------------------------------------------------


class OneShot(Protocol):
    """Writes ``payload`` in one write, half-closes (unless ``half_close`` is
    false), collects everything received until the server closes."""

    def __init__(self, payload: bytes, *, half_close: bool = True) -> None:
        self.payload = payload
        self.half_close = half_close
        self.received = b""
        self.done: Deferred[bytes] = Deferred()

    def connectionMade(self) -> None:
        self.transport.write(self.payload)  # type: ignore[union-attr]
        if self.half_close:
            self.transport.loseWriteConnection()  # type: ignore[union-attr]

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.done.callback(self.received)


async def call_every_method(client: Client) -> None:
    """Every example method of a Go GeeRPC server, its error texts, 64
    concurrent calls and the SAMPLE record, through ``client``."""

    async def call(method: str, argument: Any, **kwargs: Any) -> Any:
        return await client.call(method, argument, timeout=CALL_TIMEOUT, **kwargs)

    async def error_of(method: str, argument: Any, **kwargs: Any) -> str:
        with pytest.raises(RemoteError) as info:
            await call(method, argument, **kwargs)
        return info.value.message

    assert await call("Foo.Sum", Args(1, 2)) == 3
    assert await call("Foo.Sleep", Args(0, 7)) == 7
    assert await call("Arith.Multiply", Args(3, 4)) == 12
    assert await call("Arith.Multiply", Args(-(2**31), 2**31)) == -(2**62)
    assert await call("Arith.Divide", Args(-7, 2)) == -3
    assert await error_of("Arith.Divide", Args(7, 0)) == "divide by zero"
    assert await call("Arith.Echo", "héllo, 世界 ✓ \U0001f600") == "héllo, 世界 ✓ \U0001f600"
    assert await call("Arith.Echo", "") == ""
    assert await error_of("Arith.Fail", "custom failure 100%") == "custom failure 100%"
    assert await call("Records.Keys", {"b": 2, "a": 1, "ç": 3}) == ["a", "b", "ç"]
    assert await call("Records.Keys", {}, argument_type=dict[str, int]) == []
    assert await error_of("Foo.Nope", Args(5, 6)) == "rpc server: can't find method Nope"
    assert await call("Foo.Sum", Args(8, 9)) == 17
    assert await error_of("Nope.Sum", Args(1, 1)) == "rpc server: can't find service Nope"
    # A body Go cannot decode: Go's codec text, and the stream goes on.
    assert (await error_of("Arith.Echo", Args(1, 2))).startswith("gob: ")
    assert await call("Foo.Sum", Args(2, 2)) == 4
    echoed = await call("Records.Echo", SAMPLE, result_type=Record)
    assert canonical(echoed) == canonical(SAMPLE)
    results = await gatherResults(
        [client.call("Foo.Sum", Args(i, 1000 * i), timeout=CALL_TIMEOUT) for i in range(64)]
    )
    assert results == [1001 * i for i in range(64)]
    assert client.available and client.pending == 0


async def fresh_connections_failures(address: str, count: int, at_once: int = 8) -> list[str]:
    """Open ``count`` fresh connections to ``address`` (``tcp@``/``http@``),
    ``at_once`` at a time, each calling Foo.Sum as soon as it is connected
    (the Option and the request then leave in one write); what went wrong."""

    async def one(n: int) -> int:
        client = await connect(reactor, address, connect_timeout=5)
        try:
            return int(await client.call("Foo.Sum", Args(n, 1), timeout=5))
        finally:
            await client.close()

    failures = []
    for start in range(0, count, at_once):
        batch = range(start, min(start + at_once, count))
        outcomes: Any = await DeferredList(
            [Deferred.fromCoroutine(one(n)) for n in batch], consumeErrors=True
        )
        for n, (ok, result) in zip(batch, outcomes, strict=True):
            if not ok:
                failures.append(f"connection {n}: {result.getErrorMessage()!r}")
            elif result != n + 1:
                failures.append(f"connection {n}: got {result}")
    return failures
