"""The README's examples run as written."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests._processes import start, stop, wait_for

ROOT = Path(__file__).resolve().parents[2]


def python_blocks() -> dict[str, str]:
    """README python blocks, by the file name in their first comment line."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    blocks = {}
    for block in re.findall(r"```python\n(.*?)```", text, re.S):
        first = block.splitlines()[0]
        name = first[2:].strip() if first.startswith("# ") and first.endswith(".py") else None
        blocks[name or f"block{len(blocks)}.py"] = block
    return blocks


def test_program_example_runs(tmp_path: Path) -> None:
    blocks = python_blocks()
    for name in ("calc.py", "main.py"):
        (tmp_path / name).write_text(blocks[name], encoding="utf-8")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path), str(ROOT)]))
    result = subprocess.run(
        [sys.executable, "main.py"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (result.returncode, result.stdout) == (0, "5\n2\n"), result.stderr


@pytest.mark.parametrize("uses", ["connect_in_memory", "MemoryNetwork(clock)", "FakeEtcd"])
def test_testing_example_passes(tmp_path: Path, uses: str) -> None:
    block = next(code for code in python_blocks().values() if uses in code)
    (tmp_path / "test_readme_example.py").write_text(block, encoding="utf-8")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    result = subprocess.run(
        [sys.executable, "-m", "twisted.trial", "test_readme_example"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "PASSED (successes=1)" in result.stdout


def test_walk_through_spreads_calls_over_two_servers(tmp_path: Path) -> None:
    (tmp_path / "spread.py").write_text(python_blocks()["spread.py"], encoding="utf-8")
    registry = start(tmp_path, "geerpc-registry", "--listen", "tcp:0:interface=127.0.0.1")
    servers: list[subprocess.Popen[bytes]] = []
    try:
        registry_port = wait_for(registry, rb"Site starting on (\d+)")
        url = f"http://127.0.0.1:{registry_port}/_geerpc_/registry"
        for _ in range(2):  # port 0, advertised as the port it gets
            servers.append(
                start(
                    tmp_path,
                    "geerpc",
                    *("--listen", "tcp:0:interface=127.0.0.1"),
                    *("--registry", url, "--advertise", "tcp@127.0.0.1:0"),
                )
            )
        addresses = [wait_for(server, rb"heartbeat: (\S+) registered at") for server in servers]
        result = subprocess.run(
            [sys.executable, "spread.py", url],
            cwd=tmp_path,
            env=dict(os.environ, PYTHONPATH=str(ROOT)),
            capture_output=True,
            text=True,
            timeout=60,
        )
        expected = "".join(f"{address}: 5 calls\n" for address in sorted(addresses))
        assert (result.returncode, result.stdout) == (0, expected), result.stderr

        listing = subprocess.run(
            [sys.executable, "-m", "txgeerpc", "servers", url, "--json"],
            env=dict(os.environ, PYTHONPATH=str(ROOT)),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert listing.returncode == 0, listing.stderr
        listed = json.loads(listing.stdout)["servers"]
        assert [server["address"] for server in listed] == sorted(addresses)
        assert all(0 <= server["age_seconds"] < 30 for server in listed)
    finally:
        for process in [*servers, registry]:
            stop(process)


def _run(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args],
        cwd=tmp_path,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_walk_through_on_etcd(tmp_path: Path) -> None:
    """Two registries on one etcd, a server heartbeating to them and one
    registered in etcd directly; calls spread over both through either
    registry (one of them killed) and straight from etcd."""
    from tests._etcd import EtcdCluster

    blocks = python_blocks()
    for name in ("spread.py", "etcd_spread.py"):
        (tmp_path / name).write_text(blocks[name], encoding="utf-8")
    processes: list[subprocess.Popen[bytes]] = []
    with EtcdCluster.start(tmp_path) as cluster:
        try:
            etcd = ",".join(cluster.endpoints)
            urls = []
            for _ in range(2):
                registry = start(
                    tmp_path,
                    *("geerpc-registry", "--etcd", etcd, "--timeout", "30"),
                    *("--listen", "tcp:0:interface=127.0.0.1"),
                )
                processes.append(registry)
                port = wait_for(registry, rb"Site starting on (\d+)")
                urls.append(f"http://127.0.0.1:{port}/_geerpc_/registry")
            first = processes[0]
            a = start(
                tmp_path,
                *("geerpc", "--listen", "tcp:0:interface=127.0.0.1"),
                *("--registry", ",".join(urls), "--advertise", "tcp@127.0.0.1:0"),
            )
            processes.append(a)
            b = start(
                tmp_path,
                *("geerpc", "--listen", "tcp:0:interface=127.0.0.1"),
                *("--etcd", etcd, "--advertise", "tcp@127.0.0.1:0"),
            )
            processes.append(b)
            addresses = sorted(
                [
                    wait_for(a, rb"heartbeat: (\S+) registered at"),
                    wait_for(b, rb"etcd: (\S+) registered as"),
                ]
            )
            expected = "".join(f"{address}: 5 calls\n" for address in addresses)

            result = _run(tmp_path, "spread.py", urls[1])
            assert (result.returncode, result.stdout) == (0, expected), result.stderr
            stop(first)  # one registry down: the other lists both still
            result = _run(tmp_path, "spread.py", urls[1])
            assert (result.returncode, result.stdout) == (0, expected), result.stderr
            result = _run(tmp_path, "etcd_spread.py", etcd)
            assert (result.returncode, result.stdout) == (0, expected), result.stderr

            listing = _run(tmp_path, "-m", "txgeerpc", "servers", "--etcd", etcd, "--json")
            assert listing.returncode == 0, listing.stderr
            listed = json.loads(listing.stdout)["servers"]
            assert [server["address"] for server in listed] == addresses

            # Server a's heartbeats move to the registry still up.
            wait_for(a, rb"heartbeat: [^\n]*" + re.escape(urls[1].encode()))
        finally:
            for process in reversed(processes):
                stop(process)
