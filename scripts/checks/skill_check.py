"""Compare skill discovery agents by METRA's state coverage (not a timed test).

Pretrains each agent on each domain through the real entry point (``pretrain.py``) with
the same frames, seeds, preset and backend, then reads the coverage its last pretraining
evaluation measured (48 deterministic skill rollouts, 1x1 cells of the position plane,
``urlb.measure.skills``) and prints a table. On quadruped METRA's coverage must exceed DIAYN's, as
the METRA paper reports; the script exits 1 if it does not.

Both agents observe the global pose next to URLB's egocentric observation
(``observe_pose=true``: METRA's default, set here for DIAYN too), so the comparison is
between objectives, not inputs. DIAYN runs as the paper does (SAC, skill per episode).

    python scripts/checks/skill_check.py --frames 200000 --domains quadruped walker --parallel 2

Writes ``<out>/summary.json``, ``<out>/table.md`` and ``<out>/runs.csv`` and, per run, the run
folder (``skills/skills_<frames>.png``, ``skills/coverage.jsonl``, TensorBoard, snapshots, the
run's ``skill_check.log``) under ``<out>``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from harness import ROOT, fresh, parallel, run, write_summary


def pretrain(agent: str, domain: str, seed: int, args) -> dict:
    """Pretrain ``agent`` on ``domain``; its last coverage, or its exit status if it failed."""
    frames, run_dir = args.frames, args.out / agent / domain / f"seed_{seed}"
    fresh(run_dir)
    overrides = [
        f"agent={agent}",
        f"env={domain}",
        f"preset={args.preset}",
        f"seed={seed}",
        "backend=cpu",
        "device=cpu",
        f"protocol.pretrain_frames={frames}",
        f"protocol.snapshot_frames=[{frames}]",
        f"protocol.num_envs={args.num_envs}",
        f"protocol.eval_every_frames={max(frames // args.evaluations, 1)}",
        f"protocol.checkpoint_every_frames={max(frames // 4, 1)}",
        "agent.reward_model.observe_pose=true",
        f"run_dir={run_dir}",
        f"snapshot_root={args.out / 'snapshots'}",
        "console=false",
        *args.override,
    ]
    job = (agent, domain, seed)
    print(f"started {job}", flush=True)
    started = time.perf_counter()
    env = {**os.environ, "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl")}
    returncode = run("pretrain.py", overrides, run_dir / "skill_check.log", env=env, check=False)
    wall = time.perf_counter() - started
    if returncode != 0:
        print(f"{job} failed (exit {returncode}); see its skill_check.log", flush=True)
        return {"error": returncode, "wall_s": wall}
    lines = (run_dir / "skills" / "coverage.jsonl").read_text().splitlines()
    result = {**json.loads(lines[-1]), "wall_s": wall}
    print(f"finished {job}: coverage {result['coverage']} in {wall / 60:.1f} min", flush=True)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--agents", nargs="+", default=["metra", "diayn_paper"])
    parser.add_argument("--domains", nargs="+", default=["quadruped"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[1])
    parser.add_argument("--frames", type=int, default=200_000)
    parser.add_argument("--preset", default="small")
    parser.add_argument("--num-envs", type=int, default=8)
    parser.add_argument("--evaluations", type=int, default=4, help="coverage measurements per run")
    parser.add_argument("--parallel", type=int, default=2, help="runs at once (one CPU thread each)")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "skill_check")
    parser.add_argument("--override", nargs="*", default=[], help="extra Hydra overrides for every run")
    args = parser.parse_args()

    started = time.perf_counter()
    jobs = [(a, d, s) for d in args.domains for s in args.seeds for a in args.agents]
    calls = [lambda job=job: pretrain(*job, args) for job in jobs]
    results = dict(zip(jobs, parallel(calls, args.parallel), strict=True))

    print(
        f"\n{args.frames:,} frames per run, preset={args.preset}, {args.num_envs} worlds, cpu backend; "
        f"total wall {(time.perf_counter() - started) / 60:.1f} min\n"
    )
    header = ["agent", "domain", "seed", "coverage", "wall min"]
    rows = [
        [agent, domain, seed, r.get("coverage", "failed"), f"{r['wall_s'] / 60:.1f}"]
        for (agent, domain, seed), r in results.items()
    ]
    summary = {
        "frames": args.frames,
        "preset": args.preset,
        "num_envs": args.num_envs,
        "runs": [{"agent": a, "domain": d, "seed": s, **r} for (a, d, s), r in results.items()],
    }
    print(write_summary(args.out, summary, {"runs": (header, rows)}, started))

    ok = all("error" not in r for r in results.values())
    if "quadruped" in args.domains and {"metra", "diayn_paper"} <= set(args.agents):
        for seed in args.seeds:
            metra = results[("metra", "quadruped", seed)].get("coverage")
            diayn = results[("diayn_paper", "quadruped", seed)].get("coverage")
            if metra is None or diayn is None:
                print(f"quadruped seed {seed}: a run failed, no comparison")
                ok = False
                continue
            verdict = "as the paper reports" if metra > diayn else "NOT as the paper reports"
            print(f"quadruped seed {seed}: METRA {metra} cells vs DIAYN {diayn}: {verdict}")
            ok &= metra > diayn
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
