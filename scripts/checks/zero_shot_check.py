"""Zero-shot behaviour foundation models end to end on one domain (a script, not a test; about
36 minutes on two CPU cores at the defaults with ``--jobs 2``, twice that on one): an
exploration agent's reward-free dataset, FB and HILP pretrained on it and evaluated zero-shot on
every task, then finetuned from their zero-shot policy, beside offline TD3 trained on each
task's relabelled reward (ExORL's supervised ceiling), a uniformly random policy and zero
actions. ``--latent-updates 1 --no-td3 --dataset <its dataset>`` is the untrained control.

Through the real entry points:

1. ``pretrain.py`` trains an exploration agent (RND by default) without reward on the domain;
2. ``collect.py policy=snapshot`` writes a reward-free dataset with its exploration policy;
3. ``pretrain.py agent=fb|hilp dataset=...`` pretrains each for ``--offline-updates``, and
   ``pretrain.py agent=td3 agent.task=<task>`` trains TD3 on each task's reward;
4. ``zero_shot.py snapshot=...`` infers each task's z from ``--inference-samples`` reward-labelled
   dataset transitions and evaluates it (FB, HILP), or evaluates TD3 on its task;
5. ``finetune.py agent=fb|hilp snapshot=...`` finetunes each from its zero-shot policy on each
   task for ``--finetune-frames`` online frames (the same inference rows; 0: skipped).

``--latent-updates`` is FB's and HILP's budget, ``--offline-updates`` TD3's.
``--pixel-updates N`` also renders the dataset's frames (``render_dataset.py``, 64x64) and trains
FB and HILP on them (``obs=pixels_exorl``, batch ``--pixel-batch``) for N updates, evaluated
zero-shot in the pixel env: at a CPU budget, that the pixel pipeline runs on real data.

On a CPU the networks are scaled down (``--cpu-model``: 256 wide, 128-wide embeddings, batch
256; the papers': 1024 / 512, batch 1024) and every budget is a small fraction of the papers'
(ExORL: 10M-transition datasets, 1M updates): at this budget the ordering of methods is what can
be read, not the papers' returns.

    nice -n 5 python scripts/checks/zero_shot_check.py --jobs 2
    python scripts/checks/zero_shot_check.py --reuse-dataset   # keep --out's explorer and dataset

Writes ``<out>/summary.json``, ``<out>/table.md`` and ``<out>/returns.csv``; the runs, logs,
snapshots and the dataset are under ``<out>``; ``python scripts/compare.py <out>/zero_shot``
makes the IQM report of the zero-shot and offline rows.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from harness import ROOT, fresh, parallel, records, run, write_summary
from offline_check import explore_and_collect

CPU_MODEL = {
    "fb": [
        "agent.hidden_dim=256",
        "agent.feature_dim=128",
        "agent.backward_hidden_dim=256",
        "agent.batch_size=256",
    ],
    "hilp": [
        "agent.hidden_dim=256",
        "agent.feature_dim=128",
        "agent.phi_hidden_dim=256",
        "agent.batch_size=256",
    ],
    "td3": ["agent.hidden_dim=256", "agent.batch_size=256"],
}
COMMON = ["backend=cpu", "device=cpu", "threads=1", "console=false", "tensorboard=false"]
ZERO_SHOT_COLLECT = ("backend=cpu", "device=cpu", "threads=1")  # the dataset collected on the CPU


def pretrain_and_evaluate(
    agent: str, task: str | None, args, snapshots: Path, dataset: Path, pixels: bool = False
) -> list[dict]:
    """Steps 3 and 4 for one agent (``task``: TD3's training task, None for the zero-shot ones;
    ``pixels``: on the rendered dataset's frames)."""
    out = args.out
    updates = args.offline_updates if task is not None else args.latent_updates
    name = agent if task is None else f"{agent}_{task}"
    extra, folder = [], args.domain
    if pixels:
        updates, name, folder = args.pixel_updates, f"{agent}_pixels", f"{args.domain}_pixels"
        extra = ["obs=pixels_exorl", f"agent.batch_size={args.pixel_batch}"]
    pretrain = [f"agent={agent}", f"env={args.domain}", f"seed={args.seed}", f"dataset={dataset}"]
    pretrain += [f"offline.updates={updates}", f"offline.snapshot_updates=[{updates}]"]
    pretrain += [f"offline.eval_every_updates={updates}", f"offline.checkpoint_every_updates={updates}"]
    pretrain += [
        "protocol.eval_episodes=2",
        f"snapshot_root={snapshots}",
        f"run_dir={out / 'pretrain' / name}",
    ]
    pretrain += [] if task is None else [f"agent.task={task}"]
    started = time.perf_counter()
    run("pretrain.py", [*COMMON, *pretrain, *CPU_MODEL[agent], *extra], out / f"{name}.log")
    found = (snapshots / agent / folder / f"seed_{args.seed}").glob(f"*/snapshot_{updates}.pt")
    # TD3 has one configuration folder per task: this task's
    (snapshot,) = [
        p
        for p in found
        if task is None or task == json.loads((p.parent / "config.json").read_text())["agent"]["task"]
    ]
    zero_shot = [f"snapshot={snapshot}", f"inference_samples={args.inference_samples}"]
    zero_shot += [
        f"eval_episodes={args.eval_episodes}",
        f"seed={args.seed}",
        f"run_dir={out / 'zero_shot' / name}",
    ]
    zero_shot += [f"goals={args.goals if task is None else 0}", "backend=cpu", "device=cpu", "threads=1"]
    run("zero_shot.py", zero_shot, out / f"{name}.log")
    minutes = (time.perf_counter() - started) / 60
    return [r | {"minutes": minutes, "snapshot": str(snapshot)} for r in records(out / "zero_shot" / name)]


def finetune_from_zero_shot(agent: str, task: str, snapshot: str, args) -> list[dict]:
    """Step 5: ``finetune.py`` from the zero-shot policy of ``snapshot`` on ``task``."""
    name = f"{agent}_{task}"
    started = time.perf_counter()
    overrides = [
        f"agent={agent}",
        f"task={task}",
        f"snapshot={snapshot}",
        f"seed={args.seed}",
        f"inference_samples={args.inference_samples}",
        f"protocol.finetune_frames={args.finetune_frames}",
        f"protocol.eval_every_frames={args.finetune_frames}",
        f"protocol.eval_episodes={args.eval_episodes}",
        f"run_dir={args.out / 'finetune' / name}",
    ]
    run("finetune.py", [*COMMON, *overrides, *CPU_MODEL[agent]], args.out / f"{name}_finetune.log")
    minutes = (time.perf_counter() - started) / 60
    return [r | {"minutes": minutes} for r in records(args.out / "finetune" / name)]


def random_returns(args, zero: bool = False) -> dict[str, float]:
    """A uniformly random policy's (``zero``: zero actions') mean return per task over
    ``--eval-episodes`` episodes."""
    import torch

    from envs import make_env

    torch.set_num_threads(1)
    env = make_env(args.domain, args.eval_episodes, backend="cpu", device="cpu", seed=args.seed)
    env.reset(seed=args.seed)
    generator = torch.Generator().manual_seed(args.seed)
    totals = torch.zeros(args.eval_episodes, len(env.task_names))
    for _ in range(env.episode_steps):
        action = torch.rand(args.eval_episodes, env.action_dim, generator=generator) * 2 - 1
        td = env.step(action * 0 if zero else action)
        totals += td["task_reward"]
    return dict(zip(env.task_names, totals.mean(0).tolist(), strict=True))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--explorer", default="rnd", help="the agent whose exploration policy collects")
    parser.add_argument("--domain", default="walker")
    parser.add_argument("--explore-frames", type=int, default=8_000)
    parser.add_argument("--dataset-frames", type=int, default=100_000)
    parser.add_argument("--offline-updates", type=int, default=5_000, help="TD3's")
    parser.add_argument("--latent-updates", type=int, default=20_000, help="FB's and HILP's")
    parser.add_argument("--finetune-frames", type=int, default=10_000, help="FB, HILP from zero-shot (0: no)")
    parser.add_argument("--pixel-updates", type=int, default=0, help="FB, HILP on rendered frames (0: no)")
    parser.add_argument("--pixel-batch", type=int, default=64)
    parser.add_argument("--inference-samples", type=int, default=10_000)
    parser.add_argument("--eval-episodes", type=int, default=5)
    parser.add_argument("--goals", type=int, default=5, help="goal-reaching episodes of FB and HILP")
    parser.add_argument("--seed-frames", type=int, default=2_000, help="the explorer's random-action frames")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--jobs", type=int, default=1, help="runs at once (one torch thread each)")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "zero_shot_check")
    parser.add_argument("--reuse-dataset", action="store_true", help="keep --out's explorer and dataset")
    parser.add_argument("--dataset", type=Path, default=None, help="an existing dataset: no explorer")
    parser.add_argument("--no-td3", action="store_true", help="FB and HILP only (e.g. an untrained control)")
    args = parser.parse_args()
    out, started = args.out, time.perf_counter()
    # the dataset's folder name labels the report's zero-shot rows: say what collected it
    snapshots, dataset = out / "snapshots", out / f"{args.domain}_{args.explorer}_{args.dataset_frames}"
    if args.dataset is not None:
        dataset = args.dataset.resolve()
    pixel_dataset = out / f"{dataset.name}_pixels64"
    kept = (
        "explore",
        "explore.log",
        dataset.name,
        "collect.log",
        "snapshots",
        pixel_dataset.name,
        "render.log",
    )
    reuse = (args.reuse_dataset and dataset.exists()) or args.dataset is not None
    fresh(*(path for path in (out.glob("*") if out.exists() else ()) if not (reuse and path.name in kept)))
    fresh(*(snapshots / agent for agent in CPU_MODEL))
    out.mkdir(parents=True, exist_ok=True)
    if not reuse:
        explore_and_collect(args, snapshots, dataset, ZERO_SHOT_COLLECT)
    if args.pixel_updates and not pixel_dataset.exists():
        render = [f"dataset={dataset}", f"out={pixel_dataset}", "size=64", *ZERO_SHOT_COLLECT]
        run("render_dataset.py", render, out / "render.log")
    from envs.tasks import domain_tasks

    tasks = list(domain_tasks(args.domain))
    calls = [
        lambda agent=agent: pretrain_and_evaluate(agent, None, args, snapshots, dataset)
        for agent in ("fb", "hilp")
    ]
    calls += [
        lambda task=task: pretrain_and_evaluate("td3", task, args, snapshots, dataset)
        for task in ([] if args.no_td3 else tasks)
    ]
    if args.pixel_updates:
        calls += [
            lambda agent=agent: pretrain_and_evaluate(
                agent, None, args, snapshots, pixel_dataset, pixels=True
            )
            for agent in ("fb", "hilp")
        ]
    results = [record for found in parallel(calls, args.jobs) for record in found]
    finetuned = []
    if args.finetune_frames:
        snapshots_of = {r["agent"]: r["snapshot"] for r in results if r["agent"] in ("fb", "hilp")}
        calls = [
            lambda agent=agent, task=task: finetune_from_zero_shot(agent, task, snapshots_of[agent], args)
            for agent in ("fb", "hilp")
            for task in tasks
        ]
        finetuned = [record for found in parallel(calls, args.jobs) for record in found]
    random, zero = random_returns(args), random_returns(args, zero=True)

    def cell(agent: str, task: str, found_in=None, obs: str = "states") -> str:
        found = [
            r
            for r in (found_in or results)
            if r["agent"] == agent and r["task"] == task and r.get("obs", "states") == obs
        ]
        return f"{max(found, key=lambda r: r['frames'])['return']:.0f}" if found else "-"

    header = [
        "task",
        "FB (zero-shot)",
        "HILP (zero-shot)",
        "TD3 (offline, on the task's reward)",
        "random policy",
        "zero actions",
    ]
    rows = [
        [
            task,
            cell("fb", task),
            cell("hilp", task),
            cell("td3", task),
            f"{random[task]:.0f}",
            f"{zero[task]:.0f}",
        ]
        for task in tasks
    ]
    if args.pixel_updates:
        header[3:3] = ["FB (zero-shot, pixels)", "HILP (zero-shot, pixels)"]
        for row, task in zip(rows, tasks, strict=True):
            row[3:3] = [cell("fb", task, obs="pixels"), cell("hilp", task, obs="pixels")]
    if finetuned:
        header[3:3] = [f"FB (+{args.finetune_frames} frames)", f"HILP (+{args.finetune_frames} frames)"]
        for row, task in zip(rows, tasks, strict=True):
            row[3:3] = [cell("fb", task, finetuned), cell("hilp", task, finetuned)]
    minutes = {
        agent: sum({r["minutes"] for r in results if r["agent"] == agent and r.get("obs") != "pixels"})
        for agent in ("fb", "hilp", "td3")
    }
    minutes |= {
        f"{agent} pixels": sum(
            {r["minutes"] for r in results if r["agent"] == agent and r.get("obs") == "pixels"}
        )
        for agent in ("fb", "hilp")
        if args.pixel_updates
    }
    minutes |= {
        f"{agent} finetuning": sum({r["minutes"] for r in finetuned if r["agent"] == agent})
        for agent in ("fb", "hilp")
        if finetuned
    }
    summary = {"args": {k: str(v) for k, v in vars(args).items()}, "results": results, "random": random}
    summary["zero_actions"] = zero
    summary["finetuned"] = finetuned
    summary["minutes_per_agent"] = minutes
    print(write_summary(out, summary, {"returns": (header, rows)}, started))
    print(f"wrote {out / 'summary.json'} ({(time.perf_counter() - started) / 60:.0f} min)")


if __name__ == "__main__":
    main()
