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

    python scripts/checks/offline_check.py --jobs 2
    python scripts/checks/offline_check.py --jobs 2 --reuse-dataset  # keep --out's explorer and dataset

Writes ``<out>/summary.json``, ``<out>/table.md`` and ``<out>/agents.csv``; each run's folder and
log, the snapshots and the dataset are under ``<out>``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from harness import ROOT, final_return, fresh, parallel, records, run, small_cpu, write_summary

CPU_MODEL = {  # a 128-wide, 4-layer PDT update takes 2.4 s on one Zen 1 core; this one 0.17 s
    "pdt": ["agent.hidden_dim=64", "agent.batch_size=32", "agent.num_layers=2", "agent.warmup_updates=200"],
    "supe": ["agent.batch_size=64", "agent.utd_ratio=2", "agent.updates_per_frame=0.5"],
}
OFFLINE = ("pdt", "supe")


def explore_and_collect(args, snapshots: Path, dataset: Path, collect_options=()) -> None:
    """Steps 1 and 2: the explorer's reward-free pretraining, then its dataset (``collect.py``
    with ``collect_options`` added; ``zero_shot_check.py`` pins the CPU)."""
    out = args.out
    explore = [
        f"agent={args.explorer}",
        f"env={args.domain}",
        f"seed={args.seed}",
        f"protocol.pretrain_frames={args.explore_frames}",
        f"protocol.snapshot_frames=[{args.explore_frames}]",
        f"protocol.eval_every_frames={args.explore_frames}",
        "skill_eval.rollouts=0",
        f"snapshot_root={snapshots}",
        f"run_dir={out / 'explore'}",
    ]
    run("pretrain.py", [*small_cpu(args.seed_frames), *explore], out / "explore.log")
    # the one configuration folder under the seed's (urlb/data/checkpoint.py)
    (snapshot,) = (snapshots / args.explorer / args.domain / f"seed_{args.seed}").glob(
        f"*/snapshot_{args.explore_frames}.pt"
    )
    collect = [
        f"env={args.domain}",
        "policy=snapshot",
        f"snapshot={snapshot}",
        f"frames={args.dataset_frames}",
        f"seed={args.seed}",
        f"out={dataset}",
        *collect_options,
    ]
    run("collect.py", collect, out / "collect.log")


def offline(agent: str, args, snapshots: Path, dataset: Path) -> dict:
    """Steps 3 and 4 for one offline agent: pretrain on the dataset, then finetune online."""
    out, small = args.out, small_cpu(args.seed_frames)
    model = [] if args.full_model else CPU_MODEL[agent]
    log, pre, fine = out / f"{agent}.log", out / f"pretrain_{agent}", out / f"finetune_{agent}"
    updates = args.offline_updates
    pretrain = [
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
    ]
    run("pretrain.py", [*small, *pretrain, *model], log)
    zero_shot = [r for r in records(pre) if r["task"] == args.task][-1]["return"]
    finetune = [
        f"agent={agent}",
        f"task={args.task}",
        f"seed={args.seed}",
        f"snapshot={updates}",
        f"protocol.finetune_frames={args.finetune_frames}",
        f"snapshot_root={snapshots}",
        f"run_dir={fine}",
    ]
    run("finetune.py", [*small, *finetune, *model], log)
    return {"agent": agent, "zero_shot": zero_shot, "finetuned": final_return(fine), "model": model or "full"}


def scratch(args) -> float:
    """DDPG from scratch on the task for the finetuning frames: the baseline."""
    run_dir = args.out / "scratch_ddpg"
    overrides = [
        "agent=ddpg",
        f"task={args.task}",
        f"seed={args.seed}",
        "snapshot=null",
        f"protocol.finetune_frames={args.finetune_frames}",
        f"run_dir={run_dir}",
    ]
    run("finetune.py", [*small_cpu(args.seed_frames), *overrides], args.out / "scratch_ddpg.log")
    return final_return(run_dir)


def dataset_facts(dataset: Path, task: str) -> dict:
    from urlb.data.datasets import DatasetSampler, task_column

    sampler = DatasetSampler.load(dataset)
    column = task_column(sampler.meta, task, sampler.fields["task_reward"].shape[1])
    return {
        "transitions": len(sampler),
        "episodes": len(sampler.starts),
        "task_reward_mean": float(sampler.fields["task_reward"][:, column].mean()),
    }


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
    fresh(*(path for path in (out.glob("*") if out.exists() else ()) if not (reuse and path.name in kept)))
    fresh(*(snapshots / agent for agent in OFFLINE))
    out.mkdir(parents=True, exist_ok=True)
    if not reuse:
        explore_and_collect(args, snapshots, dataset)

    calls = [lambda: scratch(args)]
    calls += [lambda agent=agent: offline(agent, args, snapshots, dataset) for agent in OFFLINE]
    scratch_return, *results = parallel(calls, args.jobs)

    facts = dataset_facts(dataset, args.task)
    print(
        f"\n{args.domain}: {args.explorer} explored {args.explore_frames} reward-free frames; its policy "
        f"collected {facts['transitions']} transitions ({facts['episodes']} episode pieces, mean "
        f"{args.task} reward {facts['task_reward_mean']:.3f}); PDT and SUPE pretrained "
        f"{args.offline_updates} updates on it, then {args.finetune_frames} online frames on {args.task} "
        f"({args.seed_frames} seed frames, seed {args.seed})\n"
    )
    header = ["agent", "zero-shot return after offline pretraining", "finetune return"]
    rows = [[r["agent"], f"{r['zero_shot']:.0f}", f"{r['finetuned']:.0f}"] for r in results]
    rows.append(["ddpg (scratch, preset=small)", "-", f"{scratch_return:.0f}"])
    summary = {
        "args": {k: str(v) for k, v in vars(args).items()},
        "dataset": facts,
        "results": results,
        "scratch_return": scratch_return,
    }
    print(write_summary(out, summary, {"agents": (header, rows)}, started))
    print(f"wrote {out / 'summary.json'} ({(time.perf_counter() - started) / 60:.0f} min)")


if __name__ == "__main__":
    main()
