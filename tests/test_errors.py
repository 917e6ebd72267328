"""The exception hierarchy: one base, and a call's errors apart from the connection's."""

from __future__ import annotations

import inspect

from twisted.trial.unittest import SynchronousTestCase

from txgeerpc import errors


def public_exceptions() -> dict[str, type[BaseException]]:
    """Every exception class errors.py defines under a public name."""
    return {
        name: value
        for name, value in vars(errors).items()
        if not name.startswith("_")
        and inspect.isclass(value)
        and issubclass(value, BaseException)
        and value.__module__ == errors.__name__
    }


class HierarchyTests(SynchronousTestCase):
    def test_every_public_exception_is_a_geerpc_error(self) -> None:
        found = public_exceptions()
        self.assertIn("CodecError", found)
        outside = sorted(
            name for name, error in found.items() if not issubclass(error, errors.GeeRPCError)
        )
        self.assertEqual(outside, [])

    def test_every_public_exception_is_exported(self) -> None:
        self.assertEqual(sorted(set(public_exceptions()) - set(errors.__all__)), [])

    def test_a_codec_error_is_not_a_protocol_error(self) -> None:
        # It fails one call; the connection goes on.
        self.assertFalse(issubclass(errors.CodecError, errors.ProtocolError))
        self.assertTrue(issubclass(errors.MessageTooLarge, errors.ProtocolError))

    def test_value_errors_stay_value_errors(self) -> None:
        for error in (errors.InvalidAddress, errors.InvalidServerAddress):
            self.assertTrue(issubclass(error, ValueError), error)
        self.assertTrue(issubclass(errors.RegistrationError, TypeError))

