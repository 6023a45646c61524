"""benchmarks/reproduce_spirals.py: the data split never lets training read a scored point; runs merge by seed."""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
reproduce_spirals = pytest.importorskip("reproduce_spirals")


def test_training_windows_reach_the_last_point_and_their_futures_are_nan():
    rel_times, noisy, clean, _, starts, rotation = reproduce_spirals.spiral_windows(400, 0, n_train=300,
                                                                                    train_start_max=899)
    assert rel_times.shape == (200,) and noisy.shape == clean.shape == (400, 200, 2)
    # training windows as the torchdiffeq example draws them (last start 899: the window ends on point 999),
    # test windows leave room for their 100 scored points
    assert starts.min() >= 100 and 799 < starts[:300].max() <= 899 and starts[300:].max() <= 799
    assert np.isnan(noisy[:300, 100:]).all() and np.isnan(clean[:300, 100:]).all()
    assert np.isfinite(noisy[:, :100]).all() and np.isfinite(clean[300:]).all()
    assert sorted(np.bincount(rotation)) == [200, 200]


def test_the_windows_of_spirals_keep_their_shared_draws():
    """``spirals`` (bench_training's data) draws every window from points 100 to 899 with a future, as before."""
    rel_times, noisy, clean, rng = reproduce_spirals.spirals(50, 3)
    again = reproduce_spirals.spiral_windows(50, 3)
    np.testing.assert_array_equal(noisy, again[1])
    assert np.isfinite(clean).all() and again[4].max() <= 799
    # the clean points lie on the two Archimedean spirals: radius b * t about x = +5 (counter-clockwise)
    # and b * 50 / (6 pi + 1 - t) about x = -5 (clockwise)
    centre = np.where(again[5][:, None, None] == 1, [5.0, 0.0], [-5.0, 0.0])
    t = np.linspace(0, 6 * np.pi, 1000)[again[4][:, None] + np.arange(200)]
    radius = np.where(again[5][:, None] == 1, 0.3 * t, 15.0 / (6 * np.pi + 1 - t))
    np.testing.assert_allclose(np.linalg.norm(clean - centre, axis=-1), radius, rtol=1e-12)


def test_futures_past_every_training_window_are_found():
    starts = np.array([100, 500, 150, 450, 699, 700, 600, 700])
    rotation = np.array([0, 1, 0, 1, 0, 0, 1, 1])
    # training windows end by point 249 (clockwise) and 599 (counter-clockwise); a future ends at start + 199
    assert reproduce_spirals.beyond_training(starts, rotation, 4).tolist() == [True, True, True, True]
    starts[:4] = [800, 750, 820, 760]  # now by points 919 and 859
    assert reproduce_spirals.beyond_training(starts, rotation, 4).tolist() == [False, False, False, True]


def _record(seed, model, n_obs, clean, **changes):
    settings = {**asdict(reproduce_spirals.Settings()), **changes}
    result = {"noisy": clean + 0.2, "clean": clean, "quarters": [clean] * 4, "inside": clean, "beyond": float("nan"),
              "n_beyond": 0, "n_test": 200, "seconds": 1.0, "final_loss": 0.0}
    return {"seed": seed, "model": model, "n_obs": n_obs, "n_spirals": 1000, "quick": False, "settings": settings,
            "result": result}


def _write(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_merge_puts_one_process_per_seed_into_one_table(tmp_path):
    files = [_write(tmp_path / f"seed{seed}.jsonl", [_record(seed, model, n, 0.1 * (seed + 1))
                                                      for model in reproduce_spirals.PAPER
                                                      for n in reproduce_spirals.COUNTS])
             for seed in (2, 0, 1)]
    results, seeds, settings, n_spirals, quick = reproduce_spirals.merge(files)
    assert seeds == [0, 1, 2] and settings == reproduce_spirals.Settings() and n_spirals == 1000 and not quick
    assert [r["clean"] for r in results["Latent ODE"][30]] == pytest.approx([0.1, 0.2, 0.3])
    text = reproduce_spirals.table(results, seeds, settings, n_spirals)
    assert "| Latent ODE (neurode) | clean | 0.2000 ± 0.1000 | 0.2000 ± 0.1000 | 0.2000 ± 0.1000 |" in text
    assert "| 30 | 0.200 | 0.200 | 0.200 | 0.200 | 0.200 | none (0.0 of 200) |" in text


def test_merge_refuses_mixed_settings_missing_runs_and_torn_lines(tmp_path):
    one = _write(tmp_path / "a.jsonl", [_record(0, "RNN", 30, 0.5)])
    other = _write(tmp_path / "b.jsonl", [_record(1, "RNN", 30, 0.5, iters=10)])
    with pytest.raises(ValueError, match="runs with different settings"):
        reproduce_spirals.merge([one, other])
    with pytest.raises(ValueError, match=r"not every run has every seed \[0\]: RNN 50 obs"):
        reproduce_spirals.merge([one])
    torn = tmp_path / "torn.jsonl"
    torn.write_text(one.read_text() + '{"seed": 1, "mod')
    with pytest.raises(ValueError, match="torn.jsonl:2: not a JSON line"):
        reproduce_spirals.merge([torn])
    assert reproduce_spirals.main(["--merge", str(torn)]) == 1


def test_a_partial_run_never_writes_the_readme():
    """--counts runs part of a table; only --merge of all counts may write it."""
    assert reproduce_spirals.main(["--counts", "100", "--write-readme"]) == 1


@pytest.mark.parametrize("schedule", reproduce_spirals.SCHEDULES)
def test_learning_rate_schedules_fall_from_the_first_rate_to_the_last(schedule):
    factors = [reproduce_spirals.lr_factor(schedule, step, 100, 0.1) for step in range(101)]
    assert factors[0] == pytest.approx(1.0) and factors[-1] == pytest.approx(0.1)
    assert all(later <= earlier for earlier, later in zip(factors, factors[1:], strict=False))


def test_the_cosine_schedule_stays_high_longer_than_the_exponential():
    halfway = {s: reproduce_spirals.lr_factor(s, 50, 100, 0.1) for s in reproduce_spirals.SCHEDULES}
    assert halfway["exponential"] == pytest.approx(0.1**0.5) and halfway["cosine"] == pytest.approx(0.55)
    with pytest.raises(ValueError, match="schedule must be one of exponential, cosine, got 'step'"):
        reproduce_spirals.lr_factor("step", 0, 100, 0.1)


def test_the_settings_choose_the_encoder_and_the_dynamics_depth():
    settings = reproduce_spirals.Settings(encoder="ode_rnn", depth=3, latent_dim=3, width=8)
    model = reproduce_spirals.build("Latent ODE", settings, 0.1)
    assert model.encoder_name == "ode_rnn" and model.dynamics.depth == 3 and model.dynamics.width == 8


def test_the_costliest_runs_are_planned_first():
    runs = reproduce_spirals.plan([0, 1], [30, 100])
    assert runs[:4] == [(0, "Latent ODE", 100), (1, "Latent ODE", 100), (0, "Latent ODE", 30), (1, "Latent ODE", 30)]
    assert [run[1] for run in runs[4:]] == ["RNN"] * 4 and len(set(runs)) == 8


def test_worker_processes_give_the_serial_runs(tmp_path):
    """--jobs spreads seeded, independent runs over processes: every result is the one a serial run gives."""
    tiny = ["--quick", "--iters", "2", "--rnn-iters", "2", "--spirals", "20", "--seeds", "0", "1", "--counts", "30"]
    serial, parallel = tmp_path / "serial.jsonl", tmp_path / "parallel.jsonl"
    assert reproduce_spirals.main([*tiny, "--rows", str(serial)]) == 0
    assert reproduce_spirals.main([*tiny, "--jobs", "2", "--rows", str(parallel)]) == 0

    def runs(path):
        records = [json.loads(line) for line in path.read_text().splitlines()]
        for record in records:
            del record["result"]["seconds"]
        return sorted(records, key=lambda r: (r["seed"], r["model"], r["n_obs"]))

    assert len(runs(parallel)) == 4 and runs(parallel) == runs(serial)


def test_the_table_lists_runs_by_seed_whatever_order_they_finish_in_and_its_wall_time(monkeypatch, capsys):
    def fake(run, settings, n_spirals):
        seed, name, n_obs = run
        clean = 0.1 * (seed + 1)
        return {"noisy": clean, "clean": clean, "quarters": [clean] * 4, "inside": clean, "beyond": float("nan"),
                "n_beyond": 0, "n_test": 50, "seconds": 60.0 * (seed + 1), "final_loss": 0.0}

    def backwards(runs, settings, n_spirals, *, jobs, threads):
        for run in reversed(runs):  # the last seed first
            yield run, fake(run, settings, n_spirals)

    monkeypatch.setattr(reproduce_spirals, "execute", backwards)
    assert reproduce_spirals.main(["--quick", "--seeds", "0", "1", "2", "--jobs", "2"]) == 0
    out = capsys.readouterr().out
    # by seed, the mean and sample std of 0.1, 0.2, 0.3 (any order would give the same cell): the quarters
    # table reads the first seed's n_test, and the time line sums the runs
    assert "| Latent ODE (neurode) | clean | 0.2000 ± 0.1000 | 0.2000 ± 0.1000 | 0.2000 ± 0.1000 |" in out
    assert "as 2 worker processes of 1 thread each; training time of the runs summed: Latent ODE 18.0 min " \
           "(longest run 180 s), RNN 18.0 min." in out


def test_a_failed_run_is_named_and_exits_1(monkeypatch, capsys):
    def broken(name, n_obs, seed, settings, n_spirals):
        raise FloatingPointError("step size underflow")

    monkeypatch.setattr(reproduce_spirals, "run_one", broken)
    assert reproduce_spirals.main(["--quick", "--counts", "50"]) == 1
    assert "seed 0 Latent ODE 50 obs failed: FloatingPointError: step size underflow" in capsys.readouterr().err


def test_the_latent_training_length_and_regulariser_may_differ_by_count():
    settings = reproduce_spirals.Settings()
    at = {n: reproduce_spirals.for_count(settings, n) for n in reproduce_spirals.COUNTS}
    assert [at[n].iters for n in (30, 50, 100)] == [15000, 15000, 10000]
    assert [at[n].jacobian_weight for n in (30, 50, 100)] == [0.001, 0.001, 0.0]
    assert at[50].iters_50 is None and at[100].jacobian_weight_100 is None  # resolved, not applied twice
    assert reproduce_spirals.for_count(settings, 100).iters == 10000
    # in the table's caption
    assert reproduce_spirals._lengths(settings) == ("15000 / 15000 / 10000 at 30 / 50 / 100 observations "
                                                    "(Jacobian regulariser 0.001 at 30, 0.001 at 50, 0 at 100)")
    fifty = reproduce_spirals.Settings(iters_50=12000)
    assert [reproduce_spirals.for_count(fifty, n).iters for n in (30, 50, 100)] == [15000, 12000, 10000]
    same = reproduce_spirals.Settings(iters=200, iters_50=None, iters_100=None, jacobian_weight_100=None)
    assert reproduce_spirals.for_count(same, 100).iters == 200 and reproduce_spirals._lengths(same) == "200"
    # the model a run builds carries its count's weight
    model = reproduce_spirals.build("Latent ODE", at[100], 0.1)
    assert model.jacobian_weight == 0.0
    assert reproduce_spirals.build("Latent ODE", at[30], 0.1).jacobian_weight == 0.001


def _children(pid: int) -> set[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return {int(c) for c in path.read_text().split()} if path.exists() else set()


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="reads child processes from Linux's /proc")
def test_sigterm_to_the_parent_ends_the_workers_runs_too(tmp_path):
    """Killing ``--jobs``'s parent with SIGTERM must not leave its workers running their runs to the end."""
    import signal
    import subprocess
    import time

    script = Path(reproduce_spirals.__file__)
    rows = tmp_path / "rows.jsonl"
    # runs that would take hours: only a terminated worker ends them within the test
    forever = ["--iters", "10000000", "--rnn-iters", "10000000"]
    proc = subprocess.Popen([sys.executable, str(script), "--quick", *forever, "--spirals", "20",
                             "--seeds", "0", "--counts", "30", "--jobs", "2", "--rows", str(rows)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        workers: set[int] = set()
        while time.monotonic() < deadline and len(workers) < 2:
            workers = {c for c in _children(proc.pid) if "multiprocessing.spawn" in
                       Path(f"/proc/{c}/cmdline").read_bytes().decode(errors="replace")}
            time.sleep(0.2)
        assert len(workers) == 2, f"the workers never started: {proc.stderr.read() if proc.poll() is not None else ''}"
        time.sleep(3)  # into their runs
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 128 + signal.SIGTERM
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and any(_alive(w) for w in workers):
            time.sleep(0.2)
        assert not any(_alive(w) for w in workers)
        assert not rows.exists()  # no run finished, none recorded
    finally:
        if proc.poll() is None:
            proc.kill()
