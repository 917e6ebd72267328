"""
:class:`~txgeerpc.etcd.EtcdClient` without etcd: what it asks of treq, and
its endpoint parsing.  (Against real etcd: ``tests/etcd/test_client.py``.)
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from txgeerpc.etcd import EtcdClient, normalize_endpoints


class _RecordingHTTP:
    """Stands in for treq's HTTPClient: records each request, never answers."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, dict[str, Any]]] = []
        self.pending: list[Deferred[Any]] = []

    def post(self, url: str, **options: Any) -> Deferred[Any]:
        self.requests.append((url, options))
        d: Deferred[Any] = Deferred()
        self.pending.append(d)
        return d


class TreqUseTests(SynchronousTestCase):
    def test_answers_are_not_buffered_by_treq(self) -> None:
        # treq keeps a copy of a buffered answer for later readers: for a
        # watch, every message for as long as it lasts.
        reactor = MemoryReactorClock()
        etcd = EtcdClient(reactor, "127.0.0.1:2379")
        http = _RecordingHTTP()
        etcd._http = http  # type: ignore[assignment]
        asked = etcd.get(b"k")
        watch = etcd.watch_prefix(b"/p/", 1, lambda events, revision: None)
        self.assertEqual(
            [(url, options["unbuffered"]) for url, options in http.requests],
            [("http://127.0.0.1:2379/v3/kv/range", True), ("http://127.0.0.1:2379/v3/watch", True)],
        )
        etcd.close()
        self.failureResultOf(asked, CancelledError)
        self.assertIsNone(self.successResultOf(watch.done))
        self.assertEqual(reactor.getDelayedCalls(), [])


class EndpointTests(SynchronousTestCase):
    def test_comma_separated_with_defaults(self) -> None:
        self.assertEqual(
            normalize_endpoints(" 127.0.0.1:2379, https://e:2379/ ,"),
            ["http://127.0.0.1:2379", "https://e:2379"],
        )

    def test_tls_makes_bare_endpoints_https(self) -> None:
        self.assertEqual(normalize_endpoints(["e:1"], tls=True), ["https://e:1"])

    def test_refused(self) -> None:
        self.assertRaises(ValueError, normalize_endpoints, "")
        self.assertRaises(ValueError, normalize_endpoints, "unix:///run/etcd.sock")

    def test_credentials_go_together(self) -> None:
        self.assertRaises(ValueError, EtcdClient, MemoryReactorClock(), "e:1", username="root")
