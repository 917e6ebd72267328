"""
Framed mode and compression: a Twisted client asking a txgeerpc server for
length-prefixed messages, with zstd for bodies of 1 KiB or more.

Run a server, then this::

    twistd -n geerpc                                  # the demo services on 127.0.0.1:7001
    python examples/framed_client.py tcp@127.0.0.1:7001
"""

import sys

from twisted.internet import task
from twisted.internet.defer import Deferred

from txgeerpc import connect


async def main(reactor, address):
    client = await connect(reactor, address, codec="json", framed=True, compress="zstd")
    try:
        print("6 * 7 =", await client.call("Arith.Multiply", {"Num1": 6, "Num2": 7}, timeout=2))
        text = "GeeRPC " * 2000  # 14 KB: compressed on the way and back
        echoed = await client.call("Arith.Echo", text, timeout=2)
        print("echoed", len(echoed), "characters:", echoed == text)
    finally:
        await client.close()


if __name__ == "__main__":
    task.react(lambda reactor: Deferred.fromCoroutine(main(reactor, sys.argv[1])))
