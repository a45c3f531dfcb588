"""Learning and throughput check (a script, not a test; minutes on a CPU).

1. Learning: train DDPG and SAC from scratch on walker_stand for 100k frames with
   ``preset=small`` on the cpu backend, through the real finetune entry point
   (``snapshot=null``), and print each final evaluation return (target: >= 650; URLB's
   own DDPG reached 727 at 100k frames in 20.6 min on a 2-core machine). With ``--seeds N``
   each agent trains with seeds 1..N and the check prints the mean final return with a 95%
   percentile-bootstrap interval of that mean over the seeds (10k resamples; with few seeds it
   is coarse and tends to be too narrow: read it as the seeds' spread, not as a significance
   test; ``scripts/compare.py`` is the report across tasks).
2. Throughput at URLB's published sizes (1024/1024, one update every 2 steps): frames/s
   of the full loop against the pure update ceiling (updates alone, timed in the same
   run): the loop may cost at most 10% on top of the updates.

    python scripts/checks/learn_check.py                  # both parts
    python scripts/checks/learn_check.py --skip-learning  # throughput only
    python scripts/checks/learn_check.py --skip-throughput --agents sac  # one agent's learning only
    python scripts/checks/learn_check.py --skip-throughput --seeds 5 --jobs 2  # 10 runs, 2 at a time

Each run's folder is ``<run-root>/<agent>_walker_stand/seed_<n>`` (its log beside it); the
check writes ``<run-root>/summary.json``, ``table.md``, ``learning.csv`` and ``throughput.csv``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from statistics import fmean

from harness import ROOT, bootstrap_interval, fresh, logged, machine, parallel, records, run, write_summary

TASK = "walker_stand"


def train(agent: str, seed: int, frames: int, run_root: Path, overrides=()) -> dict:
    """Train ``agent`` from scratch on the task with ``seed`` (one process, one torch thread)."""
    run_dir = run_root / f"{agent}_{TASK}" / f"seed_{seed}"
    log = run_dir.with_suffix(".log")
    fresh(run_dir, log)
    command = [
        f"agent={agent}",
        f"task={TASK}",
        f"seed={seed}",
        "snapshot=null",
        "preset=small",
        "backend=cpu",
        "device=cpu",
        f"protocol.finetune_frames={frames}",
        f"run_dir={run_dir}",
        *overrides,
    ]
    run("finetune.py", command, log)
    evaluations = records(run_dir)
    updates = logged(run_dir, "updates", "time.csv")[-1]
    wall = logged(run_dir, "elapsed_s", "time.csv")[-1]  # the training loop itself, without start-up
    result = {
        "agent": agent,
        "seed": seed,
        "return": evaluations[-1]["return"],
        "curve": [(r["frames"], round(r["return"])) for r in evaluations],
        "wall_s": wall,
        "fps": frames / wall,
        "updates_per_s": updates / wall,
    }
    print(
        f"{agent} seed {seed}: final return {result['return']:.1f} at {frames} frames | "
        f"wall {wall / 60:.1f} min | {result['fps']:.0f} frames/s | "
        f"{result['updates_per_s']:.0f} updates/s | curve {result['curve']}",
        flush=True,
    )
    return result


def across_seeds(agent: str, runs: list[dict]) -> dict:
    """An agent's final returns over its seeds: mean and 95% bootstrap interval of the mean."""
    returns = [r["return"] for r in runs if r["agent"] == agent]
    low, high = bootstrap_interval(returns)
    return {"agent": agent, "seeds": len(returns), "mean": fmean(returns), "low": low, "high": high}


def throughput(hidden: int, batch: int, frames: int) -> dict:
    """Frames/s of the online loop (collect + train) and updates/s of updates alone, at the
    same sizes in the same process, after URLB's 4000 seed frames."""
    import tempfile

    import torch

    from agents.ddpg import DDPGAgent
    from envs import make_env
    from urlb.data.replay import ReplayBuffer
    from urlb.loop.online import OnlineLoop, Schedule
    from urlb.measure.logging import Logger

    torch.set_num_threads(1)
    env = make_env("walker_stand", 1, backend="cpu")
    agent = DDPGAgent(env.obs_dim, env.action_dim, hidden_dim=hidden, batch_size=batch)
    replay = ReplayBuffer(100_000, 1, "cpu", nstep=3, discount=0.99)
    schedule = Schedule(
        total_frames=10**9,
        seed_frames=4000,
        updates_per_frame=0.5,
        eval_every_frames=0,
        log_every_frames=0,
        checkpoint_every_frames=0,
    )
    run_dir = Path(tempfile.mkdtemp())
    loop = OnlineLoop(
        env,
        None,
        agent,
        replay,
        Logger(run_dir, 1, use_tensorboard=False, console=False),
        schedule,
        run_dir,
        seed=0,
        record={},
        task="walker_stand",
    )
    loop.start()
    while loop.frame < schedule.seed_frames:
        loop.collect()
    updates = frames // 2
    start = time.perf_counter()
    for _ in range(updates):
        agent.update(replay, 0)
    ceiling_ups = updates / (time.perf_counter() - start)
    start = time.perf_counter()
    for _ in range(frames):
        loop.collect()
        loop.train()
    loop_fps = frames / (time.perf_counter() - start)
    return {
        "hidden": hidden,
        "batch": batch,
        "loop_fps": loop_fps,
        "ceiling_fps": 2 * ceiling_ups,
        "ratio": loop_fps / (2 * ceiling_ups),
        "updates_per_s": ceiling_ups,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--frames", type=int, default=100_000)
    parser.add_argument("--agents", nargs="+", default=["ddpg", "sac"])
    parser.add_argument("--seeds", type=int, default=1, help="train each agent with seeds 1..N")
    parser.add_argument(
        "--jobs", type=int, default=None, help="training runs at once (default: one per agent)"
    )
    parser.add_argument("--skip-learning", action="store_true")
    parser.add_argument("--skip-throughput", action="store_true")
    parser.add_argument(
        "--override", nargs="*", default=[], help="extra Hydra overrides for the training runs"
    )
    parser.add_argument("--run-root", type=Path, default=ROOT / "runs" / "learn_check")
    args = parser.parse_args()
    started = time.perf_counter()
    print(f"# machine: {machine()}")
    speeds = []
    for sizes in () if args.skip_throughput else ((256, 256, 2000), (1024, 1024, 100)):
        r = throughput(*sizes)
        speeds.append(r)
        print(
            f"throughput {r['hidden']}/{r['batch']}: loop {r['loop_fps']:.1f} frames/s, update ceiling "
            f"{r['ceiling_fps']:.1f} frames/s ({r['updates_per_s']:.1f} updates/s), "
            f"loop/ceiling {r['ratio']:.2f}",
            flush=True,
        )
    runs, agents = [], []
    if not args.skip_learning:
        plan = [(agent, seed) for seed in range(1, args.seeds + 1) for agent in args.agents]
        calls = [lambda a=a, s=s: train(a, s, args.frames, args.run_root, args.override) for a, s in plan]
        runs = parallel(calls, args.jobs or len(args.agents))
        agents = [across_seeds(agent, runs) for agent in args.agents]
        for r in agents:
            print(
                f"{r['agent']}: final return {r['mean']:.1f} at {args.frames} frames, 95% bootstrap "
                f"interval [{r['low']:.1f}, {r['high']:.1f}] over {r['seeds']} seed(s)",
                flush=True,
            )
    tables = {
        "learning": (
            ["agent", "seeds", "mean final return", "95% interval low", "95% interval high"],
            [
                [r["agent"], r["seeds"], f"{r['mean']:.1f}", f"{r['low']:.1f}", f"{r['high']:.1f}"]
                for r in agents
            ],
        ),
        "throughput": (
            ["hidden", "batch", "loop frames/s", "ceiling frames/s", "loop/ceiling"],
            [
                [
                    r["hidden"],
                    r["batch"],
                    f"{r['loop_fps']:.1f}",
                    f"{r['ceiling_fps']:.1f}",
                    f"{r['ratio']:.2f}",
                ]
                for r in speeds
            ],
        ),
    }
    tables = {name: table for name, table in tables.items() if table[1]}  # the parts that ran
    summary = {"task": TASK, "frames": args.frames, "overrides": args.override, "runs": runs}
    write_summary(args.run_root, {**summary, "agents": agents, "throughput": speeds}, tables, started)
    print(f"wrote {args.run_root / 'summary.json'}")


if __name__ == "__main__":
    main()
