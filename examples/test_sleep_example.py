# test_sleep_example.py
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from txgeerpc import Server
from txgeerpc.examples import Args, register_examples
from txgeerpc.testing import connect_in_memory


class SleepTests(SynchronousTestCase):
    def test_sleep(self):
        clock = Clock()
        server = Server(clock)
        register_examples(server)
        pair = connect_in_memory(server, clock=clock)
        d = pair.client.call("Foo.Sleep", Args(2, 3))
        pair.flush()
        clock.advance(2)
        pair.flush()
        self.assertEqual(self.successResultOf(d), 5)
        pair.close()
