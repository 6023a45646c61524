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
