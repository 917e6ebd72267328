"""The gob codec's fast paths (issue 18 item 2) against its general paths:
the same bytes out, the same values in, the same errors and the same memory
budget, for valid messages and for mutated ones.

Each fast path (a small message framed in ``Decoder.next_message``, the common
header in ``_common_header``, flat structs and basic replies in
``Decoder._flat_reader``, flat structs in ``_write_flat``, a dict's struct in
``Encoder._encode_flat_dict``, the common header in ``_head``) is switched off
with ``unittest.mock`` for the reference run, so the two runs differ only by
the fast paths.
"""

from __future__ import annotations

import contextlib
import dataclasses
import sys
from collections.abc import Iterator
from typing import Any
from unittest import mock

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from txgeerpc import gob
from txgeerpc._wire import Header, new_header
from txgeerpc.codec import _gob as gob_codec
from txgeerpc.codec import default_registry
from txgeerpc.errors import CodecError
from txgeerpc.gob import _decoder, _encoder

from . import examples

SOME = examples(0.5)

INT64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)
UINT64 = st.integers(min_value=0, max_value=2**64 - 1)
SMALL_INTS = st.integers(-70, 70)  # one-byte and two-byte encodings
TEXT = st.text(max_size=140)  # past 127 bytes: a two-byte length
VALUES = {
    gob.INT: SMALL_INTS | INT64,
    gob.UINT: st.integers(0, 140) | UINT64,
    gob.STRING: TEXT,
    gob.BOOL: st.booleans(),
    gob.FLOAT: st.floats(allow_nan=False) | st.sampled_from([0.0, -0.0, 1.0, 2.0]),
}
ODD = st.sampled_from(
    [None, 0, -1, 2**63, 2**64, "", "x", "\udc80", "\ud800", True, False, 1.5, 0.0, b"x", [1]]
)
LIMIT = 1 << 16


@contextlib.contextmanager
def general_paths() -> Iterator[None]:
    """Every gob fast path off: the codec as it was before them."""
    saved = dict(_encoder._encoders)
    _encoder._encoders.clear()
    _encoder._encoders.update(_encoder._BASIC_ENCODERS)
    try:
        with (
            mock.patch.object(_decoder.Decoder, "next_message", _decoder.Decoder._next_message),
            mock.patch.object(_decoder.Decoder, "_flat_reader", lambda self, type_id: None),
            mock.patch.object(_encoder, "_flat_plan", lambda kind: None),
            mock.patch.object(_encoder.Encoder, "_encode_flat_dict", lambda self, value: None),
            mock.patch.object(gob_codec, "_common_header", lambda data, pos: None),
            mock.patch.object(gob_codec.GobMessageEncoder, "_head", _general_head),
        ):
            yield
    finally:
        _encoder._encoders.clear()
        _encoder._encoders.update(saved)


_head = gob_codec.GobMessageEncoder._head


def _general_head(self: gob_codec.GobMessageEncoder, header: Header) -> bytes:
    """``_head`` with no method's prefix cached: only its general lines run."""
    self._prefixes.clear()
    return _head(self, header)


def flat_struct(kinds: list[gob.GobType]) -> gob.StructOf:
    struct = gob.StructOf("Flat", None)
    struct.fields = tuple((f"F{n}", f"F{n}", kind) for n, kind in enumerate(kinds))
    return struct


KINDS = st.lists(st.sampled_from(list(VALUES)), min_size=1, max_size=5)


@st.composite
def flat_values(draw: st.DrawFn, odd: bool) -> tuple[gob.StructOf, list[dict[str, Any]]]:
    kinds = draw(KINDS)
    field = (lambda kind: VALUES[kind] | ODD) if odd else (lambda kind: VALUES[kind])
    values = draw(
        st.lists(
            st.fixed_dictionaries({f"F{n}": field(kind) for n, kind in enumerate(kinds)}),
            min_size=1,
            max_size=4,
        )
    )
    return flat_struct(kinds), values


def outcome(call: Any, *args: Any) -> tuple[str, str]:
    """What a call gave: its result's repr, or its error's type and text."""
    try:
        return ("value", repr(call(*args)))
    except Exception as error:  # compared, whatever it is
        return (type(error).__name__, str(error))


def encode_all(values: list[tuple[Any, Any]], general: bool) -> list[tuple[str, str]]:
    """Each value through one encoder (the stream's state carries over)."""
    with general_paths() if general else contextlib.nullcontext():
        encoder = gob.Encoder()
        return [outcome(encoder.encode, value, kind) for value, kind in values]


def decode_stream(
    data: bytes, cuts: list[int], general: bool, headers: bool = False
) -> list[tuple[Any, ...]]:
    """Everything a decoder makes of ``data`` fed in pieces: each message's
    value (or error) and the budget left after it, until the stream fails."""
    with general_paths() if general else contextlib.nullcontext():
        decoder = gob_codec.GobMessageDecoder(LIMIT)
        results: list[tuple[Any, ...]] = []
        pieces = [
            data[start:end] for start, end in zip([0, *cuts], [*cuts, len(data)], strict=True)
        ]
        count = 0
        for piece in pieces:
            decoder.feed(piece)
            while True:
                try:
                    message = decoder.next_message()
                except Exception as error:  # the stream ends here
                    return [*results, ("stream", type(error).__name__, str(error))]
                if message is None:
                    break
                is_header = headers and count % 2 == 0
                count += 1
                decode = decoder.decode_header if is_header else decoder.decode_body
                got = outcome(decode, message)
                results.append((*got, decoder.budget_left(), decoder.buffered()))
                if is_header and got[0] != "value":
                    return results  # a header that does not decode ends the stream
        return results


def mutate(data: bytes, edits: list[tuple[int, int, int]]) -> bytes:
    """Replace, insert or delete a byte at each (kind, position, byte)."""
    buffer = bytearray(data)
    for kind, position, byte in edits:
        at = position % (len(buffer) + 1)
        if kind == 0 and at < len(buffer):
            buffer[at] = byte
        elif kind == 1:
            buffer.insert(at, byte)
        elif at < len(buffer):
            del buffer[at]
    return bytes(buffer)


EDITS = st.lists(
    st.tuples(st.integers(0, 2), st.integers(0, 10_000), st.integers(0, 255)), max_size=3
)


class EncoderFastPathTests(SynchronousTestCase):
    @given(flat_values(odd=True))
    @SOME
    def test_flat_structs_encode_as_the_general_encoder(
        self, case: tuple[gob.StructOf, list[dict[str, Any]]]
    ) -> None:
        # Odd values (wrong types, out of range, surrogates, None) give the
        # general encoder's bytes or its exact error.
        struct, values = case
        pairs = [(value, struct) for value in values] * 2  # the second time: type known
        self.assertEqual(encode_all(pairs, general=False), encode_all(pairs, general=True))

    @given(flat_values(odd=True))
    @SOME
    def test_dicts_infer_and_encode_as_the_general_encoder(
        self, case: tuple[gob.StructOf, list[dict[str, Any]]]
    ) -> None:
        # No annotation: the struct is inferred from each dict (a None value,
        # an int beyond int64, a bool where an int was: another struct).
        _, values = case
        pairs = [(value, None) for value in values] * 2
        self.assertEqual(encode_all(pairs, general=False), encode_all(pairs, general=True))

    @given(
        st.lists(
            st.tuples(SMALL_INTS | INT64 | ODD, st.sampled_from([int, gob.Uint, str, float])),
            max_size=6,
        )
    )
    @SOME
    def test_basic_replies_encode_as_the_general_encoder(
        self, pairs: list[tuple[Any, Any]]
    ) -> None:
        self.assertEqual(encode_all(pairs, general=False), encode_all(pairs, general=True))

    def test_dataclass_arguments_take_the_flat_encoder(self) -> None:
        @dataclasses.dataclass
        class Args:
            Num1: int
            Num2: int
            Name: str = ""

        values = [(Args(1, 2), Args), (Args(6, -7, "é"), Args), (Args(0, 2**62), Args)]
        wanted = encode_all(values, general=True)
        encoder = gob.Encoder()
        with mock.patch.object(_encoder, "_write_flat", wraps=_encoder._write_flat) as spy:
            got = [outcome(encoder.encode, value, kind) for value, kind in values]
        self.assertEqual(got, wanted)
        self.assertEqual(spy.call_count, 3)  # the first one too (after its definition)
        # A wrong type: the general encoder's error, naming the field.
        with self.assertRaisesRegex(CodecError, r"Args\.Num1: expected int, got str"):
            encoder.encode(Args("6", 7), Args)  # type: ignore[arg-type]

    def test_a_dict_argument_is_not_inferred_again(self) -> None:
        encoder = gob.Encoder()
        encoder.encode({"Num1": 6, "Num2": 7})
        second = encoder.encode({"Num1": 6, "Num2": 7})
        with mock.patch.object(_encoder, "infer_type", side_effect=AssertionError("inferred")):
            self.assertEqual(encoder.encode({"Num1": 6, "Num2": 7}), second)
        # The same keys, an int beyond int64: inferred anew (Num1 a uint), a new type.
        self.assertEqual(gob_types_defined(encoder.encode({"Num1": 2**63, "Num2": 7})), 1)

    def test_dicts_of_another_shape_are_inferred_anew(self) -> None:
        # The same keys as a remembered dict, but a None (a field left out of
        # the inferred struct), a bool or float where an int was, an int past
        # int64 (a uint field): other structs, as the general path infers them.
        base = {"Num1": 6, "Num2": 7}
        others = [{"Num1": None, "Num2": 7}, {"Num1": True, "Num2": 7}, {"Num1": 1.5, "Num2": 7}]
        others += [{"Num1": 2**63, "Num2": 7}, {"Num1": 0, "Num2": ""}, {"Num2": 7, "Num1": 6}]
        for other in others:
            pairs = [(base, None), (base, None), (other, None), (other, None), (base, None)]
            self.assertEqual(encode_all(pairs, general=False), encode_all(pairs, general=True))


def read_header(message: tuple[int, bytes, int], general: bool) -> tuple[str, str]:
    """A header message of the canonical Header type (id 64) read by a decoder."""
    with general_paths() if general else contextlib.nullcontext():
        decoder = gob_codec.GobMessageDecoder(LIMIT)
        decoder._fast_headers[64] = True  # as when the stream defined it
        return outcome(decoder.decode_header, message)


def gob_types_defined(data: bytes) -> int:
    """How many type definitions (negative ids) an encoder's output holds."""
    count, pos = 0, 0
    while pos < len(data):
        length, start = gob.read_uint(data, pos)
        type_id, _ = gob.read_int(data, start)
        count += type_id < 0
        pos = start + length
    return count


class HeaderFastPathTests(SynchronousTestCase):
    @given(
        st.lists(
            st.tuples(
                st.text(max_size=130),
                st.integers(0, 300) | UINT64,
                st.sampled_from(["", "boom"]),
            ),
            min_size=1,
            max_size=5,
        )
    )
    @SOME
    def test_headers_encode_as_the_general_lines(self, headers: list[tuple[str, int, str]]) -> None:
        def run(general: bool) -> list[tuple[str, str]]:
            with general_paths() if general else contextlib.nullcontext():
                encoder = gob_codec.GobMessageEncoder()
                return [
                    outcome(encoder.encode, new_header((*header, 0, None)), 7, int)
                    for header in headers * 2
                ]

        self.assertEqual(run(False), run(True))

    def test_headers_off_the_common_form_are_read_as_the_general_path_reads_them(self) -> None:
        encoder = gob_codec.GobMessageEncoder()
        encoder.encode(Header("Arith.Multiply", 1), 7, int)
        head = encoder._head(Header("Arith.Multiply", 300))  # ... 01 fe 01 2c 00
        payload = head[1:]
        variants = [payload, payload[:-1] + b"\x01", payload[:-1] + b"\x02", payload + b"\x00"]
        variants += [payload[:-1], payload[:-4] + b"\xf7" + bytes(9) + b"\x00"]
        variants += [payload[:-4] + b"\xff\x05\x00", payload[:-5] + b"\x02\x01\x00"]
        variants += [payload[:4] + b"\x01\x05\x00", b"\xff\x80\x01\x80\x01" + bytes(130)]
        for data in variants:
            message = (64, data, 2)
            self.assertEqual(read_header(message, False), read_header(message, True), data)

    def test_seq_past_uint64_is_refused_by_both(self) -> None:
        encoder = gob_codec.GobMessageEncoder()
        encoder.encode(Header("A.B", 1), 7, int)
        encoder.encode(Header("A.B", 2), 7, int)  # the method's prefix cached
        with self.assertRaisesRegex(CodecError, "does not fit uint64"):
            encoder.encode(Header("A.B", 2**64), 7, int)


class DecoderFastPathTests(SynchronousTestCase):
    @given(flat_values(odd=False), EDITS, st.lists(st.integers(0, 400), max_size=4))
    @SOME
    def test_flat_bodies_decode_as_the_general_decoder(
        self,
        case: tuple[gob.StructOf, list[dict[str, Any]]],
        edits: list[tuple[int, int, int]],
        cuts: list[int],
    ) -> None:
        # Valid streams, and the same with bytes replaced, inserted or
        # removed: the same values, errors and budgets, however split.
        struct, values = case
        encoder = gob.Encoder()
        data = b"".join(encoder.encode(value, struct) for value in values)
        data += b"".join(encoder.encode(value, kind) for value, kind in [(5, int), (300, int)])
        data = mutate(data, edits)
        cuts = sorted(cut % (len(data) + 1) for cut in cuts)
        self.assertEqual(decode_stream(data, cuts, False), decode_stream(data, cuts, True))

    @given(
        st.lists(st.tuples(st.text(max_size=130), UINT64 | st.integers(0, 300)), max_size=4),
        EDITS,
    )
    @SOME
    def test_headers_decode_as_the_general_decoder(
        self, calls: list[tuple[str, int]], edits: list[tuple[int, int, int]]
    ) -> None:
        encoder = default_registry.get("application/gob").new_encoder()
        data = b"".join(
            encoder.encode(new_header((method, seq, "", 0, None)), {"Num1": seq % 100, "Num2": 2})
            for method, seq in [("Arith.Multiply", 1), *calls]
        )
        data = mutate(data, edits)
        self.assertEqual(
            decode_stream(data, [], False, headers=True),
            decode_stream(data, [], True, headers=True),
        )

    def test_frames_off_the_common_form_are_read_as_the_general_path_reads_them(self) -> None:
        # Type ids 0, negative (definitions), longer than two bytes; lengths
        # of 0, 1, past one byte, past the limit; frames not all here.
        frames = [b"\x02\xff\x00", b"\x02\x00\x00", b"\x03\xff\x01\x00", b"\x02\x01\x00"]
        frames += [b"\x03\xfe\x01\x00\x00", b"\x03\x81\x01\x00", b"\x01\x04", b"\x00"]
        frames += [b"\x04\x04\x00\x02", b"\x03\x04\x00\x02\x00", b"\xff\x80\x04\x00"]
        frames += [b"\x7f\x04\x00" + bytes(125), b"\xfe\x01\x00\x04\x00" + bytes(254)]
        frames += [b"\x03\x10\x00\x02"]  # id 8: an interface
        for frame in frames:
            for data in (frame, b"\x03\x04\x00\x02" + frame):
                self.assertEqual(
                    decode_stream(data, [], False), decode_stream(data, [], True), data
                )
                small = gob_codec.GobMessageDecoder(100)
                with general_paths():
                    general_small = gob_codec.GobMessageDecoder(100)
                self.assertEqual(
                    feed_all(small, data), feed_all(general_small, data, general=True), data
                )

    def test_flat_reader_is_taken(self) -> None:
        encoder = gob.Encoder()
        data = encoder.encode({"Num1": 6, "Num2": 300}) + encoder.encode(42, int)
        decoder = gob.Decoder(LIMIT)
        decoder.feed(data)
        with mock.patch.object(decoder, "_decode", side_effect=AssertionError("general path")):
            self.assertEqual(decoder.decode(decoder.next_message()), {"Num1": 6, "Num2": 300})
            # 300 took three bytes: a new int object, charged as the general path does.
            self.assertEqual(
                decoder.budget_left(),
                decoder.memory_budget(9)
                - sys.getsizeof({"Num1": 0, "Num2": 0})
                - _decoder._SCALAR_COSTS[2]
                - 3,
            )
            self.assertEqual(decoder.decode(decoder.next_message()), 42)

    def test_what_it_does_not_take_goes_to_the_general_path(self) -> None:
        encoder = gob.Encoder()
        decoder = gob.Decoder(LIMIT)
        decoder.feed(encoder.encode({"Num1": 6, "Num2": 7}))
        type_id, data, pos = decoder.next_message()  # type: ignore[misc]
        extra = (type_id, data + b"\x00", pos)
        with self.assertRaisesRegex(CodecError, "1 bytes of extra data"):
            decoder.decode(extra)
        with self.assertRaisesRegex(CodecError, "unexpected end"):
            decoder.decode((type_id, data[:-2], pos))
        with self.assertRaisesRegex(CodecError, "field number 5 out of range"):
            decoder.decode((type_id, data[:pos] + b"\x06\x02\x00", pos))
        # Not flat (a slice field): no reader.
        decoder.feed(encoder.encode({"List": [1, 2]}))
        message = decoder.next_message()
        self.assertEqual(decoder.decode(message), {"List": [1, 2]})
        self.assertIsNone(decoder._flat[message[0]])  # type: ignore[index]

    def test_a_struct_too_wide_for_its_budget_is_refused_by_both(self) -> None:
        # 100,000 int fields: the dict alone is over the 1 MiB floor of a
        # small message's budget.  The flat reader leaves it to the general path.
        struct = flat_struct([gob.INT] * 100_000)
        data = gob.Encoder().encode({"F0": 1}, struct)
        (fast,) = decode_stream_raw(data, general=False)
        self.assertEqual(fast[0], "CodecError")
        self.assertIn("value expands to far more than its message", fast[1])
        self.assertEqual([fast], decode_stream_raw(data, general=True))


def feed_all(
    decoder: gob_codec.GobMessageDecoder, data: bytes, general: bool = False
) -> list[tuple[str, str]]:
    """The messages (or the error) a decoder makes of ``data``."""
    with general_paths() if general else contextlib.nullcontext():
        decoder.feed(data)
        results = []
        while True:
            got = outcome(decoder.next_message)
            results.append(got)
            if got[0] != "value" or got[1] == "None":
                return results


def decode_stream_raw(data: bytes, general: bool) -> list[tuple[Any, ...]]:
    """Messages of a stream decoded with a bare gob.Decoder (no size limit to speak of)."""
    with general_paths() if general else contextlib.nullcontext():
        decoder = gob.Decoder(len(data) + 1)
        decoder.feed(data)
        results = []
        while (message := decoder.next_message()) is not None:
            results.append(outcome(decoder.decode, message))
        return results
