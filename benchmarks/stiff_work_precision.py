"""Work–precision and tolerance proportionality of the stiff solvers, beside scipy's BDF and Radau (a picture).

``bench_stiff.py`` measures every method at one tolerance (rtol 1e-6). One
tolerance cannot say what a user needs to choose ``rtol``: how the error
*responds* to it. This script sweeps ``rtol`` over several decades (``atol``
in a fixed ratio to it, the ratio of ``bench_stiff``'s problem) on
Robertson's kinetics, HIRES and van der Pol μ = 1000 (Hairer & Wanner II,
§IV.10; the problems are ``bench_stiff``'s), and for each solve records

* the final global error in units of the local tolerance,
  ``err/tol = max_i |y_i - ref_i| / (rtol |ref_i| + atol)`` (as ``bench_stiff``),
  against a scipy Radau reference at rtol 1e-12;
* the same error in fixed units, ``max_i |y_i - ref_i| / (|ref_i| + atol / rtol)``
  (a relative error, floored by the problem's atol ratio), against the work:
  evaluations of ``f`` (``stats.nfe``; scipy's ``nfev``, which includes its
  finite-difference Jacobians while neurode's autograd Jacobians are counted
  apart) and wall time.

It draws two rows of panels, one column per problem: ``err/tol`` against
``rtol`` (a solver whose global error tracks its tolerance draws a flat
line; a line at 1 means "the tolerance asked is the accuracy delivered") and
the work–precision diagram (error against evaluations, lower left is
better). It prints the err/tol table (markdown) and writes the figure.

Global error is not what an adaptive solver controls — it holds each step's
*local* error to the tolerance, and local errors are carried and added up
along the solution — so ``err/tol`` of a few is usual, and how it moves with
``rtol`` (tolerance proportionality) is what tells solvers apart.

Usage::

    python benchmarks/stiff_work_precision.py                      # the README figure (a few minutes)
    python benchmarks/stiff_work_precision.py --quick              # three tolerances, shorter spans (~1 min)
    python benchmarks/stiff_work_precision.py --out wp.png --methods rodas4 kvaerno5
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
from bench_stiff import DEFAULT_METHODS, _options, _registered, hires, robertson, van_der_pol

import neurode

F64 = torch.float64
FIGURE = Path(__file__).resolve().parent / "figures" / "stiff_work_precision.png"
SCIPY_METHODS = ("BDF", "Radau")
REF_RTOL = 1e-12


def problems(quick: bool) -> list[dict]:
    """The problems with the ``atol / rtol`` ratio of ``bench_stiff`` (its atol at rtol 1e-6)."""
    return [
        dict(name="Robertson", f=robertson, y0=[1.0, 0.0, 0.0], span=1e3 if quick else 1e5, atol_ratio=1e-4),
        dict(name="HIRES", f=hires, y0=[1, 0, 0, 0, 0, 0, 0, 0.0057], span=321.8122, atol_ratio=1e-4),
        dict(name="van der Pol μ=1000", f=van_der_pol, y0=[2.0, 0.0], span=300.0 if quick else 3000.0,
             atol_ratio=1.0),
    ]


def rtols(quick: bool) -> list[float]:
    return [1e-3, 1e-5, 1e-7] if quick else [10.0**-k for k in range(3, 9)]


def solve_scipy(problem: dict, method: str, rtol: float, atol: float) -> tuple[np.ndarray, int, float]:
    from scipy.integrate import solve_ivp

    f = problem["f"]

    def rhs(t, y):
        return f(None, torch.from_numpy(y)).numpy()

    start = time.perf_counter()
    sol = solve_ivp(rhs, (0.0, problem["span"]), np.asarray(problem["y0"], dtype=np.float64), method=method,
                    rtol=rtol, atol=atol)
    seconds = time.perf_counter() - start
    if not sol.success:
        raise RuntimeError(f"scipy {method} failed on {problem['name']} at rtol {rtol:g}: {sol.message}")
    return sol.y[:, -1], sol.nfev, seconds


def solve_neurode(problem: dict, method: str, rtol: float, atol: float) -> tuple[np.ndarray, int, float]:
    options, _ = _options(method, {})
    y0 = torch.tensor(problem["y0"], dtype=F64)
    start = time.perf_counter()
    sol = neurode.solve(problem["f"], y0, torch.tensor([0.0, problem["span"]], dtype=F64), solver=method,
                        rtol=rtol, atol=atol, max_num_steps=500_000, **options)
    seconds = time.perf_counter() - start
    return sol.ys[-1].numpy(), sol.stats.nfe, seconds


def measure(problem: dict, solvers: list[str], tolerances: list[float], log=print) -> list[dict]:
    """One record per (solver, rtol): ``err_tol``, ``relative`` error, ``nfe``, ``seconds``."""
    ratio = problem["atol_ratio"]
    reference, _, _ = solve_scipy(problem, "Radau", REF_RTOL, REF_RTOL * ratio * 1e-2)
    records = []
    for solver in solvers:
        for rtol in tolerances:
            atol = rtol * ratio
            if solver.startswith("scipy "):
                y, nfe, seconds = solve_scipy(problem, solver.split()[1], rtol, atol)
            else:
                y, nfe, seconds = solve_neurode(problem, solver, rtol, atol)
            difference = np.abs(y - reference)
            records.append(dict(problem=problem["name"], solver=solver, rtol=rtol, nfe=int(nfe), seconds=seconds,
                                err_tol=float(np.max(difference / (rtol * np.abs(reference) + atol))),
                                relative=float(np.max(difference / (np.abs(reference) + ratio)))))
            r = records[-1]
            log(f"{problem['name']:20s} {solver:22s} rtol {rtol:.0e}: err/tol {r['err_tol']:8.3g}  "
                f"nfe {nfe:7d}  {seconds:6.2f} s")
    return records


def table(records: list[dict], tolerances: list[float]) -> str:
    """err/tol per problem and solver (rows) and rtol (columns), as markdown."""
    lines = ["| problem | solver | " + " | ".join(f"rtol {r:.0e}" for r in tolerances) + " |",
             "| --- | --- | " + " | ".join("---:" for _ in tolerances) + " |"]
    keys = list(dict.fromkeys((r["problem"], r["solver"]) for r in records))
    for problem, solver in keys:
        by_rtol = {r["rtol"]: r["err_tol"] for r in records if (r["problem"], r["solver"]) == (problem, solver)}
        lines.append(f"| {problem} | {solver} | " + " | ".join(f"{by_rtol[t]:.2g}" for t in tolerances) + " |")
    return "\n".join(lines)


def figure(records: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(dict.fromkeys(r["problem"] for r in records))
    solvers = list(dict.fromkeys(r["solver"] for r in records))
    fig, axes = plt.subplots(2, len(names), figsize=(4.6 * len(names), 8.2), squeeze=False)
    styles = {s: dict(marker="os^vDPX*"[i % 8], linestyle="--" if s.startswith("scipy") else "-")
              for i, s in enumerate(solvers)}
    for column, name in enumerate(names):
        top, bottom = axes[0][column], axes[1][column]
        for solver in solvers:
            rows = sorted((r for r in records if r["problem"] == name and r["solver"] == solver),
                          key=lambda r: -r["rtol"])
            if not rows:
                continue
            top.loglog([r["rtol"] for r in rows], [max(r["err_tol"], 1e-4) for r in rows], label=solver,
                       **styles[solver])
            bottom.loglog([r["nfe"] for r in rows], [max(r["relative"], 1e-16) for r in rows], label=solver,
                          **styles[solver])
        top.axhline(1.0, color="black", linewidth=0.8)
        top.invert_xaxis()
        top.set_title(name)
        top.set_xlabel("rtol (atol in a fixed ratio)")
        top.set_ylabel("final global error / tolerance")
        bottom.set_xlabel("evaluations of f")
        bottom.set_ylabel("final relative error")
        for axis in (top, bottom):
            axis.grid(True, which="major", alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.suptitle("Stiff solvers: tolerance proportionality (top) and work–precision (bottom); "
                 f"reference scipy Radau at rtol {REF_RTOL:g}", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    fig.savefig(partial, dpi=110, format="png")
    plt.close(fig)
    partial.replace(path)  # atomically: never a half-written figure


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--methods", nargs="+", default=list(DEFAULT_METHODS),
                        help=f"neurode solvers (default: {' '.join(DEFAULT_METHODS)}); scipy BDF and Radau always")
    parser.add_argument("--quick", action="store_true", help="three tolerances and shorter spans (about a minute)")
    parser.add_argument("--out", type=Path, default=FIGURE, help=f"the figure (default {FIGURE})")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    unknown = [m for m in args.methods if not _registered(m)]
    if unknown:
        print(f"stiff_work_precision: no solver registered as {', '.join(unknown)}", file=sys.stderr)
        return 1
    solvers = [*args.methods, *(f"scipy {m}" for m in SCIPY_METHODS)]
    tolerances = rtols(args.quick)
    start = time.perf_counter()
    records = []
    for problem in problems(args.quick):
        records += measure(problem, solvers, tolerances, log=lambda line: print(line, file=sys.stderr, flush=True))
    figure(records, args.out)
    print(table(records, tolerances))
    total = time.perf_counter() - start
    print(f"\n(float64, one thread; {math.ceil(total)} s in all; figure: {args.out})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
