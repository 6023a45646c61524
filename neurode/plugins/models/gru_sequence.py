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
implemented: asked for, autograd raises.
"""

from __future__ import annotations

import torch


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
        # rows whose read ends at each step (one host read): the others need no selection there
        ends = set() if last is None else set(last.unique().tolist())
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
                final = h if len(ends) == 1 else torch.where((last == j).unsqueeze(-1), h, final)
        ctx.save_for_backward(x, h0, last, *weights)
        ctx.states, ctx.gates, ctx.ends = states, gates, ends
        if last is not None:
            return final
        return torch.stack(states, dim=1) if states else h0.new_zeros(h0.shape[0], 0, hidden)

    @staticmethod
    def backward(ctx, grad):
        if torch.is_grad_enabled():
            return _recorded_backward(ctx, grad)
        x, h0, last, weight_ih, weight_hh, bias_ih, bias_hh = ctx.saved_tensors
        states, gates, ends = ctx.states, ctx.gates, ctx.ends
        hidden = h0.shape[-1]
        grad_weight_ih, grad_weight_hh = torch.zeros_like(weight_ih), torch.zeros_like(weight_hh)
        grad_bias_ih, grad_bias_hh = torch.zeros_like(bias_ih), torch.zeros_like(bias_hh)
        grad_x = [] if ctx.needs_input_grad[0] else None
        c = torch.zeros_like(h0)  # dL/dh after the step, carried backwards in time
        for j in range(len(states) - 1, -1, -1):
            if last is None:
                c = c + grad[:, j]
            elif j in ends:  # rows whose read ends here; the steps after it never reached their result
                c = torch.where((last == j).unsqueeze(-1), grad, c)
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
        if last is not None:
            c = torch.where((last < 0).unsqueeze(-1), grad, c)
        if grad_x is not None:
            grad_x = torch.stack(grad_x[::-1], dim=1)
        return grad_x, c, None, grad_weight_ih, grad_weight_hh, grad_bias_ih, grad_bias_hh


def _recorded_backward(ctx, grad):
    """The backward pass when it must itself be differentiable (``create_graph=True``): the forward pass is
    re-run under autograd and differentiated, so that second derivatives are those of the recorded steps."""
    x, h0, last, *weights = ctx.saved_tensors
    inputs = (x, h0, last, *weights)
    wanted = [i for i, need in enumerate(ctx.needs_input_grad) if need]
    with torch.enable_grad():
        h, states = h0, []
        for j in range(x.shape[1]):
            h = _gates(x[:, j], h, *weights, h0.shape[-1])[0]
            states.append(h)
        if last is None:
            output = torch.stack(states, dim=1) if states else h0.new_zeros(h0.shape[0], 0, h0.shape[-1])
        else:
            every = torch.stack([h0, *states], dim=1)
            output = every.gather(1, (last + 1).view(-1, 1, 1).expand(-1, 1, h0.shape[-1])).squeeze(1)
        found = torch.autograd.grad(output, [inputs[i] for i in wanted], grad, create_graph=True, allow_unused=True)
    grads = [None] * len(inputs)
    for i, g in zip(wanted, found):
        grads[i] = g
    return tuple(grads)


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
    dtype = h0.dtype
    if x.dtype != dtype or cell.weight_hh.dtype != dtype:
        raise ValueError(f"gru_sequence: inputs {x.dtype}, state {dtype} and weights {cell.weight_hh.dtype} "
                         "must share a dtype")
    return _GRUSequence.apply(x, h0, last, cell.weight_ih, cell.weight_hh, cell.bias_ih, cell.bias_hh)
