"""The plugin index: what the registry found, cached as JSON so that listing it imports nothing.

Building the registry imports every plugin, and with the solvers torch: over a
second on an idle machine, many on a loaded one. Most of the command line only
needs to *know* what is registered — ``neurode --help`` the names of plugin
commands, ``neurode plugins`` the table, ``neurode data info`` which loader
opens a path — so a snapshot of a built registry serves it:

- every component (kind, name, source, description, and where its object
  lives as ``module:qualname`` when it is importable by name — classes are,
  ``functools.partial`` objects are not), with a loader's ``suffixes``;
- plugins that failed to load, disabled ones, name conflicts;
- plugin commands and their one-line help (once the command line has loaded
  them; ``None`` until then).

The snapshot is keyed by a fingerprint of everything that decides what the
registry holds, read without importing any plugin: neurode's version, the
interpreter, ``NEURODE_DISABLE_PLUGINS``, every entry point in the ``neurode``
group (name, target, distribution, version, and the time its metadata was
installed), and the size and modification time of every file in the packages
holding the built-in plugins. Anything else changes nothing it records, with
one exception: editing an *editable* third-party plugin without reinstalling
it. ``neurode plugins --refresh`` rebuilds the index; every command that
builds the full registry anyway rewrites it.

Where: ``$NEURODE_CACHE``, else ``$XDG_CACHE_HOME/neurode``, else
``~/.cache/neurode``. ``NEURODE_PLUGIN_INDEX=0`` switches the index off
(everything then builds the registry, as before). A cache that cannot be
written is simply not written.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import importlib.metadata
import json
import os
import sys
import uuid
import warnings
from pathlib import Path
from typing import Any

from neurode.framework import registry as registry_module

INDEX_ENV = "NEURODE_PLUGIN_INDEX"
CACHE_ENV = "NEURODE_CACHE"
#: Bumped whenever the index's layout changes, so an old file is never misread.
FORMAT = 1


def enabled() -> bool:
    """Whether the index is in use (``NEURODE_PLUGIN_INDEX`` is not ``0``/``false``/``no``/``off``)."""
    return os.environ.get(INDEX_ENV, "1").strip().lower() not in {"0", "false", "no", "off"}


def cache_dir() -> Path:
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "neurode"


def _builtin_files() -> list[tuple[str, int, int]]:
    """(path, size, mtime) of each file in the packages holding the built-in plugins, found without importing them."""
    roots = set()
    for module_name in registry_module.BUILTIN_PLUGINS:
        parts = module_name.split(".")
        top = sys.modules.get(parts[0])
        if top is None or not getattr(top, "__path__", None):
            continue
        # The package directly under the top-level one (``neurode/plugins``) holds them all.
        roots.add(Path(list(top.__path__)[0]).joinpath(*parts[1:2]))
    found = []
    for root in sorted(roots):
        for directory, _, files in os.walk(root):
            for name in files:
                if name.endswith(".py"):
                    stat = os.stat(os.path.join(directory, name))
                    found.append((os.path.join(directory, name), stat.st_size, stat.st_mtime_ns))
    return sorted(found)


def _entry_points() -> list[tuple[str, str, str, str, int]]:
    found = []
    for ep in importlib.metadata.entry_points(group=registry_module.ENTRY_POINT_GROUP):
        dist = getattr(ep, "dist", None)
        location = getattr(dist, "_path", None)  # the .dist-info directory: its mtime changes on reinstall
        try:
            installed = os.stat(location).st_mtime_ns if location is not None else 0
        except OSError:
            installed = 0
        found.append((ep.name, ep.value, dist.name if dist else "", dist.version if dist else "", installed))
    return sorted(found)


def fingerprint() -> str:
    """A digest of everything that decides what the registry holds (see the module docstring)."""
    from neurode import __version__

    key = {
        "format": FORMAT,
        "neurode": __version__,
        "python": [sys.prefix, sys.version],
        "disabled": os.environ.get(registry_module.DISABLE_ENV, ""),
        "builtins": list(registry_module.BUILTIN_PLUGINS),
        "builtin_files": _builtin_files(),
        "entry_points": _entry_points(),
    }
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()


def _path(digest: str) -> Path:
    return cache_dir() / f"plugin-index-{digest[:24]}.json"


def _object_path(obj: Any) -> str | None:
    """``module:qualname`` of ``obj`` when importing that gives back ``obj`` itself."""
    module, qualname = getattr(obj, "__module__", None), getattr(obj, "__qualname__", None)
    if not module or not qualname or "<" in qualname:
        return None
    return f"{module}:{qualname}"


def snapshot(registry: registry_module.Registry, commands: list[dict[str, str]] | None = None) -> dict[str, Any]:
    """The index of a built ``registry`` (plus the plugin commands, when known)."""
    from neurode import __version__

    components = []
    for component in registry.components():
        entry = component.as_dict()
        entry["builtin"] = component.source.builtin
        entry["object"] = _object_path(component.obj)
        if component.kind == "loader":
            entry["suffixes"] = list(getattr(component.obj, "suffixes", ()) or ())
        components.append(entry)
    return {
        "format": FORMAT,
        "neurode_version": __version__,
        "components": components,
        "failures": [failure.as_dict() for failure in registry.failures],
        "disabled": [_source(source) for source in registry.disabled],
        "conflicts": [
            {"kind": kind, "name": name, "sources": [_source(s) for s in sources]}
            for kind, name, sources in registry.conflicts()
        ],
        "commands": commands,
    }


def _source(source: registry_module.Source) -> dict[str, str]:
    return {"distribution": source.distribution, "version": source.version, "plugin": source.plugin}


def read(*, warn: bool = False) -> dict[str, Any] | None:
    """The cached index if it matches what is installed now; ``None`` if off, absent or stale.

    With ``warn``, plugins it records as failing to load are warned about
    again (:class:`NeurodePluginWarning`), as building the registry would.
    """
    if not enabled():
        return None
    try:
        index = json.loads(_path(fingerprint()).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(index, dict) or index.get("format") != FORMAT:
        return None
    if warn:
        _warn_failures(index)
    return index


def write(index: dict[str, Any]) -> None:
    """Store ``index`` atomically under the current fingerprint; a cache that cannot be written is skipped."""
    if not enabled():
        return
    target = _path(fingerprint())
    partial = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        partial.write_text(json.dumps(index))
        os.replace(partial, target)
    except OSError:
        with contextlib.suppress(OSError):
            partial.unlink(missing_ok=True)


def get(*, refresh: bool = False) -> dict[str, Any]:
    """The index: from the cache when it is current, else from the registry (built if need be), then cached.

    A registry already built in this process is always the fresher source.
    Load failures recorded in a cached index are warned about again, as
    building the registry would.
    """
    if not refresh and not is_registry_built():
        index = read(warn=True)
        if index is not None:
            return index
    if refresh:
        registry_module.reset_registry()
    index = snapshot(registry_module.get_registry())
    cached = None if refresh else read()
    if cached is not None and cached.get("commands") is not None and _same_registry(cached, index):
        index["commands"] = cached["commands"]
    write(index)
    return index


def is_registry_built() -> bool:
    """Whether this process has built the registry already (then it, not the cache, is the source)."""
    return registry_module._registry is not None


def _same_registry(a: dict[str, Any], b: dict[str, Any]) -> bool:
    keys = ("components", "failures", "disabled", "conflicts")
    return all(a.get(key) == b.get(key) for key in keys)


def _warn_failures(index: dict[str, Any]) -> None:
    for failure in index.get("failures", []):
        warnings.warn(
            f"neurode plugin {failure['plugin']!r} from distribution {failure['distribution']} {failure['version']} "
            f"failed to load and is skipped: {failure['error']}",
            registry_module.NeurodePluginWarning,
            stacklevel=3,
        )


def load_object(path: str) -> Any:
    """The object at ``module:qualname``."""
    module_name, _, qualname = path.partition(":")
    obj: Any = importlib.import_module(module_name)
    for attr in qualname.split("."):
        obj = getattr(obj, attr)
    return obj
