"""The plugin index: a cached snapshot of the registry, so listing plugins and finding a loader import no plugin."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from neurode.framework import plugin_index
from neurode.framework import registry as registry_module


@pytest.fixture
def index_on(tmp_path, monkeypatch):
    monkeypatch.setenv(plugin_index.INDEX_ENV, "1")
    monkeypatch.setenv(plugin_index.CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.delenv(registry_module.DISABLE_ENV, raising=False)
    return tmp_path / "cache"


def test_the_index_is_written_once_and_read_back(index_on):
    built = plugin_index.get()
    [path] = list(index_on.iterdir())
    assert json.loads(path.read_text()) == built
    assert plugin_index.read() == built
    loaders = {c["name"]: c for c in built["components"] if c["kind"] == "loader"}
    assert loaders["zarr"]["object"] == "neurode.plugins.loaders.zarr_store:ZarrLoader"
    assert loaders["zarr"]["suffixes"] == [".zarr"] and loaders["zarr"]["builtin"] is True
    assert plugin_index.load_object(loaders["zarr"]["object"]).name == "zarr"
    assert built["commands"] is None, "commands are known only once the command line has loaded them"


def test_what_decides_the_registry_changes_the_fingerprint(index_on, monkeypatch):
    plugin_index.get()
    before = plugin_index.fingerprint()
    monkeypatch.setenv(registry_module.DISABLE_ENV, "all")
    assert plugin_index.fingerprint() != before
    assert plugin_index.read() is None, "a stale index is never used"


def test_switched_off_it_neither_reads_nor_writes(index_on, monkeypatch):
    monkeypatch.setenv(plugin_index.INDEX_ENV, "0")
    assert plugin_index.get()["components"], "the registry still answers"
    assert not index_on.exists()


def test_an_unwritable_cache_is_skipped(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv(plugin_index.INDEX_ENV, "1")
    monkeypatch.setenv(plugin_index.CACHE_ENV, str(blocker / "cache"))
    assert plugin_index.get()["components"]


STARTUP = """
import sys
from neurode.cli.app import main

for argv in {commands!r}:
    sys.argv = ["neurode", *argv]
    try:
        main()
    except SystemExit as exit:
        assert exit.code in (0, None), (argv, exit.code)
    heavy = sorted(name for name in ("torch", "neurode.framework.explicit_rk") if name in sys.modules)
    print(" ".join(argv), "->", ",".join(heavy) or "light", file=sys.stderr)
"""


def test_help_version_plugins_and_data_info_import_no_torch_once_the_index_is_warm(tmp_path):
    """Start-up: with a current index, these commands need neither torch nor any solver plugin."""
    from neurode.datasets.examples import irregular_example
    from neurode.datasets.io import write_zarr

    store = write_zarr(irregular_example(), tmp_path / "e.zarr")
    env = {**os.environ, plugin_index.INDEX_ENV: "1", plugin_index.CACHE_ENV: str(tmp_path / "cache")}
    env.pop(registry_module.DISABLE_ENV, None)
    # The first --help builds the registry (torch and all) and records the plugin commands.
    subprocess.run([sys.executable, "-m", "neurode.cli", "--help"], env=env, check=True, capture_output=True)
    commands = [
        ["--version"], ["--help"], ["plugins"], ["plugins", "--kind", "loader", "--json"], ["data", "info", str(store)]
    ]
    script = textwrap.dedent(STARTUP.format(commands=commands))
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    reports = [line for line in result.stderr.splitlines() if "->" in line]
    assert len(reports) == len(commands), result.stderr
    assert all(line.endswith("-> light") for line in reports), result.stderr
