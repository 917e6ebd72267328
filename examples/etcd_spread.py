# etcd_spread.py
import sys

from twisted.internet import defer, task

from txgeerpc import connect
from txgeerpc.etcd import EtcdClient, EtcdDiscovery
from txgeerpc.selection import RoundRobinSelect
from txgeerpc.xclient import FailMode, XClient


async def main(reactor, endpoints):
    etcd = EtcdClient(reactor, endpoints)  # "http://host:2379,http://other:2379"
    discovery = EtcdDiscovery(etcd, reactor)
    discovery.startService()
    await discovery.ready()  # the first listing; the watch follows changes after it
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
        await etcd.close()


task.react(lambda reactor: defer.ensureDeferred(main(reactor, sys.argv[1])))
