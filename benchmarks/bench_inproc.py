"""
The per-call path of two source trees in ONE process, alternating batches, so
both see the same machine load: for a change to the per-call path, measured
on a busy machine (the socket benchmark, ``bench_calls.py``, needs a quiet one).

A call here is everything txgeerpc does for it without a socket: the client
encodes ``Arith.Multiply {"Num1": 6, "Num2": 7}``, the server protocol parses,
dispatches and encodes the reply, the client decodes it and fires the
Deferred.  Bytes move through ``StringTransport``; the server's turns run on a
``Clock``.  Each tree's ``txgeerpc`` is imported under its own module
snapshot.

    python benchmarks/bench_inproc.py --base c5f4dfa          # that revision vs this tree
    python benchmarks/bench_inproc.py --base /path/to/tree    # another checkout

Prints, per codec and batch (calls written before the server reads them),
the mean and best microseconds per call of each tree and their ratio
(this tree ÷ base): below 1 is faster.
"""

from __future__ import annotations

import argparse
import importlib
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parents[1]


def _pass_through(context: Any, argument: Any, proceed: Any) -> Any:
    return proceed(argument)


def load(
    root: Path, extras: frozenset[str] = frozenset()
) -> Callable[[str, int], Callable[[], None]]:
    """A maker of batch runners on the txgeerpc found in ``root``."""
    for name in [m for m in sys.modules if m == "txgeerpc" or m.startswith("txgeerpc.")]:
        del sys.modules[name]
    sys.path.insert(0, str(root))
    try:
        server_module = importlib.import_module("txgeerpc.server")
        examples = importlib.import_module("txgeerpc.examples")
        client_protocol = importlib.import_module("txgeerpc._client_protocol")
        wire = importlib.import_module("txgeerpc._wire")
        codecs = importlib.import_module("txgeerpc.codec")
    finally:
        sys.path.remove(str(root))
    from twisted.internet.task import Clock
    from twisted.internet.testing import StringTransport

    def make(codec_name: str, batch: int) -> Callable[[], None]:
        clock = Clock()
        settings: dict[str, Any] = {}
        if "interceptor" in extras:  # one pass-through interceptor
            settings["interceptors"] = [_pass_through]
        server = server_module.Server(clock, **settings)
        examples.register_examples(server)
        server_side = server.factory().buildProtocol(None)
        to_client = StringTransport()
        server_side.makeConnection(to_client)
        codec = codecs.default_registry.get(codec_name)
        option = wire.Option(codec_type=codec.name)
        if "extension" in extras:  # the client names the txgeerpc extension
            option = wire.Option(codec_type=codec.name, extension=1)
        framed: dict[str, Any] = {}
        if "framed" in extras:  # framed mode (docs/protocol.md 13.11)
            option = wire.Option(codec_type=codec.name, extension=1, framed=True)
            framed["lookup"] = lambda name: codecs.default_registry.get(name, aliases=False)
        client_side = client_protocol.ClientProtocol(codec, option, clock, 1 << 22, **framed)
        to_server = StringTransport()
        client_side.makeConnection(to_server)
        if framed:  # the Option, the hello, the switch: framed from here on
            for _ in range(2):
                server_side.dataReceived(to_server.value())
                to_server.clear()
                client_side.dataReceived(to_client.value())
                to_client.clear()
            assert client_side.framed
        argument = {"Num1": 6, "Num2": 7}

        def one_batch() -> None:
            calls = [client_side.call("Arith.Multiply", argument) for _ in range(batch)]
            data = to_server.value()
            to_server.clear()
            server_side.dataReceived(data)
            while clock.getDelayedCalls():  # the server's turns
                clock.advance(0)
            reply = to_client.value()
            to_client.clear()
            client_side.dataReceived(reply)
            assert all(call.called for call in calls)

        return one_batch

    return make


def checkout(revision: str, into: Path) -> Path:
    """``revision`` of this repository, extracted under ``into``."""
    archive = subprocess.run(
        ["git", "-C", str(HERE), "archive", revision, "txgeerpc"],
        check=True,
        capture_output=True,
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", required=True, help="a git revision, or a tree's path")
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--calls", type=int, default=800, help="calls per round and tree")
    parser.add_argument(
        "--this",
        action="append",
        default=[],
        choices=["extension", "interceptor", "framed"],
        help="in this tree only: the client names the txgeerpc extension (as txgeerpc "
        "clients do since issue 14), the server has one pass-through interceptor, or the "
        "connection is framed (against a plain base: framed against plain)",
    )
    parser.add_argument("--codecs", default="gob,json", help="comma-separated (gob,json)")
    parser.add_argument(
        "--framed", action="store_true", help="both trees in framed mode (docs/protocol.md 13.11)"
    )
    options = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        base = Path(options.base)
        if not (base / "txgeerpc").is_dir():
            base = checkout(options.base, Path(scratch))
        both = frozenset(["framed"] if options.framed else [])
        trees = {"base": load(base, both), "this": load(HERE, frozenset(options.this) | both)}
        rounds = f"{options.rounds} rounds x {options.calls} calls"
        extras = f" with {', '.join(options.this)}" if options.this else ""
        extras += "; both framed" if options.framed else ""
        print(f"base: {options.base}; this: {HERE}{extras}; {rounds}")
        print("codec batch   base mean  base best   this mean  this best  this/base")
        for codec in options.codecs.split(","):
            for batch in (1, 16):
                runners = {name: make(codec, batch) for name, make in trees.items()}
                for runner in runners.values():  # warm up
                    for _ in range(300):
                        runner()
                times: dict[str, list[float]] = {name: [] for name in runners}
                per = max(1, options.calls // batch)
                for index in range(options.rounds):
                    order = list(runners) if index % 2 == 0 else list(reversed(runners))
                    for name in order:
                        runner = runners[name]
                        started = time.perf_counter()
                        for _ in range(per):
                            runner()
                        elapsed = time.perf_counter() - started
                        times[name].append(elapsed / (per * batch) * 1e6)
                mean = {name: statistics.fmean(values) for name, values in times.items()}
                best = {name: min(values) for name, values in times.items()}
                print(
                    f"{codec:5} {batch:5}  {mean['base']:9.2f}  {best['base']:9.2f}"
                    f"   {mean['this']:9.2f}  {best['this']:9.2f}"
                    f"  {mean['this'] / mean['base']:9.3f}"
                )


if __name__ == "__main__":
    main()
