"""
``python -m txgeerpc``: call GeeRPC servers from the shell.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import signal
import sys
from collections.abc import Callable, Sequence
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater
from twisted.python.failure import Failure

from ._introspect import (
    DESCRIBE,
    HEALTH,
    PROBE,
    JSONMismatch,
    from_json,
    printable,
    type_from_schema,
    zero_of,
)
from ._jsonvalue import dumps
from ._protobuf import DescribedMessages
from ._stubs import (
    dumps_schema,
    from_go_debug_page,
    go_structs,
    json_schema,
    python_stubs,
    takes_argument,
)
from ._version import __version__
from ._wire import (
    DEFAULT_DEBUG_PATH,
    DEFAULT_MAX_MESSAGE_SIZE,
    DEFAULT_REGISTRY_PATH,
    GOB,
    Header,
)
from .client import DEFAULT_CONNECT_TIMEOUT, Client, connect
from .codec import HEADER, PROTOBUF, default_registry
from .context import encode_metadata
from .errors import (
    CallTimeout,
    ConnectFailed,
    ConnectTimeout,
    EtcdError,
    GeeRPCError,
    InvalidAddress,
    MessageTooLarge,
    MetadataError,
    NoServers,
    RemoteError,
    ServerGoingAway,
    TLSError,
    UnexpectedDisconnect,
    ZooKeeperError,
)
from .etcd import DEFAULT_PREFIX, EtcdClient, address_of, heartbeat_of
from .gob import EMPTY
from .registry import RegistryDiscovery, agent_request, registry_listing

EXIT_OK = 0
EXIT_CALL_FAILED = 1
EXIT_USAGE = 2

_EPILOG = """\
examples:
  start a demo server:   twistd -n geerpc
  call it:               python -m txgeerpc call tcp@127.0.0.1:7001 Arith.Multiply \\
                             '{"Num1":6,"Num2":7}'
  a string argument:     python -m txgeerpc call tcp@127.0.0.1:7001 Arith.Echo '"hi"'
  the JSON extension:    python -m txgeerpc call tcp@127.0.0.1:7001 Foo.Sum \\
                             '{"Num1":1,"Num2":2}' --codec json
  over HTTP CONNECT:     python -m txgeerpc call http@127.0.0.1:7001 Foo.Sum '{"Num1":1}'
  what a server offers:  python -m txgeerpc list tcp@127.0.0.1:7001
  is it healthy?         python -m txgeerpc health tcp@127.0.0.1:7001

With gob (the default) the JSON argument becomes the Go type the method
declares when the server is txgeerpc (it answers _txgeerpc.Describe), and
follows the JSON's shape otherwise: objects with exported keys ("Num1") are
structs, other objects maps, integers Go int, fractions float64, strings
string; []byte is base64 and complex128 is [re, im], as in Go's JSON.

The reply is printed as JSON on stdout.  On failure the error goes to stderr
and the exit status is 1 (2 for usage errors).
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m txgeerpc",
        description="Talk to GeeRPC servers (txgeerpc or Go GeeRPC).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=_EPILOG,
    )
    parser.add_argument("--version", action="version", version=f"txgeerpc {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    call = commands.add_parser(
        "call",
        help="call one method and print its reply as JSON",
        description="Call Service.Method on a server and print the reply as JSON.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=_EPILOG,
    )
    call.add_argument(
        "address",
        metavar="ADDRESS",
        help="server address: tcp@HOST:PORT, http@HOST:PORT (HTTP CONNECT), unix@/PATH, "
        "a Twisted endpoint string, or a registry URL (http://HOST:PORT/_geerpc_/registry: "
        "one of the servers it lists, chosen at random; the next if it cannot be reached)",
    )
    call.add_argument("service_method", metavar="Service.Method", help="what to call")
    call.add_argument(
        "argument",
        metavar="ARG_JSON",
        nargs="?",
        default=None,
        help='the argument as JSON, e.g. \'{"Num1":6,"Num2":7}\' or \'"text"\'; - reads it from '
        "stdin, @FILE from a file; null sends the Go zero value.  Required when the method "
        "takes an argument",
    )
    names = sorted(set(default_registry.names()) | set(default_registry.aliases()))
    call.add_argument(
        "--codec",
        default="gob",
        choices=names,
        help="wire codec (default: gob, as GeeRPC)",
    )
    call.add_argument(
        "--framed",
        action="store_true",
        help="ask for framed mode (a txgeerpc extension: length-prefixed messages; a Go "
        "server ignores it and the stream stays plain)",
    )
    call.add_argument(
        "--compress",
        choices=["gzip", "zstd", "lz4"],
        default=None,
        help="with --framed: compress messages of 1 KiB or more (if the server accepts it)",
    )
    call.add_argument(
        "--timeout",
        type=float,
        default=30.0,
        metavar="S",
        help="seconds to wait for the reply; 0 waits forever (default: 30).  A txgeerpc "
        "server gets it as the call's budget and cancels the handler when it runs out",
    )
    call.add_argument(
        "--meta",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="call metadata (repeatable): lower-case KEY [a-z0-9._-], text VALUE; the "
        "reply's trailers are printed to stderr",
    )
    call.add_argument(
        "--handle-timeout",
        type=float,
        default=None,
        metavar="S",
        help="ask the server to give up on the request after S seconds",
    )
    call.add_argument(
        "--connect-timeout",
        type=float,
        default=DEFAULT_CONNECT_TIMEOUT,
        metavar="S",
        help=f"seconds to connect and to recognise a GeeRPC server; 0 waits forever "
        f"(default: {DEFAULT_CONNECT_TIMEOUT:g})",
    )
    call.add_argument(
        "--max-message-size",
        type=int,
        default=DEFAULT_MAX_MESSAGE_SIZE,
        metavar="BYTES",
        help="largest encoded argument sent (refused before sending) and reply accepted "
        f"(default: {DEFAULT_MAX_MESSAGE_SIZE}, the server's default)",
    )
    _add_security_options(call)
    listing = commands.add_parser(
        "list",
        help="list the services and methods a txgeerpc server offers",
        description="List the services and methods of a txgeerpc server, with their "
        "signatures (a txgeerpc server describes itself; Go GeeRPC servers do not).",
    )
    listing.add_argument(
        "address",
        metavar="ADDRESS",
        help="server address: tcp@HOST:PORT, http@HOST:PORT, unix@/PATH, an endpoint string, "
        "or a registry URL (one of the servers it lists)",
    )
    listing.add_argument("--json", action="store_true", help="print the description as JSON")
    listing.add_argument(
        "--timeout", type=float, default=30.0, metavar="S", help="seconds to wait (default: 30)"
    )
    listing.add_argument(
        "--connect-timeout",
        type=float,
        default=DEFAULT_CONNECT_TIMEOUT,
        metavar="S",
        help=f"seconds to connect; 0 waits forever (default: {DEFAULT_CONNECT_TIMEOUT:g})",
    )
    _add_security_options(listing)
    health = commands.add_parser(
        "health",
        help="check that a server answers calls (exit 0 healthy, 1 not, 2 usage)",
        description="Call the server's health method (_txgeerpc.Health) and print its "
        "status.  Exit status 0: it serves; 1: it cannot be reached, does not answer in "
        "time, or is draining (stopping); 2: usage.  A Go GeeRPC server (no health "
        "method) that answers counts as healthy.",
    )
    health.add_argument(
        "address",
        metavar="ADDRESS",
        help="server address: tcp@HOST:PORT, http@HOST:PORT, unix@/PATH or an endpoint string",
    )
    health.add_argument(
        "--timeout",
        type=float,
        default=5.0,
        metavar="S",
        help="seconds to connect and to get the answer, each (default: 5)",
    )
    _add_security_options(health)
    servers = commands.add_parser(
        "servers",
        help="list the servers a registry knows",
        description="List the live servers of a GeeRPC registry (txgeerpc's or Go's), one "
        "per line; a txgeerpc registry also tells how long ago each one last beat.",
    )
    servers.add_argument(
        "registry",
        metavar="REGISTRY_URL",
        nargs="?",
        help="e.g. http://127.0.0.1:9999/_geerpc_/registry",
    )
    servers.add_argument(
        "--etcd",
        metavar="URL[,URL...]",
        help="list the servers registered in etcd instead (its members' client URLs)",
    )
    servers.add_argument(
        "--etcd-prefix",
        default=DEFAULT_PREFIX,
        metavar="P",
        help=f"etcd key prefix of the entries (default: {DEFAULT_PREFIX})",
    )
    servers.add_argument(
        "--zookeeper",
        metavar="HOST:PORT[,...]",
        help="list the servers registered in ZooKeeper instead (pip install txgeerpc[zookeeper])",
    )
    servers.add_argument(
        "--zookeeper-prefix",
        default=DEFAULT_PREFIX,
        metavar="P",
        help=f"ZooKeeper path of the entries (default: {DEFAULT_PREFIX})",
    )
    servers.add_argument("--json", action="store_true", help="print the listing as JSON")
    servers.add_argument(
        "--wait",
        type=int,
        default=0,
        metavar="N",
        help="ask again until at least N servers are listed, for --timeout seconds at most "
        "(for scripts that start servers and then use them)",
    )
    servers.add_argument(
        "--timeout", type=float, default=10.0, metavar="S", help="seconds to wait (default: 10)"
    )
    # An https:// registry: its CA, a client certificate, a token (docs/security.md).
    _add_security_options(servers)
    _add_describe_parser(commands)
    _add_stubs_parser(commands)
    return parser


def _add_describe_parser(commands: Any) -> None:
    describe = commands.add_parser(
        "describe",
        help="print a method's argument and reply types as JSON Schema and Go",
        description="Print the argument and reply types of Service.Method as JSON Schema "
        "(what `call` takes and prints) and as Go declarations.  A txgeerpc server "
        "describes itself; for a Go GeeRPC server the signatures of its debug page are used.",
    )
    describe.add_argument("address", metavar="ADDRESS", help="server address, as for call")
    describe.add_argument("service_method", metavar="Service.Method", help="what to describe")
    describe.add_argument(
        "--json", action="store_true", help='print one JSON object {"argument", "reply", "go"}'
    )
    _add_introspection_options(describe)
    _add_security_options(describe)


def _add_stubs_parser(commands: Any) -> None:
    stubs = commands.add_parser(
        "stubs",
        help="write a typed Python client module for a server's services",
        description="Write (on stdout) a typed client module: dataclasses for the argument "
        "and reply structs and one class per service, whose methods return typed Deferreds "
        "(mypy --strict clean).  A txgeerpc server describes itself; for a Go GeeRPC server "
        "the signatures of its debug page are used (structs become dict[str, Any]).",
    )
    stubs.add_argument("address", metavar="ADDRESS", help="server address, as for call")
    stubs.add_argument(
        "--class-name",
        default="ServicesClient",
        metavar="NAME",
        help="the class with one attribute per service (default: ServicesClient)",
    )
    _add_introspection_options(stubs)
    _add_security_options(stubs)


def _add_security_options(parser: argparse.ArgumentParser) -> None:
    """TLS (``tls@``/``https@`` addresses) and the bearer token."""
    group = parser.add_argument_group("TLS and authentication (docs/security.md)")
    group.add_argument(
        "--tls-ca",
        metavar="FILE",
        help="PEM file of the CAs that may issue the server's certificate, for tls@HOST:PORT "
        "and https@HOST:PORT addresses (default: the system's)",
    )
    group.add_argument(
        "--tls-cert", metavar="FILE", help="PEM client certificate (mutual TLS; with --tls-key)"
    )
    group.add_argument("--tls-key", metavar="FILE", help="PEM private key of --tls-cert")
    group.add_argument(
        "--tls-hostname",
        metavar="NAME",
        help="the name the server's certificate must hold (default: the address's host)",
    )
    group.add_argument(
        "--token",
        metavar="TOKEN",
        help="bearer token sent with every call (visible to other users in the process "
        "list: prefer --token-file or $GEERPC_TOKEN)",
    )
    group.add_argument(
        "--token-file", metavar="FILE", help="file holding the bearer token (its first line)"
    )


TOKEN_ENVIRONMENT = "GEERPC_TOKEN"


def _security(options: argparse.Namespace) -> dict[str, Any]:
    """``connect()``'s ``tls`` and ``token`` from the options.

    :raises GeeRPCError: a file that cannot be read or used.
    """
    from .errors import TLSConfigError
    from .tls import ClientTLS

    found: dict[str, Any] = {}
    ca, cert, key = (getattr(options, name, None) for name in ("tls_ca", "tls_cert", "tls_key"))
    hostname = getattr(options, "tls_hostname", None)
    if ca or cert or key or hostname:
        found["tls"] = ClientTLS(ca=ca, cert=cert, key=key, hostname=hostname)
    token = getattr(options, "token", None)
    token_file = getattr(options, "token_file", None)
    if token_file:
        try:
            with open(token_file, encoding="utf-8") as f:
                token = (f.readline() or "").strip()
        except OSError as error:
            raise TLSConfigError(
                f"cannot read the token file {token_file!r}: {error.strerror}"
            ) from None
    elif token is None:
        token = os.environ.get(TOKEN_ENVIRONMENT) or None
    if token:
        found["token"] = token
    return found


def _add_introspection_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--debug-url",
        metavar="URL",
        help="where a Go server's debug page is (default: http://HOST:PORT/debug/geerpc "
        "of ADDRESS)",
    )
    parser.add_argument(
        "--timeout", type=float, default=30.0, metavar="S", help="seconds to wait (default: 30)"
    )
    parser.add_argument(
        "--connect-timeout",
        type=float,
        default=DEFAULT_CONNECT_TIMEOUT,
        metavar="S",
        help=f"seconds to connect; 0 waits forever (default: {DEFAULT_CONNECT_TIMEOUT:g})",
    )


WAIT_INTERVAL = 0.2  # seconds between two listings with --wait


async def _servers(reactor: Any, options: argparse.Namespace) -> int:
    if [options.registry, options.etcd, options.zookeeper].count(None) != 2:
        print(
            "error: give a REGISTRY_URL or --etcd URL[,URL...] or --zookeeper HOST:PORT[,...]",
            file=sys.stderr,
        )
        return EXIT_USAGE
    if options.registry is not None and not options.registry.startswith(("http://", "https://")):
        print(f"error: {options.registry!r} is not an http:// or https:// URL", file=sys.stderr)
        return EXIT_USAGE
    if options.wait < 0:
        print("error: --wait wants a number of servers, 0 or more", file=sys.stderr)
        return EXIT_USAGE
    listing = _etcd_servers if options.etcd is not None else _registry_servers
    if options.zookeeper is not None:
        listing = _zookeeper_servers
    deadline = None
    while True:
        ages = await listing(reactor, options)
        if isinstance(ages, int):  # an exit status: it said why
            return ages
        if len(ages) >= options.wait:
            status = _print_listing(ages, options.json, "last heartbeat")
            if not ages:
                where = options.registry or (
                    f"ZooKeeper ({options.zookeeper_prefix})"
                    if options.zookeeper is not None
                    else f"etcd ({options.etcd_prefix})"
                )
                print(f"error: no servers: {where} lists none", file=sys.stderr)
                return EXIT_CALL_FAILED
            return status
        if deadline is None:
            deadline = reactor.seconds() + (options.timeout or 10.0)
        if reactor.seconds() + WAIT_INTERVAL > deadline:
            print(
                f"error: {len(ages)} servers listed, not {options.wait}, "
                f"after {options.timeout or 10.0:g}s",
                file=sys.stderr,
            )
            return EXIT_CALL_FAILED
        await deferLater(reactor, WAIT_INTERVAL, lambda: None)


async def _registry_servers(reactor: Any, options: argparse.Namespace) -> dict[str, Any] | int:
    """The servers a registry lists, with their ages, or an exit status."""
    url = options.registry
    request = agent_request(reactor, **_security(options))  # a bad file: one line
    try:
        answer = await request(
            b"GET", url, {b"Accept": b"application/json"}, options.timeout or 10.0
        )
    except Exception as error:
        print(f"error: cannot reach the registry at {url}: {error}", file=sys.stderr)
        return EXIT_CALL_FAILED
    if answer.status != 200:
        print(f"error: the registry at {url} answered {answer.status}", file=sys.stderr)
        return EXIT_CALL_FAILED
    try:
        return registry_listing(answer)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_CALL_FAILED


async def _etcd_servers(reactor: Any, options: argparse.Namespace) -> dict[str, Any] | int:
    """The servers registered in etcd, with their ages, or an exit status."""
    try:
        etcd = EtcdClient(reactor, options.etcd, request_timeout=options.timeout or 10.0)
    except ValueError as error:
        print(f"error: --etcd: {error}", file=sys.stderr)
        return EXIT_USAGE
    try:
        listed = await etcd.get_prefix(options.etcd_prefix.encode())
    except EtcdError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_CALL_FAILED
    finally:
        await etcd.close()
    now = reactor.seconds()
    ages: dict[str, float | None] = {}
    for kv in listed.kvs:
        address = address_of(options.etcd_prefix.encode(), kv.key)
        if address is not None:
            heartbeat = heartbeat_of(kv.value)
            ages[address] = None if heartbeat is None else round(max(now - heartbeat, 0), 3)
    return ages


async def _zookeeper_servers(reactor: Any, options: argparse.Namespace) -> dict[str, Any] | int:
    """The servers registered in ZooKeeper, with their ages, or an exit status."""
    from .zookeeper import ZooKeeperClient, address_of, check_prefix, heartbeat_of, parent_of

    try:
        prefix = check_prefix(options.zookeeper_prefix)
        zookeeper = ZooKeeperClient(
            reactor, options.zookeeper, request_timeout=options.timeout or 10.0
        )
    except (ValueError, ImportError) as error:
        print(f"error: --zookeeper: {error}", file=sys.stderr)
        return EXIT_USAGE
    try:
        names = await zookeeper.children(parent_of(prefix))
        found = [(name, await zookeeper.get(prefix + name)) for name in names]
    except ZooKeeperError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_CALL_FAILED
    finally:
        await zookeeper.close()
    now = reactor.seconds()
    ages: dict[str, float | None] = {}
    for name, got in found:
        address = address_of(name)
        if address is not None and got is not None:
            heartbeat = heartbeat_of(got[0])
            ages[address] = None if heartbeat is None else round(max(now - heartbeat, 0), 3)
    return ages


def _print_listing(ages: dict[str, float | None], as_json: bool, what: str) -> int:
    addresses = sorted(ages)
    if as_json:
        print(dumps({"servers": [{"address": a, "age_seconds": ages.get(a)} for a in addresses]}))
        return EXIT_OK
    for address in addresses:
        age = ages.get(address)
        print(address if age is None else f"{address}  ({what} {age:g}s ago)")
    return EXIT_OK


async def _list(reactor: Any, options: argparse.Namespace) -> int:
    try:
        client, description = await _open(reactor, options)
    except GeeRPCError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_CALL_FAILED
    await client.close()
    if description is None:
        print(
            "error: the server does not describe itself (_txgeerpc.Describe): "
            "a Go GeeRPC server, or introspection is off",
            file=sys.stderr,
        )
        return EXIT_CALL_FAILED
    if options.json:
        print(dumps(description))
        return EXIT_OK
    for service, methods in sorted(description["Services"].items()):
        print(service)
        for name, method in sorted(methods.items()):
            print(f"  {method.get('Signature', name)}")
    return EXIT_OK


async def _health(reactor: Any, options: argparse.Namespace) -> int:
    timeout = options.timeout or None
    try:
        client = await connect(
            reactor, options.address, connect_timeout=timeout, **_security(options)
        )
    except GeeRPCError as error:
        print(f"unhealthy: {error}", file=sys.stderr)
        return EXIT_CALL_FAILED
    try:
        text = await client.call(HEALTH, PROBE, timeout=timeout, argument_type=HEADER)
    except ServerGoingAway:
        print("draining", file=sys.stderr)
        return EXIT_CALL_FAILED
    except RemoteError as error:
        # GeeRPC's text, or Go net/rpc's: it answers calls, it has no health method.
        if not error.message.startswith(("rpc server: can't find ", "rpc: can't find ")):
            print(f"unhealthy: {error}", file=sys.stderr)
            return EXIT_CALL_FAILED
        print("serving (it answers calls; no health method: not txgeerpc)")
        return EXIT_OK
    except GeeRPCError as error:
        print(f"unhealthy: {error}", file=sys.stderr)
        return EXIT_CALL_FAILED
    finally:
        await client.close()
    try:
        status = json.loads(text)["Status"]
    except (TypeError, ValueError, KeyError):
        print(f"unhealthy: unexpected health answer {text!r}", file=sys.stderr)
        return EXIT_CALL_FAILED
    if status != "serving":
        print(status, file=sys.stderr)
        return EXIT_CALL_FAILED
    print(status)
    return EXIT_OK


class NotGeeRPC(GeeRPCError):
    """The peer took the connection but does not answer as a GeeRPC server."""


async def _open(
    reactor: Any, options: argparse.Namespace, codec: str = GOB
) -> tuple[Client, dict[str, Any] | None]:
    """Connect to ``options.address`` (a server, or one a registry lists)
    and ask it ``_txgeerpc.Describe`` within the connect timeout.

    :returns: the client and the server's description, or ``None`` for a
        GeeRPC server that does not describe itself (Go's answers the probe
        with an error).
    :raises NotGeeRPC: the peer sent no GeeRPC answer within the connect
        timeout, or something that is not GeeRPC.
    :raises GeeRPCError: connecting failed.
    """
    security = _security(options)
    client = await _connect_first(
        await _addresses(reactor, options.address, tls=security.get("tls")),
        lambda address: connect(
            reactor,
            address,
            codec=codec,
            handle_timeout=getattr(options, "handle_timeout", None),
            connect_timeout=options.connect_timeout or None,
            max_message_size=getattr(options, "max_message_size", DEFAULT_MAX_MESSAGE_SIZE),
            framed=getattr(options, "framed", False),
            compress=getattr(options, "compress", None),
            **security,
        ),
    )
    probe_timeout = options.connect_timeout or options.timeout or None
    peer = options.address
    speaks = "GeeRPC" if default_registry.get(codec).name == GOB else f"GeeRPC with {codec}"
    try:
        text = await client.call(DESCRIBE, PROBE, timeout=probe_timeout, argument_type=HEADER)
        return client, json.loads(text)
    except RemoteError:
        return client, None
    except CallTimeout:
        await client.close()
        raise NotGeeRPC(
            f"{peer} does not speak {speaks}: no answer within {probe_timeout:g}s "
            "(the connect timeout)"
        ) from None
    except UnexpectedDisconnect as error:
        await client.close()
        reason = getattr(error.reason, "value", error.reason)
        if isinstance(reason, TLSError):  # a TLS 1.3 server refused our certificate
            raise reason from None
        raise NotGeeRPC(f"{peer} does not speak {speaks} ({error})") from None
    except (TypeError, ValueError):
        await client.close()
        raise NotGeeRPC(f"{peer} answered _txgeerpc.Describe with no description") from None
    except BaseException:
        await client.close()
        raise


async def _addresses(
    reactor: Any,
    address: str,
    shuffle: Callable[[list[str]], None] = random.shuffle,
    *,
    tls: Any = None,
) -> list[str]:
    """``[address]``, or, for a registry URL, the servers it lists in random
    order (the order :func:`_connect_first` tries them in).  An ``https://``
    registry's certificate is checked with ``tls`` (``--tls-ca``...; the
    token is the servers', not sent to the registry).

    :raises GeeRPCError: the registry cannot be reached.
    :raises NoServers: it lists none.
    """
    if not address.startswith(("http://", "https://")):
        return [address]
    discovery = RegistryDiscovery(reactor, agent_request(reactor, tls=tls), address)
    discovery.startService()
    try:
        await discovery.ready()
    finally:
        discovery.stopService()
    servers = discovery.servers()
    if not servers:
        if discovery.failures:
            raise GeeRPCError(f"rpc discovery: cannot reach the registry at {address}")
        raise NoServers()
    shuffle(servers)
    return servers


_NOT_SENT = (ConnectFailed, ConnectTimeout, InvalidAddress)
"""Connect errors after which nothing was sent: trying another server is
safe whatever the method does."""


async def _connect_first(
    addresses: Sequence[str], connect_to: Callable[[str], Deferred[Client]]
) -> Client:
    """A client connected to the first of ``addresses`` that takes a
    connection; a note on stderr for each one passed over.

    :raises GeeRPCError: the last connect error when none does (any other
        error at once).
    """
    last: GeeRPCError = NoServers()
    for index, address in enumerate(addresses):
        try:
            return await connect_to(address)
        except _NOT_SENT as error:
            last = error
            if index + 1 < len(addresses):
                print(f"note: {address}: {error}; trying the next server", file=sys.stderr)
    raise last


async def _call(reactor: Any, options: argparse.Namespace, argument: Any) -> int:
    """:param argument: the JSON value, or :data:`MISSING`."""
    try:
        client, description = await _open(reactor, options, options.codec)
    except GeeRPCError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_CALL_FAILED
    timeout = options.timeout or None
    try:
        argument, argument_type = _typed_argument(
            description, options.service_method, argument, default_registry.get(options.codec).name
        )
        messages = DescribedMessages(description)  # protobuf messages it describes
        if default_registry.get(options.codec).name == PROTOBUF:
            argument = messages.argument(options.service_method, argument)
        _check_size(options, argument, argument_type)
        trailers: dict[str, str | bytes] = {}
        reply = await client.call(
            options.service_method,
            argument,
            timeout=timeout,
            argument_type=argument_type,
            metadata=_metadata(options.meta),
            trailers=trailers,
        )
        for key, value in sorted(trailers.items()):
            shown = value.hex() if isinstance(value, bytes) else value
            print(f"trailer: {key}={shown}", file=sys.stderr)
    except (JSONMismatch, UsageError) as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except ValueError as error:  # a protobuf argument that does not fit, a bad descriptor set
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except MessageTooLarge as error:  # the client's own check, once it makes one
        print(f"error: the argument is too large: {error}; nothing was sent", file=sys.stderr)
        return EXIT_USAGE
    except GeeRPCError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_CALL_FAILED
    finally:
        await client.close()
    try:
        reply = messages.shown(reply)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_CALL_FAILED
    print(dumps(printable(reply)))
    return EXIT_OK


class UsageError(GeeRPCError):
    """What was asked cannot be sent as it is (exit status 2)."""


def _metadata(pairs: list[str]) -> dict[str, str | bytes]:
    """``--meta KEY=VALUE`` options as call metadata (checked already)."""
    metadata: dict[str, str | bytes] = {}
    for pair in pairs:
        key, _, value = pair.partition("=")
        metadata[key] = value
    return metadata


MISSING: Any = object()
"""No ARG_JSON on the command line."""


def _typed_argument(
    description: dict[str, Any] | None, service_method: str, argument: Any, codec: str
) -> tuple[Any, Any]:
    """The argument as the method's Go type (from ``_txgeerpc.Describe``), or
    as its JSON shape when the server does not describe itself.

    :raises UsageError: no argument for a method that takes one.
    :raises JSONMismatch: the argument does not fit the method's type.
    """
    service, _, method_name = service_method.rpartition(".")
    method = None
    if description is not None:
        method = description.get("Services", {}).get(service, {}).get(method_name)
    if argument is MISSING:
        if method is not None and not takes_argument(method):
            argument = None
        elif description is None or method is not None:
            # A Go method always takes one; a described one says so.
            shown = method.get("Signature", service_method) if method else service_method
            raise UsageError(
                f"{service_method} takes an argument ({shown}): give ARG_JSON "
                "(null for the zero value, - for stdin, @FILE for a file)"
            )
        else:
            argument = None  # an unknown method: the server will say so
    if codec != GOB:
        return argument, None
    kind = None
    if method is not None:
        try:
            kind = type_from_schema(method["Argument"], description["Types"])  # type: ignore[index]
        except (KeyError, TypeError, ValueError):
            kind = None
    if kind is None:
        if argument is None:
            return {}, EMPTY  # gob has no null; Go decodes an empty struct into any struct
        return argument, None
    if argument is None:
        return zero_of(kind), kind
    return from_json(kind, argument), kind


def _check_size(options: argparse.Namespace, argument: Any, argument_type: Any) -> None:
    """Refuse an argument whose request would exceed ``--max-message-size``
    (a server's default limit is the same number), before anything is sent.

    :raises UsageError: it would.
    """
    limit = options.max_message_size
    encoder = default_registry.get(options.codec).new_encoder()
    try:
        size = len(encoder.encode(Header(options.service_method, 1, ""), argument, argument_type))
    except Exception:
        return  # the call itself says why it cannot be encoded
    if size > limit:
        raise UsageError(
            f"the argument is too large: {size} bytes encoded, over the limit of {limit} "
            "bytes (--max-message-size); nothing was sent"
        )


async def _introspect(reactor: Any, options: argparse.Namespace) -> tuple[dict[str, Any], str]:
    """The server's description and where it came from: ``_txgeerpc.Describe``,
    or the signatures on a Go server's debug page.

    :raises GeeRPCError: neither is to be had.
    """
    client, description = await _open(reactor, options)
    await client.close()
    if description is not None:
        return description, "the server's _txgeerpc.Describe"
    url = options.debug_url or _debug_url(options.address)
    if url is None:
        raise GeeRPCError(
            "the server does not describe itself (a Go GeeRPC server?) and "
            f"{options.address} has no HTTP debug page: give --debug-url"
        )
    try:
        answer = await agent_request(reactor)(b"GET", url, {}, options.timeout or 10.0)
    except Exception as error:
        raise GeeRPCError(f"the server does not describe itself, and {url}: {error}") from None
    if answer.status != 200:
        raise GeeRPCError(
            f"the server does not describe itself, and {url} answered {answer.status}"
        )
    try:
        return from_go_debug_page(answer.body.decode("utf-8", "replace")), (
            "the signatures on a Go GeeRPC debug page"
        )
    except ValueError as error:
        raise GeeRPCError(f"{url}: {error}") from None


def _debug_url(address: str) -> str | None:
    """``http://HOST:PORT/debug/geerpc`` for ``tcp@``/``http@HOST:PORT``."""
    protocol, at, rest = address.partition("@")
    if not at or protocol not in ("tcp", "tcp4", "tcp6", "http"):
        return None
    return f"http://{rest}{DEFAULT_DEBUG_PATH}"


async def _describe(reactor: Any, options: argparse.Namespace) -> int:
    try:
        description, _ = await _introspect(reactor, options)
    except GeeRPCError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_CALL_FAILED
    service, _, name = options.service_method.rpartition(".")
    method = description["Services"].get(service, {}).get(name)
    if method is None:
        known = ", ".join(
            f"{s}.{m}" for s, methods in sorted(description["Services"].items()) for m in methods
        )
        print(f"error: no method {options.service_method} (there are: {known})", file=sys.stderr)
        return EXIT_CALL_FAILED
    types = description.get("Types", {})
    argument = (
        json_schema(method.get("Argument", "interface {}"), types)
        if takes_argument(method)
        else None
    )
    reply = json_schema(method.get("Reply", "interface {}"), types)
    go = go_structs(options.service_method, method, types)
    # Generated protobuf message classes: their full names.
    protobuf = {
        key: method[field]
        for key, field in (("argument", "ArgumentMessage"), ("reply", "ReplyMessage"))
        if isinstance(method.get(field), str)
    }
    if options.json:
        found: dict[str, Any] = {"argument": argument, "reply": reply, "go": go}
        if protobuf:
            found["protobuf"] = protobuf
        print(dumps(found))
        return EXIT_OK
    print(f"{options.service_method}: {method.get('Signature', name)}\n")
    for key, full_name in protobuf.items():
        print(f"{key} (protobuf message): {full_name}")
    if protobuf:
        print()
    print("argument (JSON Schema):")
    print(dumps_schema(argument) if argument is not None else "none")
    print("\nreply (JSON Schema):")
    print(dumps_schema(reply))
    print("\nGo:")
    print(go, end="")
    return EXIT_OK


async def _stubs(reactor: Any, options: argparse.Namespace) -> int:
    if not options.class_name.isidentifier():
        print(f"error: --class-name {options.class_name!r} is not an identifier", file=sys.stderr)
        return EXIT_USAGE
    try:
        description, source = await _introspect(reactor, options)
    except GeeRPCError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_CALL_FAILED
    sys.stdout.write(python_stubs(description, class_name=options.class_name, source=source))
    return EXIT_OK


_SCHEME_TYPO = re.compile(r"^(tcp|tcp4|tcp6|unix)://(.+)$")
_HOST_PORT = re.compile(r"^(\[[0-9a-fA-F:.]+\]|[\w.-]*):(\d+)$")


def address_problem(address: str) -> str | None:
    """What is wrong with a user's ADDRESS, with a "did you mean", or
    ``None`` when it looks right (connecting may still fail)."""
    typo = _SCHEME_TYPO.match(address)
    if typo:
        return f"{address!r} is not an address: did you mean {typo.group(1)}@{typo.group(2)}?"
    if address.startswith(("http://", "https://")):
        rest = address.split("://", 1)[1]
        if "/" not in rest.rstrip("/"):
            host = rest.rstrip("/")
            return (
                f"{address!r} has no path: did you mean http@{host} (a server over HTTP "
                f"CONNECT) or {address.rstrip('/')}{DEFAULT_REGISTRY_PATH} (a registry)?"
            )
        return None
    if "@" not in address and _HOST_PORT.match(address):
        return f"{address!r} is not an address: did you mean tcp@{address}?"
    return None


def _read_argument(text: str | None) -> str | None:
    """ARG_JSON as given: ``-`` is stdin, ``@FILE`` a file's content.

    :raises OSError: the file cannot be read.
    """
    if text == "-":
        return sys.stdin.read()
    if text is not None and text.startswith("@"):
        with open(text[1:], encoding="utf-8") as source:
            return source.read()
    return text


EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report it


def main(argv: list[str] | None = None) -> None:
    """Entry point: parse ``argv`` and exit with the command's status."""
    parser = build_parser()
    options = parser.parse_args(argv)
    argument = MISSING
    if options.command == "call":
        try:
            text = _read_argument(options.argument)
        except OSError as error:
            parser.error(f"cannot read the argument from {options.argument}: {error}")
        if text is not None:
            try:
                argument = json.loads(text)
            except ValueError as error:
                parser.error(f"ARG_JSON is not valid JSON: {error}")
        if options.max_message_size <= 0:
            parser.error("--max-message-size must be positive")
        if getattr(options, "compress", None) and not getattr(options, "framed", False):
            parser.error("--compress needs --framed")
        for pair in options.meta:
            if "=" not in pair:
                parser.error(f"--meta {pair!r} is not KEY=VALUE")
        try:
            encode_metadata(_metadata(options.meta))
        except MetadataError as error:
            parser.error(f"--meta: {error}")
    for name in ("timeout", "connect_timeout", "handle_timeout"):
        value = getattr(options, name, None)
        if value is not None and value < 0:
            parser.error(f"--{name.replace('_', '-')} must not be negative")
    address = getattr(options, "address", None)
    problem = address_problem(address) if address is not None else None
    if problem is not None:
        print(f"error: {problem}", file=sys.stderr)
        raise SystemExit(EXIT_USAGE)
    from twisted.internet import reactor as global_reactor
    from twisted.internet import task

    running: list[Deferred[int]] = []
    interrupted: list[bool] = []

    def interrupt(signum: int, frame: Any) -> None:
        # Twisted leaves SIGINT alone when it has a handler: the command is
        # cancelled (its connection closed) and the exit status is 130.
        interrupted.append(True)
        for command in running:
            global_reactor.callFromThread(command.cancel)  # type: ignore[attr-defined]

    signal.signal(signal.SIGINT, interrupt)

    def run(reactor: Any) -> Deferred[None]:
        def finish(status: int) -> None:
            if interrupted:
                print("interrupted", file=sys.stderr)
                raise SystemExit(EXIT_INTERRUPTED)
            if status:
                raise SystemExit(status)

        def crash(failure: Failure) -> None:
            if interrupted:
                print("interrupted", file=sys.stderr)
                raise SystemExit(EXIT_INTERRUPTED)
            print(f"error: {failure.getErrorMessage()}", file=sys.stderr)
            raise SystemExit(EXIT_CALL_FAILED)

        if options.command == "call":
            command = _call(reactor, options, argument)
        elif options.command == "servers":
            command = _servers(reactor, options)
        elif options.command == "health":
            command = _health(reactor, options)
        elif options.command == "describe":
            command = _describe(reactor, options)
        elif options.command == "stubs":
            command = _stubs(reactor, options)
        else:
            command = _list(reactor, options)
        running.append(Deferred.fromCoroutine(command))
        if interrupted:  # before the reactor ran
            running[0].cancel()
        return running[0].addCallbacks(finish, crash)

    task.react(run)
