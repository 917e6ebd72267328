"""
The Go types a gob stream can carry, seen from the sending side: how Python
annotations and Python values map onto them, and the names Go registers for
values sent inside interfaces.

A :class:`GobType` knows its shape only; wire type ids are chosen per encoder
(see ``_encoder``), because a peer must take them from our definitions anyway.
"""

from __future__ import annotations

import dataclasses
import functools
import re
import types
import typing
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Union

import attrs

from .._convert import is_struct, struct_fields

# Predefined type ids (encoding/gob's type.go; docs/protocol.md 4.3).
BOOL_ID, INT_ID, UINT_ID, FLOAT_ID, BYTES_ID, STRING_ID, COMPLEX_ID, INTERFACE_ID = range(1, 9)
WIRE_TYPE_ID = 16
ARRAY_TYPE_ID = 17
COMMON_TYPE_ID = 18
SLICE_TYPE_ID = 19
STRUCT_TYPE_ID = 20
FIELD_TYPE_ID = 21
FIELD_TYPE_SLICE_ID = 22
MAP_TYPE_ID = 23
FIRST_USER_ID = 64
"""Go rejects definitions below this id; user types are numbered from here."""

UINT64_MAX = 2**64 - 1
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


class GobType:
    """A Go type as gob describes it.  Basic types carry their fixed id."""

    __slots__ = ()
    name: str
    basic_id: int | None = None

    @property
    def needs_definition(self) -> bool:
        """True for types a sender must define before first use."""
        return self.basic_id is None


@dataclasses.dataclass(frozen=True, eq=False)
class Basic(GobType):
    """``bool``, ``int``, ``uint``, ``float64``, ``[]byte``, ``string``,
    ``complex128`` or ``interface{}``."""

    name: str
    basic_id: int  # type: ignore[misc]

    def __repr__(self) -> str:
        return self.name


BOOL = Basic("bool", BOOL_ID)
INT = Basic("int", INT_ID)
UINT = Basic("uint", UINT_ID)
FLOAT = Basic("float64", FLOAT_ID)
BYTES = Basic("[]byte", BYTES_ID)
STRING = Basic("string", STRING_ID)
COMPLEX = Basic("complex128", COMPLEX_ID)
INTERFACE = Basic("interface {}", INTERFACE_ID)


@dataclasses.dataclass(frozen=True)
class SliceOf(GobType):
    elem: GobType

    @property
    def name(self) -> str:  # type: ignore[override]
        return "[]" + self.elem.name


@dataclasses.dataclass(frozen=True)
class ArrayOf(GobType):
    elem: GobType
    length: int

    @property
    def name(self) -> str:  # type: ignore[override]
        return f"[{self.length}]{self.elem.name}"


@dataclasses.dataclass(frozen=True)
class MapOf(GobType):
    key: GobType
    elem: GobType

    @property
    def name(self) -> str:  # type: ignore[override]
        return f"map[{self.key.name}]{self.elem.name}"


class StructOf(GobType):
    """A Go struct: named fields, each with a Go name and a type.

    :ivar cls: the Python class values of this type are instances of, or
        ``None`` for structs whose values are mappings keyed by Go field name.
    :ivar fields: ``(go_name, attribute, type)``; ``attribute`` is the Python
        attribute (or mapping key) the value is read from.  Filled in after
        creation, so a struct can contain itself.
    :ivar by_shape: equal to any other ``by_shape`` struct with the same name
        and fields (structs inferred from dicts, which cannot contain
        themselves); otherwise a struct is only equal to itself.
    """

    __slots__ = ("_hash", "by_shape", "cls", "fields", "name")

    def __init__(self, name: str, cls: type | None, by_shape: bool = False) -> None:
        self.name = name
        self.cls = cls
        self.by_shape = by_shape
        self.fields: tuple[tuple[str, str, GobType], ...] = ()
        self._hash: int | None = None

    def __repr__(self) -> str:
        return f"struct {self.name or '{}'}"

    def _shape(self) -> object:
        return (self.name, tuple((go, kind) for go, _, kind in self.fields))

    def __eq__(self, other: object) -> bool:
        if self is other:
            return True
        return (
            isinstance(other, StructOf)
            and self.by_shape
            and other.by_shape
            and self._shape() == other._shape()
        )

    def __hash__(self) -> int:
        if not self.by_shape:
            return id(self)
        if self._hash is None:  # fields are final once the struct is in use
            self._hash = hash(self._shape())
        return self._hash


EMPTY = StructOf("", None, by_shape=True)
"""Go's ``struct{}``: the body of every error reply (and what a dict whose
values are all None infers as: the same type)."""


# -- markers for annotations ---------------------------------------------------


class _Marker:
    __slots__ = ("gob_type", "unsigned")

    def __init__(self, gob_type: GobType) -> None:
        self.gob_type = gob_type
        self.unsigned = gob_type.basic_id == UINT_ID  # read by _convert

    def __repr__(self) -> str:
        return f"gob:{self.gob_type.name}"


UINT_MARKER = _Marker(UINT)
Uint = Annotated[int, UINT_MARKER]
"""Annotate a field ``Uint`` to send it as Go ``uint``/``uint64`` (0 .. 2**64-1)."""


def marker_of(annotation: Any) -> _Marker | None:
    """The gob marker in an ``Annotated[...]``, if any."""
    if typing.get_origin(annotation) is Annotated:
        for extra in annotation.__metadata__:
            if isinstance(extra, _Marker):
                return extra
    return None


# -- annotations -> GobType ----------------------------------------------------


class UnsupportedType(TypeError):
    """An annotation or value has no gob representation."""


@functools.cache
def gob_type_for(annotation: Any) -> GobType:
    """The Go type values annotated ``annotation`` travel as.

    :raises UnsupportedType: there is none (a class that is neither a
        dataclass nor an attrs class, say).
    """
    if isinstance(annotation, GobType):
        return annotation
    marker = marker_of(annotation)
    if marker is not None:
        return marker.gob_type
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is Annotated:
        return gob_type_for(args[0])
    if annotation is Any or annotation is object:
        return INTERFACE
    if origin in (Union, types.UnionType):
        options = [arg for arg in args if arg is not type(None)]
        # Optional[T] is Go's *T: nil is simply left out.
        return gob_type_for(options[0]) if len(options) == 1 else INTERFACE
    basic = _BASIC_ANNOTATIONS.get(annotation)
    if basic is not None:
        return basic
    if origin in (list, Sequence) or annotation in (list, Sequence):
        return SliceOf(gob_type_for(args[0] if args else Any))
    if origin is tuple or annotation is tuple:
        if not args or (len(args) == 2 and args[1] is Ellipsis):
            return SliceOf(gob_type_for(args[0] if args else Any))
        kinds = {gob_type_for(arg) for arg in args}
        return ArrayOf(kinds.pop() if len(kinds) == 1 else INTERFACE, len(args))
    if origin in (dict, Mapping) or annotation in (dict, Mapping):
        key, value = args if args else (Any, Any)
        return MapOf(gob_type_for(key), gob_type_for(value))
    if is_struct(annotation):
        return struct_type_for(annotation)
    raise UnsupportedType(f"gob: no Go type for {annotation!r}")


_BASIC_ANNOTATIONS: dict[Any, GobType] = {
    bool: BOOL,
    int: INT,
    float: FLOAT,
    complex: COMPLEX,
    str: STRING,
    bytes: BYTES,
    bytearray: BYTES,
}


_struct_types: dict[type, StructOf] = {}


def struct_type_for(cls: type) -> StructOf:
    """The struct type of a dataclass or attrs class (fields by Go name)."""
    found = _struct_types.get(cls)
    if found is not None:
        return found
    struct = _struct_types[cls] = StructOf(cls.__name__, cls)
    try:
        struct.fields = tuple(
            (field.wire_name, field.name, gob_type_for(field.annotation))
            for field in struct_fields(cls)
        )
    except BaseException:
        del _struct_types[cls]
        raise
    return struct


# -- Python values -> GobType (no annotation to go by) -------------------------

_EXPORTED = re.compile(r"[A-Z][A-Za-z0-9_]*\Z")


def infer_type(value: Any) -> GobType:
    """The Go type a Python value travels as when nothing declares one.

    ``int`` is Go ``int`` (``uint`` above ``int64``), ``float`` ``float64``,
    dataclass/attrs instances their struct, lists slices (of the one element
    type they share, else ``interface{}``), and a dict whose keys all look
    like exported Go field names (``Num1``) a struct, any other dict a map.

    :raises UnsupportedType: the value has no gob form (``None`` at top level,
        an arbitrary object).
    """
    kind = type(value)
    basic = _BASIC_VALUES.get(kind)
    if basic is not None:
        if basic is INT and not INT64_MIN <= value <= INT64_MAX:
            return UINT if 0 <= value <= UINT64_MAX else INT  # INT: the encoder reports the range
        return basic
    if kind is GobValue:
        pinned: GobValue = value
        return pinned.gob_type
    if kind is dict:
        struct = _flat_mappings.get((*value, *map(type, value.values())))
        if struct is not None and _ints_fit(value):
            return struct
    if is_struct(kind):
        return struct_type_for(kind)
    if isinstance(value, Mapping):
        if value and all(type(key) is str and _EXPORTED.match(key) for key in value):
            return _struct_of_mapping(value)
        return MapOf(_common_type(value.keys()), _common_type(value.values()))
    if isinstance(value, (list, tuple)):
        return SliceOf(_common_type(value))
    if isinstance(value, (bytearray, memoryview)):
        return BYTES
    if isinstance(value, bool):
        return BOOL
    if isinstance(value, int):
        return INT
    if isinstance(value, float):
        return FLOAT
    if isinstance(value, str):
        return STRING
    if value is None:
        raise UnsupportedType("gob: cannot encode nil (None) as a value")
    raise UnsupportedType(f"gob: no Go type for a value of type {kind.__name__}")


# A value's exact type -> its Go type (bytearray values go the slow way).
_BASIC_VALUES: dict[type, GobType] = {
    kind: gob for kind, gob in _BASIC_ANNOTATIONS.items() if kind is not bytearray
}


_mapping_structs: dict[tuple[tuple[str, GobType], ...], StructOf] = {(): EMPTY}

_flat_mappings: dict[tuple[Any, ...], StructOf] = {}
"""The struct of a dict of exported names to scalars, by its keys then its
values' types: a client's dict argument (``{"Num1": 6, "Num2": 7}``) has the
same shape on every call, and inferring it walks every key (a regular
expression) and every value.  An int's type also depends on its size
(:func:`_ints_fit`)."""


def _ints_fit(value: dict[str, Any]) -> bool:
    """Whether every int value is within int64 (Go ``int``, as the cached shape says)."""
    for item in value.values():
        if type(item) is int and not INT64_MIN <= item <= INT64_MAX:
            return False
    return True


def _struct_of_mapping(value: Mapping[str, Any]) -> StructOf:
    # A None field is Go's nil or zero: left out of the shape, so never sent.
    struct = _canonical_struct(
        tuple((key, infer_type(item)) for key, item in value.items() if item is not None)
    )
    if (
        type(value) is dict
        and len(_flat_mappings) < 4096
        and all(type(item) in _BASIC_VALUES for item in value.values())
        and _ints_fit(value)
    ):
        _flat_mappings[(*value, *map(type, value.values()))] = struct
    return struct


def _canonical_struct(shape: tuple[tuple[str, GobType], ...]) -> StructOf:
    struct = _mapping_structs.get(shape)
    if struct is None:
        struct = StructOf("", None, by_shape=True)
        struct.fields = tuple((key, key, kind) for key, kind in shape)
        if len(_mapping_structs) < 4096:  # one object per shape, for the encoders' tables
            _mapping_structs[shape] = struct
    return struct


def _common_type(items: Any) -> GobType:
    kinds = [INTERFACE if item is None else infer_type(item) for item in items]
    distinct = set(kinds)
    if len(distinct) == 1:
        return distinct.pop()
    if distinct == {INT, FLOAT}:
        return FLOAT
    structs = [kind for kind in kinds if isinstance(kind, StructOf) and kind.by_shape]
    if structs and len(structs) == len(kinds):
        return _merged_struct(structs)
    return INTERFACE


def _merged_struct(structs: list[StructOf]) -> StructOf:
    """One struct for dicts with different keys (``[{"A": 1}, {"B": 2}]``):
    every field any of them has, in order of first appearance."""
    fields: dict[str, GobType] = {}
    for struct in structs:
        for name, _, kind in struct.fields:
            known = fields.get(name)
            if known is None or known == kind:
                fields[name] = kind
            elif {known, kind} == {INT, FLOAT}:
                fields[name] = FLOAT
            elif (
                isinstance(known, StructOf)
                and isinstance(kind, StructOf)
                and known.by_shape
                and kind.by_shape
            ):
                fields[name] = _merged_struct([known, kind])  # nested dicts merge too
            else:
                fields[name] = INTERFACE
    return _canonical_struct(tuple(fields.items()))


@attrs.frozen
class GobValue:
    """A value with an explicit Go type: ``GobValue(7, gob.Uint)`` sends a
    ``uint`` where :func:`infer_type` would pick ``int``."""

    value: Any
    annotation: Any

    @property
    def gob_type(self) -> GobType:
        return gob_type_for(self.annotation)


# -- names of concrete types sent inside interfaces ----------------------------

# What Go's gob registers by default (registerBasics), for the types Python
# values map to.
_BASIC_NAMES: dict[GobType, str] = {
    INT: "int",
    UINT: "uint",
    FLOAT: "float64",
    COMPLEX: "complex128",
    BOOL: "bool",
    STRING: "string",
    BYTES: "[]uint8",
    SliceOf(INT): "[]int",
    SliceOf(UINT): "[]uint",
    SliceOf(FLOAT): "[]float64",
    SliceOf(COMPLEX): "[]complex128",
    SliceOf(BOOL): "[]bool",
    SliceOf(STRING): "[]string",
}

_names_by_type: dict[GobType, str] = dict(_BASIC_NAMES)
_classes_by_name: dict[str, type] = {}


def register_name(name: str, cls_or_annotation: Any) -> None:
    """Send values of this type inside interfaces as ``name`` (the name the Go
    side registered with ``gob.Register``/``gob.RegisterName``, e.g.
    ``"main.Point"``), and decode interface values named ``name`` into it.
    """
    if not name:
        raise ValueError("a gob interface name must not be empty")
    kind = gob_type_for(cls_or_annotation)
    _names_by_type[kind] = name
    if isinstance(cls_or_annotation, type) and is_struct(cls_or_annotation):
        _classes_by_name[name] = cls_or_annotation


def interface_name(kind: GobType) -> str | None:
    """The registered name for ``kind`` inside an interface, if any."""
    return _names_by_type.get(kind)


def class_for_name(name: str) -> type | None:
    """The class registered for an interface name, if any."""
    return _classes_by_name.get(name)
