"""DreamerV2's behaviour losses in imagination (Hafner et al., ICLR 2021): the actor's
dynamics-backpropagation loss and the critic's weighted regression on lambda-returns.
Used by ``agents/dreamer.py``.

Imports: torch only.
"""

from __future__ import annotations

import torch


def actor_loss(target: torch.Tensor, entropy: torch.Tensor, weight: torch.Tensor, entropy_scale: float):
    """DreamerV2's dynamics-backpropagation actor loss ``-mean(w_t (R_{t+1} + eta H_t))``.

    Args:
        target: ``(H, N)`` lambda-returns of imagined states ``0..H-1``.
        entropy: ``(H-1, N)`` policy entropy at states ``0..H-2`` (the actions that lead
            somewhere with a target).
        weight: ``(H+1, N)`` cumulative discounts of the imagined states.
    """
    if entropy.shape != target[1:].shape or weight.shape[0] != target.shape[0] + 1:
        raise ValueError(
            f"actor_loss shapes: {tuple(target.shape)}, {tuple(entropy.shape)}, {tuple(weight.shape)}"
        )
    return -(weight[:-2] * (target[1:] + entropy_scale * entropy)).mean()


def critic_loss(value: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``mean(w_t (v_t - R_t)^2 / 2)`` over imagined states ``0..H-1``: ``value``, ``target``
    ``(H, N)``, ``weight`` ``(H+1, N)`` (the Gaussian log-likelihood of DreamerV2's critic
    up to a constant)."""
    if value.shape != target.shape or weight.shape[0] != value.shape[0] + 1:
        raise ValueError(
            f"critic_loss shapes: {tuple(value.shape)}, {tuple(target.shape)}, {tuple(weight.shape)}"
        )
    return (0.5 * weight[:-1] * (value - target).pow(2)).mean()
