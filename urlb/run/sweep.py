"""Sweeps of the URLB protocol through Hydra multirun: pretrain every (agent, domain, seed),
then finetune every snapshot of each on each of the domain's tasks.

Hydra multirun is the engine and its launcher plugins are the executors: ``joblib`` on one
machine, ``submitit_slurm`` (or this project's ``urlb_slurm``) on a SLURM cluster and
``submitit_local`` (the same code path, run as local processes). A sweep is two phases, run by
:func:`run_sweep`::

    plan jobs -> skip complete ones -> pretrain multirun(s) -> wait
              -> finetune jobs whose pretrain is complete -> finetune multirun(s) -> wait

Finetunes read their pretrain's snapshot, so they launch only after the pretrain phase has
returned (Hydra's launchers block until every job of a multirun has ended).

Completion is decided from disk, never from a launcher's bookkeeping:

* a run is **complete** when its folder holds ``complete.json``, written atomically by
  ``urlb.run`` after everything else (:func:`mark_complete`), and the marker's protocol
  (frames, snapshot and pretrain frames) is the sweep's; a pretrain also needs every snapshot
  file. Complete runs are never launched again;
* a run with ``checkpoint.pt`` but no marker was cut off: it is relaunched with ``resume=true``,
  which continues from the checkpoint and drops the evaluation records written after it;
* a run folder with neither was cut off before its first checkpoint: nothing in it can be
  continued, so it is removed and the run starts afresh (otherwise the new run would append
  to the old ``eval.jsonl`` and the report would count those evaluations twice);
* a complete run whose protocol differs from the sweep's (say a debug sweep into the same
  ``out``) is an error that names both, not something to overwrite.

Every job is launched with ``resume=true``, so a SLURM job that times out and is requeued by
submitit (``max_num_timeout``) continues from its checkpoint as well (one cut off before its
first checkpoint is refused by the run, ``urlb.run.folder``, and redone by the next sweep), and
a complete run is never started again.

A rerun of a partly done sweep launches only what is missing. The basic sweeper runs the
cartesian product of its overrides, so the pending jobs are covered by a few cartesian blocks
(:func:`cartesian_blocks`), each one multirun. Do not run two sweeps on the same ``out`` at once.

Layout under ``out``::

    sweep.json                                      the sweep's arguments and protocol
    snapshots/<agent>/<domain>/seed_<s>/<config>/snapshot_<frames>.pt
    pretrain/<agent>/<domain>/seed_<s>/             pretraining run folders
    finetune/<agent>/<task>/snapshot_<frames>/seed_<s>/   finetuning run folders (eval.jsonl)
    hydra/<phase>_<time>_<block>/                   Hydra's multirun folders (logs, .submitit/)
"""

from __future__ import annotations

import itertools
import json
import math
import os
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from urlb.run.folder import lock_holder
from urlb.run.sweep_plan import (  # noqa: F401  (the sweep API, one import away)
    LAUNCHERS,
    ROOT,
    Job,
    Protocol,
    SweepError,
    SweepSpec,
    compose_protocol,
    domain_tasks,
    job_state,
    plan,
    snapshot_files,
)


# -- cartesian blocks and commands ---------------------------------------------------------------
def cartesian_blocks(points: Sequence[tuple]) -> list[tuple[list, ...]]:
    """Cover a set of points (tuples of equal length) exactly by cartesian products.

    Returns blocks ``(values_0, values_1, ...)`` whose products are disjoint and together equal
    the set. A set that is a product is one block; otherwise it is split on the first
    dimension and first-dimension values with identical remainders are merged again, so the
    usual gaps (some seeds of some agents) take one or two blocks::

        >>> cartesian_blocks([("a", 1), ("a", 2), ("b", 1), ("b", 2)])
        [(['a', 'b'], [1, 2])]
        >>> cartesian_blocks([("a", 1), ("a", 2), ("b", 2)])
        [(['a'], [1]), (['a', 'b'], [2])]
    """
    points = list(dict.fromkeys(points))
    if not points:
        return []
    values = [list(dict.fromkeys(point[d] for point in points)) for d in range(len(points[0]))]
    if len(points) == math.prod(len(v) for v in values):
        return [tuple(values)]
    rests: dict = {}
    for point in points:
        rests.setdefault(point[0], []).append(point[1:])
    by_rest: dict = {}
    for first, rest in rests.items():
        for block in cartesian_blocks(rest):
            key = tuple(tuple(v) for v in block)
            by_rest.setdefault(key, []).append(first)
    return [([*firsts], *[list(v) for v in key]) for key, firsts in by_rest.items()]


def _join(values: list) -> str:
    return ",".join(str(v) for v in values)


def launcher_overrides(spec: SweepSpec) -> list[str]:
    """``hydra/launcher=...`` and its parallelism: joblib ``n_jobs``, SLURM ``array_parallelism``
    (submitit's local executor starts every job of a block at once)."""
    if spec.launcher == "basic":
        return list(spec.launcher_overrides)
    sized = {"joblib": "n_jobs", "submitit_slurm": "array_parallelism", "urlb_slurm": "array_parallelism"}
    overrides = [f"hydra/launcher={spec.launcher}"]
    if spec.launcher in sized:
        overrides.append(f"hydra.launcher.{sized[spec.launcher]}={spec.jobs}")
    return overrides + list(spec.launcher_overrides)


def multirun_command(spec: SweepSpec, phase: str, block: tuple[list, ...], sweep_dir: Path) -> list[str]:
    """The ``python pretrain.py -m ...`` / ``python finetune.py -m ...`` command of one block.

    Run folders and Hydra's job folders are named from the job's own values; the finetune name
    avoids the ``tag`` resolver, which joblib's and submitit's worker processes do not register.
    """
    out = spec.out.resolve()
    if phase == "pretrain":
        agents, domains, seeds = block
        swept = [f"agent={_join(agents)}", f"env={_join(domains)}", f"seed={_join(seeds)}"]
        name = "${hydra:runtime.choices.agent}/${env.domain}/seed_${seed}"
        extra = spec.pretrain_overrides
    else:
        agents, seeds, snapshots, tasks = block
        swept = [f"agent={_join(agents)}", f"task={_join(tasks)}", f"snapshot={_join(snapshots)}"]
        swept.append(f"seed={_join(seeds)}")
        name = "${hydra:runtime.choices.agent}/${task}/snapshot_${snapshot}/seed_${seed}"
        extra = spec.finetune_overrides
    return [
        sys.executable,
        str(ROOT / f"{phase}.py"),
        "--multirun",
        *swept,
        f"preset={spec.preset}",
        "resume=true",
        f"snapshot_root={out / 'snapshots'}",
        f"run_dir={out / phase}/{name}",
        f"hydra.sweep.dir={sweep_dir.resolve()}",
        f"hydra.sweep.subdir={name}",
        *launcher_overrides(spec),
        *spec.overrides,
        *extra,
    ]


def job_points(phase: str, jobs: list[Job]) -> list[tuple]:
    if phase == "pretrain":
        return [(job.agent, job.domain, job.seed) for job in jobs]
    return [(job.agent, job.seed, job.snapshot_frames, job.task) for job in jobs]


# -- running ------------------------------------------------------------------------------------
@dataclass
class PhaseResult:
    """What one phase found and did; ``commands`` are the multiruns it launched and ``logs``
    the Hydra multirun folder each launched job logged into."""

    complete: list[Job] = field(default_factory=list)
    launched: list[Job] = field(default_factory=list)
    failed: list[Job] = field(default_factory=list)
    blocked: list[Job] = field(default_factory=list)
    commands: list[list[str]] = field(default_factory=list)
    logs: dict[Job, Path] = field(default_factory=dict)


def prepare(jobs: list[Job], out: Path, protocol: Protocol) -> tuple[list[Job], list[Job]]:
    """Split ``jobs`` into (complete, to launch); remove folders with nothing to resume."""
    complete, pending = [], []
    for job in jobs:
        state = job_state(job, out, protocol)
        if state == "complete":
            complete.append(job)
            continue
        if state == "stale":
            holder = lock_holder(job.run_dir(out))
            if holder is not None:
                raise SweepError(
                    f"{job.run_dir(out)} is in use by a run (pid {holder.get('pid')} on "
                    f"{holder.get('host')}): is another sweep running on this --out? Wait for it, or sweep "
                    "into another --out"
                )
            print(
                f"[sweep] {job.label()}: {job.run_dir(out)} was cut off before its first checkpoint; "
                "redoing it"
            )
            shutil.rmtree(job.run_dir(out))
        elif state == "resume":
            print(f"[sweep] {job.label()}: resuming from {job.run_dir(out) / 'checkpoint.pt'}")
        pending.append(job)
    return complete, pending


def run_phase(
    spec: SweepSpec, phase: str, jobs: list[Job], protocol: Protocol, dry_run: bool, env: dict
) -> PhaseResult:
    """Launch the incomplete ``jobs`` of one phase as multiruns and check them afterwards."""
    out = spec.out
    result = PhaseResult()
    if dry_run:
        result.complete = [job for job in jobs if job_state(job, out, protocol) == "complete"]
        pending = [job for job in jobs if job not in result.complete]
    else:
        result.complete, pending = prepare(jobs, out, protocol)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for index, block in enumerate(cartesian_blocks(job_points(phase, pending))):
        sweep_dir = out / "hydra" / f"{phase}_{stamp}_{index}"
        command = multirun_command(spec, phase, block, sweep_dir)
        result.commands.append(command)
        result.logs |= {
            job: sweep_dir for job in pending if job_points(phase, [job])[0] in itertools.product(*block)
        }
        print(f"[sweep] {phase} block {index}: {shlex.join(command[1:])}", flush=True)
        if dry_run:
            continue
        code = subprocess.run(command, cwd=ROOT, env=env, check=False).returncode
        if code != 0:
            print(f"[sweep] {phase} block {index} exited with code {code}; checking which runs completed")
    result.launched = pending
    if not dry_run:
        result.failed = [job for job in pending if job_state(job, out, protocol) != "complete"]
    return result


def run_sweep(spec: SweepSpec, dry_run: bool = False) -> dict[str, PhaseResult]:
    """Run (or with ``dry_run`` only print) the sweep; returns each phase's result."""
    if spec.launcher not in LAUNCHERS:
        raise SweepError(f"unknown launcher {spec.launcher!r}; use one of {', '.join(LAUNCHERS)}")
    protocol = compose_protocol(spec)
    pretrains, finetunes = plan(spec, protocol)
    spec.out.mkdir(parents=True, exist_ok=True)
    if not dry_run:
        described = asdict(spec) | {"out": str(spec.out), "protocol": asdict(protocol)}
        (spec.out / "sweep.json").write_text(json.dumps(described, indent=1) + "\n")
    env = {**os.environ}
    env.setdefault("MUJOCO_GL", "egl")
    pre = run_phase(spec, "pretrain", pretrains, protocol, dry_run, env)
    not_ready = set() if dry_run else {job for job in pretrains if job in pre.failed}
    ready = [job for job in finetunes if job.pretrain() not in not_ready]
    fine = run_phase(spec, "finetune", ready, protocol, dry_run, env)
    fine.blocked = [job for job in finetunes if job.pretrain() in not_ready]
    return {"pretrain": pre, "finetune": fine}


def summary(results: dict[str, PhaseResult], out: Path, dry_run: bool = False) -> str:
    """Lines saying what each phase skipped, launched and failed (with where its logs are)."""
    lines = []
    launched = "would launch" if dry_run else "launched"
    for phase, result in results.items():
        lines.append(
            f"[sweep] {phase}: {len(result.complete)} complete before, {len(result.launched)} {launched} "
            f"in {len(result.commands)} multirun(s), {len(result.failed)} failed, "
            f"{len(result.blocked)} blocked"
        )
        for job in result.failed:
            lines.append(f"[sweep]   failed: {job.label()} ({job.run_dir(out)}; logs in {result.logs[job]})")
        for job in result.blocked:
            lines.append(f"[sweep]   not launched, its pretrain failed: {job.label()}")
    return "\n".join(lines)
