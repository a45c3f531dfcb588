"""A sweep's plan: its spec, the protocol it runs, its jobs and each job's state on disk
(complete, cut off, fresh). The launching half is :mod:`urlb.run.sweep`.

Imports: urlb.data (the completion marker, the snapshots' layout); Hydra's compose for the protocol.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path

from urlb.data.checkpoint import snapshot_candidates
from urlb.data.records import read_complete

ROOT = Path(__file__).resolve().parents[2]  # the checkout: configs/, pretrain.py, finetune.py
# Launchers the sweep knows how to size (``--jobs``); any other hydra/launcher option still works
# through launcher overrides.
LAUNCHERS = ("joblib", "submitit_local", "submitit_slurm", "urlb_slurm", "basic")


class SweepError(RuntimeError):
    """A sweep that cannot be run as asked; the message says what to change."""


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
    from envs.tasks import DOMAINS
    from envs.tasks import domain_tasks as tasks_of

    if domain not in DOMAINS:
        raise SweepError(f"unknown domain {domain!r}; known: {', '.join(DOMAINS)}")
    return list(tasks_of(domain))


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
    fixed = [
        o
        for o in [*spec.overrides, *spec.finetune_overrides]
        if o.split("=")[0].lstrip("+~") == "snapshot_seed"
    ]
    if fixed:
        raise SweepError(
            f"{fixed[0]}: a sweep finetunes each seed's own snapshots (snapshot_seed = seed); drop it"
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


def snapshot_files(out: Path, job: Job, frames: int) -> list[Path]:
    """The pretrain ``job``'s snapshots of ``frames`` frames: one per configuration folder under
    ``out/snapshots/<agent>/<domain>/seed_<s>/`` (a finetune asks which when there are several)."""
    return snapshot_candidates(out / "snapshots", job.agent, job.domain, job.seed, frames)


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
            snapshot_files(out, job, frames) for frames in protocol.snapshot_frames
        )
        if snapshots_present:
            return "complete"
    if (run_dir / "checkpoint.pt").is_file():
        return "resume"
    return "stale" if run_dir.exists() else "new"
