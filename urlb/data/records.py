"""Run folders' records: evaluation logs (JSON lines), the completion marker, and the file
discipline every writer of a run folder follows.

* Every rewrite goes through a temp file beside its target and an atomic rename
  (:func:`write_atomically`): a crash leaves the old content or the new, never a mix, and at
  worst a temp file named ``.<name>.<random>.tmp``, which the next start of the run removes
  (:func:`remove_temporaries`).
* A write that fails for want of disk space says so with the path and the size it needed
  (:class:`DiskFullError`), not with the writer's own error from deep inside.
* Append-only logs may end in a torn line (a crash or a full disk mid-write): reading them back
  for a resume drops that last line and says so (:func:`read_records`); a corrupt line anywhere
  else is an error naming the file and the line.

Storage only, no policy: what a record holds is the loops' business (:mod:`urlb.loop`).
Imports only the standard library.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path

# The temp files of this package's writers (``.checkpoint.pt.1a2b3c4d.tmp``,
# ``.snapshot_2000.pt.1a2b3c4d.tmp``, ``.eval.jsonl.1a2b3c4d.tmp``, ``.complete.json.….tmp``)
# and the logger's CSV rewrites (``.train.csv.tmp``).
TEMPORARY = re.compile(r"\..+\.tmp")


class DiskFullError(OSError):
    """A write failed because its file system is full; the message names the path and the
    size the write needed."""


class RecordsError(ValueError):
    """A record file that cannot be read back; the message names the file and the line."""


# -- disk space -----------------------------------------------------------------------------------
def size_text(size: float) -> str:
    """``3.2 GB``, ``410 MB``, ``12 kB`` (decimal units, as ``df -H`` prints them)."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}" if size < 10 * scale else f"{size / scale:.0f} {unit}"
    return f"{int(size)} bytes"


def is_disk_full(error: BaseException) -> bool:
    """Whether ``error`` or an error it was raised from is ENOSPC (torch.save wraps the writer's
    ``OSError`` in a ``RuntimeError`` from its C++ stream writer)."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if "No space left on device" in str(error):
            return True
        error = error.__cause__ or error.__context__
    return False


def disk_full_error(path: Path, needed: int, error: BaseException) -> DiskFullError:
    """The one-line error for a write of about ``needed`` bytes to ``path`` that hit a full disk."""
    try:
        free = f"; {size_text(shutil.disk_usage(path.parent).free)} free there"
    except OSError:
        free = ""
    error = DiskFullError(
        f"no space left on device: {path} needs about {size_text(needed)}{free}; free some space "
        "(or point run_dir / snapshot_root at a larger disk) and resume"
    )
    error.errno = errno.ENOSPC
    return error


# -- atomic writes --------------------------------------------------------------------------------
def temporary_path(path: Path) -> Path:
    """A fresh temp file name beside ``path`` (same directory, so the rename is atomic)."""
    return path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")


def replace_atomically(path: Path, write: Callable, needed: int, binary: bool = True) -> Path:
    """Write ``path`` through ``write(file)`` on a temp file, fsync it and rename it over
    ``path``; a failure removes the temp file and leaves ``path`` as it was. A full disk is a
    :class:`DiskFullError` naming ``path`` and ``needed`` (the bytes the write needs)."""
    path = Path(path)
    temporary = temporary_path(path)
    try:
        with open(temporary, "xb" if binary else "x") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException as error:
        temporary.unlink(missing_ok=True)
        if is_disk_full(error):
            raise disk_full_error(path, needed, error) from error
        raise
    fsync_directory(path.parent)
    return path


def write_atomically(path: Path, text: str) -> Path:
    """Replace ``path`` with ``text`` through a temp file and a rename: a crash leaves the old
    content or the new, never a half-written file."""
    return replace_atomically(Path(path), lambda file: file.write(text), len(text.encode()), binary=False)


def fsync_directory(directory: Path) -> None:
    """Make a rename in ``directory`` durable; directories cannot be opened this way on Windows."""
    if os.name != "posix":
        return
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def remove_temporaries(directory: Path, recursive: bool = True) -> list[tuple[Path, int]]:
    """Remove the temp files (and temp folders) that writers killed mid-write left in
    ``directory``; returns each with its size. Only call it while holding the folder's lock:
    a live writer's temp file looks the same."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = directory.rglob(".*.tmp") if recursive else directory.glob(".*.tmp")
    removed = []
    for path in sorted(found):
        if not TEMPORARY.fullmatch(path.name):
            continue
        if path.is_dir():
            size = sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
            shutil.rmtree(path)
        else:
            size = path.stat().st_size
            path.unlink()
        removed.append((path, size))
    return removed


# -- evaluation records ---------------------------------------------------------------------------
def append_record(path: Path, record: dict) -> None:
    """Append one JSON line (an evaluation record) and flush it to disk."""
    path.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps(record, sort_keys=True) + "\n"
    try:
        with open(path, "a") as f:
            f.write(line)
            f.flush()
    except OSError as error:
        if is_disk_full(error):
            raise disk_full_error(path, len(line), error) from error
        raise


def read_records(path: Path, key: str | None = None) -> tuple[list[tuple[str, dict]], bool]:
    """The records of an append-only JSON-lines file as ``(line, record)`` pairs, and whether
    its last line was torn (cut off mid-write: not JSON) and left out.

    A line that is not a JSON object anywhere but at the end, or that lacks ``key``, raises
    :class:`RecordsError` naming the file and the line."""
    text = path.read_text()
    lines = text.splitlines()
    records, torn = [], False
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            if number == len(lines):
                torn = True
                break
            raise RecordsError(
                f"{path}:{number}: not a JSON record ({error.msg}); fix or remove that line, then resume"
            ) from error
        if not isinstance(record, dict) or (key is not None and key not in record):
            what = "not a JSON object" if not isinstance(record, dict) else f"no {key!r}"
            raise RecordsError(f"{path}:{number}: {what}; fix or remove that line, then resume")
        records.append((line, record))
    return records, torn


def keep_records_until(path: Path, key: str, limit: int) -> None:
    """Drop the records of ``path`` whose ``key`` (``frames`` or ``updates``) exceeds ``limit``:
    what a killed run wrote after its last checkpoint, which the resumed run writes again. A
    torn last line is dropped too, and said so; the file is rewritten atomically."""
    if not path.exists():
        return
    records, torn = read_records(path, key)
    if torn:
        print(f"[resume] {path}: dropped a torn last line (the run was cut off while writing it)")
    kept = [line for line, record in records if record[key] <= limit]
    text = "".join(line + "\n" for line in kept)
    if text != path.read_text():
        write_atomically(path, text)


# -- the completion marker -------------------------------------------------------------------------
COMPLETE = "complete.json"


def mark_complete(run_dir: Path | str, record: dict) -> Path:
    """Write ``run_dir/complete.json`` atomically: the run's record (agent, domain, seed, phase,
    snapshot, pretrain and finetune frames) and the frames it reached. Written last, so its
    presence means every output of the run is on disk."""
    path = Path(run_dir) / COMPLETE
    return write_atomically(path, json.dumps(record, sort_keys=True, indent=1) + "\n")


def read_complete(run_dir: Path | str) -> dict | None:
    """The marker's record, or None if the run has not completed (or the marker is unreadable)."""
    path = Path(run_dir) / COMPLETE
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
