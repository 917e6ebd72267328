"""
``twistd geerpc --workers 2`` and ``--handover`` on real processes: one
port served by two workers (calls land on both), one registry entry, a
worker killed and restarted with no connection refused meanwhile, a drain on
SIGTERM; the metrics and the debug page across the workers, SIGHUP passed
on to them; and restarts that hand the listening socket over under load,
with no connection refused (with workers: "ready" only once they serve).
Clients run in this process on the real reactor; blocking waits on the
servers run in threads.  Every process is stopped by PID.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import pytest_twisted
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import reactor
from twisted.internet.defer import DeferredList, ensureDeferred
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread

from tests._processes import output, start, stop, wait_for
from txgeerpc import Client, connect
from txgeerpc.errors import (
    ConnectFailed,
    ServerShuttingDown,
    Unauthenticated,
    UnexpectedDisconnect,
)

CLUSTER = "tests.integration._cluster_service:Cluster"
LISTENING = rb"serving .* on tcp@127\.0\.0\.1:(\d+)"
SERVING = rb"\[worker (\d)\] txgeerpc: serving"


def _get(url: str, accept: str = "*/*") -> tuple[dict[str, str], bytes]:
    request = urllib.request.Request(url, headers={"Accept": accept})
    with urllib.request.urlopen(request, timeout=5) as answer:
        return dict(answer.headers), answer.read()


async def _who(port: int, token: str | None = None) -> int:
    """A new connection's answer to ``Cluster.Who``: the PID that serves it."""
    client = await connect(reactor, f"tcp@127.0.0.1:{port}", connect_timeout=5, token=token)
    try:
        return int(await client.call("Cluster.Who", 0, timeout=5))
    finally:
        await client.close()


def _workers_of(port: int, count: int) -> dict[int, int]:
    """Worker id by PID, from the debug page's JSON (each request a new
    connection, answered by one worker or the other), until ``count`` seen."""
    seen: dict[int, int] = {}
    for _ in range(200):
        _, body = _get(f"http://127.0.0.1:{port}/debug/geerpc", "application/json")
        worker = json.loads(body)["worker"]
        assert worker["count"] == count, worker
        seen[worker["pid"]] = worker["id"]
        if len(seen) == count:
            return seen
    raise AssertionError(f"200 requests reached only workers {seen}")


@pytest_twisted.ensureDeferred
async def test_two_workers_one_port_one_entry_restarted_drained(tmp_path: Path) -> None:
    registry = start(tmp_path, "geerpc", "--listen", "tcp:0:interface=127.0.0.1")
    server: subprocess.Popen[bytes] | None = None
    clients: list[Client] = []
    try:
        registry_port = int(await deferToThread(wait_for, registry, LISTENING))
        url = f"http://127.0.0.1:{registry_port}/_geerpc_/registry"
        server = start(
            tmp_path,
            "geerpc",
            "--listen",
            "tcp:0:interface=127.0.0.1",
            "--workers",
            "2",
            "--service",
            CLUSTER,
            "--registry",
            url,
            "--advertise",
            "tcp@127.0.0.1:0",
            "--registry-path",
            "none",
        )
        # The parent says it serves only after both workers did.
        ready = [await deferToThread(wait_for, server, SERVING) for _ in range(2)]
        assert sorted(ready) == ["0", "1"]
        port = int(await deferToThread(wait_for, server, rb"2 workers serving .*\n.*" + LISTENING))

        # One port, both workers: the debug page says which answered.
        workers = await deferToThread(_workers_of, port, 2)
        assert sorted(workers.values()) == [0, 1]
        assert os.getpid() not in workers and server.pid not in workers
        _, metrics = await deferToThread(_get, f"http://127.0.0.1:{port}/metrics")
        assert b'worker="0"' in metrics or b'worker="1"' in metrics
        # Calls land on both (new connections, until each worker answered one).
        answered: Counter[int] = Counter()
        for _ in range(200):
            answered[await _who(port)] += 1
            if len(answered) == 2:
                break
        assert set(answered) == set(workers), (answered, workers)

        # Registered once: one entry, one join, from the parent only.
        headers, _ = await deferToThread(_get, url)
        assert headers["X-Geerpc-Servers"] == f"tcp@127.0.0.1:{port}"
        # Killed: worker 1 is restarted (one line), the others are served meanwhile.
        killed = next(pid for pid, worker in workers.items() if worker == 1)
        survivor = next(pid for pid, worker in workers.items() if worker == 0)
        refused: list[Any] = []
        during: Counter[int] = Counter()
        running = [True]

        async def load() -> None:
            while running[0]:
                try:
                    during[await _who(port)] += 1
                except ConnectFailed as error:
                    refused.append(error)
                except Exception:  # a connection the killed worker had accepted
                    during[0] += 1

        loads = [ensureDeferred(load()) for _ in range(4)]
        await deferLater(reactor, 0.2, lambda: None)  # the load runs meanwhile
        os.kill(killed, signal.SIGKILL)
        await deferToThread(
            wait_for, server, rb"worker 1 \(pid %d\) was killed by SIGKILL; restarting it" % killed
        )
        await deferToThread(wait_for, server, rb"\[worker 1\] txgeerpc: serving")
        await deferLater(reactor, 0.3, lambda: None)  # the restarted worker takes its share
        running[0] = False
        await DeferredList(loads)
        assert refused == []
        assert during[survivor] > 0
        restarted = set(during) - {survivor, killed, 0}
        assert len(restarted) <= 1, during

        # SIGTERM drains: every call in flight, on both workers, is answered.
        clients = [
            await connect(reactor, f"tcp@127.0.0.1:{port}", connect_timeout=5) for _ in range(8)
        ]
        calls = [client.call("Cluster.Who", 400, timeout=10) for client in clients * 5]
        await deferLater(reactor, 0.1, lambda: None)  # the calls reach the workers
        os.kill(server.pid, signal.SIGTERM)
        results = await DeferredList(calls, consumeErrors=True)
        assert all(ok for ok, _ in results), [value for ok, value in results if not ok]
        await deferToThread(server.wait, 15)
        log = (await deferToThread(output, server)).decode()
        headers, _ = await deferToThread(_get, url)
        assert "X-Geerpc-Servers" not in headers or headers["X-Geerpc-Servers"] == ""
    finally:
        for client in clients:
            await client.close()
        if server is not None:
            stop(server)
        stop(registry)
    # Registered (and deregistered) once, by the parent; each worker drained.
    assert log.count(" registered at http") == log.count(" deregistered from http") == 1, log
    assert "[worker 0] txgeerpc: stopping" in log and "[worker 1] txgeerpc: stopping" in log


async def _spread_calls(port: int, pids: int, least: int, token: str | None = None) -> Counter[int]:
    """Calls, each on a new connection, until ``pids`` workers answered and
    at least ``least`` calls were made: the calls answered by each PID."""
    answered: Counter[int] = Counter()
    for _ in range(400):
        answered[await _who(port, token)] += 1
        if len(answered) >= pids and sum(answered.values()) >= least:
            return answered
    raise AssertionError(f"400 calls reached only {answered}")


def _scrape(port: int) -> tuple[str, dict[str, dict[str, float]]]:
    """One ``/metrics`` scrape: the worker that answered, and per sample
    name the value by ``worker`` label of Cluster.Who's samples and of
    ``txgeerpc_workers_answered``."""
    headers, body = _get(f"http://127.0.0.1:{port}/metrics")
    found: dict[str, dict[str, float]] = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            if sample.labels.get("method") == "Who" or sample.name.startswith("txgeerpc_workers"):
                if "le" not in sample.labels and "outcome" not in sample.labels:
                    found.setdefault(sample.name, {})[sample.labels["worker"]] = sample.value
    return headers["X-Geerpc-Worker"], found


@pytest_twisted.ensureDeferred
async def test_connections_opened_at_once_spread_evenly_over_the_workers(tmp_path: Path) -> None:
    # Without the accept gate (txgeerpc._accept_balance) one worker took all
    # four connections of most rounds: the kernel wakes both, and the first
    # to accept takes every one pending.
    server = start(
        tmp_path,
        "geerpc",
        "--listen",
        "tcp:0:interface=127.0.0.1",
        "--workers",
        "2",
        "--service",
        CLUSTER,
    )
    try:
        port = int(await deferToThread(wait_for, server, rb"2 workers serving .*\n.*" + LISTENING))
        served: Counter[int] = Counter()
        clients: list[Client] = []
        try:
            for _ in range(5):  # the connections of every round stay open
                dialled = await DeferredList(
                    [
                        ensureDeferred(connect(reactor, f"tcp@127.0.0.1:{port}", connect_timeout=5))
                        for _ in range(4)
                    ],
                    fireOnOneErrback=True,
                    consumeErrors=True,
                )
                new = [client for _, client in dialled]
                clients += new
                pids = [int(await client.call("Cluster.Who", 0, timeout=5)) for client in new]
                served.update(pids)
                # A worker ahead leaves new connections to the other, or
                # takes one itself if the other is slow to (a busy machine).
                assert len(served) == 2 and max(served.values()) - min(served.values()) <= 2, served
        finally:
            for client in clients:
                await client.close()
    finally:
        stop(server)


@pytest_twisted.ensureDeferred
async def test_metrics_and_debug_page_show_every_worker_and_the_sum(tmp_path: Path) -> None:
    server = start(
        tmp_path,
        "geerpc",
        "--listen",
        "tcp:0:interface=127.0.0.1",
        "--workers",
        "2",
        "--service",
        CLUSTER,
    )
    try:
        port = int(await deferToThread(wait_for, server, rb"2 workers serving .*\n.*" + LISTENING))
        answered = await _spread_calls(port, 2, 20)
        calls = sum(answered.values())
        # Every scrape (new connections: either worker answers) holds both
        # workers' series, and they add up to every call made.
        scraped_by: set[str] = set()
        for _ in range(100):
            by, samples = await deferToThread(_scrape, port)
            scraped_by.add(by)
            assert samples["txgeerpc_workers_answered"] == {"0": 1.0, "1": 1.0}, samples
            started = samples["txgeerpc_server_started_total"]
            assert set(started) == {"0", "1"}, samples
            assert sorted(started.values()) == sorted(map(float, answered.values())), (
                started,
                answered,
            )
            assert sum(started.values()) == calls
            assert sum(samples["txgeerpc_server_handling_seconds_count"].values()) == calls
            if len(scraped_by) == 2:
                break
        assert scraped_by == {"0", "1"}
        # ?workers=self: the answering worker's own series only.
        headers, own = await deferToThread(_get, f"http://127.0.0.1:{port}/metrics?workers=self")
        assert f'worker="{headers["X-Geerpc-Worker"]}"'.encode() in own
        assert b"txgeerpc_workers_answered" not in own
        # The debug page: each worker's table and the sum, as JSON and HTML.
        headers, body = await deferToThread(
            _get, f"http://127.0.0.1:{port}/debug/geerpc?workers=all", "application/json"
        )
        page = json.loads(body)
        assert page["worker"]["id"] == int(headers["X-Geerpc-Worker"])
        assert page["sum"]["calls"] == calls and page["sum"]["workers_answered"] == 2
        (who,) = [m for s in page["sum"]["services"] for m in s["methods"] if m["name"] == "Who"]
        assert who["calls"] == calls
        by_pid = {w["worker"]["pid"]: w["calls"] for w in page["workers"]}
        assert by_pid == dict(answered)
        _, html = await deferToThread(
            _get, f"http://127.0.0.1:{port}/debug/geerpc?workers=all", "text/html"
        )
        assert b'<tr class="sum">' in html and f">{calls}</td>".encode() in html
    finally:
        stop(server)


@pytest_twisted.ensureDeferred
async def test_sighup_to_the_parent_reloads_the_tokens_of_every_worker(tmp_path: Path) -> None:
    old, new = "old-token-0123456789", "new-token-0123456789"
    (tmp_path / "tokens").write_text(f"alice {old}\n")
    server = start(
        tmp_path,
        "geerpc",
        "--listen",
        "tcp:0:interface=127.0.0.1",
        "--workers",
        "2",
        "--service",
        CLUSTER,
        "--tokens",
        "tokens",
    )
    try:
        port = int(await deferToThread(wait_for, server, rb"2 workers serving .*\n.*" + LISTENING))
        assert len(await _spread_calls(port, 2, 2, old)) == 2
        (tmp_path / "tokens.new").write_text(f"alice {new}\n")
        os.replace(tmp_path / "tokens.new", tmp_path / "tokens")
        os.kill(server.pid, signal.SIGHUP)
        reloaded = [
            await deferToThread(wait_for, server, rb"\[worker (\d)\] txgeerpc: SIGHUP: reloaded")
            for _ in range(2)
        ]
        assert sorted(reloaded) == ["0", "1"]
        # Both workers take the new token (and refuse the old one).
        assert len(await _spread_calls(port, 2, 2, new)) == 2
        for _ in range(4):
            try:
                await _who(port, old)
            except Unauthenticated:
                continue
            raise AssertionError("the old token was taken after the reload")
        assert server.poll() is None
    finally:
        stop(server)


@pytest_twisted.ensureDeferred
async def test_handover_restarts_under_load_refuse_no_connection(tmp_path: Path) -> None:
    path = str(tmp_path / "handover.sock")
    args = ("geerpc", "--service", CLUSTER, "--registry-path", "none", "--handover", path)
    first = start(tmp_path, *args, "--listen", "tcp:0:interface=127.0.0.1")
    processes = [first]
    refused: list[Any] = []
    shutting_down: list[Any] = []
    others: list[Any] = []
    answered: Counter[int] = Counter()
    running = [True]
    try:
        port = int(await deferToThread(wait_for, first, LISTENING))

        async def load() -> None:
            while running[0]:
                try:
                    answered[await _who(port)] += 1
                except ConnectFailed as error:
                    refused.append(error)
                except (ServerShuttingDown, UnexpectedDisconnect) as error:
                    # Accepted by the old process as it stopped: go-away, then
                    # closed (a client redials; an XClient does it for you).
                    shutting_down.append(error)
                except Exception as error:
                    others.append(error)

        loads = [ensureDeferred(load()) for _ in range(8)]
        for _ in range(3):
            old = processes[-1]
            new = start(tmp_path, *args, "--listen", f"tcp:{port}:interface=127.0.0.1")
            processes.append(new)
            await deferToThread(wait_for, new, LISTENING)
            await deferToThread(old.wait, 15)
            await deferToThread(wait_for, old, rb"the new process serves; stopping gracefully")
            deadline = time.monotonic() + 10
            while answered[new.pid] < 10:
                assert time.monotonic() < deadline, (answered, refused, others)
                await deferLater(reactor, 0.02, lambda: None)  # the load runs meanwhile
        running[0] = False
        await DeferredList(loads)
    finally:
        running[0] = False
        for process in processes:
            stop(process)
    assert refused == []
    assert others == []
    assert len(shutting_down) < sum(answered.values()) / 10, (len(shutting_down), answered)
    assert set(answered) == {process.pid for process in processes}, answered
    assert sum(answered.values()) > 100
    assert [process.returncode for process in processes[:-1]] == [0, 0, 0]


@pytest_twisted.ensureDeferred
async def test_handover_with_workers_says_ready_once_they_serve(tmp_path: Path) -> None:
    path = str(tmp_path / "handover.sock")
    args = ("geerpc", "--service", CLUSTER, "--registry-path", "none", "--handover", path)
    args += ("--workers", "2")
    pids = rb"2 workers serving .* \(pids (\d+, \d+)\)"
    first = start(tmp_path, *args, "--listen", "tcp:0:interface=127.0.0.1")
    processes = [first]
    refused: list[Any] = []
    answered: Counter[int] = Counter()
    running = [True]
    loads: list[Any] = []
    try:
        await deferToThread(wait_for, first, pids)
        port = int(await deferToThread(wait_for, first, LISTENING))

        async def load() -> None:
            while running[0]:
                try:
                    answered[await _who(port)] += 1
                except ConnectFailed as error:
                    refused.append(error)
                except (ServerShuttingDown, UnexpectedDisconnect):
                    pass  # accepted by an old worker as it stopped: a client redials

        loads += [ensureDeferred(load()) for _ in range(2)]
        new = start(tmp_path, *args, "--listen", f"tcp:{port}:interface=127.0.0.1")
        processes.append(new)
        # The new process tells the old one "ready" only once both its
        # workers serve (their lines, then its own, then the hand-over's).
        serving = [await deferToThread(wait_for, new, SERVING) for _ in range(2)]
        assert sorted(serving) == ["0", "1"]
        new_pids = {int(pid) for pid in (await deferToThread(wait_for, new, pids)).split(", ")}
        await deferToThread(wait_for, new, LISTENING)
        await deferToThread(wait_for, new, rb"serving on the sockets handed over")
        await deferToThread(first.wait, 15)
        deadline = time.monotonic() + 10
        while not new_pids <= set(answered):
            assert time.monotonic() < deadline, (answered, new_pids)
            await deferLater(reactor, 0.02, lambda: None)  # the load runs meanwhile
    finally:
        running[0] = False
        await DeferredList(loads)  # each loop ends with its call
        for process in processes:
            stop(process)
    assert refused == []
    assert first.returncode == 0


def test_workers_of_a_killed_parent_stop_and_remove_the_run_directory(tmp_path: Path) -> None:
    # The parent removes its private run directory when it stops its workers;
    # killed, it cannot: the workers see their stdin close, stop, and the
    # last one out removes it (it used to stay in $TMPDIR for good).
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    server = start(
        tmp_path,
        "geerpc",
        "--listen",
        "tcp:0:interface=127.0.0.1",
        "--workers",
        "2",
        env={"TMPDIR": str(scratch)},
    )
    watched: list[int] = []
    try:
        pids = wait_for(server, rb"2 workers serving .* \(pids (\d+, \d+)\)")
        workers = [int(pid) for pid in pids.split(", ")]
        [directory] = scratch.iterdir()
        assert directory.name.startswith("txgeerpc-workers-")
        # Watch the workers before the kill: a PID file descriptor stays theirs.
        watched = [os.pidfd_open(pid) for pid in workers]
        os.kill(server.pid, signal.SIGKILL)
        server.wait(15)
        for descriptor in watched:
            ready, _, _ = select.select([descriptor], [], [], 15)
            assert ready, "a worker outlived its killed parent by 15 s"
        assert list(scratch.iterdir()) == []
    finally:
        for descriptor in watched:
            os.close(descriptor)
        stop(server)
