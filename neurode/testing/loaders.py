"""Conformance check for loader plugins: what a store opens to is the canonical schema, lazily.

A plugin author hands :func:`check_loader` a loader (registered name or
instance) and a store it should read; the check opens it as ``neurode.load``
would and asserts what the rest of neurode relies on.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from neurode.framework.errors import NeurodeError
from neurode.framework.loader import AbstractLoader
from neurode.framework.registry import get_registry


def _loader(loader: str | AbstractLoader) -> AbstractLoader:
    if isinstance(loader, AbstractLoader):
        return loader
    instance = get_registry().get("loader", loader).obj()
    if not isinstance(instance, AbstractLoader):
        raise AssertionError(
            f"loader {loader!r}: its factory returned {type(instance).__name__}, not an AbstractLoader"
        )
    return instance


def check_loader(loader: str | AbstractLoader, path: str | os.PathLike, *, variable: str | None = None) -> None:
    """Assert that ``loader`` opens ``path`` into the canonical trajectory schema.

    Checks: the loader claims the path (``can_open``) when it declares
    suffixes; what it returns passes ``neurode.datasets.validate``; data
    variables stay lazy (chunked, e.g. dask) until computed; ``variables=[v]``
    keeps ``v`` and ``time`` and drops the other data variables; a missing
    path raises a :class:`~neurode.NeurodeError` that names it.

    Args:
        loader: a registered loader name or an :class:`AbstractLoader`.
        path: a store this loader should read.
        variable: the data variable used for the selection check (default:
            the first state variable found).
    """
    from neurode.datasets.schema import validate

    instance = _loader(loader)
    name = instance.name or type(instance).__name__
    if instance.suffixes and not instance.can_open(path):
        raise AssertionError(f"loader {name!r} declares suffixes {instance.suffixes} but can_open({path!s}) is False")
    ds = instance.open(path)
    try:
        validate(ds, check_values=True, source=str(path))
    except NeurodeError as exc:
        raise AssertionError(f"loader {name!r}: {path!s} does not open to the canonical schema: {exc}") from exc
    eager = [v for v, da in ds.data_vars.items() if da.chunks is None and da.size > 0]
    if eager:
        raise AssertionError(
            f"loader {name!r}: data variables {eager} of {path!s} are loaded eagerly; loaders must stay lazy "
            "(chunked arrays) until a batch is drawn"
        )
    candidates = [v for v, da in ds.data_vars.items() if v != "time" and "obs" in da.dims]
    chosen = variable or (candidates[0] if candidates else None)
    if chosen is not None:
        selected = instance.open(path, variables=[chosen])
        kept = set(selected.data_vars) - {"time"}
        if kept != {chosen}:
            raise AssertionError(f"loader {name!r}: variables=[{chosen!r}] kept {sorted(kept)}")
    missing = Path(tempfile.gettempdir()) / (
        f"neurode-check-loader-missing-{os.getpid()}{(instance.suffixes or ('',))[0]}"
    )
    try:
        instance.open(missing)
    except NeurodeError as exc:
        if str(missing) not in str(exc) and missing.name not in str(exc):
            raise AssertionError(f"loader {name!r}: the error for a missing store does not name it: {exc}") from exc
    except Exception as exc:  # a raw exception is what users must never see
        raise AssertionError(
            f"loader {name!r}: a missing store raised {type(exc).__name__} ({exc}), expected a NeurodeError naming it"
        ) from exc
    else:
        raise AssertionError(f"loader {name!r}: opening the missing store {missing} raised nothing")
