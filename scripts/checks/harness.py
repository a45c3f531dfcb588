"""What the checks in this folder share: run an entry point as its own process, read what a run
wrote, run several at once, and write the summary. Each ``*_check.py`` beside it is one
experiment plan on top of these helpers, run as ``python scripts/checks/<name>_check.py``:
Python puts a script's own folder first on the import path, so ``from harness import ...`` needs
no path edits.

A run is ``python <entry point> <Hydra overrides>`` in a fresh process from the repository
root, with its own run folder and its output appended to a log; a failed run stops the check
with the log's path. Several run at once in threads (each waits on its process), one torch
thread per process as the entry points use.
"""

from __future__ import annotations

import csv
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
T = TypeVar("T")


def small_cpu(seed_frames: int) -> list[str]:
    """The overrides of a short CPU check: ``preset=small`` (256-wide networks, batch 256), the
    cpu backend, no console, and ``seed_frames`` random-action frames (URLB: 4000; fewer so
    that short runs learn)."""
    return [
        "preset=small",
        "backend=cpu",
        "threads=1",  # several runs share the cores: one torch thread each, whatever the load
        "device=cpu",
        "console=false",
        f"protocol.seed_frames={seed_frames}",
    ]


def run(
    script: str, overrides: Sequence[str], log: Path, *, env: Mapping[str, str] | None = None, check=True
) -> int:
    """Run ``python <script> <overrides>`` (``pretrain.py``, ``finetune.py``, ``collect.py``) from
    the repository root, appending its output to ``log``; returns its exit status. With
    ``check`` a failure ends the check (``SystemExit``) naming the log."""
    command = [sys.executable, str(ROOT / script), *overrides]
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a") as out:
        returncode = subprocess.run(command, cwd=ROOT, env=env, stdout=out, stderr=out).returncode
    if check and returncode != 0:
        raise SystemExit(f"{script} {' '.join(overrides)} failed (exit {returncode}); see {log}")
    return returncode


def fresh(*paths: Path) -> None:
    """Remove run folders and logs, so that each check starts afresh (no records of an earlier
    run read as this one's)."""
    for path in paths:
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)


def parallel(calls: Sequence[Callable[[], T]], jobs: int) -> list[T]:
    """``[call() for call in calls]`` with up to ``jobs`` at once, results in the calls' order.
    The first failure (in that order) is raised once the runs under way end; calls not yet
    started are dropped (a failed check should not spend another hour)."""
    with ThreadPoolExecutor(max(1, jobs)) as pool:
        futures = [pool.submit(call) for call in calls]
        try:
            return [future.result() for future in futures]
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)
            raise


def records(run_dir: Path) -> list[dict]:
    """A run's evaluation records (``eval.jsonl``), oldest first."""
    return [json.loads(line) for line in (run_dir / "eval.jsonl").read_text().splitlines()]


def final_return(run_dir: Path) -> float:
    """The return of a run's last evaluation."""
    return records(run_dir)[-1]["return"]


def logged(run_dir: Path, key: str, file: str = "train.csv") -> list[float]:
    """Every logged value of ``key`` in a run's ``train.csv`` (or ``time.csv``), oldest first."""
    with open(run_dir / file) as f:
        values = [float(row[key]) for row in csv.DictReader(f) if row.get(key)]
    if not values:
        raise SystemExit(f"{run_dir / file} logged no {key}")
    return values


def fifths(values: Sequence[float]) -> tuple[list[float], list[float]]:
    """The first and the last fifth of ``values`` (at least one value each): early and late."""
    fifth = max(1, len(values) // 5)
    return list(values[:fifth]), list(values[-fifth:])


def bootstrap_interval(
    values: Sequence[float], level: float = 0.95, reps: int = 10_000, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``values`` (e.g. one final return per seed):
    the ``level`` central range of the means of ``reps`` resamples with replacement. One value
    gives a zero-width interval; few seeds give a coarse one that tends to be too narrow (3 seeds
    have 10 distinct resamples)."""
    x = np.asarray(values, dtype=np.float64)
    means = x[np.random.default_rng(seed).integers(0, len(x), size=(reps, len(x)))].mean(axis=1)
    low, high = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return float(low), float(high)


def machine() -> str:
    """The machine a check ran on, for its summary."""
    cpu = platform.processor() or platform.machine()
    return f"{os.cpu_count()} CPUs ({cpu}), {platform.system()}, python {platform.python_version()}"


def markdown(header: Sequence[str], rows: Sequence[Sequence]) -> str:
    """A markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def write_summary(
    out: Path, summary: dict, tables: Mapping[str, tuple[Sequence[str], Sequence[Sequence]]], started: float
) -> str:
    """Write ``<out>/summary.json`` (``summary`` plus the machine and the minutes since
    ``started``), each table as ``<out>/<name>.csv`` and all of them as ``<out>/table.md``;
    returns the markdown."""
    out.mkdir(parents=True, exist_ok=True)
    summary = {**summary, "machine": machine(), "minutes": (time.perf_counter() - started) / 60}
    (out / "summary.json").write_text(json.dumps(summary, indent=1, default=_json_default))
    for name, (header, rows) in tables.items():
        with open(out / f"{name}.csv", "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(header)
            writer.writerows(rows)
    text = "\n\n".join(markdown(header, rows) for header, rows in tables.values()) + "\n"
    (out / "table.md").write_text(text)
    return text


def _json_default(value):
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")
