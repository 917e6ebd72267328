"""The README's examples run as written."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def python_blocks() -> dict[str, str]:
    """README python blocks, by the file name in their first comment line."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    blocks = {}
    for block in re.findall(r"```python\n(.*?)```", text, re.S):
        first = block.splitlines()[0]
        name = first[2:].strip() if first.startswith("# ") and first.endswith(".py") else None
        blocks[name or f"block{len(blocks)}.py"] = block
    return blocks


def test_program_example_runs(tmp_path: Path) -> None:
    blocks = python_blocks()
    for name in ("calc.py", "main.py"):
        (tmp_path / name).write_text(blocks[name], encoding="utf-8")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path), str(ROOT)]))
    result = subprocess.run(
        [sys.executable, "main.py"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (result.returncode, result.stdout) == (0, "5\n2\n"), result.stderr


def test_testing_example_passes(tmp_path: Path) -> None:
    block = next(code for code in python_blocks().values() if "connect_in_memory" in code)
    (tmp_path / "test_readme_example.py").write_text(block, encoding="utf-8")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    result = subprocess.run(
        [sys.executable, "-m", "twisted.trial", "test_readme_example"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "PASSED (successes=1)" in result.stdout
