"""
JSON parsing and conversion to declared types under the memory budget
(issue 13, item 1): what a value's Python objects take is charged, before
they are made, against the budget of its message (8x + 1 MiB, at most
256 MiB), shared by parsing and conversion.
"""

from __future__ import annotations

import gc
import json
import tracemalloc
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from tests._helpers import JSON_OPTION, checked_clock, connected_server, json_request
from tests.integration._wide_service import Wide, Wides
from txgeerpc import _jsonsplit
from txgeerpc._budget import memory_budget
from txgeerpc._convert import ConversionError, convert_within, converter_for
from txgeerpc._jsonsplit import InvalidJSON, JSONValueSplitter
from txgeerpc._jsonvalue import UPPER_COST, parse_cost
from txgeerpc.codec import JSONCodec
from txgeerpc.errors import CodecError
from txgeerpc.server import Server


def traced(function: Any, *args: Any) -> tuple[Any, int, int]:
    """(result or the exception raised, bytes still allocated, peak bytes),
    with no garbage collection in between to blur them."""
    gc.disable()
    tracemalloc.start()
    try:
        try:
            result = function(*args)
        except Exception as error:
            result = error
        current, peak = tracemalloc.get_traced_memory()
        return result, current, peak
    finally:
        tracemalloc.stop()
        gc.enable()


def empty_objects(count: int) -> bytes:
    return b"[" + b",".join([b"{}"] * count) + b"]"


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=4), children, max_size=4)
    ),
    max_leaves=12,
)


class ParseCostTests(SynchronousTestCase):
    @settings(max_examples=60, deadline=None)
    @given(json_values, st.integers(300, 1000))
    def test_cost_bounds_what_parsing_allocates(self, element: Any, count: int) -> None:
        # A list of many copies, parsed once before it is traced and traced
        # thrice, so that tracemalloc's noise (first-call caches) does not matter.
        text = json.dumps([element] * count, ensure_ascii=False)
        json.loads(text)
        current = min(traced(json.loads, text)[1] for _ in range(3))
        cost = parse_cost(text.encode(), text)
        self.assertLessEqual(current, cost + 4096, text[:200])
        self.assertLessEqual(cost, memory_budget(0) + UPPER_COST * len(text.encode()))

    def test_known_shapes(self) -> None:
        for element in (b"{}", b"[]", b'{"a":1}', b'"ab"', b"300", b"1.5", b'{"a":{}}'):
            text = (b"[" + b",".join([element] * 20_000) + b"]").decode()
            _, current, _ = traced(json.loads, text)
            cost = parse_cost(text.encode(), text)
            self.assertLessEqual(current, cost, element)
            self.assertLessEqual(cost, 2 * current + 4 * len(text), element)  # not absurd


class SplitterBudgetTests(SynchronousTestCase):
    def test_empty_objects_refused_before_they_are_parsed(self) -> None:
        # The finding's JSON twin: 300 KB of {} parsed to ~7 MB of dicts.
        body = empty_objects(100_000)
        splitter = JSONValueSplitter(4 << 20)
        splitter.feed(body + b"\n" + b'{"next":1}\n')
        result, _, peak = traced(splitter.next_parsed)
        assert isinstance(result, InvalidJSON), result
        self.assertEqual(
            result.error,
            f"value expands to far more than its message "
            f"(over {memory_budget(len(body))} bytes of memory)",
        )
        self.assertLess(peak, 6 * len(body))  # copies of the text; parsed: 24x
        # The stream goes on.
        self.assertEqual(splitter.next_parsed(), ({"next": 1},))

    def test_in_pieces_too(self) -> None:
        body = empty_objects(100_000) + b"\n"
        splitter = JSONValueSplitter(4 << 20)
        results = []
        for start in range(0, len(body), 4096):
            splitter.feed(body[start : start + 4096])
            results.append(splitter.next_parsed())
        self.assertTrue(all(result is None for result in results[:-1]))
        self.assertIsInstance(results[-1], InvalidJSON)

    def test_within_budget_parses_and_leaves_the_rest_for_conversion(self) -> None:
        for body in (empty_objects(10_000), b'"' + b"x" * 1_000_000 + b'"', b"[1,2,3]"):
            splitter = JSONValueSplitter(4 << 20)
            splitter.feed(body + b"\n")
            self.assertEqual(splitter.next_parsed(), (json.loads(body),))
            left = splitter.budget_left()
            self.assertGreater(left, 0)
            self.assertLessEqual(left, memory_budget(len(body)) - len(body))

    def test_codec_error_names_the_budget(self) -> None:
        decoder = JSONCodec().new_decoder(4 << 20)
        decoder.feed(empty_objects(100_000) + b"\n")
        with self.assertRaises(CodecError) as caught:
            decoder.decode_body(decoder.next_message())
        self.assertIn("json: value expands to far more than its message", str(caught.exception))

    def test_a_large_value_in_pieces_is_scanned_once(self) -> None:
        # 4 MiB in 64 KiB pieces: json's scanner is tried once (on the first
        # piece) and the pending text is not rescanned on every feed.
        body = b"[" + b",".join([b'{"Num1":1,"Num2":2}'] * 200_000) + b"]\n"
        calls = []
        original = _jsonsplit.scan_once

        def counting(text: str, start: int) -> Any:
            calls.append(len(text))
            return original(text, start)

        self.patch(_jsonsplit, "scan_once", counting)
        splitter = JSONValueSplitter(8 << 20)
        for start in range(0, len(body), 1 << 16):
            splitter.feed(body[start : start + (1 << 16)])
            result = splitter.next_parsed()
        self.assertIsInstance(result, InvalidJSON)  # ~24x: over its budget
        self.assertLessEqual(len(calls), 1)


class ConversionBudgetTests(SynchronousTestCase):
    def test_missing_fields_are_charged(self) -> None:
        # 1,000 {} (3 KB) to list[Wide]: 10^6 zero slots, ~26 MB.
        value = [{}] * 1000
        result, _, peak = traced(
            convert_within,
            converter_for(list[Wide]),
            value,
            memory_budget(3000),  # type: ignore[valid-type]
        )
        assert isinstance(result, ConversionError), result
        self.assertIn("value expands to far more than its message", str(result))
        self.assertLess(peak, 2 * memory_budget(3000))

    def test_within_budget_converts_and_reports_what_is_left(self) -> None:
        converted, left = convert_within(converter_for(list[Wide]), [{}] * 3, 1 << 20)  # type: ignore[valid-type]
        self.assertEqual(len(converted), 3)
        self.assertLess(left, (1 << 20) - 3 * 1000 * 8)
        # Outside convert_within, nothing is charged.
        self.assertEqual(len(converter_for(list[Wide])([{}] * 100)), 100)  # type: ignore[valid-type]

    def test_server_answers_an_error_and_goes_on(self) -> None:
        server = Server(checked_clock(self))
        server.register(Wides())
        protocol, transport = connected_server(self, server)
        protocol.dataReceived(JSON_OPTION)
        body = b"[" + b",".join([b"{}"] * 1000) + b"]"
        protocol.dataReceived(json_request("Wides.Count", 1, body))
        protocol.dataReceived(json_request("Wides.Count", 2, b"[{},{}]"))
        lines = transport.value().split(b"\n")
        first = json.loads(lines[0])
        self.assertTrue(
            first["Error"].startswith("rpc server: bad argument for Wides.Count: "), first
        )
        self.assertIn("value expands to far more than its message", first["Error"])
        self.assertEqual((json.loads(lines[2])["Error"], json.loads(lines[3])), ("", 2))
        self.assertFalse(transport.disconnecting)


string_free = st.recursive(
    st.integers(-1000, 1000) | st.just([]) | st.just({}),
    lambda children: st.lists(children, max_size=30) | st.dictionaries(st.just("k"), children),
    max_leaves=200,
)


class SkimTests(SynchronousTestCase):
    """Long runs without strings are skimmed in C passes: the values cut out
    are exactly those of a byte-by-byte scan, however the stream is split."""

    @settings(max_examples=60, deadline=None)
    @given(st.lists(string_free, min_size=1, max_size=4), st.integers(1, 5000), st.data())
    def test_values_come_out_whole_however_split(
        self, values: list[Any], piece: int, data: st.DataObject
    ) -> None:
        texts = [json.dumps(value, separators=(",", ":")).encode() for value in values]
        separators = [data.draw(st.sampled_from([b"", b" ", b"\n"])) for _ in texts]
        # A top-level number needs a byte after it to be known complete.
        ends = [s if t[:1] in b"[{" else b"\n" for t, s in zip(texts, separators, strict=True)]
        stream = b"".join(t + end for t, end in zip(texts, ends, strict=True))
        splitter = JSONValueSplitter(1 << 20)
        out = []
        for start in range(0, len(stream), piece):
            splitter.feed(stream[start : start + piece])
            while (raw := splitter.next_value()) is not None:
                out.append(raw)
        self.assertEqual(out, texts)

    def test_long_runs(self) -> None:
        value = [[{}] * 300, [[1, 2, [3]]] * 200, {"k": [[]] * 500}]
        text = json.dumps(value, separators=(",", ":")).encode()
        splitter = JSONValueSplitter(1 << 20)
        for start in range(0, len(text), 700):
            splitter.feed(text[start : start + 700])
        splitter.feed(text + b"\n")
        self.assertEqual([splitter.next_value(), splitter.next_value()], [text, text])
