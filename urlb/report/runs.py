"""Evaluation records read into runs, and the checks on their protocols.

Rules 1 to 3 of :mod:`urlb.report.report` live here: which lines are evaluation records, what
one run is (and the same run found twice), and which protocols may be compared. Also the
names that follow from a run's protocol (:func:`method_name`) and ``frames_text``.

Imports only the standard library: no agent, no env, no numerical library.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

FIELDS = (
    "agent",
    "domain",
    "task",
    "seed",
    "frames",
    "return",
    "normalised_score",
    "snapshot_frames",
    "pretrain_frames",
    "finetune_frames",
)
PROTOCOL_FIELDS = ("pretrain_frames", "snapshot_frames", "finetune_frames")
_SHORT = {"pretrain_frames": "pretrain", "snapshot_frames": "snapshot", "finetune_frames": "finetune"}


def agent_label(record: dict) -> str:
    """The method a record belongs to: its agent, marked ``[pixels]`` for pixel runs (records
    without ``obs`` are state runs), so state and pixel results never mix."""
    obs = record.get("obs", "states")
    return record["agent"] if obs == "states" else f"{record['agent']} [{obs}]"


class ReportError(ValueError):
    """Input a report cannot be made from; the message (one line) says what to change."""


def frames_text(frames: int | None) -> str:
    """``2000000`` -> ``2M``, ``100000`` -> ``100k``, ``1500`` -> ``1.5k``, None -> ``-``."""
    if frames is None:
        return "-"
    for unit, size in (("M", 1_000_000), ("k", 1_000)):
        if frames >= size:
            return f"{frames / size:g}{unit}"
    return str(frames)


# -- records ------------------------------------------------------------------------------------
@dataclass(eq=False)  # hashed by identity: runs key the chosen evaluations
class Run:
    """One finetuning run: its identity and its evaluations (frames -> record)."""

    path: Path
    agent: str
    domain: str
    task: str
    seed: int
    pretrain_frames: int | None
    snapshot_frames: int | None
    finetune_frames: int
    evaluations: dict[int, dict] = field(default_factory=dict)
    # Runs of dataset agents: ``zero-shot`` (``zero_shot.py``: z inferred from the dataset's
    # rewards, no finetuning), ``offline`` (trained on the task's relabelled reward, no
    # finetuning) or ``zero-shot+finetune`` (``finetune.py`` from that z), and the dataset's
    # name; None for the other runs.
    mode: str | None = None
    dataset: str | None = None

    def protocol(self, name: str) -> int | None:
        return getattr(self, name)

    def identity(self) -> tuple:
        return (
            self.agent,
            self.task,
            self.seed,
            self.pretrain_frames,
            self.snapshot_frames,
            self.finetune_frames,
            self.mode,
            self.dataset,
        )

    def describe(self) -> str:
        return (
            f"{self.agent} {self.task} seed {self.seed} (snapshot {frames_text(self.snapshot_frames)}, "
            f"finetune {frames_text(self.finetune_frames)})"
        )


def record_files(paths: Iterable[Path | str]) -> list[Path]:
    """The ``eval.jsonl`` files named by ``paths``: files as given, folders searched recursively."""
    found = []
    for path in map(Path, paths):
        if path.is_file():
            found.append(path)
        elif path.is_dir():
            found.extend(sorted(path.rglob("eval.jsonl")))
        else:
            raise ReportError(f"{path} does not exist")
    if not found:
        raise ReportError(f"no eval.jsonl under {', '.join(map(str, paths))}")
    return list(dict.fromkeys(found))


def _bad_line(record) -> str | None:
    """Why a parsed line is not an evaluation record, or None if it is one."""
    if not isinstance(record, dict):
        return f"a JSON {type(record).__name__}, not a record"
    missing = [name for name in FIELDS if name not in record]
    if missing:
        return f"missing {', '.join(missing)}"
    for name in ("return", "normalised_score"):
        value = record[name]
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            return f"{name} is {value!r}, not a finite number"
    return None


def read_runs(paths: Iterable[Path | str], skip_bad_lines: bool = False) -> tuple[list[Run], list[str]]:
    """The finetuning runs recorded under ``paths`` and notes on what was left out or merged.

    Raises :class:`ReportError` for a bad line (unless ``skip_bad_lines``), for the same run
    found in two files, and for two records of one run's evaluation that disagree (a run
    written twice: which one counts is not the report's to guess). The same record written
    twice counts once, with a note.
    """
    runs: dict[tuple, Run] = {}
    owner: dict[tuple, Path] = {}
    where: dict[tuple, str] = {}  # (run, frames) -> "file:line" of the record kept
    notes, bad, pretraining = [], [], 0
    for path in record_files(paths):
        duplicates = 0
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                bad.append(f"{path}:{number}: not JSON ({error.msg})")
                continue
            reason = _bad_line(record)
            if reason is not None:
                bad.append(f"{path}:{number}: {reason}")
                continue
            if record.get("phase") == "pretrain" or record["finetune_frames"] is None:
                pretraining += 1
                continue
            run = Run(
                path,
                agent_label(record),
                record["domain"],
                record["task"],
                int(record["seed"]),
                record["pretrain_frames"],
                record["snapshot_frames"],
                int(record["finetune_frames"]),
                mode=record.get("mode"),
                dataset=record.get("dataset"),
            )
            key = run.identity()
            if key in owner and owner[key] != path:
                kept = next(iter(runs[key].evaluations.values()))
                seeds = (kept.get("snapshot_seed"), record.get("snapshot_seed"))
                also = f", from pretraining seeds {seeds[0]} and {seeds[1]}" if seeds[0] != seeds[1] else ""
                raise ReportError(
                    f"the same run is in {owner[key]} and {path} ({run.describe()}{also}); "
                    "pass only one of them"
                )
            owner[key] = path
            run = runs.setdefault(key, run)
            frames = int(record["frames"])
            if frames in run.evaluations:
                if run.evaluations[frames] != record:
                    returns = f"return {run.evaluations[frames]['return']} vs {record['return']}"
                    raise ReportError(
                        f"two different records of one evaluation: {where[key, frames]} and {path}:{number} "
                        f"({run.describe()} at {frames} frames: {returns}); the run was written twice: "
                        "keep one of those lines"
                    )
                duplicates += 1
                continue
            run.evaluations[frames] = record
            where[key, frames] = f"{path}:{number}"
        if duplicates:
            notes.append(f"{path}: {duplicates} evaluation(s) written twice alike; each counted once")
    if bad and not skip_bad_lines:
        more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
        raise ReportError(
            f"corrupt record at {bad[0]}{more}; fix or remove the line, or pass --skip-bad-lines"
        )
    notes.extend(f"skipped corrupt record at {where}" for where in bad)
    if pretraining:
        notes.append(f"left out {pretraining} pretraining (zero-shot) records: only finetuning scores count")
    if not runs:
        raise ReportError("no finetuning records found (pass finetune run folders or a sweep's folder)")
    return list(runs.values()), notes


# -- methods and protocols ----------------------------------------------------------------------
def method_name(run: Run, group_by: Sequence[str]) -> str:
    """``ddpg``, ``ddpg (scratch)``, or for dataset agents' runs ``fb (zero-shot; <dataset>)``,
    ``td3 (offline; <dataset>)`` and ``fb (zero-shot+finetune; <dataset>)``; then the protocol
    values grouped by."""
    if run.mode is not None:
        name = f"{run.agent} ({run.mode}; {run.dataset})"
    else:
        name = run.agent if run.snapshot_frames is not None else f"{run.agent} (scratch)"
    grouped = [f"{_SHORT[name_]} {frames_text(run.protocol(name_))}" for name_ in group_by]
    return f"{name} [{', '.join(grouped)}]" if grouped else name


def check_protocols(runs: Sequence[Run], group_by: Sequence[str]) -> None:
    """Refuse runs that differ in a protocol field not grouped by (one line naming it)."""
    unknown = [name for name in group_by if name not in PROTOCOL_FIELDS]
    if unknown:
        raise ReportError(f"cannot group by {unknown}; protocol fields are {', '.join(PROTOCOL_FIELDS)}")
    for run_name, group in _dataset_methods(runs, group_by).items():
        for name in ("pretrain_frames", "snapshot_frames"):
            values = {run.protocol(name) for run in group}
            if len(values) > 1:
                raise ReportError(
                    f"{run_name} mixes {name} {' vs '.join(map(frames_text, sorted(values)))}; "
                    f"report like with like, or pass --group-by {name}"
                )
    # Finetuned runs share the finetuning budget; the pretraining budgets of dataset agents'
    # runs (a dataset's transitions, snapshots in updates) were checked within their rows.
    finetuned = [run for run in runs if run.finetune_frames > 0]
    for name in PROTOCOL_FIELDS:
        if name in group_by:
            continue
        considered = [
            run
            for run in finetuned
            if name == "finetune_frames" or (run.mode is None and run.snapshot_frames is not None)
        ]
        agents_by_value: dict = defaultdict(set)
        for run in considered:
            agents_by_value[run.protocol(name)].add(run.agent)
        if len(agents_by_value) > 1:
            values = " vs ".join(
                f"{frames_text(value)} ({', '.join(sorted(agents))})"
                for value, agents in sorted(
                    agents_by_value.items(), key=lambda item: (item[0] is None, item[0])
                )
            )
            raise ReportError(
                f"records mix protocols: {name} {values}; report like with like, "
                f"or pass --group-by {name} to make each value its own rows"
            )


def _dataset_methods(runs: Sequence[Run], group_by: Sequence[str]) -> dict[str, list[Run]]:
    """Dataset agents' runs (zero-shot, offline, finetuned from zero-shot) by method: each is its
    own labelled row."""
    methods: dict[str, list[Run]] = defaultdict(list)
    for run in runs:
        if run.mode is not None:
            methods[method_name(run, group_by)].append(run)
    return methods
