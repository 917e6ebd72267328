"""
The registry clients' HTTP requests (heartbeat, registry discovery,
``python -m txgeerpc servers``): a :data:`~txgeerpc.registry.Request` made
with the quiet ``Agent`` and the size-limited body reader the etcd client
uses too (:mod:`txgeerpc._http_client`).
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, ensureDeferred
from twisted.python.failure import Failure
from twisted.web.client import HTTPConnectionPool
from twisted.web.http_headers import Headers

from .._http_client import quiet_agent, read_body
from ..errors import RegistryAnswerTooLarge, RegistryTimeout
from ._wire import Answer, Request

MAX_ANSWER_BODY = 8 * 1024 * 1024
"""Bytes of a registry's answer body :func:`agent_request` reads at most."""


def agent_request(
    reactor: Any,
    *,
    max_body: int = MAX_ANSWER_BODY,
    pool: HTTPConnectionPool | None = None,
    tls: Any = None,
    token: str | None = None,
) -> Request:
    """A :data:`~txgeerpc.registry.Request` made with
    ``twisted.web.client.Agent`` (that logs nothing per connection).

    Its Deferred fails with :class:`~txgeerpc.errors.RegistryTimeout` after
    ``timeout`` seconds, :class:`~txgeerpc.errors.RegistryAnswerTooLarge` past
    ``max_body`` bytes of body, or the connection's own error (refused...).

    :param pool: the connection pool (the agent's own, non-persistent, by
        default).
    :param tls: a :class:`txgeerpc.tls.ClientTLS` for ``https://`` URLs
        (the CAs to trust, a client certificate); the system's CAs by default.
    :param token: sent as ``Authorization: Bearer TOKEN`` with every request
        (a registry whose writes need authentication, docs/security.md).
    """
    agent = quiet_agent(reactor, pool=pool, tls=tls.https_policy() if tls is not None else None)
    bearer = {b"authorization": b"Bearer " + token.encode()} if token else {}

    def request(
        method: bytes, url: str, headers: dict[bytes, bytes], timeout: float
    ) -> Deferred[Answer]:
        async def go() -> Answer:
            sent = {**headers, **bearer}
            response = await agent.request(
                method, url.encode(), Headers({name: [value] for name, value in sent.items()})
            )
            # Always read: it frees the connection.
            too_large = RegistryAnswerTooLarge(url, max_body)
            body = await read_body(response, max_body, lambda: too_large)
            found = {
                name.lower(): values[0] for name, values in response.headers.getAllRawHeaders()
            }
            return Answer(response.code, found, body)

        d = ensureDeferred(go())
        # Cancelled before the answer, Agent fails with ResponseNeverReceived
        # rather than CancelledError: whatever it is, it was the timeout.
        d.addTimeout(timeout, reactor, lambda *_: Failure(RegistryTimeout(url, timeout)))
        return d

    return request
