"""
``twistd geerpc --workers N``: N processes serving the same ports.

The parent (twistd) opens every ``--listen`` socket once, as a lone server
would (a port in use is one line and exit status 1), stops accepting on it
itself and starts N workers, each ``python -m txgeerpc._workers SPEC`` with
the sockets inherited (the same descriptor numbers): each runs the whole
server of the same options (debug page, metrics, health) and accepts on the
shared sockets, the kernel handing each connection to one of them.  Why not
``SO_REUSEPORT``: a shared socket has one accept queue, so a worker that
dies or stops loses no queued connection (with ``SO_REUSEPORT`` each has
its own queue, and the connections in a closing one are reset); it needs no
second bind that could fail or be taken by another user's process; and
the same socket can then be handed to a new process (``--handover``).

Only the parent registers (``--registry``, ``--etcd``, ``--zookeeper``):
one entry for the port.  It restarts a worker that dies (one log line), and
on SIGTERM leaves the registry, then stops every worker with SIGTERM: each
stops gracefully (go-away, the calls in flight drained within ``--grace``).
A worker whose parent disappears (its stdin closes) stops the same way.
Workers log through the parent (``[worker N] ...``); a worker says it
serves with a line of its own on the same pipe (:data:`READY`, after its
"serving" lines), and the parent says it serves (and, with ``--handover``,
tells the process handing over ``ready``) only once every worker did.
``SIGHUP`` to the parent (TLS certificate and tokens reload) is passed on to
every worker.  The parent makes a private run directory (mode 0700, removed
on stop) where each worker answers the others' requests for its metrics and
debug page (:mod:`txgeerpc._worker_stats`): any worker answering ``/metrics``
serves every worker's samples.  Should the parent be killed, the last worker
to stop removes that directory.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from twisted.application.service import Service
from twisted.internet import abstract, fdesc
from twisted.internet.defer import Deferred, DeferredList, succeed
from twisted.internet.error import ConnectionDone, ProcessExitedAlready
from twisted.internet.interfaces import IDelayedCall
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import ILogObserver, Logger, formatEvent, globalLogBeginner
from twisted.python.failure import Failure
from zope.interface import implementer

from . import _accept_balance as accept_balance
from ._twistd import shared

__all__: list[str] = []  # private: used by txgeerpc.tap

SHAREABLE_KINDS = ("tcp", "tcp6")
RESTART_PAUSE = 1.0
"""A worker that dies within this many seconds of its start is restarted
after this pause, not at once (no busy loop of a worker that cannot start)."""
KILL_AFTER = 5.0
"""Seconds past ``--grace`` a stopping worker gets before SIGKILL."""
READY = b"\x00txgeerpc-worker-ready"
"""The line a worker writes on its stdout (its log) once it serves; no log
line can be it (a worker's log lines have their NUL bytes escaped)."""


def shareable(description: str) -> bool:
    """Whether ``--listen description`` gives a socket workers can share
    (TCP: a UNIX socket's file would be removed by the first to stop)."""
    kind = description.partition(":")[0].strip().lower()
    return kind in SHAREABLE_KINDS


class WorkerLabelled:
    """A Prometheus registry's samples with ``worker="N"`` added to each, so
    that series from different workers of one port stay apart (and Prometheus
    can ``sum without (worker)``)."""

    def __init__(self, registry: Any, worker: int) -> None:
        self._registry = registry
        self._worker = str(worker)

    def collect(self) -> Iterator[Any]:
        from prometheus_client.metrics_core import Metric

        for family in self._registry.collect():
            labelled = Metric(family.name, family.documentation, family.type, family.unit)
            labelled.samples = [
                sample._replace(labels={**sample.labels, "worker": self._worker})
                for sample in family.samples
            ]
            yield labelled

    def restricted_registry(self, names: Any) -> WorkerLabelled:
        return WorkerLabelled(self._registry.restricted_registry(names), int(self._worker))


# -- the parent -------------------------------------------------------------------


class Gate:
    """Closed until :meth:`open` is called, once; then open for good."""

    def __init__(self) -> None:
        self._waiting: list[Deferred[None]] | None = []

    def wait(self) -> Deferred[None]:
        """Fires (with ``None``) once the gate is open: at once if it is."""
        if self._waiting is None:
            return succeed(None)
        waiting: Deferred[None] = Deferred()
        self._waiting.append(waiting)
        return waiting

    def open(self) -> None:
        waiting, self._waiting = self._waiting, None
        for each in waiting or ():
            each.callback(None)


class _Worker(ProcessProtocol):
    """One worker process: its output logged line by line, its end reported."""

    _log = Logger()

    def __init__(self, supervisor: Supervisor, worker: int, started: float) -> None:
        self._supervisor = supervisor
        self.worker = worker
        self.started = started
        self.ended: Deferred[None] = Deferred()
        self.pid: int | None = None  # kept once it ended (the transport's is None then)
        self._partial: dict[int, bytes] = {}

    def childDataReceived(self, childFD: int, data: bytes) -> None:
        lines = (self._partial.pop(childFD, b"") + data).split(b"\n")
        if lines[-1]:
            self._partial[childFD] = lines[-1]
        for line in lines[:-1]:
            if childFD == 1 and line == READY:
                self._supervisor.serving(self)
                continue
            self._log.info(
                "[worker {worker}] {line}",
                worker=self.worker,
                line=line.decode("utf-8", "replace"),
            )

    def processEnded(self, reason: Failure) -> None:
        for fd, rest in sorted(self._partial.items()):
            self.childDataReceived(fd, rest + b"\n")
        self._supervisor.ended(self, reason)
        self.ended.callback(None)

    def signal(self, name: str) -> None:
        try:
            if self.transport is not None:
                self.transport.signalProcess(name)
        except (ProcessExitedAlready, OSError):
            pass


class Supervisor(Service):
    """Runs ``count`` workers serving ``listeners``' sockets (opened by this
    process, which stops accepting on them when started).

    :param arguments: the ``twistd geerpc`` options the workers parse.
    :param grace: ``--grace``: a stopping worker is killed this much and
        :data:`KILL_AFTER` seconds later.
    :param serving: opened once every worker serves.
    :param forward_hangup: pass ``SIGHUP`` on to the workers (after this
        process's own handler, when it has one: the options reload files).
    """

    _log = Logger()

    def __init__(
        self,
        reactor: Any,
        arguments: Sequence[str],
        listeners: Sequence[Any],
        count: int,
        grace: float,
        *,
        serving: Gate | None = None,
        forward_hangup: bool = False,
    ) -> None:
        self._reactor = reactor
        self._arguments = list(arguments)
        self._listeners = listeners
        self.count = count
        self._grace = grace
        self._serving = serving if serving is not None else Gate()
        self._forward_hangup = forward_hangup and hasattr(signal, "SIGHUP")
        self._previous_hangup: Any = None
        self._fds: list[int] = []
        self._board: int | None = None  # the workers' connection counts (_accept_balance)
        self.workers: dict[int, _Worker] = {}
        self._restarts: dict[int, IDelayedCall] = {}
        self._stopping = False
        self._served: set[int] = set()
        self.directory: str | None = None
        """The run directory where the workers answer each other."""

    def startService(self) -> None:
        super().startService()
        self._stopping = False
        self._served = set()
        self._fds = []
        for listener in self._listeners:
            shared(listener.port).stopReading()  # the workers accept, not this process
            self._fds.append(listener.port.fileno())
        self.directory = tempfile.mkdtemp(prefix="txgeerpc-workers-")
        self._board = accept_balance.create_board(self.count)
        if self._forward_hangup:
            self._previous_hangup = signal.signal(signal.SIGHUP, self._hangup)
        for worker in range(self.count):
            self._spawn(worker)

    def serving(self, protocol: _Worker) -> None:
        """Worker ``protocol`` says it serves: once all did, so does this process."""
        if self.workers.get(protocol.worker) is not protocol or self._stopping:
            return
        first = protocol.worker not in self._served
        self._served.add(protocol.worker)
        if first and len(self._served) == self.count:
            self._log.info(
                "txgeerpc: {count} workers serving {listen} (pids {pids})",
                count=self.count,
                listen=", ".join(listener.description for listener in self._listeners),
                pids=", ".join(str(self.workers[w].pid) for w in sorted(self.workers)),
            )
            self._serving.open()

    def _hangup(self, signum: int, frame: Any) -> None:
        previous = self._previous_hangup
        if callable(previous):
            previous(signum, frame)
        self._reactor.callFromThread(self._pass_hangup_on)

    def _pass_hangup_on(self) -> None:
        self._log.info("txgeerpc: SIGHUP: passing it on to the workers")
        for protocol in list(self.workers.values()):
            protocol.signal("HUP")

    def _spawn(self, worker: int) -> None:
        self._restarts.pop(worker, None)
        spec = json.dumps(
            {
                "arguments": self._arguments,
                "worker": worker,
                "count": self.count,
                "fds": self._fds,
                "directory": self.directory,
                "board": self._board,
            }
        )
        protocol = _Worker(self, worker, self._reactor.seconds())
        child_fds: dict[int, Any] = {0: "w", 1: "r", 2: "r"}
        child_fds.update({fd: fd for fd in self._fds})
        if self._board is not None:
            child_fds[self._board] = self._board
        process = self._reactor.spawnProcess(
            protocol,
            sys.executable,
            [sys.executable, "-m", "txgeerpc._workers", spec],
            env=dict(os.environ),
            childFDs=child_fds,
        )
        protocol.pid = process.pid
        self.workers[worker] = protocol

    def ended(self, protocol: _Worker, reason: Failure) -> None:
        worker = protocol.worker
        if self.workers.get(worker) is protocol:
            del self.workers[worker]
            if self._board is not None:
                accept_balance.mark_gone(self._board, worker)
        if self._stopping:
            return
        lived = self._reactor.seconds() - protocol.started
        pause = RESTART_PAUSE if lived < RESTART_PAUSE else 0.0
        self._log.warn(
            "txgeerpc: worker {worker} (pid {pid}) {how}; restarting it{later}",
            worker=worker,
            pid=protocol.pid or "?",
            how=_how(reason),
            later=f" in {pause:g} s" if pause else "",
        )
        self._restarts[worker] = self._reactor.callLater(pause, self._spawn, worker)

    def stopService(self) -> Deferred[Any]:
        super().stopService()
        self._stopping = True
        if self._forward_hangup and self._previous_hangup is not None:
            signal.signal(signal.SIGHUP, self._previous_hangup)
            self._previous_hangup = None
        for restart in self._restarts.values():
            restart.cancel()
        self._restarts.clear()
        running = list(self.workers.values())
        for protocol in running:
            protocol.signal("TERM")

        def kill_them() -> None:
            for protocol in running:
                protocol.signal("KILL")

        kill = self._reactor.callLater(self._grace + KILL_AFTER, kill_them)
        done: Deferred[Any] = DeferredList([protocol.ended for protocol in running])

        def stopped(result: Any) -> Any:
            if kill.active():
                kill.cancel()
            if self.directory is not None:
                shutil.rmtree(self.directory, ignore_errors=True)
                self.directory = None
            if self._board is not None:
                os.close(self._board)
                self._board = None
            return result

        return done.addBoth(stopped)


def _how(reason: Failure) -> str:
    value = reason.value
    number = getattr(value, "signal", None)
    if number:
        try:
            return f"was killed by {signal.Signals(number).name}"
        except ValueError:
            return f"was killed by signal {number}"
    return f"exited with status {getattr(value, 'exitCode', '?')}"


# -- a worker ---------------------------------------------------------------------


class _ParentWatch(abstract.FileDescriptor):
    """Stdin, a pipe from the parent: when it closes, the parent is gone."""

    def __init__(self, reactor: Any) -> None:
        super().__init__(reactor)
        fdesc.setNonBlocking(0)

    def fileno(self) -> int:
        return 0

    def doRead(self) -> Any:
        try:
            data = os.read(0, 4096)
        except BlockingIOError:
            return None
        return None if data else ConnectionDone()

    def connectionLost(self, reason: Failure) -> None:
        super().connectionLost(reason)
        if self.reactor.running:  # type: ignore[attr-defined]
            Logger().warn("txgeerpc: the parent process is gone; stopping")
            self.reactor.stop()  # type: ignore[attr-defined]


@implementer(ILogObserver)
def _log_lines(event: dict[str, Any]) -> None:
    """A worker's log: each event as a line of text on stdout (the parent
    logs it, with the worker's number)."""
    text = formatEvent(event)
    failure = event.get("log_failure")
    if failure is not None:
        text += "\n" + failure.getTraceback()
    text = text.replace("\x00", "\\x00")  # no line of it is READY
    sys.stdout.write(text.rstrip("\n") + "\n")
    sys.stdout.flush()


def _say_ready() -> None:
    """Tell the parent this worker serves (after its "serving" lines)."""
    sys.stdout.write(READY.decode("ascii") + "\n")
    sys.stdout.flush()


def _counter(factory: Any) -> Callable[[], int]:
    """How many connections ``factory`` (a one-port factory) holds now."""
    return lambda: len(factory.open)


def _balance(built: Any, worker: dict[str, int], fd: int, reactor: Any) -> None:
    """Spread new connections evenly over the workers
    (:mod:`txgeerpc._accept_balance`): each listening port accepts through a
    gate, stopped before the listeners (added last)."""
    board = accept_balance.LoadBoard(fd, worker["id"], worker["count"])
    os.close(fd)
    for listener in built.listeners:
        port = listener.port
        factory = port.factory
        gate = accept_balance.AcceptGate(port, board, _counter(factory), reactor)
        factory.on_closed = gate.closed
        gate.setServiceParent(built.service)


def main(argv: Sequence[str]) -> None:
    """A worker: ``SPEC`` is the JSON the parent passes (the options, this
    worker's number, the workers' count, the inherited descriptors)."""
    from twisted.internet import reactor

    from ._twistd import one_line_errors
    from .tap import Options, build

    spec = json.loads(argv[1])
    if hasattr(signal, "SIGHUP"):
        # The parent passes SIGHUP on when the options reload files on it (a
        # handler replaces this then); never the default: to end the worker.
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
    globalLogBeginner.beginLoggingTo([_log_lines], redirectStandardIO=False)
    config = Options()
    with one_line_errors(Options.tapname):
        config.parseOptions(spec["arguments"])
        for name in ("registry", "etcd", "zookeeper", "advertise", "handover"):
            config[name] = None  # the parent's business
        config["workers"] = 1
        worker = {"id": spec["worker"], "pid": os.getpid(), "count": spec["count"]}
        built = build(
            config, reactor, adopt=spec["fds"], worker=worker, stats_directory=spec["directory"]
        )
        for listener in built.listeners:
            listener.listen()
        if spec.get("board") is not None:
            _balance(built, worker, spec["board"], reactor)
    watch = _ParentWatch(reactor)
    watch.startReading()
    service = built.service
    service.privilegedStartService()
    reactor.callWhenRunning(service.startService)  # type: ignore[attr-defined]
    reactor.callWhenRunning(_say_ready)  # type: ignore[attr-defined]
    reactor.addSystemEventTrigger("before", "shutdown", service.stopService)  # type: ignore[attr-defined]
    reactor.run()  # type: ignore[attr-defined]
    # The last worker out removes the run directory (its own socket is gone
    # with its listener; the others' go with theirs): the parent does so when
    # it stops its workers, but a parent that was killed cannot.
    try:
        os.rmdir(spec["directory"])
    except OSError:  # another worker still runs, or the parent removed it
        pass


if __name__ == "__main__":
    main(sys.argv)
