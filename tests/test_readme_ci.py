"""README.md's two set-up commands, and .ci/run running exactly the README's test command.

A newcomer follows the README; CI follows .ci/run. If the two drift apart, CI
passes on a command nobody is told to run.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

INSTALL_AND_TRAIN = "pip install torch==2.13.0 && pip install -e . && neurode train"


def _setup_commands() -> list[str]:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Set up", 1)[1].split("\n## ", 1)[0]
    return [block.strip() for block in re.findall(r"```bash\n(.*?)```", section, flags=re.DOTALL)]


def test_readme_has_exactly_two_setup_commands():
    commands = _setup_commands()
    assert len(commands) == 2, commands
    install_and_train, install_and_test = commands
    assert install_and_train == INSTALL_AND_TRAIN
    assert install_and_test.startswith("pip install torch==2.13.0 && pip install -e '.[test]' && pytest")
    assert "\n" not in install_and_test


def test_ci_runs_the_readme_test_command_verbatim_after_installing_torch():
    script = ROOT / ".ci" / "run"
    assert os.access(script, os.X_OK), ".ci/run must be executable"
    lines = [line.strip() for line in script.read_text().splitlines()]
    assert lines[0].startswith("#!") and "bash" in lines[0]
    assert "set -euo pipefail" in lines
    test_command = _setup_commands()[1]
    assert test_command in lines, f".ci/run must run the README's test command: {test_command}"
    torch_first = lines.index("pip install torch==2.13.0")
    assert torch_first < lines.index(test_command)
    assert any(line.startswith("python3 -m venv .ci-venv") for line in lines[:torch_first])


def test_ci_venv_is_ignored():
    assert ".ci-venv/" in (ROOT / ".gitignore").read_text().splitlines()

