"""Stiff problems: neurode's stiff solvers beside scipy's BDF and Radau (issue 15's acceptance).

Problems (Hairer & Wanner, "Solving Ordinary Differential Equations II", 2nd ed.):

* Robertson's chemical kinetics (§IV.1, §IV.10 "ROBER"), t in [0, 1e5];
* van der Pol, y'' - μ (1 - y²) y' + y = 0 with μ = 1000, y(0) = (2, 0), t in [0, 3000];
* HIRES (§IV.10), 8 components, t in [0, 321.8122];
* the 1-d Brusselator reaction–diffusion (§IV.1, §IV.10 "BRUSS"), α = 1/50, N grid points
  (2N unknowns), t in [0, 10], its state interleaved (u_1, v_1, u_2, v_2, ...) as BRUSS orders it, which makes
  its Jacobian banded with lband = uband = 2: solved with ``linear_solver="krylov", lband=2, uband=2`` (GMRES
  preconditioned by the band, SUNDIALS' CVBANDPRE) by the methods that take that option (the ESDIRK
  methods), and with ``lband=2, uband=2`` by the Rosenbrock methods (the exact band of J factored by block
  cyclic reduction; the table says which); ``--krylov-plain`` adds rows of the unpreconditioned Krylov
  solver.

Every solve runs at rtol 1e-6 (the atol of each problem is in the table) and is compared with a scipy
Radau reference at rtol 1e-10: ``err/tol`` is ``max_i |y_i - ref_i| / (rtol |ref_i| + atol)`` at the final
time, the global error in units of the local tolerance (a modest multiple is usual: local errors accumulate).
Beside neurode's methods, scipy's BDF and Radau at the same tolerances on the same problem (with the
Brusselator's Jacobian sparsity given to them, their best setting). Columns: accepted + rejected steps,
function evaluations, Jacobian evaluations (neurode ``stats.n_jac``, scipy ``njev``), LU factorisations
(``stats.n_lu``, scipy ``nlu``), wall time (one thread, float64, CPU). A second table sorts, per problem,
neurode's solves into those within the tolerance (``err/tol <= 1``) and those over it.

Two ratio rows follow:

* van der Pol μ = 1000: dopri5's steps / the stiff method's steps. dopri5 cannot finish the span in
  reasonable time (its steps are held at its stability limit): its steps over the first ``--dopri-span``
  (a smooth, slow stretch) are scaled to the whole span, a lower bound of what it needs.
* 256 Robertson problems whose rate constants are spread over two decades ([0.1, 10]), read two ways: one
  factor per problem for all three constants (log-spaced over the batch), or each constant its own factor
  (log-uniform, seeded): ``solve(..., per_sample=True)`` (each sample its own step size) against the shared
  loop (one step size for the batch): rows evaluated, ``stats.nfe_rows`` against ``nfe x batch``.

Usage::

    python benchmarks/bench_stiff.py                  # full table (N = 500)
    python benchmarks/bench_stiff.py --quick          # under a couple of minutes (N = 100, shorter spans)
    python benchmarks/bench_stiff.py --write-readme   # write the table into README.md between its markers
    python benchmarks/bench_stiff.py --methods rodas4 kvaerno5
    python benchmarks/bench_stiff.py --problems Brusselator --krylov-plain   # one problem's rows

A method that is not registered (yet) is skipped with a message.
"""

from __future__ import annotations

import argparse
import math
import sys
import time

import numpy as np
import torch
from readme_table import publish

import neurode
from neurode.framework.errors import UnknownComponentError
from neurode.framework.solve import signature_parameters

README_START, README_END = "<!-- stiff-table:start -->", "<!-- stiff-table:end -->"
DEFAULT_METHODS = ("rodas4", "rodas5p", "kvaerno3", "kvaerno4", "kvaerno5", "esdirk547l2sa")  # ros3p: fixed steps only
RTOL, REF_RTOL = 1e-6, 1e-10
F64 = torch.float64


# --------------------------------------------------------------------------- the problems (torch)


def robertson(t, y, k=None):
    k1, k2, k3 = (0.04, 1e4, 3e7) if k is None else k.unbind(-1)
    y1, y2, y3 = y.unbind(-1)
    return torch.stack([-k1 * y1 + k2 * y2 * y3, k1 * y1 - k2 * y2 * y3 - k3 * y2 * y2, k3 * y2 * y2], -1)


def van_der_pol(t, y, mu=1000.0):
    x, v = y.unbind(-1)
    return torch.stack([v, mu * (1 - x * x) * v - x], -1)


def hires(t, y):
    y1, y2, y3, y4, y5, y6, y7, y8 = y.unbind(-1)
    r = 280.0 * y6 * y8
    return torch.stack([
        -1.71 * y1 + 0.43 * y2 + 8.32 * y3 + 0.0007,
        1.71 * y1 - 8.75 * y2,
        -10.03 * y3 + 0.43 * y4 + 0.035 * y5,
        8.32 * y2 + 1.71 * y3 - 1.12 * y4,
        -1.745 * y5 + 0.43 * y6 + 0.43 * y7,
        -r + 0.69 * y4 + 1.71 * y5 - 0.43 * y6 + 0.69 * y7,
        r - 1.81 * y7,
        -r + 1.81 * y7,
    ], -1)


def brusselator(n: int, alpha: float = 1.0 / 50.0):
    """The 1-d Brusselator on n interior points, Dirichlet u = 1, v = 3 at the ends, its state interleaved
    (u_1, v_1, ..., u_n, v_n) as Hairer & Wanner II, §IV.10 (BRUSS) order it: every component then reads only
    components at most 2 places away (u_i: u_i±1, v_i; v_i: v_i±1, u_i), a Jacobian of half-bandwidths 2."""
    c = alpha * (n + 1) ** 2

    def f(t, y):
        uv = y.reshape(*y.shape[:-1], n, 2)
        u, v = uv[..., 0], uv[..., 1]
        u_pad = torch.nn.functional.pad(u, (1, 1), value=1.0)
        v_pad = torch.nn.functional.pad(v, (1, 1), value=3.0)
        lap_u = u_pad[..., :-2] - 2 * u + u_pad[..., 2:]
        lap_v = v_pad[..., :-2] - 2 * v + v_pad[..., 2:]
        uuv = u * u * v
        return torch.stack([1 + uuv - 4 * u + c * lap_u, 3 * u - uuv + c * lap_v], -1).reshape(y.shape)

    x = torch.arange(1, n + 1, dtype=F64) / (n + 1)
    y0 = torch.stack([1 + torch.sin(2 * math.pi * x), torch.full((n,), 3.0, dtype=F64)], -1).reshape(2 * n)
    return f, y0


#: the Brusselator's half-bandwidths in the interleaved order
BRUSSELATOR_BAND = 2


def brusselator_sparsity(n: int):
    """Where the interleaved Brusselator's Jacobian can be non-zero: u_i and v_i couple (offsets ±1 inside a
    pair), each reads its own species at the neighbouring points (offsets ±2)."""
    from scipy.sparse import diags

    pair = np.zeros(2 * n - 1)
    pair[0::2] = 1  # (u_i, v_i) and (v_i, u_i): offset +1 from u_i, -1 from v_i
    return diags([1, pair, 1, pair, 1], [-2, -1, 0, 1, 2], shape=(2 * n, 2 * n)).tocsr()


def problems(quick: bool) -> list[dict]:
    n = 100 if quick else 500
    bruss, bruss_y0 = brusselator(n)
    return [
        dict(name="Robertson", f=robertson, y0=torch.tensor([1.0, 0.0, 0.0], dtype=F64),
             span=1e3 if quick else 1e5, atol=1e-10),
        dict(name="van der Pol μ=1000", f=van_der_pol, y0=torch.tensor([2.0, 0.0], dtype=F64),
             span=300.0 if quick else 3000.0, atol=1e-6),
        dict(name="HIRES", f=hires, y0=torch.tensor([1, 0, 0, 0, 0, 0, 0, 0.0057], dtype=F64), span=321.8122,
             atol=1e-10),
        dict(name=f"Brusselator N={n}", f=bruss, y0=bruss_y0, span=10.0, atol=1e-8,
             krylov=(BRUSSELATOR_BAND, BRUSSELATOR_BAND), sparsity=lambda: brusselator_sparsity(n)),
    ]


# --------------------------------------------------------------------------- running


def _scipy(problem: dict, method: str, rtol: float, atol: float):
    from scipy.integrate import solve_ivp

    f = problem["f"]

    def rhs(t, y):
        return f(None, torch.from_numpy(y)).numpy()

    kwargs = {}
    if "sparsity" in problem:
        kwargs["jac_sparsity"] = problem["sparsity"]()
    start = time.perf_counter()
    sol = solve_ivp(rhs, (0.0, problem["span"]), problem["y0"].numpy(), method=method, rtol=rtol, atol=atol,
                    **kwargs)
    seconds = time.perf_counter() - start
    if not sol.success:
        raise RuntimeError(f"scipy {method} failed on {problem['name']}: {sol.message}")
    return sol.y[:, -1], dict(steps=len(sol.t) - 1, nfe=sol.nfev, n_jac=sol.njev, n_lu=sol.nlu, seconds=seconds)


def _options(method: str, problem: dict, precondition: bool = True) -> tuple[dict, str]:
    """Solver options this method accepts: ``autonomous`` (every problem here is), the Krylov linear solver
    on the Brusselator (band-preconditioned unless ``precondition`` is false); and a note for the table."""
    accepted = {p.name for p in signature_parameters(neurode.get_registry().get("solver", method).obj)}
    options, note = {}, ""
    if "autonomous" in accepted:
        options["autonomous"] = True
    if problem.get("krylov"):
        if "linear_solver" in accepted:
            options["linear_solver"] = "krylov"
            note = "Krylov, no preconditioner"
            if precondition and "lband" in accepted:
                options["lband"], options["uband"] = problem["krylov"]
                note = f"Krylov, band preconditioner (lband = uband = {problem['krylov'][0]})"
        elif "lband" in accepted:  # a Rosenbrock method: the exact band of J, factored by cyclic reduction
            options["lband"], options["uband"] = problem["krylov"]
            note = f"banded LU (lband = uband = {problem['krylov'][0]})"
        else:
            note = "dense LU"
    return options, note


def _neurode(problem: dict, method: str, precondition: bool = True):
    options, note = _options(method, problem, precondition)
    t = torch.tensor([0.0, problem["span"]], dtype=F64)
    start = time.perf_counter()
    sol = neurode.solve(problem["f"], problem["y0"], t, solver=method, rtol=RTOL, atol=problem["atol"],
                        max_num_steps=200_000, **options)
    seconds = time.perf_counter() - start
    s = sol.stats
    return sol.ys[-1].numpy(), dict(steps=s.n_steps, nfe=s.nfe, n_jac=s.n_jac, n_lu=s.n_lu, seconds=seconds,
                                    note=note)


def _scaled_error(y: np.ndarray, ref: np.ndarray, atol: float) -> float:
    return float(np.max(np.abs(y - ref) / (RTOL * np.abs(ref) + atol)))


def _registered(method: str) -> bool:
    try:
        neurode.get_registry().get("solver", method)
    except UnknownComponentError:
        return False
    return True


def comparison(methods: list[str], quick: bool, names: list[str] | None = None,
               krylov_plain: bool = False) -> list[str]:
    lines = ["| problem | solver | err/tol | steps | NFE | Jacobians | LU | wall (s) | note |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    errors: dict[str, list[tuple[str, float]]] = {}
    for problem in problems(quick):
        if names and not any(problem["name"].startswith(name) for name in names):
            continue
        ref, _ = _scipy(problem, "Radau", REF_RTOL, problem["atol"] * 1e-4)
        print(f"{problem['name']}: reference done", file=sys.stderr, flush=True)
        rows = [(f"neurode {m}", lambda m=m: _neurode(problem, m)) for m in methods]
        if krylov_plain and problem.get("krylov"):
            rows += [(f"neurode {m}", lambda m=m: _neurode(problem, m, precondition=False)) for m in methods
                     if {"lband", "linear_solver"} <= {p.name for p in signature_parameters(
                         neurode.get_registry().get("solver", m).obj)}]
        rows += [(f"scipy {m}", lambda m=m: _scipy(problem, m, RTOL, problem["atol"])) for m in ("BDF", "Radau")]
        for label, run in rows:
            y, r = run()
            err = _scaled_error(y, ref, problem["atol"])
            if label.startswith("neurode"):
                linear = ("Krylov + band" if r["note"].startswith("Krylov, band") else
                          "Krylov" if r["note"].startswith("Krylov") else
                          "banded LU" if r["note"].startswith("banded") else "dense LU")
                errors.setdefault(problem["name"], []).append(
                    (f"{label[8:]} ({linear})" if problem.get("krylov") else label[8:], err))
            lines.append(f"| {problem['name']} (atol {problem['atol']:g}) | {label} | {err:.2g} | {r['steps']} | "
                         f"{r['nfe']} | {r['n_jac']} | {r['n_lu']} | {r['seconds']:.2f} | {r.get('note', '')} |")
            print(lines[-1], file=sys.stderr, flush=True)
    return lines + [""] + verdicts(errors)


def verdicts(errors: dict[str, list[tuple[str, float]]]) -> list[str]:
    """Per problem, neurode's solves within the tolerance (``err/tol <= 1``: the final state agrees with the
    reference to the tolerance asked) and those over it, most accurate first."""
    lines = ["| problem | within the tolerance (err/tol <= 1) | over it |", "| --- | --- | --- |"]
    for name, rows in errors.items():
        rows = sorted(rows, key=lambda row: row[1])
        within = ", ".join(f"{label} {err:.2g}" for label, err in rows if err <= 1.0) or "none"
        over = ", ".join(f"{label} {err:.2g}" for label, err in rows if err > 1.0) or "none"
        lines.append(f"| {name} | {within} | {over} |")
    return lines


def dopri_ratio(methods: list[str], quick: bool, dopri_span: float) -> list[str]:
    y0 = torch.tensor([2.0, 0.0], dtype=F64)
    span = 300.0 if quick else 3000.0
    dopri = neurode.solve(van_der_pol, y0, torch.tensor([0.0, dopri_span], dtype=F64), solver="dopri5", rtol=RTOL,
                          atol=1e-6, nstiff=0, max_num_steps=10_000_000)
    estimate = dopri.stats.n_steps * span / dopri_span
    lines = [f"| van der Pol μ=1000 over [0, {span:g}] | dopri5 steps (estimated: {dopri.stats.n_steps} over "
             f"[0, {dopri_span:g}], scaled) | stiff method's steps | ratio |", "| --- | ---: | ---: | ---: |"]
    for method in methods:
        options, _ = _options(method, {})
        sol = neurode.solve(van_der_pol, y0, torch.tensor([0.0, span], dtype=F64), solver=method, rtol=RTOL,
                            atol=1e-6, **options)
        lines.append(f"| {method} | {estimate:.3g} | {sol.stats.n_steps} | {estimate / sol.stats.n_steps:.0f}x |")
    return lines


#: Two readings of "rate constants spread over two decades" (issue 15): one factor in [0.1, 10] for all three
#: constants of a problem (log-spaced over the batch), or each constant its own factor, log-uniform in [0.1, 10]
#: (seeded).
RATE_SPREADS = ("one factor", "independent")


def robertson_rates(batch: int, spread: str) -> torch.Tensor:
    base = torch.tensor([0.04, 1e4, 3e7], dtype=F64)
    if spread == "one factor":
        return base * torch.logspace(-1, 1, batch, dtype=F64)[:, None]
    exponents = torch.rand(batch, 3, dtype=F64, generator=torch.Generator().manual_seed(15)) * 2 - 1
    return base * 10.0**exponents


def per_sample_ratio(methods: list[str], quick: bool, batch: int) -> list[str]:
    span = 1e3 if quick else 1e5
    lines = [f"| {batch} Robertson problems, [0, {span:g}] | rates x [0.1, 10] | joint error norm | rows, per sample "
             "| rows, one step size (nfe x batch) | ratio | wall per sample / joint (s) |",
             "| --- | --- | --- | ---: | ---: | ---: | --- |"]
    for spread in RATE_SPREADS:
        lines += _per_sample_rows(methods, batch, span, spread)
    return lines


def _per_sample_rows(methods: list[str], batch: int, span: float, spread: str) -> list[str]:
    k = robertson_rates(batch, spread)
    y0 = torch.tensor([1.0, 0.0, 0.0], dtype=F64).expand(batch, 3).clone()
    t = torch.tensor([0.0, span], dtype=F64)
    lines = []

    def worst_sample(scaled: torch.Tensor) -> torch.Tensor:
        # every sample within its tolerance, as per-sample stepping guarantees
        return scaled.reshape(batch, -1).square().mean(dim=1).sqrt().max()

    for method in methods:
        options, _ = _options(method, {})
        start = time.perf_counter()
        per = neurode.solve(robertson, y0, t, solver=method, rtol=RTOL, atol=1e-10, per_sample=True, args=k,
                            **options)
        per_seconds = time.perf_counter() - start
        for label, norm in (("max over samples", worst_sample), ("RMS over the batch (torchdiffeq's)", None)):
            start = time.perf_counter()
            joint = neurode.solve(robertson, y0, t, solver=method, rtol=RTOL, atol=1e-10, args=k, norm=norm,
                                  **options)
            joint_seconds = time.perf_counter() - start
            rows_joint = joint.stats.nfe * batch
            lines.append(f"| {method} | {spread} | {label} | {per.stats.nfe_rows} | {rows_joint} | "
                         f"{rows_joint / per.stats.nfe_rows:.1f}x | {per_seconds:.1f} / {joint_seconds:.1f} |")
    return lines


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--methods", nargs="+", default=list(DEFAULT_METHODS),
                        help=f"neurode solvers to run (default: {' '.join(DEFAULT_METHODS)})")
    parser.add_argument("--quick", action="store_true", help="N = 100 and shorter spans: under a couple of minutes")
    parser.add_argument("--batch", type=int, default=None, help="Robertson batch for the per-sample row (256)")
    parser.add_argument("--dopri-span", type=float, default=None, help="span dopri5 runs on van der Pol (30)")
    parser.add_argument("--problems", nargs="+", default=None,
                        help="run only the comparison rows of these problems (names' first words, e.g. "
                             "Brusselator); no ratio rows, and nothing written to the README")
    parser.add_argument("--krylov-plain", action="store_true",
                        help="also run the Krylov solver without its preconditioner on the Brusselator")
    parser.add_argument("--write-readme", action="store_true", help="write the table into README.md")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    methods = []
    for method in args.methods:
        if _registered(method):
            methods.append(method)
        else:
            print(f"skipped {method}: no solver of that name is registered (not merged yet?)", file=sys.stderr)
    if not methods:
        print("no registered method to run", file=sys.stderr)
        return 1
    batch = args.batch or (64 if args.quick else 256)
    dopri_span = args.dopri_span or (3.0 if args.quick else 30.0)
    start = time.perf_counter()
    if args.problems:
        if args.write_readme:
            print("--problems runs part of the table: it is printed, not written to the README", file=sys.stderr)
        print("\n".join(comparison(methods, args.quick, args.problems, args.krylov_plain)))
        print(f"({time.perf_counter() - start:.0f} s)")
        return 0
    blocks = [comparison(methods, args.quick, krylov_plain=args.krylov_plain),
              dopri_ratio(methods, args.quick, dopri_span), per_sample_ratio(methods, args.quick, batch)]
    text = "\n\n".join("\n".join(block) for block in blocks)
    text += (f"\n\n(rtol {RTOL:g}, float64, one thread; reference scipy Radau at rtol {REF_RTOL:g}; "
             f"{'--quick, ' if args.quick else ''}{time.perf_counter() - start:.0f} s in all)")
    publish(text, quick=args.quick, write=args.write_readme, start=README_START, end=README_END)
    return 0


if __name__ == "__main__":
    sys.exit(main())
