"""
The metrics and the debug page of ``twistd geerpc --workers N``, across
the workers.

A scrape (like any connection) reaches one worker.  So that it shows every
worker, each worker also answers on a private UNIX socket,
``DIRECTORY/worker-N.sock``, in a directory the parent made for this run
(mode 0700, removed when it stops): one request line, ``metrics`` or
``debug``, answered with that worker's own Prometheus text (every sample
labelled ``worker="N"``) or its debug page's JSON, then closed.  The worker
answering ``/metrics`` asks every other worker there (``--workers-timeout``
each, at once) and serves the union of all the samples, each with its
``worker`` label, so ``sum without (worker) (...)`` over one scrape is the
whole server's; ``txgeerpc_workers_answered{worker="N"}`` is 1 for each worker
whose samples the scrape holds and 0 for one that did not answer (one being
restarted: its counters start again from 0 when it is back, which Prometheus
treats as a counter reset).  ``/metrics?workers=self`` is the answering
worker's own samples only.  The debug page does the same with
``?workers=all``: a table per worker and their sums (HTML or JSON).  Every
answer says which worker gave it (``X-Geerpc-Worker: N``).

The protocol here is this module's own: both ends are processes of the same
``twistd geerpc``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred, DeferredList, succeed
from twisted.internet.endpoints import UNIXClientEndpoint
from twisted.internet.interfaces import IListeningPort
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.iweb import IRequest
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET
from twisted.web.template import Tag, flattenString, tags

__all__: list[str] = []  # private: used by txgeerpc.tap and txgeerpc._workers

DEFAULT_TIMEOUT = 2.0
"""Seconds one worker has to answer another's request (``--workers-timeout``)."""
MAX_REQUEST = 64
"""Bytes of a request line a worker reads at most (``metrics`` or ``debug``)."""
MAX_ANSWER = 32 * 1024 * 1024
"""Bytes of one worker's answer another takes at most (more: it did not answer)."""
REQUESTS = (b"metrics", b"debug")
WORKER_HEADER = b"x-geerpc-worker"
ANSWERED = "txgeerpc_workers_answered"


def socket_path(directory: str, worker: int) -> str:
    """Where worker ``worker`` answers, in the parent's run directory."""
    return os.path.join(directory, f"worker-{worker}.sock")


# -- a worker answering the others ------------------------------------------------


class _Answer(Protocol):
    """One request line in, the answer out, closed."""

    transport: Any

    def __init__(self, answers: dict[bytes, Callable[[], bytes]]) -> None:
        self._answers = answers
        self._buffer = b""

    def dataReceived(self, data: bytes) -> None:
        self._buffer += data
        line, newline, _ = self._buffer.partition(b"\n")
        if not newline:
            if len(self._buffer) > MAX_REQUEST:
                self.transport.loseConnection()
            return
        answer = self._answers.get(line.strip())
        if answer is not None:
            self.transport.write(answer())
        self.transport.loseConnection()


class StatsService(Service):
    """While running, answers ``metrics`` and ``debug`` on ``path`` (a
    stale file left by a worker of the same number that died is removed
    first: only this worker uses the path).

    :param answers: the answer, made when asked, to each request.
    """

    def __init__(self, reactor: Any, path: str, answers: dict[bytes, Callable[[], bytes]]) -> None:
        self._reactor = reactor
        self.path = path
        self._answers = answers
        self._port: IListeningPort | None = None

    def startService(self) -> None:
        super().startService()
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
        factory = Factory.forProtocol(lambda: _Answer(self._answers))
        factory.noisy = False  # no log line per request
        self._port = self._reactor.listenUNIX(self.path, factory, mode=0o600)

    def stopService(self) -> Deferred[None] | None:
        super().stopService()
        port, self._port = self._port, None
        if port is None:
            return None
        return port.stopListening()  # type: ignore[no-any-return]


# -- asking the others ------------------------------------------------------------


class _Ask(Protocol):
    """Sends one request line; the answer is everything until the close."""

    transport: Any

    def __init__(self, request: bytes) -> None:
        self._request = request
        self._chunks: list[bytes] = []
        self._size = 0
        self.answer: Deferred[bytes | None] = Deferred()

    def connectionMade(self) -> None:
        self.transport.write(self._request + b"\n")

    def dataReceived(self, data: bytes) -> None:
        self._size += len(data)
        if self._size > MAX_ANSWER:
            self._chunks = []
            self.transport.abortConnection()
            return
        self._chunks.append(data)

    def connectionLost(self, reason: Failure | None = None) -> None:
        if not self.answer.called:
            fine = self._size <= MAX_ANSWER and self._chunks
            self.answer.callback(b"".join(self._chunks) if fine else None)


def ask(reactor: Any, path: str, request: bytes, timeout: float) -> Deferred[bytes | None]:
    """The answer of the worker at ``path`` to ``request``; ``None`` when it
    did not answer within ``timeout`` seconds (not running, restarting,
    stuck, or its answer over :data:`MAX_ANSWER`).  Never fails."""
    endpoint = UNIXClientEndpoint(reactor, path, timeout=timeout)
    asking = _Ask(request)
    factory = Factory.forProtocol(lambda: asking)
    factory.noisy = False
    connected = endpoint.connect(factory)

    def connected_to(protocol: _Ask) -> Deferred[bytes | None]:
        answer = protocol.answer

        def too_late(failure: Failure) -> None:
            protocol.transport.abortConnection()
            return None

        answer.addTimeout(timeout, reactor)
        return answer.addErrback(too_late)

    def unreachable(failure: Failure) -> None:
        return None

    answered: Deferred[bytes | None] = connected.addCallbacks(connected_to, unreachable)
    return answered


def gather(
    reactor: Any,
    directory: str,
    count: int,
    me: int,
    request: bytes,
    mine: Callable[[], bytes],
    timeout: float,
) -> Deferred[dict[int, bytes | None]]:
    """Every worker's answer to ``request``, by worker (``None``: it did not
    answer); worker ``me``'s is ``mine()``, made here.  Never fails."""
    workers = list(range(count))
    asked: list[Deferred[bytes | None]] = [
        succeed(mine())
        if worker == me
        else ask(reactor, socket_path(directory, worker), request, timeout)
        for worker in workers
    ]

    def collected(results: list[tuple[bool, Any]]) -> dict[int, bytes | None]:
        return {
            worker: value if ok else None
            for worker, (ok, value) in zip(workers, results, strict=True)
        }

    return DeferredList(asked, consumeErrors=True).addCallback(collected)


# -- the union of the workers' metrics ---------------------------------------------


def merge_metrics(texts: dict[int, bytes | None]) -> bytes:
    """One Prometheus text exposition of every worker's samples (each
    already labelled ``worker="N"``), the families in the order first seen,
    and ``txgeerpc_workers_answered`` saying which workers' samples it holds.
    A worker whose text does not parse counts as not answered."""
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.metrics_core import GaugeMetricFamily, Metric
    from prometheus_client.parser import text_string_to_metric_families

    families: dict[str, Metric] = {}
    answered = GaugeMetricFamily(
        ANSWERED,
        "1 for each worker of twistd geerpc --workers whose samples this scrape holds "
        "(0: it did not answer, e.g. being restarted).",
        labels=["worker"],
    )
    for worker, text in sorted(texts.items()):
        parsed: list[Metric] = []
        if text is not None:
            try:
                parsed = list(text_string_to_metric_families(text.decode("utf-8")))
            except (ValueError, UnicodeDecodeError):
                text = None
        answered.add_metric([str(worker)], 0 if text is None else 1)
        for family in parsed:
            merged = families.get(family.name)
            if merged is None:
                merged = families[family.name] = Metric(
                    family.name, family.documentation, family.type, family.unit
                )
            merged.samples.extend(family.samples)

    class _Union:
        def collect(self) -> Iterator[Metric]:
            yield from families.values()
            yield answered

    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Union())
    return generate_latest(registry)


class WorkersMetrics(Resource):
    """``/metrics`` of a worker: every worker's samples (:func:`merge_metrics`),
    or with ``?workers=self`` this worker's only.

    :param mine: this worker's own exposition (``worker``-labelled).
    """

    isLeaf = True
    _log = Logger()

    def __init__(
        self,
        reactor: Any,
        directory: str,
        worker: dict[str, int],
        mine: Callable[[], bytes],
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        super().__init__()
        self._reactor = reactor
        self._directory = directory
        self._worker = worker
        self._mine = mine
        self._timeout = timeout

    def render_GET(self, request: IRequest) -> Any:
        from prometheus_client import CONTENT_TYPE_LATEST

        request.setHeader(b"content-type", CONTENT_TYPE_LATEST.encode("ascii"))
        request.setHeader(b"cache-control", b"no-store")
        request.setHeader(WORKER_HEADER, str(self._worker["id"]).encode("ascii"))
        scope = request.args.get(b"workers", [b"all"])[-1] if request.args else b"all"
        if scope == b"self":
            return self._mine()
        if scope != b"all":
            request.setResponseCode(400)
            request.setHeader(b"content-type", b"text/plain; charset=utf-8")
            return b"400 workers: use workers=all (the default) or workers=self\n"
        gathered = gather(
            self._reactor,
            self._directory,
            self._worker["count"],
            self._worker["id"],
            b"metrics",
            self._mine,
            self._timeout,
        )
        _finish_with(request, gathered.addCallback(merge_metrics))
        return NOT_DONE_YET


def _finish_with(request: Any, body: Deferred[bytes]) -> None:
    """Write ``body`` once ready and finish (unless the client left)."""
    finished = [False]
    request.notifyFinish().addBoth(lambda _: finished.__setitem__(0, True))

    def write(data: bytes) -> None:
        if not finished[0]:
            request.write(data)
            request.finish()

    def failed(failure: Failure) -> None:
        Logger().failure("txgeerpc: the workers' statistics", failure)
        if not finished[0]:
            request.setResponseCode(500)
            request.write(b"500 internal error\n")
            request.finish()

    body.addCallbacks(write, failed)


# -- the debug page across the workers ----------------------------------------------

_COUNTS = ("calls", "errors", "in_flight", "cancelled", "expired")


def sum_debug(pages: dict[int, bytes | None]) -> dict[str, Any]:
    """The JSON of ``?workers=all``: ``workers`` (each worker's own debug
    JSON, or ``{"worker": {"id": N}, "answered": false}``) and ``sum``: the
    connections, calls and limits, and per method its calls, errors, calls in
    flight, cancelled and expired, added up over the workers that answered
    (latency percentiles do not add up: see each worker's)."""
    workers: list[dict[str, Any]] = []
    methods: dict[tuple[str, str], dict[str, Any]] = {}
    limits: dict[str, int] = {}
    total = {"connections": 0, "calls": 0}
    answered = 0
    for worker, page in sorted(pages.items()):
        data = None
        if page is not None:
            try:
                data = json.loads(page)
            except ValueError:
                data = None
        if not isinstance(data, dict):
            workers.append({"worker": {"id": worker}, "answered": False})
            continue
        answered += 1
        data["answered"] = True
        workers.append(data)
        total["connections"] += int(data.get("connections", 0))
        total["calls"] += int(data.get("calls", 0))
        for key, count in dict(data.get("limits", {})).items():
            limits[key] = limits.get(key, 0) + int(count)
        for service in data.get("services", []):
            for method in service.get("methods", []):
                entry = methods.setdefault(
                    (service["name"], method["name"]),
                    {"name": method["name"], "signature": method.get("signature", "")}
                    | dict.fromkeys(_COUNTS, 0)
                    | {"total_seconds": 0.0},
                )
                for name in _COUNTS:
                    entry[name] += int(method.get(name, 0))
                entry["total_seconds"] += float(method.get("total_seconds", 0.0))
    services: dict[str, list[dict[str, Any]]] = {}
    for (service_name, _), entry in sorted(methods.items()):
        services.setdefault(service_name, []).append(entry)
    return {
        "workers": workers,
        "sum": {
            "workers_answered": answered,
            **total,
            "limits": limits,
            "services": [{"name": name, "methods": entries} for name, entries in services.items()],
        },
    }


def render_workers_html(summed: dict[str, Any], answering: int) -> bytes:
    """The HTML of ``?workers=all``: a row per worker and their sum, and per
    method its calls on each worker and in all (no script, no style but its own)."""
    workers = summed["workers"]
    ids = [str(data["worker"]["id"]) for data in workers]
    total = summed["sum"]

    def cell(value: Any) -> Tag:
        return tags.td(class_="number")(str(value))

    rows = []
    for data in workers:
        worker = data["worker"]
        if not data["answered"]:
            rows.append(
                tags.tr(
                    tags.th(scope="row")(str(worker["id"])), tags.td(colspan="4")("did not answer")
                )
            )
            continue
        rows.append(
            tags.tr(
                tags.th(scope="row")(str(worker["id"])),
                cell(worker.get("pid", "")),
                cell(f"{float(data.get('uptime_seconds', 0.0)):.1f} s"),
                cell(data.get("connections", 0)),
                cell(data.get("calls", 0)),
            )
        )
    rows.append(
        tags.tr(class_="sum")(
            tags.th(scope="row")("sum"),
            tags.td(""),
            tags.td(""),
            cell(total["connections"]),
            cell(total["calls"]),
        )
    )
    workers_table = tags.table(id="workers")(
        tags.caption(f"Workers ({total['workers_answered']} of {len(workers)} answered)"),
        tags.thead(
            tags.tr(
                *(
                    tags.th(scope="col")(h)
                    for h in ("worker", "pid", "uptime", "open connections", "calls")
                )
            )
        ),
        tags.tbody(*rows),
    )
    per_worker: dict[tuple[str, str], dict[str, int]] = {}
    for data in workers:
        for service in data.get("services", []):
            for method in service.get("methods", []):
                key = (service["name"], method["name"])
                per_worker.setdefault(key, {})[str(data["worker"]["id"])] = method["calls"]
    method_rows = []
    for service in total["services"]:
        for method in service["methods"]:
            counts = per_worker.get((service["name"], method["name"]), {})
            method_rows.append(
                tags.tr(
                    tags.th(scope="row")(f"{service['name']}.{method['name']}"),
                    *(cell(counts.get(worker, "—")) for worker in ids),
                    cell(method["calls"]),
                    cell(method["errors"]),
                    cell(method["in_flight"]),
                )
            )
    methods_table = tags.table(id="methods")(
        tags.caption("Calls per method"),
        tags.thead(
            tags.tr(
                tags.th(scope="col")("method"),
                *(tags.th(scope="col")(f"worker {worker}") for worker in ids),
                tags.th(scope="col")("calls (sum)"),
                tags.th(scope="col")("errors (sum)"),
                tags.th(scope="col")("in flight (sum)"),
            )
        ),
        tags.tbody(*method_rows),
    )
    page = tags.html(lang="en")(
        tags.head(
            tags.meta(charset="utf-8"),
            tags.title("txgeerpc workers"),
            tags.style(
                "body { font-family: sans-serif; margin: 1.5em; } "
                "table { border-collapse: collapse; margin-bottom: 1.5em; } "
                "th, td { border: 1px solid #bbb; padding: 0.25em 0.6em; text-align: left; } "
                "td.number { text-align: right; } caption { text-align: left; font-weight: bold; }"
            ),
        ),
        tags.body(
            tags.h1("txgeerpc workers"),
            tags.p(
                f"Answered by worker {answering}; each worker's own page: without ?workers=all."
            ),
            workers_table,
            methods_table,
        ),
    )
    rendered: list[bytes] = []
    flattenString(None, page).addCallback(rendered.append)
    return b"<!DOCTYPE html>\n" + rendered[0]


class WorkersDebug(Resource):
    """The debug page of a worker: with ``?workers=all``, every worker's
    and their sums (:func:`sum_debug`; JSON or HTML as the page chooses);
    without, ``page`` (this worker's own)."""

    isLeaf = True

    def __init__(
        self,
        reactor: Any,
        directory: str,
        worker: dict[str, int],
        page: Resource,
        mine: Callable[[], bytes],
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        super().__init__()
        self._reactor = reactor
        self._directory = directory
        self._worker = worker
        self._page = page
        self._mine = mine
        self._timeout = timeout

    def render(self, request: IRequest) -> Any:
        request.setHeader(WORKER_HEADER, str(self._worker["id"]).encode("ascii"))
        scope = request.args.get(b"workers", []) if request.args else []
        if not scope or request.method not in (b"GET", b"HEAD"):
            return self._page.render(request)
        if scope[-1] != b"all":
            request.setResponseCode(400)
            request.setHeader(b"content-type", b"text/plain; charset=utf-8")
            return b"400 workers: use workers=all\n"
        from .debug import HTML_TYPE, JSON_TYPE, prefers_json

        formats = request.args.get(b"format", []) if request.args else []
        accept = request.getHeader(b"accept")
        as_json = (
            formats[-1] == b"json"
            if formats
            else prefers_json(accept.decode("latin-1") if accept is not None else None)
        )
        request.setHeader(b"cache-control", b"no-store")
        request.setHeader(b"x-content-type-options", b"nosniff")
        request.setHeader(b"vary", b"Accept")
        if as_json:
            request.setHeader(b"content-type", JSON_TYPE)
        else:
            request.setHeader(b"content-type", HTML_TYPE)
            request.setHeader(
                b"content-security-policy",
                b"default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; "
                b"form-action 'none'",
            )
        me = self._worker["id"]

        def render(pages: dict[int, bytes | None]) -> bytes:
            summed = sum_debug(pages)
            if as_json:
                summed["worker"] = dict(self._worker)
                return json.dumps(summed, indent=2).encode("ascii") + b"\n"
            return render_workers_html(summed, me)

        gathered = gather(
            self._reactor,
            self._directory,
            self._worker["count"],
            me,
            b"debug",
            self._mine,
            self._timeout,
        )
        _finish_with(request, gathered.addCallback(render))
        return NOT_DONE_YET


def answers(server: Any, worker: dict[str, int]) -> dict[bytes, Callable[[], bytes]]:
    """What worker ``worker`` of ``server`` answers the others: its own
    metrics (``worker``-labelled; empty without metrics) and debug JSON."""
    from .debug import Snapshot, render_json

    def metrics() -> bytes:
        if server.metrics is None:
            return b""
        from prometheus_client import generate_latest

        from ._workers import WorkerLabelled

        return generate_latest(WorkerLabelled(server.metrics, worker["id"]))

    def debug() -> bytes:
        return render_json(Snapshot.of(server))

    return {b"metrics": metrics, b"debug": debug}


def mount_across(
    reactor: Any,
    root: Resource,
    server: Any,
    worker: dict[str, int],
    directory: str,
    metrics_path: str | None,
    debug_path: str | None,
    timeout: float,
) -> Sequence[Service]:
    """Serve ``metrics_path`` and ``debug_path`` under ``root`` across the
    workers (the debug page already mounted there is kept for a worker's
    own); the :class:`StatsService` to run."""
    from ._web import mount

    own = answers(server, worker)
    if metrics_path is not None and server.metrics is not None:
        mount(
            root, metrics_path, WorkersMetrics(reactor, directory, worker, own[b"metrics"], timeout)
        )
    if debug_path is not None:
        page = root
        for segment in debug_path.strip("/").split("/"):
            page = page.children[segment.encode()]
        mount(
            root,
            debug_path,
            WorkersDebug(reactor, directory, worker, page, own[b"debug"], timeout),
        )
    return [StatsService(reactor, socket_path(directory, worker["id"]), own)]
