"""
The gob decoder: a sans-IO stream parser for one direction of one connection.

``feed`` bytes; ``next_message`` returns complete value messages, having
absorbed the type definitions in between; ``decode`` turns a message into
plain Python values (structs become dicts with every field present, zero
values included).  Type ids are taken from the peer's definitions, never
assumed.

Safety: a message larger than the limit is refused before it is buffered,
every count is checked against the bytes actually present before anything
is allocated, what a value's Python objects take is charged against a memory
budget proportional to its message before it is allocated (see
:meth:`Decoder.memory_budget`), and every failure is a :class:`~txgeerpc.errors.CodecError`
(one value's problem) or, when it concerns framing or type definitions, a
:class:`~txgeerpc.errors.ProtocolError` (fatal to the stream).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

from .._budget import (
    EXPANSION,
    EXPANSION_CAP,
    EXPANSION_FLOOR,
    LIST_COST,
    MAP_COST,
    MAP_ENTRY_COST,
    SLOT_COST,
    memory_budget,
    over_budget,
)
from .._convert import MAX_DEPTH as _MAX_DEPTH
from .._convert import ConversionError, convert_within, converter_for
from ..errors import BodyTooLarge, CodecError, MessageTooLarge, ProtocolError
from ._numbers import (
    _ONE_BYTE_FLOATS,
    _ONE_BYTE_INTS,
    Buffer,
    Truncated,
    read_float,
    read_int,
    read_uint,
)
from ._scan import NeedMore, ValueScan
from ._types import (
    BOOL_ID,
    BYTES_ID,
    COMPLEX_ID,
    FIRST_USER_ID,
    FLOAT_ID,
    INT_ID,
    INTERFACE_ID,
    STRING_ID,
    UINT_ID,
    class_for_name,
)

DecodeFn = Callable[[bytes, int], tuple[Any, int]]

DEFAULT_MAX_TYPES = 10_000

SKIP_FACTOR = 16
"""A value message over the limit but within this many times it is skipped
(see :meth:`Decoder.next_message`); a larger one ends the stream."""
MAX_DEPTH = _MAX_DEPTH
"""Lists, maps, structs and interfaces nested deeper than this are refused
(a :class:`~txgeerpc.errors.CodecError`): the same limit as conversion to
declared types, well within Python's recursion limit.  Go has none (its gob
only bounds the nesting of fields it skips, at 10,000)."""

# What one decoded object takes (CPython, 64 bits), charged before it is made.
_LIST_COST = LIST_COST
_SLOT_COST = SLOT_COST
_MAP_ENTRY_COST = MAP_ENTRY_COST
_MAP_COST = MAP_COST
# Scalars decoded from one byte are shared objects (_numbers); from more, new
# ones of at most this size, plus their content.
_SCALAR_COSTS = {
    INT_ID: sys.getsizeof(2**64),
    UINT_ID: sys.getsizeof(2**64),
    FLOAT_ID: sys.getsizeof(0.5),
    COMPLEX_ID: sys.getsizeof(0.5j),
    STRING_ID: sys.getsizeof(""),
    BYTES_ID: sys.getsizeof(b""),
}


# -- definitions received from the peer ----------------------------------------


class StructDef(NamedTuple):
    name: str
    fields: tuple[tuple[str, int], ...]


class SliceDef(NamedTuple):
    name: str
    elem: int


class ArrayDef(NamedTuple):
    name: str
    elem: int
    length: int


class MapDef(NamedTuple):
    name: str
    key: int
    elem: int


class OpaqueDef(NamedTuple):
    """A type with its own marshalling (GobEncoder, BinaryMarshaler,
    TextMarshaler): its values travel as byte strings."""

    name: str


WireDef = StructDef | SliceDef | ArrayDef | MapDef | OpaqueDef


class _Fields:
    """Reads the gob structs of a type definition."""

    __slots__ = ("data", "pos")

    def __init__(self, data: Buffer, pos: int) -> None:
        self.data = data
        self.pos = pos

    def fields(self) -> Iterator[int]:
        """The numbers of the fields present in the struct that starts here."""
        field = -1
        while True:
            delta, self.pos = read_uint(self.data, self.pos)
            if delta == 0:
                return
            field += delta
            yield field

    def signed(self) -> int:
        value, self.pos = read_int(self.data, self.pos)
        return value

    def uint(self) -> int:
        value, self.pos = read_uint(self.data, self.pos)
        return value

    def string(self) -> str:
        length = self.uint()
        end = self.pos + length
        if end > len(self.data):
            raise Truncated()
        text = self.data[self.pos : end].decode("utf-8", "surrogateescape")
        self.pos = end
        return text


def _read_common(reader: _Fields) -> tuple[str, int]:
    name, type_id = "", 0
    for field in reader.fields():
        if field == 0:
            name = reader.string()
        elif field == 1:
            type_id = reader.signed()
        else:
            raise CodecError(f"gob: bad CommonType field {field}")
    return name, type_id


def read_wire_type(data: Buffer, pos: int) -> tuple[WireDef, int]:
    """Decode a ``wireType`` (the payload of a type definition)."""
    reader = _Fields(data, pos)
    result: WireDef | None = None
    for kind in reader.fields():
        if result is not None:
            raise CodecError("gob: type definition describes more than one type")
        name = ""
        if kind == 0:  # ArrayT
            elem, length = 0, 0
            for field in reader.fields():
                if field == 0:
                    name, _ = _read_common(reader)
                elif field == 1:
                    elem = reader.signed()
                elif field == 2:
                    length = reader.signed()
                else:
                    raise CodecError(f"gob: bad arrayType field {field}")
            if length < 0:
                raise CodecError(f"gob: negative array length {length}")
            result = ArrayDef(name, elem, length)
        elif kind == 1:  # SliceT
            elem = 0
            for field in reader.fields():
                if field == 0:
                    name, _ = _read_common(reader)
                elif field == 1:
                    elem = reader.signed()
                else:
                    raise CodecError(f"gob: bad sliceType field {field}")
            result = SliceDef(name, elem)
        elif kind == 2:  # StructT
            fields: list[tuple[str, int]] = []
            for field in reader.fields():
                if field == 0:
                    name, _ = _read_common(reader)
                elif field == 1:
                    count = reader.uint()
                    if count > len(data) - reader.pos:
                        raise Truncated()
                    for _ in range(count):
                        field_name, field_id = "", 0
                        for part in reader.fields():
                            if part == 0:
                                field_name = reader.string()
                            elif part == 1:
                                field_id = reader.signed()
                            else:
                                raise CodecError(f"gob: bad fieldType field {part}")
                        fields.append((field_name, field_id))
                else:
                    raise CodecError(f"gob: bad structType field {field}")
            result = StructDef(name, tuple(fields))
        elif kind == 3:  # MapT
            key, elem = 0, 0
            for field in reader.fields():
                if field == 0:
                    name, _ = _read_common(reader)
                elif field == 1:
                    key = reader.signed()
                elif field == 2:
                    elem = reader.signed()
                else:
                    raise CodecError(f"gob: bad mapType field {field}")
            result = MapDef(name, key, elem)
        elif kind in (4, 5, 6):  # GobEncoderT, BinaryMarshalerT, TextMarshalerT
            for field in reader.fields():
                if field == 0:
                    name, _ = _read_common(reader)
                else:
                    raise CodecError(f"gob: bad gobEncoderType field {field}")
            result = OpaqueDef(name)
        else:
            raise CodecError(f"gob: unknown wireType field {kind}")
    if result is None:
        raise CodecError("gob: empty type definition")
    return result, reader.pos


# -- basic value decoders --------------------------------------------------------


def _dec_bool(data: bytes, pos: int) -> tuple[Any, int]:
    value, pos = read_uint(data, pos)
    return value != 0, pos


def read_string(data: bytes, pos: int) -> tuple[Any, int]:
    """A gob string at ``pos``: ``(text, position after it)``; invalid UTF-8
    is kept (surrogate-escaped), as Go keeps any bytes in a string.

    :raises CodecError: the data ends early.
    """
    length, pos = read_uint(data, pos)
    end = pos + length
    if end > len(data):
        raise Truncated()
    return data[pos:end].decode("utf-8", "surrogateescape"), end


def _dec_bytes(data: bytes, pos: int) -> tuple[Any, int]:
    length, pos = read_uint(data, pos)
    end = pos + length
    if end > len(data):
        raise Truncated()
    return data[pos:end], end


def _dec_complex(data: bytes, pos: int) -> tuple[Any, int]:
    real, pos = read_float(data, pos)
    imag, pos = read_float(data, pos)
    return complex(real, imag), pos


_BASIC_DECODERS: dict[int, DecodeFn] = {
    BOOL_ID: _dec_bool,
    INT_ID: read_int,
    UINT_ID: read_uint,
    FLOAT_ID: read_float,
    BYTES_ID: _dec_bytes,
    STRING_ID: read_string,
    COMPLEX_ID: _dec_complex,
}

_BASIC_ZEROS: dict[int, Any] = {
    BOOL_ID: False,
    INT_ID: 0,
    UINT_ID: 0,
    FLOAT_ID: 0.0,
    BYTES_ID: b"",
    STRING_ID: "",
    COMPLEX_ID: 0j,
    INTERFACE_ID: None,
}


class _StreamBroken(ProtocolError):
    """A definition inside a value is bad: the stream cannot go on.  Not a
    CodecError, so it is never mistaken for one value's problem."""


Message = tuple[int, bytes, int]
"""A complete value message, ``(type id, message bytes, where the value
starts)``: decode it with :meth:`Decoder.decode`.  A plain tuple: one is made
per message."""

_NO_BOUNDARIES: frozenset[int] = frozenset()


class _Decoded(NamedTuple):
    value: Any


class _Invalid(NamedTuple):
    error: CodecError


class _Oversized(NamedTuple):
    """A value message over the limit, skipped without being buffered."""

    size: int
    limit: int


class Decoder:
    """Gob stream decoder for one direction of one connection.

    :param max_message_size: the largest message accepted, in bytes.
    :param max_types: the most type definitions one stream may make.
    :param expansion: bytes of Python objects a value may take per byte of
        its message (see :meth:`memory_budget`).
    """

    def __init__(
        self,
        max_message_size: int,
        max_types: int = DEFAULT_MAX_TYPES,
        expansion: int = EXPANSION,
    ) -> None:
        self._buffer = bytearray()
        self._pos = 0
        self._max_size = max_message_size
        self._max_types = max_types
        self._expansion = expansion
        self._defs: dict[int, WireDef] = {}
        self._decoders: dict[int, DecodeFn] = {
            type_id: (
                self._charged(function, _SCALAR_COSTS[type_id])
                if type_id in _SCALAR_COSTS
                else function
            )
            for type_id, function in _BASIC_DECODERS.items()
        }
        self._top: dict[int, tuple[DecodeFn, bool]] = {}  # top-level: (decoder, is a struct)
        # Types from which an interface can be reached, kept up to date as
        # definitions arrive (each type enters once: linear in all the edges).
        self._with_interface: set[int] = {INTERFACE_ID}  # a top-level interface too
        self._parents: dict[int, list[int]] = {}
        self._definition_bytes = 0
        # A value spread over several messages: its scan so far.
        self._partial: tuple[ValueScan, int, bytearray, int] | None = None
        self._definitions_at: dict[int, int] = {}
        self._skip = 0  # bytes of an oversized message still to discard
        # Top-level type id -> its flat reader (see _flat_reader), or None.
        self._flat: dict[int, Callable[[bytes, int], Any] | None] = {}

    # -- framing --------------------------------------------------------------

    def feed(self, data: bytes) -> None:
        """Append bytes received from the peer."""
        if self._skip:  # the buffer holds nothing past the message being skipped
            skipped = min(self._skip, len(data))
            self._skip -= skipped
            data = data[skipped:]
        if self._pos and self._pos == len(self._buffer):
            self._buffer.clear()
            self._pos = 0
        self._buffer += data

    def definition(self, type_id: int) -> WireDef | None:
        """The peer's definition of ``type_id`` so far, or ``None``."""
        return self._defs.get(type_id)

    def buffered(self) -> int:
        """Bytes received and not yet returned as part of a message."""
        return len(self._buffer) - self._pos

    def _next_frame(self) -> bytes | _Oversized | None:
        if self._skip:
            return None
        buffer = self._buffer
        pos = self._pos
        available = len(buffer) - pos
        if available == 0:
            return None
        first = buffer[pos]
        if first < 128:
            length, start = first, pos + 1
        else:
            count = 256 - first
            if count > 8:
                raise ProtocolError("gob: invalid message length")
            if available < 1 + count:
                return None
            length = int.from_bytes(buffer[pos + 1 : pos + 1 + count], "big")
            start = pos + 1 + count
        if length > self._max_size:
            return self._oversized(start, length)
        if length == 0:
            raise ProtocolError("gob: empty message")
        end = start + length
        if end > len(buffer):
            return None
        frame = bytes(buffer[start:end])
        if end > 65536 and end * 2 > len(buffer):
            del buffer[:end]
            self._pos = 0
        else:
            self._pos = end
        return frame

    def _oversized(self, start: int, length: int) -> _Oversized | None:
        """A message over the limit: skipped (its bytes discarded as they come,
        never buffered) when it is a value that cannot hold type definitions,
        so that the stream goes on; otherwise (a definition, a value with
        interfaces, the continuation of a value) the stream cannot go on."""
        if self._partial is not None or length > SKIP_FACTOR * self._max_size:
            raise MessageTooLarge(length, self._max_size)
        try:
            type_id, _ = read_int(self._buffer, start)
        except CodecError:
            if len(self._buffer) - start < 9:
                return None  # the type id is not all here yet
            raise ProtocolError("gob: bad type id") from None
        if type_id <= 0 or type_id in self._with_interface:
            raise MessageTooLarge(length, self._max_size)
        buffer = self._buffer
        dropped = min(length, len(buffer) - start)
        del buffer[self._pos : start + dropped]
        self._skip = length - dropped
        return _Oversized(length, self._max_size)

    def next_message(self) -> Message | _Decoded | _Invalid | _Oversized | None:
        """The next value message, or ``None`` until more bytes are fed.

        :raises ProtocolError: the stream is corrupt (bad length, a message
            over the limit, a bad or duplicate type definition).
        """
        # The common message, read here: whole in the buffer, its length in
        # one byte, a value of a type without interfaces, its id in one or two
        # bytes (every header and small body).  Inline because it runs for
        # every message, where the general path costs three more calls; what
        # it does not take, the general path reads from the same place with
        # every check.  (While skipping, nothing is buffered past _pos.)
        buffer = self._buffer
        pos = self._pos
        size = len(buffer)
        if pos < size and self._partial is None:
            length = buffer[pos]
            end = pos + 1 + length
            if 1 < length < 128 and end <= size and length <= self._max_size:
                first = buffer[pos + 1]
                start = 1
                if first == 255:  # a one-byte id 64..127 (user types)
                    first, start = buffer[pos + 2], 2
                elif first >= 128:
                    first = 1  # longer: the general path
                type_id = first >> 1
                if not first & 1 and type_id and type_id not in self._with_interface:
                    if end > 65536 and end * 2 > size:
                        self._pos = 0
                        message = (type_id, bytes(buffer[pos + 1 : end]), start)
                        del buffer[:end]
                        return message
                    self._pos = end
                    return (type_id, bytes(buffer[pos + 1 : end]), start)
        return self._next_message()

    def _next_message(self) -> Message | _Decoded | _Invalid | _Oversized | None:
        """:meth:`next_message` for every message."""
        if self._partial is not None:
            return self._continue_partial()
        with_interface = self._with_interface
        while True:
            data = self._next_frame()
            if data is None:
                return None
            if type(data) is _Oversized:
                return data
            assert type(data) is bytes
            first = data[0]
            if first < 128:  # a one-byte type id (-64..63): a definition or a basic type
                type_id, pos = (-(first >> 1) - 1 if first & 1 else first >> 1), 1
            else:
                try:
                    type_id, pos = read_int(data, 0)
                except CodecError as error:
                    raise ProtocolError(str(error)) from None
            if type_id > 0:
                if type_id not in with_interface:
                    return (type_id, data, pos)
                return self._decode_eagerly(type_id, data, pos)
            if type_id == 0:
                raise ProtocolError("gob: invalid type id 0")
            try:
                end = self._define(-type_id, data, pos)
            except CodecError as error:
                raise ProtocolError(str(error)) from None
            if end != len(data):
                raise ProtocolError("gob: extra data in buffer")

    def _define(self, type_id: int, data: Buffer, pos: int) -> int:
        if type_id < FIRST_USER_ID:
            raise CodecError(f"gob: type id {type_id} is reserved")
        definition, end = read_wire_type(data, pos)
        if type_id in self._defs:
            raise CodecError("gob: duplicate type received")
        if len(self._defs) >= self._max_types:
            raise ProtocolError(f"gob: more than {self._max_types} type definitions")
        self._definition_bytes += end - pos
        if self._definition_bytes > 2 * self._max_size + 65536:
            raise ProtocolError(f"gob: type definitions exceed {2 * self._max_size} bytes")
        self._defs[type_id] = definition
        self._note_parts(type_id, definition)
        return end

    def _note_parts(self, type_id: int, definition: WireDef) -> None:
        if isinstance(definition, StructDef):
            parts = [field_id for _, field_id in definition.fields]
        elif isinstance(definition, (SliceDef, ArrayDef)):
            parts = [definition.elem]
        elif isinstance(definition, MapDef):
            parts = [definition.key, definition.elem]
        else:
            return
        reaches = False
        for part in parts:
            self._parents.setdefault(part, []).append(type_id)
            if part == INTERFACE_ID or part in self._with_interface:
                reaches = True
        if reaches:
            self._mark_with_interface(type_id)

    def _mark_with_interface(self, type_id: int) -> None:
        pending = [type_id]
        while pending:
            current = pending.pop()
            if current in self._with_interface:
                continue
            self._with_interface.add(current)
            pending.extend(self._parents.get(current, ()))

    # -- values that may span several messages ----------------------------------

    def _decode_eagerly(self, type_id: int, data: bytes, pos: int) -> _Decoded | _Invalid | None:
        is_struct = isinstance(self._defs.get(type_id), StructDef)
        scan = ValueScan(type_id, pos, is_struct, self._defs, self._define_inline)
        try:
            end = scan.scan(data)
        except NeedMore:
            self._partial = (scan, type_id, bytearray(data), pos)
            return self._continue_partial()
        except CodecError as error:
            # Go may have continued this value in messages still to come:
            # where it ends is unknowable, so the stream cannot go on.
            raise ProtocolError(f"{error} (in a value that holds interfaces)") from None
        return self._decode_scanned(scan, type_id, data, pos, end)

    def _continue_partial(self) -> _Decoded | _Invalid | None:
        assert self._partial is not None
        scan, type_id, data, pos = self._partial
        while True:
            more = self._next_frame()
            if more is None:
                self._partial = (scan, type_id, data, pos)
                return None
            assert type(more) is bytes  # an oversized continuation raised
            data += more  # a bytearray: appending is amortised, not a copy
            if len(data) > self._max_size:
                raise MessageTooLarge(len(data), self._max_size)
            try:
                end = scan.scan(data)
            except NeedMore:
                continue
            except CodecError as error:
                # Where this value's messages end is unknowable now: fatal.
                raise ProtocolError(f"{error} (in a value spread over several messages)") from None
            self._partial = None
            return self._decode_scanned(scan, type_id, bytes(data), pos, end)

    def _decode_scanned(
        self, scan: ValueScan, type_id: int, data: bytes, pos: int, end: int
    ) -> _Decoded | _Invalid:
        if end != len(data):
            extra = len(data) - end
            return _Invalid(CodecError(f"gob: {extra} bytes of extra data after the value"))
        self._definitions_at = scan.definitions_at
        try:
            return _Decoded(self._decode(type_id, data, pos, frozenset(scan.boundaries)))
        except CodecError as error:
            return _Invalid(error)
        finally:
            self._definitions_at = {}

    def _define_inline(self, type_id: int, data: Buffer, pos: int) -> int:
        """A definition inside a value: any problem with it ends the stream."""
        try:
            return self._define(type_id, data, pos)
        except (ProtocolError, CodecError) as error:
            raise _StreamBroken(str(error)) from None

    # -- values -----------------------------------------------------------------

    def decode(self, message: object) -> Any:
        """The plain Python value of a message from :meth:`next_message`.

        :raises CodecError: the value is malformed or uses an unknown type.
        """
        if type(message) is not tuple:
            if isinstance(message, _Decoded):
                return message.value
            if isinstance(message, _Invalid):
                raise message.error
            if isinstance(message, _Oversized):
                raise BodyTooLarge(message.size, message.limit)
            raise TypeError(f"not a gob message: {message!r}")
        type_id, data, pos = message
        flat = self._flat.get(type_id)
        if flat is None and type_id not in self._flat:
            if type_id in self._defs or type_id < FIRST_USER_ID:  # defined for good
                flat = self._flat[type_id] = self._flat_reader(type_id)
        if flat is not None:
            try:
                value = flat(data, pos)
            except IndexError:  # the data ends early: the general path says how
                value = _NOT_FLAT
            if value is not _NOT_FLAT:
                return value
        return self._decode(type_id, data, pos, _NO_BOUNDARIES)

    def _flat_reader(self, type_id: int) -> DecodeFn | None:
        """A reader for top-level values of ``type_id`` when it is a struct of
        ints, uints, strings, bools and floats (an argument such as
        ``Args{Num1, Num2 int}``) or one of those basic types (a reply), else
        ``None``: its result when it is a value, else ``_NOT_FLAT``.

        It exists because the general path costs about ten function calls for
        a two-int struct (the struct's decoder, a charging wrapper and a
        reader per field); this reads the fields with one call each.  It takes
        only valid values (one-byte deltas, numbers of at most eight bytes)
        and charges the memory budget exactly as the general path does; for
        anything else it returns ``_NOT_FLAT`` (or raises IndexError) and the
        general path decodes the same message and raises the same error."""
        definition = self._defs.get(type_id)
        expansion = self._expansion
        if definition is None:
            if type_id not in _FLAT_KINDS:
                return None
            kind = type_id

            one_byte = _ONE_BYTE_VALUES.get(kind)

            def read_scalar(data: bytes, pos: int) -> Any:
                if data[pos] != 0:  # a singleton's delta
                    return _NOT_FLAT
                end = len(data)
                budget = min(expansion * end + EXPANSION_FLOOR, EXPANSION_CAP)  # memory_budget
                first = data[pos + 1]
                if first < 128 and one_byte is not None and pos + 2 == end:
                    self._budget = budget
                    return one_byte[first]
                value, stop = _read_scalar(kind, data, pos + 1)
                if stop - pos > 2 and kind in _SCALAR_COSTS:  # a new object
                    budget -= _SCALAR_COSTS[kind] + stop - pos - 1
                if value is _NOT_FLAT or stop != end or budget < 0:
                    return _NOT_FLAT
                self._budget = budget
                return value

            return read_scalar
        if not isinstance(definition, StructDef) or not all(
            field_id in _FLAT_KINDS for _, field_id in definition.fields
        ):
            return None
        names = tuple(sys.intern(name) for name, _ in definition.fields)
        kinds = tuple(field_id for _, field_id in definition.fields)
        count = len(names)
        template = {name: _BASIC_ZEROS[kind] for name, kind in zip(names, kinds, strict=True)}
        struct_cost = sys.getsizeof(template.copy())
        one_bytes = tuple(_ONE_BYTE_VALUES.get(kind) for kind in kinds)

        def read(data: bytes, pos: int) -> Any:
            end = len(data)
            budget = min(expansion * end + EXPANSION_FLOOR, EXPANSION_CAP) - struct_cost
            if budget < 0:
                return _NOT_FLAT
            result = template.copy()
            field = -1
            while True:
                delta = data[pos]
                if delta == 0:
                    break
                field += delta
                if delta >= 128 or field >= count:
                    return _NOT_FLAT
                first = data[pos + 1]
                one_byte = one_bytes[field]
                if first < 128 and one_byte is not None:  # a shared object: no charge
                    result[names[field]] = one_byte[first]
                    pos += 2
                    continue
                kind = kinds[field]
                value, stop = _read_scalar(kind, data, pos + 1)
                if value is _NOT_FLAT:
                    return _NOT_FLAT
                if stop - pos > 2 and kind in _SCALAR_COSTS:  # a new object
                    budget -= _SCALAR_COSTS[kind] + stop - pos - 1
                    if budget < 0:
                        return _NOT_FLAT
                result[names[field]] = value
                pos = stop
            if pos + 1 != end:
                return _NOT_FLAT
            self._budget = budget
            return result

        return read

    def memory_budget(self, message_size: int) -> int:
        """Bytes of Python objects a value decoded from a message of
        ``message_size`` bytes may take: ``expansion`` times the message plus
        1 MiB, at most 256 MiB.  Every struct (a dict with every field, zeros
        included), list, map and unshared scalar is charged before it is made
        (a scalar, whose size its bytes bound, just after); past the budget the
        value is refused (a :class:`~txgeerpc.errors.CodecError`) instead of
        being built."""
        return memory_budget(message_size, self._expansion)

    def budget_left(self) -> int:
        """Bytes of the budget of the value last decoded that it did not
        take: what its conversion to the declared type may still take."""
        return max(self._budget, 0)

    def _over_budget(self) -> CodecError:
        return CodecError(f"gob: {over_budget(self._budget_total)}")

    def _charged(self, function: DecodeFn, cost: int) -> DecodeFn:
        """``function``, charging ``cost`` plus the bytes read for each value
        that took more than one byte (one-byte values are shared objects)."""

        def decode(data: bytes, pos: int) -> tuple[Any, int]:
            value, end = function(data, pos)
            if end - pos > 1:
                budget = self._budget = self._budget - cost - (end - pos)
                if budget < 0:
                    raise self._over_budget()
            return value, end

        return decode

    def _decode(self, type_id: int, data: bytes, pos: int, boundaries: frozenset[int]) -> Any:
        self._boundaries = boundaries
        # Structs come out with every field, zeros included: bound what a
        # small message can make us build (a struct type with thousands of
        # fields, sent as a slice of empty values) by what it really takes.
        self._budget = self._budget_total = self.memory_budget(len(data))
        self._depth = 0
        try:
            top = self._top.get(type_id)
            if top is None:
                top = self._top[type_id] = (
                    self.decoder_for(type_id),
                    isinstance(self._defs.get(type_id), StructDef),
                )
            function, is_struct = top
            if not is_struct:
                if data[pos] != 0:
                    raise CodecError("gob: corrupted data: non-zero delta for singleton")
                pos += 1
            value, end = function(data, pos)
        except (ProtocolError, CodecError):
            raise
        except (IndexError, OverflowError):
            raise Truncated() from None
        except RecursionError:
            raise CodecError("gob: value nested too deeply") from None
        except MemoryError:
            raise CodecError("gob: value too large to build") from None
        except Exception as error:  # e.g. a registered class refusing a value, an unhashable key
            raise CodecError(f"gob: {type(error).__name__}: {error}") from None
        if end != len(data):
            raise CodecError(f"gob: {len(data) - end} bytes of extra data after the value")
        return value

    def decoder_for(self, type_id: int) -> DecodeFn:
        """The function decoding values of ``type_id`` on this stream."""
        found = self._decoders.get(type_id)
        if found is not None:
            return found
        if type_id == INTERFACE_ID:
            self._decoders[type_id] = self._dec_interface
            return self._dec_interface
        definition = self._defs.get(type_id)
        if definition is None:
            raise CodecError(f"gob: unknown type id {type_id}")
        compiled: list[DecodeFn] = []

        def late(data: bytes, pos: int) -> tuple[Any, int]:
            return compiled[0](data, pos)

        self._decoders[type_id] = late  # a recursive type finds this
        try:
            function = self._compile(definition)
        except BaseException:
            del self._decoders[type_id]
            raise
        compiled.append(function)
        self._decoders[type_id] = function
        return function

    def _compile(self, definition: WireDef) -> DecodeFn:
        if isinstance(definition, StructDef):
            return self._struct_decoder(definition)
        if isinstance(definition, (SliceDef, ArrayDef)):
            return self._sequence_decoder(definition)
        if isinstance(definition, MapDef):
            return self._map_decoder(definition)
        return self._decoders[BYTES_ID]  # OpaqueDef: charged as []byte

    def _zero(self, type_id: int) -> tuple[Any, type | None]:
        """(immutable zero, or the type whose fresh instance is the zero)."""
        if type_id in _BASIC_ZEROS:
            return _BASIC_ZEROS[type_id], None
        definition = self._defs.get(type_id)
        if isinstance(definition, (SliceDef, ArrayDef)):
            return None, list
        if isinstance(definition, MapDef):
            return None, dict
        if isinstance(definition, OpaqueDef):
            return b"", None
        return None, None  # a struct left out was a nil pointer

    def _struct_decoder(self, definition: StructDef) -> DecodeFn:
        names = tuple(name for name, _ in definition.fields)
        count = len(names)
        decoders: list[DecodeFn] = []
        template: dict[str, Any] = {}
        fresh: list[tuple[str, type]] = []
        for name, field_id in definition.fields:
            zero, factory = self._zero(field_id)
            template[name] = zero
            if factory is not None:
                fresh.append((name, factory))
        field_ids = [field_id for _, field_id in definition.fields]
        # What each value takes: its dict (every field: a copy of the
        # template), and the fresh empty containers of fields left out.
        cost = sys.getsizeof(template.copy()) + sum(
            sys.getsizeof(factory()) for _, factory in fresh
        )

        def decode(data: bytes, pos: int) -> tuple[Any, int]:
            if len(decoders) != count:
                decoders[:] = [self.decoder_for(field_id) for field_id in field_ids]
            budget = self._budget = self._budget - cost
            if budget < 0:
                raise self._over_budget()
            depth = self._depth = self._depth + 1
            if depth > MAX_DEPTH:
                raise _too_deep()
            result = template.copy()
            field = -1
            while True:
                delta = data[pos]
                if delta < 128:
                    pos += 1
                else:
                    delta, pos = read_uint(data, pos)
                if delta == 0:
                    break
                field += delta
                if field >= count:
                    raise CodecError(f"gob: field number {field} out of range")
                result[names[field]], pos = decoders[field](data, pos)
            if fresh:
                for name, factory in fresh:
                    if result[name] is None:
                        result[name] = factory()
            self._depth = depth - 1
            return result, pos

        return decode

    def _sequence_decoder(self, definition: SliceDef | ArrayDef) -> DecodeFn:
        elem_id = definition.elem
        length = definition.length if isinstance(definition, ArrayDef) else None
        elem: list[DecodeFn] = []
        scalar_cost = _SCALAR_COSTS.get(elem_id, 0)
        raw_scalar = _BASIC_DECODERS.get(elem_id, _dec_bytes)

        def decode(data: bytes, pos: int) -> tuple[Any, int]:
            if not elem:
                elem.append(self.decoder_for(elem_id))
            count, pos = read_uint(data, pos)
            if count > len(data) - pos:  # every element takes at least one byte
                raise CodecError(f"gob: slice of {count} elements exceeds the message")
            if length is not None and count != length:
                raise CodecError(f"gob: array of {count} elements, type says {length}")
            budget = self._budget = self._budget - _LIST_COST - _SLOT_COST * count
            if budget < 0:
                raise self._over_budget()
            result: list[Any] = []
            append = result.append
            if scalar_cost:  # charged here, not per call of a charged decoder
                for _ in range(count):
                    start = pos
                    item, pos = raw_scalar(data, pos)
                    append(item)
                    if pos - start > 1:
                        budget -= scalar_cost + pos - start
                        if budget < 0:
                            raise self._over_budget()
                self._budget = budget
                return result, pos
            depth = self._depth = self._depth + 1
            if depth > MAX_DEPTH:
                raise _too_deep()
            decode_elem = elem[0]
            for _ in range(count):
                item, pos = decode_elem(data, pos)
                append(item)
            self._depth = depth - 1
            return result, pos

        return decode

    def _map_decoder(self, definition: MapDef) -> DecodeFn:
        parts: list[DecodeFn] = []

        def decode(data: bytes, pos: int) -> tuple[Any, int]:
            if not parts:
                parts.extend((self.decoder_for(definition.key), self.decoder_for(definition.elem)))
            decode_key, decode_elem = parts
            count, pos = read_uint(data, pos)
            if count * 2 > len(data) - pos:
                raise CodecError(f"gob: map of {count} entries exceeds the message")
            budget = self._budget = self._budget - _MAP_COST - _MAP_ENTRY_COST * count
            if budget < 0:
                raise self._over_budget()
            depth = self._depth = self._depth + 1
            if depth > MAX_DEPTH:
                raise _too_deep()
            result = {}
            for _ in range(count):
                key, pos = decode_key(data, pos)
                value, pos = decode_elem(data, pos)
                result[_hashable(key)] = value
            self._depth = depth - 1
            return result, pos

        return decode

    def _dec_interface(self, data: bytes, pos: int) -> tuple[Any, int]:
        length, pos = read_uint(data, pos)
        if length == 0:
            return None, pos  # the nil interface
        end = pos + length
        if end > len(data):
            raise Truncated()
        if length > 1024:
            raise CodecError(f"gob: interface type name too long ({length} bytes)")
        name = data[pos:end].decode("utf-8", "surrogateescape")
        pos = end
        # The concrete type's id, after any definitions sent inline (those the
        # scan registered are skipped; nested ones are registered here).
        while True:
            start = pos
            type_id, pos = read_int(data, pos)
            if type_id >= 0:
                break
            skip_to = self._definitions_at.get(start)
            pos = skip_to if skip_to is not None else self._define_inline(-type_id, data, pos)
            if pos != len(data) and pos not in self._boundaries:
                _, pos = read_uint(data, pos)  # a delimited value's count (Go skips it too)
        _, pos = read_uint(data, pos)  # the value's byte count
        if type_id == 0 or type_id == INTERFACE_ID:
            raise CodecError(f"gob: bad concrete type id {type_id} in interface")
        function = self.decoder_for(type_id)
        if not isinstance(self._defs.get(type_id), StructDef):
            if data[pos] != 0:
                raise CodecError("gob: corrupted data: non-zero delta for singleton")
            pos += 1
        depth = self._depth = self._depth + 1
        if depth > MAX_DEPTH:
            raise _too_deep()
        value, pos = function(data, pos)
        self._depth = depth - 1
        cls = class_for_name(name)
        if cls is not None:
            try:
                value, self._budget = convert_within(converter_for(cls), value, self._budget)
            except (ConversionError, TypeError, ValueError) as error:
                raise CodecError(f"gob: interface value {name}: {error}") from None
        return value, pos

    def next_value(self) -> tuple[Any] | None:
        """The next value as ``(value,)``, or ``None`` until more bytes arrive.

        :raises CodecError: the value (or the stream) is malformed.
        """
        message = self.next_message()
        if message is None:
            return None
        return (self.decode(message),)

    _boundaries: frozenset[int] = frozenset()
    _budget = 0
    _depth = 0
    _budget_total = 0


_NOT_FLAT: Any = object()
"""What a flat reader returns for a message it leaves to the general path."""

_FLAT_KINDS = frozenset((BOOL_ID, INT_ID, UINT_ID, FLOAT_ID, STRING_ID))

_ONE_BYTE_VALUES: dict[int, tuple[Any, ...]] = {
    BOOL_ID: tuple(n != 0 for n in range(128)),
    INT_ID: _ONE_BYTE_INTS,
    UINT_ID: tuple(range(128)),
    FLOAT_ID: _ONE_BYTE_FLOATS,
}


def _read_scalar(kind: int, data: bytes, pos: int) -> tuple[Any, int]:
    """A flat reader's scalar: ``(value, position after it)``, or
    ``(_NOT_FLAT, pos)`` where the general path must say what is wrong."""
    first = data[pos]
    if first < 128:
        if kind == STRING_ID:
            end = pos + 1 + first
            if end > len(data):
                return _NOT_FLAT, pos
            return data[pos + 1 : end].decode("utf-8", "surrogateescape"), end
        return _ONE_BYTE_VALUES[kind][first], pos + 1
    try:
        return _BASIC_DECODERS[kind](data, pos)
    except CodecError:
        return _NOT_FLAT, pos


def _too_deep() -> CodecError:
    return CodecError(f"gob: value nested more than {MAX_DEPTH} levels deep")


def _hashable(key: Any) -> Any:
    if isinstance(key, list):
        return tuple(_hashable(item) for item in key)
    if isinstance(key, dict):
        return tuple((name, _hashable(item)) for name, item in key.items())
    return key
