"""dm_control's ``rewards.tolerance`` in torch.

Mirrors ``dm_control.utils.rewards.tolerance`` (same sigmoids, same conventions:
1 inside ``bounds``; outside, ``d`` = distance to the nearest bound / ``margin`` and
the value is ``sigmoid(d)`` with ``sigmoid(1) = value_at_margin``). Only the sigmoids
that the URLB tasks use are implemented; any other name raises.
"""

from __future__ import annotations

import math

import torch


def tolerance(
    x: torch.Tensor,
    bounds: tuple[float, float],
    margin: float = 0.0,
    sigmoid: str = "gaussian",
    value_at_margin: float = 0.1,
) -> torch.Tensor:
    """Elementwise tolerance reward of ``x`` (any shape); returns a tensor like ``x``."""
    lower, upper = bounds
    if lower > upper:
        raise ValueError(f"tolerance: lower bound {lower} exceeds upper bound {upper}")
    if margin < 0:
        raise ValueError(f"tolerance: margin must be non-negative, got {margin}")
    if margin == 0:
        return ((x >= lower) & (x <= upper)).to(x.dtype)
    # Distance outside the bounds in margins; exactly 0 inside, where both sigmoids give 1.
    # (An infinite bound contributes relu(-inf) = 0.)
    d = (torch.relu(lower - x) + torch.relu(x - upper)) / margin
    if sigmoid == "gaussian":
        if not 0 < value_at_margin < 1:
            raise ValueError("gaussian tolerance needs 0 < value_at_margin < 1")
        scale = math.sqrt(-2.0 * math.log(value_at_margin))
        return torch.exp(-0.5 * (d * scale) ** 2)
    if sigmoid == "linear":
        if not 0 <= value_at_margin < 1:
            raise ValueError("linear tolerance needs 0 <= value_at_margin < 1")
        return torch.relu(1.0 - d * (1.0 - value_at_margin))
    raise ValueError(f"tolerance: sigmoid {sigmoid!r} is not implemented (gaussian, linear)")
