"""The registry: discovery order, sources, conflicts, failures, disabling, lookups.

Every test builds its own :class:`Registry` from fake built-in modules (put in
``sys.modules``) and fake entry points, so nothing here depends on which
built-in plugins exist or which distributions are installed.
"""

from __future__ import annotations

import functools
import sys
import types
import warnings
from collections.abc import Callable

import pytest

import neurode
from neurode.framework import registry as registry_module
from neurode.framework.errors import (
    DuplicateComponentError,
    PluginUnavailableError,
    RegistryError,
    UnknownComponentError,
)
from neurode.framework.registry import KIND_HOOKS, KINDS, NeurodePluginWarning, Registry

# --------------------------------------------------------------------------- fakes


class Euler:
    """Forward Euler, order 1.

    More text that is not the description.
    """


class Dopri5:
    """Dormand-Prince 5(4)."""


class ExplicitRK:
    """Explicit Runge-Kutta method from a tableau."""

    def __init__(self, tableau=None):
        self.tableau = tableau


class FakeDistribution:
    def __init__(self, name: str, version: str) -> None:
        self.name = name
        self.version = version


class FakeEntryPoint:
    """What the registry uses of an ``importlib.metadata.EntryPoint``: name, dist, load()."""

    def __init__(self, name: str, dist: str, version: str, plugin: object = None, error: Exception | None = None,
                 log: list[str] | None = None) -> None:
        self.name = name
        self.dist = FakeDistribution(dist, version)
        self.plugin = plugin
        self.error = error
        self.loads = 0
        self.log = log

    def load(self) -> object:
        self.loads += 1
        if self.log is not None:
            self.log.append(f"load {self.name}")
        if self.error is not None:
            raise self.error
        return self.plugin


def make_plugin(**hooks: Callable) -> types.SimpleNamespace:
    """A plugin object whose attributes are the given hook implementations."""
    return types.SimpleNamespace(**{name: neurode.hookimpl(fn) for name, fn in hooks.items()})


def registering(kind: str, *entries: tuple[str, object]) -> dict[str, Callable]:
    """Hook implementations that register ``entries`` (name, factory) as components of ``kind``."""

    def hook(register):
        for name, component in entries:
            register(name, component)

    return {KIND_HOOKS[kind]: hook}


@pytest.fixture
def builtin_module(monkeypatch):
    """Install a fake built-in plugin module in ``sys.modules`` under ``name``."""

    def install(name: str, **hooks: Callable) -> types.ModuleType:
        module = types.ModuleType(name)
        for hook_name, fn in hooks.items():
            setattr(module, hook_name, neurode.hookimpl(fn))
        monkeypatch.setitem(sys.modules, name, module)
        return module

    return install


@pytest.fixture(autouse=True)
def no_disable_env(monkeypatch):
    monkeypatch.delenv(registry_module.DISABLE_ENV, raising=False)


def quiet_registry(**kwargs) -> Registry:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NeurodePluginWarning)
        return Registry(**kwargs)


# --------------------------------------------------------------------------- discovery


def test_builtins_are_loaded_first_in_order_then_entry_points(builtin_module):
    log: list[str] = []

    def hook_logging(label):
        return {"register_solvers": lambda register: log.append(f"hooks {label}")}

    builtin_module("fake_builtin_b", **hook_logging("builtin_b"))
    builtin_module("fake_builtin_a", **hook_logging("builtin_a"))
    ep = FakeEntryPoint("ext", "neurode-ext", "1.0", make_plugin(**hook_logging("ext")), log=log)

    Registry(builtins=("fake_builtin_b", "fake_builtin_a"), entry_points=[ep])

    assert log == ["hooks builtin_b", "hooks builtin_a", "load ext", "hooks ext"]


def test_component_remembers_kind_name_distribution_and_version(builtin_module):
    builtin_module("fake_builtin", **registering("solver", ("euler", Euler)))
    ep = FakeEntryPoint("fancy", "neurode-fancy", "1.2.3", make_plugin(**registering("dynamics", ("damped", Dopri5))))

    reg = Registry(builtins=("fake_builtin",), entry_points=[ep])

    euler = reg.get("solver", "euler")
    assert (euler.kind, euler.name, euler.obj) == ("solver", "euler", Euler)
    assert (euler.source.distribution, euler.source.version) == ("neurode", neurode.__version__)
    assert euler.source.plugin == "fake_builtin" and euler.source.builtin
    damped = reg.get("dynamics", "damped")
    assert damped.source == registry_module.Source("neurode-fancy", "1.2.3", "fancy")
    assert not damped.source.builtin
    assert damped.as_dict() == {
        "kind": "dynamics",
        "name": "damped",
        "distribution": "neurode-fancy",
        "version": "1.2.3",
        "plugin": "fancy",
        "description": "Dormand-Prince 5(4).",
    }


def test_each_hook_registers_its_own_kind():
    hooks = {
        hook: (lambda kind: lambda register: register(f"my_{kind}", Euler))(kind) for kind, hook in KIND_HOOKS.items()
    }
    ep = FakeEntryPoint("all", "neurode-all", "0.1", make_plugin(**hooks))

    reg = Registry(builtins=(), entry_points=[ep])

    for kind in KINDS:
        assert reg.names(kind) == [f"my_{kind}"]
    assert {c.kind for c in reg} == set(KINDS)


def test_description_is_given_or_first_docstring_line():
    def hook(register):
        register("euler", Euler)
        register("custom", Euler, description="my own words")
        register("rk", functools.partial(ExplicitRK, tableau="rk4"))

    reg = Registry(
        builtins=(), entry_points=[FakeEntryPoint("p", "neurode-p", "1", make_plugin(register_solvers=hook))]
    )

    assert reg.get("solver", "euler").description == "Forward Euler, order 1."
    assert reg.get("solver", "custom").description == "my own words"
    # a partial describes itself by the function it wraps, not by partial's own docstring
    assert reg.get("solver", "rk").description == "Explicit Runge-Kutta method from a tableau."


def test_same_name_in_two_kinds_is_not_a_conflict():
    hooks = {**registering("solver", ("mlp", Euler)), **registering("dynamics", ("mlp", Dopri5))}
    with warnings.catch_warnings():
        warnings.simplefilter("error", NeurodePluginWarning)
        reg = Registry(builtins=(), entry_points=[FakeEntryPoint("p", "neurode-p", "1", make_plugin(**hooks))])
    assert reg.get("solver", "mlp").obj is Euler
    assert reg.get("dynamics", "mlp").obj is Dopri5


# --------------------------------------------------------------------------- duplicates


def test_duplicate_name_is_an_error_naming_both_sources_and_the_rest_works(builtin_module):
    builtin_module("fake_builtin", **registering("solver", ("dopri5", Dopri5), ("euler", Euler)))
    ep = FakeEntryPoint(
        "fast", "neurode-fast", "2.0", make_plugin(**registering("solver", ("dopri5", Euler), ("rk_fast", Euler)))
    )

    with pytest.warns(NeurodePluginWarning, match=r"solver 'dopri5' is registered twice") as record:
        reg = Registry(builtins=("fake_builtin",), entry_points=[ep])
    message = str(record[0].message)
    assert f"neurode {neurode.__version__}" in message and "neurode-fast 2.0" in message

    with pytest.raises(DuplicateComponentError) as excinfo:
        reg.get("solver", "dopri5")
    assert f"neurode {neurode.__version__} (plugin 'fake_builtin')" in str(excinfo.value)
    assert "neurode-fast 2.0 (plugin 'fast')" in str(excinfo.value)
    assert "NEURODE_DISABLE_PLUGINS" in str(excinfo.value)
    assert ("solver", "dopri5") not in reg
    # everything else from both plugins still works
    assert reg.get("solver", "euler").obj is Euler
    assert reg.get("solver", "rk_fast").source.distribution == "neurode-fast"
    [(kind, name, sources)] = reg.conflicts()
    assert (kind, name) == ("solver", "dopri5")
    assert [s.distribution for s in sources] == ["neurode", "neurode-fast"]


def test_third_registration_of_a_conflicting_name_is_added_to_the_conflict():
    eps = [
        FakeEntryPoint(f"p{i}", f"neurode-p{i}", "1", make_plugin(**registering("model", ("ode_rnn", Euler))))
        for i in range(3)
    ]
    reg = quiet_registry(builtins=(), entry_points=eps)
    [(_, _, sources)] = reg.conflicts()
    assert [s.distribution for s in sources] == ["neurode-p0", "neurode-p1", "neurode-p2"]
    with pytest.raises(DuplicateComponentError, match="neurode-p2"):
        reg.get("model", "ode_rnn")


# --------------------------------------------------------------------------- failures


def test_import_failure_warns_naming_distribution_and_error_and_the_rest_works(builtin_module):
    builtin_module("fake_builtin", **registering("solver", ("euler", Euler)))
    broken = FakeEntryPoint("broken", "neurode-broken", "0.3", error=ImportError("No module named 'fastlib'"))
    good = FakeEntryPoint("good", "neurode-good", "1.0", make_plugin(**registering("loader", ("csv", Euler))))

    with pytest.warns(NeurodePluginWarning) as record:
        reg = Registry(builtins=("fake_builtin",), entry_points=[broken, good])

    [warning] = record
    assert "neurode-broken 0.3" in str(warning.message)
    assert "'broken'" in str(warning.message)
    assert "ImportError: No module named 'fastlib'" in str(warning.message)
    [failure] = reg.failures
    assert (failure.distribution, failure.version, failure.plugin) == ("neurode-broken", "0.3", "broken")
    assert failure.error == "ImportError: No module named 'fastlib'"
    assert "ImportError" in failure.traceback
    assert failure.as_dict()["error"] == failure.error
    assert reg.get("solver", "euler").obj is Euler
    assert reg.get("loader", "csv").source.distribution == "neurode-good"


def test_missing_builtin_module_is_a_failure_of_distribution_neurode(builtin_module):
    builtin_module("fake_builtin", **registering("solver", ("euler", Euler)))
    with pytest.warns(NeurodePluginWarning, match="fake_builtin_missing"):
        reg = Registry(builtins=("fake_builtin_missing", "fake_builtin"), entry_points=[])
    [failure] = reg.failures
    assert failure.distribution == "neurode"
    assert failure.error.startswith("ModuleNotFoundError")
    assert reg.names("solver") == ["euler"]


def test_a_plugin_whose_hook_raises_registers_nothing():
    def hook(register):
        register("half_done", Euler)
        raise RuntimeError("tableau file missing")

    ep = FakeEntryPoint("flaky", "neurode-flaky", "1", make_plugin(register_solvers=hook))
    with pytest.warns(NeurodePluginWarning, match="RuntimeError: tableau file missing"):
        reg = Registry(builtins=(), entry_points=[ep])
    assert reg.names("solver") == []
    assert reg.failures[0].distribution == "neurode-flaky"


@pytest.mark.parametrize(
    ("name", "component", "expected"),
    [("", Euler, "name must be a non-empty string"), ("bad", 42, "must be a factory")],
)
def test_malformed_registration_is_a_plugin_failure(name, component, expected):
    ep = FakeEntryPoint(
        "bad", "neurode-bad", "1", make_plugin(register_models=lambda register: register(name, component))
    )
    with pytest.warns(NeurodePluginWarning, match=expected):
        reg = Registry(builtins=(), entry_points=[ep])
    assert reg.failures[0].error.startswith("TypeError")


def test_hookimpl_with_wrong_argument_name_is_a_plugin_failure():
    def register_solvers(reg):  # the argument must be called ``register``
        reg("euler", Euler)

    ep = FakeEntryPoint("typo", "neurode-typo", "1", make_plugin(register_solvers=register_solvers))
    with pytest.warns(NeurodePluginWarning, match="neurode-typo"):
        reg = Registry(builtins=(), entry_points=[ep])
    assert reg.names("solver") == []


def test_asking_for_a_component_of_a_failed_plugin_says_it_failed():
    broken = FakeEntryPoint("broken_rk", "neurode-broken", "0.3", error=ImportError("libfoo.so: cannot open"))
    reg = quiet_registry(builtins=(), entry_points=[broken])

    with pytest.raises(PluginUnavailableError) as excinfo:
        reg.get("solver", "broken_rk")
    message = str(excinfo.value)
    assert "failed to load" in message and "neurode-broken 0.3" in message and "libfoo.so: cannot open" in message

    # a name the failed plugin may have provided: unknown, and the message points at the failure
    with pytest.raises(UnknownComponentError) as excinfo:
        reg.get("solver", "broken_rk45")
    assert "failed to load" in str(excinfo.value) and "neurode-broken" in str(excinfo.value)


# --------------------------------------------------------------------------- NEURODE_DISABLE_PLUGINS


def _two_third_party_plugins() -> list[FakeEntryPoint]:
    return [
        FakeEntryPoint("fancy", "neurode-fancy", "1.0", make_plugin(**registering("dynamics", ("fancy_mlp", Euler)))),
        FakeEntryPoint("other", "neurode-other", "2.0", make_plugin(**registering("dynamics", ("other_mlp", Euler)))),
    ]


@pytest.mark.parametrize("setting", ["neurode-fancy", " Neurode-Fancy , unrelated ", "fancy", "neurode_fancy"])
def test_disable_env_switches_off_a_distribution_by_name(builtin_module, monkeypatch, setting):
    builtin_module("fake_builtin", **registering("solver", ("euler", Euler)))
    monkeypatch.setenv("NEURODE_DISABLE_PLUGINS", setting)
    fancy, other = _two_third_party_plugins()

    reg = Registry(builtins=("fake_builtin",), entry_points=[fancy, other])

    assert fancy.loads == 0, "a disabled plugin must not even be imported"
    assert reg.names("dynamics") == ["other_mlp"]
    assert reg.names("solver") == ["euler"]
    assert [s.distribution for s in reg.disabled] == ["neurode-fancy"]
    with pytest.raises(PluginUnavailableError, match="disabled by NEURODE_DISABLE_PLUGINS"):
        reg.get("dynamics", "fancy")


def test_disable_all_switches_off_every_third_party_plugin_but_not_builtins(builtin_module, monkeypatch):
    builtin_module("fake_builtin", **registering("solver", ("euler", Euler)))
    monkeypatch.setenv("NEURODE_DISABLE_PLUGINS", "all")
    eps = _two_third_party_plugins()

    reg = Registry(builtins=("fake_builtin",), entry_points=eps)

    assert [ep.loads for ep in eps] == [0, 0]
    assert reg.names("dynamics") == []
    assert reg.names("solver") == ["euler"]
    assert {s.distribution for s in reg.disabled} == {"neurode-fancy", "neurode-other"}


def test_disabled_argument_overrides_the_environment(monkeypatch):
    monkeypatch.setenv("NEURODE_DISABLE_PLUGINS", "all")
    reg = Registry(builtins=(), entry_points=_two_third_party_plugins(), disabled=["neurode-other"])
    assert reg.names("dynamics") == ["fancy_mlp"]


# --------------------------------------------------------------------------- lookups


def test_unknown_name_lists_known_names_with_a_close_match(builtin_module):
    builtin_module("fake_builtin", **registering("solver", ("dopri5", Dopri5), ("euler", Euler)))
    reg = Registry(builtins=("fake_builtin",), entry_points=[])

    with pytest.raises(UnknownComponentError) as excinfo:
        reg.get("solver", "dopri6")
    message = str(excinfo.value)
    assert "unknown solver 'dopri6'" in message
    assert "did you mean 'dopri5'?" in message
    assert "Known solver names: dopri5, euler." in message
    assert excinfo.value.known == ["dopri5", "euler"]
    assert isinstance(excinfo.value, KeyError) and isinstance(excinfo.value, RegistryError)


def test_unknown_name_without_close_match_still_lists_known_names(builtin_module):
    builtin_module("fake_builtin", **registering("adjoint", ("direct", Euler)))
    reg = Registry(builtins=("fake_builtin",), entry_points=[])
    with pytest.raises(UnknownComponentError) as excinfo:
        reg.get("adjoint", "zzz")
    assert "did you mean" not in str(excinfo.value)
    assert "unknown adjoint 'zzz'. Known adjoint names: direct." in str(excinfo.value)


def test_unknown_kind_is_an_error_listing_the_kinds():
    reg = Registry(builtins=(), entry_points=[])
    with pytest.raises(UnknownComponentError) as excinfo:
        reg.get("solvers", "dopri5")
    assert "did you mean 'solver'?" in str(excinfo.value)
    for kind in KINDS:
        assert kind in str(excinfo.value)
    with pytest.raises(UnknownComponentError):
        reg.components("solvers")


def test_components_are_listed_by_kind_then_name():
    hooks = {**registering("loader", ("zarr", Euler)), **registering("solver", ("rk4", Euler), ("euler", Euler))}
    reg = Registry(builtins=(), entry_points=[FakeEntryPoint("p", "neurode-p", "1", make_plugin(**hooks))])
    assert [(c.kind, c.name) for c in reg] == [("solver", "euler"), ("solver", "rk4"), ("loader", "zarr")]
    assert [c.name for c in reg.components("loader")] == ["zarr"]


# --------------------------------------------------------------------------- commands


class RecordingApp:
    def __init__(self) -> None:
        self.commands: list[str] = []


def test_register_commands_calls_every_loaded_plugin_and_survives_a_failing_one():
    def good(app):
        app.commands.append("hello")

    def bad(app):
        raise ValueError("typer too old")

    eps = [
        FakeEntryPoint("bad", "neurode-bad", "1", make_plugin(register_commands=bad)),
        FakeEntryPoint("good", "neurode-good", "1", make_plugin(register_commands=good)),
        FakeEntryPoint("broken", "neurode-broken", "1", error=ImportError("nope")),
    ]
    reg = quiet_registry(builtins=(), entry_points=eps)
    app = RecordingApp()

    with pytest.warns(NeurodePluginWarning, match="neurode-bad.*ValueError: typer too old"):
        failures = reg.register_commands(app)

    assert app.commands == ["hello"]
    assert [f.distribution for f in failures] == ["neurode-bad"]


# --------------------------------------------------------------------------- the process-wide registry


def test_get_registry_builds_once_and_reset_forgets(monkeypatch):
    built: list[object] = []

    def fake_registry_class():
        built.append(object())
        return built[-1]

    monkeypatch.setattr(registry_module, "_registry", None)
    monkeypatch.setattr(registry_module, "Registry", fake_registry_class)

    first = registry_module.get_registry()
    assert registry_module.get_registry() is first
    registry_module.reset_registry()
    second = registry_module.get_registry()
    assert second is not first
    assert len(built) == 2
    assert neurode.get_registry is registry_module.get_registry
