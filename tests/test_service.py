"""Service registration: Go's rules, made Pythonic."""

from __future__ import annotations

import attrs
from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from txgeerpc import Server, expose
from txgeerpc._service import build_service
from txgeerpc.errors import RegistrationError, ServiceAlreadyDefined
from txgeerpc.examples import Args


@attrs.define
class Point:
    X: int
    Y: int = 0


class Geometry:
    def Shift(self, point: Point) -> Point:
        return Point(point.X + 1, point.Y + 1)

    def Total(self, values: list[int]) -> int:
        return sum(values)

    def Maybe(self, value: int | None) -> str:
        return "none" if value is None else str(value)

    def NoArgument(self) -> str:
        return "ok"

    def Deferring(self, args: Args) -> Deferred[int]:
        return succeed(args.Num1)

    async def Coroutine(self, args: Args) -> int:
        return args.Num2

    def TwoArguments(self, a: int, b: int) -> int:
        return a + b

    def _private(self, x: int) -> int:
        return x

    @property
    def Prop(self) -> int:
        raise AssertionError("properties are never evaluated")

    Constant = 3


class ServiceTests(SynchronousTestCase):
    def test_public_single_argument_methods_are_exposed(self) -> None:
        service = build_service(Geometry())
        self.assertEqual(service.name, "Geometry")
        self.assertEqual(
            sorted(service.methods),
            ["Coroutine", "Deferring", "Maybe", "NoArgument", "Shift", "Total"],
        )

    def test_signatures_from_annotations(self) -> None:
        methods = build_service(Geometry()).methods
        self.assertEqual(methods["Shift"].signature(), "Shift(Point) -> Point")
        self.assertEqual(methods["Total"].signature(), "Total(list[int]) -> int")
        self.assertEqual(methods["NoArgument"].signature(), "NoArgument() -> str")

    def test_start_value_deferred_coroutine(self) -> None:
        methods = build_service(Geometry()).methods
        self.assertEqual(methods["Shift"].start(Point(1)), Point(2, 1))
        self.assertEqual(methods["NoArgument"].start(None), "ok")
        self.assertEqual(self.successResultOf(methods["Deferring"].start(Args(4, 5))), 4)
        self.assertEqual(self.successResultOf(methods["Coroutine"].start(Args(4, 5))), 5)

    def test_returned_deferred_is_followed_not_reused(self) -> None:
        shared: Deferred[int] = Deferred()

        class Cached:
            def Get(self) -> Deferred[int]:
                return shared

        ours = build_service(Cached()).methods["Get"].start(None)
        self.assertIsNot(ours, shared)
        shared.callback(3)
        self.assertEqual(self.successResultOf(ours), 3)
        self.assertEqual(self.successResultOf(shared), 3)

    def test_synchronous_exception_is_raised(self) -> None:
        class Boom:
            def Go(self, x: int) -> int:
                raise KeyError(x)

        self.assertRaises(KeyError, build_service(Boom()).methods["Go"].start, 1)

    def test_explicit_name_and_methods(self) -> None:
        service = build_service(Geometry(), name="Geo", methods=["Total"])
        self.assertEqual((service.name, list(service.methods)), ("Geo", ["Total"]))

    def test_explicit_uncallable_method_is_an_error(self) -> None:
        with self.assertRaises(RegistrationError) as raised:
            build_service(Geometry(), methods=["TwoArguments"])
        self.assertIn("more than one argument", str(raised.exception))
        self.assertRaises(RegistrationError, build_service, Geometry(), methods=["Missing"])

    def test_expose_decorator_narrows(self) -> None:
        class Narrow:
            @expose
            def Visible(self, x: int) -> int:
                return x

            def Hidden(self, x: int) -> int:
                return x

        self.assertEqual(list(build_service(Narrow()).methods), ["Visible"])

    def test_nothing_to_expose(self) -> None:
        class Empty:
            def _hidden(self) -> None:
                pass

        with self.assertRaises(RegistrationError):
            build_service(Empty())

    def test_unresolvable_annotation_is_an_error_not_a_skip(self) -> None:
        class Local:
            def Go(self, value: NotDefinedAnywhere) -> int:  # type: ignore[name-defined]  # noqa: F821
                return 1

        with self.assertRaises(RegistrationError) as raised:
            build_service(Local())
        self.assertIn("cannot resolve the annotations of Go", str(raised.exception))

    def test_class_is_instantiated(self) -> None:
        self.assertIsInstance(build_service(Geometry).instance, Geometry)

    def test_duplicate_name(self) -> None:
        server = Server(Clock())
        server.register(Geometry())
        with self.assertRaises(ServiceAlreadyDefined) as raised:
            server.register(Geometry())
        self.assertEqual(str(raised.exception), "rpc: service already defined: Geometry")
        server.register(Geometry(), name="Other")
        self.assertEqual(sorted(server.services), ["Geometry", "Other"])
