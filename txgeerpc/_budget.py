"""
The memory budget of decoding one message: what the Python objects a value
decodes (and converts) to may take, proportional to its message.  One notion
for every codec and for conversion to declared types: the gob decoder, the
JSON parser and ``_convert`` all charge against :func:`memory_budget`, with
the object sizes below.
"""

from __future__ import annotations

import sys

EXPANSION = 8
"""Bytes of Python objects a value may take per byte of its message (plus
:data:`EXPANSION_FLOOR`, and never more than :data:`EXPANSION_CAP`)."""
EXPANSION_FLOOR = 1 << 20
EXPANSION_CAP = 256 << 20

# What one object takes (CPython, 64 bits), charged before it is made.
LIST_COST = sys.getsizeof([])
SLOT_COST = 8  # one pointer in a list or an instance
MAP_COST = sys.getsizeof({})
MAP_ENTRY_COST = 40  # a dict's entry and index, amortised over its growth
OBJECT_COST = 64  # an instance's header and the vector its attributes start in


def memory_budget(message_size: int, expansion: int = EXPANSION) -> int:
    """Bytes of Python objects a value decoded from a message of
    ``message_size`` bytes may take, its conversion to the declared type
    included: ``expansion`` times the message plus 1 MiB, at most 256 MiB."""
    return min(expansion * message_size + EXPANSION_FLOOR, EXPANSION_CAP)


def over_budget(total: int) -> str:
    """The error text of a value refused for its memory."""
    return f"value expands to far more than its message (over {total} bytes of memory)"
