"""Property-based fuzzing of the data layer's contract (issue 13): ``TrajectoryDataset``, ``validate`` and splits.

Drawn bad and edge inputs — datasets with NaN, infinite or repeated times, dtypes, index types, split
fractions and seeds — must give a correct result or a :class:`~neurode.datasets.errors.DataError`
(``TypeError`` for an index of the wrong type, as a sequence does); never a raw numpy/xarray exception,
never a NaN time or a truncated value handed on silently.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from hypothesis import given
from hypothesis import strategies as st

from neurode.datasets.errors import DataError
from neurode.datasets.examples import irregular_example
from neurode.datasets.schema import validate
from neurode.datasets.splits import split_by_trajectory, trajectory_split_indices
from neurode.datasets.trajectory_dataset import TrajectoryDataset

EXAMPLE = irregular_example()
junk = st.one_of(st.none(), st.text(max_size=3), st.booleans(), st.floats(allow_nan=True),
                 st.lists(st.integers(), max_size=2))


@given(row=st.integers(0, 11), col=st.integers(0, 8),
       value=st.sampled_from([math.nan, math.inf, -math.inf, -1.0, 0.0, 1e300]),
       check_times=st.booleans(), lazy=st.booleans())
def test_corrupted_times_are_refused_or_read_exactly(row, col, value, check_times, lazy):
    ds = EXAMPLE.copy(deep=True)
    ds["time"].values[row, col] = value
    if lazy:
        ds = ds.chunk({"trajectory": 4})
    try:
        dataset = TrajectoryDataset(ds, check_times=check_times)
        items = dataset.__getitems__(list(range(len(dataset))))
    except DataError as exc:
        assert str(exc)
        return
    for item in items:  # accepted: every time handed on is finite and strictly increasing, none dropped
        assert torch.isfinite(item.times).all()
        assert (item.times[1:] > item.times[:-1]).all()
        stored = ds["time"].values[item.index]
        assert len(item.times) == int(np.isfinite(stored).sum()) == int((~np.isnan(stored)).sum())


@given(index=st.one_of(st.integers(-20, 20), junk, st.floats(-20, 20)))
def test_indices(index):
    dataset = TrajectoryDataset(EXAMPLE)
    try:
        item = dataset[index]
    except (TypeError, IndexError) as exc:
        assert str(exc)
        return
    assert isinstance(index, int) and not isinstance(index, bool)
    assert item.index == index % len(dataset)


@given(dtype=st.one_of(st.sampled_from([torch.float16, torch.float32, torch.float64, torch.int64, torch.int32,
                                        torch.bool, torch.complex64]), junk),
       key=st.sampled_from(["dtype", "time_dtype"]))
def test_dtypes(dtype, key):
    try:
        item = TrajectoryDataset(EXAMPLE, **{key: dtype})[0]
    except DataError as exc:
        assert key in str(exc)
        return
    assert (item.values if key == "dtype" else item.times).dtype == dtype and dtype.is_floating_point


@given(value=st.one_of(junk, st.dictionaries(st.text(max_size=2), st.integers(), max_size=2), st.integers()))
def test_non_datasets(value):
    for call in (validate, TrajectoryDataset):
        try:
            call(value)
        except DataError as exc:
            assert "expected an xarray.Dataset" in str(exc)
        else:  # pragma: no cover - nothing but a Dataset is a dataset
            raise AssertionError(f"{call.__name__} accepted {value!r}")


@given(fractions=st.one_of(st.lists(st.one_of(st.floats(allow_nan=True, allow_infinity=True), junk), max_size=4),
                           junk),
       seed=st.one_of(st.integers(-3, 2**70), junk), n=st.integers(0, 30))
def test_split_arguments(fractions, seed, n):
    try:
        parts = trajectory_split_indices(n, fractions, seed=seed)
    except DataError as exc:
        assert str(exc)
        return
    assert sorted(np.concatenate(list(parts.values())).tolist()) == list(range(n))


@given(seed=st.one_of(st.integers(0, 100), junk))
def test_split_by_trajectory_seed(seed):
    try:
        parts = split_by_trajectory(EXAMPLE, seed=seed)
    except DataError as exc:
        assert "seed" in str(exc)
        return
    assert sum(p.sizes["trajectory"] for p in parts.values()) == EXAMPLE.sizes["trajectory"]
