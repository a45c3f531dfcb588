"""The offline families end to end (a script, not a test; about half an hour on 2 CPU cores
with ``--jobs 2``): an exploration agent's reward-free dataset, PDT and SUPE pretrained on it,
each finetuned online on a task, beside DDPG from scratch.

Through the real entry points:

1. ``pretrain.py`` trains an exploration agent (RND by default) without reward on the domain;
2. ``collect.py policy=snapshot`` writes a reward-free dataset with its exploration policy
   (ExORL's recipe, Yarats et al. 2022, at a small scale);
3. ``pretrain.py agent=pdt|supe dataset=...`` pretrains each offline for ``--offline-updates``;
4. ``finetune.py`` finetunes each snapshot on ``--task`` for ``--finetune-frames`` online frames,
   and DDPG learns the task from scratch for the same frames.

It prints the dataset (transitions, episodes, the task's mean reward in it), each offline
agent's zero-shot return after pretraining and its finetuned return, and DDPG's. On a CPU the
models are scaled down (``--cpu-model``: PDT 128 wide with batch 64; SUPE's high level at 2
critic steps per env step instead of RLPD's 20), ``preset=small`` for DDPG; budgets are far
below the papers' (1M-transition datasets, 50k-1M offline updates): this shows the families
work end to end, it does not reproduce the papers' tables.

    python scripts/offline_check.py --jobs 2
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
from baseline_check import final_return, run  # noqa: E402

CPU_MODEL = {  # a 128-wide, 4-layer PDT update takes 2.4 s on one Zen 1 core; this one 0.17 s
    "pdt": ["agent.hidden_dim=64", "agent.batch_size=32", "agent.num_layers=2", "agent.warmup_updates=200"],
    "supe": ["agent.batch_size=64", "agent.utd_ratio=2", "agent.updates_per_frame=0.5"],
}


def records(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "eval.jsonl").read_text().splitlines()]


def explore_and_collect(args, out: Path, snapshots: Path, dataset: Path) -> None:
    """Steps 1 and 2: the explorer's reward-free pretraining, then its dataset."""
    run(
        "pretrain.py",
        [
            f"agent={args.explorer}",
            f"env={args.domain}",
            f"seed={args.seed}",
            f"protocol.pretrain_frames={args.explore_frames}",
            f"protocol.snapshot_frames=[{args.explore_frames}]",
            f"protocol.eval_every_frames={args.explore_frames}",
            "skill_eval.rollouts=0",
            f"snapshot_root={snapshots}",
            f"run_dir={out / 'explore'}",
        ],
        out / "explore.log",
        args.seed_frames,
    )
    snapshot = (
        snapshots / args.explorer / args.domain / f"seed_{args.seed}" / f"snapshot_{args.explore_frames}.pt"
    )
    with open(out / "collect.log", "w") as log:
        command = [sys.executable, str(ROOT / "collect.py"), f"env={args.domain}", "policy=snapshot"]
        command += [
            f"snapshot={snapshot}",
            f"frames={args.dataset_frames}",
            f"seed={args.seed}",
            f"out={dataset}",
        ]
        if subprocess.run(command, cwd=ROOT, stdout=log, stderr=log).returncode != 0:
            raise SystemExit(f"collect.py failed; see {out / 'collect.log'}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--explorer", default="rnd", help="the agent whose exploration policy collects")
    parser.add_argument("--domain", default="walker")
    parser.add_argument("--task", default="walker_run")
    parser.add_argument("--explore-frames", type=int, default=10_000)
    parser.add_argument("--dataset-frames", type=int, default=48_000)
    parser.add_argument("--offline-updates", type=int, default=2_000)
    parser.add_argument("--finetune-frames", type=int, default=10_000)
    parser.add_argument("--seed-frames", type=int, default=2_000, help="random-action frames per online run")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--full-model", action="store_true", help="the papers' model sizes, not the CPU ones")
    parser.add_argument("--jobs", type=int, default=1, help="runs at once (one torch thread each)")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "offline_check")
    parser.add_argument("--reuse-dataset", action="store_true", help="keep --out's explorer and dataset")
    args = parser.parse_args()
    out = args.out
    started = time.perf_counter()
    snapshots, dataset = out / "snapshots", out / "dataset"
    kept = ("explore", "explore.log", "dataset", "collect.log", "snapshots")
    reuse = args.reuse_dataset and dataset.exists()
    for path in out.glob("*") if out.exists() else ():  # each check starts afresh
        if not (reuse and path.name in kept):
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    for agent in ("pdt", "supe"):
        shutil.rmtree(snapshots / agent, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    if not reuse:
        explore_and_collect(args, out, snapshots, dataset)

    def offline(agent: str) -> dict:
        model = [] if args.full_model else CPU_MODEL[agent]
        log, pre, fine = out / f"{agent}.log", out / f"pretrain_{agent}", out / f"finetune_{agent}"
        updates = args.offline_updates
        run(
            "pretrain.py",
            [
                f"agent={agent}",
                f"env={args.domain}",
                f"seed={args.seed}",
                f"dataset={dataset}",
                f"offline.updates={updates}",
                f"offline.snapshot_updates=[{updates}]",
                f"offline.eval_every_updates={updates}",
                f"offline.checkpoint_every_updates={updates}",
                f"snapshot_root={snapshots}",
                f"run_dir={pre}",
                *model,
            ],
            log,
            args.seed_frames,
        )
        zero_shot = [r for r in records(pre) if r["task"] == args.task][-1]["return"]
        run(
            "finetune.py",
            [
                f"agent={agent}",
                f"task={args.task}",
                f"seed={args.seed}",
                f"snapshot={updates}",
                f"protocol.finetune_frames={args.finetune_frames}",
                f"snapshot_root={snapshots}",
                f"run_dir={fine}",
                *model,
            ],
            log,
            args.seed_frames,
        )
        return {
            "agent": agent,
            "zero_shot": zero_shot,
            "finetuned": final_return(fine),
            "model": model or "full",
        }

    def scratch() -> float:
        run(
            "finetune.py",
            [
                "agent=ddpg",
                f"task={args.task}",
                f"seed={args.seed}",
                "snapshot=null",
                f"protocol.finetune_frames={args.finetune_frames}",
                f"run_dir={out / 'scratch_ddpg'}",
            ],
            out / "scratch_ddpg.log",
            args.seed_frames,
        )
        return final_return(out / "scratch_ddpg")

    with ThreadPoolExecutor(args.jobs) as pool:
        ddpg = pool.submit(scratch)
        results = [f.result() for f in [pool.submit(offline, agent) for agent in ("pdt", "supe")]]
        scratch_return = ddpg.result()

    sys.path.insert(0, str(ROOT))
    from urlb.data.datasets import DatasetSampler, task_column

    sampler = DatasetSampler.load(dataset)
    column = task_column(sampler.meta, args.task, sampler.fields["task_reward"].shape[1])
    facts = {
        "transitions": len(sampler),
        "episodes": len(sampler.starts),
        "task_reward_mean": float(sampler.fields["task_reward"][:, column].mean()),
    }
    print(
        f"\n{args.domain}: {args.explorer} explored {args.explore_frames} reward-free frames; its policy "
        f"collected {facts['transitions']} transitions ({facts['episodes']} episode pieces, mean "
        f"{args.task} reward {facts['task_reward_mean']:.3f}); PDT and SUPE pretrained "
        f"{args.offline_updates} updates on it, then {args.finetune_frames} online frames on {args.task} "
        f"({args.seed_frames} seed frames, seed {args.seed})\n"
    )
    lines = ["| agent | zero-shot return after offline pretraining | finetune return |", "|---|---|---|"]
    lines += [f"| {r['agent']} | {r['zero_shot']:.0f} | {r['finetuned']:.0f} |" for r in results]
    lines.append(f"| ddpg (scratch, preset=small) | - | {scratch_return:.0f} |")
    print("\n".join(lines))
    summary = {
        "args": {k: str(v) for k, v in vars(args).items()},
        "dataset": facts,
        "results": results,
        "scratch_return": scratch_return,
        "machine": f"{platform.processor() or platform.machine()}, {platform.system()}",
        "minutes": (time.perf_counter() - started) / 60,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    (out / "table.md").write_text("\n".join(lines) + "\n")
    print(f"\nwrote {out / 'summary.json'} ({summary['minutes']:.0f} min)")


if __name__ == "__main__":
    main()
