"""
Server-side request dispatch: (header, body) -> method -> one reply.

Transport-free (AMP's ``BoxDispatcher``): it talks to a reply sender and a
method locator, and counts what it runs so the protocol can apply
backpressure and cancel everything when the connection goes away.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import deque
from collections.abc import Callable, Sequence, Sized
from typing import Any, Protocol

import attrs
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import ILogObserver, Logger
from twisted.python.failure import Failure

from ._admission import Counters
from ._convert import ConversionError, convert_within
from ._service import (
    BAD_ARGUMENT,
    CANCELLED,
    CONNECTION_LOST,
    DEADLINE,
    ERROR,
    EXPIRED,
    LATENCY_BUCKETS,
    OK,
    SHUTDOWN,
    TIMEOUT,
    Method,
    Service,
    settle,
)
from ._wire import CANCEL, DEADLINE_EXCEEDED, EMPTY_STRUCT, Header, go_duration, new_header
from .context import (
    CallContext,
    Interceptor,
    decode_metadata,
    encode_metadata,
    run_interceptors,
)
from .errors import (
    CodecError,
    IllFormedServiceMethod,
    MetadataError,
    MethodNotFound,
    RPCError,
    ServiceError,
    ServiceNotFound,
)

_PLAIN_RESULTS = frozenset((int, str, float, bool, type(None), bytes, list, dict, tuple))
"""Types of a handler's result that are neither a Deferred nor a coroutine."""


class ReplySender(Protocol):
    def send_reply(self, header: Header, body: Any, body_type: Any = None) -> int | None:
        """Encode and write one reply (``body_type``: its declared type, if any);
        the bytes written, if known.

        :raises Exception: the body cannot be encoded (nothing was written).
        """


class _HandleTimedOut(Exception):
    pass


class _BudgetSpent(Exception):
    pass


DOMAIN_ERRORS = (RPCError, ValueError, ArithmeticError, LookupError)
"""The exceptions a handler raises on purpose (see :class:`~txgeerpc.errors.RPCError`)."""

ACCESS_NAMESPACE = "txgeerpc.access"
"""The namespace of access-log events."""

ACCESS_FORMAT = (
    "{peer} {method} seq={seq} {outcome} {duration}s "
    "request_bytes={request_bytes} reply_bytes={reply_bytes}"
)
"""An access-log event's format; its fields: ``peer``, ``method``
(``Service.Method``), ``seq``, ``duration`` (seconds), ``outcome`` (one of
:data:`txgeerpc._service.OUTCOMES`), ``request_bytes`` (what the codec's
decoder took for the request: its header and body, with any codec message
before them, such as gob's type definitions; ``None`` if not measured) and
``reply_bytes`` (the reply's size, ``None`` without a reply)."""

RECENT_ERRORS = 100
"""Error replies a server remembers for its debug page (the last ones)."""


@attrs.frozen
class RecentError:
    """One error reply, as the debug page lists it."""

    at: float
    """When it was sent, on the server's clock."""
    service_method: str
    seq: int
    peer: str
    text: str


TRACEBACK_INTERVAL = 60.0
"""Seconds between two tracebacks logged for one method's unexpected failures."""


def locate(services: dict[str, Service], service_method: str) -> Method:
    """Find ``Service.Method`` (split at the last dot, as GeeRPC does).

    :raises ServiceError: with GeeRPC's exact text.
    """
    dot = service_method.rfind(".")
    if dot < 0:
        raise IllFormedServiceMethod(service_method)
    service = services.get(service_method[:dot])
    if service is None:
        raise ServiceNotFound(service_method[:dot])
    method = service.methods.get(service_method[dot + 1 :])
    if method is None:
        raise MethodNotFound(service_method[dot + 1 :])
    return method


class Dispatcher:
    """Runs requests for one connection.

    :param services: the live service table (shared with the server).
    :param sender: where replies go.
    :param clock: times handle timeouts and latencies.
    :param handle_timeout_ns: per-request limit in nanoseconds, 0 = none.
    :param on_done: called after each request completes (for backpressure).
    :param budget_left: what the conversion of the body last decoded may take
        of its memory budget (the codec decoder's ``budget_left``); without
        it, conversion is not charged.
    :param extension: the client named the txgeerpc extension: it may send
        cancel requests, and replies may carry trailers.
    :param interceptors: the server's interceptors, outermost first.
    :param counters: the server's counters (calls to unknown methods).
    :param access_log: where one ``txgeerpc.access`` event per call goes
        (:data:`ACCESS_FORMAT`), if anywhere.
    :param recent_errors: where error replies are noted (a bounded deque,
        the server's; for its debug page).
    :param transport: the connection (for :attr:`CallContext.transport`).
    """

    _log = Logger()

    def __init__(
        self,
        services: dict[str, Service],
        sender: ReplySender,
        clock: IReactorTime,
        handle_timeout_ns: int,
        on_done: Callable[[], None],
        peer: str = "",
        budget_left: Callable[[], int] | None = None,
        extension: bool = False,
        interceptors: Sequence[Interceptor] = (),
        counters: Counters | None = None,
        access_log: ILogObserver | None = None,
        recent_errors: deque[RecentError] | None = None,
        transport: Any = None,
    ) -> None:
        self._services = services
        self._transport = transport
        self._counters = counters if counters is not None else Counters()
        self._access = (
            None if access_log is None else Logger(namespace=ACCESS_NAMESPACE, observer=access_log)
        )
        # What calls still running when the dispatcher stops end as.
        self._stop_outcome = CONNECTION_LOST
        self._recent_errors = recent_errors
        # When each running request began, and its deadline (for running()).
        self._began: dict[int, tuple[float, float | None]] = {}
        self._budget_left = budget_left
        self._sender = sender
        self._clock = clock
        self._timeout_ns = handle_timeout_ns
        self._timeout_text = (
            f"rpc server: request handle timeout: expect within {go_duration(handle_timeout_ns)}"
        )
        self._on_done = on_done
        self._peer = peer
        self._running: dict[int, tuple[Deferred[Any], Header]] = {}
        self._next_id = 0
        self._stopped = False
        self._extension = extension
        self._interceptors = tuple(interceptors)
        # Requests cancelled by their client: they end without a reply.
        self._silenced: set[int] = set()
        # Methods found by their full name: a dict lookup per call instead of
        # locate()'s split and two lookups.  Only methods found are kept
        # (a server's table only grows: a name found stays found).
        self._methods: dict[str, Method] = {}

    @property
    def in_flight(self) -> int:
        """Requests started and not yet answered."""
        return len(self._running)

    @property
    def running_calls(self) -> Sized:
        """The requests started and not yet answered, live: its ``len`` is
        :attr:`in_flight` (for a loop that asks once per request)."""
        return self._running

    def running(self) -> list[tuple[str, int, float, float | None]]:
        """The requests running now: ``(method, seq, started, deadline)``,
        oldest first (times on the clock; deadline ``None``: no budget)."""
        began = self._began
        return [
            (header[0], header[1], *began.get(request_id, (0.0, None)))
            for request_id, (_, header) in self._running.items()
        ]

    def set_budget_left(self, budget_left: Callable[[], int] | None) -> None:
        """The decoder changed (framed mode began): its ``budget_left`` from now on."""
        self._budget_left = budget_left

    def dispatch(
        self,
        header: Header,
        decode_body: Callable[[object], Any],
        body: object,
        size: int | None = None,
    ) -> None:
        """Handle one request: exactly one reply is sent (unless stopped first).

        :param decode_body: decodes the raw ``body``; called only when the
            method exists, so an unknown method costs no decode here (framed
            mode's decoder may have parsed a small body with its frame
            already: at most 1 KiB of JSON, or a msgpack body, within its
            budget).
        :param size: the request's bytes, for the access log.
        """
        if self._extension and header[0] == CANCEL:
            self.cancel(header[1])
            return
        method = self._methods.get(header[0])
        try:
            if method is None:
                method = self._methods[header[0]] = locate(self._services, header[0])
            value = decode_body(body)
            budget_left = self._budget_left
            if budget_left is None:
                argument = method.convert_argument(value)
            else:
                argument = convert_within(method.convert_argument, value, budget_left())[0]
        except (ServiceError, CodecError) as error:
            if method is None:
                self._counters.unknown_methods += 1
            else:
                method.stats.count(BAD_ARGUMENT)
            self._reply_error(header, str(error))
            return
        except ConversionError as error:
            assert method is not None  # only conversion raises it
            method.stats.count(BAD_ARGUMENT)
            self._reply_error(header, f"rpc server: bad argument for {header[0]}: {error}")
            return
        except Exception as error:  # a struct's own validation...
            assert method is not None
            method.stats.count(BAD_ARGUMENT)
            self._log_failure(
                Failure(),
                method,
                "rpc server: cannot build the argument of {method} from {peer}: {text}",
                header,
            )
            self._reply_error(
                header, f"rpc server: bad argument for {header[0]}: {_describe(error)}"
            )
            return
        budget = header[3]
        if not budget and header[4] is None and not self._interceptors:
            if method.context_parameter is None:
                self._call_plain(method, argument, header, size)
                return
        context = None
        if budget or header[4] is not None or self._interceptors or method.context_parameter:
            if budget < 0:
                method.stats.count(EXPIRED)
                self._log.info(
                    "rpc server: {method} from {peer} refused: its budget was spent "
                    "{spent} before it arrived",
                    method=header[0],
                    peer=self._peer,
                    spent=go_duration(-budget),
                )
                self._reply_error(
                    header,
                    f"{DEADLINE_EXCEEDED}: the budget was spent {go_duration(-budget)} "
                    "before the call arrived; not run",
                )
                return
            try:
                metadata = decode_metadata(header[4])
            except MetadataError as error:
                self._reply_error(header, str(error))
                return
            context = CallContext(
                header[0],
                self._clock,
                metadata=metadata,
                deadline=self._clock.seconds() + budget / 1e9 if budget else None,
                peer=self._peer,
                transport=self._transport,
            )
        stats = method.stats
        stats.calls += 1
        stats.in_flight += 1
        started = self._clock.seconds()
        try:
            if self._interceptors and context is not None:
                call_context = context
                result = settle(
                    run_interceptors(
                        self._interceptors,
                        context,
                        argument,
                        lambda argument: method.start(argument, call_context),
                    )
                )
            else:
                result = method.start(argument, context)
        except BaseException:  # as maybeDeferred does: a handler must not unwind the reactor
            self._finish(Failure(), header, method, started, None, context, size)
            return
        self._settled(result, header, method, started, context, size)

    def _call_plain(self, method: Method, argument: Any, header: Header, size: int | None) -> None:
        """Run a call with no budget, metadata, interceptor or context: most
        calls.  It exists because it runs on every such call: it calls the
        handler directly (no :meth:`Method.start`, no :func:`settle` for a
        plain result) and finishes a synchronous one inline, counting and
        logging exactly what :meth:`_finish` would."""
        stats = method.stats
        stats.calls += 1
        stats.in_flight += 1
        clock = self._clock
        started = clock.seconds()
        try:
            function = method.function
            result = function(argument) if method.takes_argument else function()
        except BaseException:  # as maybeDeferred does: a handler must not unwind the reactor
            self._finish(Failure(), header, method, started, None, None, size)
            return
        if type(result) not in _PLAIN_RESULTS:  # a Deferred, a coroutine, or an object
            self._settled(settle(result), header, method, started, None, size)
            return
        stats.in_flight -= 1
        duration = clock.seconds() - started
        reply_size: int | None = None
        if self._stopped:  # the handler closed the connection
            outcome = self._stop_outcome
        else:
            # _reply's success, inlined.  The request's header is the reply's
            # when its Error is empty: this path has no budget, metadata or
            # trailers, so the two are equal (a fresh one only to clear Error).
            try:
                reply_size = self._sender.send_reply(
                    header if not header[2] else new_header((header[0], header[1], "", 0, None)),
                    result,
                    method.result_type,
                )
                outcome = OK
            except Exception as error:
                outcome, reply_size = self._unencodable(header, error)
        # stats.record(duration), inlined, once the reply is sent
        if duration < 0.0:
            duration = 0.0
        stats.total_seconds += duration
        stats.buckets[bisect_left(LATENCY_BUCKETS, duration)] += 1
        if duration > stats.max_seconds:
            stats.max_seconds = duration
        outcomes = stats.outcomes
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
        if self._access is not None:
            self._access.info(
                ACCESS_FORMAT,
                peer=self._peer,
                method=header[0],
                seq=header[1],
                duration=duration,
                outcome=outcome,
                request_bytes=size,
                reply_bytes=reply_size,
            )

    def _settled(
        self,
        result: Any,
        header: Header,
        method: Method,
        started: float,
        context: CallContext | None,
        size: int | None,
    ) -> None:
        """A started call's result (as :meth:`Method.start` returns it): a
        plain value is answered now, a Deferred when it fires."""
        if type(result) is not Deferred:
            self._finish(result, header, method, started, None, context, size)  # synchronous
            return
        d: Deferred[Any] = result
        if d.called and not d.paused:  # a Deferred that already has its result
            d.addBoth(self._finish, header, method, started, None, context, size)
            return
        request_id = self._next_id
        self._next_id += 1
        self._running[request_id] = (d, header)
        self._began[request_id] = (started, context.deadline if context is not None else None)
        timeout_ns = self._timeout_ns
        budget = header[3]
        if budget > 0 and (timeout_ns <= 0 or budget < timeout_ns):
            d.addTimeout(budget / 1e9, self._clock, onTimeoutCancel=_budget_spent)
        elif timeout_ns > 0:
            d.addTimeout(timeout_ns / 1e9, self._clock, onTimeoutCancel=_timed_out)
        d.addBoth(self._finish, header, method, started, request_id, context, size)

    def cancel(self, seq: int) -> None:
        """The client cancelled its call ``seq``: cancel the handler; no
        reply is sent for it.  Unknown (finished) calls are ignored."""
        for request_id, (d, header) in self._running.items():
            if header[1] == seq:
                self._silenced.add(request_id)
                self._log.info(
                    "rpc server: {method} from {peer} cancelled by the client",
                    method=header[0],
                    peer=self._peer,
                )
                d.cancel()
                return

    def _finish(
        self,
        result: Any,
        header: Header,
        method: Method,
        started: float,
        request_id: int | None,
        context: CallContext | None,
        request_size: int | None = None,
    ) -> None:
        stats = method.stats
        stats.in_flight -= 1
        duration = self._clock.seconds() - started
        stats.record(duration)
        if request_id is not None:
            self._running.pop(request_id, None)
            self._began.pop(request_id, None)
        size: int | None = None
        if self._stopped:
            outcome = self._stop_outcome
        elif self._silenced and request_id in self._silenced:
            self._silenced.discard(request_id)
            outcome = CANCELLED
            self._on_done()
        else:
            try:
                outcome, size = self._reply(result, header, method, context)
            finally:
                if request_id is not None:
                    self._on_done()
        outcomes = stats.outcomes  # stats.count(outcome), inlined: it runs on every call
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
        if self._access is not None:
            self._access.info(
                ACCESS_FORMAT,
                peer=self._peer,
                method=header[0],
                seq=header[1],
                duration=duration,
                outcome=outcome,
                request_bytes=request_size,
                reply_bytes=size,
            )
        return None

    def _reply(
        self, result: Any, header: Header, method: Method, context: CallContext | None
    ) -> tuple[str, int | None]:
        """Send the reply of a finished call: its outcome and size."""
        trailers = None
        if context is not None and context.trailers and self._extension:
            try:
                trailers = encode_metadata(context.trailers, reserved=True)
            except MetadataError as error:
                result = Failure(error)
        if isinstance(result, Failure):
            if result.check(_BudgetSpent):
                text = f"{DEADLINE_EXCEEDED}: the call's {go_duration(header[3])} budget ran out"
                self._log.info(
                    "rpc server: {method} from {peer} cancelled: {text}",
                    method=header.service_method,
                    peer=self._peer,
                    text=text,
                )
                return DEADLINE, self._reply_error(header, text, trailers)
            if result.check(_HandleTimedOut):
                self._log.info(
                    "rpc server: {method} from {peer} timed out: {text}",
                    method=header.service_method,
                    peer=self._peer,
                    text=self._timeout_text,
                )
                return TIMEOUT, self._reply_error(header, self._timeout_text)
            self._log_failure(
                result, method, "rpc server: {method} from {peer} failed: {text}", header
            )
            return ERROR, self._reply_error(header, _error_text(result), trailers)
        try:
            size = self._sender.send_reply(
                new_header((header[0], header[1], "", 0, trailers)), result, method.result_type
            )
        except Exception as error:
            return self._unencodable(header, error)
        return OK, size

    def _unencodable(self, header: Header, error: Exception) -> tuple[str, int | None]:
        """A result the codec cannot encode: logged, and an error reply."""
        self._log.error(
            "rpc server: cannot encode the reply of {method}: {error}",
            method=header.service_method,
            error=_describe(error),
        )
        return ERROR, self._reply_error(
            header, f"rpc server: cannot encode reply: {_describe(error)}"
        )

    def _log_failure(self, failure: Failure, method: Method, format: str, header: Header) -> None:
        """One line for an error the handler meant (:data:`DOMAIN_ERRORS`);
        for anything else a traceback, at most one per method per
        :data:`TRACEBACK_INTERVAL` (the others are counted, and the count
        comes with the next traceback)."""
        fields: dict[str, Any] = {
            "method": header.service_method,
            "peer": self._peer,
            "text": _error_text(failure),
        }
        if failure.check(*DOMAIN_ERRORS, CancelledError):
            self._log.info(format, **fields)
            return
        stats = method.stats
        now = self._clock.seconds()
        last = stats.traceback_at
        if last is not None and 0.0 <= now - last < TRACEBACK_INTERVAL:
            stats.tracebacks_suppressed += 1
            self._log.error(format + " (traceback left out)", **fields)
            return
        suppressed, stats.tracebacks_suppressed = stats.tracebacks_suppressed, 0
        stats.traceback_at = now
        self._log.failure(
            format + " ({suppressed} tracebacks left out since the last one)",
            failure,
            suppressed=suppressed,
            **fields,
        )

    def _reply_error(
        self, header: Header, text: str, trailers: dict[str, str] | None = None
    ) -> int | None:
        if self._recent_errors is not None:
            self._recent_errors.append(
                RecentError(self._clock.seconds(), header[0], header[1], self._peer, text)
            )
        try:
            return self._sender.send_reply(
                Header(header[0], header[1], text, 0, trailers), EMPTY_STRUCT
            )
        except Exception:
            self._log.failure("rpc server: cannot send the error reply of {seq}", seq=header[1])
            return None

    def stop(self) -> None:
        """The connection is gone: cancel every running handler, send nothing."""
        self._stopped = True
        running = list(self._running.values())
        self._running.clear()
        self._began.clear()
        for d, _ in running:
            d.cancel()

    def fail_running(self, text: str) -> int:
        """The server stops and its grace is over: answer every running
        request with the error ``text``, then cancel its handler (which sends
        nothing more).  The number of requests answered so."""
        self._stopped = True
        self._stop_outcome = SHUTDOWN
        running = list(self._running.values())
        self._running.clear()
        self._began.clear()
        for _, header in running:
            self._reply_error(header, text)
        for d, _ in running:
            d.cancel()
        return len(running)


def _timed_out(result: Any, timeout: float) -> Failure:
    return Failure(_HandleTimedOut())


def _budget_spent(result: Any, timeout: float) -> Failure:
    return Failure(_BudgetSpent())


def _error_text(failure: Failure) -> str:
    if failure.check(CancelledError):
        return "rpc server: request cancelled"
    return _describe(failure.value) if failure.value is not None else "rpc server: failed"


def _describe(error: BaseException) -> str:
    return str(error) or type(error).__name__
