"""Property-based fuzzing of the command line's contract (issue 13).

Drawn option values for ``neurode simulate`` and ``neurode data info`` —
negative, non-numeric, non-finite, malformed spans, missing paths — end in
exit 0 (done), 1 (the user's mistake, a one-line error) or 2 (a command line
that does not parse); never exit 3 (an internal error) or a traceback.
"""

from __future__ import annotations

import itertools

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from neurode.cli.app import app

_stores = itertools.count()

small_numbers = st.one_of(st.integers(-3, 3), st.sampled_from(["nan", "inf", "-inf", "x", "", "1e400", "0.5"]))
spans = st.one_of(st.sampled_from(["0:1", "1:0", "0:0", "nan:1", "0:inf", "a:b", "0:1:2", ":", "0"]),
                  st.text(alphabet="0123456789:.-e", max_size=6))


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(count=small_numbers, obs=small_numbers, seed=st.one_of(st.integers(-5, 2**40), st.just("x")),
       span=st.one_of(st.none(), spans), noise=small_numbers, missing=small_numbers,
       system=st.sampled_from(["pendulum", "lotka_volterra", "nope"]))
def test_simulate_options(runner, tmp_path, count, obs, seed, span, noise, missing, system):
    out = tmp_path / f"s{next(_stores)}.zarr"
    args = ["simulate", system, "-o", str(out), "-n", str(count), "--obs", str(obs), "--seed", str(seed),
            "--noise", str(noise), "--missing", str(missing)] + ([] if span is None else ["--t-span", span])
    result = runner.invoke(app, args)
    assert result.exit_code in (0, 1, 2), f"exit {result.exit_code} for {args}:\n{result.output}"
    assert "Traceback" not in result.output
    if result.exit_code != 0:
        assert not out.exists(), "a failed simulate left a store behind"


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(path=st.one_of(st.text(max_size=8), st.sampled_from(["", ".", "/", "missing.zarr", "x.nc"])),
       loader=st.one_of(st.none(), st.text(max_size=5), st.sampled_from(["zarr", "netcdf", "5"])))
def test_data_info_paths(runner, tmp_path, path, loader):
    args = ["data", "info", str(tmp_path / path) if path not in ("", "/") else path]
    if loader is not None:
        args += ["--loader", loader]
    result = runner.invoke(app, args)
    assert result.exit_code in (0, 1, 2), f"exit {result.exit_code} for {args}:\n{result.output}"
    assert "Traceback" not in result.output
