"""
What the two twistd plugins (``twistd geerpc``, ``twistd geerpc-registry``)
share: option value types, ``--listen``, listening before twistd daemonizes,
and startup mistakes reported as one line with a non-zero exit.

Why listening happens in ``makeService``: twistd forks into the background
(``twistd`` without ``-n``) *before* it starts the services, and reports a
failure after that only as a truncated ``repr`` through a 100-byte pipe.  A
port taken, an endpoint string Twisted does not know, a module that cannot be
imported are all found while ``makeService`` runs, still attached to the shell
that ran twistd, which then prints one line naming the problem and exits 1.
(Option mistakes exit 2.)  This is a composition root: it may use the global
reactor.
"""

from __future__ import annotations

import math
import os
import socket
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, NoReturn

import attrs
from twisted.application.service import IService, Service
from twisted.internet.defer import CancelledError, Deferred, succeed
from twisted.internet.endpoints import serverFromString
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IListeningPort, IProtocolFactory
from twisted.logger import Logger
from twisted.python import usage
from twisted.python.failure import Failure
from twisted.web.resource import Resource

from ._twistd_log import DEFAULT_LOG_MAX_FILES, LogRotation, log_path
from ._wire import DEFAULT_METRICS_PATH

__all__: list[str] = []  # private: used by txgeerpc.tap and txgeerpc.registry_tap


class StartupError(Exception):
    """A mistake found while making the service: its text is the whole
    message the user sees (``twistd TAPNAME: TEXT``)."""


def exit_with(tapname: str, message: str, code: int) -> NoReturn:
    """Print ``twistd TAPNAME: MESSAGE`` (one line) on stderr and exit."""
    text = " ".join(message.split())  # one line, whatever the message held
    sys.stderr.write(f"twistd {tapname}: {text}\n")
    sys.stderr.flush()
    raise SystemExit(code)


@contextmanager
def one_line_errors(tapname: str) -> Iterator[None]:
    """Inside it, a :class:`StartupError` or ``usage.UsageError`` ends the
    process with one line on stderr and exit status 1."""
    try:
        yield
    except (StartupError, usage.UsageError) as error:
        exit_with(tapname, str(error), 1)


@attrs.frozen
class Built:
    """What a plugin's ``build()`` makes: the service tree twistd runs, and
    its listeners (one per ``--listen``, in order, not listening yet)."""

    service: IService
    listeners: tuple[Listener, ...]


def make_service(
    tapname: str, build: Callable[[Any, Any], Built], config: Any, reactor: Any = None
) -> IService:
    """A plugin's ``makeService``: ``build(config, reactor)`` (the global
    reactor by default), then listen at once, so that a mistake (a port in
    use, an unknown endpoint, a service that cannot be imported) is one line
    on stderr and exit status 1, before twistd daemonizes.  Listeners opened
    before one that fails are closed again."""
    if reactor is None:
        from twisted.internet import reactor as global_reactor

        reactor = global_reactor
    with one_line_errors(tapname):
        built = build(config, reactor)
        try:
            for listener in built.listeners:
                listener.listen()
        except StartupError:
            for listener in built.listeners:
                listener.stopService()
            raise
    path = log_path(getattr(config, "parent", None))
    if path is not None:  # twistd logs to a file: keep --log-max-files of them
        return LogRotation(built.service, path, config["log-max-files"], reactor)
    return built.service


# -- option value types -------------------------------------------------------


def _number(text: str, kind: Callable[[str], Any]) -> Any:
    try:
        return kind(text)
    except ValueError:
        raise ValueError("not a number" if kind is float else "not a whole number") from None


def positive_seconds(text: str) -> float:
    """Seconds, more than 0 (and finite)."""
    value = _number(text, float)
    if not (value > 0 and math.isfinite(value)):
        raise ValueError("must be a number of seconds more than 0")
    return float(value)


def non_negative_seconds(text: str) -> float:
    """Seconds, 0 or more (and finite)."""
    value = _number(text, float)
    if not (value >= 0 and math.isfinite(value)):
        raise ValueError("must be a number of seconds, 0 or more")
    return float(value)


def positive_int(text: str) -> int:
    """A whole number, 1 or more."""
    value = _number(text, int)
    if value < 1:
        raise ValueError("must be a whole number, 1 or more")
    return int(value)


positive_seconds.coerceDoc = "Seconds, > 0."  # type: ignore[attr-defined]
non_negative_seconds.coerceDoc = "Seconds, >= 0."  # type: ignore[attr-defined]
positive_int.coerceDoc = "A whole number, >= 1."  # type: ignore[attr-defined]


class _NamedCoerce(usage.CoerceParameter):
    """Twisted's coercion, with an error that names the option and its value
    (Twisted's says only "Parameter type enforcement failed")."""

    def dispatch(self, parameterName: str, value: str | None) -> None:
        if value is None:
            raise usage.UsageError(f"--{parameterName} needs a value")
        try:
            coerced = self.coerce(value)
        except ValueError as error:
            raise usage.UsageError(f"--{parameterName} {value}: {error}") from None
        self.options.opts[parameterName] = coerced


class ServeOptions(usage.Options):
    """Options both plugins share: ``--listen`` (repeatable), option errors
    that name the option, and, under twistd, one line instead of the whole
    help."""

    tapname = ""
    default_listen = ""
    optParameters: list[list[Any]] = [
        [
            "log-max-files",
            None,
            DEFAULT_LOG_MAX_FILES,
            "Rotated log files kept when twistd logs to a file (--logfile; it rotates "
            "at 1 MB); older ones are deleted.",
            positive_int,
        ],
        [
            "metrics-path",
            None,
            DEFAULT_METRICS_PATH,
            'HTTP path of the Prometheus metrics ("none": no metrics).',
        ],
    ]

    def __init__(self) -> None:
        super().__init__()
        self["listen"] = []
        for name, dispatch in list(self._dispatch.items()):
            if type(dispatch) is usage.CoerceParameter:
                named = _NamedCoerce(self, dispatch.coerce)
                named.doc = dispatch.doc
                self._dispatch[name] = named

    def opt_listen(self, endpoint: str) -> None:
        """Twisted server endpoint string to listen on (repeatable)."""
        self["listen"].append(endpoint)

    def parseOptions(self, options: list[str] | None = None) -> None:
        try:
            super().parseOptions(options)
        except usage.UsageError as error:
            if getattr(self, "parent", None) is None:  # not under twistd: the caller decides
                raise
            exit_with(
                self.tapname, f"{error} (twistd {self.tapname} --help lists the options)", 2
            )

    def postOptions(self) -> None:
        if not self["listen"]:
            self["listen"] = [self.default_listen]
        path = self["metrics-path"]
        if path.lower() != "none" and not path.startswith("/"):
            raise usage.UsageError(f"--metrics-path must start with /, got {path!r}")


def metrics_resource(registry: Any) -> Resource:
    """``prometheus_client``'s Twisted resource serving ``registry``
    (``/metrics``), made at the first request: it serves on the global
    reactor's thread pool, which a service tree built for another reactor
    (a test's) never reaches."""
    return _LazyMetrics(registry)


class _LazyMetrics(Resource):
    isLeaf = True

    def __init__(self, registry: Any) -> None:
        super().__init__()
        self._registry = registry
        self._resource: Any = None  # a WSGIResource

    def render(self, request: Any) -> Any:
        if self._resource is None:
            from prometheus_client.twisted import MetricsResource

            self._resource = MetricsResource(self._registry)
        return self._resource.render(request)


# -- listening ----------------------------------------------------------------


def _reason(error: BaseException | None) -> str:
    if error is None:
        return "unknown error"
    if isinstance(error, CannotListenError) and error.socketError is not None:
        error = error.socketError
    text = str(error).strip()
    if isinstance(error, OSError) and error.strerror:
        # A failed symlink or rename names its second path (a unix socket's
        # lock file), not its first (the PID written into it).
        path = error.filename2 or error.filename
        if isinstance(path, bytes):
            path = os.fsdecode(path)
        text = error.strerror if not path else f"{error.strerror}: {path!r}"
    return text or type(error).__name__


class Listener(Service):
    """Listens on one endpoint string.  :meth:`listen` listens at once (the
    plugins call it in ``makeService``); otherwise starting the service does.
    ``endpoint``, if given, is the string actually listened on (``description``
    with defaults added), ``description`` what messages name.

    :ivar port: the listening port, once listening.
    """

    _log = Logger()

    def __init__(
        self,
        reactor: Any,
        description: str,
        factory: IProtocolFactory,
        announce: Callable[[IListeningPort], None] | None = None,
        *,
        endpoint: str | None = None,
        adopt: int | None = None,
    ) -> None:
        self.description = description
        self.port: IListeningPort | None = None
        self._adopt = adopt
        self._reactor = reactor
        self._factory = factory
        self._announce = announce
        self._listening: Deferred[IListeningPort] | None = None
        try:
            self._endpoint = serverFromString(reactor, endpoint or description)
        except Exception as error:  # ValueError, KeyError, OSError (ssl: files), ...
            raise StartupError(f"--listen {description}: {_reason(error)}") from error

    def listen(self) -> None:
        """Listen now (once).

        :raises StartupError: the endpoint refused at once (a port in use,
            no permission, no such interface).
        """
        if self._listening is not None:
            return
        if self._adopt is not None:  # a listening socket inherited (workers, hand-over)
            self._listening = succeed(self._adopt_port(self._adopt))
            return
        failed_now: list[Failure] = []
        waiting: list[bool] = []  # empty while listen() runs

        def failed(failure: Failure) -> None:
            if not waiting:
                failed_now.append(failure)
            elif not failure.check(CancelledError):  # cancelled: stopped meanwhile
                # An endpoint that listens later (e.g. an onion service):
                # serving with nothing listening is worse than stopping.
                self._log.error(
                    "cannot listen on {description}: {reason}; stopping",
                    description=self.description,
                    reason=_reason(failure.value),
                )
                if getattr(self._reactor, "running", False):
                    self._reactor.stop()

        self._listening = self._endpoint.listen(self._factory)
        self._listening.addCallbacks(self._listened, failed)
        waiting.append(True)
        if failed_now:
            self._listening = None
            reason = _reason(failed_now[0].value)
            raise StartupError(f"cannot listen on {self.description}: {reason}")

    def _adopt_port(self, fd: int) -> IListeningPort:
        """Serve on the listening socket ``fd`` (this process's copy of it
        is closed: the port has its own)."""
        try:
            family = _family(fd)
            port = shared(self._reactor.adoptStreamPort(fd, family, self._factory))
        except OSError as error:
            raise StartupError(f"cannot serve {self.description}: {_reason(error)}") from error
        finally:
            os.close(fd)
        return self._listened(port)

    def privilegedStartService(self) -> None:
        super().privilegedStartService()
        self.listen()

    def _listened(self, port: IListeningPort) -> IListeningPort:
        self.port = port
        if self._announce is not None:
            self._announce(port)
        return port

    def stopService(self) -> Deferred[None] | None:
        super().stopService()
        listening, self._listening = self._listening, None
        port, self.port = self.port, None
        if port is not None:
            return port.stopListening()  # type: ignore[no-any-return]
        if listening is not None:
            listening.cancel()
        return None


def shared(port: Any) -> Any:
    """Mark ``port`` (a listening TCP port) as sharing its socket with other
    processes (workers, a process it was handed to or from): closing it then
    closes this process's descriptor only.  Twisted otherwise calls
    ``shutdown()`` first, which stops the socket listening for every process
    holding it.  (``_shouldShutdown`` is Twisted's own switch for this, set
    on a class; there is no public one.)"""
    port._shouldShutdown = False
    return port


def _family(fd: int) -> int:
    """The address family of the socket ``fd`` (left open)."""
    probe = socket.socket(fileno=fd)
    try:
        return int(probe.family)
    finally:
        probe.detach()


def cwd_on_path() -> None:
    """Put the directory twistd was started from on ``sys.path``, as
    ``python -m`` does, so ``--service calc:Calc`` finds ``calc.py`` there."""
    here = os.getcwd()
    if here not in sys.path and os.path.abspath(here) not in map(os.path.abspath, sys.path):
        sys.path.insert(0, here)
