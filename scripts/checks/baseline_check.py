"""Health check of the URLB baseline agents (a script, not a test; about an hour on 2 CPU cores).

Each agent is pretrained briefly without reward on a domain (``preset=small``: 256-wide
networks, batch 256, the URLB update schedule; 2000 seed frames of random actions instead
of URLB's 4000, so that short runs learn) and its snapshot finetuned on one task,
through the real entry points; DDPG trained from scratch for the same finetuning frames
is the baseline. It prints, per agent:

* the intrinsic reward over pretraining: its batch mean in the first and last fifth of
  the logged updates, its within-batch standard deviation and largest value late on;
* the finetuning return (final evaluation) against DDPG from scratch;

and flags what a broken agent shows: a constant intrinsic reward (no spread within
batches), an exploding or non-finite one (late mean over 100x the early mean, or
non-finite), a finetune far below scratch (under half of it). The budget is far below
URLB's 2M + 100k frames: this finds broken agents, it does not reproduce the tables.

    python scripts/checks/baseline_check.py                            # all agents, walker -> walker_stand
    python scripts/checks/baseline_check.py --agents rnd cic --jobs 2  # two at a time

Writes ``<out>/summary.json``, ``<out>/table.md`` and ``<out>/agents.csv``; each run's folder and
log are under ``<out>``.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path
from statistics import fmean

from harness import ROOT, fifths, final_return, fresh, logged, parallel, run, small_cpu, write_summary

AGENTS = ["icm", "disagreement", "rnd", "icm_apt", "apt", "proto", "smm", "aps", "cic"]


def reward_stats(run_dir: Path) -> dict:
    """Intrinsic-reward statistics from the pretraining run's train.csv."""
    values = logged(run_dir, "intrinsic_reward")
    early, late = fifths(values)
    _, late_std = fifths(logged(run_dir, "intrinsic_reward_std"))
    _, late_max = fifths(logged(run_dir, "intrinsic_reward_max"))
    return {
        "early_mean": fmean(early),
        "late_mean": fmean(late),
        "late_std": fmean(late_std),
        "late_max": max(late_max),
        "logged_updates": len(values),
    }


def flags(stats: dict, finetuned: float, scratch: float) -> list[str]:
    out = []
    if not all(math.isfinite(v) for v in stats.values()):
        out.append("non-finite reward")
    elif stats["late_std"] < 1e-6:
        out.append("constant reward")
    elif abs(stats["late_mean"]) > 100 * max(abs(stats["early_mean"]), 1e-3):
        out.append("exploding reward")
    if finetuned < 0.5 * scratch:
        out.append("finetune < half of scratch")
    return out


def check_agent(agent: str, args) -> dict:
    """Pretrain ``agent`` without reward, then finetune its last snapshot on the task."""
    started = time.perf_counter()
    out, small = args.out, small_cpu(args.seed_frames)
    snapshots, pre, fine = out / "snapshots", out / f"pretrain_{agent}", out / f"finetune_{agent}"
    log = out / f"{agent}.log"
    fresh(pre, fine, snapshots / agent, log)
    pretrain = [
        f"agent={agent}",
        f"env={args.domain}",
        f"seed={args.seed}",
        f"protocol.pretrain_frames={args.pretrain_frames}",
        f"protocol.snapshot_frames=[{args.pretrain_frames}]",
        f"protocol.eval_every_frames={args.pretrain_frames}",
        "skill_eval.rollouts=0",
        f"snapshot_root={snapshots}",
        f"run_dir={pre}",
    ]
    run("pretrain.py", [*small, *pretrain], log)
    finetune = [
        f"agent={agent}",
        f"task={args.task}",
        f"seed={args.seed}",
        f"snapshot={args.pretrain_frames}",
        f"protocol.finetune_frames={args.finetune_frames}",
        f"snapshot_root={snapshots}",
        f"run_dir={fine}",
    ]
    run("finetune.py", [*small, *finetune], log)
    return {
        "agent": agent,
        "intrinsic_reward": reward_stats(pre),
        "finetune_return": final_return(fine),
        "minutes": (time.perf_counter() - started) / 60,
    }


def scratch(args) -> float:
    """DDPG from scratch on the task for the finetuning frames: the baseline."""
    run_dir, log = args.out / "scratch_ddpg", args.out / "scratch_ddpg.log"
    fresh(run_dir, log)
    overrides = [
        "agent=ddpg",
        f"task={args.task}",
        f"seed={args.seed}",
        "snapshot=null",
        f"protocol.finetune_frames={args.finetune_frames}",
        f"run_dir={run_dir}",
    ]
    run("finetune.py", [*small_cpu(args.seed_frames), *overrides], log)
    return final_return(run_dir)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--agents", nargs="+", default=AGENTS)
    parser.add_argument("--domain", default="walker")
    parser.add_argument("--task", default="walker_stand")
    parser.add_argument("--pretrain-frames", type=int, default=10_000)
    parser.add_argument("--finetune-frames", type=int, default=10_000)
    parser.add_argument(
        "--seed-frames",
        type=int,
        default=2_000,
        help="random-action frames at the start of every run (URLB: 4000)",
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--jobs", type=int, default=1, help="runs at once (one torch thread each)")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "baseline_check")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()

    calls = [lambda: scratch(args)] + [lambda agent=agent: check_agent(agent, args) for agent in args.agents]
    scratch_return, *results = parallel(calls, args.jobs)

    print(
        f"\n{args.domain}: {args.pretrain_frames} reward-free frames, then {args.finetune_frames} frames "
        f"on {args.task} (preset=small, {args.seed_frames} seed frames, seed {args.seed}); "
        f"DDPG from scratch: {scratch_return:.0f}\n"
    )
    header = [
        "agent",
        "intrinsic reward early -> late (batch mean)",
        "late batch std",
        "late max",
        "finetune return",
        "flags",
    ]
    rows = []
    for r in results:
        s = r["intrinsic_reward"]
        r["flags"] = flags(s, r["finetune_return"], scratch_return)
        rows.append(
            [
                r["agent"],
                f"{s['early_mean']:.3g} -> {s['late_mean']:.3g}",
                f"{s['late_std']:.3g}",
                f"{s['late_max']:.3g}",
                f"{r['finetune_return']:.0f}",
                ", ".join(r["flags"]) or "-",
            ]
        )
    rows.append(["ddpg (scratch)", "-", "-", "-", f"{scratch_return:.0f}", "-"])
    summary = {
        "domain": args.domain,
        "task": args.task,
        "pretrain_frames": args.pretrain_frames,
        "finetune_frames": args.finetune_frames,
        "seed_frames": args.seed_frames,
        "seed": args.seed,
        "scratch_return": scratch_return,
        "agents": results,
    }
    print(write_summary(args.out, summary, {"agents": (header, rows)}, started))
    print(f"wrote {args.out / 'summary.json'} ({(time.perf_counter() - started) / 60:.0f} min)")


if __name__ == "__main__":
    main()
