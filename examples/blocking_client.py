"""
A plain Python program (no Twisted in sight) calling a GeeRPC server with
``txgeerpc.blocking``: calls block, from any thread, with the same errors as
the Twisted client.

Run a server, then this::

    twistd -n geerpc                                  # the demo services on 127.0.0.1:7001
    python examples/blocking_client.py tcp@127.0.0.1:7001
"""

import sys
from concurrent.futures import ThreadPoolExecutor

from txgeerpc import blocking
from txgeerpc.errors import CallTimeout, RemoteError


def main(address: str) -> None:
    with blocking.connect(address, connect_timeout=5) as client:
        print("6 * 7 =", client.call("Arith.Multiply", {"Num1": 6, "Num2": 7}, timeout=2))

        # Several threads share one client: their calls run at once.
        with ThreadPoolExecutor(max_workers=4) as pool:
            sums = pool.map(
                lambda n: client.call("Foo.Sum", {"Num1": n, "Num2": n}, timeout=2), range(4)
            )
            print("sums:", list(sums))

        try:
            client.call("Foo.Sleep", {"Num1": 10, "Num2": 0}, timeout=0.1)
        except CallTimeout as error:
            print("timed out:", error)
            print("pending after the timeout:", client.pending)
        try:
            client.call("Arith.Divide", {"Num1": 1, "Num2": 0}, timeout=2)
        except RemoteError as error:
            print("the server said:", error.message)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "tcp@127.0.0.1:7001")
