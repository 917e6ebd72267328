"""
txgeerpc for programs that are not Twisted programs: calls that block.

::

    from txgeerpc import blocking

    with blocking.connect("tcp@127.0.0.1:7001") as client:
        print(client.call("Arith.Multiply", {"Num1": 6, "Num2": 7}, timeout=2))

The first use starts Twisted's reactor in a background (daemon) thread, without
signal handlers; the interpreter's exit stops it (``atexit``).  Every call is
handed to that thread (Twisted's ``blockingCallFromThread``) and its caller
waits: calls from several threads at once run concurrently, multiplexed on
their connections.  A call fails with the same errors as
:meth:`txgeerpc.Client.call` (``RemoteError``, ``CallTimeout``... from
:mod:`txgeerpc.errors`), raised as they are.  A ``timeout`` is applied in the
reactor thread, as for the Twisted client: a call that times out leaves
nothing behind; a wait interrupted (Ctrl-C) cancels its call.

Limits: a program that runs a Twisted reactor itself uses the Twisted API
(:func:`txgeerpc.connect`); these functions refuse to start a second reactor,
and refuse to run in the reactor's own thread (a handler or a callback), where
waiting would never end.
"""

from __future__ import annotations

import atexit
import threading
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.threads import blockingCallFromThread

from ._wire import DEFAULT_MAX_MESSAGE_SIZE, GOB
from .client import DEFAULT_CONNECT_TIMEOUT
from .client import Client as _TwistedClient
from .client import connect as _connect
from .context import Metadata
from .discovery import StaticDiscovery
from .etcd import DEFAULT_PREFIX, EtcdClient, EtcdDiscovery
from .interfaces import IDiscovery, ISelector
from .registry import RegistryDiscovery, agent_request
from .xclient import FailMode, Hedge
from .xclient import XClient as _TwistedXClient

__all__ = ["STOP_TIMEOUT", "Client", "XClient", "connect"]

STOP_TIMEOUT = 5.0
"""Seconds the interpreter's exit waits for the reactor thread to stop (and
the first use for it to start)."""


class _ReactorThread:
    """The global reactor, run in one daemon thread from the first use to
    the interpreter's exit."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._reactor: Any = None

    def reactor(self) -> Any:
        """The running reactor, started on first use.

        :raises RuntimeError: called in the reactor's thread, or another
            reactor runs (or ran) in this process.
        """
        thread = self._thread
        if thread is not None and thread.ident == threading.get_ident():
            raise RuntimeError(
                "txgeerpc.blocking was called in the reactor's own thread (from a "
                "callback or a handler?), where it would wait forever: use the "
                "Twisted API there (txgeerpc.connect, Deferreds)"
            )
        with self._lock:
            if self._thread is None:
                self._start()
            return self._reactor

    @property
    def current(self) -> Any:
        """The reactor, for code running in its thread."""
        return self._reactor

    def _start(self) -> None:
        from twisted.internet import reactor

        if reactor.running or getattr(reactor, "_started", False):
            raise RuntimeError(
                "a Twisted reactor already runs in this process: txgeerpc.blocking "
                "will not start a second one; use the Twisted API (txgeerpc.connect) "
                "in that program"
            )
        if getattr(reactor, "_startedBefore", False):
            raise RuntimeError(
                "the Twisted reactor of this process has already run and stopped, "
                "and a reactor cannot be restarted: txgeerpc.blocking cannot start it"
            )
        running = threading.Event()
        reactor.callWhenRunning(running.set)
        thread = threading.Thread(
            target=reactor.run,
            kwargs={"installSignalHandlers": False},
            name="txgeerpc.blocking reactor",
            daemon=True,
        )
        thread.start()
        if not running.wait(STOP_TIMEOUT):
            raise RuntimeError(f"the reactor thread did not start within {STOP_TIMEOUT}s")
        self._reactor = reactor
        self._thread = thread
        atexit.register(self.stop)

    def stop(self) -> None:
        """Stop the reactor (its connections close) and wait for its thread
        (at most :data:`STOP_TIMEOUT` seconds)."""
        with self._lock:
            thread, reactor = self._thread, self._reactor
        if thread is None or not thread.is_alive():
            return
        if thread.ident == threading.get_ident():
            raise RuntimeError("the reactor thread cannot wait for itself to stop")
        reactor.callFromThread(_stop_if_running, reactor)
        thread.join(STOP_TIMEOUT)

    def wait(self, function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run ``function(*args, **kwargs)`` in the reactor thread and wait
        for its result (a Deferred's once it fires); its exception is raised
        here as it is.  An interrupted wait (Ctrl-C) cancels the Deferred."""
        reactor = self.reactor()
        started: list[Deferred[Any]] = []

        def start() -> Any:
            result = function(*args, **kwargs)
            if isinstance(result, Deferred):
                started.append(result)
            return result

        try:
            return blockingCallFromThread(reactor, start)
        except Exception:
            raise
        except BaseException:  # KeyboardInterrupt: the call must not go on alone
            reactor.callFromThread(_cancel, started)
            raise


def _stop_if_running(reactor: Any) -> None:
    if reactor.running:
        reactor.stop()


def _cancel(started: list[Deferred[Any]]) -> None:
    for d in started:
        d.cancel()


_runner = _ReactorThread()


class Client:
    """One connection to a GeeRPC server, called from any thread.  Get one
    from :func:`connect`; ``with`` closes it."""

    def __init__(self, client: _TwistedClient) -> None:
        self._client = client

    @property
    def available(self) -> bool:
        """True until the client is closed or its connection is lost."""
        return self._client.available

    @property
    def pending(self) -> int:
        """Calls sent and not yet answered."""
        return self._client.pending

    def call(
        self,
        service_method: str,
        argument: Any = None,
        *,
        timeout: float | None = None,
        result_type: Any = None,
        argument_type: Any = None,
        metadata: Metadata | None = None,
        trailers: dict[str, str | bytes] | None = None,
    ) -> Any:
        """Call ``Service.Method`` and wait for its reply (arguments as for
        :meth:`txgeerpc.Client.call`).

        :param timeout: seconds to wait for the reply; ``None`` waits forever.
        :returns: the reply.
        :raises ValueError: ``timeout`` is neither ``None`` nor positive.
        :raises RemoteError: the server answered with an error.
        :raises CallTimeout: no reply within ``timeout``.
        :raises CodecError: the argument or the reply did not convert.
        :raises ConnectionShutdown: the client was closed.
        :raises UnexpectedDisconnect: the connection was lost.
        """
        return _runner.wait(
            self._client.call,
            service_method,
            argument,
            timeout=timeout,
            result_type=result_type,
            argument_type=argument_type,
            metadata=metadata,
            trailers=trailers,
        )

    def close(self) -> None:
        """Close the connection and wait until it is closed; calls still
        waiting fail with :class:`~txgeerpc.errors.ConnectionShutdown`."""
        _runner.wait(self._client.close)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def connect(
    address: str,
    *,
    codec: str = GOB,
    handle_timeout: float | None = None,
    connect_timeout: float | None = DEFAULT_CONNECT_TIMEOUT,
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
    tls: Any = None,
    token: str | None = None,
) -> Client:
    """Connect to a GeeRPC server and wait until connected (arguments as for
    :func:`txgeerpc.connect`, without the reactor; ``tls`` and ``token`` as
    there: :mod:`txgeerpc.tls`, :mod:`txgeerpc.auth`).

    :param address: ``tcp@host:port``, ``http@host:port``, ``unix@/path``,
        or a Twisted client endpoint string.
    :raises RuntimeError: called in the reactor's thread, or the program runs
        a Twisted reactor of its own.
    :raises InvalidAddress: the address is not one.
    :raises UnsupportedCodec: no such codec.
    :raises ConnectTimeout: not connected within ``connect_timeout``.
    :raises ConnectFailed: refused, unreachable... (``.reason`` says why).
    """

    def dial() -> Deferred[_TwistedClient]:
        return _connect(
            _runner.current,
            address,
            codec=codec,
            handle_timeout=handle_timeout,
            connect_timeout=connect_timeout,
            max_message_size=max_message_size,
            tls=tls,
            token=token,
        )

    return Client(_runner.wait(dial))


_Built = tuple[IDiscovery, Callable[[], "Deferred[Any] | None"]]


class XClient:
    """Calls spread over the servers a discovery lists (the Twisted
    :class:`~txgeerpc.xclient.XClient`, waited for), from any thread.  Make
    one with :meth:`from_servers`, :meth:`from_registry` or
    :meth:`from_etcd`; ``with`` closes it.

    The options every constructor takes, by keyword: ``selector``
    (:mod:`txgeerpc.selection`; random by default), ``mode``
    (:class:`~txgeerpc.xclient.FailMode`), ``retries``, ``backoff``,
    ``idempotent``, ``cooldown``, ``max_cooldown`` (as for the Twisted
    XClient), and ``codec``, ``connect_timeout``, ``handle_timeout``,
    ``tls``, ``token`` for its connections (as for :func:`connect`).
    """

    def __init__(self, build: Callable[[Any], _Built], **options: Any) -> None:
        """Use the ``from_...`` constructors.

        :param build: run in the reactor thread: the discovery and what stops
            it.
        """
        self._xclient, self._stop_discovery = _runner.wait(self._build, build, options)

    @staticmethod
    def _build(
        build: Callable[[Any], _Built], options: dict[str, Any]
    ) -> tuple[_TwistedXClient, Callable[[], Deferred[Any] | None]]:
        reactor = _runner.current
        dialling = {
            name: options.pop(name)
            for name in ("codec", "connect_timeout", "handle_timeout", "tls", "token")
            if name in options
        }
        discovery, stop = build(reactor)
        try:
            xclient = _TwistedXClient(
                discovery,
                lambda address: _connect(reactor, address, **dialling),
                reactor,
                **options,
            )
        except BaseException:
            stop()
            raise
        return xclient, stop

    @classmethod
    def from_servers(
        cls,
        addresses: Iterable[str],
        *,
        selector: ISelector | None = None,
        mode: FailMode = FailMode.FAIL_FAST,
        **options: Any,
    ) -> XClient:
        """Over a fixed list of addresses (``tcp@host:port``...)."""
        listed = list(addresses)
        return cls(
            lambda reactor: (StaticDiscovery(listed), lambda: None),
            selector=selector,
            mode=mode,
            **options,
        )

    @classmethod
    def from_registry(
        cls,
        registry_url: str | Sequence[str],
        *,
        selector: ISelector | None = None,
        mode: FailMode = FailMode.FAIL_FAST,
        **options: Any,
    ) -> XClient:
        """Over the servers a ``twistd geerpc-registry`` lists (refreshed
        every 10 seconds, as :class:`~txgeerpc.registry.RegistryDiscovery`
        does).

        :param registry_url: ``http://host:port/_geerpc_/registry``, or
            several registries' URLs.
        """

        def build(reactor: Any) -> _Built:
            discovery = RegistryDiscovery(reactor, agent_request(reactor), registry_url)
            discovery.startService()
            return discovery, discovery.stopService

        return cls(build, selector=selector, mode=mode, **options)

    @classmethod
    def from_etcd(
        cls,
        endpoints: str | Sequence[str],
        *,
        prefix: str = DEFAULT_PREFIX,
        username: str | None = None,
        password: str | None = None,
        selector: ISelector | None = None,
        mode: FailMode = FailMode.FAIL_FAST,
        **options: Any,
    ) -> XClient:
        """Over the servers registered in etcd (``twistd geerpc --etcd``),
        followed with a watch.

        :param endpoints: etcd members' client URLs (``http://127.0.0.1:2379``),
            a list or comma-separated.
        :param prefix: the key prefix the servers register under.
        :raises ValueError: the endpoints are not URLs.
        """

        def build(reactor: Any) -> _Built:
            etcd = EtcdClient(reactor, endpoints, username=username, password=password)
            discovery = EtcdDiscovery(etcd, reactor, prefix=prefix)
            discovery.startService()

            def stop() -> Deferred[None]:
                discovery.stopService()
                return etcd.close()

            return discovery, stop

        return cls(build, selector=selector, mode=mode, **options)

    def call(
        self,
        service_method: str,
        argument: Any = None,
        *,
        timeout: float | None = None,
        key: str | None = None,
        result_type: Any = None,
        argument_type: Any = None,
        hedge: Hedge | None = None,
    ) -> Any:
        """Call one server and wait for its reply (as
        :meth:`txgeerpc.xclient.XClient.call`: ``timeout`` bounds each
        attempt; ``key`` is what hashing selectors hash).

        :raises NoServers: no server is known.
        :raises GeeRPCError: what the last attempt failed with (see
            :meth:`Client.call`).
        """
        return _runner.wait(
            self._xclient.call,
            service_method,
            argument,
            timeout=timeout,
            key=key,
            result_type=result_type,
            argument_type=argument_type,
            hedge=hedge,
        )

    def broadcast(
        self,
        service_method: str,
        argument: Any = None,
        *,
        timeout: float | None = None,
        result_type: Any = None,
        argument_type: Any = None,
    ) -> Any:
        """Call every server and wait: one reply when all succeed, else the
        first failure (the other calls are cancelled)."""
        return _runner.wait(
            self._xclient.broadcast,
            service_method,
            argument,
            timeout=timeout,
            result_type=result_type,
            argument_type=argument_type,
        )

    @property
    def calls_sent(self) -> dict[str, int]:
        """Calls sent to each server address (retries included)."""
        return dict(_runner.wait(lambda: dict(self._xclient.calls_sent)))

    def close(self) -> None:
        """Close every connection and stop the discovery; wait until done."""

        def close() -> Deferred[Any]:
            closing = self._xclient.close()
            stopping = self._stop_discovery()
            return DeferredList(
                [d for d in (closing, stopping) if isinstance(d, Deferred)],
                consumeErrors=True,
            )

        _runner.wait(close)

    def __enter__(self) -> XClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
