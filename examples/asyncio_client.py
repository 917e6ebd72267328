"""
An asyncio program calling a GeeRPC server with ``txgeerpc.aio``: calls
return asyncio futures, so ``asyncio.gather``, ``asyncio.wait_for`` and
cancellation work as usual.

Run a server, then this::

    twistd -n geerpc                                  # the demo services on 127.0.0.1:7001
    python examples/asyncio_client.py tcp@127.0.0.1:7001
"""

import asyncio
import sys

from txgeerpc import aio
from txgeerpc.errors import CallTimeout, RemoteError


async def main(address: str) -> None:
    async with aio.connect(address, connect_timeout=5) as client:
        print("6 * 7 =", await client.call("Arith.Multiply", {"Num1": 6, "Num2": 7}, timeout=2))

        sums = await asyncio.gather(
            *(client.call("Foo.Sum", {"Num1": n, "Num2": n}, timeout=2) for n in range(4))
        )
        print("sums:", sums)

        try:
            await client.call("Foo.Sleep", {"Num1": 10, "Num2": 0}, timeout=0.1)
        except CallTimeout as error:
            print("timed out:", error)
        try:
            await client.call("Arith.Divide", {"Num1": 1, "Num2": 0}, timeout=2)
        except RemoteError as error:
            print("the server said:", error.message)

        # Cancelling the future cancels the call: nothing is left pending.
        sleeping = client.call("Foo.Sleep", {"Num1": 10, "Num2": 0})
        await asyncio.sleep(0)
        sleeping.cancel()
        await asyncio.gather(sleeping, return_exceptions=True)
        print("pending after cancel:", client.pending)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else "tcp@127.0.0.1:7001"))
