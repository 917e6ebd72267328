#!/usr/bin/env python
"""
Requests per second and watch latency of :class:`txgeerpc.etcd.EtcdClient`
against a real one-member etcd, each against bare ``treq`` doing the same
HTTP in the same run.

    python benchmarks/bench_etcd.py                 # full run, about 40 s
    python benchmarks/bench_etcd.py --quick         # a few seconds (smoke test)
    python benchmarks/bench_etcd.py --json out.json

It starts its own etcd (``tests/_etcd.py``'s :class:`EtcdCluster`, one
member on free 127.0.0.1 ports, stopped in a ``finally``), then on the global
reactor measures:

1. **Unary requests**: ``get`` (one key), ``put`` (one key) and
   ``keep_alive`` (one lease) with N in flight (as one completes the next is
   issued), through ``EtcdClient`` (system ``client``) and through bare
   ``treq`` (system ``treq``): a :class:`treq.client.HTTPClient` over an
   :class:`~twisted.web.client.HTTPConnectionPool` built like the client's
   (``persistent=True``, default ``maxPersistentPerHost``), posting the same
   JSON to ``/v3/kv/range``, ``/v3/kv/put``, ``/v3/lease/keepalive`` and
   reading the JSON answer with plain Deferred callbacks.  Reported:
   requests/s, p50/p99 latency, and client ÷ treq.
2. **Watch latency**: one put at a time under a watched prefix; for each put
   the time from the put's answer (its Deferred firing) to its event reaching
   the listener.  Systems: ``client`` (``EtcdClient.put`` +
   ``watch_prefix``), ``treq-watch`` (bare treq put + a bare streamed
   ``POST /v3/watch``, split into lines and ``json.loads``), and
   ``treq-rtt`` (bare treq put, then a second request/answer, a range: the
   cost of asking again instead of being told).  An event can arrive before
   the put's answer; then its latency is negative (counted and reported).

On a machine with two or more CPUs etcd is started pinned to the second CPU
(so Go sees one: GOMAXPROCS=1) and this process is pinned to the first
(``--no-pin`` to disable), as ``bench_calls.py`` pins its servers.  Other
processes' CPU use during the run is measured and reported.
"""

from __future__ import annotations

import argparse
import base64
import cProfile
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
for path in (str(HERE), str(ROOT)):  # bench_calls' helpers; tests._etcd
    if path not in sys.path:
        sys.path.insert(0, path)

import treq  # noqa: E402
from bench_calls import CpuMonitor, Sample, drive, percentile, source_revision  # noqa: E402
from treq.client import HTTPClient  # noqa: E402
from twisted.internet.defer import Deferred, ensureDeferred  # noqa: E402
from twisted.internet.protocol import Protocol  # noqa: E402
from twisted.internet.task import react  # noqa: E402
from twisted.python.failure import Failure  # noqa: E402
from twisted.web.client import Agent, HTTPConnectionPool  # noqa: E402
from twisted.web.http_headers import Headers  # noqa: E402

import twisted  # noqa: E402
import txgeerpc  # noqa: E402
from tests._etcd import EtcdCluster  # noqa: E402
from txgeerpc.etcd import EtcdClient, KeyValue, WatchEvent  # noqa: E402

OPERATIONS = ("get", "put", "keep_alive")
UNARY_SYSTEMS = ("treq", "client")
WATCH_SYSTEMS = ("client", "treq-watch", "treq-rtt")
DEFAULT_IN_FLIGHT = (1, 16)
BUSY_WARNING = 0.1  # average cores used by other processes above which the report warns

GET_KEY = b"bench/get"
GET_VALUE = b"v" * 64
PUT_KEY = b"bench/put"
PUT_VALUE = b"p" * 64
WATCH_PREFIX = b"bench/watch/"
WATCH_VALUE = b"w" * 64
LEASE_TTL = 600
JSON_HEADERS = Headers({b"Content-Type": [b"application/json"]})


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def prefix_end(prefix: bytes) -> bytes:
    return prefix[:-1] + bytes([prefix[-1] + 1])


# --------------------------------------------------------------------------- bare treq


def _json(data: bytes) -> Any:
    return json.loads(data)


class BareEtcd:
    """The gateway's JSON over bare treq: one :class:`HTTPClient` over a
    persistent pool, plain Deferred callbacks, no fail-over or timeouts."""

    def __init__(self, reactor: Any, url: str) -> None:
        self.url = url
        self.pool = HTTPConnectionPool(reactor, persistent=True)
        self.http = HTTPClient(Agent(reactor, pool=self.pool))

    def post(self, path: str, body: dict[str, Any]) -> Deferred[dict[str, Any]]:
        d = self.http.post(self.url + path, data=json.dumps(body).encode(), headers=JSON_HEADERS)
        return d.addCallback(self._content)

    @staticmethod
    def _content(response: Any) -> Deferred[dict[str, Any]]:
        if response.code != 200:
            raise RuntimeError(f"etcd answered HTTP {response.code}")
        d: Deferred[dict[str, Any]] = treq.content(response).addCallback(_json)
        return d

    def get(self, key: bytes) -> Deferred[dict[str, Any]]:
        return self.post("/v3/kv/range", {"key": b64(key)})

    def put(self, key: bytes, value: bytes) -> Deferred[int]:
        d = self.post("/v3/kv/put", {"key": b64(key), "value": b64(value)})
        return d.addCallback(lambda answer: int(answer["header"]["revision"]))

    def keep_alive(self, lease: int) -> Deferred[int]:
        d = self.post("/v3/lease/keepalive", {"ID": str(lease)})
        return d.addCallback(lambda answer: int(answer["result"]["TTL"]))

    def close(self) -> Deferred[None]:
        closed: Deferred[None] = self.pool.closeCachedConnections()
        return closed


class WatchStream(Protocol):
    """A bare streamed ``POST /v3/watch`` answer: calls ``events(revisions)``
    with the mod revisions of each message's events."""

    def __init__(self, events: Callable[[list[int]], None]) -> None:
        self._events = events
        self._partial = b""
        self.created: Deferred[None] = Deferred()
        self.ended: Deferred[None] = Deferred()

    def dataReceived(self, data: bytes) -> None:
        *lines, self._partial = (self._partial + data).split(b"\n")
        for line in lines:
            if not line.strip():
                continue
            result = json.loads(line).get("result") or {}
            if result.get("created") and not self.created.called:
                self.created.callback(None)
            revisions = [int(e["kv"]["mod_revision"]) for e in result.get("events") or ()]
            if revisions:
                self._events(revisions)

    def connectionLost(self, reason: Failure | None = None) -> None:
        if not self.ended.called:
            self.ended.callback(None)

    def stop(self) -> Deferred[None]:
        if self.transport is not None and not self.ended.called:
            self.transport.stopProducing()  # type: ignore[attr-defined]
        return self.ended


# --------------------------------------------------------------------------- unary


@dataclass
class Unary:
    system: str
    operation: str
    call: Callable[[], Deferred[Any]]
    samples: dict[int, list[Sample]] = field(default_factory=dict)
    # (our CPU seconds, etcd's CPU seconds) per measurement, as samples
    cpu: dict[int, list[tuple[float, float]]] = field(default_factory=dict)


class CpuClock:
    """CPU seconds used so far by this process and by etcd (Linux ``/proc``)."""

    def __init__(self, pid: int) -> None:
        self._pid = pid
        self._tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100

    def read(self) -> tuple[float, float]:
        ours = time.process_time()
        try:
            with open(f"/proc/{self._pid}/stat", encoding="ascii") as proc:
                values = proc.read().rsplit(")", 1)[1].split()
            theirs = (int(values[11]) + int(values[12])) / self._tick  # utime, stime
        except (OSError, ValueError, IndexError):
            theirs = float("nan")
        return ours, theirs


async def check_unary(targets: list[Unary]) -> None:
    """One call of each, with its answer checked, before measuring."""
    for target in targets:
        result = await target.call()
        ok = {
            ("client", "get"): lambda r: isinstance(r, KeyValue) and r.value == GET_VALUE,
            ("treq", "get"): lambda r: base64.b64decode(r["kvs"][0]["value"]) == GET_VALUE,
            ("client", "put"): lambda r: isinstance(r, int) and r > 0,
            ("treq", "put"): lambda r: isinstance(r, int) and r > 0,
            ("client", "keep_alive"): lambda r: 0 < r <= LEASE_TTL,
            ("treq", "keep_alive"): lambda r: 0 < r <= LEASE_TTL,
        }[(target.system, target.operation)](result)
        if not ok:
            raise RuntimeError(f"{target.system} {target.operation}: unexpected {result!r}")


def summarize_unary(target: Unary, in_flight: int) -> dict[str, Any]:
    samples = target.samples[in_flight]
    pooled = sorted(latency for sample in samples for latency in sample.latencies)
    rates = [sample.rate for sample in samples]
    requests = sum(sample.calls for sample in samples)
    cpu = target.cpu.get(in_flight, [])
    return {
        "system": target.system,
        "operation": target.operation,
        "in_flight": in_flight,
        "requests_per_s": statistics.median(rates),
        "requests_per_s_rounds": rates,
        "requests": requests,
        "seconds": sum(sample.seconds for sample in samples),
        "p50_us": percentile(pooled, 50) * 1e6,
        "p99_us": percentile(pooled, 99) * 1e6,
        # CPU per completed request (the window's requests still in flight at
        # its end are not counted, so this is a slight overestimate)
        "client_cpu_us": sum(c[0] for c in cpu) / requests * 1e6 if requests else None,
        "etcd_cpu_us": sum(c[1] for c in cpu) / requests * 1e6 if requests else None,
    }


def unary_ratios(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    by_key = {(r["system"], r["operation"], r["in_flight"]): r for r in results}
    out = []
    for operation in OPERATIONS:
        for in_flight in sorted({r["in_flight"] for r in results}):
            client = by_key.get(("client", operation, in_flight))
            bare = by_key.get(("treq", operation, in_flight))
            if client is None or bare is None:
                continue
            out.append(
                {
                    "operation": operation,
                    "in_flight": in_flight,
                    "throughput_ratio": client["requests_per_s"] / bare["requests_per_s"],
                    "p50_ratio": client["p50_us"] / bare["p50_us"],
                    "p99_ratio": client["p99_us"] / bare["p99_us"],
                    "client_cpu_extra_us": client["client_cpu_us"] - bare["client_cpu_us"],
                }
            )
    return out


# --------------------------------------------------------------------------- watch


class PutWatcher:
    """Matches each put's answer with its event, by revision: ``ack`` and
    ``event`` record when each happened; :meth:`both` fires once both did."""

    def __init__(self) -> None:
        self.acked: dict[int, float] = {}
        self.seen: dict[int, float] = {}
        self._waiting: dict[int, Deferred[tuple[float, float]]] = {}

    def event(self, revisions: list[int]) -> None:
        now = time.perf_counter()
        for revision in revisions:
            self.seen[revision] = now
            self._maybe_done(revision)

    def listener(self, events: list[WatchEvent], revision: int) -> None:
        self.event([event.kv.mod_revision for event in events])

    def ack(self, revision: int) -> Deferred[tuple[float, float]]:
        self.acked[revision] = time.perf_counter()
        d: Deferred[tuple[float, float]] = Deferred()
        self._waiting[revision] = d
        self._maybe_done(revision)
        return d

    def _maybe_done(self, revision: int) -> None:
        if revision in self.acked and revision in self.seen and revision in self._waiting:
            self._waiting.pop(revision).callback((self.acked[revision], self.seen[revision]))


@dataclass
class WatchSample:
    """Per put: when it was sent, when its answer came (its Deferred fired),
    and when its event reached the listener (treq-rtt: when the answer to
    the second request came)."""

    system: str
    sent: list[float] = field(default_factory=list)
    acked: list[float] = field(default_factory=list)
    seen: list[float] = field(default_factory=list)
    seconds: float = 0.0


async def timed_out(reactor: Any, d: Deferred[Any], seconds: float, what: str) -> Any:
    d.addTimeout(seconds, reactor)
    try:
        return await d
    except TimeoutError:
        raise RuntimeError(f"{what}: nothing within {seconds:g} s") from None


async def watch_client(
    reactor: Any, client: EtcdClient, puts: int, seconds: float, prefix: bytes
) -> WatchSample:
    watcher = PutWatcher()
    start = await client.put(prefix + b"start", WATCH_VALUE)
    watch = client.watch_prefix(prefix, start + 1, watcher.listener)
    try:
        sample = await put_loop(
            reactor,
            "client",
            lambda key: client.put(key, WATCH_VALUE),
            watcher,
            puts,
            seconds,
            prefix,
            warm=True,
        )
    finally:
        watch.stop()
    return sample


async def watch_bare(
    reactor: Any, bare: BareEtcd, puts: int, seconds: float, prefix: bytes
) -> WatchSample:
    watcher = PutWatcher()
    start = await bare.put(prefix + b"start", WATCH_VALUE)
    request = {
        "create_request": {
            "key": b64(prefix),
            "range_end": b64(prefix_end(prefix)),
            "start_revision": str(start + 1),
        }
    }
    response = await bare.http.post(
        bare.url + "/v3/watch",
        data=json.dumps(request).encode(),
        headers=JSON_HEADERS,
        unbuffered=True,
    )
    stream = WatchStream(watcher.event)
    response.deliverBody(stream)
    try:
        await timed_out(reactor, stream.created, 5, "bare watch created")
        sample = await put_loop(
            reactor,
            "treq-watch",
            lambda key: bare.put(key, WATCH_VALUE),
            watcher,
            puts,
            seconds,
            prefix,
            warm=True,
        )
    finally:
        await stream.stop()
    return sample


async def put_loop(
    reactor: Any,
    system: str,
    put: Callable[[bytes], Deferred[int]],
    watcher: PutWatcher,
    puts: int,
    seconds: float,
    prefix: bytes,
    *,
    warm: bool,
) -> WatchSample:
    """One put at a time until ``puts`` or ``seconds``; each waits for its
    answer and its event.  The first 20 are a warm-up (not recorded)."""
    sample = WatchSample(system)
    clock = time.perf_counter
    warmup = 20 if warm else 0
    started = clock()
    deadline = started + seconds
    n = 0
    while n < puts + warmup and clock() < deadline:
        sent = clock()
        revision = await put(prefix + b"k%d" % (n % 100))
        acked, seen = await timed_out(reactor, watcher.ack(revision), 5, f"{system} event")
        if n >= warmup:
            sample.sent.append(sent)
            sample.acked.append(acked)
            sample.seen.append(seen)
        n += 1
    sample.seconds = clock() - started
    return sample


async def round_trip_bare(
    reactor: Any, bare: BareEtcd, puts: int, seconds: float, prefix: bytes
) -> WatchSample:
    """Put, then ask again (a range of the key): the second round trip."""
    sample = WatchSample("treq-rtt")
    clock = time.perf_counter
    started = clock()
    deadline = started + seconds
    n = 0
    while n < puts + 20 and clock() < deadline:
        key = prefix + b"k%d" % (n % 100)
        sent = clock()
        await bare.put(key, WATCH_VALUE)
        acked = clock()
        answer = await bare.get(key)
        answered = clock()
        if not answer.get("kvs"):
            raise RuntimeError("treq-rtt: the key just put is not there")
        if n >= 20:
            sample.sent.append(sent)
            sample.acked.append(acked)
            sample.seen.append(answered)
        n += 1
    sample.seconds = clock() - started
    return sample


def summarize_watch(sample: WatchSample) -> dict[str, Any]:
    rows = list(zip(sample.sent, sample.acked, sample.seen, strict=True))
    after_ack = sorted(seen - acked for _, acked, seen in rows)
    after_send = sorted(seen - sent for sent, _, seen in rows)
    put = sorted(acked - sent for sent, acked, _ in rows)

    def us(values: list[float], p: float) -> float:
        return percentile(values, p) * 1e6

    return {
        "system": sample.system,
        "puts": len(rows),
        "seconds": sample.seconds,
        # put answered -> event (treq-rtt: -> second answer); negative: before
        "p50_us": us(after_ack, 50),
        "p99_us": us(after_ack, 99),
        "min_us": after_ack[0] * 1e6 if after_ack else float("nan"),
        "max_us": after_ack[-1] * 1e6 if after_ack else float("nan"),
        "before_ack": sum(1 for d in after_ack if d < 0),
        # put sent -> event (treq-rtt: -> second answer)
        "from_send_p50_us": us(after_send, 50),
        "from_send_p99_us": us(after_send, 99),
        # put sent -> put answered
        "put_p50_us": us(put, 50),
        "put_p99_us": us(put, 99),
    }


# --------------------------------------------------------------------------- report


def render(report: dict[str, Any]) -> str:
    meta = report["meta"]
    other = meta["other_cpu_load"]
    load = "?" if other is None else f"{other:.2f}"
    lines = [
        f"txgeerpc {meta['txgeerpc']} ({meta['txgeerpc_revision'] or 'no git'}) etcd benchmark: "
        f"EtcdClient against bare treq, one etcd {meta['etcd']} member on 127.0.0.1",
        f"{meta['pinning']}; {meta['rounds']} round(s) x {meta['seconds']} s per configuration; "
        "requests/s = median of rounds, latency percentiles over every request",
        f"Python {meta['python']}, Twisted {meta['twisted']}, treq {meta['treq']}, "
        f"{meta['reactor']}, {meta['cpus']} CPUs; other processes used {load} CPU meanwhile",
        "",
    ]
    by_key = {(r["system"], r["operation"], r["in_flight"]): r for r in report["unary"]}
    header = (
        f"{'operation':<10} {'in flight':>9} {'treq req/s':>11} {'client req/s':>12} "
        f"{'client/treq':>11} {'treq p50':>9} {'client p50':>10} {'/treq':>5} "
        f"{'treq p99':>9} {'client p99':>10} {'treq CPU':>8} {'client CPU':>10} {'etcd CPU':>8}"
    )
    lines += [
        header,
        f"{'':<10} {'':>9} {'':>11} {'':>12} {'':>11} {'(us)':>9} {'(us)':>10} {'':>5} "
        f"{'(us)':>9} {'(us)':>10} {'(us/req)':>8} {'(us/req)':>10} {'(us/req)':>8}",
        "-" * len(header),
    ]
    for ratio in report["unary_ratios"]:
        key = (ratio["operation"], ratio["in_flight"])
        bare = by_key[("treq", *key)]
        client = by_key[("client", *key)]
        lines.append(
            f"{ratio['operation']:<10} {ratio['in_flight']:>9} "
            f"{bare['requests_per_s']:>11,.0f} {client['requests_per_s']:>12,.0f} "
            f"{ratio['throughput_ratio']:>11.2f} {bare['p50_us']:>9.1f} "
            f"{client['p50_us']:>10.1f} {ratio['p50_ratio']:>5.2f} "
            f"{bare['p99_us']:>9.1f} {client['p99_us']:>10.1f} "
            f"{bare['client_cpu_us']:>8.0f} {client['client_cpu_us']:>10.0f} "
            f"{client['etcd_cpu_us']:>8.0f}"
        )
    lines += [
        "",
        "CPU: this process's (treq, client) and etcd's (during the client's measurement) CPU",
        "time per completed request.",
    ]
    if report["watch"]:
        lines += [
            "",
            "Watch: one put at a time under a watched prefix.  answer->event: from the put's",
            "answer to its event at the listener (negative: the event came first; < answer",
            "counts those); sent->event: from sending the put; put: sent -> answer.  treq-rtt",
            "has no watch: its 'event' is the answer to a second request (a range) sent after",
            "the put's answer.  All in us.",
            "",
        ]
        header = (
            f"{'system':<11} {'puts':>5} {'answer->event':>13} {'':>8} {'< answer':>8} "
            f"{'sent->event':>11} {'':>8} {'put':>8} {'':>8}"
        )
        lines += [
            header,
            f"{'':<11} {'':>5} {'p50':>13} {'p99':>8} {'':>8} {'p50':>11} {'p99':>8} "
            f"{'p50':>8} {'p99':>8}",
            "-" * len(header),
        ]
        for row in report["watch"]:
            lines.append(
                f"{row['system']:<11} {row['puts']:>5} {row['p50_us']:>13.1f} "
                f"{row['p99_us']:>8.1f} {row['before_ack']:>8} "
                f"{row['from_send_p50_us']:>11.1f} {row['from_send_p99_us']:>8.1f} "
                f"{row['put_p50_us']:>8.1f} {row['put_p99_us']:>8.1f}"
            )
    if other is not None and other > BUSY_WARNING:
        lines += [
            "",
            f"WARNING: other processes kept {other:.2f} CPU busy during the run: these numbers "
            "are disturbed; rerun on a quiet machine.",
        ]
    return "\n".join(line.rstrip() for line in lines)


# --------------------------------------------------------------------------- main


async def run(reactor: Any, args: argparse.Namespace, cluster: EtcdCluster) -> None:
    url = cluster.members[0].client_url
    client = EtcdClient(reactor, url)
    bare = BareEtcd(reactor, url)
    try:
        await client.put(GET_KEY, GET_VALUE)
        lease = await client.grant(LEASE_TTL)
        calls: dict[tuple[str, str], Callable[[], Deferred[Any]]] = {
            ("treq", "get"): lambda: bare.get(GET_KEY),
            ("treq", "put"): lambda: bare.put(PUT_KEY, PUT_VALUE),
            ("treq", "keep_alive"): lambda: bare.keep_alive(lease),
            ("client", "get"): lambda: client.get(GET_KEY),
            ("client", "put"): lambda: client.put(PUT_KEY, PUT_VALUE),
            ("client", "keep_alive"): lambda: client.keep_alive(lease),
        }
        targets = [
            Unary(system, operation, calls[(system, operation)])
            for operation in args.operations
            for system in UNARY_SYSTEMS
        ]
        await check_unary(targets)
        monitor = CpuMonitor([member.process.pid for member in cluster.members])
        cpu_clock = CpuClock(cluster.members[0].process.pid)
        profiler = cProfile.Profile() if args.profile else None
        total = args.rounds * len(args.in_flight) * len(targets)
        step = 0
        for round_number in range(args.rounds):
            for in_flight in args.in_flight:
                for target in targets:
                    step += 1
                    await drive(target.call, in_flight, count=args.warmup, duration=0.5)
                    if profiler is not None and target.system == "client":
                        profiler.enable()
                    before = cpu_clock.read()
                    sample = await drive(target.call, in_flight, duration=args.seconds)
                    after = cpu_clock.read()
                    if profiler is not None:
                        profiler.disable()
                    target.samples.setdefault(in_flight, []).append(sample)
                    target.cpu.setdefault(in_flight, []).append(
                        (after[0] - before[0], after[1] - before[1])
                    )
                    if not args.no_progress:
                        sys.stderr.write(
                            f"[{step}/{total}] round {round_number + 1} {target.system:<6} "
                            f"{target.operation:<10} {in_flight:>3} in flight: "
                            f"{sample.rate:>8,.0f} requests/s\n"
                        )
        watch_samples: list[WatchSample] = []
        for system in args.watch:
            prefix = WATCH_PREFIX + system.encode() + b"/"
            watch_seconds = args.seconds * 3
            watched: WatchSample
            if system == "client":
                watched = await watch_client(reactor, client, args.puts, watch_seconds, prefix)
            elif system == "treq-watch":
                watched = await watch_bare(reactor, bare, args.puts, watch_seconds, prefix)
            else:
                watched = await round_trip_bare(reactor, bare, args.puts, watch_seconds, prefix)
            watch_samples.append(watched)
            if not args.no_progress:
                pairs = zip(watched.acked, watched.seen, strict=True)
                delays = [seen - acked for acked, seen in pairs]
                median = statistics.median(delays) * 1e6 if delays else float("nan")
                sys.stderr.write(
                    f"watch {system:<10} {len(delays)} puts in {watched.seconds:.1f} s, "
                    f"answer -> event p50 {median:.1f} us\n"
                )
        other_load = monitor.others()
        if profiler is not None:
            profiler.dump_stats(os.path.join(args.profile, "client-unary.pstats"))
    finally:
        await client.close()
        await bare.close()

    unary = [summarize_unary(t, n) for t in targets for n in args.in_flight]
    report = {
        "meta": {
            "date": time.strftime("%Y-%m-%d"),
            "python": platform.python_version(),
            "implementation": platform.python_implementation(),
            "twisted": twisted.__version__,
            "treq": treq.__version__,
            "txgeerpc": txgeerpc.__version__,
            "txgeerpc_revision": source_revision(),
            "etcd": args.etcd_version,
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "reactor": type(reactor).__name__,
            "pinning": args.pinning,
            "operations": args.operations,
            "in_flight": args.in_flight,
            "rounds": args.rounds,
            "seconds": args.seconds,
            "warmup_requests": args.warmup,
            "watch_systems": args.watch,
            "watch_puts": args.puts,
            "command": " ".join(["python", *sys.argv]),
            "other_cpu_load": other_load,
        },
        "unary": unary,
        "unary_ratios": unary_ratios(unary),
        "watch": [summarize_watch(sample) for sample in watch_samples],
    }
    print(render(report))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as out:
            json.dump(report, out, indent=2)
            out.write("\n")


def etcd_version() -> str:
    import subprocess

    from tests._etcd import etcd_executable

    try:
        out = subprocess.run(
            [etcd_executable(), "--version"], capture_output=True, text=True, timeout=10
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return "?"
    first = out.splitlines()[0] if out else ""
    return first.removeprefix("etcd Version: ").strip() or "?"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="EtcdClient requests/s and watch latency against bare treq, on a real etcd."
    )
    parser.add_argument("--quick", action="store_true", help="tiny counts: a few seconds in all")
    parser.add_argument(
        "--seconds",
        "--duration",
        type=float,
        help="seconds per measurement (1.0; quick 0.2); a watch system gets 3x as a bound",
    )
    parser.add_argument("--rounds", type=int, help="measurements per configuration (3; quick 1)")
    parser.add_argument("--warmup", type=int, help="warm-up requests before each (200; quick 50)")
    parser.add_argument("--in-flight", help="comma-separated concurrencies (default 1,16)")
    parser.add_argument(
        "--operations", default=",".join(OPERATIONS), help=f"of {','.join(OPERATIONS)}"
    )
    parser.add_argument("--puts", type=int, help="puts per watch system (500; quick 100)")
    parser.add_argument(
        "--watch",
        default=",".join(WATCH_SYSTEMS),
        help=f"watch systems, of {','.join(WATCH_SYSTEMS)} ('' for none)",
    )
    parser.add_argument("--json", metavar="PATH", help="also write the numbers as JSON")
    parser.add_argument("--no-pin", action="store_true", help="do not pin etcd/client to CPUs")
    parser.add_argument(
        "--profile",
        metavar="DIR",
        help="cProfile the client's unary measurements into DIR/client-unary.pstats "
        "(slows them down: numbers are not comparable)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no per-measurement lines")
    args = parser.parse_args(argv)
    args.seconds = args.seconds or (0.2 if args.quick else 1.0)
    args.rounds = args.rounds or (1 if args.quick else 3)
    args.warmup = args.warmup if args.warmup is not None else (50 if args.quick else 200)
    args.puts = args.puts or (100 if args.quick else 500)
    args.in_flight = (
        [int(n) for n in args.in_flight.split(",")] if args.in_flight else list(DEFAULT_IN_FLIGHT)
    )
    if any(n < 1 for n in args.in_flight):
        parser.error("--in-flight values must be positive")
    args.operations = [o.strip() for o in args.operations.split(",") if o.strip()]
    if not set(args.operations) <= set(OPERATIONS):
        parser.error(f"--operations takes {','.join(OPERATIONS)}")
    args.watch = [w.strip() for w in args.watch.split(",") if w.strip()]
    if not set(args.watch) <= set(WATCH_SYSTEMS):
        parser.error(f"--watch takes {','.join(WATCH_SYSTEMS)}")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    pin = not args.no_pin and len(cpus) >= 2
    client_cpu, server_cpu = (cpus[0], cpus[1]) if pin else (None, None)
    args.pinning = (
        f"client pinned to CPU {client_cpu}, etcd to CPU {server_cpu}" if pin else "not pinned"
    )
    args.etcd_version = etcd_version()
    if args.profile:
        os.makedirs(args.profile, exist_ok=True)
    cluster: EtcdCluster | None = None
    try:
        # etcd inherits the affinity it starts with (and sizes GOMAXPROCS by it).
        if server_cpu is not None:
            os.sched_setaffinity(0, {server_cpu})
        try:
            cluster = EtcdCluster.start(members=1)
        finally:
            if pin:
                os.sched_setaffinity(0, {client_cpu} if client_cpu is not None else set(cpus))

        def start(reactor: Any) -> Deferred[None]:
            assert cluster is not None
            coroutine: Coroutine[Any, Any, None] = run(reactor, args, cluster)
            return ensureDeferred(coroutine)

        react(start)
    finally:
        if cluster is not None:
            cluster.stop()


if __name__ == "__main__":
    main()
