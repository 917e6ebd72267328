"""
A griffe extension for the API reference: txgeerpc's docstrings use Sphinx
roles (``:class:`Client```, ``:func:`~txgeerpc.client.connect```), which
mkdocstrings' Markdown would show as typed; this shows them as code
(``~`` keeps the last dotted part, as in Sphinx).  mkdocs.yml loads it.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

ROLE = re.compile(r":(?:py:)?(?:class|func|meth|mod|attr|exc|data|obj|const):`(~?)([^`]+)`")


def _code(match: re.Match[str]) -> str:
    target = match.group(2)
    return f"`{target.rsplit('.', 1)[-1] if match.group(1) else target}`"


class SphinxRoles(griffe.Extension):
    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = ROLE.sub(_code, obj.docstring.value)
