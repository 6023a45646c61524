"""The model contract: what a trainer may assume of a registered model.

A model is a ``torch.nn.Module`` registered through the ``register_models``
hook. The trainer (``neurode.training``) knows nothing else about it:

- ``loss(batch) -> (loss, metrics)``: a scalar tensor to minimise on a
  :class:`~neurode.datasets.batch.TrajectoryBatch` and a dict of float
  metrics to log (``nfe`` and friends where the model solves ODEs);
- ``predict(batch, times=None) -> values``: the model's values for the
  batch's features, ``[batch, T, n_features]``, at the batch's own times or at
  ``times``;
- ``config() -> dict``: the keyword arguments that rebuild the model from the
  registry (``factory(**config)``), JSON/TOML-serialisable, so that a run
  directory stores the model as data and never as a pickle.

A trainer builds a model with :func:`build_model`, which hands the data's
shape (``n_features``, ``n_static``) and, to factories that accept them, the
solve settings and the dynamics network's name and options. A third-party
model is built and fitted exactly like a built-in one.
"""

from __future__ import annotations

import abc
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from neurode.framework.errors import ComponentTypeError


@dataclass(frozen=True)
class SolveSettings:
    """How a model's ODE solves are run: solver, gradient method, tolerances, controller.

    Passed to a model factory as ``solve=...`` (a dict) when it accepts that
    keyword; models that solve ODEs hand these to :func:`neurode.solve`.
    """

    solver: str = "dopri5"
    adjoint: str = "direct"
    rtol: float = 1e-3
    atol: float = 1e-4
    controller: str = "i"
    max_num_steps: int = 10_000
    adjoint_options: dict[str, Any] = field(default_factory=dict)
    #: :func:`neurode.solve`'s ``tangent_control``: ``None`` (on when gradients are recorded), True or False
    tangent_control: bool | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def solve_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for :func:`neurode.solve`."""
        return {
            "solver": self.solver,
            "adjoint": self.adjoint,
            "rtol": self.rtol,
            "atol": self.atol,
            "controller": self.controller,
            "max_num_steps": self.max_num_steps,
            "adjoint_options": dict(self.adjoint_options) or None,
            "tangent_control": self.tangent_control,
        }


class AbstractModel(nn.Module, abc.ABC):
    """Base class of trainable models (see the module docstring for the contract)."""

    @abc.abstractmethod
    def loss(self, batch) -> tuple[torch.Tensor, dict[str, float]]:
        """The training loss on ``batch`` (a scalar tensor) and metrics to log."""

    @abc.abstractmethod
    def predict(self, batch, times: torch.Tensor | None = None) -> torch.Tensor:
        """Values ``[batch, T, n_features]`` at the batch's times (``None``) or at ``times``.

        ``times`` is ``[T]`` (shared) or ``[batch, T]`` (per trajectory).
        """

    @abc.abstractmethod
    def config(self) -> dict[str, Any]:
        """Keyword arguments that rebuild this model: ``factory(**model.config())``."""

    def solve_stats(self) -> dict[str, float]:
        """Counters of the last forward (and, after ``backward()``, backward) solve; ``{}`` if none."""
        return {}


def _accepts(factory, name: str) -> bool:
    import inspect

    try:
        parameters = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.name == name or p.kind is p.VAR_KEYWORD for p in parameters)


def build_model(
    name: str,
    *,
    n_features: int,
    n_static: int = 0,
    options: dict[str, Any] | None = None,
    solve: SolveSettings | None = None,
    dynamics: str | None = None,
    dynamics_options: dict[str, Any] | None = None,
    registry=None,
) -> AbstractModel:
    """Build the registered model ``name`` for data with ``n_features`` features and ``n_static`` statics.

    ``solve``, ``dynamics`` and ``dynamics_options`` go to the factory only if
    it accepts them (a model that solves no ODE need not take them).

    Raises:
        UnknownComponentError: no model called ``name``.
        ComponentTypeError: the factory returned something that is not a model.
    """
    from neurode.framework.registry import get_registry

    registry = registry or get_registry()
    factory = registry.get("model", name).obj
    kwargs: dict[str, Any] = {"n_features": n_features, "n_static": n_static, **(options or {})}
    if solve is not None and _accepts(factory, "solve"):
        kwargs["solve"] = solve.as_dict()
    if dynamics is not None and _accepts(factory, "dynamics"):
        kwargs["dynamics"] = dynamics
        kwargs["dynamics_options"] = dict(dynamics_options or {})
    model = factory(**kwargs)
    check_model(model, name)
    return model


def rebuild_model(name: str, config: dict[str, Any], registry=None) -> AbstractModel:
    """The model ``name`` rebuilt from its :meth:`AbstractModel.config` (as a run directory stores it)."""
    from neurode.framework.registry import get_registry

    registry = registry or get_registry()
    model = registry.get("model", name).obj(**config)
    check_model(model, name)
    return model


def check_model(model: object, name: str) -> None:
    """Raise :class:`ComponentTypeError` unless ``model`` meets the contract."""
    missing = [attr for attr in ("loss", "predict", "config", "state_dict") if not callable(getattr(model, attr, None))]
    if missing:
        raise ComponentTypeError(
            f"model {name!r} built a {type(model).__name__}, which lacks {', '.join(missing)}; "
            "a model must be an nn.Module with loss(batch), predict(batch, times=None) and config() "
            "(see neurode.framework.model.AbstractModel)"
        )
