"""The actor-critic machinery DDPG and SAC share: one update template, the pixel encoder's
plumbing, the critic step and URLB's transfer rule.

:class:`ActorCriticAgent` is the backbone base of ``agents/ddpg.py`` and ``agents/sac.py``
(the only full actor-critic updates). It *has* an optional reward model (exploration and
skill agents, ``agents/base.py``) and fills :meth:`ActorCriticAgent.update`::

    batch = encode(replay.sample(batch_size))      # random shifts + encoder on pixels
    metrics = reward_model.update(batch)            # pretraining only
    reward = intrinsic or task reward
    update_critic(...)                              # steps the encoder when the critic trains it
    update_actor(...)

Backbones define ``update_critic`` and ``update_actor`` (and their networks); nothing else
inherits them.

Pixels: the backbones read frames ``(C, H, W)`` through one shared encoder
(``agents.parts.encoders``, DrQ-v2's, as URLB does). ``update`` then shifts both frame stacks
at random and encodes them (:meth:`ActorCriticAgent.encode_batch`); the reward model and the
critic see the encoder's features where states would be, skills appended after them. One loss
trains the encoder per update (:meth:`ActorCriticAgent.encoder_learner`): a reward model's own
while pretraining when it ``trains_encoder`` (URLB's ICM, Disagreement, ProtoRL, APT), else
the critic's; ``update_encoder=False`` freezes it. ``act`` encodes without augmentation.

``pixel_encoders="per_network"`` (METRA's pixel layout, on SAC): no shared encoder and no
augmentation; frames travel flat (``agents.parts.encoders.FlatFrames``) and the actor, each
Q network (and its target) and the reward model encode them with encoders of their own,
each trained by its network's loss (DreamerV2's/METRA's convolutions, ``pixel_encoder_depth``
channels first). The reward model is built with ``frame_encoder``, a factory of such encoders.

Self-Reference (``addon=sr``, ``agents/parts/self_reference.py``) composes onto either backbone:
its reference vector joins the actor's and critic's input after the skill, the critic's loss
trains its attention (:meth:`ActorCriticAgent.stepping_self_reference`), its query module takes
one step after the actor, and the carried state, replay extras and transfer carry its parts.

Imports: agents.base and agents.parts only.
"""

from __future__ import annotations

import abc
import contextlib
import functools
import inspect
import math

import torch
from tensordict import TensorDict
from torch import nn

from agents.base import Agent
from agents.parts.encoders import FlatFrameEncoder, FlatFrames, RandomShift, make_encoder
from agents.parts.nets import hard_update, optimise, soft_update


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


PIXEL_ENCODERS = ("shared", "per_network")


@contextlib.contextmanager
def frozen(module: nn.Module):
    """No weight gradients for ``module`` inside the block (the actor loss needs only the
    critic's input gradients: this skips the critic's weight-gradient matmuls)."""
    module.requires_grad_(False)
    try:
        yield module
    finally:
        module.requires_grad_(True)


class ActorCriticAgent(Agent):
    """An actor, a critic with a target, an optional reward model and, on pixels, the shared
    encoder. Subclasses build ``actor``, ``critic``, ``critic_target`` and their optimisers
    and define :meth:`update_critic` and :meth:`update_actor`.

    Args:
        obs_dim, action_dim: env sizes (``obs_dim``: an int for states, ``(C, H, W)`` for frames).
        reward_model: a callable ``(obs_dim=, action_dim=) -> RewardModel`` (a Hydra partial
            in the configs), or None for the plain backbone. Built with ``obs_dim=repr_dim``:
            on pixels it reads the shared encoder's features.
        batch_size: transitions per update.
        critic_target_tau: Polyak rate of the target critic.
        init_critic: finetuning starts from the pretrained critic trunk (URLB's default).
        pixel_encoders: ``shared`` (URLB's: one DrQ-v2 encoder) or ``per_network`` (module
            docstring); states ignore it.
        pixel_encoder_depth: ``per_network``: the first convolution's channels (METRA's 48).
        self_reference: a callable ``(obs_dim=) -> SelfReference`` (``addon=sr``: a Hydra
            partial, ``agents/parts/self_reference.py``) or None. Its reference vector is
            appended to the actor's and critic's input after the skill; states only.
    """

    # The shared encoder's optimiser (URLB's ``encoder_opt``); None: no encoder to train
    # (state vectors) or a frozen one (``update_encoder=False``).
    encoder_opt: torch.optim.Optimizer | None = None

    def __init__(
        self,
        obs_dim,
        action_dim: int,
        reward_model=None,
        batch_size: int = 1024,
        critic_target_tau: float = 0.01,
        init_critic: bool = True,
        pixel_encoders: str = "shared",
        pixel_encoder_depth: int = 48,
        self_reference=None,
    ):
        super().__init__(obs_dim, action_dim)
        if pixel_encoders not in PIXEL_ENCODERS:
            raise ValueError(f"pixel_encoders must be one of {PIXEL_ENCODERS}, got {pixel_encoders!r}")
        self.batch_size = batch_size
        self.critic_target_tau = critic_target_tau
        self.init_critic = init_critic
        self.encoder, self.repr_dim = make_encoder(obs_dim)
        self.pixels = not isinstance(self.encoder, nn.Identity)
        # Makes each network's own frame encoder; None: one shared encoder, or states.
        self.frame_encoder = None
        if self.pixels and pixel_encoders == "per_network":
            self.frame_encoder = functools.partial(FlatFrameEncoder, tuple(obs_dim), pixel_encoder_depth)
            self.encoder, self.repr_dim = FlatFrames(), math.prod(obs_dim)
        shared_encoder = self.pixels and self.frame_encoder is None
        self.augment = RandomShift(pad=4) if shared_encoder else None  # DrQ-v2's pad
        self.reward_model = self.build_reward_model(reward_model, action_dim)
        if self.pixels and getattr(self.reward_model, "observe_pose", False):
            raise ValueError(
                f"{type(self.reward_model).__name__}: observe_pose appends the global pose to state "
                "observations; pixels have none (set reward_model.observe_pose=false)"
            )
        if self_reference and self.pixels:
            raise ValueError("addon=sr retrieves state vectors; use obs=states (or drop addon=sr)")
        self.self_reference = self_reference(obs_dim=obs_dim) if self_reference else None

    def build_reward_model(self, reward_model, action_dim: int):
        """The reward model on what the backbone hands it: states, the shared encoder's
        features, or flat frames with a ``frame_encoder`` factory (``per_network``)."""
        if reward_model is None:
            return None
        if self.frame_encoder is None:
            return reward_model(obs_dim=self.repr_dim, action_dim=action_dim)
        cls = getattr(reward_model, "func", reward_model)
        if "frame_encoder" not in inspect.signature(cls).parameters:
            raise ValueError(
                f"pixel_encoders=per_network gives every network its own encoder; {cls.__name__} reads "
                "the features of a shared one: set pixel_encoders=shared"
            )
        return reward_model(obs_dim=self.repr_dim, action_dim=action_dim, frame_encoder=self.frame_encoder)

    def train_encoder(self, lr: float, update_encoder: bool) -> None:
        """Give the pixel encoder its own Adam (URLB's ``encoder_opt``) unless it is frozen
        (or there is no shared one: ``per_network``)."""
        if self.pixels and update_encoder and self.frame_encoder is None:
            self.encoder_opt = torch.optim.Adam(self.encoder.parameters(), lr=lr)

    @property
    def critic_task_dim(self) -> int:
        """Successor-feature size of the Q heads (``RewardModel.successor_features``), 0 for
        the usual scalar Q."""
        model = self.reward_model
        return self.skill_dim if model is not None and model.successor_features else 0

    @property
    def reference_dim(self) -> int:
        """Size of Self-Reference's reference vector in the networks' input (0: no SR)."""
        return self.self_reference.dim if self.self_reference is not None else 0

    def inputs(
        self, observation: torch.Tensor, carrier: TensorDict, reference: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Network input from an observation and its carried state or replay batch: the
        skill is appended for skill agents, then SR's reference vector (``reference``, or at
        ``act`` the one of the carried state's queries)."""
        parts = [observation, carrier["skill"]] if self.skill_dim else [observation]
        if self.self_reference is not None:
            if reference is None:
                reference = self.self_reference.vector(
                    observation, carrier["sr_query"], self.task_index is None
                )
            parts.append(reference)
        return torch.cat(parts, dim=-1) if len(parts) > 1 else observation

    def adapt(self, replay, frame: int, state: TensorDict) -> TensorDict:
        """As :meth:`Agent.adapt`, with the encoder mapping frames to what the model reads;
        SR stores the training worlds' new states (the online loop alone calls ``adapt``)."""
        if self.self_reference is not None:
            state = self.self_reference.record(state, state["sr_step"], self.task_index is None)
            state = state.exclude("sr_step")
        if self.reward_model is None:
            return state
        encode = self.encode_observation if self.pixels else None
        return self.reward_model.adapt(replay, frame, state, self.task_index, encode=encode)

    # -- carried state with Self-Reference ---------------------------------------------------------
    def init_state(self, num_envs: int, device: torch.device | str = "cpu") -> TensorDict:
        return self.with_self_reference(super().init_state(num_envs, device), num_envs, device)

    def with_self_reference(self, state: TensorDict, num_envs: int, device) -> TensorDict:
        """``state`` with SR's carried values (:meth:`SelfReference.init_state`) added."""
        if self.self_reference is not None:
            state.update(self.self_reference.init_state(num_envs, device, self.task_index is None))
        return state

    def observe(self, state: TensorDict, step_output: TensorDict) -> TensorDict:
        """As :meth:`Agent.observe`; SR keeps the step's new states and done flags for
        :meth:`adapt` (evaluation episodes, which are never adapted, stay out of its bank)."""
        state = super().observe(state, step_output)
        if self.self_reference is not None:
            step = TensorDict(
                {"next_observation": step_output["next_observation"], "done": step_output["done"]},
                batch_size=state.batch_size,
            )
            state["sr_step"] = step
        return state

    def replay_extras(self, state: TensorDict) -> dict[str, torch.Tensor]:
        extras = super().replay_extras(state)
        if self.self_reference is not None:
            extras |= self.self_reference.replay_extras(state)
        return extras

    def act_inputs(self, observation: torch.Tensor, state: TensorDict, explore: bool) -> torch.Tensor:
        """The actor's input at ``act`` (no gradients): SR first chooses each world's query."""
        features = self.encoder(observation)
        if self.self_reference is not None:
            self.self_reference.choose_queries(
                features, state, explore and self.self_reference.active(self.task_index is None)
            )
        return self.inputs(features, state)

    # -- the update template -------------------------------------------------------------------
    def update(self, replay, step: int) -> dict[str, torch.Tensor]:
        """Sample, encode (pixels), train the reward model (pretraining), pick the reward, one
        critic step (which also steps the shared encoder when the critic trains it), one actor
        step."""
        batch = self.encode_batch(replay.sample(self.batch_size))
        metrics = self.update_reward_model(batch) if self.task_index is None else {}
        reward, reward_metrics = self.reward(batch)
        learner = self.encoder_learner()
        features = batch["observation"].detach() if learner == "reward_model" else batch["observation"]
        reference, next_reference = self.references(batch)
        observation = self.inputs(features, batch, reference)
        next_observation = self.inputs(batch["next_observation"], batch, next_reference)
        metrics |= reward_metrics
        with self.stepping_encoder(learner == "critic"), self.stepping_self_reference():
            metrics |= self.update_critic(
                observation, batch["action"], reward, batch["discount"], next_observation
            )
        metrics |= self.update_actor(observation.detach(), step)
        if self.self_reference is not None:
            metrics |= self.self_reference.update(batch, reward.detach(), self.task_index is None)
        return metrics

    def references(self, batch: TensorDict) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """SR's reference vectors of a batch's states (with gradients: the critic's loss trains
        the aggregator) and next states (without), or None without SR."""
        if self.self_reference is None:
            return None, None
        queries, next_queries = self.self_reference.batch_queries(batch)
        pretraining = self.task_index is None
        reference = self.self_reference.vector(batch["observation"], queries, pretraining)
        with torch.no_grad():
            next_reference = self.self_reference.vector(batch["next_observation"], next_queries, pretraining)
        return reference, next_reference

    @abc.abstractmethod
    def update_critic(self, observation, action, reward, discount, next_observation) -> dict:
        """One critic step on ``(B, input_dim)`` inputs; returns metrics."""

    @abc.abstractmethod
    def update_actor(self, observation: torch.Tensor, step: int) -> dict:
        """One actor step on detached ``(B, input_dim)`` inputs; returns metrics."""

    def critic_step(self, observation, action, target) -> dict[str, torch.Tensor]:
        """Regress every Q head of ``self.critic`` on ``target``, then move the target critic
        (shared by the DDPG and SAC backbones, whose targets differ)."""
        loss, metrics = critic_loss(self.critic(observation, action), target)
        optimise(self.critic_opt, loss)
        soft_update(self.critic_target, self.critic, self.critic_target_tau)
        return metrics

    # -- rewards --------------------------------------------------------------------------------
    def intrinsic_reward(self, batch: TensorDict) -> torch.Tensor:
        """As :meth:`Agent.intrinsic_reward`; the model reads detached features when the
        encoder trains (its reward is no loss of the encoder's)."""
        if self.reward_model is None:
            return super().intrinsic_reward(batch)
        return self.reward_model.intrinsic_reward(batch.detach() if self.encoder_opt is not None else batch)

    def update_reward_model(self, batch: TensorDict) -> dict[str, torch.Tensor]:
        """Train whatever ``intrinsic_reward`` is computed from (pretraining only). On pixels
        (an encoded batch) the model gets detached features, or, when it
        ``trains_encoder``, features with gradients and the encoder is stepped after it."""
        if self.reward_model is None:
            return {}
        learner = self.encoder_learner()
        if learner == "reward_model":
            with self.stepping_encoder():
                return self.reward_model.update(batch)
        return self.reward_model.update(batch.detach() if learner else batch)

    def reward(self, batch: TensorDict) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The reward an update trains on, and metrics about it."""
        if self.task_index is not None:
            extrinsic = batch["task_reward"][:, self.task_index]
            return extrinsic, {"extrinsic_reward": extrinsic.mean()}
        intrinsic = self.intrinsic_reward(batch)
        return intrinsic, {
            "intrinsic_reward": intrinsic.mean(),
            "intrinsic_reward_std": intrinsic.std(),
            "intrinsic_reward_max": intrinsic.max(),
        }

    # -- the shared encoder (pixels) -------------------------------------------------------------
    def encoder_learner(self) -> str | None:
        """Whose loss trains the shared encoder in this update: ``"reward_model"`` (one that
        ``trains_encoder``, while pretraining), ``"critic"``, or None (state vectors, or a
        frozen encoder)."""
        if self.encoder_opt is None:
            return None
        model = self.reward_model
        if self.task_index is None and model is not None and model.trains_encoder:
            return "reward_model"
        return "critic"

    def encode_batch(self, batch: TensorDict) -> TensorDict:
        """The batch with ``observation`` and ``next_observation`` replaced by the encoder's
        features ``(B, repr_dim)`` of randomly shifted frames (DrQ-v2): the observation with
        gradients when the encoder trains, the next observation without (URLB). State
        batches are returned as they are."""
        if not self.pixels:
            return batch
        if self.frame_encoder is not None:  # per_network: flat frames, each network encodes them
            flat = {key: self.encoder(batch[key]) for key in ("observation", "next_observation")}
            return batch.exclude("observation", "next_observation").update(flat)
        observation = self.augment(batch["observation"])
        next_observation = self.augment(batch["next_observation"])
        with torch.set_grad_enabled(self.encoder_opt is not None):
            features = self.encoder(observation)
        with torch.no_grad():
            next_features = self.encoder(next_observation)
        return batch.exclude("observation", "next_observation").update(
            {"observation": features, "next_observation": next_features}
        )

    @torch.no_grad()
    def encode_observation(self, observation: torch.Tensor, chunk: int = 1024) -> torch.Tensor:
        """Encoder features ``(M, repr_dim)`` of observations ``(M, ...)``: no augmentation,
        no gradients, ``chunk`` frames at a time (APS's regression encodes thousands)."""
        return torch.cat([self.encoder(part) for part in observation.split(chunk)])

    @contextlib.contextmanager
    def stepping_self_reference(self):
        """Step SR's attention on the gradients the critic's loss leaves in it (its reference
        vector is part of the critic's input), as the encoder's optimiser is stepped."""
        opt = self.self_reference.aggregator_opt if self.self_reference is not None else None
        if opt is not None:
            opt.zero_grad(set_to_none=True)
        yield
        if opt is not None:
            opt.step()

    @contextlib.contextmanager
    def stepping_encoder(self, active: bool = True):
        """Step the shared encoder's optimiser on the gradients the block's backward passes
        leave in the encoder (URLB zeroes ``encoder_opt`` before a loss and steps it after)."""
        if active:
            self.encoder_opt.zero_grad(set_to_none=True)
        yield
        if active:
            self.encoder_opt.step()

    # -- transfer ------------------------------------------------------------------------------
    # Finetuning also copies the transferred critic (trunk, or whole) into the target critic
    # (the backbone's ``init_critic_target`` argument; URLB's rule, the default: the target
    # keeps the fresh critic's weights it was built with).
    init_critic_target: bool = False

    def init_from(self, pretrained: ActorCriticAgent) -> None:
        """URLB's transfer (``DDPGAgent.init_from``): the encoder (pixels; nothing for states),
        the actor, and the critic trunk when ``init_critic`` (the whole critic for reward
        models with ``transfer_whole_critic``: ProtoRL's ``init_from``), into the critic only:
        the target critic stays the fresh one unless ``init_critic_target``. A reward model
        takes what it keeps (:meth:`RewardModel.transfer_from`: all of it, except where an
        option says otherwise) and is switched to finetuning."""
        self.check_self_reference(pretrained)
        hard_update(self.encoder, pretrained.encoder)
        hard_update(self.actor, pretrained.actor)
        if self.init_critic:
            whole = self.reward_model is not None and self.reward_model.transfer_whole_critic
            part = (lambda critic: critic) if whole else (lambda critic: critic.trunk)
            hard_update(part(self.critic), part(pretrained.critic))
            if self.init_critic_target:
                hard_update(part(self.critic_target), part(pretrained.critic))
        if self.reward_model is not None:
            self.reward_model.transfer_from(pretrained.reward_model)
            self.reward_model.finetune()
        if self.self_reference is not None:
            # Algorithm 1's finetuning start: the query module, its value, the aggregator and the
            # reference set of pretraining (D_reference <- D_reference^PT); a fresh optimiser.
            hard_update(self.self_reference, pretrained.self_reference)

    def check_self_reference(self, pretrained: ActorCriticAgent) -> None:
        """Refuse a transfer between an agent with SR and one without (their inputs differ)."""
        if self.self_reference is not None and pretrained.self_reference is None:
            raise ValueError(
                "addon=sr finetunes a snapshot pretrained with addon=sr (its reference set); this "
                "one has none: pretrain with addon=sr, or finetune without it"
            )
        if self.self_reference is None and pretrained.self_reference is not None:
            raise ValueError("this snapshot was pretrained with addon=sr: finetune it with addon=sr")

    def all_optimisers(self) -> dict[str, torch.optim.Optimizer]:
        extra = self.self_reference.optimisers() if self.self_reference is not None else {}
        return super().all_optimisers() | {f"self_reference.{k}": v for k, v in extra.items()}
