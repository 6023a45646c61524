"""The component registry: every solver, gradient method, dynamics net, model
and loader that neurode can find, and where each came from.

Discovery follows pytest and llm (see ``hookspecs.py`` for the contract):

1. the built-in plugin modules named in :data:`BUILTIN_PLUGINS` (as data: the
   core never imports ``neurode.plugins`` statically) are loaded and their
   hooks called, exactly as for third-party plugins;
2. then every entry point in the group ``neurode`` of every installed
   distribution. pluggy's own ``load_setuptools_entrypoints`` lets an import
   error escape, so this module loops over the entry points itself, registers
   what loads and keeps what failed (as xarray's backend loader does).

``NEURODE_DISABLE_PLUGINS`` (comma-separated distribution or entry-point
names, or ``all``) switches third-party plugins off.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import os
import re
import threading
import traceback
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pluggy

from neurode.framework import hookspecs
from neurode.framework.errors import (
    DuplicateComponentError,
    InvalidTypeError,
    PluginUnavailableError,
    UnknownComponentError,
)

ENTRY_POINT_GROUP = "neurode"
DISABLE_ENV = "NEURODE_DISABLE_PLUGINS"
BUILTIN_DISTRIBUTION = "neurode"

#: The built-in plugins, loaded first by module name, in this order.
BUILTIN_PLUGINS: tuple[str, ...] = (
    "neurode.plugins.solvers.fixed_grid",
    "neurode.plugins.solvers.adaptive_rk",
    "neurode.plugins.solvers.implicit",
    "neurode.plugins.solvers.rosenbrock",
    "neurode.plugins.solvers.esdirk",
    "neurode.plugins.solvers.adams",
    "neurode.plugins.solvers.torchdiffeq_wrapper",
    "neurode.plugins.adjoints.direct",
    "neurode.plugins.adjoints.backsolve",
    "neurode.plugins.adjoints.checkpoint",
    "neurode.plugins.dynamics.mlp",
    "neurode.plugins.models.neural_ode",
    "neurode.plugins.models.latent_ode",
    "neurode.plugins.models.recurrent",
    "neurode.plugins.loaders.zarr_store",
    "neurode.plugins.loaders.netcdf",
    "neurode.plugins.loaders.ragged",
    "neurode.plugins.loaders.gridded",
)

#: Component kind -> the hook that registers it.
KIND_HOOKS: dict[str, str] = {
    "solver": "register_solvers",
    "adjoint": "register_adjoints",
    "dynamics": "register_dynamics",
    "model": "register_models",
    "loader": "register_loaders",
}
KINDS: tuple[str, ...] = tuple(KIND_HOOKS)


class NeurodePluginWarning(UserWarning):
    """A plugin failed to load or conflicts with another; the rest keeps working."""


@dataclass(frozen=True)
class Source:
    """Where a component came from: a distribution, its version, the plugin module."""

    distribution: str
    version: str
    plugin: str  # entry-point name for third-party plugins, module name for built-ins

    @property
    def builtin(self) -> bool:
        return self.distribution == BUILTIN_DISTRIBUTION

    def __str__(self) -> str:
        return f"{self.distribution} {self.version} (plugin {self.plugin!r})"


@dataclass(frozen=True)
class Component:
    """One registered component."""

    kind: str
    name: str
    obj: Any
    source: Source
    description: str = ""

    def as_dict(self) -> dict[str, str]:
        return {
            "kind": self.kind,
            "name": self.name,
            "distribution": self.source.distribution,
            "version": self.source.version,
            "plugin": self.source.plugin,
            "description": self.description,
        }


@dataclass(frozen=True)
class PluginFailure:
    """A plugin that could not be loaded or whose hook raised."""

    distribution: str
    version: str
    plugin: str
    error: str
    traceback: str = ""

    def as_dict(self) -> dict[str, str]:
        return {"distribution": self.distribution, "version": self.version, "plugin": self.plugin, "error": self.error}


@dataclass
class _Conflict:
    kind: str
    name: str
    sources: list[Source] = field(default_factory=list)


def _first_doc_line(obj: Any) -> str:
    doc = getattr(obj, "__doc__", None) or ""
    # functools.partial carries partial's own docstring: look through it.
    func = getattr(obj, "func", None)
    if func is not None and doc.startswith("partial("):
        doc = getattr(obj, "description", None) or getattr(func, "__doc__", "") or ""
    for line in doc.strip().splitlines():
        if line.strip():
            return line.strip()
    return ""


def _normalized(name: str) -> str:
    """A distribution name as pip compares it (PEP 503): ``Foo_Bar``, ``foo-bar`` and ``foo.bar`` are one."""
    return re.sub(r"[-_.]+", "-", name.strip()).lower()


def _disabled_from_env() -> frozenset[str]:
    raw = os.environ.get(DISABLE_ENV, "")
    return frozenset(_normalized(part) for part in raw.split(",") if part.strip())


def _neurode_version() -> str:
    from neurode import __version__

    return __version__


class Registry:
    """All components by kind and name, plus what failed to load.

    Most code uses the process-wide instance from :func:`get_registry`; tests
    build their own with explicit ``builtins`` and ``entry_points``.
    """

    def __init__(
        self,
        *,
        builtins: Iterable[str] = BUILTIN_PLUGINS,
        entry_points: Iterable[importlib.metadata.EntryPoint] | None = None,
        disabled: Iterable[str] | None = None,
        warn: bool = True,
    ) -> None:
        self._components: dict[str, dict[str, Component]] = {kind: {} for kind in KINDS}
        self._conflicts: dict[tuple[str, str], _Conflict] = {}
        self.failures: list[PluginFailure] = []
        self.disabled: list[Source] = []
        self._warn = warn
        self.plugin_manager = pluggy.PluginManager(hookspecs.PROJECT_NAME)
        self.plugin_manager.add_hookspecs(hookspecs)
        self._plugin_sources: list[tuple[object, Source]] = []

        version = _neurode_version()
        for module_name in builtins:
            source = Source(BUILTIN_DISTRIBUTION, version, module_name)
            try:
                module = importlib.import_module(module_name)
            except Exception as exc:  # a broken built-in must not take the rest down either
                self._fail(source, exc)
                continue
            self._add_plugin(module, source)

        if entry_points is None:
            entry_points = importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)
        disabled_names = _disabled_from_env() if disabled is None else frozenset(_normalized(d) for d in disabled)
        for ep in entry_points:
            dist = getattr(ep, "dist", None)
            dist_name = dist.name if dist is not None else "<unknown distribution>"
            dist_version = dist.version if dist is not None else "?"
            source = Source(dist_name, dist_version, ep.name)
            if "all" in disabled_names or {_normalized(dist_name), _normalized(ep.name)} & disabled_names:
                self.disabled.append(source)
                continue
            try:
                plugin = ep.load()
            except Exception as exc:
                self._fail(source, exc)
                continue
            self._add_plugin(plugin, source)

    # ------------------------------------------------------------------ loading

    def _fail(self, source: Source, exc: BaseException) -> None:
        failure = PluginFailure(
            source.distribution,
            source.version,
            source.plugin,
            f"{type(exc).__name__}: {exc}",
            "".join(traceback.format_exception(exc)),
        )
        self.failures.append(failure)
        if self._warn:
            warnings.warn(
                f"neurode plugin {source.plugin!r} from distribution {source.distribution} {source.version} "
                f"failed to load and is skipped: {failure.error}",
                NeurodePluginWarning,
                stacklevel=3,
            )

    def _add_plugin(self, plugin: object, source: Source) -> None:
        try:
            self.plugin_manager.register(plugin, name=f"{source.distribution}:{source.plugin}")
        except Exception as exc:  # pluggy validates hookimpl signatures here
            self._fail(source, exc)
            return
        try:
            # a misspelled hook (``register_solver``) is an error, as pytest's check_pending
            self.plugin_manager.check_pending()
        except Exception as exc:
            self.plugin_manager.unregister(plugin)
            self._fail(source, exc)
            return
        staged: list[Component] = []
        try:
            for kind, hook_name in KIND_HOOKS.items():
                for impl in getattr(self.plugin_manager.hook, hook_name).get_hookimpls():
                    if impl.plugin is plugin:
                        impl.function(register=self._stager(kind, source, staged))
        except Exception as exc:
            self.plugin_manager.unregister(plugin)
            self._fail(source, exc)
            return
        # A plugin's components land all together or not at all.
        for component in staged:
            self._insert(component)
        self._plugin_sources.append((plugin, source))

    def _stager(self, kind: str, source: Source, staged: list[Component]) -> Callable[..., None]:
        def register(name: str, component: Any, *, description: str | None = None) -> None:
            if not isinstance(name, str) or not name:
                raise TypeError(f"{kind} name must be a non-empty string, got {name!r}")
            if not callable(component):
                raise TypeError(f"{kind} {name!r} must be a factory (a class or callable), got {component!r}")
            desc = description if description is not None else _first_doc_line(component)
            staged.append(Component(kind, name, component, source, desc))

        return register

    def _insert(self, component: Component) -> None:
        table = self._components[component.kind]
        key = (component.kind, component.name)
        if key in self._conflicts:
            self._conflicts[key].sources.append(component.source)
            return
        existing = table.get(component.name)
        if existing is None:
            table[component.name] = component
            return
        conflict = _Conflict(component.kind, component.name, [existing.source, component.source])
        self._conflicts[key] = conflict
        del table[component.name]
        if self._warn:
            warnings.warn(self._conflict_message(conflict), NeurodePluginWarning, stacklevel=4)

    @staticmethod
    def _conflict_message(conflict: _Conflict) -> str:
        sources = " and ".join(str(s) for s in conflict.sources)
        return (
            f"{conflict.kind} {conflict.name!r} is registered twice: by {sources}. "
            f"It cannot be used until one of them is uninstalled or disabled with "
            f"{DISABLE_ENV}=<distribution>."
        )

    # ------------------------------------------------------------------ queries

    def get(self, kind: str, name: str) -> Component:
        """The component of ``kind`` called ``name``; clear errors otherwise."""
        if not isinstance(kind, str):
            raise UnknownComponentError("component kind", repr(kind), KINDS)
        table = self._table(kind)
        if not isinstance(name, str):
            raise InvalidTypeError(f"a {kind} name must be a string, got {name!r} ({type(name).__name__}); known "
                                   f"{kind} names: {', '.join(sorted(table))}")
        if name in table:
            return table[name]
        conflict = self._conflicts.get((kind, name))
        if conflict is not None:
            raise DuplicateComponentError(self._conflict_message(conflict))
        lowered = name.lower()
        for failure in self.failures:
            if lowered in (failure.plugin.lower(), failure.distribution.lower()):
                raise PluginUnavailableError(
                    f"{kind} {name!r} is unavailable: plugin {failure.plugin!r} from distribution "
                    f"{failure.distribution} {failure.version} failed to load: {failure.error}"
                )
        for source in self.disabled:
            if lowered in (source.plugin.lower(), source.distribution.lower()):
                raise PluginUnavailableError(
                    f"{kind} {name!r} is unavailable: plugin {source.plugin!r} from distribution "
                    f"{source.distribution} is disabled by {DISABLE_ENV}={os.environ.get(DISABLE_ENV, '')!r}"
                )
        note = ""
        if self.failures:
            failed = ", ".join(f"{f.plugin!r} ({f.distribution}: {f.error})" for f in self.failures)
            note = f"These plugins failed to load and may have provided it: {failed}."
        raise UnknownComponentError(kind, name, table.keys(), note)

    def names(self, kind: str) -> list[str]:
        return sorted(self._table(kind))

    def components(self, kind: str | None = None) -> list[Component]:
        kinds = KINDS if kind is None else (self._check_kind(kind),)
        return [self._components[k][n] for k in kinds for n in sorted(self._components[k])]

    def conflicts(self) -> list[tuple[str, str, list[Source]]]:
        return [(c.kind, c.name, list(c.sources)) for c in self._conflicts.values()]

    def __iter__(self) -> Iterator[Component]:
        return iter(self.components())

    def __contains__(self, item: tuple[str, str]) -> bool:
        kind, name = item
        return name in self._components.get(kind, {})

    def register_commands(self, app: Any) -> list[PluginFailure]:
        """Call every plugin's ``register_commands(app)``; failures become warnings."""
        failures = []
        for plugin, source in self._plugin_sources:
            for impl in self.plugin_manager.hook.register_commands.get_hookimpls():
                if impl.plugin is plugin:
                    try:
                        impl.function(app=app)
                    except Exception as exc:
                        self._fail(source, exc)
                        failures.append(self.failures[-1])
        return failures

    def _check_kind(self, kind: str) -> str:
        if kind not in self._components:
            raise UnknownComponentError("component kind", kind, KINDS)
        return kind

    def _table(self, kind: str) -> dict[str, Component]:
        return self._components[self._check_kind(kind)]


_registry: Registry | None = None
_lock = threading.Lock()


def get_registry() -> Registry:
    """The process-wide registry, built on first use."""
    global _registry
    if _registry is None:
        with _lock:
            if _registry is None:
                _registry = Registry()
    return _registry


def reset_registry() -> None:
    """Forget the process-wide registry so the next :func:`get_registry` rediscovers plugins."""
    global _registry
    with _lock:
        _registry = None
