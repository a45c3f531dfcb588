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
from agents.parts.latent import ForwardMap, LatentActor, on_sphere
from agents.parts.nets import TORCH_RANDOMNESS, Randomness, optimise, soft_update


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
    """

    pretrains_offline = True  # pretrain.py agent=fb|hilp dataset=<path>
    infers_task = True  # zero_shot.py infers z from reward-labelled dataset states
    reads_dataset_frames = True  # obs=pixels with a rendered dataset (render_dataset.py)
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
    ):
        if not isinstance(obs_dim, int):
            raise ValueError(
                f"{type(self).__name__} learns from state datasets, not frames {obs_dim}: use obs=states"
            )
        if not 0 <= mix_ratio <= 1 or z_dim < 1:
            raise ValueError(f"mix_ratio={mix_ratio} must lie in [0, 1] and z_dim={z_dim} be >= 1")
        super().__init__(obs_dim, action_dim)
        self.z_dim, self.batch_size, self.lr = z_dim, batch_size, lr
        self.stddev, self.stddev_clip, self.target_tau = stddev, stddev_clip, target_tau
        self.discount, self.mix_ratio, self.offline_updates = discount, mix_ratio, offline_updates
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
        """One offline update from a :class:`urlb.data.datasets.DatasetSampler`."""
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

    # -- transfer ---------------------------------------------------------------------------------
    def init_from(self, pretrained) -> None:
        """Not defined: these agents are evaluated zero-shot."""
        raise ValueError(
            f"{type(self).__name__} is evaluated zero-shot, not finetuned: python zero_shot.py "
            "snapshot=<its snapshot_<updates>.pt>"
        )
