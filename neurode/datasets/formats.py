"""Opening stores by file format (zarr 2 and 3, netCDF) lazily, then into the schema.

The loader plugins are thin: each names a format or a layout and calls
:func:`open_store`, which

1. checks the path exists (:class:`~neurode.datasets.errors.StoreNotFoundError`);
2. opens it lazily with xarray: zarr with its stored chunks, netCDF with
   dask's automatic chunks, always ``decode_timedelta=False`` so simulation
   time stays a float with units on every xarray version; read failures
   become :class:`~neurode.datasets.errors.UnreadableStoreError` naming the
   path and format;
3. normalises the layout (``neurode.datasets.layouts``) and selects variables.

Zarr notes (zarr-python 3): format 3 has no consolidated metadata in its
specification (asking for it warns) and format 2 has ``.zmetadata``; asking
xarray for consolidated metadata that is absent also warns. So the format
and the presence of consolidated metadata are read from the store's own
metadata files first, and xarray is told exactly what is there.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
from pathlib import Path
from typing import Any

import xarray as xr

from neurode.datasets.errors import DataError, SchemaError, StoreNotFoundError, UnreadableStoreError
from neurode.datasets.layouts import detect_layout, to_canonical
from neurode.datasets.schema import select_variables

ZARR = "zarr"
NETCDF = "netcdf"
FORMATS: tuple[str, ...] = (ZARR, NETCDF)

ZARR_SUFFIXES: tuple[str, ...] = (".zarr",)
NETCDF_SUFFIXES: tuple[str, ...] = (".nc", ".nc4", ".netcdf", ".cdf", ".h5", ".hdf5")
#: netCDF engines in order of preference; h5netcdf needs no C library of its own.
NETCDF_ENGINES: tuple[str, ...] = ("h5netcdf", "netcdf4", "scipy")
_ENGINE_MODULES = {"h5netcdf": "h5netcdf", "netcdf4": "netCDF4", "scipy": "scipy"}
#: How to get a netCDF engine: neurode's extra installs h5netcdf and h5py.
NETCDF_EXTRA_HINT = "pip install 'neurode[netcdf]'"
_EXPECTED_NETCDF = "expected a netCDF-4 (HDF5) or netCDF-3 file"

# First bytes of netCDF files: classic/64-bit offset ("CDF"), netCDF-4 (HDF5).
_NETCDF_MAGIC = (b"CDF\x01", b"CDF\x02", b"CDF\x05", b"\x89HDF\r\n\x1a\n")


def zarr_format_of(path: Path) -> int | None:
    """2 or 3 for a zarr directory store, ``None`` if ``path`` is not one."""
    if not path.is_dir():
        return None
    if (path / "zarr.json").is_file():
        return 3
    if (path / ".zgroup").is_file() or (path / ".zarray").is_file():
        return 2
    return None


def is_netcdf_file(path: Path) -> bool:
    """Whether ``path`` is a file starting with a netCDF (or HDF5) signature."""
    if not path.is_file():
        return False
    try:
        with path.open("rb") as handle:
            head = handle.read(8)
    except OSError:
        return False
    return any(head.startswith(magic) for magic in _NETCDF_MAGIC)


def available_netcdf_engines() -> list[str]:
    """The netCDF engines xarray can use here."""
    return [engine for engine in NETCDF_ENGINES if importlib.util.find_spec(_ENGINE_MODULES[engine]) is not None]


def format_of(path: Path) -> str | None:
    """The file format of ``path`` by its contents, then by its suffix; ``None`` if unknown."""
    if zarr_format_of(path) is not None:
        return ZARR
    if is_netcdf_file(path):
        return NETCDF
    name = path.name.lower()
    if name.endswith(ZARR_SUFFIXES):
        return ZARR
    if name.endswith(NETCDF_SUFFIXES):
        return NETCDF
    return None


def _zarr_consolidated(path: Path, zarr_format: int) -> bool:
    if zarr_format == 2:
        return (path / ".zmetadata").is_file()
    try:
        group = json.loads((path / "zarr.json").read_text())
    except (OSError, ValueError):
        return False
    return bool(group.get("consolidated_metadata"))


def open_zarr(path: Path, *, chunks: Any = None, decode_times: bool = False) -> xr.Dataset:
    """Open a zarr store (format 2 or 3) lazily, with the stored chunks unless ``chunks`` is given."""
    zarr_format = zarr_format_of(path)
    if zarr_format is None:
        raise UnreadableStoreError(f"{path}: not a zarr store (no zarr.json or .zgroup inside)")
    try:
        return xr.open_zarr(
            path,
            chunks={} if chunks is None else chunks,
            zarr_format=zarr_format,
            consolidated=_zarr_consolidated(path, zarr_format),
            decode_times=decode_times,
            decode_timedelta=False,
        )
    except Exception as exc:
        raise UnreadableStoreError(
            f"{path}: cannot read as a zarr format {zarr_format} store ({one_line(exc, path)})"
        ) from exc


def open_netcdf(
    path: Path, *, engine: str | None = None, chunks: Any = None, decode_times: bool = False
) -> xr.Dataset:
    """Open a netCDF file lazily with ``engine``, or the first installed engine that reads it.

    Engines are tried in turn because "installed" is not "works": h5netcdf
    imports without h5py but cannot open a file, and it cannot read
    netCDF-3 at all, which netCDF4 and scipy can.
    """
    if engine is not None and engine not in NETCDF_ENGINES:
        raise DataError(f"unknown netCDF engine {engine!r}, expected one of {', '.join(NETCDF_ENGINES)}")
    engines = [engine] if engine is not None else available_netcdf_engines()
    if not engines:
        raise UnreadableStoreError(
            f"{path}: reading netCDF needs one of the packages {', '.join(_ENGINE_MODULES.values())}, "
            f"and none is installed; {NETCDF_EXTRA_HINT} installs h5netcdf"
        )
    failures = []
    missing_library = False
    for candidate in engines:
        try:
            # "auto" rather than {}: a contiguous netCDF variable would otherwise be one chunk.
            return xr.open_dataset(
                path,
                engine=candidate,
                chunks="auto" if chunks is None else chunks,
                decode_times=decode_times,
                decode_timedelta=False,
            )
        except Exception as exc:
            missing_library |= isinstance(exc, ImportError)
            failures.append(f"{candidate}: {one_line(exc, path)}")
    hint = f"; {NETCDF_EXTRA_HINT} installs a working engine" if missing_library else ""
    raise UnreadableStoreError(f"{path}: cannot read as netCDF ({'; '.join(failures)}); {_EXPECTED_NETCDF}{hint}")


def one_line(exc: BaseException, path: Path | None = None, limit: int = 160) -> str:
    """A library's exception as one short line: its first line, without memory addresses or the path again.

    HDF5 and netCDF errors run over many lines (pip advice, buffer addresses)
    that mean nothing to someone whose file is simply not what it claims.
    """
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    text = lines[0] if lines else ""
    if path is not None:
        for spelling in (str(Path(path).resolve()), str(path)):
            text = text.replace(spelling, "the file")
    text = re.sub(r"\s*\([^()]*0x[0-9a-fA-F]+[^()]*\)", "", text)  # "(addr = 0x7f..., size = ...)"
    text = re.sub(r"\b0x[0-9a-fA-F]{6,}\b", "...", text)
    text = re.sub(r"^Error:\s*", "", text)
    if len(text) > limit:
        text = text[: limit - 3].rstrip() + "..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def open_raw(
    path: str | os.PathLike,
    *,
    format: str | None = None,
    chunks: Any = None,
    engine: str | None = None,
    decode_times: bool = False,
) -> xr.Dataset:
    """Open ``path`` lazily as stored, in whatever layout it has.

    CF times stay numbers with their ``"<unit> since <epoch>"`` units unless
    ``decode_times``; either way :func:`~neurode.datasets.cf_time.decode_cf_times`
    makes float time of them afterwards.
    """
    path = Path(os.fspath(path))
    if not path.exists():
        raise StoreNotFoundError(f"{path}: no such file or directory")
    if format is None:
        format = format_of(path)
    if format == ZARR:
        return open_zarr(path, chunks=chunks, decode_times=decode_times)
    if format == NETCDF:
        return open_netcdf(path, engine=engine, chunks=chunks, decode_times=decode_times)
    if format is None:
        raise UnreadableStoreError(
            f"{path}: not a zarr store or netCDF file (expected a directory with zarr.json/.zgroup, "
            f"or a file ending in {', '.join(ZARR_SUFFIXES + NETCDF_SUFFIXES)})"
        )
    raise DataError(f"unknown store format {format!r}, expected one of {', '.join(FORMATS)}")


def open_store(
    path: str | os.PathLike,
    *,
    format: str | None = None,
    layout: str | None = None,
    variables: list[str] | None = None,
    chunks: Any = None,
    engine: str | None = None,
    accept_layouts: tuple[str, ...] | None = None,
    decode_times: bool = False,
    time_unit: str | None = None,
    **layout_options: Any,
) -> xr.Dataset:
    """Open ``path`` lazily and return it in the canonical trajectory schema.

    Args:
        format: ``"zarr"`` or ``"netcdf"``; detected from the store when ``None``.
        layout: one of ``neurode.datasets.layouts.LAYOUTS``; detected when ``None``.
        variables: data variables to keep (``time`` and coordinates always stay).
        chunks: dask chunks to open with (default: the stored chunks for zarr,
            dask's automatic chunks for netCDF).
        engine: netCDF engine (default: the first of ``h5netcdf``, ``netcdf4``,
            ``scipy`` installed).
        accept_layouts: when given, a store in any other layout is an error
            (the ``ragged`` and ``gridded`` loaders insist on theirs).
        decode_times: let xarray decode CF times to datetimes first (the
            result is the same float time; ``False`` reads less).
        time_unit: express time in this unit (``"days"``, ``"years"``...);
            default: the store's own. CF ``"<unit> since <epoch>"`` times
            become floats in any case, the epoch kept in ``attrs["epoch"]``.
        **layout_options: for the gridded layout: ``time_dim``,
            ``trajectory_dim``, ``component_dim``.
    """
    raw = open_raw(path, format=format, chunks=chunks, engine=engine, decode_times=decode_times)
    source = os.fspath(path)
    try:
        if layout is None:
            layout = detect_layout(raw, time_dim=layout_options.get("time_dim", "time"))
        if accept_layouts is not None and layout not in accept_layouts:
            raise SchemaError([f"stored in the {layout} layout, expected {' or '.join(accept_layouts)}"])
        ds = to_canonical(raw, layout=layout, time_unit=time_unit, **layout_options)
    except SchemaError as exc:
        raise SchemaError(exc.violations, source=source) from None
    return select_variables(ds, variables, source=source)
