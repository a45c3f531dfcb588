"""Finetuning runs: a snapshot (or nothing, ``snapshot=null``) trained on one task's reward.

``finetune.py`` calls :func:`main`. A skill agent that fixes one skill picks it before the
first frame (:func:`choose_skill`); a zero-shot agent (FB, HILP: ``infers_task``) fixes its
task's z as ``zero_shot.py`` infers it, from the snapshot's dataset (:func:`fix_task_latent`),
and finetunes from that zero-shot policy (records: ``mode: zero-shot+finetune``).

Imports: envs, urlb.data, urlb.loop, urlb.measure, urlb.run.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from omegaconf import DictConfig

from envs import make_env
from envs.tasks import parse_task
from urlb.data.checkpoint import find_snapshot, load_snapshot
from urlb.data.records import write_atomically
from urlb.loop.online import OnlineLoop
from urlb.measure.skills import select_skill
from urlb.run.build import (
    build_agent,
    build_envs,
    build_replay,
    build_sampler,
    check_sizes,
    online_schedule,
    prepare_process,
)
from urlb.run.execute import execute
from urlb.run.folder import open_run
from urlb.run.plan import (
    build_plan,
    env_options,
    hydra_agent_name,
    observe_pose,
    pixel_options,
    snapshot_folder,
    write_plan,
)
from urlb.run.spec import agent_class, stored_config, stored_observe_pose
from urlb.run.zero_shot import inference_rows, task_transitions


def main(cfg: DictConfig, name: str | None = None) -> dict:
    """``finetune.py``: finetune ``cfg.snapshot`` on ``cfg.task``."""
    domain, task = parse_task(cfg.task)
    if task is None:
        raise ValueError(
            f"task={cfg.task} is a domain; finetune on one of its tasks, e.g. task={domain}_stand"
        )
    plan, _ = build_plan(cfg, "finetune", name or hydra_agent_name())
    return finetune(plan)


def read_pretrained(plan: DictConfig) -> tuple[Path, dict]:
    """The snapshot named by ``plan.snapshot`` (never another seed or frame count; asked about
    when several configurations have the frame count) and its payload, checked against the plan
    before anything is built. Its stored config is data: every ``_target_`` in its agent config
    must be one of the project's agents (:func:`urlb.run.spec.stored_config`)."""
    domain, _ = parse_task(plan.task)
    name = plan.agent_name
    folder = snapshot_folder(plan, domain)
    path = resumed_snapshot(plan) or find_snapshot(
        plan.snapshot, Path(plan.snapshot_root), name, folder, plan.snapshot_seed
    )
    snapshot = load_snapshot(path)
    config = stored_config(snapshot, path)
    pretrained_obs = config.get("obs", {"type": "states"})["type"]
    if pretrained_obs != plan.obs.type:
        raise ValueError(
            f"snapshot {path} was pretrained with obs={pretrained_obs}; finetune with obs={pretrained_obs}"
        )
    if snapshot.get("agent_name") != name or snapshot.get("domain") != domain:
        raise ValueError(
            f"snapshot {path} is {snapshot.get('agent_name')} on {snapshot.get('domain')}, "
            f"not {name} on {domain}"
        )
    target = config.get("agent", {}).get("_target_")
    if target != plan.agent._target_:
        raise ValueError(f"snapshot {path} holds a {target}, but agent={name} builds a {plan.agent._target_}")
    pose = stored_observe_pose(config)
    if pose != observe_pose(plan):
        raise ValueError(
            f"snapshot {path} was pretrained with observe_pose={pose}; finetune with "
            f"agent.reward_model.observe_pose={pose} so the observations match"
        )
    return path, snapshot


def resumed_snapshot(plan: DictConfig) -> Path | None:
    """The snapshot file a run being resumed started from (its ``run.json``), so that a
    configuration pretrained since cannot make ``snapshot=<frames>`` mean another file."""
    info = Path(plan.run_dir) / "run.json"
    if not plan.resume or not (Path(plan.run_dir) / "checkpoint.pt").is_file() or not info.is_file():
        return None
    try:
        recorded = json.loads(info.read_text()).get("snapshot_file")
    except (OSError, json.JSONDecodeError, AttributeError):
        return None
    return Path(recorded) if isinstance(recorded, str) and Path(recorded).is_file() else None


def load_pretrained(plan: DictConfig, env, snapshot: dict | None = None):
    """The pretrained agent named by ``plan.snapshot`` (:func:`read_pretrained`), built for
    ``env`` from the snapshot's checked agent config, and the snapshot's payload."""
    if snapshot is None:
        _, snapshot = read_pretrained(plan)
    pretrained = build_agent(snapshot["config"]["agent"], env, env.device)
    pretrained.load_state_dict(snapshot["agent"])
    return pretrained, snapshot


def choose_skill(plan: DictConfig, agent, task: str, run_dir: Path) -> int:
    """Fix the finetuning skill of a skill model that picks one (``SkillModel.
    finetune_candidates``): the candidate whose deterministic rollout of the pretrained
    policy scores best on ``task`` (``urlb.measure.skills.select_skill``). The choice and every
    candidate's return go to ``run_dir/skill_selection.json``. Models that keep drawing
    skills while finetuning (URLB's DIAYN) are left alone. Returns the env frames the
    selection spent outside the finetuning budget (0: none)."""
    model = agent.reward_model
    if model is None or not agent.skill_dim:
        return 0
    generator = torch.Generator().manual_seed(plan.seed)
    candidates = model.finetune_candidates(plan.skill_selection.candidates, generator)
    if candidates is None:
        return 0
    device = next(agent.parameters()).device
    env = make_env(task, len(candidates), device=device, **env_options(plan))
    skill, returns = select_skill(env, agent, candidates, task, seed=plan.seed)
    env.close()
    model.fix_skill(skill)
    best = int(returns.argmax())
    print(
        f"[finetune] skill {best} of {len(candidates)} candidates: return {float(returns[best]):.1f} "
        f"on {task} (median candidate {float(returns.median()):.1f})"
    )
    selection = {
        "task": task,
        "rule": "best deterministic one-episode return of the pretrained policy",
        "chosen": best,
        "skill": skill.tolist(),
        "returns": returns.tolist(),
        "frames_used": len(candidates) * env.episode_steps * env.action_repeat,  # frames, as budgets
    }
    write_atomically(run_dir / "skill_selection.json", json.dumps(selection, indent=1))
    return selection["frames_used"]


def fix_task_latent(plan: DictConfig, agent, snapshot: dict, path: Path, task: str, env) -> dict:
    """Fix ``task``'s z in a zero-shot agent as ``zero_shot.py`` infers it: the same
    ``inference_samples`` rows of the snapshot's dataset (or ``plan.dataset``) for the same seed
    (:func:`urlb.run.zero_shot.inference_rows`), relabelled with the task's reward
    (:func:`urlb.run.zero_shot.task_transitions`); the agent also fits its reward scale on them
    (``LatentAgent.fix_task``). Returns the record's fields that name them."""
    dataset = plan.dataset or snapshot.get("dataset")
    if dataset is None:
        raise ValueError(f"snapshot {path} names no dataset; pass dataset=<the dataset it was pretrained on>")
    if not Path(dataset).is_dir():
        raise FileNotFoundError(
            f"dataset {dataset} (the task's z is inferred from it) is not a folder; pass dataset=<its path>"
        )
    sampler = build_sampler(dataset, env, parse_task(task)[0], pixel_options(plan))
    pretrained_on = snapshot.get("pretrain_frames")
    if plan.dataset is None and pretrained_on is not None and len(sampler) != pretrained_on:
        raise ValueError(
            f"dataset {dataset} holds {len(sampler)} transitions, {pretrained_on} when {path} was "
            "pretrained on it: it changed; pass dataset=<the data to infer the task's z from>"
        )
    rows = inference_rows(sampler, plan.inference_samples, plan.seed)
    agent.fix_task(*task_transitions(sampler, task, rows))
    print(
        f"[finetune] {plan.agent_name}: {task}'s z inferred from {len(rows)} transitions of {dataset} "
        f"(reward scale {float(agent.reward_scale):.3g}); finetuning from the zero-shot policy"
    )
    return {
        "mode": "zero-shot+finetune",
        "inference_samples": int(plan.inference_samples),
        "dataset": Path(dataset).name,
        "dataset_agent": sampler.meta.get("agent"),
    }


def finetune(plan: DictConfig) -> dict:
    """Finetune the plan's snapshot (or train from scratch with ``snapshot=null``) on its task."""
    domain, task = parse_task(plan.task)
    check_sizes(plan)
    infers_task = agent_class(plan.agent).infers_task
    if infers_task and plan.snapshot is None:
        raise ValueError(
            f"agent={plan.agent_name} finetunes from its zero-shot policy, which needs a pretrained "
            "snapshot: pass snapshot=<its snapshot_<updates>.pt>"
        )
    path, snapshot = read_pretrained(plan) if plan.snapshot is not None else (None, None)
    with open_run(plan, "finetune") as start:
        if start is None:
            return {}
        device = prepare_process(plan)
        env, eval_env = build_envs(plan, task, device)
        agent = build_agent(plan.agent, env, env.device)
        replay = build_replay(plan, env)
        if start.fresh:
            write_plan(plan, extra={"snapshot_file": None if path is None else str(path.resolve())})
        run_dir = start.run_dir
        snapshot_frames = pretrain_frames = snapshot_seed = None
        extra_frames = 0
        if snapshot is not None:
            pretrained, _ = load_pretrained(plan, env, snapshot)
            agent.init_from(pretrained)
            extra_frames = choose_skill(plan, agent, task, run_dir)
            snapshot_frames, snapshot_seed = snapshot["frames"], snapshot["seed"]
            # Snapshots name the frames behind them (offline: the dataset's); older ones in the config.
            pretrain_frames = snapshot.get(
                "pretrain_frames", snapshot["config"]["protocol"]["pretrain_frames"]
            )
        total = plan.protocol.finetune_frames
        inferred = fix_task_latent(plan, agent, snapshot, path, task, env) if infers_task else {}
        record = {
            "agent": plan.agent_name,
            "domain": domain,
            "seed": plan.seed,
            "phase": "finetune",
            "snapshot_frames": snapshot_frames,
            "snapshot_seed": snapshot_seed,
            "pretrain_frames": pretrain_frames,
            "finetune_frames": total,
            # env frames spent outside the finetuning budget (skill selection; issue 17)
            "extra_frames": extra_frames,
            "obs": plan.obs.type,
        } | inferred
        # A policy worth keeping acts through the seed frames (Agent.seed_actions).
        random_frames = 0 if agent.seed_actions == "policy" else None
        schedule = online_schedule(plan, total, random_frames=random_frames)

        def make_loop(logger) -> OnlineLoop:
            return OnlineLoop(
                env, eval_env, agent, replay, logger, schedule, run_dir, plan.seed, record, task=task
            )

        result, _ = execute(plan, start, make_loop, total, "finetune", record)
        return result
