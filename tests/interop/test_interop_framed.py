"""
Framed mode is never used with a Go peer (docs/protocol.md 13.11): a txgeerpc
client asking for it (and for compression) gets no hello from a Go server and
keeps the plain stream; Go clients of a txgeerpc server never ask.
"""

from __future__ import annotations

from pathlib import Path

import pytest_twisted

from txgeerpc.examples import Args

from ._geepeer import running_server
from ._reactor_go import (
    CALL_TIMEOUT,
    _clean_reactor_and_children,  # noqa: F401 - the autouse fixture, applied here
    txgeerpc_client,
)


@pytest_twisted.ensureDeferred
async def test_a_framed_client_keeps_the_plain_stream_with_a_go_server(geepeer: Path) -> None:
    server = running_server(geepeer)
    with server as address:
        async with txgeerpc_client(address, framed=True, compress="zstd") as client:
            assert await client.call("Foo.Sum", Args(1, 2), timeout=CALL_TIMEOUT) == 3
            text = "x" * 5000  # past the compression threshold
            assert await client.call("Arith.Echo", text, timeout=CALL_TIMEOUT) == text
            assert client.speaks_extension is False
            assert client._protocol.framed is False
    assert "read header error" not in server.log
    assert "can't find service" not in server.log
