# test_faults_example.py
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from txgeerpc import Server, connect
from txgeerpc.errors import CallTimeout, UnexpectedDisconnect
from txgeerpc.examples import Args, register_examples
from txgeerpc.testing import MemoryNetwork


class ResilienceTests(SynchronousTestCase):
    def test_faults(self):
        clock = Clock()
        network = MemoryNetwork(clock)
        server = Server(clock)
        register_examples(server)
        port = network.listen(server.port_factory())
        connecting = connect(network.reactor, f"http@{port.address}", connect_timeout=5)
        network.flush()
        client = self.successResultOf(connecting)

        network.faults.to_client.latency = 1  # replies take a second
        d = client.call("Foo.Sum", Args(2, 3), timeout=5)
        network.advance(1)
        self.assertEqual(self.successResultOf(d), 5)

        network.faults.to_client.blackhole = True  # replies are lost
        d = client.call("Foo.Sum", Args(2, 3), timeout=5)
        network.advance(5)
        self.failureResultOf(d, CallTimeout)
        self.assertEqual(client.pending, 0)

        network.faults.clear()
        d = client.call("Foo.Sleep", Args(10), timeout=60)
        network.flush()
        network.faults.reset()  # the connection is reset mid-call
        network.flush()
        self.failureResultOf(d, UnexpectedDisconnect)
        network.close()
        self.assertEqual(clock.getDelayedCalls(), [])
