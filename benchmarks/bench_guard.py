"""
The per-call cost of ``txgeerpc.auth.Guard`` (issue 15): microseconds per
call over MemoryNetwork (the real one-port factory, client and server; no
sockets), best of 5 batches of 3,000 calls carrying an ``authorization``
token, for a server with no interceptor, one pass-through interceptor, and
the Guard (a TokenChecker of 100 tokens, one rule)::

    python benchmarks/bench_guard.py
"""

from __future__ import annotations

import time
from typing import Any

from twisted.internet.task import Clock

from txgeerpc import Server, connect
from txgeerpc.auth import Authorizer, Guard, TokenChecker
from txgeerpc.examples import register_examples
from txgeerpc.testing import MemoryNetwork

TOKEN = "alice-token-0123456789"


def per_call(interceptors: list[Any], calls: int = 3000, batches: int = 5) -> float:
    """Microseconds per call, the best batch."""
    clock = Clock()
    server = Server(clock, interceptors=interceptors)
    register_examples(server)
    network = MemoryNetwork(clock)
    port = network.listen(server.port_factory())
    connecting = connect(network.reactor, f"tcp@127.0.0.1:{port.getHost().port}")
    network.flush()
    client = connecting.result
    metadata = {"authorization": f"Bearer {TOKEN}"}
    best = float("inf")
    for _ in range(batches):
        started = time.perf_counter()
        replies = [
            client.call("Arith.Multiply", {"Num1": 6, "Num2": 7}, metadata=metadata)
            for _ in range(calls)
        ]
        network.flush()
        best = min(best, (time.perf_counter() - started) / calls * 1e6)
        assert all(reply.called and reply.result == 42 for reply in replies)
    client.close()
    network.flush()
    network.close()
    return best


def main() -> None:
    tokens = {f"user{i}": f"token-{i:020d}" for i in range(99)}
    tokens["alice"] = TOKEN
    guard = Guard([TokenChecker(tokens)], Authorizer({"Arith.*": ["alice"]}))
    base = per_call([])
    passing = per_call([lambda context, argument, proceed: proceed(argument)])
    guarded = per_call([guard])
    print(f"no interceptor  {base:6.1f} us/call")
    print(f"pass-through    {passing:6.1f} us/call  ({passing / base:.2f}x)")
    print(f"Guard           {guarded:6.1f} us/call  ({guarded / base:.2f}x)")


if __name__ == "__main__":
    main()
