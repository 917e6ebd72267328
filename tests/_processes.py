"""
``twistd`` processes for tests that need the real thing (``twistd geerpc``,
``twistd geerpc-registry``): started from the repository root's code, waited
for through their log, stopped by PID.  Shared by ``tests/integration`` and
``tests/interop``.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
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


class _Output:
    """Everything a process has written so far, read by a thread so the pipe
    never fills up (a chatty registry would block on a full pipe)."""

    def __init__(self, process: subprocess.Popen[bytes]) -> None:
        assert process.stdout is not None
        self._pipe = process.stdout
        self.data = b""
        self.position = 0  # where the next wait_for starts looking
        self.ended = False
        self.changed = threading.Condition()
        self.thread = threading.Thread(target=self._drain, daemon=True)
        self.thread.start()

    def _drain(self) -> None:
        while chunk := os.read(self._pipe.fileno(), 65536):
            with self.changed:
                self.data += chunk
                self.changed.notify_all()
        with self.changed:
            self.ended = True
            self.changed.notify_all()


_outputs: dict[int, _Output] = {}


def start(
    tmp_path: Path,
    *args: str,
    max_descriptors: int | None = None,
    env: dict[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    """``twistd -n ARGS`` in ``tmp_path``, logging to its stdout (read by
    :func:`wait_for` and :func:`output`); ``max_descriptors`` sets its
    ``RLIMIT_NOFILE`` (soft and hard); ``env``: more environment variables."""

    def limit_descriptors() -> None:
        if max_descriptors is not None:
            import resource

            resource.setrlimit(resource.RLIMIT_NOFILE, (max_descriptors, max_descriptors))

    process = subprocess.Popen(
        [*TWISTD, "-n", "--pidfile=", "--logfile=-", *args],
        cwd=tmp_path,
        env={**environment(), **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        preexec_fn=limit_descriptors if max_descriptors is not None else None,
    )
    _outputs[process.pid] = _Output(process)
    return process


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM to its PID (SIGKILL after 15 s), reap it, close its pipe."""
    if process.poll() is None:
        os.kill(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.kill(process.pid, signal.SIGKILL)
            process.wait()
    output = _outputs.pop(process.pid, None)
    if output is not None:
        output.thread.join(timeout=15)
    assert process.stdout is not None
    process.stdout.close()


def output(process: subprocess.Popen[bytes]) -> bytes:
    """All the process wrote, once it has exited."""
    process.wait(timeout=15)
    log = _outputs[process.pid]
    log.thread.join(timeout=15)
    return log.data


def wait_for(process: subprocess.Popen[bytes], pattern: bytes) -> str:
    """Wait until the log matches ``pattern`` after the previous match; its
    first group (or the whole match)."""
    log = _outputs[process.pid]
    deadline = time.monotonic() + STARTUP_DEADLINE
    with log.changed:
        while True:
            match = re.compile(pattern).search(log.data, log.position)
            if match:
                log.position = match.end()
                return match.group(match.re.groups and 1).decode()
            left = deadline - time.monotonic()
            if log.ended or left <= 0:
                break
            log.changed.wait(left)
        text = log.data.decode(errors="replace")
    ended = "twistd exited" if log.ended else f"not within {STARTUP_DEADLINE}s"
    raise AssertionError(f"twistd did not log {pattern!r} ({ended}):\n{text}")
