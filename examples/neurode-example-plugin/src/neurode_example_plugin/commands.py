"""The command this plugin adds to ``neurode``: ``neurode example-hello``.

It shows that the plugin is installed and working: it builds the plugin's
dynamics through neurode's registry (as any user would), evaluates it once and
prints what it got.
"""

from __future__ import annotations

import typer


def example_hello(
    damping: float = typer.Option(0.1, "--damping", help="Damping rate gamma >= 0 of the example dynamics."),
) -> None:
    """Say hello from neurode-example-plugin and evaluate its damped_linear dynamics once."""
    import torch

    from neurode import get_registry

    component = get_registry().get("dynamics", "damped_linear")
    try:
        dynamics = component.obj(state_dim=2, damping=damping)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--damping") from exc
    y = torch.tensor([1.0, 0.0])
    dydt = dynamics(torch.tensor(0.0), y)
    source = component.source
    typer.echo(f"Hello from {source.distribution} {source.version}!")
    typer.echo(f"dynamics 'damped_linear': f(t=0, y={y.tolist()}) = {[round(v, 6) for v in dydt.tolist()]}")
