"""Dreamer with Plan2Explore, pretrained briefly and finetuned (a script, not a test; about half
an hour on 2 CPU cores with ``--jobs 2``).

Through the real entry points: Plan2Explore pretrains Dreamer's world model and exploration
actor-critic without reward on a domain; the snapshot is finetuned on one task (the reward
head learns the task reward, the task actor-critic trains in imagination). DDPG from scratch
and Dreamer from scratch for the same finetuning frames are the baselines. It prints:

* the world model's reconstruction error (mean squared error per observation dimension, on
  the replay batches it trains on) early and late in pretraining and in finetuning;
* the reward head's squared error on the task reward, early and late in finetuning;
* Plan2Explore's imagined intrinsic reward early and late;
* the finetuning returns (final evaluation) of the three.

On a CPU the model is scaled down (``--cpu-model``: 128-unit MLPs and GRU, 16 categoricals
of 16 classes instead of 400 / 200 / 32x32) with ``preset=small`` batches (5 sequences of 50
steps) and Rajeswar et al.'s schedule (one update every 10 env steps, horizon 15). The budget
is far below their 2M + 100k frames: this shows the family works end to end and learns, it
does not reproduce their table.

    python scripts/checks/world_model_check.py --jobs 2

Writes ``<out>/summary.json``, ``<out>/table.md``, ``<out>/errors.csv`` and ``<out>/returns.csv``;
each run's folder and log are under ``<out>``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from statistics import fmean

from harness import ROOT, fifths, final_return, fresh, logged, parallel, run, small_cpu, write_summary

CPU_MODEL = [
    "agent.hidden_dim=128",
    "agent.deter_dim=128",
    "agent.rssm_hidden_dim=128",
    "agent.stoch_dim=16",
    "agent.classes=16",
]


def early_late(run_dir: Path, key: str) -> tuple[float, float]:
    """Mean of ``key`` over the first and the last fifth of a run's logged updates."""
    early, late = fifths(logged(run_dir, key))
    return fmean(early), fmean(late)


def pretrained(args, model: list[str]) -> float:
    """The agent pretrained without reward on the domain, then finetuned on the task."""
    out, small = args.out, small_cpu(args.seed_frames)
    snapshots, pre, fine, log = (
        out / "snapshots",
        out / "pretrain",
        out / "finetune",
        out / f"{args.agent}.log",
    )
    fresh(pre, fine, snapshots, log)
    pretrain = [
        f"agent={args.agent}",
        f"env={args.domain}",
        f"protocol.pretrain_frames={args.pretrain_frames}",
        f"protocol.snapshot_frames=[{args.pretrain_frames}]",
        f"protocol.eval_every_frames={args.pretrain_frames}",
        f"snapshot_root={snapshots}",
        f"run_dir={pre}",
        f"seed={args.seed}",
    ]
    run("pretrain.py", [*small, *pretrain, *model], log)
    finetune = [
        f"agent={args.agent}",
        f"task={args.task}",
        f"snapshot={args.pretrain_frames}",
        f"protocol.finetune_frames={args.finetune_frames}",
        f"snapshot_root={snapshots}",
        f"run_dir={fine}",
        f"seed={args.seed}",
    ]
    run("finetune.py", [*small, *finetune, *model], log)
    return final_return(fine)


def scratch(agent: str, args, model: list[str]) -> float:
    """``agent`` from scratch on the task for the finetuning frames: a baseline."""
    run_dir, log = args.out / f"scratch_{agent}", args.out / f"scratch_{agent}.log"
    fresh(run_dir, log)
    overrides = [
        f"agent={agent}",
        f"task={args.task}",
        "snapshot=null",
        f"protocol.finetune_frames={args.finetune_frames}",
        f"run_dir={run_dir}",
        f"seed={args.seed}",
    ]
    run("finetune.py", [*small_cpu(args.seed_frames), *overrides, *model], log)
    return final_return(run_dir)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--agent", default="plan2explore")
    parser.add_argument("--domain", default="walker")
    parser.add_argument("--task", default="walker_stand")
    parser.add_argument("--pretrain-frames", type=int, default=10_000)
    parser.add_argument("--finetune-frames", type=int, default=10_000)
    parser.add_argument(
        "--seed-frames", type=int, default=2_000, help="random-action frames per run (URLB: 4000)"
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--full-model", action="store_true", help="Rajeswar et al.'s model sizes, not the CPU ones"
    )
    parser.add_argument("--jobs", type=int, default=1, help="runs at once (one torch thread each)")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "world_model_check")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    model = [] if args.full_model else CPU_MODEL
    started = time.perf_counter()
    out = args.out

    calls = [
        lambda: pretrained(args, model),
        lambda: scratch("ddpg", args, []),
        lambda: scratch("dreamer", args, model),
    ]
    returns = dict(zip(("pretrained", "ddpg", "dreamer"), parallel(calls, args.jobs), strict=True))

    errors = {
        "pretrain_reconstruction_mse": early_late(out / "pretrain", "reconstruction_mse"),
        "finetune_reconstruction_mse": early_late(out / "finetune", "reconstruction_mse"),
        "finetune_reward_mse": early_late(out / "finetune", "reward_mse"),
        "scratch_reward_mse": early_late(out / "scratch_dreamer", "reward_mse"),
        "pretrain_imagined_reward": early_late(out / "pretrain", "imagined_reward"),
    }
    size = "Rajeswar et al.'s model" if args.full_model else "CPU-scale model (" + ", ".join(model) + ")"
    print(
        f"\n{args.agent} on {args.domain}: {args.pretrain_frames} reward-free frames, then "
        f"{args.finetune_frames} frames on {args.task}; preset=small, {size}, {args.seed_frames} seed "
        f"frames, seed {args.seed}\n"
    )
    tables = {
        "errors": (
            ["measure", "early", "late"],
            [[name, f"{early:.4g}", f"{late:.4g}"] for name, (early, late) in errors.items()],
        ),
        "returns": (
            ["agent", "finetune return"],
            [
                [f"{args.agent} (pretrained {args.pretrain_frames} frames)", f"{returns['pretrained']:.0f}"],
                ["dreamer (scratch)", f"{returns['dreamer']:.0f}"],
                ["ddpg (scratch)", f"{returns['ddpg']:.0f}"],
            ],
        ),
    }
    summary = {
        "agent": args.agent,
        "domain": args.domain,
        "task": args.task,
        "pretrain_frames": args.pretrain_frames,
        "finetune_frames": args.finetune_frames,
        "seed_frames": args.seed_frames,
        "seed": args.seed,
        "model": model or "full",
        "errors_early_late": errors,
        "returns": returns,
    }
    print(write_summary(out, summary, tables, started))
    print(f"wrote {out / 'summary.json'} ({(time.perf_counter() - started) / 60:.0f} min)")


if __name__ == "__main__":
    main()
