"""summarize(): the numbers `neurode data info` prints, checked against numpy."""

from __future__ import annotations

import json

import numpy as np

import neurode
from neurode.datasets.info import summarize
from neurode.datasets.io import write_zarr


def test_summary_numbers(example, tmp_path):
    summary = summarize(neurode.load(write_zarr(example, tmp_path / "e.zarr", chunk_trajectories=5)))
    json.dumps(summary)  # JSON-ready throughout

    t = example.time.values
    counts = np.isfinite(t).sum(axis=1)
    assert summary["dims"] == {"trajectory": 12, "obs": 9, "component": 2}
    assert summary["observations_per_trajectory"] == {
        "min": int(counts.min()), "median": float(np.median(counts)), "mean": float(counts.mean()),
        "max": int(counts.max()), "total": int(counts.sum()), "counts": counts.tolist(),
    }
    assert summary["time"] == {"units": "s", "min": float(np.nanmin(t)), "max": float(np.nanmax(t))}

    variables = {v["name"]: v for v in summary["variables"]}
    assert [v["name"] for v in summary["variables"]] == ["time", "v", "x", "damping"]
    assert variables["x"]["units"] == "m" and variables["x"]["role"] == "state"
    assert variables["damping"]["role"] == "per_trajectory" and "missing_fraction" not in variables["damping"]
    present = np.isfinite(t)
    x_missing = np.isnan(example.x.values)[present].mean()
    v_missing = np.isnan(example.v.values)[present].mean()
    assert variables["x"]["missing_fraction"] == x_missing and variables["v"]["missing_fraction"] == v_missing
    assert variables["x"]["observed"] == int(np.isfinite(example.x.values).sum())
    # Overall: every state value at an observation time; the vector variable counts per component.
    total_missing = np.isnan(example.x.values)[present].sum() + np.isnan(example.v.values)[present].sum()
    assert summary["missing_fraction"] == total_missing / (present.sum() * 3)
    assert summary["attrs"]["featureType"] == "trajectory"
