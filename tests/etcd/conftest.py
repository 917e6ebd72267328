"""
pytest fixtures for tests against real etcd servers (see ``tests/_etcd.py``;
trial tests start an :class:`~tests._etcd.EtcdCluster` themselves).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests._etcd import EtcdCluster


@pytest.fixture
def etcd(tmp_path: Path) -> Iterator[EtcdCluster]:
    """A ready one-member etcd cluster, stopped after the test."""
    cluster = EtcdCluster.start(tmp_path, members=1)
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def etcd3(tmp_path: Path) -> Iterator[EtcdCluster]:
    """A ready three-member etcd cluster, stopped after the test."""
    cluster = EtcdCluster.start(tmp_path, members=3)
    try:
        yield cluster
    finally:
        cluster.stop()
