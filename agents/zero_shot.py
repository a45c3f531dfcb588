"""The backbone FB and HILP share: a policy pi(s, z) over a latent task z, trained offline from a
reward-free dataset to maximise ``min_i F_i(s, a, z)^T z``, and the latent the zero-shot entry
point (``zero_shot.py``) fixes before an evaluation.

:class:`LatentAgent` holds the actor, the forward map F (two heads) and its target, the latent
draws and the actor step; subclasses (``agents/fb.py``, ``agents/hilp.py``) define what F
predicts and how a task becomes a z. Its update template::

    batch = sampler.sample...(batch_size)       # the subclass's, with its goals
    z = sphere draws
    batch = encode_batch(batch)                 # frames: shifted and encoded (the subclass's fields)
    z = a mix_ratio share replaced by dataset-derived z (the subclass's)
    metrics = update_representation(batch, z)   # F (and B or phi), their optimisers, the encoder's
    metrics |= update_actor(batch.observation.detach(), z)
    soft updates of the targets

Pixels (``obs_dim=(C, H, W)``, uint8 frame stacks): as HILP's zero-shot code runs both agents
(``hilp_zsrl``, ``agent/ddpg.py``'s ``make_aug_encoder``), one DrQ-v2 encoder
(``agents.parts.encoders.PixelEncoder``) whose stride-1 convolutions depend on the frame side
(``encoder_depth``) and a random shift of pad ``side // 21`` (``aug_pad``). Each frame field of
a batch gets its own shift draw, in the order :attr:`LatentAgent.encoded_fields` lists, then
the encoder; the fields the representation loss trains the encoder through keep their
gradient, the others are detached. The encoder has its own Adam (rate ``lr``), stepped with
the representation's optimisers; the actor reads detached features. Acting and z inference
encode without the shift.

Finetuning (``finetune.py agent=fb|hilp snapshot=<its snapshot>``; ours, neither reference
finetunes on a reward): :meth:`LatentAgent.init_from` takes every pretrained network, the run
fixes the task's z inferred as ``zero_shot.py`` does (:meth:`LatentAgent.fix_task`), and with
the task set (``set_task``) ``update`` becomes :meth:`LatentAgent.finetune_update` on the online
replay: the critic is the pretrained ``Q_i = F_i(s, a, z)^T z``, TD on the task's reward
(``latent_q_loss``), then the same actor step; B / phi stay frozen.

Acting: each world carries ``z`` (``init_state``): drawn on the sphere, or the one fixed by
:meth:`LatentAgent.fix_latent` (a task's inferred z). Randomness (z draws, the permutation and
mix mask, the shifts, the policy noise) comes from ``randomness``
(``agents.parts.nets.Randomness``), which the reference-parity test replaces with the
reference's recorded draws.

Imports: agents.base and agents.parts only.
"""

from __future__ import annotations

import abc
import numbers

import torch
from tensordict import TensorDict

from agents.actor_critic import frozen
from agents.base import Agent
from agents.parts.encoders import PixelEncoder, RandomShift, zero_shot_encoder_depth
from agents.parts.latent import ForwardMap, LatentActor, latent_q_loss, on_sphere, reward_scale
from agents.parts.nets import TORCH_RANDOMNESS, Randomness, optimise, soft_update

SEED_ACTIONS = ("policy", "random")

# Frames per encoder call when acting or inferring z (no gradient): bounds the activations of
# z inference over thousands of dataset frames.
ENCODE_CHUNK = 1024


def frame_shape(obs_dim) -> tuple[int, int, int] | None:
    """``(C, H, W)`` of a frame observation spec, None for a state size; anything else is refused."""
    if isinstance(obs_dim, numbers.Integral) and not isinstance(obs_dim, bool):
        if obs_dim < 1:
            raise ValueError(f"obs_dim={obs_dim}: a state size must be >= 1")
        return None
    try:
        shape = tuple(int(size) for size in obs_dim)
    except (TypeError, ValueError):
        shape = ()
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"obs_dim={obs_dim!r}: give a state size (int) or frames (C, H, W), e.g. (9,64,64)")
    return shape


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
        encoder_depth: frames: stride-1 convolutions after the encoder's stride-2 one; None:
            the reference's rule for the frame height (3 at >= 64, 2 at >= 48, else 1).
        aug_pad: frames: the random shift's pad; None: the reference's ``height // 21``.
        finetune_lr: Adam rate of the actor and F while finetuning (fresh optimisers).
        finetune_scale_reward: divide the task's reward by the scale ``c`` of the fit
            ``r ~ c features^T z`` on the inference rows, so that the pretrained ``F^T z`` (z on
            the sphere) starts as the value of the reward the TD loss sees; False: the raw reward.
        finetune_seed_actions: what the online loop acts with during ``seed_frames``: ``policy``
            (the zero-shot policy, with its exploration noise) or ``random`` (uniform, URLB's).
    """

    # Frame fields of a batch, in the order they are shifted (each its own draw) and encoded,
    # each with whether the representation loss trains the encoder through it (else detached).
    encoded_fields: tuple[tuple[str, bool], ...] = (("observation", True), ("next_observation", False))

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
        encoder_depth: int | None = None,
        aug_pad: int | None = None,
        finetune_lr: float = 1e-4,
        finetune_scale_reward: bool = True,
        finetune_seed_actions: str = "policy",
    ):
        frames = frame_shape(obs_dim)
        if finetune_seed_actions not in SEED_ACTIONS:
            raise ValueError(
                f"finetune_seed_actions={finetune_seed_actions!r}; use one of {', '.join(SEED_ACTIONS)}"
            )
        if not 0 <= mix_ratio <= 1 or z_dim < 1:
            raise ValueError(f"mix_ratio={mix_ratio} must lie in [0, 1] and z_dim={z_dim} be >= 1")
        super().__init__(tuple(frames) if frames else int(obs_dim), action_dim)
        self.z_dim, self.batch_size, self.lr = z_dim, batch_size, lr
        self.stddev, self.stddev_clip, self.target_tau = stddev, stddev_clip, target_tau
        self.discount, self.mix_ratio, self.offline_updates = discount, mix_ratio, offline_updates
        self.finetune_lr, self.finetune_scale_reward = finetune_lr, finetune_scale_reward
        self.seed_actions = finetune_seed_actions
        self.finetune_opt: torch.optim.Optimizer | None = None  # F's, made by init_from
        self.pixels = frames is not None
        self.build_encoder(frames, encoder_depth, aug_pad, lr)
        repr_dim = self.repr_dim
        self.actor = LatentActor(repr_dim, z_dim, action_dim, feature_dim, hidden_dim)
        self.forward_map = ForwardMap(repr_dim, z_dim, action_dim, feature_dim, hidden_dim)
        self.forward_target = ForwardMap(repr_dim, z_dim, action_dim, feature_dim, hidden_dim)
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

    # -- frames -----------------------------------------------------------------------------------
    def build_encoder(self, frames, encoder_depth: int | None, aug_pad: int | None, lr: float) -> None:
        """``encoder`` (the identity on states), ``augment`` and ``encoder_opt`` (None on states),
        and ``repr_dim``, what the networks read."""
        self.encoder: torch.nn.Module = torch.nn.Identity()
        self.augment: RandomShift | None = None
        self.encoder_opt: torch.optim.Optimizer | None = None
        if frames is None:
            self.repr_dim = self.obs_dim
            return
        height = frames[1]
        depth = zero_shot_encoder_depth(height) if encoder_depth is None else encoder_depth
        pad = height // 21 if aug_pad is None else aug_pad
        if depth < 0 or pad < 0:
            raise ValueError(f"encoder_depth={encoder_depth} and aug_pad={aug_pad} must be >= 0 (or null)")
        self.encoder = PixelEncoder(frames, stride_one_layers=depth)
        self.augment = RandomShift(pad)
        self.encoder_opt = torch.optim.Adam(self.encoder.parameters(), lr=lr)
        self.repr_dim = self.encoder.repr_dim

    @torch.no_grad()
    def encode(self, observation: torch.Tensor) -> torch.Tensor:
        """What the networks read of observations ``(N, ...)``: states as they are, frames
        through the encoder without augmentation (acting, z inference), in chunks."""
        if not self.pixels:
            return observation
        self.check_frames("observation", observation)
        return torch.cat([self.encoder(chunk) for chunk in observation.split(ENCODE_CHUNK)])

    def check_frames(self, name: str, frames: torch.Tensor) -> None:
        if tuple(frames.shape[1:]) != self.obs_dim:
            raise ValueError(
                f"{type(self).__name__} was built for frames {self.obs_dim}, got {name} "
                f"{tuple(frames.shape)}: build it with obs_dim=(C, H, W) of the dataset's frame stacks"
            )

    def augment_encode(self, frames: torch.Tensor) -> torch.Tensor:
        """Frames ``(B, C, H, W)`` shifted (one ``randomness.randint`` draw ``(B, 2)``) and
        encoded ``(B, repr_dim)``, with the encoder's gradient."""
        shift = self.randomness.randint(2 * self.augment.pad + 1, (len(frames), 2), frames.device)
        return self.encoder(self.augment(frames, shift=shift))

    def encode_batch(self, batch: TensorDict) -> TensorDict:
        """The batch with its frame fields (:attr:`encoded_fields`, those present) replaced by
        shifted encodings, detached where the encoder does not learn through them; states pass."""
        if not self.pixels:
            return batch
        for key, trains_encoder in self.encoded_fields:
            if key in batch.keys():
                self.check_frames(key, batch[key])
                features = self.augment_encode(batch[key])
                batch.set(key, features if trains_encoder else features.detach())
        return batch

    def step_representation(self, loss: torch.Tensor, *optimisers: torch.optim.Optimizer) -> None:
        """One gradient step of ``optimisers`` on ``loss``, and of the pixel encoder's (the
        reference steps it with the representation's)."""
        optimisers = (*optimisers, self.encoder_opt) if self.encoder_opt is not None else optimisers
        for optimiser in optimisers:
            optimiser.zero_grad(set_to_none=True)
        loss.backward()
        for optimiser in optimisers:
            optimiser.step()

    def encoder_optimisers(self) -> dict[str, torch.optim.Optimizer]:
        """``{"encoder": its Adam}`` on frames, else empty (for :meth:`optimisers`)."""
        return {"encoder": self.encoder_opt} if self.encoder_opt is not None else {}

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
        dist = self.actor(self.encode(observation), state["z"], self.stddev)
        return dist.sample(randomness=self.randomness) if explore else dist.mean

    # -- learning ---------------------------------------------------------------------------------
    def update(self, sampler, step: int) -> dict[str, torch.Tensor]:
        """One offline update from a :class:`urlb.data.datasets.DatasetSampler`; with a task set
        (finetuning), :meth:`finetune_update` on the online replay."""
        if self.task_index is not None:
            return self.finetune_update(sampler)
        batch = self.sample_batch(sampler)
        z = self.sample_latents(self.batch_size, batch["action"])
        batch = self.encode_batch(batch)
        if self.mix_ratio > 0:
            z = self.mix_dataset_latents(batch, z)
        metrics = self.update_representation(batch, z)
        metrics |= self.update_actor(batch["observation"].detach(), z)
        self.update_targets()
        return metrics

    def sample_batch(self, sampler) -> TensorDict:
        """Transitions with ``discount`` = gamma (0 past a terminal)."""
        batch = sampler.sample(self.batch_size)
        batch["discount"] = self.discount * (~batch["terminated"]).to(batch["action"].dtype)
        return batch

    def mix_mask(self, like: torch.Tensor) -> torch.Tensor:
        """The rows whose z is replaced (share ``mix_ratio``) ``(batch_size,)``."""
        return self.randomness.uniform((self.batch_size,), like) < self.mix_ratio

    def permutation(self, like: torch.Tensor) -> torch.Tensor:
        """A permutation of the batch's rows (the dataset states a mix draws z from)."""
        return self.randomness.permutation(self.batch_size, like.device)

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
        B / phi and the pixel encoder, which they read through, are frozen: frames are encoded
        without the shift), the actor step of pretraining with that z, F's Polyak target."""
        if not self._fixed or self.finetune_opt is None:
            raise ValueError(
                f"{type(self).__name__} finetunes from a snapshot whose task z is fixed (finetune.py)"
            )
        batch = replay.sample(self.batch_size)
        observation = self.encode(batch["observation"])
        next_observation = self.encode(batch["next_observation"])
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
