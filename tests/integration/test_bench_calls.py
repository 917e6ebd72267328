"""
``benchmarks/bench_calls.py`` end to end with tiny durations, so the harness
cannot rot: every system of its default run (the echo, txgeerpc plain and
framed, Twisted AMP, RPyC, the Go client against txgeerpc and against Go,
the twistd workers rows with their pipelined Go load), a payload row and the
uvloop reactor rows, all in one run of a few seconds.  The numbers are not
checked (they are noise at these durations); that each row was measured,
with the server's CPU and the ratios it is reported with, is.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests._processes import ROOT, environment

BENCH = ROOT / "benchmarks" / "bench_calls.py"


def test_every_system_is_measured(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    command = [
        sys.executable,
        str(BENCH),
        "--no-progress",
        "--rounds", "1",
        "--duration", "0.05",
        "--warmup", "10",
        "--in-flight", "1,2",
        "--codecs", "json",
        "--payloads", "64",
        "--payload-in-flight", "1",
        "--go-in-flight", "1",
        "--workers-in-flight", "2",
        "--workers-conns", "2",
        "--reactor", "uvloop",
        "--json", str(out),
    ]  # fmt: skip
    # The harness stops every process it starts (servers, agents, Go) by PID
    # in a finally; the timeout is the backstop for a hung one.
    result = subprocess.run(
        command, env=environment(), capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(out.read_text())
    rows = {(r["system"], r["codec"], r["payload"], r["in_flight"]): r for r in report["results"]}

    expected = [
        *[(s, "json", 0, n) for s in ("echo", "rpc", "framed") for n in (1, 2)],
        *[(s, "-", 0, n) for s in ("amp", "rpyc") for n in (1, 2)],
        *[(s, "json", 0, n) for s in ("echo@uvloop", "rpc@uvloop") for n in (1, 2)],
        *[(f"rpc@uvloop-{side}", "json", 0, n) for side in ("server", "client") for n in (1, 2)],
        *[(s, "json", 64, 1) for s in ("echo", "rpc", "framed")],
        ("go>rpc", "gob", 0, 1),
        ("go>go", "gob", 0, 1),
        ("workers1", "gob", 0, 2),
        ("workers1x2", "gob", 0, 2),
    ]
    if report["meta"]["workers_available"]:  # twistd geerpc --workers exists in this tree
        expected.append(("workers2", "gob", 0, 2))
    assert sorted(rows) == sorted(expected)
    for key, row in rows.items():
        assert row["calls"] > 0, key
        assert row["p50_us"] > 0, key
        assert row["server_cpu_us_per_call"] is not None, key
        go = row["client"] == "go"
        assert (row["client_cpu_us_per_call"] is not None) == go, key
    # Where the workers rows' connections landed: one each on the two servers
    # of workers1x2 (and the two connections somewhere on workers2's workers).
    assert rows[("workers1x2", "gob", 0, 2)]["worker_conns_rounds"] == [[1, 1]]
    assert len(rows[("workers1x2", "gob", 0, 2)]["worker_cpu_us_per_call"]) == 2
    if ("workers2", "gob", 0, 2) in rows:
        assert [sum(split) for split in rows[("workers2", "gob", 0, 2)]["worker_conns_rounds"]] == [
            2
        ]
    # Ratios to the echo of the same codec (the json echo for amp and rpyc).
    for key in (("rpc", "json", 0, 1), ("framed", "json", 0, 1), ("amp", "-", 0, 1)):
        assert rows[key]["echo_codec"] == "json", key
        assert rows[key]["throughput_ratio_echo"] is not None, key
    # The server's CPU is read from /proc: over the whole run it is not zero.
    assert sum(r["server_cpu_us_per_call"] * r["calls"] for r in rows.values()) > 0
    checks = {v["check"] for v in report["targets"]}
    assert "rpc json 1 in flight calls/s / rpyc" in checks
    assert "Go client 1 in flight: txgeerpc server / Go server calls/s" in checks
    assert "The reactor underneath: uvloop" in result.stdout
