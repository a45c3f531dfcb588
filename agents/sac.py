"""SAC with automatic entropy tuning: the backbone of the DIAYN and METRA papers.

Haarnoja et al., "Soft Actor-Critic Algorithms and Applications", 2018. Tanh-squashed
Gaussian policy, twin Q heads with a Polyak-averaged target, temperature learned so that
the policy's entropy tracks ``target_entropy`` (default ``-target_entropy_scale * action_dim``,
the scale 1 in Haarnoja et al. and 0.5 in METRA's code).

    Q_i(s_t, a_t) <- sum_{k<n} g^k r_{t+k} + g^n (min_i Q'_i(s', a') - alpha log pi(a'|s')),  a' ~ pi(s')
    actor: min  E[alpha log pi(a|s) - min_i Q_i(s, a)];  alpha: min  -alpha (log pi + target_entropy)

The critic is URLB's double-Q critic (LayerNorm trunk), shared with DDPG. ``num_critics > 2``
makes it RLPD's (Ball et al., "Efficient Online Reinforcement Learning with Offline Data", ICML
2023; github.com/ikostrikov/rlpd, whose SACLearner SUPE's code keeps): an ensemble of
``num_critics`` Q networks, each its own MLP of three hidden layers with LayerNorm before every
ReLU (``critic_layer_norm``), all regressed on one target whose min runs over a random subset of
``critic_subsample`` target heads, drawn afresh per minibatch (REDQ's M, Chen et al. 2021), and
an actor that maximises the mean over all heads; ``backup_entropy=False`` drops the entropy term
from the target, as RLPD's runs do. The loss sums the heads' errors where RLPD averages them:
the same Adam steps, up to its epsilon. The two-head critic keeps the min in the actor. Pixels
(``obs_dim = (C, H, W)``) go through the same shared DrQ-v2 encoder as DDPG's, with the same
``feature_dim`` trunks (URLB's pixel layout, which has no SAC: the actor here is a LayerNorm
trunk to ``feature_dim`` then two hidden ReLU layers to the Gaussian's mean and log std),
the encoder's own Adam and ``update_encoder`` (see ``agents/ddpg.py``).

Transfer to finetuning (``init_from``): the encoder (pixels), the actor and, when
``init_critic``, the critic trunk (an ensemble on states has none: its heads read ``(s, a)``);
temperature, Q heads, target and optimisers start fresh.
"""

from __future__ import annotations

import copy
import math

import torch
from tensordict import TensorDict
from torch import nn
from torch.nn import functional as F

from agents.base import Agent
from agents.ddpg import DoubleQCritic, critic_step, frozen, transfer_actor_critic
from agents.parts.nets import gaussian_log_prob_tanh, layer_norm_trunk, mlp, optimise, orthogonal_init

LOG_STD_MIN, LOG_STD_MAX = -5.0, 2.0


def soft_td_target(reward, discount, next_qs, next_log_prob, alpha):
    """``r + discount * (min_i Q'_i - alpha * log pi(a'|s'))``, or ``r + discount * min_i Q'_i``
    when ``alpha`` is None (RLPD's ``backup_entropy=False``).

    Args:
        reward, discount, next_log_prob: ``(B,)``.
        next_qs: the target heads taking part in the min: a sequence of ``(B,)`` or ``(K, B)``.
        alpha: the temperature, or None for no entropy term.
    """
    next_qs = torch.stack(list(next_qs)) if not torch.is_tensor(next_qs) else next_qs
    if not reward.shape == discount.shape == next_qs.shape[1:] == next_log_prob.shape:
        raise ValueError(
            f"soft_td_target shapes differ: {tuple(reward.shape)}, {tuple(discount.shape)}, "
            f"{tuple(next_qs.shape)}, {tuple(next_log_prob.shape)}"
        )
    next_q = next_qs.amin(0)
    if alpha is None:
        return reward + discount * next_q
    return reward + discount * (next_q - alpha * next_log_prob)


def random_heads(qs, size: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """``(size, B)``: ``size`` of the heads ``qs`` (``(N, B)`` or a sequence of ``(B,)``)
    drawn without replacement, as RLPD's ``subsample_ensemble`` draws target heads."""
    qs = torch.stack(list(qs)) if not torch.is_tensor(qs) else qs
    if not 1 <= size <= len(qs):
        raise ValueError(f"cannot draw {size} of {len(qs)} Q heads")
    device = qs.device if generator is None else generator.device
    return qs[torch.randperm(len(qs), generator=generator, device=device)[:size].to(qs.device)]


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


class EnsembleLinear(nn.Module):
    """``num`` independent linear layers applied at once: ``(num, B, in) -> (num, B, out)``
    (a ``(B, in)`` input is shared by all); orthogonal weights, zero biases, per member."""

    def __init__(self, num: int, input_dim: int, output_dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num, input_dim, output_dim))
        self.bias = nn.Parameter(torch.zeros(num, 1, output_dim))
        with torch.no_grad():
            for weight in self.weight:
                nn.init.orthogonal_(weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 2:
            x = x.expand(len(self.weight), -1, -1)
        return torch.baddbmm(self.bias, x, self.weight)


class EnsembleLayerNorm(nn.Module):
    """LayerNorm over the last dimension with each member's own gain and shift."""

    def __init__(self, num: int, dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(num, 1, dim))
        self.bias = nn.Parameter(torch.zeros(num, 1, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, x.shape[-1:]) * self.weight + self.bias


class EnsembleCritic(nn.Module):
    """RLPD's critic: ``num_critics`` Q networks, each ``depth`` hidden layers of Linear,
    LayerNorm, ReLU (RLPD's ``MLP(use_layer_norm=True)``; SUPE's hidden dims (256, 256, 256))
    and a linear output, evaluated as one batched network; ``forward`` gives ``(N, B)``.

    States (``feature_dim`` None): every network reads ``(s, a)`` (``trunk`` is empty).
    Pixels: one shared LayerNorm trunk compresses the encoder's features to ``feature_dim``
    and the action joins after it, as in :class:`DoubleQCritic`. ``task_dim > 0``: successor
    features dotted with the task, as there (APS)."""

    def __init__(
        self,
        input_dim: int,
        action_dim: int,
        hidden_dim: int,
        num_critics: int,
        task_dim: int = 0,
        feature_dim: int | None = None,
        depth: int = 3,
    ):
        super().__init__()
        self.task_dim = task_dim
        if feature_dim is None:
            self.trunk, width = nn.Identity(), input_dim + action_dim
        else:
            self.trunk, width = layer_norm_trunk(input_dim, feature_dim), feature_dim + action_dim
            self.trunk.apply(orthogonal_init)
        layers: list[nn.Module] = []
        for _ in range(depth):
            layers += [
                EnsembleLinear(num_critics, width, hidden_dim),
                EnsembleLayerNorm(num_critics, hidden_dim),
            ]
            layers.append(nn.ReLU(inplace=True))
            width = hidden_dim
        layers.append(EnsembleLinear(num_critics, width, task_dim or 1))
        self.heads = nn.Sequential(*layers)

    def forward(self, observation: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        out = self.heads(torch.cat([self.trunk(observation), action], dim=-1))  # (N, B, task_dim or 1)
        if not self.task_dim:
            return out.squeeze(-1)
        return (out * observation[:, -self.task_dim :]).sum(-1)


class SACAgent(Agent):
    """SAC backbone; defaults follow METRA's SAC (hidden 1024, lr 1e-4, batch 256).
    Pixels only: ``feature_dim`` (50) and ``update_encoder`` (true), as in DDPG.

    RLPD's critic (all defaults: today's double-Q SAC): ``num_critics`` Q heads (2: URLB's
    double-Q critic; more: :class:`EnsembleCritic`, RLPD's 10); ``critic_subsample`` heads
    drawn per minibatch for the target's min (None: all; RLPD's 2); ``backup_entropy`` keeps
    ``-alpha log pi`` in the target (RLPD: false)."""

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
        num_critics: int = 2,
        critic_subsample: int | None = None,
        backup_entropy: bool = True,
        reward_model=None,
    ):
        super().__init__(obs_dim, action_dim, reward_model, shared_encoder=True)
        if num_critics < 2 or not (critic_subsample is None or 1 <= critic_subsample <= num_critics):
            raise ValueError(
                f"num_critics={num_critics} must be >= 2 and critic_subsample={critic_subsample} "
                f"None or in [1, num_critics]"
            )
        self.num_critics, self.critic_subsample = num_critics, critic_subsample
        self.backup_entropy = backup_entropy
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
        if num_critics == 2:
            self.critic = DoubleQCritic(input_dim, action_dim, hidden_dim, self.critic_task_dim, width)
        else:
            task_dim = self.critic_task_dim
            self.critic = EnsembleCritic(input_dim, action_dim, hidden_dim, num_critics, task_dim, width)
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
            next_qs = self.critic_target(next_observation, next_action)
            if self.critic_subsample is not None:  # RLPD: a fresh subset per minibatch
                next_qs = random_heads(next_qs, self.critic_subsample)
            entropy_alpha = alpha if self.backup_entropy else None
            target = soft_td_target(reward, discount, next_qs, next_log_prob, entropy_alpha)
        return critic_step(self, observation, action, target)

    def update_actor(self, observation, step):
        action, log_prob = self.actor.sample(observation)
        alpha = self.log_alpha.exp()
        with frozen(self.critic):
            qs = self.critic(observation, action)
            q = torch.min(*qs) if self.num_critics == 2 else qs.mean(0)  # RLPD: the ensemble's mean
            loss = (alpha.detach() * log_prob - q).mean()
        optimise(self.actor_opt, loss)
        optimise(self.alpha_opt, temperature_loss(self.log_alpha, log_prob, self.target_entropy))
        return {"actor_loss": loss.detach(), "alpha": alpha.detach(), "entropy": -log_prob.mean().detach()}

    def init_from(self, pretrained: SACAgent) -> None:
        transfer_actor_critic(self, pretrained)
