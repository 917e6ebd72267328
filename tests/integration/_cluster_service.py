"""
The service the cluster test's ``twistd geerpc`` servers load
(``--service tests.integration._cluster_service:Cluster``): it says which
process answered, after a delay that keeps calls in flight.
"""

from __future__ import annotations

import os

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import deferLater


class Cluster:
    """``Cluster.Who``: no side effects, so running a call twice is harmless
    (the test declares it idempotent).

    :param clock: what the delay runs on (``twistd geerpc`` passes the reactor).
    """

    def __init__(self, clock: IReactorTime) -> None:
        self._clock = clock

    def Who(self, delay_ms: int) -> Deferred[int]:
        """This server's PID, ``delay_ms`` milliseconds after the call arrived."""
        return deferLater(self._clock, max(delay_ms, 0) / 1000, os.getpid)
