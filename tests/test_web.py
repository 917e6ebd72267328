"""
The web hardening every txgeerpc site has: a request body limit answered with
413 (the body never read into memory), and mounting resources at paths.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.error import ConnectionDone
from twisted.internet.testing import StringTransport
from twisted.logger import Logger, formatEvent
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource
from twisted.web.server import Request

from txgeerpc import _web
from txgeerpc._web import QuietSite, mount

from ._helpers import checked_clock


class _Echo(Resource):
    """Answers with the body it got; counts the requests it rendered."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.rendered = 0

    def render(self, request: Request) -> bytes:
        self.rendered += 1
        assert request.content is not None
        return b"got %d bytes" % len(request.content.read())


class BodyLimitTests(SynchronousTestCase):
    """QuietSite's ``max_body``: 413 and closed, at once for a Content-Length
    over it, as a chunked body grows over it; never rendered."""

    def setUp(self) -> None:
        self.clock = checked_clock(self)
        self.echo = _Echo()
        root = Resource()
        mount(root, "/echo", self.echo)
        self.site = QuietSite(root, reactor=self.clock, max_body=100)
        self.events: list[dict[str, Any]] = []
        observer = Logger(observer=self.events.append)
        self.patch(_web._BodyLimitedChannel, "_log", observer)

    def send(self, *pieces: bytes) -> StringTransport:
        """A new connection to the site, sent ``pieces`` one at a time."""
        self.channel = self.site.buildProtocol(None)
        assert self.channel is not None
        transport = StringTransport()
        self.channel.makeConnection(transport)
        self.addCleanup(self.channel.connectionLost, Failure(ConnectionDone()))
        for piece in pieces:
            self.channel.dataReceived(piece)
        return transport

    def assertRefused(self, transport: StringTransport) -> None:
        answer = transport.value()
        self.assertTrue(answer.startswith(b"HTTP/1.1 413 Request Entity Too Large\r\n"), answer)
        self.assertIn(b"\r\nConnection: close\r\n", answer)
        self.assertTrue(answer.endswith(b"(the limit is 100 bytes)\n"), answer)
        self.assertTrue(transport.disconnecting)
        self.assertEqual(self.echo.rendered, 0)

    def test_a_content_length_over_the_limit_is_refused_before_the_body(self) -> None:
        head = (
            b"POST /echo HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
            b"Content-Length: 1048576\r\n\r\n"
        )
        transport = self.send(head)
        self.assertRefused(transport)  # at once: no 100 Continue, no waiting for the body
        self.assertNotIn(b"100 Continue", transport.value())
        answer = transport.value()
        self.channel.dataReceived(b"x" * 4096)  # whatever still arrives is dropped
        self.channel.dataReceived(b"GET /echo HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertEqual(transport.value(), answer)
        [event] = self.events
        self.assertIn(
            "POST /echo: request body over 100 bytes (Content-Length 1048576); answered 413",
            formatEvent(event),
        )

    def test_a_chunked_body_growing_over_the_limit_is_refused(self) -> None:
        head = b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        chunk = b"32\r\n" + b"y" * 50 + b"\r\n"  # 50 bytes
        transport = self.send(head, chunk, chunk)
        self.assertEqual(transport.value(), b"")  # 100 bytes: still fine
        transport = self.send(head, chunk, chunk, b"1\r\nz\r\n0\r\n\r\n")
        self.assertRefused(transport)
        self.assertIn("chunked body past 100 bytes", formatEvent(self.events[-1]))

    def test_bodies_up_to_the_limit_are_served(self) -> None:
        exact = self.send(
            b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n" + b"x" * 100
        )
        self.assertTrue(exact.value().endswith(b"got 100 bytes"), exact.value())
        chunked = self.send(
            b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"32\r\n" + b"y" * 50 + b"\r\n32\r\n" + b"y" * 50 + b"\r\n0\r\n\r\n",
        )
        self.assertTrue(chunked.value().endswith(b"got 100 bytes"), chunked.value())
        self.assertEqual((self.echo.rendered, self.events), (2, []))

    def test_the_default_limit(self) -> None:
        self.assertEqual(QuietSite(Resource()).max_body, 64 * 1024)
