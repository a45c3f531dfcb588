"""Snapshots and resume checkpoints: state_dicts plus config and counters, never pickled objects.

A payload is a nest of dicts, lists and tuples whose leaves are tensors or plain Python values
(``{"agent": agent.state_dict(), "config": dict, "frame": 100_000}``). It is written atomically
(temp file, fsync, ``os.replace``, fsync of the directory: :func:`urlb.data.records.replace_atomically`)
so a crash leaves either the old file or the new one, and read back with
``torch.load(weights_only=True)``, which refuses anything that would need code to run while
unpickling. A full disk is a :class:`urlb.data.records.DiskFullError` naming the file and the
size it needed.

Two layouts:

* pretraining snapshots, shared between runs and kept apart by the configuration that made
  them: ``root/<agent>/<domain>/seed_<seed>/<config>/snapshot_<frames>.pt``, where ``<config>``
  is a short hash of the values that define a snapshot (``urlb.run.plan.snapshot_config``) and
  the folder's ``config.json`` holds those values (:func:`snapshot_path`, found by
  :func:`find_snapshot`, which never substitutes another seed or frame count, and asks which
  when several configurations have the frame count asked for: the original URLB silently
  loaded a random other seed's snapshot, and one folder per seed let a second configuration
  overwrite the first's snapshots). Files of the old layout,
  ``root/<agent>/<domain>/seed_<seed>/snapshot_<frames>.pt``, are still found;
* the resume checkpoint of one run: ``run_dir/checkpoint.pt`` (:func:`checkpoint_path`).

Imports torch and urlb.data.records.
"""

from __future__ import annotations

import json
import pickle
import re
from decimal import Decimal
from pathlib import Path
from typing import Any, BinaryIO

import torch

from urlb.data.records import replace_atomically, write_atomically

__all__ = [
    "SnapshotAmbiguousError",
    "SnapshotError",
    "SnapshotNotFoundError",
    "available_snapshot_frames",
    "checkpoint_path",
    "find_snapshot",
    "latest_checkpoint",
    "load_snapshot",
    "parse_frames",
    "payload_bytes",
    "save_snapshot",
    "snapshot_candidates",
    "snapshot_directory",
    "snapshot_path",
    "write_snapshot_config",
]

# Leaves that torch.load(weights_only=True) accepts (checked against torch 2.13); anything else is
# refused at save time, so a run cannot train for hours and then write a checkpoint it cannot read.
_PLAIN_LEAVES = (bool, int, float, complex, str, bytes, type(None))
_PLAIN_LEAVES += (torch.Tensor, torch.Size, torch.dtype, torch.device)
_FRAMES_PATTERN = re.compile(r"(\d+(?:\.\d+)?)([kKmM]?)")
_FRAMES_SUFFIX = {"": 1, "k": 1_000, "m": 1_000_000}
_SNAPSHOT_NAME = re.compile(r"snapshot_(\d+)\.pt")
_CONFIG_NAME = re.compile(r"[0-9a-f]{8,}")
SNAPSHOT_CONFIG = "config.json"  # beside a configuration's snapshots: the values that define them


class SnapshotNotFoundError(FileNotFoundError):
    """No snapshot where one was asked for; the message says where it looked."""


class SnapshotAmbiguousError(ValueError):
    """Snapshots of several configurations match what was asked for; the message names them."""


class SnapshotError(ValueError):
    """A snapshot file exists but is corrupt, truncated or holds objects that are refused."""


# -- writing and reading -----------------------------------------------------------------------
def save_snapshot(path: Path | str, payload: dict[str, Any]) -> Path:
    """Write ``payload`` to ``path`` atomically and return the path.

    Raises ``TypeError`` (naming the offending key) before writing anything if a leaf is not a
    tensor or plain Python value, e.g. a numpy scalar or an optimizer object, and
    :class:`urlb.data.records.DiskFullError` if the disk fills up (``path`` is then untouched).
    """
    path = Path(path)
    _check_plain(payload, "payload")
    path.parent.mkdir(parents=True, exist_ok=True)
    return replace_atomically(path, lambda file: torch.save(payload, file), payload_bytes(payload))


def payload_bytes(payload: Any) -> int:
    """About the bytes ``torch.save`` writes for ``payload``: its tensors' data, plus a little
    for each other value."""
    if isinstance(payload, torch.Tensor):
        return payload.numel() * payload.element_size()
    if isinstance(payload, dict):
        return sum(payload_bytes(value) + 16 for value in payload.values())
    if isinstance(payload, list | tuple):
        return sum(payload_bytes(value) + 8 for value in payload)
    return 16


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


# -- pretraining snapshots ---------------------------------------------------------------------
def snapshot_directory(root: Path | str, agent: str, domain: str, seed: int, config: str) -> Path:
    """``root/<agent>/<domain>/seed_<seed>/<config>``: one configuration's snapshots."""
    if not _CONFIG_NAME.fullmatch(config):
        raise ValueError(f"config={config!r} is not a configuration hash (hex digits)")
    return _seed_directory(root, agent, domain, seed) / config


def snapshot_path(root: Path | str, agent: str, domain: str, seed: int, frames: int, config: str) -> Path:
    """``root/<agent>/<domain>/seed_<seed>/<config>/snapshot_<frames>.pt``."""
    if frames < 0:
        raise ValueError(f"frames must be >= 0, got {frames}")
    return snapshot_directory(root, agent, domain, seed, config) / f"snapshot_{int(frames)}.pt"


def write_snapshot_config(directory: Path, values: dict) -> Path:
    """Write ``directory/config.json``: the values that define the snapshots of this folder
    (what :func:`find_snapshot` compares when several configurations match)."""
    directory.mkdir(parents=True, exist_ok=True)
    return write_atomically(directory / SNAPSHOT_CONFIG, json.dumps(values, indent=1, sort_keys=True) + "\n")


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


def is_frame_count(spec) -> bool:
    """Whether a ``snapshot=`` value names a frame count (``2M``, ``100000``) rather than a path."""
    if isinstance(spec, int) and not isinstance(spec, bool):
        return True
    return isinstance(spec, str) and _FRAMES_PATTERN.fullmatch(spec.strip()) is not None


def find_snapshot(spec: str | int | Path, root: Path | str, agent: str, domain: str, seed: int) -> Path:
    """The snapshot ``spec`` names: a path to a file, or a frame count (``100000``, ``"100k"``, ``"1M"``).

    A frame count is looked up among the configurations saved for exactly this agent, domain
    and seed (:func:`snapshot_candidates`). One match is the answer. None raises
    :class:`SnapshotNotFoundError` listing the frame counts that do exist for this seed; several
    raise :class:`SnapshotAmbiguousError` naming each candidate with the values its
    configuration differs in, to be passed as a path. It never falls back to another seed or
    frame count. A ``str`` that is not a frame count is taken as a path.
    """
    if not is_frame_count(spec):
        path = Path(spec)
        if not path.is_file():
            raise SnapshotNotFoundError(f"no snapshot file at {path.absolute()} (given as a path)")
        return path
    frames = parse_frames(spec)
    candidates = snapshot_candidates(root, agent, domain, seed, frames)
    if len(candidates) == 1:
        return candidates[0]
    where = f"{agent} on {domain}, seed {seed}"
    if not candidates:
        available = available_snapshot_frames(root, agent, domain, seed)
        listing = ", ".join(str(count) for count in available) if available else "none"
        looked = _seed_directory(root, agent, domain, seed) / "<config>" / f"snapshot_{frames}.pt"
        raise SnapshotNotFoundError(
            f"no {agent} snapshot for domain {domain}, seed {seed} at {frames} frames: looked for {looked}; "
            f"frame counts available for this seed: {listing}"
        )
    described = "; ".join(f"{path} ({difference})" for path, difference in _differences(candidates))
    raise SnapshotAmbiguousError(
        f"snapshot={spec} matches {len(candidates)} configurations of {where}: {described}; "
        "say which with snapshot=<path>"
    )


def snapshot_candidates(root: Path | str, agent: str, domain: str, seed: int, frames: int) -> list[Path]:
    """Every saved ``snapshot_<frames>.pt`` of this agent, domain and seed: one per
    configuration folder, and one of the old layout (directly in the seed's folder)."""
    directory = _seed_directory(root, agent, domain, seed)
    if not directory.is_dir():
        return []
    name = f"snapshot_{int(frames)}.pt"
    found = [path / name for path in sorted(directory.iterdir()) if _CONFIG_NAME.fullmatch(path.name)]
    return [path for path in [*found, directory / name] if path.is_file()]


def available_snapshot_frames(root: Path | str, agent: str, domain: str, seed: int) -> list[int]:
    """Sorted frame counts of the snapshots saved for this agent, domain and seed (any configuration)."""
    directory = _seed_directory(root, agent, domain, seed)
    if not directory.is_dir():
        return []
    files = [*directory.glob("snapshot_*.pt"), *directory.glob("*/snapshot_*.pt")]
    matches = (_SNAPSHOT_NAME.fullmatch(path.name) for path in files)
    return sorted({int(match.group(1)) for match in matches if match is not None})


def _differences(candidates: list[Path]) -> list[tuple[Path, str]]:
    """Each candidate with the defining values its configuration differs in from the others'."""
    values = [_flat(_read_config(path.parent)) for path in candidates]
    keys = sorted({key for flat in values if flat is not None for key in flat})
    differing = [
        key
        for key in keys
        if len({json.dumps(flat.get(key)) if flat is not None else None for flat in values}) > 1
    ]
    described = []
    for path, flat in zip(candidates, values, strict=True):
        if flat is None:
            text = "an old-layout file: no configuration recorded"
        else:
            shown = [f"{key}={json.dumps(flat.get(key))}" for key in differing[:6]]
            text = ", ".join(shown) + (f", and {len(differing) - 6} more" if len(differing) > 6 else "")
        described.append((path, text or "the same values"))
    return described


def _read_config(directory: Path) -> dict | None:
    path = directory / SNAPSHOT_CONFIG
    if not _CONFIG_NAME.fullmatch(directory.name) or not path.is_file():
        return None
    try:
        values = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return values if isinstance(values, dict) else None


def _flat(values: dict | None, prefix: str = "") -> dict | None:
    if values is None:
        return None
    flat = {}
    for key, value in values.items():
        if isinstance(value, dict):
            flat |= _flat(value, f"{prefix}{key}.")
        else:
            flat[f"{prefix}{key}"] = value
    return flat


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
