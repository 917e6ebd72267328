"""
Go GeeRPC clients (which cannot do TLS, nor send a token) against a
``twistd geerpc`` that also serves TLS on the same port: they keep working
in plaintext, as an identity their network is mapped to
(``--trust-network``), while a txgeerpc client uses ``tls@`` with a token;
with ``--tls-only`` they are refused.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests import _processes
from txgeerpc.testing import CertificateAuthority

from ._geepeer import GeepeerError, run_client
from ._reactor_go import check_basic

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
