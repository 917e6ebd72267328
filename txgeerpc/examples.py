"""
The example services: the interop contract other peers and tests rely on
(keep these names).  ``twistd -n geerpc`` serves them when given no
``--service``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Optional

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import deferLater

from .client import Client, connect
from .context import CallContext, Interceptor
from .errors import GeeRPCError, RPCError
from .gob import Uint

__all__ = [
    "Args",
    "Arith",
    "Chain",
    "ContextInfo",
    "Ctx",
    "ExampleError",
    "Foo",
    "Point",
    "Record",
    "Records",
    "register_examples",
]

if TYPE_CHECKING:
    from .server import Server


@dataclass
class Args:
    Num1: int = 0
    Num2: int = 0


class Foo:
    """``Foo.Sum`` and ``Foo.Sleep``.

    :param clock: what ``Sleep`` sleeps on (the reactor, or a test Clock).
    """

    def __init__(self, clock: IReactorTime) -> None:
        self._clock = clock
        self.sleeps_cancelled = 0
        """Sleeps cancelled before their end (a client's cancel, a budget run
        out, a timeout): ``Ctx.Cancelled`` answers it."""

    def Sum(self, args: Args) -> int:
        return args.Num1 + args.Num2

    def Sleep(self, args: Args) -> Deferred[int]:
        """Sleep ``Num1`` seconds on the reactor, then return ``Num1 + Num2``
        (a negative duration returns at once, as Go's ``time.Sleep`` does).
        Cancelling it stops the timer and counts in :attr:`sleeps_cancelled`."""
        d = deferLater(self._clock, max(args.Num1, 0), lambda: args.Num1 + args.Num2)

        def cleanup(failure: Any) -> Any:
            if failure.check(CancelledError):
                self.sleeps_cancelled += 1
            return failure

        return d.addErrback(cleanup)


class Arith:
    """Arithmetic and echo."""

    def Multiply(self, args: Args) -> int:
        return args.Num1 * args.Num2

    def Divide(self, args: Args) -> int:
        if args.Num2 == 0:
            raise ZeroDivisionError("divide by zero")
        # Go's integer division truncates toward zero.
        quotient = abs(args.Num1) // abs(args.Num2)
        return quotient if (args.Num1 >= 0) == (args.Num2 >= 0) else -quotient

    def Echo(self, text: str) -> str:
        return text

    def Fail(self, text: str) -> None:
        """Fail with exactly ``text`` as the error."""
        raise ExampleError(text)


class ExampleError(RPCError):
    """The error ``Arith.Fail`` raises; its message is sent as is."""


@dataclass
class Point:
    X: int = 0
    Y: int = 0


@dataclass
class Record:
    """Every shape gob carries, for interop tests (Go: ``Record`` in
    ``tests/interop/geepeer``).  ``weight`` shows a snake_case field travelling
    under an exported Go name."""

    Name: str = ""
    ID: Uint = 0
    Score: float = 0.0
    Active: bool = False
    Data: bytes = b""
    Tags: list[str] = field(default_factory=list)
    Points: list[Point] = field(default_factory=list)
    Counts: dict[str, int] = field(default_factory=dict)
    Matrix: list[list[float]] = field(default_factory=list)
    Z: complex = 0j
    Child: Optional[Record] = None  # noqa: UP045 - Go's *Record
    weight: int = field(default=0, metadata={"go_name": "Weight"})
    Extra: Any = None


class Records:
    """Echo and inspect :class:`Record` values."""

    def Echo(self, record: Record) -> Record:
        return record

    def Keys(self, counts: dict[str, int]) -> list[str]:
        """The keys, sorted (by code point, as Go sorts strings)."""
        return sorted(counts)


@dataclass
class Chain:
    """``Ctx.Info``'s argument: the hops to call next (``tcp@host:port``...,
    each calls the following ones), the seconds each hop spends waiting
    first (``Spend``: its server can cancel it meanwhile), then the seconds
    of work it does without yielding (``Work``: CPU-bound, so nothing can
    interrupt it, and the next hop may be called with a spent budget)."""

    Hops: list[str] = field(default_factory=list)
    Spend: float = 0.0
    Work: float = 0.0


@dataclass
class ContextInfo:
    """What ``Ctx.Info`` saw: its call's metadata, the budget it had left
    when it started (``HasBudget`` false: none), and the next hop's answer
    (or the error it got from it)."""

    Metadata: dict[str, str] = field(default_factory=dict)
    Budget: float = 0.0
    HasBudget: bool = False
    Next: Optional[ContextInfo] = None  # noqa: UP045 - Go's *ContextInfo
    Error: str = ""


class Ctx:
    """The call context made visible (``python -m txgeerpc call --timeout
    --meta`` shows it): ``Ctx.Info`` answers the metadata and budget it got,
    and calls the next hop under what is left (over one connection per hop,
    kept for the next calls); ``Ctx.Cancelled`` counts the ``Foo.Sleep``
    handlers cancelled so far.

    :param reactor: what the next hops are dialled with and ``Spend`` sleeps on.
    :param foo: the ``Foo`` whose cancelled sleeps ``Cancelled`` reports.
    :param interceptors: the next hops' clients' interceptors (``twistd
        geerpc --otel`` gives :func:`txgeerpc.otel.client_interceptor`).
    """

    def __init__(self, reactor: Any, foo: Foo, interceptors: Sequence[Interceptor] = ()) -> None:
        self._reactor = reactor
        self._foo = foo
        self._interceptors = tuple(interceptors)
        self._clients: dict[str, Client] = {}

    async def Info(self, chain: Chain, *, context: CallContext) -> ContextInfo:
        left = context.remaining()
        info = ContextInfo(
            Metadata={
                key: value if isinstance(value, str) else value.hex()
                for key, value in sorted(context.metadata.items())
            },
            Budget=left if left is not None else 0.0,
            HasBudget=left is not None,
        )
        if chain.Spend > 0:
            await deferLater(self._reactor, chain.Spend, lambda: None)
        if chain.Hops:
            try:
                client = await self._client(chain.Hops[0])
                if chain.Work > 0:
                    _work(chain.Work)
                trailers: dict[str, str | bytes] = {}
                info.Next = await client.call(
                    "Ctx.Info",
                    Chain(Hops=chain.Hops[1:], Spend=chain.Spend, Work=chain.Work),
                    result_type=ContextInfo,
                    metadata={
                        key: value
                        for key, value in context.metadata.items()
                        if not key.startswith("txgeerpc-")
                    },
                    trailers=trailers,
                    context=context,
                )
            except GeeRPCError as error:
                info.Error = str(error)
        elif chain.Work > 0:
            _work(chain.Work)
        context.trailers["budget-left"] = repr(context.remaining())
        return info

    def Cancelled(self) -> int:
        return self._foo.sleeps_cancelled

    async def _client(self, address: str) -> Client:
        """The connection to a next hop: the one kept from an earlier call
        while it is open, else a new one (kept for the next calls)."""
        kept = self._clients.get(address)
        if kept is not None and kept.available:
            return kept
        client = await connect(self._reactor, address, interceptors=self._interceptors)
        kept = self._clients.get(address)
        if kept is not None and kept.available:  # another call dialled meanwhile
            client.close()
            return kept
        self._clients[address] = client
        return client


def _work(seconds: float) -> None:
    """Busy the CPU for ``seconds`` without yielding to the reactor."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass


def register_examples(server: Server, client_interceptors: Sequence[Interceptor] = ()) -> None:
    """Register ``Foo`` (sleeping on the server's clock), ``Arith``,
    ``Records`` and ``Ctx`` (whose next hops' clients get
    ``client_interceptors``)."""
    foo = Foo(server.clock)
    server.register(foo)
    server.register(Arith())
    server.register(Records())
    server.register(Ctx(server.clock, foo, client_interceptors))
