"""
A service whose handlers are asyncio coroutines, for ``twistd -r asyncio``:
there a coroutine handler runs as an asyncio task, so it may await asyncio
things (``asyncio.sleep``, an asyncio library's calls), and the server's
handle timeout cancels the task.  (To await a Deferred in such a handler:
``await d.asFuture(asyncio.get_running_loop())``.)

Run it from this directory, and call it::

    cd examples
    twistd -n -r asyncio geerpc --service asyncio_service:Naps
    python -m txgeerpc call tcp@127.0.0.1:7001 Naps.Nap 0.1
    python -m txgeerpc call tcp@127.0.0.1:7001 Naps.Nap 30 --handle-timeout 0.2
    python -m txgeerpc call tcp@127.0.0.1:7001 Naps.Cancelled
"""

import asyncio


class Naps:
    def __init__(self) -> None:
        self.cancelled = 0

    async def Nap(self, seconds: float) -> str:
        """Sleep the asyncio way, then answer."""
        try:
            await asyncio.sleep(seconds)
        except asyncio.CancelledError:  # the handle timeout cancelled us
            self.cancelled += 1
            raise
        return f"slept {seconds}s"

    def Cancelled(self) -> int:
        """How many naps were cut short."""
        return self.cancelled
