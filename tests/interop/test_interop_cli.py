"""
``python -m txgeerpc call`` against a Go GeeRPC server: the argument follows
the JSON's shape (a Go server does not describe its methods), and the
``_txgeerpc.Describe`` probe does not disturb the Go server.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from ._geepeer import running_server


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "txgeerpc", "call", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_calls_to_a_go_server(geepeer: Path) -> None:
    server = running_server(geepeer)
    with server as address:
        target = f"tcp@{address}"
        summed = _cli(target, "Foo.Sum", '{"Num1":6,"Num2":7}')  # a struct: exported keys
        assert (summed.returncode, summed.stdout, summed.stderr) == (0, "13\n", "")
        keys = _cli(target, "Records.Keys", '{"b":1,"a":2,"ç":3}')  # a map: other keys
        assert (keys.returncode, json.loads(keys.stdout)) == (0, ["a", "b", "ç"])
        echoed = _cli(target, "Arith.Echo", '"héllo"')
        assert (echoed.returncode, echoed.stdout) == (0, '"héllo"\n')
        failed = _cli(target, "Arith.Divide", '{"Num1":1}')
        assert (failed.returncode, failed.stderr) == (1, "error: divide by zero\n")
        record = _cli(target, "Records.Echo", '{"Name":"r","Weight":3,"Tags":["t"]}')
        assert record.returncode == 0, record.stderr
        assert json.loads(record.stdout)["Name"] == "r"
        assert json.loads(record.stdout)["Weight"] == 3
    # The probe's Header-shaped body was read as an (ill-formed) header at most:
    # the Go server never failed to decode anything.
    assert "read header error" not in server.log
    assert "gob:" not in server.log
