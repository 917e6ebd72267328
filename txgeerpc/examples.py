"""
The example services: the interop contract other peers and tests rely on
(keep these names).  ``twistd -n geerpc`` serves them when given no
``--service``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Optional

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import deferLater

from .errors import RPCError
from .gob import Uint

__all__ = [
    "Args",
    "Arith",
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

    def Sum(self, args: Args) -> int:
        return args.Num1 + args.Num2

    def Sleep(self, args: Args) -> Deferred[int]:
        """Sleep ``Num1`` seconds on the reactor, then return ``Num1 + Num2``
        (a negative duration returns at once, as Go's ``time.Sleep`` does)."""
        return deferLater(self._clock, max(args.Num1, 0), lambda: args.Num1 + args.Num2)


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


def register_examples(server: Server) -> None:
    """Register ``Foo`` (sleeping on the server's clock), ``Arith`` and ``Records``."""
    server.register(Foo(server.clock))
    server.register(Arith())
    server.register(Records())
