"""
:class:`ZooKeeperClient`: the few ZooKeeper operations txgeerpc needs, on
`kazoo <https://kazoo.readthedocs.io>`_, answered as Deferreds on the reactor.

kazoo runs on threads of its own (one for the connection, one for the
callbacks); nothing here blocks the reactor:

- every operation is sent with kazoo's ``*_async`` call (it queues the request
  and wakes kazoo's connection thread), and its answer comes back to the
  reactor thread with ``callFromThread``;
- watches and session state changes, which kazoo reports on its threads,
  are handed to the reactor thread the same way;
- only kazoo's start and stop block (they start and join kazoo's threads):
  they run on a one-thread pool the client owns, stopped by :meth:`close`.
  Nothing starts before the first request (``twistd`` forks after building
  its services: threads started before would not follow).

A request not answered within ``request_timeout`` fails with
:class:`~txgeerpc.errors.ZooKeeperUnavailable`, as does one sent while no
server can be reached (kazoo keeps trying to reconnect, every second at most,
and starts a new session when the old one expired).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal, TypeVar

import attrs
from twisted.internet import defer
from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool

from ..errors import ZooKeeperError, ZooKeeperUnavailable

DEFAULT_SESSION_TIMEOUT = 10.0
"""Seconds the session (and with it every ephemeral node) outlives a client
that stopped answering; the server bounds it (2 to 20 ticks by default)."""
DEFAULT_REQUEST_TIMEOUT = 5.0
"""Seconds one request has to be answered."""
RESEND_DELAY = 0.1
"""Seconds before a request whose connection dropped is sent again."""
_TRANSIENT = {"ConnectionLoss", "ConnectionClosedError"}
"""What a dropped or not yet established connection fails requests with."""
RECONNECT_MAX_DELAY = 1.0
"""Seconds between two connection attempts at most (kazoo's default: an hour)."""

SessionState = Literal["connected", "suspended", "lost"]
"""``connected``: a session is up; ``suspended``: the connection dropped, the
session may still be alive (kazoo is reconnecting); ``lost``: the session
expired (its ephemeral nodes and watches are gone; kazoo starts a new one)."""


def _kazoo() -> Any:
    try:
        import kazoo.client
        import kazoo.exceptions
        import kazoo.security
    except ImportError:
        raise ImportError(
            "ZooKeeper support needs kazoo: pip install txgeerpc[zookeeper]"
        ) from None
    import kazoo

    return kazoo


@attrs.frozen
class Stat:
    """What ZooKeeper says of a node besides its value."""

    version: int
    ephemeral_owner: int
    """The session owning the node (0: not ephemeral)."""


@attrs.frozen
class ZooKeeperTLS:
    """TLS to the ZooKeeper servers (their ``secureClientPort``): PEM files."""

    ca: str | None = None
    cert: str | None = None
    key: str | None = None


def normalize_hosts(hosts: str | Sequence[str]) -> str:
    """``host:port,host:port`` (kazoo's connection string; a ``/chroot``
    suffix allowed) from a string or a list.

    :raises ValueError: no host, or one without a port.
    """
    if isinstance(hosts, str):
        hosts = hosts.split(",")
    found = [host.strip() for host in hosts if host.strip()]
    if not found:
        raise ValueError("no ZooKeeper server given (HOST:PORT[,HOST:PORT...])")
    for index, host in enumerate(found):
        if index == len(found) - 1 and "/" in host:
            host = host.split("/", 1)[0]
        name, _, port = host.rpartition(":")
        if not name or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"{host!r} is not HOST:PORT")
    return ",".join(found)


def digest_acl(username: str, password: str, *, world_read: bool = True) -> list[Any]:
    """The ACL txgeerpc gives its nodes with digest credentials: every
    permission to ``username``, and reading (listing) to anyone if
    ``world_read``."""
    kazoo = _kazoo()
    acl = [kazoo.security.make_digest_acl(username, password, all=True)]
    if world_read:
        acl.append(kazoo.security.make_acl("world", "anyone", read=True))
    return acl


class ZooKeeperClient:
    """A ZooKeeper session (kazoo's) whose operations answer on the reactor.

    :param reactor: its ``callFromThread`` and clock are used.
    :param hosts: ``HOST:PORT[,HOST:PORT...]`` (a string or a list).
    :param session_timeout: seconds asked for the session (the server bounds it).
    :param request_timeout: seconds one request has to be answered.
    :param username: with ``password``: ``digest`` authentication, and nodes
        created with :func:`digest_acl` (unless ``acl`` says otherwise).
    :param acl: the ACL of the nodes created (kazoo ``ACL`` values); default:
        open to anyone, or :func:`digest_acl` with credentials.
    :param tls: connect with TLS.
    :param randomize_hosts: try the servers in a random order (kazoo's
        default); False: in the order given.
    :raises ValueError: bad ``hosts`` or timeouts.
    :raises ImportError: kazoo is not installed.

    Every Deferred of an operation fails with
    :class:`~txgeerpc.errors.ZooKeeperUnavailable` when no server answered
    in time or the session is gone, or :class:`~txgeerpc.errors.ZooKeeperError`
    when ZooKeeper refused (no permission, a bad path).
    """

    _log = Logger()

    def __init__(
        self,
        reactor: Any,
        hosts: str | Sequence[str],
        *,
        session_timeout: float = DEFAULT_SESSION_TIMEOUT,
        request_timeout: float = DEFAULT_REQUEST_TIMEOUT,
        username: str | None = None,
        password: str | None = None,
        acl: Sequence[Any] | None = None,
        tls: ZooKeeperTLS | None = None,
        randomize_hosts: bool = True,
    ) -> None:
        if not session_timeout > 0 or not request_timeout > 0:
            raise ValueError("timeouts must be more than 0")
        if (username is None) != (password is None):
            raise ValueError("username and password go together")
        kazoo = _kazoo()
        self.hosts = normalize_hosts(hosts)
        self._reactor = reactor
        self.request_timeout = request_timeout
        self._errors = kazoo.exceptions
        auth = [("digest", f"{username}:{password}")] if username is not None else None
        if acl is None and username is not None and password is not None:
            acl = digest_acl(username, password)
        tls_options: dict[str, Any] = {}
        if tls is not None:
            tls_options = {
                "use_ssl": True,
                "ca": tls.ca,
                "certfile": tls.cert,
                "keyfile": tls.key,
            }
        self._kazoo = kazoo.client.KazooClient(
            hosts=self.hosts,
            timeout=session_timeout,
            auth_data=auth,
            default_acl=list(acl) if acl is not None else None,
            connection_retry={
                "max_tries": -1,
                "delay": 0.1,
                "backoff": 2,
                "max_delay": RECONNECT_MAX_DELAY,
            },
            randomize_hosts=randomize_hosts,
            **tls_options,
        )
        self.state: SessionState | None = None
        """The session's last state (None before the first connection)."""
        self.sessions = 0
        """Sessions started (1 + one per expiry)."""
        self._listeners: list[Callable[[SessionState], None]] = []
        self._closing = False
        self._closed = False
        self._close_waiters: list[Deferred[None]] = []
        self._pool = ThreadPool(minthreads=0, maxthreads=1, name="txgeerpc-zookeeper")
        self._kazoo.add_listener(self._state_from_kazoo)
        # Started at the first request, not here: twistd forks (daemonizes)
        # after building its services, and threads do not survive a fork.
        self._starting = False
        self._started = False
        self._start_waiters: list[Deferred[None]] = []

    def _start(self) -> None:
        if self._starting:
            return
        self._starting = True
        self._pool.start()
        starting = deferToThreadPool(self._reactor, self._pool, self._kazoo.start_async)
        starting.addBoth(self._kazoo_started)

    def _kazoo_started(self, result: object) -> None:
        if isinstance(result, Failure):
            self._log.failure("zookeeper: starting kazoo failed", result)
        self._started = True
        waiters, self._start_waiters = self._start_waiters, []
        for waiter in waiters:
            waiter.callback(None)

    def _wait_started(self) -> Deferred[None]:
        """Fires once kazoo's threads are started (at once if they are)."""
        if self._started:
            return succeed(None)
        waiter: Deferred[None] = Deferred()
        self._start_waiters.append(waiter)
        self._start()
        return waiter

    # -- the session --------------------------------------------------------------

    def _state_from_kazoo(self, state: str) -> None:
        # kazoo's connection thread: hand over, return at once.
        self._reactor.callFromThread(self._state_changed, state.lower())

    def _state_changed(self, state: SessionState) -> None:
        if self._closing:
            return
        previous, self.state = self.state, state
        if state == "connected" and previous in (None, "lost"):
            self.sessions += 1
        if state == "lost":
            self._log.warn(
                "zookeeper: session expired (its ephemeral nodes and watches are gone);"
                " starting a new one"
            )
        elif state == "suspended":
            self._log.info("zookeeper: connection lost; reconnecting")
        elif previous is not None:
            self._log.info("zookeeper: connected again ({server})", server=self.server or "?")
        for listener in list(self._listeners):
            try:
                listener(state)
            except Exception:
                self._log.failure("zookeeper: a session listener failed")

    def on_session(self, listener: Callable[[SessionState], None]) -> Callable[[], None]:
        """Call ``listener(state)`` on the reactor thread at every session
        state change, until the returned function is called."""
        self._listeners.append(listener)

        def remove() -> None:
            if listener in self._listeners:
                self._listeners.remove(listener)

        return remove

    @property
    def session_id(self) -> int:
        """The current session's ID (0 before the first)."""
        client_id = self._kazoo.client_id
        return int(client_id[0]) if client_id else 0

    @property
    def server(self) -> str | None:
        """``host:port`` of the server the session is on now, if connected."""
        sock = getattr(self._kazoo._connection, "_socket", None)
        try:
            host, port = sock.getpeername()[:2] if sock is not None else (None, None)
        except OSError:
            return None
        return None if host is None else f"{host}:{port}"

    # -- requests -----------------------------------------------------------------

    def _request(self, send: Callable[[], Any], what: str) -> Deferred[Any]:
        """Send (again, after :data:`RESEND_DELAY`, while the connection is
        being re-established: a dropped connection fails what it carried
        with ``ConnectionLoss``) until answered, or ``request_timeout``."""
        if self._closing:
            return defer.fail(ZooKeeperUnavailable(f"{what}: the client is closed"))
        return Deferred.fromCoroutine(self._until_answered(send, what))

    async def _until_answered(self, send: Callable[[], Any], what: str) -> Any:
        deadline = self._reactor.seconds() + self.request_timeout
        while True:
            left = deadline - self._reactor.seconds()
            try:
                return await self._once(send, what, left)
            except ZooKeeperUnavailable as error:
                if (
                    self._closing
                    or error.kind not in _TRANSIENT
                    or deadline - self._reactor.seconds() <= RESEND_DELAY
                ):
                    raise
            await deferLater(self._reactor, RESEND_DELAY, lambda: None)

    def _once(self, send: Callable[[], Any], what: str, timeout: float) -> Deferred[Any]:
        d: Deferred[Any] = Deferred()

        def answered(result: Any) -> None:
            # kazoo's callback thread.
            self._reactor.callFromThread(deliver, result)

        def deliver(result: Any) -> None:
            if d.called:  # timed out, or cancelled
                return
            error = result.exception
            if error is None:
                d.callback(result.value)
            else:
                d.errback(self._translate(error, what))

        def send_now(_: object) -> Deferred[Any]:
            if self._closing:
                d.errback(ZooKeeperUnavailable(f"{what}: the client is closed"))
                return d
            try:
                send().rawlink(answered)
            except Exception as error:
                d.errback(self._translate(error, what))
            return d

        chained = self._wait_started().addCallback(send_now)
        chained.addTimeout(max(timeout, 0.0), self._reactor)

        def timed_out(reason: Failure) -> Failure:
            if reason.check(defer.TimeoutError):
                return Failure(
                    ZooKeeperUnavailable(f"{what}: no answer within {self.request_timeout:g}s")
                )
            return reason

        return chained.addErrback(timed_out)

    def _translate(self, error: BaseException, what: str) -> Exception:
        errors = self._errors
        if isinstance(error, ZooKeeperError):
            return error
        unavailable = (
            errors.ConnectionLoss,
            errors.SessionExpiredError,
            errors.ConnectionClosedError,
            errors.OperationTimeoutError,
        )
        name = type(error).__name__
        if isinstance(error, unavailable):
            return ZooKeeperUnavailable(f"{what}: {name}", kind=name)
        return ZooKeeperError(f"{what}: {name}{f' ({error})' if str(error) else ''}", kind=name)

    def create(self, path: str, value: bytes, *, ephemeral: bool = False) -> Deferred[bool]:
        """Create ``path`` (and its missing parents) holding ``value``; False
        if it exists already."""
        request = self._request(
            lambda: self._kazoo.create_async(path, value, ephemeral=ephemeral, makepath=True),
            f"create {path}",
        )
        return Deferred.fromCoroutine(_unless(request, True, {"NodeExistsError": False}))

    def get(
        self, path: str, watch: Callable[[Any], None] | None = None
    ) -> Deferred[tuple[bytes, Stat] | None]:
        """The value and :class:`Stat` of ``path``, or None if there is none.
        ``watch``: called once (on the reactor) at its next change or
        deletion (only if it exists)."""

        async def get() -> tuple[bytes, Stat] | None:
            request = self._request(
                lambda: self._kazoo.get_async(path, watch=self._watcher(watch)), f"get {path}"
            )
            try:
                value, stat = await request
            except ZooKeeperError as error:
                if error.kind == "NoNodeError":
                    return None
                raise
            return bytes(value or b""), Stat(stat.version, stat.ephemeralOwner)

        return Deferred.fromCoroutine(get())

    def exists(
        self, path: str, watch: Callable[[Any], None] | None = None
    ) -> Deferred[Stat | None]:
        """The :class:`Stat` of ``path``, or None.  ``watch``: called once (on
        the reactor) when it is created, changed or deleted."""

        async def exists() -> Stat | None:
            stat = await self._request(
                lambda: self._kazoo.exists_async(path, watch=self._watcher(watch)),
                f"exists {path}",
            )
            return None if stat is None else Stat(stat.version, stat.ephemeralOwner)

        return Deferred.fromCoroutine(exists())

    def set(self, path: str, value: bytes, version: int = -1) -> Deferred[bool]:
        """Write ``value``; False if ``path`` is gone or not at ``version``."""
        request = self._request(lambda: self._kazoo.set_async(path, value, version), f"set {path}")
        return Deferred.fromCoroutine(
            _unless(request, True, {"NoNodeError": False, "BadVersionError": False})
        )

    def delete(self, path: str, version: int = -1) -> Deferred[bool]:
        """Delete ``path``; False if it is gone or not at ``version``."""
        request = self._request(lambda: self._kazoo.delete_async(path, version), f"delete {path}")
        return Deferred.fromCoroutine(
            _unless(request, True, {"NoNodeError": False, "BadVersionError": False})
        )

    def children(
        self, path: str, watch: Callable[[Any], None] | None = None
    ) -> Deferred[list[str]]:
        """The names of ``path``'s children (none if it does not exist).
        ``watch``: called once (on the reactor) at the next change of the
        children (only if ``path`` exists)."""

        async def children() -> list[str]:
            request = self._request(
                lambda: self._kazoo.get_children_async(path, watch=self._watcher(watch)),
                f"list {path}",
            )
            try:
                return list(await request)
            except ZooKeeperError as error:
                if error.kind == "NoNodeError":
                    return []
                raise

        return Deferred.fromCoroutine(children())

    def _watcher(self, watch: Callable[[Any], None] | None) -> Callable[[Any], None] | None:
        if watch is None:
            return None
        reactor = self._reactor

        def fired(event: Any) -> None:
            # kazoo's callback thread.
            reactor.callFromThread(watch, event)

        return fired

    # -- closing ------------------------------------------------------------------

    def close(self) -> Deferred[None]:
        """End the session (its ephemeral nodes go at once) and stop kazoo's
        threads and the client's own.  Fires once they are stopped; never
        fails.  Closing again answers the same."""
        waiter: Deferred[None] = Deferred()
        if self._closed:
            waiter.callback(None)
            return waiter
        self._close_waiters.append(waiter)
        if self._closing:
            return waiter
        self._closing = True
        self._listeners.clear()
        kazoo = self._kazoo
        if not self._starting:  # never used: nothing to stop
            self._closed = True
            self._close_waiters.clear()
            waiter.callback(None)
            return waiter

        def stop(_: object) -> Deferred[None]:
            def blocking() -> None:
                kazoo.stop()
                kazoo.close()

            return deferToThreadPool(self._reactor, self._pool, blocking)

        def stopped(result: object) -> None:
            if isinstance(result, Failure):
                self._log.failure("zookeeper: stopping kazoo failed", result)
            self._pool.stop()
            self._closed = True
            waiters, self._close_waiters = self._close_waiters, []
            for each in waiters:
                each.callback(None)

        self._wait_started().addCallback(stop).addBoth(stopped)
        return waiter


_R = TypeVar("_R")


async def _unless(request: Deferred[Any], done: _R, answers: dict[str, _R]) -> _R:
    """``done`` once ``request`` succeeds, or what ``answers`` says for the
    kind of :class:`ZooKeeperError` it fails with."""
    try:
        await request
    except ZooKeeperError as error:
        if error.kind in answers:
            return answers[error.kind]
        raise
    return done


__all__ = ["ZooKeeperClient"]
