"""
``_txgeerpc.Describe`` and how the CLI turns JSON into gob values with it.
"""

from __future__ import annotations

import json
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from txgeerpc import Server, gob
from txgeerpc._cli import _typed_argument
from txgeerpc._introspect import (
    DESCRIBE,
    PROBE,
    JSONMismatch,
    from_json,
    printable,
    schema,
    type_from_schema,
)
from txgeerpc._jsonvalue import dumps
from txgeerpc.codec._gob import HEADER
from txgeerpc.errors import ServiceAlreadyDefined
from txgeerpc.examples import Args, Point, Record, Records, register_examples
from txgeerpc.testing import connect_in_memory

from ._helpers import checked_clock


class DescribeTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = checked_clock(self)
        self.server = Server(self.clock)
        register_examples(self.server)

    def describe(self, server: Server) -> Any:
        connection = connect_in_memory(server)
        self.addCleanup(connection.close)
        d = connection.client.call(DESCRIBE, PROBE, argument_type=HEADER)
        connection.flush()
        return json.loads(self.successResultOf(d))

    def test_describes_every_method_and_is_not_a_listed_service(self) -> None:
        self.assertEqual(sorted(self.server.services), ["Arith", "Ctx", "Foo", "Records"])
        description = self.describe(self.server)
        self.assertEqual(sorted(description["Services"]), ["Arith", "Ctx", "Foo", "Records"])
        self.assertEqual(
            description["Services"]["Foo"]["Sum"],
            {
                "Signature": "Sum(Args) -> int",
                "Argument": {"Struct": "txgeerpc.examples.Args"},
                "Reply": "int",
            },
        )
        self.assertEqual(
            description["Types"]["txgeerpc.examples.Args"],
            {"Name": "Args", "Fields": [["Num1", "int"], ["Num2", "int"]]},
        )
        record = dict(description["Types"]["txgeerpc.examples.Record"]["Fields"])
        self.assertEqual(record["ID"], "uint")
        self.assertEqual(record["Weight"], "int")  # the Go name of `weight`
        self.assertEqual(record["Child"], {"Struct": "txgeerpc.examples.Record"})
        self.assertEqual(record["Counts"], {"Map": ["string", "int"]})
        self.assertEqual(description["Services"]["Records"]["Keys"]["Reply"], {"Slice": "string"})

    def test_the_name_is_reserved_and_introspection_can_be_off(self) -> None:
        with self.assertRaises(ServiceAlreadyDefined):
            self.server.register(Records(), name="_txgeerpc")
        quiet = Server(self.clock, introspection=False)
        register_examples(quiet)
        connection = connect_in_memory(quiet)
        self.addCleanup(connection.close)
        d = connection.client.call(DESCRIBE, PROBE, argument_type=HEADER)
        connection.flush()
        self.assertIn("can't find service _txgeerpc", str(self.failureResultOf(d).value))


class SchemaTests(SynchronousTestCase):
    def test_schema_round_trip_encodes_the_same_bytes(self) -> None:
        types: dict[str, Any] = {}
        description = schema(gob.gob_type_for(Record), types)
        rebuilt = type_from_schema(json.loads(json.dumps(description)), types)
        value = Record(Name="x", ID=5, Points=[Point(1, 2)], Child=Record(Name="c"), weight=2)
        as_mapping = json.loads(dumps(printable(_plain(value))))  # what the CLI is given
        converted = from_json(rebuilt, as_mapping)
        self.assertEqual(gob.Encoder().encode(converted, rebuilt), gob.Encoder().encode(value))

    def test_from_json_conversions(self) -> None:
        record = type_from_schema(*_described(Record))
        converted = from_json(
            record,
            {"name": "n", "Data": "AAH/", "Z": [1.5, -2], "Counts": {"a": 1}, "ID": 7},
        )
        self.assertEqual(converted["Name"], "n")  # field names match case-insensitively
        self.assertEqual(converted["Data"], b"\x00\x01\xff")
        self.assertEqual(converted["Z"], complex(1.5, -2))
        int_keys = type_from_schema({"Map": ["int", "string"]}, {})
        self.assertEqual(from_json(int_keys, {"7": "seven"}), {7: "seven"})

    def test_from_json_mismatches_say_where(self) -> None:
        record = type_from_schema(*_described(Record))
        for value, message in [
            ({"ID": "x"}, 'argument.ID: expected an integer, got "x"'),
            ({"Data": "***"}, 'argument.Data: "***" is not base64'),
            ({"Points": [{"X": 1.5}]}, "argument.Points[0].X: expected an integer, got 1.5"),
            ({"Bogus": 1}, "argument: Record has no field 'Bogus'"),
        ]:
            with self.assertRaises(JSONMismatch) as caught:
                from_json(record, value)
            self.assertIn(message, str(caught.exception))


def _described(annotation: Any) -> tuple[Any, dict[str, Any]]:
    types: dict[str, Any] = {}
    return schema(gob.gob_type_for(annotation), types), types


def _plain(value: Any) -> Any:
    """A Record as the dict the CLI would be given (bytes as base64 by printable/dumps)."""
    import dataclasses

    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {
            (field.metadata.get("go_name", field.name)): _plain(getattr(value, field.name))
            for field in dataclasses.fields(value)
        }
    if isinstance(value, list):
        return [_plain(item) for item in value]
    return value


class TypedArgumentTests(SynchronousTestCase):
    """The CLI asks a txgeerpc server for the method's type; others get the JSON shape."""

    def setUp(self) -> None:
        self.clock = checked_clock(self)

    def typed(self, server: Server, method: str, argument: Any) -> tuple[Any, Any]:
        connection = connect_in_memory(server)
        self.addCleanup(connection.close)
        d = connection.client.call(DESCRIBE, PROBE, argument_type=HEADER)
        connection.flush()
        described = self.successResultOf(d.addCallbacks(json.loads, lambda failure: None))
        return _typed_argument(described, method, argument, "application/gob")

    def test_declared_types_from_a_txgeerpc_server(self) -> None:
        server = Server(self.clock)
        register_examples(server)
        value, kind = self.typed(server, "Records.Echo", {"ID": 18446744073709551615})
        self.assertEqual(value, {"ID": 2**64 - 1})
        self.assertEqual(dict((name, sub) for name, _, sub in kind.fields)["ID"].name, "uint")
        zero, kind = self.typed(server, "Foo.Sum", None)
        self.assertEqual(gob.Encoder().encode(zero, kind), gob.Encoder().encode(Args()))

    def test_json_shape_from_a_server_that_does_not_describe_itself(self) -> None:
        server = Server(self.clock, introspection=False)
        register_examples(server)
        self.assertEqual(self.typed(server, "Foo.Sum", {"Num1": 1}), ({"Num1": 1}, None))
        self.assertEqual(self.typed(server, "Foo.Sum", None), ({}, gob.EMPTY))
