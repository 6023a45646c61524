"""Lazy loading: a store several times larger than a memory cap streams through at bounded memory.

Writes a canonical trajectory store (irregular times with NaN padding, a scalar
and a vector state variable, a per-trajectory parameter) of ``--store-mb``
megabytes of data, generated chunk by chunk with dask so that writing is
bounded too. Then, in a fresh Python process, opens it with ``neurode.load``
and draws every trajectory once through ``TrajectoryDataset`` and a torch
``DataLoader`` (padded batches), summing the observed values so every byte
really passes through. The child reports its peak resident set size
(``ru_maxrss``); the run fails if that exceeds ``--cap-mb``.

    python benchmarks/bench_lazy_loading.py [--store-mb 2048] [--cap-mb 512] [--batch-size 512]

The pass is sequential (``shuffle=False``). A shuffled pass over a store this
size reads one stored chunk per drawn trajectory; write such stores with
small chunks (``write_zarr(..., chunk_trajectories=...)``) or shuffle within
chunks.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

OBS = 200
COMPONENTS = 4


def _tree_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def write_store(path: Path, store_mb: int, chunk_trajectories: int) -> tuple[int, int]:
    """Write a canonical store of about ``store_mb`` MB of float64 data; returns (trajectories, data bytes)."""
    import dask.array as da
    import numpy as np
    import xarray as xr

    from neurode.datasets.io import write_zarr
    from neurode.datasets.schema import DATASET_ATTRS, cf_attrs

    per_trajectory = OBS * (COMPONENTS + 2) * 8 + 8  # time, x, v[4], one parameter
    n = store_mb * 2**20 // per_trajectory
    chunks = (chunk_trajectories, OBS)
    rng = da.random.default_rng(0)

    def times(block_counts):
        # Sorted uniform times, NaN after each trajectory's own count.
        local = np.random.default_rng(int(block_counts.sum()))
        t = np.sort(local.uniform(0.0, 10.0, (block_counts.shape[0], OBS)), axis=1)
        return np.where(np.arange(OBS)[None, :] < block_counts[:, None], t, np.nan)

    counts = rng.integers(OBS // 2, OBS + 1, size=n, chunks=chunk_trajectories)
    time = da.map_blocks(times, counts, new_axis=1, chunks=(counts.chunks[0], (OBS,)), dtype=float)
    present = ~da.isnan(time)
    x = da.where(present, rng.standard_normal((n, OBS), chunks=chunks), np.nan)
    v = da.where(present[..., None], rng.standard_normal((n, OBS, COMPONENTS), chunks=(*chunks, COMPONENTS)), np.nan)
    ds = xr.Dataset(
        {
            "time": (("trajectory", "obs"), time, cf_attrs("s", "time")),
            "x": (("trajectory", "obs"), x, cf_attrs("m", "position")),
            "v": (("trajectory", "obs", "component"), v, cf_attrs("m s-1", "velocity")),
            "damping": (
                ("trajectory",), rng.uniform(0.1, 0.5, n, chunks=chunk_trajectories), cf_attrs("s-1", "damping")
            ),
        },
        attrs=dict(DATASET_ATTRS),
    )
    write_zarr(ds, path, chunk_trajectories=chunk_trajectories)
    return n, int(ds.nbytes)


CHILD = r"""
import json, resource, sys, time
import torch
torch.set_num_threads(1)
from torch.utils.data import DataLoader
import neurode
from neurode.datasets.trajectory_dataset import TrajectoryDataset

def rss_mb():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")

path, batch_size = sys.argv[1], int(sys.argv[2])
baseline = rss_mb()
start = time.perf_counter()
ds = neurode.load(path)
lazy = all(var.chunks is not None for var in ds.data_vars.values())
data = TrajectoryDataset(ds, mode="padded", dtype=torch.float64)
loader = DataLoader(data, batch_size=batch_size, shuffle=False, collate_fn=data.collate_fn)
total, observed, trajectories, rss_max_sampled = 0.0, 0, 0, 0.0
for batch in loader:
    total += float(batch.values[batch.mask].sum())
    observed += int(batch.mask.sum())
    trajectories += batch.batch_size
    rss_max_sampled = max(rss_max_sampled, rss_mb())
elapsed = time.perf_counter() - start
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
print(json.dumps({"lazy": lazy, "trajectories": trajectories, "observed_values": observed, "sum": total,
                  "seconds": elapsed, "baseline_rss_mb": baseline, "peak_rss_mb": peak}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--store-mb", type=int, default=2048, help="data size of the store (uncompressed), MB")
    parser.add_argument("--cap-mb", type=int, default=512, help="peak RSS the streaming pass must stay under, MB")
    parser.add_argument("--batch-size", type=int, default=512, help="trajectories per batch")
    parser.add_argument("--chunk-trajectories", type=int, default=512, help="trajectories per stored chunk")
    parser.add_argument("--dir", type=Path, default=None, help="where to write the store (default: a temporary dir)")
    parser.add_argument("--keep", action="store_true", help="keep the store afterwards")
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="neurode-bench-", dir=args.dir))
    store = root / "large.zarr"
    try:
        start = time.perf_counter()
        n, data_bytes = write_store(store, args.store_mb, args.chunk_trajectories)
        written = time.perf_counter() - start
        disk = _tree_bytes(store)
        print(f"store: {n} trajectories x {OBS} obs, {data_bytes / 2**20:.0f} MB of data, "
              f"{disk / 2**20:.0f} MB on disk, written in {written:.1f} s")

        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        child = subprocess.run(
            [sys.executable, "-c", CHILD, str(store), str(args.batch_size)],
            capture_output=True, text=True, env=env, check=False,
        )
        if child.returncode != 0:
            sys.exit(f"streaming pass failed:\n{child.stderr}")
        result = json.loads(child.stdout.strip().splitlines()[-1])
        print(f"streamed: {result['trajectories']} trajectories, {result['observed_values']} observed values "
              f"in {result['seconds']:.1f} s ({data_bytes / 2**20 / result['seconds']:.0f} MB/s); "
              f"lazy={result['lazy']}")
        print(f"peak RSS {result['peak_rss_mb']:.0f} MB (after imports {result['baseline_rss_mb']:.0f} MB) "
              f"vs store {data_bytes / 2**20:.0f} MB: "
              f"store / peak = {data_bytes / 2**20 / result['peak_rss_mb']:.1f}x; "
              f"cap {args.cap_mb} MB")
        if result["trajectories"] != n:
            sys.exit(f"FAIL: streamed {result['trajectories']} trajectories, expected {n}")
        if result["peak_rss_mb"] > args.cap_mb:
            sys.exit(f"FAIL: peak RSS {result['peak_rss_mb']:.0f} MB exceeds the cap of {args.cap_mb} MB")
        print("OK: the store streamed through under the memory cap")
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
        else:
            print(f"kept {store}")


if __name__ == "__main__":
    main()
