"""
The README and the documentation pages (``docs/*.md``), run as a user runs
them: every shell and console block is pasted into ``bash`` in a fresh
temporary directory, with only the installed package (no ``PYTHONPATH``, no
checkout on ``sys.path``: ``scripts/test`` installs the package with
``pip install .``, as the README's first command does), and every Python
block is a file there, exactly as printed.

A page shows a program of ``examples/`` by including it (a block that is one
``--8<-- "examples/NAME.py"`` line, which mkdocs' snippets extension
replaces with the file): here such a block is that file, named ``NAME.py``.
Blocks may repeat (the README's front-page example is also the quickstart's):
every copy must then be the same.

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

PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
"""The pages whose blocks run here (``docs/api/`` holds no blocks, only ``:::`` lines)."""

INCLUDE = re.compile(r'--8<-- "([^"]+)"\n')


@dataclass(frozen=True)
class Block:
    page: str
    language: str
    text: str
    included: str | None = None
    """The file the block includes (``examples/calc.py``), if it is an include."""

    @property
    def file_name(self) -> str | None:
        """A Python block's file name: the included file's, or its first line's
        (``# calc.py``)."""
        if self.included is not None:
            return Path(self.included).name
        first = self.text.splitlines()[0]
        if self.language == "python" and re.fullmatch(r"# \w+\.py", first):
            return first[2:]
        return None


def page_blocks(page: Path) -> list[Block]:
    found = []
    name = str(page.relative_to(ROOT))
    for language, body in re.findall(r"```(\w*)\n(.*?)```", page.read_text(encoding="utf-8"), re.S):
        include = INCLUDE.fullmatch(body)
        if include is None:
            assert "--8<--" not in body, f"{name}: an include must be a whole block: {body}"
            found.append(Block(name, language, body))
        else:
            text = (ROOT / include.group(1)).read_text(encoding="utf-8")
            found.append(Block(name, language, text, included=include.group(1)))
    return found


def readme_blocks() -> list[Block]:
    """Every block of the README and the documentation pages."""
    return [found for page in PAGES for found in page_blocks(page)]


def _the_same(found: list[Block], what: str) -> Block:
    assert found, f"no block is {what}"
    assert len({b.text for b in found}) == 1, f"the blocks {what} differ: {found}"
    return found[0]


def block(containing: str) -> Block:
    """The block holding ``containing`` (every copy of it, if it repeats)."""
    found = [b for b in readme_blocks() if containing in b.text]
    return _the_same(found, f"holding {containing!r}")


def python_file(name: str) -> str:
    return _the_same([b for b in readme_blocks() if b.file_name == name], name).text


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
        """The pages' Python files, as printed."""
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
            try:
                text = pidfile.read_text().strip()
            except FileNotFoundError:  # its process stopped since the glob
                continue
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
    fixed ports, 7001, 7002, 7003, 7301, 9998, 9999, 2379, 2181: a second run of this module at the
    same time, or anything else on those ports, makes them fail.)"""
    user = Shell(tmp_path)
    try:
        yield user
    finally:
        user.stop_everything()


# What marks each shell and console block of the README (each test below runs its own).
DEMO = "pip install . && twistd -n geerpc"
DEMO_CALLS = "$ python -m txgeerpc call tcp@127.0.0.1:7001 Arith.Multiply '{\"Num1\":6"
MISTAKES = "--pidfile=oops.pid"
REGISTRY_CURL = "X-Geerpc-Server: tcp@127.0.0.1:7002' http://127.0.0.1:7001"
CALC = "--service calc:Calc"
CALC_MAIN = "$ python calc_main.py"
XCLIENT = "$ python xclient_demo.py"
WALK = "REGISTRY=http://127.0.0.1:9999/_geerpc_/registry"
WALK_PRINTS = "tcp@127.0.0.1:7001: 5 calls"
WALK_END = "kill $(cat a.pid) $(cat b.pid) $(cat registry.pid)"
ETCD_WALK = "ETCD=http://127.0.0.1:2379"
ETCD_WALK_END = "kill $(cat a.pid) $(cat b.pid) $(cat r2.pid) $(cat etcd.pid)"
SECURITY = "$ python make_certs.py"
METRICS = "curl -s http://127.0.0.1:7301/metrics"
NETRPC = "call netrpc@127.0.0.1:7003 Arith.Multiply"
ZOOKEEPER_WALK = "ZK=127.0.0.1:2181"
ZOOKEEPER_WALK_END = "kill $(cat a.pid) $(cat b.pid) $(cat r2.pid) $(cat zk.pid)"
MARKERS = [
    DEMO, DEMO_CALLS, MISTAKES, REGISTRY_CURL, CALC, CALC_MAIN, XCLIENT, WALK, WALK_PRINTS,
    WALK_END, ETCD_WALK, ETCD_WALK_END, NETRPC, SECURITY, METRICS, ZOOKEEPER_WALK,
    ZOOKEEPER_WALK_END,
]  # fmt: skip
WRITTEN = {
    "calc.py", "calc_main.py", "xclient_demo.py", "spread.py", "etcd_spread.py", "make_certs.py",
    "zookeeper_spread.py",
}  # fmt: skip
"""The Python files the tests below write and run (all in ``examples/`` too)."""


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
    shell.write("calc.py", "calc_main.py")
    shell.console(block(CALC))
    shell.console(block(CALC_MAIN))


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


def test_walk_through_on_zookeeper(shell: Shell) -> None:
    shell.write("spread.py", "zookeeper_spread.py")
    printed = shell.script(block(ZOOKEEPER_WALK))
    assert printed == block(WALK_PRINTS).text * 3, printed
    shell.script(block(ZOOKEEPER_WALK_END))


def test_go_netrpc_and_jsonrpc_addresses(shell: Shell) -> None:
    shell.console(block(NETRPC))


def test_security_tls_tokens_and_rules(shell: Shell) -> None:
    shell.write("make_certs.py")
    shell.console(block(SECURITY))


def test_prometheus_metrics(shell: Shell) -> None:
    shell.console(block(METRICS))


def test_every_block_is_run() -> None:
    """A block added to the README or a page fails this until a test runs it:
    one above, or, for a program of ``examples/`` a page includes,
    tests/integration/test_examples.py."""
    from tests.integration.test_examples import RUN

    for found in readme_blocks():
        if found.language not in ("sh", "console", "python"):
            continue  # a synopsis (text) or a wire dump, not a command
        if found.included is not None:
            assert found.included.startswith("examples/"), found.included
            assert found.file_name in WRITTEN | RUN, f"{found.page}: {found.included} is not run"
            continue
        if found.file_name in WRITTEN:
            continue
        claimed = [marker for marker in MARKERS if marker in found.text]
        assert len(claimed) == 1, f"{found.page}: {found.text}"


def test_the_written_files_are_the_examples() -> None:
    """The programs the pages show are those of ``examples/`` (the README,
    which GitHub shows without includes, copies one: the same text)."""
    for name in WRITTEN:
        assert python_file(name) == (ROOT / "examples" / name).read_text(encoding="utf-8"), name


def test_the_pages_are_read() -> None:
    names = [str(page.relative_to(ROOT)) for page in PAGES]
    assert "README.md" in names and "docs/quickstart.md" in names and "docs/etcd.md" in names
    assert {b.page for b in readme_blocks() if b.included} >= {"docs/server.md", "docs/testing.md"}
