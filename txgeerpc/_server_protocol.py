"""
The server side of one GeeRPC stream: Option negotiation, then header/body
messages handed to a :class:`~txgeerpc._dispatch.Dispatcher`.

Lifecycle, one :class:`_State`: awaiting the Option (under a handshake
deadline) -> serving -> (the peer half-closed: answering what it sent) ->
closing (after a protocol error: no more reading, in-flight requests get
``drain_timeout`` to finish) -> disconnecting -> closed.  Reading pauses while
the in-flight limit is reached or the transport's write buffer is full, so
neither a fast sender nor a client that never reads makes the server buffer
without bound.
"""

from __future__ import annotations

import enum
from typing import Any

import attrs
from twisted.internet.interfaces import (
    IAddress,
    IDelayedCall,
    IHalfCloseableProtocol,
    IPushProducer,
    IReactorTime,
)
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from ._dispatch import Dispatcher
from ._messages import MessagePairs
from ._option import DEFAULT_MAX_OPTION_SIZE, OptionDecoder
from ._service import Service
from ._wire import DEFAULT_MAX_MESSAGE_SIZE as DEFAULT_MAX_MESSAGE_SIZE
from ._wire import EMPTY_STRUCT, Header, Option, seconds_to_ns
from .codec import CodecRegistry
from .errors import CodecError, MessageTooLarge, ProtocolError, UnsupportedCodec
from .interfaces import IMessageDecoder, IMessageEncoder

DEFAULT_MAX_IN_FLIGHT = 256
DEFAULT_HANDSHAKE_TIMEOUT = 10.0
DEFAULT_DRAIN_TIMEOUT = 10.0


@attrs.frozen
class ServerSettings:
    """Limits of a server; every one is explicit and configurable.

    :ivar max_message_size: largest header or body accepted, in bytes.
    :ivar max_in_flight: requests one connection may have running; reading
        from that connection pauses while it is reached.
    :ivar handshake_timeout: seconds a new connection has to send its Option.
    :ivar max_handle_timeout: server-side cap on a request's run time in
        seconds (``None``: only the client's HandleTimeout applies).
    :ivar drain_timeout: after a protocol error, seconds running requests get
        to finish before the connection is closed anyway.
    :ivar max_option_size: largest Option accepted, in bytes.
    """

    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE
    max_in_flight: int = DEFAULT_MAX_IN_FLIGHT
    handshake_timeout: float = DEFAULT_HANDSHAKE_TIMEOUT
    max_handle_timeout: float | None = None
    drain_timeout: float = DEFAULT_DRAIN_TIMEOUT
    max_option_size: int = DEFAULT_MAX_OPTION_SIZE

    def handle_timeout_ns(self, option: Option) -> int:
        """The limit for this connection's requests: the client's
        HandleTimeout capped by the server's maximum; 0 = none.  A negative
        client value (which makes Go time out every call) counts as unset."""
        client = option.handle_timeout_ns if option.handle_timeout_ns > 0 else 0
        server = seconds_to_ns(self.max_handle_timeout)
        if server <= 0:
            return client
        return min(client, server) if client else server


class _State(enum.Enum):
    AWAITING_OPTION = "awaiting the Option"
    """Connected; the Option has not been read (the handshake deadline runs)."""
    SERVING = "serving"
    """Reading requests and answering them."""
    HALF_CLOSED = "half-closed"
    """The peer has sent everything: answering what it sent, then closing."""
    CLOSING = "closing"
    """No more reading (a protocol error): running requests get the drain
    timeout to finish, then the connection is closed."""
    DISCONNECTING = "disconnecting"
    """The transport was told to close (or aborted); waiting for it to go."""
    CLOSED = "closed"
    """The connection is lost."""


_AWAITING_OPTION = _State.AWAITING_OPTION
_SERVING = _State.SERVING
_HALF_CLOSED = _State.HALF_CLOSED
_CLOSING = _State.CLOSING
_DISCONNECTING = _State.DISCONNECTING
_CLOSED = _State.CLOSED
# Tuples, not sets: membership is an identity check, no (Python-level) Enum hash.
_READING = (_SERVING, _AWAITING_OPTION, _HALF_CLOSED)
_ANSWERING = (_SERVING, _HALF_CLOSED)

_REQUESTS_PER_TURN = 16
_IN_FLIGHT = "in-flight limit"
_TURN = "buffered requests waiting for their turn"
_WRITE_BUFFER = "write buffer full"


def describe_address(address: IAddress) -> str:
    host = getattr(address, "host", None)
    if host is not None:
        return f"{host}:{getattr(address, 'port', '')}"
    name = getattr(address, "name", None)
    if name is not None:
        return name.decode("utf-8", "replace") if isinstance(name, bytes) else str(name)
    return str(address)


@implementer(IPushProducer, IHalfCloseableProtocol)
class ServerProtocol(Protocol):
    """One server-side connection."""

    _log = Logger()
    # A connected transport that is also a push producer (TCP, UNIX, iosim);
    # Twisted types it as Optional[ITransport], which lacks pause/abort.
    transport: Any

    def __init__(
        self,
        services: dict[str, Service],
        codecs: CodecRegistry,
        clock: IReactorTime,
        settings: ServerSettings,
        connections: set[ServerProtocol] | None = None,
    ) -> None:
        self._connections = connections
        self._services = services
        self._codecs = codecs
        self._clock = clock
        self._settings = settings
        self._state = _AWAITING_OPTION
        # The Option's parser, until it has also seen the newline after the Option.
        self._option_decoder: OptionDecoder | None = OptionDecoder(settings.max_option_size)
        # Set when the Option is accepted (from SERVING on).
        self._decoder: IMessageDecoder
        self._encoder: IMessageEncoder
        self._pairs: MessagePairs
        self._dispatcher: Dispatcher | None = None
        self._next_turn: IDelayedCall | None = None
        self._close_deadline: IDelayedCall | None = None
        self._timer: IDelayedCall | None = None  # the handshake or the drain deadline
        self._paused: set[str] = set()
        self._processing = False  # _process is running (it must not re-enter)
        self._batch: list[bytes] | None = None
        self.peer = ""

    def connectionMade(self) -> None:
        if self._connections is not None:
            self._connections.add(self)
        self.peer = describe_address(self.transport.getPeer())
        self._timer = self._clock.callLater(
            self._settings.handshake_timeout, self._handshake_expired
        )
        self.transport.registerProducer(self, True)

    def dataReceived(self, data: bytes) -> None:
        if self._state not in _READING:
            return
        option_decoder = self._option_decoder
        if option_decoder is not None:
            try:
                option, data = option_decoder.feed(data)
            except ProtocolError as error:
                self._reject(f"rpc server: {error}")
                return
            if option is not None and not self._start(option):
                return
            if option_decoder.settled:
                self._option_decoder = None
            if self._state is _AWAITING_OPTION:
                return
        if data:
            self._decoder.feed(data)
        self._process()

    def _start(self, option: Option) -> bool:
        try:
            codec = self._codecs.get(option.codec_type, aliases=False)
        except UnsupportedCodec as error:
            self._reject(f"rpc server: {error}")
            return False
        self._cancel_timer()
        self._decoder = codec.new_decoder(self._settings.max_message_size)
        self._pairs = MessagePairs(self._decoder)
        self._encoder = codec.new_encoder()
        self._dispatcher = Dispatcher(
            self._services,
            self,
            self._clock,
            self._settings.handle_timeout_ns(option),
            self._request_done,
            self.peer,
        )
        self._state = _SERVING
        return True

    def _process(self) -> None:
        if self._processing or self._state not in _ANSWERING:
            return
        self._processing = True
        self._batch = []
        decoder = self._decoder
        pairs = self._pairs
        dispatcher = self._dispatcher
        assert dispatcher is not None
        limit = self._settings.max_in_flight
        turn = 0
        try:
            while self._state in _ANSWERING and not self._paused:
                if dispatcher.in_flight >= limit:
                    self._pause(_IN_FLIGHT)
                    return
                if turn == _REQUESTS_PER_TURN:
                    # Let the reactor send these replies (and serve other
                    # connections) while the client reads them, instead of
                    # answering a whole read batch in lock-step.  Reading stays
                    # paused until the buffered requests are handled.
                    self._pause(_TURN)
                    if self._next_turn is None:
                        self._next_turn = self._clock.callLater(0, self._take_turn)
                    return
                pair = pairs.next_pair()
                if pair is None:
                    return
                dispatcher.dispatch(pair[0], decoder.decode_body, pair[1])
                turn += 1
        except (ProtocolError, CodecError) as error:
            # A frame or a header that does not decode: the stream cannot go on.
            self._answer_oversized(error)
            self._flush_batch()  # replies already made go out before the close
            self._stop_reading(f"rpc server: read header error: {error}")
        finally:
            self._processing = False
            self._flush_batch()
            if self._state is _HALF_CLOSED:
                self._finish_if_idle()

    def _answer_oversized(self, error: Exception) -> None:
        """A body over the limit that cannot be skipped (JSON): its call gets
        an error reply naming the limit before the connection closes."""
        header = self._pairs.pending_header
        if isinstance(error, MessageTooLarge) and header is not None:
            text = (
                f"rpc server: request body exceeds the maximum message size of "
                f"{error.limit} bytes (closing the connection)"
            )
            self.send_reply(Header(header[0], header[1], text), EMPTY_STRUCT)

    def _take_turn(self) -> None:
        self._next_turn = None
        self._resume(_TURN)
        self._process()

    def take_turn_now(self) -> bool:
        """Run the scheduled next turn at once (for in-memory tests that drive
        no reactor); False if none was scheduled."""
        if self._next_turn is None:
            return False
        self._next_turn.cancel()
        self._take_turn()
        return True

    def _flush_batch(self) -> None:
        batch, self._batch = self._batch, None
        if batch and self._state is not _CLOSED:
            self.transport.write(b"".join(batch))

    def send_reply(self, header: Header, body: Any, body_type: Any = None) -> None:
        data = self._encoder.encode(header, body, body_type)
        if self._batch is not None:
            self._batch.append(data)  # written once when the read batch is done
        elif self._state is not _CLOSED:
            self.transport.write(data)

    def readConnectionLost(self) -> None:
        """The peer has sent everything (a half-close): answer what it sent,
        then close — what Go does at EOF."""
        state = self._state
        if state is _AWAITING_OPTION:  # not even an Option: nothing to answer
            self._state = _CLOSING
            self._close()
        elif state is _SERVING:
            self._state = _HALF_CLOSED
            self._process()
            self._finish_if_idle()

    def writeConnectionLost(self) -> None:
        """The peer reads no more: replies cannot be delivered."""
        self.transport.abortConnection()

    def _finish_if_idle(self) -> None:
        """Half-closed and nothing left to answer: close."""
        if self._state is not _HALF_CLOSED or self._next_turn is not None:
            return
        dispatcher = self._dispatcher
        assert dispatcher is not None
        if not dispatcher.in_flight:
            self._close()

    def _request_done(self) -> None:
        dispatcher = self._dispatcher
        assert dispatcher is not None
        state = self._state
        if state not in _ANSWERING:
            if state is _CLOSING and dispatcher.in_flight == 0:
                self._close()
            return
        if _IN_FLIGHT in self._paused and dispatcher.in_flight < self._settings.max_in_flight:
            self._resume(_IN_FLIGHT)
            self._process()
        if self._state is _HALF_CLOSED:
            self._finish_if_idle()

    # Reading pauses for any of three reasons and resumes when none holds.
    def _pause(self, reason: str) -> None:
        if not self._paused and self._state is not _CLOSED:
            self.transport.pauseProducing()
        self._paused.add(reason)

    def _resume(self, reason: str) -> None:
        self._paused.discard(reason)
        if not self._paused and self._state in _READING:
            self.transport.resumeProducing()

    # IPushProducer: the transport tells us when its write buffer fills up.
    def pauseProducing(self) -> None:
        self._pause(_WRITE_BUFFER)

    def resumeProducing(self) -> None:
        if _WRITE_BUFFER in self._paused:
            self._resume(_WRITE_BUFFER)
            self._process()

    def stopProducing(self) -> None:
        pass

    def _reject(self, text: str) -> None:
        self._log.warn("{text} (peer {peer}); closing", text=text, peer=self.peer)
        self._cancel_timer()
        self._close()

    def _stop_reading(self, text: str) -> None:
        """A protocol error after the Option: stop reading, let running
        requests finish (bounded by the drain timeout), then close."""
        dispatcher = self._dispatcher
        assert dispatcher is not None
        self._log.warn("{text} (peer {peer}); closing", text=text, peer=self.peer)
        self._state = _CLOSING
        self.transport.pauseProducing()
        if dispatcher.in_flight == 0:
            self._close()
        else:
            self._timer = self._clock.callLater(self._settings.drain_timeout, self._drain_expired)

    def _close(self) -> None:
        if self._state is _DISCONNECTING:
            return
        self._state = _DISCONNECTING
        # Unregister first: a transport that paused its producer would otherwise
        # wait for resumeProducing instead of closing once its buffer drains.
        self.transport.unregisterProducer()
        self.transport.loseConnection()
        # A peer that never reads would keep a closing connection forever.
        self._close_deadline = self._clock.callLater(
            self._settings.drain_timeout, self.transport.abortConnection
        )

    def _handshake_expired(self) -> None:
        self._timer = None
        self._log.warn(
            "rpc server: no Option from {peer} within {timeout}s; closing",
            peer=self.peer,
            timeout=self._settings.handshake_timeout,
        )
        self._state = _DISCONNECTING
        self.transport.abortConnection()

    def _drain_expired(self) -> None:
        self._timer = None
        dispatcher = self._dispatcher
        assert dispatcher is not None  # only CLOSING after the Option drains
        dispatcher.stop()
        self.transport.abortConnection()

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            if self._timer.active():
                self._timer.cancel()
            self._timer = None

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._state = _CLOSED
        self._cancel_timer()
        for call in (self._next_turn, self._close_deadline):
            if call is not None and call.active():
                call.cancel()
        self._next_turn = self._close_deadline = None
        if self._dispatcher is not None:
            self._dispatcher.stop()
        if self._connections is not None:
            self._connections.discard(self)


class ServerFactory(Factory):
    """Builds a :class:`ServerProtocol` per connection, all sharing one service
    table, codec registry, clock and settings.

    :ivar connections: the protocols currently connected.
    """

    noisy = False

    def __init__(
        self,
        services: dict[str, Service],
        codecs: CodecRegistry,
        clock: IReactorTime,
        settings: ServerSettings,
    ) -> None:
        self.services = services
        self.codecs = codecs
        self.clock = clock
        self.settings = settings
        self.connections: set[ServerProtocol] = set()

    def buildProtocol(self, addr: IAddress | None) -> ServerProtocol:
        protocol = ServerProtocol(
            self.services, self.codecs, self.clock, self.settings, self.connections
        )
        protocol.factory = self
        return protocol
