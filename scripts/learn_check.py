"""Learning and throughput check (a script, not a test; minutes on a CPU).

1. Learning: train DDPG and SAC from scratch on walker_stand for 100k frames with
   ``preset=small`` on the cpu backend, through the real finetune entry point
   (``snapshot=null``), and print each final evaluation return (target: >= 650; URLB's
   own DDPG reached 727 at 100k frames in 20.6 min on a 2-core machine).
2. Throughput at URLB's published sizes (1024/1024, one update every 2 steps): frames/s
   of the full loop against the pure update ceiling (updates alone, timed in the same
   run): the loop may cost at most 10% on top of the updates.

    python scripts/learn_check.py                  # both parts
    python scripts/learn_check.py --skip-learning  # throughput only
    python scripts/learn_check.py --skip-throughput --agents sac  # one agent's learning only
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def train_all(agents: list[str], frames: int, run_root: Path, overrides=()) -> list[dict]:
    """Train the agents side by side, one process (one torch thread) each."""
    processes = [
        (agent, subprocess.Popen([*command(agent, frames, run_root), *overrides], cwd=ROOT))
        for agent in agents
    ]
    results = []
    for agent, process in processes:
        if process.wait() != 0:
            raise SystemExit(f"{agent} training failed (exit {process.returncode})")
        results.append(summary(agent, frames, run_root))
    return results


def command(agent: str, frames: int, run_root: Path) -> list[str]:
    run_dir = run_root / f"{agent}_walker_stand"
    shutil.rmtree(run_dir, ignore_errors=True)  # each check starts afresh
    return [
        sys.executable,
        str(ROOT / "finetune.py"),
        f"agent={agent}",
        "task=walker_stand",
        "snapshot=null",
        "preset=small",
        "backend=cpu",
        "device=cpu",
        f"protocol.finetune_frames={frames}",
        f"run_dir={run_dir}",
    ]


def summary(agent: str, frames: int, run_root: Path) -> dict:
    run_dir = run_root / f"{agent}_walker_stand"
    records = [json.loads(line) for line in open(run_dir / "eval.jsonl")]
    updates = _last_time_metric(run_dir, "updates")
    wall = _last_time_metric(run_dir, "elapsed_s")  # the training loop itself, without start-up
    return {
        "agent": agent,
        "return": records[-1]["return"],
        "curve": [(r["frames"], round(r["return"])) for r in records],
        "wall_s": wall,
        "fps": frames / wall,
        "updates_per_s": updates / wall,
    }


def _last_time_metric(run_dir: Path, key: str) -> float:
    lines = open(run_dir / "time.csv").read().splitlines()
    header = lines[0].split(",")
    return float(lines[-1].split(",")[header.index(key)])


def throughput(hidden: int, batch: int, frames: int) -> dict:
    """Frames/s of the runner's loop (collect + train) and updates/s of updates alone, at the
    same sizes in the same process, after URLB's 4000 seed frames."""
    import tempfile

    import torch

    from agents.ddpg import DDPGAgent
    from envs import make_env
    from urlb.data.replay import ReplayBuffer
    from urlb.loop.online import OnlineRunner, Schedule
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
    runner = OnlineRunner(
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
    runner.start()
    while runner.frame < schedule.seed_frames:
        runner.collect()
    updates = frames // 2
    start = time.perf_counter()
    for _ in range(updates):
        agent.update(replay, 0)
    ceiling_ups = updates / (time.perf_counter() - start)
    start = time.perf_counter()
    for _ in range(frames):
        runner.collect()
        runner.train()
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
    parser.add_argument("--skip-learning", action="store_true")
    parser.add_argument("--skip-throughput", action="store_true")
    parser.add_argument(
        "--override", nargs="*", default=[], help="extra Hydra overrides for the training runs"
    )
    parser.add_argument("--run-root", type=Path, default=ROOT / "runs" / "learn_check")
    args = parser.parse_args()
    print(f"# machine: {os.cpu_count()} CPUs, {platform.machine()}, python {platform.python_version()}")
    for sizes in () if args.skip_throughput else ((256, 256, 2000), (1024, 1024, 100)):
        r = throughput(*sizes)
        print(
            f"throughput {r['hidden']}/{r['batch']}: loop {r['loop_fps']:.1f} frames/s, update ceiling "
            f"{r['ceiling_fps']:.1f} frames/s ({r['updates_per_s']:.1f} updates/s), "
            f"loop/ceiling {r['ratio']:.2f}",
            flush=True,
        )
    if args.skip_learning:
        return
    for r in train_all(args.agents, args.frames, args.run_root, args.override):
        agent = r["agent"]
        print(
            f"{agent}: final return {r['return']:.1f} at {args.frames} frames | "
            f"wall {r['wall_s'] / 60:.1f} min | {r['fps']:.0f} frames/s | "
            f"{r['updates_per_s']:.0f} updates/s | curve {r['curve']}",
            flush=True,
        )


if __name__ == "__main__":
    main()
