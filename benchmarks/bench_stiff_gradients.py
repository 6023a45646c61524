"""Gradients of a stiff solve with an implicit method: cost of ``backsolve``, ``checkpoint`` and ``direct``.

A 2-d linear stiff system (eigenvalues -1 and -1000) plus a neural residual
(an MLP of 354 parameters), solved over [0, 1] by ``radauIIA3`` with fixed
steps of 0.05 (h λ = -50: an explicit method would explode). Prints, per
gradient method: steps, forward and backward NFE, Jacobians and LU
factorisations in the backward pass, wall time, and the gradient's
relative difference from ``direct``.

    OMP_NUM_THREADS=1 python benchmarks/bench_stiff_gradients.py
"""

from __future__ import annotations

import time

import torch

import neurode

F64 = torch.float64


class StiffResidual(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("a", torch.tensor([[-1.0, 0.0], [1.0, -1000.0]], dtype=F64))
        self.net = torch.nn.Sequential(torch.nn.Linear(2, 16), torch.nn.Tanh(), torch.nn.Linear(16, 16),
                                       torch.nn.Tanh(), torch.nn.Linear(16, 2)).to(F64)

    def forward(self, t, y):
        return y @ self.a.T + self.net(y)


def run(adjoint: str, solver: str, func: StiffResidual, y0: torch.Tensor, t: torch.Tensor):
    start = time.perf_counter()
    sol = neurode.solve(func, y0, t, solver=solver, step_size=0.05, adjoint=adjoint, rtol=1e-8, atol=1e-10)
    grads = torch.autograd.grad(sol.ys[-1].square().sum(), (y0, *func.parameters()))
    wall = time.perf_counter() - start
    return sol.stats, torch.cat([g.reshape(-1) for g in grads]), wall


def main() -> None:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    func = StiffResidual()
    n_params = sum(p.numel() for p in func.parameters())
    y0 = torch.tensor([1.0, 0.5], dtype=F64, requires_grad=True)
    t = torch.tensor([0.0, 0.5, 1.0], dtype=F64)
    solver = "radauIIA3"
    print(f"stiff 2-d system + MLP ({n_params} parameters), {solver}, step 0.05 over [0, 1]")
    print("| gradient | steps | NFE fwd | NFE bwd | Jacobians bwd | LU bwd | wall (s) | rel. diff. to direct |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    _, reference, _ = run("direct", solver, func, y0, t)
    for adjoint in ("direct", "checkpoint", "backsolve"):
        stats, grad, wall = run(adjoint, solver, func, y0, t)
        diff = float((grad - reference).norm() / reference.norm())
        print(f"| {adjoint} | {stats.n_steps} | {stats.nfe} | {stats.nfe_backward} | "
              f"{getattr(stats, 'n_jac_backward', '-')} | {getattr(stats, 'n_lu_backward', '-')} | {wall:.3f} | "
              f"{diff:.1e} |")


if __name__ == "__main__":
    main()
