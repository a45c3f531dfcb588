"""The one place metrics are placed: TensorBoard, CSV files and a console progress line.

Agents and loops return metrics as dicts of floats or 0-dim tensors; only :meth:`Logger.log`
turns tensors into floats, so GPU syncs happen once per log call and never on hot paths::

    write_run_info(run_dir, config)
    logger = Logger(run_dir, total_frames=2_000_000, start_frame=resumed_frame)
    for frame in ...:
        logger.log("train", agent.update(batch), frame)
        logger.log("eval", {"return": mean_return}, frame)
        logger.progress(frame, {"eval/return": mean_return})
    logger.close()

A run directory then holds ``config.yaml`` and ``run.json`` (resolved config, git revision),
``tb/`` (TensorBoard events tagged ``train/<key>``, ``eval/<key>``, ``time/<key>``) and one CSV
per namespace used (``train.csv``, ``eval.csv``, ``time.csv``) with a ``frame`` column first.

Resume contract: a checkpoint taken at frame F is written after everything logged at frames <= F.
A logger opened with ``start_frame=F`` keeps exactly those rows and events and drops those at
frames > F (a crashed run may have logged past its last checkpoint), in the CSVs and, through the
SummaryWriter's ``purge_step``, in TensorBoard; the resumed run then logs frames > F only.
"""

from __future__ import annotations

import csv
import json
import numbers
import os
import platform
import shlex
import socket
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

__all__ = ["NAMESPACES", "Logger", "git_revision", "write_run_info"]

NAMESPACES = ("train", "eval", "time")


class Logger:
    """Writes metrics of the ``train``, ``eval`` and ``time`` namespaces at a frame count.

    Args:
        run_dir: the run directory; ``tb/`` and the CSV files are written inside it.
        total_frames: frames of the whole run, for the progress line's percentage and ETA.
        use_tensorboard: write TensorBoard event files under ``run_dir/tb``.
        console: print the progress line to stderr.
        start_frame: frames already done when resuming from a checkpoint (0 for a fresh run,
            whose CSVs and TensorBoard history start empty); see the module's resume contract.
        label: first word of the progress line, e.g. ``"pretrain"``.
        progress_interval_s: least wall time between two progress lines unless forced.
        fps_window_s: wall time over which the progress line measures frames per second.
        clock: seconds as a float; tests pass a fake one.

    The ETA extrapolates the recent rate (the ``fps_window_s`` window), and only a rate of
    frames that include updates: while the ``time/updates`` metric the loops log is 0 (URLB's
    seed frames: random actions, no update) frames come many times faster than they will
    later, so the line shows ``ETA ?`` rather than 21 minutes for a run of days (issue 23);
    from the first update on, the window starts again at the last frame logged before it.
    """

    def __init__(
        self,
        run_dir: Path | str,
        total_frames: int,
        use_tensorboard: bool = True,
        console: bool = True,
        start_frame: int = 0,
        *,
        label: str = "run",
        progress_interval_s: float = 1.0,
        fps_window_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.total_frames = total_frames
        self.console = console
        self.label = label
        # Frames >= first_new_frame are what this logger writes; older history at those frames goes.
        first_new_frame = start_frame + 1 if start_frame > 0 else 0
        self._tables = {name: _CsvTable(self.run_dir / f"{name}.csv", first_new_frame) for name in NAMESPACES}
        self._writer = self._open_tensorboard(first_new_frame) if use_tensorboard else None
        self._progress = _ProgressLine(total_frames, start_frame, progress_interval_s, fps_window_s, clock)
        self._closed = False

    def _open_tensorboard(self, purge_step: int):
        # Imported here: it pulls in tensorboard, which runs without a logger never need.
        from torch.utils.tensorboard import SummaryWriter

        return SummaryWriter(log_dir=str(self.run_dir / "tb"), purge_step=purge_step)

    def log(self, namespace: str, metrics: Mapping[str, float | torch.Tensor], frame: int) -> None:
        """Write ``metrics`` as ``<namespace>/<key>`` at step ``frame``; tensors must hold one element."""
        if namespace not in NAMESPACES:
            raise ValueError(f"unknown namespace {namespace!r}; use one of {NAMESPACES}")
        if not metrics:
            return
        frame = int(frame)
        values = {key: to_float(value, f"{namespace}/{key}") for key, value in metrics.items()}
        if namespace == "time" and "updates" in values:
            self._progress.set_updating(values["updates"] > 0, frame)
        if self._writer is not None:
            for key, value in values.items():
                self._writer.add_scalar(f"{namespace}/{key}", value, global_step=frame)
        self._tables[namespace].append(frame, values)

    def image(self, tag: str, rgb, frame: int) -> None:
        """Write an ``(H, W, 3)`` uint8 image to TensorBoard as ``tag`` at ``frame`` (the
        caller keeps the file copy; the CSVs hold scalars only)."""
        if self._writer is not None:
            self._writer.add_image(tag, rgb, global_step=int(frame), dataformats="HWC")

    def progress(
        self, frame: int, extra: Mapping[str, float | torch.Tensor] | None = None, force: bool = False
    ):
        """Print ``[label] frame/total frames (pct) | fps | ETA | key value ...`` to stderr.

        At most one line per ``progress_interval_s`` of wall time unless ``force``.
        """
        if not self.console:
            return
        extras = {key: to_float(value, key) for key, value in (extra or {}).items()}
        line = self._progress.update(int(frame), extras, force)
        if line is not None:
            self._progress.write(f"[{self.label}] {line}")

    def flush(self) -> None:
        if self._writer is not None:
            self._writer.flush()

    def close(self) -> None:
        """Flush TensorBoard and end the progress line; safe to call twice."""
        if self._closed:
            return
        self._closed = True
        if self._writer is not None:
            self._writer.close()
        self._progress.finish()

    def __enter__(self) -> Logger:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def to_float(value: float | torch.Tensor, name: str) -> float:
    """A metric as a Python float: a real number or a one-element tensor (a GPU tensor syncs here)."""
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise ValueError(f"metric {name} is a tensor of shape {tuple(value.shape)}; log a scalar")
        return float(value.detach().item())
    if isinstance(value, numbers.Real):
        return float(value)
    raise TypeError(f"metric {name} is a {type(value).__name__}; log a float or a one-element tensor")


# -- CSV -------------------------------------------------------------------------------------
class _CsvTable:
    """One namespace's CSV: a ``frame`` column, then metric keys in first-seen order.

    A key not seen before widens the header; the file is rewritten once with empty cells for
    the earlier rows. Rows are appended with the file opened per call, so nothing stays buffered.
    """

    def __init__(self, path: Path, first_new_frame: int):
        self.path = path
        self.columns: list[str] = []
        if not path.exists():
            return
        if first_new_frame == 0:
            path.unlink()
            return
        columns, rows = _read_csv(path)
        self.columns = columns
        _write_csv(path, columns, [row for row in rows if int(float(row["frame"])) < first_new_frame])

    def append(self, frame: int, values: dict[str, float]) -> None:
        if "frame" in values:
            raise ValueError(f"'frame' is the frame column of {self.path.name}; rename that metric")
        row = {"frame": frame, **values}
        new_columns = [key for key in row if key not in self.columns]
        if new_columns:
            self._widen(new_columns)
        with open(self.path, "a", newline="") as file:
            csv.DictWriter(file, self.columns).writerow(row)

    def _widen(self, new_columns: list[str]) -> None:
        rows = _read_csv(self.path)[1] if self.path.exists() else []
        self.columns = self.columns + new_columns
        _write_csv(self.path, self.columns, rows)


def _read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with open(path, newline="") as file:
        reader = csv.DictReader(file)
        rows = list(reader)
        return list(reader.fieldnames or []), rows


def _write_csv(path: Path, columns: list[str], rows: list[dict[str, Any]]) -> None:
    """Replace ``path`` atomically, so a crash mid-rewrite cannot lose the earlier rows."""
    temporary = path.with_name(f".{path.name}.tmp")
    with open(temporary, "w", newline="") as file:
        writer = csv.DictWriter(file, columns, restval="")
        writer.writeheader()
        writer.writerows(rows)
    os.replace(temporary, path)


# -- console ---------------------------------------------------------------------------------
class _ProgressLine:
    """Rate-limited progress text with frames per second measured over a sliding window.

    The ETA divides the frames left by the windowed rate, once updates run (:meth:`set_updating`):
    frames without updates (seed frames) are no sample of the rate the rest of the run will have.
    """

    def __init__(self, total_frames: int, start_frame: int, interval_s: float, window_s: float, clock):
        self.total_frames = total_frames
        self.interval_s = interval_s
        self.window_s = window_s
        self.clock = clock
        now = clock()
        self.samples: deque[tuple[float, int]] = deque([(now, start_frame)])
        self.last_print_time: float | None = None
        self.pending_carriage_line = 0  # length of an unfinished `\r` line on a terminal
        # None: not told (a caller that logs no time/updates); False: no update yet.
        self.updating: bool | None = None
        self.last_seed_sample = (now, start_frame)  # (time, frame) last told without updates

    def set_updating(self, updating: bool, frame: int) -> None:
        """Whether the run updates its agent yet, as of ``frame``. At the first update the window
        restarts at the last frame told before it, so that the rate counts update-phase frames only."""
        if not updating:
            self.last_seed_sample = (self.clock(), frame)
        elif self.updating is False:
            self.samples = deque([self.last_seed_sample])
        self.updating = updating

    def update(self, frame: int, extras: dict[str, float], force: bool) -> str | None:
        now = self.clock()
        if not force and self.last_print_time is not None and now - self.last_print_time < self.interval_s:
            return None
        self.last_print_time = now
        fps = self._measure_fps(now, frame)
        fields = [self._frames_text(frame), f"{fps:,.0f} fps" if fps else "? fps", self._eta_text(frame, fps)]
        fields += [f"{key} {value:.4g}" for key, value in extras.items()]
        return " | ".join(fields)

    def _measure_fps(self, now: float, frame: int) -> float | None:
        self.samples.append((now, frame))
        # Keep the newest sample at or before the window's start as the reference point.
        while len(self.samples) > 2 and self.samples[1][0] <= now - self.window_s:
            self.samples.popleft()
        start_time, start_frame = self.samples[0]
        elapsed = now - start_time
        return (frame - start_frame) / elapsed if elapsed > 0 and frame > start_frame else None

    def _frames_text(self, frame: int) -> str:
        percent = 100.0 * frame / self.total_frames if self.total_frames > 0 else 0.0
        return f"{frame:,}/{self.total_frames:,} frames ({percent:.1f}%)"

    def _eta_text(self, frame: int, fps: float | None) -> str:
        if self.updating is False and frame < self.total_frames:
            return "ETA ? (no update yet)"
        if not fps:
            return "ETA ?"
        return f"ETA {format_duration(max(self.total_frames - frame, 0) / fps)}"

    def write(self, line: str) -> None:
        # Looked up per call so that pytest's capture (and any redirection) is honoured.
        stream = sys.stderr
        if stream.isatty():
            padding = " " * max(self.pending_carriage_line - len(line), 0)
            stream.write(f"\r{line}{padding}")
            self.pending_carriage_line = len(line)
        else:
            stream.write(line + "\n")
        stream.flush()

    def finish(self) -> None:
        if self.pending_carriage_line:
            sys.stderr.write("\n")
            sys.stderr.flush()
            self.pending_carriage_line = 0


def format_duration(seconds: float) -> str:
    """``42s``, ``38m54s`` or ``3h05m12s``."""
    seconds = round(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m{seconds:02d}s"
    if minutes:
        return f"{minutes}m{seconds:02d}s"
    return f"{seconds}s"


# -- run directory ---------------------------------------------------------------------------
def write_run_info(
    run_dir: Path | str, config: DictConfig | Mapping[str, Any], extra: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Write ``run_dir/config.yaml`` (resolved) and ``run_dir/run.json``; returns what run.json holds.

    run.json records the git revision of the checkout this file lives in (``"unknown"`` outside a
    git checkout) and whether its tracked files had uncommitted changes, the host, the Python and
    torch versions, the start time and the command line; ``extra`` adds keys beside those.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if not isinstance(config, DictConfig):
        config = OmegaConf.create(dict(config))
    (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(config, resolve=True))
    info = _run_facts()
    clashes = sorted(set(info) & set(extra or {}))
    if clashes:
        raise ValueError(f"extra run info would overwrite {clashes}")
    info.update(extra or {})
    (run_dir / "run.json").write_text(json.dumps(info, indent=2, default=str) + "\n")
    return info


def _run_facts() -> dict[str, Any]:
    revision, dirty = git_revision(Path(__file__).resolve().parent)
    return {
        "git_revision": revision,
        "git_dirty": dirty,
        "hostname": socket.gethostname(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "start_time": datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": shlex.join([sys.executable, *sys.argv]),
        "cwd": os.getcwd(),
    }


def git_revision(directory: Path) -> tuple[str, bool | None]:
    """``(HEAD commit, tracked files modified?)`` of the git checkout holding ``directory``.

    ``("unknown", None)`` if ``directory`` is not in a git checkout or git is not installed.
    Untracked files do not count as dirty: run outputs often sit inside the checkout.
    """

    def git(*arguments: str) -> str:
        command = ["git", "-C", str(directory), *arguments]
        return subprocess.run(command, capture_output=True, text=True, check=True, timeout=30).stdout

    try:
        revision = git("rev-parse", "HEAD").strip()
        dirty = bool(git("status", "--porcelain", "--untracked-files=no").strip())
    except (OSError, subprocess.CalledProcessError, subprocess.TimeoutExpired):
        return "unknown", None
    return revision, dirty
