"""
Who is calling, and may they: authentication with ``twisted.cred`` and
per-method authorization, as a server interceptor (:mod:`txgeerpc.context`).

Credentials, each a ``twisted.cred`` credentials interface with its checker:

- :class:`BearerToken` (:class:`IBearerToken`): the call's ``authorization``
  metadata, ``Bearer <token>``; checked by :class:`TokenChecker` against a
  file of ``identity token`` lines, in constant time
  (``hmac.compare_digest``).  Tokens are never logged.
- :class:`ClientCertificate` (:class:`IClientCertificate`): the identity of
  the client certificate of a mutual-TLS connection (:mod:`txgeerpc.tls`;
  verified by the handshake); :class:`CertificateChecker` accepts it.
- :class:`PeerAddress` (:class:`IPeerAddress`): the caller's IP address;
  :class:`NetworkChecker` maps trusted networks to identities (for Go
  clients, which send no metadata and no certificate).

A :class:`Guard` tries them in that order through a ``twisted.cred``
``Portal`` (its realm's avatar is the identity, a ``str``), then asks its
:class:`Authorizer` whether the identity may call the method.  A call that
has no credential the rules accept fails with
:class:`~txgeerpc.errors.Unauthenticated`, one the rules refuse with
:class:`~txgeerpc.errors.PermissionDenied`; neither is run, and both are
counted (:attr:`Guard.counts`).  The handler sees the identity as
``context.identity``.

Authorization rules (:class:`Authorizer`) come in code or from a TOML file
(``--authz FILE``; TOML because Python reads it itself, 3.11's ``tomllib``,
and its lists need no parsing conventions, unlike INI)::

    [methods]
    "Arith.Divide" = ["ops"]            # exact method: first
    "Arith.*" = ["alice", "ops"]        # then the service's wildcard
    "_txgeerpc.*" = ["anonymous"]      # anyone, even unauthenticated
    "*" = ["authenticated"]             # then the catch-all

The most specific pattern that matches decides (exact, then ``Service.*``,
then ``*``); a method no pattern matches is refused.  ``anonymous`` lets
anyone call, ``authenticated`` anyone with an accepted credential.
"""

from __future__ import annotations

import collections
import hashlib
import hmac
import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from twisted.cred import error as cred_error
from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.credentials import ICredentials
from twisted.cred.portal import IRealm, Portal
from twisted.internet.defer import Deferred, fail, succeed
from zope.interface import Attribute, Interface, implementer

from ._wire import PERMISSION_DENIED, UNAUTHENTICATED
from .context import CallContext, Interceptor
from .errors import RPCError
from .tls import peer_identity

__all__ = [
    "ANONYMOUS",
    "AUTHENTICATED",
    "Authorizer",
    "BearerToken",
    "CertificateChecker",
    "ClientCertificate",
    "Guard",
    "IBearerToken",
    "IClientCertificate",
    "IIdentity",
    "IPeerAddress",
    "NetworkChecker",
    "PeerAddress",
    "TokenChecker",
    "bearer_token",
    "load_authz",
    "parse_networks",
]

ANONYMOUS = "anonymous"
"""In a rule: anyone may call, with or without a credential."""

AUTHENTICATED = "authenticated"
"""In a rule: anyone with an accepted credential may call."""

HEALTH_METHOD = "_txgeerpc.Health"
"""Open to anyone unless a rule names it exactly (health probes send no token)."""

AUTHORIZATION = "authorization"
"""The metadata key the token travels in (``Bearer <token>``)."""


class IIdentity(Interface):
    """The avatar interface: an identity is a ``str``."""


class IBearerToken(ICredentials):
    token = Attribute("The token (str).")


class IClientCertificate(ICredentials):
    identity = Attribute("The verified client certificate's identity (str).")


class IPeerAddress(ICredentials):
    host = Attribute("The caller's IP address (str).")


@implementer(IBearerToken)
class BearerToken:
    """A bearer token (its ``repr`` does not show it)."""

    def __init__(self, token: str) -> None:
        self.token = token

    def __repr__(self) -> str:
        return "<BearerToken (hidden)>"


@implementer(IClientCertificate)
class ClientCertificate:
    def __init__(self, identity: str) -> None:
        self.identity = identity


@implementer(IPeerAddress)
class PeerAddress:
    def __init__(self, host: str) -> None:
        self.host = host


@implementer(ICredentialsChecker)
class TokenChecker:
    """Tokens to identities, from ``identity token`` lines (``#`` comments
    and blank lines skipped).  Compared in constant time; never logged.

    :param tokens: identity -> token (looked up by their SHA-256, then
        compared with ``hmac.compare_digest``).
    :ivar path: the file read (:meth:`from_file`), for :meth:`reload`.
    """

    credentialInterfaces = (IBearerToken,)

    def __init__(self, tokens: Mapping[str, str]) -> None:
        self._tokens = _by_digest(tokens)
        self.path: str | None = None

    @classmethod
    def from_file(cls, path: str) -> TokenChecker:
        """Read ``path``.

        :raises ValueError: a line that is not ``identity token``, or a
            file that cannot be read (the message never holds a token).
        """
        checker = cls(_read_tokens(path))
        checker.path = path
        return checker

    def reload(self) -> None:
        """Read :attr:`path` again (a mistake keeps the old tokens).

        :raises ValueError: as :meth:`from_file`.
        """
        if self.path is not None:
            self._tokens = _by_digest(_read_tokens(self.path))

    def requestAvatarId(self, credentials: Any) -> Deferred[Any]:
        # Looked up by its SHA-256 (which tells a timing attacker nothing
        # about the token), then compared in constant time.
        given = credentials.token.encode("utf-8", "surrogatepass")
        entry = self._tokens.get(hashlib.sha256(given).digest())
        if entry is None or not hmac.compare_digest(given, entry[1]):
            return fail(cred_error.UnauthorizedLogin("unknown token"))
        return succeed(entry[0])


def _by_digest(tokens: Mapping[str, str]) -> dict[bytes, tuple[str, bytes]]:
    found = {}
    for identity, token in tokens.items():
        raw = token.encode("utf-8", "surrogatepass")
        found[hashlib.sha256(raw).digest()] = (identity, raw)
    return found


def _read_tokens(path: str) -> dict[str, str]:
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except OSError as error:
        raise ValueError(f"cannot read the tokens file {path!r}: {error.strerror}") from None
    tokens: dict[str, str] = {}
    for number, line in enumerate(lines, 1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        parts = text.split()
        if len(parts) != 2:
            raise ValueError(
                f"{path}, line {number}: expected 'identity token' (two words), "
                f"got {len(parts)} word(s)"
            )
        identity, token = parts
        if len(token) < 16:
            raise ValueError(f"{path}, line {number}: the token of {identity!r} is shorter than 16")
        tokens[identity] = token
    return tokens


@implementer(ICredentialsChecker)
class CertificateChecker:
    """Accepts the identity of a verified client certificate, as is or
    mapped (``{"CN in the certificate": "identity"}``; with a mapping,
    certificates it does not name are refused)."""

    credentialInterfaces = (IClientCertificate,)

    def __init__(self, mapping: Mapping[str, str] | None = None) -> None:
        self._mapping = dict(mapping) if mapping is not None else None

    def requestAvatarId(self, credentials: Any) -> Deferred[Any]:
        if self._mapping is None:
            return succeed(credentials.identity)
        if credentials.identity in self._mapping:
            return succeed(self._mapping[credentials.identity])
        return fail(cred_error.UnauthorizedLogin("certificate not mapped"))


def parse_networks(specs: Iterable[str]) -> list[tuple[Any, str]]:
    """``["10.0.0.0/8=ops", "127.0.0.1=local"]`` -> networks and identities.

    :raises ValueError: a spec that is not ``NETWORK=IDENTITY``.
    """
    networks = []
    for spec in specs:
        network, equals, identity = spec.partition("=")
        if not equals or not identity.strip():
            raise ValueError(f"{spec!r}: expected NETWORK=IDENTITY (10.0.0.0/8=ops)")
        try:
            parsed = ipaddress.ip_network(network.strip(), strict=False)
        except ValueError as error:
            raise ValueError(f"{spec!r}: {error}") from None
        networks.append((parsed, identity.strip()))
    return networks


@implementer(ICredentialsChecker)
class NetworkChecker:
    """Callers from a trusted network get its identity (the first that
    contains the address)."""

    credentialInterfaces = (IPeerAddress,)

    def __init__(self, networks: Sequence[tuple[Any, str]]) -> None:
        self._networks = list(networks)

    def requestAvatarId(self, credentials: Any) -> Deferred[Any]:
        try:
            address = ipaddress.ip_address(credentials.host)
        except ValueError:
            return fail(cred_error.UnauthorizedLogin("not an IP address"))
        for network, identity in self._networks:
            if address.version == network.version and address in network:
                return succeed(identity)
        return fail(cred_error.UnauthorizedLogin("not a trusted network"))


@implementer(IRealm)
class _Identities:
    def requestAvatar(self, avatarId: Any, mind: Any, *interfaces: Any) -> Any:
        return IIdentity, avatarId, lambda: None


class Authorizer:
    """Who may call what: ``{pattern: identities}`` (see the module's text).

    :param rules: patterns ``Service.Method``, ``Service.*`` or ``*`` to
        identities (with :data:`ANONYMOUS` and :data:`AUTHENTICATED`).
        ``None``: every method is open to :data:`AUTHENTICATED`.
    """

    def __init__(self, rules: Mapping[str, Iterable[str]] | None = None) -> None:
        if rules is None:
            rules = {"*": [AUTHENTICATED]}
        self.rules = {pattern: frozenset(who) for pattern, who in rules.items()}
        # Health probes need no credential unless a rule says otherwise.
        self.rules.setdefault(HEALTH_METHOD, frozenset([ANONYMOUS]))
        for pattern in self.rules:
            if pattern != "*" and (
                "." not in pattern or ("*" in pattern and not pattern.endswith(".*"))
            ):
                raise ValueError(f"rule {pattern!r}: expected Service.Method, Service.* or *")

    def allowed(self, service_method: str) -> frozenset[str] | None:
        """The identities the most specific matching rule names, or ``None``
        if none matches."""
        rules = self.rules
        found = rules.get(service_method)
        if found is None:
            found = rules.get(service_method.rpartition(".")[0] + ".*")
        if found is None:
            found = rules.get("*")
        return found

    def open_to_anyone(self, service_method: str) -> bool:
        allowed = self.allowed(service_method)
        return allowed is not None and ANONYMOUS in allowed

    def permits(self, identity: str, service_method: str) -> bool:
        """Whether ``identity`` (an authenticated one) may call it."""
        allowed = self.allowed(service_method)
        if allowed is None:
            return False
        return ANONYMOUS in allowed or AUTHENTICATED in allowed or identity in allowed


def load_authz(path: str) -> Authorizer:
    """The rules of a TOML file with a ``[methods]`` table (see the module).

    :raises ValueError: a file that cannot be read or is not such a table.
    """
    try:
        import tomllib
    except ImportError:  # pragma: no cover - Python 3.10
        raise ValueError("--authz needs Python 3.11 or later (tomllib)") from None
    try:
        with open(path, "rb") as f:
            document = tomllib.load(f)
    except OSError as error:
        raise ValueError(f"cannot read {path!r}: {error.strerror}") from None
    except tomllib.TOMLDecodeError as error:
        raise ValueError(f"{path}: {error}") from None
    methods = document.get("methods")
    if not isinstance(methods, dict) or set(document) - {"methods"}:
        raise ValueError(f"{path}: expected one [methods] table of pattern = [identities]")
    for pattern, who in methods.items():
        if not isinstance(who, list) or not all(isinstance(name, str) for name in who):
            raise ValueError(f"{path}: {pattern!r} must be a list of identities")
    try:
        return Authorizer(methods)
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from None


class _Refused(RPCError):
    """A refusal sent to the client (logged as one line, not a traceback)."""


class Guard:
    """The server interceptor that authenticates and authorizes every call
    (``Server(..., interceptors=[guard])``).

    :param checkers: ``twisted.cred`` checkers for :class:`IBearerToken`,
        :class:`IClientCertificate` and :class:`IPeerAddress` credentials.
    :param authorizer: the rules (default: any authenticated identity may
        call anything).
    :ivar counts: ``(outcome, Service.Method)`` -> how many calls were
        refused: outcome ``unauthenticated`` or ``denied``.
    :ivar portal: the ``twisted.cred`` portal (add checkers to it).
    """

    def __init__(
        self,
        checkers: Iterable[ICredentialsChecker] = (),
        authorizer: Authorizer | None = None,
    ) -> None:
        self.portal = Portal(_Identities(), list(checkers))
        self.authorizer = authorizer if authorizer is not None else Authorizer()
        self.counts: collections.Counter[tuple[str, str]] = collections.Counter()

    def credentials(self, metadata: Mapping[str, Any], transport: Any) -> list[Any]:
        """What a call presents, strongest first: its token (if any: then
        only it), else its client certificate and its address."""
        header = metadata.get(AUTHORIZATION)
        if header is not None:
            scheme, _, token = str(header).partition(" ")
            return [BearerToken(token.strip() if scheme.lower() == "bearer" else "")]
        found: list[Any] = []
        identity = peer_identity(transport)
        if identity is not None:
            found.append(ClientCertificate(identity))
        host = getattr(_peer(transport), "host", None)
        if isinstance(host, str):
            found.append(PeerAddress(host))
        return found

    def authenticate(self, metadata: Mapping[str, Any], transport: Any) -> Deferred[str | None]:
        """The identity a caller's credentials prove, or ``None``; the first
        credential the portal accepts decides."""
        presented = self.credentials(metadata, transport)
        portal = self.portal

        def attempt(index: int) -> Deferred[str | None]:
            if index == len(presented):
                return succeed(None)
            trying = presented[index]
            if not any(i.providedBy(trying) for i in portal.listCredentialsInterfaces()):
                return attempt(index + 1)
            d = portal.login(trying, None, IIdentity)
            return d.addCallbacks(lambda result: result[1], lambda _: attempt(index + 1))

        return attempt(0)

    def __call__(self, context: CallContext, argument: Any, proceed: Any) -> Deferred[Any]:
        method = context.service_method
        if self.authorizer.open_to_anyone(method) and AUTHORIZATION not in context.metadata:
            return proceed(argument)  # type: ignore[no-any-return]

        def decide(identity: str | None) -> Any:
            if identity is None:
                return self._refuse(
                    context,
                    "unauthenticated",
                    f"{UNAUTHENTICATED}: {method} needs a valid token or client certificate",
                )
            if not self.authorizer.permits(identity, method):
                return self._refuse(
                    context,
                    "denied",
                    f"{PERMISSION_DENIED}: {identity} may not call {method}",
                )
            context.identity = identity
            return proceed(argument)

        return self.authenticate(context.metadata, context.transport).addCallback(decide)

    def _refuse(self, context: CallContext, outcome: str, text: str) -> Any:
        self.counts[(outcome, context.service_method)] += 1
        raise _Refused(text)  # the dispatcher logs it (one line)

    def stats(self) -> dict[str, dict[str, int]]:
        """The refusals, for a JSON page: outcome -> method -> count."""
        result: dict[str, dict[str, int]] = {"unauthenticated": {}, "denied": {}}
        for (outcome, method), count in sorted(self.counts.items()):
            result[outcome][method] = count
        return result


def _peer(transport: Any) -> Any:
    try:
        return transport.getPeer()
    except Exception:
        return None


def bearer_token(token: str) -> Interceptor:
    """A client interceptor that sends ``token`` with every call (as the
    ``authorization`` metadata: ``Bearer <token>``)."""
    value = f"Bearer {token}"

    def send_token(context: CallContext, argument: Any, proceed: Any) -> Any:
        context.metadata.setdefault(AUTHORIZATION, value)
        return proceed(argument)

    return send_token
