"""
``twistd geerpc --handover PATH``: a restart that refuses no connection.

The running server listens on the UNIX socket ``PATH``.  A new one started
with the same ``--handover`` connects there before it listens itself and
receives the listening sockets (``SCM_RIGHTS``), one per ``--listen``, in
order; the old one closes ``PATH`` and then ends the message with a newline,
so the new one can take ``PATH`` over for the next restart.  The new one
serves on the sockets it got and says ``ready`` once its reactor runs (with
``--workers``, once every worker serves); only then does the old one stop,
gracefully (the registry entry, go-away, the calls in flight drained).  A
socket is never closed, so a connection that arrives meanwhile waits in its
backlog for whichever process accepts next.
If the new process dies before it is ready, the old one goes on serving.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Callable, Sequence
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IListeningPort
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger

from ._twistd import StartupError, shared

__all__: list[str] = []  # private: used by txgeerpc.tap

READY = b"ready\n"
HANDOVER_TIMEOUT = 10.0


class Inherited:
    """The listening sockets taken from a running server, and the connection
    to tell it :meth:`ready` on."""

    def __init__(self, fds: list[int], connection: socket.socket) -> None:
        self.fds = fds
        self._connection: socket.socket | None = connection

    def ready(self) -> None:
        """Say the new process serves: the old one stops now."""
        connection, self._connection = self._connection, None
        if connection is None:
            return
        Logger().info("txgeerpc: serving on the sockets handed over; the old process stops now")
        try:
            connection.sendall(READY)
        except OSError:
            pass  # it is gone already: nothing more to tell it
        finally:
            connection.close()


def receive(path: str, expected: int, timeout: float = HANDOVER_TIMEOUT) -> Inherited | None:
    """Take the listening sockets from the server running at ``path``;
    ``None`` when none runs there (a stale socket file is removed).

    :raises StartupError: it handed over another number of sockets than
        ``expected`` (its ``--listen`` differ), or broke off.
    """
    connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    connection.settimeout(timeout)
    try:
        connection.connect(path)
    except (FileNotFoundError, ConnectionRefusedError) as error:
        connection.close()
        if isinstance(error, ConnectionRefusedError):
            os.unlink(path)  # left by a process that died: nobody listens there
        return None
    except OSError as error:
        connection.close()
        raise StartupError(f"--handover {path}: {error.strerror or error}") from error
    data, fds = b"", []
    try:
        while not data.endswith(b"\n"):
            message, received, _, _ = socket.recv_fds(connection, 4096, 64)
            fds.extend(received)
            if not message:
                raise StartupError(f"--handover {path}: the running server broke off")
            data += message
    except (OSError, StartupError) as error:
        for fd in fds:
            os.close(fd)
        connection.close()
        if isinstance(error, StartupError):
            raise
        raise StartupError(f"--handover {path}: {error}") from error
    if len(fds) != expected:
        for fd in fds:
            os.close(fd)
        connection.close()
        raise StartupError(
            f"--handover {path}: the running server handed over {len(fds)} listening "
            f"sockets, and this one has {expected} --listen"
        )
    return Inherited(fds, connection)


class _Giving(Protocol):
    """The old side of one hand-over (docs in the module)."""

    _log = Logger()
    transport: Any

    def __init__(self, service: HandoverService) -> None:
        self._service = service
        self._handed = False

    def connectionMade(self) -> None:
        ports = self._service.ports()
        if ports is None:  # already handed over (or stopping): no second taker
            self.transport.loseConnection()
            return
        self._handed = True
        for port in ports:
            self.transport.sendFileDescriptor(port.fileno())
        # At least one byte per descriptor goes with them; the newline, once
        # PATH is free for the new process to listen on.
        self.transport.write(json.dumps({"sockets": len(ports)}).encode().ljust(len(ports)))
        self._service.close().addBoth(lambda _: self.transport.write(b"\n"))
        self._log.info(
            "txgeerpc: handing the listening sockets over to a new process on {path}",
            path=self._service.path,
        )

    def dataReceived(self, data: bytes) -> None:
        if self._handed and data.startswith(READY[:5]):
            self._handed = False
            self._service.handed_over()

    def connectionLost(self, reason: Any = None) -> None:
        if self._handed:  # the new process died before it was ready
            self._log.warn(
                "txgeerpc: the new process broke off the hand-over; serving on "
                "(no further hand-over until restarted)"
            )


class HandoverService(Service):
    """Listens on ``path`` while running, to give ``listeners``' sockets to
    a new process; then calls ``stop`` (the reactor's, for twistd).

    :param inherited: the sockets this process took over, told
        :meth:`Inherited.ready` once it runs, and ``serving`` opened.
    :param serving: with ``--workers``, opened once they all serve.
    """

    _log = Logger()

    def __init__(
        self,
        reactor: Any,
        path: str,
        listeners: Sequence[Any],
        stop: Callable[[], Any],
        inherited: Inherited | None = None,
        serving: Any = None,
    ) -> None:
        self.path = path
        self._reactor = reactor
        self._listeners = listeners
        self._stop = stop
        self._inherited = inherited
        self._serving = serving
        self._port: IListeningPort | None = None
        self._given = False

    def privilegedStartService(self) -> None:
        super().privilegedStartService()
        try:
            self._port = self._reactor.listenUNIX(
                self.path, Factory.forProtocol(lambda: _Giving(self)), mode=0o600
            )
        except Exception as error:
            raise StartupError(f"--handover {self.path}: cannot listen ({error})") from error

    def startService(self) -> None:
        if self._port is None:
            self.privilegedStartService()
        super().startService()
        inherited, self._inherited = self._inherited, None
        if inherited is None:
            return
        if self._serving is None:
            self._reactor.callWhenRunning(inherited.ready)
        else:
            self._serving.wait().addCallback(lambda _: inherited.ready())

    def ports(self) -> list[Any] | None:
        """The listening ports to hand over, once (``None`` after)."""
        if self._given or not self.running:
            return None
        ports = [listener.port for listener in self._listeners]
        if any(port is None for port in ports):
            return None
        self._given = True
        return [shared(port) for port in ports]

    def close(self) -> Deferred[None]:
        """Stop listening on ``path`` (the file is removed)."""
        port, self._port = self._port, None
        if port is None:
            return succeed(None)
        stopping: Any = port.stopListening()
        return stopping if isinstance(stopping, Deferred) else succeed(None)

    def handed_over(self) -> None:
        self._log.info("txgeerpc: the new process serves; stopping gracefully")
        self._stop()

    def stopService(self) -> Deferred[None] | None:
        super().stopService()
        return self.close()
