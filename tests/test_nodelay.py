"""
``write_now``'s short path: a plain ``tcp.Connection`` is sent to with its
socket's ``send`` directly, not through Twisted's ``writeSomeData`` (its
``memoryview`` slice and ``untilConcludes`` cost more than the send of a small
message).  Pinned here to the general path, the transport's own
``writeSomeData``: for every thing a socket can do with a send (take it all,
take part, would block, fail) both send the same bytes and leave the same
rest to ``write`` (the reactor).
"""

from __future__ import annotations

import errno
from typing import Any

from twisted.internet import reactor, tcp
from twisted.internet.protocol import Protocol
from twisted.trial.unittest import SynchronousTestCase

from txgeerpc._nodelay import write_now


class FakeSocket:
    """What ``tcp.Connection`` needs of a socket; ``send`` takes at most
    ``takes`` bytes (``None``: all) or raises ``error``, and records what it
    was handed."""

    def __init__(self, takes: int | None = None, error: OSError | None = None) -> None:
        self.takes = takes
        self.error = error
        self.sent: list[bytes] = []
        self.handed: list[type] = []

    def setblocking(self, flag: bool) -> None:
        pass

    def fileno(self) -> int:
        return -1

    def send(self, data: Any) -> int:
        self.handed.append(type(data))
        if self.error is not None:
            raise self.error
        taken = bytes(data[: self.takes] if self.takes is not None else data)
        self.sent.append(taken)
        return len(taken)


class Plain(tcp.Connection):
    """Twisted's TCP connection, whose ``write`` (the reactor's buffer) is
    recorded instead of registered with the reactor."""

    def __init__(self, sock: FakeSocket) -> None:
        super().__init__(sock, Protocol(), reactor)
        self.connected = 1
        self.written: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.written.append(data)


class OwnWriteSomeData(Plain):
    """A transport with a ``writeSomeData`` of its own (here Twisted's,
    called through an override): ``write_now`` calls it, the general path."""

    def writeSomeData(self, data: bytes) -> Any:
        return super().writeSomeData(data)


DATA = b"0123456789" * 7

BEHAVIOURS: dict[str, dict[str, Any]] = {
    "takes all": {},
    "takes part": {"takes": 25},
    "takes nothing": {"takes": 0},
    "would block": {"error": BlockingIOError(errno.EAGAIN, "again")},
    "no buffer space": {"error": OSError(errno.ENOBUFS, "no buffers")},
    "reset": {"error": ConnectionResetError(errno.ECONNRESET, "reset")},
    "broken pipe": {"error": BrokenPipeError(errno.EPIPE, "pipe")},
}


def outcome(kind: type[Plain], **behaviour: Any) -> tuple[list[bytes], list[bytes], list[type]]:
    sock = FakeSocket(**behaviour)
    transport = kind(sock)
    write_now(transport, DATA)
    return sock.sent, transport.written, sock.handed


class WriteNowTests(SynchronousTestCase):
    def test_the_same_as_the_transports_own_write_some_data(self) -> None:
        for name, behaviour in BEHAVIOURS.items():
            fast = outcome(Plain, **behaviour)
            general = outcome(OwnWriteSomeData, **behaviour)
            self.assertEqual(fast[:2], general[:2], name)
            sent, written, _ = fast
            self.assertEqual(b"".join(sent + written), DATA, name)  # nothing lost, in order

    def test_a_plain_tcp_connection_takes_the_short_path(self) -> None:
        # Twisted's writeSomeData hands the socket a memoryview slice.
        self.assertEqual(outcome(Plain)[2], [bytes])
        self.assertEqual(outcome(OwnWriteSomeData)[2], [memoryview])

    def test_all_taken_nothing_left_for_the_reactor(self) -> None:
        sent, written, _ = outcome(Plain)
        self.assertEqual((sent, written), ([DATA], []))

    def test_an_error_leaves_everything_to_the_reactor(self) -> None:
        # The reactor's own send meets the error again and closes (or waits).
        for name in ("would block", "no buffer space", "reset", "broken pipe"):
            sent, written, _ = outcome(Plain, **BEHAVIOURS[name])
            self.assertEqual((sent, written), ([], [DATA]), name)

    def test_after_buffered_bytes_nothing_is_sent_past_them(self) -> None:
        for field, value in [("dataBuffer", b"x"), ("_tempDataBuffer", [b"x"]), ("TLS", True)]:
            sock = FakeSocket()
            transport = Plain(sock)
            setattr(transport, field, value)
            write_now(transport, DATA)
            self.assertEqual((sock.handed, transport.written), ([], [DATA]), field)
