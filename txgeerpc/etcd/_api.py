"""
The values etcd (v3) answers with.  What txgeerpc needs of etcd is the
interface :class:`~txgeerpc.interfaces.IEtcd`:
:class:`~txgeerpc.etcd.EtcdClient` speaks it to a real cluster over the JSON
gateway; :class:`~txgeerpc.testing.FakeEtcd` keeps it in memory on a clock,
for tests.  Keys and values are bytes; revisions and lease IDs are ints.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import attrs


@attrs.frozen
class KeyValue:
    """One key as etcd keeps it."""

    key: bytes
    value: bytes = b""
    create_revision: int = 0
    mod_revision: int = 0
    version: int = 0
    lease: int = 0
    """The lease the key is attached to (0: none)."""


@attrs.frozen
class Range:
    """The keys of a range, sorted by key, at the store's ``revision``."""

    kvs: tuple[KeyValue, ...]
    revision: int


@attrs.frozen
class WatchEvent:
    """A key put (created or changed) or deleted (by hand, or its lease
    expired or was revoked).  A deleted key's ``kv`` has its key and the
    revision of the deletion as ``mod_revision``, nothing else."""

    kind: Literal["put", "delete"]
    kv: KeyValue


EventsListener = Callable[[list[WatchEvent], int], None]
"""``(events, revision)``: the events of one revision range, in order, and
the store's revision they bring the watcher to."""
