"""
Real-socket tests run under pytest-twisted.  After each one the reactor must be
as clean as trial's dirty-reactor check demands: no delayed calls and no
sockets beyond those that existed before the test.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests._live_reactor import reactor_left_clean


@pytest.fixture(autouse=True)
def clean_reactor() -> Iterator[None]:
    with reactor_left_clean():
        yield
