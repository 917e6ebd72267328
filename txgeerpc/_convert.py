"""
Conversion between plain wire values (what a codec decodes: dicts, lists,
numbers, strings, bytes) and the annotated Python types a handler declares.

Go semantics where Python has a choice: struct fields are matched by name
(exactly, then case-insensitively), unknown fields are ignored, missing fields
and JSON ``null`` take the type's zero value, and an int field refuses a float.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import functools
import re
import reprlib
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from typing import Annotated, Any, Union

import attrs

from ._budget import LIST_COST, MAP_COST, MAP_ENTRY_COST, OBJECT_COST, SLOT_COST, over_budget
from ._protobuf import is_message_class, message_converter

Converter = Callable[[Any], Any]

GO_NAME = "go_name"
"""Field metadata key naming the Go field a Python field travels as."""


class ConversionError(TypeError):
    """A value does not fit the declared type.  ``str()`` names where and why."""

    def __init__(self, path: str, problem: str) -> None:
        super().__init__(f"{path}: {problem}" if path else problem)
        self.path = path
        self.problem = problem

    def within(self, outer: str) -> ConversionError:
        """The same problem, one level further out (``Args`` + ``Num1``)."""
        return type(self)(join_path(outer, self.path), self.problem)


MAX_DEPTH = 200
"""Lists, maps and structs nested deeper than this are refused with a
:class:`ConversionError` (a few frames per level: well within Python's
recursion limit, whatever the caller's stack holds)."""


_UNBUDGETED = 1 << 62


class _Depth:
    """How deep the conversion running now is, and how many bytes of memory
    it may still take (conversion is synchronous and runs in one thread: one
    counter each will do)."""

    __slots__ = ("left", "level", "total")

    def __init__(self) -> None:
        self.level = 0
        self.left = self.total = _UNBUDGETED


_depth = _Depth()


def convert_within(convert: Converter, value: Any, budget: int) -> tuple[Any, int]:
    """``convert(value)``, charging the objects it makes (structs, lists,
    maps, decoded bytes) against ``budget`` bytes before they are made.

    :returns: (the converted value, what is left of ``budget``).
    :raises ConversionError: the value does not fit, or converting it would
        take more than ``budget`` (``value expands to far more than its
        message``).
    """
    state = _depth
    outer = state.left, state.total
    state.left = state.total = budget
    try:
        result = convert(value)
        return result, state.left
    finally:
        state.left, state.total = outer


class _OverBudget(ConversionError):
    """Past the memory budget: no other reading of the value is tried."""


def _charge(cost: int) -> None:
    state = _depth
    state.left -= cost
    if state.left < 0:
        raise _OverBudget("", over_budget(state.total))


class _TooDeep(ConversionError):
    """Past :data:`MAX_DEPTH`: no other reading of the value is tried."""


def _too_deep() -> ConversionError:
    return _TooDeep("", f"value nested more than {MAX_DEPTH} levels deep")


def join_path(outer: str, inner: str) -> str:
    """``Args`` + ``Num1`` -> ``Args.Num1``; ``Tags`` + ``[2]`` -> ``Tags[2]``."""
    if not inner:
        return outer
    if inner.startswith("["):
        return outer + inner
    return f"{outer}.{inner}"


@attrs.frozen
class StructField:
    """One field of a struct-like class.

    :ivar name: the attribute name.
    :ivar init_name: the ``__init__`` parameter (attrs strips a leading ``_``).
    :ivar wire_name: the Go field name it travels as.
    """

    name: str
    init_name: str
    wire_name: str
    annotation: Any
    has_default: bool


def is_struct(cls: Any) -> bool:
    """True for dataclass and attrs classes, which travel as Go structs."""
    return isinstance(cls, type) and (dataclasses.is_dataclass(cls) or attrs.has(cls))


@functools.cache
def struct_fields(cls: type) -> tuple[StructField, ...]:
    """The fields of a dataclass or attrs class, with resolved annotations."""
    hints = typing.get_type_hints(cls, include_extras=True)
    result = []
    if attrs.has(cls):
        for field in attrs.fields(cls):
            if not field.init:
                continue
            alias = getattr(field, "alias", None) or field.name.lstrip("_")
            result.append(
                StructField(
                    field.name,
                    alias,
                    field.metadata.get(GO_NAME, alias),
                    hints.get(field.name, Any),
                    field.default is not attrs.NOTHING,
                )
            )
    else:
        for dfield in dataclasses.fields(cls):
            if not dfield.init:
                continue
            result.append(
                StructField(
                    dfield.name,
                    dfield.name,
                    dfield.metadata.get(GO_NAME, dfield.name),
                    hints.get(dfield.name, Any),
                    dfield.default is not dataclasses.MISSING
                    or dfield.default_factory is not dataclasses.MISSING,
                )
            )
    return tuple(result)


def type_name(annotation: Any) -> str:
    """A short readable name for an annotation (``Args``, ``list[int]``)."""
    if annotation is Any:
        return "any"
    if typing.get_origin(annotation) is Annotated:
        if any(getattr(extra, "unsigned", False) for extra in annotation.__metadata__):
            return "Uint"
        return type_name(typing.get_args(annotation)[0])
    if isinstance(annotation, type) and not typing.get_args(annotation):
        return annotation.__name__
    return str(annotation).replace("typing.", "")


def _describe(value: Any) -> str:
    text = reprlib.repr(value)  # bounded, however deep the value
    if len(text) > 40:
        text = text[:37] + "..."
    return f"{type(value).__name__} {text}"


@functools.cache
def converter_for(annotation: Any) -> Converter:
    """A function turning a plain wire value into ``annotation``'s type.

    :raises ConversionError: (from the returned function) the value does not fit.
    """
    if annotation is Any or annotation is object or annotation is None.__class__:
        return _identity if annotation is not None.__class__ else _expect_none
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is Annotated:
        if any(getattr(extra, "unsigned", False) for extra in annotation.__metadata__):
            return _to_uint
        return converter_for(args[0])
    if origin in (Union, types.UnionType):
        return _union_converter(args)
    if annotation is int:
        return _to_int
    if annotation is float:
        return _to_float
    if annotation is str:
        return _to_str
    if annotation is bool:
        return _to_bool
    if annotation is bytes:
        return _to_bytes
    if annotation is bytearray:
        return lambda value: bytearray(_to_bytes(value))
    if origin in (list, Sequence, tuple) or annotation in (list, tuple):
        item = args[0] if args else Any
        is_tuple = origin is tuple or annotation is tuple
        if is_tuple and args and not (len(args) == 2 and args[1] is Ellipsis):
            return _fixed_tuple_converter(args)
        return _list_converter(converter_for(item), tuple if is_tuple else list)
    if origin in (dict, Mapping) or annotation is dict:
        key, value = args if args else (Any, Any)
        return _dict_converter(converter_for(key), converter_for(value), key)
    if is_struct(annotation):
        return _struct_converter(annotation)
    if is_message_class(annotation):  # a generated protobuf message class
        return message_converter(annotation)  # type: ignore[no-any-return]
    if isinstance(annotation, type):
        cls = annotation

        def instance_of(value: Any) -> Any:
            if isinstance(value, cls):
                return value
            raise ConversionError("", f"expected {cls.__name__}, got {_describe(value)}")

        return instance_of
    return _identity


def zero_value(annotation: Any) -> Any:
    """Go's zero value for a field of this type (``0``, ``""``, ``[]``...)."""
    origin = typing.get_origin(annotation)
    if origin is Annotated:
        return zero_value(typing.get_args(annotation)[0])
    if origin in (Union, types.UnionType):
        return None
    if annotation in (int, float, str, bool, bytes, list, dict, tuple):
        return annotation()
    if origin in (list, Sequence):
        return []
    if origin is tuple:
        args = typing.get_args(annotation)
        if args and not (len(args) == 2 and args[1] is Ellipsis):
            return tuple(zero_value(arg) for arg in args)
        return ()
    if origin in (dict, Mapping):
        return {}
    if is_struct(annotation):
        return _struct_converter(annotation)({})
    return None


def _identity(value: Any) -> Any:
    return value


def _expect_none(value: Any) -> None:
    if value is not None:
        raise ConversionError("", f"expected null, got {_describe(value)}")


_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


def _to_int(value: Any) -> int:
    # Go's int is 64 bits wide; a larger number cannot reach a Go peer either.
    if type(value) is int:
        if _INT64_MIN <= value <= _INT64_MAX:
            return value
        raise ConversionError("", f"number {_short_int(value)} overflows int64")
    if value is None:
        return 0
    if isinstance(value, int) and not isinstance(value, bool):
        return _to_int(int(value))
    raise ConversionError("", f"expected int, got {_describe(value)}")


_UINT64_MAX = 2**64 - 1


def _to_uint(value: Any) -> int:
    if type(value) is int and 0 <= value <= _UINT64_MAX:
        return value
    if value is None:
        return 0
    if isinstance(value, int) and not isinstance(value, bool):
        if 0 <= value <= _UINT64_MAX:
            return int(value)
        raise ConversionError("", f"number {_short_int(int(value))} does not fit uint64")
    raise ConversionError("", f"expected unsigned int, got {_describe(value)}")


def _short_int(value: int) -> str:
    if value.bit_length() > 256:
        return f"of {value.bit_length()} bits"
    return str(value)


def _to_float(value: Any) -> float:
    if type(value) is float:
        return value
    if value is None:
        return 0.0
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            return float(value)
        except OverflowError:
            raise ConversionError("", f"{value} overflows float64") from None
    raise ConversionError("", f"expected float, got {_describe(value)}")


def _to_str(value: Any) -> str:
    if type(value) is str:
        return value
    if value is None:
        return ""
    raise ConversionError("", f"expected str, got {_describe(value)}")


def _to_bool(value: Any) -> bool:
    if type(value) is bool:
        return value
    if value is None:
        return False
    raise ConversionError("", f"expected bool, got {_describe(value)}")


_SCALARS: frozenset[Converter] = frozenset((_to_int, _to_uint, _to_float, _to_str, _to_bool))
"""Converters that make no value of their own to charge or nest (a struct of
such fields only takes ``convert_flat``)."""


def _to_bytes(value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, (bytearray, memoryview)):
        return bytes(value)
    if value is None:
        return b""
    if isinstance(value, str):  # JSON carries []byte as base64, as Go does
        _charge(len(value))
        try:
            return base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError) as error:
            raise ConversionError("", f"expected base64 bytes, got {_describe(value)}") from error
    raise ConversionError("", f"expected bytes, got {_describe(value)}")


def _union_converter(options: tuple[Any, ...]) -> Converter:
    nullable = type(None) in options
    converters = [converter_for(option) for option in options if option is not type(None)]
    names = " | ".join(type_name(option) for option in options)

    def convert(value: Any) -> Any:
        if value is None and nullable:
            return None
        for converter in converters:
            try:
                return converter(value)
            except (_TooDeep, _OverBudget):
                raise
            except ConversionError:
                continue
        raise ConversionError("", f"expected {names}, got {_describe(value)}")

    return convert


def _list_converter(item: Converter, kind: type) -> Converter:
    def convert(value: Any) -> Any:
        if value is None:
            return kind()
        if not isinstance(value, (list, tuple)):
            raise ConversionError("", f"expected a list, got {_describe(value)}")
        depth = _depth
        if depth.level >= MAX_DEPTH:
            raise _too_deep()
        left = depth.left = depth.left - LIST_COST - SLOT_COST * len(value)
        if left < 0:
            _charge(0)
        depth.level += 1
        try:
            return kind([item(element) for element in value])
        except _OverBudget:
            raise
        except ConversionError:
            for index, element in enumerate(value):
                try:
                    item(element)
                except ConversionError as error:
                    raise error.within(f"[{index}]") from None
            raise
        finally:
            depth.level -= 1

    return convert


def _fixed_tuple_converter(annotations: tuple[Any, ...]) -> Converter:
    items = tuple(converter_for(annotation) for annotation in annotations)

    def convert(value: Any) -> Any:
        if value is None:
            return tuple(zero_value(annotation) for annotation in annotations)
        if not isinstance(value, (list, tuple)) or len(value) != len(items):
            raise ConversionError("", f"expected a list of {len(items)}, got {_describe(value)}")
        result = []
        for index, (converter, element) in enumerate(zip(items, value, strict=True)):
            try:
                result.append(converter(element))
            except ConversionError as error:
                raise error.within(f"[{index}]") from None
        return tuple(result)

    return convert


_DECIMAL = re.compile(r"-?[0-9]+")


def _dict_converter(key: Converter, item: Converter, key_type: Any) -> Converter:
    numeric_keys = key_type in (int, float)

    def convert(value: Any) -> Any:
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise ConversionError("", f"expected an object, got {_describe(value)}")
        depth = _depth
        if depth.level >= MAX_DEPTH:
            raise _too_deep()
        left = depth.left = depth.left - MAP_COST - MAP_ENTRY_COST * len(value)
        if left < 0:
            _charge(0)
        depth.level += 1
        try:
            return convert_items(value)
        finally:
            depth.level -= 1

    def convert_items(value: dict[Any, Any]) -> dict[Any, Any]:
        result = {}
        for raw_key, element in value.items():
            if numeric_keys and isinstance(raw_key, str):
                try:
                    if key_type is int and not _DECIMAL.fullmatch(raw_key):
                        raise ValueError(raw_key)
                    raw_key = key_type(raw_key)
                except ValueError:
                    raise ConversionError(
                        "", f"expected {type_name(key_type)} keys, got {raw_key!r}"
                    ) from None
            try:
                result[key(raw_key)] = item(element)
            except ConversionError as error:
                raise error.within(f"[{raw_key!r}]") from None
        return result

    return convert


@functools.cache
def _struct_converter(cls: type) -> Converter:
    fields = struct_fields(cls)
    # What one instance takes: its attributes in a vector, or past CPython's
    # shared-key limit (30) a dict of its own; the kwargs dict it is built from.
    per_field = SLOT_COST if len(fields) <= 30 else MAP_ENTRY_COST
    cost = OBJECT_COST + MAP_COST + (per_field + MAP_ENTRY_COST) * len(fields)
    # Resolved lazily: a struct may refer to itself (a tree node).
    plan: list[tuple[str, str, str, Converter, bool, Any]] = []
    # (init name, wire name, converter) of each field if every field is a
    # scalar (see convert_flat), else empty.
    flat: list[tuple[str, str, Converter]] = []

    def build_plan() -> None:
        # Built whole, then published: a RecursionError half way must not
        # leave a plan that silently drops the remaining fields.
        built = [
            (
                field.init_name,
                field.wire_name,
                field.wire_name.lower(),
                converter_for(field.annotation),
                field.has_default,
                field.annotation,
            )
            for field in fields
        ]
        if built and all(entry[3] in _SCALARS for entry in built):
            flat[:] = [(entry[0], entry[1], entry[3]) for entry in built]
        plan[:] = built

    def convert(value: Any) -> Any:
        if type(value) is dict and flat:
            return convert_flat(value)
        if isinstance(value, cls):
            return value
        if value is None:
            value = {}
        if not isinstance(value, dict):
            raise ConversionError("", f"expected {cls.__name__} object, got {_describe(value)}")
        if not plan:
            build_plan()
        depth = _depth
        if depth.level >= MAX_DEPTH:
            raise _too_deep()
        left = depth.left = depth.left - cost
        if left < 0:
            _charge(0)
        depth.level += 1
        try:
            return convert_fields(value)
        finally:
            depth.level -= 1

    def convert_flat(value: dict[str, Any]) -> Any:
        """A struct whose fields are all scalars, from an object: most
        arguments (``Args{Num1, Num2}``).  It exists because it runs on every
        such call: no nesting to track (no field holds a struct, a list or a
        map), an int that fits taken as is; an object that lacks a field
        under its exact name takes :func:`convert_fields`.  Same result,
        same charge, same errors."""
        depth = _depth
        if depth.level >= MAX_DEPTH:
            raise _too_deep()
        left = depth.left = depth.left - cost
        if left < 0:
            _charge(0)
        kwargs = {}
        for name, wire_name, converter in flat:
            if wire_name not in value:
                return convert_fields(value)
            raw = value[wire_name]
            if converter is _to_int and type(raw) is int and _INT64_MIN <= raw <= _INT64_MAX:
                kwargs[name] = raw
                continue
            try:
                kwargs[name] = converter(raw)
            except ConversionError as error:
                raise error.within(f"{cls.__name__}.{wire_name}") from None
        return cls(**kwargs)

    def convert_fields(value: dict[str, Any]) -> Any:
        folded: dict[str, Any] | None = None
        kwargs = {}
        for name, wire_name, lower_name, converter, has_default, annotation in plan:
            if wire_name in value:
                raw = value[wire_name]
            else:
                if folded is None:
                    folded = {}
                    for key, item in value.items():
                        if isinstance(key, str):
                            folded.setdefault(key.lower(), item)
                if lower_name in folded:
                    raw = folded[lower_name]
                elif has_default:
                    continue
                else:
                    kwargs[name] = zero_value(annotation)
                    continue
            try:
                kwargs[name] = converter(raw)
            except ConversionError as error:
                raise error.within(f"{cls.__name__}.{wire_name}") from None
        return cls(**kwargs)

    return convert
