"""
``twistd geerpc --log-max-files N``: twistd's ``--logfile`` rotates at 1 MB
and keeps every rotated file; this keeps the newest ``N``.

twistd asks the application for an ``ILogObserver`` before it opens its own
log file (``AppLogger.start``).  The service ``makeService`` returns is given
the application as its parent (``setServiceParent``): :class:`LogRotation`
sets that component there, a text observer on a
:class:`twisted.python.logfile.LogFile` with ``maxRotatedFiles``, exactly when
twistd would have written to a file itself (not ``--logfile -``, not
``--nodaemon`` without ``--logfile``, not ``--syslog``, not ``--logger``).
SIGUSR1 rotates it, as it does twistd's.
"""

from __future__ import annotations

import signal
from collections.abc import Mapping
from typing import Any

from twisted.application.service import MultiService
from twisted.logger import ILogObserver, textFileLogObserver
from twisted.python.components import Componentized
from twisted.python.logfile import LogFile

DEFAULT_LOG_MAX_FILES = 10
"""Rotated log files kept by default (besides the current one)."""


def log_path(twistd_options: Mapping[str, Any] | None) -> str | None:
    """The file twistd would log to with these options, or ``None`` when it
    would not log to a file of its own choosing."""
    if twistd_options is None:
        return None
    name = twistd_options.get("logfile") or ""
    if twistd_options.get("logger") or twistd_options.get("syslog") or name == "-":
        return None
    if not name:
        if twistd_options.get("nodaemon"):
            return None  # twistd -n logs to stdout
        name = "twistd.log"
    return str(name)


class LogRotation(MultiService):
    """Holds the service twistd runs; as the application's child, makes the
    application log to ``path`` keeping ``max_files`` rotated files."""

    def __init__(self, service: Any, path: str, max_files: int, reactor: Any) -> None:
        super().__init__()
        self.reactor = reactor
        self.path = path
        self.max_files = max_files
        self.log_file: LogFile | None = None
        service.setServiceParent(self)

    def setServiceParent(self, parent: Any) -> None:
        if isinstance(parent, Componentized) and parent.getComponent(ILogObserver) is None:
            self.log_file = LogFile.fromFullPath(self.path, maxRotatedFiles=self.max_files)
            parent.setComponent(ILogObserver, textFileLogObserver(self.log_file))  # type: ignore[arg-type]
            _rotate_on_sigusr1(self.log_file, self.reactor)
        super().setServiceParent(parent)


def _rotate_on_sigusr1(log_file: LogFile, reactor: Any) -> None:
    if not hasattr(signal, "SIGUSR1") or signal.getsignal(signal.SIGUSR1):
        return  # what twistd does: never replace a handler someone set

    def rotate(signum: int, frame: Any) -> None:
        reactor.callFromThread(log_file.rotate)

    signal.signal(signal.SIGUSR1, rotate)
