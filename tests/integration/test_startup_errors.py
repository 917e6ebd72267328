"""
Startup mistakes, made with the real ``twistd``: each is one line on stderr
naming the problem and a non-zero exit, for both plugins, in the foreground
(``-n``) and daemonized.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests._processes import TWISTD, environment

MODES = ["foreground", "daemonized"]


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A port on 127.0.0.1 that something already listens on."""
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    try:
        yield taken.getsockname()[1]
    finally:
        taken.close()


def run_twistd(tmp_path: Path, mode: str, *args: str) -> tuple[int, str, str]:
    """``twistd [-n] ARGS`` in ``tmp_path``: exit status, stdout, stderr.  A
    daemon it left behind (the mistake was not caught) is killed by the PID
    in its pidfile, and fails the test."""
    pidfile = tmp_path / "twistd.pid"
    flags = ["-n", "--pidfile="] if mode == "foreground" else [f"--pidfile={pidfile}"]
    result = subprocess.run(
        [*TWISTD, *flags, f"--logfile={tmp_path / 'twistd.log'}", *args],
        cwd=tmp_path,
        env=environment(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    if pidfile.exists():
        left = int(pidfile.read_text() or 0)
        if left:
            os.kill(left, signal.SIGKILL)
        pytest.fail(f"twistd started a daemon (PID {left}) instead of failing")
    return result.returncode, result.stdout, result.stderr


def assert_one_line(outcome: tuple[int, str, str], tapname: str, *named: str) -> None:
    code, stdout, stderr = outcome
    assert code != 0, (stdout, stderr)
    assert stdout == "", stdout
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith(f"twistd {tapname}: "), stderr
    for text in named:
        assert text in lines[0], stderr


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("tapname", ["geerpc", "geerpc-registry"])
def test_an_unknown_endpoint(tmp_path: Path, mode: str, tapname: str) -> None:
    outcome = run_twistd(tmp_path, mode, tapname, "--listen", "garbage")
    assert_one_line(outcome, tapname, "--listen garbage", "Unknown endpoint type: 'garbage'")
    assert outcome[0] == 1


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("tapname", ["geerpc", "geerpc-registry"])
def test_a_busy_port(tmp_path: Path, mode: str, tapname: str, busy_port: int) -> None:
    listen = f"tcp:{busy_port}:interface=127.0.0.1"
    outcome = run_twistd(tmp_path, mode, tapname, "--listen", listen)
    assert_one_line(outcome, tapname, f"cannot listen on {listen}", "Address already in use")
    assert outcome[0] == 1


@pytest.mark.parametrize("mode", MODES)
def test_an_unimportable_service(tmp_path: Path, mode: str) -> None:
    outcome = run_twistd(tmp_path, mode, "geerpc", "--service", "nosuchmod:X")
    assert_one_line(outcome, "geerpc", "--service nosuchmod:X: cannot import it", "nosuchmod")
    (tmp_path / "broken.py").write_text("def f(:\n")
    outcome = run_twistd(tmp_path, mode, "geerpc", "--service", "broken:X")
    assert_one_line(outcome, "geerpc", "--service broken:X", "SyntaxError", "line 1")


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    "tapname, option",
    [("geerpc", "--handle-timeout"), ("geerpc-registry", "--timeout")],
)
def test_an_option_out_of_range(tmp_path: Path, mode: str, tapname: str, option: str) -> None:
    outcome = run_twistd(tmp_path, mode, tapname, option, "-1")
    assert_one_line(outcome, tapname, f"{option} -1: must be a number of seconds")
    assert outcome[0] == 2  # a usage error, as argparse's


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("tapname", ["geerpc", "geerpc-registry"])
def test_a_missing_tls_file(tmp_path: Path, mode: str, tapname: str) -> None:
    listen = "ssl:0:interface=127.0.0.1:privateKey=missing.pem"
    outcome = run_twistd(tmp_path, mode, tapname, "--listen", listen)
    assert_one_line(outcome, tapname, f"--listen {listen}", "missing.pem")
    etcd = ["--etcd", "127.0.0.1:2379", "--etcd-ca", "missing-ca.pem"]
    if tapname == "geerpc":
        etcd += ["--advertise", "tcp@127.0.0.1:7001"]
    outcome = run_twistd(tmp_path, mode, tapname, *etcd)
    assert_one_line(outcome, tapname, "--etcd-ca 'missing-ca.pem': no such file")


def test_a_service_next_to_where_twistd_runs_is_found(tmp_path: Path) -> None:
    """``--service calc:Calc`` finds ``calc.py`` in the directory twistd was
    started from, as ``python -m`` would (here: its mistake is reported, so
    it was imported)."""
    (tmp_path / "calc.py").write_text("class Calc:\n    def __init__(self):\n        1 / 0\n")
    outcome = run_twistd(tmp_path, "foreground", "geerpc", "--service", "calc:Calc")
    assert_one_line(outcome, "geerpc", "--service calc:Calc: cannot instantiate it", "division")


@pytest.mark.parametrize("tapname", ["geerpc", "geerpc-registry"])
def test_a_unix_socket_in_a_missing_directory(tmp_path: Path, tapname: str) -> None:
    """The line names the path (not the PID twistd writes into its lock file)."""
    listen = f"unix:{tmp_path}/missing/sock"
    outcome = run_twistd(tmp_path, "foreground", tapname, "--listen", listen)
    assert_one_line(outcome, tapname, f"cannot listen on {listen}", f"'{tmp_path}/missing/sock")
    assert str(os.getpid()) not in outcome[2].split(":")[-1]
