"""TrajectoryDataset and its two batching modes: exact masks, lazy reads, DataLoader and DistributedSampler."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, DistributedSampler

import neurode
from neurode.datasets.batch import PADDED, UNION, collate
from neurode.datasets.errors import DataError
from neurode.datasets.features import FeatureLayout
from neurode.datasets.io import write_zarr
from neurode.datasets.trajectory_dataset import TrajectoryDataset


def _observations(ds, i):
    """Trajectory ``i`` of ``ds`` as {(time, feature): value} for every observed value."""
    t = ds.time.values[i]
    columns = np.concatenate([ds.v.values[i], ds.x.values[i][:, None]], axis=-1)  # v[0], v[1], x: by name
    return {
        (float(t[j]), f): float(columns[j, f])
        for j in range(len(t))
        if np.isfinite(t[j])
        for f in range(columns.shape[1])
        if np.isfinite(columns[j, f])
    }


def _batch_observations(batch, b):
    times = batch.times if batch.mode == UNION else batch.times[b]
    found = {}
    for k, f in zip(*torch.nonzero(batch.mask[b], as_tuple=True), strict=True):
        found[(float(times[k]), int(f))] = float(batch.values[b, k, f])
    return found


@pytest.mark.parametrize("mode", [UNION, PADDED])
def test_masks_are_exact_in_both_modes(example, mode):
    data = TrajectoryDataset(example, mode=mode, dtype=torch.float64)
    batch = data.collate_fn(data.__getitems__([0, 3, 7, 11]))
    assert batch.mode == mode and batch.feature_names == ("v[0]", "v[1]", "x") and batch.static_names == ("damping",)
    for b, i in enumerate([0, 3, 7, 11]):
        assert _batch_observations(batch, b) == _observations(example, i)
    assert torch.all(batch.values[~batch.mask] == 0) and not torch.isnan(batch.values).any()
    np.testing.assert_array_equal(batch.static[:, 0].numpy(), example.damping.values[[0, 3, 7, 11]])
    assert batch.index.tolist() == [0, 3, 7, 11]


def test_union_mode_uses_the_sorted_union_of_the_batch_times(example):
    data = TrajectoryDataset(example, dtype=torch.float64)
    batch = data.collate_fn(data.__getitems__([1, 2, 5]))
    t = example.time.values[[1, 2, 5]]
    np.testing.assert_array_equal(batch.times.numpy(), np.unique(t[np.isfinite(t)]))
    assert batch.values.shape == (3, len(batch.times), 3)
    # time_mask: the trajectory was observed at that time
    expected = np.stack([np.isin(batch.times.numpy(), row) for row in t])
    np.testing.assert_array_equal(batch.time_mask.numpy(), expected)


def test_padded_mode_keeps_each_trajectory_own_times(example):
    data = TrajectoryDataset(example, mode=PADDED, dtype=torch.float64)
    batch = data.collate_fn(data.__getitems__([2, 0]))
    counts = np.isfinite(example.time.values[[2, 0]]).sum(axis=1)
    assert batch.times.shape == (2, counts.max())
    for b, (i, n) in enumerate(zip([2, 0], counts, strict=True)):
        np.testing.assert_array_equal(batch.times[b, :n].numpy(), example.time.values[i, :n])
        assert batch.time_mask[b].tolist() == [True] * n + [False] * (counts.max() - n)
        assert torch.all(batch.times[b, n:] == batch.times[b, n - 1]), "padding repeats the last time"
        assert not batch.mask[b, n:].any()


def test_variables_and_static_can_be_chosen_and_ordered(example):
    data = TrajectoryDataset(example, variables=["x", "v"], static=[])
    item = data[4]
    assert data.feature_names == ("x", "v[0]", "v[1]") and item.static.shape == (0,)
    n = int(np.isfinite(example.time.values[4]).sum())
    np.testing.assert_allclose(
        item.values[:, 0][item.mask[:, 0]].numpy(),
        example.x.values[4, :n][np.isfinite(example.x.values[4, :n])],
        rtol=1e-6,
    )


def test_feature_layout_refuses_variables_in_the_wrong_role(example):
    with pytest.raises(DataError, match="'damping' has dims"):
        FeatureLayout.from_dataset(example, variables=["damping"])


def test_items_read_lazily_only_their_chunks(example, tmp_path, zarr_reads):
    ds = neurode.load(write_zarr(example, tmp_path / "e.zarr", chunk_trajectories=4))
    data = TrajectoryDataset(ds)
    assert zarr_reads.chunks("v") == []
    data.__getitems__([9, 10])
    assert [key.split("/")[2] for key in zarr_reads.chunks("v")] == ["2"]


def test_dataloader_with_a_worker_and_batch_to_dtype(example, tmp_path):
    ds = neurode.load(write_zarr(example, tmp_path / "e.zarr", chunk_trajectories=4))
    data = TrajectoryDataset(ds)
    loader = DataLoader(data, batch_size=5, collate_fn=data.collate_fn, num_workers=1)
    batches = list(loader)
    assert [b.index.tolist() for b in batches] == [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9], [10, 11]]
    moved = batches[0].to(dtype=torch.float64)
    assert moved.values.dtype == torch.float64 and moved.mask.dtype == torch.bool and moved.index.dtype == torch.long


def test_distributed_sampler_shards_trajectories_across_ranks(example):
    data = TrajectoryDataset(example)
    seen = []
    for rank in range(3):
        sampler = DistributedSampler(data, num_replicas=3, rank=rank, shuffle=True, seed=4)
        sampler.set_epoch(1)
        loader = DataLoader(data, batch_size=2, sampler=sampler, collate_fn=data.collate_fn)
        indices = [i for batch in loader for i in batch.index.tolist()]
        assert indices == list(sampler)
        seen.append(set(indices))
    assert set.union(*seen) == set(range(len(data))) and sum(map(len, seen)) == len(data)


def test_bad_modes_and_indices_are_clear_errors(example):
    with pytest.raises(DataError, match="unknown batching mode 'ragged'"):
        TrajectoryDataset(example, mode="ragged")
    with pytest.raises(IndexError, match=r"trajectory indices \[12\] out of range for 12 trajectories"):
        TrajectoryDataset(example)[12]
    with pytest.raises(DataError, match="cannot collate an empty batch"):
        collate([])


def _repeat_time(example, trajectory=3):
    t = example.time.values.copy()
    t[trajectory, 2] = t[trajectory, 1]
    return example.assign(time=(example.time.dims, t, example.time.attrs))


def test_union_batching_never_merges_a_duplicated_time_silently(example):
    """Two observations at one time would share one union slot: one would be lost."""
    bad = _repeat_time(example)
    data = TrajectoryDataset(bad, dtype=torch.float64, check_times=False)
    with pytest.raises(DataError, match=r"trajectory 3: time repeats at observations 1 and 2"):
        data.__getitems__([2, 3])
    items = TrajectoryDataset(example).__getitems__([3])
    doubled = type(items[0])(
        index=3,
        times=items[0].times[[0, 1, 1]],
        values=items[0].values[[0, 1, 2]],
        mask=items[0].mask[[0, 1, 2]],
        static=items[0].static,
        id="subject-3",
    )
    with pytest.raises(DataError, match=r"trajectory 'subject-3': time repeats"):
        collate([doubled], mode=UNION)


def test_a_dataset_in_memory_with_decreasing_times_is_refused_at_once(example):
    t = example.time.values.copy()
    t[6, 1] = t[6, 0] - 1.0
    with pytest.raises(neurode.datasets.errors.SchemaError, match=r"trajectory 6: time decreases"):
        TrajectoryDataset(example.assign(time=(example.time.dims, t, example.time.attrs)))


def test_a_lazy_store_loaded_without_the_check_is_still_checked_batch_by_batch(example, tmp_path):
    path = write_zarr(_repeat_time(example), tmp_path / "bad.zarr")
    data = TrajectoryDataset(neurode.load(path, check_times=False))
    data.__getitems__([0, 1])  # fine trajectories read fine
    with pytest.raises(DataError, match="trajectory 3: time repeats"):
        data.__getitems__([3])


def test_batches_carry_the_store_trajectory_ids_and_float64_times(example):
    subjects = example.assign_coords(trajectory=("trajectory", 100 + np.arange(12), {"cf_role": "trajectory_id"}))
    data = TrajectoryDataset(subjects)
    for mode in (UNION, PADDED):
        batch = collate(data.__getitems__([0, 5, 9]), mode=mode)
        assert batch.ids == (100, 105, 109) and batch.index.tolist() == [0, 5, 9]
        assert batch.times.dtype == torch.float64 and batch.values.dtype == torch.float32
        moved = batch.to(dtype=torch.float64)
        assert moved.times.dtype == torch.float64 and moved.to(time_dtype=torch.float32).times.dtype == torch.float32
    # without ids in the store, ids are the positions
    assert collate(TrajectoryDataset(example).__getitems__([2]), mode=UNION).ids == (2,)


def test_the_static_order_is_visible_and_names_pick_columns(example):
    with_dose = example.assign(dose=("trajectory", np.linspace(1, 2, 12), {"units": "mg", "long_name": "dose"}))
    data = TrajectoryDataset(with_dose)
    assert data.static_names == ("damping", "dose")
    assert "static=['damping', 'dose']" in repr(data)
    batch = data.collate_fn(data.__getitems__([0, 1]))
    np.testing.assert_allclose(batch.static_by_name()["dose"].numpy(), with_dose.dose.values[:2])
    reordered = TrajectoryDataset(with_dose, static=["dose", "damping"])
    assert reordered.collate_fn(reordered.__getitems__([0])).static_names == ("dose", "damping")


@pytest.mark.parametrize("key", ["dtype", "time_dtype"])
def test_integer_dtypes_are_refused_instead_of_truncating(example, key):
    # times 5.25 and 5.5 would both become 5 (and values truncate to 0)
    with pytest.raises(DataError, match=f"{key} must be a floating torch dtype.*torch.int64"):
        TrajectoryDataset(example, **{key: torch.int64})


@pytest.mark.parametrize("index", [1.5, "1", None, True])
def test_non_integer_index_is_refused_not_truncated(example, index):
    dataset = TrajectoryDataset(example)
    with pytest.raises(TypeError, match="trajectory indices must be integers"):
        dataset[index]
    assert dataset[np.int64(1)].index == 1


def test_time_with_nan_in_the_middle_of_a_row_is_refused(example):
    bad = example.copy(deep=True)
    bad["time"].values[0, 2] = np.nan
    with pytest.raises(DataError, match="after NaN padding"):
        TrajectoryDataset(bad)
    with pytest.raises(DataError, match="observations after NaN padding"):
        TrajectoryDataset(bad, check_times=False)[0]


@pytest.mark.parametrize("value", [None, {}, 3])
def test_something_other_than_a_dataset_is_a_schema_error(value):
    from neurode.datasets.errors import SchemaError
    from neurode.datasets.schema import validate

    with pytest.raises(SchemaError, match=f"expected an xarray.Dataset, got {type(value).__name__}"):
        validate(value)
    with pytest.raises(SchemaError, match="expected an xarray.Dataset"):
        TrajectoryDataset(value)
