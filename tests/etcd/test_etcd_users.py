"""
One etcd user per service (issue 15 item 5, docs/etcd.md "One etcd user per
service"), on a real etcd with auth enabled: the page's etcdctl commands, run
as written, give ``arith`` and ``calc`` each a role that may write its own
server's key only; ``twistd geerpc --etcd-user arith`` registers, while
``calc``'s user cannot overwrite, delete or take over ``arith``'s entry
(etcd: permission denied) and a ``twistd geerpc --etcd-user calc`` that
advertises ``arith``'s address keeps failing.  Every process started here is
stopped by PID.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
from pathlib import Path

from tests._etcd import EtcdCluster
from tests._processes import ROOT, output, start, stop, wait_for

ARITH_KEY = "/geerpc/servers/tcp@127.0.0.1:7101"
CALC_KEY = "/geerpc/servers/tcp@127.0.0.1:7102"


def page_commands() -> list[str]:
    """The etcdctl commands of docs/etcd.md's section (its first block)."""
    page = (ROOT / "docs" / "etcd.md").read_text()
    section = page.split("## One etcd user per service", 1)[1]
    block = re.search(r"```text\n(.*?)```", section, re.S)
    assert block is not None
    commands = block.group(1).strip().splitlines()
    assert commands and all(line.startswith("etcdctl --endpoints=$ETCD ") for line in commands)
    return commands


def etcdctl(endpoint: str, *argv: str, user: str | None = None) -> subprocess.CompletedProcess[str]:
    credentials = [f"--user={user}"] if user else []
    return subprocess.run(
        ["etcdctl", f"--endpoints={endpoint}", *credentials, *argv],
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_a_service_cannot_overwrite_anothers_registration(tmp_path: Path) -> None:
    with EtcdCluster.start(tmp_path) as cluster:
        endpoint = cluster.endpoints[0]
        for command in page_commands():
            ran = subprocess.run(
                ["sh", "-c", command],
                env={**os.environ, "ETCD": endpoint},
                capture_output=True,
                text=True,
                timeout=30,
            )
            assert ran.returncode == 0, (command, ran.stderr)
        (tmp_path / "arith.password").write_text("arith-secret-0123")
        (tmp_path / "calc.password").write_text("calc-secret-0123")
        etcd = ["--etcd", endpoint, "--ttl", "3", "--listen", "tcp:0:interface=127.0.0.1"]
        processes = []
        try:
            arith = start(
                tmp_path,
                "geerpc",
                *etcd,
                *("--advertise", "tcp@127.0.0.1:7101", "--etcd-user", "arith"),
                *("--etcd-password-file", "arith.password"),
            )
            processes.append(arith)
            wait_for(arith, rb"etcd: tcp@127\.0\.0\.1:7101 registered as")
            root = "root:root-secret-0123"
            registered = etcdctl(endpoint, "get", ARITH_KEY, "--print-value-only", user=root)
            value = registered.stdout.strip()
            assert json.loads(value)["address"] == "tcp@127.0.0.1:7101", registered

            # calc's user: its own key, yes; arith's, no.
            calc = "calc:calc-secret-0123"
            assert etcdctl(endpoint, "put", CALC_KEY, "{}", user=calc).returncode == 0
            for argv in (["put", ARITH_KEY, "{}"], ["del", ARITH_KEY]):
                refused = etcdctl(endpoint, *argv, user=calc)
                assert refused.returncode != 0 and "permission denied" in refused.stderr, refused
            # It may read every entry (to find the others).
            listed = etcdctl(
                endpoint, "get", "/geerpc/servers/", "--prefix", "--keys-only", user=calc
            )
            assert listed.stdout.split() == [ARITH_KEY, CALC_KEY], listed

            # A calc server advertising arith's address keeps failing.
            hijack = start(
                tmp_path,
                "geerpc",
                *etcd,
                *("--advertise", "tcp@127.0.0.1:7101", "--etcd-user", "calc"),
                *("--etcd-password-file", "calc.password"),
            )
            processes.append(hijack)
            failed = rb"etcd: registering tcp@127\.0\.0\.1:7101 failed (?:again )?"
            failed += rb"\([^)]*permission denied"
            wait_for(hijack, failed)
            wait_for(hijack, failed)  # it retries, and fails again
            os.kill(hijack.pid, signal.SIGTERM)
            assert b"registered as" not in output(hijack)
            after = etcdctl(endpoint, "get", ARITH_KEY, "--print-value-only", user=root)
            assert after.stdout.strip() == value
            # A user with no role at all cannot even read.
            outsider = etcdctl(endpoint, "get", ARITH_KEY, user="nobody:nothing-0123")
            assert outsider.returncode != 0
        finally:
            for process in reversed(processes):
                stop(process)
