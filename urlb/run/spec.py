"""What the run builder needs to know about an agent before it builds one: an :class:`AgentSpec`,
read once from the agent's class and its (local, trusted) config.

Every fact comes from one place: class attributes and class methods of the agent
(``pretrains_offline``, ``pixel_format``, ``sequence_window``, ``own_update_ratio``,
``finetune_discount``) and of its
reward model (``nstep``, a skill model or not), and plain values of the config
(``reward_model.observe_pose``). Nothing downstream looks an agent up by string again.

Imports: agents.base (the interface), the SR add-on class (agents.parts.self_reference) and Hydra's
class lookup; no concrete agent by name.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from hydra.utils import get_class
from omegaconf import DictConfig, OmegaConf

from agents.base import Agent, RewardModel, SkillModel
from agents.parts.self_reference import SelfReference


@dataclass(frozen=True)
class AgentSpec:
    """Facts about the agent of a run.

    Attributes:
        name: the config name (``agent=<name>``), which names run folders and snapshots.
        target: the agent class's import path.
        pretrains_offline: a dataset agent (pretrains from ``dataset=``, not online).
        reads_dataset_frames: a dataset agent that learns from a pixel dataset's frames.
        pixel_format: the frame options the agent asks for on pixels (DreamerV2: 64x64, no
            stack), or an empty mapping: the config's.
        observe_pose: the agent observes the global pose (a skill model's ``observe_pose``).
        skill_agent: the reward model is a skill model (skill measurements, skill selection).
        window: the replay window of a sequence learner, both phases (None: transitions).
        reward_nstep: the reward model's own transition length while pretraining (METRA: 1).
        own_update_ratio: the agent's update-to-data ratio per agent step, or None.
        has_encoder_option: the config has ``update_encoder`` (pixel actor-critic backbones).
        finetune_discount: the replay discount finetuning must use (a pretrained critic's
            gamma: FB's and HILP's F), or None: the protocol's.
    """

    name: str
    target: str
    pretrains_offline: bool
    reads_dataset_frames: bool
    pixel_format: Mapping[str, int]
    observe_pose: bool
    skill_agent: bool
    window: int | None
    reward_nstep: int | None
    own_update_ratio: float | None
    has_encoder_option: bool
    finetune_discount: float | None = None

    def replay_nstep(self, phase: str) -> int | None:
        """The replay window the agent samples in ``phase`` (``pretrain`` or ``finetune``), or
        None for the protocol's n-step."""
        if self.window is not None:
            return self.window
        return self.reward_nstep if phase == "pretrain" else None


def agent_class(config: Mapping) -> type[Agent]:
    """The agent class a config's ``_target_`` names; anything but an agent is refused."""
    cls = get_class(config["_target_"])
    if not (isinstance(cls, type) and issubclass(cls, Agent)):
        raise ValueError(f"agent._target_={config['_target_']} is not an agent class (agents/base.py Agent)")
    return cls


def reward_model_class(config: Mapping) -> type[RewardModel] | None:
    """The reward model class of an agent config, or None."""
    model = config.get("reward_model")
    if not model:
        return None
    cls = get_class(model["_target_"])
    if not (isinstance(cls, type) and issubclass(cls, RewardModel)):
        raise ValueError(f"agent.reward_model._target_={model['_target_']} is not a RewardModel")
    return cls


def agent_spec(name: str, config: DictConfig | Mapping) -> AgentSpec:
    """Read the :class:`AgentSpec` of agent ``name`` from its config (``cfg.agent``)."""
    if isinstance(config, DictConfig):
        config = OmegaConf.to_container(config, resolve=True)
    cls = agent_class(config)
    if config.get("self_reference") and "self_reference" not in inspect.signature(cls.__init__).parameters:
        raise ValueError(
            f"addon=sr composes onto the DDPG/SAC agents; {name.split('+')[0]} ({cls.__name__}) has "
            "no actor-critic backbone to take it: drop addon=sr"
        )
    model = reward_model_class(config)
    model_config = config.get("reward_model") or {}
    return AgentSpec(
        name=name,
        target=config["_target_"],
        pretrains_offline=bool(cls.pretrains_offline),
        reads_dataset_frames=bool(cls.reads_dataset_frames),
        pixel_format=MappingProxyType(dict(cls.pixel_format or {})),
        observe_pose=bool(model_config.get("observe_pose", False)),
        skill_agent=model is not None and issubclass(model, SkillModel),
        window=cls.sequence_window(config),
        reward_nstep=None if model is None else model.nstep,
        own_update_ratio=cls.own_update_ratio(config),
        has_encoder_option="update_encoder" in config,
        finetune_discount=cls.finetune_discount(config),
    )


AGENT_TARGET = re.compile(r"agents(\.[A-Za-z_]\w*)+")


def check_agent_config(config, where: str = "agent") -> None:
    """Refuse an agent config that would build anything but the project's own agents and
    reward models: every ``_target_`` must be a dotted name under ``agents`` that is an
    :class:`Agent` or :class:`RewardModel` class, and only plain values may sit beside it.
    A snapshot's stored config goes through here before anything is instantiated from it."""
    if isinstance(config, DictConfig):
        config = OmegaConf.to_container(config, resolve=True)
    if isinstance(config, Mapping):
        target = config.get("_target_")
        if target is not None:
            if not isinstance(target, str) or not AGENT_TARGET.fullmatch(target):
                raise ValueError(f"{where}._target_={target!r} is not one of the project's agents (agents.*)")
            try:
                cls = get_class(target)
            except (ImportError, ValueError):
                cls = None
            if not (isinstance(cls, type) and issubclass(cls, Agent | RewardModel | SelfReference)):
                raise ValueError(
                    f"{where}._target_={target} is not an agent or reward model class (nor the SR add-on)"
                )
        for key, value in config.items():
            if key.startswith("_") and key not in ("_target_", "_partial_"):
                raise ValueError(
                    f"{where}.{key}: only _target_ and _partial_ are accepted in an agent config"
                )
            check_agent_config(value, f"{where}.{key}")
    elif isinstance(config, list | tuple):
        for index, value in enumerate(config):
            check_agent_config(value, f"{where}[{index}]")
    elif isinstance(config, str) and "${" in config:
        # Instantiating would resolve it (``${oc.env:...}`` reads the environment): a stored
        # config holds resolved values only.
        raise ValueError(
            f"{where}={config!r} is an interpolation; an agent config holds resolved values only"
        )
    elif not isinstance(config, bool | int | float | str | type(None)):
        raise ValueError(f"{where}: {type(config).__name__} is not a plain value")


def stored_config(snapshot: dict, path) -> dict:
    """The config a snapshot stores, checked as data before anything reads it: a dict of plain
    values (never made an OmegaConf config, whose interpolations would resolve), whose
    ``agent`` section, if any, names only the project's agents (:func:`check_agent_config`)."""
    config = snapshot.get("config")
    if not isinstance(config, dict):
        raise ValueError(
            f"snapshot {path} has no stored config (a dict); pass a snapshot that pretrain.py wrote"
        )
    if "agent" in config:
        check_agent_config(config["agent"], where=f"snapshot {path}: agent")
    obs = config.get("obs", {"type": "states"})
    if not isinstance(obs, dict) or obs.get("type") not in ("states", "pixels"):
        raise ValueError(f"snapshot {path}: obs={obs!r} is not states or pixels")
    return config


def stored_observe_pose(config: dict) -> bool:
    """Whether a snapshot's stored (checked) config observed the global pose."""
    model = (config.get("agent") or {}).get("reward_model") or {}
    return bool(model.get("observe_pose", False)) if isinstance(model, dict) else False
