"""Self-Reference check (a script, not a test): one agent with and without ``addon=sr``, each
pretrained on walker and finetuned on the four walker tasks, several seeds, then the IQM report
of the finetunes (``scripts/compare.py``), which lists ``<agent>`` and ``<agent>+sr`` side by side
as the paper's Fig. 3 does (Zhao et al., Neural Networks 2025: each agent with and without SR).

Every run goes through the real entry points with ``preset=small`` on the cpu backend, one torch
thread each. The defaults are a CPU budget (thousands of frames, not URLB's 2M + 100k): they show
that SR trains, transfers its reference set and is reported as its own variant, not the paper's
gains. ``--context-size`` lowers SR's reference set to what such short runs fill (the paper's
1e5 is never reached by a few thousand frames anyway).

    python scripts/checks/sr_check.py                               # icm, 3 seeds
    python scripts/checks/sr_check.py --agent rnd --seeds 5 --pretrain-frames 100000 --jobs 2

Writes ``<out>/summary.json``, ``<out>/table.md``, ``<out>/returns.csv`` and the report under
``<out>/report``; each run's folder and log are under ``<out>``.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path
from statistics import fmean

from harness import ROOT, final_return, fresh, parallel, run, small_cpu, write_summary

TASKS = ["walker_stand", "walker_walk", "walker_run", "walker_flip"]


def variant_overrides(sr: bool, args) -> list[str]:
    if not sr:
        return []
    return ["addon=sr", f"agent.self_reference.context_size={args.context_size}"]


def pretrain_and_finetune(sr: bool, seed: int, args) -> dict:
    """Pretrain one variant with ``seed``, then finetune its snapshot on each walker task."""
    name = f"{args.agent}+sr" if sr else args.agent
    out, small = args.out, small_cpu(args.seed_frames)
    pre = out / "pretrain" / name / f"seed_{seed}"
    log = out / f"{name}_seed_{seed}.log"
    fresh(pre, log)
    common = [f"agent={args.agent}", f"seed={seed}", f"snapshot_root={out / 'snapshots'}"]
    common += [f"protocol.eval_episodes={args.eval_episodes}", *variant_overrides(sr, args)]
    pretrain = [
        "env=walker",
        f"protocol.pretrain_frames={args.pretrain_frames}",
        f"protocol.snapshot_frames=[{args.pretrain_frames}]",
        f"protocol.eval_every_frames={args.pretrain_frames}",
        "skill_eval.rollouts=0",
        f"run_dir={pre}",
    ]
    run("pretrain.py", [*small, *common, *pretrain], log)
    returns = {}
    for task in TASKS:
        fine = out / "finetune" / name / task / f"seed_{seed}"
        fresh(fine)
        finetune = [
            f"task={task}",
            f"snapshot={args.pretrain_frames}",
            f"protocol.finetune_frames={args.finetune_frames}",
            f"protocol.eval_every_frames={args.finetune_frames}",
            f"run_dir={fine}",
        ]
        run("finetune.py", [*small, *common, *finetune], log)
        returns[task] = final_return(fine)
    return {"variant": name, "seed": seed, "returns": returns}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--agent", default="icm")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--pretrain-frames", type=int, default=3000)
    parser.add_argument("--finetune-frames", type=int, default=1000)
    parser.add_argument("--seed-frames", type=int, default=500, help="random-action frames (URLB: 4000)")
    parser.add_argument("--eval-episodes", type=int, default=2)
    parser.add_argument("--context-size", type=int, default=4000, help="SR's reference set (paper: 1e5)")
    parser.add_argument("--jobs", type=int, default=1, help="runs at once (one torch thread each)")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "sr_check")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()

    calls = [
        lambda sr=sr, seed=seed: pretrain_and_finetune(sr, seed, args)
        for seed in range(1, args.seeds + 1)
        for sr in (False, True)
    ]
    results = parallel(calls, args.jobs)
    report = args.out / "report"
    fresh(report)
    subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "compare.py"),
            str(args.out / "finetune"),
            "--out",
            str(report),
        ],
        cwd=ROOT,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    header = ["variant", *TASKS, "mean"]
    rows = []
    for name in (args.agent, f"{args.agent}+sr"):
        mine = [r["returns"] for r in results if r["variant"] == name]
        means = [fmean(r[task] for r in mine) for task in TASKS]
        rows.append([name, *(f"{m:.0f}" for m in means), f"{fmean(means):.0f}"])
    summary = {
        "agent": args.agent,
        "seeds": args.seeds,
        "pretrain_frames": args.pretrain_frames,
        "finetune_frames": args.finetune_frames,
        "seed_frames": args.seed_frames,
        "context_size": args.context_size,
        "runs": results,
    }
    text = write_summary(args.out, summary, {"returns": (header, rows)}, started)
    print(text)
    print((report / "report.md").read_text())
    print(f"wrote {args.out / 'summary.json'} ({(time.perf_counter() - started) / 60:.0f} min)")


if __name__ == "__main__":
    main()
