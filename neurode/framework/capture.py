"""Which tensors a vector field reads that need gradients — found by watching it run.

Gradient methods that evaluate ``f`` outside the user's autograd graph (the
checkpointed adjoint recomputes steps in the backward pass; the continuous
adjoint differentiates ``f`` along a second solve) must be told every tensor
whose gradient is wanted: an ``autograd.Function`` returns gradients only to
its declared inputs. ``func.parameters()`` is not enough: a closure
``lambda t, y: net(y)`` has no parameters, a module may read a tensor it does
not own, and ``args`` may carry tensors that require gradients. Declaring too
few inputs gives *no* gradient where there should be one, silently.

:class:`TensorCapture` is a ``TorchFunctionMode`` that sees every torch
operation ``f`` performs and records the tensors among its operands that
require gradients. Under ``torch.no_grad()`` (how these methods run their
forward solve) everything ``f`` computes itself has ``requires_grad=False``
— except views, which keep it, and are recorded as their base — so what is
recorded is exactly what ``f`` reads from outside: parameters,
captured tensors (leaf or not), ``args``. Used around each call of ``f``
only, it costs a few microseconds per evaluation. A ``torch.compile``'d ``f``
is not watched (it would be compiled again under the mode): its original
callable is probed once, at the start.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch.overrides import TorchFunctionMode


class TensorCapture(TorchFunctionMode):
    """Records the operands that require gradients of the torch operations run inside it."""

    def __init__(self) -> None:
        super().__init__()
        self._found: dict[int, torch.Tensor] = {}

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        for value in (*args, *kwargs.values()):
            if isinstance(value, torch.Tensor):
                if value.requires_grad:
                    self._record(value)
            elif isinstance(value, (list, tuple)):  # torch.cat([...]), torch.stack(...)
                for item in value:
                    if isinstance(item, torch.Tensor) and item.requires_grad:
                        self._record(item)
        return func(*args, **kwargs)

    def _record(self, tensor: torch.Tensor) -> None:
        # a view taken under no_grad (``self.weight.T``) still requires grad: what f reads is its base
        if tensor._is_view() and tensor._base is not None and tensor._base.requires_grad:
            tensor = tensor._base
        self._found.setdefault(id(tensor), tensor)

    @property
    def tensors(self) -> tuple[torch.Tensor, ...]:
        """The recorded tensors, in the order they were first read."""
        return tuple(self._found.values())


def uncompiled(func):
    """The callable ``torch.compile`` wrapped, or ``None`` if ``func`` is not a compiled function or module.

    A compiled ``f`` must not run under :class:`TensorCapture`: a new torch
    function mode on the stack makes dynamo compile ``f`` again. Its original
    is probed instead.
    """
    original = getattr(func, "_orig_mod", None) or getattr(func, "_torchdynamo_orig_callable", None)
    return original if callable(original) else None


def tensors_requiring_grad(value) -> list[torch.Tensor]:
    """The tensors that require gradients in ``value`` (a tensor, or nested tuples/lists/dicts of them)."""
    if isinstance(value, torch.Tensor):
        return [value] if value.requires_grad else []
    if isinstance(value, (list, tuple)):
        return [t for item in value for t in tensors_requiring_grad(item)]
    if isinstance(value, dict):
        return [t for item in value.values() for t in tensors_requiring_grad(item)]
    return []


def unique_tensors(*groups: Iterable[torch.Tensor]) -> tuple[torch.Tensor, ...]:
    """The tensors of ``groups`` in order, each once (by identity)."""
    seen: dict[int, torch.Tensor] = {}
    for group in groups:
        for tensor in group:
            seen.setdefault(id(tensor), tensor)
    return tuple(seen.values())
