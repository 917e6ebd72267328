"""
``twistd geerpc``'s security options: TLS on the listening ports
(``--tls-cert``...), callers' credentials (``--tokens``, client certificates,
``--trust-network``), per-method rules (``--authz``) and who may use the
HTTP endpoints (``--debug-access``, ``--registry-access``, ...), and the
registry's per-source limits (``--registry-rate``...).  ``twistd
geerpc-registry`` takes the registry's share of them (:data:`REGISTRY_PARAMETERS`,
:func:`build_registry`).  ``SIGHUP`` reloads the TLS files and the tokens.
A composition root (L5).
"""

from __future__ import annotations

import ipaddress
import json
import signal
from typing import Any

import attrs
from twisted.application.service import Service
from twisted.logger import Logger
from twisted.python import usage
from twisted.web.resource import Resource

from .auth import (
    Authorizer,
    CertificateChecker,
    Guard,
    NetworkChecker,
    TokenChecker,
    load_authz,
    parse_networks,
)
from .errors import TLSConfigError
from .registry import (
    DEFAULT_BURST,
    DEFAULT_ENTRIES_PER_SOURCE,
    DEFAULT_RATE,
    IDENTITY_ATTRIBUTE,
    SourceLimits,
)
from .tls import ServerTLS

__all__: list[str] = []  # private: used by txgeerpc.tap

OPEN, AUTHENTICATED, LOCAL = "open", "authenticated", "local"
ACCESS = (OPEN, AUTHENTICATED, LOCAL)

DEFAULT_ACCESS = {"debug": LOCAL, "registry": LOCAL, "metrics": OPEN, "health": OPEN}
"""The HTTP endpoints' access rules by default: the debug page and the
embedded registry's writes (POST, DELETE) local-only; its reads, metrics and
health open (Go clients and Prometheus read them)."""

PARAMETERS: list[list[Any]] = [
    ["tls-cert", None, None, "PEM file: this server's TLS certificate (then its chain)."],
    ["tls-key", None, None, "PEM file: its private key (with --tls-cert)."],
    [
        "tls-ca",
        None,
        None,
        "PEM file of the CAs client certificates must come from (mutual TLS; with --tls-cert).",
    ],
    [
        "tokens",
        None,
        None,
        "File of 'identity token' lines: callers sending one as their call's "
        "'authorization: Bearer TOKEN' metadata are that identity (reloaded on SIGHUP).",
    ],
    [
        "authz",
        None,
        None,
        'TOML file of per-method rules: [methods] "Arith.*" = ["alice"] (see '
        "docs/security.md); without it, any authenticated caller may call anything.",
    ],
    *[
        [
            f"{name}-access",
            None,
            default,
            f"Who may use the {what}: open, authenticated or local (default {default}).",
        ]
        for name, default, what in (
            ("debug", LOCAL, "debug page"),
            ("registry", LOCAL, "embedded registry's writes (POST, DELETE; reads stay open)"),
            ("metrics", OPEN, "metrics page"),
            ("health", OPEN, "health page"),
        )
    ],
]

PARAMETERS += [
    [
        "registry-token-file",
        None,
        None,
        "File holding the token (first line) heartbeats to --registry send as "
        "'Authorization: Bearer TOKEN'.",
    ],
    [
        "registry-tls-ca",
        None,
        None,
        "PEM file of the CAs an https:// --registry's certificate may come from.",
    ],
    [
        "registry-tls-cert",
        None,
        None,
        "PEM client certificate for an https:// --registry (with --registry-tls-key).",
    ],
    ["registry-tls-key", None, None, "PEM private key of --registry-tls-cert."],
]


def positive_number(text: str) -> float:
    """A number more than 0."""
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"expected a number, got {text!r}") from None
    if not value > 0:
        raise ValueError("must be a number more than 0")
    return value


positive_number.coerceDoc = "A number, > 0."  # type: ignore[attr-defined]


def _positive_int(text: str) -> int:
    from ._twistd import positive_int

    return positive_int(text)


_positive_int.coerceDoc = "A whole number, >= 1."  # type: ignore[attr-defined]

LIMIT_PARAMETERS: list[list[Any]] = [
    [
        "registry-rate",
        None,
        DEFAULT_RATE,
        "Registry writes (POST, DELETE) per second one source may send (a source: an IP "
        "address, with the identity that authenticated it); more are answered 429.",
        positive_number,
    ],
    [
        "registry-burst",
        None,
        DEFAULT_BURST,
        "Registry writes one source may send at once, before --registry-rate applies.",
        _positive_int,
    ],
    [
        "registry-source-entries",
        None,
        DEFAULT_ENTRIES_PER_SOURCE,
        "Servers one source may list in the registry at once; one more is answered 429.",
        _positive_int,
    ],
]
PARAMETERS += LIMIT_PARAMETERS

REGISTRY_PARAMETERS: list[list[Any]] = [
    *[row for row in PARAMETERS[:4] if row[0] in ("tls-cert", "tls-key", "tls-ca", "tokens")],
    [
        "registry-access",
        None,
        LOCAL,
        "Who may write to the registry (POST, DELETE; reads stay open): open, "
        f"authenticated (a --tokens token, a client certificate from --tls-ca, a "
        f"--trust-network) or local (default {LOCAL}).",
    ],
    *LIMIT_PARAMETERS,
]
"""``twistd geerpc-registry``'s share of the options."""

FLAGS: list[list[Any]] = [
    [
        "tls-require-client-cert",
        None,
        "Refuse TLS clients without a certificate from --tls-ca (during the handshake).",
    ],
    ["tls-only", None, "Refuse plaintext connections (by default one port serves both)."],
]


def opt_trust_network(config: usage.Options, spec: str) -> None:
    """NETWORK=IDENTITY: callers from NETWORK are IDENTITY (for Go clients,
    which cannot send a token); repeatable, e.g. 10.0.0.0/8=ops."""
    try:
        parse_networks([spec])
    except ValueError as error:
        raise usage.UsageError(f"--trust-network {error}") from None
    config["trust-network"].append(spec)


def check_registry(config: usage.Options) -> None:
    """Validate ``twistd geerpc-registry``'s security options.

    :raises usage.UsageError: with what is wrong.
    """
    if (config["tls-cert"] is None) != (config["tls-key"] is None):
        raise usage.UsageError("--tls-cert and --tls-key go together")
    if config["tls-cert"] is None:
        for name in ("tls-ca", "tls-require-client-cert"):
            if config[name]:
                raise usage.UsageError(f"--{name} needs --tls-cert and --tls-key")
    if config["tls-require-client-cert"] and config["tls-ca"] is None:
        raise usage.UsageError("--tls-require-client-cert needs --tls-ca (to check them)")
    if config["registry-access"] not in ACCESS:
        raise usage.UsageError(
            f"--registry-access {config['registry-access']!r}: expected one of {', '.join(ACCESS)}"
        )
    if config["registry-access"] == AUTHENTICATED and not (
        config["tokens"] or config["tls-ca"] or config["trust-network"]
    ):
        raise usage.UsageError(
            "--registry-access authenticated needs --tokens, --tls-ca or --trust-network "
            "(who could write otherwise?)"
        )


def check(config: usage.Options) -> None:
    """Validate the security options (in ``postOptions``).

    :raises usage.UsageError: with what is wrong.
    """
    if (config["tls-cert"] is None) != (config["tls-key"] is None):
        raise usage.UsageError("--tls-cert and --tls-key go together")
    if config["tls-cert"] is None:
        for name in ("tls-ca", "tls-require-client-cert", "tls-only"):
            if config[name]:
                raise usage.UsageError(f"--{name} needs --tls-cert and --tls-key")
    if config["tls-require-client-cert"] and config["tls-ca"] is None:
        raise usage.UsageError("--tls-require-client-cert needs --tls-ca (to check them)")
    if (config["registry-tls-cert"] is None) != (config["registry-tls-key"] is None):
        raise usage.UsageError("--registry-tls-cert and --registry-tls-key go together")
    for name in ("registry-token-file", "registry-tls-ca", "registry-tls-cert"):
        if config[name] is not None and not config["registry"]:
            raise usage.UsageError(f"--{name} needs --registry")
    for name in DEFAULT_ACCESS:
        value = config[f"{name}-access"]
        if value not in ACCESS:
            raise usage.UsageError(
                f"--{name}-access {value!r}: expected one of {', '.join(ACCESS)}"
            )


@attrs.define
class Security:
    """What the options built: ``guard`` is ``None`` when no credential
    source is configured (then calls are not checked)."""

    tls: ServerTLS | None
    tls_only: bool
    guard: Guard | None
    tokens: TokenChecker | None
    access: dict[str, str]
    web_guard: Guard


def _tls_and_checkers(
    config: usage.Options,
) -> tuple[ServerTLS | None, TokenChecker | None, list[Any]]:
    """What both plugins take alike: the port's TLS (``--tls-*``), the
    ``--tokens`` checker, and every credential checker the options name
    (tokens, client certificates, ``--trust-network``).

    :raises StartupError: a file that cannot be used (one line).
    """
    from ._twistd import StartupError

    tls = None
    if config["tls-cert"] is not None:
        try:
            tls = ServerTLS(
                config["tls-cert"],
                config["tls-key"],
                ca=config["tls-ca"],
                require_client_cert=config["tls-require-client-cert"],
            )
        except TLSConfigError as error:
            raise StartupError(f"--tls-cert: {error}") from None
    checkers: list[Any] = []
    tokens = None
    if config["tokens"] is not None:
        try:
            tokens = TokenChecker.from_file(config["tokens"])
        except ValueError as error:
            raise StartupError(f"--tokens: {error}") from None
        checkers.append(tokens)
    if config["tls-ca"] is not None:
        checkers.append(CertificateChecker())
    networks = parse_networks(config["trust-network"])
    if networks:
        checkers.append(NetworkChecker(networks))
    return tls, tokens, checkers


def build(config: usage.Options) -> Security:
    """The TLS settings, checkers and rules ``config`` names.

    :raises StartupError: a file that cannot be used (one line).
    """
    from ._twistd import StartupError

    tls, tokens, checkers = _tls_and_checkers(config)
    authorizer: Authorizer | None = None
    if config["authz"] is not None:
        try:
            authorizer = load_authz(config["authz"])
        except ValueError as error:
            raise StartupError(f"--authz: {error}") from None
    guard = None
    if checkers or authorizer is not None:
        guard = Guard(checkers, authorizer)
    # The HTTP endpoints' "authenticated" rule uses the same credentials.
    web_guard = guard if guard is not None else Guard(checkers)
    access = {name: config[f"{name}-access"] for name in DEFAULT_ACCESS}
    return Security(tls, config["tls-only"], guard, tokens, access, web_guard)


def build_registry(config: usage.Options) -> Security:
    """``twistd geerpc-registry``'s TLS settings and credential checkers.

    :raises StartupError: a file that cannot be used (one line).
    """
    tls, tokens, checkers = _tls_and_checkers(config)
    access = {"registry": config["registry-access"]}
    return Security(tls, False, None, tokens, access, Guard(checkers))


def source_limits(config: usage.Options, clock: Any, timeout: float) -> SourceLimits:
    """The registry's per-source limits the options set."""
    return SourceLimits(
        clock,
        timeout,
        rate=config["registry-rate"],
        burst=config["registry-burst"],
        entries_per_source=config["registry-source-entries"],
    )


def heartbeat_request(config: usage.Options, reactor: Any) -> Any:
    """The heartbeat's HTTP requests, with the registry TLS and token options.

    :raises StartupError: a file that cannot be read or used.
    """
    from ._twistd import StartupError
    from .registry import agent_request
    from .tls import ClientTLS

    tls = None
    if config["registry-tls-ca"] or config["registry-tls-cert"]:
        try:
            tls = ClientTLS(
                ca=config["registry-tls-ca"],
                cert=config["registry-tls-cert"],
                key=config["registry-tls-key"],
            )
        except TLSConfigError as error:
            raise StartupError(f"--registry-tls-cert: {error}") from None
    token = None
    if config["registry-token-file"] is not None:
        try:
            with open(config["registry-token-file"], encoding="utf-8") as f:
                token = f.readline().strip()
        except OSError as error:
            raise StartupError(
                f"--registry-token-file {config['registry-token-file']!r}: {error.strerror}"
            ) from None
        if not token:
            raise StartupError("--registry-token-file holds no token")
    return agent_request(reactor, tls=tls, token=token)


def is_local(host: Any) -> bool:
    """Whether ``host`` (an address's host, or ``None`` for a UNIX socket)
    is this machine's loopback."""
    if host is None:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class GuardedResource(Resource):
    """A web resource behind an access rule: ``open``, ``local`` (loopback
    or a UNIX socket) or ``authenticated`` (a ``Bearer`` token in the
    ``Authorization`` header, a client certificate, a trusted network, as
    the guard's checkers accept them).  ``methods``: only these HTTP methods
    are checked (the registry's writes)."""

    _log = Logger()

    def __init__(
        self,
        wrapped: Resource,
        rule: str,
        guard: Guard,
        name: str,
        methods: tuple[bytes, ...] | None = None,
    ) -> None:
        super().__init__()
        self._wrapped = wrapped
        self._rule = rule
        self._guard = guard
        self._name = name
        self._methods = methods
        self.refused = 0

    def _why_refused(self, request: Any) -> tuple[int, str] | None:
        if self._rule == OPEN:
            return None
        if self._methods is not None and request.method not in self._methods:
            return None
        address = request.getClientAddress()
        if self._rule == LOCAL:
            if is_local(getattr(address, "host", None)):
                return None
            return 403, f"the {self._name} is served to this machine only (--{self._name}-access)"
        metadata = {}
        header = request.getHeader(b"authorization")
        if header is not None:
            metadata["authorization"] = header.decode("latin-1")
        transport = getattr(getattr(request, "channel", None), "transport", None)
        found: list[Any] = []
        self._guard.authenticate(metadata, transport).addBoth(found.append)
        if found and isinstance(found[0], str):
            # Who wrote: the registry's per-source limits count it.
            setattr(request, IDENTITY_ATTRIBUTE, found[0])
            return None
        return 401, f"the {self._name} needs a valid token or client certificate"

    def _refuse(self, request: Any, status: int, text: str) -> bytes:
        self.refused += 1
        self._log.info(
            "txgeerpc: {method} {path} from {peer} refused: {text}",
            method=request.method.decode("latin-1"),
            path=request.uri.decode("latin-1"),
            peer=getattr(request.getClientAddress(), "host", "?"),
            text=text,
        )
        request.setResponseCode(status)
        if status == 401:
            request.setHeader(b"www-authenticate", b'Bearer realm="txgeerpc"')
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        return (text + "\n").encode()

    def getChildWithDefault(self, path: bytes, request: Any) -> Resource:
        refused = self._why_refused(request)
        if refused is not None:
            return _Refusal(self, *refused)
        return self._wrapped.getChildWithDefault(path, request)  # type: ignore[no-any-return]

    def render(self, request: Any) -> Any:
        refused = self._why_refused(request)
        if refused is not None:
            return self._refuse(request, *refused)
        return self._wrapped.render(request)


class _Refusal(Resource):
    isLeaf = True

    def __init__(self, guarded: GuardedResource, status: int, text: str) -> None:
        super().__init__()
        self._guarded = guarded
        self._status = status
        self._text = text

    def render(self, request: Any) -> bytes:
        return self._guarded._refuse(request, self._status, self._text)


def guard_path(root: Resource, path: str, rule: str, guard: Guard, name: str, **kw: Any) -> None:
    """Put the resource at ``path`` under ``root`` behind ``rule`` (nothing
    there: nothing to do)."""
    segments = [segment.encode() for segment in path.strip("/").split("/")]
    parent = root
    for segment in segments[:-1]:
        child = parent.children.get(segment)
        if child is None:
            return
        parent = child
    found = parent.children.get(segments[-1])
    if found is not None and rule != OPEN:
        parent.putChild(segments[-1], GuardedResource(found, rule, guard, name, **kw))


class AuthStats(Resource):
    """JSON: the calls the guard refused (by outcome and method), the TLS
    handshakes refused, and how often the files were reloaded."""

    isLeaf = True

    def __init__(self, security: Security, factory: Any) -> None:
        super().__init__()
        self._security = security
        self._factory = factory

    def render_GET(self, request: Any) -> bytes:
        security = self._security
        guard = security.guard
        body = {
            "refused": guard.stats() if guard is not None else {},
            "tls_handshakes_refused": getattr(self._factory, "tls_refused", 0),
            "tls_reloads": security.tls.reloads if security.tls is not None else 0,
        }
        request.setHeader(b"content-type", b"application/json")
        return json.dumps(body, sort_keys=True).encode()


class ReloadOnHangup(Service):
    """While running, ``SIGHUP`` reads the TLS files and the tokens again
    (a mistake keeps the old ones and costs a log line)."""

    _log = Logger()

    def __init__(self, reactor: Any, security: Security) -> None:
        self._reactor = reactor
        self._security = security
        self._previous: Any = None

    def startService(self) -> None:
        super().startService()
        if hasattr(signal, "SIGHUP"):
            self._previous = signal.signal(signal.SIGHUP, self._hangup)

    def stopService(self) -> None:
        super().stopService()
        if hasattr(signal, "SIGHUP") and self._previous is not None:
            signal.signal(signal.SIGHUP, self._previous)
            self._previous = None

    def _hangup(self, signum: int, frame: Any) -> None:
        self._reactor.callFromThread(self.reload)

    def reload(self) -> None:
        """Reload now."""
        security = self._security
        if security.tls is not None:
            try:
                security.tls.reload()
            except TLSConfigError as error:
                self._log.error("txgeerpc: SIGHUP: kept the old TLS certificate: {e}", e=error)
            else:
                self._log.info(
                    "txgeerpc: SIGHUP: reloaded the TLS certificate {path}",
                    path=security.tls.cert_path,
                )
        if security.tokens is not None:
            try:
                security.tokens.reload()
            except ValueError as error:
                self._log.error("txgeerpc: SIGHUP: kept the old tokens: {e}", e=error)
            else:
                self._log.info("txgeerpc: SIGHUP: reloaded the tokens")
