"""Where a hidden point probably is, from the observed points around it: the model's starting guess.

    from transfertraj.model.position_proxy import position_proxy, curve_offset
    proxy = position_proxy(xy, observed, minutes, timed)     # (B, L, 2) metres
    bend = curve_offset(xy, observed, minutes, timed)        # (B, L, 2) metres, added to proxy by a learned weight

The spatial head predicts an offset from `position_proxy` (ModelArgs.spatial_residual), so an untrained
model answers like the strongest straight-line baseline of each task and training only has to learn the
correction. `curve_offset` is an input, not an answer: the step from the straight line to a smooth curve
through the observed neighbours (cubic Hermite between two observed points with Catmull-Rom tangents;
constant velocity past the last observed point). The model sees it on hidden points and weighs it.

Both read times only where they are known (`timed`: observed time, not masked) and fall back to the point
index elsewhere (pretraining hides whole segments, times included). Both are translation-invariant: the
proxy is a weighted mean of observed positions (weights sum to one) and the offset a combination of
position differences, so TRIE's invariance holds for every coordinate the network sees.
Shapes: B trajectories, L points (padded); xy (B, L, 2) metres, observed/timed (B, L) bool, minutes (B, L).
"""

from __future__ import annotations

import torch


def _neighbours(observed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(prev, next): index of the nearest observed point at or before / at or after each point; -1 / L if none."""
    B, L = observed.shape
    idx = torch.arange(L, device=observed.device).expand(B, L)
    prev = torch.where(observed, idx, -1).cummax(dim=1).values
    nxt = torch.where(observed, idx, L).flip(1).cummin(dim=1).values.flip(1)
    return prev, nxt


def _take(values: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """values (B, L, ...) gathered at index (B, L), clamped into range (callers mask what was out of range)."""
    i = index.clamp(0, values.shape[1] - 1)
    if values.dim() == 2:
        return values.gather(1, i)
    return values.gather(1, i.unsqueeze(-1).expand(*i.shape, values.shape[-1]))


def _axis(minutes: torch.Tensor | None, timed: torch.Tensor | None, prev: torch.Tensor, nxt: torch.Tensor):
    """(minutes (B, L) float, by_time (B, L) bool): by_time where the point and its observed neighbours
    (prev, nxt from `_neighbours`) have known times in order, so weights can follow the clock; elsewhere
    callers use the point index."""
    if minutes is None or timed is None:
        return torch.zeros(prev.shape, device=prev.device), torch.zeros_like(prev, dtype=torch.bool)
    t = minutes.float()
    t_p, t_n = _take(t, prev), _take(t, nxt)
    has_p, has_n = prev >= 0, nxt < prev.shape[1]
    ok_p = ~has_p | (_take(timed, prev) & (t >= t_p))
    ok_n = ~has_n | (_take(timed, nxt) & (t <= t_n))
    span_ok = ~(has_p & has_n) | (prev == nxt) | (t_n > t_p)
    return t, timed & ok_p & ok_n & span_ok


def position_proxy(
    xy: torch.Tensor,
    observed: torch.Tensor,
    minutes: torch.Tensor | None = None,
    timed: torch.Tensor | None = None,
) -> torch.Tensor:
    """Observed points keep their coordinates; a hidden point between two observed ones is interpolated
    by time (by index where a time is unknown); past either end it takes the nearest observed point
    (the last known point for TP). No observed point at all: zeros. -> (B, L, 2) metres."""
    B, L, _ = xy.shape
    prev, nxt = _neighbours(observed)
    has_prev, has_next = prev >= 0, nxt < L
    t, by_time = _axis(minutes, timed, prev, nxt)
    idx = torch.arange(L, device=xy.device).expand(B, L)
    a_p = torch.where(by_time, _take(t, prev), prev.to(t.dtype))
    a_n = torch.where(by_time, _take(t, nxt), nxt.to(t.dtype))
    a = torch.where(by_time, t, idx.to(t.dtype))
    w = ((a - a_p) / (a_n - a_p).clamp(min=1e-6)).clamp(0, 1).unsqueeze(-1).to(xy.dtype)  # (B, L, 1)
    p_xy, n_xy = _take(xy, prev), _take(xy, nxt)
    both = p_xy + w * (n_xy - p_xy)
    out = torch.where((has_prev & has_next).unsqueeze(-1), both, torch.where(has_prev.unsqueeze(-1), p_xy, n_xy))
    return torch.where((has_prev | has_next).unsqueeze(-1), out, torch.zeros_like(xy))


def curve_offset(
    xy: torch.Tensor,
    observed: torch.Tensor,
    minutes: torch.Tensor | None = None,
    timed: torch.Tensor | None = None,
) -> torch.Tensor:
    """From the proxy to a smooth path through the observed points, for hidden points; 0 on observed ones.

    Between observed p and n: cubic Hermite minus the straight line, tangents from the observed points
    around them (Catmull-Rom: m_p = (x_n - x_pp) / (a_n - a_pp); at an end, the chord, which adds no
    bend on that side). Past the last observed point: constant velocity of the last observed step times
    the time (or index) elapsed; before the first, the same backwards. -> (B, L, 2) metres.
    """
    B, L, _ = xy.shape
    xy = xy.float()
    prev, nxt = _neighbours(observed)
    has_p, has_n = prev >= 0, nxt < L
    t, by_time = _axis(minutes, timed, prev, nxt)
    idx = torch.arange(L, device=xy.device).expand(B, L).to(t.dtype)
    # The second neighbours: the observed point before prev and the one after next.
    pp = torch.where(prev >= 1, _take(prev, prev - 1), torch.full_like(prev, -1))
    nn_ = torch.where(nxt <= L - 2, _take(nxt, nxt + 1), torch.full_like(nxt, L))
    has_pp, has_nn = has_p & (pp >= 0), has_n & (nn_ < L)

    def at(i):  # the axis value of points i, on this point's axis (time where usable, else index)
        return torch.where(by_time, _take(t, i), i.to(t.dtype))

    a = torch.where(by_time, t, idx)
    a_p, a_n, a_pp, a_nn = at(prev), at(nxt), at(pp), at(nn_)
    x_p, x_n, x_pp, x_nn = _take(xy, prev), _take(xy, nxt), _take(xy, pp), _take(xy, nn_)
    if timed is not None:  # a second neighbour whose time is unknown gives no usable slope on the time axis
        has_pp = has_pp & (~by_time | _take(timed, pp))
        has_nn = has_nn & (~by_time | _take(timed, nn_))

    def slope(x1, x0, a1, a0, ok):
        d = (a1 - a0).unsqueeze(-1)
        good = ok.unsqueeze(-1) & (d > 1e-6)
        return torch.where(good, (x1 - x0) / d.clamp(min=1e-6), torch.zeros_like(x1)), good

    chord, _ = slope(x_n, x_p, a_n, a_p, has_p & has_n)
    m_p, ok_p = slope(x_n, x_pp, a_n, a_pp, has_pp & has_n)
    m_n, ok_n = slope(x_nn, x_p, a_nn, a_p, has_nn & has_p)
    m_p, m_n = torch.where(ok_p, m_p, chord), torch.where(ok_n, m_n, chord)
    h = (a_n - a_p).clamp(min=1e-6).unsqueeze(-1)
    s = ((a - a_p).unsqueeze(-1) / h).clamp(0, 1)
    # Hermite minus linear: h10*h*(m_p - chord) + h11*h*(m_n - chord), since the chord terms reproduce the line.
    h10, h11 = s**3 - 2 * s**2 + s, s**3 - s**2
    inner = h10 * h * (m_p - chord) + h11 * h * (m_n - chord)

    v_last, ok_last = slope(x_p, x_pp, a_p, a_pp, has_pp)  # last observed step, for points past the end
    after = v_last * (a - a_p).unsqueeze(-1)
    v_first, ok_first = slope(x_nn, x_n, a_nn, a_n, has_nn)
    before = v_first * (a - a_n).unsqueeze(-1)

    hidden = ~observed
    out = torch.zeros_like(xy)
    out = torch.where((hidden & has_p & has_n).unsqueeze(-1), inner, out)
    out = torch.where((hidden & has_p & ~has_n).unsqueeze(-1) & ok_last, after, out)
    out = torch.where((hidden & ~has_p & has_n).unsqueeze(-1) & ok_first, before, out)
    return out


__all__ = ["position_proxy", "curve_offset"]
