"""
The ZooKeeper options ``twistd geerpc`` and ``twistd geerpc-registry`` share:
where the ensemble is, the prefix, the session timeout, digest credentials
and TLS files.
"""

from __future__ import annotations

import math
import os
from typing import Any

from twisted.python import usage

PASSWORD_ENVIRONMENT = "GEERPC_ZOOKEEPER_PASSWORD"
DEFAULT_PREFIX = "/geerpc/servers/"
DEFAULT_SESSION_TIMEOUT = 10.0
DEFAULT_REQUEST_TIMEOUT = 5.0

PARAMETERS: list[list[Any]] = [
    [
        "zookeeper",
        None,
        None,
        "ZooKeeper ensemble: HOST:PORT,HOST:PORT,... (pip install txgeerpc[zookeeper]).",
    ],
    ["zookeeper-prefix", None, DEFAULT_PREFIX, "ZooKeeper path of the servers' entries."],
    [
        "zookeeper-session-timeout",
        None,
        DEFAULT_SESSION_TIMEOUT,
        "Seconds the ZooKeeper session outlives this process when it stops answering: "
        "a server registered with --zookeeper leaves within it when killed "
        "(the ensemble bounds it: 2 to 20 ticks by default).",
        float,
    ],
    [
        "zookeeper-timeout",
        None,
        DEFAULT_REQUEST_TIMEOUT,
        "Seconds one ZooKeeper request has to be answered.",
        float,
    ],
    [
        "zookeeper-user",
        None,
        None,
        "ZooKeeper digest auth user (password: --zookeeper-password-file or $"
        + PASSWORD_ENVIRONMENT
        + "); nodes are created writable by this user only, readable by anyone.",
    ],
    ["zookeeper-password-file", None, None, "File holding the ZooKeeper user's password."],
    ["zookeeper-ca", None, None, "PEM CA of the ZooKeeper servers' certificates (TLS)."],
    ["zookeeper-cert", None, None, "PEM client certificate for ZooKeeper (with --zookeeper-key)."],
    ["zookeeper-key", None, None, "PEM private key of --zookeeper-cert."],
]

_ONLY = (
    "zookeeper-user",
    "zookeeper-password-file",
    "zookeeper-ca",
    "zookeeper-cert",
    "zookeeper-key",
)


def check(config: usage.Options) -> None:
    """Validate the ZooKeeper options of ``config`` (in its ``postOptions``).

    :raises usage.UsageError: with what is wrong.
    """
    given = [name for name in _ONLY if config[name] is not None]
    if not config["zookeeper"]:
        if given:
            raise usage.UsageError(f"--{given[0]} needs --zookeeper")
        return
    if config.get("etcd"):
        raise usage.UsageError("--etcd and --zookeeper: keep the entries in one of them")
    from .zookeeper import check_prefix, normalize_hosts

    try:
        config["zookeeper"] = normalize_hosts(config["zookeeper"])
        config["zookeeper-prefix"] = check_prefix(config["zookeeper-prefix"])
    except ValueError as error:
        raise usage.UsageError(f"--zookeeper: {error}") from None
    for name in ("zookeeper-session-timeout", "zookeeper-timeout"):
        if not (math.isfinite(config[name]) and config[name] > 0):
            raise usage.UsageError(f"--{name} must be a finite number more than 0")
    if (config["zookeeper-cert"] is None) != (config["zookeeper-key"] is None):
        raise usage.UsageError("--zookeeper-cert and --zookeeper-key go together")
    for name in ("zookeeper-ca", "zookeeper-cert", "zookeeper-key", "zookeeper-password-file"):
        if config[name] is not None and not os.path.isfile(config[name]):
            raise usage.UsageError(f"--{name} {config[name]!r}: no such file")
    password = None
    if config["zookeeper-password-file"] is not None:
        if config["zookeeper-user"] is None:
            raise usage.UsageError("--zookeeper-password-file needs --zookeeper-user")
        with open(config["zookeeper-password-file"], encoding="utf-8") as file:
            password = file.read().rstrip("\r\n")
    elif config["zookeeper-user"] is not None:
        password = os.environ.get(PASSWORD_ENVIRONMENT)
        if password is None:
            raise usage.UsageError(
                "--zookeeper-user needs a password: --zookeeper-password-file or "
                f"${PASSWORD_ENVIRONMENT}"
            )
    config["zookeeper-password"] = password
    try:
        import kazoo  # noqa: F401
    except ImportError:
        raise usage.UsageError("--zookeeper needs kazoo: pip install txgeerpc[zookeeper]") from None


def client(config: usage.Options, reactor: Any) -> Any:
    """The :class:`~txgeerpc.zookeeper.ZooKeeperClient` the (checked)
    options describe."""
    from .zookeeper import ZooKeeperClient, ZooKeeperTLS

    tls = None
    if any(config[name] for name in ("zookeeper-ca", "zookeeper-cert", "zookeeper-key")):
        tls = ZooKeeperTLS(
            config["zookeeper-ca"], config["zookeeper-cert"], config["zookeeper-key"]
        )
    return ZooKeeperClient(
        reactor,
        config["zookeeper"],
        session_timeout=config["zookeeper-session-timeout"],
        request_timeout=config["zookeeper-timeout"],
        username=config["zookeeper-user"],
        password=config.get("zookeeper-password"),
        tls=tls,
    )
