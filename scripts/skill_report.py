"""Measure a pretrained skill agent's snapshot: coverage, trajectory picture, skill video,
and (METRA) zero-shot goal reaching. Results are files in ``--out`` (default: the
snapshot's pretraining run folder's ``skills/report_<frames>/``).

    python scripts/skill_report.py snapshots/metra/quadruped/seed_1/<config>/snapshot_2000000.pt

Writes ``report.json`` (coverage, goal-reaching success within 3 and 1 units, final
distances), ``trajectories.png`` (48 skills coloured by skill), ``skills.mp4`` (a few
skills side by side) and ``goals.png`` (goal-reaching paths with their goals).

A snapshot is data: its stored config is checked (``urlb.run.spec.stored_config``: only the
project's agents, plain values) before anything is built from it or any file is written.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import torch


def main() -> None:
    # Headless rendering for the video, set before anything imports MuJoCo's GL layer.
    os.environ.setdefault("MUJOCO_GL", "egl")
    from envs import make_env
    from urlb.data.checkpoint import load_snapshot
    from urlb.data.records import write_atomically
    from urlb.measure.skills import (
        coverage,
        goal_reaching,
        plot_trajectories,
        sample_goals,
        skill_rollouts,
        skill_video,
    )
    from urlb.run.build import build_agent
    from urlb.run.spec import stored_config, stored_observe_pose

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("snapshot", type=Path)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--rollouts", type=int, default=48, help="skills rolled out for coverage (METRA: 48)")
    parser.add_argument("--cell", type=float, default=1.0)
    parser.add_argument("--steps", type=int, default=None, help="rollout length (default: one episode)")
    parser.add_argument("--video-skills", type=int, default=4, help="skills in the video (0: none)")
    parser.add_argument("--goals", type=int, default=48, help="goal-reaching episodes (METRA only; 0: none)")
    parser.add_argument("--goal-extent", type=float, default=10.0, help="goals uniform in [-e, e]^2")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--backend", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(1)

    snapshot = load_snapshot(args.snapshot)
    # Checked before anything is built or written: the snapshot names no code, and only plain
    # values of the kinds expected (a frame count, a run folder) place the output.
    config = stored_config(snapshot, args.snapshot)
    domain, frames = snapshot.get("domain"), snapshot.get("frames")
    whole = isinstance(frames, int) and not isinstance(frames, bool)
    if not whole or not isinstance(domain, str) or not isinstance(config.get("agent"), dict):
        raise SystemExit(f"{args.snapshot} is not a pretraining snapshot (no frame count, domain or agent)")
    if args.out is None and not isinstance(config.get("run_dir"), str):
        raise SystemExit(f"{args.snapshot} names no run folder; pass --out")
    out = args.out or Path(config["run_dir"]) / "skills" / f"report_{frames}"
    pose = stored_observe_pose(config)
    probe = make_env(domain, 1, backend=args.backend, seed=args.seed, observe_pose=pose)
    agent = build_agent(config["agent"], probe, probe.device)
    agent.load_state_dict(snapshot["agent"])
    agent.eval()
    model = agent.reward_model
    if model is None or not agent.skill_dim:
        raise SystemExit(
            f"{snapshot['agent_name']} has no skills: skill_report needs a skill agent's snapshot"
        )

    report = {
        "snapshot": str(args.snapshot),
        "agent": snapshot["agent_name"],
        "domain": domain,
        "frames": frames,
    }
    out.mkdir(parents=True, exist_ok=True)
    generator = torch.Generator().manual_seed(args.seed)
    skills = model.evaluation_skills(args.rollouts, generator)
    env = make_env(domain, args.rollouts, backend=args.backend, seed=args.seed, observe_pose=pose)
    rollouts = skill_rollouts(env, agent, skills, args.seed, args.steps)
    report["coverage"] = coverage(rollouts["positions"], args.cell)
    report["coverage_protocol"] = {
        "rollouts": args.rollouts,
        "cell": args.cell,
        "steps": args.steps or env.episode_steps,
    }
    plot_trajectories(
        rollouts["positions"],
        skills,
        out / "trajectories.png",
        axes=env.domain.position_axes,
        title=f"{report['agent']} {domain} {frames} frames: {report['coverage']} cells",
        cell=args.cell,
    )
    if args.video_skills:
        picked = skills[torch.linspace(0, len(skills) - 1, args.video_skills).round().long()]
        video_env = make_env(
            domain, args.video_skills, backend=args.backend, seed=args.seed, observe_pose=pose
        )
        skill_video(video_env, agent, picked, out / "skills.mp4", seed=args.seed, steps=args.steps)
        report["video"] = str(out / "skills.mp4")
    if args.goals and hasattr(model, "goal_skill") and pose and probe.domain.pose_position == (0, 1):
        goals = sample_goals(args.goals, args.goal_extent, args.seed)
        goal_env = make_env(domain, args.goals, backend=args.backend, seed=args.seed, observe_pose=pose)
        result = goal_reaching(goal_env, agent, goals, args.seed, args.steps)
        plot_trajectories(
            result["positions"],
            goals,
            out / "goals.png",
            axes=env.domain.position_axes,
            title=f"goal reaching: {result['success_within_3']:.0%} within 3",
            cell=args.cell,
            goals=goals,
        )
        report["goal_reaching"] = {
            "goals": args.goals,
            "extent": args.goal_extent,
            **{k: v for k, v in result.items() if k.startswith("success")},
            "mean_final_distance": float(result["final_distance"].mean()),
            "mean_start_distance": float(goals.norm(dim=1).mean()),
        }
    write_atomically(out / "report.json", json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
