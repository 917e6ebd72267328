"""
GeeRPC addresses (``protocol@address``) as Twisted client endpoints.

- ``tcp@host:port`` (``tcp@[::1]:port`` for IPv6 literals)
- ``http@host:port``: TCP, then ``CONNECT /_geeprc_`` (Go's ``DialHTTP``);
  the connection is the RPC protocol's only after the server's 200 line
- ``unix@/path/to/socket``
- Go's standard ``net/rpc`` servers (docs/protocol.md 14), which take no
  Option: ``netrpc@host:port`` (gob over TCP), ``netrpc+http@host:port``
  (``CONNECT /_goRPC_`` first, as ``rpc.DialHTTP``) and ``jsonrpc@host:port``
  (``net/rpc/jsonrpc``: JSON-RPC 1.0 over TCP)
- ``tls@host:port``: GeeRPC over TLS, and ``https@host:port``: TLS, then
  ``CONNECT`` (:mod:`txgeerpc.tls`; what to trust and present comes from
  the ``tls`` argument, by default the system's trust store)
- anything without ``@`` is a Twisted client endpoint string
  (``tcp:host=127.0.0.1:port=7001``, ``unix:path=/tmp/s``...).
"""

from __future__ import annotations

import ipaddress
from typing import Any

from twisted.internet.endpoints import (
    HostnameEndpoint,
    TCP4ClientEndpoint,
    TCP6ClientEndpoint,
    UNIXClientEndpoint,
    clientFromString,
)
from twisted.internet.interfaces import IStreamClientEndpoint

from ._http_connect import HTTPConnectEndpoint
from ._netrpc import NETRPC_CONNECTED_REASON, NETRPC_PATH
from ._wire import DEFAULT_RPC_PATH
from .errors import InvalidAddress

__all__ = ["GO_NETRPC_SCHEMES", "client_endpoint", "split_address", "split_host_port"]

GO_NETRPC_SCHEMES = {"netrpc": "gob", "netrpc+http": "gob", "jsonrpc": "jsonrpc"}
"""The address schemes of Go ``net/rpc`` servers, and what each speaks: no
Option is sent to them, and no txgeerpc extension is expected."""

_NO_LIMIT = 10**9  # seconds; endpoints need a number


def split_address(address: str) -> tuple[str, str]:
    """``"tcp@127.0.0.1:7001"`` -> ``("tcp", "127.0.0.1:7001")``.

    Only the first ``@`` separates, so a unix socket path may contain ``@``.

    :raises InvalidAddress: no ``@`` or an empty part.
    """
    protocol, at, rest = address.partition("@")
    if not at or not protocol or not rest:
        raise InvalidAddress(f"rpc client err: wrong format '{address}', expect protocol@addr")
    return protocol, rest


def split_host_port(hostport: str) -> tuple[str, int]:
    """``"127.0.0.1:7001"`` / ``"[::1]:7001"`` -> host and port; an empty host
    (``":7001"``) is this machine, as Go dials it.

    :raises InvalidAddress: no port, or a port that is not a number in range.
    """
    host, colon, port_text = hostport.rpartition(":")
    if not colon:
        raise InvalidAddress(f"missing port in address {hostport!r}")
    if not host:
        host = "localhost"
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        port = int(port_text)
    except ValueError:
        raise InvalidAddress(f"invalid port {port_text!r} in address {hostport!r}") from None
    if not 0 < port < 65536:
        raise InvalidAddress(f"port {port} out of range in address {hostport!r}")
    return host, port


def client_endpoint(
    reactor: Any, address: str, timeout: float | None = None, *, tls: Any = None
) -> IStreamClientEndpoint:
    """A client endpoint for a GeeRPC address or a Twisted endpoint string.

    :param timeout: limit on the TCP connect itself (``None``: none; the
        caller's overall connect timeout still applies).
    :param tls: a :class:`txgeerpc.tls.ClientTLS` for ``tls@`` and ``https@``
        addresses (default: trust the system's authorities, no client
        certificate).

    :raises InvalidAddress: the address cannot be understood.
    :raises txgeerpc.errors.TLSConfigError: ``tls``'s files cannot be used.
    """
    if "@" not in address:
        try:
            return clientFromString(reactor, address)  # type: ignore[no-any-return]
        except (ValueError, TypeError, KeyError) as error:
            raise InvalidAddress(
                f"rpc client err: wrong format '{address}', expect protocol@addr "
                f"or a Twisted endpoint string ({error})"
            ) from None
    protocol, rest = split_address(address)
    if protocol in ("tcp", "tcp4", "tcp6", "netrpc", "jsonrpc"):
        host, port = split_host_port(rest)
        return _tcp(reactor, host, port, timeout)
    if protocol == "http":
        host, port = split_host_port(rest)
        return HTTPConnectEndpoint(_tcp(reactor, host, port, timeout), DEFAULT_RPC_PATH)
    if protocol == "netrpc+http":
        host, port = split_host_port(rest)
        return HTTPConnectEndpoint(
            _tcp(reactor, host, port, timeout), NETRPC_PATH, NETRPC_CONNECTED_REASON
        )
    if protocol in ("tls", "https"):
        from .tls import ClientTLS, TLSClientEndpoint

        host, port = split_host_port(rest)
        settings = tls if tls is not None else ClientTLS()
        secure = TLSClientEndpoint(_tcp(reactor, host, port, timeout), settings, host, reactor)
        if protocol == "tls":
            return secure
        return HTTPConnectEndpoint(secure, DEFAULT_RPC_PATH)
    if protocol == "unix":
        return UNIXClientEndpoint(reactor, rest, timeout=timeout or _NO_LIMIT)
    raise InvalidAddress(f"rpc client err: unsupported protocol {protocol!r} in '{address}'")


def _tcp(reactor: Any, host: str, port: int, timeout: float | None) -> IStreamClientEndpoint:
    """An IP literal is dialled directly: HostnameEndpoint would notice a
    refused connection only at its next 0.3 s attempt tick."""
    limit = timeout or _NO_LIMIT  # the endpoints' own default is 30 s; the caller's decides
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return HostnameEndpoint(reactor, host, port, timeout=limit)
    if ip.version == 4:
        return TCP4ClientEndpoint(reactor, host, port, timeout=limit)
    return TCP6ClientEndpoint(reactor, host, port, timeout=limit)
