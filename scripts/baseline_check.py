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

    python scripts/baseline_check.py                              # all agents, walker -> walker_stand
    python scripts/baseline_check.py --agents rnd cic --jobs 2    # two at a time
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import platform
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
AGENTS = ["icm", "disagreement", "rnd", "icm_apt", "apt", "proto", "smm", "aps", "cic"]


def run(script: str, overrides: list[str], log: Path, seed_frames: int) -> None:
    command = [
        sys.executable,
        str(ROOT / script),
        "preset=small",
        "backend=cpu",
        "device=cpu",
        "console=false",
        f"protocol.seed_frames={seed_frames}",
    ]
    with open(log, "a") as out:
        if subprocess.run([*command, *overrides], cwd=ROOT, stdout=out, stderr=out).returncode != 0:
            raise SystemExit(f"{script} {' '.join(overrides)} failed; see {log}")


def final_return(run_dir: Path) -> float:
    records = [json.loads(line) for line in (run_dir / "eval.jsonl").read_text().splitlines()]
    return records[-1]["return"]


def reward_stats(run_dir: Path) -> dict:
    """Intrinsic-reward statistics from the pretraining run's train.csv."""
    with open(run_dir / "train.csv") as f:
        rows = [r for r in csv.DictReader(f) if r.get("intrinsic_reward")]
    if not rows:
        raise SystemExit(f"{run_dir}/train.csv logged no intrinsic reward")
    values = [
        {k: float(r[k]) for k in ("intrinsic_reward", "intrinsic_reward_std", "intrinsic_reward_max")}
        for r in rows
    ]
    fifth = max(1, len(values) // 5)
    early, late = values[:fifth], values[-fifth:]

    def mean(rows, key):
        return sum(r[key] for r in rows) / len(rows)

    return {
        "early_mean": mean(early, "intrinsic_reward"),
        "late_mean": mean(late, "intrinsic_reward"),
        "late_std": mean(late, "intrinsic_reward_std"),
        "late_max": max(r["intrinsic_reward_max"] for r in late),
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


def check_agent(agent: str, args, root: Path) -> dict:
    started = time.perf_counter()
    snapshots, pre, fine = root / "snapshots", root / f"pretrain_{agent}", root / f"finetune_{agent}"
    log = root / f"{agent}.log"
    for stale in (pre, fine, snapshots / agent):  # each check starts afresh
        shutil.rmtree(stale, ignore_errors=True)
    log.unlink(missing_ok=True)
    run(
        "pretrain.py",
        [
            f"agent={agent}",
            f"env={args.domain}",
            f"seed={args.seed}",
            f"protocol.pretrain_frames={args.pretrain_frames}",
            f"protocol.snapshot_frames=[{args.pretrain_frames}]",
            f"protocol.eval_every_frames={args.pretrain_frames}",
            "skill_eval.rollouts=0",
            f"snapshot_root={snapshots}",
            f"run_dir={pre}",
        ],
        log,
        args.seed_frames,
    )
    run(
        "finetune.py",
        [
            f"agent={agent}",
            f"task={args.task}",
            f"seed={args.seed}",
            f"snapshot={args.pretrain_frames}",
            f"protocol.finetune_frames={args.finetune_frames}",
            f"snapshot_root={snapshots}",
            f"run_dir={fine}",
        ],
        log,
        args.seed_frames,
    )
    return {
        "agent": agent,
        "intrinsic_reward": reward_stats(pre),
        "finetune_return": final_return(fine),
        "minutes": (time.perf_counter() - started) / 60,
    }


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

    def scratch() -> float:
        run_dir = args.out / "scratch_ddpg"
        shutil.rmtree(run_dir, ignore_errors=True)
        (args.out / "scratch_ddpg.log").unlink(missing_ok=True)
        run(
            "finetune.py",
            [
                "agent=ddpg",
                f"task={args.task}",
                f"seed={args.seed}",
                "snapshot=null",
                f"protocol.finetune_frames={args.finetune_frames}",
                f"run_dir={run_dir}",
            ],
            args.out / "scratch_ddpg.log",
            args.seed_frames,
        )
        return final_return(run_dir)

    with ThreadPoolExecutor(args.jobs) as pool:
        scratch_future = pool.submit(scratch)
        futures = [pool.submit(check_agent, agent, args, args.out) for agent in args.agents]
        results = [f.result() for f in futures]
        scratch_return = scratch_future.result()

    print(
        f"\n{args.domain}: {args.pretrain_frames} reward-free frames, then {args.finetune_frames} frames "
        f"on {args.task} (preset=small, {args.seed_frames} seed frames, seed {args.seed}); "
        f"DDPG from scratch: {scratch_return:.0f}\n"
    )
    header = (
        "| agent | intrinsic reward early -> late (batch mean) | late batch std | late max "
        "| finetune return | flags |"
    )
    lines = [header, "|---|---|---|---|---|---|"]
    for r in results:
        s = r["intrinsic_reward"]
        r["flags"] = flags(s, r["finetune_return"], scratch_return)
        lines.append(
            f"| {r['agent']} | {s['early_mean']:.3g} -> {s['late_mean']:.3g} | {s['late_std']:.3g} | "
            f"{s['late_max']:.3g} | {r['finetune_return']:.0f} | {', '.join(r['flags']) or '-'} |"
        )
    lines.append(f"| ddpg (scratch) | - | - | - | {scratch_return:.0f} | - |")
    print("\n".join(lines))
    summary = {
        "domain": args.domain,
        "task": args.task,
        "pretrain_frames": args.pretrain_frames,
        "finetune_frames": args.finetune_frames,
        "seed_frames": args.seed_frames,
        "seed": args.seed,
        "scratch_return": scratch_return,
        "agents": results,
        "machine": f"{platform.processor() or platform.machine()}, {platform.system()}",
        "minutes": (time.perf_counter() - started) / 60,
    }
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1))
    (args.out / "table.md").write_text("\n".join(lines) + "\n")
    print(f"\nwrote {args.out / 'summary.json'} ({summary['minutes']:.0f} min)")


if __name__ == "__main__":
    main()
