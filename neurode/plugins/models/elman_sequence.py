"""A tanh RNN (Elman, 1990) run over a whole sequence at once, with backpropagation through time written out by hand.

The recurrence of ``torch.nn.RNNCell(nonlinearity="tanh")`` — the
recognition network of Chen et al. (2018, sec. 5; torchdiffeq's
``examples/latent_ode.py``, ``RecognitionRNN``: ``h' = tanh(W [x, h] + b)``)::

    h_j = tanh(W_ih x_j + b_ih + W_hh h_{j-1} + b_hh)

Only ``W_hh h`` depends on the previous step, so the input projection of
every step is one matrix product before the loop, and each step is one
``addmm`` and one ``tanh`` written in place into that projection, which
becomes the states (time-major, so each step reads and writes one contiguous
block). No autograd graph is recorded. Backwards, with ``c = dL/dh_j`` and
``d_j = c * (1 - h_j^2)`` (backpropagation through time, Werbos 1990)::

    dL/dh_{j-1} = W_hh^T d_j        (with d_j, the only work inside the loop)
    dL/dW_hh = sum_j d_j h_{j-1}^T,  dL/dW_ih = sum_j d_j x_j^T,  dL/db = sum_j d_j,  dL/dx_j = W_ih^T d_j

and the sums over steps are each one matrix product after the loop.

A backward pass that must itself be differentiable (``create_graph=True``)
re-runs the steps under autograd (:func:`~neurode.plugins.models.
recurrent_sequence.recorded_backward`), so higher derivatives are exact.
Rows that end at their own step (``last``) share the bookkeeping of
:mod:`~neurode.plugins.models.recurrent_sequence` with the GRU of
:mod:`~neurode.plugins.models.gru_sequence`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from neurode.plugins.models.recurrent_sequence import (
    check_dtypes,
    grad_h0,
    inject_grad,
    read_ends,
    scratch,
    select_final,
    sequence_backward,
)


class _ElmanSequence(torch.autograd.Function):
    """Inputs ``x`` ``[batch, steps, in]``; returns every state ``[batch, steps, hidden]``, or with ``last``
    (``[batch]``, -1 for none) each row's state after its step ``last`` (``h0`` where -1)."""

    @staticmethod
    def forward(ctx, x, h0, last, weight_ih, weight_hh, bias_ih, bias_hh):
        batch, steps, inputs = x.shape
        ends = read_ends(last)
        x_steps = x.transpose(0, 1).reshape(steps * batch, inputs)  # time-major
        # every step's input projection in one product, both biases folded in; overwritten by the states below
        states = torch.addmm(bias_ih + bias_hh, x_steps, weight_ih.t()).view(steps, batch, h0.shape[-1])
        h, final = h0, h0
        for j in range(steps):
            h = states[j].addmm_(h, weight_hh.t()).tanh_()
            if j in ends:
                final = select_final(final, h, last, j, ends)
        ctx.save_for_backward(x, h0, last, weight_ih, weight_hh, bias_ih, bias_hh)
        ctx.x_steps, ctx.states, ctx.ends = x_steps, states, ends
        # copies: what the caller holds must not alias the states the backward pass reads
        return final.clone() if last is not None else states.transpose(0, 1).contiguous()

    @staticmethod
    def backward(ctx, grad):
        return sequence_backward(ctx, grad, _step, _backward_through_time)


def _backward_through_time(ctx, grad):
    """The gradients of ``forward``'s inputs, by backpropagation through time (module docstring)."""
    x, h0, last, weight_ih, weight_hh, bias_ih, bias_hh = ctx.saved_tensors
    states, ends = ctx.states, ctx.ends
    steps, batch, hidden = states.shape
    inputs = x.shape[-1]
    # d_j = dL/d(pre-activation of step j), kept for the products after the loop; every d_j is written before it
    # is read, and none of the gradients returned is a view of d
    d = scratch(states.shape, states)
    c = torch.zeros_like(h0)  # dL/dh after the step, carried backwards in time
    for j in range(steps - 1, -1, -1):
        c = inject_grad(c, grad, last, j, ends)
        # c * (1 - h_j^2) in one kernel, written into d_j (a whole-sequence 1 - h^2 first measured slower: it
        # allocates and streams all the states once more)
        c = torch.ops.aten.tanh_backward.grad_input(c, states[j], grad_input=d[j]) @ weight_hh
    d_rows = d.view(steps * batch, hidden)
    # sum_j d_j h_{j-1}^T without stacking [h0, h_0, ...]: the steps after the first, then the first
    grad_weight_hh = d_rows[batch:].t() @ states[:-1].reshape(-1, hidden)
    if steps:
        grad_weight_hh.addmm_(d[0].t(), h0)
    # a matrix-vector product with ones: a third of the time of d_rows.sum(0), which reduces across the rows
    grad_bias = torch.mv(d_rows.t(), d_rows.new_ones(steps * batch))
    grad_x = None
    if ctx.needs_input_grad[0]:
        grad_x = (d_rows @ weight_ih).view(steps, batch, inputs).transpose(0, 1)
    return (grad_x, grad_h0(c, grad, last), None, d_rows.t() @ ctx.x_steps, grad_weight_hh,
            grad_bias, grad_bias.clone())


def _step(x_j, h, weight_ih, weight_hh, bias_ih, bias_hh):
    """One step under autograd, for the recorded backward pass."""
    return torch.tanh(F.linear(x_j, weight_ih, bias_ih) + F.linear(h, weight_hh, bias_hh))


def elman_sequence(cell: torch.nn.RNNCell, x: torch.Tensor, h0: torch.Tensor,
                   last: torch.Tensor | None = None) -> torch.Tensor:
    """``cell`` (a tanh ``RNNCell`` with biases) stepped over ``x`` ``[batch, steps, in]`` from ``h0``.

    Returns every state ``[batch, steps, hidden]``; with ``last`` (``[batch]``
    integers, -1 for none), each row's state after its step ``last`` instead
    (``[batch, hidden]``; ``h0`` where ``last`` is -1). What stepping ``cell``
    gives, to rounding, with ``cell``'s own parameters, so gradients reach them as they would.
    """
    if cell.nonlinearity != "tanh" or cell.bias_ih is None:
        raise ValueError(f"elman_sequence needs an RNNCell with tanh and biases, got nonlinearity "
                         f"{cell.nonlinearity!r} and bias={cell.bias_ih is not None}")
    check_dtypes("elman_sequence", x, h0, cell.weight_hh)
    return _ElmanSequence.apply(x, h0, last, cell.weight_ih, cell.weight_hh, cell.bias_ih, cell.bias_hh)
