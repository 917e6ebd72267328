"""
Method types on the wire, for tools: a txgeerpc server answers
``_txgeerpc.Describe`` with its methods' Go types as JSON, and
``python -m txgeerpc call`` uses them to build gob values from JSON.  It also
answers ``_txgeerpc.Health`` (``python -m txgeerpc health``).

The probe is safe against Go GeeRPC servers too: its body is a ``Header``
value, so a Go server, which never reads the body of a call to an unknown
service, reads it as the next header, answers it with an "ill-formed" error
under Seq 0 (which the client ignores), and carries on with the next call.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Callable, Mapping
from typing import Any

from ._jsonvalue import dumps
from ._protobuf import descriptor_set, is_message_class
from .gob import (
    BOOL,
    BYTES,
    COMPLEX,
    FLOAT,
    INT,
    INTERFACE,
    STRING,
    UINT,
    ArrayOf,
    Basic,
    GobType,
    MapOf,
    SliceOf,
    StructOf,
    UnsupportedType,
    gob_type_for,
    infer_type,
)

SERVICE = "_txgeerpc"
"""The reserved service name; not listed among a server's services."""

DESCRIBE = f"{SERVICE}.Describe"
HEALTH = f"{SERVICE}.Health"

PROBE = {"ServiceMethod": "", "Seq": 0, "Error": ""}
"""The body of a ``Describe`` call, sent as a ``Header`` (see above)."""

_BASICS: dict[str, Basic] = {
    kind.name: kind for kind in (BOOL, INT, UINT, FLOAT, BYTES, STRING, COMPLEX, INTERFACE)
}


class Introspection:
    """The ``_txgeerpc`` service: ``Describe`` returns a JSON document
    ``{"Services": {svc: {method: {"Signature": "Sum(Args) -> int", "Argument": T,
    "Reply": T}}}, "Types": {...}}``
    where ``T`` is a basic Go type name (``"int"``, ``"[]byte"``...),
    ``{"Slice": T}``, ``{"Array": T, "Len": n}``, ``{"Map": [K, V]}`` or
    ``{"Struct": key}`` with ``Types[key] = {"Name": go_name, "Fields": [[name, T]...]}``.
    A method taking or returning a generated protobuf message class also has
    ``"ArgumentMessage"`` / ``"ReplyMessage"`` (the message's full name; its
    ``Argument`` / ``Reply`` stay ``"interface {}"``), and the document then
    has ``"Protobuf"``: the base64 of a serialized ``FileDescriptorSet``
    defining those messages (``python -m txgeerpc call`` builds their
    classes from it).

    ``Health`` returns ``{"Status": "serving"}`` (``"draining"`` once the
    server stops).

    :param status: the server's status now (``"serving"`` by default).
    """

    def __init__(
        self, services: Mapping[str, Any], status: Callable[[], str] = lambda: "serving"
    ) -> None:
        self._services = services
        self._status = status

    def Health(self, probe: Any = None) -> str:
        return dumps({"Status": self._status()})

    def Describe(self, probe: Any = None) -> str:
        types: dict[str, Any] = {}
        services: dict[str, Any] = {}
        messages: list[type] = []
        for service_name, service in sorted(self._services.items()):
            if service_name == SERVICE:
                continue
            methods = {}
            for method_name, method in sorted(service.methods.items()):
                entry = methods[method_name] = {
                    "Signature": method.signature(),
                    "Argument": _schema_of(method.argument_type, types),
                    "Reply": _schema_of(method.result_type, types),
                }
                for key, annotation in (
                    ("ArgumentMessage", method.argument_type),
                    ("ReplyMessage", method.result_type),
                ):
                    if is_message_class(annotation):  # a generated protobuf class
                        entry[key] = annotation.DESCRIPTOR.full_name
                        messages.append(annotation)
            services[service_name] = methods
        description: dict[str, Any] = {"Services": services, "Types": types}
        if messages:
            description["Protobuf"] = base64.b64encode(descriptor_set(messages)).decode("ascii")
        return dumps(description)


def _schema_of(annotation: Any, types: dict[str, Any]) -> Any:
    try:
        kind = gob_type_for(annotation)
    except UnsupportedType:
        return INTERFACE.name
    return schema(kind, types)


def schema(kind: GobType, types: dict[str, Any]) -> Any:
    """The JSON description of ``kind``; struct layouts go into ``types``."""
    if isinstance(kind, Basic):
        return kind.name
    if isinstance(kind, SliceOf):
        return {"Slice": schema(kind.elem, types)}
    if isinstance(kind, ArrayOf):
        return {"Array": schema(kind.elem, types), "Len": kind.length}
    if isinstance(kind, MapOf):
        return {"Map": [schema(kind.key, types), schema(kind.elem, types)]}
    assert isinstance(kind, StructOf)
    key = _struct_key(kind)
    if key not in types:
        types[key] = None  # placeholder: a struct may contain itself
        types[key] = {
            "Name": kind.name,
            "Fields": [[go_name, schema(field, types)] for go_name, _, field in kind.fields],
        }
    return {"Struct": key}


def _struct_key(kind: StructOf) -> str:
    if kind.cls is not None:
        return f"{kind.cls.__module__}.{kind.cls.__qualname__}"
    return kind.name or f"struct@{id(kind):x}"


def type_from_schema(description: Any, types: Mapping[str, Any]) -> GobType:
    """The inverse of :func:`schema` (structs become mapping-based structs).

    :raises ValueError: the description is malformed.
    """
    built: dict[str, StructOf] = {}

    def build(item: Any) -> GobType:
        if isinstance(item, str):
            if item not in _BASICS:
                raise ValueError(f"unknown basic type {item!r}")
            return _BASICS[item]
        if not isinstance(item, dict):
            raise ValueError(f"bad type description {item!r}")
        if "Slice" in item:
            return SliceOf(build(item["Slice"]))
        if "Array" in item:
            return ArrayOf(build(item["Array"]), int(item["Len"]))
        if "Map" in item:
            key, value = item["Map"]
            return MapOf(build(key), build(value))
        if "Struct" in item:
            name = item["Struct"]
            found = built.get(name)
            if found is not None:
                return found
            layout = types[name]
            struct = built[name] = StructOf(layout["Name"], None)
            struct.fields = tuple((field, field, build(sub)) for field, sub in layout["Fields"])
            return struct
        raise ValueError(f"bad type description {item!r}")

    return build(description)


_DECIMAL = re.compile(r"-?[0-9]+")


class JSONMismatch(ValueError):
    """A JSON value does not fit the method's Go type; ``str()`` says where."""


def from_json(kind: GobType, value: Any, path: str = "") -> Any:
    """Convert a JSON value to what the gob encoder expects for ``kind``
    (base64 strings to bytes, ``[re, im]`` to complex, object keys to map key
    types, struct fields matched case-insensitively as Go's JSON does).

    :raises JSONMismatch: the value does not fit.
    """
    where = path or "argument"
    if value is None:
        return None
    if kind in (INT, UINT):
        if isinstance(value, bool) or not isinstance(value, int):
            raise JSONMismatch(f"{where}: expected an integer, got {json.dumps(value)}")
        return value
    if kind is FLOAT:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise JSONMismatch(f"{where}: expected a number, got {json.dumps(value)}")
        try:
            return float(value)
        except OverflowError:
            raise JSONMismatch(f"{where}: {value} overflows float64") from None
    if kind is BOOL:
        if not isinstance(value, bool):
            raise JSONMismatch(f"{where}: expected true or false, got {json.dumps(value)}")
        return value
    if kind is STRING:
        if not isinstance(value, str):
            raise JSONMismatch(f"{where}: expected a string, got {json.dumps(value)}")
        return value
    if kind is BYTES:
        if not isinstance(value, str):
            raise JSONMismatch(f"{where}: expected base64 bytes, got {json.dumps(value)}")
        try:
            return base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise JSONMismatch(f"{where}: {json.dumps(value)} is not base64") from None
    if kind is COMPLEX:
        if isinstance(value, list) and len(value) == 2:
            return complex(*(from_json(FLOAT, part, where) for part in value))
        return complex(from_json(FLOAT, value, where))
    if kind is INTERFACE:
        infer_type(value)  # raises for what gob cannot carry
        return value
    if isinstance(kind, (SliceOf, ArrayOf)):
        if not isinstance(value, list):
            raise JSONMismatch(f"{where}: expected a list, got {json.dumps(value)}")
        return [from_json(kind.elem, item, f"{where}[{index}]") for index, item in enumerate(value)]
    if isinstance(kind, MapOf):
        if not isinstance(value, dict):
            raise JSONMismatch(f"{where}: expected an object, got {json.dumps(value)}")
        return {
            _map_key(kind.key, key, where): from_json(kind.elem, item, f"{where}[{key!r}]")
            for key, item in value.items()
        }
    assert isinstance(kind, StructOf)
    if not isinstance(value, dict):
        raise JSONMismatch(f"{where}: expected an object, got {json.dumps(value)}")
    by_lower = {go_name.lower(): (go_name, field) for go_name, _, field in kind.fields}
    result = {}
    for key, item in value.items():
        match = by_lower.get(key.lower())
        if match is None:
            known = ", ".join(go_name for go_name, _, _ in kind.fields)
            raise JSONMismatch(f"{where}: {kind.name or 'struct'} has no field {key!r} ({known})")
        go_name, field = match
        result[go_name] = from_json(field, item, f"{where}.{go_name}")
    return result


def _map_key(kind: GobType, key: str, where: str) -> Any:
    if kind in (INT, UINT):
        if not _DECIMAL.fullmatch(key):
            raise JSONMismatch(f"{where}: map key {key!r} is not an integer")
        return int(key)
    if kind is FLOAT:
        try:
            return float(key)
        except ValueError:
            raise JSONMismatch(f"{where}: map key {key!r} is not a number") from None
    if kind is BOOL:
        if key not in ("true", "false"):
            raise JSONMismatch(f"{where}: map key {key!r} is not a bool")
        return key == "true"
    return from_json(kind, key, where)


def zero_of(kind: GobType) -> Any:
    """Go's zero value of ``kind``, in the form the gob encoder takes."""
    if isinstance(kind, StructOf) or isinstance(kind, MapOf):
        return {}
    if isinstance(kind, (SliceOf, ArrayOf)):
        return [zero_of(kind.elem)] * kind.length if isinstance(kind, ArrayOf) else []
    zeros: dict[GobType, Any] = {
        INT: 0,
        UINT: 0,
        FLOAT: 0.0,
        BOOL: False,
        STRING: "",
        BYTES: b"",
        COMPLEX: 0j,
    }
    return zeros.get(kind)


def printable(value: Any) -> Any:
    """A decoded reply as JSON can show it: complex as ``[re, im]``, map keys
    as strings (bytes become base64 when dumped)."""
    if isinstance(value, complex):
        return [value.real, value.imag]
    if isinstance(value, list):
        return [printable(item) for item in value]
    if isinstance(value, dict):
        return {
            key if isinstance(key, str) else json.dumps(printable(key)): printable(item)
            for key, item in value.items()
        }
    return value
