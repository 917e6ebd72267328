from __future__ import annotations

from pathlib import Path

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


def public_modules() -> list[str]:
    """Every module of the package whose dotted name has no ``_`` part."""
    import pkgutil

    names = ["txgeerpc"]
    for info in pkgutil.walk_packages(txgeerpc.__path__, "txgeerpc."):
        if not any(part.startswith("_") for part in info.name.split(".")):
            names.append(info.name)
    return sorted(names)


class EveryPublicModuleTests(SynchronousTestCase):
    """Every public module says what it exports (``__all__``), and each name
    there exists; names it defines itself and does not export are private."""

    def test_the_list_of_public_modules(self) -> None:
        self.assertEqual(
            public_modules(),
            [
                "txgeerpc",
                "txgeerpc.aio",
                "txgeerpc.auth",
                "txgeerpc.blocking",
                "txgeerpc.client",
                "txgeerpc.codec",
                "txgeerpc.context",
                "txgeerpc.debug",
                "txgeerpc.discovery",
                "txgeerpc.endpoints",
                "txgeerpc.errors",
                "txgeerpc.etcd",
                "txgeerpc.examples",
                "txgeerpc.gob",
                "txgeerpc.interfaces",
                "txgeerpc.metrics",
                "txgeerpc.otel",
                "txgeerpc.registry",
                "txgeerpc.registry_tap",
                "txgeerpc.selection",
                "txgeerpc.server",
                "txgeerpc.tap",
                "txgeerpc.testing",
                "txgeerpc.tls",
                "txgeerpc.xclient",
                "txgeerpc.zookeeper",
            ],
        )

    def test_each_has_all_and_its_names_exist(self) -> None:
        import importlib
        import inspect

        for name in public_modules():
            module = importlib.import_module(name)
            exported = getattr(module, "__all__", None)
            self.assertIsInstance(exported, list, f"{name} has no __all__")
            assert isinstance(exported, list)
            self.assertEqual(len(exported), len(set(exported)), name)
            for export in exported:
                self.assertTrue(hasattr(module, export), f"{name}.{export}")
            # A public class or function defined here and not exported is a mistake.
            for attribute, value in vars(module).items():
                if attribute.startswith("_") or attribute in exported:
                    continue
                if (inspect.isclass(value) or inspect.isfunction(value)) and getattr(
                    value, "__module__", None
                ) == name:
                    self.fail(f"{name}.{attribute} is public but not in __all__")

    def test_each_has_a_page_in_the_api_reference(self) -> None:
        docs = Path(__file__).resolve().parents[1] / "docs"
        navigation = (docs.parent / "mkdocs.yml").read_text(encoding="utf-8")
        for name in public_modules():
            page = docs / "api" / f"{name}.md"
            self.assertTrue(page.is_file(), f"{name} has no page in docs/api/")
            self.assertIn(f"::: {name}\n", page.read_text(encoding="utf-8"))
            self.assertIn(f"api/{name}.md", navigation, f"{name} is not in mkdocs.yml's nav")
