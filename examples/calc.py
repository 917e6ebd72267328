# calc.py
from dataclasses import dataclass

from twisted.internet.task import deferLater


@dataclass
class Pair:
    A: int
    B: int


class Calc:
    def __init__(self, clock):
        self._clock = clock

    def Add(self, pair: Pair) -> int:
        return pair.A + pair.B

    async def SlowAdd(self, pair: Pair) -> int:
        await deferLater(self._clock, 1.0, lambda: None)
        return pair.A + pair.B

    def Div(self, pair: Pair) -> float:
        if pair.B == 0:
            raise ValueError("division by zero")   # the client gets exactly this text
        return pair.A / pair.B
