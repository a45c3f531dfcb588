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

    python scripts/world_model_check.py --jobs 2
"""

from __future__ import annotations

import argparse
import csv
import json
import platform
import shutil
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
from baseline_check import final_return, run  # noqa: E402

CPU_MODEL = [
    "agent.hidden_dim=128",
    "agent.deter_dim=128",
    "agent.rssm_hidden_dim=128",
    "agent.stoch_dim=16",
    "agent.classes=16",
]


def logged(run_dir: Path, key: str) -> tuple[float, float]:
    """Mean of ``key`` over the first and the last fifth of a run's logged updates."""
    with open(run_dir / "train.csv") as f:
        values = [float(r[key]) for r in csv.DictReader(f) if r.get(key)]
    if not values:
        raise SystemExit(f"{run_dir}/train.csv logged no {key}")
    fifth = max(1, len(values) // 5)
    return sum(values[:fifth]) / fifth, sum(values[-fifth:]) / fifth


def fresh(*paths: Path) -> None:
    for path in paths:
        if path.suffix == ".log":
            path.unlink(missing_ok=True)
        else:
            shutil.rmtree(path, ignore_errors=True)


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
    common = [f"seed={args.seed}", *model]
    started = time.perf_counter()
    out = args.out
    snapshots, pre, fine = out / "snapshots", out / "pretrain", out / "finetune"

    def pretrained() -> float:
        log = out / f"{args.agent}.log"
        fresh(pre, fine, snapshots, log)
        run(
            "pretrain.py",
            [
                f"agent={args.agent}",
                f"env={args.domain}",
                f"protocol.pretrain_frames={args.pretrain_frames}",
                f"protocol.snapshot_frames=[{args.pretrain_frames}]",
                f"protocol.eval_every_frames={args.pretrain_frames}",
                f"snapshot_root={snapshots}",
                f"run_dir={pre}",
                *common,
            ],
            log,
            args.seed_frames,
        )
        run(
            "finetune.py",
            [
                f"agent={args.agent}",
                f"task={args.task}",
                f"snapshot={args.pretrain_frames}",
                f"protocol.finetune_frames={args.finetune_frames}",
                f"snapshot_root={snapshots}",
                f"run_dir={fine}",
                *common,
            ],
            log,
            args.seed_frames,
        )
        return final_return(fine)

    def scratch(agent: str, overrides: list[str]) -> float:
        run_dir, log = out / f"scratch_{agent}", out / f"scratch_{agent}.log"
        fresh(run_dir, log)
        run(
            "finetune.py",
            [
                f"agent={agent}",
                f"task={args.task}",
                "snapshot=null",
                f"protocol.finetune_frames={args.finetune_frames}",
                f"run_dir={run_dir}",
                f"seed={args.seed}",
                *overrides,
            ],
            log,
            args.seed_frames,
        )
        return final_return(run_dir)

    with ThreadPoolExecutor(args.jobs) as pool:
        finetuned = pool.submit(pretrained)
        ddpg = pool.submit(scratch, "ddpg", [])
        dreamer = pool.submit(scratch, "dreamer", model)
        returns = {"pretrained": finetuned.result(), "ddpg": ddpg.result(), "dreamer": dreamer.result()}

    errors = {
        "pretrain_reconstruction_mse": logged(pre, "reconstruction_mse"),
        "finetune_reconstruction_mse": logged(fine, "reconstruction_mse"),
        "finetune_reward_mse": logged(fine, "reward_mse"),
        "scratch_reward_mse": logged(out / "scratch_dreamer", "reward_mse"),
        "pretrain_imagined_reward": logged(pre, "imagined_reward"),
    }
    size = "Rajeswar et al.'s model" if args.full_model else "CPU-scale model (" + ", ".join(model) + ")"
    print(
        f"\n{args.agent} on {args.domain}: {args.pretrain_frames} reward-free frames, then "
        f"{args.finetune_frames} "
        f"frames on {args.task}; preset=small, {size}, {args.seed_frames} seed frames, seed {args.seed}\n"
    )
    lines = ["| measure | early | late |", "|---|---|---|"]
    lines += [f"| {name} | {early:.4g} | {late:.4g} |" for name, (early, late) in errors.items()]
    lines += ["", "| agent | finetune return |", "|---|---|"]
    lines += [
        f"| {args.agent} (pretrained {args.pretrain_frames} frames) | {returns['pretrained']:.0f} |",
        f"| dreamer (scratch) | {returns['dreamer']:.0f} |",
        f"| ddpg (scratch) | {returns['ddpg']:.0f} |",
    ]
    print("\n".join(lines))
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
        "machine": f"{platform.processor() or platform.machine()}, {platform.system()}",
        "minutes": (time.perf_counter() - started) / 60,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    (out / "table.md").write_text("\n".join(lines) + "\n")
    print(f"\nwrote {out / 'summary.json'} ({summary['minutes']:.0f} min)")


if __name__ == "__main__":
    main()
