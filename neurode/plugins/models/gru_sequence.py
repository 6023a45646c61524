"""A GRU run over a whole sequence at once, with backpropagation through time written out by hand.

The recurrence of ``torch.nn.GRUCell`` (Cho et al., 2014, with PyTorch's
placement of the reset gate), for a step with input projection
``g = W_ih x + b_ih`` and hidden projection ``a = W_hh h + b_hh``, each split
into the reset, update and new-gate thirds ``(r, z, n)``::

    r = sigmoid(g_r + a_r),   z = sigmoid(g_z + a_z),   n = tanh(g_n + r * a_n)
    h' = (h - n) * z + n

Stepping ``GRUCell`` in a Python loop under autograd records some twenty
nodes per step on tensors of a few thousand numbers, and autograd's backward
of each node allocates its own gradients: on a CPU the cost is dispatch and
memory traffic, not arithmetic. Here the forward pass runs without autograd
and keeps, per step, the state and the gates; the backward pass carries only
``c = dL/dh'`` backwards through time and accumulates the weight gradients
as it goes (backpropagation through time, Werbos 1990)::

    dL/dg_n         = c * (1 - z) * (1 - n^2)
    dL/d(g_r + a_r) = dL/dg_n * a_n * r (1 - r)
    dL/d(g_z + a_z) = c * (h - n) * z (1 - z)
    dL/da_n         = dL/dg_n * r
    dL/dh           = c * z + W_hh^T dL/da

The forward values are computed by the operations ``GRUCell`` uses, in its
order, so :meth:`GapGRUCell.observe_sequence
<neurode.plugins.models.recurrent_cells.GapGRUCell.observe_sequence>` agrees
with the step-by-step scan to rounding. A backward pass that must itself be
differentiable (``create_graph=True``: gradient penalties, Hessian-vector
products) re-runs the steps under autograd and differentiates them, so higher
derivatives are exact too, at the step-by-step cost. Forward-mode AD is not
implemented: asked for, autograd raises. The bookkeeping around the step rule
(rows ending at their own step, the recorded backward) is
:mod:`~neurode.plugins.models.recurrent_sequence`, shared with the tanh RNN.
"""

from __future__ import annotations

import torch

from neurode.plugins.models.recurrent_sequence import (
    check_dtypes,
    grad_h0,
    inject_grad,
    read_ends,
    select_final,
    sequence_backward,
    stack_states,
)


def _gates(x_j, h, weight_ih, weight_hh, bias_ih, bias_hh, hidden):
    """One step's ``(h', r and z, n, a_n)``, by ``GRUCell``'s own operations in its order."""
    g = torch.addmm(bias_ih, x_j, weight_ih.t())
    a = torch.addmm(bias_hh, h, weight_hh.t())
    rz = torch.add(g[:, : 2 * hidden], a[:, : 2 * hidden]).sigmoid_()
    a_n = a[:, 2 * hidden:]
    n = torch.addcmul(g[:, 2 * hidden:], rz[:, :hidden], a_n).tanh_()
    return (h - n).mul_(rz[:, hidden:]).add_(n), rz, n, a_n


class _GRUSequence(torch.autograd.Function):
    """Inputs ``x`` ``[batch, steps, in]``; returns every state ``[batch, steps, hidden]``, or with ``last``
    (``[batch]``, -1 for none) each row's state after its step ``last`` (``h0`` where -1)."""

    @staticmethod
    def forward(ctx, x, h0, last, weight_ih, weight_hh, bias_ih, bias_hh):
        hidden = h0.shape[-1]
        weights = (weight_ih, weight_hh, bias_ih, bias_hh)
        ends = read_ends(last)  # rows whose read ends at each step: the others need no selection there
        h, states, gates = h0, [], []
        final = h0 if last is not None else None
        keep = any(ctx.needs_input_grad)  # nothing to keep for a backward pass that will not come
        for j in range(x.shape[1]):
            h, rz, n, a_n = _gates(x[:, j], h, *weights, hidden)
            if keep or last is None:
                states.append(h)
            if keep:
                # r and z, n, and a_n (copied out of a, so that a's other two thirds are freed). What a step
                # keeps is fresh memory, and writing it costs more than the arithmetic: forming the backward's
                # coefficients here instead (five blocks per step) measured slower overall
                gates.append((rz, n, a_n.contiguous()))
            if j in ends:
                final = select_final(final, h, last, j, ends)
        ctx.save_for_backward(x, h0, last, *weights)
        ctx.states, ctx.gates, ctx.ends = states, gates, ends
        return final if last is not None else stack_states(states, h0)

    @staticmethod
    def backward(ctx, grad):
        return sequence_backward(ctx, grad, _step, _backward_through_time)


def _backward_through_time(ctx, grad):
    """The gradients of ``forward``'s inputs, by backpropagation through time (module docstring)."""
    x, h0, last, weight_ih, weight_hh, bias_ih, bias_hh = ctx.saved_tensors
    states, gates, ends = ctx.states, ctx.gates, ctx.ends
    hidden = h0.shape[-1]
    grad_weight_ih, grad_weight_hh = torch.zeros_like(weight_ih), torch.zeros_like(weight_hh)
    grad_bias_ih, grad_bias_hh = torch.zeros_like(bias_ih), torch.zeros_like(bias_hh)
    grad_x = [] if ctx.needs_input_grad[0] else None
    c = torch.zeros_like(h0)  # dL/dh after the step, carried backwards in time
    for j in range(len(states) - 1, -1, -1):
        c = inject_grad(c, grad, last, j, ends)
        h_prev = states[j - 1] if j else h0
        rz, n, a_n = gates[j]
        r, z = rz[:, :hidden], rz[:, hidden:]
        d_n = c * (1 - z) * (1 - n * n)  # dL/dg_n
        d_rz = torch.cat([d_n * a_n, c * (h_prev - n)], dim=-1).mul_(rz * (1 - rz))
        d_a = torch.cat([d_rz, d_n * r], dim=-1)  # dL/d(W_hh h + b_hh)
        d_g = torch.cat([d_rz, d_n], dim=-1)  # dL/d(W_ih x + b_ih)
        grad_weight_hh.addmm_(d_a.t(), h_prev)
        grad_bias_hh += d_a.sum(0)
        grad_weight_ih.addmm_(d_g.t(), x[:, j])
        grad_bias_ih += d_g.sum(0)
        if grad_x is not None:
            grad_x.append(d_g @ weight_ih)
        c = torch.addmm(c * z, d_a, weight_hh)
    if grad_x is not None:
        grad_x = torch.stack(grad_x[::-1], dim=1)
    return grad_x, grad_h0(c, grad, last), None, grad_weight_ih, grad_weight_hh, grad_bias_ih, grad_bias_hh


def _step(x_j, h, weight_ih, weight_hh, bias_ih, bias_hh):
    """One GRU step under autograd, for the recorded backward pass."""
    return _gates(x_j, h, weight_ih, weight_hh, bias_ih, bias_hh, h.shape[-1])[0]


def gru_sequence(cell: torch.nn.GRUCell, x: torch.Tensor, h0: torch.Tensor,
                 last: torch.Tensor | None = None) -> torch.Tensor:
    """``cell`` stepped over ``x`` ``[batch, steps, in]`` from ``h0`` ``[batch, hidden]``.

    Returns every state ``[batch, steps, hidden]``; with ``last`` (``[batch]``
    integers, -1 for none), each row's state after its step ``last`` instead
    (``[batch, hidden]``; ``h0`` where ``last`` is -1) — the end of a row whose
    inputs are padded past that step. Exactly what stepping ``cell`` gives, to
    rounding, with ``cell``'s own parameters, so gradients reach them as they would.
    """
    if cell.bias_ih is None:
        raise ValueError("gru_sequence needs a GRUCell with biases")
    check_dtypes("gru_sequence", x, h0, cell.weight_hh)
    return _GRUSequence.apply(x, h0, last, cell.weight_ih, cell.weight_hh, cell.bias_ih, cell.bias_hh)
