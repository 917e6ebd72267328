"""
The example services: the interop contract other peers and tests rely on
(keep these names).  ``twistd -n geerpc`` serves them when given no
``--service``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import deferLater

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


class ExampleError(Exception):
    """The error ``Arith.Fail`` raises; its message is sent as is."""


def register_examples(server: Server) -> None:
    """Register ``Foo`` (sleeping on the server's clock) and ``Arith``."""
    server.register(Foo(server.clock))
    server.register(Arith())
