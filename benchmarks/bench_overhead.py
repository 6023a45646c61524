"""Solver overhead: solve time against (function evaluations × one evaluation's time).

Small neural dynamics — an MLP of width 64 on a 2-d state (2 -> 64 -> 64 -> 2,
tanh) — where a solver's own per-step work is most visible. For each library
(neurode, torchdiffeq, torchode when installed) the same dopri5 solve is timed,
and its overhead ratio is reported:

    ratio = median over repeats of  solve time / (time of nfe evaluations of f)

where each repeat times one solve and, right after it, nfe bare evaluations
of f on the same state (so both see the same machine load). A ratio of 1
means the solver adds nothing to the cost of evaluating f. All libraries are
measured in the same run, on one thread, CPU, without gradients.

"neurode-compiled" is ``neurode.solve(..., compile=True)``: each dopri5 step,
the six evaluations of f included, runs as one ``torch.compile``'d function
(``neurode/framework/compiled_step.py``). Its ratio is still taken against
the *eager* evaluation of f, so it shows what the user gets, and it can fall
below 1, because compiling also speeds up f itself. The first solve at each
batch size compiles for several seconds; that time is not counted.

    python benchmarks/bench_overhead.py [--batch 1 64 1024] [--repeats 30] [--no-compile]
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

import torch

warnings.simplefilter("ignore")


class MLPDynamics(torch.nn.Module):
    def __init__(self, dim: int = 2, width: int = 64) -> None:
        super().__init__()
        self.net = torch.nn.Sequential(
            torch.nn.Linear(dim, width), torch.nn.Tanh(),
            torch.nn.Linear(width, width), torch.nn.Tanh(),
            torch.nn.Linear(width, dim),
        )

    def forward(self, t, y):
        return self.net(y)


class Counted(torch.nn.Module):
    def __init__(self, f):
        super().__init__()
        self.f = f
        self.nfe = 0

    def forward(self, t, y):
        self.nfe += 1
        return self.f(t, y)


def median_time(fn, repeats: int, inner: int = 1) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(inner):
            fn()
        times.append((time.perf_counter() - start) / inner)
    return statistics.median(times)


def run(batch: int, repeats: int, rtol: float, atol: float, t_end: float, compiled: bool = True) -> list[dict]:
    import torchdiffeq

    import neurode

    torch.manual_seed(0)
    f = MLPDynamics()
    # a non-trivial flow: scale the last layer so the dynamics are O(1)
    with torch.no_grad():
        f.net[-1].weight.mul_(3.0)
    y0 = torch.randn(batch, 2)
    t = torch.tensor([0.0, t_end])
    rows = []

    with torch.no_grad():
        def neurode_solve():
            return neurode.odeint(counted, y0, t, rtol=rtol, atol=atol, method="dopri5")

        def torchdiffeq_solve():
            return torchdiffeq.odeint(counted, y0, t, rtol=rtol, atol=atol, method="dopri5")

        def neurode_compiled_solve():
            return neurode.solve(f, y0, t, rtol=rtol, atol=atol, solver="dopri5", compile=True)

        libs = [("neurode", neurode_solve), ("torchdiffeq", torchdiffeq_solve)]
        try:
            import torchode

            term = torchode.ODETerm(lambda t_, y_: counted(t_, y_))  # late-bound: counted or bare
            step = torchode.Dopri5(term=term)
            ctrl = torchode.IntegralController(atol=atol, rtol=rtol, term=term)
            adjoint = torchode.AutoDiffAdjoint(step, ctrl)
            problem = torchode.InitialValueProblem(y0=y0, t_start=torch.full((batch,), 0.0),
                                                   t_end=torch.full((batch,), t_end))

            def torchode_solve():
                return adjoint.solve(problem)

            libs.append(("torchode", torchode_solve))
        except ImportError:
            pass

        if compiled:
            libs.append(("neurode-compiled", neurode_compiled_solve))
        for name, fn in libs:
            if name == "neurode-compiled":
                nfe = fn().stats.nfe  # compiles on this first call (seconds); f inside the graph is not counted
            else:
                counted = Counted(f)  # count once, then time with the bare dynamics
                fn()
                nfe = counted.nfe
                counted = f
            # Interleave: each repeat times one solve and then nfe bare evaluations, so that both see the
            # same machine load; the overhead ratio is the median of the per-repeat ratios.
            solves, evals, ratios = [], [], []
            t0 = t[0]
            for _ in range(repeats):
                start = time.perf_counter()
                fn()
                solve = time.perf_counter() - start
                start = time.perf_counter()
                for _ in range(nfe):
                    f(t0, y0)
                evaluate = time.perf_counter() - start
                solves.append(solve)
                evals.append(evaluate / nfe)
                ratios.append(solve / evaluate)
            rows.append({
                "library": name, "batch": batch, "nfe": nfe, "solve_ms": statistics.median(solves) * 1e3,
                "eval_us": statistics.median(evals) * 1e6, "ratio": statistics.median(ratios),
            })
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, nargs="+", default=[1])
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--rtol", type=float, default=1e-6)
    parser.add_argument("--atol", type=float, default=1e-8)
    parser.add_argument("--t-end", type=float, default=5.0)
    parser.add_argument("--no-compile", action="store_true",
                        help="skip the neurode-compiled row "
                             "(solve(..., compile=True) compiles for seconds per batch size)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, dopri5 rtol={args.rtol} atol={args.atol}")
    print(f"{'library':<12} {'batch':>6} {'nfe':>6} {'solve ms':>10} {'eval us':>9} {'overhead':>9} {'vs neurode':>11}")
    for batch in args.batch:
        rows = run(batch, args.repeats, args.rtol, args.atol, args.t_end, not args.no_compile)
        base = rows[0]["solve_ms"]
        for r in rows:
            print(f"{r['library']:<12} {r['batch']:>6} {r['nfe']:>6} {r['solve_ms']:>10.3f} {r['eval_us']:>9.1f} "
                  f"{r['ratio']:>9.2f} {r['solve_ms'] / base:>10.2f}x")


if __name__ == "__main__":
    main()
