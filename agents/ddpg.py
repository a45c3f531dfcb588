"""DDPG as URLB configures it: the backbone of the URLB baselines.

Lillicrap et al., "Continuous control with deep reinforcement learning", ICLR 2016, in
the form of DrQ-v2 / URLB (Laskin et al., NeurIPS 2021 datasets track): twin Q heads on
a shared LayerNorm trunk, one target critic and no target actor, fixed truncated-normal
exploration noise, n-step returns.

    Q_i(s_t, a_t) <- sum_{k<n} g^k r_{t+k} + g^n min_i Q'_i(s_{t+n}, a'),  a' = pi(s_{t+n}) + clip(eps, c)
    actor: max  min_i Q_i(s, pi(s) + clip(eps, c))

Pixels (``obs_dim = (C, H, W)``), as URLB's ``obs_type=pixels``: frames go through the
shared DrQ-v2 encoder (``agents.parts.encoders``, random shifts in ``update``, none in ``act``), and
actor and critic each compress its features (skill appended) with a LayerNorm trunk to
``feature_dim`` (50); the actor then has two hidden ReLU layers, and the critic's trunk
reads the features alone, the action joining each Q head (two hidden layers) after it.
The encoder has its own Adam at the agent's lr (URLB's ``encoder_opt``); the critic's loss
trains it unless the reward model's does (``RewardModel.trains_encoder``), and
``update_encoder=False`` freezes it (URLB: pretraining trains it, finetuning may not).

Transfer to finetuning (``init_from``): the encoder (pixels), the actor, and the critic
trunk when ``init_critic`` (URLB's default); the Q heads, target critic and optimisers start
fresh. A reward model (exploration or skill agents, ``agents/base.py``) rides on this
backbone.
"""

from __future__ import annotations

import contextlib
import copy

import torch
from tensordict import TensorDict
from torch import nn

from agents.base import Agent
from agents.parts.nets import (
    TruncatedNormal,
    hard_update,
    layer_norm_trunk,
    mlp,
    optimise,
    orthogonal_init,
    soft_update,
)


def td_target(reward: torch.Tensor, discount: torch.Tensor, next_q1: torch.Tensor, next_q2: torch.Tensor):
    """Clipped double-Q target ``r + discount * min(Q1', Q2')``; all ``(B,)`` or ``(B, 1)``."""
    if not reward.shape == discount.shape == next_q1.shape == next_q2.shape:
        raise ValueError(f"td_target shapes differ: {reward.shape}, {discount.shape}, {next_q1.shape}")
    return reward + discount * torch.min(next_q1, next_q2)


def critic_loss(qs, target: torch.Tensor) -> tuple[torch.Tensor, dict]:
    """Sum over Q heads of each head's mean squared TD error.

    Args:
        qs: the heads' values, a sequence of ``(B,)`` (the double-Q critic's pair) or an
            ``(N, B)`` tensor (an ensemble: one row per head).
        target: ``(B,)``, the same for every head.
    """
    if len(qs) < 1 or any(q.shape != target.shape for q in qs):
        raise ValueError(f"critic_loss shapes differ: {[tuple(q.shape) for q in qs]}, {tuple(target.shape)}")
    losses = [(q - target).pow(2).mean() for q in qs]
    loss = sum(losses[1:], losses[0])  # two heads: exactly head 1 + head 2
    return loss, {
        "critic_loss": loss.detach(),
        "critic_q1": qs[0].mean().detach(),
        "critic_target_q": target.mean(),
    }


def critic_step(agent, observation, action, target) -> dict[str, torch.Tensor]:
    """Regress every Q head of ``agent.critic`` on ``target``, then move the target critic
    (shared by the DDPG and SAC backbones, whose targets differ)."""
    loss, metrics = critic_loss(agent.critic(observation, action), target)
    optimise(agent.critic_opt, loss)
    soft_update(agent.critic_target, agent.critic, agent.critic_target_tau)
    return metrics


def transfer_actor_critic(agent, pretrained) -> None:
    """URLB's transfer: the encoder (pixels; nothing for states), the actor, and the critic
    trunk when ``agent.init_critic`` (the whole critic for reward models with
    ``transfer_whole_critic``: ProtoRL); a reward model (its skills) is copied and switched
    to finetuning."""
    hard_update(agent.encoder, pretrained.encoder)
    hard_update(agent.actor, pretrained.actor)
    if agent.init_critic:
        whole = agent.reward_model is not None and agent.reward_model.transfer_whole_critic
        part = (lambda critic: critic) if whole else (lambda critic: critic.trunk)
        hard_update(part(agent.critic), part(pretrained.critic))
        hard_update(part(agent.critic_target), part(pretrained.critic))
    if agent.reward_model is not None:
        hard_update(agent.reward_model, pretrained.reward_model)
        agent.reward_model.finetune()


@contextlib.contextmanager
def frozen(module: nn.Module):
    """No weight gradients for ``module`` inside the block (the actor loss needs only the
    critic's input gradients: this skips the critic's weight-gradient matmuls)."""
    module.requires_grad_(False)
    try:
        yield module
    finally:
        module.requires_grad_(True)


class DeterministicActor(nn.Module):
    """URLB's actor: LayerNorm trunk, ReLU layers, tanh mean; noise added outside.

    States (``feature_dim`` None): trunk to ``hidden_dim``, one hidden layer. Pixels: trunk
    to ``feature_dim``, then two hidden layers (URLB's extra one for pixels)."""

    def __init__(self, input_dim: int, action_dim: int, hidden_dim: int, feature_dim: int | None = None):
        super().__init__()
        width = hidden_dim if feature_dim is None else feature_dim
        self.trunk = layer_norm_trunk(input_dim, width)
        self.policy = mlp(width, hidden_dim, action_dim, depth=1 if feature_dim is None else 2)
        self.apply(orthogonal_init)

    def forward(self, observation: torch.Tensor, stddev: float) -> TruncatedNormal:
        return TruncatedNormal(torch.tanh(self.policy(self.trunk(observation))), stddev)


class DoubleQCritic(nn.Module):
    """URLB's critic: a shared LayerNorm trunk and two Q heads.

    States (``feature_dim`` None): the trunk reads ``(s, a)``, each head one hidden layer.
    Pixels: the trunk compresses the encoder's features alone to ``feature_dim`` and the
    action joins after it; each head has two hidden layers (URLB).

    With ``task_dim > 0`` the heads output successor features ``psi(s, a)`` of that size and
    ``Q = psi(s, a) . w``, with ``w`` the last ``task_dim`` entries of the input (the task
    vector appended as the skill): APS's critic (Liu & Abbeel 2021)."""

    def __init__(
        self,
        input_dim: int,
        action_dim: int,
        hidden_dim: int,
        task_dim: int = 0,
        feature_dim: int | None = None,
    ):
        super().__init__()
        self.task_dim = task_dim
        self.action_in_trunk = feature_dim is None
        if self.action_in_trunk:
            self.trunk = layer_norm_trunk(input_dim + action_dim, hidden_dim)
            head_input, depth = hidden_dim, 1
        else:
            self.trunk = layer_norm_trunk(input_dim, feature_dim)
            head_input, depth = feature_dim + action_dim, 2
        out = task_dim if task_dim else 1
        self.q1 = mlp(head_input, hidden_dim, out, depth)
        self.q2 = mlp(head_input, hidden_dim, out, depth)
        self.apply(orthogonal_init)

    def forward(self, observation: torch.Tensor, action: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.action_in_trunk:
            h = self.trunk(torch.cat([observation, action], dim=-1))
        else:
            h = torch.cat([self.trunk(observation), action], dim=-1)
        if not self.task_dim:
            return self.q1(h).squeeze(-1), self.q2(h).squeeze(-1)
        task = observation[:, -self.task_dim :]
        return (self.q1(h) * task).sum(-1), (self.q2(h) * task).sum(-1)


class DDPGAgent(Agent):
    """DDPG backbone. Defaults are URLB's (states): hidden 1024, batch 1024, lr 1e-4,
    noise 0.2 clipped at 0.3 for targets, critic target tau 0.01; the runner's preset sets
    the update-to-data ratio (URLB: one update every 2 env steps) and n-step (3).

    Pixels only: ``feature_dim`` (50) is the trunks' width; ``update_encoder`` (true) trains
    the shared encoder, false freezes it (features without gradients, no optimiser)."""

    def __init__(
        self,
        obs_dim: int,
        action_dim: int,
        hidden_dim: int = 1024,
        lr: float = 1e-4,
        batch_size: int = 1024,
        stddev: float = 0.2,
        stddev_clip: float = 0.3,
        critic_target_tau: float = 0.01,
        init_critic: bool = True,
        feature_dim: int = 50,
        update_encoder: bool = True,
        reward_model=None,
    ):
        super().__init__(obs_dim, action_dim, reward_model, shared_encoder=True)
        self.batch_size = batch_size
        self.stddev, self.stddev_clip = stddev, stddev_clip
        self.critic_target_tau = critic_target_tau
        self.init_critic = init_critic
        input_dim = self.repr_dim + self.skill_dim
        width = feature_dim if self.pixels else None
        self.actor = DeterministicActor(input_dim, action_dim, hidden_dim, width)
        self.critic = DoubleQCritic(input_dim, action_dim, hidden_dim, self.critic_task_dim, width)
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        self.actor_opt = torch.optim.Adam(self.actor.parameters(), lr=lr)
        self.critic_opt = torch.optim.Adam(self.critic.parameters(), lr=lr)
        if self.pixels and update_encoder:
            self.encoder_opt = torch.optim.Adam(self.encoder.parameters(), lr=lr)

    def optimisers(self):
        encoder = {"encoder": self.encoder_opt} if self.encoder_opt is not None else {}
        return {"actor": self.actor_opt, "critic": self.critic_opt, **encoder}

    @torch.no_grad()
    def act(self, observation: torch.Tensor, state: TensorDict, explore: bool) -> torch.Tensor:
        dist = self.actor(self.inputs(self.encoder(observation), state), self.stddev)
        return dist.sample() if explore else dist.mean

    def update_critic(self, observation, action, reward, discount, next_observation):
        with torch.no_grad():
            next_action = self.actor(next_observation, self.stddev).sample(clip=self.stddev_clip)
            target = td_target(reward, discount, *self.critic_target(next_observation, next_action))
        return critic_step(self, observation, action, target)

    def update_actor(self, observation, step):
        action = self.actor(observation, self.stddev).sample(clip=self.stddev_clip)
        with frozen(self.critic):
            loss = -torch.min(*self.critic(observation, action)).mean()
        optimise(self.actor_opt, loss)
        return {"actor_loss": loss.detach()}

    def init_from(self, pretrained: DDPGAgent) -> None:
        transfer_actor_critic(self, pretrained)
