"""``StopInOrder``: children stopped one at a time, last added first."""

from __future__ import annotations

from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred, fail
from twisted.logger import Logger
from twisted.trial.unittest import SynchronousTestCase

from txgeerpc._services import CloseOnStop, StopInOrder


class _Recording(Service):
    def __init__(self, name: str, stopped: list[str], result: Any = None) -> None:
        self.name = name
        self._stopped = stopped
        self._result = result

    def stopService(self) -> Any:
        super().stopService()
        self._stopped.append(self.name)
        return self._result


class StopInOrderTests(SynchronousTestCase):
    def test_each_waits_for_the_one_stopped_before(self) -> None:
        stopped: list[str] = []
        slow: Deferred[None] = Deferred()
        parent = StopInOrder()
        for name, result in [("first", None), ("second", None), ("third", slow)]:
            _Recording(name, stopped, result).setServiceParent(parent)
        parent.startService()
        done = parent.stopService()
        self.assertEqual(stopped, ["third"])  # the others wait for it
        self.assertNoResult(done)
        slow.callback(None)
        self.assertEqual(stopped, ["third", "second", "first"])
        self.assertIsNone(self.successResultOf(done))
        self.assertFalse(parent.running)

    def test_a_failure_is_logged_and_the_next_still_stopped(self) -> None:
        stopped: list[str] = []
        events: list[dict[str, Any]] = []
        self.patch(StopInOrder, "_log", Logger(observer=events.append))
        parent = StopInOrder()
        _Recording("first", stopped).setServiceParent(parent)
        _Recording("broken", stopped, fail(RuntimeError("no"))).setServiceParent(parent)
        parent.startService()
        self.assertIsNone(self.successResultOf(parent.stopService()))
        self.assertEqual(stopped, ["broken", "first"])
        self.assertEqual([e["log_failure"].value.args for e in events], [("no",)])

    def test_close_on_stop_waits_for_the_close(self) -> None:
        closing: Deferred[None] = Deferred()
        service = CloseOnStop(lambda: closing)
        service.startService()
        stopped = service.stopService()
        self.assertNoResult(stopped)
        closing.callback(None)
        self.successResultOf(stopped)
