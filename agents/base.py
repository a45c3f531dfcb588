"""The interface every urlb agent implements, and the loop that drives it.

One online run (``urlb.loop.online.OnlineRunner``) calls an agent like this::

    state = agent.init_state(num_envs)            # carried per-world state (skill, RNN), a TensorDict
    td = env.reset()
    while frames < total_frames:
        if frames < seed_frames:
            action = uniform random in [-1, 1]
        else:
            action = agent.act(td["observation"], state, explore=True)
        out = env.step(action)
        replay.add(td["observation"], action, out["next_observation"], out["task_reward"],
                   out["terminated"], out["truncated"], extras=agent.replay_extras(state))
        state = agent.observe(state, out)         # advance carried state: resample skills on
                                                  # schedule or where an episode ended
        state = agent.adapt(replay, frames, state)  # data-driven switches (APS's task regression)
        td = out
        for _ in range(updates_due):              # update-to-data ratio from config
            metrics = agent.update(replay, step)  # a dict of 0-dim tensors; the logger places it

Families fit it as follows:

* online actor-critic agents are a backbone (``agents/ddpg.py``, ``agents/sac.py``: the
  only full actor-critic updates) that *has* an optional :class:`RewardModel`: exploration
  and skill-discovery agents are reward models (their intrinsic reward, its update and
  their skill hooks), so one reward model runs on either backbone, chosen by config;
* skill agents keep a skill per world in ``state["skill"]``, resample it in ``observe``,
  store it through ``replay_extras`` and pick one at finetune time in ``init_from``;
* recurrent agents (world models, decision transformers) keep their carried latent in
  ``state``, advance it in ``act`` (in place: ``act`` sees each observation once) and reset
  it in ``observe`` where ``out["done"]``; sequence learners size the replay's windows
  (``replay_nstep``) and sample them with ``replay.sample_sequences``;
* dataset agents are pretrained by ``urlb.loop.offline`` calling ``update`` with a dataset
  sampler in place of ``replay``; they act online through the same ``act``.

Rewards: during reward-free pretraining the runner calls ``agent.set_task(None)`` and
updates train on ``intrinsic_reward(batch)``; at finetune time ``set_task(index)`` makes
them train on that column of ``batch["task_reward"]`` alone (URLB: extrinsic reward only).

Pixels: the backbones read frames ``(C, H, W)`` through one shared encoder
(``agents.parts.encoders``, DrQ-v2's, as URLB does). ``update`` then shifts both frame stacks at
random and encodes them (:meth:`Agent.encode_batch`); the reward model and the critic see
the encoder's features where states would be, skills appended after them. One loss trains
the encoder per update (:meth:`Agent.encoder_learner`): a reward model's own while
pretraining when it ``trains_encoder`` (URLB's ICM, Disagreement, ProtoRL, APT), else the
critic's; ``update_encoder=False`` freezes it. ``act`` encodes without augmentation.

``init_from(pretrained)`` copies what transfers from a pretrained agent of the same class
and says so in its docstring; state_dict round trips restore everything an update reads
(networks, target networks, optimisers, temperature) via ``training_state``.
"""

from __future__ import annotations

import abc
import contextlib

import torch
from tensordict import TensorDict
from torch import nn

from agents.parts.encoders import RandomShift, make_encoder


class RewardModel(nn.Module):
    """An intrinsic reward, the model it is computed from, and (for skill agents) the
    skill each world pursues. Subclasses override what they need; the defaults are a
    skill-free model with no parameters.

    Attributes:
        skill_dim: size of the skill appended to the policy's and critic's input (0: none).
        nstep: the transition length the intrinsic reward is defined on, which pretraining's
            replay then uses whatever the preset says (METRA: 1), or None for the protocol's.
        successor_features: the backbone's Q heads output ``skill_dim`` successor features
            that the critic dots with the skill (APS), instead of one value.
        transfer_whole_critic: finetuning copies the whole pretrained critic, Q heads too
            (ProtoRL's ``init_from``), not URLB's default of the trunk alone.
        trains_encoder: on pixels, the model's own loss trains the backbone's shared encoder
            while pretraining (URLB's ICM, Disagreement, ProtoRL, APT): :meth:`update` gets
            features with gradients, the backbone steps the encoder's optimiser after it and
            the critic gets detached features. Otherwise the model sees detached features
            and the critic's loss trains the encoder.
    """

    skill_dim: int = 0
    nstep: int | None = None
    successor_features: bool = False
    transfer_whole_critic: bool = False
    trains_encoder: bool = False

    def intrinsic_reward(self, batch: TensorDict) -> torch.Tensor:
        """The pretraining reward ``(B,)`` of a replay batch (n-step: ``observation`` and
        ``next_observation`` are n steps apart, as in URLB)."""
        raise TypeError(f"{type(self).__name__} must define intrinsic_reward")

    def update(self, batch: TensorDict) -> dict[str, torch.Tensor]:
        """One step of the reward model's own training; returns metrics."""
        return {}

    def optimisers(self) -> dict[str, torch.optim.Optimizer]:
        return {}

    def init_state(self, num_envs: int, device) -> dict[str, torch.Tensor]:
        """Per-world carried values at the start of a run (e.g. ``{"skill": (N, skill_dim)}``)."""
        return {}

    def observe(self, state: TensorDict, step_output: TensorDict) -> TensorDict:
        """Carried values after an env step (resample skills on schedule or where done)."""
        return state

    def finetune(self) -> None:
        """Switch to finetuning (e.g. fix how skills are chosen); called by ``init_from``."""

    def adapt(self, replay, frame: int, state: TensorDict, task_index: int | None, encode=None) -> TensorDict:
        """Called by the runner after every env step with the replay, the frame count and
        the carried state; returns the carried state. A model that changes course from the
        data collected so far does it here (APS regresses its task vector from the first
        finetuning frames). Must stay cheap when it has nothing to do: a host-side check.
        ``encode`` maps the replay's observations to what the model reads (the backbone's
        encoder on pixels: :meth:`Agent.encode_observation`), None on states."""
        return state


class SkillModel(RewardModel):
    """A reward model whose worlds each pursue a skill: the shared skill bookkeeping of
    the skill-discovery agents (DIAYN, METRA, ...), which override :meth:`sample_skills`
    and their reward and update.

    Skills are drawn per world at the start, then again where an episode ended and,
    when ``update_skill_every_step > 0``, every that many env steps of the episode.
    At finetune time a model may instead pursue one fixed skill (:meth:`fix_skill`,
    saved with the weights): the rule that picks it lives with the finetune loop
    (``urlb.measure.skills.select_skill``) and the candidates with the model
    (:meth:`finetune_candidates`).

    Args:
        skill_dim: size of a skill vector.
        update_skill_every_step: env steps between draws within an episode (0: one skill
            per episode).
        observe_pose: the agent observes the global pose that URLB's egocentric observation
            leaves out (``make_env(observe_pose=True)``: quadruped torso x, y and heading,
            walker torso x), as state-based skill papers give policy and representation
            the full state. The runner builds its envs from this flag, so pretraining,
            finetuning and the skill measurements see the same observation.
    """

    def __init__(self, skill_dim: int, update_skill_every_step: int = 0, observe_pose: bool = False):
        super().__init__()
        if skill_dim < 1 or update_skill_every_step < 0:
            raise ValueError(
                f"skill_dim must be >= 1 and update_skill_every_step >= 0; got "
                f"{skill_dim}, {update_skill_every_step}"
            )
        self.skill_dim = skill_dim
        self.update_skill_every_step = update_skill_every_step
        self.observe_pose = observe_pose
        self.register_buffer("fixed_skill", torch.zeros(skill_dim))
        self.register_buffer("skill_is_fixed", torch.zeros((), dtype=torch.bool))
        self._fixed = False  # host mirror of skill_is_fixed: observe() must not sync
        self.register_load_state_dict_post_hook(lambda module, keys: module._sync_fixed())

    def _sync_fixed(self) -> None:
        self._fixed = bool(self.skill_is_fixed)

    @abc.abstractmethod
    def sample_skills(self, num: int, device) -> torch.Tensor:
        """``num`` skills ``(num, skill_dim)`` from the skill prior."""

    def evaluation_skills(self, count: int, generator: torch.Generator) -> torch.Tensor:
        """``count`` skills for deterministic rollouts (coverage, pictures, videos). This
        default suits one-hot skills: each of the K skills in turn, ``count // K`` times
        plus one for the first ``count % K`` (METRA's allocation); continuous skill models
        draw from ``generator``."""
        index = (torch.arange(count) % self.skill_dim).sort().values
        return nn.functional.one_hot(index, self.skill_dim).float().to(self.fixed_skill.device)

    def finetune_candidates(self, count: int, generator: torch.Generator) -> torch.Tensor | None:
        """Skills to choose the finetuning skill from, or None to keep drawing skills on
        the pretraining schedule while finetuning (URLB's rule for DIAYN)."""
        return None

    def fix_skill(self, skill: torch.Tensor) -> None:
        """Pursue ``skill`` in every world from now on (finetuning)."""
        self.fixed_skill.copy_(skill.reshape(self.skill_dim))
        self.skill_is_fixed.fill_(True)
        self._fixed = True

    def draw(self, num: int, device) -> torch.Tensor:
        if self._fixed:
            return self.fixed_skill.to(device).expand(num, -1).clone()
        return self.sample_skills(num, device)

    def init_state(self, num_envs: int, device) -> dict[str, torch.Tensor]:
        return {"skill": self.draw(num_envs, device)}

    def observe(self, state: TensorDict, step_output: TensorDict) -> TensorDict:
        """Draw new skills where an episode ended or the schedule says so."""
        if self._fixed:
            return state
        resample = step_output["done"]
        if self.update_skill_every_step > 0:
            resample = resample | (step_output["step_count"] % self.update_skill_every_step == 0)
        fresh = self.sample_skills(state.batch_size[0], state["skill"].device)
        state["skill"] = torch.where(resample[:, None], fresh, state["skill"])
        return state


class Agent(nn.Module, abc.ABC):
    """Base class: a torch module with the hooks the runner calls (see module docstring).

    Args:
        obs_dim, action_dim: env sizes (``obs_dim``: an int for state vectors, ``(C, H, W)``
            for frames).
        reward_model: a callable ``(obs_dim=, action_dim=) -> RewardModel`` (a Hydra
            partial in the configs), or None for the plain backbone. Built with
            ``obs_dim=repr_dim``: on pixels it reads the shared encoder's features.
        shared_encoder: read observations through ``agents.parts.encoders.make_encoder`` (the
            actor-critic backbones): ``self.encoder`` (the identity for states),
            ``self.repr_dim``, ``self.pixels`` and a random shift for frames. Agents that
            handle observations themselves (world models) leave it off. A backbone that
            trains the encoder sets ``self.encoder_opt``.
    """

    # An agent's own update-to-data ratio, used by the runner in place of the protocol's
    # (world models: DreamerV2's one update every 10 env steps); None: the protocol's.
    updates_per_frame: float | None = None
    # Dataset agents (PDT) pretrain offline from a reward-free dataset (``urlb.loop.offline``).
    pretrains_offline: bool = False
    # The frames an agent needs on ``obs=pixels`` when they differ from the config's
    # (``size``, ``frame_stack``; DreamerV2: single 64x64 frames); None: the config's.
    pixel_format: dict | None = None
    # Frames read through the shared encoder (``shared_encoder`` and an ``(C, H, W)`` obs_dim).
    pixels: bool = False
    # The shared encoder's optimiser (URLB's ``encoder_opt``); None: no encoder to train
    # (state vectors) or a frozen one (``update_encoder=False``).
    encoder_opt: torch.optim.Optimizer | None = None

    def __init__(
        self,
        obs_dim: int | tuple[int, int, int],
        action_dim: int,
        reward_model=None,
        shared_encoder: bool = False,
    ):
        super().__init__()
        self.obs_dim = obs_dim
        self.action_dim = action_dim
        self.task_index: int | None = None
        self.repr_dim = obs_dim
        if shared_encoder:
            self.encoder, self.repr_dim = make_encoder(obs_dim)
            self.pixels = not isinstance(self.encoder, nn.Identity)
            self.augment = RandomShift(pad=4) if self.pixels else None  # DrQ-v2's pad
        self.reward_model = (
            reward_model(obs_dim=self.repr_dim, action_dim=action_dim) if reward_model else None
        )
        self.skill_dim = self.reward_model.skill_dim if self.reward_model is not None else 0
        if self.pixels and getattr(self.reward_model, "observe_pose", False):
            raise ValueError(
                f"{type(self.reward_model).__name__}: observe_pose appends the global pose to state "
                "observations; pixels have none (set reward_model.observe_pose=false)"
            )

    def replay_nstep(self, phase: str) -> int | None:
        """The replay window this agent samples in ``phase`` ("pretrain" or "finetune"), or
        None for the protocol's n-step: a reward model's own horizon while pretraining
        (METRA: 1); sequence agents' sequence length."""
        if phase == "pretrain" and self.reward_model is not None:
            return self.reward_model.nstep
        return None

    def prepare_offline(self, sampler) -> None:
        """Dataset agents: whatever they take from the whole dataset before the first offline
        update (PDT: the state normaliser's statistics); ``sampler`` is a
        :class:`urlb.data.datasets.DatasetSampler`."""

    # -- carried state ----------------------------------------------------------------------
    def init_state(self, num_envs: int, device: torch.device | str = "cpu") -> TensorDict:
        """Per-world carried state at the start of a run (empty for memoryless agents)."""
        values = self.reward_model.init_state(num_envs, device) if self.reward_model is not None else {}
        return TensorDict(values, batch_size=[num_envs], device=device)

    def observe(self, state: TensorDict, step_output: TensorDict) -> TensorDict:
        """The carried state after an env step (``step_output`` is ``env.step``'s TensorDict)."""
        return self.reward_model.observe(state, step_output) if self.reward_model is not None else state

    def adapt(self, replay, frame: int, state: TensorDict) -> TensorDict:
        """The carried state after the runner's step ``frame``, given the replay so far
        (``RewardModel.adapt``)."""
        if self.reward_model is None:
            return state
        encode = self.encode_observation if self.pixels else None
        return self.reward_model.adapt(replay, frame, state, self.task_index, encode=encode)

    @property
    def critic_task_dim(self) -> int:
        """Successor-feature size of the Q heads (``RewardModel.successor_features``), 0 for
        the usual scalar Q."""
        model = self.reward_model
        return self.skill_dim if model is not None and model.successor_features else 0

    def replay_extras(self, state: TensorDict) -> dict[str, torch.Tensor]:
        """Per-world values stored with each transition (the skill, for skill agents)."""
        return {"skill": state["skill"]} if self.skill_dim else {}

    # -- acting and learning -------------------------------------------------------------------
    @abc.abstractmethod
    def act(self, observation: torch.Tensor, state: TensorDict, explore: bool) -> torch.Tensor:
        """Actions ``(N, action_dim)`` in [-1, 1] for observations ``(N, obs_dim)``."""

    def update(self, replay, step: int) -> dict[str, torch.Tensor]:
        """One update from ``replay`` (anything with ``sample(batch_size)``); returns metrics.

        This default is the actor-critic template the backbones fill in: sample, encode
        (pixels), train the reward model (pretraining), pick the reward, one critic step
        (which also steps the shared encoder when the critic trains it), one actor step.
        Agents of another shape (world models, sequence models) override it whole."""
        batch = self.encode_batch(replay.sample(self.batch_size))
        metrics = self.update_reward_model(batch) if self.task_index is None else {}
        reward, reward_metrics = self.reward(batch)
        learner = self.encoder_learner()
        features = batch["observation"].detach() if learner == "reward_model" else batch["observation"]
        observation = self.inputs(features, batch)
        next_observation = self.inputs(batch["next_observation"], batch)
        metrics |= reward_metrics
        with self.stepping_encoder(learner == "critic"):
            metrics |= self.update_critic(
                observation, batch["action"], reward, batch["discount"], next_observation
            )
        metrics |= self.update_actor(observation.detach(), step)
        return metrics

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
    def stepping_encoder(self, active: bool = True):
        """Step the shared encoder's optimiser on the gradients the block's backward passes
        leave in the encoder (URLB zeroes ``encoder_opt`` before a loss and steps it after)."""
        if active:
            self.encoder_opt.zero_grad(set_to_none=True)
        yield
        if active:
            self.encoder_opt.step()

    def inputs(self, observation: torch.Tensor, carrier: TensorDict) -> torch.Tensor:
        """Network input from an observation and its carried state or replay batch: the
        skill is appended for skill agents."""
        return torch.cat([observation, carrier["skill"]], dim=-1) if self.skill_dim else observation

    def update_critic(
        self, observation, action, reward, discount, next_observation
    ) -> dict[str, torch.Tensor]:
        raise TypeError(f"{type(self).__name__} overrides update() or must define update_critic")

    def update_actor(self, observation: torch.Tensor, step: int) -> dict[str, torch.Tensor]:
        raise TypeError(f"{type(self).__name__} overrides update() or must define update_actor")

    def set_task(self, task_index: int | None) -> None:
        """Train on the intrinsic reward (``None``, pretraining) or on one task's reward."""
        self.task_index = task_index

    def intrinsic_reward(self, batch: TensorDict) -> torch.Tensor:
        """Reward-free pretraining signal ``(B,)``: the reward model's, or zeros for a plain
        backbone (which then learns nothing task-specific while pretraining)."""
        if self.reward_model is None:
            return torch.zeros(batch.batch_size[0], device=batch.device)
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

    # -- transfer and checkpoints ----------------------------------------------------------------
    def init_from(self, pretrained: Agent) -> None:
        """Copy what transfers to finetuning (each agent documents what)."""
        raise TypeError(f"{type(self).__name__} does not define what transfers from pretraining")

    def training_state(self) -> dict:
        """Everything an update reads: module weights plus optimiser states."""
        optimisers = {name: opt.state_dict() for name, opt in self.all_optimisers().items()}
        return {"modules": self.state_dict(), "optimisers": optimisers}

    def load_training_state(self, state: dict) -> None:
        self.load_state_dict(state["modules"])
        for name, opt in self.all_optimisers().items():
            opt.load_state_dict(state["optimisers"][name])

    def optimisers(self) -> dict[str, torch.optim.Optimizer]:
        """The backbone's optimisers, by name (the shared encoder's as ``"encoder"``)."""
        return {}

    def all_optimisers(self) -> dict[str, torch.optim.Optimizer]:
        extra = self.reward_model.optimisers() if self.reward_model is not None else {}
        return {**self.optimisers(), **{f"reward_model.{k}": v for k, v in extra.items()}}
