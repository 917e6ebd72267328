"""
Go GeeRPC clients (which cannot do TLS, nor send a token) against a
``twistd geerpc`` that also serves TLS on the same port: they keep working
in plaintext, as an identity their network is mapped to
(``--trust-network``), while a txgeerpc client uses ``tls@`` with a token;
with ``--tls-only`` they are refused.  A registry that takes writes only
with a token lets Go servers (which send none) in from a trusted network,
and the Go XClient finds them; from another network they are refused.
"""

from __future__ import annotations

import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests import _processes
from txgeerpc.testing import CertificateAuthority

from ._geepeer import GeepeerError, run_client, run_xclient, running_server
from ._reactor_go import check_basic
from .test_interop_registry import go_spread, listed

SERVING = rb"serving .* on tcp@(127\.0\.0\.1:\d+)"


def _twistd(tmp_path: Path, *extra: str) -> subprocess.Popen[bytes]:
    ca = CertificateAuthority()
    ca.write_cert(str(tmp_path / "ca.crt"))
    ca.issue_server(["localhost", "127.0.0.1"]).write(str(tmp_path), "server")
    (tmp_path / "tokens").write_text("alice alice-token-0123456789\n")
    return _processes.start(
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
        *extra,
    )


def test_go_clients_in_plaintext_beside_tls_clients(geepeer: Path, tmp_path: Path) -> None:
    process = _twistd(tmp_path, "--trust-network", "127.0.0.1/32=go-clients")
    try:
        address = _processes.wait_for(process, SERVING)
        check_basic(run_client(geepeer, address, "basic"))
        check_basic(run_client(geepeer, address, "basic", http=True))
        flags = ["--tls-ca", str(tmp_path / "ca.crt"), "--token", "alice-token-0123456789"]
        command = [sys.executable, "-m", "txgeerpc", "call", f"tls@{address}"]
        called = subprocess.run(
            [*command, "Arith.Multiply", '{"Num1":6,"Num2":7}', *flags],
            env=_processes.environment(),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert (called.returncode, called.stdout, called.stderr) == (0, "42\n", "")
    finally:
        _processes.stop(process)


def test_go_clients_refused_by_a_tls_only_port(geepeer: Path, tmp_path: Path) -> None:
    process = _twistd(tmp_path, "--tls-only", "--trust-network", "127.0.0.1/32=go-clients")
    try:
        address = _processes.wait_for(process, SERVING)
        with pytest.raises(GeepeerError):
            run_client(geepeer, address, "basic", call_timeout="5s")
        _processes.wait_for(process, rb"plaintext rpc on a TLS-only port")
    finally:
        _processes.stop(process)


def test_go_clients_from_an_untrusted_network_read_the_refusal(
    geepeer: Path, tmp_path: Path
) -> None:
    process = _twistd(tmp_path, "--trust-network", "10.0.0.0/8=ops")
    try:
        address = _processes.wait_for(process, SERVING)
        lines = run_client(geepeer, address, "basic")
        assert lines[0]["reply"] is None
        assert lines[0]["error"] == (
            f"rpc server: unauthenticated: {lines[0]['method']} needs a valid token or "
            "client certificate"
        )
    finally:
        _processes.stop(process)


# -- A registry that trusts only its servers: Go servers let in by network ---------------


def _registry(tmp_path: Path, plugin: str, network: str) -> tuple[subprocess.Popen[bytes], str]:
    """``twistd geerpc-registry`` (or ``twistd geerpc``'s embedded registry)
    taking writes with a token, or from ``network`` (Go servers send none)."""
    (tmp_path / "tokens").write_text("servers servers-token-0123456789\n")
    process = _processes.start(
        tmp_path,
        plugin,
        *("--listen", "tcp:0:interface=127.0.0.1", "--tokens", "tokens"),
        *("--registry-access", "authenticated", "--trust-network", f"{network}=go-servers"),
    )
    try:
        if plugin == "geerpc":
            hostport = _processes.wait_for(process, SERVING)
        else:
            hostport = "127.0.0.1:" + _processes.wait_for(process, rb"Site starting on (\d+)")
    except BaseException:
        _processes.stop(process)
        raise
    return process, f"http://{hostport}/_geerpc_/registry"


@pytest.mark.parametrize("plugin", ["geerpc-registry", "geerpc"])
def test_go_servers_from_an_allowed_network_beat_and_are_found(
    geepeer_jsonv2: Path, tmp_path: Path, plugin: str
) -> None:
    """The Go reference's heartbeat (no token) from a --trust-network is
    taken, and the Go XClient discovers the server and calls it; a DELETE of
    it by another identity (a txgeerpc server's token) is refused: not its
    entry."""
    process, url = _registry(tmp_path, plugin, "127.0.0.1/32")
    try:
        server = running_server(geepeer_jsonv2, registry=url, heartbeat="250ms")
        with server:
            assert server.first_heartbeat == "200 OK", server.log
            assert server.next_heartbeat() == "200 OK"
            assert listed(url) == [server.advertised]
            lines = run_xclient(geepeer_jsonv2, url, "spread", calls=4, wide_option=True)
            assert go_spread(lines) == {server.advertised: 4}
            spoofed = urllib.request.Request(
                url,
                method="DELETE",
                headers={
                    "X-Geerpc-Server": server.advertised,
                    "Authorization": "Bearer servers-token-0123456789",
                },
            )
            with pytest.raises(urllib.error.HTTPError) as refused:
                urllib.request.urlopen(spoofed, timeout=10)
            assert refused.value.code == 403
            assert server.next_heartbeat() == "200 OK"
            assert listed(url) == [server.advertised]
    finally:
        _processes.stop(process)


@pytest.mark.parametrize("plugin", ["geerpc-registry", "geerpc"])
def test_go_servers_from_another_network_are_refused(
    geepeer_jsonv2: Path, tmp_path: Path, plugin: str
) -> None:
    """Trusting 127.0.0.2/32 only: the Go server's heartbeats (from
    127.0.0.1) are refused 401 and it is never listed; reads stay open."""
    process, url = _registry(tmp_path, plugin, "127.0.0.2/32")
    try:
        server = running_server(geepeer_jsonv2, registry=url, heartbeat="250ms")
        with server:
            assert server.first_heartbeat == "401 Unauthorized", server.log
            assert server.next_heartbeat() == "401 Unauthorized"
            assert listed(url) == []
    finally:
        _processes.stop(process)
