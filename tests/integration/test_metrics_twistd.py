"""
Metrics and the access log on a real ``twistd geerpc``: ``curl /metrics``
after a known number of calls, and a real Prometheus (Debian's
``prometheus``, installed by scripts/test) scraping it, answering the counts
through its own HTTP API.  Every process started here is stopped by PID.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests._processes import _outputs, start, stop, wait_for
from tests.integration._rawclient import RawClient
from txgeerpc.examples import Args

PROMETHEUS = "/usr/bin/prometheus"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    process = start(
        tmp_path,
        "geerpc",
        "--listen",
        "tcp:0:interface=127.0.0.1",
        "--access-log",
        "access.jsonl",
    )
    try:
        address = wait_for(process, rb"serving .* on (tcp@127\.0\.0\.1:\d+)")
        yield int(address.rsplit(":", 1)[1]), process
    finally:
        stop(process)


def _calls(port: int, multiply: int, divide: int) -> None:
    client = RawClient(port)
    try:
        for n in range(multiply):
            header, value, _ = client.call("Arith.Multiply", Args(n, 3))
            assert (header.error, value) == ("", 3 * n)
        for _ in range(divide):
            header, _, _ = client.call("Arith.Divide", Args(1, 0))
            assert header.error == "divide by zero"
    finally:
        client.close()


def _samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return found


def test_curl_metrics_after_known_calls(
    tmp_path: Path, server: tuple[int, subprocess.Popen[bytes]]
) -> None:
    port, process = server
    _calls(port, multiply=100, divide=3)
    curl = subprocess.run(
        ["curl", "--silent", "--show-error", "--fail", f"http://127.0.0.1:{port}/metrics"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert curl.returncode == 0, curl.stderr
    found = _samples(curl.stdout)  # prometheus_client's own parser
    multiply = {("service", "Arith"), ("method", "Multiply")}
    divide = {("service", "Arith"), ("method", "Divide")}

    def value(name: str, labels: set[tuple[str, str]]) -> float:
        return found[(name, frozenset(labels))]

    assert value("txgeerpc_server_handled_total", multiply | {("outcome", "ok")}) == 100
    assert value("txgeerpc_server_handled_total", divide | {("outcome", "error")}) == 3
    observations = sum(
        count
        for (name, _labels), count in found.items()
        if name == "txgeerpc_server_handling_seconds_count"
    )
    assert observations == 103
    assert value("txgeerpc_server_handling_seconds_count", multiply) == 100
    assert value("txgeerpc_server_handling_seconds_bucket", multiply | {("le", "+Inf")}) == 100
    assert value("txgeerpc_server_connections", {("transport", "raw")}) == 0

    # The access log: one JSON line per call, in order.
    lines = (tmp_path / "access.jsonl").read_text().splitlines()
    events = [json.loads(line) for line in lines]
    assert [(e["method"], e["seq"], e["outcome"]) for e in events] == [
        ("Arith.Multiply", n, "ok") for n in range(1, 101)
    ] + [("Arith.Divide", n, "error") for n in range(101, 104)]
    assert all(e["log_namespace"] == "txgeerpc.access" for e in events)
    assert all(e["peer"].startswith("127.0.0.1:") and e["duration"] >= 0 for e in events)
    assert all(e["reply_bytes"] > 0 for e in events)
    assert all(e["request_bytes"] > 0 for e in events)

    # A division by zero is an error the handler meant: one line each, no traceback.
    for _ in range(3):
        wait_for(process, rb"Arith\.Divide from 127\.0\.0\.1:\d+ failed: divide by zero")
    assert b"Traceback" not in _outputs[process.pid].data


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as answer:
        return json.load(answer)


def _query(base: str, query: str) -> float | None:
    answer = _get(f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": query}))
    result = answer["data"]["result"]
    return float(result[0]["value"][1]) if result else None


def test_a_real_prometheus_scrapes_the_counts(
    tmp_path: Path, server: tuple[int, subprocess.Popen[bytes]]
) -> None:
    port, _ = server
    prometheus_port = _free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global:\n"
        "  scrape_interval: 1s\n"
        "scrape_configs:\n"
        "  - job_name: geerpc\n"
        "    metrics_path: /metrics\n"
        "    static_configs:\n"
        f"      - targets: ['127.0.0.1:{port}']\n"
    )
    _calls(port, multiply=7, divide=2)
    prometheus = subprocess.Popen(
        [
            PROMETHEUS,
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{prometheus_port}",
        ],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    base = f"http://127.0.0.1:{prometheus_port}"
    try:
        # Waiting on an outside observer: poll its API until it has scraped
        # what the calls made, with a deadline.
        deadline = time.monotonic() + 12
        ok = errors = observations = None
        while time.monotonic() < deadline:
            try:
                ok = _query(
                    base,
                    'txgeerpc_server_handled_total{job="geerpc",method="Multiply",outcome="ok"}',
                )
                errors = _query(
                    base,
                    'txgeerpc_server_handled_total{job="geerpc",method="Divide",outcome="error"}',
                )
                observations = _query(base, "sum(txgeerpc_server_handling_seconds_count)")
            except OSError:  # not listening yet
                pass
            if (ok, errors, observations) == (7, 2, 9):
                break
            time.sleep(0.2)  # the pace of polling Prometheus (its scrapes are its own)
        assert (ok, errors, observations) == (7, 2, 9)
        up = _query(base, f'up{{instance="127.0.0.1:{port}"}}')
        assert up == 1
    finally:
        if prometheus.poll() is None:
            os.kill(prometheus.pid, signal.SIGTERM)
            try:
                prometheus.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.kill(prometheus.pid, signal.SIGKILL)
                prometheus.wait()
        assert prometheus.stderr is not None
        prometheus.stderr.close()
