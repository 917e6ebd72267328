"""
The README, run as a user runs it: every shell and console block is pasted
into ``bash`` in a fresh temporary directory, with only the installed
package (no ``PYTHONPATH``, no checkout on ``sys.path``: ``scripts/test``
installs the package with ``pip install .``, as the README's first command
does), and every Python block is a file there, exactly as printed.

A ``console`` block is a session: ``$ COMMAND`` lines (``\\`` continues a
line), each followed by what it prints (stdout and stderr), which must match.
A ``sh`` block is one script that must succeed.  Every process a block
leaves running is found through its pidfile and stopped by PID at the end.
"""

from __future__ import annotations

import os
import re
import select
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests._processes import (
    ROOT,
    _Output,
)


@dataclass(frozen=True)
class Block:
    language: str
    text: str

    @property
    def file_name(self) -> str | None:
        """A Python block's file name, from its first line (``# calc.py``)."""
        first = self.text.splitlines()[0]
        if self.language == "python" and re.fullmatch(r"# \w+\.py", first):
            return first[2:]
        return None


def readme_blocks() -> list[Block]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    return [
        Block(language, body) for language, body in re.findall(r"```(\w*)\n(.*?)```", text, re.S)
    ]


def block(containing: str) -> Block:
    """The one README block holding ``containing``."""
    found = [b for b in readme_blocks() if containing in b.text]
    assert len(found) == 1, f"{len(found)} README blocks hold {containing!r}"
    return found[0]


def python_file(name: str) -> str:
    found = [b.text for b in readme_blocks() if b.file_name == name]
    assert len(found) == 1, f"{len(found)} README blocks are {name}"
    return found[0]


def user_environment() -> dict[str, str]:
    """This environment as a user's shell has it: no PYTHONPATH, and the
    interpreter running the suite first on PATH (its ``python``, ``twistd``)."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env["PATH"] = os.pathsep.join([os.path.dirname(sys.executable), env.get("PATH", "")])
    return env


@dataclass
class Shell:
    """A user's shell in a fresh directory."""

    cwd: Path
    env: dict[str, str] = field(default_factory=user_environment)
    _pidfds: dict[int, int] = field(default_factory=dict)
    _foreground: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def write(self, *names: str) -> None:
        """The README's Python files, as printed."""
        for name in names:
            (self.cwd / name).write_text(python_file(name), encoding="utf-8")

    def run(self, command: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        try:
            return subprocess.run(
                ["bash", "-c", command],
                cwd=self.cwd,
                env=self.env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                timeout=timeout,
            )
        finally:
            self._track_pidfiles()

    def script(self, sh: Block) -> str:
        """Run an ``sh`` block as one script (stopping at the first failure); its output."""
        assert sh.language == "sh"
        result = self.run("set -e\n" + sh.text)
        assert result.returncode == 0, result.stdout
        return result.stdout

    def console(self, session: Block) -> None:
        """Run a ``console`` block's commands; each prints what follows it."""
        assert session.language == "console"
        steps: list[tuple[str, list[str]]] = []
        lines = iter(session.text.splitlines())
        for line in lines:
            if line.startswith("$ "):
                command = line[2:]
                while command.endswith("\\"):
                    command = command[:-1] + "\n" + next(lines)
                steps.append((command, []))
            else:
                steps[-1][1].append(line)
        for command, expected in steps:
            printed = [line.rstrip("\r") for line in self.run(command).stdout.splitlines()]
            assert printed == expected, f"$ {command}"

    def foreground(self, command: str, ready: bytes) -> subprocess.Popen[bytes]:
        """A command a user leaves running in its own terminal (``twistd -n``),
        once it has logged ``ready``."""
        process = subprocess.Popen(
            ["bash", "-c", f"exec {command}"],
            cwd=self.cwd,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        self._foreground.append(process)
        output = _Output(process)
        with output.changed:
            while ready not in output.data:
                assert not output.ended, output.data.decode(errors="replace")
                assert output.changed.wait(60), f"{command!r} did not log {ready!r}"
        return process

    def _track_pidfiles(self) -> None:
        """Hold on to every process a pidfile names (a pidfd: killing it later
        can only ever reach that process)."""
        for pidfile in self.cwd.glob("*.pid"):
            text = pidfile.read_text().strip()
            if text.isdigit() and int(text) not in self._pidfds:
                try:
                    self._pidfds[int(text)] = os.pidfd_open(int(text))
                except ProcessLookupError:
                    pass  # gone already

    def stop_everything(self) -> None:
        """SIGTERM what is still running, wait for it to exit (SIGKILL after 15 s)."""
        for process in self._foreground:
            if process.poll() is None:
                process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self._track_pidfiles()
        for pidfd in self._pidfds.values():
            _stop(pidfd)
        self._pidfds.clear()


def _stop(pidfd: int) -> None:
    try:
        if not select.select([pidfd], [], [], 0)[0]:  # still running
            signal.pidfd_send_signal(pidfd, signal.SIGTERM)
            if not select.select([pidfd], [], [], 15)[0]:
                signal.pidfd_send_signal(pidfd, signal.SIGKILL)
                select.select([pidfd], [], [], 15)
    except ProcessLookupError:
        pass
    finally:
        os.close(pidfd)


@pytest.fixture(scope="module")
def installed() -> Path:
    """The txgeerpc a user's shell imports: installed (not the checkout) and
    the same as the checkout (a stale install would test old code)."""
    found = subprocess.run(
        ["python", "-c", "import txgeerpc; print(txgeerpc.__file__)"],
        cwd="/",
        env=user_environment(),
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    package = Path(found).resolve().parent
    assert not package.is_relative_to(ROOT), (
        f"the README test needs txgeerpc installed (pip install .), not the checkout: {package}"
    )
    stale = [
        str(source.relative_to(ROOT))
        for source in sorted((ROOT / "txgeerpc").rglob("*.py"))
        if not (package.parent / source.relative_to(ROOT)).is_file()
        or (package.parent / source.relative_to(ROOT)).read_bytes() != source.read_bytes()
    ]
    assert not stale, f"the installed txgeerpc is not this checkout's (pip install .): {stale}"
    return package


@pytest.fixture
def shell(tmp_path: Path, installed: Path) -> Iterator[Shell]:
    """A user's shell in a fresh directory.  (The README's commands use its
    fixed ports, 7001, 7002, 9999, 2379: a second run of this module at the
    same time, or anything else on those ports, makes them fail.)"""
    user = Shell(tmp_path)
    try:
        yield user
    finally:
        user.stop_everything()


# What marks each shell and console block of the README (each test below runs its own).
DEMO = "pip install . && twistd -n geerpc"
DEMO_CALLS = "Arith.Multiply '{\"Num1\":6"
MISTAKES = "--pidfile=oops.pid"
REGISTRY_CURL = "X-Geerpc-Server: tcp@127.0.0.1:7002' http://127.0.0.1:7001"
CALC = "--service calc:Calc"
XCLIENT = "$ python xclient_demo.py"
WALK = "REGISTRY=http://127.0.0.1:9999/_geerpc_/registry"
WALK_PRINTS = "tcp@127.0.0.1:7001: 5 calls"
WALK_END = "kill $(cat a.pid) $(cat b.pid) $(cat registry.pid)"
ETCD_WALK = "ETCD=http://127.0.0.1:2379"
ETCD_WALK_END = "kill $(cat a.pid) $(cat b.pid) $(cat r2.pid) $(cat etcd.pid)"
MARKERS = [
    DEMO, DEMO_CALLS, MISTAKES, REGISTRY_CURL, CALC, XCLIENT, WALK, WALK_PRINTS, WALK_END,
    ETCD_WALK, ETCD_WALK_END,
]  # fmt: skip
# Python blocks run as trial tests:
TESTING_EXAMPLES = ["connect_in_memory", "FakeEtcd", "MemoryNetwork(clock)"]


def test_the_shell_uses_the_installed_package(shell: Shell, installed: Path) -> None:
    found = shell.run("python -c 'import txgeerpc; print(txgeerpc.__file__)'").stdout.strip()
    assert Path(found).resolve().parent == installed
    assert "geerpc" in shell.run("twistd --help").stdout


def test_two_commands_the_demo_and_its_calls(shell: Shell) -> None:
    # `pip install .` ran before the suite (scripts/test); command 2 is the suite itself.
    command = re.search(r"pip install \. && (twistd -n geerpc)\n", block(DEMO).text)
    assert command is not None
    shell.foreground(command.group(1), ready=b"txgeerpc: serving")
    shell.console(block(DEMO_CALLS))
    shell.console(block(MISTAKES))
    shell.console(block(REGISTRY_CURL))


def test_serving_your_own_objects(shell: Shell) -> None:
    shell.write("calc.py", "main.py")
    shell.console(block(CALC))
    result = shell.run("python main.py")
    assert (result.returncode, result.stdout) == (0, "5\n2\n")


def test_the_xclient(shell: Shell) -> None:
    shell.write("xclient_demo.py")
    shell.console(block(XCLIENT))


def test_walk_through_a_registry_and_two_servers(shell: Shell) -> None:
    shell.write("spread.py")
    printed = shell.script(block(WALK))
    listed = block(WALK_PRINTS).text
    assert printed.endswith(listed), printed
    servers = printed[: -len(listed)].splitlines()
    assert [line.split()[0] for line in servers] == ["tcp@127.0.0.1:7001", "tcp@127.0.0.1:7002"]
    shell.script(block(WALK_END))


def test_walk_through_on_etcd(shell: Shell) -> None:
    shell.write("spread.py", "etcd_spread.py")
    printed = shell.script(block(ETCD_WALK))
    assert printed == block(WALK_PRINTS).text * 3, printed
    shell.script(block(ETCD_WALK_END))


@pytest.mark.parametrize("uses", TESTING_EXAMPLES)
def test_testing_example_passes(shell: Shell, uses: str) -> None:
    [example] = [b for b in readme_blocks() if b.language == "python" and uses in b.text]
    (shell.cwd / "test_readme_example.py").write_text(example.text, encoding="utf-8")
    result = shell.run("python -m twisted.trial test_readme_example")
    assert result.returncode == 0, result.stdout
    assert "PASSED (successes=1)" in result.stdout


def test_every_block_is_run() -> None:
    """A block added to the README fails this until a test above runs it."""
    written = {"calc.py", "main.py", "xclient_demo.py", "spread.py", "etcd_spread.py"}
    for found in readme_blocks():
        if found.language == "text":  # a synopsis, not a command
            continue
        if found.file_name in written:
            continue
        claimed = [marker for marker in MARKERS + TESTING_EXAMPLES if marker in found.text]
        assert len(claimed) == 1, found.text
