"""
The options of issue 18 that need no process: ``--workers`` (a number or
``auto``; TCP listens only), ``--tcp-nodelay``/``--no-tcp-nodelay``, and
TCP_NODELAY set through whatever wraps a connection.
"""

from __future__ import annotations

import os
import socket

from twisted.internet.testing import StringTransport
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from txgeerpc import tap
from txgeerpc._nodelay import set_tcp_nodelay


def parse(*argv: str) -> tap.Options:
    options = tap.Options()
    options.parseOptions(list(argv))
    return options


class WorkersOptionTests(SynchronousTestCase):
    def test_a_number_or_auto(self) -> None:
        self.assertEqual(parse()["workers"], 1)
        self.assertEqual(parse("--workers", "3")["workers"], 3)
        self.assertEqual(parse("--workers", "auto")["workers"], os.cpu_count() or 1)
        for bad in ("0", "-1", "two"):
            self.assertRaises(usage.UsageError, parse, "--workers", bad)

    def test_only_tcp_listens_are_shared(self) -> None:
        parse("--workers", "2", "--listen", "tcp6:0:interface=::1")
        with self.assertRaises(usage.UsageError) as raised:
            parse("--workers", "2", "--listen", "unix:/tmp/txgeerpc-workers.sock")
        self.assertIn("--listen unix:/tmp/txgeerpc-workers.sock is not one", str(raised.exception))
        # One worker shares nothing: any listen will do.
        parse("--workers", "1", "--listen", "unix:/tmp/txgeerpc-workers.sock")


class NoDelayOptionTests(SynchronousTestCase):
    def test_on_off_or_the_systems_default(self) -> None:
        self.assertIsNone(parse()["nodelay"])
        self.assertIs(parse("--tcp-nodelay")["nodelay"], True)
        self.assertIs(parse("--no-tcp-nodelay")["nodelay"], False)
        self.assertRaises(usage.UsageError, parse, "--tcp-nodelay", "--no-tcp-nodelay")

    def test_set_through_a_wrapper(self) -> None:
        class TCP(StringTransport):
            nodelay = False

            def setTcpNoDelay(self, enabled: bool) -> None:
                self.nodelay = enabled

            def getTcpNoDelay(self) -> bool:
                return self.nodelay

        class Wrapper:
            def __init__(self, transport: object) -> None:
                self.transport = transport

        tcp = TCP()
        self.assertTrue(set_tcp_nodelay(Wrapper(Wrapper(tcp)), True))
        self.assertTrue(tcp.nodelay)
        self.assertTrue(set_tcp_nodelay(tcp, False))
        self.assertFalse(tcp.nodelay)
        # No TCP underneath (a UNIX socket, memory): nothing is done.
        self.assertFalse(set_tcp_nodelay(Wrapper(StringTransport()), True))

    def test_a_real_socket(self) -> None:
        from twisted.internet.tcp import Connection

        listening = socket.create_server(("127.0.0.1", 0))
        self.addCleanup(listening.close)
        left = socket.create_connection(listening.getsockname())
        self.addCleanup(left.close)
        right, _ = listening.accept()
        self.addCleanup(right.close)
        connection = Connection.__new__(Connection)
        connection.socket = left
        self.assertTrue(set_tcp_nodelay(connection, True))
        self.assertEqual(left.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY), 1)
        self.assertTrue(set_tcp_nodelay(connection, False))
        self.assertEqual(left.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY), 0)
