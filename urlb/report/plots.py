"""Figures of a :class:`urlb.report.report.Report` in the style of rliable's (Agarwal et al., 2021):
four-panel aggregate intervals, performance profiles, probability of improvement, and
per-task mean returns. Measured methods get colours; published reference rows are grey,
hatched and labelled ``(published)``, without intervals.

Matplotlib is imported by the functions, with the non-interactive Agg backend, so that importing
this module sets no global state.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from envs.tasks import EXPERT_SCORES
from urlb.report.metrics import AGGREGATES
from urlb.report.report import Report


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _colours(report: Report) -> dict[str, tuple]:
    """One colour per row: measured methods first, then published ones (drawn hollow, hatched
    or dashed, so the two never read alike)."""
    plt = _pyplot()
    palette = plt.get_cmap("tab10").colors
    names = report.order() + [row.name for row in report.published]
    return {name: palette[index % len(palette)] for index, name in enumerate(names)}


def _mark_published(labels) -> None:
    """Italic legend and axis labels for published rows."""
    for label in labels:
        if "(published)" in label.get_text():
            label.set_style("italic")


def _tidy(axis) -> None:
    axis.spines[["top", "right"]].set_visible(False)
    axis.grid(True, axis="x", alpha=0.25)


def _interval_bar(axis, position: float, interval, colour) -> None:
    """An interval as a horizontal bar at ``position``, its point estimate as a black tick."""
    axis.barh(position, interval.high - interval.low, left=interval.low, height=0.6, color=colour, alpha=0.75)
    axis.vlines(interval.point, position - 0.3, position + 0.3, color="k", linewidth=1.5)


def aggregate_figure(report: Report, path: Path) -> Path:
    """Median, IQM, mean and optimality gap: a bar over each method's interval, a tick at its
    point estimate; published rows as hatched diamonds."""
    plt = _pyplot()
    measured = report.order()
    colours = _colours(report)
    labels = measured + [row.name for row in report.published]
    height = 1.6 + 0.45 * len(labels)
    figure, axes = plt.subplots(1, len(AGGREGATES), figsize=(3.4 * len(AGGREGATES), height), sharey=True)
    for axis, metric in zip(axes, AGGREGATES, strict=True):
        for position, name in enumerate(reversed(labels)):
            if name in report.methods:
                _interval_bar(axis, position, report.intervals[name][metric], colours[name])
            else:
                row = next(row for row in report.published if row.name == name)
                axis.scatter(
                    row.aggregates[metric],
                    position,
                    marker="D",
                    s=60,
                    facecolor="white",
                    edgecolor=colours[name],
                    hatch="////",
                    zorder=3,
                )
        axis.set_title(metric)
        axis.set_yticks(range(len(labels)), list(reversed(labels)))
        axis.use_sticky_edges = False  # bars start at their interval, not at an axis edge
        axis.margins(x=0.08)
        _tidy(axis)
    _mark_published(axes[0].get_yticklabels())
    figure.supxlabel("Expert normalised score", y=0.02)
    figure.tight_layout()
    figure.savefig(path, dpi=150, bbox_inches="tight")
    plt.close(figure)
    return path


def profile_figure(report: Report, path: Path) -> Path:
    """Fraction of runs scoring above tau, with pointwise intervals; published rows as dashed
    steps over their task means."""
    plt = _pyplot()
    measured = report.order()
    colours = _colours(report)
    figure, axis = plt.subplots(figsize=(7.5, 4))
    for name in measured:
        profile, low, high = report.profiles[name]
        axis.plot(report.taus, profile, color=colours[name], linewidth=2, label=name)
        axis.fill_between(report.taus, low, high, color=colours[name], alpha=0.2)
    for row in report.published:
        fractions = (row.scores[None, :] > report.taus[:, None]).mean(axis=1)
        axis.plot(
            report.taus, fractions, linestyle="--", color=colours[row.name], label=f"{row.name}, task means"
        )
    axis.set_xlabel(r"Expert normalised score ($\tau$)")
    axis.set_ylabel(r"Fraction of runs with score > $\tau$")
    axis.set_ylim(0, 1.02)
    axis.set_xlim(report.taus[0], report.taus[-1])
    _tidy(axis)
    axis.grid(True, axis="y", alpha=0.25)
    return _save_with_legend(figure, axis, path)


def improvement_figure(report: Report, path: Path) -> Path:
    """P(X > Y) for every pair of measured methods, with its interval; 0.5 is no difference."""
    plt = _pyplot()
    pairs = list(report.improvement)
    colours = _colours(report)
    figure, axis = plt.subplots(figsize=(5.5, 0.8 + 0.5 * len(pairs)))
    for position, (x, y) in enumerate(reversed(pairs)):
        _interval_bar(axis, position, report.improvement[(x, y)], colours[x])
    axis.set_yticks(range(len(pairs)), [f"{x} vs {y}" for x, y in reversed(pairs)])
    axis.axvline(0.5, color="k", linestyle="--", linewidth=1, alpha=0.6)
    axis.set_xlim(0, 1)
    axis.set_xlabel("P(X > Y)")
    _tidy(axis)
    figure.tight_layout()
    figure.savefig(path, dpi=150, bbox_inches="tight")
    plt.close(figure)
    return path


def per_task_figure(report: Report, path: Path) -> Path:
    """Mean return per task (error bars: standard error over runs), grouped by task; published
    means as hollow hatched bars; a black line marks the expert return used to normalise."""
    plt = _pyplot()
    measured = report.order()
    colours = _colours(report)
    bars = measured + [row.name for row in report.published]
    width = 0.8 / len(bars)
    tasks = report.tasks
    figure, axis = plt.subplots(figsize=(max(6.0, 1.6 * len(tasks) + 1.0), 4))
    for index, name in enumerate(bars):
        offsets = np.arange(len(tasks)) - 0.4 + width * (index + 0.5)
        if name in report.methods:
            returns = report.methods[name].returns
            errors = returns.std(axis=0, ddof=1) / np.sqrt(len(returns)) if len(returns) > 1 else None
            axis.bar(
                offsets, returns.mean(axis=0), width, yerr=errors, color=colours[name], label=name, capsize=2
            )
        else:
            row = next(row for row in report.published if row.name == name)
            values = [row.returns.get(task, np.nan) for task in tasks]
            axis.bar(offsets, values, width, color="white", edgecolor=colours[name], hatch="////", label=name)
    for position, task in enumerate(tasks):
        axis.hlines(EXPERT_SCORES[task], position - 0.42, position + 0.42, color="k", linewidth=1)
    axis.set_xticks(range(len(tasks)), [task.replace("_", "\n", 1) for task in tasks])
    axis.set_ylabel("Mean return")
    axis.spines[["top", "right"]].set_visible(False)
    axis.grid(True, axis="y", alpha=0.25)
    axis.hlines([], 0, 0, color="k", linewidth=1, label="expert return (normaliser)")
    return _save_with_legend(figure, axis, path)


def _save_with_legend(figure, axis, path: Path) -> Path:
    """The legend outside the axes on the right (published rows marked), then save and close."""
    legend = axis.legend(frameon=False, fontsize="small", loc="upper left", bbox_to_anchor=(1.0, 1.0))
    _mark_published(legend.get_texts())
    figure.tight_layout()
    figure.savefig(path, dpi=150, bbox_inches="tight")
    _pyplot().close(figure)
    return path


def write_figures(report: Report, out: Path) -> list[Path]:
    """All figures of ``report`` into ``out``; the improvement figure needs two measured methods."""
    paths = [
        aggregate_figure(report, out / "aggregates.png"),
        profile_figure(report, out / "profiles.png"),
        per_task_figure(report, out / "per_task.png"),
    ]
    if report.improvement:
        paths.append(improvement_figure(report, out / "improvement.png"))
    return paths
