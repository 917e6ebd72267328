"""One ZooKeeper per module where the tests allow (a JVM takes a second or
more to start): ``zookeeper`` is a standalone server, ``ensemble`` three
members, each started once for the module and stopped by PID after it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests._zookeeper import ZooKeeperEnsemble


@pytest.fixture(scope="module")
def zookeeper(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ZooKeeperEnsemble]:
    with ZooKeeperEnsemble.start(tmp_path_factory.mktemp("zookeeper")) as started:
        yield started


@pytest.fixture(scope="module")
def ensemble(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ZooKeeperEnsemble]:
    with ZooKeeperEnsemble.start(Path(tmp_path_factory.mktemp("ensemble")), members=3) as started:
        yield started
