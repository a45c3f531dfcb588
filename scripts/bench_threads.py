"""torch CPU threads against MuJoCo's thread pool (issue 23): two measurements, each printed as a
markdown table of ratios against a baseline measured in the same run, settings interleaved
round by round so that a shared machine's drift hits all of them alike.

env    ``make_env`` alone (quadruped, 256 worlds, cpu backend, settled contacts): env steps/s
       under 1 torch thread and under torch's default, with the env's own torch work kept on
       one thread (``BatchedEnv.torch_threads = 1``, the default with a pool) and without it
       (``None``, the behaviour before issue 23), against C MuJoCo's batch stepping the same
       worlds (physics only, the baseline).
train  DDPG through ``pretrain.py`` (preset=small: 256-wide networks, batch 256, walker, cpu
       backend) at 1 world and at 16 worlds with ``threads=1``, ``threads=2`` and
       ``threads=auto``: frames/s after the seed frames, read from each run's time.csv, against
       ``threads=1``.

    python scripts/bench_threads.py                       # both (about 6 minutes on 2 cores)
    python scripts/bench_threads.py --only env --rounds 5
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import mujoco
import mujoco.batch
import numpy as np
import torch

from envs import make_env

ROOT = Path(__file__).resolve().parents[1]


def _rate(step, budget_s: float) -> float:
    """Calls per second of ``step`` over about ``budget_s``, after one warm-up call."""
    step()
    n, start = 0, time.perf_counter()
    while n < 3 or time.perf_counter() - start < budget_s:
        step()
        n += 1
    return n / (time.perf_counter() - start)


def env_table(domain: str, num_envs: int, rounds: int, budget_s: float) -> None:
    default_threads = torch.get_num_threads()
    env = make_env(domain, num_envs, backend="cpu", seed=0)
    env.reset()
    generator = torch.Generator().manual_seed(0)
    actions = [torch.rand(num_envs, env.action_dim, generator=generator) * 2 - 1 for _ in range(64)]
    for i in range(300):  # settle: feet on the floor, contacts in every world
        env.step(actions[i % 64])
    model, pool = env.domain.model, env.backend.nthread
    batch = mujoco.batch.Batch(model, num_envs, nthread=pool, persistent=True)
    for key, value in env.physics_state().items():
        batch.bind(key)[:] = value.numpy().reshape(batch.bind(key).shape)
    batch.forward()
    ctrl = batch.bind("ctrl")
    lo, hi = model.actuator_ctrlrange.T
    values = np.random.default_rng(0).uniform(lo, hi, size=ctrl.shape)
    counter = iter(range(10**9))

    def physics():
        ctrl[:] = values
        batch.step(nstep=env.domain.n_substeps, stage=mujoco.mjtStage.mjSTAGE_VEL)

    def env_step():
        env.step(actions[next(counter) % 64])

    settings = {
        f"env, torch {default_threads} threads, own work on 1 (default)": (default_threads, 1),
        f"env, torch {default_threads} threads, own work on {default_threads} (before)": (
            default_threads,
            None,
        ),
        "env, torch 1 thread": (1, None),
    }
    rates: dict[str, list[float]] = {"physics only (C batch)": [], **{name: [] for name in settings}}
    for _ in range(rounds):
        torch.set_num_threads(default_threads)
        rates["physics only (C batch)"].append(_rate(physics, budget_s))
        for name, (threads, own) in settings.items():
            torch.set_num_threads(threads)
            env.torch_threads = own
            rates[name].append(_rate(env_step, budget_s))
    torch.set_num_threads(default_threads)
    ceiling = rates["physics only (C batch)"]
    print(f"\n{domain}, {num_envs} worlds, cpu backend (MuJoCo pool {pool} threads), {rounds} rounds")
    print("| setting | env steps/s (median) | vs physics only, per round |")
    print("|---|---|---|")
    for name, values in rates.items():
        ratios = [v / c for v, c in zip(values, ceiling, strict=True)]
        spread = f"{min(ratios):.2f}-{max(ratios):.2f}" if len(ratios) > 1 else f"{ratios[0]:.2f}"
        print(f"| {name} | {num_envs * statistics.median(values):,.0f} | {spread} |", flush=True)


def _train_rate(run_dir: Path, seed_frames: int) -> float:
    """Frames per second between the first log row after the seed frames and the last one."""
    rows = list(csv.DictReader(open(run_dir / "time.csv")))
    after = [row for row in rows if int(row["frame"]) > seed_frames]
    first, last = after[0], after[-1]
    frames = int(last["frame"]) - int(first["frame"])
    return frames / (float(last["elapsed_s"]) - float(first["elapsed_s"]))


def train_table(num_envs: int, rounds: int, frames: int, seed_frames: int, out: Path) -> None:
    settings = ["1", "2", "auto"]
    rates: dict[str, list[float]] = {s: [] for s in settings}
    for r in range(rounds):
        for setting in settings:
            run_dir = out / f"ddpg_{num_envs}_{setting}_{r}"
            command = [
                sys.executable,
                str(ROOT / "pretrain.py"),
                "agent=ddpg",
                "env=walker",
                "preset=small",
                "backend=cpu",
                "device=cpu",
                f"threads={setting}",
                "console=false",
                "tensorboard=false",
                f"protocol.num_envs={num_envs}",
                f"protocol.pretrain_frames={frames}",
                f"protocol.seed_frames={seed_frames}",
                "protocol.snapshot_frames=[]",
                f"protocol.eval_every_frames={10 * frames}",
                f"protocol.checkpoint_every_frames={10 * frames}",
                "protocol.log_every_frames=500",
                "protocol.eval_episodes=1",
                f"run_dir={run_dir}",
                f"snapshot_root={out / 'snapshots'}",
            ]
            done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
            if done.returncode != 0:
                raise SystemExit(f"{' '.join(command)} failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
            chosen = [line for line in done.stdout.splitlines() if line.startswith("[threads]")]
            if r == 0 and setting == "auto":
                print(f"  auto at {num_envs} world(s): {chosen[0] if chosen else '?'}")
            rates[setting].append(_train_rate(run_dir, seed_frames))
    print(f"\nDDPG 256/256, walker, {num_envs} world(s), cpu backend, {rounds} rounds")
    print("| threads | frames/s (median) | vs threads=1, per round |")
    print("|---|---|---|")
    for setting, values in rates.items():
        ratios = [v / b for v, b in zip(values, rates["1"], strict=True)]
        spread = f"{min(ratios):.2f}-{max(ratios):.2f}" if len(ratios) > 1 else f"{ratios[0]:.2f}"
        print(f"| {setting} | {statistics.median(values):,.0f} | {spread} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--only", choices=["env", "train"], default=None)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--budget", type=float, default=2.0, help="seconds per env cell and round")
    parser.add_argument("--frames", type=int, default=4000, help="frames of each training run")
    parser.add_argument("--seed-frames", type=int, default=1000)
    parser.add_argument("--worlds", type=int, nargs="+", default=[1, 16], help="training worlds")
    args = parser.parse_args()
    cpu = platform.processor() or platform.machine()
    print(
        f"# machine: {os.cpu_count()} CPUs ({cpu}), torch {torch.__version__} "
        f"(default {torch.get_num_threads()} threads), mujoco {mujoco.__version__}"
    )
    if args.only in (None, "env"):
        env_table("quadruped", 256, args.rounds, args.budget)
    if args.only in (None, "train"):
        with tempfile.TemporaryDirectory() as out:
            for num_envs in args.worlds:
                train_table(num_envs, args.rounds, args.frames, args.seed_frames, Path(out))


if __name__ == "__main__":
    main()
