"""Storage layouts of trajectory data, and their normalisation to the canonical schema.

Stored trajectory data comes in four layouts; loaders read any of them and
hand back the canonical padded form of ``neurode.datasets.schema``:

``canonical``
    Already padded: ``time(trajectory, obs)``. Passed through unchanged.
``ragged_contiguous``
    CF conventions 9.3.3, the contiguous ragged array: all observations of all
    trajectories concatenated along one sample dimension, trajectory after
    trajectory; a count variable ``rowSize(trajectory)`` carries the attribute
    ``sample_dimension`` naming that dimension.
``ragged_indexed``
    CF 9.3.4, the indexed ragged array: samples in any order, each tagged by
    an index variable ``trajectory_index(obs)`` whose attribute
    ``instance_dimension`` names the trajectory dimension.
``gridded``
    One shared time axis: a 1-d ``time`` coordinate and variables
    ``(trajectory, time[, component])`` (or ``(time, ...)`` for one trajectory).

Normalisation stays lazy. Only the small bookkeeping arrays (row sizes,
trajectory indices and, for the indexed layout, sample times to order them)
are read; data variables are gathered block by block of trajectories with
dask's vectorised indexing, so a block is read only when a batch needs it.

The ``to_*`` writers go the other way, for interoperability and tests. They
compute their result (a ragged layout cannot be built without knowing the
row sizes).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping

import numpy as np
import xarray as xr

from neurode.datasets.cf_time import convert_time_unit, decode_cf_times
from neurode.datasets.errors import SchemaError
from neurode.datasets.schema import COMPONENT, OBS, TIME, TRAJECTORY, canonical_attrs

CANONICAL = "canonical"
RAGGED_CONTIGUOUS = "ragged_contiguous"
RAGGED_INDEXED = "ragged_indexed"
GRIDDED = "gridded"
LAYOUTS: tuple[str, ...] = (CANONICAL, RAGGED_CONTIGUOUS, RAGGED_INDEXED, GRIDDED)

#: Elements per gathered block: big enough that dask's per-task overhead is
#: small, small enough that drawing one batch reads little beyond it.
_BLOCK_ELEMENTS = 1 << 20


# --------------------------------------------------------------------------- detection


def _attr_variable(ds: xr.Dataset, attr: str) -> Hashable | None:
    for name, var in ds.variables.items():
        if attr in var.attrs:
            return name
    return None


def detect_layout(ds: xr.Dataset, *, time_dim: str = TIME) -> str:
    """Which of :data:`LAYOUTS` ``ds`` is stored in.

    Raises:
        SchemaError: when it is none of them, saying what was looked for.
    """
    if _attr_variable(ds, "sample_dimension") is not None:
        return RAGGED_CONTIGUOUS
    if _attr_variable(ds, "instance_dimension") is not None:
        return RAGGED_INDEXED
    if TIME in ds.variables and ds[TIME].dims == (TRAJECTORY, OBS):
        return CANONICAL
    if time_dim in ds.dims and time_dim in ds.variables and ds[time_dim].dims == (time_dim,):
        return GRIDDED
    time_dims = ds[TIME].dims if TIME in ds.variables else None
    raise SchemaError(
        [
            "not a trajectory layout neurode knows: expected time(trajectory, obs) (canonical), a count "
            "variable with a 'sample_dimension' attribute (CF contiguous ragged), an index variable with an "
            f"'instance_dimension' attribute (CF indexed ragged), or a 1-d {time_dim!r} coordinate (gridded); "
            f"found dims {dict(ds.sizes)} and time dims {time_dims}"
        ]
    )


# --------------------------------------------------------------------------- gathering


def gather_padded(
    da: xr.DataArray,
    indexers: Mapping[Hashable, np.ndarray],
    valid: np.ndarray,
) -> xr.DataArray:
    """Pick ``da`` at integer positions into a padded ``(trajectory, obs, ...)`` array.

    ``out[i, j] = da.isel({d: indexers[d][i, j] for d in indexers})`` where
    ``valid[i, j]``, NaN elsewhere. Every indexer has the shape of ``valid``;
    dims of ``da`` that are not indexed trail in the result.

    Lazy when ``da`` is: each block of trajectories becomes one dask chunk
    that reads only the span of ``da`` its indices touch.
    """
    valid = np.asarray(valid, dtype=bool)
    n_rows, n_cols = valid.shape
    grid = (TRAJECTORY, OBS)
    mask = xr.DataArray(valid, dims=grid)
    # Coordinates along the indexed dims would be picked into 2-d labels;
    # drop them, and put back the ones along other dims (e.g. component).
    kept_coords = {name: coord for name, coord in da.coords.items() if not set(coord.dims) & set(indexers)}
    da = da.drop_vars(list(da.coords))
    for dim in indexers:
        if da.sizes[dim] == 0 and valid.any():
            raise SchemaError([f"variable {da.name!r} has no entries along {dim!r} to gather"])
    if da.chunks is None or n_rows == 0:
        # In memory: one vectorised pick.
        picks = {dim: xr.DataArray(np.where(valid, idx, 0), dims=grid) for dim, idx in indexers.items()}
        return da.isel(picks).where(mask).assign_coords(kept_coords)

    trailing = int(np.prod([size for dim, size in da.sizes.items() if dim not in indexers], dtype=np.int64))
    rows_per_block = max(1, _BLOCK_ELEMENTS // max(1, n_cols * trailing))
    blocks = []
    for start in range(0, n_rows, rows_per_block):
        stop = min(start + rows_per_block, n_rows)
        block_valid = valid[start:stop]
        spans = {}
        picks = {}
        for dim, idx in indexers.items():
            block_idx = idx[start:stop]
            chosen = block_idx[block_valid]
            low = int(chosen.min()) if chosen.size else 0
            high = int(chosen.max()) + 1 if chosen.size else 1
            # Slice to the touched span first, so dask maps the pick onto few chunks.
            spans[dim] = slice(low, high)
            picks[dim] = xr.DataArray(np.where(block_valid, block_idx - low, 0), dims=grid)
        # dask's vectorised pick splits its output finely; one chunk per block instead.
        blocks.append(da.isel(spans).isel(picks).chunk({TRAJECTORY: stop - start, OBS: -1}))
    gathered = xr.concat(blocks, dim=TRAJECTORY) if len(blocks) > 1 else blocks[0]
    return gathered.where(mask).assign_coords(kept_coords)


def _rename_instance(ds: xr.Dataset, instance_dim: Hashable) -> xr.Dataset:
    if instance_dim != TRAJECTORY:
        ds = ds.rename({instance_dim: TRAJECTORY})
    return ds


def _trajectory_ids_as_coords(ds: xr.Dataset) -> xr.Dataset:
    """CF trajectory-id variables (``cf_role = trajectory_id``) are labels, not data."""
    ids = [name for name, var in ds.data_vars.items() if var.attrs.get("cf_role") == "trajectory_id"]
    return ds.set_coords(ids) if ids else ds


def _find_time(ds: xr.Dataset, sample_dim: Hashable) -> Hashable:
    """The time variable along ``sample_dim``: ``time``, else CF ``standard_name``/``axis``."""
    if TIME in ds.variables and ds[TIME].dims[:1] == (sample_dim,):
        return TIME
    for name, var in ds.variables.items():
        if var.dims[:1] == (sample_dim,) and (var.attrs.get("standard_name") == "time" or var.attrs.get("axis") == "T"):
            return name
    raise SchemaError(
        [
            f"no time variable along the sample dimension {sample_dim!r} "
            "(named 'time', or with standard_name='time' or axis='T')"
        ]
    )


def _assemble(
    ds: xr.Dataset,
    sample_dim: Hashable,
    instance_dim: Hashable,
    time_name: Hashable,
    index: np.ndarray,
    valid: np.ndarray,
    drop: list[Hashable],
) -> xr.Dataset:
    """The canonical dataset from a ragged one and its (trajectory, obs) -> sample map."""
    ds = ds.drop_vars(drop)
    out = {}
    for name in list(ds.variables):
        var = ds[name]
        if sample_dim in var.dims:
            if var.dims[0] != sample_dim:
                var = var.transpose(sample_dim, ...)
            target = TIME if name == time_name else name
            gathered = gather_padded(var, {sample_dim: index}, valid)
            if target == TIME:
                gathered = gathered.astype(np.float64) if not np.issubdtype(gathered.dtype, np.floating) else gathered
            out[target] = gathered.assign_attrs(var.attrs)
    rest = ds.drop_vars([name for name, var in ds.variables.items() if sample_dim in var.dims])
    rest = _rename_instance(rest, instance_dim)
    result = rest.assign(out)
    result.attrs = canonical_attrs(ds.attrs)
    if any(var.chunks is not None for var in result.variables.values()):
        # Per-trajectory variables keep their stored chunks; align them with the gathered blocks.
        result = result.unify_chunks()
    return _trajectory_ids_as_coords(result)


# --------------------------------------------------------------------------- readers


def _row_positions(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For rows of ``counts`` samples stored one after another: the sample
    position of each padded slot ``[row, column]``, and which slots are real."""
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
    column = np.arange(int(counts.max()) if counts.size else 0)
    valid = column[None, :] < counts[:, None]
    return starts[:, None] + column[None, :], valid


def _bookkeeping(ds: xr.Dataset, attr: str, what: str, layout: str) -> tuple[Hashable, xr.DataArray, Hashable]:
    """The 1-d count or index variable of a ragged layout and the dimension its ``attr`` names."""
    name = _attr_variable(ds, attr)
    if name is None:
        raise SchemaError([f"no {what} variable with a {attr!r} attribute ({layout})"])
    var = ds[name]
    named = var.attrs[attr]
    if var.ndim != 1:
        raise SchemaError([f"{what} variable {name!r} has dims {var.dims}, expected one dimension"])
    if named not in ds.dims:
        raise SchemaError(
            [f"{what} variable {name!r} names {attr} {named!r}, which is not a dimension; found {list(ds.dims)}"]
        )
    return name, var, named


def from_ragged_contiguous(ds: xr.Dataset) -> xr.Dataset:
    """Normalise a CF contiguous ragged array (``rowSize`` + ``sample_dimension``)."""
    count_name, counts_var, sample_dim = _bookkeeping(ds, "sample_dimension", "count", "CF contiguous ragged array")
    counts = np.asarray(counts_var.values)
    if not np.issubdtype(counts.dtype, np.integer) and not np.all(np.equal(np.mod(counts, 1), 0)):
        raise SchemaError([f"count variable {count_name!r} holds non-integer row sizes"])
    counts = counts.astype(np.int64)
    if (counts < 0).any() or counts.sum() != ds.sizes[sample_dim]:
        raise SchemaError(
            [
                f"row sizes in {count_name!r} sum to {int(counts.sum())}, "
                f"but dimension {sample_dim!r} has {ds.sizes[sample_dim]} samples"
            ]
        )
    index, valid = _row_positions(counts)
    time_name = _find_time(ds, sample_dim)
    return _assemble(ds, sample_dim, counts_var.dims[0], time_name, index, valid, drop=[count_name])


def from_ragged_indexed(ds: xr.Dataset) -> xr.Dataset:
    """Normalise a CF indexed ragged array (``trajectory_index`` + ``instance_dimension``).

    Samples may be stored in any order; within a trajectory they are put in
    time order (reading the index and time variables, nothing else).
    """
    index_name, index_var, instance_dim = _bookkeeping(ds, "instance_dimension", "index", "CF indexed ragged array")
    sample_dim = index_var.dims[0]
    n_instances = ds.sizes[instance_dim]
    owner = np.asarray(index_var.values).astype(np.int64)
    if owner.size and (owner.min() < 0 or owner.max() >= n_instances):
        raise SchemaError(
            [
                f"index variable {index_name!r} holds values in [{owner.min()}, {owner.max()}], "
                f"expected [0, {n_instances - 1}]"
            ]
        )
    time_name = _find_time(ds, sample_dim)
    times = np.asarray(ds[time_name].values, dtype=np.float64)
    # Order by trajectory, then time: each trajectory's samples become one run.
    order = np.lexsort((times, owner))
    positions, valid = _row_positions(np.bincount(owner, minlength=n_instances))
    index = order[np.where(valid, positions, 0)] if order.size else positions
    return _assemble(ds, sample_dim, instance_dim, time_name, index, valid, drop=[index_name])


def from_gridded(
    ds: xr.Dataset,
    *,
    time_dim: str = TIME,
    trajectory_dim: str | None = None,
    component_dim: str | None = None,
) -> xr.Dataset:
    """Normalise data on one shared time axis.

    Args:
        time_dim: the shared time dimension (its coordinate is the time axis).
        trajectory_dim: the dimension enumerating trajectories. Default:
            ``trajectory`` if present, else the dimension of a variable with
            ``cf_role = trajectory_id``, else there is a single trajectory.
        component_dim: the dimension of vector components, renamed to
            ``component``. Default: ``component`` if present, else the one
            remaining dimension if exactly one remains.
    """
    if time_dim not in ds.dims or time_dim not in ds.variables or ds[time_dim].ndim != 1:
        raise SchemaError(
            [f"no 1-d coordinate {time_dim!r} to serve as the shared time axis; found dims {dict(ds.sizes)}"]
        )
    if trajectory_dim is None:
        if TRAJECTORY in ds.dims:
            trajectory_dim = TRAJECTORY
        else:
            roles = [
                var.dims[0]
                for var in ds.variables.values()
                if var.attrs.get("cf_role") == "trajectory_id" and var.ndim == 1
            ]
            trajectory_dim = str(roles[0]) if roles else None
    if trajectory_dim is not None and trajectory_dim not in ds.dims:
        raise SchemaError([f"trajectory_dim {trajectory_dim!r} is not a dimension; found {list(ds.dims)}"])
    if trajectory_dim is None:
        ds = ds.expand_dims(TRAJECTORY)
        trajectory_dim = TRAJECTORY
    others = [d for d in ds.dims if d not in (time_dim, trajectory_dim)]
    if component_dim is None:
        if COMPONENT in others:
            component_dim = COMPONENT
        elif len(others) == 1:
            component_dim = str(others[0])
    if component_dim is not None and component_dim not in ds.dims:
        raise SchemaError([f"component_dim {component_dim!r} is not a dimension; found {list(ds.dims)}"])
    leftover = [d for d in others if d != component_dim]
    if leftover:
        raise SchemaError(
            [
                f"dimensions {leftover} are neither time ({time_dim!r}), trajectory ({trajectory_dim!r}) "
                f"nor component ({component_dim!r}); pass trajectory_dim= or component_dim="
            ]
        )

    time_values = ds[time_dim]
    time_attrs = dict(time_values.attrs)
    ds = ds.drop_vars(time_dim)
    renames = {time_dim: OBS, trajectory_dim: TRAJECTORY}
    ds = ds.rename({k: v for k, v in renames.items() if k != v})
    if component_dim is not None and component_dim != COMPONENT:
        # Only the dimension: a coordinate along it (grid positions, say) keeps its name.
        ds = ds.rename_dims({component_dim: COMPONENT})
        if component_dim in ds.indexes:
            ds = ds.drop_indexes(component_dim)
    order = [d for d in (TRAJECTORY, OBS, COMPONENT) if d in ds.dims]
    ds = ds.transpose(*order)
    time = xr.DataArray(np.asarray(time_values.values, dtype=np.float64), dims=(OBS,))
    time = time.expand_dims({TRAJECTORY: ds.sizes[TRAJECTORY]}).copy()
    ds[TIME] = time.assign_attrs(time_attrs)
    if any(var.chunks is not None for var in ds.data_vars.values()):
        # Keep the whole dataset lazy, time included, chunked like the data.
        ds[TIME] = ds[TIME].chunk()
        ds = ds.unify_chunks()
    ds.attrs = canonical_attrs(ds.attrs)
    return _trajectory_ids_as_coords(ds)


def to_canonical(ds: xr.Dataset, *, layout: str | None = None, time_unit: str | None = None, **options) -> xr.Dataset:
    """Normalise ``ds`` from ``layout`` (detected when ``None``) to the canonical form.

    CF times (``"<unit> since <epoch>"`` numbers, or datetimes xarray already
    decoded) become float time first (``neurode.datasets.cf_time``), in
    ``time_unit`` if given; a plain float time is rescaled to ``time_unit``.
    ``options`` go to :func:`from_gridded` (``time_dim``, ``trajectory_dim``,
    ``component_dim``); the other layouts take none.
    """
    ds = decode_cf_times(ds, time_unit=time_unit)
    canonical = _normalise(ds, layout, options)
    if time_unit is not None and TIME in canonical.variables:
        canonical = convert_time_unit(canonical, time_unit)
    return canonical


def _normalise(ds: xr.Dataset, layout: str | None, options: dict) -> xr.Dataset:
    if layout is None:
        layout = detect_layout(ds, time_dim=options.get("time_dim", TIME))
    if layout not in LAYOUTS:
        raise SchemaError([f"unknown layout {layout!r}, expected one of {', '.join(LAYOUTS)}"])
    if options and layout != GRIDDED:
        raise SchemaError([f"options {sorted(options)} apply to the gridded layout only, not {layout!r}"])
    if layout == CANONICAL:
        return ds
    if layout == RAGGED_CONTIGUOUS:
        return from_ragged_contiguous(ds)
    if layout == RAGGED_INDEXED:
        return from_ragged_indexed(ds)
    return from_gridded(ds, **options)


# --------------------------------------------------------------------------- writers


def _flatten(ds: xr.Dataset, sample_dim: str) -> tuple[xr.Dataset, np.ndarray, np.ndarray]:
    """Observed samples of a canonical dataset, trajectory after trajectory, in time order.

    Returns the samples (along ``sample_dim``), each sample's trajectory and
    each trajectory's count.
    """
    time = np.asarray(ds[TIME].values)
    valid = ~np.isnan(time)
    rows, cols = np.nonzero(valid)  # row-major: trajectory by trajectory, obs in order
    pick = {TRAJECTORY: xr.DataArray(rows, dims=sample_dim), OBS: xr.DataArray(cols, dims=sample_dim)}
    along_obs = [name for name, var in ds.data_vars.items() if OBS in var.dims]
    samples = ds[along_obs].isel(pick).drop_vars([TRAJECTORY, OBS], errors="ignore").compute()
    return samples, rows, valid.sum(axis=1)


def _with_instances(ds: xr.Dataset, samples: xr.Dataset) -> xr.Dataset:
    """Per-trajectory variables and coordinates of ``ds`` next to the flattened samples."""
    instance = ds.drop_vars([name for name, var in ds.variables.items() if OBS in var.dims]).compute()
    out = xr.merge([instance, samples], combine_attrs="override")
    out.attrs = canonical_attrs(ds.attrs)
    return out


def to_ragged_contiguous(ds: xr.Dataset, *, sample_dim: str = OBS, count_name: str = "rowSize") -> xr.Dataset:
    """The CF contiguous ragged form of a canonical dataset (computed in memory)."""
    samples, _, counts = _flatten(ds, sample_dim)
    out = _with_instances(ds, samples)
    out[count_name] = xr.DataArray(
        counts.astype(np.int32),
        dims=(TRAJECTORY,),
        attrs={"sample_dimension": sample_dim, "long_name": "number of observations for this trajectory"},
    )
    return out


def to_ragged_indexed(
    ds: xr.Dataset, *, sample_dim: str = OBS, index_name: str = "trajectory_index", shuffle_seed: int | None = None
) -> xr.Dataset:
    """The CF indexed ragged form of a canonical dataset (computed in memory).

    ``shuffle_seed`` stores the samples in a random order, which CF allows
    and readers must undo.
    """
    samples, rows, _ = _flatten(ds, sample_dim)
    samples[index_name] = xr.DataArray(
        rows.astype(np.int32),
        dims=(sample_dim,),
        attrs={"instance_dimension": TRAJECTORY, "long_name": "which trajectory this observation belongs to"},
    )
    if shuffle_seed is not None:
        samples = samples.isel({sample_dim: np.random.default_rng(shuffle_seed).permutation(samples.sizes[sample_dim])})
    return _with_instances(ds, samples)


def to_gridded(ds: xr.Dataset, *, time_dim: str = TIME) -> xr.Dataset:
    """The gridded form of a canonical dataset whose trajectories share one time grid."""
    time = np.asarray(ds[TIME].values)
    shared = time[0] if time.shape[0] else np.empty(0)
    if np.isnan(time).any() or not np.array_equal(time, np.broadcast_to(shared, time.shape)):
        raise SchemaError(["trajectories do not share one complete time grid; the gridded layout needs one"])
    out = ds.drop_vars(TIME).rename({OBS: time_dim})
    out = out.assign_coords({time_dim: xr.DataArray(shared, dims=(time_dim,), attrs=ds[TIME].attrs)})
    out.attrs = dict(ds.attrs)
    return out
