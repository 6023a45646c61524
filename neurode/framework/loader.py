"""The loader contract: read a stored dataset into neurode's trajectory schema.

A loader is what ``register_loaders`` registers (see ``hookspecs.py``): the
factory returns an :class:`AbstractLoader`. ``neurode.load(path)`` asks every
registered loader whether it :meth:`~AbstractLoader.can_open` the path and
opens it with the one that says yes; ``neurode.load(path, loader="name")``
skips the question.

What :meth:`~AbstractLoader.open` returns is the canonical schema described in
``neurode.datasets.schema`` (dims ``trajectory`` x ``obs``, a NaN-padded
``time(trajectory, obs)``, state variables NaN where unobserved, CF attributes).
It must stay lazy: arrays backed by dask (or another chunked array), read
only when a batch is drawn, because stores are routinely larger than memory.
``neurode.load`` checks the structure of what a loader returns, so a loader
need not validate it itself.

This module imports nothing heavy: xarray appears in annotations only.
"""

from __future__ import annotations

import abc
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:  # pragma: no cover
    import xarray as xr

PathLike = str | os.PathLike


class AbstractLoader(abc.ABC):
    """Reads one kind of store into the canonical trajectory schema.

    Subclasses set :attr:`name` and, when they recognise files by name,
    :attr:`suffixes`; they implement :meth:`open`, and override
    :meth:`can_open` when a suffix is not enough (for instance to peek at a
    directory's metadata).
    """

    #: The name users pass as ``neurode.load(path, loader=name)``.
    name: ClassVar[str] = ""
    #: Lower-case file-name endings this loader claims, e.g. ``(".zarr",)``.
    #: Empty for loaders that are only ever chosen by name.
    suffixes: ClassVar[tuple[str, ...]] = ()

    def can_open(self, path: PathLike) -> bool:
        """Whether this loader recognises ``path``. By default: by suffix.

        Must be cheap and must not raise for paths it does not understand;
        it is asked of every loader for every path opened without a name.
        """
        lowered = Path(os.fspath(path)).name.lower()
        return any(lowered.endswith(suffix) for suffix in self.suffixes)

    @abc.abstractmethod
    def open(self, path: PathLike, *, variables: list[str] | None = None, **kwargs: Any) -> xr.Dataset:
        """Open ``path`` lazily as a canonical trajectory dataset.

        Args:
            path: the store (a file or a directory).
            variables: names of data variables to keep (state or
                per-trajectory); ``time`` and coordinates are always kept.
                ``None`` keeps everything.
            **kwargs: loader-specific options, documented by each loader.

        Raises:
            neurode.framework.errors.NeurodeError: a subclass naming the path
                and the problem when the store cannot be read or does not
                match the schema.
        """

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, suffixes={self.suffixes!r})"
