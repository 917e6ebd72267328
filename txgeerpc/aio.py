"""
txgeerpc for asyncio programs: calls that return asyncio futures.

::

    import asyncio
    from txgeerpc import aio

    async def main():
        async with aio.connect("tcp@127.0.0.1:7001") as client:
            print(await client.call("Arith.Multiply", {"Num1": 6, "Num2": 7}, timeout=2))

    asyncio.run(main())

Twisted runs underneath, as its asyncio reactor
(``twisted.internet.asyncioreactor``) on the running loop: the first
:func:`connect` installs it, unless it is already there (``twistd -r asyncio``).

Limits:

- it must be the first reactor of the process: nothing may have installed
  another (importing ``twisted.internet.reactor`` installs the default one);
- one loop per process: the reactor stays on the loop it was installed on, so
  a second ``asyncio.run`` (a new loop) cannot use it;
- close what you open before the loop ends (``async with`` does): the loop's
  end does not close connections for you.

Failures are those of :meth:`txgeerpc.Client.call` (from
:mod:`txgeerpc.errors`), raised as they are; cancelling a call's future
cancels the call (its entry is removed, a late reply is dropped).
"""

from __future__ import annotations

import asyncio
import sys
import threading
from collections.abc import Generator
from typing import Any

from twisted.internet.defer import Deferred

from ._wire import DEFAULT_MAX_MESSAGE_SIZE, GOB
from .client import DEFAULT_CONNECT_TIMEOUT
from .client import Client as _TwistedClient
from .client import connect as _connect
from .context import Metadata

__all__ = ["Client", "Connecting", "connect", "reactor"]


def reactor() -> Any:
    """Twisted's asyncio reactor on the running loop, installed (and
    started) on first use.

    :raises RuntimeError: no asyncio loop is running; another reactor is
        installed; the asyncio reactor is on another loop.
    """
    loop = asyncio.get_running_loop()
    if "twisted.internet.reactor" not in sys.modules:
        from twisted.internet import asyncioreactor

        asyncioreactor.install(loop)
    from twisted.internet import reactor as installed
    from twisted.internet.asyncioreactor import AsyncioSelectorReactor

    if not isinstance(installed, AsyncioSelectorReactor):
        raise RuntimeError(
            f"txgeerpc.aio needs Twisted's asyncio reactor, but this process already "
            f"installed {type(installed).__module__}.{type(installed).__name__} "
            "(importing twisted.internet.reactor installs the default one): use "
            "txgeerpc.aio before anything installs a reactor"
        )
    if installed._asyncioEventloop is not loop:
        raise RuntimeError(
            "Twisted's asyncio reactor of this process runs on another event loop: "
            "txgeerpc.aio works on one loop per process (one asyncio.run)"
        )
    if not installed.running and not installed._started:
        # Our loop runs it already; startRunning marks it running and fires
        # its startup triggers (the DNS thread pool starts then).  Its threads
        # are daemons, so the interpreter's exit never waits for them.
        installed.getThreadPool().threadFactory = _DaemonThread
        installed.startRunning(installSignalHandlers=False)
    return installed


class _DaemonThread(threading.Thread):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, daemon=True, **kwargs)


def _future(d: Deferred[Any]) -> asyncio.Future[Any]:
    return d.asFuture(asyncio.get_running_loop())


class Client:
    """One connection to a GeeRPC server, for asyncio.  Get one from
    :func:`connect`; ``async with`` closes it."""

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
    ) -> asyncio.Future[Any]:
        """Call ``Service.Method`` (arguments as for
        :meth:`txgeerpc.Client.call`).

        :raises ValueError: ``timeout`` is neither ``None`` nor positive.
        :returns: an asyncio future of the reply; it fails with what
            :meth:`txgeerpc.Client.call`'s Deferred fails with.  Cancelling it
            cancels the call.
        """
        return _future(
            self._client.call(
                service_method,
                argument,
                timeout=timeout,
                result_type=result_type,
                argument_type=argument_type,
                metadata=metadata,
                trailers=trailers,
            )
        )

    def close(self) -> asyncio.Future[None]:
        """Close the connection; calls still waiting fail with
        :class:`~txgeerpc.errors.ConnectionShutdown`.

        :returns: a future that is done once the connection is closed.
        """
        return _future(self._client.close())

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()


class Connecting:
    """What :func:`connect` returns: ``await`` it for a :class:`Client`, or
    ``async with`` it for one that is closed at the end of the block."""

    def __init__(self, address: str, options: dict[str, Any]) -> None:
        self._address = address
        self._options = options
        self._client: Client | None = None

    async def _connect(self) -> Client:
        dialling = _connect(reactor(), self._address, **self._options)
        return Client(await _future(dialling))

    def __await__(self) -> Generator[Any, None, Client]:
        return self._connect().__await__()

    async def __aenter__(self) -> Client:
        self._client = await self._connect()
        return self._client

    async def __aexit__(self, *exc_info: object) -> None:
        if self._client is not None:
            await self._client.close()


def connect(
    address: str,
    *,
    codec: str = GOB,
    handle_timeout: float | None = None,
    connect_timeout: float | None = DEFAULT_CONNECT_TIMEOUT,
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
) -> Connecting:
    """Connect to a GeeRPC server (arguments as for :func:`txgeerpc.connect`,
    without the reactor): ``async with connect(...) as client:`` or
    ``client = await connect(...)``.  Call it with the loop running.

    Connecting fails with :class:`RuntimeError` (see :func:`reactor`),
    :class:`~txgeerpc.errors.InvalidAddress`,
    :class:`~txgeerpc.errors.UnsupportedCodec`,
    :class:`~txgeerpc.errors.ConnectTimeout` or
    :class:`~txgeerpc.errors.ConnectFailed`.
    """
    return Connecting(
        address,
        {
            "codec": codec,
            "handle_timeout": handle_timeout,
            "connect_timeout": connect_timeout,
            "max_message_size": max_message_size,
        },
    )
