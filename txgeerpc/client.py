"""
The GeeRPC client: one connection, many concurrent calls, each a Deferred.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from twisted.internet.defer import CancelledError, Deferred, fail
from twisted.internet.error import TimeoutError as TCPTimeoutError
from twisted.internet.interfaces import IReactorTime, IStreamClientEndpoint
from twisted.internet.protocol import Factory
from twisted.python.failure import Failure

from ._client_protocol import ClientProtocol
from ._framed import DEFAULT_COMPRESS_THRESHOLD, check_compressions
from ._nodelay import set_tcp_nodelay
from ._wire import DEFAULT_MAX_MESSAGE_SIZE, EXTENSION_VERSION, GOB, Option, seconds_to_ns
from .codec import JSON, CodecRegistry, JSONRPCClientCodec, default_registry
from .context import CallContext, Interceptor, Metadata
from .endpoints import GO_NETRPC_SCHEMES, client_endpoint
from .errors import ConnectFailed, ConnectTimeout, GeeRPCError, InvalidAddress
from .interfaces import ICodec

__all__ = ["DEFAULT_CONNECT_TIMEOUT", "Client", "connect"]

DEFAULT_CONNECT_TIMEOUT = 10.0


class Client:
    """A connected GeeRPC client.  Get one from :func:`connect`.

    Calls multiplex over the one connection, matched to replies by ``Seq``.
    ``async with`` closes it (in a coroutine Twisted drives; under asyncio,
    :mod:`txgeerpc.aio`).
    """

    def __init__(self, protocol: ClientProtocol) -> None:
        self._protocol = protocol

    @property
    def available(self) -> bool:
        """True until the client is closed or its connection is lost."""
        return self._protocol.available

    @property
    def pending(self) -> int:
        """Calls sent and not yet answered."""
        return self._protocol.pending

    @property
    def speaks_extension(self) -> bool | None:
        """Whether the server said it speaks the txgeerpc extension
        (docs/protocol.md 13.9: it cancels the handlers of calls cancelled
        here); ``None`` until its first message arrives."""
        return self._protocol.speaks_extension

    def when_going_away(self) -> Deferred[None]:
        """A Deferred that fires with ``None`` when a txgeerpc server says it
        is going away (a graceful stop): from then on new calls fail with
        :class:`~txgeerpc.errors.ServerGoingAway` (they were not sent), calls
        already sent still get their replies, and the client closes once
        none is pending.  It never fails, and never fires if the connection
        ends otherwise (Go servers never send it)."""
        return self._protocol.when_going_away()

    def call(
        self,
        service_method: str,
        argument: Any = None,
        *,
        timeout: float | None = None,
        result_type: Any = None,
        argument_type: Any = None,
        metadata: Metadata | None = None,
        trailers: dict[str, str | bytes] | None = None,
        context: CallContext | None = None,
        codec: str | None = None,
    ) -> Deferred[Any]:
        """Call ``Service.Method`` with one argument.

        Invalid arguments are programming errors and raise at once (the
        ``ValueError`` below); everything that happens once the call is under
        way — encoding, the network, the server's answer — fails the returned
        Deferred instead.  :meth:`txgeerpc.xclient.XClient.call` follows the
        same rule.

        :param argument: any value the codec can encode: ints, strings,
            lists, dicts, dataclass/attrs instances...
        :param argument_type: the Go type to send ``argument`` as, as an
            annotation (``dict[str, int]``, ``gob.Uint``, a dataclass); by
            default gob infers it from the value (see the README's type
            mapping).
        :param timeout: seconds to wait for the reply; ``None`` waits forever.
            The timeout cancels the call: its entry is removed at once and a
            late reply is discarded.  It travels as the call's budget (a
            txgeerpc server cancels the handler when it runs out).
        :param metadata: lower-case keys to ``str`` (``bytes`` under keys
            ending ``-bin``) sent with the call (:mod:`txgeerpc.context`:
            at most 64 entries, 8 KiB; ``txgeerpc-`` keys are reserved).
        :param trailers: a dict the reply's trailers are put into, before
            the Deferred fires.
        :param context: the :class:`~txgeerpc.context.CallContext` of the
            handler making this call: the call gets at most what is left of
            its budget, and fails at once with
            :class:`~txgeerpc.errors.DeadlineExceeded` if nothing is.

        Cancelling the Deferred (or its timeout) also cancels the handler on
        a txgeerpc server; Go servers are not told.
        :param result_type: convert the reply to this type (``int``, a
            dataclass, ``list[Args]``...); plain values otherwise.
        :param codec: send this call's argument, and get its reply, in this
            codec (name or alias: ``msgpack``, ``protobuf``, ``json``,
            ``gob``) instead of the connection's; framed mode only
            (``connect(..., framed=True)``: docs/protocol.md 13.11, the
            codec byte).  A call made before the server's hello waits for it.
        :raises ValueError: ``timeout`` is neither ``None`` nor positive;
            ``codec`` is given on a connection that did not ask for framed
            mode.
        :raises txgeerpc.errors.UnsupportedCodec: ``codec`` names no codec.
        :raises txgeerpc.errors.MetadataError: (a ``ValueError``) the
            metadata breaks the rules.
        :returns: a Deferred that fires with the reply and can fail with:

            - :class:`~txgeerpc.errors.RemoteError`: the server answered with
              an error (its text is ``.message``);
            - :class:`~txgeerpc.errors.DeadlineExceeded` (a ``RemoteError``):
              the budget ran out on the server, or ``context``'s was spent;
            - :class:`~txgeerpc.errors.CallTimeout`: no reply within ``timeout``;
            - :class:`~twisted.internet.defer.CancelledError`: you cancelled it;
            - :class:`~txgeerpc.errors.CodecError`: the argument could not be
              encoded, or the reply could not be decoded or converted to
              ``result_type`` (only this call fails);
            - :class:`~txgeerpc.errors.ConnectionShutdown`: the client was
              closed, before or during the call;
            - :class:`~txgeerpc.errors.ServerGoingAway`: the server said it
              is stopping; the call was not sent (send it elsewhere);
            - :class:`~txgeerpc.errors.ServerShuttingDown` (a
              :class:`~txgeerpc.errors.RemoteError`): the call was still
              running when the stopping server's grace ran out;
            - :class:`~txgeerpc.errors.UnexpectedDisconnect`: the connection
              was lost or the server sent garbage while the call was pending.

            With ``codec``, :class:`~txgeerpc.errors.CodecError` also when the
            server did not agree to framed mode (a Go GeeRPC server).
        """
        # Most calls name a method and an argument, nothing else: they take
        # the protocol's short path (the same Seq, bytes and errors).
        if (
            timeout is None
            and codec is None
            and metadata is None
            and context is None
            and result_type is None
            and argument_type is None
            and trailers is None
        ):
            return self._protocol.call_plain(service_method, argument)
        if codec is not None:
            return self._protocol.call_in_codec(
                codec,
                service_method,
                argument,
                timeout,
                result_type,
                argument_type,
                metadata,
                trailers,
                context,
            )
        return self._protocol.call(
            service_method,
            argument,
            timeout,
            result_type,
            argument_type,
            metadata,
            trailers,
            context,
        )

    def close(self) -> Deferred[None]:
        """Close the connection.  Pending calls fail at once with
        :class:`~txgeerpc.errors.ConnectionShutdown`.

        :returns: a Deferred that fires (with ``None``) once the connection is
            closed; it never fails.
        """
        return self._protocol.close()

    async def __aenter__(self) -> Client:
        """``async with await connect(reactor, address) as client:`` in a
        coroutine Twisted drives (``ensureDeferred``, ``task.react``)."""
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        """Close the client (waits until closed); an exception goes on."""
        await self.close()


def connect(
    reactor: Any,
    address: str | IStreamClientEndpoint,
    *,
    codec: str = GOB,
    handle_timeout: float | None = None,
    connect_timeout: float | None = DEFAULT_CONNECT_TIMEOUT,
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
    clock: IReactorTime | None = None,
    codecs: CodecRegistry = default_registry,
    interceptors: Sequence[Interceptor] = (),
    framed: bool = False,
    compress: str | None = None,
    compress_threshold: int = DEFAULT_COMPRESS_THRESHOLD,
    tls: Any = None,
    token: str | None = None,
    nodelay: bool | None = None,
) -> Deferred[Client]:
    """Connect to a GeeRPC server.

    :param reactor: the reactor (used to build endpoints and, unless
        ``clock`` is given, for timeouts).
    :param address: ``tcp@host:port``, ``unix@/path``, a Twisted client
        endpoint string, or an ``IStreamClientEndpoint``; or a Go ``net/rpc``
        server's ``netrpc@host:port``, ``netrpc+http@host:port`` or
        ``jsonrpc@host:port`` (docs/protocol.md 14: no Option is sent, and
        such servers neither cancel handlers nor take budgets or metadata).
    :param codec: codec name or alias: ``application/gob`` (GeeRPC's own,
        the default) or ``json`` (a txgeerpc extension).  A ``netrpc`` address
        speaks gob and a ``jsonrpc`` one JSON-RPC, whatever the default.
    :param handle_timeout: asks the server to give up on each request after
        this many seconds (GeeRPC's ``HandleTimeout``); the server may cap it.
    :param connect_timeout: seconds for the connection and the handshake
        together; ``None`` waits forever.
    :param max_message_size: largest reply accepted, in bytes.
    :param interceptors: callables ``(context, argument, proceed)`` that see
        every call this client makes, outermost first (:mod:`txgeerpc.context`).
    :param framed: ask for framed mode (docs/protocol.md 13.11): a txgeerpc
        server switches to it with its hello, at no extra round trip; a Go
        server ignores the request and the stream stays plain.
    :param compress: in framed mode, compress bodies of at least
        ``compress_threshold`` bytes with ``gzip``, ``zstd`` or ``lz4`` (if
        the server accepts it; otherwise none) and ask for replies in it.
    :param compress_threshold: the smallest body compressed, in bytes.
    :param tls: a :class:`txgeerpc.tls.ClientTLS` for ``tls@`` and
        ``https@`` addresses: the authorities to trust, the client
        certificate to present.
    :param token: a bearer token sent with every call (its ``authorization``
        metadata, :mod:`txgeerpc.auth`).
    :param nodelay: set (``True``) or clear (``False``) ``TCP_NODELAY`` on a
        TCP connection; ``None``, the default, leaves the system's (Nagle's
        algorithm on; docs/operations.md, "TCP_NODELAY", has the measurements).
    :returns: a Deferred firing with a :class:`Client`; it can fail with
        :class:`~txgeerpc.errors.InvalidAddress`,
        :class:`~txgeerpc.errors.UnsupportedCodec`,
        :class:`~txgeerpc.errors.ConnectTimeout`,
        :class:`~txgeerpc.errors.TLSError` (the TLS handshake failed; a
        :class:`~txgeerpc.errors.ConnectFailed`),
        :class:`~txgeerpc.errors.TLSConfigError` or
        :class:`~txgeerpc.errors.ConnectFailed` (refused, unreachable...,
        with the original failure as ``.reason``).
    """
    if connect_timeout is not None and not connect_timeout > 0:
        raise ValueError(f"connect_timeout must be positive or None, got {connect_timeout!r}")
    if compress is not None and not framed:
        raise ValueError("compress needs framed=True")
    compression = check_compressions([compress]) if compress is not None else ()
    try:
        chosen = codecs.get(codec)
        scheme = _go_scheme(address)
        if scheme is not None:
            chosen = _go_codec(scheme, chosen)
        endpoint = (
            client_endpoint(reactor, address, connect_timeout, tls=tls)
            if isinstance(address, str)
            else address
        )
    except GeeRPCError as error:
        return fail(error)
    timer: IReactorTime = clock if clock is not None else reactor
    option = Option(
        codec_type=chosen.name,
        connect_timeout_ns=seconds_to_ns(connect_timeout),
        handle_timeout_ns=seconds_to_ns(handle_timeout),
        # Go servers ignore the key; txgeerpc servers answer with the hello,
        # say when they stop, and take budgets, metadata and cancels.
        # Go's net/rpc is sent no Option: nothing of the extension is used.
        extension=EXTENSION_VERSION if scheme is None else 0,
        framed=framed,
    )
    chain = tuple(interceptors)
    if token is not None:
        from .auth import bearer_token

        chain = (bearer_token(token), *chain)

    def lookup(name: str) -> Any:
        return codecs.get(name, aliases=False)

    factory = Factory.forProtocol(
        lambda: ClientProtocol(
            chosen,
            option,
            timer,
            max_message_size,
            chain,
            send_option=scheme is None,
            lookup=lookup,
            compress=compression[0] if compression else None,
            compress_threshold=compress_threshold,
            resolve=codecs.get,
        )
    )
    connecting: Deferred[Any] = endpoint.connect(factory)
    if connect_timeout is not None:
        connecting.addTimeout(
            connect_timeout,
            timer,
            onTimeoutCancel=lambda result, after: Failure(ConnectTimeout(after)),
        )

    def wrap_failure(failure: Failure) -> Failure:
        if failure.check(GeeRPCError, CancelledError):
            return failure
        if failure.check(TCPTimeoutError) and connect_timeout is not None:
            # The endpoint's own connect timeout (the same number) fired first.
            return Failure(ConnectTimeout(connect_timeout))
        return Failure(ConnectFailed(failure.value))

    if nodelay is not None:
        connecting.addCallback(_with_nodelay, nodelay)
    return connecting.addCallbacks(Client, wrap_failure)


def _with_nodelay(protocol: Any, enabled: bool) -> Any:
    set_tcp_nodelay(protocol.transport, enabled)
    return protocol


def _go_scheme(address: str | IStreamClientEndpoint) -> str | None:
    """The scheme of a Go ``net/rpc`` address (``netrpc``...), else ``None``."""
    if not isinstance(address, str):
        return None
    scheme, at, _ = address.partition("@")
    return scheme if at and scheme in GO_NETRPC_SCHEMES else None


def _go_codec(scheme: str, asked: ICodec) -> ICodec:
    """The codec a Go ``net/rpc`` address speaks.  ``asked`` may be the
    default (gob) or, for ``jsonrpc``, JSON; anything else is a mistake.

    :raises InvalidAddress: ``asked`` is another codec.
    """
    speaks = GO_NETRPC_SCHEMES[scheme]
    if speaks == "gob":
        if asked.name == GOB:
            return asked
    elif asked.name in (GOB, JSON):
        return JSONRPCClientCodec()
    raise InvalidAddress(f"rpc client err: {scheme}@ addresses speak {speaks}, not {asked.name}")
