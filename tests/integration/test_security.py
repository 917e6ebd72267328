"""
Security on real ``twistd geerpc`` processes (docs/security.md): the TLS
matrix (each bad case refused during the handshake, with a one-line client
error, and no handler run), the good case over ``tls@`` and ``https@`` from
the CLI, the library and the XClient; a certificate reloaded on SIGHUP while
an open connection keeps being served; tokens and per-method rules.
Certificates are made by ``txgeerpc.testing.CertificateAuthority``, once per
session.  Every process started here is stopped by PID.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import ssl
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor

from tests import _processes
from tests._processes import environment, start, stop, wait_for
from txgeerpc import connect
from txgeerpc.discovery import StaticDiscovery
from txgeerpc.errors import PermissionDenied, TLSError, Unauthenticated, UnexpectedDisconnect
from txgeerpc.testing import CertificateAuthority
from txgeerpc.tls import ClientTLS
from txgeerpc.xclient import XClient

ARGUMENT = '{"Num1":6,"Num2":7}'
SERVING = rb"serving .* on (tcp@127\.0\.0\.1:\d+)"


@pytest.fixture(scope="session")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CA and what it issued, another CA and what it issued, in one directory."""
    directory = tmp_path_factory.mktemp("certs")
    ca = CertificateAuthority("txgeerpc test CA")
    ca.write_cert(str(directory / "ca.crt"))
    ca.issue_server(["localhost", "127.0.0.1"]).write(str(directory), "server")
    ca.issue_server(["elsewhere.example"]).write(str(directory), "wronghost")
    ca.issue_server(["localhost", "127.0.0.1"], expired=True).write(str(directory), "expired")
    ca.issue_client("alice").write(str(directory), "alice")
    ca.issue_client("alice", expired=True).write(str(directory), "alice-expired")
    other = CertificateAuthority("another CA")
    other.write_cert(str(directory / "other-ca.crt"))
    other.issue_client("mallory").write(str(directory), "mallory")
    other.issue_server(["localhost", "127.0.0.1"]).write(str(directory), "other-server")
    return directory


def _cli(*argv: str, command: str = "call") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "txgeerpc", command, *argv],
        env=environment(),
        capture_output=True,
        text=True,
        timeout=60,
    )


def _debug_json(hostport: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://{hostport}/debug/geerpc?format=json", timeout=5) as page:
        return dict(json.load(page))


def _calls(hostport: str, service: str, method: str) -> int:
    for entry in _debug_json(hostport)["services"]:
        if entry["name"] == service:
            for item in entry["methods"]:
                if item["name"] == method:
                    return int(item["calls"])
    raise AssertionError(f"{service}.{method} not on the debug page")


@pytest.fixture
def mtls(tmp_path: Path, certs: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """A server requiring client certificates from the CA; its files are
    copies (the reload test replaces them)."""
    for name in ("server.crt", "server.key", "ca.crt"):
        shutil.copy(certs / name, tmp_path / name)
    process = start(
        tmp_path,
        "geerpc",
        "--listen",
        "tcp:0:interface=127.0.0.1",
        "--tls-cert",
        "server.crt",
        "--tls-key",
        "server.key",
        "--tls-ca",
        "ca.crt",
        "--tls-require-client-cert",
        "--debug-access",
        "open",
    )
    try:
        address = wait_for(process, SERVING)
        yield address.removeprefix("tcp@"), process
    finally:
        stop(process)


def _tls(certs: Path, client: str | None = "alice", ca: str = "ca.crt", **kw: Any) -> ClientTLS:
    if client is None:
        return ClientTLS(ca=str(certs / ca), **kw)
    return ClientTLS(
        ca=str(certs / ca),
        cert=str(certs / f"{client}.crt"),
        key=str(certs / f"{client}.key"),
        **kw,
    )


async def _library_error(address: str, tls: ClientTLS) -> BaseException:
    """The error a library call over ``address`` gets (connect or call)."""
    try:
        client = await connect(reactor, address, tls=tls, connect_timeout=10)
        try:
            await client.call("Arith.Multiply", {"Num1": 6, "Num2": 7}, timeout=10)
        finally:
            await client.close()
    except Exception as error:
        return error
    raise AssertionError(f"{address}: the call succeeded")


@pytest_twisted.ensureDeferred
async def test_the_tls_matrix(mtls: tuple[str, subprocess.Popen[bytes]], certs: Path) -> None:
    hostport, _ = mtls
    tls_address = f"tls@{hostport}"
    # Refused during the handshake, each with a one-line reason.  TLS 1.3
    # checks the client's certificate after the client's side of the
    # handshake: the refusal reaches the client on its first read.
    no_cert = await _library_error(tls_address, _tls(certs, None))
    assert isinstance(no_cert, UnexpectedDisconnect), no_cert
    assert no_cert.reason.check(TLSError)
    assert "requires a client certificate" in str(no_cert)
    other_ca = await _library_error(tls_address, _tls(certs, "mallory"))
    assert isinstance(other_ca, UnexpectedDisconnect), other_ca
    assert "does not trust the CA" in str(other_ca)
    expired_client = await _library_error(tls_address, _tls(certs, "alice-expired"))
    assert "it has expired" in str(expired_client), expired_client
    untrusted = await _library_error(tls_address, _tls(certs, ca="other-ca.crt"))
    assert isinstance(untrusted, TLSError), untrusted
    assert str(untrusted) == (
        "TLS handshake failed: the server's certificate was refused: its CA is not trusted"
    )
    # The CLI says the same in one line.
    cli = _cli(tls_address, "Arith.Multiply", ARGUMENT, "--tls-ca", str(certs / "ca.crt"))
    assert cli.returncode == 1
    assert cli.stderr.count("\n") == 1 and "requires a client certificate" in cli.stderr, cli
    # No handler ran.
    assert _calls(hostport, "Arith", "Multiply") == 0
    # The good cases: library, XClient, CLI over tls@ and https@.
    async with await connect(reactor, tls_address, tls=_tls(certs)) as client:
        assert await client.call("Arith.Multiply", {"Num1": 6, "Num2": 7}) == 42
    xclient = XClient(
        StaticDiscovery([f"https@{hostport}"]),
        lambda address: connect(reactor, address, tls=_tls(certs)),
        reactor,
    )
    try:
        assert await xclient.call("Arith.Multiply", {"Num1": 2, "Num2": 3}) == 6
    finally:
        await xclient.close()
    flags = ["--tls-ca", str(certs / "ca.crt"), "--tls-cert", str(certs / "alice.crt")]
    flags += ["--tls-key", str(certs / "alice.key")]
    for scheme in ("tls", "https"):
        good = _cli(f"{scheme}@{hostport}", "Arith.Multiply", ARGUMENT, *flags)
        assert (good.returncode, good.stdout, good.stderr) == (0, "42\n", ""), good
    assert _calls(hostport, "Arith", "Multiply") == 4
    # https:// reaches the web pages through the same port.
    context = ssl.create_default_context(cafile=str(certs / "ca.crt"))
    context.load_cert_chain(str(certs / "alice.crt"), str(certs / "alice.key"))
    with urllib.request.urlopen(f"https://{hostport}/healthz", context=context) as page:
        assert page.status == 200


@pytest_twisted.ensureDeferred
async def test_a_certificate_reloaded_on_sighup_keeps_open_connections(
    mtls: tuple[str, subprocess.Popen[bytes]], certs: Path, tmp_path: Path
) -> None:
    hostport, process = mtls
    address = f"tls@{hostport}"
    async with await connect(reactor, address, tls=_tls(certs)) as kept:
        assert await kept.call("Arith.Multiply", {"Num1": 1, "Num2": 2}) == 2
        for replacement, expected in (
            ("wronghost", "is not valid for the host name '127.0.0.1'"),
            ("expired", "the server's certificate was refused: it has expired"),
        ):
            shutil.copy(certs / f"{replacement}.crt", tmp_path / "server.crt")
            shutil.copy(certs / f"{replacement}.key", tmp_path / "server.key")
            os.kill(process.pid, signal.SIGHUP)
            wait_for(process, rb"SIGHUP: reloaded the TLS certificate")
            refused = await _library_error(address, _tls(certs))
            assert isinstance(refused, TLSError) and expected in str(refused), refused
            # The connection opened before still gets replies.
            assert await kept.call("Arith.Multiply", {"Num1": 3, "Num2": 4}) == 12
        # A key that does not match: the old certificate stays.
        shutil.copy(certs / "server.crt", tmp_path / "server.crt")
        os.kill(process.pid, signal.SIGHUP)
        wait_for(process, rb"SIGHUP: kept the old TLS certificate: .*does not go with")
        still_expired = await _library_error(address, _tls(certs))
        assert "it has expired" in str(still_expired)
        assert await kept.call("Arith.Multiply", {"Num1": 5, "Num2": 5}) == 25


@pytest.fixture
def guarded(tmp_path: Path, certs: Path) -> Iterator[str]:
    """A server with tokens and per-method rules."""
    (tmp_path / "tokens").write_text(
        "# identity token\nalice alice-token-0123456789\nops ops-token-0123456789abc\n"
    )
    (tmp_path / "authz.toml").write_text(
        '[methods]\n"Arith.Divide" = ["ops"]\n"Arith.*" = ["alice", "ops"]\n'
        '"*" = ["authenticated"]\n'
    )
    process = start(
        tmp_path,
        "geerpc",
        "--listen",
        "tcp:0:interface=127.0.0.1",
        "--tokens",
        "tokens",
        "--authz",
        "authz.toml",
    )
    log = _processes._outputs[process.pid]
    try:
        yield wait_for(process, SERVING).removeprefix("tcp@")
    finally:
        stop(process)
    # Tokens are never logged, even wrong ones.
    assert b"alice-token-0123456789" not in log.data
    assert b"wrong-token" not in log.data
    assert b"needs a valid token" in log.data  # the refusals were logged


@pytest_twisted.ensureDeferred
async def test_tokens_and_method_rules(guarded: str) -> None:
    address = f"tcp@{guarded}"
    missing = _cli(address, "Arith.Multiply", ARGUMENT)
    assert (missing.returncode, missing.stderr) == (
        1,
        "error: rpc server: unauthenticated: Arith.Multiply needs a valid token or "
        "client certificate\n",
    )
    wrong = _cli(address, "Arith.Multiply", ARGUMENT, "--token", "wrong-token-0123456789")
    assert wrong.returncode == 1 and "unauthenticated" in wrong.stderr
    right = _cli(address, "Arith.Multiply", ARGUMENT, "--token", "alice-token-0123456789")
    assert (right.returncode, right.stdout) == (0, "42\n")
    divide = ("Arith.Divide", '{"Num1":6,"Num2":3}')
    denied = _cli(address, *divide, "--token", "alice-token-0123456789")
    assert (denied.returncode, denied.stderr) == (
        1,
        "error: rpc server: permission denied: alice may not call Arith.Divide\n",
    )
    allowed = _cli(address, *divide, "--token", "ops-token-0123456789abc")
    assert (allowed.returncode, allowed.stdout) == (0, "2\n")
    # Health probes need no token.
    health = _cli(address, command="health")
    assert (health.returncode, health.stdout) == (0, "serving\n"), health
    # The library gets typed errors.
    async with await connect(reactor, address) as anonymous:
        with pytest.raises(Unauthenticated):
            await anonymous.call("Arith.Multiply", {"Num1": 1, "Num2": 1})
    async with await connect(reactor, address, token="alice-token-0123456789") as alice:
        with pytest.raises(PermissionDenied):
            await alice.call("Arith.Divide", {"Num1": 1, "Num2": 1})
        assert await alice.call("Foo.Sum", {"Num1": 1, "Num2": 1}) == 2
    # The refusals are counted (the debug page is local-only by default).
    with urllib.request.urlopen(f"http://{guarded}/debug/geerpc-auth", timeout=5) as page:
        counted = json.load(page)
    assert counted["refused"]["unauthenticated"]["Arith.Multiply"] == 3  # CLI x2 + library
    assert counted["refused"]["denied"] == {"Arith.Divide": 2}


def test_a_registry_that_takes_heartbeats_only_with_a_token(tmp_path: Path, certs: Path) -> None:
    """Writes to an embedded registry over https need a token
    (``--registry-access authenticated``); a server beats to it with
    ``--registry-token-file`` and ``--registry-tls-ca``; a spoofed
    ``DELETE`` and a server without the token are refused; reads stay open."""
    (tmp_path / "tokens").write_text("servers servers-token-0123456789\n")
    (tmp_path / "token").write_text("servers-token-0123456789\n")
    for name in ("server.crt", "server.key", "ca.crt"):
        shutil.copy(certs / name, tmp_path / name)
    registry = start(
        tmp_path,
        "geerpc",
        "--listen",
        "tcp:0:interface=127.0.0.1",
        "--tls-cert",
        "server.crt",
        "--tls-key",
        "server.key",
        "--tokens",
        "tokens",
        "--registry-access",
        "authenticated",
    )
    processes = [registry]
    try:
        hostport = wait_for(registry, SERVING).removeprefix("tcp@")
        url = f"https://localhost:{hostport.rpartition(':')[2]}/_geerpc_/registry"
        beating = ["--registry", url, "--advertise", "tcp@127.0.0.1:0", "--registry-tls-ca"]
        beating.append("ca.crt")
        listen = ["--listen", "tcp:0:interface=127.0.0.1"]
        good = start(tmp_path, "geerpc", *listen, *beating, "--registry-token-file", "token")
        processes.append(good)
        advertised = wait_for(good, rb"heartbeat: (tcp@127\.0\.0\.1:\d+) registered at")
        wait_for(registry, rb"registry: tcp@127\.0\.0\.1:\d+ joined")
        # Without the token: refused.
        tokenless = start(tmp_path, "geerpc", *listen, *beating)
        processes.append(tokenless)
        wait_for(tokenless, rb"heartbeat: tcp@127\.0\.0\.1:\d+ to \S+ failed \([^)]*401")
        context = ssl.create_default_context(cafile=str(certs / "ca.crt"))
        spoofed = urllib.request.Request(
            url, method="DELETE", headers={"X-Geerpc-Server": advertised}
        )
        with urllib.request.urlopen(url, context=context) as listing:
            assert advertised in listing.headers["X-Geerpc-Servers"]
        try:
            urllib.request.urlopen(spoofed, context=context)
        except urllib.error.HTTPError as error:
            assert error.code in (401, 403)
        else:
            raise AssertionError("a DELETE without a token was accepted")
        with urllib.request.urlopen(url, context=context) as listing:
            assert advertised in listing.headers["X-Geerpc-Servers"]
    finally:
        for process in reversed(processes):
            stop(process)
