"""Run folders' records: evaluation logs (JSON lines) and the completion marker.

Storage only, no policy: what a record holds is the loops' business (:mod:`urlb.loop`).
Imports only the standard library.
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path


def append_record(path: Path, record: dict) -> None:
    """Append one JSON line (an evaluation record) and flush it to disk."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        f.write(json.dumps(record, sort_keys=True) + "\n")
        f.flush()


def write_atomically(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` through a temp file and a rename: a crash leaves the old
    content or the new, never a half-written file."""
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    with open(temporary, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(temporary, path)


def keep_records_until(path: Path, key: str, limit: int) -> None:
    """Drop the records of ``path`` whose ``key`` (``frames`` or ``updates``) exceeds ``limit``:
    what a killed run wrote after its last checkpoint, which the resumed run writes again."""
    if not path.exists():
        return
    kept = [line for line in path.read_text().splitlines() if json.loads(line)[key] <= limit]
    write_atomically(path, "".join(line + "\n" for line in kept))


# -- the completion marker -----------------------------------------------------------------------
COMPLETE = "complete.json"


def mark_complete(run_dir: Path | str, record: dict) -> Path:
    """Write ``run_dir/complete.json`` atomically: the run's record (agent, domain, seed, phase,
    snapshot, pretrain and finetune frames) and the frames it reached. Written last, so its
    presence means every output of the run is on disk."""
    path = Path(run_dir) / COMPLETE
    write_atomically(path, json.dumps(record, sort_keys=True, indent=1) + "\n")
    return path


def clear_complete(run_dir: Path | str) -> None:
    """Remove the marker when a run (re)starts in ``run_dir``: until it ends, it is not complete."""
    (Path(run_dir) / COMPLETE).unlink(missing_ok=True)


def read_complete(run_dir: Path | str) -> dict | None:
    """The marker's record, or None if the run has not completed (or the marker is unreadable)."""
    path = Path(run_dir) / COMPLETE
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
