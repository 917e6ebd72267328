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


def test_a_hop_cancelled_when_its_budget_runs_out_calls_no_further(servers: list[str]) -> None:
    a, b, c = servers
    # A spends 0.3 s of its 0.5 s and passes the rest to B, which waits 0.3 s
    # under its 0.2 s: B's server cancels it when its budget runs out, so C is
    # never called, and A's call to B times out.
    chain = json.dumps({"Hops": [b, c], "Spend": 0.3})
    result = _cli(a, "Ctx.Info", chain, "--timeout", "0.5")
    assert result.returncode == 1, result
    assert "no reply within 0.5s" in result.stderr
    hop_b = _method(_debug(b), "Ctx", "Info")
    assert (hop_b["calls"], hop_b["in_flight"]) == (1, 0), hop_b
    assert hop_b["cancelled"] + hop_b["errors"] == 1, hop_b
    assert _method(_debug(c), "Ctx", "Info")["calls"] == 0


def test_a_hop_whose_budget_is_spent_is_refused_by_its_server(servers: list[str]) -> None:
    a, b, c = servers
    # A first call down the chain leaves B connected to C (so B knows C
    # speaks the extension).
    warm = _cli(a, "Ctx.Info", json.dumps({"Hops": [b, c]}), "--timeout", "5")
    assert warm.returncode == 0, warm.stderr
    # Now each hop works 0.3 s without yielding: B gets about 0.2 s of A's
    # 0.5 s, works past it and calls C with a spent budget.  C refuses the
    # call (counted as expired) and never runs it.
    chain = json.dumps({"Hops": [b, c], "Work": 0.3})
    result = _cli(a, "Ctx.Info", chain, "--timeout", "0.5")
    assert result.returncode == 1, result
    assert "no reply within 0.5s" in result.stderr
    # A gave up first; B's refused call to C follows it.  A call from B to C
    # over the same connection comes after it on the stream, so once it is
    # answered, C has handled the refused one.
    after = _cli(b, "Ctx.Info", json.dumps({"Hops": [c]}), "--timeout", "5")
    assert after.returncode == 0, after.stderr
    assert json.loads(after.stdout)["Next"]["Error"] == ""
    hop_c = _method(_debug(c), "Ctx", "Info")
    assert (hop_c["calls"], hop_c["expired"], hop_c["in_flight"]) == (2, 1, 0), hop_c
    hop_b = _method(_debug(b), "Ctx", "Info")
    assert (hop_b["calls"], hop_b["expired"], hop_b["in_flight"]) == (3, 0, 0), hop_b
