"""Snapshots and resume checkpoints: state_dicts plus config and counters, never pickled objects.

A payload is a nest of dicts, lists and tuples whose leaves are tensors or plain Python values
(``{"agent": agent.state_dict(), "config": dict, "frame": 100_000}``). It is written atomically
(temp file, fsync, ``os.replace``, fsync of the directory) so a crash leaves either the old file
or the new one, and read back with ``torch.load(weights_only=True)``, which refuses anything that
would need code to run while unpickling.

Two layouts:

* pretraining snapshots, shared between runs: ``root/<agent>/<domain>/seed_<seed>/snapshot_<frames>.pt``
  (:func:`snapshot_path`, found by :func:`find_snapshot`, which never substitutes another seed or
  frame count: the original URLB silently loaded a random other seed's snapshot);
* the resume checkpoint of one run: ``run_dir/checkpoint.pt`` (:func:`checkpoint_path`).
"""

from __future__ import annotations

import os
import pickle
import re
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any, BinaryIO

import torch

__all__ = [
    "SnapshotError",
    "SnapshotNotFoundError",
    "available_snapshot_frames",
    "checkpoint_path",
    "find_snapshot",
    "latest_checkpoint",
    "load_snapshot",
    "parse_frames",
    "save_snapshot",
    "snapshot_path",
]

# Leaves that torch.load(weights_only=True) accepts (checked against torch 2.13); anything else is
# refused at save time, so a run cannot train for hours and then write a checkpoint it cannot read.
_PLAIN_LEAVES = (bool, int, float, complex, str, bytes, type(None))
_PLAIN_LEAVES += (torch.Tensor, torch.Size, torch.dtype, torch.device)
_FRAMES_PATTERN = re.compile(r"(\d+(?:\.\d+)?)([kKmM]?)")
_FRAMES_SUFFIX = {"": 1, "k": 1_000, "m": 1_000_000}
_SNAPSHOT_NAME = re.compile(r"snapshot_(\d+)\.pt")


class SnapshotNotFoundError(FileNotFoundError):
    """No snapshot where one was asked for; the message says where it looked."""


class SnapshotError(ValueError):
    """A snapshot file exists but is corrupt, truncated or holds objects that are refused."""


# -- writing and reading -----------------------------------------------------------------------
def save_snapshot(path: Path | str, payload: dict[str, Any]) -> Path:
    """Write ``payload`` to ``path`` atomically and return the path.

    Raises ``TypeError`` (naming the offending key) before writing anything if a leaf is not a
    tensor or plain Python value, e.g. a numpy scalar or an optimizer object.
    """
    path = Path(path)
    _check_plain(payload, "payload")
    path.parent.mkdir(parents=True, exist_ok=True)
    # Same directory, so os.replace is a rename within one filesystem (atomic on POSIX).
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(temporary, "xb") as file:
            torch.save(payload, file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    _fsync_directory(path.parent)
    return path


def load_snapshot(path: Path | str) -> dict[str, Any]:
    """Read a payload written by :func:`save_snapshot`; tensors land on the CPU.

    Raises :class:`SnapshotNotFoundError` if there is no file at ``path`` and
    :class:`SnapshotError` if the file is corrupt, truncated or needs code to unpickle.
    """
    path = Path(path)
    if not path.is_file():
        raise SnapshotNotFoundError(f"no snapshot file at {path.absolute()}")
    # Opened here so that an unreadable file (permissions) raises as itself, while any OSError
    # inside torch.load comes from a malformed archive (a truncated zip seeks past its end).
    with open(path, "rb") as file:
        payload = _load_plain(file, path)
    if not isinstance(payload, dict):
        raise SnapshotError(f"snapshot {path} holds a {type(payload).__name__}, not a dict payload")
    return payload


def _load_plain(file: BinaryIO, path: Path) -> Any:
    try:
        return torch.load(file, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise SnapshotError(
            f"snapshot {path} was refused: it is corrupt or holds objects other than tensors and plain "
            f"containers, which a weights_only=True load does not unpickle ({_unpickling_detail(error)})"
        ) from error
    except (RuntimeError, EOFError, ValueError, OSError) as error:
        # torch's first sentence says what failed; the rest is generic advice.
        reason = str(error).split(". ")[0].splitlines()[0] if str(error) else type(error).__name__
        raise SnapshotError(f"snapshot {path} is corrupt or truncated ({reason})") from error


def _check_plain(value: Any, where: str) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str | int):
                raise TypeError(f"{where} has a key of type {type(key).__name__}; use str or int keys")
            _check_plain(item, f"{where}[{key!r}]")
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            _check_plain(item, f"{where}[{index}]")
    elif not isinstance(value, _PLAIN_LEAVES):
        raise TypeError(
            f"{where} is a {type(value).__module__}.{type(value).__qualname__}; a snapshot holds only "
            "tensors, plain Python values and dicts/lists of them (use state_dict(), int(), float())"
        )


def _unpickling_detail(error: pickle.UnpicklingError) -> str:
    """The line of torch's long weights_only message that names what was refused."""
    lines = [line.strip() for line in str(error).splitlines()]
    details = [line for line in lines if "unsupported" in line.lower() and "error:" not in line.lower()]
    return details[0] if details else lines[0]


def _fsync_directory(directory: Path) -> None:
    # Makes the rename itself durable; directories cannot be opened this way on Windows.
    if os.name != "posix":
        return
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


# -- pretraining snapshots ---------------------------------------------------------------------
def snapshot_path(root: Path | str, agent: str, domain: str, seed: int, frames: int) -> Path:
    """``root/<agent>/<domain>/seed_<seed>/snapshot_<frames>.pt``."""
    if frames < 0:
        raise ValueError(f"frames must be >= 0, got {frames}")
    return _seed_directory(root, agent, domain, seed) / f"snapshot_{int(frames)}.pt"


def parse_frames(text: str | int) -> int:
    """A frame count from ``100000``, ``"100000"``, ``"100k"``, ``"1M"`` or ``"1.5M"``."""
    if isinstance(text, int) and not isinstance(text, bool):
        return text
    match = _FRAMES_PATTERN.fullmatch(str(text).strip())
    if match is None:
        raise ValueError(f"{text!r} is not a frame count (expected e.g. 100000, 100k, 1M)")
    frames = Decimal(match.group(1)) * _FRAMES_SUFFIX[match.group(2).lower()]
    if frames != frames.to_integral_value():
        raise ValueError(f"{text!r} is not a whole number of frames")
    return int(frames)


def find_snapshot(spec: str | int | Path, root: Path | str, agent: str, domain: str, seed: int) -> Path:
    """The snapshot ``spec`` names: a path to a file, or a frame count (``100000``, ``"100k"``, ``"1M"``).

    A frame count is looked up at :func:`snapshot_path` for exactly this agent, domain and seed.
    If that file is missing this raises :class:`SnapshotNotFoundError` listing the frame counts
    that do exist for this seed; it never falls back to another seed or frame count.
    A ``str`` that is not a frame count is taken as a path.
    """
    if isinstance(spec, Path) or (isinstance(spec, str) and _FRAMES_PATTERN.fullmatch(spec.strip()) is None):
        path = Path(spec)
        if not path.is_file():
            raise SnapshotNotFoundError(f"no snapshot file at {path.absolute()} (given as a path)")
        return path
    frames = parse_frames(spec)
    path = snapshot_path(root, agent, domain, seed, frames)
    if not path.is_file():
        available = available_snapshot_frames(root, agent, domain, seed)
        listing = ", ".join(str(count) for count in available) if available else "none"
        raise SnapshotNotFoundError(
            f"no {agent} snapshot for domain {domain}, seed {seed} at {frames} frames: looked for {path}; "
            f"frame counts available for this seed: {listing}"
        )
    return path


def available_snapshot_frames(root: Path | str, agent: str, domain: str, seed: int) -> list[int]:
    """Sorted frame counts of the snapshots saved for this agent, domain and seed."""
    directory = _seed_directory(root, agent, domain, seed)
    if not directory.is_dir():
        return []
    matches = (_SNAPSHOT_NAME.fullmatch(path.name) for path in directory.iterdir())
    return sorted(int(match.group(1)) for match in matches if match is not None)


def _seed_directory(root: Path | str, agent: str, domain: str, seed: int) -> Path:
    return Path(root) / agent / domain / f"seed_{int(seed)}"


# -- resume checkpoints ------------------------------------------------------------------------
def checkpoint_path(run_dir: Path | str) -> Path:
    """``run_dir/checkpoint.pt``: the one resume checkpoint of a run, overwritten atomically."""
    return Path(run_dir) / "checkpoint.pt"


def latest_checkpoint(run_dir: Path | str) -> Path | None:
    """The run's resume checkpoint if one has been written, else ``None`` (a fresh run)."""
    path = checkpoint_path(run_dir)
    return path if path.is_file() else None
