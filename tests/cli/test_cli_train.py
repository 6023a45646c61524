"""``neurode train``: typed options today, a clear not-yet-implemented error, no traceback."""

from __future__ import annotations

import pytest

from neurode.cli.app import app


def test_train_says_not_yet_implemented_on_stderr_without_traceback(runner, tmp_path):
    out = tmp_path / "run"
    result = runner.invoke(app, ["train", "--out", str(out)])
    assert result.exit_code == 1
    assert "error: 'neurode train' is not yet implemented" in result.stderr
    assert "Traceback" not in result.output
    assert result.stdout == ""
    assert not out.exists(), "a command that did nothing must write nothing"


def test_train_with_debug_shows_where_it_stopped(runner):
    result = runner.invoke(app, ["--debug", "train"])
    assert result.exit_code == 1
    assert "Traceback (most recent call last)" in result.stderr
    assert "not yet implemented" in result.stderr


def test_train_help_shows_the_trainer_options_and_says_not_implemented(runner):
    result = runner.invoke(app, ["train", "--help"])
    assert result.exit_code == 0
    for option in ("--data", "--model", "--solver", "--adjoint", "--epochs", "--batch-size", "--lr", "--seed", "--out",
                   "--device"):
        assert option in result.stdout
    assert "NOT YET IMPLEMENTED" in result.stdout


@pytest.mark.parametrize("device", ["auto", "cpu", "cuda", "cuda:1", "mps"])
def test_valid_options_reach_the_not_implemented_error(runner, tmp_path, device):
    args = ["train", "--data", str(tmp_path), "--model", "latent_ode", "--solver", "tsit5", "--adjoint", "backsolve",
            "--epochs", "3", "--batch-size", "8", "--lr", "0.01", "--seed", "7", "--device", device]
    result = runner.invoke(app, args)
    assert result.exit_code == 1
    assert "not yet implemented" in result.stderr


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--device", "tpu"], "got 'tpu'; expected auto, cpu, mps, cuda or cuda:N"),
        (["--device", "cuda:x"], "got 'cuda:x'"),
        (["--epochs", "0"], "--epochs"),
        (["--batch-size", "-1"], "--batch-size"),
        (["--lr", "0"], "got 0.0; expected a positive number"),
        (["--epochs", "ten"], "Invalid value for '--epochs'"),
        (["--data", "/nonexistent/store.zarr"], "/nonexistent/store.zarr"),
    ],
)
def test_bad_option_values_are_usage_errors(runner, args, expected):
    result = runner.invoke(app, ["train", *args])
    assert result.exit_code == 2, result.output
    assert expected in result.stderr
    assert "not yet implemented" not in result.stderr
    assert "Traceback" not in result.output
