"""
Finding where a gob value ends when it spans several messages.

Go's encoder splits a value across messages when an interface inside it holds
a type not sent before: the type's definition is written inline and flushed
as a message, and the value goes on in the next one.  A decoder cannot know
the value is incomplete without walking it.  :class:`ValueScan` walks a
value's bytes by its type without building anything, iteratively (no
recursion, whatever the nesting), and *resumably*: when the bytes run out at
a point where Go may continue in the next message, it stops, and carries on
from there when that message is appended.  The value is decoded once, after
the scan has found its end, so a value split into many messages costs no more
than one in a single message.

The scan registers every definition it meets inside the value (the decoder
then skips them), so each is read exactly once and a repeated one is refused,
as Go refuses it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..errors import CodecError
from ._numbers import Buffer, Truncated, read_int, read_uint

# Work items on the scan stack.
_VALUE = 0  # (_VALUE, type_id): one value of this type
_FIELDS = 1  # (_FIELDS, field type ids, last field number): the rest of a struct
_REPEAT = 2  # (_REPEAT, type_id, count): this many more values of this type
_PAIRS = 3  # (_PAIRS, key id, elem id, count): this many more map entries
_TYPE_SEQUENCE = 4  # (_TYPE_SEQUENCE,): an interface's definitions and concrete type id
_SINGLETON = 5  # (_SINGLETON,): the 0 in front of a non-struct value in an interface


class NeedMore(Exception):
    """The value goes on in the next message."""


class ValueScan:
    """A resumable walk over one value.

    :param definitions: the stream's type definitions (``id -> WireDef``),
        including those the scan registers as it meets them.
    :param define: registers an inline definition of ``id`` read from
        ``data`` at ``pos``; returns the position after it (raises if the
        definition is bad or a duplicate, which ends the stream).
    """

    def __init__(
        self,
        type_id: int,
        pos: int,
        is_struct: bool,
        definitions: dict[int, Any],
        define: Callable[[int, Buffer, int], int],
    ) -> None:
        self._definitions = definitions
        self._define = define
        self._stack: list[tuple[Any, ...]] = [(_VALUE, type_id)]
        self._pos = pos
        self._singleton = not is_struct
        self.boundaries: set[int] = set()
        """Positions where a new message's bytes begin in the joined value."""
        self.definitions_at: dict[int, int] = {}
        """Start -> end of each inline definition met (the decoder skips them)."""

    def scan(self, data: Buffer) -> int:
        """Walk on through ``data`` (everything so far: earlier bytes plus the
        messages appended since); the position where the value ends.

        :raises NeedMore: call again with the next message appended.
        :raises CodecError: the value is malformed.
        """
        from ._decoder import ArrayDef, MapDef, OpaqueDef, SliceDef, StructDef

        pos = self._pos
        stack = self._stack
        definitions = self._definitions
        if self._singleton:
            if pos >= len(data):
                raise Truncated()
            if data[pos] != 0:
                raise CodecError("gob: corrupted data: non-zero delta for singleton")
            pos += 1
            self._singleton = False
        while stack:
            item = stack.pop()
            kind = item[0]
            if kind == _VALUE:
                type_id = item[1]
                if type_id in (1, 2, 3, 4):  # bool, int, uint, float
                    _, pos = read_uint(data, pos)
                elif type_id in (5, 6):  # []byte, string
                    pos = _skip_counted(data, pos)
                elif type_id == 7:  # complex
                    _, pos = read_uint(data, pos)
                    _, pos = read_uint(data, pos)
                elif type_id == 8:  # interface: its name, then the type sequence
                    length, pos = read_uint(data, pos)
                    if length:
                        if length > len(data) - pos:
                            raise Truncated()
                        pos += length
                        stack.append((_TYPE_SEQUENCE,))
                else:
                    definition = definitions.get(type_id)
                    if isinstance(definition, StructDef):
                        stack.append((_FIELDS, definition.fields, -1))
                    elif isinstance(definition, (SliceDef, ArrayDef)):
                        # No check of the count against the bytes so far: when
                        # elements are interfaces, Go continues the value in later
                        # messages.  Each element takes a byte, so the walk is
                        # bounded by what arrives; the decoder checks the whole.
                        count, pos = read_uint(data, pos)
                        if isinstance(definition, ArrayDef) and count != definition.length:
                            raise CodecError(
                                f"gob: array of {count} elements, type says {definition.length}"
                            )
                        stack.append((_REPEAT, definition.elem, count))
                    elif isinstance(definition, MapDef):
                        count, pos = read_uint(data, pos)
                        stack.append((_PAIRS, definition.key, definition.elem, count))
                    elif isinstance(definition, OpaqueDef):
                        pos = _skip_counted(data, pos)
                    else:
                        raise CodecError(f"gob: unknown type id {type_id}")
            elif kind == _FIELDS:
                delta, pos = read_uint(data, pos)
                if delta:
                    fields, field = item[1], item[2] + delta
                    if field >= len(fields):
                        raise CodecError(f"gob: field number {field} out of range")
                    stack.append((_FIELDS, fields, field))
                    stack.append((_VALUE, fields[field][1]))
            elif kind == _REPEAT:
                if item[2]:
                    stack.append((_REPEAT, item[1], item[2] - 1))
                    stack.append((_VALUE, item[1]))
            elif kind == _PAIRS:
                if item[3]:
                    stack.append((_PAIRS, item[1], item[2], item[3] - 1))
                    stack.append((_VALUE, item[2]))
                    stack.append((_VALUE, item[1]))
            elif kind == _TYPE_SEQUENCE:  # definitions, maybe across messages, then the id
                while True:
                    if pos == len(data):
                        stack.append(item)
                        self._pos = pos
                        self.boundaries.add(pos)
                        raise NeedMore()
                    type_id, after = read_int(data, pos)
                    if type_id >= 0:
                        pos = after
                        break
                    end = self._define(-type_id, data, after)
                    self.definitions_at[pos] = end
                    pos = end
                    if pos != len(data):
                        _, pos = read_uint(data, pos)  # a delimited value's count, as Go skips it
                # The byte count that follows is not the concrete value's length
                # when it holds interfaces of its own (Go does not use it
                # either): walk the value.
                _, pos = read_uint(data, pos)
                if type_id in (0, 8):
                    raise CodecError(f"gob: bad concrete type id {type_id} in interface")
                stack.append((_VALUE, type_id))
                if not isinstance(definitions.get(type_id), StructDef):
                    stack.append((_SINGLETON,))
            elif kind == _SINGLETON:
                if pos >= len(data):
                    raise Truncated()
                if data[pos] != 0:
                    raise CodecError("gob: corrupted data: non-zero delta for singleton")
                pos += 1
        self._pos = pos
        return pos


def _skip_counted(data: Buffer, pos: int) -> int:
    length, pos = read_uint(data, pos)
    if length > len(data) - pos:
        raise Truncated()
    return pos + length
