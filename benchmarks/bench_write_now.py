"""
What one reply write costs on a real TCP-like socket (a socketpair wrapped
in Twisted's ``tcp.Connection``, no reactor running): ``transport.write``
then an immediate ``doWrite`` (how both sides sent a read's batch before),
against :func:`txgeerpc._nodelay.write_now` (straight to the socket when
nothing is buffered).  CPU per write, the reader's ``recv`` included, best of
``--runs``.

    python benchmarks/bench_write_now.py
"""

from __future__ import annotations

import argparse
import socket
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from twisted.internet import reactor, tcp
from twisted.internet.protocol import Protocol

from txgeerpc._nodelay import write_now


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--writes", type=int, default=20000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--size", type=int, default=60, help="bytes per write (60)")
    args = parser.parse_args()
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    theirs.setblocking(False)
    connection = tcp.Connection(ours, Protocol(), reactor)
    connection.connected = 1
    data = b"x" * args.size

    def write_then_do_write() -> None:
        connection.write(data)
        if connection.doWrite() is not None:
            connection.startWriting()

    def at_once() -> None:
        write_now(connection, data)

    results = {}
    for name, write in [("write+doWrite", write_then_do_write), ("write_now", at_once)]:
        best = float("inf")
        for _ in range(args.runs):
            started = time.process_time()
            for _ in range(args.writes):
                write()
                theirs.recv(65536)
            best = min(best, (time.process_time() - started) / args.writes)
        results[name] = best * 1e6
        print(f"{name:14} {results[name]:6.2f} us per write")
    print(f"write_now / write+doWrite = {results['write_now'] / results['write+doWrite']:.2f}")
    ours.close()
    theirs.close()


if __name__ == "__main__":
    main()
