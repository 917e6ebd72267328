"""``twistd geerpc``: options as data, the service tree by injection."""

from __future__ import annotations

from twisted.application.service import IServiceMaker
from twisted.internet.testing import MemoryReactorClock
from twisted.plugin import getPlugins
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from txgeerpc import tap
from txgeerpc._one_port import OnePortFactory
from txgeerpc._server_protocol import DEFAULT_MAX_MESSAGE_SIZE
from txgeerpc._twistd import StartupError
from txgeerpc.registry import DEFAULT_MAX_ENTRIES, MIN_PERIOD, Heartbeat


class OptionsTests(SynchronousTestCase):
    def parse(self, *argv: str) -> tap.Options:
        options = tap.Options()
        options.parseOptions(list(argv))
        return options

    def test_defaults(self) -> None:
        options = self.parse()
        self.assertEqual(
            {
                key: options[key]
                for key in (
                    "listen",
                    "service",
                    "handle-timeout",
                    "max-message-size",
                    "max-in-flight",
                )
            },
            {
                "listen": ["tcp:7001:interface=127.0.0.1"],
                "service": [],
                "handle-timeout": None,
                "max-message-size": DEFAULT_MAX_MESSAGE_SIZE,
                "max-in-flight": 256,
            },
        )

    def test_repeatable_and_typed(self) -> None:
        options = self.parse(
            "--listen",
            "tcp:0",
            "--listen",
            "unix:/tmp/x.sock",
            "--service",
            "txgeerpc.examples:Arith",
            "--handle-timeout",
            "2.5",
            "--max-message-size",
            "1024",
        )
        self.assertEqual(options["listen"], ["tcp:0", "unix:/tmp/x.sock"])
        self.assertEqual(options["service"], ["txgeerpc.examples:Arith"])
        self.assertEqual(options["handle-timeout"], 2.5)
        self.assertEqual(options["max-message-size"], 1024)

    def test_bad_values(self) -> None:
        for argv in (
            ["--handle-timeout", "0"],
            ["--max-message-size", "-1"],
            ["--service", "no_colon"],
            ["--handle-timeout", "soon"],
            ["--registry", "127.0.0.1:9999/_geerpc_/registry", "--advertise", "tcp@h:1"],
            ["--registry", "ftp://h/r", "--advertise", "tcp@h:1"],
            ["--registry", "http:///r", "--advertise", "tcp@h:1"],
            ["--heartbeat", "0.1"],  # below MIN_PERIOD: a tight loop of POSTs
            ["--heartbeat", "0"],
            ["--registry-max-entries", "0"],
            ["--grace", "-1"],
            ["--grace", "soon"],
        ):
            self.assertRaises(usage.UsageError, self.parse, *argv)
        self.assertEqual(self.parse("--heartbeat", "0.5")["heartbeat"], MIN_PERIOD)
        self.assertEqual((self.parse()["grace"], self.parse("--grace", "0")["grace"]), (10, 0))

    def test_advertising_port_0_needs_a_tcp_listen(self) -> None:
        registry = ("--registry", "http://127.0.0.1:1/_geerpc_/registry")
        for listen in (
            ["unix:/tmp/x.sock"],
            ["systemd:domain=UNIX:index=0"],
            ["stdio:"],
            ["haproxy:unix:/tmp/x.sock"],
        ):
            argv = [arg for description in listen for arg in ("--listen", description)]
            with self.assertRaises(usage.UsageError) as raised:
                self.parse(*argv, *registry, "--advertise", "tcp@127.0.0.1:0")
            self.assertIn("port 0 takes the port of the first TCP --listen", str(raised.exception))
            self.parse(*argv, *registry, "--advertise", "tcp@127.0.0.1:7001")  # a port: fine
        for listen in (
            [],  # the default: tcp:7001
            ["unix:/tmp/x.sock", "tcp:0:interface=127.0.0.1"],
            ["TCP6:port=0"],
            ["ssl:0:privateKey=k.pem"],
            ["systemd:domain=INET:index=0"],
            ["haproxy:tcp:0:interface=127.0.0.1"],
        ):
            argv = [arg for description in listen for arg in ("--listen", description)]
            self.parse(*argv, *registry, "--advertise", "tcp@127.0.0.1:0")


class MakeServiceTests(SynchronousTestCase):
    def test_examples_by_default_and_listening(self) -> None:
        reactor = MemoryReactorClock()
        options = tap.Options()
        options.parseOptions(["--listen", "tcp:0:interface=127.0.0.1", "--handle-timeout", "3"])
        built = tap.build(options, reactor=reactor)
        server, service = built.server, built.service
        self.assertEqual(sorted(server.services), ["Arith", "Ctx", "Foo", "Records"])
        self.assertEqual(server.settings.max_handle_timeout, 3)
        service.privilegedStartService()
        service.startService()
        _port, factory, _backlog, interface = reactor.tcpServers[0]
        # One port for every protocol: the raw GeeRPC factory sits behind it.
        self.assertIsInstance(factory, OnePortFactory)
        self.assertIs(factory.rpc, server.factory())
        self.assertEqual(interface, "127.0.0.1")
        service.stopService()

    def test_stopping_closes_the_ports_then_drains_within_the_grace(self) -> None:
        reactor = MemoryReactorClock()
        options = tap.Options()
        options.parseOptions(["--listen", "tcp:0:interface=127.0.0.1", "--grace", "2.5"])
        built = tap.build(options, reactor=reactor)
        self.assertEqual(built.server.settings.grace, 2.5)
        built.service.privilegedStartService()
        built.service.startService()
        self.assertEqual(built.server.status, "serving")
        stopped = built.service.stopService()
        self.assertEqual(built.server.status, "draining")
        self.assertIsNone(built.listeners[0].port)  # stopped listening first
        self.successResultOf(stopped)  # nothing connected: at once

    def test_advertising_port_0_takes_the_port_listened_on(self) -> None:
        registry = ["--registry", "http://127.0.0.1:1/_geerpc_/registry"]
        options = tap.Options()
        options.parseOptions(
            [
                *("--listen", "unix:/tmp/txgeerpc-test.sock"),
                *("--listen", "tcp:7005:interface=127.0.0.1"),
                *registry,
                *("--advertise", "tcp@127.0.0.1:0"),
            ]
        )
        built = tap.build(options, reactor=MemoryReactorClock())
        built.service.privilegedStartService()
        built.service.startService()
        self.assertEqual(built.registration.advertise, "tcp@127.0.0.1:7005")  # type: ignore[union-attr]

        # Options refuses this; the service still guards against it.
        unix_only = tap.Options()
        unix_only.parseOptions([*registry, "--advertise", "tcp@h:0"])
        unix_only["listen"] = ["unix:/tmp/txgeerpc-test.sock"]
        service = tap.build(unix_only, reactor=MemoryReactorClock()).service
        service.privilegedStartService()
        with self.assertRaises(StartupError) as raised:
            service.startService()
        self.assertIn("needs a TCP --listen", str(raised.exception))

    def test_the_embedded_registry_is_bounded(self) -> None:
        options = tap.Options()
        options.parseOptions(["--registry-max-entries", "5", "--registry-timeout", "7"])
        store = tap.build(options, reactor=MemoryReactorClock()).registry.store  # type: ignore[union-attr]
        self.assertEqual((store.max_entries, store.timeout), (5, 7))
        options = tap.Options()
        options.parseOptions([])
        store = tap.build(options, reactor=MemoryReactorClock()).registry.store  # type: ignore[union-attr]
        self.assertEqual(store.max_entries, DEFAULT_MAX_ENTRIES)

    def test_service_spec_class_with_clock(self) -> None:
        reactor = MemoryReactorClock()
        options = tap.Options()
        options.parseOptions(
            ["--service", "txgeerpc.examples:Foo", "--service", "txgeerpc.examples:Arith"]
        )
        server = tap.build(options, reactor=reactor).server
        self.assertEqual(sorted(server.services), ["Arith", "Foo"])
        self.assertIs(server.services["Foo"].instance._clock, reactor)

    def test_bad_service_spec(self) -> None:
        for spec in ("txgeerpc.examples:Missing", "no.such.module:X", "txgeerpc.examples:Args"):
            options = tap.Options()
            options.parseOptions(["--service", spec])
            self.assertRaises(StartupError, tap.build, options, MemoryReactorClock())

    def test_addresses(self) -> None:
        from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress

        self.assertEqual(tap.geerpc_address(IPv4Address("TCP", "0.0.0.0", 5)), "tcp@127.0.0.1:5")
        self.assertEqual(tap.geerpc_address(IPv6Address("TCP", "::1", 5)), "tcp@[::1]:5")
        self.assertEqual(tap.geerpc_address(UNIXAddress(b"/tmp/s")), "unix@/tmp/s")


class PluginTests(SynchronousTestCase):
    def test_plugin_is_found(self) -> None:
        from twisted import plugins

        names = {maker.tapname: maker for maker in getPlugins(IServiceMaker, plugins)}
        self.assertIn("geerpc", names)
        self.assertEqual(names["geerpc"].module, "txgeerpc.tap")


class SeveralRegistriesTests(SynchronousTestCase):
    """``--registry URL,URL...``: each URL checked, the heartbeat given them all."""

    A = "http://127.0.0.1:9999/_geerpc_/registry"
    B = "https://registry-b.example:9443/_geerpc_/registry"

    def parse(self, registry: str) -> tap.Options:
        options = tap.Options()
        options.parseOptions(["--registry", registry, "--advertise", "tcp@127.0.0.1:7001"])
        return options

    def test_several_urls_are_parsed(self) -> None:
        self.assertEqual(self.parse(self.A)["registry"], [self.A])
        self.assertEqual(
            self.parse(f"{self.A}, {self.B},{self.A},")["registry"],  # spaces, repeats, a comma
            [self.A, self.B],
        )

    def test_the_heartbeat_gets_every_url(self) -> None:
        tree = tap.build(self.parse(f"{self.A},{self.B}"), reactor=MemoryReactorClock())
        heartbeat = tree.registration
        self.assertIsInstance(heartbeat, Heartbeat)
        self.assertEqual(
            (heartbeat.registry_urls, heartbeat.registry_url), ((self.A, self.B), self.A)
        )

    def test_a_bad_url_among_them_is_refused(self) -> None:
        for registry, named in [
            (f"{self.A},ftp://h/r", "'ftp://h/r'"),
            (f"127.0.0.1:9999/_geerpc_/registry,{self.B}", "'127.0.0.1:9999/_geerpc_/registry'"),
            (f"{self.A},http:///r", "'http:///r'"),
            (",", "','"),
        ]:
            with self.assertRaises(usage.UsageError, msg=registry) as raised:
                self.parse(registry)
            self.assertIn(
                f"--registry wants an http:// or https:// URL, got {named}", str(raised.exception)
            )

    def test_the_help_says_so(self) -> None:
        self.assertIn("comma-separated", str(tap.Options()))
