"""``neurode plugins``: the table, ``--json``, ``--kind``, failures, disabled plugins, conflicts."""

from __future__ import annotations

import json

import pytest

import neurode
from neurode.cli.app import app
from neurode.framework.registry import KINDS


def _rows(stdout: str) -> list[list[str]]:
    """Cells of the rich table rows (lines drawn with │)."""
    return [[cell.strip() for cell in line.split("│")[1:-1]] for line in stdout.splitlines() if line.startswith("│")]


def test_table_lists_kind_name_distribution_version_and_description(runner, acme_site):
    result = runner.invoke(app, ["plugins"])
    assert result.exit_code == 0, result.output
    rows = _rows(result.stdout)
    assert ["solver", "euler", f"neurode {neurode.__version__}", "[fixed step] forward Euler, order 1."] in rows
    assert ["dynamics", "acme_mlp", "neurode-acme 1.4.0", "Acme's tiny MLP vector field."] in rows
    assert "2 components from 2 distribution(s)." in result.stdout


def test_table_reports_failed_plugins_and_conflicts(runner, acme_site):
    result = runner.invoke(app, ["plugins"])
    assert result.exit_code == 0
    assert "Plugins that failed to load" in result.stdout
    assert ["neurode-broken 0.0.1", "broken", "ImportError: libacme.so: cannot open shared object file"] in _rows(
        result.stdout
    )
    assert "Names registered twice" in result.stdout
    [conflict] = [row for row in _rows(result.stdout) if row[:2] == ["solver", "dopri5"]]
    assert "neurode 0.1.0 (plugin neurode_clitest_builtin)" in conflict[2]
    assert "neurode-acme 1.4.0 (plugin acme)" in conflict[2]
    # the load failure is also a warning, on stderr only
    assert "warning:" in result.stderr and "neurode-broken" in result.stderr
    assert "warning:" not in result.stdout


def test_table_reports_disabled_plugins(runner, acme_site):
    result = runner.invoke(app, ["plugins"], env={"NEURODE_DISABLE_PLUGINS": "neurode-acme"})
    assert result.exit_code == 0
    assert "Plugins disabled by NEURODE_DISABLE_PLUGINS=neurode-acme" in result.stdout
    assert ["neurode-acme 1.4.0", "acme"] in _rows(result.stdout)
    assert "acme_mlp" not in result.stdout


def test_json_report(runner, acme_site):
    result = runner.invoke(app, ["plugins", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["neurode_version"] == neurode.__version__
    assert report["kind"] is None
    assert {(c["kind"], c["name"], c["distribution"], c["version"]) for c in report["components"]} == {
        ("solver", "euler", "neurode", neurode.__version__),
        ("dynamics", "acme_mlp", "neurode-acme", "1.4.0"),
    }
    acme = next(c for c in report["components"] if c["name"] == "acme_mlp")
    assert acme == {
        "kind": "dynamics",
        "name": "acme_mlp",
        "distribution": "neurode-acme",
        "version": "1.4.0",
        "plugin": "acme",
        "description": "Acme's tiny MLP vector field.",
    }
    assert report["failures"] == [
        {
            "distribution": "neurode-broken",
            "version": "0.0.1",
            "plugin": "broken",
            "error": "ImportError: libacme.so: cannot open shared object file",
        }
    ]
    assert report["disabled"] == []
    [conflict] = report["conflicts"]
    assert (conflict["kind"], conflict["name"]) == ("solver", "dopri5")
    assert [s["distribution"] for s in conflict["sources"]] == ["neurode", "neurode-acme"]


def test_json_with_disabled_plugin(runner, acme_site):
    result = runner.invoke(app, ["plugins", "--json"], env={"NEURODE_DISABLE_PLUGINS": "all"})
    report = json.loads(result.stdout)
    assert report["disabled"] == [
        {"distribution": "neurode-acme", "version": "1.4.0", "plugin": "acme"},
        {"distribution": "neurode-broken", "version": "0.0.1", "plugin": "broken"},
    ]
    assert report["failures"] == []
    assert [c["name"] for c in report["components"]] == ["dopri5", "euler"]


def test_kind_filters_components_and_conflicts(runner, acme_site):
    report = json.loads(runner.invoke(app, ["plugins", "--kind", "dynamics", "--json"]).stdout)
    assert report["kind"] == "dynamics"
    assert [c["name"] for c in report["components"]] == ["acme_mlp"]
    assert report["conflicts"] == []

    result = runner.invoke(app, ["plugins", "-k", "SOLVER"])
    assert result.exit_code == 0
    names = [row[1] for row in _rows(result.stdout) if row[0] == "solver"]
    assert "euler" in names and "acme_mlp" not in result.stdout


def test_kind_without_components_says_so(runner, acme_site):
    result = runner.invoke(app, ["plugins", "--kind", "loader"])
    assert result.exit_code == 0
    assert "No loader components registered." in result.stdout


def test_bad_kind_is_a_usage_error_listing_the_kinds(runner, acme_site):
    result = runner.invoke(app, ["plugins", "--kind", "solvers"])
    assert result.exit_code == 2
    assert "'solvers'" in result.stderr
    for kind in KINDS:
        assert f"'{kind}'" in result.stderr
    assert result.stdout == ""


@pytest.mark.parametrize("columns", ["60", "250"])
def test_table_never_cuts_names(runner, acme_site, columns):
    result = runner.invoke(app, ["plugins"], env={"COLUMNS": columns})
    assert result.exit_code == 0
    assert "…" not in result.stdout


LONG_NAMES = '''
import neurode

class Heun:
    """torchdiffeq's adaptive_heun: Heun-Euler 2(1); the whole solve runs in torchdiffeq."""

@neurode.hookimpl
def register_solvers(register):
    register("torchdiffeq.adaptive_heun", Heun)
    register("torchdiffeq.implicit_adams", Heun)
'''


def test_names_stay_whole_in_an_80_column_table(runner, plugin_site):
    plugin_site.builtin("neurode_clitest_long_names", LONG_NAMES)
    plugin_site.install()
    result = runner.invoke(app, ["plugins"], env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    names = [row[1] for row in _rows(result.stdout) if row[0] == "solver"]
    assert names == ["torchdiffeq.adaptive_heun", "torchdiffeq.implicit_adams"]
    assert all(len(line) <= 80 for line in result.stdout.splitlines())
