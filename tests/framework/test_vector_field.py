"""The vector field as the loop calls it: time perturbation follows the direction of time; tuple states."""

import torch

import neurode
from neurode.framework.solver import PERTURB_NEXT, PERTURB_PREV
from neurode.framework.vector_field import VectorField

F64 = torch.float64


def _seen_times(direction):
    seen = []
    vf = VectorField(lambda t, y: (seen.append(float(t)), y)[1], torch.zeros(1, dtype=F64))
    vf.direction = direction
    vf(1.0, torch.zeros(1, dtype=F64), PERTURB_NEXT)
    vf(1.0, torch.zeros(1, dtype=F64), PERTURB_PREV)
    return seen


def test_perturbation_follows_the_direction_of_integration():
    after, before = _seen_times(+1.0)
    assert before < 1.0 < after
    after, before = _seen_times(-1.0)  # integrating towards smaller t: "after" is below
    assert after < 1.0 < before


def test_jump_in_reversed_time_matches_torchdiffeq():
    torchdiffeq = __import__("torchdiffeq")

    def f(t, y):
        return torch.where(t < 0.5, -y, 2 * y)

    y0 = torch.tensor([1.0], dtype=F64)
    t = torch.tensor([1.0, 0.0], dtype=F64)
    opts = {"jump_t": torch.tensor([0.5], dtype=F64)}
    expected = torchdiffeq.odeint(f, y0, t, options=opts)
    got = neurode.odeint(f, y0, t, options=opts)
    assert torch.allclose(got, expected, rtol=1e-10, atol=1e-12)


def test_event_function_receives_the_tuple_state():
    def f(t, y):
        return (torch.ones_like(y[0]), -y[1])

    def event(t, y):
        assert isinstance(y, tuple) and len(y) == 2
        return y[0].sum() - 0.75

    y0 = (torch.zeros(1, dtype=F64), torch.ones(2, dtype=F64))
    event_t, ys = neurode.odeint(f, y0, torch.tensor([0.0, 5.0], dtype=F64), event_fn=event)
    assert abs(float(event_t) - 0.75) < 1e-6
    assert isinstance(ys, tuple) and ys[0].shape == (2, 1)


def test_float_time_hands_the_field_the_loops_float_and_perturbs_it_the_same_way():
    # neurode's own trajectory-indexed fields (the interpolated adjoint) take t as a float: no tensor to read back
    seen = []
    vf = VectorField(lambda t, y: (seen.append(t), y)[1], torch.zeros(1, dtype=F64), float_time=True)
    vf(1.0, torch.zeros(1, dtype=F64))
    vf(1.0, torch.zeros(1, dtype=F64), PERTURB_NEXT)
    assert [type(t) for t in seen] == [float, float]
    assert seen[0] == 1.0 < seen[1] == _seen_times(+1.0)[0]
    default = []
    VectorField(lambda t, y: (default.append(t), y)[1], torch.zeros(1, dtype=F64))(1.0, torch.zeros(1, dtype=F64))
    assert isinstance(default[0], torch.Tensor) and default[0].dtype == F64
