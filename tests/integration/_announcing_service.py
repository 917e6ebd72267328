"""
A service that says in the server's log when a call has started
(``--service tests.integration._announcing_service:Announce``), so a test
can wait for that line instead of polling.
"""

from __future__ import annotations

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import deferLater
from twisted.logger import Logger


class Announce:
    """``Announce.Wait``: logs ``announce: waiting N s``, then answers N after N seconds."""

    _log = Logger()

    def __init__(self, clock: IReactorTime) -> None:
        self._clock = clock

    def Wait(self, seconds: int) -> Deferred[int]:
        self._log.info("announce: waiting {seconds} s", seconds=seconds)
        return deferLater(self._clock, seconds, lambda: seconds)
