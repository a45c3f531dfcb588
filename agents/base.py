"""The interface every urlb agent implements, and the loop that drives it.

Only the interface lives here: :class:`Agent`, :class:`RewardModel` and :class:`SkillModel`.
The actor-critic machinery that DDPG and SAC share is in ``agents/actor_critic.py``; building
blocks (networks, encoders, intrinsic-reward cores, skill priors) are in ``agents/parts/``.
Agents import nothing from ``envs``, ``urlb.run`` or ``urlb.loop`` (import-linter checks it).

One online run (``urlb.loop.online.OnlineLoop``) calls an agent like this::

    state = agent.init_state(num_envs)            # carried per-world state (skill, RNN), a TensorDict
    td = env.reset()
    while frames < total_frames:
        if frames < seed_frames and agent.seed_actions == "random":
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
        for _ in range(updates_due):              # update-to-data ratio from config, after seed_frames
            metrics = agent.update(replay, step)  # a dict of 0-dim tensors; the logger places it

Families fit it as follows:

* online actor-critic agents are a backbone (``agents/ddpg.py``, ``agents/sac.py`` on
  ``agents/actor_critic.py``) that *has* an optional :class:`RewardModel`: exploration and
  skill-discovery agents are reward models (their intrinsic reward, its update and their
  skill hooks), so one reward model runs on either backbone, chosen by config;
* skill agents keep a skill per world in ``state["skill"]``, resample it in ``observe``,
  store it through ``replay_extras`` and pick one at finetune time in ``init_from``;
* recurrent agents (world models, decision transformers) keep their carried latent in
  ``state``, advance it in ``act`` (in place: ``act`` sees each observation once) and reset
  it in ``observe`` where ``out["done"]``; sequence learners say how long their replay
  windows are (:meth:`Agent.sequence_window`) and sample them with ``replay.sample_sequences``;
* dataset agents (``pretrains_offline``) are pretrained by ``urlb.loop.offline`` calling
  ``update`` with a dataset sampler in place of ``replay``; they act online through the
  same ``act``.

Evaluation (``urlb.measure.evaluate``) runs deterministic episodes from
``agent.evaluation_state(num_envs)``: ``init_state`` unless the reward model has its own rule
(URLB's DIAYN and SMM hold one skill for every evaluation episode).

Rewards: during reward-free pretraining the loop calls ``agent.set_task(None)`` and updates
train on ``intrinsic_reward(batch)``; at finetune time ``set_task(index)`` makes them train
on that column of ``batch["task_reward"]`` alone (URLB: extrinsic reward only).

Facts the run builder needs before it builds anything (``urlb.run.spec.AgentSpec``) are class
attributes and class methods read from the class and its config: ``pretrains_offline``,
``pixel_format``, :meth:`Agent.sequence_window`, the ``updates_per_frame`` constructor
argument of agents that have their own ratio, and a reward model's ``nstep``.

``init_from(pretrained)`` copies what transfers from a pretrained agent of the same class
and says so in its docstring; state_dict round trips restore everything an update reads
(networks, target networks, optimisers, temperature) via ``training_state``.
"""

from __future__ import annotations

import abc
import inspect
from collections.abc import Mapping
from typing import Any

import torch
from tensordict import TensorDict
from torch import nn

from agents.parts.skills import ONE_HOT, SkillPrior


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

    def evaluation_state(self, num_envs: int, device) -> dict[str, torch.Tensor] | None:
        """Carried values evaluation episodes start from, or None to start them like a run
        (:meth:`init_state`); see :meth:`SkillModel.evaluation_state`."""
        return None

    def observe(self, state: TensorDict, step_output: TensorDict) -> TensorDict:
        """Carried values after an env step (resample skills on schedule or where done)."""
        return state

    def transfer_from(self, pretrained: RewardModel) -> None:
        """Take what finetuning keeps of the pretrained model (all of it, by default: skills,
        running statistics); called by the backbone's ``init_from`` before :meth:`finetune`."""
        self.load_state_dict(pretrained.state_dict())

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
    the skill-discovery agents (DIAYN, METRA, SMM, APS, CIC), which set their skill
    ``prior`` (``agents.parts.skills``) and override their reward and update.

    Skills are drawn per world at the start, then again where an episode ended and,
    when ``update_skill_every_step > 0``, every that many env steps of the episode.
    At finetune time a model may instead pursue one fixed skill (:meth:`fix_skill`,
    saved with the weights): the rule that picks it lives with the finetune run
    (``urlb.measure.skills.select_skill``) and the candidates with the model
    (:meth:`finetune_candidates`).

    Args:
        skill_dim: size of a skill vector.
        update_skill_every_step: env steps between draws within an episode (0: one skill
            per episode).
        observe_pose: the agent observes the global pose that URLB's egocentric observation
            leaves out (``make_env(observe_pose=True)``: quadruped torso x, y and heading,
            walker torso x), as state-based skill papers give policy and representation
            the full state. The run builds its envs from this flag, so pretraining,
            finetuning and the skill measurements see the same observation.
    """

    # The distribution skills are drawn from (one-hot by default; agents/parts/skills.py).
    prior: SkillPrior = ONE_HOT
    # How evaluation episodes get their skills: ``schedule``, as in training (a skill per
    # world, redrawn on the schedule); ``shared``, one skill drawn once for every evaluation
    # episode and held to the end (URLB's ``eval`` calls ``init_meta`` once). Models that offer
    # the choice take it as a constructor argument (DIAYN, SMM).
    evaluation_skill: str = "schedule"

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

    def sample_skills(self, num: int, device) -> torch.Tensor:
        """``num`` skills ``(num, skill_dim)`` from the skill prior."""
        return self.prior.sample(num, self.skill_dim, device)

    def evaluation_skills(self, count: int, generator: torch.Generator) -> torch.Tensor:
        """``count`` skills for deterministic rollouts (coverage, pictures, videos): each
        one-hot skill in turn for a discrete prior, else draws from ``generator``."""
        return self.prior.evaluation(count, self.skill_dim, generator).to(self.fixed_skill.device)

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

    def evaluation_state(self, num_envs: int, device) -> dict[str, torch.Tensor] | None:
        """``shared`` (before a skill is fixed): one skill for every world, held to the end
        of the evaluation (``skill_held`` stops :meth:`observe` redrawing it); else None."""
        if self.evaluation_skill == "schedule" or self._fixed:
            return None
        held = torch.ones(num_envs, dtype=torch.bool, device=device)
        return {"skill": self.draw(1, device).expand(num_envs, -1).clone(), "skill_held": held}

    def observe(self, state: TensorDict, step_output: TensorDict) -> TensorDict:
        """Draw new skills where an episode ended or the schedule says so (never while an
        evaluation holds one skill)."""
        if self._fixed or "skill_held" in state.keys():
            return state
        resample = step_output["done"]
        if self.update_skill_every_step > 0:
            resample = resample | (step_output["step_count"] % self.update_skill_every_step == 0)
        fresh = self.sample_skills(state.batch_size[0], state["skill"].device)
        state["skill"] = torch.where(resample[:, None], fresh, state["skill"])
        return state


class Agent(nn.Module, abc.ABC):
    """Base class: a torch module with the hooks the loops call (see module docstring).

    Args:
        obs_dim, action_dim: env sizes (``obs_dim``: an int for state vectors, ``(C, H, W)``
            for frames).

    A subclass that has a reward model assigns ``self.reward_model`` (a :class:`RewardModel`)
    in its constructor; ``skill_dim`` follows from it.
    """

    # Dataset agents (PDT, SUPE) pretrain offline from a reward-free dataset (``urlb.loop.offline``).
    pretrains_offline: bool = False
    # The frames an agent needs on ``obs=pixels`` when they differ from the config's
    # (``size``, ``frame_stack``; DreamerV2: single 64x64 frames); None: the config's.
    pixel_format: dict | None = None
    # Frames read through a shared encoder (the actor-critic backbones on ``(C, H, W)``).
    pixels: bool = False
    # Dataset agents that learn from a pixel dataset's frames (``obs=pixels`` with a dataset
    # holding ``frames``, rendered by ``render_dataset.py``): FB and HILP.
    reads_dataset_frames: bool = False
    # Zero-shot agents (FB, HILP: ``agents/zero_shot.py``) infer a task's latent from
    # reward-labelled dataset states (``zero_shot.py``) instead of training on the task.
    infers_task: bool = False
    # What the online loop acts with during the protocol's ``seed_frames`` (no updates yet):
    # ``random``, uniform actions (URLB's), or ``policy``, the agent's own exploring policy (a
    # zero-shot agent finetuned from its task's z: ``agents/zero_shot.py``).
    seed_actions: str = "random"

    def __init__(self, obs_dim: int | tuple[int, int, int], action_dim: int):
        super().__init__()
        self.obs_dim = obs_dim
        self.action_dim = action_dim
        self.task_index: int | None = None
        self.reward_model: RewardModel | None = None

    @property
    def skill_dim(self) -> int:
        """Size of the skill the policy reads (0: no skills)."""
        return self.reward_model.skill_dim if self.reward_model is not None else 0

    # -- facts the run builder reads before building (urlb.run.spec) ----------------------------
    @classmethod
    def config_value(cls, config: Mapping, key: str) -> Any:
        """``config[key]``, or the constructor's default when the config leaves it out."""
        if key in config:
            return config[key]
        parameter = inspect.signature(cls.__init__).parameters.get(key)
        if parameter is None or parameter.default is inspect.Parameter.empty:
            raise KeyError(f"{cls.__name__} has no constructor argument {key!r} with a default")
        return parameter.default

    @classmethod
    def sequence_window(cls, config: Mapping) -> int | None:
        """The replay window (in steps) this agent samples in both phases, for sequence
        learners (world models, transformers); None: transitions of the protocol's n-step
        (or the reward model's own ``nstep`` while pretraining)."""
        return None

    @classmethod
    def own_update_ratio(cls, config: Mapping) -> float | None:
        """The agent's own update-to-data ratio per agent step (its ``updates_per_frame``
        constructor argument: DreamerV2's one update every 10 env steps), which replaces the
        protocol's; None for agents without one."""
        if "updates_per_frame" not in inspect.signature(cls.__init__).parameters:
            return None
        return float(cls.config_value(config, "updates_per_frame"))

    @classmethod
    def finetune_discount(cls, config: Mapping) -> float | None:
        """The per-step discount the finetuning replay must use when the agent's own differs
        from the protocol's (a pretrained critic's horizon: FB's and HILP's F); None: the
        protocol's ``replay.discount``."""
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

    def evaluation_state(self, num_envs: int, device: torch.device | str = "cpu") -> TensorDict:
        """The carried state evaluation episodes start from (``urlb.measure.evaluate``): the
        reward model's own rule where it has one (URLB's DIAYN and SMM hold one skill for
        every episode), else :meth:`init_state`."""
        held = self.reward_model.evaluation_state(num_envs, device) if self.reward_model is not None else None
        state = self.init_state(num_envs, device)
        return state if held is None else state.update(held)

    def observe(self, state: TensorDict, step_output: TensorDict) -> TensorDict:
        """The carried state after an env step (``step_output`` is ``env.step``'s TensorDict)."""
        return self.reward_model.observe(state, step_output) if self.reward_model is not None else state

    def adapt(self, replay, frame: int, state: TensorDict) -> TensorDict:
        """The carried state after the loop's step ``frame``, given the replay so far
        (``RewardModel.adapt``)."""
        if self.reward_model is None:
            return state
        return self.reward_model.adapt(replay, frame, state, self.task_index)

    def replay_extras(self, state: TensorDict) -> dict[str, torch.Tensor]:
        """Per-world values stored with each transition (the skill, for skill agents)."""
        return {"skill": state["skill"]} if self.skill_dim else {}

    # -- acting and learning -------------------------------------------------------------------
    @abc.abstractmethod
    def act(self, observation: torch.Tensor, state: TensorDict, explore: bool) -> torch.Tensor:
        """Actions ``(N, action_dim)`` in [-1, 1] for observations ``(N, obs_dim)``."""

    @abc.abstractmethod
    def update(self, replay, step: int) -> dict[str, torch.Tensor]:
        """One update from ``replay`` (anything with ``sample(batch_size)``, or a dataset
        sampler offline); returns a dict of 0-dim tensors (metrics)."""

    def set_task(self, task_index: int | None) -> None:
        """Train on the intrinsic reward (``None``, pretraining) or on one task's reward."""
        self.task_index = task_index

    def intrinsic_reward(self, batch: TensorDict) -> torch.Tensor:
        """Reward-free pretraining signal ``(B,)``: the reward model's, or zeros for an agent
        without one (which then learns nothing task-specific while pretraining)."""
        if self.reward_model is None:
            return torch.zeros(batch.batch_size[0], device=batch.device)
        return self.reward_model.intrinsic_reward(batch)

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
        """The agent's own optimisers, by name."""
        return {}

    def all_optimisers(self) -> dict[str, torch.optim.Optimizer]:
        extra = self.reward_model.optimisers() if self.reward_model is not None else {}
        return {**self.optimisers(), **{f"reward_model.{k}": v for k, v in extra.items()}}
