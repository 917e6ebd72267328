"""Shared helpers for the unit tests (not a test module)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import LogLevel, globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from txgeerpc import Option, Server
from txgeerpc._option import OptionDecoder
from txgeerpc._server_protocol import ServerProtocol
from txgeerpc.examples import register_examples

# Byte-exact recordings of the Go reference (see tests/vectors/README.md).
VECTORS = Path(__file__).resolve().parent / "vectors"

JSON_OPTION = (
    b'{"MagicNumber":3927900,"CodecType":"application/json",'
    b'"ConnectTimeout":10000000000,"HandleTimeout":0}\n'
)


def vector(name: str) -> bytes:
    return (VECTORS / name).read_bytes()


def decode_all(pieces: list[bytes], max_size: int = 16 * 1024) -> tuple[list[Option], bytes]:
    """Feed the pieces in order; every Option produced and all rest bytes."""
    decoder = OptionDecoder(max_size)
    options = []
    rest = b""
    for piece in pieces:
        option, more = decoder.feed(piece)
        if option is not None:
            options.append(option)
        rest += more
    return options, rest


def checked_clock(test: SynchronousTestCase) -> Clock:
    """A Clock that must have nothing scheduled when ``test`` ends."""
    clock = Clock()

    def nothing_scheduled() -> None:
        leftover = clock.getDelayedCalls()
        test.assertEqual(leftover, [], "delayed calls left at the end of the test")

    test.addCleanup(nothing_scheduled)
    return clock


def example_server(clock: Clock, **settings: Any) -> Server:
    server = Server(clock, **settings)
    register_examples(server)
    return server


def json_request(method: str, seq: int, body: bytes) -> bytes:
    """One request in the JSON codec's wire format (vector 02)."""
    header = b'{"ServiceMethod":"%s","Seq":%d,"Error":""}\n' % (method.encode(), seq)
    return header + body + b"\n"


def connected_server(
    test: SynchronousTestCase, server: Server
) -> tuple[ServerProtocol, StringTransport]:
    """A server protocol on a StringTransport, disconnected when ``test`` ends,
    so that a :func:`checked_clock` then shows anything the connection left
    scheduled."""
    protocol = server.factory().buildProtocol(None)
    transport = StringTransport()
    protocol.makeConnection(transport)

    def disconnect() -> None:
        # StringTransport never reports the end of a connection: do it here,
        # as a real transport would once loseConnection/abortConnection completes.
        if protocol in server.factory().connections:
            transport.disconnected = True
            protocol.connectionLost(Failure(ConnectionDone()))

    test.addCleanup(disconnect)
    return protocol, transport


class CapturedLogs:
    """Collects log events at warn level and above while active."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def __enter__(self) -> CapturedLogs:
        globalLogPublisher.addObserver(self._observe)
        return self

    def __exit__(self, *exc: object) -> None:
        globalLogPublisher.removeObserver(self._observe)

    def _observe(self, event: dict[str, Any]) -> None:
        if event.get("log_level", LogLevel.info) >= LogLevel.warn:
            self.events.append(event)

    def texts(self) -> list[str]:
        from twisted.logger import formatEvent

        return [formatEvent(event) for event in self.events]


def gob_frames(data: bytes) -> list[bytes]:
    """Split a gob stream into whole messages (count prefix included)."""
    from txgeerpc.gob._numbers import read_uint

    frames = []
    pos = 0
    while pos < len(data):
        length, start = read_uint(data, pos)
        frames.append(data[pos : start + length])
        pos = start + length
    return frames
