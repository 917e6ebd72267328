"""
Run ``python -m txgeerpc`` command lines, each in its own process, without
paying the interpreter's start and the imports for each: this process
imports the CLI once, then forks one child per command line (read as a JSON
list of argv lists on stdin), which runs :func:`txgeerpc._cli.main` with its
stdout and stderr in files.  Prints ``[[exit status, stdout, stderr], ...]``
as JSON, in the order given.

Each child is a real ``python -m txgeerpc`` run but for the interpreter's
start: its own reactor (none is installed before the fork), sockets and exit
status.  Children get ``ALARM`` seconds, then are killed by PID.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import tempfile

ALARM = 60

# What the commands use, imported once before forking.
import msgpack  # noqa: E402, F401

import examples.protobuf.stats_pb2  # noqa: E402, F401
import txgeerpc._cli  # noqa: E402
import txgeerpc._framed  # noqa: E402

txgeerpc._framed.available_compressions()  # zstandard, lz4


def _child(argv: list[str], out: str, err: str) -> None:
    status = 0
    try:
        signal.alarm(ALARM)
        with open(out, "w") as stdout, open(err, "w") as stderr:
            os.dup2(stdout.fileno(), 1)
            os.dup2(stderr.fileno(), 2)
        sys.stdout = open(1, "w", closefd=False)
        sys.stderr = open(2, "w", closefd=False)
        try:
            txgeerpc._cli.main(argv)
        except SystemExit as exit:
            status = exit.code if isinstance(exit.code, int) else 1
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        os._exit(status)


def main() -> None:
    commands = json.load(sys.stdin)
    children: list[int] = []
    results = []
    with tempfile.TemporaryDirectory() as scratch:
        try:
            for index, argv in enumerate(commands):
                out = os.path.join(scratch, f"{index}.out")
                err = os.path.join(scratch, f"{index}.err")
                pid = os.fork()
                if pid == 0:
                    _child(argv, out, err)
                children.append(pid)
            for index, pid in enumerate(children):
                _, status = os.waitpid(pid, 0)
                children[index] = 0
                with open(os.path.join(scratch, f"{index}.out")) as out_file:
                    stdout = out_file.read()
                with open(os.path.join(scratch, f"{index}.err")) as err_file:
                    stderr = err_file.read()
                results.append([os.waitstatus_to_exitcode(status), stdout, stderr])
        finally:
            for pid in children:
                if pid:
                    os.kill(pid, signal.SIGKILL)
                    os.waitpid(pid, 0)
    json.dump(results, sys.stdout)


if __name__ == "__main__":
    main()
