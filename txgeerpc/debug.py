"""
The debug page: what a :class:`~txgeerpc.Server` serves, and how it is doing.

GeeRPC serves ``/debug/geerpc``: one table per service, each method's Go
signature and call count (docs/protocol.md section 6, vector 07).
:class:`DebugResource` serves the same place with more: uptime, open
connections, and per method its calls, errors, calls in flight and the 50th
and 99th percentile latency of its calls (estimated from the latency
histogram :mod:`txgeerpc.metrics` exports: one source for both), as an HTML page (readable
without scripts) or as JSON (``Accept: application/json`` or
``?format=json``).

Everything a page shows is read from the server at once into a
:class:`Snapshot`; the HTML is rendered from it by :mod:`twisted.web.template`,
which escapes every name and signature.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import attrs
from twisted.web.iweb import IRequest
from twisted.web.resource import Resource
from twisted.web.template import (
    Element,
    Flattenable,
    Tag,
    TagLoader,
    XMLString,
    flattenString,
    renderer,
    tags,
)

from ._admission import (
    BUDGET_WAITS,
    EVICTED_IDLE,
    HANDSHAKE_TIMEOUT,
    HTTP_IDLE_TIMEOUT,
    IDLE_TIMEOUT,
    MESSAGE_TIMEOUT,
    REFUSED_PER_PEER,
    REFUSED_TOTAL,
)
from ._live import (
    SETTING_LABELS,
    Live,
    RateHistory,
    histogram_svg,
    rate_svg,
    read_live,
)
from ._service import Method, Service

if TYPE_CHECKING:
    from .server import Server

HTML_TYPE = b"text/html; charset=utf-8"
JSON_TYPE = b"application/json; charset=utf-8"
_TEXT_TYPE = b"text/plain; charset=utf-8"
# Nothing fetched but the page itself (its refresh), no script but its own
# (the nonce, new for every answer): the page is its own inline style and text.
_HTML_POLICY = (
    "default-src 'none'; style-src 'unsafe-inline'; script-src 'nonce-{nonce}'; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'"
)

DEFAULT_REFRESH = 2.0
"""Seconds between two refreshes of the live page (``?refresh=S``; 0: none)."""

# The page's one script: every `refresh` seconds it fetches the page again
# and swaps in its #live part (no reload; no third-party code).
_REFRESH_SCRIPT = """
(function () {
  var every = Number(document.body.getAttribute("data-refresh")) * 1000;
  var status = document.getElementById("refresh-status");
  var count = 0;
  if (!every) { status.textContent = "not refreshing"; return; }
  function tick() {
    var url = location.pathname + "?format=html";
    fetch(url, {cache: "no-store", headers: {"Accept": "text/html"}})
      .then(function (answer) {
        if (!answer.ok) { throw new Error("HTTP " + answer.status); }
        return answer.text();
      })
      .then(function (text) {
        var fresh = new DOMParser().parseFromString(text, "text/html").getElementById("live");
        var here = document.getElementById("live");
        if (fresh) { if (here) { here.replaceWith(document.importNode(fresh, true)); } }
        count += 1;
        document.body.setAttribute("data-refreshes", String(count));
        status.textContent = "live: refreshed " + new Date().toLocaleTimeString();
      })
      .catch(function (error) { status.textContent = "live: " + error.message + "; retrying"; })
      .then(function () { setTimeout(tick, every); });
  }
  setTimeout(tick, every);
})();
"""


@attrs.frozen
class MethodSnapshot:
    """One method's numbers at one moment.

    :ivar p50_seconds: median latency of its finished calls, estimated from
        its latency histogram (:meth:`txgeerpc.MethodStats.percentile`),
        ``None`` before any call finished (likewise :attr:`p99_seconds`).
    """

    name: str
    signature: str
    calls: int
    errors: int
    in_flight: int
    p50_seconds: float | None
    p99_seconds: float | None
    total_seconds: float
    cancelled: int = 0
    """Calls cancelled by their client (remote cancellation)."""
    expired: int = 0
    """Calls refused unrun: their budget was spent when they arrived."""

    @classmethod
    def of(cls, method: Method) -> MethodSnapshot:
        """Read ``method``'s statistics now."""
        stats = method.stats
        return cls(
            name=method.name,
            signature=method.signature(),
            calls=stats.calls,
            errors=stats.errors,
            in_flight=stats.in_flight,
            p50_seconds=stats.percentile(50),
            p99_seconds=stats.percentile(99),
            total_seconds=stats.total_seconds,
            cancelled=stats.cancelled,
            expired=stats.expired,
        )

    def to_json(self) -> dict[str, Any]:
        """The JSON form (latencies in milliseconds, ``null`` when unknown)."""
        return {
            "name": self.name,
            "signature": self.signature,
            "calls": self.calls,
            "errors": self.errors,
            "in_flight": self.in_flight,
            "p50_ms": _milliseconds(self.p50_seconds),
            "p99_ms": _milliseconds(self.p99_seconds),
            "total_seconds": self.total_seconds,
            "cancelled": self.cancelled,
            "expired": self.expired,
        }


@attrs.frozen
class ServiceSnapshot:
    """One service's methods, sorted by name."""

    name: str
    methods: tuple[MethodSnapshot, ...]

    @classmethod
    def of(cls, service: Service) -> ServiceSnapshot:
        """Read every method of ``service`` now."""
        return cls(
            name=service.name,
            methods=tuple(
                MethodSnapshot.of(service.methods[name]) for name in sorted(service.methods)
            ),
        )

    def to_json(self) -> dict[str, Any]:
        """The JSON form."""
        return {"name": self.name, "methods": [method.to_json() for method in self.methods]}


@attrs.frozen
class Snapshot:
    """Everything the debug page shows, read at one moment.

    :ivar uptime_seconds: time since the server was made, on its clock.
    :ivar connections: RPC connections open.
    :ivar services: the registered services, sorted by name.
    :ivar limits: connections refused or closed by a limit, by kind
        (:attr:`txgeerpc.Server.limit_counts`).
    """

    uptime_seconds: float
    connections: int
    services: tuple[ServiceSnapshot, ...]
    limits: dict[str, int] = attrs.field(factory=dict)
    live: Live | None = None
    """The live parts (connections, running calls, errors...), when read."""
    worker: dict[str, int] | None = None
    """Which worker of ``twistd geerpc --workers N`` answered (``{"id", "pid",
    "count"}``; :attr:`txgeerpc.Server.worker`), ``None`` for a lone process."""

    @classmethod
    def of(cls, server: Server, history: RateHistory | None = None) -> Snapshot:
        """Read ``server`` now (its live parts too, with ``history``, the
        calls-per-second samples to add to and draw)."""
        services = server.services
        return cls(
            uptime_seconds=max(server.clock.seconds() - server.started_at, 0.0),
            connections=server.connections,
            services=tuple(ServiceSnapshot.of(services[name]) for name in sorted(services)),
            limits=server.limit_counts,
            live=read_live(server, history) if history is not None else None,
            worker=server.worker,
        )

    @property
    def calls(self) -> int:
        """Calls of every method of every service."""
        return sum(method.calls for service in self.services for method in service.methods)

    def to_json(self) -> dict[str, Any]:
        """The JSON form: ``{"uptime_seconds", "connections", "calls", "services",
        "limits"}``, and with the live parts ``"server"``,
        ``"open_connections"``, ``"in_flight_calls"``, ``"recent_errors"``,
        ``"registry"``, ``"latency_buckets"`` and ``"calls_per_second"``; and
        ``"worker"`` from a worker of ``twistd geerpc --workers N``."""
        data = {
            "uptime_seconds": self.uptime_seconds,
            "connections": self.connections,
            "calls": self.calls,
            "services": [service.to_json() for service in self.services],
            "limits": dict(self.limits),
        }
        if self.live is not None:
            data.update(self.live.to_json())
        if self.worker is not None:
            data["worker"] = dict(self.worker)
        return data


LIMIT_LABELS = {
    REFUSED_TOTAL: "refused: no room (every connection busy)",
    REFUSED_PER_PEER: "refused: over the per-peer limit",
    EVICTED_IDLE: "idle, closed to make room for a new one",
    HANDSHAKE_TIMEOUT: "closed: no Option or HTTP request in time",
    IDLE_TIMEOUT: "closed: idle after the Option",
    MESSAGE_TIMEOUT: "closed: request not complete in time",
    HTTP_IDLE_TIMEOUT: "closed: HTTP idle between requests",
    BUDGET_WAITS: "requests that waited for the receive budget",
}
"""What the debug page calls each of :attr:`Snapshot.limits`."""


_TEMPLATE = """\
<html xmlns:t="http://twistedmatrix.com/ns/twisted.web.template/0.1" lang="en">
<head>
<meta charset="utf-8" />
<meta name="viewport" content="width=device-width, initial-scale=1" />
<title>txgeerpc services</title>
<style>
body { font-family: sans-serif; margin: 1.5em; }
dl#summary { display: grid; grid-template-columns: max-content auto; gap: 0.2em 1em; }
dt { font-weight: bold; }
dd { margin: 0; }
table.service { border-collapse: collapse; margin-bottom: 1.5em; }
th, td { border: 1px solid #bbb; padding: 0.25em 0.6em; text-align: left; }
td.calls, td.errors, td.in-flight, td.p50, td.p99, td.count { text-align: right; }
table#limits { border-collapse: collapse; margin-bottom: 1.5em; }
caption { text-align: left; font-weight: bold; }
table.live { border-collapse: collapse; margin-bottom: 1.5em; }
td.histogram, td.rate { padding: 0.1em 0.4em; }
td.number { text-align: right; }
td.text { font-family: monospace; white-space: pre-wrap; max-width: 50em; }
p.empty { color: #666; }
#refresh-status { color: #666; font-size: 0.9em; }
</style>
</head>
<body t:render="page"><t:attr name="data-refresh"><t:slot name="refresh" /></t:attr>
<h1>txgeerpc services</h1>
<p id="refresh-status">live: loaded</p>
<p><a href="/">index</a></p>
<main id="live">
<dl id="summary" t:render="summary">
<dt>Uptime</dt>
<dd id="uptime"><t:attr name="data-seconds"><t:slot name="uptime_seconds" /></t:attr><t:slot
name="uptime" /> (<t:slot name="uptime_seconds" /> s)</dd>
<dt>Open connections</dt>
<dd id="connections"><t:slot name="connections" /></dd>
<dt>Total calls</dt>
<dd id="total-calls"><t:slot name="calls" /></dd>
</dl>
<table id="limits">
<caption>Connections refused or closed by a limit</caption>
<tbody>
<tr class="limit" t:render="limits"><t:attr name="data-limit"><t:slot name="key" /></t:attr>
<th scope="row"><t:slot name="label" /></th>
<td class="count"><t:slot name="count" /></td>
</tr>
</tbody>
</table>
<p id="no-services" t:render="no_services">No services are registered.</p>
<section class="service-block" t:render="services">
<h2>Service <t:slot name="service" /></h2>
<table class="service"><t:attr name="data-service"><t:slot name="service" /></t:attr>
<thead>
<tr>
<th scope="col">method</th>
<th scope="col">signature</th>
<th scope="col">calls</th>
<th scope="col">errors</th>
<th scope="col">in flight</th>
<th scope="col">cancelled</th>
<th scope="col">expired</th>
<th scope="col">p50 latency</th>
<th scope="col">p99 latency</th>
<th scope="col">latency histogram</th>
<th scope="col">calls/s</th>
</tr>
</thead>
<tbody>
<tr class="method" t:render="methods"><t:attr name="data-method"><t:slot name="method" /></t:attr>
<th scope="row" class="name"><t:slot name="method" /></th>
<td class="signature"><code><t:slot name="signature" /></code></td>
<td class="calls"><t:slot name="calls" /></td>
<td class="errors"><t:slot name="errors" /></td>
<td class="in-flight"><t:slot name="in_flight" /></td>
<td class="cancelled"><t:slot name="cancelled" /></td>
<td class="expired"><t:slot name="expired" /></td>
<td class="p50"><t:slot name="p50" /></td>
<td class="p99"><t:slot name="p99" /></td>
<td class="histogram"><t:slot name="histogram" /></td>
<td class="rate"><t:attr name="data-rate"><t:slot name="rate_now" /></t:attr><t:slot
name="rate" /></td>
</tr>
</tbody>
</table>
</section>
<p id="note" t:render="note">Calls count every invocation, failed and timed-out ones included.
Latency percentiles are estimated from each method's latency histogram since the server started
(the one <code>/metrics</code> exports).</p>
<t:transparent t:render="live" />
</main>
<script t:render="script"><t:attr name="nonce"><t:slot name="nonce" /></t:attr><t:slot
name="code" /></script>
</body>
</html>
"""


class _Page(Element):
    """The HTML page for one :class:`Snapshot`."""

    loader = XMLString(_TEMPLATE)

    def __init__(self, snapshot: Snapshot, refresh: float = 0.0, nonce: str = "") -> None:
        super().__init__()
        self._snapshot = snapshot
        self._refresh = refresh
        self._nonce = nonce

    @renderer
    def page(self, request: IRequest | None, tag: Tag) -> Flattenable:
        return tag.fillSlots(refresh=f"{self._refresh:g}")

    @renderer
    def script(self, request: IRequest | None, tag: Tag) -> Flattenable:
        if not self._nonce or self._snapshot.live is None:
            return ""
        return tag.fillSlots(nonce=self._nonce, code=_REFRESH_SCRIPT)

    @renderer
    def live(self, request: IRequest | None, tag: Tag) -> Flattenable:
        live = self._snapshot.live
        return "" if live is None else _live_sections(live)

    @renderer
    def summary(self, request: IRequest | None, tag: Tag) -> Flattenable:
        snapshot = self._snapshot
        return tag.fillSlots(
            uptime=human_duration(snapshot.uptime_seconds),
            uptime_seconds=f"{snapshot.uptime_seconds:.1f}",
            connections=str(snapshot.connections),
            calls=str(snapshot.calls),
        )

    @renderer
    def limits(self, request: IRequest | None, tag: Tag) -> Iterator[Flattenable]:
        for key, count in self._snapshot.limits.items():
            yield tag.clone().fillSlots(key=key, label=LIMIT_LABELS.get(key, key), count=str(count))

    @renderer
    def no_services(self, request: IRequest | None, tag: Tag) -> Flattenable:
        return "" if self._snapshot.services else tag

    @renderer
    def services(self, request: IRequest | None, tag: Tag) -> Iterator[Flattenable]:
        for service in self._snapshot.services:
            yield _ServiceBlock(
                TagLoader(tag.clone().fillSlots(service=service.name)), service, self._snapshot.live
            )

    @renderer
    def note(self, request: IRequest | None, tag: Tag) -> Flattenable:
        return tag


class _ServiceBlock(Element):
    """One service's heading and table, from the page's template."""

    def __init__(
        self, loader: TagLoader, service: ServiceSnapshot, live: Live | None = None
    ) -> None:
        super().__init__(loader)
        self._service = service
        self._live = live

    @renderer
    def methods(self, request: IRequest | None, tag: Tag) -> Iterator[Flattenable]:
        live = self._live
        for method in self._service.methods:
            key = f"{self._service.name}.{method.name}"
            buckets = live.buckets.get(key) if live is not None else None
            rates = live.rates.get(key, ()) if live is not None else ()
            yield tag.clone().fillSlots(
                # No call finished yet: no histogram to draw (and ~25 tags less to flatten).
                histogram=histogram_svg(buckets) if buckets is not None and any(buckets) else "",
                rate=rate_svg(rates) if live is not None else "",
                rate_now=f"{rates[-1]:.1f}" if rates else "",
                method=method.name,
                signature=method.signature,
                calls=str(method.calls),
                errors=str(method.errors),
                in_flight=str(method.in_flight),
                cancelled=str(method.cancelled),
                expired=str(method.expired),
                p50=format_latency(method.p50_seconds),
                p99=format_latency(method.p99_seconds),
            )


def render_html(snapshot: Snapshot, *, refresh: float = 0.0, nonce: str = "") -> bytes:
    """The page for ``snapshot``, as UTF-8 HTML (doctype included).

    :param refresh: seconds between the page's own refreshes (0: none).
    :param nonce: the script nonce of the answer's Content-Security-Policy;
        without one (or without the live parts) the page has no script.
    :raises Exception: a template or renderer error.
    """
    rendered: list[bytes] = []
    failures: list[Any] = []
    flattenString(None, _Page(snapshot, refresh, nonce)).addCallbacks(
        rendered.append, failures.append
    )
    if failures:
        failures[0].raiseException()
    if not rendered:  # every renderer above is synchronous
        raise RuntimeError("the debug page did not render synchronously")
    return b"<!DOCTYPE html>\n" + rendered[0]


def render_json(snapshot: Snapshot) -> bytes:
    """``snapshot`` as UTF-8 JSON (ASCII-only, so any name is safe in it)."""
    return json.dumps(snapshot.to_json(), indent=2).encode("ascii") + b"\n"


def human_duration(seconds: float) -> str:
    """``1d 02h 03m 04s``, ``5m 00s``, ``7s``: whole seconds, largest unit first."""
    whole = int(max(seconds, 0.0))
    minutes, secs = divmod(whole, 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    if days:
        return f"{days}d {hours:02d}h {minutes:02d}m {secs:02d}s"
    if hours:
        return f"{hours}h {minutes:02d}m {secs:02d}s"
    if minutes:
        return f"{minutes}m {secs:02d}s"
    return f"{secs}s"


def format_latency(seconds: float | None) -> str:
    """A latency in milliseconds with three significant-ish digits
    (``0.042 ms``, ``3.14 ms``, ``250 ms``), or ``—`` when unknown."""
    if seconds is None:
        return "—"
    ms = seconds * 1000.0
    if ms >= 100.0:
        return f"{ms:.0f} ms"
    if ms >= 10.0:
        return f"{ms:.1f} ms"
    if ms >= 1.0:
        return f"{ms:.2f} ms"
    return f"{ms:.3f} ms"


def _milliseconds(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1000.0


def _media_ranges(accept: str) -> Iterator[tuple[str, float]]:
    """The ``(type/subtype, q)`` pairs of an Accept header (malformed ones skipped)."""
    for item in accept.split(","):
        media, *parameters = (part.strip() for part in item.split(";"))
        if media.count("/") != 1:
            continue
        quality = 1.0
        for parameter in parameters:
            key, _, value = parameter.partition("=")
            if key.strip().lower() == "q":
                try:
                    quality = float(value.strip())
                except ValueError:
                    quality = -1.0
        if 0.0 <= quality <= 1.0:
            yield media.lower(), quality


def _acceptance(ranges: list[tuple[str, float]], media: str) -> tuple[float, int]:
    """How much ``media`` is accepted: ``(q, specificity)`` of the most
    specific range matching it (``(0, -1)``: not at all)."""
    kind = media.split("/")[0]
    best = (0.0, -1)
    for candidate, quality in ranges:
        if candidate == media:
            specificity = 2
        elif candidate == f"{kind}/*":
            specificity = 1
        elif candidate == "*/*":
            specificity = 0
        else:
            continue
        if specificity > best[1]:
            best = (quality, specificity)
    return best


def prefers_json(accept: str | None) -> bool:
    """Whether an Accept header prefers ``application/json`` to ``text/html``:
    a higher q, or the same non-zero q through a more specific range
    (``application/json, */*``).  HTML wins every other tie and when there is
    no header (browsers list ``text/html`` first)."""
    if not accept:
        return False
    ranges = list(_media_ranges(accept))
    json_q, json_specificity = _acceptance(ranges, "application/json")
    html_q, html_specificity = _acceptance(ranges, "text/html")
    if json_q != html_q:
        return json_q > html_q
    return json_q > 0.0 and json_specificity > html_specificity


class DebugResource(Resource):
    """The debug page of a :class:`~txgeerpc.Server` (mounted at
    ``/debug/geerpc`` by :meth:`~txgeerpc.Server.port_factory`).

    ``GET`` and ``HEAD`` answer HTML (``text/html; charset=utf-8``) or, for
    ``?format=json`` or an ``Accept`` header preferring
    ``application/json``, JSON (``application/json; charset=utf-8``)::

        {"uptime_seconds": 12.5, "connections": 1, "calls": 3,
         "services": [{"name": "Foo", "methods": [{"name": "Sum",
           "signature": "Sum(Args) -> int", "calls": 1, "errors": 0,
           "in_flight": 0, "p50_ms": 0.01, "p99_ms": 0.01,
           "total_seconds": 1e-05}]}],
         "limits": {"refused_max_connections": 0, "refused_per_peer": 0,
           "evicted_idle": 0, "handshake_timeout": 0, "idle_timeout": 0,
           "message_timeout": 0, "http_idle_timeout": 0,
           "receive_budget_waits": 0}}

    Services and methods are sorted by name; latencies are ``null`` before a
    method's first call finishes.  Other methods get ``405``, paths below
    this one ``404``, a ``format`` other than ``json`` or ``html`` ``400``.

    With the live parts (every page since the live page): the JSON also has
    ``server`` (version, addresses, settings), ``open_connections``,
    ``in_flight_calls``, ``recent_errors``, ``registry`` (``null`` with no
    embedded registry), ``latency_buckets`` (``le_seconds`` and per
    ``Service.Method`` the counts) and ``calls_per_second`` (per method, the
    rates between the last samples, oldest first).  The HTML page refreshes
    itself every ``?refresh=S`` seconds (default 2, ``0``: never) with a
    small inline script allowed by its Content-Security-Policy's nonce.

    :param server: the server to describe; read afresh on every request.
    """

    isLeaf = True

    def __init__(self, server: Server) -> None:
        super().__init__()
        self._server = server
        self._history = RateHistory()

    def render(self, request: IRequest) -> bytes:
        """``GET`` and ``HEAD`` as below; ``405`` with ``Allow: GET, HEAD``
        for every other method (twisted.web would answer ``501`` to the
        methods it does not know)."""
        if request.method not in (b"GET", b"HEAD"):
            request.setHeader(b"allow", b"GET, HEAD")
            return _plain(request, 405, b"405 method not allowed\n")
        result: bytes = super().render(request)
        return result

    def render_GET(self, request: IRequest) -> bytes:
        """The page (its body)."""
        return self._respond(request)

    def render_HEAD(self, request: IRequest) -> bytes:
        """The page's headers, its ``Content-Length`` included, and no body."""
        body = self._respond(request)
        request.setHeader(b"content-length", b"%d" % len(body))
        return b""

    def _respond(self, request: IRequest) -> bytes:
        request.setHeader(b"cache-control", b"no-store")
        request.setHeader(b"x-content-type-options", b"nosniff")
        if request.postpath not in ([], [b""]):  # type: ignore[attr-defined]
            return _plain(request, 404, b"404 page not found\n")
        formats = request.args.get(b"format", []) if request.args else []
        if formats:
            wanted = formats[-1]
            if wanted not in (b"json", b"html"):
                return _plain(request, 400, b"400 unknown format: use format=json or format=html\n")
            as_json = wanted == b"json"
        else:
            request.setHeader(b"vary", b"Accept")
            accept = request.getHeader(b"accept")
            as_json = prefers_json(accept.decode("latin-1") if accept is not None else None)
        refreshes = request.args.get(b"refresh", []) if request.args else []
        refresh = DEFAULT_REFRESH
        if refreshes:
            try:
                refresh = float(refreshes[-1])
            except ValueError:
                refresh = -1.0
            if not 0.0 <= refresh <= 3600.0:
                return _plain(request, 400, b"400 refresh: seconds from 0 to 3600\n")
        snapshot = Snapshot.of(self._server, self._history)
        if as_json:
            request.setHeader(b"content-type", JSON_TYPE)
            return render_json(snapshot)
        nonce = secrets.token_urlsafe(16)
        request.setHeader(b"content-type", HTML_TYPE)
        request.setHeader(
            b"content-security-policy", _HTML_POLICY.format(nonce=nonce).encode("ascii")
        )
        return render_html(snapshot, refresh=refresh, nonce=nonce)


def _plain(request: IRequest, code: int, text: bytes) -> bytes:
    request.setResponseCode(code)
    request.setHeader(b"content-type", _TEXT_TYPE)
    return text


__all__ = [
    "DEFAULT_REFRESH",
    "LIMIT_LABELS",
    "DebugResource",
    "MethodSnapshot",
    "ServiceSnapshot",
    "Snapshot",
    "format_latency",
    "human_duration",
    "prefers_json",
    "render_html",
    "render_json",
]


def _table(
    id: str, caption: str, headings: tuple[str, ...], rows: list[tuple[Flattenable, ...]]
) -> Tag:
    """One of the live tables (``<p class="empty">`` after the caption when empty)."""
    numeric = {"seq", "age", "in flight", "deadline left", "since heartbeat", "count"}
    body = [
        tags.tr(
            *(
                tags.td(class_="number" if heading in numeric else "text")(cell)
                if heading in numeric or heading == "error"
                else tags.td(cell)
                for heading, cell in zip(headings, row, strict=True)
            )
        )
        for row in rows
    ]
    table = tags.table(id=id, class_="live")(
        tags.caption(caption),
        tags.thead(tags.tr(*(tags.th(scope="col")(heading) for heading in headings))),
        tags.tbody(*body),
    )
    if rows:
        return table
    return tags.section(table, tags.p(class_="empty")("none"))


def _seconds(value: float | None) -> str:
    return "—" if value is None else f"{value:.1f} s"


def _live_sections(live: Live) -> Tag:
    """The server's description and the live tables, below the services."""
    server = tags.section(id="server")(
        tags.h3("Server"),
        tags.dl(id="server-info")(
            tags.dt("txgeerpc version"),
            tags.dd(id="version")(live.version),
            tags.dt("Listening on"),
            tags.dd(id="addresses")(", ".join(live.addresses) or "—"),
        ),
        _table(
            "settings",
            "Limits",
            ("limit", "value"),
            [(SETTING_LABELS.get(name, name), value) for name, value in live.settings],
        ),
    )
    connections = _table(
        "open-connections",
        "Open connections",
        ("peer", "transport", "codec", "age", "in flight"),
        [
            (
                c.peer,
                c.transport,
                c.codec or "(handshake)",
                _seconds(c.age_seconds),
                str(c.in_flight),
            )
            for c in live.open_connections
        ],
    )
    calls = _table(
        "in-flight-calls",
        "Calls in flight",
        ("method", "seq", "peer", "age", "deadline left"),
        [
            (c.method, str(c.seq), c.peer, _seconds(c.age_seconds), _seconds(c.deadline_seconds))
            for c in live.calls
        ],
    )
    errors = _table(
        "recent-errors",
        "Recent errors (newest first)",
        ("age", "method", "seq", "peer", "error"),
        [(_seconds(e.age_seconds), e.method, str(e.seq), e.peer, e.text) for e in live.errors],
    )
    parts: list[Flattenable] = [server, connections, calls, errors]
    if live.registry is not None:
        parts.append(
            _table(
                "registry",
                "Embedded registry: servers listed",
                ("address", "since heartbeat"),
                [(address, _seconds(age)) for address, age in live.registry],
            )
        )
    return tags.transparent(*parts)
