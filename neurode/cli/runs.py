"""``neurode runs [DIR]``: the run directories under DIR, with status, model, best metric and age."""

from __future__ import annotations

import datetime
import json
from pathlib import Path
from typing import Annotated, Any

import typer


def register(app: typer.Typer) -> None:
    app.command("runs")(runs)


def list_runs(root: Path) -> list[dict[str, Any]]:
    """Every directory under ``root`` (itself included) holding a ``run.json``."""
    rows = []
    for info_path in sorted(root.glob("**/run.json")):
        try:
            info = json.loads(info_path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        started = info.get("started")
        age = None
        if started:
            delta = datetime.datetime.now(datetime.timezone.utc) - datetime.datetime.fromisoformat(started)
            age = delta.total_seconds()
        rows.append({"run_dir": str(info_path.parent), "status": info.get("status"),
                     "model": info.get("model", {}).get("name"), "step": info.get("step"),
                     "best_val_rmse": info.get("best_val_rmse"), "started": started, "age_s": age})
    return rows


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f} {unit}"
    return f"{seconds:.0f} s"


def runs(
    root: Annotated[Path, typer.Argument(help="Directory holding runs.")] = Path("runs"),
    as_json: Annotated[bool, typer.Option("--json", help="Print the list as JSON.")] = False,
) -> None:
    """List runs with status, model, step, best validation RMSE and age."""
    rows = list_runs(root) if root.exists() else []
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"runs under {root}")
    for column in ("run", "status", "model", "step", "best val RMSE", "age"):
        table.add_column(column)
    for row in rows:
        best = row["best_val_rmse"]
        table.add_row(row["run_dir"], str(row["status"]), str(row["model"]), str(row["step"]),
                      "-" if best is None else f"{best:.4g}", _age(row["age_s"]))
    Console().print(table)
