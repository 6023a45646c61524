"""``neurode predict RUN_DIR --data PATH --out PATH.zarr``: a run's predictions as a canonical dataset."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def register(app: typer.Typer) -> None:
    app.command("predict")(predict)


def _times(value: str | None) -> list[float] | None:
    if value is None:
        return None
    try:
        if ":" in value:  # start:stop:count
            start, stop, count = value.split(":")
            import numpy as np

            return np.linspace(float(start), float(stop), int(count)).tolist()
        return [float(v) for v in value.split(",")]
    except ValueError:
        raise typer.BadParameter(f"got {value!r}; expected comma-separated times or START:STOP:COUNT",
                                 param_hint="--times") from None


def predict(
    run_dir: Annotated[Path, typer.Argument(help="A run directory written by `neurode train`.")],
    data: Annotated[Path, typer.Option("--data", exists=True, help="Dataset whose trajectories to predict.")],
    out: Annotated[Path, typer.Option("--out", help="Zarr store to write (must not exist).")],
    times: Annotated[str | None, typer.Option("--times", help="Times to predict at: 0,1,2.5 or START:STOP:COUNT "
                                              "(default: each trajectory's observation times).")] = None,
    weights: Annotated[str, typer.Option("--weights", help="best or latest.")] = "best",
    samples: Annotated[int, typer.Option("--samples", min=0, help="Also write K posterior predictive samples "
                                         "(<name>_samples, with a leading 'sample' dimension) for a model that "
                                         "draws them, such as latent_ode.")] = 0,
) -> None:
    """Write predictions with the input's variable names, units and trajectory ids (passes validate)."""
    from neurode.cli.choices import check_choice

    check_choice("--weights", weights, ("best", "latest"))
    requested = _times(times)
    from neurode.datasets.io import write_zarr
    from neurode.datasets.schema import validate
    from neurode.training.run import load_run

    ds = load_run(run_dir, weights=weights).predict(data, times=requested, samples=samples)
    validate(ds)
    write_zarr(ds, out)
    typer.echo(f"wrote predictions for {ds.sizes['trajectory']} trajectories to {out}")
