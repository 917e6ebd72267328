"""
The gob encoder: Python values to gob messages, one encoder per connection
and direction.

Each message the encoder returns is self-contained in Go's sense: the
definitions of every type it uses for the first time (including concrete
types inside interface values) come first, each as its own message, parent
before children, as Go sends them; then the value message.  Type ids are
handed out from 64 in first-use order, so the GeeRPC ``Header`` is 64 and the
first body type 65, as in the recorded Go sessions.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from .._convert import join_path
from ..errors import CodecError
from ._numbers import SMALL, float_bits, uint_bytes, write_int, write_uint
from ._types import (
    BOOL,
    BYTES,
    COMPLEX,
    FIRST_USER_ID,
    FLOAT,
    INT,
    INT64_MAX,
    INT64_MIN,
    INTERFACE,
    STRING,
    UINT,
    UINT64_MAX,
    ArrayOf,
    Basic,
    GobType,
    GobValue,
    MapOf,
    SliceOf,
    StructOf,
    UnsupportedType,
    gob_type_for,
    infer_type,
    interface_name,
)

EncodeFn = Callable[[Any, bytearray, "Encoder"], None]


class EncodeError(CodecError):
    """A value does not fit its Go type; ``path`` says where (``Args.Num1``)."""

    def __init__(self, path: str, problem: str) -> None:
        super().__init__(f"gob: {path}: {problem}" if path else f"gob: {problem}")
        self.path = path
        self.problem = problem

    def within(self, outer: str) -> EncodeError:
        return EncodeError(join_path(outer, self.path), self.problem)


class Encoder:
    """Encodes values as gob messages for one direction of one connection.

    ``encode`` either returns all the bytes of one value (definitions
    included) or raises :class:`~txgeerpc.errors.CodecError` and changes
    nothing, so the next value encodes as if the failed one was never tried.
    """

    def __init__(self) -> None:
        self._ids: dict[GobType, int] = {}
        self._next_id = FIRST_USER_ID
        # During one encode: types defined by this message, not yet committed.
        self._new: dict[GobType, int] = {}
        self._emitted: set[GobType] = set()  # defined in the current message
        # Annotation or type -> (type id bytes, value encoder), for types sent.
        self._fast: dict[Any, tuple[bytes, EncodeFn]] = {}
        # A dict's keys -> (type id bytes, plan) of the flat struct it was
        # inferred as, for types sent (see _encode_flat_dict).
        self._flat_dicts: dict[tuple[Any, ...], tuple[bytes, FlatPlan]] = {}
        self._definitions: list[bytes] = []

    def encode(self, value: Any, annotation: Any = None) -> bytes:
        """One value (and any type definitions it needs) as gob messages.

        :param annotation: the value's declared type (``int``, a dataclass,
            ``list[str]``, :data:`~txgeerpc.gob.Uint`, a ``GobType``...);
            ``None`` infers it from the value.
        :raises CodecError: the value has no gob form or does not fit the type.
        """
        if annotation is None and type(value) is dict:
            message = self._encode_flat_dict(value)
            if message is not None:
                return message
        # Fast path: a type already sent that cannot bring new types with it.
        try:
            if annotation is None:
                kind = infer_type(value) if type(value) is not GobValue else None
                key: Any = kind
            else:
                kind = None
                key = annotation
            fast = self._fast.get(key) if key is not None else None
            if fast is not None:
                payload = bytearray(fast[0])  # the type id (and singleton mark)
                fast[1](value, payload, self)
                length = len(payload)
                return (SMALL[length] if length < 128 else uint_bytes(length)) + payload
            if kind is None and annotation is not None:
                kind = gob_type_for(annotation)
            if kind is not None and _self_contained(kind):
                type_id = kind.basic_id if kind.basic_id is not None else self._ids.get(kind)
                if type_id is not None:
                    prefix = bytearray()
                    write_int(prefix, type_id)
                    if not isinstance(kind, StructOf):
                        prefix.append(0)
                    function = encoder_for(kind)
                    if len(self._fast) < 256:
                        self._fast[key] = (bytes(prefix), function)
                        if type(value) is dict and isinstance(kind, StructOf):
                            self._note_flat_dict(value, kind, bytes(prefix))
                    payload = prefix
                    function(value, payload, self)
                    return uint_bytes(len(payload)) + payload
        except UnsupportedType as error:
            raise CodecError(str(error)) from None
        except RecursionError:
            raise CodecError("gob: value nested too deeply (or it contains itself)") from None
        return self.encode_all(((value, annotation),))

    def _encode_flat_dict(self, value: dict[Any, Any]) -> bytes | None:
        """A dict with the keys of a flat struct it was inferred as before
        (``{"Num1": 6, "Num2": 7}``, a client's argument), when every value is
        exactly of its field's Python type: the struct :func:`infer_type`
        would infer again.  It exists because inferring walks the keys and
        the values' types on every call; ``None`` (the general path) for
        anything else, a ``None`` value included (inference leaves it out)."""
        known = self._flat_dicts.get(tuple(value))
        if known is None:
            return None
        items = tuple(value.values())
        if None in items:
            return None
        payload = bytearray(known[0])
        if not _write_flat(known[1], items, payload):
            return None
        length = len(payload)
        return (SMALL[length] if length < 128 else uint_bytes(length)) + payload

    def _note_flat_dict(self, value: dict[Any, Any], kind: StructOf, prefix: bytes) -> None:
        """Remember ``value``'s keys for :meth:`_encode_flat_dict` when the
        struct inferred from it is flat and has exactly those fields."""
        plan = _flat_plan(kind)
        keys = tuple(value)
        if (
            plan is not None
            and kind.by_shape
            and all(field is not UINT for _, field in plan)  # ints above int64: inferred anew
            and keys == tuple(go_name for go_name, _, _ in kind.fields)
        ):
            self._flat_dicts[keys] = (prefix, plan)

    def encode_all(self, values: Iterable[tuple[Any, Any]]) -> bytes:
        """Several ``(value, annotation)`` pairs, all or nothing."""
        start = self._next_id
        committed = False
        try:
            messages = []
            for value, annotation in values:
                messages.append(self._encode_one(value, annotation))
            self._ids.update(self._new)
            committed = True
            return b"".join(messages)
        except UnsupportedType as error:
            raise CodecError(str(error)) from None
        except RecursionError:
            raise CodecError("gob: value nested too deeply (or it contains itself)") from None
        finally:
            if not committed:
                self._next_id = start
            self._new = {}
            self._emitted = set()
            self._definitions = []

    def _encode_one(self, value: Any, annotation: Any) -> bytes:
        if annotation is None:
            if isinstance(value, GobValue):
                value, kind = value.value, value.gob_type
            else:
                kind = infer_type(value)
        else:
            kind = gob_type_for(annotation)
        payload = bytearray()
        write_int(payload, self.type_id(kind))
        if not isinstance(kind, StructOf):
            payload.append(0)  # a non-struct top-level value is a singleton field
        encoder_for(kind)(value, payload, self)
        message = uint_bytes(len(payload)) + payload
        if self._definitions:
            message = b"".join(self._definitions) + message
            self._definitions = []
        return message

    def known_id(self, kind: GobType) -> int | None:
        """The id ``kind`` already has on this stream, if it was sent."""
        if kind.basic_id is not None:
            return kind.basic_id
        return self._ids.get(kind)

    def type_id(self, kind: GobType) -> int:
        """The id of ``kind`` on this stream, defining it (and every type it
        is made of) in the current message if it is new."""
        if kind.basic_id is not None:
            return kind.basic_id
        known = self._ids.get(kind)
        if known is None:
            known = self._new.get(kind)
        if known is not None:
            return known
        # Ids in Go's order: a struct before its fields (so it can contain
        # itself), any other type after its parts.  Definitions go parent first.
        self._assign(kind)
        self._emit(kind, self._emitted)
        return self._new[kind]

    def _assign(self, kind: GobType) -> None:
        if kind.basic_id is not None or kind in self._ids or kind in self._new:
            return
        if isinstance(kind, StructOf):
            self._new[kind] = self._next_id
            self._next_id += 1
            for part in _parts(kind):
                self._assign(part)
        else:
            for part in _parts(kind):
                self._assign(part)
            self._new[kind] = self._next_id
            self._next_id += 1

    def _emit(self, kind: GobType, emitted: set[GobType]) -> None:
        if kind.basic_id is not None or kind in self._ids or kind in self._emitted:
            return
        self._emitted.add(kind)
        self._definitions.append(self._definition(kind))
        for part in _parts(kind):
            self._emit(part, emitted)

    def _id(self, kind: GobType) -> int:
        if kind.basic_id is not None:
            return kind.basic_id
        known = self._ids.get(kind)
        return known if known is not None else self._new[kind]

    def _definition(self, kind: GobType) -> bytes:
        """The message defining ``kind``: ``-id`` then a ``wireType``."""
        out = bytearray()
        write_int(out, -self._id(kind))
        if isinstance(kind, ArrayOf):
            out.append(1)  # wireType.ArrayT
            _common(out, kind.name, self._id(kind))
            out.append(1)
            write_int(out, self._id(kind.elem))
            if kind.length:
                out.append(1)
                write_int(out, kind.length)
            out.append(0)
        elif isinstance(kind, SliceOf):
            out.append(2)  # wireType.SliceT
            _common(out, kind.name, self._id(kind))
            out.append(1)
            write_int(out, self._id(kind.elem))
            out.append(0)
        elif isinstance(kind, StructOf):
            out.append(3)  # wireType.StructT
            _common(out, kind.name, self._id(kind))
            if kind.fields:
                out.append(1)
                write_uint(out, len(kind.fields))
                for go_name, _, field_kind in kind.fields:
                    name = go_name.encode()
                    out.append(1)
                    write_uint(out, len(name))
                    out += name
                    out.append(1)
                    write_int(out, self._id(field_kind))
                    out.append(0)
            out.append(0)
        elif isinstance(kind, MapOf):
            out.append(4)  # wireType.MapT
            _common(out, kind.name, self._id(kind))
            out.append(1)
            write_int(out, self._id(kind.key))
            out.append(1)
            write_int(out, self._id(kind.elem))
            out.append(0)
        else:  # pragma: no cover - basic types are never defined
            raise AssertionError(kind)
        out.append(0)  # end of wireType
        return uint_bytes(len(out)) + out


def _common(out: bytearray, name: str, type_id: int) -> None:
    """``CommonType{Name, Id}`` as the first field of the inner type."""
    out.append(1)
    encoded = name.encode()
    if encoded:
        out.append(1)
        write_uint(out, len(encoded))
        out += encoded
        out.append(1)
    else:
        out.append(2)
    write_int(out, type_id)
    out.append(0)


_CACHE_LIMIT = 10_000
_self_contained_cache: dict[GobType, bool] = {}


def _self_contained(kind: GobType) -> bool:
    """True when values of ``kind`` never carry an interface (whose concrete
    types could need definitions of their own)."""
    known = _self_contained_cache.get(kind)
    if known is None:
        if len(_self_contained_cache) > _CACHE_LIMIT:  # dict shapes are unbounded
            _self_contained_cache.clear()
        known = _self_contained_cache[kind] = _no_interface(kind, set())
    return known


def _no_interface(kind: GobType, seen: set[int]) -> bool:
    if kind is INTERFACE:
        return False
    if id(kind) in seen:
        return True
    seen.add(id(kind))
    return all(_no_interface(part, seen) for part in _parts(kind))


def _parts(kind: GobType) -> list[GobType]:
    if isinstance(kind, (SliceOf, ArrayOf)):
        return [kind.elem]
    if isinstance(kind, MapOf):
        return [kind.key, kind.elem]
    if isinstance(kind, StructOf):
        return [field_kind for _, _, field_kind in kind.fields]
    return []


# -- value encoders (shared by all encoders; cached per type) -------------------


def _describe(value: Any) -> str:
    text = repr(value)
    if len(text) > 40:
        text = text[:37] + "..."
    return f"{type(value).__name__} {text}"


def _unwrap(value: Any, kind: GobType) -> Any:
    """The value inside a :class:`GobValue` of exactly this type (as inferred
    lists and dicts hold them); anything else unchanged."""
    if type(value) is GobValue and value.gob_type is kind:
        return value.value
    return value


def _enc_int(value: Any, out: bytearray, encoder: Encoder) -> None:
    if type(value) is not int:
        value = _unwrap(value, INT)
        if isinstance(value, bool) or not isinstance(value, int):
            raise EncodeError("", f"expected int, got {_describe(value)}")
        value = int(value)
    if not INT64_MIN <= value <= INT64_MAX:
        raise EncodeError("", f"{value} overflows Go int (int64)")
    value = value << 1 if value >= 0 else (~value << 1) | 1  # zig-zag (write_int)
    if value < 128:
        out.append(value)
    else:
        write_uint(out, value)


def _enc_uint(value: Any, out: bytearray, encoder: Encoder) -> None:
    if type(value) is not int:
        value = _unwrap(value, UINT)
        if isinstance(value, bool) or not isinstance(value, int):
            raise EncodeError("", f"expected unsigned int, got {_describe(value)}")
        value = int(value)
    if not 0 <= value <= UINT64_MAX:
        raise EncodeError("", f"{value} does not fit Go uint64")
    write_uint(out, value)


def _enc_float(value: Any, out: bytearray, encoder: Encoder) -> None:
    if type(value) is not float:
        value = _unwrap(value, FLOAT)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise EncodeError("", f"expected float, got {_describe(value)}")
        try:
            value = float(value)
        except OverflowError:
            raise EncodeError("", f"{value} overflows float64") from None
    write_uint(out, float_bits(value))


def _enc_complex(value: Any, out: bytearray, encoder: Encoder) -> None:
    value = _unwrap(value, COMPLEX)
    if isinstance(value, bool) or not isinstance(value, (int, float, complex)):
        raise EncodeError("", f"expected complex, got {_describe(value)}")
    value = complex(value)
    write_uint(out, float_bits(value.real))
    write_uint(out, float_bits(value.imag))


def _enc_bool(value: Any, out: bytearray, encoder: Encoder) -> None:
    value = _unwrap(value, BOOL)
    if value is True:
        out.append(1)
    elif value is False:
        out.append(0)
    else:
        raise EncodeError("", f"expected bool, got {_describe(value)}")


def _enc_string(value: Any, out: bytearray, encoder: Encoder) -> None:
    if type(value) is not str:
        value = _unwrap(value, STRING)
        if not isinstance(value, str):
            raise EncodeError("", f"expected str, got {_describe(value)}")
    data = utf8(value)
    length = len(data)
    if length < 128:
        out.append(length)
    else:
        write_uint(out, length)
    out += data


def utf8(text: str) -> bytes:
    """UTF-8 bytes of ``text``.  Bytes a Go string held that are not UTF-8
    were decoded as ``surrogateescape`` characters and go back as they came;
    any other lone surrogate becomes U+FFFD, as in JSON."""
    try:
        return text.encode()
    except UnicodeEncodeError:
        pass
    try:
        return text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace").encode()


def _enc_bytes(value: Any, out: bytearray, encoder: Encoder) -> None:
    value = _unwrap(value, BYTES)
    if not isinstance(value, (bytes, bytearray, memoryview)):
        raise EncodeError("", f"expected bytes, got {_describe(value)}")
    data = bytes(value) if isinstance(value, memoryview) else value
    write_uint(out, len(data))
    out += data


def _enc_interface(value: Any, out: bytearray, encoder: Encoder) -> None:
    if value is None:
        out.append(0)  # the nil interface: an empty name
        return
    if isinstance(value, GobValue):
        kind, value = value.gob_type, value.value
    else:
        kind = infer_type(value)
    name = interface_name(kind)
    if name is None:
        raise EncodeError(
            "",
            f"type not registered for interface: {kind.name or _describe(value)}"
            " (txgeerpc.gob.register_name)",
        )
    encoded = name.encode()
    write_uint(out, len(encoded))
    out += encoded
    write_int(out, encoder.type_id(kind))
    inner = bytearray()
    if not isinstance(kind, StructOf):
        inner.append(0)
    encoder_for(kind)(value, inner, encoder)
    write_uint(out, len(inner))
    out += inner


_BASIC_ENCODERS: dict[GobType, EncodeFn] = {
    INT: _enc_int,
    UINT: _enc_uint,
    FLOAT: _enc_float,
    COMPLEX: _enc_complex,
    BOOL: _enc_bool,
    STRING: _enc_string,
    BYTES: _enc_bytes,
    INTERFACE: _enc_interface,
}

_encoders: dict[GobType, EncodeFn] = dict(_BASIC_ENCODERS)


def encoder_for(kind: GobType) -> EncodeFn:
    """The function writing values of ``kind`` (cached; recursion-safe)."""
    found = _encoders.get(kind)
    if found is not None:
        return found
    if len(_encoders) > _CACHE_LIMIT:  # dict shapes are unbounded: start over
        _encoders.clear()
        _encoders.update(_BASIC_ENCODERS)
    compiled: list[EncodeFn] = []

    def late(value: Any, out: bytearray, encoder: Encoder) -> None:
        compiled[0](value, out, encoder)

    _encoders[kind] = late  # a struct that contains itself finds this
    try:
        function = _compile(kind)
    except BaseException:
        del _encoders[kind]
        raise
    compiled.append(function)
    _encoders[kind] = function
    return function


def _compile(kind: GobType) -> EncodeFn:
    if isinstance(kind, SliceOf):
        return _sequence_encoder(kind.elem, None)
    if isinstance(kind, ArrayOf):
        return _sequence_encoder(kind.elem, kind.length)
    if isinstance(kind, MapOf):
        return _map_encoder(kind)
    if isinstance(kind, StructOf):
        return _struct_encoder(kind)
    raise UnsupportedType(f"gob: cannot encode {kind!r}")  # pragma: no cover


def _sequence_encoder(elem: GobType, length: int | None) -> EncodeFn:
    encode_elem = encoder_for(elem)

    def encode(value: Any, out: bytearray, encoder: Encoder) -> None:
        if value is None:
            value = ()
        elif isinstance(value, (str, bytes, Mapping)) or not hasattr(value, "__len__"):
            raise EncodeError("", f"expected a list, got {_describe(value)}")
        if length is not None and len(value) != length:
            raise EncodeError("", f"expected {length} elements, got {len(value)}")
        write_uint(out, len(value))
        index = 0
        try:
            for index, item in enumerate(value):  # noqa: B007
                encode_elem(item, out, encoder)
        except EncodeError as error:
            raise error.within(f"[{index}]") from None

    return encode


def _map_encoder(kind: MapOf) -> EncodeFn:
    encode_key = encoder_for(kind.key)
    encode_elem = encoder_for(kind.elem)

    def encode(value: Any, out: bytearray, encoder: Encoder) -> None:
        if value is None:
            value = {}
        elif not isinstance(value, Mapping):
            raise EncodeError("", f"expected a dict, got {_describe(value)}")
        write_uint(out, len(value))
        key = None
        try:
            for key, item in value.items():
                encode_key(key, out, encoder)
                encode_elem(item, out, encoder)
        except EncodeError as error:
            raise error.within(f"[{key!r}]") from None

    return encode


def _is_zero_for(kind: GobType) -> Callable[[Any], bool]:
    """Go omits struct fields holding their zero value, except structs, arrays
    and maps (sent unless nil).  Only a zero *of the field's type* counts:
    anything else goes on to the field's encoder, which refuses it."""
    if kind in (INT, UINT):
        return lambda value: value is None or (type(value) is int and value == 0)
    if kind is FLOAT:
        return lambda value: value is None or (type(value) in (int, float) and value == 0)
    if kind is COMPLEX:
        return lambda value: value is None or (type(value) in (int, float, complex) and value == 0)
    if kind is BOOL:
        return lambda value: value is None or value is False
    if kind is STRING:
        return lambda value: value is None or (type(value) is str and not value)
    if kind is BYTES:
        return lambda value: (
            value is None or (isinstance(value, (bytes, bytearray, memoryview)) and len(value) == 0)
        )
    if isinstance(kind, SliceOf):
        return lambda value: value is None or (isinstance(value, (list, tuple)) and not value)
    return lambda value: value is None  # structs, arrays, maps, interfaces


_FLAT_FIELDS = (INT, UINT, STRING, BOOL, FLOAT)


FlatPlan = tuple[tuple[int, GobType], ...]
"""A flat struct's fields: ``(number, type)`` each, every type in ``_FLAT_FIELDS``."""


def _flat_plan(kind: StructOf) -> FlatPlan | None:
    """The plan of a struct of ints, uints, strings, bools and floats (fewer
    than 128 fields: every delta one byte), or ``None``."""
    fields = kind.fields
    if 0 < len(fields) < 128 and all(field in _FLAT_FIELDS for _, _, field in fields):
        return tuple(enumerate(field for _, _, field in fields))
    return None


def _write_flat(plan: FlatPlan, items: Iterable[Any], out: bytearray) -> bool:
    """Write a flat struct's field values (``items``, in field order) and its
    end; ``None`` and zeros are left out, as Go leaves zeros out.

    It exists because the general struct encoder makes five function calls
    per field (the lookups, the zero test, the field's encoder and its
    writer); this makes none for ints.  It writes only values of exactly
    their field's Python type within its range: for anything else it takes
    back what it wrote and returns False, and the caller hands the value to
    the general path (which writes it or raises the error that says what is
    wrong)."""
    start = len(out)
    last = -1
    for (number, field_kind), item in zip(plan, items, strict=False):  # same lengths
        if item is None:
            continue
        if field_kind is STRING and type(item) is str:
            if not item:
                continue
            try:
                data = item.encode()
            except UnicodeEncodeError:  # surrogates: utf8() in the general path
                break
            out.append(number - last)
            last = number
            write_uint(out, len(data))
            out += data
            continue
        if type(item) is int and (field_kind is INT or field_kind is UINT):
            if not item:
                continue
            if field_kind is INT:
                if not INT64_MIN <= item <= INT64_MAX:
                    break
                item = item << 1 if item > 0 else (~item << 1) | 1  # zig-zag
            elif not 0 < item <= UINT64_MAX:
                break
        elif field_kind is BOOL and (item is True or item is False):
            if not item:
                continue
            item = 1
        elif field_kind is FLOAT and type(item) is float:
            if not item:
                continue
            item = float_bits(item)
        else:
            break
        out.append(number - last)
        last = number
        if item < 128:
            out.append(item)
        else:
            write_uint(out, item)
    else:
        out.append(0)
        return True
    del out[start:]
    return False


def _flat_struct_encoder(kind: StructOf, plan: FlatPlan, general: EncodeFn) -> EncodeFn:
    """The encoder of a flat struct (see :func:`_write_flat`, why it exists)
    given as an instance of its class or a dict with every field; anything
    else, and anything :func:`_write_flat` does not take, goes to ``general``."""
    fields = kind.fields
    cls = kind.cls
    single = len(fields) == 1
    by_attribute = operator.attrgetter(*(attribute for _, attribute, _ in fields))
    by_key = None
    if all(go_name == attribute for go_name, attribute, _ in fields):
        by_key = operator.itemgetter(*(go_name for go_name, _, _ in fields))

    def encode(value: Any, out: bytearray, encoder: Encoder) -> None:
        if cls is not None and type(value) is cls:
            items = by_attribute(value)
        elif type(value) is dict and by_key is not None:
            try:
                items = by_key(value)
            except KeyError:  # a field left out: the general path
                general(value, out, encoder)
                return
        else:
            general(value, out, encoder)
            return
        if not _write_flat(plan, (items,) if single else items, out):
            general(value, out, encoder)

    return encode


def _struct_encoder(kind: StructOf) -> EncodeFn:
    plan: list[tuple[int, str, str, EncodeFn, Callable[[Any], bool]]] = []
    cls = kind.cls
    fields = kind.fields

    def build() -> None:
        # Built whole, then published: a RecursionError half way must not
        # leave a plan that silently drops the remaining fields.
        plan[:] = [
            (number, go_name, attribute, encoder_for(field_kind), _is_zero_for(field_kind))
            for number, (go_name, attribute, field_kind) in enumerate(fields)
        ]

    type_name = kind.name or "struct"

    def encode(value: Any, out: bytearray, encoder: Encoder) -> None:
        if not plan and fields:
            build()
        if cls is not None and isinstance(value, cls):
            by_attribute = True
        elif isinstance(value, Mapping):
            by_attribute = False
        elif value is None:
            value, by_attribute = {}, False
        else:
            raise EncodeError("", f"expected {type_name}, got {_describe(value)}")
        last = -1
        go_name = ""
        try:
            for number, go_name, attribute, encode_field, is_zero in plan:
                if by_attribute:
                    field_value = getattr(value, attribute)
                else:  # a mapping: keyed by Go field name (or the Python attribute name)
                    field_value = value.get(go_name, value.get(attribute))
                if is_zero(field_value):
                    continue
                delta = number - last
                if delta < 128:
                    out.append(delta)
                else:
                    write_uint(out, delta)
                last = number
                encode_field(field_value, out, encoder)
        except EncodeError as error:
            raise error.within(f"{type_name}.{go_name}") from None
        out.append(0)

    flat = _flat_plan(kind)
    if flat is not None:
        return _flat_struct_encoder(kind, flat, encode)
    return encode


__all__ = ["Basic", "EncodeError", "Encoder", "encoder_for", "utf8"]
