"""
``TCP_NODELAY`` on a connection, whatever wraps it (docs/operations.md,
"TCP_NODELAY"): both sides take it as an option (``twistd geerpc
--tcp-nodelay``, ``connect(..., nodelay=True)``).
"""

from __future__ import annotations

from typing import Any

__all__ = ["set_tcp_nodelay"]


def set_tcp_nodelay(transport: Any, enabled: bool) -> bool:
    """Set (or clear) ``TCP_NODELAY`` on ``transport`` or the transport it
    wraps (TLS, a protocol wrapper); whether a TCP transport was found (a
    UNIX socket or a memory transport has none: nothing is done)."""
    seen = 0
    while transport is not None and seen < 8:  # a wrapper's wrapper's ... transport
        setter = getattr(transport, "setTcpNoDelay", None)
        if setter is not None and hasattr(transport, "getTcpNoDelay"):
            try:
                setter(enabled)
            except OSError:  # closed meanwhile, or not a TCP socket after all
                return False
            return True
        transport = getattr(transport, "transport", None)
        seen += 1
    return False
