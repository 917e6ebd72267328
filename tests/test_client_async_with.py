"""``async with`` on the Twisted ``Client``, in a coroutine Twisted drives
(``ensureDeferred``), over the in-memory network."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import ensureDeferred
from twisted.trial.unittest import SynchronousTestCase

from txgeerpc import Client, connect
from txgeerpc.errors import RemoteError
from txgeerpc.testing import MemoryNetwork

from ._helpers import checked_clock, example_server


class AsyncWithTests(SynchronousTestCase):
    def setUp(self) -> None:
        clock = checked_clock(self)
        self.network = MemoryNetwork(clock)
        self.addCleanup(self.network.close)
        port = self.network.listen(example_server(clock).port_factory())
        self.address = f"tcp@{port.address}"
        self.seen: list[Client] = []

    def test_calls_then_closes(self) -> None:
        async def main() -> Any:
            async with await connect(self.network.reactor, self.address) as client:
                self.seen.append(client)
                return await client.call("Arith.Multiply", {"Num1": 6, "Num2": 7}, timeout=2)

        d = ensureDeferred(main())
        self.network.flush()
        self.assertEqual(self.successResultOf(d), 42)
        self.assertFalse(self.seen[0].available)

    def test_an_error_inside_closes_and_goes_on(self) -> None:
        async def main() -> None:
            async with await connect(self.network.reactor, self.address) as client:
                self.seen.append(client)
                await client.call("Arith.Missing", 1, timeout=2)

        d = ensureDeferred(main())
        self.network.flush()
        self.assertEqual(
            self.failureResultOf(d, RemoteError).value.message,
            "rpc server: can't find method Missing",
        )
        self.assertFalse(self.seen[0].available)
