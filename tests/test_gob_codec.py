"""
The gob codec against the recorded Go sessions: every gob vector decodes into
the calls and replies the recording shows, the txgeerpc server answers the
recorded requests with the reference's exact bytes (and keeps going after an
unknown method), and the client writes the reference client's exact bytes.
"""

from __future__ import annotations

import json
import re
from typing import Any

from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from txgeerpc import Client, Option
from txgeerpc._client_protocol import ClientProtocol
from txgeerpc._messages import MessagePairs
from txgeerpc._wire import EMPTY_STRUCT, Header
from txgeerpc.codec import GobCodec, default_registry
from txgeerpc.errors import CodecError, RemoteError, UnexpectedDisconnect
from txgeerpc.examples import Args

from ._helpers import (
    VECTORS,
    checked_clock,
    connected_server,
    decode_all,
    example_server,
    gob_frames,
    vector,
)

GOB_VECTORS = [
    "01-gob-tcp",
    "03-gob-handle-timeout",
    "06-gob-http-connect",
    "15-coalesced-option-classic",
    "16-coalesced-option-jsonv2",
    "17-widened-option-classic",
    "18-widened-option-jsonv2",
]

_RECORDED = re.compile(r"VALUE \((header|body)\) of type \d+ \([^)]*\): (.*)$")


def recorded_values(name: str, direction: str) -> list[tuple[str, Any]]:
    """The values the vector's .txt decoding lists for one direction (``c2s``
    or ``s2c``), in order, as rendered there: zero fields left out."""
    text = (VECTORS / f"{name}.txt").read_text()
    section = text.split(f"--- {direction}, decoded ---")[1].split("\n--- ")[0]
    values = []
    for line in section.splitlines():
        match = _RECORDED.search(line)
        if match:
            values.append((match.group(1), json.loads(match.group(2))))
    return values


def gob_part(name: str, direction: str) -> bytes:
    """The gob stream of one direction: after the CONNECT exchange and the Option."""
    data = vector(f"{name}.{direction}.bin")
    if data.startswith((b"CONNECT ", b"HTTP/1.0 200")):
        data = data[data.index(b"\n\n") + 2 :]
    if direction == "c2s":
        options, data = decode_all([data])
        assert len(options) == 1
    return data


def without_zeros(value: Any) -> Any:
    """Go's rendering in the .txt files leaves zero-valued struct fields out."""
    if isinstance(value, dict):
        return {key: without_zeros(item) for key, item in value.items() if item not in (0, "")}
    return value


def decode_pairs(data: bytes) -> list[tuple[Header, Any]]:
    decoder = GobCodec().new_decoder(1 << 20)
    decoder.feed(data)
    pairs = MessagePairs(decoder)
    result = []
    while (pair := pairs.next_pair()) is not None:
        result.append((pair[0], decoder.decode_body(pair[1])))
    return result


class RecordedStreamTests(SynchronousTestCase):
    def test_every_gob_vector_decodes_into_the_recorded_values(self) -> None:
        for name in GOB_VECTORS:
            for direction in ("c2s", "s2c"):
                recorded = recorded_values(name, direction)
                decoded = []
                for header, body in decode_pairs(gob_part(name, direction)):
                    decoded.append(("header", without_zeros(header._asdict())))
                    decoded.append(("body", without_zeros(body)))
                renamed = [
                    (kind, _go_header(value) if kind == "header" else value)
                    for kind, value in decoded
                ]
                self.assertEqual(renamed, recorded, f"{name} {direction}")
                self.assertTrue(recorded or direction == "s2c", name)


def _go_header(value: dict[str, Any]) -> dict[str, Any]:
    names = {"service_method": "ServiceMethod", "seq": "Seq", "error": "Error"}
    # The extension's fields (budget, meta) are absent from Go's recordings.
    return {names[key]: item for key, item in value.items() if key in names}


class ServerReplayTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = checked_clock(self)
        self.server = example_server(self.clock)

    def test_vector_01_replies_are_the_references_bytes_and_the_stream_goes_on(self) -> None:
        protocol, transport = connected_server(self, self.server)
        protocol.dataReceived(vector("01-gob-tcp.c2s.bin"))
        self.assertEqual(transport.value(), vector("01-gob-tcp.s2c.bin"))
        self.assertEqual(
            self.flushLoggedErrors(ZeroDivisionError), []
        )  # a domain error: no traceback
        # The reference closes here (it reads the unknown method's body as a
        # header); txgeerpc consumed that body, so the Go client's next call,
        # Foo.Sum{8,9} with seq 5, is answered.
        transport.clear()
        header = bytes.fromhex("0eff8001") + b"\x07Foo.Sum" + b"\x01\x05\x00"
        protocol.dataReceived(header + bytes.fromhex("07ff820110011200"))  # Args{8, 9}
        self.assertEqual(
            decode_pairs_after(vector("01-gob-tcp.s2c.bin"), transport.value()),
            [(Header("Foo.Sum", 5, ""), 17)],
        )
        self.assertFalse(transport.disconnecting)

    def test_vector_03_handle_timeout_replies_are_the_references_bytes(self) -> None:
        data = vector("03-gob-handle-timeout.c2s.bin")
        option_end = data.index(b"\n") + 1
        frames = gob_frames(data[option_end:])
        protocol, transport = connected_server(self, self.server)
        # As recorded: Foo.Sleep{1} (header definition, header, Args
        # definition, Args), its timeout reply after 250 ms, then the rest.
        protocol.dataReceived(data[:option_end] + b"".join(frames[:4]))
        self.clock.advance(0.25)
        protocol.dataReceived(b"".join(frames[4:]))
        self.assertEqual(transport.value(), vector("03-gob-handle-timeout.s2c.bin"))
        self.clock.advance(1)  # the cancelled sleep sends nothing more
        self.assertEqual(transport.value(), vector("03-gob-handle-timeout.s2c.bin"))

    def test_every_split_of_the_first_request(self) -> None:
        data = vector("01-gob-tcp.c2s.bin")[:217]  # Option + Foo.Sum{1,2}
        expected = vector("01-gob-tcp.s2c.bin")[:75]
        for cut in range(1, len(data)):
            protocol, transport = connected_server(self, self.server)
            protocol.dataReceived(data[:cut])
            protocol.dataReceived(data[cut:])
            self.assertEqual(transport.value(), expected, f"split at {cut}")

    def test_widened_option_then_requests(self) -> None:
        protocol, transport = connected_server(self, self.server)
        protocol.dataReceived(vector("17-widened-option-classic.c2s.bin"))
        self.assertEqual(transport.value(), vector("17-widened-option-classic.s2c.bin"))

    def test_wrong_argument_type_is_an_error_reply_and_the_stream_goes_on(self) -> None:
        protocol, transport = connected_server(self, self.server)
        client = GobCodec().new_encoder()
        option = Option(codec_type="application/gob").to_json()
        protocol.dataReceived(
            option
            + client.encode(Header("Foo.Sum", 1, ""), "not args")
            + client.encode(Header("Foo.Sum", 2, ""), Args(2, 3))
        )
        (bad, bad_body), (good, good_body) = decode_pairs(transport.value())
        self.assertIn("rpc server: bad argument for Foo.Sum", bad.error)
        self.assertEqual(bad_body, {})
        self.assertEqual((good, good_body), (Header("Foo.Sum", 2, ""), 5))

    def test_garbage_after_the_option_closes_with_a_log(self) -> None:
        protocol, transport = connected_server(self, self.server)
        protocol.dataReceived(
            Option(codec_type="application/gob").to_json() + b"\x05\xff\xff\xff\xff\xff"
        )
        self.assertTrue(transport.disconnecting)
        self.assertEqual(transport.value(), b"")


def decode_pairs_after(prefix: bytes, data: bytes) -> list[tuple[Header, Any]]:
    """Decode ``data`` as the continuation of the stream ``prefix`` started."""
    return decode_pairs(prefix + data)[len(decode_pairs(prefix)) :]


class ClientBytesTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = checked_clock(self)
        self.protocol = ClientProtocol(
            default_registry.get("application/gob"),
            Option(codec_type="application/gob"),
            self.clock,
            max_message_size=1 << 20,
        )
        self.transport = StringTransport()
        self.protocol.makeConnection(self.transport)
        self.client = Client(self.protocol)

    def test_requests_are_the_go_clients_bytes(self) -> None:
        calls = [
            self.client.call("Foo.Sum", Args(1, 2)),
            self.client.call("Arith.Multiply", Args(3, 4)),
            self.client.call("Arith.Divide", Args(7, 0)),
            self.client.call("Foo.Nope", Args(5, 6)),
        ]
        written = self.transport.value()
        self.assertEqual(len(written[:512]), 512)  # the widened Option
        self.assertEqual(written[512:], vector("01-gob-tcp.c2s.bin")[101:])
        self.protocol.dataReceived(vector("01-gob-tcp.s2c.bin"))
        self.assertEqual(self.successResultOf(calls[0]), 3)
        self.assertEqual(self.successResultOf(calls[1]), 12)
        self.assertEqual(
            self.failureResultOf(calls[2], RemoteError).value.message, "divide by zero"
        )
        self.assertEqual(
            self.failureResultOf(calls[3], RemoteError).value.message,
            "rpc server: can't find method Nope",
        )

    def test_a_reply_that_does_not_fit_fails_only_its_call(self) -> None:
        first = self.client.call("Foo.Sum", Args(1, 2), result_type=str)
        second = self.client.call("Arith.Multiply", Args(3, 4), result_type=int)
        self.protocol.dataReceived(vector("01-gob-tcp.s2c.bin")[:101])
        self.failureResultOf(first, CodecError)
        self.assertEqual(self.successResultOf(second), 12)

    def test_unencodable_argument_fails_the_call_and_nothing_is_written(self) -> None:
        self.transport.clear()
        d = self.client.call("Foo.Sum", object())
        self.failureResultOf(d, CodecError)
        self.assertEqual(self.transport.value(), b"")
        ok = self.client.call("Foo.Sum", Args(1, 2))
        # The Go client's first request, definitions included, with Seq 2:
        # the failed call defined nothing.
        first_request = vector("01-gob-tcp.c2s.bin")[101:217]
        self.assertEqual(
            self.transport.value(),
            first_request.replace(b"Foo.Sum\x01\x01", b"Foo.Sum\x01\x02"),
        )
        self.protocol.dataReceived(_reply(2, 3))
        self.assertEqual(self.successResultOf(ok), 3)

    def test_error_reply_bodies_are_consumed(self) -> None:
        d = self.client.call("Arith.Divide", Args(7, 0))
        e = self.client.call("Foo.Sum", Args(1, 2))
        encoder = GobCodec().new_encoder()
        self.protocol.dataReceived(
            encoder.encode(Header("Arith.Divide", 1, "divide by zero"), EMPTY_STRUCT)
            + encoder.encode(Header("Foo.Sum", 2, ""), 3, int)
        )
        self.failureResultOf(d, RemoteError)
        self.assertEqual(self.successResultOf(e), 3)

    def test_a_corrupt_reply_stream_fails_everything_pending(self) -> None:
        d = self.client.call("Foo.Sum", Args(1, 2))
        e = self.client.call("Foo.Sum", Args(3, 4))
        self.protocol.dataReceived(b"\x03\x7f\x00\x00")  # an empty definition of id 64
        self.assertIn(
            "empty type definition", str(self.failureResultOf(d, UnexpectedDisconnect).value.reason)
        )
        self.failureResultOf(e, UnexpectedDisconnect)
        self.assertTrue(self.transport.disconnecting)


def _reply(seq: int, value: int) -> bytes:
    """A whole reply stream (definitions included) with one int reply."""
    return GobCodec().new_encoder().encode(Header("Foo.Sum", seq, ""), value, int)
