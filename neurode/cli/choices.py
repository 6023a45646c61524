"""A usage error for an option value outside its choices (exit status 2, typer's own message style)."""

from __future__ import annotations

from collections.abc import Sequence

import typer


def check_choice(option: str, value: str, choices: Sequence[str]) -> str:
    if value not in choices:
        raise typer.BadParameter(f"got {value!r}; expected one of {', '.join(choices)}", param_hint=option)
    return value
