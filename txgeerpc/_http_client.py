"""
The HTTP client plumbing the registry clients (:mod:`txgeerpc.registry`) and
the etcd client (:mod:`txgeerpc.etcd`) share: an ``Agent`` that logs nothing
per connection, and a response body reader with a size limit.

It lives here, above both packages, so that neither imports the other's
private modules.

Quiet connections use public API only: the agent is built with
``Agent.usingEndpointFactory``, and its endpoints turn off ``noisy`` (a
public attribute of ``Factory``) on the client factory the connection pool
makes for each connection, so Twisted's "Starting factory" and "Stopping
factory" lines (one pair per connection) are not logged.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS
from twisted.internet.interfaces import IProtocol, IProtocolFactory, IStreamClientEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.python.failure import Failure
from twisted.web.client import Agent, BrowserLikePolicyForHTTPS, HTTPConnectionPool, ResponseDone
from twisted.web.error import SchemeNotSupported
from twisted.web.http import PotentialDataLoss
from twisted.web.iweb import IAgentEndpointFactory, IPolicyForHTTPS, IResponse
from zope.interface import implementer


@implementer(IStreamClientEndpoint)
class _QuietEndpoint:
    def __init__(self, wrapped: IStreamClientEndpoint) -> None:
        self._wrapped = wrapped

    def connect(self, protocolFactory: IProtocolFactory) -> Deferred[IProtocol]:
        if isinstance(protocolFactory, Factory):  # the pool's: one per connection
            protocolFactory.noisy = False
        connected: Deferred[IProtocol] = self._wrapped.connect(protocolFactory)
        return connected

    def __repr__(self) -> str:  # for logs: what it wraps
        return f"<quiet {self._wrapped!r}>"


@implementer(IAgentEndpointFactory)
class _QuietEndpoints:
    """What ``Agent`` does by default (``HostnameEndpoint``, wrapped in TLS
    for ``https``), with :class:`_QuietEndpoint` around it."""

    def __init__(
        self, reactor: Any, connect_timeout: float | None, tls: IPolicyForHTTPS | None
    ) -> None:
        self._reactor = reactor
        self._connect_timeout = connect_timeout
        self._tls = tls if tls is not None else BrowserLikePolicyForHTTPS()

    def endpointForURI(self, uri: Any) -> IStreamClientEndpoint:
        endpoint: IStreamClientEndpoint
        if self._connect_timeout is None:
            endpoint = HostnameEndpoint(self._reactor, uri.host, uri.port)
        else:
            endpoint = HostnameEndpoint(
                self._reactor, uri.host, uri.port, timeout=self._connect_timeout
            )
        if uri.scheme == b"https":
            endpoint = wrapClientTLS(self._tls.creatorForNetloc(uri.host, uri.port), endpoint)
        elif uri.scheme != b"http":
            raise SchemeNotSupported(f"unsupported scheme {uri.scheme!r}")
        return _QuietEndpoint(endpoint)


def quiet_agent(
    reactor: Any,
    *,
    pool: HTTPConnectionPool | None = None,
    connect_timeout: float | None = None,
    tls: IPolicyForHTTPS | None = None,
) -> Agent:
    """An ``Agent`` that logs nothing per connection.

    :param pool: the connection pool (the agent's own non-persistent one by
        default).
    :param connect_timeout: seconds a connection may take (the endpoint's
        default if None).
    :param tls: the policy for ``https`` URLs (the browser-like one by default).
    """
    endpoints = _QuietEndpoints(reactor, connect_timeout, tls)
    agent: Agent = Agent.usingEndpointFactory(reactor, endpoints, pool)
    return agent


class BodyReader(Protocol):
    """Hands a response body's segments to ``received`` until it ends
    (``ended``: None when complete, else the reason); :meth:`abort` drops the
    connection."""

    def __init__(
        self, received: Callable[[bytes], None], ended: Callable[[Failure | None], None]
    ) -> None:
        self._received = received
        self._ended = ended
        self.aborted = False

    def abort(self) -> None:
        self.aborted = True
        if self.transport is not None:
            self.transport.stopProducing()  # type: ignore[attr-defined]

    def dataReceived(self, data: bytes) -> None:
        if not self.aborted:
            self._received(data)

    def connectionLost(self, reason: Failure = ResponseDone) -> None:  # type: ignore[assignment]
        if isinstance(reason, Failure) and not reason.check(ResponseDone, PotentialDataLoss):
            self._ended(reason)
        else:
            self._ended(None)


def read_body(
    response: IResponse, limit: int, too_large: Callable[[], Exception]
) -> Deferred[bytes]:
    """A whole response body, at most ``limit`` bytes.  Past that, the
    Deferred fails with ``too_large()`` and the connection is dropped;
    cancelling it drops the connection too."""
    parts: list[bytes] = []
    size = 0

    def received(data: bytes) -> None:
        nonlocal size
        size += len(data)
        if size > limit:
            if not done.called:
                done.errback(too_large())
            body.abort()
            return
        parts.append(data)

    def ended(reason: Failure | None) -> None:
        if done.called:
            return
        if reason is None:
            done.callback(b"".join(parts))
        else:
            done.errback(reason)

    body = BodyReader(received, ended)
    done: Deferred[bytes] = Deferred(lambda _: body.abort())
    response.deliverBody(body)
    return done
