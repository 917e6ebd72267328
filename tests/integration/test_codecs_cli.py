"""
``python -m txgeerpc call --codec C`` against a real ``twistd geerpc``: every
codec prints the same answers for the example services, and every codec but
gob for the example protobuf service (issue 17); and so does every codec in
framed mode, uncompressed and with every compression.
"""

from __future__ import annotations

import json
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


FRAMED_MODES = (
    ["--framed"],
    ["--framed", "--compress", "zstd"],
    ["--framed", "--compress", "gzip"],
    ["--framed", "--compress", "lz4"],
)


def test_every_codec_prints_the_same_answers_framed(server: str, tmp_path: Path) -> None:
    """Framed mode x every codec x every compression: 52 command lines, each
    its own process forked from one that imported the CLI (_cli_forks.py)."""
    paths = []
    for index, (_, argument) in enumerate(CALLS):
        path = tmp_path / f"argument{index}.json"
        path.write_text(argument, encoding="utf-8")
        paths.append(path)
    commands, keys = [], []
    for codec in CODECS:
        for mode in FRAMED_MODES:
            for (method, _), path in zip(CALLS, paths, strict=True):
                if codec == "gob" and method.startswith("Stats."):
                    continue
                commands.append(["call", "--codec", codec, *mode, server, method, f"@{path}"])
                keys.append((codec, " ".join(mode), method))
    process = subprocess.Popen(
        [sys.executable, str(Path(__file__).with_name("_cli_forks.py"))],
        env=environment(),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        stdout, stderr = process.communicate(json.dumps(commands), timeout=90)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, stderr
    results = dict(zip(keys, (tuple(result) for result in json.loads(stdout)), strict=True))
    echo = (0, '"héllo ' + "x" * 70_000 + '"\n', "")
    summary = (0, '{"label":"week","count":3,"total":"8","mean":2.6666666666666665}\n', "")
    expected = {"Arith.Echo": echo, "Stats.Summarize": summary}
    for (codec, mode, method), (code, out, err) in results.items():
        if method == "Arith.Divide":
            assert (code, out) == (1, ""), (codec, mode, err)
            assert err.strip() == "error: divide by zero", (codec, mode, err)
        else:
            assert (code, out, err) == expected[method], (codec, mode, method, err[-300:])
    assert len(results) == 4 * 4 * 3 - 4
