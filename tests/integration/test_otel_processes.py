"""
OpenTelemetry across three real ``twistd geerpc --otel`` processes: a call
to A that A forwards to B and B to C (``Ctx.Info``) is one trace, each
process's spans (read back from its in-memory exporter through
``Ctx.Spans``) linking to the one before.  Every process is stopped by PID.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests._processes import environment, start, stop, wait_for

SERVICE = "tests.integration._otel_service:Ctx"


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[list[str]]:
    processes: list[subprocess.Popen[bytes]] = []
    addresses = []
    try:
        for index in range(3):
            directory = tmp_path / str(index)
            directory.mkdir()
            process = start(
                directory,
                "geerpc",
                "--otel",
                "--service",
                SERVICE,
                "--listen",
                "tcp:0:interface=127.0.0.1",
            )
            processes.append(process)
            addresses.append(wait_for(process, rb"serving .* on (tcp@127\.0\.0\.1:\d+)"))
        yield addresses
    finally:
        for process in processes:
            stop(process)


def _cli(*argv: str) -> Any:
    result = subprocess.run(
        [sys.executable, "-m", "txgeerpc", "call", *argv],
        env=environment(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def _info_spans(address: str) -> list[dict[str, Any]]:
    return [span for span in _cli(address, "Ctx.Spans") if span["Name"] == "Ctx/Info"]


def test_a_call_through_three_processes_is_one_trace(servers: list[str]) -> None:
    a, b, c = servers
    info = _cli(a, "Ctx.Info", json.dumps({"Hops": [b, c]}), "--timeout", "10")
    assert [info["Error"], info["Next"]["Error"], info["Next"]["Next"]["Error"]] == ["", "", ""]
    spans_a, spans_b, spans_c = (_info_spans(address) for address in servers)
    kinds = [sorted(span["Kind"] for span in spans) for spans in (spans_a, spans_b, spans_c)]
    assert kinds == [["CLIENT", "SERVER"], ["CLIENT", "SERVER"], ["SERVER"]]
    every = spans_a + spans_b + spans_c
    assert len({span["TraceId"] for span in every}) == 1
    by_kind = [{span["Kind"]: span for span in spans} for spans in (spans_a, spans_b, spans_c)]
    server_a, client_a = by_kind[0]["SERVER"], by_kind[0]["CLIENT"]
    server_b, client_b = by_kind[1]["SERVER"], by_kind[1]["CLIENT"]
    server_c = by_kind[2]["SERVER"]
    assert server_a["ParentId"] == ""  # the CLI does not trace: A's span is the root
    assert client_a["ParentId"] == server_a["SpanId"]
    assert server_b["ParentId"] == client_a["SpanId"]
    assert client_b["ParentId"] == server_b["SpanId"]
    assert server_c["ParentId"] == client_b["SpanId"]
    assert client_a["Attributes"]["server.address"] == "127.0.0.1"
    assert client_a["Attributes"]["server.port"] == b.rpartition(":")[2]
    for span in every:
        assert span["Attributes"]["rpc.system"] == "geerpc"
        assert span["Attributes"]["rpc.service"] == "Ctx"
        assert span["Attributes"]["rpc.method"] == "Info"
        assert span["Attributes"]["rpc.geerpc.status"] == "ok"
