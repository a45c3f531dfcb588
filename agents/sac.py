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

METRA's SAC (github.com/seohongpark/METRA, garage's ``SAC`` as ``iod/sac_utils.py`` runs it)
is these options, each of whose defaults keeps the SAC above: ``actor_layout="garage"`` (its
policy, :class:`GaussianActor`), ``shared_critic_trunk=False`` (two independent 2-hidden-layer
ReLU Q networks, no LayerNorm) and ``critic_loss_weight=0.5`` (0.5 x MSE per head).
``bootstrap_time_limits=False`` ends the return at a time limit as METRA's paths mark their
last step done; true (the default) bootstraps through it, which is right where the time limit
is not part of the observation, as URLB's is not (Pardo et al., "Time Limits in Reinforcement
Learning", ICML 2018). ``updates_per_frame`` sets this agent's own update-to-data ratio per
agent step (``Agent.own_update_ratio``; None: the protocol's).

Transfer to finetuning (``init_from``): the encoder (pixels), the actor and, when
``init_critic``, the critic trunk (an ensemble on states has none: its heads read ``(s, a)``;
neither has METRA's separate Q networks); temperature, Q heads, target and optimisers start fresh.

Randomness (the policy's noise) comes from ``randomness`` (``agents.parts.nets.Randomness``:
torch's generator), which the reference-parity tests replace with the draws recorded from the
authors' code.
"""

from __future__ import annotations

import copy
import math

import torch
from tensordict import TensorDict
from torch import nn

from agents.actor_critic import ActorCriticAgent, critic_loss, frozen
from agents.parts.critics import DoubleQCritic, EnsembleCritic
from agents.parts.nets import (
    TORCH_RANDOMNESS,
    Randomness,
    gaussian_log_prob_tanh,
    layer_norm_trunk,
    mlp,
    optimise,
    orthogonal_init,
    soft_update,
)

LOG_STD_MIN, LOG_STD_MAX = -5.0, 2.0
# garage's GaussianMLPTwoHeadedModule as METRA builds its policy: std in [1e-6, e^2].
GARAGE_LOG_STD_MIN, GARAGE_LOG_STD_MAX = math.log(1e-6), 2.0
GARAGE_TANH_EPSILON = 1e-6  # garage's TanhNormal.log_prob: log(1 - tanh(u)^2 + epsilon)
# RLPD's TanhNormal (SUPE's high-level policy): log std clipped hard into [-20, 2].
RLPD_LOG_STD_MIN, RLPD_LOG_STD_MAX = -20.0, 2.0
ACTOR_LAYOUTS = ("pytorch_sac", "garage", "rlpd")


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


def garage_log_prob_tanh(mean: torch.Tensor, log_std: torch.Tensor, raw: torch.Tensor) -> torch.Tensor:
    """garage's ``TanhNormal.log_prob`` (METRA's policy), ``(B,)``: the Gaussian log-density
    of ``raw`` minus ``log(1 - tanh(raw)^2 + 1e-6)``, summed over the action dimension. The
    epsilon bounds the correction where ``tanh`` saturates (the exact form is
    :func:`agents.parts.nets.gaussian_log_prob_tanh`)."""
    std = log_std.exp()
    gaussian = -((raw - mean) ** 2) / (2 * std**2) - std.log() - math.log(math.sqrt(2 * math.pi))
    correction = torch.log(1 - torch.tanh(raw) ** 2 + GARAGE_TANH_EPSILON)
    return (gaussian - correction).sum(-1)


class GaussianActor(nn.Module):
    """MLP -> (mean, log std); actions ``tanh(u)``, ``u ~ N(mean, std)``. Pixels
    (``feature_dim`` set): a LayerNorm trunk to ``feature_dim`` before the MLP; ``frame_encoder``
    (a factory) set: a frame encoder of its own instead (``agents.parts.encoders.FlatFrameEncoder``).

    ``layout`` (``ACTOR_LAYOUTS``):

    * ``pytorch_sac``: ReLU hidden layers, orthogonal weights, the log std soft-clamped into
      ``[-5, 2]`` through a tanh, the exact tanh correction of the log-probability;
    * ``garage``: METRA's policy (garage's ``GaussianMLPTwoHeadedModule`` with ``TanhNormal``,
      METRA's ``tests/main.py``): tanh hidden layers with Xavier-uniform weights, mean and log
      std heads with Xavier-normal weights scaled by 0.1 and zero biases (std 1 at first), the
      log std clamped hard into ``[log 1e-6, 2]`` and :func:`garage_log_prob_tanh`. Its two
      heads are one linear layer here (``net``'s last: mean rows, then log std rows);
    * ``rlpd``: RLPD's policy (SUPE's high level: ``TanhNormal`` on ``MLP((256,) * 3,
      activate_final=True)``): three ReLU hidden layers, Xavier-uniform weights and zero biases
      everywhere (each head initialised on its own), the log std clipped hard into
      ``[-20, 2]``, the exact tanh correction.
    """

    def __init__(
        self,
        input_dim: int,
        action_dim: int,
        hidden_dim: int,
        feature_dim: int | None = None,
        layout: str = "pytorch_sac",
        frame_encoder=None,
    ):
        super().__init__()
        if layout not in ACTOR_LAYOUTS:
            raise ValueError(f"actor layout {layout!r}; known: {', '.join(ACTOR_LAYOUTS)}")
        self.layout = layout
        if frame_encoder is not None:  # its own frame encoder (pixel_encoders=per_network)
            self.trunk = frame_encoder()
            input_dim += self.trunk.embed_dim - self.trunk.frame_size
        elif feature_dim is None:
            self.trunk = nn.Identity()
        else:
            self.trunk = layer_norm_trunk(input_dim, feature_dim)
            input_dim = feature_dim
        if layout == "pytorch_sac":
            self.net = mlp(input_dim, hidden_dim, 2 * action_dim)
            self.apply(orthogonal_init)
        elif layout == "rlpd":
            self.net = mlp(input_dim, hidden_dim, 2 * action_dim, depth=3)
            self.trunk.apply(orthogonal_init)
            with torch.no_grad():
                for layer in self.net[::2]:
                    for rows in [layer.weight] if layer is not self.net[-1] else layer.weight.chunk(2):
                        nn.init.xavier_uniform_(rows)
                    nn.init.zeros_(layer.bias)
        else:
            self.net = nn.Sequential(
                nn.Linear(input_dim, hidden_dim),
                nn.Tanh(),
                nn.Linear(hidden_dim, hidden_dim),
                nn.Tanh(),
                nn.Linear(hidden_dim, 2 * action_dim),
            )
            self.trunk.apply(orthogonal_init)
            with torch.no_grad():
                for layer in self.net[:-1:2]:
                    nn.init.xavier_uniform_(layer.weight)
                    nn.init.zeros_(layer.bias)
                head = self.net[-1]
                for rows in head.weight.chunk(2):  # garage's xavier_normal_ex(gain=1, multiplier=0.1)
                    rows.normal_(0.0, 0.1 * math.sqrt(2.0 / (hidden_dim + action_dim)))
                nn.init.zeros_(head.bias)

    def forward(self, observation: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, log_std = self.net(self.trunk(observation)).chunk(2, dim=-1)
        if self.layout == "garage":
            return mean, log_std.clamp(GARAGE_LOG_STD_MIN, GARAGE_LOG_STD_MAX)
        if self.layout == "rlpd":
            return mean, log_std.clamp(RLPD_LOG_STD_MIN, RLPD_LOG_STD_MAX)
        # soft clamp of the log std into [LOG_STD_MIN, LOG_STD_MAX] (keeps gradients)
        log_std = LOG_STD_MIN + 0.5 * (LOG_STD_MAX - LOG_STD_MIN) * (torch.tanh(log_std) + 1)
        return mean, log_std

    def sample(
        self, observation: torch.Tensor, randomness: Randomness = TORCH_RANDOMNESS
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """A reparameterised action and its log-probability ``(B,)``."""
        mean, log_std = self(observation)
        raw = mean + log_std.exp() * randomness.normal(mean.shape, mean)
        log_prob = garage_log_prob_tanh if self.layout == "garage" else gaussian_log_prob_tanh
        return torch.tanh(raw), log_prob(mean, log_std, raw)


class SACAgent(ActorCriticAgent):
    """SAC backbone; defaults follow METRA's SAC (hidden 1024, lr 1e-4, batch 256).
    Pixels only: ``feature_dim`` (50) and ``update_encoder`` (true), as in DDPG.

    RLPD's critic (all defaults: today's double-Q SAC): ``num_critics`` Q heads (2: URLB's
    double-Q critic; more: :class:`EnsembleCritic`, RLPD's 10); ``critic_subsample`` heads
    drawn per minibatch for the target's min (None: all; RLPD's 2); ``backup_entropy`` keeps
    ``-alpha log pi`` in the target (RLPD: false); ``critic_layout`` the ensemble's weights and
    LayerNorm epsilon (``urlb`` | ``rlpd``: :class:`EnsembleCritic`). ``actor_layout="rlpd"``:
    RLPD's policy.

    METRA's SAC (module docstring): ``actor_layout`` (``pytorch_sac`` | ``garage``),
    ``shared_critic_trunk`` (false: two independent Q networks; states only),
    ``critic_loss_weight`` (each head's MSE is multiplied by it: METRA 0.5),
    ``bootstrap_time_limits`` (false: a transition whose last step hit the time limit gets
    discount 0; needs the replay's ``truncated`` in the batch) and ``updates_per_frame``
    (the agent's own update ratio per agent step, None: the protocol's)."""

    randomness = TORCH_RANDOMNESS

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
        actor_layout: str = "pytorch_sac",
        critic_layout: str = "urlb",
        shared_critic_trunk: bool = True,
        critic_loss_weight: float = 1.0,
        bootstrap_time_limits: bool = True,
        updates_per_frame: float | None = None,
        pixel_encoders: str = "shared",
        pixel_encoder_depth: int = 48,
        reward_model=None,
        self_reference=None,
    ):
        super().__init__(
            obs_dim,
            action_dim,
            reward_model,
            batch_size,
            critic_target_tau,
            init_critic,
            pixel_encoders=pixel_encoders,
            pixel_encoder_depth=pixel_encoder_depth,
            self_reference=self_reference,
        )
        if num_critics < 2 or not (critic_subsample is None or 1 <= critic_subsample <= num_critics):
            raise ValueError(
                f"num_critics={num_critics} must be >= 2 and critic_subsample={critic_subsample} "
                f"None or in [1, num_critics]"
            )
        if num_critics == 2 and critic_layout != "urlb":
            raise ValueError(
                f"critic_layout={critic_layout!r} is for ensembles: set num_critics > 2 or critic_layout=urlb"
            )
        self.num_critics, self.critic_subsample = num_critics, critic_subsample
        self.backup_entropy = backup_entropy
        self.critic_loss_weight, self.bootstrap_time_limits = critic_loss_weight, bootstrap_time_limits
        self.updates_per_frame = updates_per_frame
        # Unset: -scale * action_dim (Haarnoja et al.: scale 1; METRA: 0.5).
        self.target_entropy = (
            -target_entropy_scale * float(action_dim) if target_entropy is None else target_entropy
        )
        input_dim = self.repr_dim + self.skill_dim + self.reference_dim
        width = feature_dim if self.pixels else None
        frames = self.frame_encoder
        if frames is not None:
            width = None
            if num_critics != 2 or shared_critic_trunk:
                raise ValueError(
                    "pixel_encoders=per_network gives each Q network its own encoder: set num_critics=2 "
                    "and shared_critic_trunk=false (METRA's), or pixel_encoders=shared"
                )
        self.actor = GaussianActor(input_dim, action_dim, hidden_dim, width, actor_layout, frames)
        task_dim = self.critic_task_dim
        if num_critics == 2:
            shared = shared_critic_trunk
            self.critic = DoubleQCritic(input_dim, action_dim, hidden_dim, task_dim, width, shared, frames)
        else:
            self.critic = EnsembleCritic(
                input_dim, action_dim, hidden_dim, num_critics, task_dim, width, layout=critic_layout
            )
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        self.log_alpha = nn.Parameter(torch.tensor(math.log(init_temperature)))
        self.actor_opt = torch.optim.Adam(self.actor.parameters(), lr=lr)
        self.critic_opt = torch.optim.Adam(self.critic.parameters(), lr=lr)
        self.alpha_opt = torch.optim.Adam([self.log_alpha], lr=lr)
        self.train_encoder(lr, update_encoder)

    @classmethod
    def own_update_ratio(cls, config) -> float | None:
        """``updates_per_frame`` when the config sets one (METRA's), else None: the protocol's."""
        ratio = cls.config_value(config, "updates_per_frame")
        return None if ratio is None else float(ratio)

    def optimisers(self):
        encoder = {"encoder": self.encoder_opt} if self.encoder_opt is not None else {}
        return {"actor": self.actor_opt, "critic": self.critic_opt, "alpha": self.alpha_opt, **encoder}

    @torch.no_grad()
    def act(self, observation: torch.Tensor, state: TensorDict, explore: bool) -> torch.Tensor:
        inputs = self.act_inputs(observation, state, explore)
        if explore:
            return self.actor.sample(inputs, self.randomness)[0]
        return torch.tanh(self.actor(inputs)[0])

    def encode_batch(self, batch: TensorDict) -> TensorDict:
        """As :meth:`ActorCriticAgent.encode_batch`; with ``bootstrap_time_limits=False`` the
        discount is 0 where the transition's last step was truncated (METRA's done at the end
        of a path)."""
        if not self.bootstrap_time_limits:
            if "truncated" not in batch.keys():
                raise KeyError(
                    "bootstrap_time_limits=false needs the replay batch's 'truncated' (of the "
                    "transition's last step); this replay does not provide it"
                )
            batch = batch.clone(False)
            running = ~batch["truncated"].reshape(-1)
            batch["discount"] = batch["discount"] * running.to(batch["discount"].dtype)
        return super().encode_batch(batch)

    def update_critic(self, observation, action, reward, discount, next_observation):
        alpha = self.log_alpha.exp().detach()
        with torch.no_grad():
            next_action, next_log_prob = self.actor.sample(next_observation, self.randomness)
            next_qs = self.critic_target(next_observation, next_action)
            if self.critic_subsample is not None:  # RLPD: a fresh subset per minibatch
                next_qs = random_heads(next_qs, self.critic_subsample)
            entropy_alpha = alpha if self.backup_entropy else None
            target = soft_td_target(reward, discount, next_qs, next_log_prob, entropy_alpha)
        return self.critic_step(observation, action, target)

    def critic_step(self, observation, action, target) -> dict[str, torch.Tensor]:
        """As :meth:`ActorCriticAgent.critic_step`, each head's loss times ``critic_loss_weight``
        (METRA: 0.5 x MSE per head)."""
        loss, metrics = critic_loss(self.critic(observation, action), target)
        if self.critic_loss_weight != 1.0:
            loss = self.critic_loss_weight * loss
            metrics["critic_loss"] = loss.detach()
        optimise(self.critic_opt, loss)
        soft_update(self.critic_target, self.critic, self.critic_target_tau)
        return metrics

    def update_actor(self, observation, step):
        action, log_prob = self.actor.sample(observation, self.randomness)
        alpha = self.log_alpha.exp()
        with frozen(self.critic):
            qs = self.critic(observation, action)
            q = torch.min(*qs) if self.num_critics == 2 else qs.mean(0)  # RLPD: the ensemble's mean
            loss = (alpha.detach() * log_prob - q).mean()
        optimise(self.actor_opt, loss)
        alpha_loss = temperature_loss(self.log_alpha, log_prob, self.target_entropy)
        optimise(self.alpha_opt, alpha_loss)
        return {
            "actor_loss": loss.detach(),
            "alpha": alpha.detach(),
            "alpha_loss": alpha_loss.detach(),
            "entropy": -log_prob.mean().detach(),
        }
