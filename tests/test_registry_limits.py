"""
The registry's per-source limits (issue 15 item 4): each source's write rate,
entry limit and ownership of its entries, in memory (real HTTP requests to
the resource from chosen peer addresses, time on a task.Clock).
"""

from __future__ import annotations

from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport
from twisted.logger import Logger, formatEvent
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource
from twisted.web.server import Site

from txgeerpc import _twistd_security, registry_tap, tap
from txgeerpc._web import mount
from txgeerpc.auth import Guard, NetworkChecker, TokenChecker, parse_networks
from txgeerpc.registry import (
    DEFAULT_BURST,
    DEFAULT_ENTRIES_PER_SOURCE,
    DEFAULT_RATE,
    MemoryStore,
    RegistryResource,
    SourceLimits,
    source_of,
)

from ._helpers import checked_clock

PATH = "/_geerpc_/registry"
ALICE = "alice-token-0123456789"
BOB = "bob-token-0123456789abc"


class LimitsOverHTTPTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = checked_clock(self)
        self.store = MemoryStore(timeout=30)
        self.limits = SourceLimits(self.clock, 30, rate=2, burst=4, entries_per_source=3)
        self.resource = RegistryResource(self.store, self.clock, limits=self.limits)
        self.events: list[dict[str, Any]] = []
        self.resource._log = Logger(observer=self.events.append)
        self.root = Resource()
        mount(self.root, PATH, self.resource)
        self.site = Site(self.root, reactor=self.clock)

    def request(
        self, method: str, server: str | None = None, *, host: str = "10.0.0.1", token: str = ""
    ) -> tuple[int, dict[bytes, bytes], bytes]:
        lines = [f"{method} {PATH} HTTP/1.1", "Host: x", "Content-Length: 0"]
        if server is not None:
            lines.append(f"X-Geerpc-Server: {server}")
        if token:
            lines.append(f"Authorization: Bearer {token}")
        channel = self.site.buildProtocol(None)
        transport = StringTransport(peerAddress=IPv4Address("TCP", host, 40000))
        channel.makeConnection(transport)
        channel.dataReceived(("\r\n".join(lines) + "\r\n\r\n").encode())
        channel.connectionLost(None)  # type: ignore[arg-type]
        head, _, body = transport.value().partition(b"\r\n\r\n")
        status_line, *header_lines = head.split(b"\r\n")
        headers = {}
        for line in header_lines:
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip()
        return int(status_line.split()[1]), headers, body

    def listed(self) -> list[str]:
        return [entry.address for entry in self.store.entries(self.clock.seconds())]

    def test_one_source_lists_at_most_its_share_while_others_keep_registering(self) -> None:
        for n in range(3):
            self.assertEqual(self.request("POST", f"tcp@10.0.0.1:{n + 1}")[0], 200)
        status, headers, body = self.request("POST", "tcp@10.0.0.1:4")
        self.assertEqual(status, 429)
        self.assertEqual(body, b"this source lists 3 servers already, the most it may\n")
        self.assertEqual(headers[b"retry-after"], b"30")  # the entries expire by then
        # Another source is not affected; the first may still refresh its own.
        self.assertEqual(self.request("POST", "tcp@10.0.0.2:1", host="10.0.0.2")[0], 200)
        self.clock.advance(1)
        self.assertEqual(self.request("POST", "tcp@10.0.0.1:1")[0], 200)
        self.assertNotIn("tcp@10.0.0.1:4", self.listed())
        self.assertIn("tcp@10.0.0.2:1", self.listed())
        self.assertEqual(self.limits.counts["entries"], 1)
        # Once its entries expired, the source may list others.
        self.clock.advance(31)
        self.assertEqual(self.request("POST", "tcp@10.0.0.1:4")[0], 200)

    def test_a_source_that_writes_too_fast_waits(self) -> None:
        for _ in range(4):  # the burst
            self.assertEqual(self.request("POST", "tcp@10.0.0.1:1")[0], 200)
        status, headers, body = self.request("POST", "tcp@10.0.0.1:1")
        self.assertEqual((status, headers[b"retry-after"]), (429, b"1"))
        self.assertEqual(body, b"too many registry writes from this source (at most 2/s)\n")
        self.assertEqual(self.request("POST", "tcp@10.0.0.2:1", host="10.0.0.2")[0], 200)
        self.clock.advance(0.5)  # 2/s: one write back
        self.assertEqual(self.request("POST", "tcp@10.0.0.1:1")[0], 200)
        self.assertEqual(self.request("DELETE", "tcp@10.0.0.1:1")[0], 429)  # deletes count
        self.assertEqual(self.limits.counts["rate"], 2)

    def test_another_sources_entry_cannot_be_deleted_or_taken(self) -> None:
        self.assertEqual(self.request("POST", "tcp@10.0.0.1:1")[0], 200)
        status, _, body = self.request("DELETE", "tcp@10.0.0.1:1", host="10.0.0.9")
        self.assertEqual((status, body), (403, b"tcp@10.0.0.1:1 is listed by another source\n"))
        self.assertEqual(self.request("POST", "tcp@10.0.0.1:1", host="10.0.0.9")[0], 403)
        self.assertEqual(self.listed(), ["tcp@10.0.0.1:1"])
        self.assertEqual(self.limits.counts["owner"], 2)
        # Its owner may delete it; then anyone may list the address.
        self.assertEqual(self.request("DELETE", "tcp@10.0.0.1:1")[0], 200)
        self.assertEqual(self.request("POST", "tcp@10.0.0.1:1", host="10.0.0.9")[0], 200)
        # An expired entry is anyone's.
        self.clock.advance(30)
        self.assertEqual(self.request("POST", "tcp@10.0.0.1:1")[0], 200)
        self.assertEqual(self.limits.owned("10.0.0.1"), 1)
        self.assertEqual(self.limits.owned("10.0.0.9"), 0)

    def test_refusals_cost_a_log_line_every_ten_seconds(self) -> None:
        for _ in range(50):
            self.request("POST", "tcp@10.0.0.1:1")
        lines = [formatEvent(e) for e in self.events if "refused" in formatEvent(e)]
        self.assertEqual(
            lines,
            [
                "registry: refused 1 write(s) in 10s; last from 10.0.0.1 for tcp@10.0.0.1:1: "
                "429 too many registry writes from this source (at most 2/s)"
            ],
        )
        self.clock.advance(10)
        for _ in range(30):
            self.request("POST", "tcp@10.0.0.1:2")
        lines = [formatEvent(e) for e in self.events if "refused" in formatEvent(e)]
        self.assertEqual(len(lines), 2)
        # 45 refused after the first line, then 20 more beyond the new burst's 4 + 6.
        self.assertIn("registry: refused 46 write(s) in 10s; last from 10.0.0.1", lines[1])

    def test_identities_from_one_address_are_sources_of_their_own(self) -> None:
        checker = TokenChecker({"alice": ALICE, "bob": BOB})
        guard = Guard([checker, NetworkChecker(parse_networks(["10.1.0.0/16=go"]))])
        _twistd_security.guard_path(
            self.root, PATH, "authenticated", guard, "registry", methods=(b"POST", b"DELETE")
        )
        for n in range(3):
            self.assertEqual(self.request("POST", f"tcp@10.0.0.1:{n + 1}", token=ALICE)[0], 200)
        self.assertEqual(self.request("POST", "tcp@10.0.0.1:4", token=ALICE)[0], 429)
        self.assertEqual(self.request("POST", "tcp@10.0.0.1:4", token=BOB)[0], 200)
        # Bob cannot delete Alice's; no token at all is 401; a trusted network is let in.
        self.assertEqual(self.request("DELETE", "tcp@10.0.0.1:1", token=BOB)[0], 403)
        self.assertEqual(self.request("DELETE", "tcp@10.0.0.1:1")[0], 401)
        self.assertEqual(self.request("POST", "tcp@10.1.2.3:1", host="10.1.2.3")[0], 200)
        self.assertEqual(self.limits.owned("alice@10.0.0.1"), 3)
        self.assertEqual(self.limits.owned("bob@10.0.0.1"), 1)
        self.assertEqual(self.limits.owned("go@10.1.2.3"), 1)
        self.assertEqual(self.request("GET")[0], 200)  # reads stay open


class SourceLimitsTests(SynchronousTestCase):
    def test_the_buckets_kept_are_bounded(self) -> None:
        clock = checked_clock(self)
        limits = SourceLimits(clock, 30, rate=1, burst=1, max_sources=3)
        for n in range(10):
            self.assertIsNone(limits.check(f"10.0.0.{n}", b"POST", f"tcp@x:{n}"))
        self.assertEqual(limits.sources, 3)
        # The most recent sources are the ones remembered (still limited).
        self.assertIsNotNone(limits.check("10.0.0.9", b"POST", "tcp@x:9"))

    def test_owners_of_expired_entries_are_dropped(self) -> None:
        clock = checked_clock(self)
        limits = SourceLimits(clock, 5, rate=float("inf"), entries_per_source=1)
        for n in range(300):  # past 128 * entries_per_source owners
            limits.listed(f"10.0.{n // 250}.{n % 250}", f"tcp@x:{n}")
            clock.advance(1)
        self.assertLessEqual(len(limits._owners), 129)

    def test_sources(self) -> None:
        self.assertEqual(source_of("10.0.0.1"), "10.0.0.1")
        self.assertEqual(source_of("10.0.0.1", "alice"), "alice@10.0.0.1")
        self.assertEqual(source_of("2001:db8::1:2:3"), "2001:db8::/64")
        self.assertEqual(source_of(None), "unix")

    def test_limits_must_be_positive(self) -> None:
        clock = checked_clock(self)
        for name in ("rate", "burst", "entries_per_source", "max_sources"):
            self.assertRaises(ValueError, SourceLimits, clock, 1, **{name: 0})


class OptionsTests(SynchronousTestCase):
    def test_both_plugins_take_the_same_limits(self) -> None:
        clock = checked_clock(self)
        for plugin, extra in ((tap, ["--service", "txgeerpc.examples:Arith"]), (registry_tap, [])):
            options = plugin.Options()
            limits = ["--registry-rate", "3", "--registry-burst", "7"]
            limits += ["--registry-source-entries", "9"]
            options.parseOptions([*extra, "--listen", "tcp:0:interface=127.0.0.1", *limits])
            built = plugin.build(options, reactor=clock)
            registry = built.registry if plugin is tap else _registry_of(built)
            made = registry.limits
            self.assertEqual((made.rate, made.burst, made.entries_per_source), (3, 7, 9), plugin)
            defaults = plugin.Options()
            defaults.parseOptions(extra)
            self.assertEqual(
                (
                    defaults["registry-rate"],
                    defaults["registry-burst"],
                    defaults["registry-source-entries"],
                    defaults["registry-access"],
                ),
                (DEFAULT_RATE, DEFAULT_BURST, DEFAULT_ENTRIES_PER_SOURCE, "local"),
            )
            for bad in ("0", "-1", "x"):
                self.assertRaises(
                    usage.UsageError,
                    plugin.Options().parseOptions,
                    [*extra, "--registry-rate", bad],
                )

    def test_registry_plugin_security_options(self) -> None:
        for argv, error in (
            (["--registry-access", "authenticated"], "needs --tokens, --tls-ca or --trust-network"),
            (["--registry-access", "sometimes"], "expected one of open, authenticated, local"),
            (["--tls-cert", "x.crt"], "--tls-cert and --tls-key go together"),
            (["--tls-ca", "ca.crt"], "--tls-ca needs --tls-cert and --tls-key"),
            (["--trust-network", "10.0.0.0/8"], "expected NETWORK=IDENTITY"),
        ):
            with self.assertRaises(usage.UsageError) as caught:
                registry_tap.Options().parseOptions(argv)
            self.assertIn(error, str(caught.exception), argv)


def _registry_of(built: Any) -> RegistryResource:
    """The RegistryResource a twistd geerpc-registry serves (behind its access rule)."""
    site = built.listeners[0]._factory
    found = site.resource.children[b"_geerpc_"].children[b"registry"]
    return getattr(found, "_wrapped", found)  # type: ignore[no-any-return]
