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
  ``urlb.experiment`` after everything else (:func:`mark_complete`), and the marker's protocol
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
submitit (``max_num_timeout``) continues from its checkpoint as well.

A rerun of a partly done sweep launches only what is missing. The basic sweeper runs the
cartesian product of its overrides, so the pending jobs are covered by a few cartesian blocks
(:func:`cartesian_blocks`), each one multirun. Do not run two sweeps on the same ``out`` at once.

Layout under ``out``::

    sweep.json                                      the sweep's arguments and protocol
    snapshots/<agent>/<domain>/seed_<s>/snapshot_<frames>.pt
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
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COMPLETE = "complete.json"
# Launchers the sweep knows how to size (``--jobs``); any other hydra/launcher option still works
# through launcher overrides.
LAUNCHERS = ("joblib", "submitit_local", "submitit_slurm", "urlb_slurm", "basic")


class SweepError(RuntimeError):
    """A sweep that cannot be run as asked; the message says what to change."""


# -- the completion marker (written by urlb.experiment) -----------------------------------------
def mark_complete(run_dir: Path | str, record: dict) -> Path:
    """Write ``run_dir/complete.json`` atomically: the run's record (agent, domain, seed, phase,
    snapshot, pretrain and finetune frames) and the frames it reached. Written last, so its
    presence means every output of the run is on disk."""
    path = Path(run_dir) / COMPLETE
    temporary = path.with_name(f".{COMPLETE}.{uuid.uuid4().hex[:8]}.tmp")
    temporary.write_text(json.dumps(record, sort_keys=True, indent=1) + "\n")
    os.replace(temporary, path)
    return path


def clear_complete(run_dir: Path | str) -> None:
    """Remove the marker when a run (re)starts in ``run_dir``: until it ends, it is not complete."""
    (Path(run_dir) / COMPLETE).unlink(missing_ok=True)


def read_complete(run_dir: Path | str) -> dict | None:
    """The marker's record, or None if the run has not completed (or the marker is unreadable)."""
    path = Path(run_dir) / COMPLETE
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


# -- jobs ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Protocol:
    """The frame budgets a sweep's runs must reach (from the composed configs)."""

    pretrain_frames: int
    snapshot_frames: tuple[int, ...]
    finetune_frames: int


@dataclass(frozen=True)
class Job:
    """One run of a sweep: a pretrain (``task`` and ``snapshot_frames`` None) or a finetune."""

    phase: str
    agent: str
    domain: str
    seed: int
    task: str | None = None
    snapshot_frames: int | None = None

    def run_dir(self, out: Path) -> Path:
        if self.phase == "pretrain":
            return out / "pretrain" / self.agent / self.domain / f"seed_{self.seed}"
        return (
            out
            / "finetune"
            / self.agent
            / self.task
            / f"snapshot_{self.snapshot_frames}"
            / f"seed_{self.seed}"
        )

    def pretrain(self) -> Job:
        """The pretrain this finetune reads its snapshot from."""
        return Job("pretrain", self.agent, self.domain, self.seed)

    def label(self) -> str:
        if self.phase == "pretrain":
            return f"pretrain {self.agent} {self.domain} seed {self.seed}"
        return f"finetune {self.agent} {self.task} snapshot {self.snapshot_frames} seed {self.seed}"


@dataclass
class SweepSpec:
    """What a sweep runs. ``tasks`` None: every task of each domain; ``snapshots`` None: every
    snapshot the protocol saves. ``overrides`` go to both phases (e.g. ``backend=cpu``)."""

    agents: list[str]
    domains: list[str]
    seeds: list[int]
    out: Path
    preset: str = "urlb"
    tasks: list[str] | None = None
    snapshots: list[int] | None = None
    launcher: str = "joblib"
    jobs: int = 1
    overrides: list[str] = field(default_factory=list)
    pretrain_overrides: list[str] = field(default_factory=list)
    finetune_overrides: list[str] = field(default_factory=list)
    launcher_overrides: list[str] = field(default_factory=list)


def domain_tasks(domain: str) -> list[str]:
    """The URLB downstream tasks of ``domain`` (walker: stand, walk, run, flip; ...)."""
    from envs.registry import DOMAINS, TASKS

    if domain not in DOMAINS:
        raise SweepError(f"unknown domain {domain!r}; known: {', '.join(DOMAINS)}")
    return [task for task in TASKS if task.split("_", 1)[0] == domain]


def compose_protocol(spec: SweepSpec) -> Protocol:
    """The protocol every run of the sweep follows, read from the composed Hydra configs of
    each agent and domain (so preset and override changes count); differing protocols
    between agents are refused, as they would make the report compare unlike runs."""
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from urlb.run.resolvers import register_resolvers

    register_resolvers()
    found: dict[Protocol, str] = {}
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base=None, job_name="sweep"):
        for agent, domain in itertools.product(spec.agents, spec.domains):
            try:
                found.setdefault(_protocol_of(spec, agent, domain, compose), f"{agent} on {domain}")
            except (HydraException, OmegaConfBaseException) as error:
                reason = str(error).split("\nConfig search path")[0].strip()
                raise SweepError(f"the configs of {agent} on {domain} do not compose: {reason}") from error
    if len(found) > 1:
        described = "; ".join(f"{who}: {protocol}" for protocol, who in found.items())
        raise SweepError(f"the agents' configs give different protocols ({described}); sweep them separately")
    return next(iter(found))


def _protocol_of(spec: SweepSpec, agent: str, domain: str, compose) -> Protocol:
    common = [f"agent={agent}", f"preset={spec.preset}", *spec.overrides]
    pre = compose("pretrain", overrides=[*common, f"env={domain}", *spec.pretrain_overrides])
    task = domain_tasks(domain)[0]
    fine = compose("finetune", overrides=[*common, f"task={task}", "snapshot=0", *spec.finetune_overrides])
    return Protocol(
        int(pre.protocol.pretrain_frames),
        tuple(int(f) for f in pre.protocol.snapshot_frames),
        int(fine.protocol.finetune_frames),
    )


def plan(spec: SweepSpec, protocol: Protocol) -> tuple[list[Job], list[Job]]:
    """Every pretrain and every finetune of the sweep, in launch order."""
    snapshots = list(spec.snapshots) if spec.snapshots is not None else list(protocol.snapshot_frames)
    missing = [frames for frames in snapshots if frames not in protocol.snapshot_frames]
    if missing:
        raise SweepError(
            f"--snapshots {missing} are not saved by the protocol "
            f"(snapshot_frames={list(protocol.snapshot_frames)})"
        )
    pretrains = [
        Job("pretrain", agent, domain, seed)
        for agent, domain, seed in itertools.product(spec.agents, spec.domains, spec.seeds)
    ]
    finetunes = []
    for domain in spec.domains:
        tasks = domain_tasks(domain)
        if spec.tasks is not None:
            tasks = [task for task in tasks if task in spec.tasks]
        for agent, seed, frames, task in itertools.product(spec.agents, spec.seeds, snapshots, tasks):
            finetunes.append(Job("finetune", agent, domain, seed, task, frames))
    if spec.tasks is not None:
        known = {job.task for job in finetunes}
        unknown = [task for task in spec.tasks if task not in known]
        if unknown:
            raise SweepError(f"--tasks {unknown} belong to none of the domains {spec.domains}")
    return pretrains, finetunes


def snapshot_file(out: Path, job: Job, frames: int) -> Path:
    return out / "snapshots" / job.agent / job.domain / f"seed_{job.seed}" / f"snapshot_{frames}.pt"


def job_state(job: Job, out: Path, protocol: Protocol) -> str:
    """``complete``, ``resume`` (a checkpoint to continue from), ``stale`` (a folder with
    nothing to continue from) or ``new``. Raises :class:`SweepError` for a complete run of
    another protocol."""
    run_dir = job.run_dir(out)
    record = read_complete(run_dir)
    if record is not None:
        if job.phase == "pretrain":
            expected = {"frames": protocol.pretrain_frames}
        else:
            expected = {
                "frames": protocol.finetune_frames,
                "snapshot_frames": job.snapshot_frames,
                "pretrain_frames": protocol.pretrain_frames,
            }
        clashes = {
            key: (record.get(key), value) for key, value in expected.items() if record.get(key) != value
        }
        if clashes:
            described = ", ".join(f"{key} {found} (sweep: {want})" for key, (found, want) in clashes.items())
            raise SweepError(
                f"{run_dir} holds a complete run of another protocol: {described}; "
                "sweep into another --out or remove that folder"
            )
        snapshots_present = job.phase == "finetune" or all(
            snapshot_file(out, job, frames).is_file() for frames in protocol.snapshot_frames
        )
        if snapshots_present:
            return "complete"
    if (run_dir / "checkpoint.pt").is_file():
        return "resume"
    return "stale" if run_dir.exists() else "new"


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
