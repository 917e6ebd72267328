"""
Certificates for tests and demos, made with ``cryptography`` (no openssl
command): a certificate authority, server certificates for host names and IP
addresses, client certificates for identities, expired ones, all written as
PEM files.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from collections.abc import Sequence
from typing import Any

import attrs

_ONE_DAY = datetime.timedelta(days=1)


def _crypto() -> Any:
    try:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509 import oid
    except ImportError:  # pragma: no cover - depends on the environment
        raise ImportError(
            "txgeerpc.testing.CertificateAuthority needs cryptography: pip install txgeerpc[tls]"
        ) from None
    return x509, hashes, serialization, ec, oid.ExtendedKeyUsageOID, oid.NameOID


@attrs.frozen
class IssuedCertificate:
    """A certificate and its key, as PEM bytes, and where they were written
    (if :meth:`write` was called).

    :ivar cert: the certificate, PEM.
    :ivar key: its private key, PEM (unencrypted).
    """

    cert: bytes
    key: bytes

    def write(self, directory: str, name: str) -> tuple[str, str]:
        """Write ``NAME.crt`` and ``NAME.key`` into ``directory``.

        :returns: their paths (certificate, key).
        """
        cert_path = os.path.join(directory, f"{name}.crt")
        key_path = os.path.join(directory, f"{name}.key")
        with open(cert_path, "wb") as f:
            f.write(self.cert)
        fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(self.key)
        return cert_path, key_path


class CertificateAuthority:
    """A throwaway certificate authority (ECDSA P-256 keys: fast to make).

    Example::

        ca = CertificateAuthority("test CA")
        ca.write_cert("ca.crt")
        ca.issue_server(["localhost", "127.0.0.1"]).write(".", "server")
        ca.issue_client("alice").write(".", "alice")

    :ivar cert: the authority's own certificate, PEM (the file clients and
        servers trust: ``--tls-ca``).
    """

    def __init__(self, name: str = "txgeerpc test CA", *, now: datetime.datetime | None = None):
        x509, hashes, serialization, ec, _, name_oid = _crypto()
        self._now = now or datetime.datetime.now(datetime.timezone.utc)
        self._key = ec.generate_private_key(ec.SECP256R1())
        self._name = x509.Name([x509.NameAttribute(name_oid.COMMON_NAME, name)])
        certificate = (
            x509.CertificateBuilder()
            .subject_name(self._name)
            .issuer_name(self._name)
            .public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(self._now - _ONE_DAY)
            .not_valid_after(self._now + 3650 * _ONE_DAY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(self._key.public_key()), critical=False
            )
            .sign(self._key, hashes.SHA256())
        )
        self._certificate = certificate
        self.cert: bytes = certificate.public_bytes(serialization.Encoding.PEM)

    def write_cert(self, path: str) -> str:
        """Write the authority's certificate (PEM) to ``path``; returns ``path``."""
        with open(path, "wb") as f:
            f.write(self.cert)
        return path

    def issue_server(
        self, names: Sequence[str] = ("localhost", "127.0.0.1"), *, expired: bool = False
    ) -> IssuedCertificate:
        """A server certificate for ``names`` (DNS names and IP addresses,
        as subject alternative names; the first is also the common name)."""
        return self._issue(names[0], names, server=True, expired=expired)

    def issue_client(self, identity: str, *, expired: bool = False) -> IssuedCertificate:
        """A client certificate whose common name is ``identity``."""
        return self._issue(identity, (), server=False, expired=expired)

    def _issue(
        self, common_name: str, names: Sequence[str], *, server: bool, expired: bool
    ) -> IssuedCertificate:
        x509, hashes, serialization, ec, usage_oid, name_oid = _crypto()
        key = ec.generate_private_key(ec.SECP256R1())
        if expired:
            not_before, not_after = self._now - 30 * _ONE_DAY, self._now - _ONE_DAY
        else:
            not_before, not_after = self._now - _ONE_DAY, self._now + 825 * _ONE_DAY
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(name_oid.COMMON_NAME, common_name)]))
            .issuer_name(self._name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.ExtendedKeyUsage([usage_oid.SERVER_AUTH if server else usage_oid.CLIENT_AUTH]),
                critical=False,
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()),
                critical=False,
            )
        )
        alternatives: list[Any] = []
        for name in names:
            try:
                alternatives.append(x509.IPAddress(ipaddress.ip_address(name)))
            except ValueError:
                alternatives.append(x509.DNSName(name))
        if alternatives:
            builder = builder.add_extension(
                x509.SubjectAlternativeName(alternatives), critical=False
            )
        certificate = builder.sign(self._key, hashes.SHA256())
        return IssuedCertificate(
            cert=certificate.public_bytes(serialization.Encoding.PEM),
            key=key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ),
        )


__all__ = ["CertificateAuthority", "IssuedCertificate"]
