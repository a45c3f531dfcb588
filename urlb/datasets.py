"""Reward-free datasets on disk: one ``.npy`` per field plus a checked ``manifest.json``.

A dataset directory::

    walker_proto_1M_seed0/
        manifest.json        meta, and per field: file, shape, dtype, bytes, sha256
        observation.npy      (M, obs_dim) float32
        action.npy           ...

Files are plain numpy arrays written and read with ``allow_pickle=False``: reading never
unpickles. :func:`read_dataset` checks every file against the manifest (present, size,
sha256, shape, dtype) and the manifest against its own checksum, and raises
:class:`DatasetError` naming the file at fault.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch

FORMAT = "urlb-dataset"
VERSION = 1
MANIFEST = "manifest.json"
# Field names become file names: keep them to one plain path component.
_FIELD_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")


class DatasetError(ValueError):
    """A dataset on disk is missing, incomplete or altered; the message names the file."""


# -- writing ------------------------------------------------------------------------------
def write_dataset(path: str | Path, arrays: dict[str, torch.Tensor | np.ndarray], meta: dict) -> Path:
    """Write ``arrays`` as a dataset directory at ``path`` and return that path.

    Args:
        path: the directory to create; it must not exist yet.
        arrays: field name -> ``(M, ...)`` tensor or array, all with the same ``M``.
        meta: JSON-serialisable facts about the data (domain, collecting agent, frames, seed...).

    The directory is assembled beside ``path`` and renamed into place, so a reader never
    sees a partial dataset.
    """
    path = Path(path)
    if path.exists():
        raise FileExistsError(f"{path}: already exists; datasets are never overwritten")
    numpy_arrays = {name: _to_numpy(name, value) for name, value in arrays.items()}
    _check_lengths(numpy_arrays)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        fields = {name: _write_field(staging, name, array) for name, array in numpy_arrays.items()}
        manifest = {"format": FORMAT, "version": VERSION, "meta": meta, "fields": fields}
        manifest["checksum"] = _manifest_checksum(manifest)
        _write_durably(staging / MANIFEST, json.dumps(manifest, indent=2, sort_keys=True).encode())
        os.rename(staging, path)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return path


def _to_numpy(name: str, value: torch.Tensor | np.ndarray) -> np.ndarray:
    if not _FIELD_NAME.fullmatch(name):
        raise ValueError(f"field name {name!r} is not a plain file name ([A-Za-z0-9_.-], no leading dot)")
    array = value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)
    if array.dtype.hasobject:
        raise TypeError(f"field {name!r} has dtype {array.dtype}; datasets hold plain numeric arrays only")
    if array.ndim == 0:
        raise ValueError(f"field {name!r} is a scalar; fields are (M, ...) arrays (put scalars in meta)")
    return np.ascontiguousarray(array)


def _check_lengths(arrays: dict[str, np.ndarray]) -> None:
    lengths = {name: len(array) for name, array in arrays.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"fields must share their first dimension M; got {lengths}")


def _write_field(directory: Path, name: str, array: np.ndarray) -> dict:
    """Save one field and return its manifest entry."""
    file = directory / f"{name}.npy"
    with open(file, "wb") as handle:
        np.save(handle, array, allow_pickle=False)
        handle.flush()
        os.fsync(handle.fileno())
    return {
        "file": file.name,
        "shape": list(array.shape),
        "dtype": array.dtype.str,
        "bytes": file.stat().st_size,
        "sha256": _sha256(file),
    }


def _write_durably(file: Path, data: bytes) -> None:
    with open(file, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def _sha256(file: Path) -> str:
    digest = hashlib.sha256()
    with open(file, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _manifest_checksum(manifest: dict) -> str:
    """sha256 of the manifest without its ``checksum`` key, in canonical JSON."""
    body = {key: value for key, value in manifest.items() if key != "checksum"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


# -- reading ------------------------------------------------------------------------------
def read_dataset(path: str | Path) -> tuple[dict[str, torch.Tensor], dict]:
    """Load a dataset directory written by :func:`write_dataset`.

    Returns ``(arrays, meta)``: field name -> ``(M, ...)`` CPU tensor, and the meta dict.
    Raises :class:`DatasetError` if the manifest or any file is missing, truncated, altered,
    or not what the manifest says.
    """
    path = Path(path)
    manifest = _read_manifest(path / MANIFEST)
    arrays = {name: _read_field(path, name, entry) for name, entry in manifest["fields"].items()}
    return arrays, manifest["meta"]


def _read_manifest(file: Path) -> dict:
    if not file.is_file():
        raise DatasetError(f"{file}: missing (not a dataset directory, or an unfinished write)")
    try:
        manifest = json.loads(file.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise DatasetError(f"{file}: not valid JSON ({error})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise DatasetError(f"{file}: not a {FORMAT} manifest")
    if manifest.get("version") != VERSION:
        raise DatasetError(f"{file}: version {manifest.get('version')}, this reader knows {VERSION}")
    if manifest.get("checksum") != _manifest_checksum(manifest):
        raise DatasetError(f"{file}: altered (its checksum does not match its content)")
    fields = manifest.get("fields")
    entry_keys = {"file", "shape", "dtype", "bytes", "sha256"}
    if not isinstance(fields, dict) or not all(entry_keys <= set(entry) for entry in fields.values()):
        raise DatasetError(f"{file}: malformed field table (each field needs {sorted(entry_keys)})")
    return manifest


def _read_field(directory: Path, name: str, entry: dict) -> torch.Tensor:
    file = directory / entry["file"]
    if not _FIELD_NAME.fullmatch(entry["file"]) or not file.is_file():
        raise DatasetError(f"{file}: missing (field {name!r})")
    size = file.stat().st_size
    if size != entry["bytes"]:
        problem = "truncated" if size < entry["bytes"] else "too long"
        raise DatasetError(f"{file}: {problem} ({size} bytes, manifest says {entry['bytes']})")
    if _sha256(file) != entry["sha256"]:
        raise DatasetError(f"{file}: altered (sha256 differs from the manifest)")
    try:
        array = np.load(file, allow_pickle=False)
    except ValueError as error:
        # numpy refuses object arrays here rather than unpickle them.
        raise DatasetError(f"{file}: not a plain numeric array ({error})") from None
    expected = (tuple(entry["shape"]), entry["dtype"])
    if (array.shape, array.dtype.str) != expected:
        raise DatasetError(
            f"{file}: holds {array.shape} {array.dtype.str}, manifest says {expected[0]} {expected[1]}"
        )
    return torch.from_numpy(array)
