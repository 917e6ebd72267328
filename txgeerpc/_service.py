"""
Method tables built from plain Python objects (Go's ``service.go``, made Pythonic).

Any object is a service: its name is its class name unless given, and its
public methods (names not starting with ``_``) taking at most one argument
become ``Service.Method``.  :func:`expose` or ``methods=`` narrow that.

A coroutine handler runs under Twisted (``ensureDeferred``: it may await
Deferreds) unless an asyncio loop is running, as under Twisted's asyncio
reactor: there it runs as an asyncio task (it may await asyncio things; a
Deferred is awaited as ``d.asFuture(loop)``), and cancelling the call cancels
the task.
"""

from __future__ import annotations

import asyncio
import bisect
import inspect
import math
import typing
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import attrs
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.python.failure import Failure

from ._convert import Converter, converter_for, type_name
from .context import CallContext
from .errors import RegistrationError

_EXPOSED = "__txgeerpc_exposed__"
F = TypeVar("F", bound=Callable[..., Any])


def expose(function: F) -> F:
    """Mark a method as remotely callable.  Once any method of a class is marked,
    only marked methods are exposed."""
    setattr(function, _EXPOSED, True)
    return function


RECENT_DURATIONS = 1024
"""How many of a method's latest call durations :class:`MethodStats` keeps
for its percentiles."""


LATENCY_BUCKETS = (
    0.00005,
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)
"""Upper bounds (seconds, inclusive) of the latency histogram's buckets,
50 µs to 30 s; one more bucket holds what is slower."""


def _latency_buckets() -> list[int]:
    return [0] * (len(LATENCY_BUCKETS) + 1)


def _recent_durations() -> deque[float]:
    return deque(maxlen=RECENT_DURATIONS)


@attrs.define
class MethodStats:
    """Counters for one method (what the debug page shows).

    ``calls`` counts every invocation (including failed and timed-out ones,
    as GeeRPC does); ``errors`` those that failed; ``in_flight`` those running;
    ``total_seconds`` the time all finished calls took.  ``recent`` holds the
    durations of the last :data:`RECENT_DURATIONS` finished calls, in seconds,
    oldest first (for :meth:`percentile`); it takes no part in comparisons.
    """

    calls: int = 0
    errors: int = 0
    in_flight: int = 0
    total_seconds: float = 0.0
    cancelled: int = 0
    """Calls whose client cancelled them (a txgeerpc extension): their
    handlers were cancelled and no reply was sent."""
    expired: int = 0
    """Calls refused unrun because their budget was spent when they arrived
    (not counted in ``calls``)."""
    recent: deque[float] = attrs.field(factory=_recent_durations, eq=False, repr=False)
    # When the last traceback of an unexpected failure was logged, and how many
    # were left out since (the dispatcher logs at most one a minute).
    traceback_at: float | None = attrs.field(default=None, eq=False, repr=False)
    tracebacks_suppressed: int = attrs.field(default=0, eq=False, repr=False)
    buckets: list[int] = attrs.field(factory=_latency_buckets, eq=False, repr=False)
    """Finished calls by latency: ``buckets[i]`` counts those over
    ``LATENCY_BUCKETS[i - 1]`` and at most ``LATENCY_BUCKETS[i]`` (the last,
    those over 30 s)."""

    def record(self, seconds: float) -> None:
        """Note one finished call that took ``seconds`` (a clock stepping
        backwards counts as 0): O(1), it runs on every call."""
        if seconds < 0.0:
            seconds = 0.0
        self.total_seconds += seconds
        self.recent.append(seconds)
        self.buckets[bisect.bisect_left(LATENCY_BUCKETS, seconds)] += 1

    def percentile(self, p: float) -> float | None:
        """The ``p``-th percentile (nearest rank, 0 <= p <= 100) of the
        recent durations, in seconds; ``None`` before any call finished.

        :raises ValueError: ``p`` is outside 0..100.
        """
        if not 0.0 <= p <= 100.0:
            raise ValueError(f"percentile must be within 0..100, not {p!r}")
        if not self.recent:
            return None
        ordered = sorted(self.recent)
        rank = math.ceil(p / 100.0 * len(ordered))
        return ordered[max(rank, 1) - 1]


@attrs.define
class Method:
    """One callable ``Service.Method``."""

    name: str
    function: Callable[..., Any]
    takes_argument: bool
    argument_type: Any
    result_type: Any
    convert_argument: Converter
    stats: MethodStats = attrs.field(factory=MethodStats)
    context_parameter: str | None = None
    """The keyword-only parameter annotated :class:`~txgeerpc.context.CallContext`
    through which the handler gets its call's context, if any."""

    def signature(self) -> str:
        """``Sum(Args) -> int``: the method as the debug page and ``list`` show it."""
        argument = type_name(self.argument_type) if self.takes_argument else ""
        return f"{self.name}({argument}) -> {type_name(self.result_type)}"

    def start(self, argument: Any, context: CallContext | None = None) -> Any:
        """Run the method: its plain result if it finished synchronously, else a
        Deferred owned by the caller (cancelling it cancels the handler's work).

        :param context: the call's context, for a handler that takes one.
        :raises Exception: whatever the method raised synchronously.
        """
        if self.context_parameter is not None:
            keywords = {self.context_parameter: context}
            result = (
                self.function(argument, **keywords)
                if self.takes_argument
                else self.function(**keywords)
            )
        else:
            result = self.function(argument) if self.takes_argument else self.function()
        return settle(result)


def settle(result: Any) -> Any:
    """A handler's (or interceptor's) result as :meth:`Method.start` returns it:
    a plain value as is, a Deferred or a coroutine as a Deferred the caller owns."""
    if isinstance(result, Deferred):
        return _follow(result)
    if inspect.iscoroutine(result):
        return _run_coroutine(result)
    return result


def _run_coroutine(coroutine: Any) -> Deferred[Any]:
    """A Deferred for a handler's coroutine.  With an asyncio loop running (the
    asyncio reactor) it runs as a task on that loop, so it may await asyncio
    things; cancelling the Deferred cancels the task (the Deferred fires once
    the task has ended)."""
    loop = asyncio._get_running_loop()
    if loop is None:
        return ensureDeferred(coroutine)
    return Deferred.fromFuture(loop.create_task(coroutine))


def _follow(handlers: Deferred[Any]) -> Deferred[Any]:
    """A fresh Deferred with the result of ``handlers``, the Deferred a handler
    returned, which it may also have handed to others (a cached result): adding
    our timeout and reply callbacks to it directly would change what they see.
    A successful result passes through unchanged; a failure is consumed (it
    becomes the call's error reply), so a handler that shares a Deferred whose
    failure others must see should give each caller its own.  Cancelling ours
    cancels it."""
    ours: Deferred[Any] = Deferred(lambda _: handlers.cancel())

    def relay(result: Any) -> Any:
        if not ours.called:
            if isinstance(result, Failure):
                ours.errback(result)
            else:
                ours.callback(result)
        # A failure is reported as the call's error reply; passing it on would
        # also log it as an unhandled error when the handler's Deferred goes away.
        return None if isinstance(result, Failure) else result

    handlers.addBoth(relay)
    return ours


@attrs.define
class Service:
    """A named set of methods built from one object."""

    name: str
    instance: Any
    methods: dict[str, Method]


def build_service(
    obj: Any, name: str | None = None, methods: Iterable[str] | None = None
) -> Service:
    """Build a :class:`Service` from an object (a class is instantiated first).

    :param name: the service name; the class name by default.
    :param methods: expose exactly these method names.
    :raises RegistrationError: bad name, a requested method is missing or not
        callable remotely, or nothing qualifies.
    """
    if isinstance(obj, type):
        try:
            obj = obj()
        except TypeError as error:
            raise RegistrationError(
                f"rpc: cannot instantiate {obj.__name__} with no arguments ({error}); "
                "register an instance instead"
            ) from error
    service_name = name if name is not None else type(obj).__name__
    if not service_name or service_name != service_name.strip():
        raise RegistrationError(f"rpc server: {service_name!r} is not a valid service name")
    cls = type(obj)
    if methods is not None:
        wanted = list(methods)
        explicit = True
    else:
        candidates = [n for n in dir(cls) if not n.startswith("_") and _is_function(cls, n)]
        marked = [n for n in candidates if getattr(getattr(cls, n), _EXPOSED, False)]
        wanted = marked or candidates
        explicit = bool(marked)
    table: dict[str, Method] = {}
    for method_name in wanted:
        function = getattr(obj, method_name, None)
        if function is None or not callable(function):
            raise RegistrationError(f"rpc server: {service_name} has no method {method_name}")
        method = _build_method(method_name, function)
        if isinstance(method, str):
            if explicit or methods is not None:
                raise RegistrationError(f"rpc server: {service_name}.{method_name}: {method}")
            continue
        table[method_name] = method
    if not table:
        raise RegistrationError(f"rpc server: {service_name} has no methods to expose")
    return Service(service_name, obj, table)


def _is_function(cls: type, name: str) -> bool:
    attribute = inspect.getattr_static(cls, name, None)
    return isinstance(attribute, (staticmethod, classmethod)) or inspect.isfunction(attribute)


def _build_method(name: str, function: Callable[..., Any]) -> Method | str:
    try:
        signature = inspect.signature(function)
    except (TypeError, ValueError):
        return "has no inspectable signature"
    try:
        hints = typing.get_type_hints(function, include_extras=True)
    except Exception as error:
        # Not a reason to skip the method quietly: the user meant it to be typed.
        raise RegistrationError(
            f"rpc server: cannot resolve the annotations of {name} ({error}); "
            "define the types it names at module level"
        ) from error
    parameters = [
        p
        for p in signature.parameters.values()
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]
    required = [p for p in parameters if p.default is p.empty]
    context_parameter = next(
        (
            p.name
            for p in signature.parameters.values()
            if p.kind is p.KEYWORD_ONLY and hints.get(p.name) is CallContext
        ),
        None,
    )
    others_required = [
        p
        for p in signature.parameters.values()
        if p.kind is p.KEYWORD_ONLY and p.default is p.empty and p.name != context_parameter
    ]
    if len(required) > 1 or others_required:
        return "takes more than one argument"
    takes_argument = bool(parameters)
    argument_type = hints.get(parameters[0].name, Any) if takes_argument else Any
    result_type = hints.get("return", Any)
    if typing.get_origin(result_type) is Deferred:  # Deferred[int] replies an int
        result_type = (typing.get_args(result_type) or (Any,))[0]
    return Method(
        name=name,
        function=function,
        takes_argument=takes_argument,
        argument_type=argument_type,
        result_type=result_type,
        convert_argument=converter_for(argument_type),
        context_parameter=context_parameter,
    )
