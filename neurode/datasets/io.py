"""Reading any store through the registered loaders, and writing zarr and netCDF safely.

:func:`load` is ``neurode.load``. It finds a loader through the registry only
(by name, or by asking each registered loader whether it can open the path),
exactly as it would find a third-party one; the built-in loaders are plugins
like any other.

:func:`write_zarr` writes a canonical dataset to a zarr store atomically: into
a hidden sibling directory first, renamed into place only when complete, so a
crash, a full disk or Ctrl-C leaves no half-written store under the requested
name. :func:`write_netcdf` does the same for one netCDF file (a temporary
file in the same directory, fsync, ``os.replace``), and :func:`write_store`
picks between them by the path's suffix. :func:`check_writable` says, before
any work, why a path cannot be written.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

import xarray as xr

from neurode.datasets.errors import (
    DataError,
    NoLoaderError,
    SchemaError,
    StoreExistsError,
    StoreNotFoundError,
    StoreWriteError,
    UnreadableStoreError,
)
from neurode.datasets.schema import COMPONENT, OBS, TIME, TRAJECTORY, canonical_order, time_violations, validate
from neurode.framework.errors import NeurodeError
from neurode.framework.loader import AbstractLoader

#: Largest ``time`` array :func:`load` checks at once (one streaming read). Past
#: it the check is left to the batches: ``TrajectoryDataset`` checks every
#: trajectory it reads, so a huge store costs nothing extra at load.
EAGER_TIME_CHECK_BYTES = 256 << 20

#: Target size of one stored chunk (all of a block of trajectories). A few MB
#: keeps per-chunk overhead small while a batch of trajectories reads little extra.
CHUNK_BYTES = 4 << 20


def _instantiate(name: str, factory: Any) -> AbstractLoader:
    loader = factory()
    if not callable(getattr(loader, "open", None)) or not callable(getattr(loader, "can_open", None)):
        raise DataError(f"loader {name!r} ({factory!r}) does not provide can_open() and open() as AbstractLoader does")
    return loader


def _registered_loaders() -> list[tuple[str, Any, bool]]:
    """``(name, factory, is_builtin)`` of every registered loader.

    From the plugin index when it is current, importing only the loaders'
    own modules (not every plugin, and not torch); from the registry when the
    index is off, the registry is built already, or a loader is not importable
    by name.
    """
    from neurode.framework import plugin_index
    from neurode.framework.registry import get_registry

    if plugin_index.enabled() and not plugin_index.is_registry_built():
        index = plugin_index.get()
        entries = [c for c in index["components"] if c["kind"] == "loader"]
        conflicts = any(c["kind"] == "loader" for c in index["conflicts"])  # the registry's error names both
        if not conflicts and all(entry.get("object") for entry in entries):
            try:
                return [(e["name"], plugin_index.load_object(e["object"]), e["builtin"]) for e in entries]
            except Exception:  # moved or renamed since the index was written: the registry knows
                pass
    return [(c.name, c.obj, c.source.builtin) for c in get_registry().components("loader")]


def find_loader(path: str | os.PathLike, *, loader: str | None = None) -> AbstractLoader:
    """The loader that opens ``path``: the one named ``loader``, else the first that can.

    Loaders are asked in registry order by name, third-party plugins before
    built-ins, so an installed plugin can claim a suffix a built-in also knows.
    """
    from neurode.framework.registry import get_registry

    loaders = sorted(_registered_loaders(), key=lambda entry: (entry[2], entry[0]))
    if loader is not None:
        factory = next((obj for name, obj, _ in loaders if name == loader), None)
        if factory is None:  # the registry's own error: close names, or the two sources of a conflict
            factory = get_registry().get("loader", loader).obj
        return _instantiate(loader, factory)
    for name, factory, _ in loaders:
        candidate = _instantiate(name, factory)
        if candidate.can_open(path):
            return candidate
    known = ", ".join(
        f"{name} ({', '.join(getattr(obj, 'suffixes', ()) or ()) or 'by name only'})" for name, obj, _ in loaders
    )
    where = f"{os.fspath(path)}: no loader recognises this path"
    raise NoLoaderError(
        f"{where}; pass loader=<name>. Loaders: {known}",
        cli_message=f"{where}; pass --loader NAME. Loaders: {known}",
    )


def load(
    path: str | os.PathLike,
    *,
    loader: str | None = None,
    variables: list[str] | None = None,
    check_values: bool = False,
    check_times: bool = True,
    **kwargs: Any,
) -> xr.Dataset:
    """Open a stored trajectory dataset lazily in the canonical schema.

    Args:
        path: a zarr store, a netCDF file, or whatever a registered loader opens.
        loader: a loader name (``zarr``, ``netcdf``, ``ragged``, ``gridded`` or a
            plugin's); by default the first loader that recognises the path.
        variables: data variables to keep; ``time`` and coordinates always stay.
        check_values: also validate the data (one streaming read of every
            array). The structure is always checked, which reads nothing.
        check_times: check that times increase strictly within each
            trajectory, with trailing padding (one streaming read of ``time``
            alone, chunk by chunk). On by default: a repeated or decreasing
            time silently corrupts training. ``False`` skips it for trusted
            stores. Batches drawn through ``TrajectoryDataset`` are checked
            as they are read in any case, which is all the checking a store
            whose ``time`` exceeds :data:`EAGER_TIME_CHECK_BYTES` gets.
        **kwargs: options for the loader (e.g. ``chunks``, ``layout``,
            ``engine``, ``time_dim``; the built-in loaders also take
            ``time_unit="years"`` and ``decode_times``). CF time
            (``"days since 1958-03-29"``) arrives as float time in
            ``units="days"`` with ``attrs["epoch"] = "1958-03-29"``.

    Returns:
        A dask-backed :class:`xarray.Dataset` in the schema of
        ``neurode.datasets.schema``, variables in
        :func:`~neurode.datasets.schema.canonical_order`; nothing is read until
        values are needed.

    Raises:
        StoreNotFoundError: ``path`` does not exist.
        NoLoaderError: no loader recognises ``path``.
        UnreadableStoreError: the loader failed to read it.
        SchemaError: what was read does not match the schema (every problem listed).
    """
    source = os.fspath(path)
    if not Path(source).exists():
        raise StoreNotFoundError(f"{source}: no such file or directory")
    chosen = find_loader(path, loader=loader)
    try:
        ds = chosen.open(path, variables=variables, **kwargs)
    except NeurodeError:
        raise
    except TypeError as exc:
        if not kwargs:
            raise UnreadableStoreError(f"{source}: loader {chosen.name!r} failed: TypeError: {exc}") from exc
        raise DataError(f"{source}: loader {chosen.name!r} rejected the options {sorted(kwargs)}: {exc}") from exc
    except Exception as exc:  # a third-party loader's own failure: still name the path
        raise UnreadableStoreError(f"{source}: loader {chosen.name!r} failed: {type(exc).__name__}: {exc}") from exc
    if not isinstance(ds, xr.Dataset):
        raise DataError(f"{source}: loader {chosen.name!r} returned {type(ds).__name__}, expected xarray.Dataset")
    try:
        validate(ds, check_values=check_values, source=source)
    except SchemaError as exc:
        raise SchemaError(exc.violations, source=source) from None
    if check_times and not check_values and ds[TIME].nbytes <= EAGER_TIME_CHECK_BYTES:
        problems = time_violations(ds)
        if problems:
            raise SchemaError(
                problems,
                source=source,
                hint="(neurode.load(..., check_times=False) skips this check; `neurode data validate PATH` lists "
                "every problem)",
            )
    return canonical_order(ds)


def check_writable(path: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Raise, naming the path and the reason, unless a store can be written at ``path``.

    Checked before any work, so a long simulation does not end in a failed
    write: the nearest existing ancestor must be a directory that this
    process may write to, and ``path`` must not exist unless ``overwrite``.

    Raises:
        StoreExistsError: ``path`` exists and ``overwrite`` is false.
        StoreWriteError: a parent is a file, or the directory is read-only.
    """
    target = Path(os.fspath(path))
    if target.exists() and not overwrite:
        raise StoreExistsError(f"{target}: already exists; pass overwrite=True (--overwrite) to replace it")
    ancestor = target.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise StoreWriteError(f"{target}: cannot write here: {ancestor} is a file, not a directory")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise StoreWriteError(f"{target}: cannot write here: no permission to write in {ancestor}")
    return target


def _write_failed(target: Path, exc: OSError) -> StoreWriteError:
    reason = exc.strerror or str(exc)
    return StoreWriteError(f"{target}: cannot write: {reason}")


def default_chunk_trajectories(ds: xr.Dataset, chunk_bytes: int = CHUNK_BYTES) -> int:
    """How many trajectories make one chunk of about ``chunk_bytes`` for ``ds``."""
    per_trajectory = 0
    for var in ds.data_vars.values():
        if TRAJECTORY in var.dims:
            per_trajectory += var.dtype.itemsize * max(1, var.size // max(1, var.sizes[TRAJECTORY]))
    return max(1, min(ds.sizes.get(TRAJECTORY, 1), chunk_bytes // max(1, per_trajectory)))


def write_zarr(
    ds: xr.Dataset,
    path: str | os.PathLike,
    *,
    zarr_format: int = 3,
    overwrite: bool = False,
    chunk_trajectories: int | None = None,
) -> Path:
    """Write ``ds`` to a zarr store at ``path``, atomically.

    The store is chunked by blocks of whole trajectories (every observation
    and component of a trajectory in one chunk), which is how batches read it.
    Format 2 stores get consolidated metadata; format 3 has none in its
    specification, so none is written.

    Raises:
        StoreExistsError: ``path`` exists and ``overwrite`` is false.
        DataError: the format is not 2 or 3.
    """
    if zarr_format not in (2, 3):
        raise DataError(f"zarr_format must be 2 or 3, got {zarr_format!r}")
    target = check_writable(path, overwrite=overwrite)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _write_failed(target, exc) from exc

    n = chunk_trajectories or default_chunk_trajectories(ds)
    chunks = {dim: -1 for dim in (OBS, COMPONENT) if dim in ds.dims}
    if TRAJECTORY in ds.dims:
        chunks[TRAJECTORY] = n
    ds = ds.chunk(chunks)
    for var in ds.variables.values():
        # Chunk encodings carried over from a store this was read from would
        # contradict the new chunks; let the dask chunks decide.
        for key in ("chunks", "preferred_chunks", "shards"):
            var.encoding.pop(key, None)

    partial = target.parent / f".{target.name}.partial-{uuid.uuid4().hex[:12]}"
    try:
        ds.to_zarr(partial, mode="w-", zarr_format=zarr_format, consolidated=zarr_format == 2)
        if target.exists():
            # os.replace cannot put a directory over a non-empty one: move the
            # old store aside first, then drop it once the new one is in place.
            retired = target.parent / f".{target.name}.old-{uuid.uuid4().hex[:12]}"
            os.replace(target, retired)
            os.replace(partial, target)
            if retired.is_dir():
                shutil.rmtree(retired)
            else:
                retired.unlink()
        else:
            os.replace(partial, target)
    except BaseException as exc:
        shutil.rmtree(partial, ignore_errors=True)
        if isinstance(exc, OSError) and not isinstance(exc, NeurodeError):
            raise _write_failed(target, exc) from exc
        raise
    return target


def write_netcdf(ds: xr.Dataset, path: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Write ``ds`` to one netCDF-4 file at ``path``, atomically (temporary file, fsync, ``os.replace``).

    Raises:
        StoreExistsError: ``path`` exists and ``overwrite`` is false.
        UnreadableStoreError: no netCDF engine is installed (``pip install 'neurode[netcdf]'``).
    """
    engine = netcdf_write_engine(path)
    target = check_writable(path, overwrite=overwrite)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _write_failed(target, exc) from exc
    partial = target.parent / f".{target.name}.partial-{uuid.uuid4().hex[:12]}"
    try:
        ds.to_netcdf(partial, engine=engine)
        with partial.open("rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(partial, target)
    except BaseException as exc:
        partial.unlink(missing_ok=True)
        if isinstance(exc, OSError) and not isinstance(exc, NeurodeError):
            raise _write_failed(target, exc) from exc
        raise
    return target


def netcdf_write_engine(path: str | os.PathLike) -> str:
    """The netCDF engine that writes ``path`` (netCDF-4: h5netcdf or netCDF4), or a one-line error."""
    from neurode.datasets.formats import NETCDF_EXTRA_HINT, available_netcdf_engines

    engines = [engine for engine in available_netcdf_engines() if engine in ("h5netcdf", "netcdf4")]
    if "h5netcdf" in engines and importlib.util.find_spec("h5py") is None:
        engines.remove("h5netcdf")
    if not engines:
        raise UnreadableStoreError(
            f"{os.fspath(path)}: writing netCDF needs h5netcdf (with h5py) or netCDF4, and neither is installed; "
            f"{NETCDF_EXTRA_HINT} installs them, or write a zarr store (a path ending in .zarr)"
        )
    return engines[0]


def is_netcdf_path(path: str | os.PathLike) -> bool:
    """Whether ``path`` names a netCDF file by its suffix (``.nc``, ``.nc4``, ``.h5``...)."""
    from neurode.datasets.formats import NETCDF_SUFFIXES

    return Path(os.fspath(path)).name.lower().endswith(NETCDF_SUFFIXES)


def write_store(ds: xr.Dataset, path: str | os.PathLike, *, overwrite: bool = False, zarr_format: int = 3) -> Path:
    """Write ``ds`` as netCDF when ``path`` ends in a netCDF suffix (``.nc``...), else as a zarr store."""
    if is_netcdf_path(path):
        return write_netcdf(ds, path, overwrite=overwrite)
    return write_zarr(ds, path, zarr_format=zarr_format, overwrite=overwrite)
