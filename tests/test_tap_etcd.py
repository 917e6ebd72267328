"""
``twistd geerpc --etcd URL --advertise proto@addr [--ttl SECONDS]``: the
options, and the service tree (built with a FakeEtcd injected): an
EtcdRegistration in the heartbeat's place, ``--advertise HOST:0`` taking the
bound port, and on stop the lease revoked first, while the server still
listens, then the etcd client closed and waited for.
"""

from __future__ import annotations

import datetime
import shutil
import tempfile
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from twisted.application.service import IService, MultiService
from twisted.internet.defer import Deferred
from twisted.internet.testing import MemoryReactorClock
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from txgeerpc import tap
from txgeerpc.errors import EtcdError
from txgeerpc.etcd import EtcdClient, EtcdRegistration, EtcdTLS
from txgeerpc.etcd._keys import DEFAULT_PREFIX
from txgeerpc.registry import Heartbeat
from txgeerpc.testing import FakeEtcd

ETCD = ("--etcd", "http://127.0.0.1:2379")
ADVERTISE = ("--advertise", "tcp@127.0.0.1:7005")
LISTEN = ("--listen", "tcp:7005:interface=127.0.0.1")


class TLSFiles:
    """PEM files in a temporary directory (removed after ``test``): a
    self-signed certificate as CA and client certificate, its key, another
    key, and a file that is no PEM at all."""

    def __init__(self, test: SynchronousTestCase) -> None:
        # Not test.mktemp(): under pytest it leaves directories in the working one.
        directory = Path(tempfile.mkdtemp(prefix="txgeerpc-test-"))
        test.addCleanup(shutil.rmtree, directory, ignore_errors=True)
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "txgeerpc-test")])
        now = datetime.datetime.now(datetime.timezone.utc)
        certificate = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(1)
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256())
        )

        def write(name: str, data: bytes) -> str:
            path = directory / name
            path.write_bytes(data)
            return str(path)

        def pem(key: ec.EllipticCurvePrivateKey) -> bytes:
            return key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )

        self.cert = self.ca = write(
            "cert.pem", certificate.public_bytes(serialization.Encoding.PEM)
        )
        self.key = write("key.pem", pem(key))
        self.other_key = write("other.pem", pem(ec.generate_private_key(ec.SECP256R1())))
        self.garbage = write("garbage.pem", b"not a PEM file\n")


def parse(*argv: str) -> tap.Options:
    options = tap.Options()
    options.parseOptions(list(argv))
    return options


def services(tree: IService) -> list[IService]:
    """Every service in ``tree``, depth first."""
    found = [tree]
    if isinstance(tree, MultiService):
        for child in tree:
            found += services(child)
    return found


def listening(tree: IService) -> list[Any]:
    """The ports the tree's listeners hold (None: not listening)."""
    return [
        service.port for service in services(tree) if isinstance(service, tap.Listener)
    ]


class OptionsTests(SynchronousTestCase):
    def test_etcd_and_advertise(self) -> None:
        options = parse(*ETCD, *ADVERTISE)
        self.assertEqual(
            {key: options[key] for key in ("etcd", "advertise", "ttl", "etcd-prefix", "registry")},
            {
                "etcd": ["http://127.0.0.1:2379"],
                "advertise": "tcp@127.0.0.1:7005",
                "ttl": 10,
                "etcd-prefix": DEFAULT_PREFIX,
                "registry": None,
            },
        )
        options = parse(
            *("--etcd", "127.0.0.1:2379,http://127.0.0.1:22379/"),
            *ADVERTISE,
            *("--ttl", "3", "--etcd-prefix", "/mine/"),
        )
        self.assertEqual(options["etcd"], ["http://127.0.0.1:2379", "http://127.0.0.1:22379"])
        self.assertEqual((options["ttl"], options["etcd-prefix"]), (3, "/mine/"))

    def test_usage_errors(self) -> None:
        registry = ("--registry", "http://127.0.0.1:1/_geerpc_/registry")
        for argv, message in [
            ([*ETCD], "--etcd needs --advertise"),
            ([*ADVERTISE], "--advertise needs --registry or --etcd"),
            ([*registry], "--registry and --advertise go together"),
            ([*registry, *ETCD, *ADVERTISE], "--registry and --etcd"),
            ([*ADVERTISE, *registry, "--ttl", "3"], "--ttl needs --etcd"),
            ([*ETCD, *ADVERTISE, "--heartbeat", "2"], "--heartbeat is for --registry"),
            ([*ETCD, *ADVERTISE, "--ttl", "0"], "--ttl 0: must be a whole number, 1 or more"),
            ([*ETCD, *ADVERTISE, "--ttl", "2.5"], "--ttl 2.5: not a whole number"),
            (["--etcd", "ftp://127.0.0.1:2379", *ADVERTISE], "expected http:// or https://"),
            ([*ETCD, *ADVERTISE, "--etcd-prefix", ""], "--etcd-prefix must not be empty"),
            ([*ETCD, "--advertise", "127.0.0.1:7005"], "--advertise"),
            ([*ADVERTISE, *registry, "--etcd-user", "u"], "--etcd-user needs --etcd"),
            (
                [*ETCD, "--listen", "unix:/tmp/x.sock", "--advertise", "tcp@127.0.0.1:0"],
                "port 0 takes the port of the first TCP --listen",
            ),
        ]:
            with self.assertRaises(usage.UsageError, msg=argv) as raised:
                parse(*argv)
            self.assertIn(message, str(raised.exception), argv)

    def test_etcd_timeout_must_be_finite_and_positive(self) -> None:
        for value in ("nan", "inf", "-inf", "0", "-1"):
            with self.assertRaises(usage.UsageError, msg=value) as raised:
                parse(*ETCD, *ADVERTISE, "--etcd-timeout", value)
            self.assertIn(
                "--etcd-timeout must be a finite number more than 0", str(raised.exception)
            )
        self.assertEqual(parse(*ETCD, *ADVERTISE, "--etcd-timeout", "0.5")["etcd-timeout"], 0.5)

    def test_tls_files_are_loaded_when_the_options_are_checked(self) -> None:
        pki = TLSFiles(self)
        tls = ("--etcd-ca", pki.ca, "--etcd-cert", pki.cert, "--etcd-key", pki.key)
        options = parse(*LISTEN, "--etcd", "127.0.0.1:2379", *ADVERTISE, *tls)
        self.assertEqual(options["etcd"], ["https://127.0.0.1:2379"])
        self.assertEqual(options["etcd-tls"], EtcdTLS(pki.ca, pki.cert, pki.key))
        tree = tap.build(options, reactor=MemoryReactorClock())
        etcd = tree.registration._etcd  # type: ignore[union-attr]
        self.assertTrue(all(url.startswith("https://") for url in etcd.endpoints))
        self.successResultOf(etcd.close())
        for argv, message in [
            (
                ["--etcd-ca", pki.garbage],
                f"--etcd-ca {pki.garbage!r}: not a PEM certificate (PEM routines: no start line)",
            ),
            (
                ["--etcd-cert", pki.key, "--etcd-key", pki.key],
                f"--etcd-cert {pki.key!r}: not a PEM certificate",
            ),
            (
                ["--etcd-cert", pki.cert, "--etcd-key", pki.garbage],
                f"--etcd-key {pki.garbage!r}: not a PEM private key",
            ),
            (
                ["--etcd-cert", pki.cert, "--etcd-key", pki.other_key],
                f"--etcd-cert {pki.cert!r} and --etcd-key {pki.other_key!r}: "
                "Certificate public and private keys do not match",
            ),
        ]:
            with self.assertRaises(usage.UsageError, msg=argv) as raised:
                parse(*ETCD, *ADVERTISE, *argv)
            self.assertIn(message, str(raised.exception), argv)

    def test_the_registry_is_unchanged(self) -> None:
        options = parse("--registry", "http://127.0.0.1:1/_geerpc_/registry", *ADVERTISE)
        self.assertEqual((options["etcd"], options["ttl"]), (None, 10))
        tree = tap.build(options, reactor=MemoryReactorClock())
        self.assertIsInstance(tree.registration, Heartbeat)
        self.assertEqual(
            [s for s in services(tree.service) if isinstance(s, EtcdRegistration)],
            [],
        )

    def test_help_lists_the_etcd_options(self) -> None:
        text = str(tap.Options())
        for option in ("--etcd=", "--etcd-prefix=", "--etcd-timeout=", "--ttl="):
            self.assertIn(option, text)


class ServiceTreeTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.reactor = MemoryReactorClock()
        self.etcd = FakeEtcd(self.reactor)
        self.addCleanup(self.etcd.close)

    def build(self, *argv: str) -> tap.Geerpc:
        options = parse(*argv)
        return tap.build(options, reactor=self.reactor, etcd=self.etcd)

    def start(self, built: tap.Geerpc) -> None:
        built.service.privilegedStartService()
        built.service.startService()

    def test_registers_in_etcd(self) -> None:
        built = self.build(*LISTEN, *ETCD, *ADVERTISE, "--ttl", "3", "--etcd-prefix", "/p/")
        tree = built.service
        [registration] = [s for s in services(tree) if isinstance(s, EtcdRegistration)]
        self.assertIs(built.registration, registration)
        self.assertEqual([s for s in services(tree) if isinstance(s, Heartbeat)], [])
        self.assertEqual((registration.ttl, registration.prefix), (3, "/p/"))
        self.start(built)
        kv = self.successResultOf(self.etcd.get(b"/p/tcp@127.0.0.1:7005"))
        self.assertEqual(kv.lease, registration.lease)
        self.reactor.pump([1] * 10)  # renewed every second
        self.assertEqual(self.etcd.requests.count("keep_alive"), 10)
        self.successResultOf(tree.stopService())

    def test_advertising_port_0_takes_the_bound_port(self) -> None:
        built = self.build(
            *("--listen", "unix:/tmp/txgeerpc-test.sock"),
            *LISTEN,
            *ETCD,
            *("--advertise", "tcp@127.0.0.1:0"),
        )
        tree = built.service
        self.start(built)
        registration = built.registration
        assert isinstance(registration, EtcdRegistration)
        self.assertEqual(registration.address, "tcp@127.0.0.1:7005")
        listed = self.successResultOf(self.etcd.get_prefix(DEFAULT_PREFIX.encode()))
        self.assertEqual(
            [kv.key for kv in listed.kvs], [DEFAULT_PREFIX.encode() + b"tcp@127.0.0.1:7005"]
        )
        self.successResultOf(tree.stopService())

    def test_on_stop_revoke_first_then_stop_and_close(self) -> None:
        closing: Deferred[None] = Deferred()
        real_close = self.etcd.close
        deleted: list[bytes] = []  # heard by a watch
        deleted_at_close: list[list[bytes]] = []

        def close() -> Deferred[None]:
            deleted_at_close.append(list(deleted))
            real_close()
            return closing  # the client's connections take a while to close

        self.patch(self.etcd, "close", close)
        built = self.build(*LISTEN, *ETCD, *ADVERTISE)
        tree = built.service
        self.start(built)
        self.etcd.watch_prefix(
            DEFAULT_PREFIX.encode(),
            0,
            lambda events, _: deleted.extend(e.kv.key for e in events if e.kind == "delete"),
        )
        self.assertNotIn(None, listening(tree))
        self.etcd.delay = 2.0  # the revoke takes two seconds to be answered
        stopped = tree.stopService()
        self.assertEqual(self.etcd.requests[-1], "revoke")
        self.assertNotIn(None, listening(tree))  # still serving while it leaves
        self.assertNotIn("close", self.etcd.requests)
        self.reactor.advance(2)  # revoked: now the rest stops, and the client closes
        self.assertEqual(listening(tree), [None])
        self.assertEqual(self.etcd.requests[-2:], ["revoke", "close"])
        self.assertNoResult(stopped)  # until the client is closed
        closing.callback(None)
        self.assertIsNone(self.successResultOf(stopped))
        # The revoke deleted the key before the client was closed; after, nothing works.
        self.assertEqual(deleted_at_close, [[DEFAULT_PREFIX.encode() + b"tcp@127.0.0.1:7005"]])
        self.etcd.delay = 0
        self.failureResultOf(self.etcd.get(b"/x"), EtcdError)
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def test_stop_completes_when_etcd_is_down(self) -> None:
        built = self.build(*LISTEN, *ETCD, *ADVERTISE)
        tree = built.service
        self.start(built)
        self.etcd.available = False
        self.successResultOf(tree.stopService())
        self.assertEqual(self.etcd.requests[-2:], ["revoke", "close"])
        self.assertEqual(listening(tree), [None])
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def test_a_real_client_by_default(self) -> None:
        options = parse(*LISTEN, *ETCD, *ADVERTISE, "--etcd-timeout", "2")
        tree = tap.build(options, reactor=self.reactor)
        etcd = tree.registration._etcd  # type: ignore[union-attr]
        self.assertIsInstance(etcd, EtcdClient)
        self.assertEqual((etcd.endpoints, etcd.request_timeout), (["http://127.0.0.1:2379"], 2))
        self.successResultOf(etcd.close())
