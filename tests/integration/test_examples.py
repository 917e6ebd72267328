"""
The programs in ``examples/``, run as their docstrings say, against a real
``twistd geerpc`` (started and stopped by PID): the blocking client (a plain
script, no Twisted), the asyncio client (``asyncio.run``), and asyncio
coroutine handlers under ``twistd -r asyncio``.  Each client must exit 0, print
what it printed here and end within seconds (no hang at the interpreter's exit).
The test-kit examples (``examples/test_*_example.py``) run under trial, as a
user runs them.

The others (the calc server under ``twistd --service``, the Twisted client,
the XClient, the registry and etcd walk-throughs) are run by the pages that
show them, with the pages' own commands (tests/integration/test_readme.py);
every file here is run by one or the other.
"""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests._processes import ROOT, environment, start, stop, wait_for

EXAMPLES = ROOT / "examples"
WITHIN = 5.0
"""Seconds a client example may take, start to exit."""

SERVING = rb"serving .* on (tcp@127\.0\.0\.1:\d+)"

TRIAL_EXAMPLES = ["test_sleep_example", "test_faults_example", "test_etcd_example"]
RUN = {
    "blocking_client.py",
    "asyncio_client.py",
    "asyncio_service.py",
    "framed_client.py",
    "typed_client.py",  # tests/integration/test_cli_commands.py
    "examples_client.py",  # imported by typed_client.py; regenerated and compared there
    *(f"{name}.py" for name in TRIAL_EXAMPLES),
}
"""The examples this suite runs (besides those the pages' commands run)."""


@pytest.fixture
def demo_address(tmp_path: Path) -> Iterator[str]:
    # The examples time out a Foo.Sleep(10) on purpose: the stop need not wait
    # the default 10 s grace for it.
    process = start(tmp_path, "geerpc", "--listen", "tcp:0:interface=127.0.0.1", "--grace", "0.5")
    try:
        yield wait_for(process, SERVING)
    finally:
        stop(process)


def run(*argv: str, cwd: Path = ROOT) -> tuple[subprocess.CompletedProcess[str], float]:
    began = time.monotonic()
    result = subprocess.run(
        [sys.executable, *argv],
        cwd=cwd,
        env=environment(),
        capture_output=True,
        text=True,
        timeout=30,
    )
    return result, time.monotonic() - began


def imported(script: Path) -> list[str]:
    """The modules a script imports."""
    names = []
    for node in ast.walk(ast.parse(script.read_text())):
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            names.append(node.module or "")
    return names


def expected_client_output() -> str:
    return "".join(
        [
            "6 * 7 = 42\n",
            "sums: [0, 2, 4, 6]\n",
            "timed out: rpc client: call failed: Foo.Sleep got no reply within 0.1s\n",
        ]
    )


def test_blocking_client_example(demo_address: str) -> None:
    script = EXAMPLES / "blocking_client.py"
    assert not [name for name in imported(script) if name.split(".")[0] == "twisted"]
    result, took = run(str(script), demo_address)
    assert (result.returncode, result.stderr) == (0, ""), result.stderr
    assert result.stdout == (
        expected_client_output()
        + "pending after the timeout: 0\n"
        + "the server said: divide by zero\n"
    )
    assert took < WITHIN


def test_asyncio_client_example(demo_address: str) -> None:
    result, took = run(str(EXAMPLES / "asyncio_client.py"), demo_address)
    assert (result.returncode, result.stderr) == (0, ""), result.stderr
    assert result.stdout == (
        expected_client_output() + "the server said: divide by zero\n" + "pending after cancel: 0\n"
    )
    assert took < WITHIN


def test_framed_client_example(demo_address: str) -> None:
    result, took = run(str(EXAMPLES / "framed_client.py"), demo_address)
    assert (result.returncode, result.stderr) == (0, ""), result.stderr
    assert result.stdout == "6 * 7 = 42\nechoed 14000 characters: True\n"
    assert took < WITHIN, took


def test_asyncio_handlers_under_twistd_asyncio(tmp_path: Path) -> None:
    # As its docstring says: twistd started in the directory holding the module.
    shutil.copy(EXAMPLES / "asyncio_service.py", tmp_path)
    process = start(
        tmp_path,
        "-r",
        "asyncio",
        "geerpc",
        "--listen",
        "tcp:0:interface=127.0.0.1",
        "--service",
        "asyncio_service:Naps",
    )
    try:
        address = wait_for(process, SERVING)

        def call(*argv: str) -> tuple[int, str, str]:
            result, _ = run("-m", "txgeerpc", "call", address, *argv)
            return result.returncode, result.stdout, result.stderr

        assert call("Naps.Nap", "0.05") == (0, '"slept 0.05s"\n', "")
        assert call("Naps.Nap", "30", "--handle-timeout", "0.2") == (
            1,
            "",
            "error: rpc server: request handle timeout: expect within 200ms\n",
        )
        assert call("Naps.Cancelled") == (0, "1\n", "")  # the task was cancelled
    finally:
        stop(process)


def test_testing_examples_pass_under_trial(tmp_path: Path) -> None:
    # As a user runs them: trial, in a directory holding the test modules.
    for name in TRIAL_EXAMPLES:
        shutil.copy(EXAMPLES / f"{name}.py", tmp_path)
    result, _ = run("-m", "twisted.trial", *TRIAL_EXAMPLES, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"PASSED (successes={len(TRIAL_EXAMPLES)})" in result.stdout, result.stdout


def test_every_example_is_run() -> None:
    from tests.integration.test_readme import WRITTEN

    assert {path.name for path in EXAMPLES.glob("*.py")} == RUN | WRITTEN
