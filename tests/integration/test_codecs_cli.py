"""
``python -m txgeerpc call --codec C`` against a real ``twistd geerpc``: every
codec prints the same answers for the example services, and every codec but
gob for the example protobuf service (issue 17).
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests._processes import environment, start, stop, wait_for

CODECS = ("gob", "json", "msgpack", "protobuf")
CALLS = (
    # (A struct argument is converted, or Divide would not get to divide.)
    ("Arith.Echo", '"héllo ' + "x" * 70_000 + '"'),
    ("Arith.Divide", '{"Num1":1,"Num2":0}'),
    # Generated message classes (examples/protobuf): not for gob.
    ("Stats.Summarize", '{"label":"week","values":[3,1,4]}'),
)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    process = start(
        tmp_path_factory.mktemp("geerpc"),
        "geerpc",
        "--listen",
        "tcp:0:interface=127.0.0.1",
        "--service",
        "txgeerpc.examples:Arith",
        "--service",
        "examples.protobuf.stats_service:Stats",
    )
    try:
        yield wait_for(process, rb"serving .* on (tcp@127\.0\.0\.1:\d+)")
    finally:
        stop(process)


def _answers(address: str, tmp_path: Path) -> dict[str, list[tuple[int, str, str]]]:
    """Every codec's answers to CALLS (the commands run side by side)."""
    runs: dict[str, list[subprocess.Popen[str]]] = {}
    try:
        for codec in CODECS:
            for index, (method, argument) in enumerate(CALLS):
                if codec == "gob" and method.startswith("Stats."):
                    continue
                path = tmp_path / f"argument{index}.json"
                path.write_text(argument, encoding="utf-8")
                command = ["call", "--codec", codec, address, method, f"@{path}"]
                runs.setdefault(codec, []).append(
                    subprocess.Popen(
                        [sys.executable, "-m", "txgeerpc", *command],
                        env=environment(),
                        stdout=subprocess.PIPE,
                        stderr=subprocess.PIPE,
                        text=True,
                    )
                )
        answers = {}
        for codec, processes in runs.items():
            answers[codec] = []
            for process in processes:
                stdout, stderr = process.communicate(timeout=30)
                answers[codec].append((process.returncode, stdout, stderr))
        return answers
    finally:
        for processes in runs.values():
            for process in processes:
                if process.poll() is None:
                    process.kill()
                    process.communicate()


def test_every_codec_prints_the_same_answers(server: str, tmp_path: Path) -> None:
    answers = _answers(server, tmp_path)
    expected = answers["gob"]
    assert [code for code, _, _ in expected] == [0, 1], expected
    assert expected[0][1].strip() == '"héllo ' + "x" * 70_000 + '"'
    assert "divide by zero" in expected[1][2]
    # Proto3's JSON mapping: an int64 is a string.
    summary = (0, '{"label":"week","count":3,"total":"8","mean":2.6666666666666665}\n', "")
    for codec in CODECS[1:]:
        assert answers[codec] == [*expected, summary], codec
