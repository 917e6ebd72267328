"""
A registry that trusts only its servers, on real processes (issue 15 item 4,
docs/security.md): a flood of fake registrations from one source is limited
to that source's share while real servers keep beating and new ones register;
spoofed ``POST``/``DELETE`` are refused; the standalone ``twistd
geerpc-registry`` over https with tokens, read by the CLI (``servers``, a
call through the registry URL) and the XClient.  The flood comes from
127.0.0.2 (still this machine's loopback) so that it is a source of its own.
Every process started here is stopped by PID.
"""

from __future__ import annotations

import collections
import http.client
import json
import ssl
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor

from tests._processes import environment, start, stop, wait_for
from txgeerpc import connect
from txgeerpc.registry import RegistryDiscovery, agent_request
from txgeerpc.testing import CertificateAuthority
from txgeerpc.tls import ClientTLS
from txgeerpc.xclient import XClient

SERVING = rb"serving .* on (tcp@127\.0\.0\.1:\d+)"
REGISTRY = "/_geerpc_/registry"
SERVERS_TOKEN = "servers-token-0123456789"
MALLORY_TOKEN = "mallory-token-0123456789"


def flood(
    port: int,
    count: int,
    *,
    source: str = "127.0.0.2",
    method: str = "POST",
    headers: dict[str, str] | None = None,
    context: ssl.SSLContext | None = None,
    addresses: Any = None,
) -> collections.Counter[int]:
    """``count`` writes on one kept-alive connection from ``source``: the
    statuses answered."""
    if context is not None:
        connection: http.client.HTTPConnection = http.client.HTTPSConnection(
            "localhost", port, source_address=(source, 0), timeout=10, context=context
        )
    else:
        connection = http.client.HTTPConnection(
            "127.0.0.1", port, source_address=(source, 0), timeout=10
        )
    statuses: collections.Counter[int] = collections.Counter()
    try:
        for n in range(count):
            address = addresses(n) if addresses else f"tcp@10.9.{n // 250}.{n % 250 + 1}:7001"
            connection.request(
                method, REGISTRY, headers={"X-Geerpc-Server": address, **(headers or {})}
            )
            answer = connection.getresponse()
            answer.read()
            statuses[answer.status] += 1
    finally:
        connection.close()
    return statuses


def listing(url: str, context: ssl.SSLContext | None = None) -> list[str]:
    request = urllib.request.Request(url, headers={"Accept": "application/json"})
    with urllib.request.urlopen(request, context=context) as answer:
        return [entry["address"] for entry in json.load(answer)["servers"]]


def scrape(hostport: str, name: str) -> float:
    with urllib.request.urlopen(f"http://{hostport}/metrics") as page:
        for line in page.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    raise AssertionError(f"{name} not on {hostport}/metrics")


def beating_server(tmp_path: Path, url: str, *extra: str) -> tuple[subprocess.Popen[bytes], str]:
    process = start(
        tmp_path,
        "geerpc",
        *("--listen", "tcp:0:interface=127.0.0.1", "--registry-path", "none"),
        *("--registry", url, "--advertise", "tcp@127.0.0.1:0", "--heartbeat", "0.5"),
        *extra,
    )
    try:
        return process, wait_for(process, rb"heartbeat: (tcp@127\.0\.0\.1:\d+) registered at")
    except BaseException:
        stop(process)
        raise


def test_a_flood_from_one_source_leaves_real_servers_listed(tmp_path: Path) -> None:
    """``twistd geerpc``'s embedded registry with its defaults (writes from
    this machine; 100 entries, 10 writes/s after a burst of 100 per source):
    2,000 fake registrations from one source list 100 fake servers; a server
    beating every 0.5 s meanwhile never fails, one started after the flood
    registers at once, both stay listed."""
    registry = start(tmp_path, "geerpc", "--listen", "tcp:0:interface=127.0.0.1")
    processes = [registry]
    try:
        hostport = wait_for(registry, SERVING).removeprefix("tcp@")
        port = int(hostport.rpartition(":")[2])
        url = f"http://{hostport}{REGISTRY}"
        before, first = beating_server(tmp_path, url, "--metrics-path", "/metrics")
        processes.append(before)
        before_hostport = first.removeprefix("tcp@")
        beats = scrape(before_hostport, "txgeerpc_registry_heartbeats_total")
        began = time.monotonic()
        statuses = flood(port, 2000)
        took = time.monotonic() - began
        print(f"flood: 2000 POSTs in {took:.2f}s: {dict(statuses)}")
        assert statuses[200] == 100 and statuses[429] == 1900, statuses
        after, second = beating_server(tmp_path, url)
        processes.append(after)
        listed = listing(url)
        assert first in listed and second in listed
        assert len([a for a in listed if a.startswith("tcp@10.9.")]) == 100
        # The first server kept beating through the flood, and never failed.
        assert scrape(before_hostport, "txgeerpc_registry_heartbeats_total") > beats
        assert scrape(before_hostport, "txgeerpc_registry_heartbeat_failures_total") == 0
        # The flood's source cannot take or delete a real server's entry.
        assert flood(port, 1, method="DELETE", addresses=lambda _: first) == {403: 1}
        assert first in listing(url)
        # One log line for the refusals, not one per request.
        refused = wait_for(registry, rb"registry: refused (\d+) write\(s\) in 10s; last from 127")
        assert int(refused) >= 1
    finally:
        for process in reversed(processes):
            stop(process)


@pytest.fixture
def https_registry(tmp_path: Path) -> Any:
    """A ``twistd geerpc-registry`` on https, writes with a token only."""
    ca = CertificateAuthority("registry test CA")
    ca.write_cert(str(tmp_path / "ca.crt"))
    ca.issue_server(["localhost", "127.0.0.1"]).write(str(tmp_path), "registry")
    (tmp_path / "tokens").write_text(f"servers {SERVERS_TOKEN}\nmallory {MALLORY_TOKEN}\n")
    (tmp_path / "token").write_text(SERVERS_TOKEN + "\n")
    registry = start(
        tmp_path,
        "geerpc-registry",
        *("--listen", "tcp:0:interface=127.0.0.1", "--timeout", "30"),
        *("--tls-cert", "registry.crt", "--tls-key", "registry.key", "--tokens", "tokens"),
        *("--registry-access", "authenticated", "--registry-source-entries", "20"),
    )
    try:
        port = int(wait_for(registry, rb"starting on (\d+)"))
        yield registry, port, f"https://localhost:{port}{REGISTRY}"
    finally:
        stop(registry)


@pytest_twisted.ensureDeferred
async def test_a_standalone_https_registry_takes_writes_from_its_servers_only(
    tmp_path: Path, https_registry: Any
) -> None:
    registry, port, url = https_registry
    context = ssl.create_default_context(cafile=str(tmp_path / "ca.crt"))
    server, advertised = beating_server(
        tmp_path, url, "--registry-token-file", "token", "--registry-tls-ca", "ca.crt"
    )
    try:
        wait_for(registry, rb"registry: tcp@127\.0\.0\.1:\d+ joined")
        # Spoofed writes: no token is 401; another identity's token is 403.
        spoofed = {"context": context, "addresses": lambda _: advertised}
        assert flood(port, 3, method="DELETE", **spoofed) == {401: 3}
        assert flood(port, 3, method="POST", **spoofed) == {401: 3}
        mallory = {"Authorization": f"Bearer {MALLORY_TOKEN}"}
        assert flood(port, 2, method="DELETE", headers=mallory, **spoofed) == {403: 2}
        assert flood(port, 2, method="POST", headers=mallory, **spoofed) == {403: 2}
        # Mallory's flood lists 20 (--registry-source-entries), the server stays.
        statuses = flood(port, 300, headers=mallory, context=context)
        assert statuses == {200: 20, 429: 280}, statuses
        listed = listing(url, context)
        assert advertised in listed and len(listed) == 21
        # A server without the token is refused.
        tokenless = start(
            tmp_path,
            "geerpc",
            *("--listen", "tcp:0:interface=127.0.0.1", "--registry-path", "none"),
            *("--registry", url, "--advertise", "tcp@127.0.0.1:0", "--registry-tls-ca", "ca.crt"),
        )
        try:
            wait_for(tokenless, rb"heartbeat: tcp@127\.0\.0\.1:\d+ to \S+ failed \([^)]*401")
        finally:
            stop(tokenless)
        # Reads stay open: the CLI lists the servers over https with --tls-ca ...
        cli = _cli("servers", url, "--tls-ca", "ca.crt", cwd=tmp_path)
        assert cli.returncode == 0 and advertised in cli.stdout.split(), cli
        without_ca = _cli("servers", url, cwd=tmp_path)
        assert without_ca.returncode == 1 and "certificate" in without_ca.stderr, without_ca
        # ... calls a server it lists (the fake ones cannot be reached: one real).
        only_real = flood(port, 20, method="DELETE", headers=mallory, context=context)
        assert only_real == {200: 20}
        call = _cli(
            "call", url, "Arith.Multiply", '{"Num1":6,"Num2":7}', "--tls-ca", "ca.crt", cwd=tmp_path
        )
        assert (call.returncode, call.stdout) == (0, "42\n"), call
        # ... and so does an XClient discovering through it.
        tls = ClientTLS(ca=str(tmp_path / "ca.crt"))
        discovery = RegistryDiscovery(reactor, agent_request(reactor, tls=tls), url)
        xclient = XClient(discovery, lambda address: connect(reactor, address), reactor)
        discovery.startService()
        try:
            await discovery.ready()
            assert discovery.servers() == [advertised]
            assert await xclient.call("Arith.Multiply", {"Num1": 2, "Num2": 3}) == 6
        finally:
            await xclient.close()
            await discovery.stopService()
    finally:
        stop(server)


def _cli(*argv: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "txgeerpc", *argv],
        capture_output=True,
        text=True,
        env=environment(),
        cwd=cwd,
        timeout=30,
    )


def test_the_https_registry_needs_its_certificate(tmp_path: Path, https_registry: Any) -> None:
    """The registry's port is https only: a plaintext client is not answered."""
    _, port, _ = https_registry
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        with pytest.raises(
            (http.client.RemoteDisconnected, ConnectionError, http.client.BadStatusLine)
        ):
            connection.request("GET", REGISTRY)
            connection.getresponse()
    finally:
        connection.close()
