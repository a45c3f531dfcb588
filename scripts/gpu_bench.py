"""Warp backend on CUDA: throughput from 1k to 16k worlds, with and without graph
capture, and a parity check of CUDA against URLB's recorded rollouts
(``envs.reference.oracle``). Needs a CUDA GPU; run by scripts/gpu_check.sh, or alone:

    python scripts/gpu_bench.py                                  # walker, quadruped, jaco; 1k-16k worlds
    python scripts/gpu_bench.py --domains walker --num-envs 4096 --steps 50

Prints the parity errors and a markdown table.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from envs import make_env


def throughput(task: str, num_envs: int, graph: bool, steps: int) -> tuple[float, float]:
    """(env steps/s over all worlds, seconds of the first step, compile and capture included)."""
    env = make_env(task, num_envs, backend="warp", device="cuda", graph=graph)
    env.reset()
    action = torch.rand(num_envs, env.action_dim, device=env.device) * 2 - 1
    torch.cuda.synchronize()
    start = time.perf_counter()
    env.step(action)
    torch.cuda.synchronize()
    first = time.perf_counter() - start
    for _ in range(5):
        env.step(action)
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        env.step(action)
    torch.cuda.synchronize()
    return num_envs * steps / (time.perf_counter() - start), first


def parity(task: str) -> float:
    """Largest relative observation error of CUDA warp against URLB's recorded rollout."""
    from envs.reference.oracle import Oracle

    oracle = Oracle(task)
    rows = oracle.transitions(stride=5)
    env = make_env(task, len(rows), backend="warp", device="cuda")
    env.reset()
    env.set_physics_state(oracle.state(rows))
    td = env.step(torch.as_tensor(oracle["action"][rows + 1]).cuda())
    want = oracle["obs"][rows + 1]
    got = td["next_observation"].cpu().numpy()
    return float(np.max(np.abs(got - want) / (1 + np.abs(want))))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--domains", nargs="+", default=["walker", "quadruped", "jaco"])
    parser.add_argument("--num-envs", nargs="+", type=int, default=[1024, 4096, 16384])
    parser.add_argument("--steps", type=int, default=100)
    args = parser.parse_args()
    print(f"# {torch.cuda.get_device_name()}, torch {torch.__version__}")
    for task in ("walker_flip", "quadruped_jump", "jaco_reach_top_left"):
        if task.split("_")[0] in args.domains:
            print(f"parity {task}: max relative obs error vs URLB {parity(task):.2e}", flush=True)
    print("| domain | num_envs | graph | env steps/s | physics steps/s | first step s |")
    print("|---|---|---|---|---|---|")
    for domain in args.domains:
        for n in args.num_envs:
            for graph in (False, True):
                rate, first = throughput(domain, n, graph, args.steps)
                substeps = make_env(domain, 1, backend="cpu").domain.n_substeps
                print(
                    f"| {domain} | {n} | {graph} | {rate:,.0f} | {rate * substeps:,.0f} | {first:.1f} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
