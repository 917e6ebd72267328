"""
Real etcd servers for tests: :class:`EtcdCluster` starts one or more ``etcd``
processes (Debian's ``etcd-server``; ``scripts/test`` installs it) on free
127.0.0.1 ports, waits until they serve, and stops them by PID.  Plain
synchronous code, like ``tests/_processes.py``: a thread drains each member's
log, and every wait is on that log with a deadline, never a sleep.

From pytest, a cluster is a context manager::

    def test_put(tmp_path: Path) -> None:
        with EtcdCluster.start(tmp_path, members=3) as cluster:
            cluster.members[0].put(b"k", b"v")

From trial (and from a ``SynchronousTestCase``, which pytest collects too),
start a cluster in the test and register its stop as a cleanup.  Without a
directory the cluster keeps its data in a temporary one of its own and removes
it when it stops (``self.mktemp()`` would leave directories in pytest's
working directory)::

    class PutTests(SynchronousTestCase):
        def test_put(self) -> None:
            cluster = EtcdCluster.start(members=3)
            self.addCleanup(cluster.stop)
            cluster.members[0].put(b"k", b"v")

``start`` blocks (a tenth of a second for one member, up to two seconds for
three: 3.4 first asks its peers for a cluster, a second each); under a
reactor-spinning ``TestCase`` call it before the reactor work starts.

Every ``etcd`` runs in a session of its own (a Ctrl-C at the terminal reaches
the test process, which stops it) and, on Linux, is killed by the kernel when
the thread that started it ends (``PR_SET_PDEATHSIG``): a test process
SIGKILLed (a CI timeout, an OOM kill) leaves no etcd behind.  So start
clusters from a thread that outlives them (the main thread, or the reactor's).

A cluster is ready when every member has logged that it serves clients, a
linearizable range through each member's JSON gateway answers 200 (so a quorum
with a leader is up: writes go through), and, for more than one member, each
reports a leader in ``/v3/maintenance/status``.  After ``members[i].kill()``,
:meth:`EtcdCluster.wait_ready` waits for the others to elect a new leader.
"""

from __future__ import annotations

import base64
import ctypes
import ctypes.util
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Callable, Sequence
from http.client import HTTPException
from pathlib import Path
from types import TracebackType
from typing import Any

from tests._processes import _Output

STARTUP_DEADLINE = 30.0
STOP_TIMEOUT = 15.0
#: How long one readiness probe (one HTTP request) may take.
PROBE_TIMEOUT = 1.0
#: The longest wait between two probes when the log says nothing new.
PROBE_INTERVAL = 0.05
#: etcd's "serving clients" line: capnslog (3.4's default logger) says the
#: first, zap (3.4 with ``--logger zap``, 3.5's only logger) the second.
_SERVING = re.compile(rb"ready to serve client requests|serving client traffic (?:in)?securely")
_PORT_TAKEN = b"address already in use"
_LOG_TAIL = 60

# Never through an http_proxy from the environment: these are loopback URLs.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def free_ports(n: int) -> list[int]:
    """``n`` distinct TCP ports free on 127.0.0.1 right now.  All sockets stay
    bound until every port is chosen, so none repeats."""
    sockets: list[socket.socket] = []
    try:
        for _ in range(n):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sockets.append(sock)
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def _die_with_parent() -> Callable[[], None] | None:
    """A ``preexec_fn`` that has the kernel SIGKILL the child when the thread
    that forked it ends (Linux); None elsewhere, or without a usable
    ``prctl``.  Everything is looked up here, before the fork: the function
    only calls ``prctl`` and ``getppid`` in the child."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        prctl = libc.prctl
    except (OSError, AttributeError):
        return None
    prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    prctl.restype = ctypes.c_int
    parent = os.getpid()
    kill = int(signal.SIGKILL)
    getppid = os.getppid

    def preexec() -> None:
        if prctl(_PR_SET_PDEATHSIG, kill, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
        if getppid() != parent:  # the parent died before prctl: no signal will come
            os._exit(1)

    return preexec


def etcd_executable() -> str:
    """The ``etcd`` to run."""
    found = shutil.which("etcd")
    if found is None:
        # Not a skip: scripts/test installs it, so this is a broken set-up.
        raise RuntimeError("no etcd on PATH: apt-get install etcd-server etcd-client")
    return found


def b64(data: bytes) -> str:
    """``data`` as the JSON gateway spells bytes."""
    return base64.b64encode(data).decode("ascii")


class _Log(_Output):
    """Everything a process has written so far (read by a thread so the pipe
    never fills up), and waits on it."""

    def has(self, pattern: re.Pattern[bytes]) -> bool:
        """Whether the log so far matches ``pattern``."""
        with self.changed:
            return pattern.search(self.data) is not None

    def wait_change(self, timeout: float) -> None:
        """Return when the process writes more, ends, or ``timeout`` passes."""
        with self.changed:
            if not self.ended:
                self.changed.wait(timeout)

    def close(self) -> None:
        self.thread.join(timeout=STOP_TIMEOUT)
        self._pipe.close()


class EtcdMember:
    """One ``etcd`` process of an :class:`EtcdCluster`.

    :ivar name: its ``--name``.
    :ivar client_url: ``http://127.0.0.1:PORT`` (``https`` with TLS).
    :ivar peer_url: ``http://127.0.0.1:PORT``, for the other members.
    :ivar data_dir: its ``--data-dir`` (etcd creates it).
    :ivar process: the running ``etcd``.
    """

    def __init__(
        self,
        name: str,
        client_url: str,
        peer_url: str,
        data_dir: Path,
        process: subprocess.Popen[bytes],
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.name = name
        self.client_url = client_url
        self.peer_url = peer_url
        self.data_dir = data_dir
        self.process = process
        self._log = _Log(process)
        self._opener = _OPENER
        if ssl_context is not None:
            self._opener = urllib.request.build_opener(
                urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=ssl_context)
            )
        self._closed = False

    def __repr__(self) -> str:
        return f"<EtcdMember {self.name} pid={self.process.pid} {self.client_url}>"

    @property
    def running(self) -> bool:
        return self.process.poll() is None

    def output(self) -> str:
        """All it has logged so far."""
        with self._log.changed:
            return self._log.data.decode(errors="replace")

    def kill(self) -> None:
        """SIGKILL to its PID (a crash: no leadership transfer), and reap it."""
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
        self._reap()

    def stop(self) -> None:
        """SIGTERM to its PID (SIGKILL after 15 s), and reap it."""
        self._terminate()
        self._reap()

    def _terminate(self) -> None:
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGTERM)

    def _reap(self, deadline: float | None = None) -> None:
        if deadline is None:
            deadline = time.monotonic() + STOP_TIMEOUT
        try:
            self.process.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait()
        if not self._closed:
            self._closed = True
            self._log.close()

    def request(self, path: str, body: dict[str, Any], timeout: float = 5.0) -> dict[str, Any]:
        """POST ``body`` as JSON to its gateway's ``path`` (``/v3/kv/put``).

        :returns: the decoded JSON answer.
        :raises urllib.error.HTTPError: for an answer other than 2xx.
        :raises OSError: when there is no answer within ``timeout``.
        """
        request = urllib.request.Request(
            self.client_url + path,
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        with self._opener.open(request, timeout=timeout) as response:
            answer: dict[str, Any] = json.loads(response.read())
            return answer

    def put(self, key: bytes, value: bytes) -> dict[str, Any]:
        """Put ``key`` = ``value`` through this member; the gateway's answer."""
        return self.request("/v3/kv/put", {"key": b64(key), "value": b64(value)})

    def get(self, key: bytes) -> bytes | None:
        """The value of ``key`` read through this member, or None."""
        kvs = self.request("/v3/kv/range", {"key": b64(key)}).get("kvs", [])
        return base64.b64decode(kvs[0].get("value", "")) if kvs else None


class EtcdCluster:
    """Running etcd members that form one cluster; see the module docstring.

    :ivar members: every member, in ``--initial-cluster`` order (killed and
        stopped ones included).
    """

    def __init__(self, members: list[EtcdMember], own_directory: Path | None = None) -> None:
        self.members = members
        self._own_directory = own_directory

    @property
    def endpoints(self) -> list[str]:
        """Every member's client URL."""
        return [member.client_url for member in self.members]

    @classmethod
    def start(
        cls,
        tmp_path: Path | None = None,
        members: int = 1,
        extra_args: Sequence[str] = (),
        client_ssl_context: ssl.SSLContext | None = None,
    ) -> EtcdCluster:
        """Start ``members`` etcd processes as a new cluster and wait until it
        is ready (:meth:`wait_ready`).

        :param tmp_path: holds the data directories (``<token>/<name>``); by
            default a temporary directory that :meth:`stop` removes.
        :param extra_args: more ``etcd`` flags for every member (auth, TLS).
        :param client_ssl_context: serve clients on ``https://`` URLs (give the
            ``--cert-file``/``--key-file`` flags in ``extra_args``) and probe
            them with this context.
        :raises AssertionError: when a member exits or the cluster is not
            ready within 30 s; the message holds the members' logs.
        """
        etcd_executable()  # fail before making anything
        own_directory = None
        if tmp_path is None:
            tmp_path = own_directory = Path(tempfile.mkdtemp(prefix="txgeerpc-etcd-"))
        # A port chosen by free_ports may be taken (by anyone's outgoing
        # connection) before etcd binds it: then start again on new ports.
        for attempt in range(3):
            cluster = cls(_spawn(tmp_path, members, extra_args, client_ssl_context), own_directory)
            try:
                cluster._wait_started(time.monotonic() + STARTUP_DEADLINE)
            except _PortTaken:
                cluster.stop(remove=attempt == 2)
                if attempt == 2:
                    raise
                continue
            except BaseException:
                cluster.stop()
                raise
            return cluster
        raise AssertionError("unreachable")

    def _wait_started(self, deadline: float) -> None:
        """Wait until every member has logged that it serves clients, then
        until the cluster is ready; fail as soon as any member exits."""
        waiting = list(self.members)
        while True:
            for member in self.members:
                if member._log.ended:
                    if _PORT_TAKEN in member._log.data:
                        raise _PortTaken(self._failure(f"{member.name} found a port taken"))
                    raise AssertionError(self._failure(f"{member.name} exited"))
            waiting = [member for member in waiting if not member._log.has(_SERVING)]
            if not waiting:
                break
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(
                    self._failure(
                        f"{waiting[0].name} did not log that it serves clients"
                        f" within {STARTUP_DEADLINE}s"
                    )
                )
            waiting[0]._log.wait_change(min(PROBE_INTERVAL, left))
        self._wait_ready(deadline)

    def wait_ready(self, timeout: float = STARTUP_DEADLINE) -> None:
        """Wait until every running member answers a linearizable range (a
        quorum and a leader are up, so writes go through) and, for a cluster
        of several members, reports a leader.

        :raises AssertionError: when a running member exits, or not within
            ``timeout`` seconds; the message holds the members' logs.
        """
        self._wait_ready(time.monotonic() + timeout)

    def _wait_ready(self, deadline: float) -> None:
        for member in self.members:
            if member.running:
                self._wait_member_ready(member, deadline)

    def _wait_member_ready(self, member: EtcdMember, deadline: float) -> None:
        while True:
            problem = self._probe(member, min(PROBE_TIMEOUT, deadline - time.monotonic()))
            if problem is None:
                return
            if not member.running:
                raise AssertionError(self._failure(f"{member.name} exited"))
            if time.monotonic() >= deadline:
                raise AssertionError(self._failure(f"{member.name} not ready: {problem}"))
            # Try again as soon as the member logs something (an election, a
            # peer joining), or after a short while.
            member._log.wait_change(min(PROBE_INTERVAL, max(0.0, deadline - time.monotonic())))

    def _probe(self, member: EtcdMember, timeout: float) -> str | None:
        """None if ``member`` is ready, else what is wrong."""
        if timeout <= 0:
            return "deadline passed"
        try:
            member.request("/v3/kv/range", {"key": "AA=="}, timeout=timeout)
            if len(self.members) > 1:
                status = member.request("/v3/maintenance/status", {}, timeout=timeout)
                if int(status.get("leader", 0)) == 0:
                    return "no leader in /v3/maintenance/status"
        except (OSError, ValueError, HTTPException) as error:
            return f"{type(error).__name__}: {error}"
        return None

    def _failure(self, what: str) -> str:
        logs = []
        for member in self.members:
            lines = member.output().splitlines()[-_LOG_TAIL:]
            state = "running" if member.running else f"exited {member.process.returncode}"
            logs.append(
                f"--- {member.name} (pid {member.process.pid}, {state}), last {_LOG_TAIL} lines:\n"
                + "\n".join(lines)
            )
        return f"etcd cluster not ready: {what}\n" + "\n".join(logs)

    def stop(self, *, remove: bool = True) -> None:
        """Stop every member: SIGTERM to each PID, SIGKILL to any left after
        15 s, and reap them all; then remove the cluster's own temporary
        directory, if it made one.  Safe to call again.

        The followers go first, all at once, and the leader after them: a
        leader stopping while its peers run hands its leadership to one of
        them, and waits six seconds in vain if that one is stopping too."""
        running = [member for member in self.members if member.running]
        leaders = [member for member in running if len(running) == 1 or _leads(member)]
        deadline = time.monotonic() + STOP_TIMEOUT
        for wave in [[m for m in running if m not in leaders], leaders]:
            for member in wave:
                member._terminate()
            for member in wave:
                member._reap(deadline)
        for member in self.members:
            member._reap(deadline)
        if remove and self._own_directory is not None:
            shutil.rmtree(self._own_directory, ignore_errors=True)
            self._own_directory = None

    def __enter__(self) -> EtcdCluster:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


class _PortTaken(AssertionError):
    pass


def _leads(member: EtcdMember) -> bool:
    """Whether ``member`` says it is its cluster's leader (or does not say)."""
    try:
        status = member.request("/v3/maintenance/status", {}, timeout=PROBE_TIMEOUT)
    except (OSError, ValueError, HTTPException):
        return True
    return bool(status.get("leader") == status.get("header", {}).get("member_id"))


def _spawn(
    tmp_path: Path,
    count: int,
    extra_args: Sequence[str],
    client_ssl_context: ssl.SSLContext | None,
) -> list[EtcdMember]:
    """Start ``count`` etcd processes forming a new cluster (not waited for)."""
    etcd = etcd_executable()
    token = f"txgeerpc-{uuid.uuid4().hex[:12]}"
    directory = tmp_path / token
    directory.mkdir(parents=True)
    ports = free_ports(2 * count)
    scheme = "http" if client_ssl_context is None else "https"
    names = [f"member{i}" for i in range(count)]
    client_urls = [f"{scheme}://127.0.0.1:{port}" for port in ports[:count]]
    peer_urls = [f"http://127.0.0.1:{port}" for port in ports[count:]]
    initial_cluster = ",".join(f"{n}={u}" for n, u in zip(names, peer_urls, strict=True))
    # etcd also reads its flags from ETCD_* variables; only ours count here.
    env = {k: v for k, v in os.environ.items() if not k.startswith("ETCD_")}
    preexec = _die_with_parent()
    members: list[EtcdMember] = []
    for name, client_url, peer_url in zip(names, client_urls, peer_urls, strict=True):
        data_dir = directory / name
        args = [
            etcd,
            "--name", name,
            "--data-dir", str(data_dir),
            "--listen-client-urls", client_url,
            "--advertise-client-urls", client_url,
            "--listen-peer-urls", peer_url,
            "--initial-advertise-peer-urls", peer_url,
            "--initial-cluster", initial_cluster,
            "--initial-cluster-state", "new",
            "--initial-cluster-token", token,
            "--heartbeat-interval", "50",
            "--election-timeout", "500",
            "--logger", "zap",
            "--log-outputs", "stderr",
            *extra_args,
        ]  # fmt: skip
        try:
            process = subprocess.Popen(
                args,
                cwd=directory,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=preexec,
            )
        except BaseException:
            EtcdCluster(members).stop()
            raise
        member = EtcdMember(name, client_url, peer_url, data_dir, process, client_ssl_context)
        members.append(member)
    return members
