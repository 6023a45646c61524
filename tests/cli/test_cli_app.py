"""The ``neurode`` application: help, version, plugin commands, and how errors reach the user."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest
import typer

import neurode
from neurode.cli import app as app_module
from neurode.cli.app import COMMAND_MODULES, app
from neurode.framework import registry as registry_module


def test_help_lists_builtin_and_plugin_commands_and_global_options(runner, acme_site):
    for flag in ("--help", "-h"):
        result = runner.invoke(app, [flag])
        assert result.exit_code == 0, result.output
        for word in ("plugins", "train", "acme-hello", "--version", "--debug"):
            assert word in result.stdout


def test_no_arguments_shows_help(runner, acme_site):
    result = runner.invoke(app, [])
    assert "Usage" in result.output and "plugins" in result.output


def test_version_prints_the_package_version_without_loading_plugins(runner, monkeypatch):
    def no_registry():
        raise AssertionError("--version must not build the registry")

    monkeypatch.setattr(registry_module, "_registry", None)
    monkeypatch.setattr(registry_module, "Registry", no_registry)
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.stdout == f"neurode {neurode.__version__}\n"


def test_builtin_commands_are_named_as_data():
    for module_name in COMMAND_MODULES:
        module = importlib.import_module(module_name)
        assert callable(module.register), module_name
    assert COMMAND_MODULES[:2] == ("neurode.cli.plugins", "neurode.cli.train")
    names = {info.name for info in app.registered_commands}
    assert {"plugins", "train"} <= names


def test_register_builtin_commands_registers_each_module_on_the_given_app(monkeypatch):
    target = typer.Typer()
    monkeypatch.setattr(app_module, "COMMAND_MODULES", ("neurode.cli.train",))
    app_module.register_builtin_commands(target)
    assert [info.name for info in target.registered_commands] == ["train"]


def test_cli_import_and_version_do_not_import_torch():
    code = (
        "import sys\n"
        "import neurode.cli.app\n"
        "assert 'torch' not in sys.modules, 'importing neurode.cli.app imported torch'\n"
        "sys.argv = ['neurode', '--version']\n"
        "try:\n"
        "    neurode.cli.app.main()\n"
        "except SystemExit as exc:\n"
        "    assert exc.code in (0, None), exc.code\n"
        "assert 'torch' not in sys.modules, 'neurode --version imported torch'\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"neurode {neurode.__version__}"


def test_unknown_command_is_a_usage_error_with_a_suggestion(runner, acme_site):
    result = runner.invoke(app, ["plugin"])
    assert result.exit_code == 2
    assert "No such command 'plugin'" in result.stderr
    assert "plugins" in result.stderr


# --------------------------------------------------------------------------- plugin commands


def test_plugin_command_runs(runner, acme_site):
    result = runner.invoke(app, ["acme-hello", "--name", "Ada"])
    assert result.exit_code == 0, result.output
    assert result.stdout == "hello Ada from acme\n"


def test_plugin_load_failures_are_warnings_on_stderr(runner, acme_site):
    result = runner.invoke(app, ["acme-hello"])
    assert result.exit_code == 0
    assert "warning:" in result.stderr
    assert "neurode-broken 0.0.1" in result.stderr
    assert "ImportError: libacme.so: cannot open shared object file" in result.stderr
    assert "Traceback" not in result.output
    assert result.stdout == "hello world from acme\n"


def test_a_failing_register_commands_hook_is_a_warning_and_other_commands_work(runner, plugin_site):
    plugin_site.module("neurode_badcmd", '''
        import neurode

        @neurode.hookimpl
        def register_commands(app):
            raise RuntimeError("needs typer >= 99")
    ''')
    plugin_site.distribution("neurode-badcmd", "1.0", {"badcmd": "neurode_badcmd"})
    plugin_site.install()

    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    assert "neurode-badcmd 1.0" in result.stderr and "RuntimeError: needs typer >= 99" in result.stderr
    assert "plugins" in result.stdout and "train" in result.stdout


def test_a_plugin_command_cannot_replace_a_builtin_command(runner, plugin_site):
    plugin_site.module("neurode_hijack", '''
        import typer
        import neurode

        def train():
            typer.echo("hijacked")

        def extra():
            typer.echo("extra")

        @neurode.hookimpl
        def register_commands(app):
            app.command("train")(train)
            app.command("extra")(extra)
    ''')
    plugin_site.distribution("neurode-hijack", "1.0", {"hijack": "neurode_hijack"})
    plugin_site.install()

    result = runner.invoke(app, ["extra"])
    assert result.stdout == "extra\n"
    assert "command named 'train'" in result.stderr and "ignored" in result.stderr
    result = runner.invoke(app, ["train", "--help"])
    assert "hijacked" not in result.output
    assert "Train a model on a trajectory dataset" in result.stdout


def test_plugin_command_groups_are_added(runner, plugin_site):
    plugin_site.module("neurode_grouped", '''
        import typer
        import neurode

        sub = typer.Typer()

        @sub.command("info")
        def info():
            typer.echo("group info")

        @sub.command("list")
        def listing():
            typer.echo("group list")

        @neurode.hookimpl
        def register_commands(app):
            app.add_typer(sub, name="grouped")
    ''')
    plugin_site.distribution("neurode-grouped", "1.0", {"grouped": "neurode_grouped"})
    plugin_site.install()

    result = runner.invoke(app, ["grouped", "info"])
    assert result.exit_code == 0, result.output
    assert result.stdout == "group info\n"


# --------------------------------------------------------------------------- errors


def test_neurode_error_is_one_line_on_stderr_without_traceback(runner, acme_site):
    result = runner.invoke(app, ["acme-fail"])
    assert result.exit_code == 1
    assert "error: acme cannot read 'x.zarr': no variable 'time'" in result.stderr
    assert "Traceback" not in result.output
    assert "acme cannot read" not in result.stdout


@pytest.mark.parametrize("how", ["flag", "env"])
def test_debug_shows_the_traceback(runner, acme_site, how):
    args, env = (["--debug", "acme-fail"], {}) if how == "flag" else (["acme-fail"], {"NEURODE_DEBUG": "1"})
    result = runner.invoke(app, args, env=env)
    assert result.exit_code == 1
    assert "Traceback (most recent call last)" in result.stderr
    assert "NeurodeError: acme cannot read" in result.stderr
    assert "error: acme cannot read 'x.zarr'" in result.stderr


def test_unexpected_exception_is_an_internal_error_pointing_at_debug(runner, acme_site):
    result = runner.invoke(app, ["acme-crash"])
    assert result.exit_code == 3
    assert "internal error: RuntimeError: acme bug" in result.stderr
    assert "--debug" in result.stderr
    assert "Traceback" not in result.output

    result = runner.invoke(app, ["--debug", "acme-crash"])
    assert result.exit_code == 3
    assert "Traceback (most recent call last)" in result.stderr


def test_console_script_entry_point_is_main():
    from importlib.metadata import distribution

    [script] = [ep for ep in distribution("neurode").entry_points if ep.group == "console_scripts"]
    assert (script.name, script.value) == ("neurode", "neurode.cli.app:main")
    assert script.load() is app_module.main


@pytest.mark.parametrize("command", [[], ["data", "info"], ["data", "validate"], ["simulate"], ["plugins"]])
def test_help_shows_flags_without_a_type_label(runner, command):
    result = runner.invoke(app, [*command, "--help"], env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    assert "<bool>" not in result.stdout
    assert "--help" in result.stdout


def test_help_lists_plugin_commands_from_the_index_and_running_one_loads_it(runner, acme_site, tmp_path, monkeypatch):
    from neurode.framework import plugin_index
    from neurode.framework import registry as registry_module

    monkeypatch.setenv(plugin_index.INDEX_ENV, "1")
    monkeypatch.setenv(plugin_index.CACHE_ENV, str(tmp_path / "cache"))
    first = runner.invoke(app, ["--help"])
    assert first.exit_code == 0 and "acme-hello" in first.stdout
    monkeypatch.setattr(registry_module, "_registry", None)  # a new process

    second = runner.invoke(app, ["--help"])
    assert second.exit_code == 0
    assert "acme-hello" in second.stdout and "Say hello from Acme." in second.stdout
    assert registry_module._registry is None, "--help built the registry although the index knew the commands"
    assert "neurode-broken" in second.stderr, "a plugin that failed to load is still reported"

    ran = runner.invoke(app, ["acme-hello", "--name", "index"])
    assert ran.exit_code == 0, ran.output
    assert "hello index from acme" in ran.stdout
