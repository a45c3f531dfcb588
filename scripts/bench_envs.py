"""Environment throughput: env steps/s (all worlds counted) per domain x backend x num_envs.

Two baselines are measured in the same run:
  ceiling   C MuJoCo's batch (mujoco.batch.Batch) stepping the same worlds with the same
            substeps and thread count, no observation, reward or reset work;
  dm_control a Python loop over single dm_control environments (URLB's own stack).
Ratios printed: ours / ceiling and ours / dm_control.

With ``--pixels`` it measures the pixel env instead (URLB's 84x84 frames, stack 3, action
repeat 2, MuJoCo Warp's renderer on either backend) next to the same worlds' physics-only
steps: env steps/s count agent steps (2 control steps each) over all worlds, frames/s
control steps, and "render share" is the part of a pixel step not spent on physics.

    python scripts/bench_envs.py                      # everything (cpu backend, warp if asked)
    python scripts/bench_envs.py --backends cpu warp --domains walker --num-envs 1 64
    python scripts/bench_envs.py --pixels --backends cpu warp --num-envs 1 16 64
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import mujoco
import mujoco.batch
import numpy as np
import torch

from envs import make_env
from envs.registry import make_domain

DMC_TASK = {"walker": ("walker", "stand"), "quadruped": ("quadruped", "walk"), "jaco": None}


def timed(fn, budget_s: float, min_iters: int = 3) -> float:
    """Seconds per call of ``fn``, after one warm-up call, over about ``budget_s``."""
    fn()
    n, start = 0, time.perf_counter()
    while n < min_iters or time.perf_counter() - start < budget_s:
        fn()
        n += 1
    return (time.perf_counter() - start) / n


def bench_ours(task: str, backend: str, num_envs: int, budget: float) -> float:
    env = make_env(task, num_envs, backend=backend, seed=0)
    env.reset()
    action = torch.rand(num_envs, env.action_dim, device=env.device) * 2 - 1
    return num_envs / timed(lambda: env.step(action), budget)


def bench_pixels(task: str, backend: str, num_envs: int, budget: float, size: int) -> float:
    """Agent steps/s (all worlds) of the pixel env: physics x2, render, stack."""
    env = make_env(task, num_envs, backend=backend, seed=0, pixels={"size": size})
    env.reset()
    action = torch.rand(num_envs, env.action_dim, device=env.device) * 2 - 1
    return num_envs / timed(lambda: env.step(action), budget)


def bench_ceiling(task: str, num_envs: int, budget: float) -> float:
    domain = make_domain(task)
    nthread = min(os.cpu_count() or 1, num_envs)
    batch = mujoco.batch.Batch(domain.model, num_envs, nthread=nthread, persistent=True)
    # Start from the task's own initial states (qpos0 is not one: jaco's brick would sit
    # inside the arm), taken from our env's reset.
    initial = make_env(task, num_envs, backend="cpu", seed=0)
    initial.reset()
    for key, value in initial.physics_state().items():
        batch.bind(key)[:] = value.numpy().reshape(batch.bind(key).shape)
    batch.forward()
    ctrl = batch.bind("ctrl")
    lo, hi = domain.model.actuator_ctrlrange.T
    values = np.random.default_rng(0).uniform(lo, hi, size=ctrl.shape)

    def step():
        ctrl[:] = values
        batch.step(nstep=domain.n_substeps, stage=mujoco.mjtStage.mjSTAGE_VEL)

    return num_envs / timed(step, budget)


def bench_dm_control(domain_name: str, budget: float) -> float | None:
    if DMC_TASK[domain_name] is None:
        from envs.reference.dmc_tasks import make_dmc_env  # jaco's reach is no suite task

        env = make_dmc_env("jaco_reach_top_left")
    else:
        from dm_control import suite

        env = suite.load(*DMC_TASK[domain_name])
    spec = env.action_spec()
    rng = np.random.default_rng(0)
    env.reset()

    def step():
        ts = env.step(rng.uniform(spec.minimum, spec.maximum))
        if ts.last():
            env.reset()

    return 1.0 / timed(step, budget)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--domains", nargs="+", default=["walker", "quadruped", "jaco"])
    parser.add_argument("--backends", nargs="+", default=["cpu"])
    parser.add_argument("--num-envs", nargs="+", type=int, default=[1, 64, 256, 1024])
    parser.add_argument("--budget", type=float, default=2.0, help="seconds of timing per cell")
    parser.add_argument(
        "--torch-threads",
        type=int,
        default=1,
        help="torch CPU threads (as the runner's default: OpenMP workers contend with MuJoCo's pool)",
    )
    parser.add_argument("--pixels", action="store_true", help="the pixel env against physics-only steps")
    parser.add_argument("--size", type=int, default=84, help="frame size for --pixels")
    args = parser.parse_args()
    torch.set_num_threads(args.torch_threads)

    cpu = platform.processor() or platform.machine()
    print(
        f"# machine: {os.cpu_count()} CPUs ({cpu}), torch {torch.__version__} ({args.torch_threads} thread), "
        f"mujoco {mujoco.__version__}"
    )
    if args.pixels:
        pixel_table(args)
        return
    print("| domain | backend | num_envs | env steps/s | ceiling steps/s | ours/ceiling | ours/dm_control |")
    print("|---|---|---|---|---|---|---|")
    for domain in args.domains:
        dmc = bench_dm_control(domain, args.budget)
        print(f"| {domain} | dm_control loop | 1 | {dmc:,.0f} | | | 1.0 |", flush=True)
        for n in args.num_envs:
            ceiling = bench_ceiling(domain, n, args.budget)
            for backend in args.backends:
                ours = bench_ours(domain, backend, n, args.budget)
                print(
                    f"| {domain} | {backend} | {n} | {ours:,.0f} | {ceiling:,.0f} | {ours / ceiling:.2f} |"
                    f" {ours / dmc:.1f} |",
                    flush=True,
                )


def pixel_table(args) -> None:
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU"
    print(f"# pixels {args.size}x{args.size}, frame stack 3, action repeat 2; warp backend device: {device}")
    print(
        "| domain | backend | num_envs | pixel env steps/s | frames/s | physics-only frames/s | "
        "frames/s vs physics-only | render share |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for domain in args.domains:
        for n in args.num_envs:
            for backend in args.backends:
                physics = bench_ours(domain, backend, n, args.budget)  # control steps/s
                steps = bench_pixels(domain, backend, n, args.budget, args.size)
                frames = 2 * steps
                share = 1 - frames / physics
                print(
                    f"| {domain} | {backend} | {n} | {steps:,.0f} | {frames:,.0f} | {physics:,.0f} | "
                    f"{frames / physics:.2f} | {share:.0%} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
