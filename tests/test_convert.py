"""Plain wire values <-> annotated Python types (txgeerpc._convert)."""

from __future__ import annotations

import dataclasses
from typing import Any, Optional, Union

import attrs
from twisted.trial.unittest import SynchronousTestCase

from txgeerpc import _convert
from txgeerpc._convert import MAX_DEPTH, ConversionError, convert_within, converter_for, zero_value
from txgeerpc._jsonvalue import dumps, loads
from txgeerpc.gob import Uint


@dataclasses.dataclass
class Args:
    Num1: int
    Num2: int


@dataclasses.dataclass
class Lists:
    Nums: list[int]


@dataclasses.dataclass
class Inner:
    Name: str
    Data: bytes


@dataclasses.dataclass
class Outer:
    Id: int
    Inner: Inner
    Maybe: Optional[Inner]  # noqa: UP045 - Optional[...] on purpose
    Items: list[Inner]
    ByKey: dict[int, Inner]


@dataclasses.dataclass
class Defaults:
    Count: int = 7
    Names: list[str] = dataclasses.field(default_factory=lambda: ["x"])
    Label: str = "dflt"


@dataclasses.dataclass
class Zeroes:
    Int: int
    F: float
    S: str
    B: bool
    Raw: bytes
    L: list[int]
    D: dict[str, int]
    Opt: int | None
    Sub: Args
    A: Any


@dataclasses.dataclass
class Node:
    Value: int
    Children: list[Node] = dataclasses.field(default_factory=list)
    Next: Node | None = None


@attrs.define
class AttrsArgs:
    Num1: int
    Num2: int = 0
    Tags: list[str] = attrs.Factory(list)


@attrs.frozen
class AttrsRenamed:
    first: int = attrs.field(metadata={"go_name": "Num1"})
    second: str = attrs.field(default="", metadata={"go_name": "Text"})


@dataclasses.dataclass
class Renamed:
    first: int = dataclasses.field(metadata={"go_name": "Num1"})
    blob: bytes = dataclasses.field(default=b"", metadata={"go_name": "Blob"})


@attrs.define
class AttrsPrivate:
    _secret: int = attrs.field(default=0, metadata={"go_name": "Secret"})
    Name: str = ""


@dataclasses.dataclass
class WithPair:
    Pair: tuple[int, str]


def convert(annotation: Any, value: Any) -> Any:
    return converter_for(annotation)(value)


class ScalarTests(SynchronousTestCase):
    def test_int_accepts_int(self) -> None:
        self.assertEqual(convert(int, 5), 5)
        self.assertEqual(convert(int, -(2**63)), -(2**63))
        self.assertEqual(convert(int, 2**63 - 1), 2**63 - 1)

    def test_int_is_go_int64(self) -> None:
        for value in (2**63, -(2**63) - 1, 10**5000):
            with self.subTest(bits=value.bit_length()):
                with self.assertRaises(ConversionError) as caught:
                    convert(int, value)
                self.assertIn("overflows int64", str(caught.exception))

    def test_int_refuses_float_bool_str(self) -> None:
        for value in (1.0, 1.5, True, False, "1", [1], {}):
            with self.subTest(value=value):
                self.assertRaises(ConversionError, convert, int, value)

    def test_int_error_text(self) -> None:
        with self.assertRaises(ConversionError) as caught:
            convert(int, "x")
        self.assertEqual(str(caught.exception), "expected int, got str 'x'")

    def test_float_accepts_int(self) -> None:
        value = convert(float, 3)
        self.assertEqual(value, 3.0)
        self.assertIs(type(value), float)
        self.assertEqual(convert(float, 2.5), 2.5)

    def test_float_refuses_bool_and_str(self) -> None:
        for value in (True, False, "1.5", [1.0]):
            with self.subTest(value=value):
                self.assertRaises(ConversionError, convert, float, value)

    def test_float_from_int_too_large_is_a_conversion_error(self) -> None:
        # json.loads("1" + "0"*400) is an int; float() of it overflows.
        self.assertRaises(ConversionError, convert, float, 10**400)

    def test_str_and_bool(self) -> None:
        self.assertEqual(convert(str, "a"), "a")
        self.assertIs(convert(bool, True), True)
        self.assertRaises(ConversionError, convert, str, 1)
        self.assertRaises(ConversionError, convert, str, b"a")
        self.assertRaises(ConversionError, convert, bool, 1)
        self.assertRaises(ConversionError, convert, bool, "true")

    def test_none_gives_zero_value(self) -> None:
        self.assertEqual(convert(int, None), 0)
        self.assertEqual(convert(float, None), 0.0)
        self.assertEqual(convert(str, None), "")
        self.assertIs(convert(bool, None), False)
        self.assertEqual(convert(bytes, None), b"")
        self.assertEqual(convert(list[int], None), [])
        self.assertEqual(convert(dict[str, int], None), {})
        self.assertEqual(convert(Args, None), Args(0, 0))

    def test_bytes_from_base64(self) -> None:
        self.assertEqual(convert(bytes, "AP8="), b"\x00\xff")
        self.assertEqual(convert(bytes, ""), b"")
        self.assertEqual(convert(bytes, b"raw"), b"raw")

    def test_bytes_refuses_bad_base64(self) -> None:
        for value in ("AP8", "A*8=", "é", 5, [0, 255]):
            with self.subTest(value=value):
                self.assertRaises(ConversionError, convert, bytes, value)

    def test_any_is_identity(self) -> None:
        value = {"a": [1, None]}
        self.assertIs(convert(Any, value), value)


class ContainerTests(SynchronousTestCase):
    def test_list_of_int(self) -> None:
        self.assertEqual(convert(list[int], [1, 2, 3]), [1, 2, 3])
        self.assertRaises(ConversionError, convert, list[int], "123")
        self.assertRaises(ConversionError, convert, list[int], {"0": 1})

    def test_list_error_names_index(self) -> None:
        with self.assertRaises(ConversionError) as caught:
            convert(list[int], [1, 2, "x"])
        self.assertEqual(str(caught.exception), "[2]: expected int, got str 'x'")

    def test_variadic_tuple(self) -> None:
        value = convert(tuple[int, ...], [1, 2])
        self.assertEqual(value, (1, 2))
        self.assertIs(type(value), tuple)

    def test_fixed_tuple(self) -> None:
        self.assertEqual(convert(tuple[int, str], [1, "a"]), (1, "a"))
        self.assertRaises(ConversionError, convert, tuple[int, str], [1])
        self.assertRaises(ConversionError, convert, tuple[int, str], ["a", 1])

    def test_bare_tuple_gives_a_tuple(self) -> None:
        value = convert(tuple, [1, "a"])
        self.assertEqual(value, (1, "a"))
        self.assertIs(type(value), tuple)

    def test_fixed_tuple_zero_value(self) -> None:
        # None and a missing field take Go's zero value of a [2]T-like shape.
        self.assertEqual(convert(tuple[int, str], None), (0, ""))
        self.assertEqual(convert(WithPair, {}), WithPair((0, "")))

    def test_dict_str_keys(self) -> None:
        self.assertEqual(convert(dict[str, int], {"a": 1}), {"a": 1})
        self.assertRaises(ConversionError, convert, dict[str, int], [["a", 1]])

    def test_dict_int_keys_from_strings(self) -> None:
        self.assertEqual(convert(dict[int, str], {"1": "a", "-20": "b"}), {1: "a", -20: "b"})

    def test_dict_int_keys_refuse_non_integers(self) -> None:
        for key in ("x", "1.5", ""):
            with self.subTest(key=key):
                self.assertRaises(ConversionError, convert, dict[int, str], {key: "a"})

    def test_dict_int_keys_are_strict_decimal(self) -> None:
        # Go parses map[int]T keys with strconv.ParseInt(key, 10, 64): no spaces,
        # no underscores, no non-ASCII digits.
        for key in ("1_0", " 2", "3 ", "\u0661"):
            with self.subTest(key=key):
                self.assertRaises(ConversionError, convert, dict[int, str], {key: "a"})

    def test_dict_error_names_key(self) -> None:
        with self.assertRaises(ConversionError) as caught:
            convert(dict[str, int], {"k": "v"})
        self.assertIn("'k'", caught.exception.path)
        self.assertIn("expected int, got str 'v'", str(caught.exception))

    def test_optional(self) -> None:
        self.assertIsNone(convert(Optional[int], None))  # noqa: UP045
        self.assertEqual(convert(int | None, 3), 3)
        self.assertRaises(ConversionError, convert, int | None, "3")

    def test_union(self) -> None:
        self.assertEqual(convert(Union[int, str], "a"), "a")  # noqa: UP007
        self.assertEqual(convert(int | str, 4), 4)
        self.assertIs(convert(int | bool, True), True)
        self.assertRaises(ConversionError, convert, int | str, 1.5)


class StructTests(SynchronousTestCase):
    def test_dataclass_exact_names(self) -> None:
        self.assertEqual(convert(Args, {"Num1": 1, "Num2": 2}), Args(1, 2))

    def test_case_insensitive_names(self) -> None:
        self.assertEqual(convert(Args, {"num1": 1, "NUM2": 2}), Args(1, 2))

    def test_exact_name_wins_over_folded(self) -> None:
        self.assertEqual(convert(Args, {"num1": 9, "Num1": 1, "Num2": 2}), Args(1, 2))
        self.assertEqual(convert(Args, {"Num1": 1, "num1": 9, "Num2": 2}), Args(1, 2))

    def test_unknown_keys_ignored(self) -> None:
        self.assertEqual(convert(Args, {"Num1": 1, "Num2": 2, "Num3": 3}), Args(1, 2))

    def test_missing_fields_take_defaults(self) -> None:
        self.assertEqual(convert(Defaults, {}), Defaults(7, ["x"], "dflt"))
        self.assertEqual(convert(Defaults, {"label": "y"}), Defaults(7, ["x"], "y"))

    def test_missing_fields_take_go_zero_values(self) -> None:
        self.assertEqual(
            convert(Zeroes, {}), Zeroes(0, 0.0, "", False, b"", [], {}, None, Args(0, 0), None)
        )

    def test_null_fields_take_zero_values(self) -> None:
        value = convert(Args, {"Num1": None, "Num2": 4})
        self.assertEqual(value, Args(0, 4))

    def test_error_names_struct_and_field(self) -> None:
        with self.assertRaises(ConversionError) as caught:
            convert(Args, {"Num1": "x", "Num2": 2})
        self.assertEqual(str(caught.exception), "Args.Num1: expected int, got str 'x'")

    def test_error_names_field_matched_case_insensitively(self) -> None:
        with self.assertRaises(ConversionError) as caught:
            convert(Args, {"num1": 1, "num2": 2.5})
        self.assertIn("Num2", str(caught.exception))
        self.assertIn("expected int, got float 2.5", str(caught.exception))

    def test_error_path_through_list(self) -> None:
        with self.assertRaises(ConversionError) as caught:
            convert(Lists, {"Nums": [1, True]})
        self.assertEqual(str(caught.exception), "Lists.Nums[1]: expected int, got bool True")

    def test_error_path_through_nested_struct(self) -> None:
        with self.assertRaises(ConversionError) as caught:
            convert(Outer, {"Id": 1, "Items": [{"Name": "a"}, {"Name": 5}]})
        text = str(caught.exception)
        self.assertIn("Outer.Items[1]", text)
        self.assertIn("Name", text)
        self.assertTrue(text.endswith("expected str, got int 5"), text)

    def test_not_an_object(self) -> None:
        for value in ([1, 2], "x", 3):
            with self.subTest(value=value):
                self.assertRaises(ConversionError, convert, Args, value)

    def test_instance_passes_through(self) -> None:
        args = Args(1, 2)
        self.assertIs(convert(Args, args), args)

    def test_nested(self) -> None:
        value = convert(
            Outer,
            {
                "Id": 1,
                "Inner": {"Name": "n", "Data": "aGk="},
                "Maybe": None,
                "Items": [{"name": "m"}],
                "ByKey": {"3": {"Name": "k", "Data": ""}},
            },
        )
        self.assertEqual(
            value,
            Outer(1, Inner("n", b"hi"), None, [Inner("m", b"")], {3: Inner("k", b"")}),
        )

    def test_self_referencing(self) -> None:
        value = convert(
            Node,
            {"Value": 1, "Children": [{"Value": 2, "Next": {"Value": 3}}, {"value": 4}]},
        )
        self.assertEqual(value, Node(1, [Node(2, [], Node(3)), Node(4)]))

    def test_attrs_class(self) -> None:
        self.assertEqual(convert(AttrsArgs, {"num1": 1}), AttrsArgs(1, 0, []))
        self.assertEqual(
            convert(AttrsArgs, {"Num1": 1, "Num2": 2, "Tags": ["a"]}), AttrsArgs(1, 2, ["a"])
        )
        with self.assertRaises(ConversionError) as caught:
            convert(AttrsArgs, {"Num1": "x"})
        self.assertEqual(str(caught.exception), "AttrsArgs.Num1: expected int, got str 'x'")

    def test_go_name_metadata(self) -> None:
        self.assertEqual(convert(Renamed, {"Num1": 4, "Blob": "AQ=="}), Renamed(4, b"\x01"))
        self.assertEqual(convert(Renamed, {"num1": 4}), Renamed(4, b""))
        self.assertEqual(convert(Renamed, {"first": 4}), Renamed(0, b""))
        self.assertEqual(convert(AttrsRenamed, {"NUM1": 5, "text": "t"}), AttrsRenamed(5, "t"))

    def test_go_name_in_error_path(self) -> None:
        with self.assertRaises(ConversionError) as caught:
            convert(Renamed, {"Num1": "x"})
        self.assertEqual(str(caught.exception), "Renamed.Num1: expected int, got str 'x'")

    def test_attrs_private_field_uses_init_alias(self) -> None:
        # attrs strips the leading underscore from __init__ parameters.
        self.assertEqual(
            convert(AttrsPrivate, {"Secret": 3, "Name": "n"}), AttrsPrivate(secret=3, Name="n")
        )

    def test_zero_value_of_struct(self) -> None:
        self.assertEqual(zero_value(Args), Args(0, 0))
        self.assertEqual(zero_value(int | None), None)
        self.assertEqual(zero_value(list[int]), [])


def plain(value: Any) -> Any:
    """What a value looks like on the JSON wire, parsed back."""
    return loads(dumps(value).encode())


class WireShapeTests(SynchronousTestCase):
    def test_dataclass_to_dict_with_go_names(self) -> None:
        self.assertEqual(plain(Renamed(1, b"hi")), {"Num1": 1, "Blob": "aGk="})
        self.assertEqual(plain(AttrsRenamed(1, "t")), {"Num1": 1, "Text": "t"})

    def test_nested(self) -> None:
        value = Outer(1, Inner("n", b"\x00"), None, [Inner("m", b"")], {3: Inner("k", b"")})
        self.assertEqual(
            plain(value),
            {
                "Id": 1,
                "Inner": {"Name": "n", "Data": "AA=="},
                "Maybe": None,
                "Items": [{"Name": "m", "Data": ""}],
                "ByKey": {"3": {"Name": "k", "Data": ""}},
            },
        )

    def test_bytes_and_tuples(self) -> None:
        self.assertEqual(plain(b"\xff"), "/w==")
        self.assertEqual(plain(bytearray(b"\x01")), "AQ==")
        self.assertEqual(plain((1, (2, b""))), [1, [2, ""]])

    def test_scalars_unchanged(self) -> None:
        for value in (1, 1.5, "s", True, None):
            with self.subTest(value=value):
                self.assertEqual(plain(value), value)


class RoundTripTests(SynchronousTestCase):
    def assertRoundTrip(self, annotation: Any, value: Any) -> None:
        back = converter_for(annotation)(plain(value))
        self.assertEqual(back, value)
        self.assertIs(type(back), type(value))

    def test_samples(self) -> None:
        samples: list[tuple[Any, Any]] = [
            (int, -3),
            (float, 0.1),
            (str, "é"),
            (bool, False),
            (bytes, b"\x00\x01\xfe"),
            (list[int], [1, 2]),
            (tuple[int, ...], (1, 2)),
            (tuple[int, str], (1, "a")),
            (dict[int, str], {1: "a", -5: "b"}),
            (dict[str, list[bytes]], {"k": [b"x", b""]}),
            (Optional[Args], Args(1, 2)),  # noqa: UP045
            (Args, Args(1, 2)),
            (Renamed, Renamed(3, b"z")),
            (AttrsRenamed, AttrsRenamed(3, "z")),
            (AttrsArgs, AttrsArgs(1, 2, ["t"])),
            (Outer, Outer(1, Inner("n", b"\x00"), Inner("o", b""), [], {2: Inner("k", b"k")})),
            (Node, Node(1, [Node(2, [Node(3)])], Node(4, [], Node(5)))),
        ]
        for annotation, value in samples:
            with self.subTest(annotation=annotation):
                self.assertRoundTrip(annotation, value)


@dataclasses.dataclass
class Flat:
    Count: int
    Size: Uint
    Ratio: float
    Name: str
    On: bool
    Note: str = "none"


class FlatStructTests(SynchronousTestCase):
    """A struct of scalar fields takes a fast path (convert_flat) once its
    plan is built; it must give what the general path gives, and charge the
    same."""

    def setUp(self) -> None:
        self.convert = converter_for(Flat)
        self.convert({})  # the first conversion builds the plan

    def test_exact_names(self) -> None:
        value = {"Count": -3, "Size": 2**64 - 1, "Ratio": 1, "Name": "n", "On": True, "Note": "x"}
        self.assertEqual(self.convert(value), Flat(-3, 2**64 - 1, 1.0, "n", True, "x"))

    def test_nulls_case_folded_missing_and_defaulted_fields(self) -> None:
        self.assertEqual(
            self.convert({"Count": None, "size": 5, "RATIO": 0.5, "Name": None}),
            Flat(0, 5, 0.5, "", False, "none"),
        )

    def test_errors_name_the_field(self) -> None:
        cases = [
            ({"Count": 2**63}, "Flat.Count: number 9223372036854775808 overflows int64"),
            ({"Count": True}, "Flat.Count: expected int, got bool"),
            ({"Count": 1.5}, "Flat.Count: expected int, got float"),
            ({"Count": 1, "Size": -1}, "Flat.Size: number -1 does not fit uint64"),
            ({"Count": 1, "Size": 1, "Ratio": 1, "Name": "a", "On": 1}, "Flat.On:"),
        ]
        for value, text in cases:
            with self.assertRaises(ConversionError) as caught:
                self.convert(value)
            self.assertTrue(str(caught.exception).startswith(text), str(caught.exception))

    def test_charged_as_before(self) -> None:
        full = {"Count": 1, "Size": 1, "Ratio": 1.0, "Name": "a", "On": True, "Note": "b"}
        folded = {"count": 1, "size": 1, "ratio": 1.0, "name": "a", "on": True, "note": "b"}
        self.assertEqual(
            convert_within(self.convert, full, 10_000)[1],
            convert_within(self.convert, folded, 10_000)[1],  # the general path
        )
        with self.assertRaises(ConversionError):
            convert_within(self.convert, full, 10)

    def test_too_deep_still_refused(self) -> None:
        # As if it were the innermost of MAX_DEPTH nested containers.
        depth = _convert._depth
        depth.level = MAX_DEPTH
        try:
            with self.assertRaises(ConversionError) as caught:
                self.convert({"Count": 1})
        finally:
            depth.level = 0
        self.assertIn("nested more than", str(caught.exception))
