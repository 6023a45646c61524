"""The plugin contract: one documented hook per component kind, plus one for CLI commands."""

from __future__ import annotations

import inspect

import pluggy

import neurode
from neurode.framework import hookspecs
from neurode.framework.registry import KIND_HOOKS, Registry

ALL_HOOKS = (*KIND_HOOKS.values(), "register_commands")


def _specs() -> dict[str, object]:
    return {
        name: fn for name, fn in inspect.getmembers(hookspecs, inspect.isfunction)
        if hasattr(fn, f"{hookspecs.PROJECT_NAME}_spec")
    }


def test_there_is_one_spec_per_kind_and_one_for_commands():
    assert set(KIND_HOOKS) == {"solver", "adjoint", "dynamics", "model", "loader"}
    assert set(_specs()) == set(ALL_HOOKS)


def test_component_hooks_take_register_and_the_command_hook_takes_app():
    specs = _specs()
    for hook in KIND_HOOKS.values():
        assert list(inspect.signature(specs[hook]).parameters) == ["register"]
    assert list(inspect.signature(specs["register_commands"]).parameters) == ["app"]


def test_every_spec_is_documented_for_plugin_authors():
    for name, spec in _specs().items():
        doc = inspect.getdoc(spec) or ""
        assert len(doc.split()) >= 15, f"hook {name} needs a docstring a plugin author can work from"
    module_doc = hookspecs.__doc__ or ""
    assert "[project.entry-points.neurode]" in module_doc
    assert "@neurode.hookimpl" in module_doc


def test_neurode_hookimpl_is_the_marker_of_project_neurode():
    assert neurode.hookimpl is hookspecs.hookimpl
    assert isinstance(neurode.hookimpl, pluggy.HookimplMarker)
    assert hookspecs.PROJECT_NAME == "neurode"

    @neurode.hookimpl
    def register_solvers(register):
        pass

    assert hasattr(register_solvers, "neurode_impl")


def test_registry_plugin_manager_knows_every_hook():
    reg = Registry(builtins=(), entry_points=[])
    for hook in ALL_HOOKS:
        assert getattr(reg.plugin_manager.hook, hook).has_spec(), hook


def test_the_solver_hook_registers_explicit_runge_kutta_from_the_top_level_package():
    # the documented way to add a tableau names only public, top-level names
    doc = inspect.getdoc(hookspecs.register_solvers)
    assert "functools.partial(neurode.ExplicitRungeKutta, tableau=MY_TABLEAU)" in doc
    assert "ExplicitRungeKutta" in neurode.__all__ and "ButcherTableau" in neurode.__all__
    from neurode.framework.explicit_rk import ExplicitRungeKutta

    assert neurode.ExplicitRungeKutta is ExplicitRungeKutta


def test_loop_options_named_in_the_solver_hook_never_reach_a_factory(monkeypatch):
    # the docstring says step_size and the other loop options are consumed by the loop: check it, with a
    # factory that records what it is called with
    import functools

    import torch

    from neurode.framework import solve as solve_module
    from neurode.framework.solve import LOOP_OPTIONS
    from neurode.plugins.solvers.tableaus.low_order import RK4_38

    doc = inspect.getdoc(hookspecs.register_solvers)
    named = {name for name in LOOP_OPTIONS if f"``{name}``" in doc}
    assert {"step_size", "first_step", "max_num_steps", "norm"} <= named
    calls = []

    def factory(**options):
        calls.append(options)
        return neurode.ExplicitRungeKutta(RK4_38, **options)

    real_get = solve_module.get_registry().get
    monkeypatch.setattr(solve_module.get_registry(), "get", lambda kind, name: (
        type("Component", (), {"obj": functools.partial(factory)})() if name == "mine" else real_get(kind, name)))
    neurode.solve(lambda t, y: -y, torch.ones(2), torch.tensor([0.0, 1.0]), solver="mine", step_size=0.1,
                  max_num_steps=50, interp="cubic")
    assert calls == [{"interp": "cubic"}]
