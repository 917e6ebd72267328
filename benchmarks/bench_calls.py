#!/usr/bin/env python
"""
Calls per second and latency of txgeerpc, against the ceiling of a raw
Twisted length-prefixed echo carrying the same bytes.

    python benchmarks/bench_calls.py             # full run, about a minute
    python benchmarks/bench_calls.py --quick     # a few seconds (smoke test)
    python benchmarks/bench_calls.py --json out.json
    python benchmarks/bench_calls.py --systems echo,rpc,xclient

Two systems per codec by default, each on one TCP connection to 127.0.0.1:

- ``echo``: :class:`~twisted.protocols.basic.Int32StringReceiver` frames; the
  client sends the exact bytes a txgeerpc call of ``Arith.Multiply
  {"Num1":6,"Num2":7}`` writes (header + body), the server sends the frame
  back, and a call completes when the echo of its frame arrives (frames are
  matched first-in first-out, as TCP keeps them in order).
- ``rpc``: ``client.call("Arith.Multiply", {"Num1": 6, "Num2": 7})`` against a
  :class:`txgeerpc.Server` serving :mod:`txgeerpc.examples`.

Two more on request (``--systems``), reported in a second table against rpc
and echo:

- ``xclient``: the same call through :class:`txgeerpc.xclient.XClient` with a
  :class:`~txgeerpc.discovery.StaticDiscovery` of one address (the rpc
  server's: no extra server process) and :class:`RoundRobinSelect`, dialling
  with ``txgeerpc.connect``: what XClient adds to a plain ``Client.call``;
- ``xclient3``: the same with three addresses, the rpc server and two more
  rpc servers (one connection each; round robin spreads the calls evenly).

Each server runs in its own subprocess (``--serve echo`` / ``--serve rpc``,
which print their port and run until their stdin closes or they get SIGTERM),
so on a 2-core machine client and server each get a core (they are pinned to
one each unless ``--no-pin``).  The client side runs here on the global
reactor.  Each configuration keeps N calls in flight (one completes, the next
is issued), after a warm-up; rounds interleave the systems so slow drift
affects them all.  Neither side sets TCP_NODELAY (txgeerpc does not either).
Other processes' CPU use during the run is measured and reported: on a
2-core machine anything else running makes the numbers meaningless.

Adding a codec (gob) needs nothing here: every codec registered in
``txgeerpc.default_registry`` is measured, or those named by ``--codecs``.
"""

from __future__ import annotations

import argparse
import cProfile
import functools
import json
import operator
import os
import platform
import select
import statistics
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.endpoints import HostnameEndpoint, TCP4ServerEndpoint, connectProtocol
from twisted.internet.protocol import Factory, connectionDone
from twisted.internet.task import react
from twisted.protocols.basic import Int32StringReceiver
from twisted.python.failure import Failure

import twisted
import txgeerpc
from txgeerpc import Header, default_registry
from txgeerpc.discovery import StaticDiscovery
from txgeerpc.selection import RoundRobinSelect
from txgeerpc.xclient import XClient

METHOD = "Arith.Multiply"
ARGUMENT = {"Num1": 6, "Num2": 7}
ARGUMENT_TEXT = json.dumps(ARGUMENT, separators=(",", ":"))
EXPECTED = 42
MAX_FRAME = 4 * 1024 * 1024  # the echo's explicit MAX_LENGTH (= txgeerpc's default limit)

SYSTEMS = ("echo", "rpc", "xclient", "xclient3", "framed", "framed-zstd")
# Framed-mode systems (docs/protocol.md 13.11): the rpc call on a framed
# connection to the rpc server, with the compression named here (or none).
FRAMED_SYSTEMS: dict[str, str | None] = {"framed": None, "framed-zstd": "zstd"}
DEFAULT_SYSTEMS = ("echo", "rpc")  # the xclient systems add ~50 % to the run each
SERVER_KINDS = ("echo", "rpc")
# XClient systems: how many rpc servers their StaticDiscovery lists.
XCLIENT_SERVERS = {"xclient": 1, "xclient3": 3}
BUSY_WARNING = 0.1  # average cores used by other processes above which the report warns
DEFAULT_IN_FLIGHT = (1, 16, 128)

# Targets from the issue (informational: the exit status is 0 either way).
TARGET_IN_FLIGHT_THROUGHPUT = 128
TARGET_THROUGHPUT_RATIO = 0.3  # rpc calls/s >= 0.3 x echo calls/s at 128 in flight (core issue)
# gob is pure Python on both ends; the gob issue asks for at least 0.2 x echo.
TARGET_THROUGHPUT_RATIO_BY_CODEC = {"application/gob": 0.2, "gob": 0.2}
TARGET_IN_FLIGHT_LATENCY = 1
TARGET_P50_RATIO = 1.3  # rpc p50 <= 1.3 x echo p50 at 1 in flight


def use_payload(size: int) -> None:
    """Measure ``Arith.Echo`` of a ``size``-byte string instead of
    ``Arith.Multiply`` (``--payload``): the large-value path of each codec."""
    global METHOD, ARGUMENT, ARGUMENT_TEXT, EXPECTED
    METHOD = "Arith.Echo"
    ARGUMENT = EXPECTED = "x" * size  # type: ignore[assignment]
    ARGUMENT_TEXT = f'"x" * {size}'


# --------------------------------------------------------------------------- codecs


def short_name(option_name: str) -> str:
    """``application/json`` -> ``json`` (its shortest alias), for tables and flags."""
    aliases = [a for a, name in default_registry.aliases().items() if name == option_name]
    return min(aliases, key=len) if aliases else option_name


def default_codecs() -> list[str]:
    return [short_name(name) for name in default_registry.names()]


def request_bytes(codec: str) -> bytes:
    """The bytes one steady-state txgeerpc call writes: header + body."""
    encoder = default_registry.get(codec).new_encoder()
    # Encode twice: a stateful codec (gob) sends its type definitions only once
    # per connection, so the second message is what every later call carries.
    encoder.encode(Header(METHOD, 1, ""), ARGUMENT)
    return encoder.encode(Header(METHOD, 1, ""), ARGUMENT)


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


# --------------------------------------------------------------------------- servers


def serve(kind: str, cpu: int | None, profile_path: str | None, metrics: bool = True) -> None:
    """Child process: listen on 127.0.0.1, print the port, serve until killed
    (SIGTERM) or until the parent closes our stdin."""
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})
    from twisted.internet import reactor

    factory: Factory
    if kind == "echo":
        factory = Factory.forProtocol(EchoServer)
    elif kind == "rpc":
        from txgeerpc import Server
        from txgeerpc.examples import register_examples

        server = Server(reactor, metrics=metrics)
        register_examples(server)
        factory = server.port_factory()  # what twistd geerpc listens with
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


@dataclass
class ServerProcess:
    kind: str
    process: subprocess.Popen[bytes]
    port: int


def start_server(
    kind: str, cpu: int | None, profile_path: str | None, metrics: bool = True
) -> ServerProcess:
    command = [sys.executable, os.path.abspath(__file__), "--serve", kind]
    if not metrics:
        command.append("--no-metrics")
    if cpu is not None:
        command += ["--cpu", str(cpu)]
    if profile_path:
        command += ["--server-profile", profile_path]
    process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert process.stdout is not None
        ready, _, _ = select.select([process.stdout], [], [], 30)
        line = process.stdout.readline() if ready else b""
        if not line.strip():
            raise RuntimeError(f"the {kind} server did not report its port")
        return ServerProcess(kind, process, int(line))
    except BaseException:
        stop_server(process)
        raise


def stop_server(process: subprocess.Popen[bytes]) -> None:
    """End one child we started, by its PID: EOF on stdin, SIGTERM, then SIGKILL."""
    if process.poll() is None:
        try:
            if process.stdin is not None:
                process.stdin.close()
        except OSError:
            pass
        try:
            process.wait(timeout=5)  # it stops by itself at EOF (and dumps its profile)
        except subprocess.TimeoutExpired:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
    if process.stdout is not None:
        process.stdout.close()


# --------------------------------------------------------------------------- load


@dataclass
class Sample:
    calls: int
    seconds: float
    latencies: list[float]
    server_cpu: float | None = None
    """user+sys seconds the system's server process used over the measurement."""

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
    server_pid: int | None = None


async def connect_echo(reactor: Any, ports: list[int], codec: str) -> Target:
    endpoint = HostnameEndpoint(reactor, "127.0.0.1", ports[0])
    protocol = await connectProtocol(endpoint, EchoClient())
    frame = request_bytes(codec)
    return Target("echo", codec, functools.partial(protocol.call, frame), frame, protocol.close)


async def connect_rpc(reactor: Any, ports: list[int], codec: str, kind: str = "rpc") -> Target:
    framed = kind in FRAMED_SYSTEMS
    client = await txgeerpc.connect(
        reactor,
        f"tcp@127.0.0.1:{ports[0]}",
        codec=codec,
        framed=framed,
        compress=FRAMED_SYSTEMS.get(kind),
    )
    return Target(
        kind, codec, functools.partial(client.call, METHOD, ARGUMENT), EXPECTED, client.close
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

    Busy time from ``/proc/stat`` minus this process's and the servers' own
    CPU time: anything else running (a test suite, a build) distorts the
    numbers, and the report says so.
    """

    def __init__(self, pids: list[int]) -> None:
        self._pids = pids
        self._tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        self._start = self._read()
        self._wall = time.perf_counter()

    def _read(self) -> tuple[float, float] | None:
        try:
            with open("/proc/stat", encoding="ascii") as stat:
                fields = [int(x) for x in stat.readline().split()[1:]]
            # user nice system idle iowait irq softirq steal: busy = all but idle/iowait
            busy = sum(fields[:8]) - fields[3] - fields[4]
            ours = 0
            for pid in [os.getpid(), *self._pids]:
                with open(f"/proc/{pid}/stat", encoding="ascii") as proc:
                    values = proc.read().rsplit(")", 1)[1].split()
                ours += int(values[11]) + int(values[12])  # utime, stime
        except (OSError, ValueError, IndexError):
            return None
        return busy / self._tick, ours / self._tick

    def others(self) -> float | None:
        """Average number of cores busy with other processes since we started."""
        end = self._read()
        wall = time.perf_counter() - self._wall
        if self._start is None or end is None or wall <= 0:
            return None
        busy = end[0] - self._start[0]
        ours = end[1] - self._start[1]
        return max(0.0, busy - ours) / wall


def cpu_text(sample: Sample) -> str:
    if sample.server_cpu is None or not sample.calls:
        return ""
    return f", server CPU {sample.server_cpu / sample.calls * 1e6:.1f} us/call"


def process_cpu(pid: int | None) -> float | None:
    """user+sys CPU seconds process ``pid`` has used (Linux ``/proc``), or ``None``."""
    if pid is None:
        return None
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as proc:
            values = proc.read().rsplit(")", 1)[1].split()
        return (int(values[11]) + int(values[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


# --------------------------------------------------------------------------- results


def percentile(ordered: list[float], p: float) -> float:
    """Nearest-rank percentile of a sorted list."""
    if not ordered:
        return float("nan")
    rank = max(1, -(-len(ordered) * p // 100))  # ceil(n * p / 100)
    return ordered[int(rank) - 1]


def summarize(target: Target, in_flight: int) -> dict[str, Any]:
    samples = target.samples[in_flight]
    pooled = sorted(latency for sample in samples for latency in sample.latencies)
    rates = [sample.rate for sample in samples]
    cpu = [sample.server_cpu for sample in samples]
    calls = sum(sample.calls for sample in samples)
    return {
        "system": target.kind,
        "codec": target.codec,
        "in_flight": in_flight,
        "calls_per_s": statistics.median(rates),
        "calls_per_s_rounds": rates,
        "calls": sum(sample.calls for sample in samples),
        "seconds": sum(sample.seconds for sample in samples),
        "p50_us": percentile(pooled, 50) * 1e6,
        "p99_us": percentile(pooled, 99) * 1e6,
        # user+sys of the server process over the windows / the calls completed in them
        "server_cpu_us": (
            sum(c for c in cpu if c is not None) / calls * 1e6
            if calls and None not in cpu
            else None
        ),
    }


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


def verdicts(ratio_rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for row in ratio_rows:
        throughput = TARGET_THROUGHPUT_RATIO_BY_CODEC.get(row["codec"], TARGET_THROUGHPUT_RATIO)
        # (in flight, ratio key, metric, target text, passes?)
        targets: list[tuple[int, str, str, str, Callable[[float], bool]]] = [
            (
                TARGET_IN_FLIGHT_THROUGHPUT,
                "throughput_ratio",
                "rpc calls/s / echo calls/s",
                f">= {throughput}",
                functools.partial(operator.le, throughput),  # throughput <= v
            ),
            (
                TARGET_IN_FLIGHT_LATENCY,
                "p50_ratio",
                "rpc p50 / echo p50",
                f"<= {TARGET_P50_RATIO}",
                lambda v: v <= TARGET_P50_RATIO,
            ),
        ]
        for in_flight, key, metric, target, passes in targets:
            if row["in_flight"] == in_flight:
                value = row[key]
                out.append(
                    {
                        "codec": row["codec"],
                        "in_flight": in_flight,
                        "metric": metric,
                        "value": value,
                        "target": target,
                        "pass": passes(value),
                    }
                )
    return out


def render(report: dict[str, Any]) -> str:
    meta = report["meta"]
    by_key = {(r["system"], r["codec"], r["in_flight"]): r for r in report["results"]}
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
        f"{'echo p99':>9} {'rpc p99':>9} {'echo cpu':>8} {'rpc cpu':>8}"
    )
    lines += [
        header,
        f"{'':<6} {'':>9} {'':>13} {'':>12} {'':>8} {'(us)':>9} {'(us)':>9} "
        f"{'':>8} {'(us)':>9} {'(us)':>9} {'us/call':>8} {'us/call':>8}",
        "-" * len(header),
    ]

    def num(row: dict[str, Any] | None, key: str, fmt: str) -> str:
        return format(row[key], fmt) if row is not None and row.get(key) is not None else "-"

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
                f"{num(echo, 'p99_us', '.1f'):>9} {num(rpc, 'p99_us', '.1f'):>9} "
                f"{num(echo, 'server_cpu_us', '.1f'):>8} {num(rpc, 'server_cpu_us', '.1f'):>8}"
            )
    if not any(r["system"] in ("echo", "rpc") for r in report["results"]):
        del lines[table_start:]  # only XClient systems measured: no echo/rpc table
    lines += render_xclient(report)
    if other is not None and other > BUSY_WARNING:
        lines += [
            "",
            f"WARNING: other processes kept {other:.2f} CPU busy during the run "
            "(2-core machine): these numbers are disturbed; rerun on a quiet machine.",
        ]
    if report["targets"]:
        lines += ["", "Targets (informational):"]
        for verdict in report["targets"]:
            lines.append(
                f"  {verdict['codec']:<5} {verdict['in_flight']:>4} in flight  "
                f"{verdict['metric']:<26} = {verdict['value']:.2f}  "
                f"(target {verdict['target']})  {'PASS' if verdict['pass'] else 'SHORT'}"
            )
    return "\n".join(lines)


def render_xclient(report: dict[str, Any]) -> list[str]:
    """The XClient systems' table (no lines when none was measured)."""
    rows = report.get("xclient_ratios") or []
    if not rows:
        return []
    by_key = {(r["system"], r["codec"], r["in_flight"]): r for r in report["results"]}
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
        f"{'p50 (us)':>9} {'/rpc':>5} {'/echo':>5} {'p99 (us)':>9} {'/rpc':>5} {'cpu us':>6}"
    )
    lines += [header, "-" * len(header)]

    def ratio(row: dict[str, Any], key: str) -> str:
        value = row[key]
        return "-" if value is None else f"{value:.2f}"

    for row in rows:
        result = by_key[(row["system"], row["codec"], row["in_flight"])]
        cpu = "-" if result.get("server_cpu_us") is None else f"{result['server_cpu_us']:.1f}"
        lines.append(
            f"{row['codec']:<6} {row['in_flight']:>9} {row['system']:<8} "
            f"{result['calls_per_s']:>9,.0f} {ratio(row, 'throughput_ratio_rpc'):>5} "
            f"{ratio(row, 'throughput_ratio_echo'):>5} {result['p50_us']:>9.1f} "
            f"{ratio(row, 'p50_ratio_rpc'):>5} {ratio(row, 'p50_ratio_echo'):>5} "
            f"{result['p99_us']:>9.1f} {ratio(row, 'p99_ratio_rpc'):>5} {cpu:>6}"
        )
    return lines


# --------------------------------------------------------------------------- main


async def connect_system(reactor: Any, kind: str, ports: list[int], codec: str) -> Target:
    if kind == "echo":
        return await connect_echo(reactor, ports, codec)
    if kind == "rpc" or kind in FRAMED_SYSTEMS:
        return await connect_rpc(reactor, ports, codec, kind)
    return await connect_xclient(reactor, ports, codec, kind)


async def run(reactor: Any, args: argparse.Namespace, servers: list[ServerProcess]) -> None:
    ports: dict[str, list[int]] = {}
    pids: dict[str, list[int]] = {}
    for server in servers:
        ports.setdefault(server.kind, []).append(server.port)
        pids.setdefault(server.kind, []).append(server.process.pid)
    targets: list[Target] = []
    try:
        for codec in args.codecs:
            for kind in args.systems:
                server_kind = "echo" if kind == "echo" else "rpc"
                target = await connect_system(reactor, kind, ports[server_kind], codec)
                # (xclient3's calls are spread over three servers: not one process's CPU)
                target.server_pid = pids[server_kind][0] if kind != "xclient3" else None
                targets.append(target)
                result = await target.call()
                if result != target.expected:
                    raise RuntimeError(f"{kind}/{codec}: got {result!r}, expected {EXPECTED!r}")
        profilers: dict[tuple[str, str, int], cProfile.Profile] = {}
        monitor = CpuMonitor([server.process.pid for server in servers])
        total = args.rounds * len(args.in_flight) * len(targets)
        step = 0
        for round_number in range(args.rounds):
            for in_flight in args.in_flight:
                for target in targets:
                    step += 1
                    await drive(target.call, in_flight, count=args.warmup)
                    profiler = None
                    if args.profile:
                        key = (target.kind, target.codec, in_flight)
                        profiler = profilers.setdefault(key, cProfile.Profile())
                        profiler.enable()
                    cpu_before = process_cpu(target.server_pid)
                    sample = await drive(target.call, in_flight, duration=args.duration)
                    cpu_after = process_cpu(target.server_pid)
                    if cpu_before is not None and cpu_after is not None:
                        sample.server_cpu = cpu_after - cpu_before
                    if profiler is not None:
                        profiler.disable()
                    target.samples.setdefault(in_flight, []).append(sample)
                    if not args.no_progress:
                        sys.stderr.write(
                            f"[{step}/{total}] round {round_number + 1} {target.kind:<8} "
                            f"{target.codec:<5} {in_flight:>3} in flight: "
                            f"{sample.rate:>9,.0f} calls/s{cpu_text(sample)}\n"
                        )
        for (kind, codec, in_flight), profiler in profilers.items():
            name = f"client-{kind}-{codec}-{in_flight}.pstats"
            profiler.dump_stats(os.path.join(args.profile, name))
        other_load = monitor.others()
    finally:
        for target in targets:
            await target.close()

    results = [summarize(t, n) for t in targets for n in args.in_flight]
    ratio_rows = ratios(results, args.codecs)
    xclient_rows = xclient_ratios(results, args.codecs)
    report = {
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
            "pinning": args.pinning,
            "codecs": args.codecs,
            "systems": args.systems,
            "servers": [server.kind for server in servers],
            "in_flight": args.in_flight,
            "rounds": args.rounds,
            "duration_s": args.duration,
            "warmup_calls": args.warmup,
            "payload_bytes": args.payload,
            "request_bytes": {codec: len(request_bytes(codec)) for codec in args.codecs},
            "command": " ".join(["python", *sys.argv]),
            "other_cpu_load": other_load,
        },
        "results": results,
        "ratios": ratio_rows,
        "xclient_ratios": xclient_rows,
        "targets": verdicts(ratio_rows),
    }
    print(render(report))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as out:
            json.dump(report, out, indent=2)
            out.write("\n")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="txgeerpc calls/s and latency against a raw Twisted echo ceiling."
    )
    parser.add_argument("--quick", action="store_true", help="tiny counts: a few seconds in all")
    parser.add_argument("--duration", type=float, help="seconds per measurement (1.5; quick 0.2)")
    parser.add_argument("--rounds", type=int, help="measurements per configuration (3; quick 1)")
    parser.add_argument("--warmup", type=int, help="warm-up calls before each (1000; quick 200)")
    parser.add_argument(
        "--in-flight", help="comma-separated concurrencies (default 1,16,128)", default=None
    )
    parser.add_argument(
        "--codecs",
        help=f"comma-separated codecs (default: all registered: {','.join(default_codecs())})",
    )
    parser.add_argument(
        "--systems",
        default=",".join(DEFAULT_SYSTEMS),
        help=f"comma-separated, of {','.join(SYSTEMS)} (default {','.join(DEFAULT_SYSTEMS)}); "
        "the xclient systems call the rpc server(s) through txgeerpc.xclient.XClient",
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
    parser.add_argument("--serve", choices=SERVER_KINDS, help=argparse.SUPPRESS)
    parser.add_argument("--cpu", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--server-profile", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        return args
    if args.payload < 0:
        parser.error("--payload must not be negative")
    if args.payload:
        use_payload(args.payload)
    args.duration = args.duration or (0.2 if args.quick else 1.5)
    args.rounds = args.rounds or (1 if args.quick else 3)
    args.warmup = args.warmup if args.warmup is not None else (200 if args.quick else 1000)
    args.in_flight = (
        [int(n) for n in args.in_flight.split(",")] if args.in_flight else list(DEFAULT_IN_FLIGHT)
    )
    if any(n < 1 for n in args.in_flight):
        parser.error("--in-flight values must be positive")
    codecs = args.codecs.split(",") if args.codecs else default_codecs()
    try:
        args.codecs = [short_name(default_registry.get(c.strip()).name) for c in codecs]
    except txgeerpc.errors.UnsupportedCodec as error:
        parser.error(f"unknown codec: {error}")
    args.systems = list(dict.fromkeys(s.strip() for s in args.systems.split(",")))
    if not set(args.systems) <= set(SYSTEMS):
        parser.error(f"--systems takes {','.join(SYSTEMS)}")
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
        serve(args.serve, args.cpu, args.server_profile, not args.no_metrics)
        return
    if args.compression_table:
        compression_table(args)
        return
    if args.payload:
        METHOD, ARGUMENT = "Arith.Echo", "x" * args.payload
        ARGUMENT_TEXT, EXPECTED = f'"x" * {args.payload}', ARGUMENT
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    pin = not args.no_pin and len(cpus) >= 2
    client_cpu, server_cpu = (cpus[0], cpus[1]) if pin else (None, None)
    args.pinning = (
        f"client pinned to CPU {client_cpu}, servers to CPU {server_cpu}" if pin else "not pinned"
    )
    if args.profile:
        os.makedirs(args.profile, exist_ok=True)
    # One rpc server for rpc and xclient (the same process: XClient's cost is
    # measured against the same server), two more for xclient3.
    wanted: list[str] = []
    if "echo" in args.systems:
        wanted.append("echo")
    rpc_servers = max(
        [
            1 if kind == "rpc" or kind in FRAMED_SYSTEMS else XCLIENT_SERVERS.get(kind, 0)
            for kind in args.systems
        ]
    )
    wanted += ["rpc"] * rpc_servers
    servers: list[ServerProcess] = []
    try:
        for index, kind in enumerate(wanted):
            nth = wanted[:index].count(kind)
            name = f"server-{kind}{f'-{nth + 1}' if nth else ''}.pstats"
            profile_path = os.path.join(args.profile, name) if args.profile else None
            servers.append(start_server(kind, server_cpu, profile_path, not args.no_metrics))
        if client_cpu is not None:
            os.sched_setaffinity(0, {client_cpu})

        def start(reactor: Any) -> Deferred[None]:
            coroutine: Coroutine[Any, Any, None] = run(reactor, args, servers)
            return ensureDeferred(coroutine)

        react(start)
    finally:
        for server in servers:
            stop_server(server.process)


if __name__ == "__main__":
    main()
