"""
The registry's entries on etcd: :class:`EtcdStore` over a :class:`FakeEtcd`
on a Clock (leases expiring, two registry processes sharing one etcd, races,
outages), and ``twistd geerpc-registry --etcd``'s options and service tree.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from twisted.application.service import IService, MultiService
from twisted.internet.defer import Deferred
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import Logger, formatEvent
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource
from twisted.web.server import Site

from txgeerpc import registry_tap
from txgeerpc._twistd_etcd import PASSWORD_ENVIRONMENT
from txgeerpc._web import mount
from txgeerpc.errors import EtcdError, EtcdUnavailable, RegistryFull
from txgeerpc.etcd import EtcdClient, KeyValue
from txgeerpc.etcd._keys import DEFAULT_PREFIX, server_key
from txgeerpc.etcd._store import EtcdStore
from txgeerpc.registry import Entry, RegistryPurge, RegistryResource
from txgeerpc.testing import FakeEtcd

from ._helpers import checked_clock
from .test_tap_etcd import TLSFiles

PATH = "/_geerpc_/registry"
A = "tcp@127.0.0.1:7001"
B = "tcp@127.0.0.1:7002"
C = "http@127.0.0.1:7003"


def key(address: str) -> bytes:
    return server_key(DEFAULT_PREFIX, address)


class _Hooked:
    """A FakeEtcd whose operations can run a hook first (another registry
    acting between two of this store's requests), or answer made-up values."""

    def __init__(self, fake: FakeEtcd) -> None:
        self.fake = fake
        self.before: dict[str, Any] = {}
        self.after: dict[str, Any] = {}

    def __getattr__(self, name: str) -> Any:
        operation = getattr(self.fake, name)

        def call(*args: Any, **kwargs: Any) -> Any:
            hook = self.before.pop(name, None)
            if hook is not None:
                hook()
            answer = operation(*args, **kwargs)
            hook = self.after.pop(name, None)
            if hook is not None:
                hook()
            return answer

        return call


class _CreateRetried(FakeEtcd):
    """A create applied, whose answer was lost (the member froze): the
    client sent it again, to another member, which found the key there,
    with the lease of the first attempt."""

    def create(self, key: bytes, value: bytes, *, lease: int = 0) -> Deferred[KeyValue | None]:
        super().create(key, value, lease=lease)
        return super().create(key, value, lease=lease)


class EtcdStoreTestCase(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = checked_clock(self)
        self.fake = FakeEtcd(self.clock)
        self.addCleanup(self.fake.close)  # runs first: no lease timer is left
        self.store = EtcdStore(self.fake, timeout=3)

    def result(self, d: Deferred[Any]) -> Any:
        return self.successResultOf(d)

    def kv(self, address: str) -> KeyValue | None:
        found: KeyValue | None = self.result(self.fake.get(key(address)))
        return found

    def addresses(self, store: EtcdStore | None = None) -> list[str]:
        entries = self.result((store or self.store).live(self.clock.seconds()))
        return [entry.address for entry in entries]


class HeartbeatTests(EtcdStoreTestCase):
    def test_join_then_refresh(self) -> None:
        self.assertIs(self.result(self.store.heartbeat(A, 100.0)), True)
        self.assertEqual(self.fake.requests, ["get", "count_prefix", "grant", "create"])
        first = self.kv(A)
        assert first is not None
        self.assertNotEqual(first.lease, 0)
        self.assertEqual(json.loads(first.value), {"address": A, "heartbeat": 100.0})
        del self.fake.requests[:]
        self.assertIs(self.result(self.store.heartbeat(A, 102.0)), False)
        self.assertEqual(self.fake.requests, ["get", "keep_alive", "put"])
        again = self.kv(A)
        assert again is not None
        self.assertEqual(again.lease, first.lease)  # the same lease, renewed
        self.assertEqual(self.result(self.store.live(105.0)), [Entry(A, 102.0)])
        self.assertEqual(self.store.timeout, 3)

    def test_two_registry_processes_share_one_etcd(self) -> None:
        other = EtcdStore(self.fake, timeout=3)
        self.assertTrue(self.result(self.store.heartbeat(B, 0)))
        self.assertTrue(self.result(other.heartbeat(A, 0)))
        self.assertEqual(self.addresses(), [A, B])
        self.assertEqual(self.addresses(other), [A, B])
        # Heartbeats for A through either process keep it alive for both.
        for step in range(4):
            self.clock.advance(2)
            through = self.store if step % 2 else other
            self.assertIs(self.result(through.heartbeat(A, self.clock.seconds())), False)
        self.assertEqual(self.addresses(), [A])  # B's heartbeats stopped 8 s ago
        self.assertEqual(
            self.result(other.live(self.clock.seconds())), [Entry(A, self.clock.seconds())]
        )

    def test_an_entry_expires_with_its_lease_and_is_reported_once(self) -> None:
        other = EtcdStore(self.fake, timeout=3)
        self.assertEqual(self.result(other.purge(0)), [])  # it lists A, B from now on
        self.result(self.store.heartbeat(A, 0))
        self.result(self.store.heartbeat(B, 0))
        self.assertEqual(self.result(self.store.purge(0)), [])
        self.clock.advance(2)
        self.result(self.store.heartbeat(B, 2))
        self.clock.advance(1)  # A's lease ends at 3
        self.assertEqual(self.addresses(), [B])
        self.assertEqual(self.result(self.store.purge(3)), [A])
        self.assertEqual(self.result(self.store.purge(3)), [])
        # The other process had listed neither yet: it learns of B only.
        self.assertEqual(self.result(other.purge(3)), [])
        self.clock.advance(2)
        self.assertEqual(self.addresses(other), [])
        self.assertEqual(self.result(other.purge(5)), [B])
        self.assertEqual(self.result(self.store.purge(5)), [B])
        # Joining again after expiry is new.
        self.assertIs(self.result(self.store.heartbeat(A, 5)), True)

    def test_the_registry_logs_expiry_through_its_purge_timer(self) -> None:
        events: list[dict[str, Any]] = []
        self.patch(RegistryPurge, "_log", Logger(observer=events.append))
        purge = RegistryPurge(self.store, self.clock, 1)
        purge.startService()
        self.addCleanup(purge.stopService)
        self.result(self.store.heartbeat(A, 0))
        for _ in range(4):  # the lease ends at 3
            self.clock.advance(1)
        self.assertEqual([formatEvent(e) for e in events], [f"registry: {A} expired"])

    def test_a_full_registry_refuses_new_entries(self) -> None:
        store = EtcdStore(self.fake, timeout=3, max_entries=2)
        self.result(store.heartbeat(A, 0))
        self.result(self.store.heartbeat(B, 0))  # counted too: etcd holds the count
        self.failureResultOf(store.heartbeat(C, 0), RegistryFull)
        self.assertNotIn("grant", self.fake.requests[-2:])
        self.assertIsNone(self.kv(C))
        self.assertIs(self.result(store.heartbeat(A, 1)), False)  # refreshing is allowed
        self.assertTrue(self.result(store.deregister(A)))
        self.assertIs(self.result(store.heartbeat(C, 1)), True)

    def test_an_entry_created_by_another_registry_at_the_same_moment(self) -> None:
        hooked = _Hooked(self.fake)
        store = EtcdStore(hooked, timeout=3)  # type: ignore[arg-type]
        other = EtcdStore(self.fake, timeout=3)
        joined: list[bool] = []
        hooked.before["create"] = lambda: joined.append(self.result(other.heartbeat(A, 0)))
        self.assertIs(self.result(store.heartbeat(A, 1)), False)
        self.assertEqual(joined, [True])  # the other one created it
        theirs = self.kv(A)
        assert theirs is not None
        self.assertEqual(json.loads(theirs.value)["heartbeat"], 1)  # our heartbeat, their lease
        # Ours was granted, then revoked: only theirs remains.
        granted = [lease for lease in (1000, 1001) if lease != theirs.lease]
        self.assertEqual(self.result(self.fake.keep_alive(granted[0])), 0)
        self.assertEqual(self.fake.requests.count("revoke"), 1)
        self.clock.advance(3)
        self.assertIsNone(self.kv(A))

    def test_a_create_applied_then_retried_counts_as_created(self) -> None:
        etcd = _CreateRetried(self.clock)
        self.addCleanup(etcd.close)
        store = EtcdStore(etcd, timeout=3)
        self.assertIs(self.result(store.heartbeat(A, 0)), True)
        self.assertEqual(etcd.requests, ["get", "count_prefix", "grant", "create", "create"])
        found = self.result(etcd.get(key(A)))
        assert found is not None
        self.assertEqual(found.lease, 1000)  # our lease, not revoked
        self.assertEqual(self.result(etcd.keep_alive(1000)), 3)
        self.clock.advance(2)
        self.assertIs(self.result(store.heartbeat(A, 2)), False)  # refreshed, not joined again
        self.assertNotIn("revoke", etcd.requests)
        self.assertEqual(self.result(store.purge(2)), [])

    def test_without_leases_an_existing_entry_is_not_taken_for_ours(self) -> None:
        hooked = _Hooked(self.fake)
        hooked.before["create"] = lambda: self.result(self.fake.put(key(A), b"by hand"))
        store = EtcdStore(hooked, timeout=0)  # type: ignore[arg-type]
        self.assertIs(self.result(store.heartbeat(A, 0)), False)  # another's, refreshed
        self.assertEqual(self.fake.requests[-2:], ["create", "put"])

    def test_a_lease_ending_between_renewal_and_write(self) -> None:
        hooked = _Hooked(self.fake)
        store = EtcdStore(hooked, timeout=3)  # type: ignore[arg-type]
        self.result(store.heartbeat(A, 0))
        lease = self.kv(A).lease  # type: ignore[union-attr]
        hooked.after["keep_alive"] = lambda: self.result(self.fake.revoke(lease))
        del self.fake.requests[:]
        self.assertIs(self.result(store.heartbeat(A, 1)), True)  # it had gone: joined again
        self.assertEqual(
            self.fake.requests,
            ["get", "keep_alive", "revoke", "put", "count_prefix", "grant", "create"],
        )
        found = self.kv(A)
        assert found is not None
        self.assertNotEqual(found.lease, lease)

    def test_an_entry_that_keeps_changing_fails_the_heartbeat(self) -> None:
        ghost = KeyValue(key(A), b"", lease=99)  # its lease is always gone
        store = EtcdStore(_Ghostly(self.fake, ghost), timeout=3)  # type: ignore[arg-type]
        failure = self.failureResultOf(store.heartbeat(A, 0), EtcdError)
        self.assertIn("kept changing", str(failure.value))
        # Every lease granted along the way was revoked again.
        self.assertEqual(self.fake.requests.count("grant"), 3)
        self.assertEqual(self.fake.requests.count("revoke"), 3)

    def test_a_directly_registered_entry_keeps_its_own_lease(self) -> None:
        lease = self.result(self.fake.grant(10))
        self.result(self.fake.put(key(A), b"", lease=lease))
        self.assertIs(self.result(self.store.heartbeat(A, 1)), False)
        self.assertEqual(self.kv(A).lease, lease)  # type: ignore[union-attr]
        self.assertEqual(self.result(self.store.live(5)), [Entry(A, 1)])

    def test_a_key_without_a_lease_stays_without(self) -> None:
        self.result(self.fake.put(key(A), b"by hand"))
        self.assertIs(self.result(self.store.heartbeat(A, 1)), False)
        found = self.kv(A)
        assert found is not None
        self.assertEqual((found.lease, json.loads(found.value)["heartbeat"]), (0, 1))
        self.clock.advance(100)
        self.assertEqual(self.addresses(), [A])

    def test_timeout_0_entries_have_no_lease(self) -> None:
        store = EtcdStore(self.fake, timeout=0)
        self.assertIs(self.result(store.heartbeat(A, 0)), True)
        self.assertIs(self.result(store.heartbeat(A, 1)), False)
        self.assertNotIn("grant", self.fake.requests)
        self.assertEqual(self.kv(A).lease, 0)  # type: ignore[union-attr]
        self.clock.advance(10_000)
        self.assertEqual(self.result(store.live(10_000)), [Entry(A, 1)])
        self.assertEqual(self.result(store.purge(10_000)), [])
        self.assertTrue(self.result(store.deregister(A)))
        self.assertEqual(self.fake.requests[-1], "delete")
        self.assertIsNone(self.kv(A))
        # A leased entry (another registry's) keeps its lease.
        self.result(self.store.heartbeat(B, 0))
        lease = self.kv(B).lease  # type: ignore[union-attr]
        self.assertIs(self.result(store.heartbeat(B, 1)), False)
        self.assertEqual(self.kv(B).lease, lease)  # type: ignore[union-attr]

    def test_bad_settings(self) -> None:
        self.assertRaises(ValueError, EtcdStore, self.fake, timeout=-1)
        self.assertRaises(ValueError, EtcdStore, self.fake, timeout=3, prefix="")
        self.assertRaises(ValueError, EtcdStore, self.fake, timeout=3, max_entries=0)
        self.assertEqual(EtcdStore(self.fake, timeout=0.2)._ttl, 1)
        self.assertEqual(EtcdStore(self.fake, timeout=2.5)._ttl, 3)


class _Ghostly:
    """Every get and create finds ``ghost``, whose lease is always gone."""

    def __init__(self, fake: FakeEtcd, ghost: KeyValue) -> None:
        self._fake = fake
        self._ghost = ghost

    def __getattr__(self, name: str) -> Any:
        return getattr(self._fake, name)

    def get(self, key: bytes) -> Deferred[KeyValue | None]:
        return self._fake.get(key).addCallback(lambda _: self._ghost)

    def create(self, key: bytes, value: bytes, *, lease: int = 0) -> Deferred[KeyValue | None]:
        return self._fake.get(key).addCallback(lambda _: self._ghost)


class DeregisterTests(EtcdStoreTestCase):
    def test_deregister_revokes_the_lease(self) -> None:
        self.result(self.store.heartbeat(A, 0))
        self.result(self.store.heartbeat(B, 0))
        self.assertEqual(self.result(self.store.purge(0)), [])
        lease = self.kv(A).lease  # type: ignore[union-attr]
        self.assertIs(self.result(self.store.deregister(A)), True)
        self.assertEqual(self.fake.requests[-2:], ["get", "revoke"])
        self.assertIsNone(self.kv(A))
        self.assertEqual(self.result(self.fake.keep_alive(lease)), 0)
        self.assertIs(self.result(self.store.deregister(A)), False)
        self.assertEqual(self.addresses(), [B])
        # It left; it did not expire.
        self.assertEqual(self.result(self.store.purge(1)), [])
        self.clock.advance(3)
        self.assertEqual(self.result(self.store.purge(3)), [B])

    def test_a_key_without_a_lease_is_deleted(self) -> None:
        self.result(self.fake.put(key(A), b""))
        self.assertIs(self.result(self.store.deregister(A)), True)
        self.assertEqual(self.fake.requests[-1], "delete")
        self.assertIsNone(self.kv(A))

    def test_deregistered_elsewhere_counts_as_expired_here(self) -> None:
        other = EtcdStore(self.fake, timeout=3)
        self.result(self.store.heartbeat(A, 0))
        self.result(other.purge(0))
        self.result(self.store.deregister(A))
        self.assertEqual(self.result(other.purge(1)), [A])
        self.assertEqual(self.result(self.store.purge(1)), [])

    def test_joining_again_after_deregistering_is_tracked(self) -> None:
        self.result(self.store.heartbeat(A, 0))
        self.result(self.store.deregister(A))
        self.result(self.store.heartbeat(A, 1))
        self.clock.advance(3)
        self.assertEqual(self.result(self.store.purge(4)), [A])


class ListingTests(EtcdStoreTestCase):
    def test_keys_that_name_no_server_are_skipped_and_logged_once(self) -> None:
        events: list[dict[str, Any]] = []
        self.patch(EtcdStore, "_log", Logger(observer=events.append))
        prefix = DEFAULT_PREFIX.encode()
        for junk in (b"junk", b"tcp@nohost", b"\xff\xfe", b"tcp@a:1,tcp@b:2"):
            self.result(self.fake.put(prefix + junk, b"x"))
        self.result(self.fake.put(key(B), b"not json"))
        self.result(self.fake.put(key(A), b'{"heartbeat": "soon"}'))
        self.result(self.fake.put(b"/elsewhere/" + A.encode(), b""))
        self.assertEqual(self.result(self.store.live(42)), [Entry(A, 42), Entry(B, 42)])
        self.assertEqual(self.result(self.store.live(43)), [Entry(A, 43), Entry(B, 43)])
        self.assertEqual(self.result(self.store.purge(43)), [])
        self.assertEqual(len(events), 4)
        self.assertIn("ignoring etcd key b'/geerpc/servers/junk'", formatEvent(events[0]))

    def test_another_prefix(self) -> None:
        store = EtcdStore(self.fake, timeout=3, prefix="/mine/")
        self.result(store.heartbeat(A, 0))
        self.result(self.store.heartbeat(B, 0))
        self.assertIsNotNone(self.result(self.fake.get(b"/mine/" + A.encode())))
        self.assertEqual(self.addresses(store), [A])
        self.assertEqual(self.addresses(), [B])


class UnavailableTests(EtcdStoreTestCase):
    def exchange(self, method: str, server: str | None = None) -> bytes:
        root = Resource()
        mount(root, PATH, RegistryResource(self.store, self.clock))
        channel = Site(root, reactor=self.clock).buildProtocol(None)
        transport = StringTransport()
        channel.makeConnection(transport)
        lines = [f"{method} {PATH} HTTP/1.1", "Host: x", "Content-Length: 0"]
        if server is not None:
            lines.append(f"X-Geerpc-Server: {server}")
        channel.dataReceived(("\r\n".join(lines) + "\r\n\r\n").encode())
        channel.connectionLost(None)
        return transport.value()

    def test_every_operation_fails_and_the_registry_answers_503(self) -> None:
        self.result(self.store.heartbeat(A, 0))
        self.fake.available = False
        self.failureResultOf(self.store.heartbeat(A, 1), EtcdUnavailable)
        self.failureResultOf(self.store.heartbeat(B, 1), EtcdUnavailable)
        self.failureResultOf(self.store.deregister(A), EtcdUnavailable)
        self.failureResultOf(self.store.live(1), EtcdUnavailable)
        self.failureResultOf(self.store.purge(1), EtcdUnavailable)
        for method, server in [("GET", None), ("POST", B), ("DELETE", A)]:
            answer = self.exchange(method, server)
            self.assertTrue(answer.startswith(b"HTTP/1.1 503 Service Unavailable\r\n"), answer)
            self.assertTrue(answer.endswith(b"\r\n\r\nregistry store unavailable\n"), answer)
        self.assertEqual(self.flushLoggedErrors(), [])  # an outage: a line each, no traceback
        self.fake.available = True
        self.assertTrue(self.exchange("GET").startswith(b"HTTP/1.1 200 OK\r\n"))
        self.assertEqual(self.addresses(), [A])

    def test_a_failure_after_the_grant_revokes_the_lease(self) -> None:
        hooked = _Hooked(self.fake)
        store = EtcdStore(hooked, timeout=3)  # type: ignore[arg-type]

        def outage() -> None:
            self.fake.available = False

        hooked.before["create"] = outage
        self.failureResultOf(store.heartbeat(A, 0), EtcdUnavailable)
        self.assertEqual(self.fake.requests[-2:], ["create", "revoke"])  # tried, failed too
        self.fake.available = True
        # The lease expires by itself.
        self.assertEqual(self.result(self.fake.keep_alive(1000)), 3)
        self.clock.advance(3)
        self.assertEqual(self.result(self.fake.keep_alive(1000)), 0)


# -- twistd geerpc-registry --etcd ------------------------------------------------


class RegistryEtcdOptionsTests(SynchronousTestCase):
    def parse(self, *argv: str) -> registry_tap.Options:
        options = registry_tap.Options()
        options.parseOptions(list(argv))
        return options

    def refused(self, *argv: str) -> str:
        with self.assertRaises(usage.UsageError) as raised:
            self.parse(*argv)
        return str(raised.exception)

    def file(self, content: str = "") -> str:
        # Not self.mktemp(): under pytest it leaves directories in the working one.
        directory = Path(tempfile.mkdtemp(prefix="txgeerpc-test-"))
        self.addCleanup(shutil.rmtree, directory, ignore_errors=True)
        path = directory / "file"
        path.write_text(content, encoding="utf-8")
        return str(path)

    def test_etcd_options(self) -> None:
        options = self.parse()
        self.assertEqual((options["etcd"], options["etcd-prefix"]), (None, DEFAULT_PREFIX))
        options = self.parse("--etcd", "http://127.0.0.1:2379,127.0.0.1:22379/", "--timeout", "0")
        self.assertEqual(options["etcd"], ["http://127.0.0.1:2379", "http://127.0.0.1:22379"])
        self.assertEqual(options["timeout"], 0)
        password = self.file("secret\n")
        options = self.parse("--etcd", "e:1", "--etcd-user", "u", "--etcd-password-file", password)
        self.assertEqual(options["etcd-password"], "secret")

    def test_errors(self) -> None:
        self.patch(
            os, "environ", {k: v for k, v in os.environ.items() if k != PASSWORD_ENVIRONMENT}
        )
        cert = self.file()
        etcd = ("--etcd", "http://127.0.0.1:2379")
        self.assertIn("go together", self.refused(*etcd, "--etcd-cert", cert))
        self.assertIn("no such file", self.refused(*etcd, "--etcd-ca", cert + ".missing"))
        self.assertIn("needs a password", self.refused(*etcd, "--etcd-user", "u"))
        self.assertIn("needs --etcd", self.refused("--etcd-user", "u"))
        self.assertIn("must not be empty", self.refused(*etcd, "--etcd-prefix", ""))
        self.assertIn("--etcd:", self.refused("--etcd", "ftp://x"))

    def test_etcd_timeout_must_be_finite_and_positive(self) -> None:
        etcd = ("--etcd", "http://127.0.0.1:2379")
        for value in ("nan", "inf", "0"):
            self.assertIn(
                "--etcd-timeout must be a finite number more than 0",
                self.refused(*etcd, "--etcd-timeout", value),
            )

    def test_bad_tls_files_are_usage_errors(self) -> None:
        pki = TLSFiles(self)
        etcd = ("--etcd", "127.0.0.1:2379")
        garbage = f"{pki.garbage!r}: not a PEM"
        self.assertIn(
            f"--etcd-ca {garbage} certificate", self.refused(*etcd, "--etcd-ca", pki.garbage)
        )
        self.assertIn(
            f"--etcd-key {garbage} private key",
            self.refused(*etcd, "--etcd-cert", pki.cert, "--etcd-key", pki.garbage),
        )
        self.assertIn(
            "keys do not match",
            self.refused(*etcd, "--etcd-cert", pki.cert, "--etcd-key", pki.other_key),
        )
        options = self.parse(
            *etcd, "--etcd-ca", pki.ca, "--etcd-cert", pki.cert, "--etcd-key", pki.key
        )
        self.assertEqual(options["etcd"], ["https://127.0.0.1:2379"])
        built = registry_tap.build(options, reactor=MemoryReactorClock())
        self.successResultOf(built.store._etcd.close())  # type: ignore[attr-defined]


def walk(tree: IService) -> list[IService]:
    """Every service in ``tree``, depth first."""
    found = [tree]
    if isinstance(tree, MultiService):
        for child in tree:
            found += walk(child)
    return found


class RegistryEtcdServiceTests(SynchronousTestCase):
    def service(self, *argv: str) -> Any:
        options = registry_tap.Options()
        options.parseOptions(["--listen", "tcp:0:interface=127.0.0.1", *argv])
        return registry_tap.build(options, reactor=MemoryReactorClock())

    def test_an_etcd_store_whose_client_is_closed_at_stop(self) -> None:
        events: list[dict[str, Any]] = []
        self.patch(registry_tap._StoreService, "_log", Logger(observer=events.append))
        built = self.service(
            *("--etcd", "127.0.0.1:2379", "--etcd-prefix", "/p/"),
            *("--timeout", "4", "--max-entries", "9"),
        )
        store, service = built.store, built.service
        self.assertIsInstance(store, EtcdStore)
        self.assertEqual((store.timeout, store.prefix, store.max_entries), (4, "/p/", 9))
        client = store._etcd
        self.assertIsInstance(client, EtcdClient)
        self.assertEqual(client.endpoints, ["http://127.0.0.1:2379"])
        # Stopped last: MultiService stops its children in reverse order.
        self.assertIsInstance(next(iter(service)), registry_tap._StoreService)
        service.privilegedStartService()
        service.startService()
        self.assertEqual(
            [formatEvent(e) for e in events],
            [
                "registry store: etcd at ['http://127.0.0.1:2379'], prefix '/p/'"
                " (timeout 4s, at most 9 entries)"
            ],
        )
        self.successResultOf(service.stopService())
        self.failureResultOf(client.get(b"k"), EtcdError)  # closed

    def test_stopping_closes_the_client(self) -> None:
        fakes: list[FakeEtcd] = []

        def client(config: Any, reactor: Any) -> FakeEtcd:
            fakes.append(FakeEtcd(reactor))
            return fakes[-1]

        self.patch(registry_tap._options, "client", client)
        built = self.service("--etcd", "127.0.0.1:2379", "--timeout", "0")
        self.assertEqual(built.store.timeout, 0)
        service = built.service
        service.startService()
        self.assertEqual(fakes[0].requests, [])
        service.stopService()
        self.assertEqual(fakes[0].requests, ["close"])

    def fake_client(self, *argv: str) -> tuple[Any, FakeEtcd, MemoryReactorClock]:
        """The service tree, on a FakeEtcd and a MemoryReactorClock, started."""
        fakes: list[FakeEtcd] = []

        def client(config: Any, reactor: Any) -> FakeEtcd:
            fakes.append(FakeEtcd(reactor))
            return fakes[-1]

        self.patch(registry_tap._options, "client", client)
        reactor = MemoryReactorClock()
        options = registry_tap.Options()
        options.parseOptions(["--listen", "tcp:0:interface=127.0.0.1", *argv])
        built = registry_tap.build(options, reactor=reactor)
        built.service.privilegedStartService()
        built.service.startService()
        return built, fakes[0], reactor

    def test_the_client_is_closed_after_the_listeners_and_the_requests_under_way(self) -> None:
        events: list[dict[str, Any]] = []
        self.patch(registry_tap._StoreService, "_log", Logger(observer=events.append))
        built, etcd, reactor = self.fake_client("--etcd", "127.0.0.1:2379")
        service = built.service
        [listener] = built.listeners
        listener_stopped: Deferred[None] = Deferred()
        stop_listening = listener.stopService

        def stop() -> Deferred[None]:
            stop_listening()
            return listener_stopped  # connections take a while to close

        self.patch(listener, "stopService", stop)
        etcd.delay = 1
        heartbeat = built.store.heartbeat(A, 0)  # four requests: four seconds
        stopped = service.stopService()
        self.assertFalse(listener.running)
        self.assertNotIn("close", etcd.requests)  # not while the listeners stop
        listener_stopped.callback(None)
        self.assertNotIn("close", etcd.requests)  # nor while a heartbeat is under way
        reactor.pump([1] * 4)
        self.assertIs(self.successResultOf(heartbeat), True)
        self.assertEqual(etcd.requests[-2:], ["create", "close"])
        self.assertIsNone(self.successResultOf(stopped))
        self.assertEqual(len(events), 1)  # the start line only: nothing cut short

    def test_requests_under_way_hold_the_close_back_for_the_etcd_timeout_at_most(self) -> None:
        events: list[dict[str, Any]] = []
        self.patch(registry_tap._StoreService, "_log", Logger(observer=events.append))
        built, etcd, reactor = self.fake_client("--etcd", "127.0.0.1:2379", "--etcd-timeout", "2")
        etcd.delay = 100
        heartbeat = built.store.heartbeat(A, 0)
        stopped = built.service.stopService()
        reactor.advance(1.9)
        self.assertNotIn("close", etcd.requests)
        reactor.advance(0.1)
        self.assertEqual(etcd.requests[-1], "close")
        self.assertIsNone(self.successResultOf(stopped))
        self.failureResultOf(heartbeat, EtcdError)  # cut short: the registry answers 503
        self.assertIn("closing the etcd client with 1 store operations", formatEvent(events[-1]))

    def test_no_request_under_way_closes_at_once(self) -> None:
        built, etcd, _ = self.fake_client("--etcd", "127.0.0.1:2379")
        self.assertIs(self.successResultOf(built.store.heartbeat(A, 0)), True)
        self.successResultOf(built.service.stopService())
        self.assertEqual(etcd.requests[-1], "close")

    def test_memory_without_etcd(self) -> None:
        events: list[dict[str, Any]] = []
        self.patch(registry_tap._StoreService, "_log", Logger(observer=events.append))
        built = self.service("--timeout", "2.5")
        self.assertNotIsInstance(built.store, EtcdStore)
        service = built.service
        service.startService()
        self.assertEqual(
            [formatEvent(e) for e in events],
            ["registry store: memory (timeout 2.5s, at most 10000 entries)"],
        )
        service.stopService()


class DirectEntryListingTests(SynchronousTestCase):
    def test_a_directly_registered_server_is_listed_as_alive_now(self) -> None:
        # Its lease renewals write nothing, so its registration time is not
        # its last heartbeat: a live lease means alive now.
        from twisted.internet.task import Clock

        from txgeerpc.etcd import EtcdRegistration

        clock = Clock()
        etcd = FakeEtcd(clock)
        registration = EtcdRegistration(etcd, "tcp@127.0.0.1:7001", clock, ttl=6)
        registration.startService()
        clock.advance(100)
        store = EtcdStore(etcd, timeout=30)
        entries = self.successResultOf(store.live(clock.seconds()))
        self.assertEqual(entries, [Entry("tcp@127.0.0.1:7001", clock.seconds())])
        registration.stopService()
        etcd.close()
