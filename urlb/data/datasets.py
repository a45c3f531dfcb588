"""Reward-free datasets on disk: one ``.npy`` per field plus a checked ``manifest.json``.

A dataset directory::

    walker_proto_1M_seed0/
        manifest.json        meta, and per field: file, shape, dtype, bytes, sha256
        observation.npy      (M, obs_dim) float32
        action.npy           ...

Files are plain numpy arrays written and read with ``allow_pickle=False``: reading never
unpickles. Every field has one row per transition, except ``frames``: a dataset with pixels
holds one RGB frame per observation, episode by episode, each episode's ``L`` observation
frames followed by the frame of its last next observation (``M + E`` frames for ``M``
transitions in ``E`` episodes; ExORL's layout of ``L + 1`` observations per episode), and its
meta says how they were made (``meta["frames"]``: ``size``, ``camera``, ``action_repeat``...;
``render_dataset.py`` renders them from a state dataset's physics states).

:func:`read_dataset` checks every file against the manifest (present, size, sha256, shape,
dtype) and the manifest against its own checksum, and raises :class:`DatasetError` naming the
file at fault.

Rows are transitions, world by world and chronological within a world (the layout of
:meth:`urlb.data.replay.ReplayBuffer.to_dataset`, which ``collect.py`` and ``pretrain.py
save_dataset=true`` write). :func:`episode_boundaries` cuts them into episodes;
:class:`DatasetSampler` draws single transitions or contiguous in-episode windows from them
(decision transformers' context windows, Chen et al. 2021, and PDT's, Xie et al. 2023; SUPE's
H-step segments, Wilcoxson et al. 2024), with any task's reward as ``reward`` (relabelling);
:func:`urlb.data.minari_export.export_minari` writes one task's view of a dataset in Minari's
format (also importable from here, where the README names it).

Imports numpy, torch and tensordict: no agent, no env.
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
from tensordict import TensorDict

FORMAT = "urlb-dataset"
VERSION = 1
MANIFEST = "manifest.json"
# The one field not indexed by transition: RGB frames uint8 (M + E, 3, H, W), episode by episode.
FRAMES = "frames"
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
    lengths = {name: len(array) for name, array in arrays.items() if name != FRAMES}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"fields must share their first dimension M; got {lengths}")
    if FRAMES in arrays:
        problem = _frames_problem({k: torch.from_numpy(v) for k, v in arrays.items()})
        if problem:
            raise ValueError(problem)


def _frames_problem(arrays: dict[str, torch.Tensor]) -> str | None:
    """Why ``arrays[FRAMES]`` is not one uint8 RGB frame per observation plus one per episode."""
    frames = arrays[FRAMES]
    if frames.dtype != torch.uint8 or frames.dim() != 4 or frames.shape[1] != 3:
        return f"{FRAMES} must be uint8 (M + E, 3, H, W) RGB frames, got {frames.dtype} {tuple(frames.shape)}"
    starts, _ = episode_boundaries(arrays)
    expected = len(arrays["terminated"]) + len(starts)
    if len(frames) != expected:
        return (
            f"{FRAMES} holds {len(frames)} frames; {len(arrays['terminated'])} transitions in "
            f"{len(starts)} episodes need {expected} (each episode's observations, then its last next one)"
        )
    return None


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
    lengths = {len(array) for name, array in arrays.items() if name != FRAMES}
    if len(lengths) > 1:
        raise DatasetError(f"{path}: fields of different lengths {sorted(lengths)}")
    if FRAMES in arrays:
        problem = _frames_problem(arrays)
        if problem:
            raise DatasetError(f"{path / manifest['fields'][FRAMES]['file']}: {problem}")
    return arrays, manifest["meta"]


def dataset_bytes(path: str | Path) -> int:
    """The bytes of a dataset's fields, from its (checked) manifest alone: what loading it takes."""
    manifest = _read_manifest(Path(path) / MANIFEST)
    return sum(int(entry["bytes"]) for entry in manifest["fields"].values())


def dataset_length(path: str | Path) -> int:
    """The transitions a dataset directory holds, from its (checked) manifest alone."""
    manifest = _read_manifest(Path(path) / MANIFEST)
    return int(manifest["fields"]["observation"]["shape"][0])


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


# -- episodes and sampling ----------------------------------------------------------------
def episode_boundaries(arrays: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Episodes of a dataset as row ranges ``starts[i] <= row < ends[i]``: two ``(E,)`` int64
    tensors on the arrays' device, in row order, covering every row once.

    An episode ends at row ``r`` where ``terminated[r] | truncated[r]``, where ``world`` changes
    between rows ``r`` and ``r + 1`` (rows are world-major), where ``step`` does not go on by one
    (rows that were never consecutive, e.g. concatenated datasets), and at the last row. An
    episode cut by a world change, a step jump or the end of the data (a replay's oldest and
    newest rows) ends with neither flag set.
    """
    ended = arrays["terminated"] | arrays["truncated"]  # (M,)
    if len(ended) == 0:
        raise ValueError("the dataset holds no rows, so no episodes")
    between = torch.zeros_like(ended[:-1])  # between rows r and r + 1
    if "world" in arrays:
        between |= arrays["world"][1:] != arrays["world"][:-1]
    if "step" in arrays:
        between |= arrays["step"][1:] != arrays["step"][:-1] + 1
    ended = torch.cat([ended[:-1] | between, torch.ones_like(ended[-1:])])
    ends = ended.nonzero().squeeze(1) + 1
    starts = torch.cat([ends.new_zeros(1), ends[:-1]])
    return starts, ends


def frame_of_row(starts: torch.Tensor, ends: torch.Tensor) -> torch.Tensor:
    """``(M,)``: where each row's observation is in a dataset's ``frames`` (the layout in this
    module's docstring): row ``r`` of episode ``e`` is frame ``r + e``, so its next observation
    is frame ``r + e + 1`` (for an episode's last row, the episode's extra frame)."""
    episode = torch.arange(len(starts), device=starts.device).repeat_interleave(ends - starts)
    return torch.arange(len(episode), device=starts.device) + episode


def task_column(meta: dict, task: str | int, columns: int) -> int:
    """The column of ``task_reward`` (``columns`` wide) holding ``task``: a name from
    ``meta["task_names"]``, or the column itself."""
    names = meta.get("task_names")
    if isinstance(task, str):
        if names is None:
            raise ValueError(
                f"task={task!r} needs task names, and this dataset's meta has none; pass the column "
                "index instead (task=0, ...)"
            )
        if task not in names:
            raise ValueError(f"task={task!r} is not in this dataset; its tasks are {', '.join(names)}")
        task = names.index(task)
    if not 0 <= task < columns:
        raise ValueError(f"task column {task} is out of range: task_reward has {columns} columns")
    return task


class DatasetSampler:
    """Uniform batches of transitions, or of windows of ``L`` consecutive rows inside one
    episode, from a dataset held on one device.

    ::

        sampler = DatasetSampler.load("datasets/walker_random_100k", device="cuda", task="walker_run")
        generator = torch.Generator(device="cuda").manual_seed(0)
        batch = sampler.sample(1024, generator)                # (B,): every field, plus reward
        windows = sampler.sample_windows(64, 20, generator)    # (B, L): rows t .. t+L-1 of one episode

    Args:
        arrays: field -> ``(M, ...)`` tensor (:func:`read_dataset`'s first output).
        meta: the dataset's meta (its ``task_names`` name the ``task_reward`` columns).
        device: where the fields live and batches are drawn.
        task: a task name or ``task_reward`` column; batches then carry its reward as
            ``reward`` (``(B,)`` or ``(B, L)``): relabelling with any task of the domain.
        frame_stack: None: observations are the state vectors. ``k``: the dataset's frames
            (it must hold them), and batches' ``observation``, ``next_observation`` (and
            ``goal``) are ``uint8 (..., 3k, H, W)`` stacks of the last ``k`` frames, oldest
            first, the episode's first frame repeated before it (DrQ-v2's FrameStack, the
            env's stacks); the state vectors move to ``state`` and ``next_state``.
    """

    def __init__(
        self,
        arrays: dict[str, torch.Tensor],
        meta: dict,
        device: torch.device | str = "cpu",
        task: str | int | None = None,
        frame_stack: int | None = None,
    ):
        self.device = torch.empty(0, device=device).device
        self.fields = {name: value.to(self.device) for name, value in arrays.items() if name != FRAMES}
        self.meta = meta
        self.starts, self.ends = episode_boundaries(self.fields)
        lengths = self.ends - self.starts
        self.longest_episode = int(lengths.max())
        # The exclusive end of the episode each row belongs to: row r starts a valid window of
        # length L iff r + L <= episode_end[r].
        self._episode_end = self.ends.repeat_interleave(lengths)
        self.frame_stack = frame_stack
        self.frames = None
        if frame_stack is not None:
            self._set_frames(arrays.get(FRAMES), frame_stack, lengths)
        columns = self.fields["task_reward"].shape[1]
        self.task_index = None if task is None else task_column(meta, task, columns)
        self._window_starts: dict[int, torch.Tensor] = {}

    def _set_frames(self, frames: torch.Tensor | None, frame_stack: int, lengths: torch.Tensor) -> None:
        if frames is None:
            raise ValueError(
                "this dataset holds no frames; render them from its physics states first "
                "(python render_dataset.py dataset=<path> out=<new path>) or use obs=states"
            )
        if frame_stack < 1:
            raise ValueError(f"frame_stack={frame_stack} must be >= 1")
        self.frames = frames.to(self.device)
        self._frame_of_row = frame_of_row(self.starts, self.ends)
        self._first_frame = self._frame_of_row[self.starts].repeat_interleave(lengths)
        self._lags = torch.arange(frame_stack - 1, -1, -1, device=self.device)

    @classmethod
    def load(
        cls,
        path: str | Path,
        device: torch.device | str = "cpu",
        task: str | int | None = None,
        frame_stack: int | None = None,
    ):
        """A sampler over the dataset directory at ``path`` (checked by :func:`read_dataset`)."""
        arrays, meta = read_dataset(path)
        return cls(arrays, meta, device=device, task=task, frame_stack=frame_stack)

    def __len__(self) -> int:
        """Transitions held."""
        return len(self._episode_end)

    def sample(self, batch_size: int, generator: torch.Generator | None = None) -> TensorDict:
        """``batch_size`` rows drawn uniformly: a TensorDict of batch size ``(B,)``."""
        self._check_generator(generator)
        rows = torch.randint(0, len(self), (batch_size,), generator=generator, device=self.device)
        return self.gather(rows)

    def sample_with_goals(
        self, batch_size: int, future: float, random_goal: float, generator: torch.Generator | None = None
    ) -> TensorDict:
        """``batch_size`` rows drawn uniformly, each with a ``goal`` observation: the observation
        ``k ~ Geometric(1 - future)`` rows later in its episode (at most its last row), or with
        probability ``random_goal`` any row's (HILP's goals, Park et al. 2024, whose replay
        draws them so). A TensorDict of batch size ``(B,)``."""
        if not 0 <= future < 1 or not 0 <= random_goal <= 1:
            raise ValueError(f"future={future} must lie in [0, 1) and random_goal={random_goal} in [0, 1]")
        self._check_generator(generator)
        rows = torch.randint(0, len(self), (batch_size,), generator=generator, device=self.device)
        uniform = torch.rand(batch_size, generator=generator, device=self.device).clamp(min=1e-12)
        # k - 1 = floor(log U / log future) is Geometric(1 - future) on {0, 1, ...}
        offset = 1 + torch.floor(uniform.log() / torch.log(torch.tensor(future, device=self.device)))
        future_rows = torch.minimum(rows + offset.long(), self._episode_end[rows] - 1)
        anywhere = torch.randint(0, len(self), (batch_size,), generator=generator, device=self.device)
        pick = torch.rand(batch_size, generator=generator, device=self.device) < random_goal
        batch = self.gather(rows)
        goal_rows = torch.where(pick, anywhere, future_rows)
        if self.frames is None:
            batch["goal"] = self.fields["observation"][goal_rows]
        else:
            batch["goal"] = self.stacks(goal_rows)
            batch["goal_state"] = self.fields["observation"][goal_rows]
        return batch

    def sample_windows(
        self, batch_size: int, length: int, generator: torch.Generator | None = None
    ) -> TensorDict:
        """``batch_size`` windows of ``length`` consecutive rows of one episode, uniform over
        every such window: a TensorDict of batch size ``(B, L)``. Episodes shorter than
        ``length`` hold no window and are never drawn."""
        self._check_generator(generator)
        starts = self.window_starts(length)
        draw = torch.randint(0, len(starts), (batch_size,), generator=generator, device=self.device)
        rows = starts[draw, None] + torch.arange(length, device=self.device)  # (B, L)
        return self.gather(rows)

    def window_starts(self, length: int) -> torch.Tensor:
        """``(K,)`` every row that starts a window of ``length`` rows inside its episode."""
        if length < 1 or length > self.longest_episode:
            raise ValueError(
                f"window length {length} is not in 1..{self.longest_episode}, the longest episode of this "
                f"dataset; use a length in that range"
            )
        if length not in self._window_starts:
            rows = torch.arange(len(self), device=self.device)
            self._window_starts[length] = (rows + length <= self._episode_end).nonzero().squeeze(1)
        return self._window_starts[length]

    def gather(self, rows: torch.Tensor) -> TensorDict:
        """Every field at ``rows`` (any shape), plus the chosen task's ``reward``; with frames,
        ``observation`` and ``next_observation`` are frame stacks and the state vectors are
        ``state`` and ``next_state``."""
        flat = rows.reshape(-1)
        out = {
            name: value.index_select(0, flat).reshape(*rows.shape, *value.shape[1:])
            for name, value in self.fields.items()
        }
        if self.task_index is not None:
            out["reward"] = out["task_reward"][..., self.task_index]
        if self.frames is not None:
            for key in ("observation", "next_observation"):
                if key in out:
                    out[key.replace("observation", "state")] = out.pop(key)
            out["observation"] = self.stacks(rows)
            out["next_observation"] = self.stacks(rows, next_observation=True)
        return TensorDict(out, batch_size=rows.shape, device=self.device)

    def stacks(self, rows: torch.Tensor, next_observation: bool = False) -> torch.Tensor:
        """The frame stacks ``uint8 (*rows.shape, 3k, H, W)`` of the observations (or the next
        observations) at ``rows``: the last ``k`` frames up to it, none before its episode's
        first (repeated in their place)."""
        if self.frames is None:
            raise ValueError("this sampler reads state vectors; build it with frame_stack=k for frames")
        newest = self._frame_of_row[rows] + int(next_observation)
        index = torch.maximum(newest[..., None] - self._lags, self._first_frame[rows][..., None])
        stacked = self.frames[index.reshape(-1)]  # (N * k, 3, H, W)
        return stacked.reshape(*rows.shape, 3 * len(self._lags), *self.frames.shape[2:])

    def _check_generator(self, generator: torch.Generator | None) -> None:
        if generator is not None and generator.device.type != self.device.type:
            raise ValueError(
                f"the generator is on {generator.device}, the sampler on {self.device}; "
                f"use torch.Generator(device={str(self.device)!r})"
            )


def __getattr__(name: str):
    # export_minari moved to urlb.data.minari_export, which imports this module; resolved on
    # first use so that the documented urlb.data.datasets.export_minari keeps working.
    if name == "export_minari":
        from urlb.data.minari_export import export_minari

        return export_minari
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
