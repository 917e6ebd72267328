"""
Protobuf messages as arguments and replies (issue 17): what the converters,
the codecs and Describe need of generated message classes, without importing
protobuf until a message class is seen (it is the ``protobuf`` extra).

- :func:`is_message_class` / :func:`is_message`: a generated class, an
  instance of one (checked only once ``google.protobuf`` is imported: a
  process that never imported it has none).
- :class:`PackedMessage`: a message's bytes and type name as the protobuf
  codec received them, kept raw until the handler's (or the call's) declared
  class parses them.
- :func:`message_converter`: a converter (``_convert``) to a message class,
  from a :class:`PackedMessage`, an instance, or a plain dict (JSON, msgpack:
  ``json_format.ParseDict``).
- :func:`message_to_plain`: a message as the JSON and msgpack codecs send it
  (``json_format.MessageToDict``: proto3's JSON mapping).
- :func:`message_cost`: an upper bound of the memory protobuf's parser takes
  for a message, read from its wire bytes and its descriptor without parsing.
- :func:`descriptor_set`: the serialized ``FileDescriptorSet`` of some message
  classes (Describe hands it out), and :func:`classes_from_descriptor_set`.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Iterable
from typing import Any

from ._budget import memory_budget, over_budget

INSTALL = "pip install txgeerpc[protobuf]"
"""What to install for protobuf messages (named in the errors that need it)."""

TYPE_URL_PREFIX = "type.googleapis.com/"


def _message_base() -> type | None:
    module = sys.modules.get("google.protobuf.message")
    return None if module is None else module.Message  # type: ignore[no-any-return]


def is_message_class(annotation: Any) -> bool:
    """True for a generated protobuf message class."""
    base = _message_base()
    return base is not None and isinstance(annotation, type) and issubclass(annotation, base)


def is_message(value: Any) -> bool:
    """True for an instance of a generated protobuf message class."""
    base = _message_base()
    return base is not None and isinstance(value, base)


def require_protobuf() -> Any:
    """The ``google.protobuf`` package.

    :raises ImportError: it is not installed; the text says what to install.
    """
    try:
        import google.protobuf.json_format
        import google.protobuf.message

        return google.protobuf
    except ImportError:
        raise ImportError(f"the protobuf codec needs the protobuf package: {INSTALL}") from None


class PackedMessage:
    """A protobuf message as received: its type's full name and its bytes,
    kept raw until the declared class is known (:func:`message_converter`
    parses it).

    :ivar type_name: the full name (``txgeerpc.examples.Numbers``).
    :ivar data: the serialized message.
    """

    __slots__ = ("data", "type_name")

    def __init__(self, type_name: str, data: bytes) -> None:
        self.type_name = type_name
        self.data = data

    def __repr__(self) -> str:
        return f"<{self.type_name} message, {len(self.data)} bytes>"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, PackedMessage):
            return NotImplemented
        return (self.type_name, self.data) == (other.type_name, other.data)

    __hash__ = None  # type: ignore[assignment]


# -- what parsing costs ------------------------------------------------------

STRUCT_COST = 24
"""What one message takes in protobuf's (upb's) arena besides its fields: a
header and its unknown-fields pointer, rounded up."""
FIELD_COST = 16
"""The widest a field is in a message's layout (a string view: pointer and
length); every field of a message type is charged at it."""
ELEMENT_COST = 16
"""One element of a repeated field or one map entry's slot."""
MAP_ENTRY_COST = 64
"""One map entry: a hash-table node, its key and value views."""
_VARINT_END = 10


@functools.cache
def _layout(descriptor: Any) -> tuple[int, dict[int, tuple[Any, bool]]]:
    """(cost of one message of this type, field number -> (message type or
    None, repeated))."""
    fields = {}
    for field in descriptor.fields:
        message_type = field.message_type
        repeated = _is_repeated(field)
        fields[field.number] = (message_type, repeated)
    return STRUCT_COST + FIELD_COST * len(descriptor.fields), fields


def _is_repeated(field: Any) -> bool:
    try:
        return bool(field.is_repeated)
    except AttributeError:  # protobuf < 5.28
        return bool(field.label == field.LABEL_REPEATED)


@functools.cache
def upper_factor(descriptor: Any) -> int:
    """Bytes of arena a message of this type can take per byte of its wire
    form, at most: the largest message reachable from it, entry and slot
    included, made of 2 bytes (a tag and an empty length)."""
    largest = 0
    seen: set[str] = set()
    todo = [descriptor]
    while todo:
        current = todo.pop()
        if current.full_name in seen:
            continue
        seen.add(current.full_name)
        cost, fields = _layout(current)
        largest = max(largest, cost + ELEMENT_COST + MAP_ENTRY_COST)
        todo.extend(message_type for message_type, _ in fields.values() if message_type)
    # A repeated scalar or a string takes less per byte than a message does.
    return max(largest // 2, ELEMENT_COST + 33)


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    end = min(pos + _VARINT_END, len(data))
    while pos < end:
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7
    raise ValueError("truncated or overlong varint")


def message_cost(data: bytes, descriptor: Any) -> int:
    """An upper bound of the bytes protobuf's parser takes for the message
    ``data`` of type ``descriptor``, from its wire form: every message
    (:data:`STRUCT_COST` + :data:`FIELD_COST` per field of its type), every
    element of a repeated field, every map entry, and every string, bytes or
    unknown field at its length.  Nothing is built.

    :raises ValueError: ``data`` is not well-formed protobuf wire data.
    """
    size = len(data)
    cost, fields = _layout(descriptor)
    # (end of the enclosing message, its fields) for each open message.
    stack: list[tuple[int, dict[int, tuple[Any, bool]]]] = []
    end = size
    pos = 0
    while True:
        while pos == end and stack:
            end, fields = stack.pop()
        if pos >= end:
            if pos > end:
                raise ValueError("a field runs past the end of its message")
            return cost
        tag, pos = _varint(data, pos)
        wire_type = tag & 7
        number = tag >> 3
        known = fields.get(number)
        if known is not None and known[1]:
            cost += ELEMENT_COST
        if wire_type == 0:
            _, pos = _varint(data, pos)
        elif wire_type == 1:
            pos += 8
        elif wire_type == 5:
            pos += 4
        elif wire_type == 2:
            length, pos = _varint(data, pos)
            if pos + length > end:
                raise ValueError("a field runs past the end of its message")
            message_type = known[0] if known is not None else None
            if message_type is not None:
                message_cost_, inner = _layout(message_type)
                cost += message_cost_
                if message_type.GetOptions().map_entry:
                    cost += MAP_ENTRY_COST
                stack.append((end, fields))
                end, fields = pos + length, inner
                continue
            # A string, bytes, a packed run of scalars (at most one element
            # per byte) or an unknown field: its bytes, or its elements.
            cost += length * (ELEMENT_COST if known is not None and known[1] else 1)
            pos += length
        else:  # groups (3, 4) are not proto3, and 6, 7 do not exist
            raise ValueError(f"unsupported wire type {wire_type}")
        if pos > end:
            raise ValueError("a field runs past the end of its message")


def parse_within(cls: type, data: bytes, budget: int) -> tuple[Any, int]:
    """``cls.FromString(data)`` if its parse fits ``budget`` bytes (messages
    small enough for :func:`upper_factor` never need the scan).

    :returns: the message and what is left of ``budget``.
    :raises ValueError: not well-formed, not a ``cls``, or over ``budget``.
    """
    descriptor = cls.DESCRIPTOR  # type: ignore[attr-defined]
    size = len(data)
    cost = upper_factor(descriptor) * size
    if cost > budget:
        cost = message_cost(data, descriptor)
        if cost > budget:
            raise _OverBudget(over_budget(budget))
    from google.protobuf.message import DecodeError

    try:
        return cls.FromString(data), budget - cost  # type: ignore[attr-defined]
    except (DecodeError, RecursionError) as error:
        raise ValueError(f"not a valid {descriptor.full_name}: {error}") from None


class _OverBudget(ValueError):
    pass


def parse_message(cls: type, data: bytes) -> Any:
    """A whole message of ``cls`` on its own, within the memory budget of its
    size (:func:`txgeerpc._budget.memory_budget`).

    :raises ValueError: not well-formed, or over its budget.
    """
    return parse_within(cls, data, memory_budget(len(data)))[0]


# -- conversion --------------------------------------------------------------


def message_converter(cls: type) -> Any:
    """A ``_convert`` converter to the message class ``cls``: a
    :class:`PackedMessage` of its type is parsed (its cost charged), an
    instance passes, a dict (a JSON or msgpack body) goes through
    ``json_format.ParseDict``, ``None`` is the empty message.
    """
    from google.protobuf import json_format

    from ._convert import ConversionError, _depth
    from ._convert import _OverBudget as _Refused

    full_name = cls.DESCRIPTOR.full_name  # type: ignore[attr-defined]

    def convert(value: Any) -> Any:
        if type(value) is cls:
            return value
        if type(value) is PackedMessage:
            if value.type_name != full_name:
                raise ConversionError("", f"expected a {full_name} message, got {value.type_name}")
            state = _depth
            try:
                message, state.left = parse_within(cls, value.data, state.left)
            except _OverBudget as error:
                raise _Refused("", str(error)) from None
            except ValueError as error:
                raise ConversionError("", str(error)) from None
            return message
        if value is None:
            return cls()
        if isinstance(value, dict):
            try:
                return json_format.ParseDict(value, cls())
            except (json_format.ParseError, TypeError, ValueError, RecursionError) as error:
                raise ConversionError("", f"not a {full_name}: {_short(error)}") from None
        if isinstance(value, cls):
            return value
        raise ConversionError("", f"expected a {full_name} message, got {type(value).__name__}")

    return convert


def _short(error: BaseException) -> str:
    text = str(error).splitlines()[0] if str(error) else type(error).__name__
    return text if len(text) <= 200 else text[:197] + "..."


def message_to_plain(message: Any) -> dict[str, Any]:
    """A message as the JSON and msgpack codecs send it: proto3's JSON
    mapping (``json_format.MessageToDict``: lowerCamelCase names, 64-bit
    integers as strings, bytes as base64)."""
    from google.protobuf import json_format

    return json_format.MessageToDict(message)  # type: ignore[no-any-return]


# -- descriptors -------------------------------------------------------------


def descriptor_set(classes: Iterable[type]) -> bytes:
    """The serialized ``FileDescriptorSet`` of the files that define
    ``classes``, and of the files they import (dependencies first)."""
    from google.protobuf import descriptor_pb2

    files = descriptor_pb2.FileDescriptorSet()
    done: set[str] = set()

    def add(file: Any) -> None:
        if file.name in done:
            return
        done.add(file.name)
        for dependency in file.dependencies:
            add(dependency)
        file.CopyToProto(files.file.add())

    for cls in classes:
        add(cls.DESCRIPTOR.file)  # type: ignore[attr-defined]
    return files.SerializeToString()  # type: ignore[no-any-return]


def classes_from_descriptor_set(data: bytes) -> dict[str, type]:
    """Message classes by full name, built from a serialized
    ``FileDescriptorSet`` in a pool of their own
    (``google.protobuf.message_factory``).

    :raises ValueError: the set is malformed.
    """
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
    from google.protobuf.message import DecodeError

    try:
        files = descriptor_pb2.FileDescriptorSet.FromString(data)
        pool = descriptor_pool.DescriptorPool()
        for file in files.file:
            pool.Add(file)
        classes: dict[str, type] = {}
        for file in files.file:
            descriptor = pool.FindFileByName(file.name)
            todo = list(descriptor.message_types_by_name.values())
            while todo:
                message = todo.pop()
                classes[message.full_name] = message_factory.GetMessageClass(message)
                todo.extend(message.nested_types)
        return classes
    except (DecodeError, TypeError, KeyError) as error:
        raise ValueError(f"not a FileDescriptorSet: {error}") from None


class DescribedMessages:
    """The message classes a server's ``_txgeerpc.Describe`` document
    defines (its ``"Protobuf"`` descriptor set), for the CLI: a JSON
    argument becomes the method's message (``json_format.ParseDict``), a
    received message is shown as JSON (``json_format.MessageToDict``).

    :raises ValueError: (constructor) the descriptor set is malformed.
    """

    def __init__(self, description: dict[str, Any] | None) -> None:
        encoded = (description or {}).get("Protobuf")
        self._description = description or {}
        self._classes: dict[str, type] = {}
        if isinstance(encoded, str):
            import base64
            import binascii

            try:
                data = base64.b64decode(encoded, validate=True)
            except (binascii.Error, ValueError):
                raise ValueError("the descriptor set is not base64") from None
            self._classes = classes_from_descriptor_set(data)

    def argument_class(self, service_method: str) -> type | None:
        """The message class ``service_method`` takes, if it takes one."""
        service, _, name = service_method.rpartition(".")
        method = self._description.get("Services", {}).get(service, {}).get(name) or {}
        return self._classes.get(method.get("ArgumentMessage", ""))

    def argument(self, service_method: str, value: Any) -> Any:
        """``value`` (JSON) as the message ``service_method`` takes, or as is
        for a method that takes none.

        :raises ValueError: it does not fit the message (json_format's text).
        """
        cls = self.argument_class(service_method)
        if cls is None:
            return value
        from google.protobuf import json_format

        try:
            return json_format.ParseDict({} if value is None else value, cls())
        except (json_format.ParseError, TypeError, ValueError, AttributeError) as error:
            raise ValueError(
                f"argument: not a {cls.DESCRIPTOR.full_name}: {_short(error)}"  # type: ignore[attr-defined]
            ) from None

    def shown(self, value: Any) -> Any:
        """A reply as JSON shows it: a received message through proto3's
        JSON mapping, anything else as is.

        :raises ValueError: a message of a type the server did not describe,
            or that does not parse.
        """
        if type(value) is not PackedMessage:
            return message_to_plain(value) if is_message(value) else value
        cls = self._classes.get(value.type_name)
        if cls is None:
            raise ValueError(
                f"the reply is a {value.type_name} message, which the server does not describe"
            )
        return message_to_plain(parse_message(cls, value.data))


__all__ = [
    "INSTALL",
    "DescribedMessages",
    "PackedMessage",
    "classes_from_descriptor_set",
    "descriptor_set",
    "is_message",
    "is_message_class",
    "message_converter",
    "message_cost",
    "message_to_plain",
    "parse_message",
    "parse_within",
    "require_protobuf",
]
