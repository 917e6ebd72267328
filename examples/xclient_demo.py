# xclient_demo.py
from twisted.internet import defer, endpoints, task

from txgeerpc import Server, connect
from txgeerpc.discovery import StaticDiscovery  # or RegistryDiscovery: see spread.py below
from txgeerpc.examples import register_examples
from txgeerpc.selection import RoundRobinSelect  # Random, WeightedRoundRobin, ConsistentHash,
from txgeerpc.xclient import FailMode, XClient  # PowerOfTwoChoices


async def main(reactor):
    ports = []
    for _ in range(2):  # two servers in this process, for the demo
        server = Server(reactor)
        register_examples(server)
        endpoint = endpoints.serverFromString(reactor, "tcp:0:interface=127.0.0.1")
        ports.append(await endpoint.listen(server.port_factory()))
    discovery = StaticDiscovery(f"tcp@127.0.0.1:{port.getHost().port}" for port in ports)
    xclient = XClient(
        discovery,
        lambda address: connect(reactor, address),
        reactor,
        selector=RoundRobinSelect(),
        mode=FailMode.FAIL_OVER,
        idempotent={"Foo.Sum"},
    )
    try:
        print(await xclient.call("Foo.Sum", {"Num1": 1, "Num2": 2}, timeout=2))  # one server
        print(await xclient.call("Foo.Sum", {"Num1": 3, "Num2": 4}, timeout=2))  # the other
        print(await xclient.broadcast("Foo.Sum", {"Num1": 5, "Num2": 6}, timeout=2))  # both
        print(sorted(xclient.calls_sent.values()))
    finally:
        await xclient.close()
        for port in ports:
            await port.stopListening()


task.react(lambda reactor: defer.ensureDeferred(main(reactor)))
