"""The backbone FB and HILP share: a policy pi(s, z) over a latent task z, trained offline from a
reward-free dataset to maximise ``min_i F_i(s, a, z)^T z``, and the latent the zero-shot entry
point (``zero_shot.py``) fixes before an evaluation.

:class:`LatentAgent` holds the actor, the forward map F (two heads) and its target, the latent
draws and the actor step; subclasses (``agents/fb.py``, ``agents/hilp.py``) define what F
predicts and how a task becomes a z. Its update template::

    batch = sampler.sample...(batch_size)       # the subclass's, with its goals
    z = sphere draws, a mix_ratio share replaced by dataset-derived z (the subclass's)
    metrics = update_representation(batch, z)   # F (and B or phi) and their optimisers
    metrics |= update_actor(batch.observation, z)
    soft updates of the targets

Finetuning (``finetune.py agent=fb|hilp snapshot=<its snapshot>``; ours, neither reference
finetunes on a reward): :meth:`LatentAgent.init_from` takes every pretrained network, the run
fixes the task's z inferred as ``zero_shot.py`` does (:meth:`LatentAgent.fix_task`), and with
the task set (``set_task``) ``update`` becomes :meth:`LatentAgent.finetune_update` on the online
replay: the critic is the pretrained ``Q_i = F_i(s, a, z)^T z``, TD on the task's reward
(``latent_q_loss``), then the same actor step; B / phi stay frozen.

Acting: each world carries ``z`` (``init_state``): drawn on the sphere, or the one fixed by
:meth:`LatentAgent.fix_latent` (a task's inferred z). Randomness (z draws, the permutation and
mix mask, the policy noise) comes from ``randomness`` (``agents.parts.nets.Randomness``), which
the reference-parity test replaces with the reference's recorded draws.

Imports: agents.base and agents.parts only.
"""

from __future__ import annotations

import abc

import torch
from tensordict import TensorDict

from agents.actor_critic import frozen
from agents.base import Agent
from agents.parts.latent import ForwardMap, LatentActor, latent_q_loss, on_sphere, reward_scale
from agents.parts.nets import TORCH_RANDOMNESS, Randomness, optimise, soft_update

SEED_ACTIONS = ("policy", "random")


class LatentAgent(Agent):
    """A z-conditioned actor and forward map, pretrained from a dataset (``urlb.loop.offline``).

    Args:
        z_dim: size of z (on the sphere of radius sqrt(z_dim)).
        hidden_dim, feature_dim: widths of the actor's and F's layers and input embeddings.
        lr: Adam rate of the actor and F.
        batch_size: transitions per update.
        stddev, stddev_clip: the policy's noise and its clip in the updates' sampled actions.
        target_tau: Polyak rate of F's target.
        discount: gamma of F's bootstrap.
        mix_ratio: share of a batch's z replaced by dataset-derived ones.
        offline_updates: the offline budget (``configs/pretrain.yaml``'s ``offline.updates``).
        finetune_lr: Adam rate of the actor and F while finetuning (fresh optimisers).
        finetune_scale_reward: divide the task's reward by the scale ``c`` of the fit
            ``r ~ c features^T z`` on the inference rows, so that the pretrained ``F^T z`` (z on
            the sphere) starts as the value of the reward the TD loss sees; False: the raw reward.
        finetune_seed_actions: what the online loop acts with during ``seed_frames``: ``policy``
            (the zero-shot policy, with its exploration noise) or ``random`` (uniform, URLB's).
    """

    pretrains_offline = True  # pretrain.py agent=fb|hilp dataset=<path>
    infers_task = True  # zero_shot.py infers z from reward-labelled dataset states
    randomness: Randomness = TORCH_RANDOMNESS

    def __init__(
        self,
        obs_dim,
        action_dim: int,
        z_dim: int,
        hidden_dim: int,
        feature_dim: int,
        lr: float,
        batch_size: int,
        stddev: float,
        stddev_clip: float,
        target_tau: float,
        discount: float,
        mix_ratio: float,
        offline_updates: int,
        finetune_lr: float = 1e-4,
        finetune_scale_reward: bool = True,
        finetune_seed_actions: str = "policy",
    ):
        if not isinstance(obs_dim, int):
            raise ValueError(
                f"{type(self).__name__} learns from state datasets, not frames {obs_dim}: use obs=states"
            )
        if finetune_seed_actions not in SEED_ACTIONS:
            raise ValueError(
                f"finetune_seed_actions={finetune_seed_actions!r}; use one of {', '.join(SEED_ACTIONS)}"
            )
        if not 0 <= mix_ratio <= 1 or z_dim < 1:
            raise ValueError(f"mix_ratio={mix_ratio} must lie in [0, 1] and z_dim={z_dim} be >= 1")
        super().__init__(obs_dim, action_dim)
        self.z_dim, self.batch_size, self.lr = z_dim, batch_size, lr
        self.stddev, self.stddev_clip, self.target_tau = stddev, stddev_clip, target_tau
        self.discount, self.mix_ratio, self.offline_updates = discount, mix_ratio, offline_updates
        self.finetune_lr, self.finetune_scale_reward = finetune_lr, finetune_scale_reward
        self.seed_actions = finetune_seed_actions
        self.finetune_opt: torch.optim.Optimizer | None = None  # F's, made by init_from
        self.actor = LatentActor(obs_dim, z_dim, action_dim, feature_dim, hidden_dim)
        self.forward_map = ForwardMap(obs_dim, z_dim, action_dim, feature_dim, hidden_dim)
        self.forward_target = ForwardMap(obs_dim, z_dim, action_dim, feature_dim, hidden_dim)
        self.forward_target.load_state_dict(self.forward_map.state_dict())
        self.forward_target.requires_grad_(False)
        self.actor_opt = torch.optim.Adam(self.actor.parameters(), lr=lr)
        self.register_buffer("fixed_latent", torch.zeros(z_dim))
        self.register_buffer("latent_is_fixed", torch.zeros((), dtype=torch.bool))
        self._fixed = False  # host mirror of latent_is_fixed: observe() runs every step, no sync
        self.register_load_state_dict_post_hook(lambda module, keys: module._sync_fixed())

    @classmethod
    def finetune_discount(cls, config) -> float:
        """F's gamma: ``Q = F^T z`` is a value at the discount F was pretrained with."""
        return float(cls.config_value(config, "discount"))

    def _sync_fixed(self) -> None:
        self._fixed = bool(self.latent_is_fixed)

    # -- latents ---------------------------------------------------------------------------------
    def sample_latents(self, num: int, like: torch.Tensor) -> torch.Tensor:
        """``(num, z_dim)`` uniform on the sphere of radius sqrt(z_dim)."""
        return on_sphere(self.randomness.normal((num, self.z_dim), like))

    def fix_latent(self, z: torch.Tensor | None) -> None:
        """Act with ``z`` ``(z_dim,)`` in every world from now on (None: draw z per episode again)."""
        if z is None:
            self.latent_is_fixed.fill_(False)
            self._fixed = False
            return
        self.fixed_latent.copy_(z.reshape(self.z_dim))
        self.latent_is_fixed.fill_(True)
        self._fixed = True

    @abc.abstractmethod
    def infer_latent(self, observation, next_observation, reward) -> torch.Tensor:
        """The z ``(z_dim,)`` of a task from reward-labelled transitions ``(N, ...)``, ``(N,)``."""

    @abc.abstractmethod
    def goal_latent(self, observation, goal) -> torch.Tensor:
        """The z ``(N, z_dim)`` that reaches goal states ``goal`` from ``observation`` ``(N, obs_dim)``."""

    # -- acting -----------------------------------------------------------------------------------
    def init_state(self, num_envs: int, device="cpu") -> TensorDict:
        """Per world, its z: the fixed one, else a draw on the sphere (one per episode)."""
        like = self.fixed_latent.to(device)
        if self._fixed:
            z = like.expand(num_envs, -1).clone()
        else:
            z = on_sphere(torch.randn(num_envs, self.z_dim, device=device))
        return TensorDict({"z": z}, batch_size=[num_envs], device=device)

    def observe(self, state: TensorDict, step_output: TensorDict) -> TensorDict:
        """A fresh z where an episode ended (unless z is fixed)."""
        if self._fixed:
            return state
        fresh = on_sphere(torch.randn_like(state["z"]))
        state["z"] = torch.where(step_output["done"][:, None], fresh, state["z"])
        return state

    @torch.no_grad()
    def act(self, observation, state: TensorDict, explore: bool) -> torch.Tensor:
        dist = self.actor(observation, state["z"], self.stddev)
        return dist.sample(randomness=self.randomness) if explore else dist.mean

    # -- learning ---------------------------------------------------------------------------------
    def update(self, sampler, step: int) -> dict[str, torch.Tensor]:
        """One offline update from a :class:`urlb.data.datasets.DatasetSampler`; with a task set
        (finetuning), :meth:`finetune_update` on the online replay."""
        if self.task_index is not None:
            return self.finetune_update(sampler)
        batch = self.sample_batch(sampler)
        observation = batch["observation"]
        z = self.sample_latents(self.batch_size, observation)
        if self.mix_ratio > 0:
            z = self.mix_dataset_latents(batch, z)
        metrics = self.update_representation(batch, z)
        metrics |= self.update_actor(observation, z)
        self.update_targets()
        return metrics

    def sample_batch(self, sampler) -> TensorDict:
        """Transitions with ``discount`` = gamma (0 past a terminal)."""
        batch = sampler.sample(self.batch_size)
        batch["discount"] = self.discount * (~batch["terminated"]).to(batch["observation"].dtype)
        return batch

    def permuted_mask(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """A permutation of the batch and the rows whose z is replaced (share ``mix_ratio``)."""
        perm = self.randomness.permutation(self.batch_size, like.device)
        mask = self.randomness.uniform((self.batch_size,), like) < self.mix_ratio
        return perm, mask

    @abc.abstractmethod
    def mix_dataset_latents(self, batch: TensorDict, z: torch.Tensor) -> torch.Tensor:
        """``z`` with a ``mix_ratio`` share of rows replaced by z derived from dataset states."""

    @abc.abstractmethod
    def update_representation(self, batch: TensorDict, z: torch.Tensor) -> dict[str, torch.Tensor]:
        """One step of F and the state representation; returns metrics."""

    def next_action(self, next_observation, z) -> torch.Tensor:
        """a' ~ pi(s', z) with clipped noise: the bootstrap's action."""
        with torch.no_grad():
            dist = self.actor(next_observation, z, self.stddev)
            return dist.sample(clip=self.stddev_clip, randomness=self.randomness)

    def update_actor(self, observation, z) -> dict[str, torch.Tensor]:
        """max_pi min_i F_i(s, a, z)^T z, a ~ pi(s, z) with clipped noise (DDPG on F)."""
        dist = self.actor(observation, z, self.stddev)
        action = dist.sample(clip=self.stddev_clip, randomness=self.randomness)
        with frozen(self.forward_map):
            f1, f2 = self.forward_map(observation, z, action)
        q = torch.min((f1 * z).sum(-1), (f2 * z).sum(-1))
        loss = -q.mean()
        optimise(self.actor_opt, loss)
        return {"actor_loss": loss.detach(), "q": q.mean().detach()}

    def update_targets(self) -> None:
        soft_update(self.forward_target, self.forward_map, self.target_tau)

    # -- finetuning (ours: neither reference finetunes FB or HILP on a reward; docs/fidelity.md) ----
    def init_from(self, pretrained: LatentAgent) -> None:
        """Everything pretrained transfers: the actor, F and its target, B or phi and their
        targets, HILP's running mean. The actor and F get fresh Adams at ``finetune_lr`` (the
        pretraining moments are of another loss, FB's measure loss or the successor-feature
        loss; URLB's transfer keeps no optimiser either). The task's z is fixed next, by the run
        (:meth:`fix_task`)."""
        if type(pretrained) is not type(self):
            raise ValueError(
                f"{type(self).__name__} finetunes its own snapshot, not a {type(pretrained).__name__}"
            )
        self.load_state_dict(pretrained.state_dict())
        self.actor_opt = torch.optim.Adam(self.actor.parameters(), lr=self.finetune_lr)
        self.finetune_opt = torch.optim.Adam(self.forward_map.parameters(), lr=self.finetune_lr)

    @torch.no_grad()
    def fix_task(self, observation, next_observation, reward) -> torch.Tensor:
        """Fix the task's z ``(z_dim,)``, inferred from reward-labelled transitions ``(N, ...)``,
        ``(N,)`` as ``zero_shot.py`` infers it, and the reward scale the finetuning TD divides the
        reward by (``finetune_scale_reward``: the least-squares ``c`` of ``r ~ c features^T z``, the
        features z is inferred on; else 1). Returns z."""
        z = self.infer_latent(observation, next_observation, reward)
        scale = torch.ones((), device=z.device)
        if self.finetune_scale_reward:
            scale = reward_scale(self.reward_features(observation, next_observation) @ z, reward)
            if not bool(torch.isfinite(scale)) or float(scale) <= 0:
                raise ValueError(
                    f"the task's reward does not follow its inferred z on these rows (scale {float(scale)}); "
                    "pass more inference_samples= or agent.finetune_scale_reward=false"
                )
        self.fix_latent(z)
        # Registered here, not in __init__: pretraining snapshots have no such entry.
        self.register_buffer("reward_scale", scale.reshape(()).to(z))
        return z

    @abc.abstractmethod
    def reward_features(self, observation, next_observation) -> torch.Tensor:
        """The features ``(N, z_dim)`` whose product with z is the reward z stands for (FB: B(s');
        HILP: phi_t)."""

    def finetune_update(self, replay) -> dict[str, torch.Tensor]:
        """One update on the task's reward with z fixed: TD on ``Q_i = F_i^T z`` (F alone learns;
        B / phi are frozen), the actor step of pretraining with that z, F's Polyak target."""
        if not self._fixed or self.finetune_opt is None:
            raise ValueError(
                f"{type(self).__name__} finetunes from a snapshot whose task z is fixed (finetune.py)"
            )
        batch = replay.sample(self.batch_size)
        observation, next_observation = batch["observation"], batch["next_observation"]
        reward = batch["task_reward"][:, self.task_index] / self.reward_scale
        z = self.fixed_latent.expand(len(observation), -1)
        next_action = self.next_action(next_observation, z)
        with torch.no_grad():
            next_f1, next_f2 = self.forward_target(next_observation, z, next_action)
        f1, f2 = self.forward_map(observation, z, batch["action"])
        loss, metrics = latent_q_loss(f1, f2, next_f1, next_f2, z, reward, batch["discount"])
        optimise(self.finetune_opt, loss)
        metrics |= self.update_actor(observation, z)
        soft_update(self.forward_target, self.forward_map, self.target_tau)
        return metrics | {"extrinsic_reward": batch["task_reward"][:, self.task_index].mean()}

    def all_optimisers(self) -> dict[str, torch.optim.Optimizer]:
        finetune = {"finetune": self.finetune_opt} if self.finetune_opt is not None else {}
        return super().all_optimisers() | finetune
