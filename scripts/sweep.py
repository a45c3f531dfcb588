"""Run the URLB protocol for agents x domains x seeds: pretrain each, then finetune every
snapshot on each of the domain's tasks, through Hydra multirun (``urlb.run.sweep``).

    python scripts/sweep.py --agents ddpg diayn --domains walker --seeds 1 2 3 \\
        --preset small --launcher joblib --jobs 2 --out runs/sweep/walker
    python scripts/sweep.py ... --launcher urlb_slurm --jobs 64 \\
        --launcher-override hydra.launcher.partition=gpu      # SLURM, through submitit
    python scripts/compare.py runs/sweep/walker --out reports/walker

Launchers: ``joblib`` (this machine, ``--jobs`` processes), ``submitit_local`` (local
processes through submitit, all jobs of a block at once), ``submitit_slurm`` / ``urlb_slurm``
(SLURM array jobs, ``--jobs`` at a time; ``urlb_slurm`` is sized for one run per job, see
``configs/hydra/launcher/urlb_slurm.yaml``), ``basic`` (Hydra's sequential in-process one).

Run it again after an interruption: complete runs are skipped, cut-off runs resume from their
checkpoint, and only missing work is launched. ``--dry-run`` prints what would run. Exits 1 if
some run did not complete (the summary names it and where its logs are).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from urlb.run.sweep import LAUNCHERS, SweepError, SweepSpec, run_sweep, summary


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--agents", nargs="+", required=True, help="agent configs (configs/agent/<name>.yaml)"
    )
    parser.add_argument("--domains", nargs="+", required=True, help="walker, quadruped, jaco")
    parser.add_argument("--seeds", nargs="+", type=int, default=[1], help="pretraining and finetuning seeds")
    parser.add_argument("--out", type=Path, required=True, help="the sweep's folder (runs, snapshots, logs)")
    parser.add_argument("--preset", default="urlb", help="urlb (the published protocol), small, debug")
    parser.add_argument("--tasks", nargs="+", help="finetune only these tasks (default: every task)")
    parser.add_argument(
        "--snapshots", nargs="+", type=int, help="finetune only these snapshot frames (default: every one)"
    )
    parser.add_argument("--launcher", default="joblib", choices=LAUNCHERS)
    parser.add_argument("--jobs", type=int, default=1, help="runs at once (joblib n_jobs, SLURM array size)")
    parser.add_argument("--override", nargs="*", default=[], help="Hydra overrides for every run")
    parser.add_argument("--pretrain-override", nargs="*", default=[], help="Hydra overrides for pretraining")
    parser.add_argument("--finetune-override", nargs="*", default=[], help="Hydra overrides for finetuning")
    parser.add_argument(
        "--launcher-override", nargs="*", default=[], help="e.g. hydra.launcher.partition=gpu"
    )
    parser.add_argument("--dry-run", action="store_true", help="print the multirun commands, launch nothing")
    args = parser.parse_args()

    spec = SweepSpec(
        agents=args.agents,
        domains=args.domains,
        seeds=args.seeds,
        out=args.out,
        preset=args.preset,
        tasks=args.tasks,
        snapshots=args.snapshots,
        launcher=args.launcher,
        jobs=args.jobs,
        overrides=args.override,
        pretrain_overrides=args.pretrain_override,
        finetune_overrides=args.finetune_override,
        launcher_overrides=args.launcher_override,
    )
    try:
        results = run_sweep(spec, dry_run=args.dry_run)
    except SweepError as error:
        print(f"sweep: {error}", file=sys.stderr)
        return 2
    print(summary(results, args.out, args.dry_run), flush=True)
    if args.dry_run:
        return 0
    return int(any(result.failed or result.blocked for result in results.values()))


if __name__ == "__main__":
    sys.exit(main())
