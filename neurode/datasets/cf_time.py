"""CF time axes as float time with explicit units: ``"<unit> since <epoch>"`` and decoded datetimes.

Measured data (climate, ocean, lab instruments) stores time the CF way
(CF conventions 1.11, section 4.4): numbers with ``units = "days since
1958-03-29"``, or, once xarray has decoded them, ``datetime64`` values whose
``units`` moved into ``.encoding``. A neural ODE wants neither: it wants a
float ``t`` in a unit it can reason about. :func:`decode_cf_times` turns every
such variable into float time:

- ``units`` becomes the bare unit (``"days"``), or ``time_unit`` if given;
- ``attrs["epoch"]`` keeps the reference time exactly as the store wrote it
  (``"1958-03-29"``), and ``calendar`` stays, so absolute dates can be
  recovered;
- numeric offsets are only rescaled, never passed through a calendar, so
  ``360_day`` and ``noleap`` stores are read exactly.

Unit lengths follow UDUNITS-2, which CF refers to: a ``year`` is the tropical
year, 365.242198781 days, and a ``month`` a twelfth of it. CF itself advises
against months and years as units for this reason; they are accepted so a
series stored in days can be modelled in years without rescaling by hand.
"""

from __future__ import annotations

import re
from collections.abc import Hashable

import numpy as np
import xarray as xr

from neurode.datasets.errors import DataError

#: Seconds per unit (UDUNITS-2), by canonical name.
SECONDS: dict[str, float] = {
    "nanoseconds": 1e-9,
    "microseconds": 1e-6,
    "milliseconds": 1e-3,
    "seconds": 1.0,
    "minutes": 60.0,
    "hours": 3600.0,
    "days": 86400.0,
    "weeks": 7 * 86400.0,
    "months": 3.15569259747e7 / 12,
    "years": 3.15569259747e7,
}

_ALIASES: dict[str, str] = {
    **{a: "nanoseconds" for a in ("ns", "nanosecond", "nanoseconds")},
    **{a: "microseconds" for a in ("us", "microsecond", "microseconds")},
    **{a: "milliseconds" for a in ("ms", "msec", "millisecond", "milliseconds")},
    **{a: "seconds" for a in ("s", "sec", "secs", "second", "seconds")},
    **{a: "minutes" for a in ("min", "mins", "minute", "minutes")},
    **{a: "hours" for a in ("h", "hr", "hrs", "hour", "hours")},
    **{a: "days" for a in ("d", "day", "days")},
    **{a: "weeks" for a in ("week", "weeks")},
    **{a: "months" for a in ("month", "months")},
    **{a: "years" for a in ("yr", "yrs", "year", "years")},
}

_SINCE = re.compile(r"^\s*(?P<unit>[A-Za-z]+)\s+since\s+(?P<epoch>\S.*?)\s*$")

#: Unit of decoded datetimes that carry no ``units`` in their encoding.
DEFAULT_DATETIME_UNIT = "seconds"


def canonical_unit(unit: str, *, what: str = "time unit") -> str:
    """The canonical name (``"days"``) of a time unit or one of its aliases (``"d"``, ``"day"``).

    Raises:
        DataError: naming the unit and the accepted ones.
    """
    name = _ALIASES.get(str(unit).strip().lower())
    if name is None:
        raise DataError(f"unknown {what} {unit!r}; expected one of {', '.join(SECONDS)}")
    return name


def parse_since(units: object) -> tuple[str, str] | None:
    """``(unit, epoch)`` of CF ``"<unit> since <epoch>"`` units, ``None`` for anything else."""
    if not isinstance(units, str):
        return None
    match = _SINCE.match(units)
    if match is None or match["unit"].lower() not in _ALIASES:
        return None
    return _ALIASES[match["unit"].lower()], match["epoch"]


def scale(from_unit: str, to_unit: str) -> float:
    """The factor taking a time in ``from_unit`` to ``to_unit``."""
    return SECONDS[canonical_unit(from_unit)] / SECONDS[canonical_unit(to_unit)]


def _is_datetime(var: xr.Variable) -> bool:
    return np.issubdtype(var.dtype, np.datetime64)


def is_cf_time(var: xr.Variable) -> bool:
    """Whether ``var`` holds CF time: datetimes, or numbers with ``"<unit> since <epoch>"`` units."""
    numeric_since = np.issubdtype(var.dtype, np.number) and parse_since(var.attrs.get("units")) is not None
    return _is_datetime(var) or numeric_since


def _decode_one(var: xr.DataArray, time_unit: str | None) -> xr.DataArray:
    attrs = dict(var.attrs)
    if _is_datetime(var.variable):
        # xarray moved the CF units into the encoding; its epoch is the store's own.
        stored = parse_since(var.encoding.get("units"))
        unit = canonical_unit(time_unit) if time_unit else (stored[0] if stored else DEFAULT_DATETIME_UNIT)
        if stored is not None:
            epoch_text = stored[1]
            epoch = _epoch_datetime(epoch_text)
        else:
            epoch = var.min().values.astype("datetime64[ns]")
            epoch_text = str(np.datetime_as_string(epoch, unit="s"))
        calendar = var.encoding.get("calendar")
        offsets = (var - epoch) / np.timedelta64(1, "ns")
        values = offsets / (SECONDS[unit] * 1e9)  # a division, so whole days stay whole
    else:
        stored_unit, epoch_text = parse_since(attrs["units"])
        unit = canonical_unit(time_unit) if time_unit else stored_unit
        calendar = attrs.get("calendar")
        values = var.astype(np.float64)
        if unit != stored_unit:
            values = values * scale(stored_unit, unit)
    attrs.update(units=unit, epoch=epoch_text)
    if calendar is not None:
        attrs["calendar"] = calendar
    attrs.setdefault("long_name", "time")
    return values.astype(np.float64).assign_attrs(attrs)


def _epoch_datetime(epoch: str) -> np.datetime64:
    """The epoch of a CF unit as a naive UTC ``datetime64[ns]``, as xarray decodes it (offsets applied)."""
    import pandas as pd

    try:
        stamp = pd.Timestamp(re.sub(r"\s*UTC$", "", epoch.strip()))
    except (ValueError, TypeError):
        raise DataError(
            f"cannot read the epoch {epoch!r} of a CF time unit; expected a date such as 1970-01-01 00:00:00"
        ) from None
    if stamp.tzinfo is not None:
        stamp = stamp.tz_convert(None)
    return np.datetime64(stamp.to_datetime64(), "ns")


def decode_cf_times(ds: xr.Dataset, *, time_unit: str | None = None) -> xr.Dataset:
    """``ds`` with every CF time variable (coordinates included) as float time (see the module docstring).

    Args:
        time_unit: the unit to express them in (``"days"``, ``"years"``, ``"s"``...);
            default: the unit the store used.

    Stays lazy when ``ds`` is, except that datetimes without a stored epoch
    read their minimum to use as one.
    """
    if time_unit is not None:
        canonical_unit(time_unit)  # an unknown unit fails before any work
    names: list[Hashable] = [name for name, var in ds.variables.items() if is_cf_time(var)]
    if not names:
        return ds
    converted = {name: _decode_one(ds[name], time_unit) for name in names}
    out = ds.assign({name: value for name, value in converted.items() if name in ds.data_vars})
    return out.assign_coords({name: value.variable for name, value in converted.items() if name in ds.coords})


def convert_time_unit(ds: xr.Dataset, time_unit: str, *, name: Hashable = "time") -> xr.Dataset:
    """``ds`` with float ``ds[name]`` rescaled from its ``units`` to ``time_unit``.

    Raises:
        DataError: the variable's units are not a time unit neurode knows.
    """
    target = canonical_unit(time_unit)
    var = ds[name]
    units = var.attrs.get("units")
    try:
        source = canonical_unit(units, what=f"unit of {name!r}")
    except DataError:
        raise DataError(
            f"cannot express {name!r} in {time_unit!r}: its units are {units!r}, expected one of "
            f"{', '.join(SECONDS)} or '<unit> since <epoch>'"
        ) from None
    if source == target:
        return ds
    rescaled = (var * scale(source, target)).assign_attrs({**var.attrs, "units": target})
    return ds.assign({name: rescaled})
