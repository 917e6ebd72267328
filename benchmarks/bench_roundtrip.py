"""
One call in flight, both sides in this process over a real socketpair: the
client's call is sent, the server reads it and sends its reply, the client
reads that and its callback makes the next call — the work of one round trip
at one call in flight (issue 18's p50 target) without the reactor's poll or
the other process's wake-up, so that ``valgrind --tool=callgrind`` can count
it (instructions do not depend on the machine's load; syscalls are the same
for both trees and not counted).  The server is ``Server.port_factory()``'s
(the one-port layer included); the client is ``txgeerpc.Client``.  With
``--echo``, the raw echo of ``bench_calls.py`` in the same harness.

    python benchmarks/bench_roundtrip.py --codec json --time        # CPU per round trip
    valgrind --tool=callgrind python benchmarks/bench_roundtrip.py --codec gob --calls N
    (instructions per round trip: the difference of two counts, --calls 1 and 3001, / 3000)
"""

from __future__ import annotations

import argparse
import socket
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from twisted.internet import reactor, tcp
from twisted.internet.address import IPv4Address

from txgeerpc import Client, Server
from txgeerpc._client_protocol import ClientProtocol
from txgeerpc._wire import Option
from txgeerpc.codec import default_registry
from txgeerpc.examples import register_examples

ADDRESS = IPv4Address("TCP", "127.0.0.1", 1)


class Connection(tcp.Connection):
    """A TCP connection over one end of a socketpair, no reactor running."""

    def getPeer(self) -> IPv4Address:
        return ADDRESS

    def getHost(self) -> IPv4Address:
        return ADDRESS


def connections(server_side: Any, client_side: Any) -> tuple[Connection, Connection]:
    ours, theirs = socket.socketpair()
    served = Connection(ours, server_side, reactor)
    calling = Connection(theirs, client_side, reactor)
    for connection, protocol in ((served, server_side), (calling, client_side)):
        connection.connected = 1
        protocol.makeConnection(connection)
    return served, calling


def rpc(codec_name: str) -> tuple[Any, Any]:
    """(make a call, one turn of both sides) for txgeerpc."""
    server = Server(reactor)
    register_examples(server)
    codec = default_registry.get(codec_name)
    option = Option(codec_type=codec.name, extension=1)
    client_side = ClientProtocol(codec, option, reactor, 1 << 22)
    served, calling = connections(server.port_factory().buildProtocol(ADDRESS), client_side)
    client = Client(client_side)
    return (lambda: client.call("Arith.Multiply", {"Num1": 6, "Num2": 7})), turns(served, calling)


def echo(codec_name: str) -> tuple[Any, Any]:
    """(make a call, one turn of both sides) for the raw echo."""
    import bench_calls

    client_side = bench_calls.EchoClient()
    served, calling = connections(bench_calls.EchoServer(), client_side)
    frame = bench_calls.request_bytes(codec_name)
    return (lambda: client_side.call(frame)), turns(served, calling)


def turns(served: Connection, calling: Connection) -> Any:
    def send(connection: Connection) -> None:
        # What a write left buffered (the echo's, the Option): the reactor's doWrite.
        if connection.dataBuffer or connection._tempDataBuffer:
            connection.doWrite()

    def turn() -> None:
        send(calling)
        served.doRead()
        send(served)
        calling.doRead()

    return turn


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--codec", default="json")
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--echo", action="store_true", help="the raw echo instead")
    parser.add_argument("--time", action="store_true", help="print CPU per round trip")
    options = parser.parse_args()
    call, turn = (echo if options.echo else rpc)(options.codec)
    done = [0, 0]  # calls completed, calls wanted

    def again(_: object) -> None:
        done[0] += 1
        if done[0] < done[1]:
            call().addCallback(again)

    def run(count: int) -> float:
        done[:] = [0, count]
        call().addCallback(again)
        started = time.process_time()
        while done[0] < count:
            turn()
        return (time.process_time() - started) / count

    for _ in range(3):  # the Option, the hello; gob's types
        turn()
    run(200)
    if options.time:
        best = min(run(options.calls) for _ in range(7))
        what = "echo" if options.echo else "rpc"
        print(f"{what} {options.codec}: {best * 1e6:.2f} us CPU per round trip, both sides")
    else:
        run(options.calls)


if __name__ == "__main__":
    main()
