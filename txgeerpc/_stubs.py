"""
Method types as text, for ``python -m txgeerpc stubs`` and ``describe``: a
typed Python client module, JSON Schema and Go structs, all made from the
document a txgeerpc server returns for ``_txgeerpc.Describe`` (see
:class:`txgeerpc._introspect.Introspection`), or from the method signatures
a Go GeeRPC server prints on its debug page (:func:`from_go_debug_page`).

Pure functions of that document: no I/O, no Twisted.
"""

from __future__ import annotations

import html
import json
import keyword
import re
from collections.abc import Mapping
from typing import Any

__all__ = [
    "UNKNOWN",
    "from_go_debug_page",
    "go_structs",
    "json_schema",
    "python_stubs",
    "takes_argument",
]

UNKNOWN = "Unknown"
"""``{"Unknown": "svc.Args"}``: a Go type known by name only (from a debug
page), whose fields nobody told us."""

_PYTHON_BASICS = {
    "bool": "bool",
    "int": "int",
    "uint": "Uint",
    "float64": "float",
    "[]byte": "bytes",
    "string": "str",
    "complex128": "complex",
    "interface {}": "Any",
}
_ZEROS = {
    "bool": "False",
    "int": "0",
    "uint": "0",
    "float64": "0.0",
    "[]byte": 'b""',
    "string": '""',
    "complex128": "0j",
    "interface {}": "None",
}


def takes_argument(method: Mapping[str, Any]) -> bool:
    """Whether a described method takes an argument (``Ping() -> str`` does not)."""
    return not re.match(r"^\w+\(\)", method.get("Signature", ""))


def _returns_nothing(method: Mapping[str, Any]) -> bool:
    return bool(re.search(r"-> (None|NoneType)$", method.get("Signature", "")))


def _identifier(name: str) -> str:
    """A Go name as a Python identifier (``None`` -> ``None_``)."""
    name = re.sub(r"\W", "_", name)
    if not name or name[0].isdigit():
        name = "_" + name
    return name + "_" if keyword.iskeyword(name) else name


class _Names:
    """Python class names for the described structs, unique and stable."""

    def __init__(self, types: Mapping[str, Any], taken: set[str]) -> None:
        self.of: dict[str, str] = {}
        for key in sorted(types, key=lambda k: (types[k]["Name"] or "Struct", k)):
            base = _identifier(types[key]["Name"] or "Struct")
            name, n = base, 1
            while name in taken:
                n += 1
                name = f"{base}{n}"
            taken.add(name)
            self.of[key] = name


def _annotation(kind: Any, names: _Names) -> str:
    if isinstance(kind, str):
        return _PYTHON_BASICS.get(kind, "Any")
    if "Slice" in kind:
        return f"list[{_annotation(kind['Slice'], names)}]"
    if "Array" in kind:
        return f"tuple[{', '.join([_annotation(kind['Array'], names)] * int(kind['Len']))}]"
    if "Map" in kind:
        key, value = kind["Map"]
        return f"dict[{_annotation(key, names)}, {_annotation(value, names)}]"
    if "Struct" in kind:
        return names.of[kind["Struct"]]
    return "dict[str, Any]"  # UNKNOWN


def _default(kind: Any, names: _Names, go_name: str | None) -> str:
    """``= ...`` for a dataclass field of this type (``go_name``: its Go name,
    when the attribute is named otherwise)."""
    arguments = []
    if isinstance(kind, str) or "Struct" in kind:
        # A struct field is Optional: Go's *T, and the way out of a cycle.
        arguments.append(f"default={_ZEROS.get(kind, 'None') if isinstance(kind, str) else 'None'}")
    elif "Slice" in kind:
        arguments.append("default_factory=list")
    elif "Map" in kind or UNKNOWN in kind:
        arguments.append("default_factory=dict")
    else:
        arguments.append(f"default_factory=lambda: {_zero(kind, names)}")
    if go_name is None and arguments[0].startswith("default="):
        return " = " + arguments[0].removeprefix("default=")
    if go_name is not None:
        arguments.append(f'metadata={{"go_name": {json.dumps(go_name)}}}')
    return f" = field({', '.join(arguments)})"


def _zero(kind: Any, names: _Names) -> str:
    if isinstance(kind, str):
        return _ZEROS.get(kind, "None")
    if "Slice" in kind:
        return "[]"
    if "Map" in kind or UNKNOWN in kind:
        return "{}"
    if "Array" in kind:
        items = [_zero(kind["Array"], names)] * int(kind["Len"])
        return f"({', '.join(items)}{',' if len(items) == 1 else ''})"
    return f"{names.of[kind['Struct']]}()"


def python_stubs(description: Mapping[str, Any], *, class_name: str, source: str) -> str:
    """A typed client module for the described services.

    :param description: ``_txgeerpc.Describe``'s document (or
        :func:`from_go_debug_page`'s).
    :param class_name: the name of the class with one attribute per service.
    :param source: where the description came from, for the module's docstring.
    """
    services: Mapping[str, Any] = description["Services"]
    types: Mapping[str, Any] = description.get("Types", {})
    service_classes = {service: f"{_identifier(service)}Client" for service in services}
    names = _Names(types, {class_name, *service_classes.values(), "Any", "Uint", "Client"})
    out: list[str] = []
    for key, name in sorted(names.of.items(), key=lambda item: item[1]):
        layout = types[key]
        out += [
            "",
            "@dataclass",
            f"class {name}:",
            f'    """Go struct ``{layout["Name"]}``."""',
            "",
        ]
        for go_name, kind in layout["Fields"]:
            attribute = _identifier(go_name)
            annotation = _annotation(kind, names)
            if isinstance(kind, dict) and "Struct" in kind:
                annotation += " | None"
            default = _default(kind, names, None if attribute == go_name else go_name)
            comment = (
                f"  # Go {kind[UNKNOWN]}: its fields are unknown"
                if isinstance(kind, dict) and UNKNOWN in kind
                else ""
            )
            out.append(f"    {attribute}: {annotation}{default}{comment}")
        out.append("")
    for service, methods in sorted(services.items()):
        out += [
            "",
            f"class {service_classes[service]}:",
            f'    """The ``{service}`` service."""',
            "",
            "    def __init__(self, client: Client, timeout: float | None = None) -> None:",
            "        self._client = client",
            "        self._timeout = timeout",
        ]
        for method_name, method in sorted(methods.items()):
            out += ["", *_method(service, method_name, method, names)]
        out.append("")
    out += [
        "",
        f"class {class_name}:",
        '    """One attribute per service; ``timeout`` (seconds) is every call\'s default."""',
        "",
        "    def __init__(self, client: Client, timeout: float | None = None) -> None:",
        "        self.client = client",
        *(
            f"        self.{_identifier(service)} = {service_classes[service]}(client, timeout)"
            for service in sorted(services)
        ),
        "",
        "",
        "def _nothing(reply: object) -> None:",
        "    return None",
        "",
    ]
    body = "\n".join(out)
    exported = sorted([class_name, *service_classes.values(), *names.of.values()])
    head = [
        f'"""\nA typed client, generated by ``python -m txgeerpc stubs`` from {source}.\n'
        "Regenerate it rather than edit it.\n"
        '"""\n',
        "from __future__ import annotations\n",
        *(
            ["from dataclasses import dataclass" + (", field" if " field(" in body else "")]
            if "@dataclass" in body
            else []
        ),
        *(["from typing import Any"] if re.search(r"\bAny\b", body) else []),
        "",
        "from twisted.internet.defer import Deferred",
        "",
        "from txgeerpc import Client",
        *(["from txgeerpc.gob import Uint"] if re.search(r"\bUint\b", body) else []),
        "",
        "__all__ = [",
        *(f'    "{name}",' for name in exported),
        "]",
        "",
    ]
    return "\n".join(head) + "\n" + body


def _indented(arguments: list[str]) -> list[str]:
    return [f"            {argument}," for argument in arguments]


def _method(service: str, name: str, method: Mapping[str, Any], names: _Names) -> list[str]:
    argument_kind = method.get("Argument", "interface {}")
    reply_kind = method.get("Reply", "interface {}")
    wire = f"{service}.{name}"
    signature = method.get("Signature", name).replace("\\", "\\\\").replace('"', '\\"')
    arguments = [f'"{wire}"']
    if takes_argument(method):
        annotation = _annotation(argument_kind, names)
        parameters = f"self, argument: {annotation}, *, timeout: float | None = None"
        arguments.append("argument")
        if annotation != "Any":
            arguments.append(f"argument_type={annotation}")
    else:
        parameters = "self, *, timeout: float | None = None"
        arguments.append("None")
    arguments.append("timeout=self._timeout if timeout is None else timeout")
    comment = (
        [f"        # Go {argument_kind[UNKNOWN]}: its fields are unknown, send a dict"]
        if isinstance(argument_kind, dict) and UNKNOWN in argument_kind
        else []
    )
    if _returns_nothing(method):
        returns = "None"
        call = ["        d = self._client.call(", *_indented(arguments), "        )"]
        call.append("        return d.addCallback(_nothing)")
    else:
        returns = _annotation(reply_kind, names)
        if isinstance(reply_kind, dict) and UNKNOWN in reply_kind:
            comment.append(f"        # Go {reply_kind[UNKNOWN]}: its fields are unknown, a dict")
        if returns != "Any":
            arguments.append(f"result_type={returns}")
        call = ["        return self._client.call(", *_indented(arguments), "        )"]
    define = f"    def {_identifier(name)}({parameters}) -> Deferred[{returns}]:"
    if len(define) > 100:
        define = (
            f"    def {_identifier(name)}(\n        {parameters}\n    ) -> Deferred[{returns}]:"
        )
    return [
        define,
        f'        """``{signature}``"""',
        *comment,
        *call,
    ]


_GO_INTS = {"int", "int8", "int16", "int32", "int64", "rune"}
_GO_UINTS = {"uint", "uint8", "uint16", "uint32", "uint64", "uintptr", "byte"}


def go_type(text: str) -> Any:
    """A Go type expression (``[]svc.Args``, ``map[string]int``, ``*int``) as
    a description; named types other than Go's own are :data:`UNKNOWN`."""
    text = text.strip()
    if text.startswith("*"):
        return go_type(text[1:])
    if text in ("[]byte", "[]uint8"):
        return "[]byte"
    if text.startswith("[]"):
        return {"Slice": go_type(text[2:])}
    array = re.match(r"^\[(\d+)\](.+)$", text)
    if array:
        return {"Array": go_type(array.group(2)), "Len": int(array.group(1))}
    if text.startswith("map["):
        depth = 0
        for index, char in enumerate(text[3:], 3):
            depth += {"[": 1, "]": -1}.get(char, 0)
            if depth == 0:
                return {"Map": [go_type(text[4:index]), go_type(text[index + 1 :])]}
    if text in _GO_INTS:
        return "int"
    if text in _GO_UINTS:
        return "uint"
    if text in ("float32", "float64"):
        return "float64"
    if text in ("complex64", "complex128"):
        return "complex128"
    if text in ("bool", "string"):
        return text
    if text in ("interface {}", "interface{}", "any"):
        return "interface {}"
    return {UNKNOWN: text}


_SERVICE = re.compile(r"Service\s+(\S+)\s*<hr>")
_SIGNATURE = re.compile(r"<td[^>]*>\s*(\w+)\((.*?)\)\s*error\s*</td>")


def from_go_debug_page(page: str) -> dict[str, Any]:
    """A description (as ``_txgeerpc.Describe`` gives) from the HTML of a Go
    GeeRPC debug page, whose rows read ``Divide(svc.Args, *int) error``.

    :raises ValueError: no service is listed on the page.
    """
    services: dict[str, Any] = {}
    starts = list(_SERVICE.finditer(page))
    for index, start in enumerate(starts):
        end = starts[index + 1].start() if index + 1 < len(starts) else len(page)
        methods = services.setdefault(html.unescape(start.group(1)), {})
        for row in _SIGNATURE.finditer(page, start.end(), end):
            name, parameters = row.group(1), html.unescape(row.group(2))
            argument, _, reply = _split_parameters(parameters)
            methods[name] = {
                "Signature": f"{name}({argument}, {reply}) error",
                "Argument": go_type(argument),
                "Reply": go_type(reply),
            }
    if not services:
        raise ValueError("no services listed on the debug page")
    return {"Services": services, "Types": {}}


def _split_parameters(text: str) -> tuple[str, str, str]:
    """``"map[string]int, *int"`` -> ``("map[string]int", ",", "*int")``."""
    depth = 0
    for index, char in enumerate(text):
        depth += {"[": 1, "]": -1, "(": 1, ")": -1, "{": 1, "}": -1}.get(char, 0)
        if char == "," and depth == 0:
            return text[:index].strip(), ",", text[index + 1 :].strip()
    return text.strip(), "", ""


_INT_RANGE = {"int": (-(2**63), 2**63 - 1), "uint": (0, 2**64 - 1)}


def json_schema(kind: Any, types: Mapping[str, Any]) -> dict[str, Any]:
    """JSON Schema (2020-12) of what ``python -m txgeerpc call`` takes (and
    prints) for ``kind``: structs in ``$defs``, ``[]byte`` base64,
    ``complex128`` ``[re, im]``."""
    defs: dict[str, Any] = {}
    schema = _schema(kind, types, defs)
    result: dict[str, Any] = {"$schema": "https://json-schema.org/draft/2020-12/schema"}
    result.update(schema)
    if defs:
        result["$defs"] = defs
    return result


def _schema(kind: Any, types: Mapping[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    if isinstance(kind, str):
        if kind in _INT_RANGE:
            low, high = _INT_RANGE[kind]
            return {"type": "integer", "minimum": low, "maximum": high}
        basics: dict[str, dict[str, Any]] = {
            "bool": {"type": "boolean"},
            "float64": {"type": "number"},
            "string": {"type": "string"},
            "[]byte": {"type": "string", "contentEncoding": "base64"},
            "complex128": {
                "type": "array",
                "items": {"type": "number"},
                "minItems": 2,
                "maxItems": 2,
            },
        }
        return basics.get(kind, {})
    if "Slice" in kind:
        return {"type": ["array", "null"], "items": _schema(kind["Slice"], types, defs)}
    if "Array" in kind:
        length = int(kind["Len"])
        items = _schema(kind["Array"], types, defs)
        return {"type": "array", "items": items, "minItems": length, "maxItems": length}
    if "Map" in kind:
        return {
            "type": ["object", "null"],
            "additionalProperties": _schema(kind["Map"][1], types, defs),
        }
    if "Struct" in kind:
        layout = types[kind["Struct"]]
        name = layout["Name"] or kind["Struct"]
        if name not in defs:
            defs[name] = {}  # placeholder: a struct may contain itself
            defs[name] = {
                "type": "object",
                "properties": {field: _schema(sub, types, defs) for field, sub in layout["Fields"]},
                "additionalProperties": False,
            }
        return {"$ref": f"#/$defs/{name}"}
    return {"type": "object", "description": f"Go {kind[UNKNOWN]}: fields unknown"}


def _go(kind: Any, types: Mapping[str, Any], wanted: list[str]) -> str:
    if isinstance(kind, str):
        return "interface{}" if kind == "interface {}" else kind
    if "Slice" in kind:
        return "[]" + _go(kind["Slice"], types, wanted)
    if "Array" in kind:
        return f"[{int(kind['Len'])}]" + _go(kind["Array"], types, wanted)
    if "Map" in kind:
        key, value = kind["Map"]
        return f"map[{_go(key, types, wanted)}]{_go(value, types, wanted)}"
    if "Struct" in kind:
        if kind["Struct"] not in wanted:
            wanted.append(kind["Struct"])
        return str(types[kind["Struct"]]["Name"] or "struct{}")
    return str(kind[UNKNOWN])


def go_structs(service_method: str, method: Mapping[str, Any], types: Mapping[str, Any]) -> str:
    """Go declarations of a method's argument and reply types (every struct
    they reach) and the method's Go signature."""
    wanted: list[str] = []
    argument = _go(method.get("Argument", "interface {}"), types, wanted)
    reply = _go(method.get("Reply", "interface {}"), types, wanted)
    if _returns_nothing(method):
        reply = "struct{}"
    lines = []
    done = 0
    while done < len(wanted):  # grows as structs reach other structs
        key = wanted[done]
        done += 1
        layout = types[key]
        lines.append(f"type {layout['Name']} struct {{")
        for field, sub in layout["Fields"]:
            pointer = "*" if isinstance(sub, dict) and "Struct" in sub else ""
            lines.append(f"\t{field} {pointer}{_go(sub, types, wanted)}")
        lines += ["}", ""]
    service, _, name = service_method.rpartition(".")
    receiver = f"func (t *{service}) {name}("
    parameters = f"argument {argument}, " if takes_argument(method) else ""
    lines.append(f"{receiver}{parameters}reply *{reply}) error")
    return "\n".join(lines) + "\n"


def dumps_schema(schema: Mapping[str, Any]) -> str:
    """Indented JSON, keys in the order built."""
    return json.dumps(schema, indent=2, ensure_ascii=False)
