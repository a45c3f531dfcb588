"""SAC with automatic entropy tuning: the backbone of the DIAYN and METRA papers.

Haarnoja et al., "Soft Actor-Critic Algorithms and Applications", 2018. Tanh-squashed
Gaussian policy, twin Q heads with a Polyak-averaged target, temperature learned so that
the policy's entropy tracks ``target_entropy`` (default ``-target_entropy_scale * action_dim``,
the scale 1 in Haarnoja et al. and 0.5 in METRA's code).

    Q_i(s_t, a_t) <- sum_{k<n} g^k r_{t+k} + g^n (min_i Q'_i(s', a') - alpha log pi(a'|s')),  a' ~ pi(s')
    actor: min  E[alpha log pi(a|s) - min_i Q_i(s, a)];  alpha: min  -alpha (log pi + target_entropy)

The critic is URLB's double-Q critic (LayerNorm trunk), shared with DDPG. Pixels
(``obs_dim = (C, H, W)``) go through the same shared DrQ-v2 encoder as DDPG's, with the same
``feature_dim`` trunks (URLB's pixel layout, which has no SAC: the actor here is a LayerNorm
trunk to ``feature_dim`` then two hidden ReLU layers to the Gaussian's mean and log std),
the encoder's own Adam and ``update_encoder`` (see ``agents/ddpg.py``).

Transfer to finetuning (``init_from``): the encoder (pixels), the actor and, when
``init_critic``, the critic trunk; temperature, Q heads, target and optimisers start fresh.
"""

from __future__ import annotations

import copy
import math

import torch
from tensordict import TensorDict
from torch import nn

from agents.base import Agent
from agents.ddpg import DoubleQCritic, critic_step, frozen, transfer_actor_critic
from urlb.nets import gaussian_log_prob_tanh, layer_norm_trunk, mlp, optimise, orthogonal_init

LOG_STD_MIN, LOG_STD_MAX = -5.0, 2.0


def soft_td_target(reward, discount, next_q1, next_q2, next_log_prob, alpha):
    """``r + discount * (min(Q1', Q2') - alpha * log pi(a'|s'))``; all ``(B,)``."""
    if not reward.shape == discount.shape == next_q1.shape == next_log_prob.shape:
        raise ValueError(f"soft_td_target shapes differ: {reward.shape}, {discount.shape}, {next_q1.shape}")
    return reward + discount * (torch.min(next_q1, next_q2) - alpha * next_log_prob)


def temperature_loss(log_alpha: torch.Tensor, log_prob: torch.Tensor, target_entropy: float) -> torch.Tensor:
    """``-mean(log_alpha * (log pi + target_entropy))`` with log pi treated as a constant."""
    return -(log_alpha * (log_prob.detach() + target_entropy)).mean()


class GaussianActor(nn.Module):
    """MLP -> (mean, log std); actions ``tanh(u)``, ``u ~ N(mean, std)``. Pixels
    (``feature_dim`` set): a LayerNorm trunk to ``feature_dim`` before the MLP."""

    def __init__(self, input_dim: int, action_dim: int, hidden_dim: int, feature_dim: int | None = None):
        super().__init__()
        if feature_dim is None:
            self.trunk = nn.Identity()
        else:
            self.trunk = layer_norm_trunk(input_dim, feature_dim)
            input_dim = feature_dim
        self.net = mlp(input_dim, hidden_dim, 2 * action_dim)
        self.apply(orthogonal_init)

    def forward(self, observation: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, log_std = self.net(self.trunk(observation)).chunk(2, dim=-1)
        # soft clamp of the log std into [LOG_STD_MIN, LOG_STD_MAX] (keeps gradients)
        log_std = LOG_STD_MIN + 0.5 * (LOG_STD_MAX - LOG_STD_MIN) * (torch.tanh(log_std) + 1)
        return mean, log_std

    def sample(self, observation: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """A reparameterised action and its log-probability ``(B,)``."""
        mean, log_std = self(observation)
        raw = mean + log_std.exp() * torch.randn_like(mean)
        return torch.tanh(raw), gaussian_log_prob_tanh(mean, log_std, raw)


class SACAgent(Agent):
    """SAC backbone; defaults follow METRA's SAC (hidden 1024, lr 1e-4, batch 256).
    Pixels only: ``feature_dim`` (50) and ``update_encoder`` (true), as in DDPG."""

    def __init__(
        self,
        obs_dim: int,
        action_dim: int,
        hidden_dim: int = 1024,
        lr: float = 1e-4,
        batch_size: int = 256,
        critic_target_tau: float = 0.005,
        init_temperature: float = 0.1,
        target_entropy: float | None = None,
        target_entropy_scale: float = 1.0,
        init_critic: bool = True,
        feature_dim: int = 50,
        update_encoder: bool = True,
        reward_model=None,
    ):
        super().__init__(obs_dim, action_dim, reward_model, shared_encoder=True)
        self.batch_size = batch_size
        self.critic_target_tau = critic_target_tau
        # Unset: -scale * action_dim (Haarnoja et al.: scale 1; METRA: 0.5).
        self.target_entropy = (
            -target_entropy_scale * float(action_dim) if target_entropy is None else target_entropy
        )
        self.init_critic = init_critic
        input_dim = self.repr_dim + self.skill_dim
        width = feature_dim if self.pixels else None
        self.actor = GaussianActor(input_dim, action_dim, hidden_dim, width)
        self.critic = DoubleQCritic(input_dim, action_dim, hidden_dim, self.critic_task_dim, width)
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        self.log_alpha = nn.Parameter(torch.tensor(math.log(init_temperature)))
        self.actor_opt = torch.optim.Adam(self.actor.parameters(), lr=lr)
        self.critic_opt = torch.optim.Adam(self.critic.parameters(), lr=lr)
        self.alpha_opt = torch.optim.Adam([self.log_alpha], lr=lr)
        if self.pixels and update_encoder:
            self.encoder_opt = torch.optim.Adam(self.encoder.parameters(), lr=lr)

    def optimisers(self):
        encoder = {"encoder": self.encoder_opt} if self.encoder_opt is not None else {}
        return {"actor": self.actor_opt, "critic": self.critic_opt, "alpha": self.alpha_opt, **encoder}

    @torch.no_grad()
    def act(self, observation: torch.Tensor, state: TensorDict, explore: bool) -> torch.Tensor:
        inputs = self.inputs(self.encoder(observation), state)
        return self.actor.sample(inputs)[0] if explore else torch.tanh(self.actor(inputs)[0])

    def update_critic(self, observation, action, reward, discount, next_observation):
        alpha = self.log_alpha.exp().detach()
        with torch.no_grad():
            next_action, next_log_prob = self.actor.sample(next_observation)
            next_q = self.critic_target(next_observation, next_action)
            target = soft_td_target(reward, discount, *next_q, next_log_prob, alpha)
        return critic_step(self, observation, action, target)

    def update_actor(self, observation, step):
        action, log_prob = self.actor.sample(observation)
        alpha = self.log_alpha.exp()
        with frozen(self.critic):
            loss = (alpha.detach() * log_prob - torch.min(*self.critic(observation, action))).mean()
        optimise(self.actor_opt, loss)
        optimise(self.alpha_opt, temperature_loss(self.log_alpha, log_prob, self.target_entropy))
        return {"actor_loss": loss.detach(), "alpha": alpha.detach(), "entropy": -log_prob.mean().detach()}

    def init_from(self, pretrained: SACAgent) -> None:
        transfer_actor_critic(self, pretrained)
