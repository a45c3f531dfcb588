"""A report as text: the markdown tables (aggregates, probability of improvement, per-task
returns, notes) and the CSV of aggregates.

Imports :mod:`urlb.report.metrics`, :mod:`urlb.report.published` and :mod:`urlb.report.runs`;
:class:`urlb.report.report.Report` only for type hints (report.py re-exports these writers).
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from urlb.report.metrics import AGGREGATES, Interval
from urlb.report.published import FINETUNE_FRAMES, PRETRAIN_FRAMES, SOURCE
from urlb.report.runs import PROTOCOL_FIELDS, frames_text

if TYPE_CHECKING:
    from urlb.report.report import Report


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
