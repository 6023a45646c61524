"""The user's ``f(t, y)`` as the integration loop calls it.

The loop keeps time as Python floats (float64, and free of device syncs);
the user's function receives ``t`` as a 0-d tensor of the state's dtype on
the state's device, as with torchdiffeq. Tuple states are flattened into one
vector here and nowhere else, and every evaluation is counted.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from neurode.framework.errors import InvalidInputError, InvalidTypeError, SolverError
from neurode.framework.explicit_rk import prev_time
from neurode.framework.solver import PERTURB_PREV


def flatten_state(y: torch.Tensor | Sequence[torch.Tensor]) -> tuple[torch.Tensor, list[torch.Size] | None]:
    """One tensor from a tensor or a tuple of tensors (concatenated, flattened)."""
    if isinstance(y, torch.Tensor):
        return y, None
    if not isinstance(y, tuple) or not y or not all(isinstance(v, torch.Tensor) for v in y):
        raise InvalidTypeError(f"y0 must be a Tensor or a non-empty tuple of Tensors, got {_describe(y)}")
    # one flat vector has one dtype and device: promoting a part (float32 -> float64, int -> float) would hand
    # back a state of another dtype than the one given, silently; the parts must agree
    for i, v in enumerate(y[1:], start=1):
        if v.dtype != y[0].dtype or v.device != y[0].device:
            raise InvalidInputError(
                f"every part of a tuple state must have one dtype and device: part 0 is {y[0].dtype} on "
                f"{y[0].device}, part {i} is {v.dtype} on {v.device}; convert them to one dtype")
    shapes = [v.shape for v in y]
    return torch.cat([v.reshape(-1) for v in y]), shapes


def _describe(value) -> str:
    if isinstance(value, (tuple, list)):
        return f"{type(value).__name__} of ({', '.join(type(v).__name__ for v in value[:8])})"
    return type(value).__name__


def unflatten_state(
    y: torch.Tensor, shapes: Sequence[torch.Size], lead: tuple[int, ...] = ()
) -> tuple[torch.Tensor, ...]:
    """The tuple back from :func:`flatten_state`; ``lead`` are leading dims (e.g. time)."""
    out, offset = [], 0
    for shape in shapes:
        n = shape.numel()
        out.append(y[..., offset : offset + n].view((*lead, *shape)))
        offset += n
    return tuple(out)


class VectorField:
    """``f(t, y, perturb)`` with float ``t``, counting evaluations in ``nfe``.

    Implicit and linearly implicit solvers also count here the Jacobians they form (``n_jac``) and the
    matrices they factor (``n_lu``, one per batched factorisation call); the loop adds all three to the
    solve's :class:`SolveStats` with :meth:`tally`.
    """

    __slots__ = ("func", "shapes", "dtype", "device", "nfe", "n_jac", "n_lu", "time_dtype", "direction", "args",
                 "capture", "float_time")

    def __init__(self, func: Callable, y0: torch.Tensor, shapes: Sequence[torch.Size] | None = None,
                 args=None, capture=None, *, float_time: bool = False) -> None:
        self.func = func
        # hand ``func`` the loop's Python float ``t`` instead of a 0-d tensor: for neurode's own fields that index
        # stored trajectories by time (the interpolated adjoint), which would otherwise read the tensor back
        # with ``float(t)`` at every evaluation — a device-to-host sync on CUDA
        self.float_time = float_time
        # a TensorCapture (capture.py) to enter around every evaluation, recording what f reads, or None
        self.capture = capture
        # extra arguments, passed as func(t, y, args) when given (diffrax's ``args``); in the
        # batch-parallel loop, tensors in args are sliced to the active samples with the state
        self.args = args
        self.shapes = shapes
        self.dtype = y0.dtype
        self.device = y0.device
        self.time_dtype = y0.real.dtype if y0.is_complex() else y0.dtype
        self.nfe = self.n_jac = self.n_lu = 0
        # +1 or -1: the loop sets the direction of integration, so that "just after t" (PERTURB_NEXT)
        # and "just before t" (PERTURB_PREV) follow the direction of time, as in torchdiffeq.
        self.direction = 1.0

    def counts(self) -> tuple[int, int, int]:
        """``(nfe, n_jac, n_lu)`` now: a mark for :meth:`tally`."""
        return self.nfe, self.n_jac, self.n_lu

    def tally(self, stats, since: tuple[int, int, int]) -> None:
        """Add the evaluations, Jacobians and factorisations made since the mark ``since`` to ``stats``."""
        stats.nfe += self.nfe - since[0]
        stats.n_jac += self.n_jac - since[1]
        stats.n_lu += self.n_lu - since[2]

    def time(self, t: float) -> torch.Tensor:
        try:
            return torch.scalar_tensor(t, dtype=self.time_dtype, device=self.device)
        except RuntimeError:  # "value cannot be converted to type float without overflow"
            raise SolverError(
                f"the solve reached t={t:.6g}, beyond the range of {self.time_dtype} (the state's dtype, in which f "
                "receives t); with an event that never happens, bound the search with t_max=...", t=t) from None

    def __call__(self, t: float | torch.Tensor, y: torch.Tensor, perturb: int = 0) -> torch.Tensor:
        version = _version(y)  # read outside the capture: the loop looking at y is not f reading it
        if self.capture is not None:
            with self.capture:
                out = self._evaluate(t, y, perturb)
        else:
            out = self._evaluate(t, y, perturb)
        _check_unchanged(y, version)
        return out

    def _evaluate(self, t: float | torch.Tensor, y: torch.Tensor, perturb: int) -> torch.Tensor:
        self.nfe += 1
        if isinstance(t, torch.Tensor):
            tt = t if t.dtype == self.time_dtype else t.to(self.time_dtype)
        else:
            if perturb:
                toward_lower = (perturb == PERTURB_PREV) == (self.direction > 0)
                t = prev_time(t, self.time_dtype) if toward_lower else -prev_time(-t, self.time_dtype)
            tt = t if self.float_time else self.time(t)
        if self.shapes is None:
            out = self.func(tt, y) if self.args is None else self.func(tt, y, self.args)
            if not isinstance(out, torch.Tensor):
                raise InvalidTypeError(f"the vector field must return a Tensor, got {type(out).__name__}")
            if out.shape != y.shape:
                raise InvalidInputError(
                    f"the vector field returned shape {tuple(out.shape)} for a state of shape {tuple(y.shape)}; "
                    "dy/dt must have the state's shape"
                )
            if out.dtype != y.dtype:
                raise InvalidInputError(_dtype_message(out.dtype, y.dtype, ""))
            return out
        y_parts = unflatten_state(y, self.shapes)
        out = self.func(tt, y_parts) if self.args is None else self.func(tt, y_parts, self.args)
        if not isinstance(out, (tuple, list)) or len(out) != len(self.shapes):
            raise InvalidTypeError(
                f"for a tuple state of {len(self.shapes)} tensors the vector field must return a tuple of "
                f"{len(self.shapes)} tensors, got {_describe(out)}"
            )
        for i, (o, shape) in enumerate(zip(out, self.shapes)):
            if not isinstance(o, torch.Tensor):
                raise InvalidTypeError(
                    f"the vector field returned {type(o).__name__} for part {i} of the tuple state; every part of "
                    f"dy/dt must be a Tensor of shape {tuple(shape)}")
            if o.numel() != shape.numel():  # same size, other shape: accepted and flattened, as by torchdiffeq
                raise InvalidInputError(
                    f"the vector field returned shape {tuple(o.shape)} for part {i} of the tuple state, whose "
                    f"shape is {tuple(shape)}; dy/dt must have the state's shape"
                )
            if o.dtype != y.dtype:
                raise InvalidInputError(_dtype_message(o.dtype, y.dtype, f" for part {i} of the tuple state"))
        return torch.cat([o.reshape(-1) for o in out])


def _dtype_message(got: torch.dtype, expected: torch.dtype, where: str) -> str:
    # promoting the state to the field's dtype would hand back ys of another dtype (or complex) than y0's
    return (f"the vector field returned dtype {got}{where}, but the state is {expected}; dy/dt must have the "
            f"state's dtype (cast y0, or the field's output, so that they agree)")


def _version(y: torch.Tensor) -> int | None:
    """The state's version counter (bumped by every in-place operation on it or a view of it)."""
    try:
        return y._version
    except RuntimeError:  # an inference-mode tensor has no version counter
        return None


def _check_unchanged(y: torch.Tensor, version: int | None) -> None:
    # the state handed to f is the solver's: f modifying it in place changes the solution silently
    if version is not None and y._version != version:
        raise InvalidInputError(
            "the vector field modified its input state y in place (e.g. y[0] = ..., y.mul_(...)); f(t, y) must "
            "return dy/dt without changing y: compute on a copy (y = y.clone()) or use out-of-place operations")


def slice_args(args, index: torch.Tensor):
    """``args`` restricted to the samples ``index``: tensors are indexed along their first dimension."""
    if args is None:
        return None
    if isinstance(args, torch.Tensor):
        return args[index]
    if isinstance(args, (tuple, list)):
        return type(args)(slice_args(a, index) for a in args)
    if isinstance(args, dict):
        return {k: slice_args(v, index) for k, v in args.items()}
    return args
