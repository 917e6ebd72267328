"""
Go clients that keep a connection open between calls, against a real
``twistd geerpc`` with small idle deadlines.

What a GeeRPC-style Go client does with an idle connection the server closed
(measured here with geepeer, which mirrors GeeRPC's client): it does not
redial; its reader sees EOF, and every later call on that client fails at once
("connection closed by server (EOF)"; GeeRPC's own text is "connection is shut
down").  So by default the idle deadline after the Option only closes
connections that never completed a call: a long-lived idle Go connection keeps
working however long it idles.
"""

from __future__ import annotations

from pathlib import Path

from tests._processes import start, stop, wait_for

from ._geepeer import run_client


def _idle_calls(geepeer: Path, tmp_path: Path, *server_args: str) -> list[dict[str, object]]:
    process = start(tmp_path, "geerpc", "--listen", "tcp:0:interface=127.0.0.1", *server_args)
    try:
        address = wait_for(process, rb"serving .* on tcp@(127\.0\.0\.1:\d+)")
        return run_client(
            geepeer,
            address,
            "idle",
            call_timeout="5s",
            extra_args=["-idle", "1.2s", "-idle-calls", "2"],
        )
    finally:
        stop(process)


def test_a_long_lived_idle_go_connection_keeps_working(
    geepeer_jsonv2: Path, tmp_path: Path
) -> None:
    # Idle 1.2 s between calls, four times the idle deadline (0.3 s).
    lines = _idle_calls(geepeer_jsonv2, tmp_path, "--idle-timeout", "0.3")
    assert [(line["reply"], line["transport_error"]) for line in lines] == [
        (1, ""),
        (2, ""),
        (3, ""),
    ]


def test_what_a_go_client_does_when_the_server_closes_its_idle_connection(
    geepeer_jsonv2: Path, tmp_path: Path
) -> None:
    # The measurement behind the default: with --served-idle-timeout, the
    # server closes the idle connection, and the Go client never recovers.
    lines = _idle_calls(geepeer_jsonv2, tmp_path, "--served-idle-timeout", "0.3")
    assert [(line["reply"], line["transport_error"]) for line in lines] == [
        (1, ""),
        (None, "connection closed by server (EOF)"),
        (None, "connection closed by server (EOF)"),
    ]
