"""
A typed client for the example services: the stubs in ``examples_client.py``
(written by ``python -m txgeerpc stubs ADDRESS --class-name ExamplesClient``)
over a :class:`txgeerpc.Client`.  Every call returns a ``Deferred`` of the
reply's type, and ``mypy --strict`` checks both files.

    twistd -n geerpc                                   # serves them on 127.0.0.1:7001
    python examples/typed_client.py tcp@127.0.0.1:7001
"""

from __future__ import annotations

import sys
from typing import Any

from examples_client import Args, ExamplesClient, Point, Record
from twisted.internet.defer import Deferred
from twisted.internet.task import react

import txgeerpc
from txgeerpc.errors import RemoteError


async def main(reactor: Any, address: str) -> None:
    client = await txgeerpc.connect(reactor, address)
    try:
        services = ExamplesClient(client, timeout=10)
        total: int = await services.Foo.Sum(Args(Num1=6, Num2=7))
        print(f"Foo.Sum: {total}")
        product = await services.Arith.Multiply(Args(Num1=6, Num2=7))
        print(f"Arith.Multiply: {product}")
        sent = Record(Name="r", ID=2**64 - 1, Tags=["t"], Points=[Point(X=1, Y=2)], Z=1.5 - 2j)
        record: Record = await services.Records.Echo(sent)
        print(f"Records.Echo: {record.Name} {record.ID} {record.Points[0]} {record.Z}")
        keys: list[str] = await services.Records.Keys({"b": 1, "a": 2})
        print(f"Records.Keys: {keys}")
        try:
            await services.Arith.Divide(Args(Num1=1, Num2=0))
        except RemoteError as error:
            print(f"Arith.Divide: error {error.message}")
    finally:
        await client.close()


def run(reactor: Any) -> Deferred[None]:
    address = sys.argv[1] if len(sys.argv) > 1 else "tcp@127.0.0.1:7001"
    return Deferred.fromCoroutine(main(reactor, address))


if __name__ == "__main__":
    react(run)
