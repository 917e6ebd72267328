"""
Hostile input against a real ``twistd geerpc`` (issue 13), measured from
outside the server process: its memory from /proc/PID/status, the latency of
another client's calls while the attack runs.
"""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests._processes import _outputs, start, stop, wait_for
from tests.integration._rawclient import RawClient, frames, joined
from tests.test_decode_budget import wide_slice_type, with_elements
from txgeerpc._wire import JSON
from txgeerpc.gob._numbers import uint_bytes


def status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} in /proc/{pid}/status")


def log_of(process: subprocess.Popen[bytes]) -> bytes:
    """What the process has logged so far."""
    with _outputs[process.pid].changed:
        return _outputs[process.pid].data


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    process = start(tmp_path, "geerpc", "--listen", "tcp:0:interface=127.0.0.1")
    try:
        port = int(wait_for(process, rb"serving .* on tcp@127\.0\.0\.1:(\d+)"))
        yield port, process
    finally:
        stop(process)


class Probe(threading.Thread):
    """Another client calling ``Foo.Sum`` back to back, recording how long
    each call took, until told to stop."""

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.client = RawClient(port)
        self.latencies: list[float] = []
        self.errors: list[str] = []
        self.done = threading.Event()

    def run(self) -> None:
        try:
            n = 0
            while not self.done.is_set():
                header, value, took = self.client.call("Foo.Sum", {"Num1": n, "Num2": 1})
                if header.error or value != n + 1:
                    self.errors.append(f"{header.error!r} {value!r}")
                self.latencies.append(took)
                n += 1
        except Exception as error:  # reported by the test
            self.errors.append(repr(error))
        finally:
            self.client.close()


def attack_requests(client: RawClient, count: int, elements: int, element: bytes) -> list[bytes]:
    """``count`` requests whose argument is a slice of ``elements`` values
    (each ``element``) of a struct with 1,000 fields (its type definitions go
    with the first)."""
    kind = wide_slice_type()
    result = []
    for _ in range(count):
        payloads = frames(client.request("Foo.Sum", [{}], kind))
        payloads[-1] = with_elements(payloads[-1], elements, element)
        result.append(joined(payloads))
    return result


@pytest.mark.parametrize(
    ("elements", "element"),
    [
        (1_000_000, b"\x00"),  # the finding: zero values, 1 byte each
        (330_000, b"\x01\x02\x00"),  # one field set: each element a dict of 1,000
    ],
    ids=["zero-values", "one-field-set"],
)
def test_gob_expansion_is_refused_within_budget_and_others_are_served(
    server: tuple[int, subprocess.Popen[bytes]], elements: int, element: bytes
) -> None:
    port, process = server
    probe = Probe(port)
    attacker = RawClient(port)
    try:
        # Warm up (the probe's types, the example services) before measuring.
        for n in range(50):
            attacker.call("Foo.Sum", {"Num1": n, "Num2": 0})
        requests = attack_requests(attacker, 4, elements, element)
        message = len(frames(requests[1])[-1])  # one body: about 1 MB
        rss_before = status_kib(process.pid, "VmRSS")
        Path(f"/proc/{process.pid}/clear_refs").write_text("5")  # VmHWM := VmRSS
        probe.start()
        for request in requests:
            attacker.send(request)
            header, _ = attacker.reply()
            assert "expands to far more than its message" in header.error, header
        # The connection goes on: the next call on it is answered.
        header, value, _ = attacker.call("Foo.Sum", {"Num1": 2, "Num2": 3})
        assert (header.error, value) == ("", 5)
        peak_growth = (status_kib(process.pid, "VmHWM") - rss_before) * 1024
    finally:
        probe.done.set()
        probe.join(timeout=30)
        attacker.close()
    print(
        f"\nbody {message} bytes; peak RSS growth {peak_growth} bytes "
        f"({peak_growth / message:.2f}x); probe: {len(probe.latencies)} calls, "
        f"max {max(probe.latencies) * 1000:.1f} ms"
    )
    assert probe.errors == []
    assert len(probe.latencies) > 10
    assert max(probe.latencies) < 0.1
    assert peak_growth <= 10 * message


def test_deep_argument_costs_one_reply_and_no_traceback(
    server: tuple[int, subprocess.Popen[bytes]],
) -> None:
    # The finding: 900 levels (a 6 KB request) hit RecursionError in the
    # conversion and logged a ~1,000-frame traceback (96 KB).
    port, process = server
    client = RawClient(port, codec=JSON)
    try:
        body = b'{"Child":' * 900 + b"{}" + b"}" * 900
        client.send(b'{"ServiceMethod":"Records.Echo","Seq":1,"Error":""}\n' + body + b"\n")
        header, _ = client.reply()
        assert header.error.startswith("rpc server: bad argument for Records.Echo: Record.Child")
        assert header.error.endswith("value nested more than 200 levels deep")
        log_before = len(log_of(process))
        # A domain error: one info line with its text, and a marker for the end.
        client.seq = 1
        header, _, _ = client.call("Arith.Divide", {"Num1": 1, "Num2": 0})
        assert header.error == "divide by zero"
        wait_for(process, rb"Arith\.Divide from [^ ]+ failed: divide by zero")
    finally:
        client.close()
    log = log_of(process)
    assert b"Traceback" not in log
    assert b"RecursionError" not in log
    assert len(log) - log_before < 300, log[log_before:]


def test_giant_length_prefix_is_closed_at_once_without_memory(
    server: tuple[int, subprocess.Popen[bytes]],
) -> None:
    port, process = server
    rss_before = status_kib(process.pid, "VmRSS")
    for announced in (2**63 - 1, 2**40, 100 << 20):
        client = RawClient(port)
        try:
            started = time.perf_counter()
            client.send(uint_bytes(announced) + b"\x01" * 1000)
            with pytest.raises(ConnectionError):
                client.reply()
            assert time.perf_counter() - started < 0.5
        finally:
            client.close()
    assert (status_kib(process.pid, "VmRSS") - rss_before) * 1024 < 2 << 20


def json_attack(port: int, process: subprocess.Popen[bytes], method: str, body: bytes) -> int:
    """Send four requests of ``body`` to ``method`` over JSON while a probe
    calls ``Foo.Sum``: check that each is refused, the connection goes on and
    other clients are answered within 100 ms; return the figures."""
    probe = Probe(port)
    attacker = RawClient(port, codec=JSON)
    try:
        for n in range(50):  # warm up before measuring
            attacker.call("Foo.Sum", {"Num1": n, "Num2": 0})
        rss_before = status_kib(process.pid, "VmRSS")
        Path(f"/proc/{process.pid}/clear_refs").write_text("5")  # VmHWM := VmRSS
        probe.start()
        for _ in range(4):
            attacker.seq += 1
            header = b'{"ServiceMethod":"%s","Seq":%d,"Error":""}\n' % (
                method.encode(),
                attacker.seq,
            )
            attacker.send(header + body + b"\n")
            reply, _ = attacker.reply()
            assert "value expands to far more than its message" in reply.error, reply
        header_, value, _ = attacker.call("Foo.Sum", {"Num1": 2, "Num2": 3})
        assert (header_.error, value) == ("", 5)
        peak_growth = (status_kib(process.pid, "VmHWM") - rss_before) * 1024
    finally:
        probe.done.set()
        probe.join(timeout=30)
        attacker.close()
    assert probe.errors == []
    assert len(probe.latencies) >= 3  # the probe ran while the attack did
    figures = (
        f"body {len(body)} bytes; peak RSS growth {peak_growth} bytes "
        f"({peak_growth / len(body):.2f}x); probe: {len(probe.latencies)} calls, "
        f"max {max(probe.latencies) * 1000:.1f} ms"
    )
    print("\n" + figures)
    assert max(probe.latencies) < 0.1, figures
    return peak_growth


def test_json_expansion_is_refused_within_budget_and_others_are_served(
    server: tuple[int, subprocess.Popen[bytes]],
) -> None:
    # 1 MB of {} parsed to ~24 MB of dicts before the budget (24x the message).
    port, process = server
    body = b"[" + b",".join([b"{}"] * 333_000) + b"]"
    peak_growth = json_attack(port, process, "Foo.Sum", body)
    assert peak_growth <= 10 * len(body)


@pytest.fixture
def wide_server(tmp_path: Path) -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    process = start(
        tmp_path,
        "geerpc",
        "--listen",
        "tcp:0:interface=127.0.0.1",
        "--service",
        "txgeerpc.examples:Foo",
        "--service",
        "tests.integration._wide_service:Wides",
    )
    try:
        port = int(wait_for(process, rb"serving .* on tcp@127\.0\.0\.1:(\d+)"))
        yield port, process
    finally:
        stop(process)


def test_conversion_expansion_is_refused_within_budget_and_others_are_served(
    wide_server: tuple[int, subprocess.Popen[bytes]],
) -> None:
    # 60 KB: 20,000 {} converted to a struct of 1,000 fields each: 2*10^7
    # zero slots (~520 MB) before conversion was charged.
    port, process = wide_server
    body = b"[" + b",".join([b"{}"] * 20_000) + b"]"
    peak_growth = json_attack(port, process, "Wides.Count", body)
    # Within its budget (8x + 1 MiB), with room for the allocator.
    assert peak_growth <= 10 * len(body) + (2 << 20)
