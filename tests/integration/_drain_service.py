"""
The service the graceful-stop tests' ``twistd geerpc`` servers load
(``--service tests.integration._drain_service:Slow``): calls that take a given
time, and a log line per call started, so a test can wait until the server
runs as many as it sent.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import deferLater
from twisted.logger import Logger


class Slow:
    """``Slow.Wait(ms)``: answers ``ms`` after ``ms`` milliseconds.

    :param clock: what the wait runs on (``twistd geerpc`` passes the reactor).
    """

    _log = Logger()

    def __init__(self, clock: IReactorTime) -> None:
        self._clock = clock
        self._running = 0

    def Wait(self, ms: int) -> Deferred[int]:
        self._running += 1
        self._log.info("slow: {running} running", running=self._running)

        def done(result: Any) -> Any:
            self._running -= 1
            return result

        return deferLater(self._clock, max(ms, 0) / 1000, lambda: ms).addBoth(done)
