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

Transfer to finetuning (``init_from``, ``agents/actor_critic.py``): the encoder (pixels), the
actor, and the critic trunk when ``init_critic`` (URLB's default); the Q heads, target critic
and optimisers start fresh (``init_critic_target=true`` also copies the trunk into the
target). A reward model (exploration or skill agents, ``agents/base.py``) rides on this
backbone.

Skill agents (URLB's ``meta``): replay stores with each transition the skill that chose its
action (``replay_skill="acting"``, the default). URLB's loop stores the skill of the step
before, and on an episode's first transition its reset skill, which a schedule that redraws
at step 0 never acts on (``"previous"``: for exact reproduction; one transition in
``update_skill_every_step`` then carries a skill that did not choose its action). Evaluation
episodes start from :meth:`agents.base.Agent.evaluation_state` (URLB's DIAYN and SMM: one
skill for every episode, see ``SkillModel.evaluation_skill``).

Randomness (exploration and target-policy noise) comes from ``randomness``
(``agents.parts.nets.Randomness``: torch's generator), which the reference-parity tests
replace with URLB's recorded draws.
"""

from __future__ import annotations

import copy

import torch
from tensordict import TensorDict
from torch import nn

from agents.actor_critic import ActorCriticAgent, frozen
from agents.parts.critics import DoubleQCritic
from agents.parts.nets import (
    TORCH_RANDOMNESS,
    TruncatedNormal,
    layer_norm_trunk,
    mlp,
    optimise,
    orthogonal_init,
)

REPLAY_SKILLS = ("acting", "previous")


def td_target(reward: torch.Tensor, discount: torch.Tensor, next_q1: torch.Tensor, next_q2: torch.Tensor):
    """Clipped double-Q target ``r + discount * min(Q1', Q2')``; all ``(B,)`` or ``(B, 1)``."""
    if not reward.shape == discount.shape == next_q1.shape == next_q2.shape:
        raise ValueError(f"td_target shapes differ: {reward.shape}, {discount.shape}, {next_q1.shape}")
    return reward + discount * torch.min(next_q1, next_q2)


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


class DDPGAgent(ActorCriticAgent):
    """DDPG backbone. Defaults are URLB's (states): hidden 1024, batch 1024, lr 1e-4,
    noise 0.2 clipped at 0.3 for targets, critic target tau 0.01; the runner's preset sets
    the update-to-data ratio (URLB: one update every 2 env steps) and n-step (3).

    Pixels only: ``feature_dim`` (50) is the trunks' width; ``update_encoder`` (true) trains
    the shared encoder, false freezes it (features without gradients, no optimiser).

    ``init_critic_target``: finetuning also copies the transferred critic into the target
    (false: URLB's fresh target). ``replay_skill``: ``acting`` (the skill that chose the
    action) or ``previous`` (URLB's pairing; module docstring)."""

    randomness = TORCH_RANDOMNESS

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
        init_critic_target: bool = False,
        replay_skill: str = "acting",
        self_reference=None,
    ):
        super().__init__(
            obs_dim,
            action_dim,
            reward_model,
            batch_size,
            critic_target_tau,
            init_critic,
            self_reference=self_reference,
        )
        if replay_skill not in REPLAY_SKILLS:
            raise ValueError(f"replay_skill must be one of {REPLAY_SKILLS}, got {replay_skill!r}")
        self.stddev, self.stddev_clip = stddev, stddev_clip
        self.init_critic_target = init_critic_target
        self.replay_skill = replay_skill
        input_dim = self.repr_dim + self.skill_dim + self.reference_dim
        width = feature_dim if self.pixels else None
        self.actor = DeterministicActor(input_dim, action_dim, hidden_dim, width)
        self.critic = DoubleQCritic(input_dim, action_dim, hidden_dim, self.critic_task_dim, width)
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        self.actor_opt = torch.optim.Adam(self.actor.parameters(), lr=lr)
        self.critic_opt = torch.optim.Adam(self.critic.parameters(), lr=lr)
        self.train_encoder(lr, update_encoder)

    def optimisers(self):
        encoder = {"encoder": self.encoder_opt} if self.encoder_opt is not None else {}
        return {"actor": self.actor_opt, "critic": self.critic_opt, **encoder}

    # -- carried skills ---------------------------------------------------------------------------
    def init_state(self, num_envs: int, device: torch.device | str = "cpu") -> TensorDict:
        state = super().init_state(num_envs, device)
        if self.skill_dim and self.replay_skill == "previous":
            state["replay_skill"] = self.reset_skill(state)
        return state

    def observe(self, state: TensorDict, step_output: TensorDict) -> TensorDict:
        if not (self.skill_dim and self.replay_skill == "previous"):
            return super().observe(state, step_output)
        previous = state["skill"]
        state = super().observe(state, step_output)
        state["replay_skill"] = torch.where(step_output["done"][:, None], self.reset_skill(state), previous)
        return state

    def reset_skill(self, state: TensorDict) -> torch.Tensor:
        """What URLB stores with an episode's first transition: the skill drawn at reset,
        which a schedule that redraws at step 0 replaces before acting (a fresh draw); with
        one skill per episode, the acting skill."""
        model = self.reward_model
        if model.update_skill_every_step == 0:
            return state["skill"]
        return model.draw(state.batch_size[0], state["skill"].device)

    def replay_extras(self, state: TensorDict) -> dict[str, torch.Tensor]:
        if self.skill_dim and self.replay_skill == "previous":
            return {"skill": state["replay_skill"]}
        return super().replay_extras(state)

    # -- acting and learning ------------------------------------------------------------------------
    @torch.no_grad()
    def act(self, observation: torch.Tensor, state: TensorDict, explore: bool) -> torch.Tensor:
        dist = self.actor(self.act_inputs(observation, state, explore), self.stddev)
        return dist.sample(randomness=self.randomness) if explore else dist.mean

    def update_critic(self, observation, action, reward, discount, next_observation):
        with torch.no_grad():
            dist = self.actor(next_observation, self.stddev)
            next_action = dist.sample(clip=self.stddev_clip, randomness=self.randomness)
            target = td_target(reward, discount, *self.critic_target(next_observation, next_action))
        return self.critic_step(observation, action, target)

    def update_actor(self, observation, step):
        dist = self.actor(observation, self.stddev)
        action = dist.sample(clip=self.stddev_clip, randomness=self.randomness)
        with frozen(self.critic):
            loss = -torch.min(*self.critic(observation, action)).mean()
        optimise(self.actor_opt, loss)
        return {"actor_loss": loss.detach()}
