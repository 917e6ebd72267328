"""
The etcd options ``twistd geerpc`` and ``twistd geerpc-registry`` share:
where the cluster is, the key prefix, TLS files and auth credentials.
"""

from __future__ import annotations

import os
from typing import Any

from twisted.python import usage

from ._client import DEFAULT_REQUEST_TIMEOUT, EtcdClient, EtcdTLS, normalize_endpoints
from ._keys import DEFAULT_PREFIX

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
        "Seconds one etcd member has to answer one request (then the next is asked).",
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
    if config["etcd-timeout"] <= 0:
        raise usage.UsageError("--etcd-timeout must be more than 0")
    if (config["etcd-cert"] is None) != (config["etcd-key"] is None):
        raise usage.UsageError("--etcd-cert and --etcd-key go together")
    for name in ("etcd-ca", "etcd-cert", "etcd-key", "etcd-password-file"):
        if config[name] is not None and not os.path.isfile(config[name]):
            raise usage.UsageError(f"--{name} {config[name]!r}: no such file")
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


def client(config: usage.Options, reactor: Any) -> EtcdClient:
    """The :class:`EtcdClient` the (checked) options describe."""
    tls = None
    if any(config[name] is not None for name in ("etcd-ca", "etcd-cert", "etcd-key")):
        tls = EtcdTLS(ca=config["etcd-ca"], cert=config["etcd-cert"], key=config["etcd-key"])
    return EtcdClient(
        reactor,
        config["etcd"],
        request_timeout=config["etcd-timeout"],
        username=config["etcd-user"],
        password=config.get("etcd-password"),
        tls=tls,
    )
