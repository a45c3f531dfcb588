"""Dreamer: a latent world model learned from replay sequences, and an actor-critic trained
in its imagination.

DreamerV2 (Hafner et al., "Mastering Atari with Discrete World Models", ICLR 2021) as
Rajeswar et al. run it on URLB ("Mastering the Unsupervised Reinforcement Learning
Benchmark from Pixels", ICML 2023): their settings are the defaults here.

    model:  min E_q[ sum_t -ln p(o_t | s_t) - ln p(r_t | s_t) + KL_bal(q(z_t | h_t, o_t) || p(z_t | h_t)) ]
    critic: min sum_t w_t (v(s_t) - sg(R^lambda_t))^2 / 2          (imagined s_t, horizon 15)
    actor:  max sum_t w_t (R^lambda_t + eta H[pi(. | s_t)])        (gradients through the dynamics)

Reward-free pretraining trains the world model without a reward head and the actor-critic
on the intrinsic reward of a latent reward model (:class:`agents.base.RewardModel` built on
the model's features): Plan2Explore's ensemble disagreement (``agents/plan2explore.py``),
or RND and APT on latent features, computed on the imagined transitions
``(s_t, a_t, s_{t+1})`` and trained on the posterior ones of the replay.

Finetuning (``init_from``): the world model (encoder, RSSM, decoder) and the actor
transfer, as Rajeswar et al. do. The reward head starts fresh (it never saw a reward) and
learns the task reward from the new data with gradients into the model; the critic starts
fresh unless ``init_critic`` (its values are of the intrinsic reward); optimisers start
fresh. The reward model is not used.

Parity: ``tests/reference/test_dreamer_parity.py`` replays Plan2Explore-on-Dreamer updates
recorded from mazpie/mastering-urlb (pixels) to 1e-5: the world-model loss (KL balance, free
nats), imagination, the actor's dynamics gradient, the critic with its slow copy, the
disagreement ensemble and its reward. Kept departures (docs/fidelity.md):
float32 where theirs trains in mixed precision (``precision: 16``); no reward head trained
while pretraining (theirs fits the extrinsic reward on stop-gradient features and never
transfers it); windows of ``batch_length`` transitions (``batch_length + 1`` frames, theirs
``batch_length`` frames); the slow critic starts as a copy of the critic (theirs as an
independent initialisation until its first copy, after the first update).

Sequences come from the shared replay (``ReplayBuffer.sample_sequences``: windows of
``batch_length`` steps inside one episode), whose window the runner sizes from
:meth:`DreamerAgent.replay_nstep`. The carried state per world is the posterior latent and
the last action: ``act`` filters the observation into it, ``observe`` resets it where an
episode ended. During the seed frames the runner acts at random without calling ``act``;
the first ``act`` after them filters from the initial latent, as at an episode start.
"""

from __future__ import annotations

import copy

import torch
from tensordict import TensorDict

from agents.base import Agent
from agents.parts.behaviour import actor_loss, critic_loss
from agents.parts.nets import Randomness, clipped_step, hard_update
from agents.parts.world_model import (
    RSSM,
    Actor,
    RewardScale,
    elu_mlp,
    kl_balance_loss,
    lambda_return,
    observation_decoder,
    observation_encoder,
    observation_target,
)


class DreamerAgent(Agent):
    """DreamerV2 on URLB.

    Args:
        obs_dim: observation size, or shape ``(C, H, W)`` for frames (the encoder follows it).
        hidden_dim: width of the encoder, decoder, reward, actor and critic MLPs (400).
        batch_size: transitions per update: ``batch_size // batch_length`` sequences
            (Rajeswar et al.: 50 sequences of 50 steps); presets scale it like the others'.
        batch_length: steps per replay sequence.
        imagination_horizon: imagined steps per start state (15).
        deter_dim, stoch_dim, classes, rssm_hidden_dim: RSSM sizes (200, 32x32, 200);
            ``classes=0`` makes the latent Gaussian.
        cnn_depth: base channels of the frame encoder and decoder (DreamerV2: 48).
        model_lr, actor_lr, critic_lr, adam_eps, grad_clip, weight_decay: Adam settings
            (3e-4, 8e-5, 8e-5, eps 1e-5, clip 100, decoupled decay 1e-6 per step).
        discount, discount_lambda: imagination discount and TD(lambda) (0.99, 0.95).
        kl_balance, kl_free_nats, kl_scale: KL balancing (0.8), free nats (1.0), its weight.
        actor_entropy: entropy bonus on task rewards (1e-4); intrinsic_actor_entropy: on
            intrinsic ones (Plan2Explore: 0).
        intrinsic_reward_momentum: magnitude normaliser of intrinsic rewards (0.95; 1: off).
        slow_critic_every: updates between copies of the critic into its slow target (100).
        updates_per_frame: this agent's update-to-data ratio per agent step, which the run
            plan divides by the action repeat and uses in place of the protocol's: 0.2, one
            update every 5 agent steps (mastering-urlb trains every ``train_every_actions //
            action_repeat`` = 10 // 2 agent steps on pixels: one update per 10 frames). States
            (repeat 1) keep one per 5 steps; mastering-urlb has no state runs.
        decoder_output_elu: the frame decoder ends on an ELU as mastering-urlb's does (its
            ``Decoder`` appends the activation after the last layer too); false: DreamerV2's
            linear output. Pixels only.

    From pixels (``obs=pixels``) it sees single 64x64 frames (``pixel_format``: DreamerV2's
    size, no frame stack: the RSSM carries the history) through DreamerV2's conv encoder and
    decoder, at URLB's action repeat 2.
        init_actor, init_critic: what transfers besides the world model at finetuning.
        reward_model: a latent reward model (built on the model's features), or None.
    """

    # Frames the pixel env renders for it (experiment.pixel_options): DreamerV2's.
    pixel_format = {"size": 64, "frame_stack": 1}

    def __init__(
        self,
        obs_dim: int | tuple[int, ...],
        action_dim: int,
        hidden_dim: int = 400,
        batch_size: int = 2500,
        batch_length: int = 50,
        imagination_horizon: int = 15,
        deter_dim: int = 200,
        stoch_dim: int = 32,
        classes: int = 32,
        rssm_hidden_dim: int = 200,
        cnn_depth: int = 48,
        model_lr: float = 3e-4,
        actor_lr: float = 8e-5,
        critic_lr: float = 8e-5,
        adam_eps: float = 1e-5,
        grad_clip: float = 100.0,
        weight_decay: float = 1e-6,
        discount: float = 0.99,
        discount_lambda: float = 0.95,
        kl_balance: float = 0.8,
        kl_free_nats: float = 1.0,
        kl_scale: float = 1.0,
        actor_entropy: float = 1e-4,
        intrinsic_actor_entropy: float = 0.0,
        intrinsic_reward_momentum: float = 0.95,
        slow_critic_every: int = 100,
        updates_per_frame: float = 0.2,
        decoder_output_elu: bool = True,
        init_actor: bool = True,
        init_critic: bool = False,
        reward_model=None,
    ):
        obs_shape = (obs_dim,) if isinstance(obs_dim, int) else tuple(obs_dim)
        super().__init__(obs_dim, action_dim)
        if batch_length < 2 or imagination_horizon < 2:
            raise ValueError(
                "batch_length and imagination_horizon must be >= 2; got "
                f"{batch_length}, {imagination_horizon}"
            )
        self.num_sequences = max(1, batch_size // batch_length)
        self.batch_length, self.horizon = batch_length, imagination_horizon
        self.grad_clip, self.weight_decay = grad_clip, weight_decay
        self.discount, self.discount_lambda = discount, discount_lambda
        self.kl = {"balance": kl_balance, "free_nats": kl_free_nats}
        self.kl_scale = kl_scale
        self.actor_entropy, self.intrinsic_actor_entropy = actor_entropy, intrinsic_actor_entropy
        self.slow_critic_every = slow_critic_every
        self.init_actor, self.init_critic = init_actor, init_critic

        self.encoder, embed_dim = observation_encoder(obs_shape, hidden_dim, cnn_depth=cnn_depth)
        self.rssm = RSSM(action_dim, embed_dim, deter_dim, stoch_dim, classes, rssm_hidden_dim)
        feature_dim = self.rssm.feature_dim
        self.decoder = observation_decoder(
            obs_shape, feature_dim, hidden_dim, cnn_depth=cnn_depth, output_elu=decoder_output_elu
        )
        self.reward_head = elu_mlp(feature_dim, hidden_dim, 1)
        self.actor = Actor(feature_dim, action_dim, hidden_dim)
        self.critic = elu_mlp(feature_dim, hidden_dim, 1)
        self.slow_critic = copy.deepcopy(self.critic).requires_grad_(False)
        self.intrinsic_scale = RewardScale(intrinsic_reward_momentum)
        if reward_model is not None:
            # Latent reward models read features and are told the embedding's size
            # (Plan2Explore predicts the embedding; RND and APT ignore it).
            self.reward_model = reward_model(obs_dim=feature_dim, action_dim=action_dim, embed_dim=embed_dim)
            if self.reward_model.skill_dim:
                raise ValueError(
                    f"{type(self.reward_model).__name__} is a skill model; Dreamer's actor has no skill "
                    "input: use a latent exploration reward (plan2explore, rnd, apt)"
                )
        self.register_buffer("behaviour_updates", torch.zeros((), dtype=torch.long))
        self._behaviour_updates = 0  # host mirror: the slow-critic schedule must not sync
        self.register_load_state_dict_post_hook(lambda module, keys: module._sync_counter())

        # DreamerV2's decay multiplies weights by (1 - weight_decay) each step: AdamW's
        # decoupled decay is lr * weight_decay per step.
        def adam(modules, lr):
            params = [p for m in modules for p in m.parameters()]
            return torch.optim.AdamW(params, lr=lr, eps=adam_eps, weight_decay=weight_decay / lr)

        self.model_opt = adam([self.encoder, self.rssm, self.decoder, self.reward_head], model_lr)
        self.actor_opt = adam([self.actor], actor_lr)
        self.critic_opt = adam([self.critic], critic_lr)

    @property
    def randomness(self) -> Randomness:
        """Where the latent draws and the policy's samples come from (the RSSM's source,
        ``agents.parts.nets.Randomness``; the parity tests set recorded draws)."""
        return self.rssm.randomness

    @randomness.setter
    def randomness(self, source: Randomness) -> None:
        self.rssm.randomness = source

    def _sync_counter(self) -> None:
        self._behaviour_updates = int(self.behaviour_updates)

    def optimisers(self):
        return {"model": self.model_opt, "actor": self.actor_opt, "critic": self.critic_opt}

    @classmethod
    def sequence_window(cls, config) -> int:
        """Replay windows are the world model's sequences, in both phases."""
        return int(cls.config_value(config, "batch_length"))

    # -- acting -------------------------------------------------------------------------------
    def init_state(self, num_envs: int, device="cpu") -> TensorDict:
        """The posterior latent before any observation, and the previous action: zeros."""
        values = self.rssm.initial(num_envs, device) | {
            "action": torch.zeros(num_envs, self.action_dim, device=device)
        }
        return TensorDict(values, batch_size=[num_envs], device=device)

    @torch.no_grad()
    def act(self, observation: torch.Tensor, state: TensorDict, explore: bool) -> torch.Tensor:
        """Filter ``observation`` into each world's latent (in place in ``state``) and act on it:
        a sample of the policy when exploring (DreamerV2 explores by sampling), its mean else."""
        latent = {"deter": state["deter"], "stoch": state["stoch"]}
        posterior, _ = self.rssm.obs_step(latent, state["action"], self.encoder(observation))
        dist = self.actor(RSSM.feature(posterior))
        action = dist.sample(randomness=self.randomness) if explore else dist.mean
        state["deter"], state["stoch"], state["action"] = posterior["deter"], posterior["stoch"], action
        return action

    def observe(self, state: TensorDict, step_output: TensorDict) -> TensorDict:
        """Worlds whose episode ended start over from the initial latent."""
        keep = (~step_output["done"]).to(state["deter"].dtype)[:, None]
        for key in ("deter", "stoch", "action"):
            state[key] = state[key] * keep
        return state

    # -- learning -----------------------------------------------------------------------------
    def update(self, replay, step: int) -> dict[str, torch.Tensor]:
        batch = replay.sample_sequences(self.num_sequences)
        loss, metrics, posterior, embed = self.world_model_loss(batch)
        metrics["model_grad_norm"] = clipped_step(self.model_opt, loss, self.grad_clip)
        feature = RSSM.feature(posterior).detach()
        if self.task_index is None and self.reward_model is not None:
            metrics |= self.reward_model.update(
                self.latent_transitions(feature, batch["action"], embed.detach())
            )
        start = {key: posterior[key].detach().flatten(0, 1) for key in ("deter", "stoch")}
        return metrics | self.update_behaviour(start)

    def world_model_loss(self, batch: TensorDict):
        """Loss and metrics of the world model on replay windows ``(B, L)``.

        The window's ``L`` transitions give ``L + 1`` observations (the first one, then every
        ``next_observation``); observation ``t > 0`` was reached by ``action[t-1]`` with
        ``task_reward[t-1]``. Returns ``(loss, metrics, posterior (B, L+1, ...), embed)``."""
        observation = torch.cat([batch["observation"][:, :1], batch["next_observation"]], 1)
        action = batch["action"]
        action_in = torch.cat([torch.zeros_like(action[:, :1]), action], 1)
        embed = self.encoder(observation)
        posterior, prior = self.rssm.observe(embed, action_in)
        stats = lambda state: {k: v for k, v in state.items() if k not in ("deter", "stoch")}  # noqa: E731
        kl_loss, kl = kl_balance_loss(stats(posterior), stats(prior), **self.kl)
        feature = RSSM.feature(posterior)
        error = (self.decoder(feature) - observation_target(observation)).pow(2).flatten(2)
        reconstruction = 0.5 * error.sum(-1).mean()
        loss = self.kl_scale * kl_loss + reconstruction
        metrics = {
            "model_kl": kl.mean().detach(),
            "model_kl_loss": kl_loss.detach(),
            "reconstruction_loss": reconstruction.detach(),
            "reconstruction_mse": error.mean().detach(),
            "prior_entropy": self.rssm.entropy(stats(prior)).mean().detach(),
            "posterior_entropy": self.rssm.entropy(stats(posterior)).mean().detach(),
        }
        if self.task_index is not None:
            # The reward head learns with gradients into the model (DreamerV2's grad_heads).
            predicted = self.reward_head(feature[:, 1:]).squeeze(-1)
            reward_error = (predicted - batch["task_reward"][..., self.task_index]).pow(2)
            loss = loss + 0.5 * reward_error.mean()
            metrics["reward_mse"] = reward_error.mean().detach()
        metrics["model_loss"] = loss.detach()
        return loss, metrics, posterior, embed

    @staticmethod
    def latent_transitions(feature: torch.Tensor, action: torch.Tensor, embed: torch.Tensor) -> TensorDict:
        """Posterior transitions ``(s_t, a_t, s_{t+1})`` of replay windows, flattened, for a
        latent reward model's update; ``next_embed`` is ``e(o_{t+1})``."""
        return TensorDict(
            {
                "observation": feature[:, :-1].flatten(0, 1),
                "action": action.flatten(0, 1),
                "next_observation": feature[:, 1:].flatten(0, 1),
                "next_embed": embed[:, 1:].flatten(0, 1),
            },
            batch_size=[action.shape[0] * action.shape[1]],
        )

    def imagine(self, start: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Roll the policy out in the model from ``start`` (``(N, ...)`` latents): features
        ``(H+1, N, F)``, the actions that led to them ``(H+1, N, A)`` (zeros at 0) and the
        policy's entropy at states ``0..H-1`` ``(H, N)``. The policy reads detached
        features; its sampled actions carry gradients into the dynamics (straight-through
        latents), which carry them back to the actor."""
        state, features = start, [RSSM.feature(start)]
        actions = [torch.zeros(features[0].shape[0], self.action_dim, device=features[0].device)]
        entropies = []
        for _ in range(self.horizon):
            policy = self.actor(features[-1].detach())
            action = policy.sample(randomness=self.randomness)
            state = self.rssm.img_step(state, action)
            features.append(RSSM.feature(state))
            actions.append(action)
            entropies.append(policy.entropy().sum(-1))
        return torch.stack(features), torch.stack(actions), torch.stack(entropies)

    def imagined_reward(self, features: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """``(H+1, N)`` rewards of imagined states: the reward head's on a task; while
        pretraining, the reward model's of the transition into each state (0 at the start),
        divided by the running magnitude of all ``H+1`` rows, the zeros included
        (mastering-urlb's ``StreamNorm`` on its reward sequence). The reward takes the
        actions as data (their ``compute_intr_reward`` stops their gradient); the dynamics
        gradient reaches the actor through the features."""
        if self.task_index is not None:
            return self.reward_head(features).squeeze(-1)
        horizon, num = actions.shape[0] - 1, actions.shape[1]
        transitions = TensorDict(
            {
                "observation": features[:-1].flatten(0, 1),
                "action": actions[1:].flatten(0, 1).detach(),
                "next_observation": features[1:].flatten(0, 1),
            },
            batch_size=[horizon * num],
        )
        intrinsic = self.intrinsic_reward(transitions).view(horizon, num)
        return self.intrinsic_scale(torch.cat([torch.zeros_like(intrinsic[:1]), intrinsic]))

    def update_behaviour(self, start: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """One actor and one critic step on imagined rollouts from every posterior state."""
        features, actions, entropy = self.imagine(start)
        reward = self.imagined_reward(features, actions)
        value = self.slow_critic(features).squeeze(-1)
        discount = torch.full_like(reward, self.discount)
        target = lambda_return(reward[:-1], value[:-1], discount[:-1], value[-1], self.discount_lambda)
        weight = torch.cat([torch.ones_like(discount[:1]), discount[:-1]]).cumprod(0).detach()
        scale = self.actor_entropy if self.task_index is not None else self.intrinsic_actor_entropy
        loss = actor_loss(target, entropy[:-1], weight, scale)
        actor_grad_norm = clipped_step(self.actor_opt, loss, self.grad_clip)
        value_loss = critic_loss(self.critic(features[:-1].detach()).squeeze(-1), target.detach(), weight)
        critic_grad_norm = clipped_step(self.critic_opt, value_loss, self.grad_clip)
        if self._behaviour_updates % self.slow_critic_every == 0:
            hard_update(self.slow_critic, self.critic)
        self._behaviour_updates += 1
        self.behaviour_updates += 1
        return {
            "actor_loss": loss.detach(),
            "actor_entropy": entropy[:-1].mean().detach(),  # of the states the loss trains
            "actor_grad_norm": actor_grad_norm,
            "critic_loss": value_loss.detach(),
            "critic_grad_norm": critic_grad_norm,
            "critic_value": value.mean().detach(),
            "critic_target": target.mean().detach(),
            "imagined_reward": reward[1:].mean().detach(),
            "imagined_reward_std": reward[1:].std().detach(),
        }

    # -- transfer -------------------------------------------------------------------------------
    def init_from(self, pretrained: DreamerAgent) -> None:
        """The world model (encoder, RSSM, decoder), the actor when ``init_actor`` and the
        critic when ``init_critic``; the reward head, optimisers and reward model start fresh."""
        for name in ("encoder", "rssm", "decoder"):
            hard_update(getattr(self, name), getattr(pretrained, name))
        if self.init_actor:
            hard_update(self.actor, pretrained.actor)
        if self.init_critic:
            hard_update(self.critic, pretrained.critic)
            hard_update(self.slow_critic, pretrained.critic)
