"""The canonical trajectory schema: one in-memory form for irregular data.

Every loader normalises what it reads to this ``xarray.Dataset`` form, and
everything downstream (batching, splits, training, ``neurode data info``)
relies on it and on nothing else:

- dimensions ``trajectory`` and ``obs`` (and ``component`` for vector-valued
  variables);
- ``time(trajectory, obs)``: floating point, strictly increasing along
  ``obs`` within a trajectory, NaN past the trajectory's last observation
  (padding is trailing only), with ``units`` in its attributes. Time stays a
  float with units (never a timedelta) so simulation time survives every
  xarray and zarr version unchanged;
- state variables ``(trajectory, obs)`` or ``(trajectory, obs, component)``,
  floating point, NaN where not observed, so each variable may be observed at
  its own subset of a trajectory's times;
- optional per-trajectory variables ``(trajectory,)``: parameters, conditions;
- ``attrs["featureType"] == "trajectory"`` (CF conventions, section 9), and
  ``units`` and ``long_name`` on every data variable.

A padded rectangle rather than a ragged array because zarr has no ragged
arrays and dask wants rectangles; the CF ragged layouts are read and turned
into this form by ``neurode.datasets.layouts``.

:func:`validate` checks all of it and reports every violation at once.
Structure (dims, dtypes, attributes) costs nothing; the value checks stream
through the arrays with dask, chunk by chunk, so a larger-than-memory store
can be validated too, at the price of one read.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

import dask
import numpy as np
import xarray as xr

from neurode.datasets.errors import SchemaError, UnknownVariableError

TRAJECTORY = "trajectory"
OBS = "obs"
COMPONENT = "component"
TIME = "time"

FEATURE_TYPE = "trajectory"
CONVENTIONS = "CF-1.11"
#: Attributes every canonical dataset carries.
DATASET_ATTRS: dict[str, str] = {"featureType": FEATURE_TYPE, "Conventions": CONVENTIONS}
#: Attributes of the ``trajectory`` coordinate when it holds trajectory ids (CF 9.5).
TRAJECTORY_ID_ATTRS: dict[str, str] = {"cf_role": "trajectory_id", "long_name": "trajectory identifier"}

STATE_DIMS: tuple[tuple[str, ...], ...] = ((TRAJECTORY, OBS), (TRAJECTORY, OBS, COMPONENT))
PER_TRAJECTORY_DIMS: tuple[str, ...] = (TRAJECTORY,)
#: draws of a state variable (posterior predictive samples, an ensemble): a leading ``sample`` dimension; they are
#: not state variables (a loader reads the others), but a dataset may carry them
SAMPLE = "sample"
SAMPLE_DIMS: tuple[tuple[str, ...], ...] = tuple((SAMPLE, *dims) for dims in STATE_DIMS)

# How many offending trajectories a message names before it says "and N more".
_EXAMPLES = 3


def canonical_attrs(attrs: dict[Hashable, Any]) -> dict[Hashable, Any]:
    """Dataset attributes of the canonical form: ``featureType`` set, ``Conventions`` as the store had it
    (the store knows which CF version it follows; ``CF-1.11`` only when it says nothing)."""
    return {**DATASET_ATTRS, **attrs, "featureType": FEATURE_TYPE}


def cf_attrs(units: str, long_name: str, **extra: Any) -> dict[str, Any]:
    """The CF attributes of a variable: ``units``, ``long_name`` and any extras."""
    return {"units": units, "long_name": long_name, **extra}


def state_variables(ds: xr.Dataset) -> list[str]:
    """Names of the data variables that vary along ``obs`` (excluding ``time``), in dataset order."""
    return [str(name) for name, var in ds.data_vars.items() if name != TIME and var.dims in STATE_DIMS]


def per_trajectory_variables(ds: xr.Dataset) -> list[str]:
    """Names of the data variables with dims ``(trajectory,)``, in dataset order."""
    return [str(name) for name, var in ds.data_vars.items() if var.dims == PER_TRAJECTORY_DIMS]


def canonical_order(ds: xr.Dataset) -> xr.Dataset:
    """``ds`` with data variables in a fixed order: ``time``, state variables by
    name, per-trajectory variables by name, anything else by name.

    Zarr format 3 lists a group's members in no particular order, so the
    order a store was written in does not survive; this one is reproducible.
    """
    states = sorted(state_variables(ds))
    statics = sorted(per_trajectory_variables(ds))
    rest = sorted(str(name) for name in ds.data_vars if name not in {TIME, *states, *statics})
    head = [TIME] if TIME in ds.data_vars else []
    return ds[head + states + statics + rest]


def observation_counts(ds: xr.Dataset) -> xr.DataArray:
    """Number of observation times of each trajectory (lazy when ``ds`` is)."""
    return ds[TIME].notnull().sum(OBS)


def is_lazy(ds: xr.Dataset) -> bool:
    """True when every data variable is backed by a chunked (dask) array."""
    return all(var.chunks is not None for var in ds.data_vars.values())


def select_variables(
    ds: xr.Dataset, variables: list[str] | tuple[str, ...] | None, *, source: str | None = None
) -> xr.Dataset:
    """Keep only the data variables named in ``variables`` (plus ``time`` and coordinates).

    Raises:
        UnknownVariableError: naming every requested variable that is not
            there, and what is.
    """
    if variables is None:
        return ds
    if isinstance(variables, str):
        variables = [variables]
    wanted = [str(v) for v in variables]
    unknown = [v for v in wanted if v not in ds.data_vars]
    if unknown:
        available = ", ".join(sorted(str(v) for v in ds.data_vars if v != TIME)) or "(none)"
        where = f"{source}: " if source else ""
        raise UnknownVariableError(
            f"{where}no variable{'s' * (len(unknown) > 1)} {', '.join(repr(v) for v in unknown)} to select; "
            f"available: {available}"
        )
    keep = [TIME] if TIME in ds.data_vars and TIME not in wanted else []
    return ds[keep + wanted]


def _describe_dims(dims: tuple[Hashable, ...]) -> str:
    return "(" + ", ".join(str(d) for d in dims) + ")"


def _trajectory_labels(time: xr.DataArray) -> np.ndarray | None:
    """The store's trajectory ids (the ``trajectory`` coordinate), when it has them."""
    if TRAJECTORY in time.coords:
        return np.asarray(time[TRAJECTORY].values)
    return None


def _label(labels: np.ndarray | None, position: int) -> str:
    """A trajectory as a user knows it: its id (and position, when they differ), else its position."""
    if labels is None:
        return str(position)
    label = labels[position]
    label = label.item() if isinstance(label, np.generic) else label
    return str(label) if label == position else f"{label!r} (position {position})"


def _some(indices: np.ndarray, labels: np.ndarray | None = None) -> str:
    shown = ", ".join(_label(labels, int(i)) for i in indices[:_EXAMPLES])
    more = len(indices) - _EXAMPLES
    return shown + (f" and {more} more" if more > 0 else "")


def _structure_violations(ds: xr.Dataset) -> tuple[list[str], bool]:
    """Violations visible from metadata alone; and whether value checks can run."""
    problems: list[str] = []
    missing_dims = [d for d in (TRAJECTORY, OBS) if d not in ds.dims]
    if missing_dims:
        problems.append(
            f"missing dimension{'s' * (len(missing_dims) > 1)} {', '.join(repr(d) for d in missing_dims)}; "
            f"found dims {_describe_dims(tuple(ds.dims))}, expected 'trajectory' and 'obs'"
        )

    feature_type = ds.attrs.get("featureType")
    if feature_type != FEATURE_TYPE:
        problems.append(f"dataset attribute featureType is {feature_type!r}, expected {FEATURE_TYPE!r}")

    time_ok = False
    if TIME not in ds.variables:
        problems.append("missing variable 'time' with dims (trajectory, obs)")
    else:
        time = ds[TIME]
        time_ok = True
        if time.dims != (TRAJECTORY, OBS):
            problems.append(f"variable 'time' has dims {_describe_dims(time.dims)}, expected (trajectory, obs)")
            time_ok = False
        if not np.issubdtype(time.dtype, np.floating):
            problems.append(
                f"variable 'time' has dtype {time.dtype}, expected a floating dtype "
                "(NaN marks padding; open with decode_timedelta=False to keep it float)"
            )
            time_ok = False
        if not isinstance(time.attrs.get("units"), str) or not time.attrs.get("units"):
            if time.encoding.get("units"):
                problems.append(
                    f"variable 'time' holds decoded datetimes (units {time.encoding['units']!r} in its encoding); "
                    "expected float time: pass it through neurode.datasets.to_canonical, or load the store with "
                    "neurode.load"
                )
            else:
                problems.append("variable 'time' has no 'units' attribute")

    for name, var in ds.data_vars.items():
        if name == TIME:
            continue
        if var.dims in STATE_DIMS or var.dims in SAMPLE_DIMS:
            if not np.issubdtype(var.dtype, np.floating):
                problems.append(
                    f"state variable {name!r} has dtype {var.dtype}, expected a floating dtype (NaN marks missing)"
                )
        elif var.dims == PER_TRAJECTORY_DIMS:
            if not (np.issubdtype(var.dtype, np.number) or np.issubdtype(var.dtype, np.bool_)):
                problems.append(f"per-trajectory variable {name!r} has dtype {var.dtype}, expected a numeric dtype")
        else:
            problems.append(
                f"variable {name!r} has dims {_describe_dims(var.dims)}, expected (trajectory, obs), "
                "(trajectory, obs, component) or (trajectory,), or samples of a state variable with a leading "
                "'sample' dimension"
            )
        for attr in ("units", "long_name"):
            value = var.attrs.get(attr)
            if not isinstance(value, str) or not value:
                problems.append(f"variable {name!r} has no {attr!r} attribute")
    return problems, time_ok and not missing_dims


def _time_reductions(time: xr.DataArray) -> dict[str, Any]:
    """Per-trajectory flags of bad times, lazy (dask) when ``time`` is: chunk-wise reductions."""
    present = time.notnull()
    later = {OBS: slice(1, None)}
    earlier = {OBS: slice(None, -1)}
    # .data on both sides: xarray would otherwise align on the shifted obs labels.
    step = time.isel(later).data - time.isel(earlier).data
    both = present.isel(later).data & present.isel(earlier).data
    return {
        # Padding must be trailing: an observed time right after a NaN is a hole.
        "hole": (present.isel(later).data & ~present.isel(earlier).data).any(axis=1),
        "not_increasing": (both & ~(step > 0)).any(axis=1),
        "infinite": (present & ~np.isfinite(time)).any(OBS).data,
        "empty": ~present.any(OBS).data,
    }


def _time_messages(time: xr.DataArray, flags: dict[str, np.ndarray]) -> list[str]:
    problems = []
    labels = _trajectory_labels(time)
    if np.any(flags["infinite"]):
        problems.append(
            f"variable 'time' has infinite values in trajectories {_some(np.flatnonzero(flags['infinite']), labels)}"
        )
    if np.any(flags["not_increasing"]):
        bad = np.flatnonzero(flags["not_increasing"])
        row = np.asarray(time.isel({TRAJECTORY: int(bad[0])}).values, dtype=float)
        row = row[~np.isnan(row)]
        j = int(np.flatnonzero(~(np.diff(row) > 0))[0])
        kind = "repeats" if row[j + 1] == row[j] else "decreases"
        problems.append(
            f"variable 'time' is not strictly increasing within trajectories {_some(bad, labels)} "
            f"(trajectory {_label(labels, int(bad[0]))}: time {kind}, {float(row[j]):g} then {float(row[j + 1]):g} "
            f"at obs {j} and {j + 1}); expected increasing times along 'obs'"
        )
    if np.any(flags["hole"]):
        problems.append(
            "variable 'time' has observations after NaN padding in trajectories "
            f"{_some(np.flatnonzero(flags['hole']), labels)}; expected NaN only after a trajectory's last observation"
        )
    if np.any(flags["empty"]):
        problems.append(f"trajectories {_some(np.flatnonzero(flags['empty']), labels)} have no observation times")
    return problems


def time_violations(ds: xr.Dataset) -> list[str]:
    """The checks on ``time`` alone: strictly increasing, trailing padding, finite, not empty.

    Reads only the ``time`` array, chunk by chunk (one small streaming
    reduction per trajectory block), never the state variables: the check
    :func:`neurode.load` runs by default.
    """
    problems, checkable = _structure_violations(ds)
    if not checkable:
        return [p for p in problems if "'time'" in p or "dimension" in p]
    (flags,) = dask.compute(_time_reductions(ds[TIME]))
    return _time_messages(ds[TIME], flags)


def _value_violations(ds: xr.Dataset) -> list[str]:
    """Violations that need the data: one streaming pass, all reductions computed together."""
    problems: list[str] = []
    time = ds[TIME]
    present = time.notnull()
    states = state_variables(ds)
    observed = {}
    in_padding = {}
    for name in states:
        notnull = ds[name].notnull()
        if COMPONENT in notnull.dims:
            notnull = notnull.any(COMPONENT)
        observed[name] = notnull.sum().data
        in_padding[name] = (notnull & ~present).sum().data

    flags, observed, in_padding = dask.compute(_time_reductions(time), observed, in_padding)
    problems.extend(_time_messages(time, flags))
    for name in states:
        if int(observed[name]) == 0:
            problems.append(f"state variable {name!r} has no observations (all values are NaN)")
        if int(in_padding[name]) > 0:
            problems.append(
                f"state variable {name!r} has {int(in_padding[name])} values where 'time' is NaN; "
                "expected NaN wherever time is padding"
            )
    return problems


def violations(ds: xr.Dataset, *, check_values: bool = True) -> list[str]:
    """Every way in which ``ds`` departs from the schema; empty when it conforms."""
    if not isinstance(ds, xr.Dataset):
        return [f"expected an xarray.Dataset, got {type(ds).__name__} ({ds!r:.80})"]
    problems, values_checkable = _structure_violations(ds)
    if check_values and values_checkable:
        problems.extend(_value_violations(ds))
    return problems


def validate(ds: xr.Dataset, *, check_values: bool = True, source: str | None = None) -> xr.Dataset:
    """Return ``ds`` unchanged if it matches the canonical schema; raise otherwise.

    Args:
        ds: the dataset to check.
        check_values: also check the data (times increasing and trailing-padded,
            no empty trajectories, every state variable observed at least once,
            no values at padded times). This reads every array once, streaming
            through dask chunks; ``False`` checks metadata only and reads nothing.
        source: where the dataset came from (a path), to name in the error.

    Raises:
        SchemaError: listing every violation found.
    """
    problems = violations(ds, check_values=check_values)
    if problems:
        raise SchemaError(problems, source=source)
    return ds
