"""The parts of a run, built from its frozen plan: device, envs, agent, replay, a dataset's
sampler, logger; and the estimate of their memory made before any of them (:func:`check_sizes`).

Imports: envs, agents' interface (through Hydra's instantiate of the plan's own agent config),
urlb.data, urlb.measure, urlb.run.plan.
"""

from __future__ import annotations

import importlib
import math

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig

from agents.parts.self_reference import reference_row_bytes, replay_extra_bytes
from envs import make_env
from envs.registry import resolve_backend
from envs.tasks import DOMAINS, parse_task
from urlb.data.datasets import DatasetSampler, dataset_bytes
from urlb.data.memory import Need, check_dataset_fits, check_needs
from urlb.data.replay import ReplayBuffer
from urlb.loop.offline import check_dataset
from urlb.loop.online import Schedule
from urlb.measure.logging import Logger
from urlb.measure.skills import SkillEvaluator
from urlb.run.plan import env_options, observe_pose, pixel_options
from urlb.run.spec import check_agent_config
from urlb.run.threads import set_torch_threads


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device={name} but this machine has no CUDA GPU; use device=cpu")
    return torch.device(name)


def prepare_process(plan: DictConfig) -> torch.device:
    """Process-wide settings of a run (torch threads, the seed); returns the device."""
    device = resolve_device(plan.device)
    set_torch_threads(plan, device)
    torch.manual_seed(plan.seed)
    return device


def build_agent(agent_config, env, device: torch.device):
    """The agent for ``env`` from an agent config (``obs_dim``: a state size, or ``(C, H, W)``
    for frames). Every ``_target_`` in the config must name one of the project's agents or
    reward models (:func:`urlb.run.spec.check_agent_config`)."""
    check_agent_config(agent_config)
    return instantiate(agent_config, obs_dim=env.obs_dim, action_dim=env.action_dim).to(device)


def build_envs(plan: DictConfig, task: str, device: torch.device):
    """The training env (``protocol.num_envs`` worlds) and the eval env (one world per
    evaluation episode) of ``task`` (a task or a domain)."""
    options = env_options(plan)
    env = make_env(task, plan.protocol.num_envs, device=device, **options)
    eval_env = make_env(task, plan.protocol.eval_episodes, device=env.device, **options)
    return env, eval_env


def build_replay(plan: DictConfig, env) -> ReplayBuffer:
    return ReplayBuffer(
        plan.replay.capacity,
        env.num_envs,
        env.device,
        nstep=plan.replay.nstep,
        discount=plan.replay.discount,
        frame_stack=env.frame_stack,
    )


def build_sampler(path, env, domain: str, pixels: dict | None) -> DatasetSampler:
    """The sampler over the dataset at ``path`` for a run on ``env`` (``pixels``: the run's frame
    options, ``make_env``'s; None on states): refused before loading if it would not fit, then
    checked against the run's domain and observations (its frames against ``pixels``)."""
    check_dataset_fits(path, dataset_bytes(path), env.device)
    stack = None if pixels is None else pixels["frame_stack"]
    sampler = DatasetSampler.load(path, env.device, frame_stack=stack)
    check_dataset(sampler.meta, domain, env.obs_dim, sampler.fields["observation"], path, pixels)
    return sampler


def online_schedule(
    plan: DictConfig, total: int, snapshot_frames=(), random_frames: int | None = None
) -> Schedule:
    """The online loop's schedule of a ``total``-frame run from the plan's protocol
    (``random_frames``: :attr:`urlb.loop.online.Schedule.random_frames`)."""
    protocol = plan.protocol
    return Schedule(
        total_frames=total,
        seed_frames=protocol.seed_frames,
        updates_per_frame=protocol.updates_per_frame,
        eval_every_frames=protocol.eval_every_frames,
        log_every_frames=protocol.log_every_frames,
        checkpoint_every_frames=protocol.checkpoint_every_frames,
        snapshot_frames=tuple(snapshot_frames),
        random_frames=random_frames,
    )


def build_logger(plan: DictConfig, total: int, start: int, label: str) -> Logger:
    """The run's one logger, starting at clock value ``start`` (a resumed run's checkpoint)."""
    return Logger(
        plan.run_dir,
        total,
        use_tensorboard=plan.tensorboard,
        console=plan.console,
        start_frame=start,
        label=label,
    )


def build_skill_evaluators(plan: DictConfig, skill_agent: bool, device: torch.device) -> list:
    """Coverage and trajectory pictures at each pretraining evaluation of a skill agent."""
    if not skill_agent or not plan.skill_eval.rollouts:
        return []
    options = env_options(plan)
    evaluator = SkillEvaluator(
        plan.env.domain,
        plan.skill_eval.rollouts,
        plan.skill_eval.cell,
        plan.skill_eval.steps,
        backend=plan.backend,
        device=device,
        seed=plan.seed,
        out_dir=f"{plan.run_dir}/skills",
        observe_pose=options["observe_pose"],
        pixels=pixel_options(plan),
    )
    return [evaluator]


# -- memory, before anything is allocated -------------------------------------------------------------
# Bytes per simulated world: a world's MuJoCo data and the env's per-world tensors, measured as
# the growth of the process's resident memory over 2000 worlds of the cpu backend (walker 0.21,
# quadruped 0.25, jaco 0.45 MB), rounded up; the warp backend's worlds are taken to cost as much.
WORLD_BYTES = {"walker": 250_000, "quadruped": 300_000, "jaco": 500_000}
# The pixel renderer per world and pixel: rays, depth, colour and the BVH (1.45 MB per 84x84
# world, measured as above over 64 worlds on Warp's CPU device), rounded up.
RENDER_BYTES_PER_PIXEL = 256
ASSUMED_WORLD_BYTES = 500_000  # a domain not measured above


def check_sizes(plan: DictConfig) -> None:
    """Refuse a plan whose replay, worlds and renderer would not fit the free memory of their
    devices, before any of them is allocated (:func:`urlb.data.memory.check_needs`: one line
    with the figures and a size that fits)."""
    backend, sim_device = resolve_backend(plan.backend, resolve_device(plan.device))
    domain = domain_class(plan.env.domain if "env" in plan else parse_task(plan.task)[0])
    pixels = plan.obs.type == "pixels"
    protocol = plan.protocol
    worlds = protocol.num_envs + protocol.eval_episodes
    if plan.phase == "pretrain" and plan.skill_eval.rollouts:
        worlds += plan.skill_eval.rollouts
    needs = [Need("worlds", sim_device, worlds, world_bytes(domain), "worlds", "protocol.num_envs")]
    if pixels:
        # Rendering runs where the simulation does on warp, on Warp's CPU device beside the cpu backend.
        render_device = sim_device if backend == "warp" else torch.device("cpu")
        per_world = plan.obs.size**2 * (RENDER_BYTES_PER_PIXEL + 3 * plan.obs.frame_stack)
        needs.append(Need("renderer", render_device, worlds, per_world, "worlds", "protocol.num_envs"))
    if plan.phase == "pretrain" and getattr(plan, "dataset", None) is not None:
        check_needs(needs)  # a dataset agent: no replay
        return
    self_reference = plan.agent.get("self_reference")
    if self_reference:
        # SR's reference set lives with the agent; its rows also bound the similarity search's
        # scratch (scores and their masked copy for knn_chunk queries at a time).
        agent_device = resolve_device(plan.device)
        row = reference_row_bytes(_obs_dim(plan, domain), self_reference.knn_chunk)
        setting = "agent.self_reference.context_size"
        needs.append(
            Need("self-reference", agent_device, self_reference.context_size, row, "states", setting)
        )
    step = _step_bytes(plan, domain)
    transitions = math.ceil(plan.replay.capacity / protocol.num_envs) * protocol.num_envs
    per_transition = ReplayBuffer.bytes_per_transition(step, plan.obs.frame_stack if pixels else 1)
    needs.append(Need("replay", sim_device, transitions, per_transition, "transitions", "replay.capacity"))
    check_needs(needs)


def domain_class(name: str):
    """A domain's class (its sizes are class attributes), without building its model."""
    module, cls = DOMAINS[name]
    return getattr(importlib.import_module(module), cls)


def world_bytes(domain) -> int:
    return WORLD_BYTES.get(domain.name, ASSUMED_WORLD_BYTES)


def step_bytes(domain, observation_bytes: int | None = None, pose=False, skill_dim=0, physics=False) -> int:
    """One world's step in a replay: observations (``observation_bytes`` each, default the
    domain's state vector), action, every task's reward, the done flags, positions (3 floats
    at most), the agent's skill and, with ``physics``, the physics state (taken as 3 floats per
    observation entry: the models' qpos and qvel are smaller)."""
    if observation_bytes is None:
        observation_bytes = 4 * (domain.obs_dim + (domain.pose_dim if pose else 0))
    step = 2 * observation_bytes + 4 * domain.action_dim + 4 * len(domain.tasks) + 2 + 2 * 4 * 3
    step += 4 * skill_dim
    if physics:
        step += 3 * 4 * domain.obs_dim
    return step


def _step_bytes(plan: DictConfig, domain) -> int:
    frames = 3 * plan.obs.size**2 if plan.obs.type == "pixels" else None  # uint8, the newest frame
    model = plan.agent.get("reward_model") or {}
    skill_dim = int(model.get("skill_dim", 0) or 0)
    step = step_bytes(domain, frames, observe_pose(plan), skill_dim, bool(plan.get("save_dataset")))
    if plan.agent.get("self_reference"):
        step += replay_extra_bytes(_obs_dim(plan, domain))  # each transition's query and flags
    return step


def _obs_dim(plan: DictConfig, domain) -> int:
    """The state size the agent reads (with the global pose when it observes it)."""
    return domain.obs_dim + (domain.pose_dim if observe_pose(plan) else 0)
