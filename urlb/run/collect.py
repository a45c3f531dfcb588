"""Reward-free trajectory datasets from a random or a pretrained policy (issue #8).

``collect.py`` builds the parts from its config (:func:`collect_from_config`); tests hand
:func:`collect_dataset` small ones. The loop is the runner's collection step without the
updates::

    td = env.reset()
    state = policy.init_state(num_envs, device)
    for _ in range(frames // num_envs):
        action = policy.act(td["observation"], state, explore=True)
        replay.add(s, a, s', every task's reward, terminated, truncated,
                   extras=physics state of s (qpos, qvel, act), position, the policy's extras)
        state = policy.observe(state, out)

and the replay is written as a dataset (:meth:`urlb.data.replay.ReplayBuffer.save_dataset`), so a
collected dataset has exactly the layout of a pretraining run's ``save_dataset=true``: world
major, episodes delimited as :func:`urlb.data.datasets.episode_boundaries` says. Every task's reward
is kept (relabelling, as ExORL, Yarats et al. 2022, does with its exploration datasets) and the
meta names the tasks (``task_names``) so a sampler can pick a column by name.
"""

from __future__ import annotations

from pathlib import Path

import torch
from omegaconf import DictConfig
from tensordict import TensorDict

from envs import make_env
from urlb.data.checkpoint import load_snapshot, parse_frames
from urlb.data.memory import Need, check_needs
from urlb.data.replay import ReplayBuffer
from urlb.measure.logging import git_revision
from urlb.run.build import build_agent, domain_class, prepare_process, resolve_device, step_bytes, world_bytes
from urlb.run.spec import stored_config, stored_observe_pose

POLICIES = ("random", "snapshot")
# The physics state each transition's observation was made in: enough to put a world back
# there (envs.env.BatchedEnv.set_physics_state) and recompute any observation or reward.
PHYSICS_KEYS = ("qpos", "qvel", "act")


class RandomPolicy:
    """Uniform actions in [-1, 1], with the agent interface the collection loop calls
    (``agents/base.py``): no carried state, no extras.

    Args:
        action_dim: size of an action.
        generator: the draws' source, on the env's device.
    """

    def __init__(self, action_dim: int, generator: torch.Generator):
        self.action_dim = action_dim
        self.generator = generator

    def init_state(self, num_envs: int, device: torch.device | str) -> TensorDict:
        return TensorDict({}, batch_size=[num_envs], device=device)

    def act(self, observation: torch.Tensor, state: TensorDict, explore: bool) -> torch.Tensor:
        """``(N, action_dim)`` float32 uniform in [-1, 1] for ``(N, obs_dim)`` observations."""
        shape = (observation.shape[0], self.action_dim)
        draw = torch.rand(shape, generator=self.generator, device=observation.device)
        return draw * 2 - 1

    def observe(self, state: TensorDict, step_output: TensorDict) -> TensorDict:
        return state

    def replay_extras(self, state: TensorDict) -> dict[str, torch.Tensor]:
        return {}


# -- the loop ---------------------------------------------------------------------------------
@torch.no_grad()
def collect(env, policy, frames: int) -> ReplayBuffer:
    """Step every world of ``env`` with ``policy`` for ``frames`` transitions in all.

    Returns a one-step replay (``nstep=1``) holding them, each with the physics state its
    observation was made in (``qpos``, ``qvel``, ``act``), the ``position`` before and after,
    and the policy's ``replay_extras`` (a skill agent's skill).
    """
    steps = env_steps(frames, env.num_envs)
    replay = ReplayBuffer(frames, env.num_envs, env.device, nstep=1)
    td = env.reset()
    observation, position = td["observation"], td["position"]
    state = policy.init_state(env.num_envs, env.device)
    for _ in range(steps):
        action = policy.act(observation, state, explore=True)
        physics = env.physics_state()
        extras = policy.replay_extras(state) | {key: physics[key] for key in PHYSICS_KEYS}
        out = env.step(action)
        extras |= {"position": position, "next_position": out["next_position"]}
        replay.add(
            observation,
            action,
            out["next_observation"],
            out["task_reward"],
            out["terminated"],
            out["truncated"],
            extras=extras,
        )
        state = policy.observe(state, out)
        observation, position = out["observation"], out["position"]
    return replay


def env_steps(frames: int, num_envs: int) -> int:
    """Env steps that make ``frames`` transitions over ``num_envs`` worlds, exactly."""
    if frames < 1 or frames % num_envs:
        raise ValueError(
            f"frames={frames} is not a positive multiple of num_envs={num_envs}; "
            f"choose frames = k * {num_envs}"
        )
    return frames // num_envs


def collect_dataset(env, policy, frames: int, out: str | Path, meta: dict) -> Path:
    """Collect ``frames`` transitions (:func:`collect`) and write them as a dataset at ``out``.

    ``meta`` (domain, agent, policy, seed, source...) is completed with ``frames``,
    ``task_names`` (the columns of ``task_reward``), ``episode_steps`` and, from the replay,
    ``num_envs`` and ``transitions``. Raises before stepping if ``out`` exists.
    """
    out = Path(out)
    check_out(out)
    replay = collect(env, policy, frames)
    meta = meta | {
        "frames": frames,
        "task_names": list(env.task_names),
        "episode_steps": env.episode_steps,
    }
    return replay.save_dataset(out, meta)


def check_out(out: Path) -> None:
    if out.exists():
        raise FileExistsError(
            f"out={out} already exists and datasets are never overwritten; choose another out "
            "(or delete that folder)"
        )


# -- from the config ---------------------------------------------------------------------------
def collect_from_config(cfg: DictConfig) -> Path:
    """``collect.py``: check the inputs, build env and policy, collect, write; returns ``out``."""
    check_config(cfg)
    frames = parse_frames(cfg.frames)
    domain = cfg.env.domain
    snapshot = load_collector(cfg.snapshot, domain) if cfg.policy == "snapshot" else None
    pose = stored_observe_pose(snapshot["config"]) if snapshot else False
    check_collect_sizes(cfg, frames, pose, snapshot)
    device = prepare_process(cfg)  # threads; the seed of an agent's exploration noise and skill draws
    env = make_env(domain, cfg.num_envs, backend=cfg.backend, device=device, seed=cfg.seed, observe_pose=pose)
    if snapshot is None:
        generator = torch.Generator(device=env.device).manual_seed(cfg.seed)
        policy, agent = RandomPolicy(env.action_dim, generator), "random"
    else:
        policy = build_agent(snapshot["config"]["agent"], env, env.device)
        policy.load_state_dict(snapshot["agent"])
        agent = snapshot["agent_name"]
    meta = {
        "domain": domain,
        "agent": agent,
        "policy": cfg.policy,
        "seed": cfg.seed,
        "source": f"collect.py policy={cfg.policy}",
        "snapshot": None if snapshot is None else str(Path(cfg.snapshot).resolve()),
        "snapshot_frames": None if snapshot is None else snapshot["frames"],
        "snapshot_seed": None if snapshot is None else snapshot["seed"],
        "observe_pose": pose,
        "git_revision": git_revision(Path(__file__).resolve().parent)[0],
    }
    path = collect_dataset(env, policy, frames, cfg.out, meta)
    print(f"[collect] {frames} frames of {domain} ({agent}) written to {path}")
    return path


def check_collect_sizes(cfg: DictConfig, frames: int, pose: bool, snapshot: dict | None) -> None:
    """Refuse a collection whose worlds and replay would not fit in memory, before either is
    allocated (``urlb.data.memory.check_needs``)."""
    domain = domain_class(cfg.env.domain)
    backend, device = cfg.backend, resolve_device(cfg.device)
    sim_device = device if backend != "cpu" else torch.device("cpu")
    model = ((snapshot or {}).get("config", {}).get("agent") or {}).get("reward_model") or {}
    skill_dim = int(model.get("skill_dim", 0) or 0) if isinstance(model, dict) else 0
    per_step = step_bytes(domain, pose=pose, skill_dim=skill_dim, physics=True)
    check_needs(
        [
            Need("worlds", sim_device, cfg.num_envs, world_bytes(domain), "worlds", "num_envs"),
            Need(
                "replay",
                sim_device,
                frames,
                ReplayBuffer.bytes_per_transition(per_step),
                "transitions",
                "frames",
            ),
        ]
    )


def check_config(cfg: DictConfig) -> None:
    """Every input error before anything is built, each as one line naming the fix (Hydra
    itself refuses an unknown ``env``, listing the domains of ``configs/env``)."""
    if cfg.policy not in POLICIES:
        raise ValueError(f"policy={cfg.policy} is unknown; use one of {', '.join(POLICIES)}")
    if cfg.policy == "snapshot" and cfg.snapshot is None:
        raise ValueError("policy=snapshot needs snapshot=<path to a pretraining snapshot_<frames>.pt>")
    if cfg.policy != "snapshot" and cfg.snapshot is not None:
        raise ValueError(f"snapshot={cfg.snapshot} is only read with policy=snapshot; drop it or set that")
    env_steps(parse_frames(cfg.frames), cfg.num_envs)
    check_out(Path(cfg.out))


def load_collector(path: str | Path, domain: str) -> dict:
    """The payload of the pretraining snapshot at ``path`` (``urlb.run.pretrain``
    writes them), checked to hold an agent pretrained on ``domain``."""
    snapshot = load_snapshot(path)
    missing = {"agent", "agent_name", "config", "domain", "frames", "seed"} - set(snapshot)
    if missing:
        raise ValueError(
            f"{path} is not a pretraining snapshot (no {', '.join(sorted(missing))}); pass a "
            "snapshot_<frames>.pt that pretrain.py wrote"
        )
    config = stored_config(snapshot, path)  # data: its agent config names only the project's agents
    if snapshot["domain"] != domain:
        raise ValueError(
            f"snapshot {path} was pretrained on {snapshot['domain']}; collect with env={snapshot['domain']}"
        )
    if config.get("obs", {"type": "states"})["type"] != "states":
        raise ValueError(
            f"snapshot {path} acts on pixels; collection steps state envs: collect with a snapshot "
            "pretrained on states (obs=states) or policy=random, then render_dataset.py for frames"
        )
    return snapshot
