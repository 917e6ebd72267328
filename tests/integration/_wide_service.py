"""
The service the conversion-budget test's ``twistd geerpc`` loads
(``--service tests.integration._wide_service:Wides``): an argument whose
struct has 1,000 fields, so that a list of ``{}`` converts to 1,000 slots
per element.
"""

from __future__ import annotations

import dataclasses

Wide = dataclasses.make_dataclass("Wide", [(f"F{i}", int) for i in range(1000)])
"""A struct of 1,000 int fields, none with a default (as in Go)."""


class Wides:
    """``Wides.Count(items)``: how many there are."""

    def Count(self, items: list[Wide]) -> int:  # type: ignore[valid-type]
        return len(items)
