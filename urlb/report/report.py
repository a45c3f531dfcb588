"""Benchmark reports from evaluation records: which runs count, their score matrices, and the
aggregates of :mod:`urlb.report.metrics` with their intervals, as markdown and CSV.

Input is any set of finetune run folders (or folders above them, e.g. a sweep's ``out``): each
run's ``eval.jsonl`` holds one record per evaluation (``urlb.loop.online``)::

    {"agent", "domain", "task", "seed", "phase", "frames", "return", "normalised_score",
     "snapshot_frames", "pretrain_frames", "finetune_frames"}

(plus ``obs``, ``pixels`` for pixel runs: their methods are labelled ``<agent> [pixels]``).

The rules, in the order they apply:

1. Every line must be a JSON record with those fields; a line that is not is reported as
   ``file:line`` and stops the report (``skip_bad_lines`` reports it and goes on).
   Pretraining records (zero-shot returns, no finetuning) are not scores and are left out.
2. A run is one (agent, task, seed, protocol) in one file. The same evaluation written twice
   (a rerun appending to an old ``eval.jsonl``) counts once; the same run in two files is an
   error naming both.
3. Runs of different protocols (``pretrain_frames``, ``snapshot_frames``, ``finetune_frames``)
   are refused, naming the field and its values, unless the report groups by that field: each
   value then becomes its own rows (``ddpg [snapshot 100k]``). Runs from scratch (no snapshot)
   have no pretraining protocol; they are the method ``<agent> (scratch)``.
4. A run's score is its final evaluation (at its ``finetune_frames``; a run that stopped
   earlier is reported as incomplete and left out) or its evaluation at a chosen frame count.
4b. Runs of dataset agents (records with a ``mode``) are their own methods, one row per agent
   and dataset, beside the others: without online finetuning (``zero_shot.py``'s records,
   ``finetune_frames: 0``) ``<agent> (zero-shot; <dataset>)`` or ``<agent> (offline;
   <dataset>)``; finetuned from the zero-shot policy (``finetune.py agent=fb|hilp``) ``<agent>
   (zero-shot+finetune; <dataset>)``, whose finetuning budget is checked against the other
   finetuned runs'. Their pretraining budgets (a dataset's transitions, snapshots counted in
   updates) are checked within each such row, not against the online runs'.
5. Methods are compared on the tasks all of them have: a task missing for a method is
   reported, and the aggregates of every method use the common tasks. Within a method, the
   seeds that have every common task form the ``runs x tasks`` matrix; the others are reported.

Published URLB numbers (:mod:`urlb.report.published`) join as reference rows: aggregates of per-task
means on the same tasks, marked ``published``, without intervals (only means were published).

Where the parts live: rules 1 to 3 (records into runs, protocol checks) in
:mod:`urlb.report.runs`; rules 4 and 5, published rows and :func:`build_report` here; the
markdown and CSV writers in :mod:`urlb.report.tables`. This module imports numpy, the other
``urlb.report`` modules and :mod:`envs.tasks` (task order, expert scores); no agent, no env.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path

import numpy as np

from envs.tasks import EXPERT_SCORES, TASKS
from urlb.report import metrics
from urlb.report.metrics import AGGREGATES, Interval
from urlb.report.published import PUBLISHED_RETURNS, published_method
from urlb.report.runs import PROTOCOL_FIELDS, ReportError, Run, check_protocols, method_name, read_runs

# markdown and write_csv: re-exported for scripts/compare.py, which imports them from here.
from urlb.report.tables import markdown, write_csv  # noqa: F401


# -- methods and score matrices -----------------------------------------------------------------
@dataclass
class MethodScores:
    """A measured method's ``(runs, tasks)`` matrices on the report's tasks."""

    name: str
    seeds: list[int]
    tasks: list[str]
    scores: np.ndarray  # expert-normalised
    returns: np.ndarray
    protocol: dict[str, int | None]


def select_scores(runs: Sequence[Run], frames: int | None) -> tuple[dict[Run, dict], list[str]]:
    """Each run's scored evaluation (final, or at ``frames``) and notes on runs left out."""
    chosen, notes = {}, []
    for run in runs:
        if frames is None:
            last = max(run.evaluations)
            if last < run.finetune_frames:
                notes.append(
                    f"incomplete run left out: {run.describe()}, last evaluation at {last:,} of "
                    f"{run.finetune_frames:,} frames ({run.path})"
                )
                continue
            chosen[run] = run.evaluations[last]
        elif frames in run.evaluations:
            chosen[run] = run.evaluations[frames]
        else:
            have = ", ".join(f"{f:,}" for f in sorted(run.evaluations))
            notes.append(f"no evaluation at {frames:,} frames, left out: {run.describe()} (has {have})")
    return chosen, notes


def score_matrices(
    chosen: dict[Run, dict], group_by: Sequence[str]
) -> tuple[dict[str, MethodScores], list[str], list[str]]:
    """Per method, the matrices over the tasks every method has; also those tasks and notes."""
    by_method: dict[str, dict[tuple[int, str], dict]] = defaultdict(dict)
    protocol: dict[str, dict] = {}
    for run, record in chosen.items():
        name = method_name(run, group_by)
        by_method[name][(run.seed, run.task)] = record
        protocol[name] = {key: run.protocol(key) for key in PROTOCOL_FIELDS}
    if not by_method:
        raise ReportError("no run has a scored evaluation (see the notes above)")
    notes = []
    all_tasks = sorted({task for cells in by_method.values() for _, task in cells}, key=_task_order)
    method_tasks = {name: {task for _, task in cells} for name, cells in by_method.items()}
    tasks = [task for task in all_tasks if all(task in have for have in method_tasks.values())]
    for name, have in sorted(method_tasks.items()):
        missing = [task for task in all_tasks if task not in have]
        if missing:
            notes.append(
                f"{name}: no runs on {', '.join(missing)}; every method's aggregates use only the "
                f"{len(tasks)} task(s) all methods have"
            )
    if not tasks:
        raise ReportError("the methods share no task; report them separately")
    methods = {}
    for name, cells in sorted(by_method.items()):
        seeds = sorted({seed for seed, _ in cells})
        complete = [seed for seed in seeds if all((seed, task) in cells for task in tasks)]
        for seed in seeds:
            if seed not in complete:
                lacking = [task for task in tasks if (seed, task) not in cells]
                notes.append(
                    f"{name} seed {seed}: no run on {', '.join(lacking)}; its other runs are left out"
                )
        if not complete:
            notes.append(f"{name}: no seed has every task; left out")
            continue
        scores = np.array([[cells[(s, t)]["normalised_score"] for t in tasks] for s in complete], dtype=float)
        returns = np.array([[cells[(s, t)]["return"] for t in tasks] for s in complete], dtype=float)
        methods[name] = MethodScores(name, complete, tasks, scores, returns, protocol[name])
    return methods, tasks, notes


def _task_order(task: str) -> tuple[int, str]:
    """URLB's order, then any other task by name."""
    return (TASKS.index(task), task) if task in TASKS else (len(TASKS), task)


# -- the report ---------------------------------------------------------------------------------
@dataclass
class PublishedRow:
    """A published method's aggregates over the report's tasks it has values for."""

    name: str
    tasks: list[str]
    returns: dict[str, float]
    aggregates: dict[str, float]

    @property
    def scores(self) -> np.ndarray:
        """Expert-normalised task means ``(tasks,)``, in ``tasks`` order."""
        return np.array([self.returns[task] / EXPERT_SCORES[task] for task in self.tasks])


@dataclass
class Report:
    methods: dict[str, MethodScores]
    tasks: list[str]
    intervals: dict[str, dict[str, Interval]]
    improvement: dict[tuple[str, str], Interval]
    taus: np.ndarray
    profiles: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]
    published: list[PublishedRow]
    notes: list[str]
    frames: int | None
    reps: int
    confidence: float

    def order(self) -> list[str]:
        """Measured methods by IQM, best first."""
        return sorted(self.methods, key=lambda name: -self.intervals[name]["IQM"].point)


def published_rows(names: Sequence[str], tasks: Sequence[str], measured: Sequence[str]) -> tuple[list, list]:
    """Reference rows for ``names`` (``auto``: those matching a measured agent; ``all``)."""
    if list(names) == ["all"]:
        names = list(PUBLISHED_RETURNS)
    elif list(names) == ["auto"]:
        agents = {name.split(" ")[0].lower() for name in measured}
        names = [method for method in PUBLISHED_RETURNS if method.lower() in agents]
    rows, notes = [], []
    for name in names:
        try:
            method = published_method(name)
        except KeyError as error:
            raise ReportError(error.args[0]) from None
        values = PUBLISHED_RETURNS[method]
        have = [task for task in tasks if task in values]
        if not have:
            notes.append(f"{method} (published) has none of the report's tasks; left out")
            continue
        if len(have) < len(tasks):
            lacking = ", ".join(task for task in tasks if task not in values)
            notes.append(
                f"{method} (published) has no value for {lacking}; its aggregates use {len(have)} tasks"
            )
        row = PublishedRow(f"{method} (published)", have, {t: values[t] for t in have}, {})
        row.aggregates.update({metric: float(f(row.scores[None])) for metric, f in AGGREGATES.items()})
        rows.append(row)
    return rows, notes


def build_report(
    paths: Iterable[Path | str],
    frames: int | None = None,
    group_by: Sequence[str] = (),
    published: Sequence[str] = (),
    reps: int = 50_000,
    improvement_reps: int = 2_000,
    confidence: float = 0.95,
    seed: int = 0,
    skip_bad_lines: bool = False,
) -> Report:
    """Everything a report shows, from the records under ``paths`` (see the module's rules)."""
    runs, notes = read_runs(paths, skip_bad_lines)
    check_protocols(runs, group_by)
    chosen, left_out = select_scores(runs, frames)
    methods, tasks, task_notes = score_matrices(chosen, group_by)
    notes += left_out + task_notes
    if not methods:
        raise ReportError("no method has a complete runs x tasks matrix (see the notes)")
    score_dict = {name: method.scores for name, method in methods.items()}
    intervals = metrics.aggregate_intervals(score_dict, reps=reps, confidence=confidence, seed=seed)
    improvement = {
        (x, y): metrics.probability_of_improvement_interval(
            score_dict[x], score_dict[y], reps=improvement_reps, confidence=confidence, seed=seed
        )
        for x, y in combinations(sorted(score_dict), 2)
    }
    highest = max(1.0, max(float(scores.max()) for scores in score_dict.values()))
    taus = np.linspace(0.0, highest, 101)
    profiles = metrics.performance_profile_intervals(
        score_dict, taus, reps=improvement_reps, confidence=confidence, seed=seed
    )
    rows, published_notes = published_rows(published, tasks, list(methods))
    return Report(
        methods,
        tasks,
        intervals,
        improvement,
        taus,
        profiles,
        rows,
        notes + published_notes,
        frames,
        reps,
        confidence,
    )
