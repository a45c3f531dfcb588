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
5. Methods are compared on the tasks all of them have: a task missing for a method is
   reported, and the aggregates of every method use the common tasks. Within a method, the
   seeds that have every common task form the ``runs x tasks`` matrix; the others are reported.

Published URLB numbers (:mod:`urlb.report.published`) join as reference rows: aggregates of per-task
means on the same tasks, marked ``published``, without intervals (only means were published).
"""

from __future__ import annotations

import csv
import json
import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path

import numpy as np

from urlb.report import metrics
from urlb.report.metrics import AGGREGATES, Interval
from urlb.report.published import (
    FINETUNE_FRAMES,
    PRETRAIN_FRAMES,
    PUBLISHED_RETURNS,
    SOURCE,
    published_method,
)

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

    Raises :class:`ReportError` for a bad line (unless ``skip_bad_lines``) and for the same run
    found in two files.
    """
    runs: dict[tuple, Run] = {}
    owner: dict[tuple, Path] = {}
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
            )
            key = run.identity()
            if key in owner and owner[key] != path:
                raise ReportError(
                    f"the same run is in {owner[key]} and {path} ({run.describe()}); pass only one of them"
                )
            owner[key] = path
            run = runs.setdefault(key, run)
            frames = int(record["frames"])
            duplicates += frames in run.evaluations
            run.evaluations[frames] = record  # the last record of a frame count wins
        if duplicates:
            notes.append(f"{path}: {duplicates} evaluation(s) written twice; each counted once (the last)")
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


# -- methods and score matrices -----------------------------------------------------------------
def method_name(run: Run, group_by: Sequence[str]) -> str:
    name = run.agent if run.snapshot_frames is not None else f"{run.agent} (scratch)"
    grouped = [f"{_SHORT[name_]} {frames_text(run.protocol(name_))}" for name_ in group_by]
    return f"{name} [{', '.join(grouped)}]" if grouped else name


def check_protocols(runs: Sequence[Run], group_by: Sequence[str]) -> None:
    """Refuse runs that differ in a protocol field not grouped by (one line naming it)."""
    unknown = [name for name in group_by if name not in PROTOCOL_FIELDS]
    if unknown:
        raise ReportError(f"cannot group by {unknown}; protocol fields are {', '.join(PROTOCOL_FIELDS)}")
    for name in PROTOCOL_FIELDS:
        if name in group_by:
            continue
        considered = [run for run in runs if name == "finetune_frames" or run.snapshot_frames is not None]
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
    from urlb.measure.evaluate import EXPERT_SCORES

    order = list(EXPERT_SCORES)
    return (order.index(task), task) if task in order else (len(order), task)


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
        from urlb.measure.evaluate import EXPERT_SCORES

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


# -- tables -------------------------------------------------------------------------------------
def _interval_text(interval: Interval) -> str:
    return f"{interval.point:.3f} [{interval.low:.3f}, {interval.high:.3f}]"


def _protocol_text(protocol: dict) -> str:
    return " / ".join(frames_text(protocol[key]) for key in PROTOCOL_FIELDS)


def markdown(report: Report) -> str:
    """The aggregate table, probability of improvement, per-task returns and the notes."""
    percent = f"{report.confidence:.0%}"
    scored = "final evaluation" if report.frames is None else f"evaluation at {report.frames:,} frames"
    metric_names = list(AGGREGATES)
    lines = [
        f"Expert-normalised scores ({scored} of each run) on {len(report.tasks)} task(s): "
        f"{', '.join(report.tasks)}. Point estimate [{percent} stratified-bootstrap CI, "
        f"{report.reps:,} resamples]; optimality gap: lower is better.",
        "",
        "| method | source | pretrain / snapshot / finetune frames | runs x tasks | "
        + " | ".join(metric_names)
        + " |",
        "|---|---|---|---|" + "---|" * len(metric_names),
    ]
    for name in report.order():
        method = report.methods[name]
        cells = [_interval_text(report.intervals[name][metric]) for metric in metric_names]
        size = f"{len(method.seeds)} x {len(method.tasks)}"
        lines.append(
            f"| {name} | measured | {_protocol_text(method.protocol)} | {size} | {' | '.join(cells)} |"
        )
    for row in report.published:
        cells = [f"{row.aggregates[metric]:.3f}" for metric in metric_names]
        protocol = " / ".join(frames_text(f) for f in (PRETRAIN_FRAMES, PRETRAIN_FRAMES, FINETUNE_FRAMES))
        size = f"task means x {len(row.tasks)}"
        lines.append(f"| *{row.name}* | *published* | {protocol} | {size} | {' | '.join(cells)} |")
    if report.published:
        lines += ["", f"Published rows: {SOURCE}; aggregates of per-task means, no intervals."]
    if report.improvement:
        lines += [
            "",
            f"Probability of improvement P(X > Y) [{percent} CI]:",
            "",
            "| X | Y | P(X > Y) |",
            "|---|---|---|",
        ]
        for (x, y), interval in report.improvement.items():
            lines.append(f"| {x} | {y} | {_interval_text(interval)} |")
    lines += ["", "Mean return per task (± standard error over runs; n runs):", ""]
    lines.append("| method | " + " | ".join(report.tasks) + " |")
    lines.append("|---|" + "---|" * len(report.tasks))
    for name in report.order():
        returns = report.methods[name].returns
        cells = [_mean_text(returns[:, index]) for index in range(len(report.tasks))]
        lines.append(f"| {name} | {' | '.join(cells)} |")
    for row in report.published:
        cells = [f"*{row.returns[task]:.0f}*" if task in row.returns else "-" for task in report.tasks]
        lines.append(f"| *{row.name}* | {' | '.join(cells)} |")
    if report.notes:
        lines += ["", "Notes:", ""] + [f"- {note}" for note in report.notes]
    return "\n".join(lines) + "\n"


def _mean_text(values: np.ndarray) -> str:
    error = values.std(ddof=1) / math.sqrt(len(values)) if len(values) > 1 else float("nan")
    spread = f" ± {error:.0f}" if math.isfinite(error) else ""
    return f"{values.mean():.0f}{spread} (n={len(values)})"


def write_csv(report: Report, path: Path) -> Path:
    """One row per method (measured and published): protocol, size, and each aggregate's point
    estimate and interval; a column per task with the mean return."""
    columns = ["method", "source", *PROTOCOL_FIELDS, "runs", "tasks", "scored_at_frames"]
    for metric in AGGREGATES:
        key = metric.lower().replace(" ", "_")
        columns += [key, f"{key}_low", f"{key}_high"]
    columns += [f"return_{task}" for task in report.tasks]
    rows = []
    for name in report.order():
        method = report.methods[name]
        row = {"method": name, "source": "measured", **method.protocol}
        row |= {
            "runs": len(method.seeds),
            "tasks": len(method.tasks),
            "scored_at_frames": report.frames or "final",
        }
        for metric, interval in report.intervals[name].items():
            key = metric.lower().replace(" ", "_")
            row |= {key: interval.point, f"{key}_low": interval.low, f"{key}_high": interval.high}
        row |= {f"return_{task}": method.returns[:, i].mean() for i, task in enumerate(report.tasks)}
        rows.append(row)
    for published in report.published:
        row = {"method": published.name, "source": "published", "pretrain_frames": PRETRAIN_FRAMES}
        row |= {"snapshot_frames": PRETRAIN_FRAMES, "finetune_frames": FINETUNE_FRAMES}
        row |= {"runs": "", "tasks": len(published.tasks), "scored_at_frames": "final"}
        row |= {metric.lower().replace(" ", "_"): value for metric, value in published.aggregates.items()}
        row |= {f"return_{task}": value for task, value in published.returns.items()}
        rows.append(row)
    with open(path, "w", newline="") as file:
        writer = csv.DictWriter(file, columns, restval="")
        writer.writeheader()
        writer.writerows(rows)
    return path
