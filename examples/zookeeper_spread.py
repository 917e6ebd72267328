# zookeeper_spread.py
import sys

from twisted.internet import defer, task

from txgeerpc import connect
from txgeerpc.selection import RoundRobinSelect
from txgeerpc.xclient import FailMode, XClient
from txgeerpc.zookeeper import ZooKeeperClient, ZooKeeperDiscovery


async def main(reactor, hosts):
    zookeeper = ZooKeeperClient(reactor, hosts)  # "host:2181,other:2181"
    discovery = ZooKeeperDiscovery(zookeeper, reactor)
    discovery.startService()
    await discovery.ready()  # the first listing; watches follow changes after it
    xclient = XClient(
        discovery,
        lambda address: connect(reactor, address, connect_timeout=2),
        reactor,
        selector=RoundRobinSelect(),
        mode=FailMode.FAIL_OVER,
    )
    try:
        for n in range(10):
            assert await xclient.call("Foo.Sum", {"Num1": n, "Num2": 1}, timeout=2) == n + 1
        for address, calls in sorted(xclient.calls_sent.items()):
            print(f"{address}: {calls} calls")
    finally:
        await xclient.close()
        discovery.stopService()
        await zookeeper.close()  # kazoo's threads stop


task.react(lambda reactor: defer.ensureDeferred(main(reactor, sys.argv[1])))
