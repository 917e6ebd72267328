"""
``python -m txgeerpc call REGISTRY_URL``: the servers a registry lists are
tried in random order, passing over those that cannot be connected to
(nothing was sent to them, so that is safe for any method).
"""

from __future__ import annotations

import contextlib
import io
from typing import Any

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.error import ConnectionRefusedError
from twisted.trial.unittest import SynchronousTestCase

from txgeerpc._cli import _addresses, _connect_first
from txgeerpc.errors import (
    CallTimeout,
    ConnectFailed,
    ConnectTimeout,
    InvalidAddress,
    NoServers,
)


class _FakeConnect:
    """``connect`` that fails (or succeeds) per address, recording the tries."""

    def __init__(self, outcomes: dict[str, Exception | None]) -> None:
        self.outcomes = outcomes
        self.tried: list[str] = []

    def __call__(self, address: str) -> Deferred[Any]:
        self.tried.append(address)
        outcome = self.outcomes[address]
        return fail(outcome) if outcome is not None else succeed(f"client of {address}")


class ConnectFirstTests(SynchronousTestCase):
    def run_connect(self, addresses: list[str], fake: _FakeConnect) -> tuple[Deferred[Any], str]:
        stderr = io.StringIO()
        with contextlib.redirect_stderr(stderr):
            d = Deferred.fromCoroutine(_connect_first(addresses, fake))
        return d, stderr.getvalue()

    def test_servers_that_cannot_be_reached_are_passed_over(self) -> None:
        fake = _FakeConnect(
            {
                "tcp@dead:1": ConnectFailed(ConnectionRefusedError()),
                "tcp@slow:2": ConnectTimeout(5),
                "tcp@odd": InvalidAddress("wrong format 'tcp@odd'"),
                "tcp@live:3": None,
                "tcp@never:4": None,
            }
        )
        d, stderr = self.run_connect(
            ["tcp@dead:1", "tcp@slow:2", "tcp@odd", "tcp@live:3", "tcp@never:4"], fake
        )
        self.assertEqual(self.successResultOf(d), "client of tcp@live:3")
        self.assertEqual(fake.tried, ["tcp@dead:1", "tcp@slow:2", "tcp@odd", "tcp@live:3"])
        notes = stderr.splitlines()
        self.assertEqual(len(notes), 3, stderr)
        for note, address in zip(notes, ["tcp@dead:1", "tcp@slow:2", "tcp@odd"], strict=True):
            self.assertTrue(note.startswith(f"note: {address}: "), note)
            self.assertTrue(note.endswith("; trying the next server"), note)

    def test_when_none_can_be_reached_the_last_error_is_reported(self) -> None:
        refused = ConnectFailed(ConnectionRefusedError())
        late = ConnectTimeout(5)
        fake = _FakeConnect({"tcp@a:1": refused, "tcp@b:2": late})
        d, stderr = self.run_connect(["tcp@a:1", "tcp@b:2"], fake)
        self.assertIs(self.failureResultOf(d, ConnectTimeout).value, late)
        self.assertEqual(len(stderr.splitlines()), 1)  # a note for the first only
        # One address (not from a registry): its error, and no note.
        d, stderr = self.run_connect(["tcp@a:1"], fake)
        self.assertIs(self.failureResultOf(d, ConnectFailed).value, refused)
        self.assertEqual(stderr, "")
        self.failureResultOf(self.run_connect([], fake)[0], NoServers)

    def test_other_errors_are_not_failed_over(self) -> None:
        fake = _FakeConnect({"tcp@a:1": CallTimeout("x", 1), "tcp@b:2": None})
        d, _ = self.run_connect(["tcp@a:1", "tcp@b:2"], fake)
        self.failureResultOf(d, CallTimeout)
        self.assertEqual(fake.tried, ["tcp@a:1"])


class AddressesTests(SynchronousTestCase):
    def test_an_address_is_itself(self) -> None:
        d = Deferred.fromCoroutine(_addresses(None, "tcp@127.0.0.1:7001"))
        self.assertEqual(self.successResultOf(d), ["tcp@127.0.0.1:7001"])


class ServersUsageTests(SynchronousTestCase):
    """``servers`` lists a registry or etcd: exactly one of them."""

    def test_a_registry_or_etcd_is_needed_and_not_both(self) -> None:
        from txgeerpc._cli import _servers, build_parser

        for argv in (["servers"], ["servers", "http://127.0.0.1:1/r", "--etcd", "127.0.0.1:2"]):
            options = build_parser().parse_args(argv)
            stderr = io.StringIO()
            with contextlib.redirect_stderr(stderr):
                d = Deferred.fromCoroutine(_servers(None, options))
            self.assertEqual(self.successResultOf(d), 2, argv)
            self.assertIn("a REGISTRY_URL or --etcd", stderr.getvalue())

    def test_a_bad_etcd_endpoint_is_a_usage_error(self) -> None:
        from txgeerpc._cli import _servers, build_parser

        options = build_parser().parse_args(["servers", "--etcd", "ftp://127.0.0.1:2"])
        stderr = io.StringIO()
        with contextlib.redirect_stderr(stderr):
            d = Deferred.fromCoroutine(_servers(None, options))
        self.assertEqual(self.successResultOf(d), 2)
        self.assertIn("expected http:// or https://", stderr.getvalue())


class ServersWaitTests(SynchronousTestCase):
    """``servers --wait N``: asks again until N servers are listed, within --timeout."""

    def run_servers(self, listings: list[dict[str, Any]], *argv: str) -> tuple[Any, Any, str]:
        import argparse

        from twisted.internet.task import Clock

        from txgeerpc import _cli

        clock = Clock()
        asked: list[float] = []

        async def listing(reactor: Any, options: argparse.Namespace) -> dict[str, Any]:
            asked.append(reactor.seconds())
            return listings[min(len(asked), len(listings)) - 1]

        self.patch(_cli, "_registry_servers", listing)
        options = _cli.build_parser().parse_args(["servers", "http://127.0.0.1:1/r", *argv])
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            d = Deferred.fromCoroutine(_cli._servers(clock, options))
            while clock.getDelayedCalls():
                clock.advance(_cli.WAIT_INTERVAL)
        return self.successResultOf(d), asked, out.getvalue() + err.getvalue()

    def test_asks_until_enough_are_listed(self) -> None:
        one, two = {"tcp@a:1": 0.1}, {"tcp@a:1": 0.3, "tcp@b:2": 0.1}
        status, asked, printed = self.run_servers([{}, one, two], "--wait", "2")
        self.assertEqual(status, 0)
        self.assertEqual(len(asked), 3)
        self.assertEqual(
            printed, "tcp@a:1  (last heartbeat 0.3s ago)\ntcp@b:2  (last heartbeat 0.1s ago)\n"
        )

    def test_gives_up_after_the_timeout(self) -> None:
        status, asked, printed = self.run_servers([{"tcp@a:1": 0}], "--wait", "2", "--timeout", "1")
        self.assertEqual(status, 1)
        self.assertLessEqual(asked[-1], 1.0)
        self.assertEqual(printed, "error: 1 servers listed, not 2, after 1s\n")

    def test_without_wait_one_listing(self) -> None:
        status, asked, _ = self.run_servers([{"tcp@a:1": 0}])
        self.assertEqual((status, len(asked)), (0, 1))

    def test_an_empty_listing_says_so(self) -> None:
        status, asked, printed = self.run_servers([{}])
        self.assertEqual(
            (status, len(asked), printed),
            (1, 1, "error: no servers: http://127.0.0.1:1/r lists none\n"),
        )
        status, _, printed = self.run_servers([{}], "--json")
        self.assertEqual(
            (status, printed),
            (1, '{"servers":[]}\nerror: no servers: http://127.0.0.1:1/r lists none\n'),
        )


class AddressProblemTests(SynchronousTestCase):
    def test_typos_get_a_did_you_mean(self) -> None:
        from txgeerpc._cli import address_problem

        self.assertEqual(
            address_problem("tcp://127.0.0.1:7001"),
            "'tcp://127.0.0.1:7001' is not an address: did you mean tcp@127.0.0.1:7001?",
        )
        self.assertEqual(
            address_problem("127.0.0.1:7001"),
            "'127.0.0.1:7001' is not an address: did you mean tcp@127.0.0.1:7001?",
        )
        self.assertEqual(
            address_problem("localhost:7001"),
            "'localhost:7001' is not an address: did you mean tcp@localhost:7001?",
        )
        self.assertIn("did you mean http@h:1 ", address_problem("http://h:1/") or "")

    def test_good_addresses_pass(self) -> None:
        from txgeerpc._cli import address_problem

        for address in (
            "tcp@127.0.0.1:7001",
            "http@[::1]:7001",
            "unix@/tmp/s",
            "tcp:host=127.0.0.1:port=7001",
            "http://127.0.0.1:9999/_geerpc_/registry",
        ):
            self.assertIsNone(address_problem(address), address)


class TypedArgumentTests(SynchronousTestCase):
    DESCRIPTION: dict[str, Any] = {
        "Services": {
            "Foo": {
                "Sum": {"Signature": "Sum(Args) -> int", "Argument": "int", "Reply": "int"},
                "Ping": {"Signature": "Ping() -> str", "Argument": "interface {}", "Reply": "x"},
            }
        },
        "Types": {},
    }

    def test_a_missing_argument_is_an_error_where_the_method_takes_one(self) -> None:
        from txgeerpc._cli import MISSING, UsageError, _typed_argument

        with self.assertRaises(UsageError) as caught:
            _typed_argument(self.DESCRIPTION, "Foo.Sum", MISSING, "application/gob")
        self.assertIn("Foo.Sum takes an argument (Sum(Args) -> int)", str(caught.exception))
        with self.assertRaises(UsageError):  # a Go server: every method takes one
            _typed_argument(None, "Foo.Sum", MISSING, "application/gob")

    def test_null_and_methods_without_an_argument(self) -> None:
        from txgeerpc._cli import MISSING, _typed_argument

        self.assertEqual(
            _typed_argument(self.DESCRIPTION, "Foo.Sum", None, "application/gob")[0], 0
        )
        self.assertIsNone(
            _typed_argument(self.DESCRIPTION, "Foo.Ping", MISSING, "application/gob")[0]
        )
