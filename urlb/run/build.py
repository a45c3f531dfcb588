"""The parts of a run, built from its frozen plan: device, envs, agent, replay, logger.

Imports: envs, agents' interface (through Hydra's instantiate of the plan's own agent config),
urlb.data, urlb.measure, urlb.run.plan.
"""

from __future__ import annotations

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig

from envs import make_env
from urlb.data.replay import ReplayBuffer
from urlb.loop.online import Schedule
from urlb.measure.logging import Logger
from urlb.measure.skills import SkillEvaluator
from urlb.run.plan import env_options, pixel_options
from urlb.run.spec import check_agent_config


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device={name} but this machine has no CUDA GPU; use device=cpu")
    return torch.device(name)


def prepare_process(plan: DictConfig) -> torch.device:
    """Process-wide settings of a run (torch threads, the seed); returns the device."""
    device = resolve_device(plan.device)
    if plan.threads:
        torch.set_num_threads(plan.threads)
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


def online_schedule(plan: DictConfig, total: int, snapshot_frames=()) -> Schedule:
    """The online loop's schedule of a ``total``-frame run from the plan's protocol."""
    protocol = plan.protocol
    return Schedule(
        total_frames=total,
        seed_frames=protocol.seed_frames,
        updates_per_frame=protocol.updates_per_frame,
        eval_every_frames=protocol.eval_every_frames,
        log_every_frames=protocol.log_every_frames,
        checkpoint_every_frames=protocol.checkpoint_every_frames,
        snapshot_frames=tuple(snapshot_frames),
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
