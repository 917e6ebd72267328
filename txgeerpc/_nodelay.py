"""
Sending without delay: ``TCP_NODELAY`` on a connection, whatever wraps it
(docs/operations.md, "TCP_NODELAY"; both sides take it as an option:
``twistd geerpc --tcp-nodelay``, ``connect(..., nodelay=True)``), and a
write sent to the socket at once (:func:`write_now`).
"""

from __future__ import annotations

from typing import Any

from twisted.internet import tcp

__all__ = ["set_tcp_nodelay"]

_TCP_WRITE_SOME_DATA = tcp.Connection.writeSomeData


def set_tcp_nodelay(transport: Any, enabled: bool) -> bool:
    """Set (or clear) ``TCP_NODELAY`` on ``transport`` or the transport it
    wraps (TLS, a protocol wrapper); whether a TCP transport was found (a
    UNIX socket or a memory transport has none: nothing is done)."""
    seen = 0
    while transport is not None and seen < 8:  # a wrapper's wrapper's ... transport
        setter = getattr(transport, "setTcpNoDelay", None)
        if setter is not None and hasattr(transport, "getTcpNoDelay"):
            try:
                setter(enabled)
            except OSError:  # closed meanwhile, or not a TCP socket after all
                return False
            return True
        transport = getattr(transport, "transport", None)
        seen += 1
    return False


def write_now(transport: Any, data: bytes) -> None:
    """``transport.write(data)``, sent now rather than on the reactor's next
    turn, for a plain TCP transport (``tcp.Connection`` without TLS started
    on it).  It exists because both sides send this way once per read (the
    replies a read's requests made; the calls a read's replies' callbacks
    made): when nothing is buffered before ``data`` it goes to the socket
    straight away, sparing the two epoll registrations (start, then stop
    writing) that ``write`` and an immediate ``doWrite`` cost.  Whatever the
    socket does not take, and anything when something is buffered already or
    the send fails, goes through ``transport.write`` as usual: the reactor
    sends the rest, or meets the error and closes the connection."""
    if (
        not transport.TLS
        and transport.connected
        and not transport.disconnecting
        and not transport.dataBuffer
        and not transport._tempDataBuffer
        and not transport._writeDisconnected
    ):
        if type(transport).writeSomeData is _TCP_WRITE_SOME_DATA:
            # Twisted's writeSomeData without its memoryview slice and
            # untilConcludes: they cost more than the send of a small
            # message (1.4 of 3.3 us per write here), once per read on each
            # side.  Python retries a send a signal interrupted (PEP 475);
            # an error counts as nothing sent: write's send on the reactor's
            # turn meets it again and handles it as Twisted does.
            try:
                sent = transport.socket.send(data)
            except OSError:
                sent = 0
        else:  # a transport with its own
            sent = transport.writeSomeData(data)
        if type(sent) is int:  # else the connection is lost: write finds it out
            if sent == len(data):
                return
            data = data[sent:]
    transport.write(data)
