"""Installing real plugin packages: examples/neurode-example-plugin and examples/neurode-broken-plugin.

Both are built and installed with pip, as a user would install them, into a
temporary target directory (``pip install --target``: the test environment is
itself a venv, and must not be changed). ``neurode`` then runs in a subprocess
with that directory first on ``PYTHONPATH``, where importlib.metadata finds
their ``.dist-info`` and so their ``neurode`` entry points.

Building without isolation (no download) needs setuptools >= 70.1 in the test
environment; the ``test`` extras pull it in.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.version import Version

pytestmark = pytest.mark.install

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
EXAMPLE = "neurode-example-plugin"
BROKEN = "neurode-broken-plugin"


def _version_of(package: str) -> str:
    return tomllib.loads((EXAMPLES / package / "pyproject.toml").read_text())["project"]["version"]


@pytest.fixture(scope="module")
def site_dir(tmp_path_factory) -> Path:
    setuptools_version = importlib.metadata.version("setuptools")
    if Version(setuptools_version) < Version("70.1"):
        pytest.fail(
            f"building the example plugins offline needs setuptools >= 70.1 in the test environment, "
            f"found {setuptools_version}; install the test extras: pip install -e '.[test]'"
        )
    sources = tmp_path_factory.mktemp("sources")
    target = tmp_path_factory.mktemp("site")
    # build from copies: an in-tree build would leave build/ and *.egg-info in examples/
    copies = [
        str(shutil.copytree(EXAMPLES / name, sources / name, ignore=shutil.ignore_patterns("build", "*.egg-info")))
        for name in (EXAMPLE, BROKEN)
    ]
    command = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--no-index",
               "--disable-pip-version-check", "--target", str(target), *copies]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"pip failed:\n{result.stdout}\n{result.stderr}"
    return target


def run_neurode(site: Path, *args: str, env: dict[str, str] | None = None, script: bool = False):
    environment = {k: v for k, v in os.environ.items() if k not in ("NEURODE_DISABLE_PLUGINS", "NEURODE_DEBUG")}
    environment["PYTHONPATH"] = os.pathsep.join(p for p in (str(site), os.environ.get("PYTHONPATH", "")) if p)
    environment["COLUMNS"] = "250"
    environment.update(env or {})
    program = [str(Path(sys.executable).with_name("neurode"))] if script else [sys.executable, "-m", "neurode"]
    return subprocess.run([*program, *args], capture_output=True, text=True, timeout=120, env=environment)


def test_plugins_lists_the_example_component_and_reports_the_broken_plugin(site_dir):
    result = run_neurode(site_dir, "plugins", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)

    [component] = [c for c in report["components"] if c["name"] == "damped_linear"]
    assert component == {
        "kind": "dynamics",
        "name": "damped_linear",
        "distribution": EXAMPLE,
        "version": _version_of(EXAMPLE),
        "plugin": "example",
        "description": "Damped linear dynamics dy/dt = (A - gamma I) y with learnable A.",
    }
    [failure] = [f for f in report["failures"] if f["distribution"] == BROKEN]
    assert failure["version"] == _version_of(BROKEN)
    assert failure["plugin"] == "broken"
    assert failure["error"].startswith("ImportError") and "_native_solver_kernels" in failure["error"]
    assert f"warning: neurode plugin 'broken' from distribution {BROKEN} {_version_of(BROKEN)} failed to load" in (
        result.stderr
    )
    assert "Traceback" not in result.stderr


def test_plugins_table_shows_both(site_dir):
    result = run_neurode(site_dir, "plugins")
    assert result.returncode == 0, result.stderr
    [row] = [line for line in result.stdout.splitlines() if "damped_linear" in line]
    assert EXAMPLE in row and _version_of(EXAMPLE) in row
    assert BROKEN in result.stdout.split("Plugins that failed to load")[1]


def test_example_command_works_beside_the_broken_plugin(site_dir):
    result = run_neurode(site_dir, "example-hello", "--damping", "0.1")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        f"Hello from {EXAMPLE} {_version_of(EXAMPLE)}!",
        # A = [[0, 1], [-1, 0]], gamma = 0.1: f(y=(1, 0)) = (0 - 0.1, -1 - 0)
        "dynamics 'damped_linear': f(t=0, y=[1.0, 0.0]) = [-0.1, -1.0]",
    ]
    assert BROKEN in result.stderr


def test_console_script_lists_the_example_component(site_dir):
    if not Path(sys.executable).with_name("neurode").exists():
        pytest.skip("the neurode console script is not installed beside this Python")
    result = run_neurode(site_dir, "plugins", "--kind", "dynamics", "--json", script=True)
    assert result.returncode == 0, result.stderr
    assert [c["distribution"] for c in json.loads(result.stdout)["components"] if c["name"] == "damped_linear"] == [
        EXAMPLE
    ]


def test_disabling_plugins_by_distribution_name(site_dir):
    result = run_neurode(
        site_dir, "plugins", "--json", env={"NEURODE_DISABLE_PLUGINS": f"{BROKEN},neurode_example_plugin"}
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert {d["distribution"] for d in report["disabled"]} == {EXAMPLE, BROKEN}
    assert all(f["distribution"] != BROKEN for f in report["failures"])
    assert all(c["distribution"] != EXAMPLE for c in report["components"])
    assert BROKEN not in result.stderr

    result = run_neurode(site_dir, "example-hello", env={"NEURODE_DISABLE_PLUGINS": EXAMPLE})
    assert result.returncode == 2
    assert "No such command 'example-hello'" in result.stderr
