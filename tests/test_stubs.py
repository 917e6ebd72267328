"""
``txgeerpc._stubs``: typed client modules, JSON Schema and Go declarations
from a server's description, and descriptions from a Go debug page.
"""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path
from typing import Any

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from txgeerpc._convert import converter_for
from txgeerpc._introspect import Introspection
from txgeerpc._stubs import (
    from_go_debug_page,
    go_structs,
    go_type,
    json_schema,
    python_stubs,
    takes_argument,
)
from txgeerpc.examples import register_examples
from txgeerpc.server import Server

VECTOR = Path(__file__).parent / "vectors" / "07-http-debug-page.txt"


def go_debug_page() -> str:
    """The HTML body a Go GeeRPC server sent, from the recorded vector."""
    lines = VECTOR.read_text().split("--- s2c, as text lines ---", 1)[1].splitlines()
    text = "".join(json.loads(line.strip()) for line in lines if line.strip().startswith('"'))
    return text.split("\r\n\r\n", 1)[1]


def examples_description() -> dict[str, Any]:
    server = Server(Clock())
    register_examples(server)
    return json.loads(Introspection(server.services).Describe())  # type: ignore[no-any-return]


class GoDebugPageTests(SynchronousTestCase):
    def test_signatures_become_a_description(self) -> None:
        description = from_go_debug_page(go_debug_page())
        services = description["Services"]
        self.assertEqual(
            {name: sorted(methods) for name, methods in services.items()},
            {
                "Debug": ["NumGoroutine", "Stacks", "Whoami"],
                "Arith": ["Divide", "Echo", "Fail", "Multiply"],
                "Foo": ["Sleep", "Sum"],
            },
        )
        self.assertEqual(
            services["Arith"]["Divide"],
            {
                "Signature": "Divide(svc.Args, *int) error",
                "Argument": {"Unknown": "svc.Args"},
                "Reply": "int",
            },
        )
        self.assertEqual(services["Arith"]["Echo"]["Argument"], "string")
        self.assertEqual(services["Arith"]["Echo"]["Reply"], "string")

    def test_go_types(self) -> None:
        self.assertEqual(go_type("map[string]int"), {"Map": ["string", "int"]})
        self.assertEqual(go_type("*[]svc.Point"), {"Slice": {"Unknown": "svc.Point"}})
        self.assertEqual(go_type("[2]uint64"), {"Array": "uint", "Len": 2})
        self.assertEqual(go_type("[]uint8"), "[]byte")
        self.assertEqual(
            go_type("map[int]map[string]float32"), {"Map": ["int", {"Map": ["string", "float64"]}]}
        )
        self.assertEqual(go_type("interface {}"), "interface {}")

    def test_a_page_without_services_is_refused(self) -> None:
        with self.assertRaises(ValueError):
            from_go_debug_page("<html>nothing here</html>")

    def test_unknown_structs_are_dicts_with_a_comment(self) -> None:
        text = python_stubs(
            from_go_debug_page(go_debug_page()), class_name="GoClient", source="a Go page"
        )
        self.assertIn(
            "    def Divide(self, argument: dict[str, Any], *, timeout: float | None = None)"
            " -> Deferred[int]:\n"
            '        """``Divide(svc.Args, *int) error``"""\n'
            "        # Go svc.Args: its fields are unknown, send a dict\n",
            text,
        )
        compile(text, "go_client.py", "exec")


def _load(case: SynchronousTestCase, text: str) -> Any:
    """The module ``text`` is, in ``sys.modules`` for the test (dataclasses
    and type hints look for it there)."""
    module = types.ModuleType("_generated_stub")
    sys.modules[module.__name__] = module
    case.addCleanup(sys.modules.pop, module.__name__)
    exec(compile(text, "_generated_stub.py", "exec"), module.__dict__)
    return module


class PythonStubsTests(SynchronousTestCase):
    def test_structs_become_dataclasses_with_gob_types(self) -> None:
        text = python_stubs(examples_description(), class_name="C", source="s")
        self.assertIn("@dataclass\nclass Args:", text)
        for line in (
            "    ID: Uint = 0",
            '    Data: bytes = b""',
            "    Points: list[Point] = field(default_factory=list)",
            "    Child: Record | None = None",
            "    Z: complex = 0j",
            "    Extra: Any = None",
        ):
            self.assertIn(line + "\n", text)

    def test_methods_convert_their_replies(self) -> None:
        text = python_stubs(examples_description(), class_name="C", source="s")
        self.assertIn(
            "    def Keys(\n"
            "        self, argument: dict[str, int], *, timeout: float | None = None\n"
            "    ) -> Deferred[list[str]]:",
            text,
        )
        self.assertIn("            result_type=list[str],\n", text)
        self.assertIn("            argument_type=dict[str, int],\n", text)
        # A method returning None gives Deferred[None].
        self.assertRegex(text, r"def Fail\(self, argument: str, .*\) -> Deferred\[None\]:")

    def test_the_module_runs_and_converts(self) -> None:
        text = python_stubs(examples_description(), class_name="C", source="s")
        module = _load(self, text)
        record = module.Record(Name="r", Child=module.Record(Name="c"))
        self.assertEqual(record.Child.Name, "c")
        self.assertEqual(
            converter_for(module.Record)({"Name": "x", "Child": {"Name": "y"}}),
            module.Record(Name="x", Child=module.Record(Name="y")),
        )

    def test_renamed_fields_keep_their_go_name(self) -> None:
        description = {
            "Services": {
                "S": {
                    "M": {"Signature": "M(T) -> int", "Argument": {"Struct": "t"}, "Reply": "int"}
                }
            },
            "Types": {"t": {"Name": "T", "Fields": [["None", "int"], ["List", {"Slice": "int"}]]}},
        }
        text = python_stubs(description, class_name="C", source="s")
        self.assertIn('    None_: int = field(default=0, metadata={"go_name": "None"})\n', text)


class SchemaTests(SynchronousTestCase):
    def test_json_schema_of_a_struct(self) -> None:
        description = examples_description()
        schema = json_schema({"Struct": "txgeerpc.examples.Args"}, description["Types"])
        self.assertEqual(schema["$ref"], "#/$defs/Args")
        self.assertEqual(
            schema["$defs"]["Args"]["properties"]["Num1"],
            {"type": "integer", "minimum": -(2**63), "maximum": 2**63 - 1},
        )

    def test_go_structs(self) -> None:
        description = examples_description()
        method = description["Services"]["Records"]["Echo"]
        text = go_structs("Records.Echo", method, description["Types"])
        self.assertIn("type Record struct {\n\tName string\n\tID uint\n", text)
        self.assertIn("\tChild *Record\n", text)
        self.assertIn("type Point struct {\n\tX int\n\tY int\n}\n", text)
        self.assertTrue(
            text.endswith("func (t *Records) Echo(argument Record, reply *Record) error\n")
        )

    def test_methods_without_an_argument(self) -> None:
        self.assertFalse(takes_argument({"Signature": "Ping() -> str"}))
        self.assertTrue(takes_argument({"Signature": "Sum(Args) -> int"}))
