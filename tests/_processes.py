"""
``twistd`` processes for tests that need the real thing (``twistd geerpc``,
``twistd geerpc-registry``): started from the repository root's code, waited
for through their log, stopped by PID.  Shared by ``tests/integration`` and
``tests/interop``.
"""

from __future__ import annotations

import os
import re
import selectors
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TWISTD = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()"]
STARTUP_DEADLINE = 30.0


def environment() -> dict[str, str]:
    """This environment with the repository root first on PYTHONPATH (so the
    plugins in ``twisted/plugins`` are found)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


def start(tmp_path: Path, *args: str) -> subprocess.Popen[bytes]:
    """``twistd -n ARGS`` in ``tmp_path``, logging to its stdout (a pipe)."""
    return subprocess.Popen(
        [*TWISTD, "-n", "--pidfile=", "--logfile=-", *args],
        cwd=tmp_path,
        env=environment(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM to its PID (SIGKILL after 15 s), reap it, close its pipe."""
    if process.poll() is None:
        os.kill(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.kill(process.pid, signal.SIGKILL)
            process.wait()
    assert process.stdout is not None
    process.stdout.close()


def wait_for(process: subprocess.Popen[bytes], pattern: bytes) -> str:
    """Read the startup log until ``pattern`` matches; its first group (or the
    whole match).

    Reads the raw pipe (os.read), not a buffered file: select() cannot see
    lines already sitting in a file object's buffer.
    """
    assert process.stdout is not None
    fd = process.stdout.fileno()
    selector = selectors.DefaultSelector()
    selector.register(fd, selectors.EVENT_READ)
    deadline = time.monotonic() + STARTUP_DEADLINE
    output = b""
    try:
        while time.monotonic() < deadline:
            if not selector.select(timeout=deadline - time.monotonic()):
                break
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            output += chunk
            match = re.search(pattern, output)
            if match:
                return match.group(match.re.groups and 1).decode()
    finally:
        selector.close()
    raise AssertionError(
        f"twistd did not log {pattern!r} within {STARTUP_DEADLINE}s:\n"
        + output.decode(errors="replace")
    )


def free_port() -> int:
    """A port free right now on 127.0.0.1 (for a server that must know its
    own port before it starts, to advertise it)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
