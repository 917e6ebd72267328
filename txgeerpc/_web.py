"""
Generic ``twisted.web`` hardening shared by every site txgeerpc serves (the
one-port site of :meth:`txgeerpc.Server.port_factory`, the standalone
registry of ``twistd geerpc-registry``): a limit on request bodies answered
with ``413``, an access log quiet about routine requests, and mounting a
resource at a path.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.interfaces import IAddress
from twisted.logger import Logger
from twisted.web.http import HTTPChannel
from twisted.web.resource import Resource
from twisted.web.server import Request, Site


def mount(root: Resource, path: str, resource: Resource) -> None:
    """Put ``resource`` at ``path`` (``/debug/geerpc``) under ``root``."""
    segments = [segment.encode() for segment in path.strip("/").split("/")]
    parent = root
    for segment in segments[:-1]:
        child = parent.children.get(segment)
        if child is None:
            child = Resource()
            parent.putChild(segment, child)
        parent = child
    parent.putChild(segments[-1], resource)


DEFAULT_HTTP_IDLE_TIMEOUT = 15.0
"""Seconds an HTTP connection of a server's port may wait between requests."""

DEFAULT_MAX_BODY = 64 * 1024
"""Bytes of request body a :class:`QuietSite` takes at most: the registry and
the debug page read none."""


class _BodyLimitedChannel(HTTPChannel):
    """An HTTP channel that answers ``413`` and closes the connection as soon
    as a request body is known to go over its site's ``max_body``: at once for
    a ``Content-Length`` over it (nothing of the body is read into memory), as
    the body grows over it for a chunked one.  The request is never rendered."""

    _log = Logger()
    site: Any  # set by Site.buildProtocol
    _body_refused = False

    def _max_body(self) -> int:
        return int(getattr(self.site, "max_body", DEFAULT_MAX_BODY))

    def allHeadersReceived(self) -> None:
        if self.length is not None and self.length > self._max_body():
            self.refuse_body(f"Content-Length {self.length}")
            return
        super().allHeadersReceived()

    def body_grew(self, size: int) -> bool:
        """A chunked body has ``size`` bytes so far; False (after answering
        ``413``) when that is over the limit."""
        if self._body_refused:
            return False
        if size > self._max_body():
            self.refuse_body(f"chunked body past {self._max_body()} bytes")
            return False
        return True

    def refuse_body(self, why: str) -> None:
        """Answer ``413`` and close; drop whatever else arrives."""
        if self._body_refused:
            return
        self._body_refused = True
        limit = self._max_body()
        self._log.info(
            "txgeerpc: {peer}: {method} {path}: request body over {limit} bytes ({why}); "
            "answered 413 and closing",
            peer=_describe(self.transport.getPeer() if self.transport is not None else None),
            method=getattr(self, "_command", b"?").decode("latin-1"),
            path=getattr(self, "_path", b"?").decode("latin-1"),
            limit=limit,
            why=why,
        )
        body = f"413 request body too large (the limit is {limit} bytes)\n".encode()
        assert self.transport is not None
        self.transport.write(
            b"HTTP/1.1 413 Request Entity Too Large\r\n"
            b"Content-Type: text/plain; charset=utf-8\r\n"
            b"Content-Length: %d\r\n"
            b"Connection: close\r\n\r\n%s" % (len(body), body)
        )
        self.loseConnection()

    def timeoutConnection(self) -> None:
        """The idle timeout (the site's ``timeout``): counted, then closed."""
        on_timeout = getattr(self.site, "on_timeout", None)
        if on_timeout is not None:
            on_timeout()
        super().timeoutConnection()

    def lineReceived(self, line: bytes) -> None:
        if not self._body_refused:
            super().lineReceived(line)

    def rawDataReceived(self, data: bytes) -> None:
        if not self._body_refused:
            super().rawDataReceived(data)

    def allContentReceived(self) -> None:
        if not self._body_refused:
            super().allContentReceived()


class _BodyLimitedRequest(Request):
    """Counts a request's body as it arrives (see :class:`_BodyLimitedChannel`)."""

    _body_size = 0

    def handleContentChunk(self, data: bytes) -> None:
        self._body_size += len(data)
        grew = getattr(self.channel, "body_grew", None)
        if grew is not None and not grew(self._body_size):
            return
        super().handleContentChunk(data)


class QuietSite(Site):
    """A :class:`~twisted.web.server.Site` whose access log leaves out the
    successful requests under ``quiet_paths`` (registry heartbeats and
    listings: one line per server per beat would drown the rest), and which
    takes request bodies of at most ``max_body`` bytes: a longer one (its
    ``Content-Length``, or a chunked body as it grows) is answered ``413`` and
    its connection closed, without reading the body into memory (logged).
    ``timeout=`` (twisted.web's idle timeout, 12 hours by default) closes a
    connection idle that long between requests; ``on_timeout`` is told.

    :param max_body: bytes of request body taken at most.
    """

    protocol = _BodyLimitedChannel  # type: ignore[assignment]
    requestFactory = _BodyLimitedRequest

    def __init__(
        self, resource: Resource, *args: Any, max_body: int = DEFAULT_MAX_BODY, **kwargs: Any
    ) -> None:
        super().__init__(resource, *args, **kwargs)
        self.quiet_paths: set[bytes] = set()
        self.max_body = max_body
        self.on_timeout: Callable[[], None] | None = None
        """Called when a connection is closed by the idle timeout (``timeout=``)."""

    def log(self, request: Any) -> None:
        path = request.path or b""
        if request.code < 400 and any(
            path == quiet or path.startswith(quiet.rstrip(b"/") + b"/")
            for quiet in self.quiet_paths
        ):
            return
        super().log(request)


def _describe(address: IAddress | None) -> str:
    host = getattr(address, "host", None)
    port = getattr(address, "port", None)
    return f"{host}:{port}" if host is not None else str(address)


__all__ = ["DEFAULT_HTTP_IDLE_TIMEOUT", "DEFAULT_MAX_BODY", "QuietSite", "mount"]
