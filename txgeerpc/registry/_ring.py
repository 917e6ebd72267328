"""
The fail-over ring the heartbeat and registry discovery share: registries
that keep one list between them (processes on one etcd), asked one at a
time, starting at the one that answered last.
"""

from __future__ import annotations

from collections.abc import Sequence

from ._wire import registry_urls


class FailoverRing:
    """Registries in the order given, and which one to ask.

    A round is the requests made since the last answer (or the last round
    that failed everywhere): :meth:`failed` moves on to the next registry and
    says whether it is still worth asking in this round.

    :param urls: one registry URL, or several.
    :raises ValueError: no URL at all.
    :ivar urls: every registry, in the order given.
    """

    def __init__(self, urls: str | Sequence[str]) -> None:
        self.urls = registry_urls(urls)
        self._current = 0
        self._answered = 0
        self._failed_in_round = 0

    @property
    def current(self) -> str:
        """The registry to ask next (the one that answered last, unless it
        failed since)."""
        return self.urls[self._current]

    def answered(self) -> None:
        """The current registry answered: it stays the one asked, and a new
        round starts."""
        self._answered = self._current
        self._failed_in_round = 0
        return None

    def failed(self) -> bool:
        """The current registry failed: move on to the next.

        :returns: True if that one has not failed in this round yet (ask it
            at once); False once every registry failed in a row, which ends
            the round (the next request starts a new one).
        """
        self._current = (self._current + 1) % len(self.urls)
        self._failed_in_round += 1
        if self._failed_in_round < len(self.urls):
            return True
        self._failed_in_round = 0
        return False

    def new_round(self) -> None:
        """End the round without moving on (a failure any registry would
        answer the same, or a request given up on)."""
        self._failed_in_round = 0

    def from_answered(self) -> list[str]:
        """Every registry once, the one that answered last first."""
        count = len(self.urls)
        return [self.urls[(self._answered + step) % count] for step in range(count)]
