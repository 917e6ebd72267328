"""
The server's side of a call alone, in process: one connection fed the same
read of ``--batch`` requests again and again (as a client with that many
calls in flight sends them), its replies discarded.  What it prints is the
server's CPU per call without sockets or a client: the part of issue 18's
"server CPU per call" target the per-call path decides.

    python benchmarks/bench_server.py                          # this tree
    python benchmarks/bench_server.py --base 933404f           # that revision, then this
    python benchmarks/bench_server.py --codecs json --framed --profile   # cProfile, this tree
    python benchmarks/bench_server.py --payload 65536 --batch 16 --calls 2000  # 64 KiB echoes

``--side client`` measures the client alone instead: one read of
``--batch`` replies whose callbacks each make the next call (the server's
part of each round runs outside the measured time).

Each tree runs in its own subprocess (``--tree``), alternately, ``--runs``
times; the figure is the best of them (the least disturbed on a busy
machine), in microseconds per call.
"""

from __future__ import annotations

import argparse
import cProfile
import importlib
import os
import pstats
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parents[1]
_READ_SIZE = 65536


def the_call(payload: int) -> tuple[str, Any, Any]:
    """(method, argument, expected reply): ``Arith.Multiply {6, 7}``, or with
    ``payload`` an ``Arith.Echo`` of a string that many characters long."""
    if payload:
        text = "x" * payload
        return "Arith.Echo", text, text
    return "Arith.Multiply", {"Num1": 6, "Num2": 7}, 42


def feeder(codec_name: str, batch: int, framed: bool, payload: int = 0) -> Any:
    """A function feeding the server one read of ``batch`` steady-state requests."""
    from twisted.internet.task import Clock
    from twisted.internet.testing import StringTransport

    server_module = importlib.import_module("txgeerpc.server")
    examples = importlib.import_module("txgeerpc.examples")
    client_protocol = importlib.import_module("txgeerpc._client_protocol")
    wire = importlib.import_module("txgeerpc._wire")
    codecs = importlib.import_module("txgeerpc.codec")

    clock = Clock()
    server = server_module.Server(clock)
    examples.register_examples(server)
    server_side = server.factory().buildProtocol(None)
    to_client = StringTransport()
    server_side.makeConnection(to_client)
    codec = codecs.default_registry.get(codec_name)
    keywords: dict[str, Any] = {}
    option = wire.Option(codec_type=codec.name, extension=1, framed=framed)
    if framed:
        keywords["lookup"] = lambda name: codecs.default_registry.get(name, aliases=False)
    client_side = client_protocol.ClientProtocol(codec, option, clock, 1 << 22, **keywords)
    to_server = StringTransport()
    client_side.makeConnection(to_server)
    for _ in range(2):  # the Option, the hello (and the switch to framed mode)
        server_side.dataReceived(to_server.value())
        to_server.clear()
        client_side.dataReceived(to_client.value())
        to_client.clear()
    assert client_side.framed == framed
    method, argument, expected = the_call(payload)
    data = b""
    for _ in range(2):  # the second read is the steady state (gob's types went first)
        calls = [client_side.call(method, argument) for _ in range(batch)]
        data = to_server.value()
        to_server.clear()
        server_side.dataReceived(data)
        while clock.getDelayedCalls():
            clock.advance(0)
        client_side.dataReceived(to_client.value())
        to_client.clear()
        assert all(call.called and call.result == expected for call in calls)

    # As TCP hands them over: reads of at most 64 KiB (Twisted's bufferSize).
    pieces = [data[at : at + _READ_SIZE] for at in range(0, len(data), _READ_SIZE)]

    def one_read() -> None:
        for piece in pieces:
            server_side.dataReceived(piece)
        while clock.getDelayedCalls():  # the server's further turns
            clock.advance(0)
        to_client.clear()

    return one_read


def client_feeder(
    codec_name: str, batch: int, framed: bool, payload: int = 0, timeout: float | None = None
) -> Any:
    """A function handing the client one read of ``batch`` replies, each of
    whose callbacks makes the next call (as ``bench_calls.py`` keeps calls in
    flight); the server's part runs outside the measured time.  With a
    ``timeout``, each call has it, scheduled on the (not running) reactor."""
    from twisted.internet.task import Clock
    from twisted.internet.testing import StringTransport

    server_module = importlib.import_module("txgeerpc.server")
    examples = importlib.import_module("txgeerpc.examples")
    client_protocol = importlib.import_module("txgeerpc._client_protocol")
    wire = importlib.import_module("txgeerpc._wire")
    codecs = importlib.import_module("txgeerpc.codec")

    clock = Clock()
    server = server_module.Server(clock)
    examples.register_examples(server)
    server_side = server.factory().buildProtocol(None)
    to_client = StringTransport()
    server_side.makeConnection(to_client)
    codec = codecs.default_registry.get(codec_name)
    keywords: dict[str, Any] = {}
    option = wire.Option(codec_type=codec.name, extension=1, framed=framed)
    if framed:
        keywords["lookup"] = lambda name: codecs.default_registry.get(name, aliases=False)
    timer: Any = clock
    if timeout is not None:  # not the server's Clock: advance(0) would never end
        from twisted.internet import reactor as timer
    client_side = client_protocol.ClientProtocol(codec, option, timer, 1 << 22, **keywords)
    to_server = StringTransport()
    client_side.makeConnection(to_server)
    for _ in range(2):
        server_side.dataReceived(to_server.value())
        to_server.clear()
        client_side.dataReceived(to_client.value())
        to_client.clear()
    method, argument, expected = the_call(payload)

    def again(result: Any) -> None:
        assert result == expected
        client_side.call(method, argument, timeout).addCallback(again)

    for _ in range(batch):
        client_side.call(method, argument, timeout).addCallback(again)
    spent = [0.0]

    def one_read() -> None:
        data = to_server.value()
        to_server.clear()
        server_side.dataReceived(data)
        while clock.getDelayedCalls():
            clock.advance(0)
        replies = to_client.value()
        to_client.clear()
        pieces = [replies[at : at + _READ_SIZE] for at in range(0, len(replies), _READ_SIZE)]
        started = time.process_time()
        for piece in pieces:
            client_side.dataReceived(piece)
        spent[0] += time.process_time() - started

    one_read.spent = spent  # type: ignore[attr-defined]
    return one_read


def measure(
    codec: str,
    batch: int,
    framed: bool,
    calls: int,
    profile: bool,
    side: str = "server",
    payload: int = 0,
    timeout: float | None = None,
) -> float:
    if side == "client":
        return measure_client(codec, batch, framed, calls, payload, timeout)
    one_read = feeder(codec, batch, framed, payload)
    for _ in range(max(1, 2000 // batch)):
        one_read()
    reads = max(1, calls // batch)
    best = float("inf")
    for _ in range(5):
        started = time.process_time()
        for _ in range(reads // 5 or 1):
            one_read()
        best = min(best, (time.process_time() - started) / ((reads // 5 or 1) * batch))
    if profile:
        profiler = cProfile.Profile()
        profiler.enable()
        for _ in range(reads):
            one_read()
        profiler.disable()
        pstats.Stats(profiler).sort_stats("tottime").print_stats(30)
    return best * 1e6


def write_cost() -> None:
    """What a ``transport.write`` per call costs on a real TCP transport,
    against appending to a list and one joined write (what the client's and
    the server's batching do): 128 writes of 74 bytes, best of 20 rounds."""
    from twisted.internet import reactor
    from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint, connectProtocol
    from twisted.internet.protocol import Factory, Protocol

    class Writer(Protocol):
        def connectionMade(self) -> None:
            data, write = b"x" * 74, self.transport.write  # type: ignore[union-attr]
            each = joined = float("inf")
            for _ in range(20):
                started = time.perf_counter()
                for _ in range(128):
                    write(data)
                each = min(each, (time.perf_counter() - started) / 128)
                self.transport.doWrite()  # type: ignore[union-attr]
                started = time.perf_counter()
                batch = []
                for _ in range(128):
                    batch.append(data)
                write(b"".join(batch))
                joined = min(joined, (time.perf_counter() - started) / 128)
                self.transport.doWrite()  # type: ignore[union-attr]
            print(f"transport.write per call: {each * 1e6:.2f} us")
            print(f"append, join, one write:  {joined * 1e6:.2f} us per call")
            self.transport.loseConnection()  # type: ignore[union-attr]
            reactor.callLater(0.1, reactor.stop)  # type: ignore[attr-defined]

    def listening(port: Any) -> None:
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port)
        connectProtocol(endpoint, Writer())

    endpoint = TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1")
    endpoint.listen(Factory.forProtocol(Protocol)).addCallback(listening)
    reactor.run()  # type: ignore[attr-defined]


def measure_client(
    codec: str,
    batch: int,
    framed: bool,
    calls: int,
    payload: int = 0,
    timeout: float | None = None,
) -> float:
    one_read = client_feeder(codec, batch, framed, payload, timeout)
    for _ in range(max(1, 2000 // batch)):
        one_read()
    reads = max(1, calls // batch)
    best = float("inf")
    for _ in range(5):
        one_read.spent[0] = 0.0
        for _ in range(reads // 5 or 1):
            one_read()
        best = min(best, one_read.spent[0] / ((reads // 5 or 1) * batch))
    return best * 1e6


def checkout(revision: str, into: Path) -> Path:
    archive = subprocess.run(
        ["git", "-C", str(HERE), "archive", revision, "txgeerpc"], check=True, capture_output=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", help="a git revision (or a tree's path) to compare with")
    parser.add_argument("--codecs", default="gob,json,msgpack")
    parser.add_argument("--batch", type=int, default=128, help="requests per read (128)")
    parser.add_argument("--framed", action="store_true", help="framed mode (protocol.md 13.11)")
    parser.add_argument("--both", action="store_true", help="plain and framed")
    parser.add_argument("--calls", type=int, default=40000, help="calls per run (40000)")
    parser.add_argument(
        "--payload",
        type=int,
        default=0,
        help="Arith.Echo of a string this many characters long instead of Arith.Multiply",
    )
    parser.add_argument("--runs", type=int, default=3, help="runs per tree (3), best taken")
    parser.add_argument("--profile", action="store_true", help="cProfile this tree, one run")
    parser.add_argument(
        "--side",
        choices=["server", "client"],
        default="server",
        help="server (default), or the client alone: a read of replies whose callbacks "
        "make the next calls",
    )
    parser.add_argument(
        "--timeout", type=float, help="--side client: every call with this timeout (seconds)"
    )
    parser.add_argument(
        "--write-cost", action="store_true", help="only: a transport.write per call vs one"
    )
    parser.add_argument("--tree", help=argparse.SUPPRESS)
    parser.add_argument("--one", help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.write_cost:
        write_cost()
        return
    if options.one:  # a child: one codec, one mode, in the tree on sys.path
        codec, mode = options.one.split(":")
        framed = mode == "framed"
        print(
            measure(
                codec,
                options.batch,
                framed,
                options.calls,
                options.profile,
                options.side,
                options.payload,
                options.timeout,
            )
        )
        return
    modes = ["plain", "framed"] if options.both else ["framed" if options.framed else "plain"]
    with tempfile.TemporaryDirectory() as scratch:
        trees = {"this": HERE}
        if options.base:
            base = Path(options.base)
            trees = {
                "base": base
                if (base / "txgeerpc").is_dir()
                else checkout(options.base, Path(scratch)),
                "this": HERE,
            }
        call = f"Arith.Echo of {options.payload} chars" if options.payload else "Arith.Multiply"
        print(
            f"{options.side} CPU per call (us), {call}, batch {options.batch}, "
            f"best of {options.runs} runs"
        )
        print(
            f"{'codec':<8} {'mode':<7} "
            + " ".join(f"{name:>8}" for name in trees)
            + (f" {'this/base':>9}" if options.base else "")
        )
        for codec in options.codecs.split(","):
            for mode in modes:
                best = {name: float("inf") for name in trees}
                for _ in range(1 if options.profile else options.runs):
                    for name, root in trees.items():
                        if options.profile and name != "this":
                            continue
                        command = [
                            sys.executable,
                            __file__,
                            "--one",
                            f"{codec}:{mode}",
                            "--batch",
                            str(options.batch),
                            "--calls",
                            str(options.calls),
                            "--side",
                            options.side,
                            "--payload",
                            str(options.payload),
                        ]
                        if options.profile:
                            command.append("--profile")
                        if options.timeout is not None:
                            command += ["--timeout", str(options.timeout)]
                        env = dict(os.environ, PYTHONPATH=str(root))
                        output = subprocess.run(
                            command, env=env, check=True, capture_output=True, text=True
                        ).stdout
                        if options.profile:
                            print(output)
                        best[name] = min(best[name], float(output.strip().splitlines()[-1]))
                line = f"{codec:<8} {mode:<7} " + " ".join(f"{best[n]:>8.2f}" for n in trees)
                if options.base:
                    line += f" {best['this'] / best['base']:>9.3f}"
                print(line, flush=True)


if __name__ == "__main__":
    main()
