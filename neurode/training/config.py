"""The training configuration: every setting a run needs, validated before any data is read.

A config is TOML (``neurode train --config run.toml``), command-line flags
(dotted keys override the file) or a dict (``neurode.train({...})``). It is
validated by pydantic v2 models with ``extra="forbid"``; every problem is
collected and reported at once by :class:`ConfigError`, each naming the key,
the value seen and what was expected, with a did-you-mean for misspelt keys
and plugin names. The resolved config (defaults filled in) is what a run
directory stores in ``config.toml``.
"""

from __future__ import annotations

import difflib
import re
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from neurode.framework.errors import NeurodeError

DEVICE_PATTERN = r"auto|cpu|mps|cuda(:\d+)?"


class ConfigError(NeurodeError):
    """A training configuration with problems; ``problems`` lists each one."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        count = len(self.problems)
        super().__init__(f"the training configuration has {count} problem{'s' if count != 1 else ''}:\n  - "
                         + "\n  - ".join(self.problems))


#: settings that may change when resuming (the budget); everything else must match
BUDGET_KEYS: tuple[str, ...] = ("training.epochs", "training.max_steps")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataConfig(_Section):
    """What to train on and how to split it."""

    path: str | None = Field(None, description="dataset store; None: the built-in simulated dataset")
    variables: list[str] | None = Field(None, description="state variables (default: all)")
    static: list[str] | None = Field(None, description="per-trajectory variables (default: all)")
    split: tuple[float, float, float] = Field((0.8, 0.1, 0.1), description="train/val/test fractions")
    split_seed: int = 0

    @field_validator("split")
    @classmethod
    def _fractions(cls, value):
        if any(v < 0 for v in value) or abs(sum(value) - 1.0) > 1e-9 or value[0] <= 0:
            raise ValueError("three non-negative fractions summing to 1, with train > 0")
        return value


class ModelConfig(_Section):
    name: str = "neural_ode"
    options: dict[str, Any] = Field(default_factory=dict)


class DynamicsConfig(_Section):
    name: str = "mlp"
    #: passed to the dynamics factory; its own defaults fill the rest (mlp: width 64, depth 2, tanh)
    options: dict[str, Any] = Field(default_factory=dict)


class SolverConfig(_Section):
    name: str = "dopri5"
    adjoint: str = "direct"
    # Training tolerances: loose, because the data's noise and the model's
    # error are far above them (and each halving of rtol costs solver steps).
    rtol: float = Field(1e-2, gt=0)
    atol: float = Field(1e-3, gt=0)
    controller: Literal["i", "pi", "pid"] = "i"
    max_num_steps: int = Field(10_000, ge=1)
    adjoint_options: dict[str, Any] = Field(default_factory=dict)
    # Unset: neurode.solve's automatic choice, on for the training solves (gradients recorded), off for
    # validation and prediction. It makes adaptive steps resolve the derivative that backpropagation
    # computes (neurode/framework/tangent.py), at about twice the forward solve's cost.
    tangent_control: bool | None = Field(None, description="steps also control a tangent's error (unset: "
                                                           "automatic, on when gradients are recorded)")


class OptimizerConfig(_Section):
    name: Literal["adam", "adamw"] = "adam"
    lr: float = Field(1e-2, gt=0)
    weight_decay: float = Field(0.0, ge=0)


class ScheduleConfig(_Section):
    name: Literal["none", "cosine", "plateau"] = "cosine"
    min_lr: float = Field(0.0, ge=0)
    patience: int = Field(5, ge=0, description="plateau: validations without improvement before lowering the lr")
    factor: float = Field(0.5, gt=0, lt=1, description="plateau: lr multiplier")


class TrainingConfig(_Section):
    epochs: int = Field(60, ge=1)
    max_steps: int | None = Field(None, ge=1, description="stop after this many optimiser steps")
    batch_size: int = Field(32, ge=1)
    grad_clip: float = Field(1.0, ge=0, description="max global gradient norm; 0: no clipping")
    seed: int = 0
    val_every: int = Field(1, ge=1, description="validate every N epochs")
    checkpoint_every: int = Field(50, ge=1, description="checkpoint every N steps (and at each validation)")
    early_stopping: int | None = Field(None, ge=1, description="stop after N validations without improvement")
    log_every: int = Field(10, ge=1, description="log the training loss every N steps")


class RuntimeConfig(_Section):
    device: str = "auto"
    dtype: Literal["float32", "float64"] = "float32"
    threads: int | None = Field(None, ge=1, description="torch intra-op threads (default: one per usable core, "
                                                        "at most 1 when the cores are shared)")


    @field_validator("device")
    @classmethod
    def _device(cls, value: str) -> str:
        if not re.fullmatch(DEVICE_PATTERN, value):
            raise ValueError("auto, cpu, mps, cuda or cuda:N (e.g. cuda:0)")
        return value


class OutputConfig(_Section):
    dir: str | None = Field(None, description="run directory (default: runs/<name>)")
    name: str | None = None
    tensorboard: bool | None = Field(None, description="TensorBoard event files in the run directory: unset "
                                                       "(automatic: when tensorboard is installed), true "
                                                       "(required) or false (off)")


class TrainConfig(_Section):
    """A whole run's settings; every section has defaults."""

    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    dynamics: DynamicsConfig = Field(default_factory=DynamicsConfig)
    solver: SolverConfig = Field(default_factory=SolverConfig)
    optimizer: OptimizerConfig = Field(default_factory=OptimizerConfig)
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    runtime: RuntimeConfig = Field(default_factory=RuntimeConfig)
    output: OutputConfig = Field(default_factory=OutputConfig)

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def to_toml(self) -> str:
        import tomli_w

        return tomli_w.dumps(_drop_none(self.to_dict()))


def _drop_none(value):
    # TOML has no null: an unset optional setting is simply absent.
    if isinstance(value, dict):
        return {k: _drop_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_drop_none(v) for v in value]
    return value


def _section_fields(section: type[BaseModel]) -> dict[str, Any]:
    return dict(section.model_fields)


def _location(loc: tuple) -> str:
    return ".".join(str(part) for part in loc)


def _value_at(data: dict, loc: tuple) -> Any:
    value: Any = data
    for part in loc:
        if isinstance(value, dict) and part in value:
            value = value[part]
        elif isinstance(value, (list, tuple)) and isinstance(part, int) and part < len(value):
            value = value[part]
        else:
            return None
    return value


def _known_keys(loc: tuple) -> list[str]:
    model: Any = TrainConfig
    for part in loc[:-1]:
        field = model.model_fields.get(part) if isinstance(model, type) else None
        if field is None:
            return []
        model = field.annotation
    return list(model.model_fields) if isinstance(model, type) and issubclass(model, BaseModel) else []


def _describe(error: dict, data: dict) -> str:
    loc = tuple(error["loc"])
    key = _location(loc)
    if error["type"] == "extra_forbidden":
        known = _known_keys(loc)
        close = difflib.get_close_matches(str(loc[-1]), known, n=1)
        hint = f"; did you mean {'.'.join([*map(str, loc[:-1]), close[0]])!r}?" if close else ""
        return f"{key}: unknown key (value {error['input']!r}){hint} Known keys here: {', '.join(known)}"
    seen = _value_at(data, loc)
    expected = error["msg"].removeprefix("Value error, ").removeprefix("Input should be ")
    return f"{key}: got {seen!r}; expected {expected}"


_PLUGIN_KEYS = (("model", "name", "model"), ("dynamics", "name", "dynamics"), ("solver", "name", "solver"),
                ("solver", "adjoint", "adjoint"))


def _registry_problems(data: dict[str, Any], registry) -> list[str]:
    from neurode.framework.errors import RegistryError

    problems = []
    for section, key, kind in _PLUGIN_KEYS:
        value = data.get(section, {}) if isinstance(data.get(section), dict) else {}
        name = value.get(key, _default(section, key))
        if not isinstance(name, str):
            continue  # the type error is reported by validation
        try:
            registry.get(kind, name)
        except RegistryError as exc:
            problems.append(f"{section}.{key}: {exc}")
    return problems


def _default(section: str, key: str) -> Any:
    return TrainConfig.model_fields[section].default_factory().model_dump()[key]


def validate_config(data: dict[str, Any] | TrainConfig, *, registry=None, check_plugins: bool = True) -> TrainConfig:
    """The validated config, or :class:`ConfigError` listing every problem at once."""
    if isinstance(data, TrainConfig):
        data = data.to_dict()
    problems: list[str] = []
    config = None
    try:
        config = TrainConfig.model_validate(data)
    except ValidationError as exc:
        problems.extend(_describe(error, data) for error in exc.errors())
    if check_plugins:
        from neurode.framework.registry import get_registry
        from neurode.training.plugin_options import option_problems

        # Plugin names and options are checked even when other keys failed, so one run reports everything.
        registry = registry or get_registry()
        problems.extend(_registry_problems(data, registry))
        problems.extend(option_problems(data, registry))
    output = data.get("output") if isinstance(data.get("output"), dict) else {}
    if output.get("tensorboard") is True:  # checked on the raw value, so it is reported with other problems
        from neurode.training.tensorboard import missing_reason

        reason = missing_reason()
        if reason:
            problems.append(f"output.tensorboard: got True; expected tensorboard to be importable, but {reason} "
                            "(or leave the setting unset to write event files only when it is installed)")
    if problems:
        raise ConfigError(problems)
    return config


def load_toml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError([f"config file {str(path)!r} does not exist"]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"config file {str(path)!r} is not valid TOML: {exc}"]) from None


def merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``overrides`` applied; ``overrides`` may use dotted keys (``"training.epochs"``)."""
    out = {k: (dict(v) if isinstance(v, dict) else v) for k, v in base.items()}
    for key, value in overrides.items():
        parts = key.split(".")
        target = out
        for part in parts[:-1]:
            nxt = target.get(part)
            if not isinstance(nxt, dict):
                nxt = {}
                target[part] = nxt
            target = nxt
        if isinstance(value, dict) and isinstance(target.get(parts[-1]), dict):
            target[parts[-1]] = merge(target[parts[-1]], value)
        else:
            target[parts[-1]] = value
    return out


def changed_keys(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two config dicts."""
    keys = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        path = f"{prefix}{key}"
        if isinstance(a, dict) and isinstance(b, dict):
            keys.extend(changed_keys(a, b, path + "."))
        elif a != b:
            keys.append(path)
    return keys
