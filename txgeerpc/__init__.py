"""
txgeerpc: GeeRPC on Twisted.

A wire-compatible implementation of the GeeRPC protocol: a :class:`Server`
that exposes plain Python objects, and a :class:`Client` whose calls are
Deferreds with timeouts.  Errors live in :mod:`txgeerpc.errors`; in-memory
test helpers in :mod:`txgeerpc.testing`.
"""

from ._service import MethodStats, Service, expose
from ._version import __version__
from ._wire import Header, Option
from .client import Client, connect
from .codec import CodecRegistry, default_registry
from .server import Server

__all__ = [
    "Client",
    "CodecRegistry",
    "Header",
    "MethodStats",
    "Option",
    "Server",
    "Service",
    "__version__",
    "connect",
    "default_registry",
    "expose",
]
