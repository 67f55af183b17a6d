"""The model's starting guess for hidden points: interpolation by time, and the curve offset it may add."""

from __future__ import annotations

import torch

from transfertraj.model.position_proxy import curve_offset, position_proxy


def _track(fn, minutes):
    """(1, L, 2) positions fn(t) at the given minutes, and the minutes as (1, L)."""
    t = torch.tensor([minutes], dtype=torch.float32)
    return torch.stack([fn(t)[0], fn(t)[1]], dim=-1), t


def test_proxy_interpolates_by_index_without_times():
    xy = torch.tensor([[[0.0, 0.0], [9.0, 9.0], [9.0, 9.0], [30.0, -60.0], [7.0, 7.0]]])
    observed = torch.tensor([[True, False, False, True, False]])
    got = position_proxy(xy, observed)
    want = torch.tensor([[[0.0, 0.0], [10.0, -20.0], [20.0, -40.0], [30.0, -60.0], [30.0, -60.0]]])
    torch.testing.assert_close(got, want)


def test_proxy_interpolates_by_time_where_times_are_known():
    xy = torch.tensor([[[0.0, 0.0], [9.0, 9.0], [9.0, 9.0], [30.0, 0.0]]])
    minutes = torch.tensor([[0.0, 0.5, 2.5, 3.0]])  # irregular sampling: index weights would say 1/3, 2/3
    observed = torch.tensor([[True, False, False, True]])
    got = position_proxy(xy, observed, minutes, torch.ones_like(observed))
    torch.testing.assert_close(got[0, 1:3], torch.tensor([[5.0, 0.0], [25.0, 0.0]]))
    # a hidden time (pretraining's full mask) falls back to the index for that point only
    timed = torch.tensor([[True, False, True, True]])
    got = position_proxy(xy, observed, minutes, timed)
    torch.testing.assert_close(got[0, 1:3], torch.tensor([[10.0, 0.0], [25.0, 0.0]]))


def test_proxy_past_the_last_observed_point_is_the_last_known_point():
    xy = torch.tensor([[[0.0, 0.0], [10.0, 0.0], [0.0, 0.0], [0.0, 0.0]]])
    observed = torch.tensor([[True, True, False, False]])
    got = position_proxy(xy, observed, torch.tensor([[0.0, 1.0, 2.0, 3.0]]), torch.ones_like(observed))
    torch.testing.assert_close(got[0, 2:], torch.tensor([[10.0, 0.0], [10.0, 0.0]]))


def test_curve_offset_continues_a_constant_velocity_past_the_end():
    xy, t = _track(lambda t: (12.0 * t, -3.0 * t), [0.0, 0.25, 0.5, 1.0, 1.5, 2.5])  # 12 m/min east
    observed = torch.tensor([[True, True, True, True, False, False]])
    proxy = position_proxy(xy, observed, t, torch.ones_like(observed))
    bend = curve_offset(xy, observed, t, torch.ones_like(observed))
    torch.testing.assert_close(proxy + bend, xy)  # the hidden future, exactly, by the seconds it asks about
    assert (bend[0, :4] == 0).all()  # observed points: no offset


def test_curve_offset_makes_a_uniformly_sampled_parabola_exact():
    """Catmull-Rom tangents are exact derivatives of a quadratic on a uniform grid, and the cubic Hermite
    with exact end derivatives reproduces it: proxy + offset lands on the curve where the line cuts it."""
    xy, t = _track(lambda t: (10.0 * t, 0.5 * t**2), [float(i) for i in range(13)])
    observed = torch.tensor([[i % 4 == 0 for i in range(13)]])
    timed = torch.ones_like(observed)
    proxy = position_proxy(xy, observed, t, timed)
    bend = curve_offset(xy, observed, t, timed)
    inner = slice(5, 8)  # between observed 4 and 8, both with a second neighbour (0 and 12)
    assert (proxy[0, inner] - xy[0, inner]).abs().max() > 1.0  # the straight line cuts the corner
    torch.testing.assert_close(proxy[0, inner] + bend[0, inner], xy[0, inner], atol=1e-4, rtol=0)


def test_proxy_and_offset_are_translation_invariant():
    torch.manual_seed(0)
    xy = torch.randn(3, 20, 2) * 500
    minutes = torch.cumsum(torch.rand(3, 20) + 0.1, dim=1)
    observed = torch.rand(3, 20) < 0.4
    observed[:, 0] = True
    timed = torch.rand(3, 20) < 0.8
    shift = torch.tensor([1234.0, -987.0])
    p0, p1 = position_proxy(xy, observed, minutes, timed), position_proxy(xy + shift, observed, minutes, timed)
    torch.testing.assert_close(p1, p0 + shift, atol=1e-3, rtol=0)
    b0, b1 = curve_offset(xy, observed, minutes, timed), curve_offset(xy + shift, observed, minutes, timed)
    torch.testing.assert_close(b1, b0, atol=1e-3, rtol=0)
