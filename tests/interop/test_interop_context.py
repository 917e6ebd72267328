"""
The call context (docs/protocol.md 13.9) against Go peers: a txgeerpc client
that uses budgets, metadata and cancellation calling a Go server, and Go
clients calling a txgeerpc server with interceptors installed, see exactly
what they saw before.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet.defer import CancelledError

from txgeerpc.context import CallContext
from txgeerpc.errors import CallTimeout
from txgeerpc.examples import Args

from ._geepeer import running_server
from ._reactor_go import (
    CALL_TIMEOUT,
    _clean_reactor_and_children,  # noqa: F401 - the autouse fixture, applied here
    check_basic,
    go_client_lines,
    txgeerpc_client,
    txgeerpc_server,
)


@pytest_twisted.ensureDeferred
async def test_budgets_metadata_and_cancels_reach_a_go_server_as_nothing(geepeer: Path) -> None:
    """Go's gob decoder ignores the extra Header fields; the client, told
    nothing by the Go server (no hello), never sends it a cancel request, and
    the connection serves on."""
    server = running_server(geepeer)
    with server as address:
        async with txgeerpc_client(address) as client:
            # The first call goes out before the client knows the server: it
            # carries a budget and metadata, which Go ignores.
            trailers: dict[str, str | bytes] = {}
            reply = await client.call(
                "Foo.Sum",
                Args(1, 2),
                timeout=CALL_TIMEOUT,
                metadata={"tenant": "acme", "token-bin": b"\x00\x01"},
                trailers=trailers,
            )
            assert reply == 3 and trailers == {}
            assert client.speaks_extension is False
            sleeping = client.call("Foo.Sleep", Args(1, 0))
            sleeping.cancel()
            with pytest.raises(CancelledError):
                await sleeping
            with pytest.raises(CallTimeout):
                await client.call("Foo.Sleep", Args(1, 0), timeout=0.05)
            assert await client.call("Arith.Echo", "still here", timeout=CALL_TIMEOUT) == (
                "still here"
            )
    assert "can't find service" not in server.log
    assert "read header error" not in server.log


@pytest_twisted.ensureDeferred
async def test_a_fresh_client_with_a_budget_first_against_go(geepeer: Path) -> None:
    """The extended Header is the first message Go sees on the connection."""
    with running_server(geepeer) as address:
        async with txgeerpc_client(address) as client:
            assert await client.call("Foo.Sum", Args(2, 3), timeout=CALL_TIMEOUT) == 5
            assert await client.call("Foo.Sum", Args(4, 5)) == 9  # then the plain one


@pytest_twisted.ensureDeferred
async def test_go_clients_against_a_txgeerpc_server_with_interceptors(geepeer: Path) -> None:
    seen: list[str] = []

    def passthrough(context: CallContext, argument: Any, proceed: Any) -> Any:
        seen.append(context.service_method)
        assert context.metadata == {} and context.deadline is None
        return proceed(argument)

    async with txgeerpc_server(interceptors=[passthrough]) as served:
        lines = await go_client_lines(geepeer, served.address, "basic")
    check_basic(lines)
    assert "Foo.Sum" in seen
