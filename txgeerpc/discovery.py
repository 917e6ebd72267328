"""
Where the servers are, for an :class:`~txgeerpc.xclient.XClient` (an
:class:`~txgeerpc.interfaces.IDiscovery`): :class:`StaticDiscovery`, a list
the caller keeps, and :class:`ServerList`, what every discovery shares
(:class:`~txgeerpc.registry.RegistryDiscovery` polls a GeeRPC registry,
:class:`~txgeerpc.etcd.EtcdDiscovery` watches etcd).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger
from zope.interface import implementer

from .interfaces import IDiscovery

__all__ = ["ServerList", "StaticDiscovery"]

Listener = Callable[[list[str]], None]


class ServerList:
    """What a discovery's users see: its list (copied out), listeners told
    of every change, and :meth:`ready` for the first list.  A discovery
    calls :meth:`_change` with each new list and :meth:`_first_ended` once
    its first attempt has ended, and says in :meth:`_first_coming` whether
    one is still to end."""

    def __init__(self) -> None:
        self._servers: list[str] = []
        self._listeners: list[Listener] = []
        self._ready: list[Deferred[None]] = []
        self._first_done = False

    def servers(self) -> list[str]:
        """The last known list (a copy); empty before the first."""
        return list(self._servers)

    def on_change(self, listener: Listener) -> Callable[[], None]:
        """Call ``listener(servers)`` after every change, until the returned
        function is called."""
        return _subscribe(self._listeners, listener)

    def ready(self) -> Deferred[None]:
        """Fires once the first attempt at a list has ended, well or not (at
        once if none is under way or coming: the discovery is not running)."""
        if self._first_done or not self._first_coming():
            return succeed(None)
        waiter: Deferred[None] = Deferred()
        self._ready.append(waiter)
        return waiter

    def _first_coming(self) -> bool:
        return False

    def _change(self, servers: list[str]) -> bool:
        """Make ``servers`` the list, telling the listeners; False if it was already."""
        if servers == self._servers:
            return False
        self._servers = servers
        _tell(self._listeners, self.servers())
        return True

    def _first_ended(self) -> None:
        self._first_done = True
        waiters, self._ready = self._ready, []
        for waiter in waiters:
            waiter.callback(None)


@implementer(IDiscovery)
class StaticDiscovery(ServerList):
    """A list the caller keeps up to date with :meth:`update`."""

    def __init__(self, servers: Iterable[str] = ()) -> None:
        super().__init__()
        self._servers = list(servers)
        self._first_done = True

    def update(self, servers: Iterable[str]) -> None:
        """Replace the list (copied, unlike the reference, defect 31); the
        listeners are told even when it is the same."""
        self._servers = list(servers)
        _tell(self._listeners, self.servers())


_log = Logger()


def _subscribe(listeners: list[Listener], listener: Listener) -> Callable[[], None]:
    listeners.append(listener)

    def unsubscribe() -> None:
        if listener in listeners:
            listeners.remove(listener)

    return unsubscribe


def _tell(listeners: list[Listener], servers: list[str]) -> None:
    """Every listener hears of the change, whatever the others raise."""
    for listener in list(listeners):
        try:
            listener(list(servers))
        except Exception:
            _log.failure("discovery: a listener failed on {servers}", servers=servers)
