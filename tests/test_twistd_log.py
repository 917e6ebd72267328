"""
``twistd geerpc --log-max-files``: twistd's log file keeps a bounded number of
rotated files (issue 13, item 2).
"""

from __future__ import annotations

import os
import tempfile

from twisted.application.service import Application, IServiceCollection
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import ILogObserver, Logger
from twisted.scripts.twistd import ServerOptions
from twisted.trial.unittest import SynchronousTestCase

from txgeerpc import tap
from txgeerpc._twistd_log import DEFAULT_LOG_MAX_FILES, LogRotation, log_path


def twistd_options(*argv: str, geerpc: tuple[str, ...] = ()) -> ServerOptions:
    """twistd's own options, parsed as ``twistd ARGV geerpc --listen tcp:0 GEERPC``."""
    options = ServerOptions()
    options.parseOptions([*argv, "geerpc", "--listen", "tcp:0:interface=127.0.0.1", *geerpc])
    return options


class LogPathTests(SynchronousTestCase):
    def test_where_twistd_would_write_a_file(self) -> None:
        self.assertEqual(log_path(twistd_options("--logfile=a.log")), "a.log")
        self.assertEqual(log_path(twistd_options()), "twistd.log")  # daemon default
        self.assertEqual(log_path(twistd_options("-n", "--logfile=a.log")), "a.log")

    def test_not_a_file_of_its_own(self) -> None:
        self.assertIsNone(log_path(twistd_options("-n")))  # stdout
        self.assertIsNone(log_path(twistd_options("--logfile=-")))
        self.assertIsNone(log_path(twistd_options("--syslog")))
        self.assertIsNone(log_path(None))  # not run by twistd


class LogRotationTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.directory = tempfile.mkdtemp()
        self.path = os.path.join(self.directory, "geerpc.log")

    def tearDown(self) -> None:
        for name in os.listdir(self.directory):
            os.unlink(os.path.join(self.directory, name))
        os.rmdir(self.directory)

    def test_make_service_wraps_with_the_default(self) -> None:
        options = twistd_options(f"--logfile={self.path}")
        service = tap.makeService(options.subOptions, MemoryReactorClock())
        assert isinstance(service, LogRotation)
        self.assertEqual((service.path, service.max_files), (self.path, DEFAULT_LOG_MAX_FILES))
        self.assertEqual(DEFAULT_LOG_MAX_FILES, 10)
        stdout = twistd_options("-n")
        self.assertNotIsInstance(
            tap.makeService(stdout.subOptions, MemoryReactorClock()), LogRotation
        )

    def test_keeps_only_max_files_rotated_files(self) -> None:
        options = twistd_options(f"--logfile={self.path}", geerpc=("--log-max-files", "2"))
        service = tap.makeService(options.subOptions, MemoryReactorClock())
        assert isinstance(service, LogRotation)
        application = Application("geerpc")
        service.setServiceParent(application)  # what twistd does with it
        self.assertIn(service, list(IServiceCollection(application)))
        observer = application.getComponent(ILogObserver)
        assert service.log_file is not None
        self.addCleanup(service.log_file.close)
        log = Logger(observer=observer)
        for n in range(6):
            log.info("line {n}", n=n)
            service.log_file.rotate()  # as at 1 MB, or on SIGUSR1
        log.info("last line")
        service.log_file.flush()
        self.assertEqual(
            sorted(os.listdir(self.directory)), ["geerpc.log", "geerpc.log.1", "geerpc.log.2"]
        )
        with open(self.path + ".1") as newest_rotated:
            self.assertIn("line 5", newest_rotated.read())
        with open(self.path) as current:
            self.assertIn("last line", current.read())
