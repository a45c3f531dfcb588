"""Pieces of the zero-shot agents (``agents/fb.py``, ``agents/hilp.py``): the z-conditioned
networks of Touati & Ollivier's code, latent draws on the sphere, and the pure losses.

Networks (the reference's ``fb_modules.py`` layout at its defaults, ``preprocess=True`` and
``add_trunk=False``): each input pair goes through its own ``Linear -> LayerNorm -> Tanh ->
Linear -> ReLU`` embedding of width ``feature_dim``, the two embeddings are concatenated, and
heads of one hidden ReLU layer read them. Orthogonal weights, zero biases (URLB's init).

Losses: tensors in, ``(loss, metrics)`` out, each tested against hand-worked values in
``tests/test_zero_shot.py``.

Imports: torch and agents.parts.nets only.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from agents.parts.nets import TruncatedNormal, orthogonal_init


def embedding(input_dim: int, hidden_dim: int, output_dim: int) -> nn.Sequential:
    """``Linear -> LayerNorm -> Tanh -> Linear -> ReLU``: the reference's input embeddings."""
    return nn.Sequential(
        nn.Linear(input_dim, hidden_dim),
        nn.LayerNorm(hidden_dim),
        nn.Tanh(),
        nn.Linear(hidden_dim, output_dim),
        nn.ReLU(inplace=True),
    )


def head(input_dim: int, hidden_dim: int, output_dim: int) -> nn.Sequential:
    """One hidden ReLU layer, then a linear output."""
    return nn.Sequential(
        nn.Linear(input_dim, hidden_dim), nn.ReLU(inplace=True), nn.Linear(hidden_dim, output_dim)
    )


def state_map(input_dim: int, hidden_dim: int, output_dim: int) -> nn.Sequential:
    """``Linear -> LayerNorm -> Tanh -> Linear -> ReLU -> Linear``: FB's backward map B(s) and
    HILP's phi(s) (before any normalisation)."""
    net = nn.Sequential(*embedding(input_dim, hidden_dim, hidden_dim), nn.Linear(hidden_dim, output_dim))
    net.apply(orthogonal_init)
    return net


class ForwardMap(nn.Module):
    """F(s, a, z) with two heads ``(B, z_dim)`` each: FB's forward map, HILP's successor features."""

    def __init__(self, obs_dim: int, z_dim: int, action_dim: int, feature_dim: int, hidden_dim: int):
        super().__init__()
        self.z_dim = z_dim
        self.obs_action_net = embedding(obs_dim + action_dim, hidden_dim, feature_dim)
        self.obs_z_net = embedding(obs_dim + z_dim, hidden_dim, feature_dim)
        self.f1 = head(2 * feature_dim, hidden_dim, z_dim)
        self.f2 = head(2 * feature_dim, hidden_dim, z_dim)
        self.apply(orthogonal_init)

    def forward(self, observation, z, action) -> tuple[torch.Tensor, torch.Tensor]:
        h = torch.cat(
            [
                self.obs_action_net(torch.cat([observation, action], -1)),
                self.obs_z_net(torch.cat([observation, z], -1)),
            ],
            -1,
        )
        return self.f1(h), self.f2(h)


class LatentActor(nn.Module):
    """pi(s, z): a tanh mean with fixed-scale truncated-normal noise (DrQ-v2's, added outside)."""

    def __init__(self, obs_dim: int, z_dim: int, action_dim: int, feature_dim: int, hidden_dim: int):
        super().__init__()
        self.obs_net = embedding(obs_dim, hidden_dim, feature_dim)
        self.obs_z_net = embedding(obs_dim + z_dim, hidden_dim, feature_dim)
        self.policy = head(2 * feature_dim, hidden_dim, action_dim)
        self.apply(orthogonal_init)

    def forward(self, observation, z, stddev: float) -> TruncatedNormal:
        h = torch.cat([self.obs_net(observation), self.obs_z_net(torch.cat([observation, z], -1))], -1)
        return TruncatedNormal(torch.tanh(self.policy(h)), stddev)


def on_sphere(z: torch.Tensor) -> torch.Tensor:
    """Rows of ``z`` ``(N, d)`` projected onto the sphere of radius sqrt(d)."""
    return math.sqrt(z.shape[-1]) * F.normalize(z, dim=-1)


def mix_latents(z, candidates, mask) -> torch.Tensor:
    """``z`` ``(B, d)`` with the rows where ``mask`` ``(B,)`` holds replaced by ``candidates``'
    rows projected on the sphere (FB and HILP mix dataset-derived z into the sampled ones)."""
    return torch.where(mask[:, None], on_sphere(candidates), z)


# -- losses -----------------------------------------------------------------------------------------
def fb_loss(m1, m2, target_m, discount) -> tuple[torch.Tensor, dict]:
    """The FB loss on ``(B, B)`` matrices ``M_i[s, t] = F_i(s_s, a_s, z_s)^T B(s'_t)``:

        L = 1/2 sum_i mean_{s != t} (M_i - g_s M'_target)^2 - sum_i mean_s M_i[s, s]

    ``target_m``: min over the target heads; ``discount`` ``(B,)`` per row (0 at terminals)."""
    size = m1.shape[0]
    if (
        m1.shape != (size, size)
        or m2.shape != m1.shape
        or target_m.shape != m1.shape
        or discount.shape != (size,)
    ):
        raise ValueError(f"fb_loss shapes: {m1.shape}, {m2.shape}, {target_m.shape}, {discount.shape}")
    off = ~torch.eye(size, dtype=torch.bool, device=m1.device)
    target = discount[:, None] * target_m
    offdiag = 0.5 * sum((m - target)[off].pow(2).mean() for m in (m1, m2))
    diag = -sum(m.diag().mean() for m in (m1, m2))
    return offdiag + diag, {"fb_offdiag": offdiag.detach(), "fb_diag": diag.detach()}


def orthonormality_loss(b: torch.Tensor) -> tuple[torch.Tensor, dict]:
    """FB's regulariser pulling ``E[B B^T]`` to the identity, on ``b`` ``(B, d)``:

    L = mean_{s != t} (B_s^T B_t)^2 - 2 mean_s B_s^T B_s"""
    if b.dim() != 2:
        raise ValueError(f"orthonormality_loss takes (B, d), got {tuple(b.shape)}")
    cov = b @ b.T
    off = ~torch.eye(len(b), dtype=torch.bool, device=b.device)
    offdiag, diag = cov[off].pow(2).mean(), -2 * cov.diag().mean()
    return offdiag + diag, {"orth_loss_offdiag": offdiag.detach(), "orth_loss_diag": diag.detach()}


def expectile_loss(adv: torch.Tensor, diff: torch.Tensor, expectile: float) -> torch.Tensor:
    """Elementwise ``|tau - 1(adv < 0)| diff^2`` (IQL's asymmetric square; HILP weighs each
    head's error by the sign of the shared advantage)."""
    return torch.where(adv >= 0, expectile, 1 - expectile) * diff.pow(2)


def goal_distance_value(phi_s: torch.Tensor, phi_g: torch.Tensor) -> torch.Tensor:
    """HILP's V(s, g) = -||phi(s) - phi(g)|| ``(B,)``, the square clamped at 1e-6 below (a finite
    gradient where s = g)."""
    return -(phi_s - phi_g).pow(2).sum(-1).clamp(min=1e-6).sqrt()


def hilp_value_loss(values, target_next, target_values, reached, discount: float, expectile: float):
    """HILP's goal-conditioned value loss (an IQL value step on V(s, g) with two heads).

    Args:
        values: ``(v1, v2)`` V_i(s, g) of the online phis, each ``(B,)``.
        target_next: ``(v1', v2')`` V_i(s', g) of the target phis.
        target_values: ``(v1, v2)`` V_i(s, g) of the target phis.
        reached: ``(B,)`` bool, s = g (reward 0 and no bootstrap there; reward -1 elsewhere).
        discount, expectile: gamma and tau.

    ``q_i = r + g (1 - reached) V_i'(s', g)``; the advantage ``min_i q_target - mean_i V_target``
    weighs ``L = sum_i mean expectile(adv, q_i - V_i)``."""
    mask = (~reached).to(values[0].dtype)
    reward = -mask
    q_min = reward + discount * mask * torch.minimum(*target_next)
    adv = q_min - (target_values[0] + target_values[1]) / 2
    losses = [
        expectile_loss(adv, reward + discount * mask * nxt - v, expectile).mean()
        for v, nxt in zip(values, target_next, strict=True)
    ]
    value = (values[0] + values[1]) / 2
    return losses[0] + losses[1], {
        "value_loss": (losses[0] + losses[1]).detach(),
        "v_mean": value.mean().detach(),
        "adv_mean": adv.mean(),
        "accept_prob": (adv >= 0).float().mean(),
    }


def regress_latent(features: torch.Tensor, reward: torch.Tensor) -> torch.Tensor:
    """HILP's zero-shot z: the least-squares ``w`` of ``reward ~ features w`` (``(N, d)``,
    ``(N,)``), on the sphere ``(d,)``."""
    if features.dim() != 2 or reward.shape != features.shape[:1]:
        raise ValueError(f"regress_latent shapes: {tuple(features.shape)}, {tuple(reward.shape)}")
    w = torch.linalg.lstsq(features, reward[:, None]).solution[:, 0]
    return on_sphere(w[None])[0]


def reward_weighted_latent(backward: torch.Tensor, reward: torch.Tensor) -> torch.Tensor:
    """FB's zero-shot z: ``mean_i r_i B(s'_i)`` (``(N, d)``, ``(N,)``), on the sphere ``(d,)``."""
    if backward.dim() != 2 or reward.shape != backward.shape[:1]:
        raise ValueError(f"reward_weighted_latent shapes: {tuple(backward.shape)}, {tuple(reward.shape)}")
    return on_sphere((reward @ backward / len(reward))[None])[0]


# -- finetuning a task's z on its reward (ours: neither reference finetunes; docs/fidelity.md) --------------
def latent_q_loss(f1, f2, next_f1, next_f2, z, reward, discount) -> tuple[torch.Tensor, dict]:
    """TD loss of the critic ``Q_i(s, a) = F_i(s, a, z)^T z`` on a task's reward: target
    ``r + discount * min_i F'_i(s', a', z)^T z``, summed over the two heads' mean squared errors.

    Args:
        f1, f2: F's heads at ``(s, a, z)`` ``(B, d)``; next_f1, next_f2: the target's at ``(s', a', z)``.
        z: the fixed task latent, ``(d,)`` or ``(B, d)``.
        reward, discount: ``(B,)`` (discount 0 past a terminal).
    """
    if not f1.shape == f2.shape == next_f1.shape == next_f2.shape or reward.shape != discount.shape:
        shapes = f"{tuple(f1.shape)}, {tuple(next_f1.shape)}, {tuple(reward.shape)}"
        raise ValueError(f"latent_q_loss shapes: {shapes}")
    if reward.shape != f1.shape[:1]:
        raise ValueError(f"latent_q_loss: reward {tuple(reward.shape)} for a batch of {f1.shape[0]}")
    with torch.no_grad():
        target = reward + discount * torch.min((next_f1 * z).sum(-1), (next_f2 * z).sum(-1))
    q1, q2 = (f1 * z).sum(-1), (f2 * z).sum(-1)
    loss = F.mse_loss(q1, target) + F.mse_loss(q2, target)
    return loss, {
        "critic_loss": loss.detach(),
        "critic_q1": q1.mean().detach(),
        "critic_target_q": target.mean(),
    }


def reward_scale(predicted: torch.Tensor, reward: torch.Tensor) -> torch.Tensor:
    """The c of the least-squares fit ``reward ~ c * predicted`` (both ``(N,)``): how many units of
    the task's reward one unit of ``z``'s implied reward ``features^T z`` is worth (z lies on the
    sphere, so ``F^T z`` is the task's value up to this scale)."""
    if predicted.dim() != 1 or predicted.shape != reward.shape:
        raise ValueError(f"reward_scale shapes: {tuple(predicted.shape)}, {tuple(reward.shape)}")
    return (predicted @ reward) / (predicted @ predicted)
