"""Finetuning runs: a snapshot (or nothing, ``snapshot=null``) trained on one task's reward.

``finetune.py`` calls :func:`main`. A skill agent that fixes one skill picks it before the
first frame (:func:`choose_skill`).

Imports: envs, urlb.data, urlb.loop, urlb.measure, urlb.run.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from envs import make_env
from envs.tasks import parse_task
from urlb.data.checkpoint import find_snapshot, load_snapshot
from urlb.loop.online import OnlineLoop
from urlb.measure.skills import select_skill
from urlb.run.build import build_agent, build_envs, build_replay, online_schedule, prepare_process
from urlb.run.execute import execute
from urlb.run.plan import build_plan, env_options, hydra_agent_name, observe_pose, snapshot_folder, write_plan


def main(cfg: DictConfig, name: str | None = None) -> dict:
    """``finetune.py``: finetune ``cfg.snapshot`` on ``cfg.task``."""
    domain, task = parse_task(cfg.task)
    if task is None:
        raise ValueError(
            f"task={cfg.task} is a domain; finetune on one of its tasks, e.g. task={domain}_stand"
        )
    plan, _ = build_plan(cfg, "finetune", name or hydra_agent_name())
    return finetune(plan)


def load_pretrained(plan: DictConfig, env):
    """The pretrained agent named by ``plan.snapshot`` (never another seed or frame count),
    and the snapshot's payload. Its stored agent config is data: every ``_target_`` in it must
    be one of the project's agents (:func:`urlb.run.spec.check_agent_config`)."""
    domain, _ = parse_task(plan.task)
    name = plan.agent_name
    folder = snapshot_folder(plan, domain)
    path = find_snapshot(plan.snapshot, Path(plan.snapshot_root), name, folder, plan.snapshot_seed)
    snapshot = load_snapshot(path)
    pretrained_obs = snapshot["config"].get("obs", {"type": "states"})["type"]
    if pretrained_obs != plan.obs.type:
        raise ValueError(
            f"snapshot {path} was pretrained with obs={pretrained_obs}; finetune with obs={pretrained_obs}"
        )
    if snapshot["agent_name"] != name or snapshot["domain"] != domain:
        raise ValueError(
            f"snapshot {path} is {snapshot['agent_name']} on {snapshot['domain']}, not {name} on {domain}"
        )
    pretrained_cfg = OmegaConf.create(snapshot["config"])
    pose = observe_pose(pretrained_cfg)
    if pose != env.observe_pose:
        raise ValueError(
            f"snapshot {path} was pretrained with observe_pose={pose}; finetune with "
            f"agent.reward_model.observe_pose={pose} so the observations match"
        )
    pretrained = build_agent(pretrained_cfg.agent, env, env.device)
    pretrained.load_state_dict(snapshot["agent"])
    return pretrained, snapshot


def choose_skill(plan: DictConfig, agent, task: str, run_dir: Path) -> None:
    """Fix the finetuning skill of a skill model that picks one (``SkillModel.
    finetune_candidates``): the candidate whose deterministic rollout of the pretrained
    policy scores best on ``task`` (``urlb.measure.skills.select_skill``). The choice and every
    candidate's return go to ``run_dir/skill_selection.json``. Models that keep drawing
    skills while finetuning (URLB's DIAYN) are left alone."""
    model = agent.reward_model
    if model is None or not agent.skill_dim:
        return
    generator = torch.Generator().manual_seed(plan.seed)
    candidates = model.finetune_candidates(plan.skill_selection.candidates, generator)
    if candidates is None:
        return
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
        "frames_used": len(candidates) * env.episode_steps,
    }
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "skill_selection.json").write_text(json.dumps(selection, indent=1))


def finetune(plan: DictConfig) -> dict:
    """Finetune the plan's snapshot (or train from scratch with ``snapshot=null``) on its task."""
    domain, task = parse_task(plan.task)
    device = prepare_process(plan)
    env, eval_env = build_envs(plan, task, device)
    agent = build_agent(plan.agent, env, env.device)
    replay = build_replay(plan, env)
    run_dir = write_plan(plan)
    snapshot_frames = pretrain_frames = None
    if plan.snapshot is not None:
        pretrained, snapshot = load_pretrained(plan, env)
        agent.init_from(pretrained)
        choose_skill(plan, agent, task, run_dir)
        snapshot_frames = snapshot["frames"]
        # Snapshots name the frames behind them (offline: the dataset's); older ones in the config.
        pretrain_frames = snapshot.get("pretrain_frames", snapshot["config"]["protocol"]["pretrain_frames"])
    total = plan.protocol.finetune_frames
    record = {
        "agent": plan.agent_name,
        "domain": domain,
        "seed": plan.seed,
        "phase": "finetune",
        "snapshot_frames": snapshot_frames,
        "pretrain_frames": pretrain_frames,
        "finetune_frames": total,
        "obs": plan.obs.type,
    }
    schedule = online_schedule(plan, total)

    def make_loop(logger) -> OnlineLoop:
        return OnlineLoop(
            env, eval_env, agent, replay, logger, schedule, run_dir, plan.seed, record, task=task
        )

    result, _ = execute(plan, make_loop, total, "finetune", record)
    return result
