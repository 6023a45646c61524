"""Every snippet in README.md runs as written: the Python blocks in order, and each ``neurode`` line of the bash blocks.

A README whose examples use undefined names, or call a command that does not
exist, costs every newcomer their first hour. Python blocks run in one
namespace, top to bottom, in a temporary directory (they may build on one
another, as a reader does). ``text`` blocks are synopses with placeholders
and are not run; ``pip``/``pytest`` lines install or test and are not run here
(``tests/test_readme_ci.py`` keeps those honest).
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
from typer.testing import CliRunner

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
BLOCKS = re.findall(r"```(\w+)\n(.*?)```", README, flags=re.DOTALL)


def _python_blocks() -> list[str]:
    return [code for language, code in BLOCKS if language == "python"]


def _neurode_lines() -> list[str]:
    lines = []
    for language, code in BLOCKS:
        if language != "bash":
            continue
        for line in code.splitlines():
            command = line.split("  #", 1)[0].strip()
            if command.startswith("neurode "):
                lines.append(command)
    return lines


def test_the_readme_has_snippets_to_run():
    assert len(_python_blocks()) >= 4 and len(_neurode_lines()) >= 4


def test_python_snippets_run_in_order(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "readme"}
    for number, code in enumerate(_python_blocks(), start=1):
        try:
            exec(compile(code, f"README.md python block {number}", "exec"), namespace)
        except Exception as exc:  # name the block, so the README line is easy to find
            pytest.fail(f"README python block {number} failed: {type(exc).__name__}: {exc}\n{code}")


def test_neurode_command_lines_run(tmp_path, monkeypatch):
    from neurode.cli.app import app

    monkeypatch.chdir(tmp_path)
    runner = CliRunner(env={"COLUMNS": "120"})
    for line in _neurode_lines():
        result = runner.invoke(app, shlex.split(line)[1:])
        assert result.exit_code == 0, f"{line!r} failed ({result.exit_code}): {result.output}"
