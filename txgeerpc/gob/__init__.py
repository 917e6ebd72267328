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

# The names imported "as" themselves are not in __all__: they are the surface
# txgeerpc itself builds on, for the gob codec's hand-written header path
# (txgeerpc.codec) and method introspection (_txgeerpc.Describe).  The rest of
# txgeerpc imports them from here, never from gob's private modules; they are
# not a stable API.
from ._decoder import Decoder
from ._decoder import StructDef as StructDef
from ._decoder import read_string as read_string
from ._encoder import EncodeError, Encoder
from ._encoder import utf8 as utf8
from ._numbers import SMALL as SMALL
from ._numbers import read_int as read_int
from ._numbers import read_uint as read_uint
from ._numbers import uint_bytes as uint_bytes
from ._numbers import write_int as write_int
from ._types import BOOL as BOOL
from ._types import BYTES as BYTES
from ._types import COMPLEX as COMPLEX
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
from ._types import FLOAT as FLOAT
from ._types import INT as INT
from ._types import INTERFACE as INTERFACE
from ._types import STRING as STRING
from ._types import STRING_ID as STRING_ID
from ._types import UINT as UINT
from ._types import UINT_ID as UINT_ID
from ._types import ArrayOf as ArrayOf
from ._types import Basic as Basic
from ._types import MapOf as MapOf
from ._types import SliceOf as SliceOf
from ._types import StructOf as StructOf

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
