"""The msgpack codec: the plain stream, its limits and budget, and calls."""

from __future__ import annotations

from typing import Any

import msgpack
from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from tests._helpers import checked_clock, example_server
from txgeerpc import Header, connect, default_registry
from txgeerpc._wire import EmptyStruct
from txgeerpc.codec import MSGPACK, MsgpackCodec
from txgeerpc.codec._msgpack import (
    MsgpackDecoder,
    decode_body_bytes,
    decode_header_bytes,
    decode_value,
    header_of,
    message_cost,
)
from txgeerpc.errors import CodecError, MessageTooLarge, ProtocolError
from txgeerpc.examples import Args
from txgeerpc.testing import MemoryNetwork


def pairs(data: bytes, piece: int, max_size: int = 1 << 20) -> list[object]:
    decoder = MsgpackCodec().new_decoder(max_size)
    out = []
    for start in range(0, len(data), piece):
        decoder.feed(data[start : start + piece])
        while (message := decoder.next_message()) is not None:
            out.append(message)
    decoder_state = decoder.buffered()
    assert decoder_state == 0, decoder_state
    return out


class StreamTests(SynchronousTestCase):
    def test_registered_under_its_name_and_alias(self) -> None:
        self.assertEqual(default_registry.get("msgpack").name, MSGPACK)
        self.assertEqual(MSGPACK, "application/msgpack")

    def test_headers_and_bodies_in_any_pieces(self) -> None:
        encoder = MsgpackCodec().new_encoder()
        header = Header("Arith.Echo", 7, "", 5_000_000, {"k": "v"})
        data = encoder.encode(header, "x" * 3000) + encoder.encode(
            Header("Records.Echo", 8, ""), {"Name": "n", "Data": b"\x00\x01"}
        )
        for piece in (1, 7, 100, len(data)):
            decoder = MsgpackCodec().new_decoder(1 << 20)
            messages = pairs(data, piece)
            self.assertEqual(len(messages), 4)
            self.assertEqual(decoder.decode_header(messages[0]), header)
            self.assertEqual(decoder.decode_body(messages[1]), "x" * 3000)
            self.assertEqual(decoder.decode_header(messages[2]), Header("Records.Echo", 8, ""))
            self.assertEqual(decoder.decode_body(messages[3]), {"Name": "n", "Data": b"\x00\x01"})

    def test_structs_travel_as_maps_of_wire_names(self) -> None:
        encoder = MsgpackCodec().new_encoder()
        body = encoder.encode_body(Args(6, 7))
        self.assertEqual(msgpack.unpackb(body), {"Num1": 6, "Num2": 7})

    def test_split_encoding_matches_encode(self) -> None:
        encoder = MsgpackCodec().new_encoder()
        header = Header("A.B", 1, "oops")
        self.assertEqual(
            encoder.encode(header, None), encoder.encode_header(header) + encoder.encode_body({})
        )
        self.assertEqual(decode_header_bytes(encoder.encode_header(header)), header)
        self.assertEqual(decode_body_bytes(encoder.encode_body([1, "a"]))[0], [1, "a"])

    def test_bad_header_is_a_codec_error(self) -> None:
        full = {"ServiceMethod": "A.B", "Seq": 1, "Error": ""}
        for value in (
            [1],
            {"Seq": -1},
            {"Seq": True},
            {"ServiceMethod": 3},
            {**full, "TxgeerpcMeta": 1},
            {**full, "TxgeerpcBudget": "1"},
        ):
            with self.assertRaises(CodecError):
                decode_header_bytes(msgpack.packb(value))

    def test_unencodable_body_is_a_codec_error(self) -> None:
        with self.assertRaises(CodecError):
            MsgpackCodec().new_encoder().encode(Header("A.B", 1), 2**70)


def _general(data: bytes) -> Any:
    """What the general path makes of one header: the Header, or its error."""
    try:
        return header_of(decode_value(data)[0])
    except Exception as error:
        return (type(error), str(error))


def _common_headers() -> list[bytes]:
    """Common headers as both sides write them, and near misses written by
    hand (keys in another order, other int and str forms, other fields)."""
    encoder = MsgpackCodec().new_encoder()
    seqs = [0, 1, 127, 128, 255, 256, 65535, 65536, 2**32 - 1, 2**32, 2**63, 2**64 - 1]
    names = ["", "A.B", "Arith.Multiply", "x" * 31, "x" * 32, "x" * 255, "x" * 256, "é.B"]
    out = [encoder.encode_header(Header(name, seq, "")) for name in names for seq in seqs]
    full = {"ServiceMethod": "A.B", "Seq": 5, "Error": ""}
    for value in (
        {"Seq": 5, "ServiceMethod": "A.B", "Error": ""},
        {**full, "Error": "bad"},
        {**full, "Error": None},
        {**full, "Seq": -1},
        {**full, "Seq": 1.0},
        {**full, "Seq": True},
        {**full, "ServiceMethod": b"A.B"},
        {**full, "TxgeerpcBudget": 7},
        {**full, "ServiceMethod": "A.B", "Seq": 5},
        {"ServiceMethod": "A.B", "Seq": 5},
        [1, 2, 3],
    ):
        out.append(msgpack.packb(value))
    head = b"\x83\xadServiceMethod"
    tail = b"\xa5Error\xa0"
    out += [
        head + b"\xd9\x03A.B\xa3Seq\x05" + tail,  # str 8 for a short name: still valid
        head + b"\xda\x00\x03A.B\xa3Seq\x05" + tail,  # str 16
        head + b"\xa3A.B\xa3Seq\xcc\x05" + tail,  # uint 8 for a fixint
        head + b"\xa3A.B\xa3Seq\xcf" + b"\x00" * 7 + b"\x05" + tail,
        head + b"\xa3A.B\xa3Seq\xd0\x05" + tail,  # int 8
        head + b"\xa3A.B\xa3Seq\xcd\x05" + tail,  # uint 16 cut short
        head + b"\xa3A.B\xa3Seq\x05\x05" + tail,  # two Seqs
        *(head + b"\xa3A.B\xa3Seq" + b"\x00" * n + tail for n in range(2, 11)),
        head + b"\xa3A.B\xa3Seq" + tail,  # no Seq
        head + b"\xa3A\xff\xa3Seq\x05" + tail,  # not UTF-8
        head + b"\xa2A.B\xa3Seq\x05" + tail,
        head + b"\xa4A.B\xa3Seq\x05" + tail,
        b"\x84" + head[1:] + b"\xa3A.B\xa3Seq\x05" + tail + b"\xa1k\x01",
    ]
    return out


_METHODS = ("Arith.Multiply", "A.B", "", "x" * 31, "x" * 32, "x" * 255, "x" * 256, "é.B")


def _primed(method: str) -> MsgpackDecoder:
    """A decoder whose last common header was ``method``'s."""
    decoder = MsgpackCodec().new_decoder(1 << 20)
    decoder.decode_header(MsgpackCodec().new_encoder().encode_header(Header(method, 9, "")))
    return decoder


class CommonHeaderTests(SynchronousTestCase):
    """header_in reads the common header of the method last seen with two
    byte comparisons and the Seq; whatever it returns must be what
    decode_value + header_of return, and it must decline (None) everything
    else."""

    def assertLikeGeneral(self, data: bytes, decoders: list[MsgpackDecoder]) -> None:
        """``data`` read by each decoder as it stands (one whose header is
        not one of ``data``'s yet, or ``data``'s method kept)."""
        general = _general(data)
        for decoder in decoders:
            # In place, inside a larger buffer: it must not read past its region.
            for before, after in ((b"", b""), (b"\x83\xa5", b"\xa0\x05"), (b"\xff" * 3, data)):
                for buffer in (before + data + after, bytearray(before + data + after)):
                    fast = decoder.header_in(buffer, len(before), len(before) + len(data))
                    if fast is not None:
                        self.assertEqual(fast, general, data)
                        types = [type(field) for field in fast]
                        self.assertEqual(types, [str, int, str, int, type(None)])
            try:
                got = decoder.decode_header(data)
            except Exception as error:
                got = (type(error), str(error))
            self.assertEqual(got, general, data)

    def test_the_common_headers_are_read_in_place(self) -> None:
        encoder = MsgpackCodec().new_encoder()
        for name in _METHODS:
            decoder = _primed(name)
            for seq in (0, 127, 128, 65536, 2**64 - 1):
                data = encoder.encode_header(Header(name, seq, ""))
                self.assertEqual(decoder.header_in(data, 0, len(data)), Header(name, seq, ""))
            other = encoder.encode_header(Header(name + "x", 1, ""))
            self.assertIsNone(decoder.header_in(other, 0, len(other)))
        fresh = MsgpackCodec().new_decoder(1 << 20)
        self.assertIsNone(fresh.header_in(data, 0, len(data)))  # nothing kept yet

    def test_headers_and_near_misses(self) -> None:
        for data in _common_headers():
            self.assertLikeGeneral(data, [_primed(name) for name in _METHODS])

    def test_every_byte_changed_and_every_cut(self) -> None:
        data = MsgpackCodec().new_encoder().encode_header(Header("Arith.Multiply", 300, ""))
        for at in range(len(data)):
            self.assertLikeGeneral(data[:at], [_primed("Arith.Multiply")])
            self.assertLikeGeneral(data + data[:at], [_primed("Arith.Multiply")])
            for byte in range(256):
                changed = data[:at] + bytes((byte,)) + data[at + 1 :]
                self.assertLikeGeneral(changed, [_primed("Arith.Multiply")])

    @given(
        st.lists(
            st.tuples(
                st.sampled_from([*_METHODS, "Arith.Multiplz"]),
                st.integers(min_value=-(2**63), max_value=2**64 - 1),
                st.sampled_from(["", "", "bad"]),
                st.lists(st.tuples(st.integers(min_value=0), st.binary(max_size=3)), max_size=2),
            ),
            max_size=6,
        ),
    )
    def test_random_headers_changed_in_a_row(
        self, headers: list[tuple[str, int, str, list[tuple[int, bytes]]]]
    ) -> None:
        """One decoder for a run of headers: what it keeps of one header must
        not make it misread the next."""
        decoder = MsgpackCodec().new_decoder(1 << 20)
        for name, seq, error, changes in headers:
            data = msgpack.packb({"ServiceMethod": name, "Seq": seq, "Error": error})
            for at, piece in changes:
                at %= len(data) + 1
                data = data[:at] + piece + data[at + len(piece) :]
            self.assertLikeGeneral(data, [decoder])


def _result(function: Any, *arguments: Any) -> Any:
    try:
        return function(*arguments)
    except Exception as error:
        return (type(error), str(error))


def _general_parts(header: Header, body: Any) -> tuple[bytes, bytes]:
    general = MsgpackCodec().new_encoder()
    return general._encode_header(header), general.encode_body(body)


class CommonHeaderEncodingTests(SynchronousTestCase):
    """The encoder writes the common header from the method's kept bytes;
    they must be the general path's bytes, and other headers must not be."""

    def test_same_bytes_and_errors_as_the_general_path(self) -> None:
        headers = [
            Header("Arith.Multiply", 1, ""),
            Header("Arith.Multiply", 2, ""),
            Header("Arith.Multiply", 2**64 - 1, ""),
            Header("Arith.Multiply", 2**64, ""),  # too large: the general path's error
            Header("Arith.Multiply", -1, ""),
            Header("Arith.Multiply", 3, "bad"),
            Header("Arith.Multiply", 4, "", 7),
            Header("Arith.Multiply", 5, "", 0, {"k": "v"}),
            Header("Arith.Multiply", 6, "", 0, {}),
            Header("Arith.Multiply", 7, None),  # type: ignore[arg-type]
            Header("A.B", 8, ""),
            Header("x" * 300, 9, ""),
            Header("Arith.Multiply", 10, ""),
            Header("\ud800", 11, ""),  # not encodable
            Header(b"A.B", 12, ""),  # type: ignore[arg-type]
            Header("A.B", 13, ""),
        ]
        nested: list[Any] = []
        nested.append(nested)  # packing it recurses without end
        bodies = [42, None, EmptyStruct(), {}, Args(6, 7), b"\x00", 2**70, nested, object()]
        fast = MsgpackCodec().new_encoder()
        fast_parts = MsgpackCodec().new_encoder()
        for header in headers:
            general = MsgpackCodec().new_encoder()
            self.assertEqual(
                _result(fast.encode_header, header),
                _result(general._encode_header, header),
                header,
            )
            for body in bodies:
                self.assertEqual(
                    _result(fast_parts.encode_parts, header, body),
                    _result(_general_parts, header, body),
                    (header, body),
                )

    def test_the_common_header_is_written_without_the_general_path(self) -> None:
        encoder = MsgpackCodec().new_encoder()
        first = encoder.encode_header(Header("Arith.Multiply", 1, ""))

        def general(header: Header) -> bytes:
            raise AssertionError("the general path")

        encoder._encode_header = general  # type: ignore[method-assign]
        self.assertEqual(
            encoder.encode_header(Header("Arith.Multiply", 300, "")),
            first.replace(b"Seq\x01", b"Seq\xcd\x01\x2c"),
        )
        encoder.encode_header = encoder.encode_body = general  # type: ignore[method-assign]
        self.assertEqual(
            encoder.encode_parts(Header("Arith.Multiply", 2, ""), [1]),
            (first.replace(b"Seq\x01", b"Seq\x02"), b"\x91\x01"),
        )


class LimitTests(SynchronousTestCase):
    def test_message_growing_past_the_limit_is_refused_before_it_ends(self) -> None:
        # A str32 announcing 4 GiB: nothing is built while it arrives, and
        # it is refused once more than the limit is buffered.
        decoder = MsgpackCodec().new_decoder(1000)
        decoder.feed(b"\xdb\xff\xff\xff\xff" + b"x" * 990)
        self.assertIsNone(decoder.next_message())
        decoder.feed(b"x" * 10)
        with self.assertRaises(MessageTooLarge):
            decoder.next_message()

    def test_complete_message_over_the_limit_is_refused(self) -> None:
        decoder = MsgpackCodec().new_decoder(1000)
        decoder.feed(msgpack.packb("x" * 1200))
        with self.assertRaises(MessageTooLarge):
            decoder.next_message()

    def test_malformed_stream_is_a_protocol_error(self) -> None:
        decoder = MsgpackCodec().new_decoder(1000)
        decoder.feed(b"\xc1")  # never used in msgpack
        with self.assertRaises(ProtocolError):
            decoder.next_message()

    def test_many_empty_maps_are_over_their_budget_before_they_are_built(self) -> None:
        data = b"\xdd" + (60_000).to_bytes(4, "big") + b"\x80" * 60_000
        self.assertGreater(message_cost(data), 8 * len(data) + (1 << 20))
        with self.assertRaises(CodecError) as caught:
            decode_body_bytes(data)
        self.assertIn("expands", str(caught.exception))

    def test_cost_bounds_what_is_built(self) -> None:
        import tracemalloc

        for data in (
            msgpack.packb([{"a": [1.5, "é" * 3, b"xy"]}] * 3000),
            msgpack.packb([[]] * 20_000),
            msgpack.packb({str(i): i * 1000 for i in range(5000)}),
        ):
            msgpack.unpackb(data)
            tracemalloc.start()
            try:
                value = msgpack.unpackb(data)
                used = tracemalloc.get_traced_memory()[0]
            finally:
                tracemalloc.stop()
            del value
            self.assertLessEqual(used, message_cost(data) + 4096)


class CallTests(SynchronousTestCase):
    def test_calls_over_msgpack(self) -> None:
        clock = checked_clock(self)
        network = MemoryNetwork(clock)
        port = network.listen(example_server(clock).port_factory())
        connecting = connect(network.reactor, f"tcp@{port.address}", codec="msgpack")
        network.flush()
        client = self.successResultOf(connecting)
        product = client.call("Arith.Multiply", Args(6, 7))
        keys = client.call("Records.Keys", {"b": 1, "a": 2})
        echoed = client.call("Arith.Echo", "é" * 20_000)
        failed = client.call("Arith.Divide", Args(1, 0))
        network.flush()
        self.assertEqual(self.successResultOf(product), 42)
        self.assertEqual(self.successResultOf(keys), ["a", "b"])
        self.assertEqual(self.successResultOf(echoed), "é" * 20_000)
        self.assertIn("divide by zero", str(self.failureResultOf(failed).value))
        client.close()
        network.flush()
        network.close()
