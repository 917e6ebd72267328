"""
The etcd options ``twistd geerpc`` and ``twistd geerpc-registry`` share:
where the cluster is, the key prefix, TLS files and auth credentials.
"""

from __future__ import annotations

import math
import os
from typing import Any

from twisted.python import usage

from .etcd import DEFAULT_PREFIX, DEFAULT_REQUEST_TIMEOUT, EtcdClient, EtcdTLS, normalize_endpoints

PASSWORD_ENVIRONMENT = "GEERPC_ETCD_PASSWORD"

PARAMETERS: list[list[Any]] = [
    [
        "etcd",
        None,
        None,
        "etcd v3 cluster: its members' client URLs, comma-separated "
        "(e.g. http://127.0.0.1:2379,http://127.0.0.1:22379).",
    ],
    ["etcd-prefix", None, DEFAULT_PREFIX, "etcd key prefix of the servers' entries."],
    [
        "etcd-timeout",
        None,
        DEFAULT_REQUEST_TIMEOUT,
        "Seconds one etcd member has to answer one request (then the next is asked; "
        "a lease renewal gives up sooner, within a third of --ttl, and its retry goes "
        "to the next member).",
        float,
    ],
    ["etcd-ca", None, None, "PEM file of the CA that signed the etcd members' certificates."],
    ["etcd-cert", None, None, "PEM client certificate for etcd (with --etcd-key)."],
    ["etcd-key", None, None, "PEM private key of --etcd-cert."],
    [
        "etcd-user",
        None,
        None,
        "etcd auth user name (password: --etcd-password-file or $" + PASSWORD_ENVIRONMENT + ").",
    ],
    ["etcd-password-file", None, None, "File holding the etcd user's password."],
]


def check(config: usage.Options) -> None:
    """Validate the etcd options of ``config`` (in its ``postOptions``).

    :raises usage.UsageError: with what is wrong.
    """
    etcd_only = [
        name
        for name in ("etcd-ca", "etcd-cert", "etcd-key", "etcd-user", "etcd-password-file")
        if config[name] is not None
    ]
    if not config["etcd"]:
        if etcd_only:
            raise usage.UsageError(f"--{etcd_only[0]} needs --etcd")
        return
    tls = any(config[name] is not None for name in ("etcd-ca", "etcd-cert", "etcd-key"))
    try:
        config["etcd"] = normalize_endpoints(config["etcd"], tls=tls)
    except ValueError as error:
        raise usage.UsageError(f"--etcd: {error}") from None
    if not config["etcd-prefix"]:
        raise usage.UsageError("--etcd-prefix must not be empty")
    if not (math.isfinite(config["etcd-timeout"]) and config["etcd-timeout"] > 0):
        raise usage.UsageError(
            f"--etcd-timeout must be a finite number more than 0, not {config['etcd-timeout']}"
        )
    if (config["etcd-cert"] is None) != (config["etcd-key"] is None):
        raise usage.UsageError("--etcd-cert and --etcd-key go together")
    for name in ("etcd-ca", "etcd-cert", "etcd-key", "etcd-password-file"):
        if config[name] is not None and not os.path.isfile(config[name]):
            raise usage.UsageError(f"--{name} {config[name]!r}: no such file")
    config["etcd-tls"] = None
    if tls:
        _check_tls(config["etcd-ca"], config["etcd-cert"], config["etcd-key"])
        config["etcd-tls"] = EtcdTLS(config["etcd-ca"], config["etcd-cert"], config["etcd-key"])
    password = None
    if config["etcd-password-file"] is not None:
        with open(config["etcd-password-file"], encoding="utf-8") as file:
            password = file.read().rstrip("\r\n")
    elif config["etcd-user"] is not None:
        password = os.environ.get(PASSWORD_ENVIRONMENT)
    if config["etcd-user"] is None and password is not None and config["etcd-password-file"]:
        raise usage.UsageError("--etcd-password-file needs --etcd-user")
    if config["etcd-user"] is not None and password is None:
        raise usage.UsageError(
            f"--etcd-user needs a password: --etcd-password-file or ${PASSWORD_ENVIRONMENT}"
        )
    config["etcd-password"] = password


def _check_tls(ca: str | None, cert: str | None, key: str | None) -> None:
    """Load the TLS files as the client will, so that a bad one is a usage
    error naming it rather than a traceback when the service is made.

    :raises usage.UsageError: a file that is not what it should be, or a key
        that is not the certificate's.
    """
    try:
        from OpenSSL import crypto
        from twisted.internet import ssl
        from twisted.internet.error import VerifyError
    except ImportError as error:  # Twisted without its [tls] extra
        raise usage.UsageError(f"etcd over TLS needs pyOpenSSL: {error}") from None

    def load(name: str, path: str, what: str, loader: Any) -> None:
        try:
            with open(path, "rb") as file:
                loader(file.read())
        except crypto.Error as error:
            raise usage.UsageError(f"--{name} {path!r}: not {what} ({_reasons(error)})") from None
        except (OSError, ValueError) as error:
            raise usage.UsageError(f"--{name} {path!r}: {error}") from None

    if ca is not None:
        load("etcd-ca", ca, "a PEM certificate", ssl.Certificate.loadPEM)
    if cert is not None and key is not None:
        load("etcd-cert", cert, "a PEM certificate", ssl.Certificate.loadPEM)
        load(
            "etcd-key",
            key,
            "a PEM private key",
            lambda data: ssl.KeyPair.load(data, crypto.FILETYPE_PEM),
        )
    try:
        EtcdTLS(ca=ca, cert=cert, key=key).policy()
    except (crypto.Error, VerifyError, OSError, ValueError) as error:
        # Each file loaded well alone: the key is not the certificate's.
        files = f"--etcd-cert {cert!r} and --etcd-key {key!r}" if cert else f"--etcd-ca {ca!r}"
        why = _reasons(error) if isinstance(error, crypto.Error) else str(error)
        raise usage.UsageError(f"{files}: {why}") from None


def _reasons(error: Exception) -> str:
    """What an ``OpenSSL.crypto.Error`` says, readably."""
    found = [
        f"{entry[0]}: {entry[2]}" if entry[0] else str(entry[2])
        for entry in (error.args[0] if error.args and isinstance(error.args[0], list) else [])
        if isinstance(entry, tuple) and len(entry) == 3
    ]
    return "; ".join(found) or str(error) or type(error).__name__


def client(config: usage.Options, reactor: Any) -> EtcdClient:
    """The :class:`EtcdClient` the (checked) options describe."""
    return EtcdClient(
        reactor,
        config["etcd"],
        request_timeout=config["etcd-timeout"],
        username=config["etcd-user"],
        password=config.get("etcd-password"),
        tls=config.get("etcd-tls"),
    )
