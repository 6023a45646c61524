"""What every whole-sequence recurrence with hand-written backpropagation through time shares.

:mod:`~neurode.plugins.models.gru_sequence` (a GRU) and
:mod:`~neurode.plugins.models.elman_sequence` (a tanh RNN) run a recurrent
cell over a padded batch ``x`` ``[batch, steps, in]`` from ``h0`` without
autograd and carry ``c = dL/dh`` backwards through time by hand. Around their
own step rules they share the same bookkeeping, held here once:

- a read may return every state, or with ``last`` (``[batch]``, -1 for none)
  each row's state after its step ``last`` — the end of a row whose inputs are
  padded past that step. :func:`read_ends` finds the steps where some row ends
  (one host read per sequence), :func:`select_final` takes the rows ending at
  a step, and :func:`inject_grad` adds the incoming gradient at the step it
  belongs to on the way back (a row's steps after ``last`` never reached the
  result, so their ``c`` is zero and they add nothing to the weight gradients);
- a backward pass that must itself be differentiable (``create_graph=True``)
  re-runs the steps under autograd and differentiates them
  (:func:`recorded_backward`), so higher derivatives are exact;
- inputs, state and weights must share a dtype (:func:`check_dtypes`);
- the backward pass runs with subnormal numbers flushed to zero
  (:func:`subnormals_flushed`). Carried back through a saturating recurrence,
  ``c`` shrinks geometrically, and after a few dozen steps of a trained
  network it is subnormal (below 1.2e-38 in float32): x86 CPUs then take a
  microcode assist on every operation that touches one: the tanh recognition
  network of the spirals benchmark (forward + backward) took 75 instead of
  21 ms of CPU time. Flushed, such an entry is 0 instead of less than
  1.2e-38: below the rounding of any sum it joins, so gradients are unchanged
  at every normal magnitude (TensorFlow's CPU threads run flushed throughout,
  its ``ScopedFlushDenormal``);
- a backward pass's own whole-sequence work buffer comes from :func:`scratch`,
  kept between calls, not allocated afresh: on the CPU a fresh buffer of
  megabytes is new memory from the operating system (glibc returns large
  freed blocks, and trims its heap, between training steps), and every 4 KiB
  page of it faults on first write. In the tanh recognition network of the
  spirals benchmark (1000 rows, 100 steps, 25 units: a 10 MB buffer) each
  step's write took 115 us into fresh memory and 17 us into a kept buffer
  under the profiler; whole training steps, two identical loops interleaved,
  were 1 to 1.5 ms faster of 80 to 89 ms with the buffer kept.
"""

from __future__ import annotations

import math
import threading
from contextlib import contextmanager
from typing import Callable, Iterator

import torch

#: one step of a cell under autograd: ``step(x_j, h, *weights) -> h'``
Step = Callable[..., torch.Tensor]


_scratch = threading.local()


def scratch(shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
    """An uninitialised buffer of ``shape`` in ``like``'s dtype and device, reused from call to call.

    For a backward pass's own work only: nothing it returns may be (a view of)
    this buffer, and nothing it calls may ask for one again before it is done
    with it (the next call gets the same memory). One buffer per thread, dtype
    and device, grown to the largest size asked for and kept (module
    docstring: why). Off the CPU a fresh tensor: the CUDA caching allocator
    already reuses its blocks, and a kept buffer would need stream bookkeeping.
    """
    if like.device.type != "cpu":
        return torch.empty(shape, dtype=like.dtype, device=like.device)
    buffers = getattr(_scratch, "buffers", None)
    if buffers is None:
        buffers = _scratch.buffers = {}
    n = math.prod(shape)
    key = (like.dtype, like.device)
    buffer = buffers.get(key)
    if buffer is None or buffer.numel() < n:
        buffer = buffers[key] = torch.empty(n, dtype=like.dtype, device=like.device)
    return buffer[:n].view(shape)


def read_ends(last: torch.Tensor | None) -> set[int]:
    """The steps at which some row's read ends (one host read); empty without ``last``."""
    return set() if last is None else set(last.unique().tolist())


def select_final(final: torch.Tensor, h: torch.Tensor, last: torch.Tensor, j: int, ends: set[int]) -> torch.Tensor:
    """``final`` with the rows whose read ends at step ``j`` (``j`` in ``ends``) replaced by ``h``."""
    return h if len(ends) == 1 else torch.where((last == j).unsqueeze(-1), h, final)


def inject_grad(c: torch.Tensor, grad: torch.Tensor, last: torch.Tensor | None, j: int,
                ends: set[int]) -> torch.Tensor:
    """``dL/dh`` after step ``j`` once the output's own gradient ``grad`` at that step is added."""
    if last is None:
        return c + grad[:, j]
    if j in ends:  # rows whose read ends here; c of those rows is zero until now
        return torch.where((last == j).unsqueeze(-1), grad, c)
    return c


def grad_h0(c: torch.Tensor, grad: torch.Tensor, last: torch.Tensor | None) -> torch.Tensor:
    """``dL/dh0`` from ``c`` carried back past the first step; rows without any step returned ``h0`` itself."""
    return c if last is None else torch.where((last < 0).unsqueeze(-1), grad, c)


def stack_states(states: list[torch.Tensor], h0: torch.Tensor) -> torch.Tensor:
    """Every state ``[batch, steps, hidden]`` (``steps`` may be 0)."""
    return torch.stack(states, dim=1) if states else h0.new_zeros(h0.shape[0], 0, h0.shape[-1])


def recorded_backward(ctx, grad: torch.Tensor, step: Step) -> tuple:
    """The backward pass of a sequence whose saved tensors are ``(x, h0, last, *weights)``, re-run under autograd.

    For ``create_graph=True``: the steps are recorded and differentiated, so
    second derivatives are those of the recorded cell.
    """
    x, h0, last, *weights = ctx.saved_tensors
    inputs = (x, h0, last, *weights)
    wanted = [i for i, need in enumerate(ctx.needs_input_grad) if need]
    with torch.enable_grad():
        h, states = h0, []
        for j in range(x.shape[1]):
            h = step(x[:, j], h, *weights)
            states.append(h)
        if last is None:
            output = stack_states(states, h0)
        else:
            every = torch.stack([h0, *states], dim=1)
            output = every.gather(1, (last + 1).view(-1, 1, 1).expand(-1, 1, h0.shape[-1])).squeeze(1)
        found = torch.autograd.grad(output, [inputs[i] for i in wanted], grad, create_graph=True, allow_unused=True)
    grads = [None] * len(inputs)
    for i, g in zip(wanted, found):
        grads[i] = g
    return tuple(grads)


def sequence_backward(ctx, grad: torch.Tensor, step: Step, through_time: Callable[..., tuple]) -> tuple:
    """The backward pass of a whole-sequence cell: :func:`recorded_backward` when it must itself be
    differentiable (``create_graph=True``), else ``through_time(ctx, grad)``, the cell's backpropagation through
    time by hand, with subnormals flushed (:func:`subnormals_flushed`)."""
    if torch.is_grad_enabled():
        return recorded_backward(ctx, grad, step)
    with subnormals_flushed(grad.device):
        return through_time(ctx, grad)


def check_dtypes(name: str, x: torch.Tensor, h0: torch.Tensor, weight: torch.Tensor) -> None:
    """Refuse inputs, state and weights of different dtypes, naming each."""
    if x.dtype != h0.dtype or weight.dtype != h0.dtype:
        raise ValueError(f"{name}: inputs {x.dtype}, state {h0.dtype} and weights {weight.dtype} must share a dtype")


@contextmanager
def subnormals_flushed(device: torch.device) -> Iterator[None]:
    """Run the body with subnormal floats flushed to zero on this thread (CPU only), then restore the setting.

    torch has no getter for the flush mode, so the mode in force is read off
    what a product of a subnormal number gives.
    """
    if device.type != "cpu":
        yield
        return
    was_flushed = float(torch.full((1,), 1e-310, dtype=torch.float64).mul_(1.0)) == 0.0
    if was_flushed or not torch.set_flush_denormal(True):  # already flushed, or a CPU that cannot
        yield
        return
    try:
        yield
    finally:
        torch.set_flush_denormal(False)
