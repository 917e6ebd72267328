"""
The client side of one GeeRPC stream: writes the Option, multiplexes calls by
``Seq``, completes each call's Deferred from its reply.

Lifecycle, one :class:`_State`: connecting -> open -> (going away: the server
said it stops) -> closing (closed by us, or the reply stream broke) -> closed
(the connection is lost).  Calls are taken only while open.
"""

from __future__ import annotations

import enum
from typing import Any

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure

from ._convert import convert_within, converter_for
from ._messages import MessagePairs
from ._pending import PendingCalls
from ._wire import GO_AWAY, SHUTTING_DOWN, Header, Option
from .errors import (
    CallTimeout,
    CodecError,
    ConnectionShutdown,
    MessageTooLargeToSend,
    ProtocolError,
    RemoteError,
    ServerGoingAway,
    ServerShuttingDown,
    UnexpectedDisconnect,
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
        self, codec: ICodec, option: Option, clock: IReactorTime, max_message_size: int
    ) -> None:
        self._option = option
        self._clock = clock
        self._encoder = codec.new_encoder()
        self._decoder = codec.new_decoder(max_message_size)
        self._max_message_size = max_message_size
        self._pending = PendingCalls()
        self._pairs = MessagePairs(self._decoder)
        # What a reply's conversion may take of its memory budget (see IMessageDecoder).
        self._budget_left = getattr(self._decoder, "budget_left", None)
        self._state = _CONNECTING
        self._lost_waiters: list[Deferred[None]] = []
        self._going_away_waiters: list[Deferred[None]] = []

    @property
    def pending(self) -> int:
        """Calls awaiting a reply."""
        return len(self._pending)

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
        # Widened, so that a Go server's read-ahead cannot swallow our first calls.
        self.transport.write(self._option.to_widened_json())

    def call(
        self,
        service_method: str,
        argument: Any = None,
        timeout: float | None = None,
        result_type: Any = None,
        argument_type: Any = None,
    ) -> Deferred[Any]:
        if timeout is not None and not timeout > 0:
            raise ValueError(f"timeout must be positive or None, got {timeout!r}")
        if self._state is not _OPEN:
            return fail(ServerGoingAway() if self._state is _GOING_AWAY else ConnectionShutdown())
        convert = converter_for(result_type) if result_type is not None else None
        seq, call = self._pending.register(service_method, convert)
        try:
            data = self._encoder.encode(Header(service_method, seq, ""), argument, argument_type)
        except Exception as error:
            self._pending.pop(seq)
            if isinstance(error, CodecError):
                return fail(error)
            return fail(CodecError(f"cannot encode the argument: {error}"))
        if len(data) > self._max_message_size:
            # The server would refuse it: do not send it (only what the
            # stream now counts as sent).
            self._pending.pop(seq)
            self.transport.write(self._encoder.withdraw(data))
            return fail(MessageTooLargeToSend(len(data), self._max_message_size))
        self.transport.write(data)
        d = call.deferred
        if timeout is not None:
            d.addTimeout(
                timeout,
                self._clock,
                onTimeoutCancel=lambda result, after: Failure(CallTimeout(service_method, after)),
            )
        return d

    def dataReceived(self, data: bytes) -> None:
        if self._state is _CLOSED:
            return
        decoder = self._decoder
        decoder.feed(data)
        pending = self._pending
        next_pair = self._pairs.next_pair
        try:
            while (pair := next_pair()) is not None:
                header, body = pair
                call = pending.pop(header[1])
                if call is None:
                    if header[1] == 0 and header[0] == GO_AWAY and self._state is _OPEN:
                        self._going_away()
                    continue  # cancelled or timed out: the late reply is dropped
                if header[2]:
                    text = header[2]
                    if self._state is _GOING_AWAY and text.startswith(SHUTTING_DOWN):
                        call.deferred.errback(ServerShuttingDown(text))
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
        except (ProtocolError, CodecError) as error:
            # A frame or a header that does not decode: the stream cannot go on.
            self._log.warn("rpc client: bad reply stream: {error}; closing", error=error)
            reason = error
            self._state = _CLOSING  # before failing calls: their errbacks may call again
            self._pending.fail_all(lambda: UnexpectedDisconnect(reason))
            self.transport.abortConnection()
            return
        if self._state is _GOING_AWAY and not pending:
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
        self._pending.fail_all(ConnectionShutdown)
        waiter: Deferred[None] = Deferred()
        self._lost_waiters.append(waiter)
        if self.connected:  # set by makeConnection
            self.transport.loseConnection()
        return waiter

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        closing = self._state is _CLOSING
        self._state = _CLOSED
        if closing:
            self._pending.fail_all(ConnectionShutdown)
        else:
            self._pending.fail_all(lambda: UnexpectedDisconnect(reason))
        waiters, self._lost_waiters = self._lost_waiters, []
        for waiter in waiters:
            waiter.callback(None)
