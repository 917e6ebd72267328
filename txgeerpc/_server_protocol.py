"""
The server side of one GeeRPC stream: Option negotiation, then header/body
messages handed to a :class:`~txgeerpc._dispatch.Dispatcher`.

Lifecycle, one :class:`_State`: awaiting the Option (under a handshake
deadline) -> serving -> (the peer half-closed: answering what it sent) ->
closing (after a protocol error: no more reading, in-flight requests get
``drain_timeout`` to finish) -> disconnecting -> closed.  A graceful stop
(:meth:`ServerProtocol.drain`) goes from serving to closing, or, for a client
that understands go-away, to going away (told so; read until it half-closes)
-> half-closed; its grace bounds every state it passes through.  Reading pauses while
the in-flight limit is reached or the transport's write buffer is full, so
neither a fast sender nor a client that never reads makes the server buffer
without bound.

After the Option one deadline runs at a time: with nothing begun and nothing
running, the idle timeout (by default only until the first request is
complete); from a request's first byte, the message timeout (bytes that
trickle in do not extend it).  A request larger than ``FREE_PARTIAL`` takes a
share of the receive budget every connection shares, or waits, unread, for one.
"""

from __future__ import annotations

import enum
from collections import deque
from typing import Any

import attrs
from twisted.internet import tcp
from twisted.internet.defer import Deferred, DeferredList, succeed
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

from ._admission import (
    DEFAULT_RECEIVE_BUDGET,
    FREE_PARTIAL,
    HANDSHAKE_TIMEOUT,
    IDLE_TIMEOUT,
    MESSAGE_TIMEOUT,
    Admission,
    Counters,
    ReceiveBudget,
    default_max_connections,
    default_max_per_peer,
)
from ._dispatch import RECENT_ERRORS, Dispatcher, RecentError
from ._framed import (
    CODEC_NUMBERS,
    COMPRESSION_NUMBERS,
    DEFAULT_COMPRESS_THRESHOLD,
    FRAMED,
    META_CODECS,
    META_COMPRESSION,
    META_FRAMED,
    FramedDecoder,
    FramedEncoder,
    available_compressions,
)
from ._messages import MessagePairs
from ._nodelay import write_now
from ._option import DEFAULT_MAX_OPTION_SIZE, OptionDecoder
from ._service import Service
from ._wire import DEFAULT_MAX_MESSAGE_SIZE as DEFAULT_MAX_MESSAGE_SIZE
from ._wire import (
    EMPTY_STRUCT,
    GO_AWAY,
    HELLO,
    SHUTTING_DOWN,
    Header,
    Option,
    seconds_to_ns,
)
from .codec import CodecRegistry
from .context import Interceptor
from .errors import CodecError, MessageTooLarge, ProtocolError, UnsupportedCodec
from .interfaces import ICodec, IMessageDecoder, IMessageEncoder

DEFAULT_MAX_IN_FLIGHT = 256
DEFAULT_HANDSHAKE_TIMEOUT = 10.0
DEFAULT_DRAIN_TIMEOUT = 10.0
DEFAULT_GRACE = 10.0
LAST_WRITES = 0.5
"""Seconds a stopping connection's last replies get to be written once its
grace is over, before it is aborted."""
DEFAULT_IDLE_TIMEOUT = 60.0
DEFAULT_MESSAGE_TIMEOUT = 30.0


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
    :ivar grace: on a graceful stop, seconds running requests get to finish
        (and their replies to be written) before they are answered with a
        "shutting down" error and the connection is closed.
    :ivar idle_timeout: seconds a connection that has not completed a request
        yet may wait, after its Option, with no request begun (``None``: no
        limit).
    :ivar served_idle_timeout: the same for a connection that has completed
        a request (``None``, the default: no limit, since a Go client never
        redials a connection the server closed).
    :ivar message_timeout: seconds from a request's first byte to its last.
    :ivar max_connections: connections a port factory holds at once
        (default: from the descriptor limit).
    :ivar max_connections_per_peer: connections from one IP address
        (default: half of ``max_connections``).
    :ivar receive_budget: bytes of large partially received requests all
        connections may hold together (default 64 MiB, or
        ``max_message_size`` if larger).
    """

    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE
    max_in_flight: int = DEFAULT_MAX_IN_FLIGHT
    handshake_timeout: float = DEFAULT_HANDSHAKE_TIMEOUT
    max_handle_timeout: float | None = None
    drain_timeout: float = DEFAULT_DRAIN_TIMEOUT
    max_option_size: int = DEFAULT_MAX_OPTION_SIZE
    grace: float = DEFAULT_GRACE
    idle_timeout: float | None = DEFAULT_IDLE_TIMEOUT
    served_idle_timeout: float | None = None
    message_timeout: float = DEFAULT_MESSAGE_TIMEOUT
    max_connections: int = attrs.field(factory=default_max_connections)
    max_connections_per_peer: int = attrs.field(
        default=attrs.Factory(
            lambda settings: default_max_per_peer(settings.max_connections), takes_self=True
        )
    )
    receive_budget: int = attrs.field(
        default=attrs.Factory(
            lambda settings: max(DEFAULT_RECEIVE_BUDGET, settings.max_message_size),
            takes_self=True,
        )
    )
    interceptors: tuple[Interceptor, ...] = ()
    """Server interceptors, outermost first (they see every call)."""
    access_log: Any = None
    """An ``ILogObserver`` given one ``txgeerpc.access`` event per call, or ``None``."""
    framed: bool = True
    """Whether txgeerpc clients that ask for framed mode get it (13.11)."""
    compressions: tuple[str, ...] = attrs.field(factory=available_compressions)
    """Compressions accepted in framed mode (``gzip``, ``zstd``, ``lz4``)."""
    compress_threshold: int = DEFAULT_COMPRESS_THRESHOLD
    """Framed replies with a body this large or larger are compressed (in the
    compression the client asked for)."""

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
    GOING_AWAY = "going away"
    """Stopping, and the client understands go-away: it was told, sends no
    new call, and is read (and answered) until it half-closes."""
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
_GOING_AWAY = _State.GOING_AWAY
_CLOSING = _State.CLOSING
_DISCONNECTING = _State.DISCONNECTING
_CLOSED = _State.CLOSED
# Tuples, not sets: membership is an identity check, no (Python-level) Enum hash.
_READING = (_SERVING, _AWAITING_OPTION, _HALF_CLOSED, _GOING_AWAY)
_ANSWERING = (_SERVING, _HALF_CLOSED, _GOING_AWAY)

_REQUESTS_PER_TURN = 16
_IN_FLIGHT = "in-flight limit"
_TURN = "buffered requests waiting for their turn"
_WRITE_BUFFER = "write buffer full"
_MEMORY = "receive budget spent"
_OURS = frozenset((_IN_FLIGHT, _TURN, _WRITE_BUFFER))  # pauses that are not the peer's doing

# What the stage deadline after the Option is waiting for.
_IDLE = "idle"
_MESSAGE = "message"


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
        budget: ReceiveBudget | None = None,
        counters: Counters | None = None,
    ) -> None:
        self._connections = connections
        self._counters = counters if counters is not None else Counters()
        self._budget = (
            budget
            if budget is not None
            else ReceiveBudget(settings.receive_budget, settings.max_message_size, self._counters)
        )
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
        self._reply_now = False  # the reply being made is sent at once (_alone)
        self._send_now = False  # see connectionMade
        # Bytes fed to the decoder, and those it had taken at the last
        # request (the access log's request size: the difference).
        self._fed = 0
        self._taken = 0
        self.peer = ""
        # A graceful stop (drain): the client understands go-away (its
        # Option says so), the grace's timer, who waits for the close.
        self._go_away = False
        self._grace: IDelayedCall | None = None
        self._grace_period = 0.0
        self._drained: list[Deferred[None]] = []
        # Framed mode (docs/protocol.md 13.11): offered in the hello, the
        # decoder to switch to at the client's switch message, and meanwhile
        # the bytes fed to the plain decoder that it may not have consumed.
        self._framed_decoder: FramedDecoder | None = None
        self._retained: list[bytes] | None = None
        self._retained_size = 0

        self.handshake_started: float | None = None
        """When the handshake began, if before this protocol got the
        connection (the one-port sniffer sets it): the Option's deadline
        counts from then."""
        # After the Option: what the stage deadline waits for (_IDLE, _MESSAGE
        # or None), when it expires, and the one timer that checks it.
        self._stage: str | None = None
        self._stage_at = 0.0
        self._stage_timer: IDelayedCall | None = None
        self._completed = False  # a request was completed since the last _watch
        self._charged = False  # holds or waits for a share of the receive budget
        self.served = False
        """Whether a request was completed on this connection."""
        self.transport_kind = "raw"
        """How the stream came: ``raw``, or ``connect`` (HTTP CONNECT; the
        one-port sniffer sets it)."""
        self.connected_at: float | None = None
        """When the connection was made, on the clock."""
        self.codec_name = ""
        """The codec its Option chose, once accepted."""

    @property
    def in_flight(self) -> int:
        """Requests running now."""
        return self._dispatcher.in_flight if self._dispatcher is not None else 0

    def running(self) -> list[tuple[str, int, float, float | None]]:
        """The requests running now: ``(method, seq, started, deadline)``."""
        return self._dispatcher.running() if self._dispatcher is not None else []

    def connectionMade(self) -> None:
        # A TCP transport sends what is written on the reactor's next turn
        # (after one more poll); the replies of a read are sent at once
        # instead: at one call in flight that turn is most of a call's latency.
        self._send_now = isinstance(self.transport, tcp.Connection)
        if self._connections is not None:
            self._connections.add(self)
        self.peer = describe_address(self.transport.getPeer())
        self.connected_at = self._clock.seconds()
        timeout = self._settings.handshake_timeout
        if self.handshake_started is not None:
            timeout = max(0.0, self.handshake_started + timeout - self._clock.seconds())
        self._timer = self._clock.callLater(timeout, self._handshake_expired)
        self.transport.registerProducer(self, True)

    def dataReceived(self, data: bytes) -> None:
        if self._state not in _READING:
            return
        self._counters.bytes_in += len(data)
        option_decoder = self._option_decoder
        if option_decoder is not None:
            try:
                option, data = option_decoder.feed(data)
            except ProtocolError as error:
                self._counters.failed(self._counters.handshake_failures, "bad_option")
                self._reject(f"rpc server: {error}")
                return
            if option is not None and not self._start(option):
                return
            if option_decoder.settled:
                self._option_decoder = None
            if self._state is _AWAITING_OPTION:
                return
        if data:
            if self._retained is not None:
                self._retained.append(data)
                self._retained_size += len(data)
            self._fed += len(data)
            self._decoder.feed(data)
        self._process()

    def serve_without_option(self, codec: ICodec) -> None:
        """Serve a peer that sends no Option (Go's ``net/rpc``, JSON-RPC:
        docs/protocol.md 14) with ``codec``, as one that named no txgeerpc
        extension (no hello, no go-away, no budgets).  Call it once the
        connection is made, before any of its bytes."""
        self._option_decoder = None
        self._start(Option(codec_type=codec.name), codec)

    def _start(self, option: Option, codec: ICodec | None = None) -> bool:
        if codec is None:
            try:
                codec = self._codecs.get(option.codec_type, aliases=False)
            except UnsupportedCodec as error:
                self._counters.failed(self._counters.handshake_failures, "unsupported_codec")
                self._reject(f"rpc server: {error}")
                return False
        self._cancel_timer()
        self._decoder = codec.new_decoder(self._settings.max_message_size)
        self._pairs = MessagePairs(self._decoder)
        self._encoder = codec.new_encoder()
        self.codec_name = codec.name
        self._dispatcher = Dispatcher(
            self._services,
            self,
            self._clock,
            self._settings.handle_timeout_ns(option),
            self._request_done,
            self.peer,
            budget_left=getattr(self._decoder, "budget_left", None),
            extension=option.speaks_extension,
            interceptors=self._settings.interceptors,
            counters=self._counters,
            access_log=self._settings.access_log,
            recent_errors=getattr(getattr(self, "factory", None), "recent_errors", None),
            transport=self.transport,
        )
        self._state = _SERVING
        self._go_away = option.go_away or option.speaks_extension
        if option.speaks_extension:
            # The hello (docs/protocol.md 13.9): the client learns that it may
            # send cancel requests, before any reply and at no round trip.
            settings = self._settings
            if option.framed and settings.framed and option.codec_type in CODEC_NUMBERS:
                meta = {
                    META_FRAMED: "1",
                    META_COMPRESSION: ",".join(settings.compressions),
                    META_CODECS: ",".join(
                        name for name in self._codecs.names() if name in CODEC_NUMBERS
                    ),
                }
                self.send_reply(Header(HELLO, 0, "", 0, meta), EMPTY_STRUCT)
                self._offer_framed(option)
            else:
                self.send_reply(Header(HELLO, 0, ""), EMPTY_STRUCT)
        if self._grace is not None:  # the stop began before the Option came
            self._begin_drain()
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
        sizing = self._settings.access_log is not None  # request sizes, for the access log
        running = dispatcher.running_calls  # len(running) is its in_flight, a lookup less
        turn = 0
        try:
            while self._state in _ANSWERING and not self._paused:
                if len(running) >= limit:
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
                if self._retained is not None:
                    if pair[0][0] == FRAMED and pair[0][1] == 0:
                        self._switch_to_framed(pair[0])
                        decoder = self._decoder
                        pairs = self._pairs
                        continue
                    self._trim_retained()
                self._completed = True
                if turn == 0 and not decoder.buffered():
                    self._alone(dispatcher, pair, sizing)
                    if not decoder.buffered():  # (unless a reply's write fed us more)
                        return
                elif sizing:
                    # What the decoder took for this request since the last:
                    # its header and body, any codec messages before them.
                    taken = self._fed - decoder.buffered()
                    size, self._taken = taken - self._taken, taken
                    dispatcher.dispatch(pair[0], decoder.decode_body, pair[1], size)
                else:
                    dispatcher.dispatch(pair[0], decoder.decode_body, pair[1])
                turn += 1
        except (ProtocolError, CodecError) as error:
            # A frame or a header that does not decode: the stream cannot go on.
            self._counters.failed(self._counters.protocol_errors, _error_kind(error))
            self._answer_oversized(error)
            self._flush_batch()  # replies already made go out before the close
            self._stop_reading(f"rpc server: read header error: {error}")
        finally:
            self._processing = False
            self._reply_now = False
            self._flush_batch()
            if self._state is _HALF_CLOSED:
                self._finish_if_idle()
            self._watch()

    def _alone(self, dispatcher: Dispatcher, pair: tuple[Header, Any], sizing: bool) -> None:
        """Dispatch the only request a read holds, its reply sent the moment
        it is made.  It exists for one call in flight, where every call is
        such a read: the reply goes to the socket before the call's
        accounting (histogram, outcome, access log) is done rather than after
        it, and :meth:`_process` does not ask the decoder for a next request
        it does not hold (``buffered()`` is 0 between messages)."""
        self._reply_now = True
        decoder = self._decoder
        if sizing:
            taken = self._fed
            size, self._taken = taken - self._taken, taken
            dispatcher.dispatch(pair[0], decoder.decode_body, pair[1], size)
        else:
            dispatcher.dispatch(pair[0], decoder.decode_body, pair[1])
        self._reply_now = False

    def _offer_framed(self, option: Option) -> None:
        """The hello offered framed mode: from now on replies are framed;
        requests are once the client's switch message has come."""
        settings = self._settings

        def lookup(name: str) -> Any:
            return self._codecs.get(name, aliases=False)

        decoder = self._framed_decoder = FramedDecoder(
            lookup,
            settings.max_message_size,
            [COMPRESSION_NUMBERS[name] for name in settings.compressions],
            after_plain=True,
        )
        decoder.default = CODEC_NUMBERS[option.codec_type]
        self._encoder = FramedEncoder(
            lookup,
            option.codec_type,
            threshold=settings.compress_threshold,
            codec_of_seq=decoder.codec_of_seq,
        )
        self._retained = []
        self._retained_size = 0

    def _trim_retained(self) -> None:
        """Drop retained chunks the plain decoder has consumed entirely."""
        retained = self._retained
        assert retained is not None
        consumed = self._retained_size - self._decoder.buffered()
        while retained and len(retained[0]) <= consumed:
            size = len(retained.pop(0))
            consumed -= size
            self._retained_size -= size

    def _switch_to_framed(self, header: Header) -> None:
        """The client's switch message: every byte after it is framed."""
        rest = self._decoder.buffered()
        retained = b"".join(self._retained or ())
        self._retained = None
        self._retained_size = 0
        decoder = self._framed_decoder
        assert decoder is not None and isinstance(self._encoder, FramedEncoder)
        wanted = (header[4] or {}).get(META_COMPRESSION, "none")
        if wanted in self._settings.compressions:
            self._encoder.set_compression(COMPRESSION_NUMBERS[wanted])
        self._decoder = decoder
        self._pairs = MessagePairs(decoder)
        dispatcher = self._dispatcher
        assert dispatcher is not None
        dispatcher.set_budget_left(decoder.budget_left)
        if rest:
            decoder.feed(retained[len(retained) - rest :])

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

    def _flush_batch(self) -> None:
        batch, self._batch = self._batch, None
        if batch and self._state is not _CLOSED:
            if self._send_now:
                write_now(self.transport, b"".join(batch))
            else:
                self.transport.write(b"".join(batch))

    def send_reply(self, header: Header, body: Any, body_type: Any = None) -> int:
        data = self._encoder.encode(header, body, body_type)
        batch = self._batch
        if batch is not None:
            batch.append(data)  # written once when the read batch is done
            if self._reply_now:  # the read's only request (_alone)
                self._flush_batch()
                self._batch = []
        elif self._state is not _CLOSED:
            self.transport.write(data)
        else:
            return 0
        size = len(data)
        self._counters.bytes_out += size
        return size

    def readConnectionLost(self) -> None:
        """The peer has sent everything (a half-close): answer what it sent,
        then close — what Go does at EOF."""
        state = self._state
        if state is _AWAITING_OPTION:  # not even an Option: nothing to answer
            self._close()
        elif state is _SERVING or state is _GOING_AWAY:
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
        self._watch()

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
        delay = self._settings.drain_timeout
        if self._drained:  # a graceful stop waits for this close: the grace bounds it
            grace = self._grace
            left = grace.getTime() - self._clock.seconds() if grace is not None else 0.0
            delay = min(delay, max(left, 0.0) + LAST_WRITES)
        self._close_deadline = self._clock.callLater(delay, self.transport.abortConnection)

    def _handshake_expired(self) -> None:
        self._timer = None
        self._counters.add(HANDSHAKE_TIMEOUT)
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

    # -- after the Option: the idle and message deadlines, the receive budget --

    def idle(self) -> bool:
        """Nothing in flight and no request begun (what admission control
        may close to make room)."""
        state = self._state
        if state is _AWAITING_OPTION:
            return True
        if state is not _SERVING:
            return False
        dispatcher = self._dispatcher
        assert dispatcher is not None
        return not dispatcher.in_flight and not self._decoder.buffered()

    def _watch(self) -> None:
        """After each read and each finished request: the deadline that
        runs now (a request begun must end within the message timeout; a
        connection with nothing begun and nothing running has the idle one;
        neither while requests run), and the receive budget.  Single bytes
        do not extend either deadline: the message one restarts only when a
        request is complete."""
        state = self._state
        if state is not _SERVING:
            if state is _HALF_CLOSED and self._stage is not None:
                self._clear_stage()
            return
        if self._completed:
            self._completed = False
            self.served = True
            # A new stage begins after each request.  Its timer stays: the
            # next stage's deadline is later (checked when it fires) unless
            # _arm moves it earlier, so a request costs no timer of its own.
            self._stage = None
        held = self._decoder.buffered()
        paused = self._paused
        if paused and (len(paused) > 1 or _MEMORY not in paused):
            # Not reading for a reason of ours: what is buffered waits on us.
            if self._stage is not None:
                self._clear_stage()
        elif held:
            if self._stage is not _MESSAGE:
                self._arm(_MESSAGE, self._settings.message_timeout)
        else:
            dispatcher = self._dispatcher
            assert dispatcher is not None
            if dispatcher.in_flight:
                if self._stage is not None:
                    self._clear_stage()
            elif self._stage is not _IDLE:
                settings = self._settings
                timeout = settings.served_idle_timeout if self.served else settings.idle_timeout
                if timeout is not None:
                    self._arm(_IDLE, timeout)
                elif self._stage is not None or self._stage_timer is not None:
                    self._clear_stage()  # (no idle limit: after each request, nothing to do)
        if held > FREE_PARTIAL:
            self._charged = True
            if not self._budget.charge(self):
                self._pause(_MEMORY)
        elif self._charged:
            self._charged = False
            self._budget.release(self)
            self._resume(_MEMORY)

    def budget_granted(self) -> None:
        """The receive budget has room for this connection's request now."""
        if _MEMORY in self._paused:
            self._resume(_MEMORY)
            self._process()

    def _arm(self, stage: str, timeout: float | None) -> None:
        if timeout is None:
            self._clear_stage()
            return
        self._stage = stage
        at = self._stage_at = self._clock.seconds() + timeout
        timer = self._stage_timer
        # One timer, moved only earlier: a later deadline is checked when it fires.
        if timer is None or not timer.active():
            self._stage_timer = self._clock.callLater(timeout, self._stage_expired)
        elif timer.getTime() > at:
            timer.reset(timeout)

    def _stage_expired(self) -> None:
        self._stage_timer = None
        stage = self._stage
        if stage is None or self._state is not _SERVING:
            return
        left = self._stage_at - self._clock.seconds()
        if left > 0:
            self._stage_timer = self._clock.callLater(left, self._stage_expired)
            return
        self._stage = None
        if stage is _MESSAGE:
            if self._paused & _OURS:  # requests waiting on us, not on the peer
                self._arm(_MESSAGE, self._settings.message_timeout)
                return
            self._counters.add(MESSAGE_TIMEOUT)
            self._charged = False
            self._budget.release(self)
            self._stop_reading(
                f"rpc server: request not complete within {self._settings.message_timeout:g}s"
            )
        else:
            self._counters.add(IDLE_TIMEOUT)
            timeout = (
                self._settings.served_idle_timeout if self.served else self._settings.idle_timeout
            )
            self._log.info(
                "rpc server: {peer} idle for {timeout}s {when}; closing",
                peer=self.peer,
                timeout=timeout,
                when="since its last request" if self.served else "without a request",
            )
            self._close()

    def _clear_stage(self) -> None:
        self._stage = None
        timer, self._stage_timer = self._stage_timer, None
        if timer is not None and timer.active():
            timer.cancel()

    def _end_stage(self) -> None:
        self._clear_stage()
        if self._charged:
            self._charged = False
            self._budget.release(self)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            if self._timer.active():
                self._timer.cancel()
            self._timer = None

    # -- graceful stop ---------------------------------------------------------

    def drain(self, grace: float) -> Deferred[None]:
        """Stop gracefully: take no new request, let those running finish and
        their replies be written, then close; after ``grace`` seconds, what
        still runs is answered with a ``rpc server: shutting down`` error and
        cancelled, and the connection is closed (aborted :data:`LAST_WRITES`
        seconds later if its peer does not read).

        A client whose Option says it understands go-away is sent the go-away
        message and read on until it half-closes (so the calls it sent before
        it knew are answered too); any other (a Go client) is read no more,
        and sees its replies, then EOF, as from a Go server that exits.  A
        connection whose Option has not come yet waits for it.

        :returns: a Deferred that fires with ``None`` once the connection is
            closed; it never fails.
        """
        if self._state is _CLOSED:
            return succeed(None)
        closed: Deferred[None] = Deferred()
        self._drained.append(closed)
        if self._grace is None and self._state is not _DISCONNECTING:
            self._grace_period = grace
            self._grace = self._clock.callLater(grace, self._grace_over)
            self._begin_drain()
        return closed

    def _begin_drain(self) -> None:
        if self._state is not _SERVING:
            # Awaiting the Option: _start comes back here.  Half-closed: it
            # finishes anyway.  Going away, closing: under way already.
            return
        if self._go_away:
            self._state = _GOING_AWAY
            self.send_reply(Header(GO_AWAY, 0, ""), EMPTY_STRUCT)
            return
        dispatcher = self._dispatcher
        assert dispatcher is not None
        self._state = _CLOSING
        self.transport.pauseProducing()
        if dispatcher.in_flight == 0:
            self._close()

    def _grace_over(self) -> None:
        self._grace = None
        if self._state is _DISCONNECTING or self._state is _CLOSED:
            return
        dispatcher = self._dispatcher
        if dispatcher is not None and dispatcher.in_flight:
            grace = self._grace_period
            failed = dispatcher.fail_running(
                f"{SHUTTING_DOWN}: the request did not finish within the {grace:g}s grace"
            )
            self._log.warn(
                "rpc server: shutting down: {count} request(s) from {peer} still running after "
                "the {grace:g}s grace; answered with an error and cancelled",
                count=failed,
                peer=self.peer,
                grace=grace,
            )
        self._close()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._state = _CLOSED
        self._cancel_timer()
        self._end_stage()
        for call in (self._next_turn, self._close_deadline, self._grace):
            if call is not None and call.active():
                call.cancel()
        self._next_turn = self._close_deadline = self._grace = None
        if self._dispatcher is not None:
            self._dispatcher.stop()
        if self._connections is not None:
            self._connections.discard(self)
        drained, self._drained = self._drained, []
        for waiter in drained:
            waiter.callback(None)


def _error_kind(error: Exception) -> str:
    """The ``kind`` label of a protocol error that ends a stream."""
    if isinstance(error, MessageTooLarge):
        return "message_too_large"
    if isinstance(error, ProtocolError):
        return "bad_frame"
    return "bad_header"


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
        self.grace: float | None = None
        """Set by :meth:`drain`: the grace of every connection from then on."""
        self.counters = Counters()
        """Connections refused or closed by a limit, on every port."""
        self.budget = ReceiveBudget(
            settings.receive_budget, settings.max_message_size, self.counters
        )
        """The receive budget every connection shares."""
        self.admission = Admission(
            settings.max_connections, settings.max_connections_per_peer, self.counters
        )
        """The connection limits the port factories share."""
        self.recent_errors: deque[RecentError] = deque(maxlen=RECENT_ERRORS)
        """The last error replies of every connection (the debug page's)."""

    def buildProtocol(self, addr: IAddress | None) -> ServerProtocol:
        protocol = ServerProtocol(
            self.services,
            self.codecs,
            self.clock,
            self.settings,
            self.connections,
            budget=self.budget,
            counters=self.counters,
        )
        protocol.factory = self
        if self.grace is not None:  # accepted just before the port closed
            protocol.drain(self.grace)
        return protocol

    def drain(self, grace: float) -> Deferred[None]:
        """Drain every connection (:meth:`ServerProtocol.drain`), and those
        built from now on.

        :returns: a Deferred that fires with ``None`` once the connections
            open now are closed; it never fails.
        """
        self.grace = grace
        closing = [protocol.drain(grace) for protocol in list(self.connections)]
        return DeferredList(closing).addCallback(lambda _: None)
