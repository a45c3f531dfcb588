"""OPAL's skill VAE (Ajay et al., ICLR 2021) as SUPE's reference builds it, its loss and SUPE's
labels: a bidirectional GRU posterior over H-step segments, a state-conditioned prior and a
skill-conditioned policy; the negative ELBO, segment returns and optimistic rewards.
Used by ``agents/supe.py``.

Imports: torch and agents.parts.nets only.
"""

from __future__ import annotations

import functools

import torch
from tensordict import TensorDict
from torch import nn

from agents.parts.nets import gaussian_kl, gaussian_nll, mlp, orthogonal_init

LOG_STD_MIN, LOG_STD_MAX = -20.0, 2.0  # the reference's GaussianModule clip
SKILL_LIMIT = 1 - 1e-5  # u = tanh(z) off +-1, z = atanh(u) finite: the reference's TanhConverter


def _keep_first_zero(grad: torch.Tensor, count: int) -> torch.Tensor:
    """``grad`` with its first ``count`` entries zeroed (a gradient hook)."""
    grad = grad.clone()
    grad[:count] = 0
    return grad


# -- networks -------------------------------------------------------------------------------------
class GaussianMLP(nn.Module):
    """Two ReLU layers -> (mean, log std), log std clipped to [-20, 2] (the reference's
    GaussianModule, whose last layers start 100x smaller: an initial std of about 1)."""

    def __init__(self, input_dim: int, output_dim: int, hidden_dim: int):
        super().__init__()
        self.net = mlp(input_dim, hidden_dim, 2 * output_dim)
        self.apply(orthogonal_init)
        with torch.no_grad():
            self.net[-1].weight.mul_(1e-2)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, log_std = self.net(x).chunk(2, dim=-1)
        return mean, log_std.clamp(LOG_STD_MIN, LOG_STD_MAX)


class SkillVAE(nn.Module):
    """The reference's OPAL VAE: a bidirectional 2-layer GRU encoder over (MLP(s_t), a_t) whose
    outputs at all H steps are concatenated into q's mean and log variance; p(z | s_0); pi(a | s, z)."""

    def __init__(self, obs_dim: int, action_dim: int, skill_dim: int, horizon: int, hidden_dim: int):
        super().__init__()
        self.embed = nn.Sequential(mlp(obs_dim, hidden_dim, hidden_dim, depth=1), nn.ReLU())
        self.gru = nn.GRU(hidden_dim + action_dim, hidden_dim, 2, batch_first=True, bidirectional=True)
        # Flax's GRUCell (the reference's) has one bias per r and z gate where torch has two
        # (b_i + b_h); under Adam the pair would learn twice as fast: b_hr, b_hz stay 0.
        for name, bias in self.gru.named_parameters():
            if name.startswith("bias_hh"):
                with torch.no_grad():
                    bias[: 2 * hidden_dim].zero_()
                bias.register_hook(functools.partial(_keep_first_zero, count=2 * hidden_dim))
        self.head = nn.Linear(horizon * 2 * hidden_dim, 2 * skill_dim)
        self.prior = GaussianMLP(obs_dim, skill_dim, hidden_dim)
        self.policy = GaussianMLP(obs_dim + skill_dim, action_dim, hidden_dim)
        self.embed.apply(orthogonal_init)
        self.head.apply(orthogonal_init)

    def posterior(self, observation: torch.Tensor, action: torch.Tensor):
        """``(B, H, obs)``, ``(B, H, A)`` segments -> q's ``(mean, log_std)``, each ``(B, Z)``."""
        out, _ = self.gru(torch.cat([self.embed(observation), action], -1))
        mean, log_var = self.head(out.flatten(1)).chunk(2, dim=-1)
        return mean, 0.5 * log_var

    def decode(self, observation: torch.Tensor, skill: torch.Tensor):
        """pi(a | s, z): ``(mean, log_std)`` of the action, any leading shape."""
        return self.policy(torch.cat([observation, skill], -1))

    def label(self, observation: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """A segment's high-level action: ``u = tanh(mean of q)`` ``(B, Z)``, kept off +-1."""
        return torch.tanh(self.posterior(observation, action)[0]).clamp(-SKILL_LIMIT, SKILL_LIMIT)


# -- losses and labels ----------------------------------------------------------------------------
def gaussian_log_prob(value, mean, log_std) -> torch.Tensor:
    """``log N(value; mean, e^log_std)`` summed over the last dimension."""
    return -gaussian_nll(value, mean, log_std).sum(-1)


def vae_loss(action_log_prob, posterior, prior, kl_weight: float):
    """The negative ELBO and its terms: ``-mean log pi(a_t | s_t, z) + beta mean_B KL(q || p)``.

    Args:
        action_log_prob: ``(B, H)`` log pi of the segment's actions (summed over action dims).
        posterior, prior: ``(mean, log_std)`` pairs, each ``(B, Z)``; the KL sums over Z.
        kl_weight: beta.
    """
    if posterior[0].shape != prior[0].shape or posterior[0].shape[0] != action_log_prob.shape[0]:
        raise ValueError(
            f"vae_loss shapes: {tuple(action_log_prob.shape)}, {tuple(posterior[0].shape)}, "
            f"{tuple(prior[0].shape)}"
        )
    reconstruction = -action_log_prob.mean()
    kl = gaussian_kl(*posterior, *prior).sum(-1).mean()
    loss = reconstruction + kl_weight * kl
    return loss, {"reconstruction_nll": reconstruction.detach(), "kl": kl.detach(), "loss": loss.detach()}


def segment_return(reward: torch.Tensor, discount: float) -> torch.Tensor:
    """``(B,)`` ``sum_k discount^k r_k`` of ``(B, H)`` segment rewards (the high-level reward)."""
    powers = discount ** torch.arange(reward.shape[1], device=reward.device, dtype=reward.dtype)
    return (reward * powers).sum(1)


def segment_offset(segment_step: torch.Tensor, horizon: int) -> torch.Tensor:
    """Steps from a window's start to the first segment start in it, given the window's first
    step's index within its segment (0: a skill was drawn there)."""
    return (horizon - segment_step) % horizon


def optimistic_reward(reward: torch.Tensor, bonus: torch.Tensor, coefficient: float) -> torch.Tensor:
    """``reward + coefficient * bonus``: SUPE's label (predicted or true reward plus RND)."""
    if reward.shape != bonus.shape:
        raise ValueError(f"optimistic_reward shapes differ: {tuple(reward.shape)}, {tuple(bonus.shape)}")
    return reward + coefficient * bonus


def high_level_transitions(segment: TensorDict, skill: torch.Tensor, reward: torch.Tensor, discount: float):
    """(s_t, u, R, g * not terminated, s_t+H) of ``(B, H)`` segments (an episode ends at most at
    a segment's last step; a time limit keeps the discount, as URLB bootstraps)."""
    values = {
        "observation": segment["observation"][:, 0],
        "skill": skill,
        "reward": reward,
        "discount": discount * (~segment["terminated"][:, -1]).float(),
        "next_observation": segment["next_observation"][:, -1],
    }
    return TensorDict(values, batch_size=skill.shape[:1], device=skill.device)
