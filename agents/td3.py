"""Offline TD3 on one task's relabelled reward: the supervised ceiling of zero-shot agents.

Yarats et al., "Don't Change the Algorithm, Change the Data: Exploratory Data for Offline
Reinforcement Learning" (ExORL), 2022: a reward-free dataset relabelled with a task's reward
and plain TD3 trained on it, no behaviour-cloning term. ExORL's TD3 is DrQ-v2's actor-critic
on states (github.com/denisyarats/exorl@a3fb07a, ``agent/td3.py``), which is this project's DDPG
backbone (``agents/ddpg.py``: clipped double Q, target policy noise, no target actor, the same
actor) with 1-step transitions and two independent Q networks (``critic_layout=exorl``):

    Q_i(s, a) <- r_task(s, a, s') + g (1 - terminal) min_i Q'_i(s', pi(s') + clip(eps, c))
    max_pi  min_i Q_i(s, pi(s) + clip(eps, c))

It *is* the DDPG backbone (no copy of its update): pretraining (``pretrain.py agent=td3
agent.task=walker_run dataset=<path>``) feeds DDPG's update the dataset's transitions with the
task's column as reward and ``discount`` = g (0 past a terminal). ``zero_shot.py`` evaluates the
snapshot on its task alone (``mode: offline`` records); it is not finetuned online (``init_from``
refuses).
"""

from __future__ import annotations

import copy

import torch
from tensordict import TensorDict
from torch import nn

from agents.ddpg import DDPGAgent
from agents.parts.nets import layer_norm_trunk, mlp, orthogonal_init
from urlb.data.datasets import DatasetSampler, task_column


class DiscountedTransitions:
    """A dataset sampler seen as a replay of 1-step transitions: ``sample`` adds ``discount``."""

    def __init__(self, sampler, discount: float):
        self.sampler, self.discount = sampler, discount

    def sample(self, batch_size: int) -> TensorDict:
        batch = self.sampler.sample(batch_size)
        batch["discount"] = self.discount * (~batch["terminated"]).to(batch["observation"].dtype)
        return batch


CRITIC_LAYOUTS = ("exorl", "urlb")


class IndependentQCritic(nn.Module):
    """ExORL's TD3 critic: two Q networks of their own, each ``Linear -> LayerNorm -> Tanh ->
    Linear -> ReLU -> Linear`` on ``(s, a)`` (URLB's shares the first layer between them)."""

    def __init__(self, input_dim: int, action_dim: int, hidden_dim: int):
        super().__init__()
        self.q1, self.q2 = (
            nn.Sequential(
                layer_norm_trunk(input_dim + action_dim, hidden_dim), mlp(hidden_dim, hidden_dim, 1, 1)
            )
            for _ in range(2)
        )
        self.apply(orthogonal_init)

    def forward(self, observation: torch.Tensor, action: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = torch.cat([observation, action], dim=-1)
        return self.q1(h).squeeze(-1), self.q2(h).squeeze(-1)


class OfflineTD3Agent(DDPGAgent):
    """DDPG's backbone trained offline on ``task``'s reward (ExORL's TD3). Defaults are ExORL's
    (``agent/td3.yaml``, ``config.yaml``): hidden 1024, lr 1e-4, batch 1024, noise 0.2 clipped at
    0.3, tau 0.01, discount 0.99, 500k updates.

    Args:
        task: the task whose reward column trains the critic (required: None is refused).
        discount: g.
        critic_layout: ``exorl`` (ExORL's, default: two independent Q networks) or ``urlb`` (the
            DDPG backbone's shared first layer).
        offline_updates: the offline budget (``offline.updates``).
    """

    pretrains_offline = True
    infers_task = False  # zero_shot.py: evaluated on its own task

    def __init__(
        self,
        obs_dim,
        action_dim: int,
        task: str | None = None,
        hidden_dim: int = 1024,
        lr: float = 1e-4,
        batch_size: int = 1024,
        stddev: float = 0.2,
        stddev_clip: float = 0.3,
        critic_target_tau: float = 0.01,
        discount: float = 0.99,
        critic_layout: str = "exorl",
        offline_updates: int = 500_000,
    ):
        if not isinstance(obs_dim, int):
            raise ValueError(
                f"agent=td3 learns from state datasets; obs_dim={obs_dim} is frames: use obs=states"
            )
        if critic_layout not in CRITIC_LAYOUTS:
            raise ValueError(f"critic_layout={critic_layout!r}; use one of {', '.join(CRITIC_LAYOUTS)}")
        if task is None:
            raise ValueError("agent=td3 trains on one task's reward: pass agent.task=<task>, e.g. walker_run")
        super().__init__(
            obs_dim,
            action_dim,
            hidden_dim=hidden_dim,
            lr=lr,
            batch_size=batch_size,
            stddev=stddev,
            stddev_clip=stddev_clip,
            critic_target_tau=critic_target_tau,
        )
        self.task, self.discount, self.offline_updates = task, discount, offline_updates
        self.critic_layout = critic_layout
        if critic_layout == "exorl":
            self.critic = IndependentQCritic(obs_dim, action_dim, hidden_dim)
            self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
            self.critic_opt = torch.optim.Adam(self.critic.parameters(), lr=lr)

    def set_task(self, task_index: int | None) -> None:
        """Offline pretraining (``None``) keeps the task's column, found at the first update."""
        if task_index is not None:
            self.task_index = task_index

    def update(self, replay, step: int):
        """DDPG's update on the dataset (a sampler) or, online, on the replay."""
        if isinstance(replay, DatasetSampler):  # offline pretraining
            columns = replay.fields["task_reward"].shape[1]
            self.task_index = task_column(replay.meta, self.task, columns)
            replay = DiscountedTransitions(replay, self.discount)
        return super().update(replay, step)

    def init_from(self, pretrained) -> None:
        """Not defined: the offline baseline is evaluated as trained."""
        raise ValueError(
            "agent=td3 is an offline baseline: evaluate it with python zero_shot.py snapshot=<its snapshot>"
        )
