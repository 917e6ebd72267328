"""
Service-tree pieces the twistd plugins share.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.application.service import MultiService, Service
from twisted.internet.defer import Deferred, maybeDeferred, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure


class StopInOrder(MultiService):
    """A :class:`MultiService` that stops its children one at a time, the
    last added first, each once the one before has stopped (Twisted's stops
    them all at once).  So a registration added last leaves the registry
    while the server still listens, and a client added first is closed only
    once nothing uses it.  A child that fails to stop is logged, and the
    next is stopped all the same."""

    _log = Logger()

    def stopService(self) -> Deferred[None]:
        Service.stopService(self)
        d: Deferred[Any] = succeed(None)
        for service in reversed(list(self)):
            d.addCallback(self._stop, service)
            d.addErrback(self._failed, service)
        return d.addCallback(lambda _: None)

    @staticmethod
    def _stop(_: object, service: Any) -> Deferred[Any]:
        return maybeDeferred(service.stopService)

    def _failed(self, failure: Failure, service: Any) -> None:
        self._log.failure("stopping {service} failed", failure, service=service)


class CloseOnStop(Service):
    """Calls ``close`` when stopped, and waits for its Deferred."""

    def __init__(self, close: Callable[[], Deferred[None]]) -> None:
        self._close = close

    def stopService(self) -> Deferred[None]:
        super().stopService()
        return self._close()
