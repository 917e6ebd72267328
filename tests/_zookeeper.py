"""
Real ZooKeeper servers for tests: :class:`ZooKeeperEnsemble` starts one
standalone server or a 3-member ensemble from Debian's ``zookeeper`` package
(``scripts/test`` installs it): ``java -cp /usr/share/java/zookeeper.jar
org.apache.zookeeper.server.quorum.QuorumPeerMain zoo.cfg``, each member with
its own data directory and free 127.0.0.1 ports, a short tick (100 ms: session
timeouts from 0.2 to 10 s), and stops them by PID.  Plain synchronous code,
like ``tests/_etcd.py`` (whose process helpers it uses): a thread drains each
server's log; readiness is polled with ZooKeeper's ``srvr`` command, with a
deadline, never a sleep.

A JVM takes a second or two to start: a module that can shares one ensemble
between its tests (the ``zookeeper`` fixtures below).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

from tests._etcd import _die_with_parent, _Log, free_ports

JARS = ["/usr/share/java/zookeeper.jar", "/usr/share/java/slf4j-simple.jar"]
MAIN = "org.apache.zookeeper.server.quorum.QuorumPeerMain"
TICK_MS = 100
STARTUP_DEADLINE = 60.0
STOP_TIMEOUT = 15.0
PROBE_INTERVAL = 0.05
_LOG_TAIL = 40


def java_executable() -> str:
    found = shutil.which("java")
    if found is None or not os.path.isfile(JARS[0]):
        # Not a skip: scripts/test installs it, so this is a broken set-up.
        raise RuntimeError("no ZooKeeper: apt-get install zookeeper (it brings java)")
    return found


def four_letters(port: int, command: bytes = b"srvr", timeout: float = 1.0) -> str:
    """What the server on ``port`` answers a four-letter command ("" if none)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            sock.sendall(command)
            chunks = []
            while chunk := sock.recv(4096):
                chunks.append(chunk)
    except OSError:
        return ""
    return b"".join(chunks).decode(errors="replace")


class ZooKeeperServer:
    """One ZooKeeper process (a standalone server or an ensemble member)."""

    def __init__(
        self,
        number: int,
        port: int,
        directory: Path,
        process: subprocess.Popen[bytes],
        args: list[str] | None = None,
    ):
        self.args = args or []
        self.number = number
        self.port = port
        self.directory = directory
        self.process = process
        self._log = _Log(process)
        self._closed = False

    def __repr__(self) -> str:
        return f"<ZooKeeperServer {self.number} pid={self.process.pid} {self.address}>"

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self.process.poll() is None

    def mode(self) -> str | None:
        """``standalone``, ``leader`` or ``follower`` once it serves, else None."""
        for line in four_letters(self.port).splitlines():
            if line.startswith("Mode: "):
                return line[6:].strip()
        return None

    def output(self) -> str:
        with self._log.changed:
            return self._log.data.decode(errors="replace")

    def kill(self) -> None:
        """SIGKILL to its PID, and reap it."""
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
        self._reap(time.monotonic() + STOP_TIMEOUT)

    def restart(self) -> None:
        """Start it again (it must be dead), same configuration and data."""
        assert not self.running
        self.process = subprocess.Popen(
            self.args,
            cwd=self.directory,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=_die_with_parent(),
        )
        self._log = _Log(self.process)
        self._closed = False

    def freeze(self) -> None:
        """SIGSTOP: its connections stay open, nothing answers."""
        os.kill(self.process.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        os.kill(self.process.pid, signal.SIGCONT)

    def _terminate(self) -> None:
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGCONT)  # a frozen one must run to die by SIGTERM
            os.kill(self.process.pid, signal.SIGTERM)

    def _reap(self, deadline: float) -> None:
        try:
            self.process.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait()
        if not self._closed:
            self._closed = True
            self._log.close()


class ZooKeeperEnsemble:
    """Running ZooKeeper servers forming one ensemble (or one standalone).

    :ivar servers: every member, killed ones included.
    """

    def __init__(self, servers: list[ZooKeeperServer], own_directory: Path | None) -> None:
        self.servers = servers
        self._own_directory = own_directory

    @property
    def hosts(self) -> str:
        """``127.0.0.1:P1,127.0.0.1:P2,...``: kazoo's (and ``--zookeeper``'s) string."""
        return ",".join(server.address for server in self.servers)

    @classmethod
    def start(cls, tmp_path: Path | None = None, members: int = 1) -> ZooKeeperEnsemble:
        """Start ``members`` servers (1: standalone) and wait until every one
        serves (an ensemble: has a leader).

        :raises AssertionError: a server exited or was not serving within 60 s
            (the message holds the logs).
        """
        java = java_executable()
        own_directory = None
        if tmp_path is None:
            tmp_path = own_directory = Path(tempfile.mkdtemp(prefix="txgeerpc-zk-"))
        directory = Path(tempfile.mkdtemp(prefix="zk-", dir=tmp_path))
        ports = free_ports(3 * members)
        client_ports = ports[:members]
        ensemble = [
            f"server.{n + 1}=127.0.0.1:{ports[members + 2 * n]}:{ports[members + 2 * n + 1]}"
            for n in range(members)
        ]
        preexec = _die_with_parent()
        servers: list[ZooKeeperServer] = []
        for n in range(members):
            data = directory / f"server{n + 1}"
            data.mkdir()
            (data / "myid").write_text(f"{n + 1}\n")
            config = data / "zoo.cfg"
            lines = [
                f"tickTime={TICK_MS}",
                "initLimit=50",
                "syncLimit=20",
                f"dataDir={data}",
                f"clientPort={client_ports[n]}",
                "clientPortAddress=127.0.0.1",
                "minSessionTimeout=200",
                "maxSessionTimeout=10000",
                "admin.enableServer=false",
                "4lw.commands.whitelist=srvr,ruok",
                "standaloneEnabled=true",
                "electionPortBindRetry=3",
                *(ensemble if members > 1 else []),
            ]
            config.write_text("\n".join(lines) + "\n")
            args = [
                java,
                "-Xmx128m",
                "-XX:+UseSerialGC",
                "-XX:TieredStopAtLevel=1",
                "-Dzookeeper.admin.enableServer=false",
                "-Dorg.slf4j.simpleLogger.showDateTime=true",
                "-cp",
                ":".join(JARS),
                MAIN,
                str(config),
            ]
            try:
                process = subprocess.Popen(
                    args,
                    cwd=data,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    start_new_session=True,
                    preexec_fn=preexec,
                )
            except BaseException:
                cls(servers, own_directory).stop()
                raise
            servers.append(ZooKeeperServer(n + 1, client_ports[n], data, process, args))
        started = cls(servers, own_directory)
        try:
            started.wait_ready()
        except BaseException:
            started.stop()
            raise
        return started

    def wait_ready(self, timeout: float = STARTUP_DEADLINE) -> None:
        """Wait until every running server serves (a member: as leader or
        follower).

        :raises AssertionError: one exited, or not within ``timeout``.
        """
        deadline = time.monotonic() + timeout
        for server in self.servers:
            while server.running and server.mode() is None:
                if time.monotonic() >= deadline:
                    raise AssertionError(self._failure(f"{server} not serving within {timeout}s"))
                server._log.wait_change(PROBE_INTERVAL)
            if not server.running and not server._closed:
                raise AssertionError(self._failure(f"{server} exited"))

    def leader(self) -> ZooKeeperServer | None:
        for server in self.servers:
            if server.running and server.mode() in ("leader", "standalone"):
                return server
        return None

    def _failure(self, what: str) -> str:
        logs = []
        for server in self.servers:
            lines = server.output().splitlines()[-_LOG_TAIL:]
            state = "running" if server.running else f"exited {server.process.returncode}"
            logs.append(f"--- {server} ({state}), last {_LOG_TAIL} lines:\n" + "\n".join(lines))
        return f"ZooKeeper not ready: {what}\n" + "\n".join(logs)

    def stop(self) -> None:
        """SIGTERM to every running server's PID (SIGKILL after 15 s), reap
        them; remove the ensemble's own temporary directory.  Safe to call again."""
        deadline = time.monotonic() + STOP_TIMEOUT
        for server in self.servers:
            server._terminate()
        for server in self.servers:
            server._reap(deadline)
        if self._own_directory is not None:
            shutil.rmtree(self._own_directory, ignore_errors=True)
            self._own_directory = None

    def __enter__(self) -> ZooKeeperEnsemble:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
