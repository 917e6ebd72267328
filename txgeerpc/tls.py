"""
TLS and mutual TLS for GeeRPC, with Twisted's own TLS (``twisted.internet.ssl``,
``twisted.protocols.tls``): TLS 1.2 or later, certificates checked by
OpenSSL, host names by ``service_identity`` (through ``optionsForClientTLS``).

Server side, :class:`ServerTLS` holds a certificate, its key and, for mutual
TLS, the authority client certificates must come from; :meth:`ServerTLS.reload`
reads the files again (``twistd geerpc`` does it on ``SIGHUP``): new
handshakes use the new certificate, connections already open keep theirs.
The one-port server (``Server.port_factory``) recognises a TLS ClientHello
and serves GeeRPC, ``CONNECT`` and HTTP inside it.

Client side, :class:`ClientTLS` says what to trust (a CA file, else the
system's) and, for mutual TLS, which certificate to present; addresses
``tls@host:port`` (GeeRPC over TLS) and ``https@host:port`` (``CONNECT`` over
TLS) use it (``connect(reactor, "tls@host:port", tls=ClientTLS(ca="ca.crt"))``).
A connection is handed to the GeeRPC client only once its handshake is
complete; a handshake that fails fails the connect with :class:`~txgeerpc.errors.TLSError`,
whose text says why in one line (untrusted, expired, wrong host name...).

Needs pyOpenSSL and service-identity: ``pip install txgeerpc[tls]``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import attrs
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import (
    IHandshakeListener,
    IOpenSSLClientConnectionCreator,
    IOpenSSLServerConnectionCreator,
    IProtocol,
    IProtocolFactory,
    IStreamClientEndpoint,
)
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.python.failure import Failure
from twisted.web.iweb import IPolicyForHTTPS
from zope.interface import implementer

from .errors import TLSConfigError, TLSError

__all__ = [
    "ClientTLS",
    "ServerTLS",
    "TLSClientEndpoint",
    "describe_tls_failure",
    "peer_identity",
]

_PEM_CERTIFICATE = re.compile(
    rb"-----BEGIN CERTIFICATE-----\r?\n.+?\r?\n-----END CERTIFICATE-----", re.DOTALL
)


def _ssl() -> Any:
    try:
        from OpenSSL import SSL, crypto
        from twisted.internet import ssl
    except ImportError:  # pragma: no cover - depends on the environment
        raise TLSConfigError("TLS needs pyOpenSSL: pip install txgeerpc[tls]") from None
    return ssl, SSL, crypto


def _read(path: str, what: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as error:
        raise TLSConfigError(f"cannot read the {what} {path!r}: {error.strerror}") from None


def _certificates(path: str, what: str) -> list[Any]:
    """The certificates in a PEM file (pyOpenSSL ``X509`` objects)."""
    _, _, crypto = _ssl()
    data = _read(path, what)
    found = _PEM_CERTIFICATE.findall(data)
    if not found:
        raise TLSConfigError(f"the {what} {path!r} holds no PEM certificate")
    try:
        return [crypto.load_certificate(crypto.FILETYPE_PEM, pem) for pem in found]
    except crypto.Error as error:
        raise TLSConfigError(f"the {what} {path!r}: {_openssl_text(error)}") from None


def _private_key(path: str) -> Any:
    _, _, crypto = _ssl()
    data = _read(path, "key file")
    try:
        return crypto.load_privatekey(crypto.FILETYPE_PEM, data)
    except crypto.Error as error:
        raise TLSConfigError(
            f"the key file {path!r} holds no usable PEM private key ({_openssl_text(error)})"
        ) from None


def _openssl_text(error: Any) -> str:
    """An OpenSSL error list as short text: its reasons, joined."""
    reasons = []
    for entry in error.args[0] if error.args and isinstance(error.args[0], list) else []:
        if isinstance(entry, tuple) and entry:
            reasons.append(str(entry[-1]))
    return "; ".join(reasons) or str(error) or type(error).__name__


@implementer(IOpenSSLServerConnectionCreator)
class ServerTLS:
    """A server's TLS: its certificate (with any chain after it in the same
    file) and key, and for mutual TLS the authorities whose client
    certificates it accepts.  TLS 1.2 or later.

    :param cert: PEM file: the server's certificate, then its chain.
    :param key: PEM file: its private key (unencrypted).
    :param ca: PEM file of authorities: clients presenting a certificate must
        have one they issued (and it is checked, expiry included).
    :param require_client_cert: refuse clients that present none (needs ``ca``).

    :raises TLSConfigError: a file that cannot be read or used, a key that
        does not match the certificate, ``require_client_cert`` without ``ca``.
    """

    def __init__(
        self,
        cert: str,
        key: str,
        *,
        ca: str | None = None,
        require_client_cert: bool = False,
    ) -> None:
        if require_client_cert and ca is None:
            raise TLSConfigError("requiring client certificates needs a CA file to check them")
        self.cert_path = cert
        self.key_path = key
        self.ca_path = ca
        self.require_client_cert = require_client_cert
        self.reloads = 0
        self._options = self._load()

    def _load(self) -> Any:
        ssl, openssl, _ = _ssl()
        chain = _certificates(self.cert_path, "certificate file")
        key = _private_key(self.key_path)
        extra: dict[str, Any] = {}
        if self.ca_path is not None:
            extra = {
                "verify": True,
                "caCerts": _certificates(self.ca_path, "CA file"),
                "requireCertificate": self.require_client_cert,
            }
        options = ssl.CertificateOptions(
            privateKey=key,
            certificate=chain[0],
            extraCertChain=chain[1:],
            raiseMinimumTo=ssl.TLSVersion.TLSv1_2,
            **extra,
        )
        try:
            options.getContext()  # checks that the key matches the certificate
        except openssl.Error as error:
            raise TLSConfigError(
                f"the key {self.key_path!r} does not go with the certificate "
                f"{self.cert_path!r} ({_openssl_text(error)})"
            ) from None
        return options

    def reload(self) -> None:
        """Read the files again: new handshakes use them, open connections
        keep what they have.  On an error the old certificate stays.

        :raises TLSConfigError: as the constructor.
        """
        self._options = self._load()
        self.reloads += 1

    def serverConnectionForTLS(self, tlsProtocol: Any) -> Any:
        """``IOpenSSLServerConnectionCreator``: a connection with the
        current certificate."""
        _, openssl, _ = _ssl()
        return openssl.Connection(self._options.getContext(), None)


@attrs.frozen
class ClientTLS:
    """What a client trusts and presents.

    :ivar ca: PEM file of the authorities that may issue the server's
        certificate; ``None``: the system's trust store.
    :ivar cert: PEM file of the client certificate (mutual TLS), with ``key``.
    :ivar key: PEM file of its private key.
    :ivar hostname: the name to check the server's certificate against
        (default: the host of the address).
    """

    ca: str | None = None
    cert: str | None = None
    key: str | None = None
    hostname: str | None = None

    def __attrs_post_init__(self) -> None:
        if (self.cert is None) != (self.key is None):
            raise TLSConfigError("a client certificate needs both its certificate and key file")

    def https_policy(self) -> Any:
        """This as a ``twisted.web`` ``IPolicyForHTTPS``, for ``https://``
        URLs (a registry's: :func:`txgeerpc.registry.agent_request`)."""
        return _HTTPSPolicy(self)

    def creator(self, hostname: str) -> Any:
        """``optionsForClientTLS`` for ``hostname`` (checks the chain and the
        name; TLS 1.2 or later).

        :raises TLSConfigError: a file that cannot be read or used.
        """
        ssl, openssl, _ = _ssl()
        trust: Any = None
        if self.ca is not None:
            trust = ssl.trustRootFromCertificates(
                [ssl.Certificate(x509) for x509 in _certificates(self.ca, "CA file")]
            )
        client = None
        if self.cert is not None and self.key is not None:
            chain = _certificates(self.cert, "client certificate file")
            key = _private_key(self.key)
            client = ssl.PrivateCertificate(chain[0])
            client._setPrivateKey(ssl.KeyPair(key))
        name = self.hostname or hostname
        try:
            return ssl.optionsForClientTLS(
                name,
                trustRoot=trust,
                clientCertificate=client,
                extraCertificateOptions={"raiseMinimumTo": ssl.TLSVersion.TLSv1_2},
            )
        except (ValueError, openssl.Error) as error:
            raise TLSConfigError(f"TLS for {name!r}: {error}") from None


@implementer(IPolicyForHTTPS)
class _HTTPSPolicy:
    def __init__(self, settings: ClientTLS) -> None:
        self._settings = settings

    def creatorForNetloc(self, hostname: bytes, port: int) -> Any:
        return self._settings.creator(hostname.decode("ascii"))


# -- the client's handshake-first endpoint ------------------------------------

_VERIFY_RESULTS = {  # OpenSSL's X509_V_ERR_* codes
    9: "it is not valid yet",
    10: "it has expired",
    18: "it is self-signed and not trusted",
    19: "its CA is not trusted",
    20: "its CA is not trusted",
    21: "its CA is not trusted",
    26: "it is not meant for this use",
}


@implementer(IOpenSSLClientConnectionCreator)
class _RecordingCreator:
    """``optionsForClientTLS``'s connections (its context: trust root,
    TLS 1.2+, client certificate, SNI), with a certificate check that also
    records why OpenSSL refused the chain (its handshake error says only
    "certificate verify failed").  The check is Twisted's own: OpenSSL's
    chain verdict, then ``service_identity`` on the leaf for the host name;
    anything unexpected refuses."""

    def __init__(self, creator: Any, hostname: str) -> None:
        from service_identity.hazmat import DNS_ID, IPAddress_ID
        from twisted.internet.abstract import isIPAddress, isIPv6Address

        self._creator = creator
        ip = isIPAddress(hostname) or isIPv6Address(hostname)
        self._identity = IPAddress_ID(hostname) if ip else DNS_ID(hostname)

    def clientConnectionForTLS(self, tlsProtocol: Any) -> Any:
        from service_identity import VerificationError
        from service_identity.hazmat import verify_service_identity
        from service_identity.pyopenssl import extract_patterns

        _, openssl, _ = _ssl()
        connection = self._creator.clientConnectionForTLS(tlsProtocol)
        errors: list[int] = []
        tlsProtocol.verify_errors = errors
        identity = self._identity

        def check(conn: Any, x509: Any, errno: int, depth: int, ok: int) -> bool:
            if not ok:
                errors.append(errno)
                return False
            if depth != 0:
                return True
            try:
                verify_service_identity(extract_patterns(x509), [identity], [])
            except VerificationError:
                tlsProtocol.failVerification(Failure())
                return False
            except BaseException:  # never let an error escape into OpenSSL
                return False
            return True

        connection.set_verify(openssl.VERIFY_PEER | openssl.VERIFY_FAIL_IF_NO_PEER_CERT, check)
        return connection


_ALERTS = (
    ("certificate required", "the server requires a client certificate (none was sent)"),
    ("unknown ca", "the peer does not trust the CA of the certificate sent"),
    ("certificate expired", "the peer refused the certificate sent: it has expired"),
    ("bad certificate", "the peer refused the certificate sent"),
    ("certificate unknown", "the peer refused the certificate sent"),
    ("protocol version", "no TLS version in common (TLS 1.2 or later is needed)"),
    ("wrong version number", "the peer does not speak TLS"),
    ("handshake failure", "the handshake failed (no cipher or version in common?)"),
)


def describe_tls_failure(reason: Any, verify_errors: Sequence[int] = (), hostname: str = "") -> str:
    """A handshake's failure as a short phrase (no traceback).

    :param reason: the exception (or Failure) the TLS layer reported.
    :param verify_errors: OpenSSL's codes for what was wrong with the
        server's certificate, if it was refused.
    :param hostname: the name the server's certificate was checked against.
    """
    error = reason.value if isinstance(reason, Failure) else reason
    name = type(error).__name__
    if name == "VerificationError":  # service_identity: the host name does not match
        return f"the server's certificate is not valid for the host name {hostname!r}"
    text = _openssl_text(error) if name == "Error" else str(error) or name
    lowered = text.lower()
    if "certificate verify failed" in lowered:
        why = next((_VERIFY_RESULTS[c] for c in verify_errors if c in _VERIFY_RESULTS), None)
        return "the server's certificate was refused" + (f": {why}" if why else "")
    for marker, phrase in _ALERTS:
        if marker in lowered:
            return f"{phrase} ({text})"
    if name in ("ConnectionDone", "ConnectionLost"):
        return "the connection closed during the handshake (a peer that does not speak TLS?)"
    return text


@implementer(IHandshakeListener)
class _HandshakeFirst(Protocol):
    """Between the TLS layer and the application protocol: connects the
    application only once the handshake is complete."""

    transport: Any

    def __init__(
        self, factory: IProtocolFactory, waiting: Deferred[Any], settings: Any, hostname: str
    ) -> None:
        self._factory = factory
        self._settings = settings
        self._hostname = hostname
        self._waiting: Deferred[Any] | None = waiting
        self._inner: IProtocol | None = None

    def handshakeCompleted(self) -> None:
        inner = self._factory.buildProtocol(self.transport.getPeer())
        waiting, self._waiting = self._waiting, None
        if inner is None or waiting is None:
            self.transport.abortConnection()
            return
        self._inner = inner
        inner.makeConnection(self.transport)
        waiting.callback(inner)

    def dataReceived(self, data: bytes) -> None:
        if self._inner is not None:
            self._inner.dataReceived(data)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        errors = getattr(self.transport, "verify_errors", ())
        waiting, self._waiting = self._waiting, None
        if waiting is not None:
            waiting.errback(TLSError(describe_tls_failure(reason, errors, self._hostname)))
            return
        if self._inner is not None:
            if not reason.check(ConnectionDone):
                # Refused after the client's side of the handshake (TLS 1.3
                # checks a client certificate then): say why in one line.
                reason = Failure(TLSError(describe_tls_failure(reason)))
            self._inner.connectionLost(reason)


@implementer(IStreamClientEndpoint)
class TLSClientEndpoint:
    """TLS over another client endpoint; :meth:`connect` fires with the
    application protocol once the handshake is complete.

    :param wrapped: the endpoint to the server (TCP...).
    :param settings: the :class:`ClientTLS`.
    :param hostname: the server's host name (its certificate must name it,
        unless ``settings.hostname`` says another).
    :param clock: for TLS's write aggregation (the reactor).

    :raises TLSConfigError: ``settings``' files cannot be used.
    """

    def __init__(
        self, wrapped: IStreamClientEndpoint, settings: ClientTLS, hostname: str, clock: Any = None
    ) -> None:
        self._wrapped = wrapped
        self._settings = settings
        self._hostname = settings.hostname or hostname
        self._creator = _RecordingCreator(settings.creator(hostname), self._hostname)
        self._clock = clock

    def connect(self, protocolFactory: IProtocolFactory) -> Deferred[Any]:
        """Connect, handshake, then build the application protocol.

        :returns: a Deferred firing with that protocol, or failing with the
            wrapped endpoint's error or :class:`~txgeerpc.errors.TLSError`
            (the handshake failed; its text says why).  Cancelling it closes
            the connection.
        """
        from twisted.protocols.tls import TLSMemoryBIOFactory

        connected: list[Any] = []

        def cancel(_: Deferred[Any]) -> None:
            connecting.cancel()
            for tls in connected:
                tls.abortConnection()

        waiting: Deferred[Any] = Deferred(cancel)
        inner_factory = Factory.forProtocol(
            lambda: _HandshakeFirst(protocolFactory, waiting, self._settings, self._hostname)
        )
        tls_factory = TLSMemoryBIOFactory(self._creator, True, inner_factory, self._clock)
        connecting = self._wrapped.connect(tls_factory)

        def failed(failure: Failure) -> None:
            if not waiting.called:
                waiting.errback(failure)

        connecting.addCallbacks(connected.append, failed)
        return waiting


def peer_identity(transport: Any) -> str | None:
    """The identity in the client certificate a TLS connection presented
    (and the server verified): its subject's common name, else its first
    DNS or URI subject alternative name; ``None`` without one."""
    get = getattr(transport, "getPeerCertificate", None)
    if get is None:
        return None
    try:
        x509 = get()
    except Exception:
        return None
    if x509 is None:
        return None
    common_name = x509.get_subject().CN
    if common_name:
        return str(common_name)
    try:
        from cryptography import x509 as cx509

        names = (
            x509.to_cryptography()
            .extensions.get_extension_for_class(cx509.SubjectAlternativeName)
            .value
        )
        for value in names.get_values_for_type(cx509.DNSName) + names.get_values_for_type(
            cx509.UniformResourceIdentifier
        ):
            return str(value)
    except Exception:
        return None
    return None
