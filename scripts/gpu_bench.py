"""The measurements of scripts/gpu_check.sh (issue 23), each writing JSON rows into one folder:

    python scripts/gpu_bench.py bench --out OUT [--device cuda] [--worlds 1024 4096 16384]
        parity   cpu backend vs warp on the device, the three domains, the CPU tests' tolerance
                 (tests/test_warp.py: 1e-3 after one step, 2e-2 over six), and one step from
                 URLB's recorded states (tests/test_parity_urlb.py's warp test: 1e-3)
        env      env steps/s at each world count, eager and graph, states and 84x84 pixels
                 (URLB's stack 3, repeat 2), next to the physics-only ceiling of the same run
                 (the backend's step alone: MuJoCo Warp's substeps and refresh)
        update   one DDPG update at URLB's sizes (1024 wide, batch 1024), eager and captured
                 in a CUDA graph (torch.cuda.graph; optimisers made capturable)
    python scripts/gpu_bench.py runs --out OUT RUN_DIR...   frames/s, updates/s and the last
                 return of entry-point runs (pretrain -> finetune)
    python scripts/gpu_bench.py table --out OUT             one markdown table of it all, the
                 device named, printed and written to OUT/table.md

With ``--device cpu`` the same code runs on Warp's CPU device (the rehearsal on a machine
without a GPU; use a few worlds).
"""

from __future__ import annotations

import argparse
import csv
import json
import platform
import time
from importlib.metadata import version
from pathlib import Path

import numpy as np
import torch

from envs import make_env

PARITY_TASKS = ("walker_run", "quadruped_walk", "jaco_reach_top_left")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device: torch.device, iterations: int) -> float:
    """Seconds per call of ``fn`` after two warm-up calls."""
    for _ in range(2):
        fn()
    sync(device)
    start = time.perf_counter()
    for _ in range(iterations):
        fn()
    sync(device)
    return (time.perf_counter() - start) / iterations


# -- parity ----------------------------------------------------------------------------------
def trajectory(env, steps: int = 6) -> np.ndarray:
    generator = torch.Generator().manual_seed(0)
    env.reset()
    out = []
    for _ in range(steps):
        action = (torch.rand(env.num_envs, env.action_dim, generator=generator) * 2 - 1).to(env.device)
        out.append(env.step(action)["next_observation"].cpu().numpy())
    return np.stack(out)


def parity(device: torch.device) -> list[dict]:
    from envs.reference.oracle import Oracle

    rows = []
    for task in PARITY_TASKS:
        warp = trajectory(make_env(task, 4, backend="warp", device=device, seed=1))
        cpu = trajectory(make_env(task, 4, backend="cpu", seed=1))
        first = float(np.max(np.abs(warp[0] - cpu[0]) / (1e-3 + 1e-3 * np.abs(cpu[0]))))
        whole = float(np.max(np.abs(warp - cpu) / (2e-2 + 2e-2 * np.abs(cpu))))
        oracle = Oracle(task)
        # tests/test_parity_urlb.py's warp rows (every 25th); every 10th, as tests/test_warp.py's
        # CUDA test takes them, includes a jaco row 1.6x over on Warp's CPU device (float32)
        states = oracle.transitions(stride=25)
        env = make_env(task, len(states), backend="warp", device=device)
        env.set_physics_state(oracle.state(states))
        got = env.step(torch.as_tensor(oracle["action"][states + 1]).to(device))["next_observation"]
        want = oracle["obs"][states + 1]
        urlb = float(np.max(np.abs(got.cpu().numpy() - want) / (1e-3 + 1e-3 * np.abs(want))))
        worst = max(first, whole, urlb)  # errors in units of the tolerance: <= 1 passes
        rows.append({"kind": "parity", "task": task, "first_step": first, "six_steps": whole, "urlb": urlb})
        print(f"parity {task}: {'pass' if worst <= 1 else 'FAIL'} (worst error / tolerance {worst:.2f})")
    return rows


# -- env throughput --------------------------------------------------------------------------
def started_env(domain: str, worlds: int, device: torch.device, pixels: dict | None):
    """An env of ``worlds`` worlds in states copied from a 16-world reset (a per-world reset of
    16k worlds would take minutes on the host: jaco settles its brick for 2 s of physics)."""
    small = make_env(domain, min(worlds, 16), backend="cpu", seed=0)
    small.reset()
    repeat = -(-worlds // small.num_envs)
    state = {k: v.repeat(repeat, *([1] * (v.dim() - 1)))[:worlds] for k, v in small.physics_state().items()}
    env = make_env(domain, worlds, backend="warp", device=device, seed=0, pixels=pixels)
    env.set_physics_state({k: v.to(device) for k, v in state.items()})
    return env


def env_rows(domain: str, worlds: int, device: torch.device, pixels: bool, steps: int) -> list[dict]:
    env = started_env(domain, worlds, device, {} if pixels else None)
    base = env.env if pixels else env
    action = torch.rand(worlds, env.action_dim, device=device) * 2 - 1
    ctrl = base.action_to_ctrl(action)
    rows = []
    for graph in (False, True):
        base.backend._use_graph = graph  # one env for both: its start state costs more than a step
        env_s = timed(lambda: env.step(action), device, steps)
        physics_s = timed(lambda: base.backend.step(ctrl), device, steps)
        repeat = env.action_repeat if pixels else 1
        row = {
            "kind": "pixels" if pixels else "states",
            "domain": domain,
            "worlds": worlds,
            "graph": graph,
            "env_steps_per_s": worlds / env_s,
            "frames_per_s": worlds * repeat / env_s,
            "physics_frames_per_s": worlds / physics_s,
        }
        rows.append(row)
        frames, physics = row["frames_per_s"], row["physics_frames_per_s"]
        print(
            f"{row['kind']} {domain} {worlds} worlds {'graph' if graph else 'eager'}: "
            f"{frames:,.0f} frames/s, physics only {physics:,.0f} ({frames / physics:.2f})",
            flush=True,
        )
    env.close()
    return rows


# -- one DDPG update -------------------------------------------------------------------------
class StaticBatch:
    """A replay stand-in that returns the same batch (fixed addresses, as a CUDA graph needs)."""

    def __init__(self, batch):
        self.batch = batch

    def sample(self, batch_size: int):
        return self.batch


def ddpg_update(device: torch.device, iterations: int, hidden: int = 1024, batch_size: int = 1024) -> dict:
    from tensordict import TensorDict

    from agents.ddpg import DDPGAgent

    obs_dim, action_dim = 24, 6  # walker
    agent = DDPGAgent(obs_dim, action_dim, hidden_dim=hidden, batch_size=batch_size).to(device)
    agent.set_task(0)
    n = batch_size
    batch = TensorDict(
        {
            "observation": torch.randn(n, obs_dim),
            "action": torch.rand(n, action_dim) * 2 - 1,
            "next_observation": torch.randn(n, obs_dim),
            "task_reward": torch.rand(n, 4),
            "discount": torch.full((n,), 0.99**3),
        },
        batch_size=[n],
    ).to(device)
    replay = StaticBatch(batch)
    row = {"kind": "update", "hidden": hidden, "batch": batch_size}
    row["eager_updates_per_s"] = 1 / timed(lambda: agent.update(replay, 0), device, iterations)
    print(f"DDPG update {hidden}/{batch_size} eager: {row['eager_updates_per_s']:,.1f} updates/s", flush=True)
    if device.type != "cuda":
        row["graph_note"] = "CUDA graphs need a GPU"
        return row
    try:
        for optimiser in agent.optimisers().values():
            for group in optimiser.param_groups:
                group["capturable"] = True  # Adam's step count on the GPU, so that a graph can replay it
        stream = torch.cuda.Stream(device)
        stream.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(stream):
            for _ in range(3):
                agent.update(replay, 0)
        torch.cuda.current_stream(device).wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            agent.update(replay, 0)
        before = next(agent.actor.parameters()).detach().clone()
        graph.replay()
        sync(device)
        if torch.equal(before, next(agent.actor.parameters()).detach()):
            raise RuntimeError("a replay left the actor unchanged")
        row["graph_updates_per_s"] = 1 / timed(graph.replay, device, iterations)
        print(f"DDPG update {hidden}/{batch_size} CUDA graph: {row['graph_updates_per_s']:,.1f} updates/s")
    except Exception as error:  # report and go on: the other measurements still count
        row["graph_note"] = f"capture failed: {type(error).__name__}: {error}"[:300]
        print(f"DDPG update CUDA graph: {row['graph_note']}", flush=True)
    return row


# -- entry-point runs ------------------------------------------------------------------------
def run_row(run_dir: Path) -> dict:
    """Throughput (after the seed frames: rows with updates) and the last evaluation of a run."""
    rows = list(csv.DictReader(open(run_dir / "time.csv")))
    updating = [row for row in rows if float(row["updates"]) > 0] or rows
    first, last = updating[0], updating[-1]
    elapsed = float(last["elapsed_s"]) - float(first["elapsed_s"])
    config = json.loads((run_dir / "run.json").read_text())
    records = [json.loads(line) for line in open(run_dir / "eval.jsonl")]
    frames = int(last["frame"]) - int(first["frame"])
    return {
        "kind": "run",
        "run": run_dir.name,
        "phase": config.get("phase"),
        "frames": int(last["frame"]),
        "frames_per_s": frames / elapsed if elapsed > 0 else float(last["fps"]),
        "updates_per_s": (float(last["updates"]) - float(first["updates"])) / elapsed
        if elapsed > 0
        else None,
        "last_return": records[-1]["return"] if records else None,
    }


# -- the table -------------------------------------------------------------------------------
def table(out: Path) -> str:
    rows = [
        row for path in sorted(out.glob("*.json")) for row in json.loads(path.read_text()).get("rows", [])
    ]
    facts = json.loads((out / "bench.json").read_text())["facts"] if (out / "bench.json").exists() else {}
    lines = [
        f"{facts.get('device', '?')}: torch {facts.get('torch')}, warp {facts.get('warp')}, "
        f"mujoco-warp {facts.get('mujoco_warp')}, Python {facts.get('python')}",
        "",
        "| measure | setting | eager | graph | physics only (graph) | graph / physics only |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        if row["kind"] == "parity":
            worst = max(row["first_step"], row["six_steps"], row["urlb"])
            verdict = "pass" if worst <= 1 else "FAIL"
            result = f"{verdict}: worst error {worst:.2f} x tolerance"
            lines.append(f"| parity cpu vs warp | {row['task']} | {result} | | | |")
    steps = {}
    for row in rows:
        if row["kind"] in ("states", "pixels"):
            steps.setdefault((row["kind"], row["domain"], row["worlds"]), {})[row["graph"]] = row
    for (kind, domain, worlds), pair in steps.items():
        eager, graph = pair.get(False, {}), pair.get(True, {})
        ratio = graph["frames_per_s"] / graph["physics_frames_per_s"] if graph else float("nan")
        physics = graph.get("physics_frames_per_s", 0)
        lines.append(
            f"| {kind} frames/s | {domain}, {worlds} worlds | {eager.get('frames_per_s', 0):,.0f} | "
            f"{graph.get('frames_per_s', 0):,.0f} | {physics:,.0f} | {ratio:.2f} |"
        )
    for row in rows:
        if row["kind"] == "update":
            graph = (
                f"{row['graph_updates_per_s']:,.0f}"
                if "graph_updates_per_s" in row
                else row.get("graph_note")
            )
            lines.append(
                f"| DDPG updates/s | {row['hidden']} wide, batch {row['batch']} | "
                f"{row['eager_updates_per_s']:,.1f} | {graph} | | |"
            )
        elif row["kind"] == "run":
            last = "" if row["last_return"] is None else f"return {row['last_return']:.1f}"
            lines.append(
                f"| {row['run']} | {row['frames']:,} frames | {row['frames_per_s']:,.0f} frames/s, "
                f"{row['updates_per_s'] or 0:,.1f} updates/s | {last} | | |"
            )
    text = "\n".join(lines) + "\n"
    (out / "table.md").write_text(text)
    return text


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("command", choices=["bench", "runs", "table"])
    parser.add_argument("run_dirs", nargs="*", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--domains", nargs="+", default=["walker", "quadruped", "jaco"])
    parser.add_argument("--worlds", nargs="+", type=int, default=[1024, 4096, 16384])
    parser.add_argument("--pixel-worlds", nargs="+", type=int, default=[1024, 4096])
    parser.add_argument("--steps", type=int, default=50, help="timed steps per cell")
    parser.add_argument("--update-iterations", type=int, default=50)
    args = parser.parse_intermixed_args()  # run folders may follow the options
    args.out.mkdir(parents=True, exist_ok=True)
    if args.command == "table":
        print(table(args.out), end="")
        return
    if args.command == "runs":
        rows = [
            run_row(run_dir) for run_dir in sorted(args.run_dirs, key=lambda d: d.name.endswith("finetune"))
        ]
        (args.out / "runs.json").write_text(json.dumps({"rows": rows}, indent=1) + "\n")
        return
    device = torch.device(args.device)
    if device.type == "cuda":
        import warp

        warp.config.cuda_output = "cubin"  # load scripts/gpu/aot.py's CUBINs (scripts/gpu/entry.py)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({platform.machine()})"
    facts = {
        "device": name,
        "torch": torch.__version__,
        "warp": version("warp-lang"),
        "mujoco_warp": version("mujoco-warp"),
        "python": platform.python_version(),
    }
    print(f"# {facts}")
    rows: list[dict] = []

    def save() -> None:  # after each part: a run cut short keeps what it measured
        (args.out / "bench.json").write_text(json.dumps({"facts": facts, "rows": rows}, indent=1) + "\n")

    rows += parity(device)
    save()
    for pixels, counts in ((False, args.worlds), (True, args.pixel_worlds)):
        for domain in args.domains:
            for worlds in counts:
                rows += env_rows(domain, worlds, device, pixels, args.steps)
                save()
    rows.append(ddpg_update(device, args.update_iterations))
    save()


if __name__ == "__main__":
    main()
