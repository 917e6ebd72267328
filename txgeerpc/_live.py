"""
What the live debug page adds to the per-method table: the open connections,
the calls running now, the recent errors, the embedded registry's entries,
the server's address, version and limits, per method a latency histogram and
a calls-per-second history (drawn as inline SVG), and the site's index page.

Read at one moment into frozen values (:class:`Live`), like
:class:`txgeerpc.debug.Snapshot`; nothing here runs on the per-call path.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping
from itertools import pairwise
from typing import TYPE_CHECKING, Any

import attrs
from twisted.web.iweb import IRequest
from twisted.web.resource import Resource
from twisted.web.template import Tag, tags

from ._service import LATENCY_BUCKETS
from ._version import __version__

if TYPE_CHECKING:
    from .server import Server

__all__: list[str] = []  # private: used by txgeerpc.debug and txgeerpc.server

HISTORY_SAMPLES = 60
"""Calls-per-second samples kept per method (one a second at most)."""

SAMPLE_INTERVAL = 1.0
"""Seconds between two samples of the calls-per-second history."""


@attrs.frozen
class ConnectionSnapshot:
    """One open RPC connection."""

    peer: str
    transport: str  # raw, connect
    codec: str  # "" until its Option was accepted
    age_seconds: float
    in_flight: int

    def to_json(self) -> dict[str, Any]:
        return attrs.asdict(self)


@attrs.frozen
class CallSnapshot:
    """One call running now."""

    method: str
    seq: int
    peer: str
    age_seconds: float
    deadline_seconds: float | None  # left of its budget; None: no budget

    def to_json(self) -> dict[str, Any]:
        return attrs.asdict(self)


@attrs.frozen
class ErrorSnapshot:
    """One recent error reply."""

    age_seconds: float
    method: str
    seq: int
    peer: str
    text: str

    def to_json(self) -> dict[str, Any]:
        return attrs.asdict(self)


@attrs.frozen
class Live:
    """The live parts of the debug page, read at one moment."""

    version: str
    addresses: tuple[str, ...]
    settings: tuple[tuple[str, str], ...]
    open_connections: tuple[ConnectionSnapshot, ...]
    calls: tuple[CallSnapshot, ...]
    errors: tuple[ErrorSnapshot, ...]
    registry: tuple[tuple[str, float], ...] | None  # (address, seconds since its heartbeat)
    buckets: Mapping[str, tuple[int, ...]]  # Service.Method -> latency bucket counts
    rates: Mapping[str, tuple[float, ...]]  # Service.Method -> calls/s, oldest first

    def to_json(self) -> dict[str, Any]:
        return {
            "server": {
                "version": self.version,
                "addresses": list(self.addresses),
                "settings": dict(self.settings),
            },
            "open_connections": [c.to_json() for c in self.open_connections],
            "in_flight_calls": [c.to_json() for c in self.calls],
            "recent_errors": [e.to_json() for e in self.errors],
            "registry": None
            if self.registry is None
            else [{"address": a, "age_seconds": age} for a, age in self.registry],
            "latency_buckets": {
                "le_seconds": list(LATENCY_BUCKETS),
                "methods": {name: list(counts) for name, counts in self.buckets.items()},
            },
            "calls_per_second": {name: list(rates) for name, rates in self.rates.items()},
        }


class RateHistory:
    """Each method's calls per second, sampled when the page is read (at
    most once per :data:`SAMPLE_INTERVAL`; the live page reads itself every
    few seconds while it is open), the last :data:`HISTORY_SAMPLES` kept."""

    def __init__(self) -> None:
        self._samples: deque[tuple[float, dict[str, int]]] = deque(maxlen=HISTORY_SAMPLES + 1)

    def sample(self, now: float, totals: dict[str, int]) -> None:
        """Note the calls so far of every method at ``now``."""
        samples = self._samples
        if samples and 0.0 <= now - samples[-1][0] < SAMPLE_INTERVAL:
            return
        if samples and now < samples[-1][0]:  # the clock went back: start again
            samples.clear()
        samples.append((now, totals))

    def rates(self) -> dict[str, tuple[float, ...]]:
        """Calls per second between successive samples, per method."""
        samples = list(self._samples)
        names = samples[-1][1].keys() if samples else ()
        rates: dict[str, tuple[float, ...]] = {}
        for name in names:
            series = []
            for (t0, before), (t1, after) in pairwise(samples):
                span = t1 - t0
                calls = after.get(name, 0) - before.get(name, 0)
                series.append(max(calls, 0) / span if span > 0 else 0.0)
            rates[name] = tuple(series)
        return rates


_SETTINGS = (
    ("max_message_size", "largest message (bytes)"),
    ("max_in_flight", "requests running per connection"),
    ("max_connections", "connections at most"),
    ("max_connections_per_peer", "connections per peer"),
    ("receive_budget", "receive budget (bytes)"),
    ("handshake_timeout", "handshake timeout (s)"),
    ("idle_timeout", "idle timeout (s)"),
    ("served_idle_timeout", "idle timeout once served (s)"),
    ("message_timeout", "message timeout (s)"),
    ("max_handle_timeout", "handle timeout (s)"),
    ("grace", "grace on stop (s)"),
)
"""The server settings the page shows, and what it calls them."""

SETTING_LABELS = dict(_SETTINGS)


def read_live(server: Server, history: RateHistory) -> Live:
    """Read ``server``'s live parts now (and sample ``history``)."""
    now = server.clock.seconds()
    factory = server.factory()
    connections = []
    calls = []
    for protocol in sorted(factory.connections, key=lambda p: p.connected_at or 0.0):
        connections.append(
            ConnectionSnapshot(
                peer=protocol.peer,
                transport=protocol.transport_kind,
                codec=protocol.codec_name,
                age_seconds=max(now - (protocol.connected_at or now), 0.0),
                in_flight=protocol.in_flight,
            )
        )
        for method, seq, started, deadline in protocol.running():
            calls.append(
                CallSnapshot(
                    method=method,
                    seq=seq,
                    peer=protocol.peer,
                    age_seconds=max(now - started, 0.0),
                    deadline_seconds=None if deadline is None else deadline - now,
                )
            )
    calls.sort(key=lambda call: -call.age_seconds)
    errors = tuple(
        ErrorSnapshot(
            age_seconds=max(now - error.at, 0.0),
            method=error.service_method,
            seq=error.seq,
            peer=error.peer,
            text=error.text,
        )
        for error in reversed(factory.recent_errors)
    )
    buckets = {}
    totals = {}
    for service_name in sorted(server.services):
        service = server.services[service_name]
        for method_name in sorted(service.methods):
            stats = service.methods[method_name].stats
            buckets[f"{service_name}.{method_name}"] = tuple(stats.buckets)
            totals[f"{service_name}.{method_name}"] = stats.calls
    history.sample(now, totals)
    settings = server.settings
    return Live(
        version=__version__,
        addresses=tuple(getattr(server, "addresses", ())),
        settings=tuple((name, _setting(getattr(settings, name, None))) for name, _ in _SETTINGS),
        open_connections=tuple(connections),
        calls=tuple(calls),
        errors=errors,
        registry=_registry(getattr(server, "registry", None), now),
        buckets=buckets,
        rates=history.rates(),
    )


def _setting(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _registry(registry: Any, now: float) -> tuple[tuple[str, float], ...] | None:
    """The embedded registry's live entries, if one is mounted and its store
    answers at once (an in-memory one; etcd's is not read here)."""
    entries = getattr(getattr(registry, "store", None), "entries", None)
    if entries is None:
        return None
    return tuple((entry.address, max(now - entry.last_heartbeat, 0.0)) for entry in entries(now))


# -- inline SVG ----------------------------------------------------------------

_SVG = "http://www.w3.org/2000/svg"


def _svg(width: int, height: int, label: str, children: Iterable[Tag]) -> Tag:
    return Tag(
        "svg",
        attributes={
            "xmlns": _SVG,
            "width": str(width),
            "height": str(height),
            "viewBox": f"0 0 {width} {height}",
            "role": "img",
            "aria-label": label,
        },
        children=list(children),
    )


def bound_label(index: int) -> str:
    """What bucket ``index`` of the histogram holds (``≤ 1 ms``, ``> 60 s``)."""
    if index >= len(LATENCY_BUCKETS):
        return f"> {_duration(LATENCY_BUCKETS[-1])}"
    return f"≤ {_duration(LATENCY_BUCKETS[index])}"


def _duration(seconds: float) -> str:
    if seconds >= 1.0:
        return f"{seconds:g} s"
    if seconds >= 0.001:
        return f"{seconds * 1000:g} ms"
    return f"{seconds * 1e6:g} µs"


def histogram_svg(counts: tuple[int, ...]) -> Tag:
    """The latency histogram: one bar per bucket, each with its count in a tooltip."""
    bar, height = 6, 28
    top = max(counts) if counts else 0
    bars = []
    for index, count in enumerate(counts):
        tall = 0 if top == 0 else max(1, round(height * count / top)) if count else 0
        bars.append(
            Tag(
                "rect",
                attributes={
                    "x": str(index * bar),
                    "y": str(height - tall),
                    "width": str(bar - 1),
                    "height": str(tall),
                    "fill": "#3b7dd8",
                    "data-count": str(count),
                    "aria-label": f"{bound_label(index)}: {count}",
                },
            )
        )
    baseline = Tag(
        "line",
        attributes={
            "x1": "0",
            "y1": str(height),
            "x2": str(len(counts) * bar),
            "y2": str(height),
            "stroke": "#888",
        },
    )
    total = sum(counts)
    return _svg(
        len(counts) * bar,
        height + 1,
        f"latency histogram of {total} calls, {bound_label(0)} to {bound_label(len(counts) - 1)}",
        [*bars, baseline],
    )


def rate_svg(rates: tuple[float, ...]) -> Tag:
    """The calls-per-second history: a line over the last samples."""
    width, height, step = 120, 28, 2
    top = max(rates) if rates else 0.0
    points = []
    for index, rate in enumerate(rates[-(width // step) :]):
        y = height - (0.0 if top <= 0 else height * rate / top)
        points.append(f"{index * step},{y:.1f}")
    latest = rates[-1] if rates else 0.0
    children = [
        Tag(
            "line",
            attributes={
                "x1": "0",
                "y1": str(height),
                "x2": str(width),
                "y2": str(height),
                "stroke": "#888",
            },
        )
    ]
    if len(points) > 1:
        children.append(
            Tag(
                "polyline",
                attributes={
                    "points": " ".join(points),
                    "fill": "none",
                    "stroke": "#d8733b",
                    "stroke-width": "1.5",
                },
            )
        )
    return _svg(
        width,
        height + 1,
        f"calls per second, last {len(rates)} samples: now {latest:.1f}, peak {top:.1f}",
        children,
    )


# -- the index page --------------------------------------------------------------

INDEX_TYPE = b"text/html; charset=utf-8"
_INDEX_POLICY = (
    b"default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'"
)


class IndexResource(Resource):
    """``/`` of a server's one-port site: a page linking to what the site
    serves, found when it is asked for (so resources mounted later, such as
    ``/metrics``, are listed too).

    :param root: the site's root resource.
    :param titles: what to call known paths (``/debug/geerpc``: the debug page).
    :param hidden: paths not to list (the RPC path: only ``CONNECT`` works there).
    """

    isLeaf = True

    def __init__(self, root: Resource, titles: Mapping[str, str], hidden: Iterable[str]) -> None:
        super().__init__()
        self._root = root
        self._titles = dict(titles)
        self._hidden = {"/" + path.strip("/") for path in hidden}

    def paths(self) -> list[str]:
        """Every path mounted under the root, sorted (``/debug/geerpc``...)."""
        found: list[str] = []

        def walk(resource: Resource, prefix: str) -> None:
            for name, child in sorted(resource.children.items()):
                if not name:
                    continue
                path = f"{prefix}/{name.decode('utf-8', 'replace')}"
                if type(child) is Resource and child.children:  # a plain folder
                    walk(child, path)
                elif path not in self._hidden:
                    found.append(path)

        walk(self._root, "")
        return found

    def render_GET(self, request: IRequest) -> bytes:
        from twisted.web.template import flattenString

        if request.postpath not in ([], [b""]):  # type: ignore[attr-defined]
            request.setResponseCode(404)
            request.setHeader(b"content-type", b"text/plain; charset=utf-8")
            return b"404 page not found\n"
        items = [
            tags.li(
                tags.a(href=path)(self._titles.get(path, path)),
                " ",
                tags.code(path),
            )
            for path in self.paths()
        ]
        page = tags.html(lang="en")(
            tags.head(
                tags.meta(charset="utf-8"),
                tags.title("txgeerpc"),
                tags.style(
                    "body { font-family: sans-serif; margin: 1.5em; } li { margin: .3em 0; }"
                ),
            ),
            tags.body(
                tags.h1("txgeerpc"),
                tags.p(f"txgeerpc {__version__}: GeeRPC on this port (raw, or CONNECT), and:"),
                tags.ul(id="index")(*items),
            ),
        )
        rendered: list[bytes] = []
        flattenString(None, page).addCallback(rendered.append)
        request.setHeader(b"content-type", INDEX_TYPE)
        request.setHeader(b"cache-control", b"no-store")
        request.setHeader(b"x-content-type-options", b"nosniff")
        request.setHeader(b"content-security-policy", _INDEX_POLICY)
        return b"<!DOCTYPE html>\n" + rendered[0]

    def render_HEAD(self, request: IRequest) -> bytes:
        body = self.render_GET(request)
        request.setHeader(b"content-length", b"%d" % len(body))
        return b""
