"""
The call context on a real ``twistd geerpc`` (docs/protocol.md 13.9): a CLI
call whose ``--timeout`` runs out leaves nothing running on the server (its
handler was cancelled, and cleaned up), and a budget travels down a chain of
three servers.  Every process started here is stopped by PID.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests._processes import environment, start, stop, wait_for


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[list[str]]:
    processes: list[subprocess.Popen[bytes]] = []
    addresses = []
    try:
        for index in range(3):
            directory = tmp_path / str(index)
            directory.mkdir()
            process = start(directory, "geerpc", "--listen", "tcp:0:interface=127.0.0.1")
            processes.append(process)
            addresses.append(wait_for(process, rb"serving .* on (tcp@127\.0\.0\.1:\d+)"))
        yield addresses
    finally:
        for process in processes:
            stop(process)


def _cli(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "txgeerpc", "call", *argv],
        env=environment(),
        capture_output=True,
        text=True,
        timeout=60,
    )


def _debug(address: str) -> dict[str, Any]:
    url = f"http://{address.removeprefix('tcp@')}/debug/geerpc?format=json"
    with urllib.request.urlopen(url, timeout=5) as answer:
        page: dict[str, Any] = json.load(answer)
    return page


def _method(page: dict[str, Any], service: str, method: str) -> dict[str, Any]:
    for entry in page["services"]:
        if entry["name"] == service:
            for item in entry["methods"]:
                if item["name"] == method:
                    return dict(item)
    raise AssertionError(f"{service}.{method} not on the page")


def test_a_timed_out_cli_call_leaves_nothing_running(servers: list[str]) -> None:
    address = servers[0]
    result = _cli(address, "Foo.Sleep", '{"Num1":30,"Num2":0}', "--timeout", "0.3")
    timed_out = time.monotonic()
    assert result.returncode != 0
    assert "no reply within 0.3s" in result.stderr
    sleep = _method(_debug(address), "Foo", "Sleep")
    assert time.monotonic() - timed_out < 0.5
    assert sleep["in_flight"] == 0, sleep
    # Cancelled by the client's cancel request, or by the server's own timer
    # for the same budget, whichever came first: never both, never neither.
    assert sleep["cancelled"] + sleep["errors"] == 1, sleep
    # The handler's own cancellation ran (Foo.Sleep counts it).
    assert _cli(address, "Ctx.Cancelled").stdout == "1\n"


def test_the_budget_travels_down_a_chain_of_three_servers(servers: list[str]) -> None:
    a, b, c = servers
    chain = json.dumps({"Hops": [b, c], "Spend": 0.2})
    result = _cli(a, "Ctx.Info", chain, "--timeout", "2", "--meta", "tenant=acme")
    assert result.returncode == 0, result.stderr
    first = json.loads(result.stdout)
    second = first["Next"]
    third = second["Next"]
    assert [hop["Metadata"] for hop in (first, second, third)] == [{"tenant": "acme"}] * 3
    assert [hop["Error"] for hop in (first, second, third)] == ["", "", ""]
    budgets = [hop["Budget"] for hop in (first, second, third)]
    assert all(hop["HasBudget"] for hop in (first, second, third))
    # Each hop sees at most what the one before had, less what it spent (0.2 s).
    assert budgets[0] <= 2.0
    assert budgets[1] <= budgets[0] - 0.2
    assert budgets[2] <= budgets[1] - 0.2
    assert "trailer: budget-left=" in result.stderr


def test_a_hop_whose_budget_is_spent_does_not_run(servers: list[str]) -> None:
    a, b, c = servers
    # A spends 0.3 s of its 0.5 s and passes the rest to B, which spends 0.3 s
    # of its 0.2 s: B's server cancels it when its budget runs out, so C is
    # never called; A reports B's typed error.
    chain = json.dumps({"Hops": [b, c], "Spend": 0.3})
    result = _cli(a, "Ctx.Info", chain, "--timeout", "0.5")
    assert _method(_debug(c), "Ctx", "Info")["calls"] == 0
    hop_b = _method(_debug(b), "Ctx", "Info")
    assert (hop_b["calls"], hop_b["in_flight"]) == (1, 0)
    assert result.returncode != 0 or "deadline exceeded" in json.loads(result.stdout)["Error"]
