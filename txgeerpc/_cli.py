"""
``python -m txgeerpc``: call GeeRPC servers from the shell.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from collections.abc import Callable, Sequence
from typing import Any

from twisted.internet.defer import Deferred, ensureDeferred
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
from ._version import __version__
from ._wire import GOB
from .client import DEFAULT_CONNECT_TIMEOUT, Client, connect
from .codec import HEADER, default_registry
from .errors import (
    ConnectFailed,
    ConnectTimeout,
    EtcdError,
    GeeRPCError,
    InvalidAddress,
    NoServers,
    RemoteError,
    ServerGoingAway,
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
        default="null",
        help='the argument as JSON, e.g. \'{"Num1":6,"Num2":7}\' or \'"text"\' (default: null)',
    )
    names = sorted(set(default_registry.names()) | set(default_registry.aliases()))
    call.add_argument(
        "--codec",
        default="gob",
        choices=names,
        help="wire codec (default: gob, as GeeRPC)",
    )
    call.add_argument(
        "--timeout",
        type=float,
        default=30.0,
        metavar="S",
        help="seconds to wait for the reply; 0 waits forever (default: 30)",
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
        help=f"seconds to connect; 0 waits forever (default: {DEFAULT_CONNECT_TIMEOUT:g})",
    )
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
    return parser


WAIT_INTERVAL = 0.2  # seconds between two listings with --wait


async def _servers(reactor: Any, options: argparse.Namespace) -> int:
    if (options.registry is None) == (options.etcd is None):
        print("error: give a REGISTRY_URL or --etcd URL[,URL...]", file=sys.stderr)
        return EXIT_USAGE
    if options.registry is not None and not options.registry.startswith(("http://", "https://")):
        print(f"error: {options.registry!r} is not an http:// or https:// URL", file=sys.stderr)
        return EXIT_USAGE
    if options.wait < 0:
        print("error: --wait wants a number of servers, 0 or more", file=sys.stderr)
        return EXIT_USAGE
    listing = _etcd_servers if options.etcd is not None else _registry_servers
    deadline = None
    while True:
        ages = await listing(reactor, options)
        if isinstance(ages, int):  # an exit status: it said why
            return ages
        if len(ages) >= options.wait:
            return _print_listing(ages, options.json, "last heartbeat")
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
    try:
        answer = await agent_request(reactor)(
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
        client = await _connect_first(
            await _addresses(reactor, options.address),
            lambda address: connect(
                reactor, address, connect_timeout=options.connect_timeout or None
            ),
        )
    except GeeRPCError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_CALL_FAILED
    try:
        text = await client.call(
            DESCRIBE, PROBE, timeout=options.timeout or None, argument_type=HEADER
        )
    except RemoteError as error:
        print(
            f"error: {error} (the server does not describe itself: not txgeerpc, "
            "or introspection is off)",
            file=sys.stderr,
        )
        return EXIT_CALL_FAILED
    except GeeRPCError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_CALL_FAILED
    finally:
        await client.close()
    description = json.loads(text)
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
        client = await connect(reactor, options.address, connect_timeout=timeout)
    except GeeRPCError as error:
        print(f"unhealthy: {error}", file=sys.stderr)
        return EXIT_CALL_FAILED
    try:
        text = await client.call(HEALTH, PROBE, timeout=timeout, argument_type=HEADER)
    except ServerGoingAway:
        print("draining", file=sys.stderr)
        return EXIT_CALL_FAILED
    except RemoteError as error:
        if not error.message.startswith("rpc server: can't find "):
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


async def _addresses(
    reactor: Any,
    address: str,
    shuffle: Callable[[list[str]], None] = random.shuffle,
) -> list[str]:
    """``[address]``, or, for a registry URL, the servers it lists in random
    order (the order :func:`_connect_first` tries them in).

    :raises GeeRPCError: the registry cannot be reached.
    :raises NoServers: it lists none.
    """
    if not address.startswith(("http://", "https://")):
        return [address]
    discovery = RegistryDiscovery(reactor, agent_request(reactor), address)
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
    try:
        client = await _connect_first(
            await _addresses(reactor, options.address),
            lambda address: connect(
                reactor,
                address,
                codec=options.codec,
                handle_timeout=options.handle_timeout,
                connect_timeout=options.connect_timeout or None,
            ),
        )
    except GeeRPCError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_CALL_FAILED
    timeout = options.timeout or None
    try:
        argument_type = None
        if default_registry.get(options.codec).name == GOB:
            argument, argument_type = await _typed_argument(
                client, options.service_method, argument, timeout
            )
        reply = await client.call(
            options.service_method, argument, timeout=timeout, argument_type=argument_type
        )
    except JSONMismatch as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except GeeRPCError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_CALL_FAILED
    finally:
        await client.close()
    print(dumps(printable(reply)))
    return EXIT_OK


async def _typed_argument(
    client: Client, service_method: str, argument: Any, timeout: float | None
) -> tuple[Any, Any]:
    """The argument as the method's Go type (from ``_txgeerpc.Describe``), or
    as its JSON shape when the server does not describe itself."""
    try:
        text = await client.call(DESCRIBE, PROBE, timeout=timeout, argument_type=HEADER)
        description = json.loads(text)
        service, _, method = service_method.rpartition(".")
        declared = description["Services"][service][method]["Argument"]
        kind = type_from_schema(declared, description["Types"])
    except (RemoteError, KeyError, TypeError, ValueError):
        if argument is None:
            return {}, EMPTY  # gob has no null; Go decodes an empty struct into any struct
        return argument, None
    if argument is None:
        return zero_of(kind), kind
    return from_json(kind, argument), kind


def main(argv: list[str] | None = None) -> None:
    """Entry point: parse ``argv`` and exit with the command's status."""
    parser = build_parser()
    options = parser.parse_args(argv)
    argument = None
    if options.command == "call":
        try:
            argument = json.loads(options.argument)
        except ValueError as error:
            parser.error(f"ARG_JSON is not valid JSON: {error}")
    for name in ("timeout", "connect_timeout", "handle_timeout"):
        value = getattr(options, name, None)
        if value is not None and value < 0:
            parser.error(f"--{name.replace('_', '-')} must not be negative")
    from twisted.internet import task

    def run(reactor: Any) -> Deferred[None]:
        def finish(status: int) -> None:
            if status:
                raise SystemExit(status)

        def crash(failure: Failure) -> None:
            print(f"error: {failure.getErrorMessage()}", file=sys.stderr)
            raise SystemExit(EXIT_CALL_FAILED)

        if options.command == "call":
            command = _call(reactor, options, argument)
        elif options.command == "servers":
            command = _servers(reactor, options)
        elif options.command == "health":
            command = _health(reactor, options)
        else:
            command = _list(reactor, options)
        return ensureDeferred(command).addCallbacks(finish, crash)

    task.react(run)
