from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

import txgeerpc
import txgeerpc.errors


class ExportsTests(SynchronousTestCase):
    def test_public_names(self) -> None:
        self.assertEqual(
            sorted(txgeerpc.__all__),
            sorted(
                [
                    "Client",
                    "CodecRegistry",
                    "Header",
                    "MethodStats",
                    "Option",
                    "Server",
                    "Service",
                    "__version__",
                    "connect",
                    "default_registry",
                    "expose",
                ]
            ),
        )
        for name in txgeerpc.__all__:
            self.assertTrue(hasattr(txgeerpc, name), name)

    def test_every_error_is_a_geerpc_error(self) -> None:
        for name in txgeerpc.errors.__all__:
            error = getattr(txgeerpc.errors, name)
            self.assertTrue(issubclass(error, txgeerpc.errors.GeeRPCError), name)
