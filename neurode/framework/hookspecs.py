"""The plugin contract of neurode: every hook a plugin may implement.

This file is the documentation a plugin author reads. A plugin is a module
(or any object) with functions decorated by :data:`neurode.hookimpl`, named
after the hooks below. It reaches neurode through an entry point in the group
``neurode``::

    # pyproject.toml of a third-party package
    [project.entry-points.neurode]
    mysolvers = "mypkg.plugin"

    # mypkg/plugin.py
    import neurode

    @neurode.hookimpl
    def register_solvers(register):
        register("my_rk", MyRKSolver, description="my 4th-order method")

neurode's own solvers, gradient methods, dynamics, models and loaders are
registered through exactly these hooks (see ``neurode/plugins/``); a built-in
has no privilege a third-party component lacks.

Each ``register_*`` hook receives one argument, ``register``, a callable::

    register(name: str, component: object, *, description: str | None = None)

``name`` is what users type (``solve(..., solver="my_rk")``, ``--solver
my_rk``); it must be unique within its kind across every installed plugin, or
both registrations are reported as a conflict naming both distributions.
``description`` defaults to the first line of the component's docstring. The
registry records which distribution (and version) supplied each component;
``neurode plugins`` lists them.

A plugin need implement only the hooks it uses.
"""

from __future__ import annotations

import pluggy

PROJECT_NAME = "neurode"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
#: Marker for hook implementations in plugins: ``@neurode.hookimpl``.
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


@hookspec
def register_solvers(register):
    """Register ODE solvers.

    ``component`` is a factory called as ``component(**options)`` that returns
    an instance of :class:`neurode.framework.solver.AbstractSolver` (a solver
    class is such a factory). ``options`` are the solver's own keywords a user
    passes to ``neurode.solve`` or in torchdiffeq's ``options`` dict (e.g.
    ``interp``, ``perturb``, ``max_order``). The loop's options never reach
    the factory: the step sizes (``step_size``, ``grid_constructor``,
    ``first_step``, ``min_step``, ``max_step``), ``max_num_steps``,
    ``step_t``/``jump_t``, ``norm`` and the controller's coefficients are
    taken out first (``neurode.framework.solve.LOOP_OPTIONS``), so a solver
    that takes fixed steps is simply called with each step's ``h``.

    An explicit Runge–Kutta method needs no new class: register
    ``functools.partial(neurode.ExplicitRungeKutta, tableau=MY_TABLEAU)`` with
    a :class:`neurode.ButcherTableau`; its options are then ``interp`` and
    ``perturb``.

    Conformance: ``neurode.testing.check_solver(name)`` measures the declared
    order of convergence, float32/float64, batched and tuple states, reversed
    time and device placement.
    """


@hookspec
def register_adjoints(register):
    """Register gradient methods ("adjoints"): how gradients flow through a solve.

    ``component`` is a factory returning an instance of
    :class:`neurode.framework.adjoint.AbstractAdjoint`, called as
    ``component(**adjoint_options)``. neurode's own are ``direct``
    (backpropagation through the solver's operations), ``backsolve`` (the
    continuous adjoint of Chen et al. 2018) and ``checkpoint`` (exact
    gradients from stored step states).

    What the core gives a gradient method (``neurode.framework.adjoint.Problem``):
    ``problem.run_loop(...)`` / ``integrate_batch(...)`` to solve;
    ``problem.wants_tangent()``, to pass as ``tangent=`` by a method that
    differentiates the accepted steps themselves (tangent error control,
    ``framework/tangent.py``); and, for a method that evaluates ``f`` outside
    the user's autograd graph, ``problem.watched_vector_field()`` to run the
    forward solve with, then ``problem.gradient_inputs(capture)``: every tensor
    that ``f`` read and that requires grad, to declare as inputs of its
    ``autograd.Function`` (``framework/capture.py``).

    Conformance: ``neurode.testing.check_adjoint(name)`` compares gradients
    with ``direct``.
    """


@hookspec
def register_dynamics(register):
    """Register dynamics networks: ``torch.nn.Module`` with ``forward(t, y) -> dy/dt``.

    ``component`` is a factory (usually the module class) called with the
    network's hyper-parameters, e.g. ``component(state_dim=2, hidden=64)``.
    """


@hookspec
def register_models(register):
    """Register trainable models.

    ``component`` is a factory returning a ``torch.nn.Module`` with
    ``loss(batch) -> (loss, metrics)`` and ``predict(...)``, as described by
    :class:`neurode.framework.model.AbstractModel`; the CLI trainer fits any of
    them.
    """


@hookspec
def register_loaders(register):
    """Register dataset loaders.

    ``component`` is a factory returning a
    :class:`neurode.framework.loader.AbstractLoader`: an object that says
    whether it can open a path (by suffix or by peeking) and reads it into the
    canonical trajectory schema (see ``neurode.datasets.schema``).
    """


@hookspec
def register_commands(app):
    """Add commands to the ``neurode`` command line.

    ``app`` is a :class:`typer.Typer` whose commands and groups are merged
    into the root ``neurode`` application. Add a command with
    ``app.command("name")(function)`` or a group with
    ``app.add_typer(sub_app, name="group")``. (Typer vendors Click, so a plugin
    receives a typer app, never a Click group.) ``app.callback()`` is ignored,
    and a plugin cannot replace a built-in command. Called only when the CLI
    needs plugin commands (an unknown command name, or ``neurode --help``); an
    exception here disables the plugin's commands with a warning.
    """
