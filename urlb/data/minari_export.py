"""Minari export: one task's view of a urlb dataset written with Minari's own writer.

Minari's schema has one reward and no physics state, so an export picks a task; the other
tasks and ``qpos``/``qvel``/``act`` stay in the urlb dataset (export again with another task).

Imports :mod:`urlb.data.datasets` (reading, episodes, task columns); minari and gymnasium
are imported by :func:`export_minari`, so importing this module needs neither.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from urlb.data.datasets import episode_boundaries, read_dataset, task_column


def export_minari(
    dataset_path: str | Path,
    dataset_id: str,
    task: str | int,
    data_format: str = "hdf5",
    author: str | None = None,
):
    """Write the dataset at ``dataset_path`` as the Minari dataset ``dataset_id``, with
    ``task``'s reward as ``rewards``, and return it (a ``minari.MinariDataset``).

    Uses Minari's own writer (``minari.create_dataset_from_buffers``, Minari 0.5), so the
    dataset lands where Minari keeps its datasets (``$MINARI_DATASETS_PATH``, default
    ``~/.minari/datasets``) and loads with ``minari.load_dataset(dataset_id)``. One episode per
    :func:`episode_boundaries` range: ``observations`` are its rows' observations plus the last
    ``next_observation`` (``T + 1``), ``actions``, ``rewards``, ``terminations`` and
    ``truncations`` its ``T`` rows as stored. Minari's schema has one reward and no physics
    state: the other tasks and ``qpos``/``qvel``/``act`` stay in the urlb dataset (export again
    with another ``task``).
    """
    try:
        import gymnasium as gym
        import minari
        from minari.data_collector import EpisodeBuffer
    except ImportError as error:
        raise ImportError(
            f"export_minari needs minari ({error}); pip install 'minari[hdf5]==0.5.3'"
        ) from None
    arrays, meta = read_dataset(dataset_path)
    column = task_column(meta, task, arrays["task_reward"].shape[1])
    fields = {
        name: arrays[name].numpy()
        for name in ("observation", "next_observation", "action", "task_reward", "terminated", "truncated")
    }
    starts, ends = episode_boundaries(arrays)
    buffers = [
        _episode_buffer(EpisodeBuffer, fields, column, index, start, end)
        for index, (start, end) in enumerate(zip(starts.tolist(), ends.tolist(), strict=True))
    ]
    observation_dim, action_dim = fields["observation"].shape[1], fields["action"].shape[1]
    names = meta.get("task_names")
    return minari.create_dataset_from_buffers(
        dataset_id,
        buffers,
        algorithm_name=str(meta.get("agent", "unknown")),
        author=author,
        observation_space=gym.spaces.Box(-np.inf, np.inf, (observation_dim,), np.float32),
        action_space=gym.spaces.Box(-1.0, 1.0, (action_dim,), np.float32),
        description=(
            f"urlb dataset {Path(dataset_path).name} ({meta.get('domain')}, {meta.get('agent')}, "
            f"seed {meta.get('seed')}); rewards of task {names[column] if names else column}"
        ),
        data_format=data_format,
    )


def _episode_buffer(
    buffer_class, fields: dict[str, np.ndarray], column: int, index: int, start: int, end: int
):
    """One Minari ``EpisodeBuffer`` from rows ``start .. end - 1``."""
    observations = np.concatenate(
        [fields["observation"][start:end], fields["next_observation"][end - 1 : end]]
    )
    return buffer_class(
        id=index,
        observations=observations,
        actions=fields["action"][start:end],
        rewards=fields["task_reward"][start:end, column],
        terminations=fields["terminated"][start:end],
        truncations=fields["truncated"][start:end],
    )
