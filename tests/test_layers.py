"""Only the composition roots (twistd tap, CLI) may touch the global reactor."""

from __future__ import annotations

import ast
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

PACKAGE = Path(__file__).resolve().parents[1] / "txgeerpc"
COMPOSITION_ROOTS = {"tap.py", "registry_tap.py", "_cli.py"}


def imports_global_reactor(source: str) -> bool:
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.module == "twisted.internet":
            if any(alias.name == "reactor" for alias in node.names):
                return True
        if isinstance(node, ast.Import):
            if any(alias.name == "twisted.internet.reactor" for alias in node.names):
                return True
    return False


class LayerTests(SynchronousTestCase):
    def test_detector_detects(self) -> None:
        self.assertTrue(imports_global_reactor("from twisted.internet import task, reactor"))
        self.assertFalse(imports_global_reactor("from twisted.internet import task"))

    def test_no_global_reactor_below_the_composition_roots(self) -> None:
        offenders = [
            str(path.relative_to(PACKAGE))
            for path in PACKAGE.rglob("*.py")
            if path.name not in COMPOSITION_ROOTS
            and imports_global_reactor(path.read_text(encoding="utf-8"))
        ]
        self.assertEqual(offenders, [])

    def test_plugin_imports_nothing_from_txgeerpc(self) -> None:
        plugin = PACKAGE.parent / "twisted" / "plugins" / "txgeerpc_plugins.py"
        self.assertNotIn("import txgeerpc", plugin.read_text(encoding="utf-8"))
