# calc_main.py
from calc import Calc, Pair
from twisted.internet import endpoints, task
from twisted.internet.defer import ensureDeferred

from txgeerpc import Server, connect


async def main(reactor):
    server = Server(reactor, handle_timeout=5)
    server.register(Calc(reactor))            # or register(obj, name="...", methods=[...])
    port = await endpoints.serverFromString(reactor, "tcp:0:interface=127.0.0.1").listen(
        server.port_factory()                 # raw GeeRPC, HTTP CONNECT and HTTP on one port
    )
    client = await connect(reactor, f"tcp@127.0.0.1:{port.getHost().port}")  # gob
    try:
        print(await client.call("Calc.Add", Pair(2, 3), timeout=2))               # 5
        print(await client.call("Calc.SlowAdd", {"A": 1, "B": 1}, timeout=2))    # 2
    finally:
        await client.close()
        await port.stopListening()

task.react(lambda reactor: ensureDeferred(main(reactor)))
