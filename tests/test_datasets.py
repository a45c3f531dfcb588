"""Datasets on disk: round trip, corruption caught with a message naming the file, no
unpickling, a real replay written and read back, and the Minari export loaded back by Minari."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from envs import make_env
from urlb.data.datasets import (
    DatasetError,
    _manifest_checksum,
    _sha256,
    episode_boundaries,
    read_dataset,
    write_dataset,
)
from urlb.data.minari_export import export_minari
from urlb.data.replay import ReplayBuffer

META = {"domain": "walker", "agent": "random", "frames": 60, "seed": 0}


def small_arrays() -> dict:
    return {
        "observation": torch.arange(12, dtype=torch.float32).reshape(4, 3),
        "qpos": np.linspace(0, 1, 8).reshape(4, 2),  # float64, from numpy
        "truncated": torch.tensor([False, True, False, True]),
        "world": torch.arange(4),
        "act": torch.zeros(4, 0, dtype=torch.float64),
    }


@pytest.fixture
def dataset(tmp_path):
    return write_dataset(tmp_path / "data", small_arrays(), META)


def test_round_trip(dataset):
    arrays, meta = read_dataset(dataset)
    assert meta == META
    for name, value in small_arrays().items():
        expected = torch.as_tensor(value)
        assert arrays[name].dtype == expected.dtype
        assert torch.equal(arrays[name], expected), name
    assert sorted(path.name for path in dataset.parent.iterdir()) == ["data"]  # no staging left


def test_write_refuses_existing_path_and_object_arrays(dataset, tmp_path):
    with pytest.raises(FileExistsError):
        write_dataset(dataset, small_arrays(), META)
    with pytest.raises(TypeError, match="object"):
        write_dataset(tmp_path / "objects", {"x": np.array([{}, []], dtype=object)}, META)
    with pytest.raises(ValueError, match="first dimension"):
        write_dataset(tmp_path / "ragged", {"a": np.zeros(3), "b": np.zeros(4)}, META)
    assert not (tmp_path / "objects").exists() and not (tmp_path / "ragged").exists()


def truncate(file):
    file.write_bytes(file.read_bytes()[:-5])


def flip_byte(file):
    data = bytearray(file.read_bytes())
    data[-1] ^= 0x01
    file.write_bytes(bytes(data))


def edit_meta(file):
    manifest = json.loads(file.read_text())
    manifest["meta"]["frames"] = 2_000_000
    file.write_text(json.dumps(manifest))


@pytest.mark.parametrize(
    "file, corrupt, problem",
    [
        ("observation.npy", truncate, "truncated"),
        ("qpos.npy", flip_byte, "altered"),
        ("world.npy", lambda file: file.unlink(), "missing"),
        ("manifest.json", edit_meta, "altered"),
        ("manifest.json", lambda file: file.unlink(), "missing"),
        ("manifest.json", truncate, "not valid JSON"),
    ],
    ids=["truncate", "flip-byte", "delete", "edit-manifest", "no-manifest", "truncate-manifest"],
)
def test_corruption_names_the_file(dataset, file, corrupt, problem):
    corrupt(dataset / file)
    with pytest.raises(DatasetError, match=problem) as error:
        read_dataset(dataset)
    message = str(error.value)
    assert file in message and "\n" not in message


def resign(dataset, name: str) -> None:
    """Make the manifest agree with whatever ``name``.npy now holds, as a forger would."""
    manifest = json.loads((dataset / "manifest.json").read_text())
    file = dataset / f"{name}.npy"
    entry = manifest["fields"][name]
    entry.update(bytes=file.stat().st_size, sha256=_sha256(file), shape=[2], dtype="|O")
    manifest["checksum"] = _manifest_checksum(manifest)
    (dataset / "manifest.json").write_text(json.dumps(manifest))


UNPICKLED = []


def _record_unpickling():
    UNPICKLED.append(True)
    return "tripped"


class Tripwire:
    """Unpickling an instance calls ``_record_unpickling``."""

    def __reduce__(self):
        return (_record_unpickling, ())


def test_object_arrays_are_never_unpickled(dataset):
    np.save(dataset / "observation.npy", np.array([Tripwire(), Tripwire()], dtype=object), allow_pickle=True)
    resign(dataset, "observation")
    with pytest.raises(DatasetError, match="observation.npy: not a plain numeric array"):
        read_dataset(dataset)
    assert UNPICKLED == []


def test_real_replay_to_dataset_and_back(tmp_path):
    env = make_env("walker_stand", 4, backend="cpu", seed=0)
    buffer = ReplayBuffer(capacity=1000, num_envs=4, device=env.device, nstep=3)
    generator = torch.Generator().manual_seed(0)
    observation = env.reset()["observation"]
    for _ in range(15):
        qpos = env.physics_state()["qpos"]
        action = torch.rand(4, env.action_dim, generator=generator) * 2 - 1
        out = env.step(action)
        buffer.add(
            observation,
            action,
            out["next_observation"],
            out["task_reward"],
            out["terminated"],
            out["truncated"],
            extras={"qpos": qpos},
        )
        observation = out["observation"]
    path = buffer.save_dataset(tmp_path / "walker_random", META)
    arrays, meta = read_dataset(path)
    assert meta == {"num_envs": 4, "transitions": 60, **META}
    expected = buffer.to_dataset()
    assert sorted(arrays) == sorted(expected)
    assert all(torch.equal(arrays[name], expected[name]) for name in expected)
    assert arrays["qpos"].dtype == torch.float64 and arrays["observation"].shape == (60, 24)
    # Within a world, consecutive rows chain: s' of one step is s of the next.
    same_world = arrays["world"][1:] == arrays["world"][:-1]
    chained = arrays["next_observation"][:-1] == arrays["observation"][1:]
    assert torch.all(chained[same_world])


# Minari's advisory warnings about metadata the export has no value for (env spec, e-mail...).
@pytest.mark.filterwarnings("ignore::UserWarning:minari")
def test_minari_export_loads_back_in_minari(tmp_path, monkeypatch):
    minari = pytest.importorskip("minari", reason="minari is not installed (pip install 'minari[hdf5]')")
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))
    generator = torch.Generator().manual_seed(0)
    rows = 14  # world 0: an episode truncated at row 4, then rows 5-7 cut; world 1: rows 8-13
    truncated = torch.zeros(rows, dtype=torch.bool)
    truncated[[4, 13]] = True
    observation = torch.randn(rows, 5, generator=generator)
    arrays = {
        "observation": observation,
        "next_observation": observation + 0.5,
        "action": torch.rand(rows, 2, generator=generator) * 2 - 1,
        "task_reward": torch.rand(rows, 3, generator=generator),
        "terminated": torch.zeros(rows, dtype=torch.bool),
        "truncated": truncated,
        "world": torch.tensor([0] * 8 + [1] * 6),
    }
    meta = META | {"task_names": ["walker_stand", "walker_walk", "walker_run"]}
    path = write_dataset(tmp_path / "walker_random", arrays, meta)
    export_minari(path, "urlb/walker-random-v0", task="walker_walk", author="urlb tests")
    loaded = minari.load_dataset("urlb/walker-random-v0")
    assert (loaded.total_episodes, loaded.total_steps) == (3, rows)
    starts, ends = episode_boundaries(arrays)
    for episode, start, end in zip(loaded.iterate_episodes(), starts.tolist(), ends.tolist(), strict=True):
        expected_observations = torch.cat([observation[start:end], arrays["next_observation"][end - 1 : end]])
        assert np.array_equal(episode.observations, expected_observations.numpy())
        assert np.array_equal(episode.actions, arrays["action"][start:end].numpy())
        assert np.array_equal(episode.rewards, arrays["task_reward"][start:end, 1].numpy())
        assert np.array_equal(episode.truncations, truncated[start:end].numpy())
    with pytest.raises(ValueError, match="its tasks are walker_stand, walker_walk, walker_run"):
        export_minari(path, "urlb/walker-random-v1", task="walker_flip")
