"""What both twistd plugins share (txgeerpc._twistd), and services that a
MultiService may stop without having started them."""

from __future__ import annotations

import io
import sys
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.protocol import Factory
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.error import SchemeNotSupported

from txgeerpc._http_client import quiet_agent
from txgeerpc._twistd import Built, Listener, StartupError, _reason, make_service
from txgeerpc.registry import MemoryStore, RegistryDiscovery, RegistryPurge


class _Port:
    def __init__(self) -> None:
        self.stopped = False

    def stopListening(self) -> Deferred[None]:
        self.stopped = True
        return succeed(None)


class _Endpoint:
    """Listens at once ("now") or later (fire ``later``)."""

    def __init__(self, outcome: str) -> None:
        self.outcome = outcome
        self.later: Deferred[Any] = Deferred()
        self.port = _Port()

    def listen(self, factory: Any) -> Deferred[Any]:
        if self.outcome == "now":
            return succeed(self.port)
        return self.later


def listener(reactor: Any, endpoint: _Endpoint) -> Listener:
    made = Listener(reactor, "tcp:0:interface=127.0.0.1", Factory())
    made._endpoint = endpoint  # type: ignore[assignment]
    return made


class _Reactor(MemoryReactorClock):
    def __init__(self) -> None:
        super().__init__()
        self.running = True
        self.stops = 0

    def stop(self) -> None:
        self.stops += 1


class ListenerTests(SynchronousTestCase):
    def test_a_listen_failing_later_stops_the_reactor(self) -> None:
        """An endpoint that listens asynchronously and then fails must not
        leave the process serving nothing."""
        reactor = _Reactor()
        endpoint = _Endpoint("later")
        made = listener(reactor, endpoint)
        made.listen()
        self.assertEqual(reactor.stops, 0)
        endpoint.later.errback(Failure(OSError(98, "Address already in use")))
        self.assertEqual(reactor.stops, 1)
        self.assertIsNone(made.port)
        self.flushLoggedErrors()

    def test_a_listen_cancelled_by_a_stop_is_quiet(self) -> None:
        reactor = _Reactor()
        endpoint = _Endpoint("later")
        made = listener(reactor, endpoint)
        made.listen()
        made.stopService()
        self.assertEqual(reactor.stops, 0)

    def test_listeners_opened_before_one_that_fails_are_closed(self) -> None:
        reactor = _Reactor()
        first, second = _Endpoint("now"), _Endpoint("now")
        refused: Deferred[Any] = Deferred()
        refused.errback(Failure(OSError(98, "Address already in use")))
        second.listen = lambda factory: refused  # type: ignore[method-assign]
        listeners = (listener(reactor, first), listener(reactor, second))
        built = Built(service=None, listeners=listeners)  # type: ignore[arg-type]
        stderr = io.StringIO()
        self.patch(sys, "stderr", stderr)
        with self.assertRaises(SystemExit) as exited:
            make_service("geerpc", lambda config, reactor: built, None, reactor)
        self.assertEqual(exited.exception.code, 1)
        self.assertTrue(first.port.stopped)
        self.assertEqual(
            stderr.getvalue(),
            "twistd geerpc: cannot listen on tcp:0:interface=127.0.0.1: Address already in use\n",
        )

    def test_an_unknown_endpoint_is_a_startup_error(self) -> None:
        with self.assertRaises(StartupError) as raised:
            Listener(MemoryReactorClock(), "garbage", Factory())
        self.assertEqual(
            str(raised.exception), "--listen garbage: Unknown endpoint type: 'garbage'"
        )

    def test_a_failed_symlink_names_its_target(self) -> None:
        # A unix socket's lock file: symlink(PID, path) names the PID first.
        error = OSError(2, "No such file or directory", "12345", None, "/no/dir/sock.lock")
        self.assertEqual(_reason(error), "No such file or directory: '/no/dir/sock.lock'")
        error = OSError(2, "No such file or directory", "key.pem")
        self.assertEqual(_reason(error), "No such file or directory: 'key.pem'")


class StopWithoutStartTests(SynchronousTestCase):
    """A MultiService stops every child, started or not."""

    def test_registry_purge(self) -> None:
        purge = RegistryPurge(MemoryStore(30), Clock(), 1)
        self.assertIsNone(self.successResultOf(purge.stopService()))

    def test_registry_discovery(self) -> None:
        discovery = RegistryDiscovery(Clock(), lambda *a: Deferred(), "http://127.0.0.1:1/r")
        self.assertIsNone(self.successResultOf(discovery.stopService()))


class QuietAgentTests(SynchronousTestCase):
    def test_an_unsupported_scheme_fails_the_deferred(self) -> None:
        d = quiet_agent(MemoryReactorClock()).request(b"GET", b"ftp://127.0.0.1/x")
        self.failureResultOf(d, SchemeNotSupported)
