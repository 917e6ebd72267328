"""The direction of dependencies, enforced (docs/architecture.md says the same).

- Layers: a module imports only modules of its own layer or lower ones.
- Private modules: a module imports another package's private module (a
  ``_name`` module) never; its own package's, or an ancestor package's, are
  fine.
- Only the composition roots (twistd taps, the CLI) touch the global reactor.

Imports are read from the source (every ``import``, lazy and
``TYPE_CHECKING`` ones included), not from a running interpreter.
"""

from __future__ import annotations

import ast
from collections.abc import Callable, Iterator
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

PACKAGE = Path(__file__).resolve().parents[1] / "txgeerpc"
COMPOSITION_ROOTS = {
    "tap.py",
    "registry_tap.py",
    "_twistd.py",
    "_cli.py",
    # The blocking and asyncio APIs run (or install) the process's reactor
    # for programs that do not run one themselves.
    "blocking.py",
    "aio.py",
    # A worker process of `twistd geerpc --workers N` runs its own reactor.
    "_workers.py",
}

LAYERS: dict[str, int] = {
    # L0: values, parsers, codecs; no protocols, no I/O.
    "txgeerpc._version": 0,
    "txgeerpc.errors": 0,
    "txgeerpc.interfaces": 0,
    "txgeerpc._wire": 0,
    "txgeerpc._option": 0,
    "txgeerpc._framed": 0,
    "txgeerpc._budget": 0,
    "txgeerpc._jsonsplit": 0,
    "txgeerpc._jsonvalue": 0,
    "txgeerpc._netrpc": 0,
    "txgeerpc._convert": 0,
    "txgeerpc._protobuf": 0,  # protobuf messages as arguments and replies (lazy import)
    "txgeerpc.gob": 0,
    "txgeerpc.codec": 0,
    "txgeerpc.selection": 0,
    "txgeerpc.discovery": 0,  # StaticDiscovery and the ServerList the others build on
    "txgeerpc.context": 0,  # CallContext, metadata rules, the interceptor signature
    # L1: transport-free machinery of both sides.
    "txgeerpc._messages": 1,
    "txgeerpc._service": 1,
    "txgeerpc._dispatch": 1,
    "txgeerpc._pending": 1,
    "txgeerpc._introspect": 1,
    "txgeerpc._admission": 1,
    "txgeerpc._stubs": 1,
    # L2: protocols and the web hardening they share.
    "txgeerpc._server_protocol": 2,
    "txgeerpc._client_protocol": 2,
    "txgeerpc._http_connect": 2,
    "txgeerpc._one_port": 2,
    "txgeerpc._nodelay": 2,  # TCP_NODELAY on a (wrapped) transport
    "txgeerpc._web": 2,
    "txgeerpc.tls": 2,  # TLS settings and the handshake-first client endpoint
    # L3: the public server and client, and the HTTP registry.
    "txgeerpc.server": 3,
    "txgeerpc.client": 3,
    "txgeerpc.endpoints": 3,
    "txgeerpc.debug": 3,
    "txgeerpc.metrics": 3,
    "txgeerpc._http_client": 3,
    "txgeerpc.registry": 3,
    "txgeerpc._services": 3,
    "txgeerpc.otel": 3,  # OpenTelemetry interceptors (the otel extra)
    "txgeerpc._live": 3,  # the live debug page's data, SVG and the index page
    "txgeerpc.auth": 3,  # twisted.cred checkers, the Guard interceptor, web access rules
    # L4: built on clients and registries.
    "txgeerpc._pool": 4,
    "txgeerpc.xclient": 4,
    "txgeerpc.etcd": 4,
    "txgeerpc.zookeeper": 4,
    # L5: composition roots, test kit, examples.
    "txgeerpc.tap": 5,
    "txgeerpc.registry_tap": 5,
    "txgeerpc._cli": 5,
    "txgeerpc._twistd": 5,
    "txgeerpc._twistd_etcd": 5,
    "txgeerpc._twistd_security": 5,
    "txgeerpc._twistd_zookeeper": 5,
    "txgeerpc._twistd_log": 5,
    "txgeerpc._workers": 5,  # --workers: the supervisor and the worker processes
    "txgeerpc._worker_stats": 5,  # --workers: their metrics and debug page, across them
    "txgeerpc._accept_balance": 5,  # --workers: new connections spread evenly over them
    "txgeerpc._handover": 5,  # --handover: the listening sockets passed to a new process
    "txgeerpc.__main__": 5,
    "txgeerpc.testing": 5,
    "txgeerpc.examples": 5,
    "txgeerpc.blocking": 5,  # a reactor thread for programs that are not Twisted's
    "txgeerpc.aio": 5,  # the asyncio reactor on the running loop
    # The package itself re-exports the public API (matched exactly).
    "txgeerpc": 5,
}
"""Layer by module name: the longest entry that is the module or one of its
parent packages decides (``txgeerpc.etcd`` covers ``txgeerpc.etcd._client``).
The root entry ``txgeerpc`` covers only ``txgeerpc/__init__.py``."""

KNOWN_OFFENDERS: set[tuple[str, str, str]] = set()
"""Imports that break a rule today, each exact.  The test fails when one is
no longer needed: take it out then."""


# -- the detectors ---------------------------------------------------------------


def module_name(path: Path) -> tuple[str, bool]:
    """``(dotted name, is a package)`` of a file under :data:`PACKAGE`."""
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        return ".".join(parts[:-1]), True
    return ".".join(parts), False


def is_module(name: str, root: Path = PACKAGE.parent) -> bool:
    """Whether ``name`` is a module or package in the source tree."""
    base = root.joinpath(*name.split("."))
    return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()


def imported_modules(
    module: str, is_package: bool, source: str, exists: Callable[[str], bool] = is_module
) -> Iterator[str]:
    """Every txgeerpc module ``source`` (the text of ``module``) imports.

    ``from package import name`` counts as importing ``package.name`` when
    that is a module (as ``from .etcd import _options`` is).
    """
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "txgeerpc":
                    yield alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - (node.level - 1)])
                target = f"{base}.{node.module}" if node.module else base
            else:
                target = node.module or ""
            if target.split(".")[0] != "txgeerpc":
                continue
            submodules = [f"{target}.{alias.name}" for alias in node.names]
            found = [name for name in submodules if exists(name)]
            if len(found) < len(submodules):
                yield target
            yield from found


def layer_of(module: str) -> int:
    """The layer :data:`LAYERS` gives ``module``.

    :raises KeyError: no entry covers it.
    """
    if module == "txgeerpc":
        return LAYERS[module]
    name = module
    while name != "txgeerpc":
        if name in LAYERS:
            return LAYERS[name]
        name = name.rpartition(".")[0]
    raise KeyError(f"{module} has no layer in LAYERS")


def upward_imports(module: str, imported: list[str]) -> list[str]:
    """The modules of ``imported`` in a higher layer than ``module``."""
    mine = layer_of(module)
    return [target for target in imported if layer_of(target) > mine]


def private_imports(module: str, is_package: bool, imported: list[str]) -> list[str]:
    """The modules of ``imported`` private to a package that is neither
    ``module``'s package nor one of its ancestors."""
    package = module if is_package else module.rpartition(".")[0]
    found = []
    for target in imported:
        parts = target.split(".")
        for index, part in enumerate(parts):
            if part.startswith("_") and not part.startswith("__"):
                owner = ".".join(parts[:index])
                if package != owner and not package.startswith(owner + "."):
                    found.append(target)
                    break
    return found


def imports_global_reactor(source: str) -> bool:
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.module == "twisted.internet":
            if any(alias.name == "reactor" for alias in node.names):
                return True
        if isinstance(node, ast.Import):
            if any(alias.name == "twisted.internet.reactor" for alias in node.names):
                return True
    return False


def every_module() -> Iterator[tuple[str, bool, list[str]]]:
    for path in sorted(PACKAGE.rglob("*.py")):
        module, is_package = module_name(path)
        source = path.read_text(encoding="utf-8")
        yield module, is_package, sorted(set(imported_modules(module, is_package, source)))


def offenders() -> set[tuple[str, str, str]]:
    found = set()
    for module, is_package, imported in every_module():
        for target in upward_imports(module, imported):
            found.add(("layer", module, target))
        for target in private_imports(module, is_package, imported):
            found.add(("private", module, target))
    return found


# -- the tests -------------------------------------------------------------------


class DetectorTests(SynchronousTestCase):
    """Each rule's detector detects."""

    def test_global_reactor(self) -> None:
        self.assertTrue(imports_global_reactor("from twisted.internet import task, reactor"))
        self.assertTrue(imports_global_reactor("import twisted.internet.reactor"))
        self.assertFalse(imports_global_reactor("from twisted.internet import task"))

    def test_imports_are_resolved(self) -> None:
        modules = {"txgeerpc.etcd._options", "txgeerpc.gob._decoder", "txgeerpc._wire"}
        source = (
            "from .etcd import Etcd, _options\n"
            "import txgeerpc.gob._decoder\n"
            "def later():\n"
            "    from ._wire import GOB\n"
            "import json\n"
        )
        found = list(imported_modules("txgeerpc.tap", False, source, modules.__contains__))
        self.assertEqual(
            sorted(found),
            ["txgeerpc._wire", "txgeerpc.etcd", "txgeerpc.etcd._options", "txgeerpc.gob._decoder"],
        )
        found = list(
            imported_modules("txgeerpc.codec", True, "from ..errors import X", set().__contains__)
        )
        self.assertEqual(found, ["txgeerpc.errors"])
        found = list(
            imported_modules(
                "txgeerpc.codec._gob", False, "from ..gob import x", set().__contains__
            )
        )
        self.assertEqual(found, ["txgeerpc.gob"])

    def test_an_upward_import_is_detected(self) -> None:
        # The client importing the server protocol is sideways (L3 -> L2: fine);
        # the one-port sniffer importing Server and debug is upward.
        self.assertEqual(upward_imports("txgeerpc.client", ["txgeerpc._server_protocol"]), [])
        self.assertEqual(
            upward_imports("txgeerpc._one_port", ["txgeerpc.server", "txgeerpc._wire"]),
            ["txgeerpc.server"],
        )
        self.assertEqual(
            upward_imports("txgeerpc.gob._types", ["txgeerpc.etcd._api"]), ["txgeerpc.etcd._api"]
        )

    def test_layers_match_by_the_longest_parent(self) -> None:
        self.assertEqual(layer_of("txgeerpc.etcd._client"), LAYERS["txgeerpc.etcd"])
        self.assertEqual(layer_of("txgeerpc.codec._gob"), 0)
        self.assertEqual(layer_of("txgeerpc"), LAYERS["txgeerpc"])
        self.assertRaises(KeyError, layer_of, "txgeerpc.unmapped")

    def test_a_private_import_is_detected(self) -> None:
        self.assertEqual(
            private_imports("txgeerpc.codec._gob", False, ["txgeerpc.gob._decoder"]),
            ["txgeerpc.gob._decoder"],
        )
        self.assertEqual(
            private_imports("txgeerpc.tap", False, ["txgeerpc.etcd._options"]),
            ["txgeerpc.etcd._options"],
        )
        # Its own package's, an ancestor's, and a package's own: fine.
        self.assertEqual(
            private_imports(
                "txgeerpc.etcd._store",
                False,
                ["txgeerpc.etcd._api", "txgeerpc._wire", "txgeerpc.errors", "txgeerpc.gob"],
            ),
            [],
        )
        self.assertEqual(private_imports("txgeerpc.etcd", True, ["txgeerpc.etcd._api"]), [])
        self.assertEqual(private_imports("txgeerpc.codec", True, ["txgeerpc._wire"]), [])


class LayerTests(SynchronousTestCase):
    def test_every_module_has_a_layer(self) -> None:
        unmapped = []
        for module, _, _ in every_module():
            try:
                layer_of(module)
            except KeyError:
                unmapped.append(module)
        self.assertEqual(unmapped, [])

    def test_imports_go_down_and_stay_out_of_other_packages_privates(self) -> None:
        self.assertEqual(sorted(offenders() - KNOWN_OFFENDERS), [])

    def test_every_known_offender_still_offends(self) -> None:
        self.assertEqual(sorted(KNOWN_OFFENDERS - offenders()), [])

    def test_no_global_reactor_below_the_composition_roots(self) -> None:
        found = [
            str(path.relative_to(PACKAGE))
            for path in PACKAGE.rglob("*.py")
            if path.name not in COMPOSITION_ROOTS
            and imports_global_reactor(path.read_text(encoding="utf-8"))
        ]
        self.assertEqual(found, [])

    def test_plugin_imports_nothing_from_txgeerpc(self) -> None:
        plugin = PACKAGE.parent / "twisted" / "plugins" / "txgeerpc_plugins.py"
        self.assertNotIn("import txgeerpc", plugin.read_text(encoding="utf-8"))
