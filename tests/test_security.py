"""
TLS on the one port, authentication and authorization, in memory (a real
OpenSSL handshake over :class:`txgeerpc.testing.MemoryNetwork`, time on a
Clock).  The real-process cases are in tests/integration/test_security.py.
"""

from __future__ import annotations

import functools
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from twisted.cred.error import UnauthorizedLogin
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource
from twisted.web.test.requesthelper import DummyRequest

from txgeerpc import Server, connect
from txgeerpc._one_port import Kind, sniff
from txgeerpc._twistd_security import GuardedResource
from txgeerpc.auth import (
    ANONYMOUS,
    Authorizer,
    BearerToken,
    Guard,
    NetworkChecker,
    PeerAddress,
    TokenChecker,
    load_authz,
    parse_networks,
)
from txgeerpc.errors import (
    ConnectionShutdown,
    PermissionDenied,
    TLSConfigError,
    TLSError,
    Unauthenticated,
    UnexpectedDisconnect,
)
from txgeerpc.examples import register_examples
from txgeerpc.tap import Options
from txgeerpc.testing import CertificateAuthority, MemoryNetwork
from txgeerpc.tls import ClientTLS, ServerTLS

ARGS = {"Num1": 6, "Num2": 7}


@functools.lru_cache(maxsize=1)
def _certs() -> Path:
    """Certificates for the whole run (made once: keys take time)."""
    directory = Path(tempfile.mkdtemp(prefix="txgeerpc-certs-"))
    ca = CertificateAuthority()
    ca.write_cert(str(directory / "ca.crt"))
    ca.issue_server(["localhost", "127.0.0.1"]).write(str(directory), "server")
    ca.issue_client("alice").write(str(directory), "alice")
    other = CertificateAuthority("other")
    other.write_cert(str(directory / "other.crt"))
    return directory


class SniffTests(SynchronousTestCase):
    def test_a_client_hello_is_tls(self) -> None:
        self.assertIs(sniff(b"\x16\x03\x01\x02\x00\x01"), Kind.TLS)

    def test_one_byte_is_not_enough(self) -> None:
        self.assertIsNone(sniff(b"\x16"))

    def test_a_handshake_byte_without_a_tls_version_is_garbage(self) -> None:
        self.assertIs(sniff(b"\x16\x00"), Kind.GARBAGE)

    def test_the_others_are_unchanged(self) -> None:
        self.assertIs(sniff(b'{"MagicNumber"'), Kind.RPC)
        self.assertIs(sniff(b"CONNECT /_geeprc_ HTTP/1.0"), Kind.CONNECT)
        self.assertIs(sniff(b"GET / HTTP/1.1"), Kind.HTTP)


class TLSInMemoryTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.certs = _certs()
        self.clock = Clock()
        self.network = MemoryNetwork(self.clock)
        self.addCleanup(self.network.close)
        self.server = Server(self.clock)
        register_examples(self.server)
        self.factory = self.server.port_factory()
        self.port = self.network.listen(self.factory)
        self.hostport = f"127.0.0.1:{self.port.getHost().port}"

    def _serve(self, **kw: Any) -> ServerTLS:
        tls = ServerTLS(str(self.certs / "server.crt"), str(self.certs / "server.key"), **kw)
        self.factory.serve_tls(tls)
        return tls

    def _client(self, address: str, **kw: Any) -> Any:
        d = connect(self.network.reactor, address, connect_timeout=5, **kw)
        self.network.flush()
        return d

    def _call(self, client: Any) -> Any:
        d = client.call("Arith.Multiply", ARGS)
        self.network.flush()
        return d

    def test_tls_and_plaintext_on_one_port(self) -> None:
        self._serve()
        for address in (f"tls@{self.hostport}", f"https@{self.hostport}"):
            client = self.successResultOf(
                self._client(address, tls=ClientTLS(ca=str(self.certs / "ca.crt")))
            )
            self.assertEqual(self.successResultOf(self._call(client)), 42)
            client.close()
            self.network.flush()
        plain = self.successResultOf(self._client(f"tcp@{self.hostport}"))
        self.assertEqual(self.successResultOf(self._call(plain)), 42)
        plain.close()
        self.network.flush()

    def test_tls_only_refuses_plaintext(self) -> None:
        self.factory.serve_tls(
            ServerTLS(str(self.certs / "server.crt"), str(self.certs / "server.key")), only=True
        )
        plain = self.successResultOf(self._client(f"tcp@{self.hostport}"))
        self.failureResultOf(self._call(plain), ConnectionShutdown)
        self.assertEqual(self.server.connections, 0)

    def test_an_untrusted_server_fails_the_connect(self) -> None:
        self._serve()
        failure = self.failureResultOf(
            self._client(f"tls@{self.hostport}", tls=ClientTLS(ca=str(self.certs / "other.crt"))),
            TLSError,
        )
        self.assertIn("its CA is not trusted", str(failure.value))

    def test_a_missing_client_certificate_is_refused_in_the_handshake(self) -> None:
        self._serve(ca=str(self.certs / "ca.crt"), require_client_cert=True)
        d = self._client(f"tls@{self.hostport}", tls=ClientTLS(ca=str(self.certs / "ca.crt")))
        # TLS 1.3: the client's side of the handshake completes; the server's
        # refusal arrives next, before any request was read.
        client = self.successResultOf(d)
        failure = self.failureResultOf(self._call(client), UnexpectedDisconnect)
        self.assertIn("requires a client certificate", str(failure.value))
        self.assertEqual(self.factory.tls_refused, 1)
        self.assertEqual(self.server.services["Arith"].methods["Multiply"].stats.calls, 0)

    def test_the_client_certificate_is_the_identity(self) -> None:
        self._serve(ca=str(self.certs / "ca.crt"), require_client_cert=True)
        seen: list[Any] = []

        def record(context: Any, argument: Any, proceed: Any) -> Any:
            from txgeerpc.tls import peer_identity

            seen.append(peer_identity(context.transport))
            return proceed(argument)

        tls = ClientTLS(
            ca=str(self.certs / "ca.crt"),
            cert=str(self.certs / "alice.crt"),
            key=str(self.certs / "alice.key"),
        )
        guarded = Server(self.clock, interceptors=[record])
        register_examples(guarded)
        factory = guarded.port_factory()
        factory.serve_tls(self.factory.tls)
        port = self.network.listen(factory)
        client = self.successResultOf(self._client(f"tls@127.0.0.1:{port.getHost().port}", tls=tls))
        self.assertEqual(self.successResultOf(self._call(client)), 42)
        self.assertEqual(seen, ["alice"])
        client.close()
        self.network.flush()

    def test_a_port_without_tls_refuses_a_client_hello(self) -> None:
        failure = self.failureResultOf(
            self._client(f"tls@{self.hostport}", tls=ClientTLS(ca=str(self.certs / "ca.crt"))),
            TLSError,
        )
        self.assertIn("closed during the handshake", str(failure.value))

    def test_unusable_files_are_one_line_errors(self) -> None:
        error = self.assertRaises(
            TLSConfigError, ServerTLS, str(self.certs / "server.crt"), str(self.certs / "alice.key")
        )
        self.assertIn("does not go with the certificate", str(error))
        error = self.assertRaises(TLSConfigError, ServerTLS, "/nonexistent.crt", "k")
        self.assertIn("cannot read the certificate file", str(error))
        self.assertRaises(TLSConfigError, ClientTLS, cert="a.crt")


class GuardTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.network = MemoryNetwork(self.clock)
        self.addCleanup(self.network.close)
        self.guard = Guard(
            [TokenChecker({"alice": "alice-token-0123456789", "ops": "ops-token-0123456789"})],
            Authorizer(
                {"Arith.Divide": ["ops"], "Arith.*": ["alice", "ops"], "Foo.Sum": [ANONYMOUS]}
            ),
        )
        self.server = Server(self.clock, interceptors=[self.guard])
        register_examples(self.server)
        port = self.network.listen(self.server.port_factory())
        self.address = f"tcp@127.0.0.1:{port.getHost().port}"

    def _call(self, method: str, token: str | None = None) -> Any:
        client = connect(self.network.reactor, self.address, token=token)
        self.network.flush()
        d = self.successResultOf(client).call(method, {"Num1": 6, "Num2": 3})
        self.network.flush()
        return d

    def test_no_token(self) -> None:
        failure = self.failureResultOf(self._call("Arith.Multiply"), Unauthenticated)
        self.assertEqual(
            failure.value.message,
            "rpc server: unauthenticated: Arith.Multiply needs a valid token or client certificate",
        )

    def test_a_wrong_token(self) -> None:
        self.failureResultOf(
            self._call("Arith.Multiply", "wrong-token-0123456789"), Unauthenticated
        )

    def test_a_right_token(self) -> None:
        self.assertEqual(
            self.successResultOf(self._call("Arith.Multiply", "alice-token-0123456789")), 18
        )

    def test_denied_by_a_method_rule_and_counted(self) -> None:
        failure = self.failureResultOf(
            self._call("Arith.Divide", "alice-token-0123456789"), PermissionDenied
        )
        self.assertEqual(
            failure.value.message, "rpc server: permission denied: alice may not call Arith.Divide"
        )
        self.assertEqual(
            self.successResultOf(self._call("Arith.Divide", "ops-token-0123456789")), 2
        )
        self.assertEqual(self.guard.stats()["denied"], {"Arith.Divide": 1})

    def test_an_unmatched_method_is_refused(self) -> None:
        self.failureResultOf(self._call("Records.Keys", "alice-token-0123456789"), PermissionDenied)

    def test_anonymous_methods_and_health_need_nothing(self) -> None:
        self.assertEqual(self.successResultOf(self._call("Foo.Sum")), 9)
        self.assertTrue(self.guard.authorizer.open_to_anyone("_txgeerpc.Health"))


class CheckerTests(SynchronousTestCase):
    def mktemp(self) -> str:
        # Not trial's: under pytest it leaves directories in the working one.
        directory = tempfile.mkdtemp(prefix="txgeerpc-test-")
        self.addCleanup(shutil.rmtree, directory, ignore_errors=True)
        return os.path.join(directory, "file")

    def test_tokens_from_a_file(self) -> None:
        path = self.mktemp()
        Path(path).write_text("# comment\n\nalice alice-token-0123456789\n")
        checker = TokenChecker.from_file(path)
        d = checker.requestAvatarId(BearerToken("alice-token-0123456789"))
        self.assertEqual(self.successResultOf(d), "alice")
        self.failureResultOf(
            checker.requestAvatarId(BearerToken("alice-token-01234567")), UnauthorizedLogin
        )
        Path(path).write_text("bob bob-token-0123456789abc\n")
        checker.reload()
        self.assertEqual(
            self.successResultOf(checker.requestAvatarId(BearerToken("bob-token-0123456789abc"))),
            "bob",
        )

    def test_bad_token_files_never_show_the_token(self) -> None:
        path = self.mktemp()
        Path(path).write_text("alice secret-but-short extra\n")
        error = self.assertRaises(ValueError, TokenChecker.from_file, path)
        self.assertIn("line 1: expected 'identity token'", str(error))
        self.assertNotIn("secret", str(error))
        Path(path).write_text("alice short\n")
        error = self.assertRaises(ValueError, TokenChecker.from_file, path)
        self.assertNotIn("short\n", str(error))
        self.assertIn("shorter than 16", str(error))
        self.assertEqual(repr(BearerToken("secret")), "<BearerToken (hidden)>")

    def test_networks(self) -> None:
        checker = NetworkChecker(parse_networks(["10.0.0.0/8=ops", "::1=local"]))
        self.assertEqual(
            self.successResultOf(checker.requestAvatarId(PeerAddress("10.1.2.3"))), "ops"
        )
        self.assertEqual(self.successResultOf(checker.requestAvatarId(PeerAddress("::1"))), "local")
        self.failureResultOf(checker.requestAvatarId(PeerAddress("192.168.1.1")), UnauthorizedLogin)
        self.assertRaises(ValueError, parse_networks, ["10.0.0.0/8"])
        self.assertRaises(ValueError, parse_networks, ["nonsense=ops"])

    def test_the_most_specific_rule_decides(self) -> None:
        rules = Authorizer({"*": ["authenticated"], "Arith.*": ["alice"], "Arith.Divide": ["ops"]})
        self.assertTrue(rules.permits("alice", "Arith.Multiply"))
        self.assertFalse(rules.permits("alice", "Arith.Divide"))
        self.assertTrue(rules.permits("ops", "Arith.Divide"))
        self.assertFalse(rules.permits("ops", "Arith.Multiply"))
        self.assertTrue(rules.permits("anyone", "Foo.Sum"))
        self.assertRaises(ValueError, Authorizer, {"Arith*": ["x"]})

    def test_authz_files(self) -> None:
        path = self.mktemp()
        Path(path).write_text('[methods]\n"Arith.*" = ["alice"]\n')
        self.assertTrue(load_authz(path).permits("alice", "Arith.Echo"))
        Path(path).write_text('[methods]\n"Arith.*" = "alice"\n')
        self.assertIn("must be a list", str(self.assertRaises(ValueError, load_authz, path)))
        Path(path).write_text("[other]\n")
        self.assertIn("[methods]", str(self.assertRaises(ValueError, load_authz, path)))


class _Page(Resource):
    isLeaf = True

    def render(self, request: Any) -> bytes:
        return b"page"


class AccessTests(SynchronousTestCase):
    def _request(self, host: str, method: bytes = b"GET", token: str | None = None) -> Any:
        request = DummyRequest([b""])
        request.method = method
        request.client = IPv4Address("TCP", host, 1234)
        if token is not None:
            request.requestHeaders.setRawHeaders(b"authorization", [f"Bearer {token}".encode()])
        return request

    def test_local_only(self) -> None:
        guarded = GuardedResource(_Page(), "local", Guard(), "debug")
        self.assertEqual(guarded.render(self._request("127.0.0.1")), b"page")
        remote = self._request("10.0.0.1")
        self.assertIn(b"this machine only", guarded.render(remote))
        self.assertEqual(remote.responseCode, 403)

    def test_authenticated(self) -> None:
        guard = Guard([TokenChecker({"alice": "alice-token-0123456789"})])
        guarded = GuardedResource(_Page(), "authenticated", guard, "metrics")
        self.assertEqual(
            guarded.render(self._request("10.0.0.1", token="alice-token-0123456789")), b"page"
        )
        refused = self._request("10.0.0.1", token="nope")
        guarded.render(refused)
        self.assertEqual(refused.responseCode, 401)

    def test_only_the_named_methods(self) -> None:
        guarded = GuardedResource(_Page(), "local", Guard(), "registry", methods=(b"POST",))
        self.assertEqual(guarded.render(self._request("10.0.0.1")), b"page")
        post = self._request("10.0.0.1", b"POST")
        guarded.render(post)
        self.assertEqual(post.responseCode, 403)


class OptionTests(SynchronousTestCase):
    def _parse(self, *argv: str) -> Options:
        options = Options()
        options.parseOptions(list(argv))
        return options

    def test_mistakes(self) -> None:
        for argv, text in (
            (["--tls-cert", "c"], "--tls-cert and --tls-key go together"),
            (["--tls-only"], "--tls-only needs --tls-cert"),
            (["--tls-cert", "c", "--tls-key", "k", "--tls-require-client-cert"], "needs --tls-ca"),
            (["--debug-access", "public"], "expected one of open, authenticated, local"),
            (["--trust-network", "10.0.0.0/8"], "NETWORK=IDENTITY"),
        ):
            error = self.assertRaises(usage.UsageError, self._parse, *argv)
            self.assertIn(text, str(error))

    def test_safe_defaults(self) -> None:
        options = self._parse()
        self.assertEqual(
            [options[f"{name}-access"] for name in ("debug", "registry", "metrics", "health")],
            ["local", "local", "open", "open"],
        )
