"""Gradients through a neural ODE as the integration length grows: accuracy, evaluations, time, memory.

The model: a damped rotation plus an MLP (2 -> 64 -> 64 -> 2, tanh) on a 2-d
state, batch 16,

    dy/dt = A y + MLP(y),   A = [[-0.05, -1], [1, -0.05]],

so the solution stays bounded however long it runs; loss = sum of squares of
y at the final time, differentiated with respect to the MLP's parameters and
y0. The integration length is t_end = 1, 10, 100 (1×, 10×, 100×). Compared,
all with dopri5, rtol 1e-6, atol 1e-8, float64, CPU, one thread:

* neurode ``direct`` (backprop through the steps; with tangent error
  control, the default when gradients are recorded), ``backsolve`` (the
  continuous adjoint) with the full norm (``adjoint_options={"options":
  {"norm": "full"}}``), ``backsolve`` with the seminorm (its default) and
  ``checkpoint`` (tangent control too);
* torchdiffeq ``odeint`` (backprop through the steps), ``odeint_adjoint`` and
  ``odeint_adjoint`` with ``adjoint_options={"norm": "seminorm"}``;
* neurode's batch-parallel loop (``per_sample=True``: every sample its own
  step size) with ``direct``, ``backsolve`` (its norm is per sample and
  leaves the parameter integral out, a seminorm) and ``checkpoint``; "nfe"
  counts calls of f there too (each on the samples still running).

Columns:

* grad err -- ||g - g_ref|| / ||g_ref|| over all gradients, against neurode
  ``checkpoint`` (the gradients of ``direct``, in bounded memory) at
  rtol 1e-10, atol 1e-12 (float64);
* nfe fwd / nfe bwd -- calls of the vector field before / during
  ``.backward()`` (counted in f, split by a flag set before ``.backward()``);
  for neurode they are checked against ``sol.stats.nfe`` / ``nfe_backward``;
* time -- median wall time of forward + backward over ``--repeats``;
* graph MB -- bytes of the tensors autograd saves for backward during the
  forward pass (``torch.autograd.graph.saved_tensors_hooks``, pack hook,
  each storage counted once): the memory of the backward graph. It does not
  see what a custom autograd Function keeps on ``ctx`` outside
  ``save_for_backward`` (checkpoint's stored step states), nor memory that
  only exists during backward;
* peak MB -- peak resident memory of forward + backward above the process's
  resident memory just before it: every configuration runs in its own fresh
  subprocess (``sys.executable`` on this file with ``--child``), which builds
  the model, warms up with a short solve of the same method (t_end = 0.01),
  resets the kernel's high-water mark (``echo 5 > /proc/self/clear_refs``,
  Linux >= 4.0), reads ``VmRSS`` from ``/proc/self/status``, runs the
  measured solve once and reads ``VmHWM``. (Where the reset is unavailable it
  falls back to the growth of ``resource.getrusage(...).ru_maxrss``, which
  only shows memory above the process's earlier peak, e.g. from importing
  torch.) This sees everything (stored step states, backward-only buffers,
  allocator slack, memory the allocator reuses from earlier frees is not
  counted); its resolution is a page, and a few hundred kB of allocator noise
  are expected at small sizes;
* tensor peak MB -- peak of the bytes held by live CPU tensors during forward +
  backward, above those live just before: the memory a method itself keeps,
  free of the allocator's slack, fragmentation and history. Measured in the
  same child after everything else (the profiler's own records cost memory
  and time): one more forward + backward under
  ``torch.profiler.profile(activities=[ProfilerActivity.CPU],
  profile_memory=True)``, which records every allocation and free of c10's
  CPU allocator as a ``[memory]`` event carrying the byte delta (``nbytes()``
  of ``prof.profiler.kineto_results.events()``, > 0 allocate, < 0 free); the
  largest running sum of those deltas in time order is the column. It sees
  every tensor storage allocated inside the call, exact to the byte: saved
  activations, stored step states (also those kept on ``ctx``), stage
  buffers, backward-only temporaries, the new ``.grad`` tensors. It does not
  see memory outside c10's allocator (Python objects, autograd graph nodes,
  BLAS / oneDNN workspaces, the profiler's own records), and frees of tensors
  allocated before the call do not lower it (the profiler does not know their
  size; here only the previous call's ``.grad`` tensors, about 35 kB).

Each configuration runs in its own subprocess, one after another, in the same
run: peak MB, graph MB, the timings, then tensor peak MB. After the tables,
the ratios issue 5 asks about.
The default run takes about 3 minutes (the profiled run adds up to ~10x one
forward + backward at batch 16, less at large batches):

    python benchmarks/bench_gradients.py [--lengths 1 10 100] [--repeats 3]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import statistics
import subprocess
import sys
import time
import warnings

import torch

warnings.simplefilter("ignore")

F64 = torch.float64
METHODS = ["neurode direct", "neurode backsolve", "neurode backsolve+seminorm", "neurode checkpoint",
           "torchdiffeq odeint", "torchdiffeq adjoint", "torchdiffeq adjoint+seminorm",
           "neurode per-sample direct", "neurode per-sample backsolve", "neurode per-sample checkpoint"]


class Dynamics(torch.nn.Module):
    """Damped rotation plus an MLP; counts its calls, split by ``backward`` flag."""

    def __init__(self, width: int = 64) -> None:
        super().__init__()
        self.net = torch.nn.Sequential(
            torch.nn.Linear(2, width), torch.nn.Tanh(),
            torch.nn.Linear(width, width), torch.nn.Tanh(),
            torch.nn.Linear(width, 2),
        )
        self.register_buffer("A", torch.tensor([[-0.05, -1.0], [1.0, -0.05]]))
        self.backward_pass = False
        self.nfe = [0, 0]  # forward, backward

    def forward(self, t, y):
        self.nfe[self.backward_pass] += 1
        return y @ self.A.T + self.net(y)


def build(dtype=F64, batch: int = 16) -> tuple[Dynamics, torch.Tensor]:
    torch.manual_seed(0)
    f = Dynamics().to(dtype)
    y0 = torch.randn(batch, 2, dtype=dtype)
    return f, y0


def forward(method: str, f: Dynamics, y0: torch.Tensor, t_end: float, rtol: float, atol: float):
    """One solve; returns (loss, neurode Solution or None)."""
    import torchdiffeq

    import neurode

    t = torch.tensor([0.0, t_end], dtype=y0.dtype)
    if method.startswith("neurode"):
        adjoint = method.split()[-1]
        options = None
        if adjoint == "backsolve":  # the full norm, torchdiffeq's default (neurode's default is the seminorm)
            options = {"options": {"norm": "full"}}
        elif adjoint == "backsolve+seminorm":
            adjoint, options = "backsolve", {"options": {"norm": "seminorm"}}
        sol = neurode.solve(f, y0, t, solver="dopri5", adjoint=adjoint, rtol=rtol, atol=atol,
                            adjoint_options=options, per_sample="per-sample" in method)
        return sol.ys[-1].pow(2).sum(), sol
    if method == "torchdiffeq odeint":
        ys = torchdiffeq.odeint(f, y0, t, method="dopri5", rtol=rtol, atol=atol)
    else:
        options = {"norm": "seminorm"} if method.endswith("seminorm") else None
        ys = torchdiffeq.odeint_adjoint(f, y0, t, method="dopri5", rtol=rtol, atol=atol,
                                        adjoint_params=tuple(f.parameters()), adjoint_options=options)
    return ys[-1].pow(2).sum(), None


def gradient(method: str, f: Dynamics, y0: torch.Tensor, t_end: float, rtol: float, atol: float):
    """Forward + backward; returns (flat gradient, nfe forward, nfe backward, solution)."""
    y0 = y0.clone().requires_grad_(True)
    f.zero_grad(set_to_none=True)
    f.nfe, f.backward_pass = [0, 0], False
    loss, sol = forward(method, f, y0, t_end, rtol, atol)
    f.backward_pass = True
    loss.backward()
    f.backward_pass = False
    grads = [p.grad.reshape(-1) for p in f.parameters()] + [y0.grad.reshape(-1)]
    return torch.cat(grads), f.nfe[0], f.nfe[1], sol


def saved_bytes(method: str, f: Dynamics, y0: torch.Tensor, t_end: float, rtol: float, atol: float) -> int:
    """Bytes autograd saves for backward during the forward pass, each storage once."""
    seen: dict[int, int] = {}

    def pack(x):
        storage = x.untyped_storage()
        seen.setdefault(storage.data_ptr(), storage.nbytes())
        return x

    y0 = y0.clone().requires_grad_(True)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda x: x):
        loss, _ = forward(method, f, y0, t_end, rtol, atol)
    del loss
    return sum(seen.values())


def _proc_status(key: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(key + ":"):
                return int(line.split()[1])  # kB
    raise KeyError(key)


def reset_peak_rss() -> tuple[str, int]:
    """Start a peak-RSS measurement; returns (method, baseline in kB)."""
    gc.collect()
    try:
        with open("/proc/self/clear_refs", "w") as clear:
            clear.write("5")
        return "hwm", _proc_status("VmRSS")
    except OSError:
        return "maxrss", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def peak_rss_mb(start: tuple[str, int]) -> float:
    how, base = start
    peak = _proc_status("VmHWM") if how == "hwm" else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return max(peak - base, 0) / 1024


def tensor_peak_bytes(method: str, f: Dynamics, y0: torch.Tensor, t_end: float, rtol: float,
                      atol: float) -> int:
    """Peak bytes of live CPU tensors during forward + backward, relative to those live at the start.

    The profiler (``profile_memory=True``) records one ``[memory]`` event per allocation (``nbytes() > 0``)
    and per free (``nbytes() < 0``) of c10's CPU allocator; summed in time order they give the live bytes.
    Frees of blocks allocated before the profiler started are not reported (their size is unknown to it),
    so the running total only covers tensors allocated inside the measured call.
    """
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    cpu = (DeviceType.CPU, DeviceType.MKLDNN, DeviceType.IDEEP)
    gc.collect()
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        gradient(method, f, y0, t_end, rtol, atol)
    events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]" and e.device_type() in cpu]
    events.sort(key=lambda e: e.start_ns())  # stable: ties keep the recorded order
    live = peak = 0
    for event in events:
        live += event.nbytes()
        peak = max(peak, live)
    return peak


def child(method: str, t_end: float, rtol: float, atol: float, repeats: int, batch: int = 16) -> dict:
    torch.set_num_threads(1)
    f, y0 = build(batch=batch)
    gradient(method, f, y0, 0.01, rtol, atol)  # warm-up: imports, kernels, small buffers
    start = reset_peak_rss()
    g, nfe_f, nfe_b, sol = gradient(method, f, y0, t_end, rtol, atol)
    out = {"grad": g.tolist(), "nfe_f": nfe_f, "nfe_b": nfe_b, "peak_mb": peak_rss_mb(start), "rss": start[0]}
    if sol is not None:
        out["stats_nfe"], out["stats_nfe_b"] = sol.stats.nfe, sol.stats.nfe_backward
    out["graph_mb"] = saved_bytes(method, f, y0, t_end, rtol, atol) / 2**20
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        gradient(method, f, y0, t_end, rtol, atol)
        times.append(time.perf_counter() - start)
    out["time"] = statistics.median(times)
    # last, in the same child: the profiler's own records cost memory and time, which must not reach the
    # peak RSS or the timings above
    out["tensor_peak_mb"] = tensor_peak_bytes(method, f, y0, t_end, rtol, atol) / 2**20
    return out


def spawn(method: str, t_end: float, rtol: float, atol: float, repeats: int, batch: int = 16) -> dict:
    cmd = [sys.executable, __file__, "--child", method, "--t-end", str(t_end), "--rtol", str(rtol),
           "--atol", str(atol), "--repeats", str(repeats), "--batch", str(batch)]
    # glibc raises its mmap threshold as large blocks are freed, after which freed tensor memory stays in
    # the heap and the peak RSS creeps up with the number of steps; fixing the threshold makes the peak
    # measure the tensors a method keeps, not the allocator's history.
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "0"}
    done = subprocess.run(cmd, check=False, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        return {"error": done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"exit {done.returncode}"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lengths", type=float, nargs="+", default=[1.0, 10.0, 100.0])
    parser.add_argument("--methods", nargs="+", default=METHODS, choices=METHODS, metavar="METHOD")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rtol", type=float, default=1e-6)
    parser.add_argument("--atol", type=float, default=1e-8)
    parser.add_argument("--batch", type=int, default=16,
                        help="batch size; large batches make memory measurable (pair with --methods without direct)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--t-end", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.t_end, args.rtol, args.atol, args.repeats, args.batch)))
        return

    torch.set_num_threads(1)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, dopri5 rtol={args.rtol} atol={args.atol}, "
          f"float64, MLP 2-64-64-2 + damped rotation, batch {args.batch}; reference: neurode checkpoint (= direct's "
          f"gradients, bounded memory) rtol=1e-10 atol=1e-12")
    results: dict[tuple[str, float], dict] = {}
    for t_end in args.lengths:
        f, y0 = build(batch=args.batch)
        ref, ref_nfe, _, _ = gradient("neurode checkpoint", f, y0, t_end, 1e-10, 1e-12)
        print(f"\n[t_end = {t_end:g}] reference nfe {ref_nfe}, |g_ref| = {float(ref.norm()):.3e}")
        print(f"{'method':<30} {'grad err':>9} {'nfe fwd':>8} {'nfe bwd':>8} {'bwd/fwd':>8} {'time s':>8} "
              f"{'graph MB':>9} {'peak MB':>8} {'tensor peak MB':>15}")
        for method in args.methods:
            r = spawn(method, t_end, args.rtol, args.atol, args.repeats, args.batch)
            results[method, t_end] = r
            if "error" in r:
                print(f"{method:<30} failed: {r['error']}")
                continue
            g = torch.tensor(r["grad"], dtype=F64)
            r["err"] = float((g - ref).norm() / ref.norm())
            note = ""
            if "stats_nfe" in r and (r["stats_nfe"], r["stats_nfe_b"]) != (r["nfe_f"], r["nfe_b"]):
                note = f"  (stats: nfe {r['stats_nfe']}, nfe_backward {r['stats_nfe_b']})"
            print(f"{method:<30} {r['err']:>9.1e} {r['nfe_f']:>8} {r['nfe_b']:>8} {r['nfe_b'] / r['nfe_f']:>8.2f} "
                  f"{r['time']:>8.3f} {r['graph_mb']:>9.2f} {r['peak_mb']:>8.1f} {r['tensor_peak_mb']:>15.3f}{note}")

    lo, hi = min(args.lengths), max(args.lengths)

    def get(method, t_end, key):
        r = results.get((method, t_end), {})
        return r.get(key, float("nan"))

    def ratio(a, b):
        return a / b if b else float("nan")

    print(f"\nissue 5 ratios (longest length {hi:g}, shortest {lo:g}):")
    adjoints = [m for m in ("neurode backsolve", "neurode backsolve+seminorm", "neurode per-sample backsolve",
                            "torchdiffeq adjoint", "torchdiffeq adjoint+seminorm") if m in args.methods]
    for m in adjoints:
        a, b = get(m, hi, "peak_mb"), get(m, lo, "peak_mb")
        print(f"  {m}: peak MB at {hi:g} vs {lo:g}: {a:.1f} vs {b:.1f} (ratio {ratio(a, b):.2f}, "
              f"difference {a - b:+.1f} MB; below ~1 MB both are allocator noise)")
    for m in adjoints:
        a, b = get(m, hi, "tensor_peak_mb"), get(m, lo, "tensor_peak_mb")
        print(f"  {m}: tensor peak MB at {hi:g} vs {lo:g}: {a:.3f} vs {b:.3f} (ratio {ratio(a, b):.2f}, "
              f"difference {a - b:+.3f} MB)")
    for m in adjoints:
        print(f"  {m}: backward/forward evaluations at {hi:g}: "
              f"{ratio(get(m, hi, 'nfe_b'), get(m, hi, 'nfe_f')):.2f}")
    for prefix in ("neurode", "neurode per-sample"):
        checkpoint, direct = f"{prefix} checkpoint", f"{prefix} direct"
        if not {checkpoint, direct} <= set(args.methods):
            continue  # the checkpoint-vs-direct comparison needs both
        print(f"  {checkpoint} vs direct at {hi:g}: peak MB {get(checkpoint, hi, 'peak_mb'):.1f} vs "
              f"{get(direct, hi, 'peak_mb'):.1f} (ratio "
              f"{ratio(get(checkpoint, hi, 'peak_mb'), get(direct, hi, 'peak_mb')):.2f}); "
              f"graph MB ratio {ratio(get(checkpoint, hi, 'graph_mb'), get(direct, hi, 'graph_mb')):.3f}, "
              "tensor peak MB ratio "
              f"{ratio(get(checkpoint, hi, 'tensor_peak_mb'), get(direct, hi, 'tensor_peak_mb')):.3f}")
        for t_end in args.lengths:
            print(f"  {prefix} gradient error at {t_end:g}: checkpoint {get(checkpoint, t_end, 'err'):.1e}, "
                  f"direct {get(direct, t_end, 'err'):.1e}")

if __name__ == "__main__":
    main()
