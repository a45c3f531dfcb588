"""A run folder: one run in it at a time, and what a start does with what it finds there.

:func:`open_run` is entered before anything of the run is built or written::

    with open_run(plan, "pretrain", also_lock=[snapshot_dir]) as start:
        if start is None:           # a complete run and resume=true: nothing to do
            return
        ... build, write_plan(plan) if start.state is None, execute(plan, start, ...)

1. It makes the folder and takes an exclusive lock on ``run_dir/.lock`` (``fcntl.flock``, not
   blocking), held until the ``with`` ends (the kernel releases it when the process dies). A
   second run in the folder is refused naming the holder (pid, host, start time). The lock file
   stays; a clean release empties it, so one still naming a process means that process died
   holding it: the stale lock is reported and taken over.
2. It decides from what the folder holds, before touching any of it:

   ======================================  =================  ==================================
   the folder holds                        ``resume=false``   ``resume=true``
   ======================================  =================  ==================================
   ``complete.json`` (a finished run)      refused            nothing to do (never restarted)
   ``checkpoint.pt``                       refused            resumed, if the plan is the same
   records (``*.jsonl``), no checkpoint    refused            refused (nothing to resume from)
   nothing of a run's results              fresh start        fresh start
   ======================================  =================  ==================================

   Each refusal names the folder and the choices. A resume whose plan differs from the one the
   run started with (``config.yaml``) in anything but :data:`urlb.run.plan.RESUME_MAY_CHANGE`
   is refused naming the keys; a record file with a corrupt line (other than a torn last line,
   which the resume drops) is refused naming the file and the line.
3. It removes the temp files that writers killed mid-write left (``.checkpoint.pt.*.tmp``,
   ``.eval.jsonl.*.tmp``, ``.snapshot_*.tmp``, ...), in the run folder and in each folder of
   ``also_lock``, whose locks it holds too (a pretraining's snapshot folder: two runs of one
   configuration never write its snapshots at once).

Imports: urlb.data, urlb.run.plan.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from omegaconf import DictConfig

from urlb.data.checkpoint import checkpoint_path, load_snapshot
from urlb.data.records import COMPLETE, read_complete, read_records, remove_temporaries, size_text
from urlb.run.plan import RESUME_MAY_CHANGE, plan_changes

LOCK = ".lock"


class RunFolderError(RuntimeError):
    """A run folder that this run may not start in as asked; the message names the choices."""


class FolderBusyError(RunFolderError):
    """Another live process holds the folder's lock."""


@dataclass
class Start:
    """How a run starts in its folder: from ``state`` (a checkpoint's payload) or fresh (None)."""

    run_dir: Path
    state: dict | None

    @property
    def fresh(self) -> bool:
        return self.state is None


# -- the lock -------------------------------------------------------------------------------------
class FolderLock:
    """An exclusive ``flock`` on ``directory/.lock``, naming its holder inside (pid, host, time,
    what it runs). Use as a context manager; :meth:`acquire` refuses a held lock at once."""

    def __init__(self, directory: Path | str, what: str, label: str = "run"):
        self.directory, self.what, self.label = Path(directory), what, label
        self.path = self.directory / LOCK
        self.descriptor: int | None = None

    def acquire(self) -> FolderLock:
        self.directory.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(descriptor)
            os.close(descriptor)
            raise FolderBusyError(
                f"{self.directory} is in use by another run ({_describe(holder)}; lock {self.path}); "
                f"wait for it to end, or choose another {self.what}"
            ) from None
        previous = _read_holder(descriptor)
        if previous:
            print(
                f"[{self.label}] {self.directory}: a stale lock of a run that died ({_describe(previous)}); "
                "taking it over"
            )
        owner = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": datetime.now().astimezone().isoformat(timespec="seconds"),
            "command": " ".join(sys.argv),
        }
        os.ftruncate(descriptor, 0)
        os.pwrite(descriptor, (json.dumps(owner) + "\n").encode(), 0)
        os.fsync(descriptor)
        self.descriptor = descriptor
        return self

    def release(self) -> None:
        """Empty the lock file (a clean release) and unlock it."""
        if self.descriptor is None:
            return
        try:
            os.ftruncate(self.descriptor, 0)
        finally:
            fcntl.flock(self.descriptor, fcntl.LOCK_UN)
            os.close(self.descriptor)
            self.descriptor = None

    def __enter__(self) -> FolderLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _read_holder(descriptor: int) -> dict | None:
    text = os.pread(descriptor, 4096, 0).decode(errors="replace").strip()
    if not text:
        return None
    try:
        holder = json.loads(text)
    except json.JSONDecodeError:
        return {"unreadable": text[:80]}
    return holder if isinstance(holder, dict) else {"unreadable": text[:80]}


def _describe(holder: dict | None) -> str:
    if not holder:
        return "holder unknown"
    if "unreadable" in holder:
        return f"holder {holder['unreadable']!r}"
    text = f"pid {holder.get('pid')} on {holder.get('host')} since {holder.get('started')}"
    if holder.get("host") == socket.gethostname() and not _alive(holder.get("pid")):
        text += ", which has exited"
    return text


def _alive(pid) -> bool:
    if not isinstance(pid, int):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def lock_holder(directory: Path | str) -> dict | None:
    """Who holds ``directory``'s lock now (its record), or None if nobody does (a probe: the
    lock is taken and released at once)."""
    path = Path(directory) / LOCK
    if not path.is_file():
        return None
    descriptor = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return _read_holder(descriptor) or {}
    finally:
        os.close(descriptor)
    return None


# -- the start ------------------------------------------------------------------------------------
@contextmanager
def open_run(plan: DictConfig, label: str, also_lock: Sequence[Path | str] = ()) -> Iterator[Start | None]:
    """Lock ``plan.run_dir`` (and each of ``also_lock``), decide how the run starts there
    (module docstring), remove stray temp files, and yield the :class:`Start`, or None for a
    complete run resumed (nothing to do). The locks are released when the ``with`` ends."""
    run_dir = Path(plan.run_dir)
    with ExitStack() as locks:
        locks.enter_context(FolderLock(run_dir, "run_dir", label))
        start = decide(plan, run_dir, label)
        if start is not None:
            for directory in also_lock:
                what = "configuration or seed (or snapshot_root)"
                locks.enter_context(FolderLock(directory, what, label))
            _clean(run_dir, True, label)
            for directory in also_lock:
                _clean(Path(directory), False, label)
        yield start


def decide(plan: DictConfig, run_dir: Path, label: str) -> Start | None:
    """The start ``plan`` makes in ``run_dir`` (module docstring); reads, never writes."""
    elsewhere = "start over in another run_dir (or delete that folder)"
    if (run_dir / COMPLETE).exists():
        record = read_complete(run_dir) or {}
        reached = ", ".join(f"{key} {record[key]}" for key in ("frames", "updates") if key in record)
        if plan.resume:
            reached = f": {reached}" if reached else ""
            print(f"[{label}] {run_dir} holds a complete run ({COMPLETE}{reached}); nothing to resume")
            return None
        raise RunFolderError(
            f"{run_dir} holds a complete run ({COMPLETE}); a finished run is never redone: {elsewhere}"
        )
    checkpoint = checkpoint_path(run_dir)
    records = [path for path in sorted(run_dir.rglob("*.jsonl")) if path.stat().st_size > 0]
    if checkpoint.is_file():
        if not plan.resume:
            raise RunFolderError(
                f"{run_dir} holds a run that was cut off ({checkpoint.name}); continue it with resume=true, "
                f"or {elsewhere}"
            )
        changes = plan_changes(plan, run_dir)
        if changes:
            listed = ", ".join(f"{key} {then!r} -> {now!r}" for key, (then, now) in changes.items())
            raise RunFolderError(
                f"resume=true with a plan that differs from the one {run_dir} started with "
                f"(config.yaml): {listed}; a resumed run keeps its plan (only "
                f"{', '.join(RESUME_MAY_CHANGE[1:])} may change): drop those changes, or {elsewhere}"
            )
        for path in records:
            read_records(path)  # a corrupt line refuses the resume here, before anything is written
        state = load_snapshot(checkpoint)
        print(f"[{label}] resuming {run_dir} from {checkpoint.name} at {state.get('clock')}")
        return Start(run_dir, state)
    if records:
        names = ", ".join(str(path.relative_to(run_dir)) for path in records)
        raise RunFolderError(
            f"{run_dir} holds records ({names}) but no {checkpoint.name} to continue from: the run was cut "
            f"off before its first checkpoint, so resume cannot continue it; delete that folder to start "
            f"over (rm -r {run_dir}), or choose another run_dir"
        )
    return Start(run_dir, None)


def _clean(directory: Path, recursive: bool, label: str) -> None:
    removed = remove_temporaries(directory, recursive)
    if removed:
        total = size_text(sum(size for _, size in removed))
        names = ", ".join(path.name for path, _ in removed[:4]) + (" ..." if len(removed) > 4 else "")
        told = f"{len(removed)} temp file(s) that killed writers left in {directory} ({total})"
        print(f"[{label}] removed {told}: {names}")
