"""
``python -m txgeerpc stubs`` and ``describe`` against a Go GeeRPC server: it
does not describe itself, so the signatures of a Go debug page are used (the
reference's page, as recorded in vector 07, served here by ``--debug-url``;
geepeer's own page lists names only).  Unknown structs become
``dict[str, Any]``, and the module is still ``mypy --strict`` clean.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests._processes import ROOT, environment
from tests.test_stubs import go_debug_page

from ._geepeer import running_server


class _Page(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = go_debug_page().encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def debug_page() -> Iterator[str]:
    listener = ThreadingHTTPServer(("127.0.0.1", 0), _Page)
    thread = threading.Thread(target=listener.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.server_address[1]}/debug/geerpc"
    finally:
        listener.shutdown()
        listener.server_close()
        thread.join(timeout=15)


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "txgeerpc", *args],
        env=environment(),
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_stubs_from_a_go_debug_page(geepeer: Path, debug_page: str, tmp_path: Path) -> None:
    with running_server(geepeer) as address:
        stubs = _cli("stubs", f"tcp@{address}", "--debug-url", debug_page)
        described = _cli("describe", f"tcp@{address}", "Arith.Divide", "--debug-url", debug_page)
    assert (stubs.returncode, stubs.stderr) == (0, "")
    assert "from the signatures on a Go GeeRPC debug page" in stubs.stdout
    assert "# Go svc.Args: its fields are unknown, send a dict\n" in stubs.stdout
    assert "argument: dict[str, Any]" in stubs.stdout
    (tmp_path / "go_client.py").write_text(stubs.stdout)
    checked = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--follow-imports=silent", "go_client.py"],
        cwd=tmp_path,
        env={**environment(), "MYPYPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert described.returncode == 0, described.stderr
    assert described.stdout.endswith(
        "func (t *Arith) Divide(argument svc.Args, reply *int) error\n"
    )


def test_without_a_debug_page_it_says_so(geepeer: Path) -> None:
    with running_server(geepeer) as address:
        result = _cli("stubs", f"tcp@{address}", "--debug-url", "http://127.0.0.1:1/debug/geerpc")
    assert result.returncode == 1
    assert result.stderr.startswith(
        "error: the server does not describe itself, and http://127.0.0.1:1/debug/geerpc: "
    )
