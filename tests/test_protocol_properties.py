"""
Property tests on the protocols themselves: whatever a peer sends, nothing
escapes ``dataReceived``, the other side's bookkeeping stays consistent, and a
valid stream gets the same replies however it is segmented.
"""

from __future__ import annotations

import itertools
import json

from hypothesis import given
from hypothesis import strategies as st
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from txgeerpc import Client, Option
from txgeerpc._client_protocol import ClientProtocol
from txgeerpc.codec import default_registry
from txgeerpc.errors import GeeRPCError
from txgeerpc.examples import Args

from . import examples
from ._helpers import JSON_OPTION, CapturedLogs, checked_clock, connected_server, example_server

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=10),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=6,
)
methods = st.sampled_from(
    [
        "Foo.Sum",
        "Foo.Sleep",
        "Arith.Multiply",
        "Arith.Divide",
        "Arith.Echo",
        "Arith.Fail",
        "Foo.Nope",
        "Nope.Sum",
        "NoDot",
        "",
    ]
)


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({0, len(data), *(min(cut, len(data)) for cut in cuts)})
    return [data[a:b] for a, b in itertools.pairwise(points)]


class ServerProtocolProperties(SynchronousTestCase):
    @examples(2 / 3)
    @given(garbage=st.binary(max_size=200), cuts=st.lists(st.integers(0, 300), max_size=5))
    def test_random_bytes_after_option_never_escape(self, garbage: bytes, cuts: list[int]) -> None:
        clock = checked_clock(self)
        server = example_server(clock, max_message_size=64, handle_timeout=1, drain_timeout=1)
        protocol, _transport = connected_server(self, server)
        with CapturedLogs():
            for chunk in split(JSON_OPTION + garbage, cuts):
                protocol.dataReceived(chunk)
            clock.advance(1)
            clock.advance(1)
        protocol.connectionLost(None)  # type: ignore[arg-type]
        self.flushLoggedErrors()
        self.assertEqual(server.connections, 0)

    @examples(1 / 3)
    @given(
        requests=st.lists(st.tuples(methods, json_values), min_size=1, max_size=6),
        cuts=st.lists(st.integers(0, 2000), max_size=8),
    )
    def test_any_segmentation_same_replies(
        self, requests: list[tuple[str, object]], cuts: list[int]
    ) -> None:
        stream = JSON_OPTION + b"".join(
            b'{"ServiceMethod":%s,"Seq":%d,"Error":""}\n%s\n'
            % (json.dumps(method).encode(), seq, json.dumps(body).encode())
            for seq, (method, body) in enumerate(requests, 1)
        )
        outputs = []
        for chunks in ([stream], split(stream, cuts)):
            clock = checked_clock(self)
            server = example_server(clock, handle_timeout=1)  # bounds any Foo.Sleep
            protocol, transport = connected_server(self, server)
            with CapturedLogs():
                for chunk in chunks:
                    protocol.dataReceived(chunk)
                clock.advance(1)
            outputs.append(transport.value())
            self.assertFalse(transport.disconnecting)
        self.flushLoggedErrors()
        self.assertEqual(outputs[0], outputs[1])
        # One reply (header + body) per request.
        self.assertEqual(outputs[0].count(b"\n"), 2 * len(requests))


class ClientProtocolProperties(SynchronousTestCase):
    @examples(2 / 3)
    @given(reply=st.binary(max_size=200), cuts=st.lists(st.integers(0, 300), max_size=5))
    def test_random_reply_bytes_never_escape(self, reply: bytes, cuts: list[int]) -> None:
        clock = checked_clock(self)
        protocol = ClientProtocol(
            default_registry.get("json"), Option(codec_type="application/json"), clock, 64
        )
        protocol.makeConnection(StringTransport())
        client = Client(protocol)
        calls = [client.call("Foo.Sum", Args(n, n), timeout=5) for n in range(3)]
        outcomes: list[object] = []
        for d in calls:
            d.addBoth(outcomes.append)
        with CapturedLogs():
            for chunk in split(b'{"ServiceMethod":"Foo.Sum","Seq":1,"Error":""}\n' + reply, cuts):
                protocol.dataReceived(chunk)
        clock.advance(5)
        self.assertEqual(len(outcomes), 3)  # every call ended, one way or another
        for outcome in outcomes:
            value = getattr(outcome, "value", None)
            self.assertTrue(value is None or isinstance(value, GeeRPCError), repr(outcome))
        self.assertEqual(client.pending, 0)
