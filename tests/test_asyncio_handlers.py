"""Coroutine handlers where an asyncio loop runs (Twisted's asyncio reactor):
they run as asyncio tasks, so they may await asyncio things, and the handle
timeout cancels the task.  Driven on a plain asyncio loop, with the
dispatcher's timeouts on a ``Clock``."""

from __future__ import annotations

import asyncio
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.trial.unittest import SynchronousTestCase

from txgeerpc._dispatch import Dispatcher
from txgeerpc._service import build_service
from txgeerpc._wire import EMPTY_STRUCT, Header

from ._helpers import checked_clock
from .test_dispatch import RecordingSender, identity


class AsyncioHandlers:
    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.cancelled = 0

    async def Nap(self, n: int) -> int:
        # An asyncio future: it needs a task on the running loop.
        later = asyncio.get_running_loop().create_future()
        asyncio.get_running_loop().call_soon(later.set_result, n + 1)
        return await later

    async def Wait(self) -> str:
        try:
            await self.gate.wait()
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        return "opened"

    async def Twisted(self) -> int:
        # A Deferred, awaited the asyncio way.
        later: Deferred[int] = Deferred()
        asyncio.get_running_loop().call_soon(later.callback, 3)
        return await later.asFuture(asyncio.get_running_loop())


class CoroutineHandlerTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.addCleanup(self.loop.close)
        self.service = AsyncioHandlers()
        self.methods = build_service(self.service).methods

    def drive(self, coroutine: Any) -> Any:
        return self.loop.run_until_complete(coroutine)

    def test_without_a_loop_it_is_driven_by_twisted(self) -> None:
        class Plain:
            async def Get(self) -> int:
                return await succeed(4)

        d = build_service(Plain()).methods["Get"].start(None)
        self.assertEqual(self.successResultOf(d), 4)

    def test_asyncio_awaitables_in_a_running_loop(self) -> None:
        async def main() -> Any:
            d = self.methods["Nap"].start(1)
            self.assertIsInstance(d, Deferred)
            return await d.asFuture(self.loop)

        self.assertEqual(self.drive(main()), 2)

    def test_deferred_awaited_as_future(self) -> None:
        async def main() -> Any:
            return await self.methods["Twisted"].start(None).asFuture(self.loop)

        self.assertEqual(self.drive(main()), 3)

    def test_cancelling_the_call_cancels_the_task(self) -> None:
        async def main() -> list[Any]:
            d = self.methods["Wait"].start(None)
            await asyncio.sleep(0)  # the task starts and waits on the gate
            results: list[Any] = []
            d.addBoth(results.append)
            d.cancel()
            self.assertEqual(results, [])  # it fires once the task has ended
            for _ in range(3):
                await asyncio.sleep(0)
            return results

        results = self.drive(main())
        self.assertEqual(self.service.cancelled, 1)
        self.assertEqual(len(results), 1)
        self.assertTrue(results[0].check(asyncio.CancelledError))
        self.assertEqual(asyncio.all_tasks(self.loop), set())

    def test_handle_timeout_cancels_the_task_and_replies(self) -> None:
        clock = checked_clock(self)
        sender = RecordingSender()
        dispatcher = Dispatcher(
            {"AsyncioHandlers": build_service(self.service)},
            sender,
            clock,
            250_000_000,
            lambda: None,
        )

        async def main() -> None:
            dispatcher.dispatch(Header("AsyncioHandlers.Wait", 1), identity, None)
            await asyncio.sleep(0)
            self.assertEqual((dispatcher.in_flight, sender.sent), (1, []))
            clock.advance(0.25)
            for _ in range(3):
                await asyncio.sleep(0)

        self.drive(main())
        self.assertEqual(self.service.cancelled, 1)
        self.assertEqual(
            sender.sent,
            [
                (
                    Header(
                        "AsyncioHandlers.Wait",
                        1,
                        "rpc server: request handle timeout: expect within 250ms",
                    ),
                    EMPTY_STRUCT,
                )
            ],
        )
        self.assertEqual(dispatcher.in_flight, 0)
