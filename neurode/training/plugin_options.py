"""Model and dynamics options checked against the registered factories' signatures, before any data is read.

``model.options`` and ``dynamics.options`` are keyword arguments of plugin
factories, so the config schema cannot list them; the factory's signature
can. They are read the way :func:`neurode.solve` reads a solver's options
(:func:`neurode.framework.solve.signature_parameters`): a factory's options
are its keyword parameters with defaults, less the keywords a registered
``functools.partial`` binds. A factory that takes ``**kwargs``, or whose
signature cannot be read, checks its own options when it is built.

What the user may not set is what the builder supplies:

- to a model, the trainer hands ``n_features`` and ``n_static`` (from the
  data) and, when the factory accepts them, ``solve`` (the ``[solver]``
  section), ``dynamics`` and ``dynamics_options`` (the ``[dynamics]``
  section) — :func:`neurode.framework.model.build_model`;
- to a dynamics network, the model hands the arguments without a default
  (``state_dim``: the size of the state it integrates).

Each problem names the key, the value seen, what is expected (the options
there are) and a did-you-mean, also across the two sections (``width`` given
to the model is a dynamics option).
"""

from __future__ import annotations

import difflib
from typing import Any

from neurode.framework.solve import _accepted_keywords, signature_parameters

#: model keywords the trainer supplies, and where they come from
TRAINER_SUPPLIED = {
    "n_features": "the number of state features of the data",
    "n_static": "the number of per-trajectory static variables of the data",
    "solve": "the [solver] section",
    "dynamics": "dynamics.name",
    "dynamics_options": "the [dynamics.options] section",
}


def _options_of(factory) -> list[str] | None:
    """The options ``factory`` takes, or ``None`` when it takes any (``**kwargs``) or cannot be read."""
    parameters = signature_parameters(factory)
    if not parameters or any(p.kind is p.VAR_KEYWORD for p in parameters):
        return None
    return _accepted_keywords(factory)


def _required(factory) -> list[str]:
    return [p.name for p in signature_parameters(factory)
            if p.default is p.empty and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]


def _lookup(registry, kind: str, name: Any):
    from neurode.framework.errors import RegistryError

    if not isinstance(name, str):
        return None
    try:
        return registry.get(kind, name).obj
    except RegistryError:
        return None  # the unknown name is reported by the name check


def _section(data: dict[str, Any], name: str, default: str) -> tuple[Any, dict[str, Any]]:
    section = data.get(name)
    section = section if isinstance(section, dict) else {}
    options = section.get("options")
    return section.get("name", default), options if isinstance(options, dict) else {}


def option_problems(data: dict[str, Any], registry) -> list[str]:
    """The problems of ``model.options`` and ``dynamics.options`` in the raw config ``data``."""
    from neurode.framework.model import _accepts

    model_name, model_options = _section(data, "model", "neural_ode")
    dynamics_name, dynamics_options = _section(data, "dynamics", "mlp")
    model = _lookup(registry, "model", model_name)
    dynamics = _lookup(registry, "dynamics", dynamics_name)
    takes_dynamics = model is not None and _accepts(model, "dynamics")

    # n_features and n_static always; the rest only to a factory that accepts them (build_model)
    supplied = [] if model is None else [k for k in TRAINER_SUPPLIED
                                         if k in ("n_features", "n_static") or _accepts(model, k)]
    accepted = None if model is None else _options_of(model)
    model_known = None if accepted is None else [o for o in accepted if o not in supplied]
    accepted = None if dynamics is None else _options_of(dynamics)
    dynamics_known = None if accepted is None else [o for o in accepted if o not in _required(dynamics)]

    problems = []
    for key, value in model_options.items():
        where = f"model.options.{key}"
        if key in supplied:
            problems.append(f"{where}: got {value!r}; set by the trainer from {TRAINER_SUPPLIED[key]}, "
                            "not a model option")
        elif model_known is not None and key not in model_known:
            problems.append(_unknown(where, value, f"model {model_name!r}", model_known,
                                     ("model.options", model_known),
                                     ("dynamics.options", dynamics_known if takes_dynamics else None)))
    if dynamics_options and model is not None and not takes_dynamics:
        problems.append(f"dynamics.options: got {dynamics_options!r}; model {model_name!r} takes no dynamics "
                        "network, so these options would have no effect")
        return problems
    for key, value in dynamics_options.items():
        where = f"dynamics.options.{key}"
        if dynamics is not None and key in _required(dynamics):
            problems.append(f"{where}: got {value!r}; set by the model from the data (a required argument of "
                            f"dynamics {dynamics_name!r}), not a dynamics option")
        elif dynamics_known is not None and key not in dynamics_known:
            problems.append(_unknown(where, value, f"dynamics {dynamics_name!r}", dynamics_known,
                                     ("dynamics.options", dynamics_known), ("model.options", model_known)))
    return problems


def _unknown(where: str, value: Any, owner: str, known: list[str], *places) -> str:
    key = where.rsplit(".", 1)[1]
    hint = ""
    for section, names in places:
        close = difflib.get_close_matches(key, names or [], n=1)
        if close:
            hint = f"; did you mean '{section}.{close[0]}'?"
            break
    return (f"{where}: unknown option of {owner} (value {value!r}){hint} "
            f"Options of {owner}: {', '.join(known) or '(none)'}")
