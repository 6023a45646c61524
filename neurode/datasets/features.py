"""How schema variables become the columns of a model's feature vector.

A model sees one vector per observation. State variables are laid side by
side in a fixed order, a ``(trajectory, obs)`` variable as one column and a
``(trajectory, obs, component)`` variable as one column per component, named
``name[k]``. Per-trajectory variables become the static vector the same way.
:class:`FeatureLayout` fixes that order once, so batches, normalisation
statistics and checkpoints agree on what column 3 is.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import xarray as xr

from neurode.datasets.errors import SchemaError
from neurode.datasets.schema import (
    COMPONENT,
    OBS,
    TRAJECTORY,
    per_trajectory_variables,
    select_variables,
    state_variables,
)


@dataclass(frozen=True)
class FeatureLayout:
    """Which variables feed the feature and static vectors, and in what order."""

    variables: tuple[str, ...]
    #: Columns per variable: 1, or the size of ``component`` for vector variables.
    widths: tuple[int, ...]
    #: Whether each variable has a ``component`` dim (named ``x[k]`` even when of size 1).
    vector: tuple[bool, ...]
    static: tuple[str, ...]

    @classmethod
    def from_dataset(
        cls, ds: xr.Dataset, variables: Sequence[str] | None = None, static: Sequence[str] | None = None
    ) -> FeatureLayout:
        """The layout of ``ds``: all state and per-trajectory variables unless named.

        By default each group is in order of name, so the columns do not depend
        on the order a store happens to list its variables in.

        Raises:
            UnknownVariableError: a named variable is not in ``ds``.
            SchemaError: a named variable has the wrong dims for its role.
        """
        variables = tuple(sorted(state_variables(ds)) if variables is None else variables)
        static = tuple(sorted(per_trajectory_variables(ds)) if static is None else static)
        select_variables(ds, [*variables, *static])  # names every unknown one
        problems = []
        for name in variables:
            if ds[name].dims[:2] != (TRAJECTORY, OBS):
                problems.append(
                    f"{name!r} has dims {ds[name].dims}; a state variable needs (trajectory, obs[, component])"
                )
        for name in static:
            if ds[name].dims != (TRAJECTORY,):
                problems.append(f"{name!r} has dims {ds[name].dims}; a static variable needs (trajectory,)")
        if problems:
            raise SchemaError(problems)
        vector = tuple(COMPONENT in ds[name].dims for name in variables)
        widths = tuple(ds.sizes[COMPONENT] if is_vector else 1 for is_vector in vector)
        return cls(variables, widths, vector, static)

    @property
    def feature_names(self) -> tuple[str, ...]:
        names: list[str] = []
        for name, width, is_vector in zip(self.variables, self.widths, self.vector, strict=True):
            names.extend([f"{name}[{k}]" for k in range(width)] if is_vector else [name])
        return tuple(names)

    @property
    def n_features(self) -> int:
        return sum(self.widths)

    def stack(self, ds: xr.Dataset) -> np.ndarray:
        """``[trajectory, obs, n_features]`` float64 array of the (computed) state variables."""
        columns = []
        for name in self.variables:
            value = np.asarray(ds[name].transpose(TRAJECTORY, OBS, ...).values, dtype=np.float64)
            columns.append(value if value.ndim == 3 else value[..., None])
        if not columns:
            return np.zeros((ds.sizes[TRAJECTORY], ds.sizes[OBS], 0))
        return np.concatenate(columns, axis=-1)

    def stack_static(self, ds: xr.Dataset) -> np.ndarray:
        """``[trajectory, n_static]`` float64 array of the per-trajectory variables."""
        if not self.static:
            return np.zeros((ds.sizes[TRAJECTORY], 0))
        return np.stack([np.asarray(ds[name].values, dtype=np.float64) for name in self.static], axis=-1)
