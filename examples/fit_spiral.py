"""Fit a neural ODE to the linear spiral of Chen et al. (2018), with any gradient method.

The true dynamics are dz/dt = [[-0.1, -1], [1, -0.1]] z; an MLP learns them
from one trajectory. Shows the drop-in torchdiffeq API (``neurode.odeint``)
and the richer ``neurode.solve`` with its statistics.

    python examples/fit_spiral.py --adjoint checkpoint --iters 200

Threads: a 2-50-2 MLP on a batch of 16 is far too small to share between
threads, and on a machine whose cores are busy extra threads only wait for
each other (this script took 283 s with torch's default of one thread per
core on a loaded 2-core machine, 9 s with one). So it uses ``--threads``
(default 1), never more than the cores this process may run on.
"""

from __future__ import annotations

import argparse
import os

import torch

import neurode

TRUE_A = torch.tensor([[-0.1, -1.0], [1.0, -0.1]])


class ODEFunc(torch.nn.Module):
    def __init__(self, width: int = 50) -> None:
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(2, width), torch.nn.Tanh(), torch.nn.Linear(width, 2))

    def forward(self, t, y):
        return self.net(y)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--adjoint", default="direct", help="direct, backsolve or checkpoint")
    parser.add_argument("--solver", default="dopri5")
    parser.add_argument("--iters", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads (capped at the usable cores)")
    args = parser.parse_args()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    torch.set_num_threads(max(1, min(args.threads, cores)))
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()} of {cores} usable cores")
    torch.manual_seed(args.seed)

    t = torch.linspace(0.0, 10.0, 100)
    y0 = torch.tensor([2.0, 0.0])
    with torch.no_grad():
        target = neurode.odeint(lambda t_, y: y @ TRUE_A.T, y0, t, method="dopri5")

    func = ODEFunc()
    optimizer = torch.optim.Adam(func.parameters(), lr=1e-2)
    for it in range(1, args.iters + 1):
        optimizer.zero_grad()
        batch = torch.randint(0, len(t) - 10, (16,))
        starts = target[batch]
        span = t[:10]
        sol = neurode.solve(func, starts, span, solver=args.solver, adjoint=args.adjoint, rtol=1e-5, atol=1e-6)
        pred = sol.ys.transpose(0, 1)  # (batch, time, 2)
        truth = torch.stack([target[b : b + 10] for b in batch.tolist()])
        loss = (pred - truth).abs().mean()
        loss.backward()
        optimizer.step()
        if it % 50 == 0 or it == 1:
            s = sol.stats
            print(f"iter {it:4d}  loss {loss.item():.5f}  nfe fwd {s.nfe:4d}  bwd {s.nfe_backward:4d}  "
                  f"steps {s.n_accepted}+{s.n_rejected} rejected")
    with torch.no_grad():
        full = neurode.odeint(func, y0, t, method=args.solver, rtol=1e-5, atol=1e-6)
        print(f"full-trajectory mean abs error: {(full - target).abs().mean().item():.5f}")


if __name__ == "__main__":
    main()
