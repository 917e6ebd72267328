"""
``encoding/gob`` in pure Python, byte-compatible with Go's.

Written from Go's published specification and checked against recorded Go
sessions and live Go peers.  The codec (``application/gob``) is built on it;
use it directly for anything else that speaks gob::

    from txgeerpc import gob

    data = gob.Encoder().encode(Args(1, 2))      # type definition + value
    decoder = gob.Decoder(max_message_size=1 << 20)
    decoder.feed(data)
    (value,) = decoder.next_value()               # {'Num1': 1, 'Num2': 2}

Encoder and decoder keep per-stream state (type definitions are sent once per
stream), so use one of each per connection and direction, as Go does.
"""

from ._decoder import Decoder
from ._encoder import EncodeError, Encoder
from ._types import (
    EMPTY,
    GobType,
    GobValue,
    Uint,
    UnsupportedType,
    gob_type_for,
    infer_type,
    register_name,
)

__all__ = [
    "EMPTY",
    "Decoder",
    "EncodeError",
    "Encoder",
    "GobType",
    "GobValue",
    "Uint",
    "UnsupportedType",
    "gob_type_for",
    "infer_type",
    "register_name",
]
