"""
The exceptions txgeerpc raises and fails Deferreds with.

Every error derives from :class:`GeeRPCError`, so ``except GeeRPCError`` (or
``d.addErrback(..., trap=GeeRPCError)``) catches everything the library itself
produces.  Errors a *remote* handler produced arrive as :class:`RemoteError`,
whose ``message`` is the text the server put in the reply header.
"""

from __future__ import annotations

import re
from typing import Any


class GeeRPCError(Exception):
    """Base class of every txgeerpc error."""


class ProtocolError(GeeRPCError):
    """The peer broke the wire protocol: bad magic, malformed Option, garbage
    or oversized frames.  The connection is closed when this happens."""


class MessageTooLarge(ProtocolError):
    """A message (or the Option) is larger than the configured maximum.

    :ivar size: the size announced or buffered so far, in bytes.
    :ivar limit: the configured maximum, in bytes.
    """

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"message of {size} bytes exceeds the limit of {limit} bytes")
        self.size = size
        self.limit = limit


class CodecError(GeeRPCError):
    """A codec could not decode (or encode) a value.

    Not a :class:`ProtocolError`: a body that does not decode or encode fails
    its own call only, and the connection goes on.  Where the stream itself
    cannot go on (a header that does not decode, bytes that cannot start a
    message), the protocol closes the connection, keeping this error as the
    reason.
    """


class UnsupportedCodec(GeeRPCError):
    """No codec of that name is registered (Go: ``invalid codec type <name>``).

    :ivar name: the codec name that was asked for.
    """

    def __init__(self, name: str) -> None:
        super().__init__(f"invalid codec type {name}")
        self.name = name


class InvalidAddress(GeeRPCError, ValueError):
    """An address string is not ``protocol@address`` with a known protocol."""


class InvalidServerAddress(GeeRPCError, ValueError):
    """A server address given to a registry (its ``X-Geerpc-Server`` value, or
    ``--advertise``) that is not a ``proto@addr`` a client can dial."""


class RemoteError(GeeRPCError):
    """The server answered the call with an error (Go's ``ServerError``).

    :ivar message: the error text exactly as the server sent it.
    """

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ServiceError(GeeRPCError):
    """Base of the errors a server reports for a request it cannot route.

    Its ``str()`` is GeeRPC's exact error text, which goes on the wire.
    """


class IllFormedServiceMethod(ServiceError):
    def __init__(self, service_method: str) -> None:
        super().__init__(f"rpc server: service/method request ill-formed: {service_method}")


class ServiceNotFound(ServiceError):
    def __init__(self, service: str) -> None:
        super().__init__(f"rpc server: can't find service {service}")


class MethodNotFound(ServiceError):
    def __init__(self, method: str) -> None:
        super().__init__(f"rpc server: can't find method {method}")


class RPCError(GeeRPCError):
    """Raise it (or a subclass) from a handler for an error meant for the
    caller: its text is the reply's error, and the server logs one ``info``
    line with it, never a traceback.  ``ValueError``, ``ArithmeticError`` and
    ``LookupError`` (and their subclasses) are treated the same way; any other
    exception a handler raises is a bug: its traceback is logged (at most
    once a minute per method, with a count of those left out)."""


class BodyTooLarge(CodecError):
    """A body over the maximum message size, skipped unread (gob): on a
    server the call gets this error (its ``str()`` is the reply's error), on a
    client the call fails with it; the connection goes on.

    :ivar size: the body's size in bytes.
    :ivar limit: the limit in bytes.
    """

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(
            f"body of {size} bytes exceeds the maximum message size of {limit} bytes"
        )
        self.size = size
        self.limit = limit


class MessageTooLargeToSend(CodecError):
    """A call's argument encodes past the largest message the server accepts
    (the client's ``max_message_size``): it was not sent.

    :ivar size: the encoded size in bytes.
    :ivar limit: the limit in bytes.
    """

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(
            f"argument of {size} bytes exceeds the maximum message size of {limit} bytes"
        )
        self.size = size
        self.limit = limit


class ServiceAlreadyDefined(GeeRPCError):
    def __init__(self, name: str) -> None:
        super().__init__(f"rpc: service already defined: {name}")
        self.name = name


class RegistrationError(GeeRPCError, TypeError):
    """An object cannot be registered as a service (nothing to expose, bad name...)."""


class CallTimeout(GeeRPCError):
    """The call got no reply within its timeout.  The pending entry is gone and a
    late reply is discarded.

    :ivar service_method: the call that timed out.
    :ivar timeout: the timeout, in seconds.
    """

    def __init__(self, service_method: str, timeout: float) -> None:
        super().__init__(
            f"rpc client: call failed: {service_method} got no reply within {timeout:g}s"
        )
        self.service_method = service_method
        self.timeout = timeout


class ConnectTimeout(GeeRPCError):
    """Connecting (TCP connect plus handshake) took longer than the connect timeout."""

    def __init__(self, timeout: float) -> None:
        super().__init__(f"rpc client: connect timeout: expect within {timeout:g}s")
        self.timeout = timeout


class ConnectFailed(GeeRPCError):
    """The connection could not be made at all (refused, unreachable...).

    :ivar reason: the underlying :class:`twisted.python.failure.Failure` value.
    """

    def __init__(self, reason: Any) -> None:
        super().__init__(f"rpc client: connect failed: {reason}")
        self.reason = reason


class ConnectionShutdown(GeeRPCError):
    """The client was closed (by :meth:`Client.close`) before the call completed,
    or a call was made on a closed client (Go: ``connection is shut down``)."""

    def __init__(self, message: str = "connection is shut down") -> None:
        super().__init__(message)


class UnexpectedDisconnect(ConnectionShutdown):
    """The connection was lost while the call was pending.

    :ivar reason: the :class:`twisted.python.failure.Failure` the transport
        reported, or the :class:`ProtocolError` that made the client close it.
    """

    def __init__(self, reason: Any) -> None:
        super().__init__(f"connection lost: {_describe(reason)}")
        self.reason = reason


class ServerGoingAway(GeeRPCError):
    """The server said it is going away (it is stopping gracefully): this
    connection takes no new call, and this call was **not sent** (safe to
    send elsewhere; the XClient does so).  Calls already sent on it still get
    their replies.  A txgeerpc extension (docs/protocol.md 13.8)."""

    def __init__(self) -> None:
        super().__init__("rpc client: the server is going away; the call was not sent")


class ServerShuttingDown(RemoteError):
    """The call was running on the server when its shutdown grace ran out: the
    server answered it with an error and cancelled it.  It may have done part
    of its work.  (A :class:`RemoteError`: ``.message`` is the server's text.)"""


class DeadlineExceeded(RemoteError):
    """The call's budget ran out (a txgeerpc extension, docs/protocol.md
    13.9): the server refused it unrun because its budget was already spent
    when it arrived, or cancelled its handler when the budget ran out; or
    the budget of the context it was made under was spent before it was
    sent (then it was not sent to anything that would run it).
    ``.message`` is the text."""


class RemoteMessageTooLarge(RemoteError):
    """The server refused the call's body for its size, before reading it
    (framed mode: the size is in the prefix) or while inflating it, or after
    skipping it unread (gob).  The connection goes on.

    :ivar limit: the server's maximum message size in bytes.
    """

    _PATTERN = re.compile(r"maximum message size of (\d+) bytes")

    def __init__(self, message: str) -> None:
        super().__init__(message)
        found = self._PATTERN.search(message)
        self.limit = int(found.group(1)) if found else 0

    @classmethod
    def matches(cls, message: str) -> bool:
        """Whether a reply's error text is such a refusal."""
        return cls._PATTERN.search(message) is not None


class MetadataError(GeeRPCError, ValueError):
    """Call metadata or trailers that break the rules (docs/protocol.md
    13.9): a key that is not lower-case ``[a-z0-9._-]``, a reserved
    ``txgeerpc-`` key, a value of the wrong type, or more than the limits
    (count, total size)."""


class NoServers(GeeRPCError):
    """Discovery knows no server to call (Go: ``rpc discovery: no available servers``)."""

    def __init__(self) -> None:
        super().__init__("rpc discovery: no available servers")


class RegistryError(GeeRPCError):
    """A request to a registry got no usable answer (see the subclasses; a
    refused connection fails with Twisted's own error)."""


class RegistryTimeout(RegistryError):
    """The registry did not answer within the request's timeout."""

    def __init__(self, url: str, timeout: float) -> None:
        super().__init__(f"registry {url} did not answer within {timeout:g}s")
        self.url = url
        self.timeout = timeout


class RegistryAnswerTooLarge(RegistryError):
    """The registry's answer body went over the limit."""

    def __init__(self, url: str, limit: int) -> None:
        super().__init__(f"registry {url} answered more than {limit} bytes")
        self.url = url
        self.limit = limit


def _describe(reason: Any) -> str:
    value = getattr(reason, "value", reason)
    text = str(value)
    return text or type(value).__name__


__all__ = [
    "BodyTooLarge",
    "CallTimeout",
    "CodecError",
    "ConnectFailed",
    "ConnectTimeout",
    "ConnectionShutdown",
    "DeadlineExceeded",
    "GeeRPCError",
    "IllFormedServiceMethod",
    "InvalidAddress",
    "InvalidServerAddress",
    "MessageTooLarge",
    "MessageTooLargeToSend",
    "MetadataError",
    "MethodNotFound",
    "NoServers",
    "ProtocolError",
    "RPCError",
    "RegistrationError",
    "RegistryAnswerTooLarge",
    "RegistryError",
    "RegistryTimeout",
    "RemoteError",
    "ServerGoingAway",
    "ServerShuttingDown",
    "ServiceAlreadyDefined",
    "ServiceError",
    "ServiceNotFound",
    "UnexpectedDisconnect",
    "UnsupportedCodec",
]


class RegistryFull(RegistryError):
    """The registry already holds as many entries as it takes
    (``max_entries``) and refuses a new one; refreshing an entry it holds
    is always allowed.  Its HTTP answer is ``503``.

    :ivar limit: the most entries the registry holds.
    """

    def __init__(self, limit: int) -> None:
        servers = "server" if limit == 1 else "servers"
        super().__init__(f"registry full: it holds at most {limit} {servers}")
        self.limit = limit


__all__ += ["RegistryFull"]
__all__ += ["RemoteMessageTooLarge"]


class EtcdError(GeeRPCError):
    """etcd answered with an error (or could not be used at all).

    :ivar code: the gRPC status code etcd gave (``0`` when it gave none).
    :ivar endpoint: the endpoint that answered (``""`` when none did).
    """

    def __init__(self, message: str, *, code: int = 0, endpoint: str = "") -> None:
        super().__init__(f"etcd at {endpoint}: {message}" if endpoint else f"etcd: {message}")
        self.message = message
        self.code = code
        self.endpoint = endpoint


class EtcdUnavailable(EtcdError):
    """No endpoint of the cluster could be reached, or each of them failed
    or timed out; the reasons, one per endpoint tried, are in ``reasons``."""

    def __init__(self, reasons: dict[str, str]) -> None:
        tried = "; ".join(f"{endpoint}: {reason}" for endpoint, reason in reasons.items())
        super().__init__(f"no endpoint answered ({tried})")
        self.reasons = dict(reasons)


class EtcdCompacted(EtcdError):
    """The revision asked for has been compacted away.

    :ivar compact_revision: the oldest revision still kept.
    """

    def __init__(self, compact_revision: int, *, endpoint: str = "") -> None:
        super().__init__(
            f"revision compacted (oldest kept: {compact_revision})", code=11, endpoint=endpoint
        )
        self.compact_revision = compact_revision


class EtcdAnswerTooLarge(EtcdError):
    """An answer (or one watch message) was larger than the client reads."""

    def __init__(self, limit: int, *, endpoint: str = "") -> None:
        super().__init__(f"answer larger than {limit} bytes", endpoint=endpoint)
        self.limit = limit


__all__ += ["EtcdAnswerTooLarge", "EtcdCompacted", "EtcdError", "EtcdUnavailable"]


class TLSError(ConnectFailed):
    """A TLS handshake failed (:mod:`txgeerpc.tls`): the server's
    certificate is untrusted, expired or for another host name, or the server
    refused this client's certificate (or its lack of one).  Its text says
    which, in one line.  (A :class:`ConnectFailed`; also the ``reason`` of
    an :class:`UnexpectedDisconnect` when a TLS 1.3 server refuses a client
    certificate after the client's side of the handshake.)"""

    def __init__(self, message: str) -> None:
        GeeRPCError.__init__(self, f"TLS handshake failed: {message}")
        self.reason = message


class TLSConfigError(GeeRPCError, ValueError):
    """A TLS setting that cannot be used: a certificate or key file that
    cannot be read or parsed, a key that does not match its certificate."""


class Unauthenticated(RemoteError):
    """The server requires callers to say who they are (a token in the
    call's ``authorization`` metadata, a client certificate, a trusted
    network) and this call did not, or its credential was wrong.  The call
    was not run.  Its wire text (what Go clients see) starts with
    ``rpc server: unauthenticated``."""


class PermissionDenied(RemoteError):
    """The caller is known but the server's rules do not let it call this
    method.  The call was not run.  Its wire text starts with
    ``rpc server: permission denied``."""


__all__ += [
    "PermissionDenied",
    "TLSConfigError",
    "TLSError",
    "Unauthenticated",
]


class ZooKeeperError(GeeRPCError):
    """ZooKeeper refused a request (no permission, a bad path), or could not
    be used at all (see :class:`ZooKeeperUnavailable`).

    :ivar kind: kazoo's name for what went wrong (``NoAuthError``,
        ``ConnectionLoss``...), ``""`` when none.
    """

    def __init__(self, message: str, *, kind: str = "") -> None:
        super().__init__(f"zookeeper: {message}")
        self.message = message
        self.kind = kind


class ZooKeeperUnavailable(ZooKeeperError):
    """No ZooKeeper server answered in time, or the session expired under
    the request."""


__all__ += ["ZooKeeperError", "ZooKeeperUnavailable"]
