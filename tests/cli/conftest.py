"""A fake plugin landscape for CLI tests, installed into the process-wide registry.

``plugin_site`` writes plugin modules and ``*.dist-info`` directories (METADATA
and entry_points.txt, as pip writes them) into a temporary directory on
``sys.path``, and makes :func:`neurode.framework.registry.get_registry` build a
registry from exactly those — not from neurode's real built-ins nor from
whatever else is installed — so the CLI is tested through its real code path.
"""

from __future__ import annotations

import importlib.metadata
import sys
import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner

from neurode.framework import registry as registry_module

BUILTIN = "neurode_clitest_builtin"

BUILTIN_SOURCE = '''
import neurode

class Euler:
    """[fixed step] forward Euler, order 1."""

class Dopri5:
    """Dormand-Prince 5(4) pair."""

@neurode.hookimpl
def register_solvers(register):
    register("euler", Euler)
    register("dopri5", Dopri5)
'''

ACME_SOURCE = '''
import typer
import neurode
from neurode.framework.errors import NeurodeError

class AcmeMLP:
    """Acme's tiny MLP vector field."""

class AcmeDopri5:
    """Acme's own dopri5."""

@neurode.hookimpl
def register_dynamics(register):
    register("acme_mlp", AcmeMLP)

@neurode.hookimpl
def register_solvers(register):
    register("dopri5", AcmeDopri5)

def hello(name: str = typer.Option("world", "--name")):
    """Say hello from Acme."""
    typer.echo(f"hello {name} from acme")

def fail():
    """Fail the way a user error fails."""
    raise NeurodeError("acme cannot read 'x.zarr': no variable 'time'")

def crash():
    """Fail the way a bug fails."""
    raise RuntimeError("acme bug")

@neurode.hookimpl
def register_commands(app):
    app.command("acme-hello")(hello)
    app.command("acme-fail")(fail)
    app.command("acme-crash")(crash)
'''

BROKEN_SOURCE = '''
raise ImportError("libacme.so: cannot open shared object file")
'''


class PluginSite:
    """A temporary site directory of fake distributions feeding ``get_registry()``."""

    def __init__(self, root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.root = root
        self.monkeypatch = monkeypatch
        self.builtins: list[str] = []
        self.dist_infos: list[Path] = []
        self.modules: list[str] = []
        monkeypatch.syspath_prepend(str(root))

    def module(self, name: str, source: str) -> None:
        (self.root / f"{name}.py").write_text(textwrap.dedent(source))
        self.modules.append(name)

    def builtin(self, name: str, source: str) -> None:
        self.module(name, source)
        self.builtins.append(name)

    def distribution(self, name: str, version: str, entry_points: dict[str, str]) -> None:
        info = self.root / f"{name.replace('-', '_')}-{version}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
        lines = "".join(f"{ep} = {target}\n" for ep, target in entry_points.items())
        (info / "entry_points.txt").write_text(f"[neurode]\n{lines}")
        self.dist_infos.append(info)

    def install(self) -> None:
        """Make ``get_registry()`` build a fresh registry from this site alone."""
        real_registry = registry_module.Registry
        builtins = tuple(self.builtins)
        dist_infos = list(self.dist_infos)

        def registry_from_site() -> registry_module.Registry:
            eps = [
                ep for info in dist_infos
                for ep in importlib.metadata.Distribution.at(info).entry_points
                if ep.group == registry_module.ENTRY_POINT_GROUP
            ]
            return real_registry(builtins=builtins, entry_points=eps)

        self.monkeypatch.setattr(registry_module, "Registry", registry_from_site)
        self.monkeypatch.setattr(registry_module, "_registry", None)

    def forget_modules(self) -> None:
        for name in self.modules:
            sys.modules.pop(name, None)


@pytest.fixture
def plugin_site(tmp_path, monkeypatch):
    site = PluginSite(tmp_path / "site", monkeypatch)
    site.root.mkdir()
    monkeypatch.delenv(registry_module.DISABLE_ENV, raising=False)
    monkeypatch.delenv("NEURODE_DEBUG", raising=False)
    yield site
    site.forget_modules()


@pytest.fixture
def acme_site(plugin_site):
    """A built-in with two solvers, ``neurode-acme`` (a dynamics, a conflicting solver,
    three commands) and ``neurode-broken`` (fails to import)."""
    plugin_site.builtin(BUILTIN, BUILTIN_SOURCE)
    plugin_site.module("neurode_acme_plugin", ACME_SOURCE)
    plugin_site.distribution("neurode-acme", "1.4.0", {"acme": "neurode_acme_plugin"})
    plugin_site.module("neurode_broken_clitest", BROKEN_SOURCE)
    plugin_site.distribution("neurode-broken", "0.0.1", {"broken": "neurode_broken_clitest"})
    plugin_site.install()
    return plugin_site


@pytest.fixture
def runner():
    # wide enough that rich never folds a table cell
    return CliRunner(env={"COLUMNS": "250"})
