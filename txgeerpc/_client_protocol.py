"""
The client side of one GeeRPC stream: writes the Option, multiplexes calls by
``Seq``, completes each call's Deferred from its reply.

Lifecycle, one :class:`_State`: connecting -> open -> (going away: the server
said it stops) -> closing (closed by us, or the reply stream broke) -> closed
(the connection is lost).  Calls are taken only while open.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from typing import Any

from twisted.internet import tcp
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure

from ._convert import convert_within, converter_for
from ._framed import (
    CODEC_NUMBERS,
    COMPRESSION_NUMBERS,
    DEFAULT_COMPRESS_THRESHOLD,
    FRAMED,
    GZIP,
    LZ4,
    META_CODECS,
    META_COMPRESSION,
    META_FRAMED,
    NONE,
    ZSTD,
    FramedDecoder,
    FramedEncoder,
)
from ._messages import MessagePairs
from ._nodelay import write_now
from ._pending import PendingCalls
from ._wire import (
    CANCEL,
    DEADLINE_EXCEEDED,
    EMPTY_STRUCT,
    GO_AWAY,
    HELLO,
    PERMISSION_DENIED,
    SHUTTING_DOWN,
    UNAUTHENTICATED,
    Header,
    Option,
    new_header,
    seconds_to_ns,
)
from .context import (
    CallContext,
    Interceptor,
    Metadata,
    decode_metadata,
    encode_metadata,
    run_interceptors,
)
from .errors import (
    CodecError,
    ConnectionShutdown,
    DeadlineExceeded,
    MessageTooLargeToSend,
    MetadataError,
    PermissionDenied,
    ProtocolError,
    RemoteError,
    RemoteMessageTooLarge,
    ServerGoingAway,
    ServerShuttingDown,
    TLSError,
    Unauthenticated,
    UnexpectedDisconnect,
    UnsupportedCodec,
)
from .interfaces import ICodec


class _State(enum.Enum):
    CONNECTING = "connecting"
    """Built, not connected yet: no calls."""
    OPEN = "open"
    """Connected: calls are taken."""
    GOING_AWAY = "going away"
    """The server said it stops (docs/protocol.md 13.8): new calls fail with
    ServerGoingAway (not sent), pending ones still get their replies; closed
    by us once none is pending."""
    CLOSING = "closing"
    """Closed by :meth:`ClientProtocol.close`, or the reply stream broke:
    pending calls have failed, new ones fail; waiting for the connection to go."""
    CLOSED = "closed"
    """The connection is lost: everything has failed, and replies are ignored."""


_CONNECTING = _State.CONNECTING
_OPEN = _State.OPEN
_GOING_AWAY = _State.GOING_AWAY
_CLOSING = _State.CLOSING
_CLOSED = _State.CLOSED


class ClientProtocol(Protocol):
    """One client connection.  See :class:`txgeerpc.Client` for the public API."""

    _log = Logger()
    # A connected TCP/UNIX/in-memory transport (ITCPTransport-like); Twisted
    # types it as Optional[ITransport], which lacks abortConnection.
    transport: Any

    def __init__(
        self,
        codec: ICodec,
        option: Option,
        clock: IReactorTime,
        max_message_size: int,
        interceptors: Sequence[Interceptor] = (),
        send_option: bool = True,
        lookup: Callable[[str], ICodec] | None = None,
        compress: str | None = None,
        compress_threshold: int = DEFAULT_COMPRESS_THRESHOLD,
        resolve: Callable[[str], ICodec] | None = None,
    ) -> None:
        self._option = option
        # Codec name or alias -> codec, for a call in another codec (framed).
        self._resolve = resolve if resolve is not None else lookup
        # Calls in another codec made before the server's first message.
        self._framing_waiters: list[Deferred[None]] = []
        self._send_option = send_option
        self._codec = codec
        # Framed mode (docs/protocol.md 13.11), asked for in the Option: until
        # the server's first message, the bytes fed to the plain decoder.
        self._lookup = lookup
        self._compress = compress
        self._compress_threshold = compress_threshold
        self._retained: list[bytes] | None = (
            [] if option.framed and option.speaks_extension else None
        )
        self.framed = False
        """Whether the connection switched to framed mode."""
        self._clock = clock
        self._encoder = codec.new_encoder()
        self._decoder = codec.new_decoder(max_message_size)
        self._max_message_size = max_message_size
        self._interceptors = tuple(interceptors)
        self._pending = PendingCalls(self._cancelled, clock)
        # Whether the server speaks the txgeerpc extension: unknown (None)
        # until its first message, which is the hello if it does.  Calls
        # cancelled before that are remembered, and told once it is known.
        self._extension: bool | None = None if option.speaks_extension else False
        # The codecs the server said it decodes in frames (its hello), if it said.
        self._server_codecs: frozenset[str] | None = None
        self._early_cancels: list[int] = []
        self._trailer_sinks: dict[int, dict[str, str | bytes]] = {}
        self._pairs = MessagePairs(self._decoder)
        # What a reply's conversion may take of its memory budget (see IMessageDecoder).
        self._budget_left = getattr(self._decoder, "budget_left", None)
        self._state = _CONNECTING
        self._lost_waiters: list[Deferred[None]] = []
        self._going_away_waiters: list[Deferred[None]] = []
        self.peer = ""
        """The server's address (``host:port``), once connected."""
        # Why a TLS server closed the connection after the client's side of
        # the handshake (TLS 1.3 checks client certificates then): later
        # calls fail with it, not with a bare "connection is shut down".
        self._refused: Failure | None = None
        # While a read is handled: what is written meanwhile (the calls its
        # replies' callbacks make), written once at its end.
        self._batch: list[bytes] | None = None

    @property
    def pending(self) -> int:
        """Calls awaiting a reply."""
        return len(self._pending)

    @property
    def speaks_extension(self) -> bool | None:
        """Whether the server said it speaks the txgeerpc extension (remote
        cancellation...); ``None`` until its first message."""
        return self._extension

    @property
    def available(self) -> bool:
        """True while calls can be made."""
        return self._state is _OPEN

    def when_going_away(self) -> Deferred[None]:
        """A Deferred that fires with ``None`` when the server says it is going
        away (at once if it has); it never fails, and never fires if the
        connection ends otherwise."""
        if self._state is _GOING_AWAY:
            return succeed(None)
        waiter: Deferred[None] = Deferred()
        self._going_away_waiters.append(waiter)
        return waiter

    def connectionMade(self) -> None:
        if self._state is _CONNECTING:  # close() may have come first
            self._state = _OPEN
        address = self.transport.getPeer()
        host = getattr(address, "host", None)
        self.peer = f"{host}:{getattr(address, 'port', '')}" if host is not None else str(address)
        if self._send_option:  # not to Go's net/rpc (docs/protocol.md 14)
            # Widened, so that a Go server's read-ahead cannot swallow our first calls.
            self.transport.write(self._option.to_widened_json())

    def call(
        self,
        service_method: str,
        argument: Any = None,
        timeout: float | None = None,
        result_type: Any = None,
        argument_type: Any = None,
        metadata: Metadata | None = None,
        trailers: dict[str, str | bytes] | None = None,
        context: CallContext | None = None,
    ) -> Deferred[Any]:
        if timeout is not None and not timeout > 0:
            raise ValueError(f"timeout must be positive or None, got {timeout!r}")
        if self._interceptors:
            return self._intercepted(
                service_method,
                argument,
                timeout,
                result_type,
                argument_type,
                metadata,
                trailers,
                context,
            )
        wire = encode_metadata(metadata) if metadata else None  # MetadataError at once
        return self._send(
            service_method, argument, timeout, result_type, argument_type, wire, trailers, context
        )

    def call_in_codec(
        self,
        codec: str,
        service_method: str,
        argument: Any = None,
        timeout: float | None = None,
        result_type: Any = None,
        argument_type: Any = None,
        metadata: Metadata | None = None,
        trailers: dict[str, str | bytes] | None = None,
        context: CallContext | None = None,
    ) -> Deferred[Any]:
        """:meth:`call` with its argument and reply in ``codec`` instead of
        the connection's (framed mode's codec byte, docs/protocol.md 13.11).
        Made before the server's hello, it is sent once the hello is in.

        :raises ValueError: the connection did not ask for framed mode, or
            ``codec`` has no framed codec id.
        :raises txgeerpc.errors.UnsupportedCodec: no codec of that name.
        :returns: as :meth:`call`; it also fails with
            :class:`~txgeerpc.errors.CodecError` when the server did not
            agree to framed mode (a Go GeeRPC server, or one that refuses it),
            and with :class:`~txgeerpc.errors.UnsupportedCodec` when its hello
            did not list ``codec`` (the call is not sent).
        """
        if timeout is not None and not timeout > 0:
            raise ValueError(f"timeout must be positive or None, got {timeout!r}")
        if not (self._option.framed and self._option.speaks_extension) or self._resolve is None:
            raise ValueError(
                f"codec={codec!r} for one call needs framed mode: connect(..., framed=True)"
            )
        chosen = self._resolve(codec)
        number = CODEC_NUMBERS.get(chosen.name)
        if number is None:
            raise ValueError(f"codec {chosen.name} has no codec id in framed mode")
        if not self.framed and self._extension is None and self._state is _OPEN:
            waiter: Deferred[None] = Deferred()
            self._framing_waiters.append(waiter)
            return waiter.addCallback(
                lambda _: self.call_in_codec(
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
            )
        if not self.framed and self._state is _OPEN:
            return fail(
                CodecError(
                    f"cannot call {service_method} in {chosen.name}: the server did not "
                    "agree to framed mode (a Go GeeRPC server, or framed mode refused), "
                    "and only framed mode carries a per-call codec"
                )
            )
        if self._server_codecs is not None and chosen.name not in self._server_codecs:
            # Sent, its frame would close the connection (its header is in a
            # codec the server cannot read, so it has no Seq to answer).
            return fail(UnsupportedCodec(chosen.name))
        if number == CODEC_NUMBERS.get(self._codec.name):
            number = None  # the connection's own: the ordinary path
        if self._interceptors:
            return self._intercepted(
                service_method,
                argument,
                timeout,
                result_type,
                argument_type,
                metadata,
                trailers,
                context,
                number,
            )
        wire = encode_metadata(metadata) if metadata else None  # MetadataError at once
        return self._send(
            service_method,
            argument,
            timeout,
            result_type,
            argument_type,
            wire,
            trailers,
            context,
            number,
        )

    def _framing_known(self) -> None:
        """The server's first message is in (or the connection is gone):
        calls in another codec waiting for it go on."""
        waiters, self._framing_waiters = self._framing_waiters, []
        for waiter in waiters:
            if not waiter.called:  # not cancelled meanwhile
                waiter.callback(None)

    def _intercepted(
        self,
        service_method: str,
        argument: Any,
        timeout: float | None,
        result_type: Any,
        argument_type: Any,
        metadata: Metadata | None,
        trailers: dict[str, str | bytes] | None,
        parent: CallContext | None,
        codec: int | None = None,
    ) -> Deferred[Any]:
        clock = self._clock
        deadline = parent.deadline if parent is not None else None
        if timeout is not None:
            mine = clock.seconds() + timeout
            deadline = mine if deadline is None else min(deadline, mine)
        context = CallContext(
            service_method,
            clock,
            metadata=dict(metadata or {}),
            deadline=deadline,
            peer=self.peer,
            parent=parent,
        )
        encode_metadata(context.metadata)  # MetadataError at once

        def send(argument: Any) -> Deferred[Any]:
            d = self._send(
                service_method,
                argument,
                timeout,
                result_type,
                argument_type,
                encode_metadata(context.metadata) if context.metadata else None,
                context.trailers,
                parent,
                codec,
            )
            if trailers is not None:
                d.addBoth(_copy_trailers, context.trailers, trailers)
            return d

        return run_interceptors(self._interceptors, context, argument, send)

    def _send(
        self,
        service_method: str,
        argument: Any,
        timeout: float | None,
        result_type: Any,
        argument_type: Any,
        metadata: dict[str, str] | None,
        trailers: dict[str, str | bytes] | None,
        context: CallContext | None,
        codec: int | None = None,
    ) -> Deferred[Any]:
        if self._state is not _OPEN:
            if self._refused is not None:  # a TLS server refused this client's certificate
                return fail(UnexpectedDisconnect(self._refused))
            return fail(ServerGoingAway() if self._state is _GOING_AWAY else ConnectionShutdown())
        if context is not None:
            left = context.remaining()
            if left is not None:
                if left <= 0:
                    return self._expired(service_method, argument, argument_type, left)
                if timeout is None or left < timeout:
                    timeout = left
        convert = converter_for(result_type) if result_type is not None else None
        seq, call = self._pending.register(service_method, convert)
        if (timeout is None and not metadata) or self._extension is False:
            # (a Go server would ignore a budget and metadata)
            header = new_header((service_method, seq, "", 0, None))
        else:
            budget = seconds_to_ns(timeout) if timeout is not None else 0
            header = new_header((service_method, seq, "", budget, metadata))
        try:
            if codec is None:
                data = self._encoder.encode(header, argument, argument_type)
            else:  # framed: the codec byte (FramedEncoder)
                encode: Any = self._encoder.encode
                data = encode(header, argument, argument_type, codec)
        except Exception as error:
            return self._not_encoded(seq, error)
        if len(data) > self._max_message_size:
            return self._too_large(seq, data)
        if self._batch is not None:
            self._batch.append(data)  # written once the read is handled
        else:
            self.transport.write(data)
        if trailers is not None:
            self._trailer_sinks[seq] = trailers
        if timeout is not None:
            self._pending.time_out(call, timeout)  # CallTimeout, and the server is told
        return call.deferred

    def call_plain(self, service_method: str, argument: Any) -> Deferred[Any]:
        """:meth:`call` with a method and an argument, nothing else (no
        timeout, types, metadata, trailers or context): most calls.  It
        exists because it runs on every such call: one frame instead of
        :meth:`call` and :meth:`_send` with their nine parameters; the same
        Seq, bytes and errors (anything less common goes to :meth:`call`)."""
        if self._interceptors or self._state is not _OPEN:
            return self.call(service_method, argument)
        seq, call = self._pending.register(service_method, None)
        try:
            data = self._encoder.encode(
                new_header((service_method, seq, "", 0, None)), argument, None
            )
        except Exception as error:
            return self._not_encoded(seq, error)
        if len(data) > self._max_message_size:
            return self._too_large(seq, data)
        if self._batch is not None:
            self._batch.append(data)  # written once the read is handled
        else:
            self.transport.write(data)
        return call.deferred

    def _not_encoded(self, seq: int, error: Exception) -> Deferred[Any]:
        """The argument of the call registered under ``seq`` did not encode."""
        self._pending.pop(seq)
        if isinstance(error, CodecError):
            return fail(error)
        return fail(CodecError(f"cannot encode the argument: {error}"))

    def _too_large(self, seq: int, data: bytes) -> Deferred[Any]:
        """The call registered under ``seq`` encoded larger than the limit:
        the server would refuse it, so it is not sent (only what the stream
        now counts as sent)."""
        self._pending.pop(seq)
        self._write(self._encoder.withdraw(data))
        return fail(MessageTooLargeToSend(len(data), self._max_message_size))

    def _expired(
        self, service_method: str, argument: Any, argument_type: Any, left: float
    ) -> Deferred[Any]:
        """A call made under a spent budget: it fails at once.  A txgeerpc
        server is still sent it, marked spent, so that it counts the refusal
        (it never runs it); the answer is dropped."""
        spent = -left
        if self._extension:
            header = Header(service_method, self._pending.skip(), "", -max(seconds_to_ns(spent), 1))
            try:
                data = self._encoder.encode(header, argument, argument_type)
            except Exception:
                data = b""
            if len(data) > self._max_message_size:
                data = self._encoder.withdraw(data)
            self._write(data)
        return fail(
            DeadlineExceeded(
                f"{DEADLINE_EXCEEDED}: the budget of {service_method} was spent "
                f"{spent:.3g}s before it was sent"
            )
        )

    def _cancelled(self, seq: int) -> None:
        """A pending call was cancelled (or timed out): tell a server that
        speaks the extension to cancel its handler."""
        if self._trailer_sinks:
            self._trailer_sinks.pop(seq, None)
        if self._extension is None:
            self._early_cancels.append(seq)
        elif self._extension and (self._state is _OPEN or self._state is _GOING_AWAY):
            self._write_cancel(seq)

    def _write_cancel(self, seq: int) -> None:
        self._write(self._encoder.encode(Header(CANCEL, seq, ""), EMPTY_STRUCT))

    def _write(self, data: bytes) -> None:
        """Write, after what the read being handled has batched, if any."""
        if self._batch is not None:
            self._batch.append(data)
        else:
            self.transport.write(data)

    def _flush(self) -> None:
        """Write what the read being handled batched: one write for every
        call its replies' callbacks made (128 in flight: 128 fewer writes)."""
        batch, self._batch = self._batch, None
        if batch:
            transport = self.transport
            if isinstance(transport, tcp.Connection):
                # TCP sends on the reactor's next turn (one poll later):
                # send now, as the server does its replies (most of a call's
                # latency at one call in flight).
                write_now(transport, b"".join(batch))
            else:
                transport.write(b"".join(batch))

    def _first_message(self, header: Header) -> None:
        """The server's first message tells whether it speaks the extension."""
        self._extension = header[0] == HELLO and header[1] == 0
        early, self._early_cancels = self._early_cancels, []
        if self._extension and (self._state is _OPEN or self._state is _GOING_AWAY):
            for seq in early:
                self._write_cancel(seq)

    def _switch_to_framed(self, header: Header) -> bool:
        """The server's first message: if it is a hello offering framed mode,
        send the switch message and frame everything from now on (the
        server frames everything after its hello).

        :returns: whether the connection is now framed.
        """
        retained = b"".join(self._retained or ())
        self._retained = None
        meta = header[4] or {}
        lookup = self._lookup
        if not self._extension or meta.get(META_FRAMED) != "1" or lookup is None:
            return False
        rest = self._decoder.buffered()
        if META_CODECS in meta:  # (a server before this key: every codec is tried)
            self._server_codecs = frozenset(meta[META_CODECS].split(","))
        accepted = meta.get(META_COMPRESSION, "").split(",")
        compress = self._compress if self._compress in accepted else None
        if self._state is _OPEN or self._state is _GOING_AWAY:
            switch = Header(FRAMED, 0, "", 0, {META_COMPRESSION: compress or "none"})
            self._write(self._encoder.encode(switch, EMPTY_STRUCT))
        self._encoder = FramedEncoder(
            lookup,
            self._codec.name,
            COMPRESSION_NUMBERS[compress] if compress else NONE,
            self._compress_threshold,
        )
        decoder = self._decoder = FramedDecoder(
            lookup, self._max_message_size, (GZIP, ZSTD, LZ4), after_plain=True
        )
        self._pairs = MessagePairs(decoder)
        self._budget_left = decoder.budget_left
        self.framed = True
        if rest:
            decoder.feed(retained[len(retained) - rest :])
        return True

    def dataReceived(self, data: bytes) -> None:
        if self._state is _CLOSED:
            return
        if self._batch is not None:  # re-entered (a callback fed us): the outer one writes
            self._read(data)
            return
        self._batch = []
        try:
            self._read(data)
        finally:
            self._flush()

    def _read(self, data: bytes) -> None:
        decoder = self._decoder
        if self._retained is not None:
            self._retained.append(data)
        decoder.feed(data)
        pending = self._pending
        next_pair = self._pairs.next_pair
        alone = True
        try:
            while (pair := next_pair()) is not None:
                header, body = pair
                if self._extension is None:
                    self._first_message(header)
                    if self._retained is not None and self._switch_to_framed(header):
                        decoder = self._decoder
                        next_pair = self._pairs.next_pair
                    if self._framing_waiters:
                        self._framing_known()
                call = pending.pop(header[1])
                if call is None:
                    if header[1] == 0 and header[0] == GO_AWAY and self._state is _OPEN:
                        self._going_away()
                    continue  # cancelled or timed out: the late reply is dropped
                if self._trailer_sinks:
                    sink = self._trailer_sinks.pop(header[1], None)
                    if sink is not None and header[4] is not None:
                        try:
                            sink.update(decode_metadata(header[4]))
                        except MetadataError as error:
                            call.deferred.errback(CodecError(f"reading trailers: {error}"))
                            continue
                if header[2]:
                    text = header[2]
                    if self._state is _GOING_AWAY and text.startswith(SHUTTING_DOWN):
                        call.deferred.errback(ServerShuttingDown(text))
                    elif text.startswith(DEADLINE_EXCEEDED):
                        call.deferred.errback(DeadlineExceeded(text))
                    elif text.startswith("body ") and RemoteMessageTooLarge.matches(text):
                        call.deferred.errback(RemoteMessageTooLarge(text))
                    elif text.startswith(UNAUTHENTICATED):
                        call.deferred.errback(Unauthenticated(text))
                    elif text.startswith(PERMISSION_DENIED):
                        call.deferred.errback(PermissionDenied(text))
                    else:
                        call.deferred.errback(RemoteError(text))
                    continue
                try:
                    value = decoder.decode_body(body)
                    if call.convert is not None:
                        budget_left = self._budget_left
                        if budget_left is None:
                            value = call.convert(value)
                        else:
                            value = convert_within(call.convert, value, budget_left())[0]
                except Exception as error:  # codec, conversion or a struct's own checks
                    call.deferred.errback(CodecError(f"reading body {error}"))
                    continue
                call.deferred.callback(value)
                if alone:
                    # A read of one reply (one call in flight: every read):
                    # the call its callback made goes out without asking the
                    # decoder for a pair it does not hold (0: between messages).
                    if not decoder.buffered():
                        break
                    alone = False
        except (ProtocolError, CodecError) as error:
            # A frame or a header that does not decode: the stream cannot go on.
            self._log.warn("rpc client: bad reply stream: {error}; closing", error=error)
            reason = error
            self._state = _CLOSING  # before failing calls: their errbacks may call again
            self._pending.fail_all(lambda: UnexpectedDisconnect(reason))
            self._flush()
            self.transport.abortConnection()
            return
        if self._state is _GOING_AWAY and not pending:
            self._flush()
            self.transport.loseConnection()  # every reply is in: the server closes when we do

    def _going_away(self) -> None:
        """The server's go-away message: take no new call; once the pending
        ones are answered, close (the server reads until then)."""
        self._state = _GOING_AWAY
        waiters, self._going_away_waiters = self._going_away_waiters, []
        for waiter in waiters:
            waiter.callback(None)

    def close(self) -> Deferred[None]:
        """Fail pending calls with ConnectionShutdown and close; fires when closed."""
        if self._state is _CLOSED:
            return succeed(None)
        self._state = _CLOSING
        self._trailer_sinks.clear()
        self._pending.fail_all(ConnectionShutdown)
        waiter: Deferred[None] = Deferred()
        self._lost_waiters.append(waiter)
        if self.connected:  # set by makeConnection
            self._flush()  # what callbacks of the read being handled wrote first
            self.transport.loseConnection()
        return waiter

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        closing = self._state is _CLOSING
        self._state = _CLOSED
        if reason.check(TLSError):
            self._refused = reason
        self._trailer_sinks.clear()
        if self._framing_waiters:
            self._framing_known()  # they fail: the connection is closed
        if closing:
            self._pending.fail_all(ConnectionShutdown)
        else:
            self._pending.fail_all(lambda: UnexpectedDisconnect(reason))
        waiters, self._lost_waiters = self._lost_waiters, []
        for waiter in waiters:
            waiter.callback(None)


def _copy_trailers(
    outcome: Any, source: dict[str, str | bytes], sink: dict[str, str | bytes]
) -> Any:
    sink.update(source)
    return outcome
