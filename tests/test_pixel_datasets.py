"""Pixel datasets (issue 20): frames stored one per observation plus one per episode
(urlb/data/datasets.py), the sampler's frame stacks, and render_dataset.py rendering a state
dataset's physics states (urlb/run/render_dataset.py), checked against the pixel env replaying
the same actions."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from test_dataset_sampler import EPISODES, META, ROWS, hand_made

from urlb.data.datasets import FRAMES, DatasetError, DatasetSampler, read_dataset, write_dataset
from urlb.loop.offline import check_frames

ROOT = Path(__file__).resolve().parents[1]


def with_frames(arrays: dict) -> dict:
    """Frame f shows the value f everywhere: a stack shows which frames it holds."""
    count = ROWS + len(EPISODES)
    frames = torch.arange(count, dtype=torch.uint8)[:, None, None, None].expand(count, 3, 4, 4).clone()
    return arrays | {FRAMES: frames}


def shown(stack: torch.Tensor) -> list[int]:
    """The frame numbers in a ``(3k, H, W)`` stack, oldest first."""
    return [int(frame[0, 0, 0]) for frame in stack.reshape(-1, 3, *stack.shape[1:])]


def test_stacks_by_hand():
    sampler = DatasetSampler(with_frames(hand_made()), META, frame_stack=3)
    # Episode e's rows r show frame r + e; its first frame is start + e.
    rows = torch.tensor([0, 1, 4, 5, 7, 14, 15, 19])
    batch = sampler.gather(rows)
    observations = [shown(s) for s in batch["observation"]]
    nexts = [shown(s) for s in batch["next_observation"]]
    assert observations == [
        [0, 0, 0],  # an episode's first observation repeats its first frame
        [0, 0, 1],
        [2, 3, 4],
        [6, 6, 6],  # episode 1 starts at frame 5 + 1
        [6, 7, 8],
        [14, 15, 16],
        [18, 18, 18],  # episode 3: 15 + 3
        [20, 21, 22],
    ]
    assert nexts == [
        [0, 0, 1],
        [0, 1, 2],
        [3, 4, 5],
        [6, 6, 7],
        [7, 8, 9],
        [15, 16, 17],
        [18, 18, 19],
        [21, 22, 23],
    ]
    # The state vectors are still there, under their own names.
    torch.testing.assert_close(batch["state"][:, 0], rows.float())
    assert batch["observation"].dtype == torch.uint8 and batch["observation"].shape == (8, 9, 4, 4)
    windows = sampler.sample_windows(5, 3, torch.Generator().manual_seed(0))
    assert windows["observation"].shape == (5, 3, 9, 4, 4)


def test_goals_are_stacks_of_their_rows():
    sampler = DatasetSampler(with_frames(hand_made()), META, frame_stack=2)
    batch = sampler.sample_with_goals(
        64, future=0.0, random_goal=0.0, generator=torch.Generator().manual_seed(1)
    )
    # future=0: the goal is the next row of the episode (its last row at the end).
    for state, goal, goal_state in zip(batch["state"], batch["goal"], batch["goal_state"], strict=True):
        row = int(state[0])
        assert int(goal_state[0]) in (row, row + 1)
        torch.testing.assert_close(goal, sampler.stacks(torch.tensor(int(goal_state[0]))))


def test_frames_are_checked_on_write_and_read(tmp_path):
    arrays = with_frames(hand_made())
    with pytest.raises(ValueError, match="need 24"):
        write_dataset(tmp_path / "short", arrays | {FRAMES: arrays[FRAMES][:-1]}, META)
    with pytest.raises(ValueError, match="uint8"):
        write_dataset(tmp_path / "float", arrays | {FRAMES: arrays[FRAMES].float()}, META)
    path = write_dataset(tmp_path / "ok", arrays, META)
    read, _ = read_dataset(path)
    torch.testing.assert_close(read[FRAMES], arrays[FRAMES])
    with pytest.raises(ValueError, match="holds no frames; render them"):
        DatasetSampler(hand_made(), META, frame_stack=3)
    # A state sampler leaves the frames out of its fields.
    assert FRAMES not in DatasetSampler(arrays, META).fields
    # A consistent manifest over inconsistent files is still refused.
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["fields"]["frames"]["shape"][0] = 23
    assert manifest["fields"]["frames"]["shape"][0] == 23
    with pytest.raises(DatasetError):
        read_dataset(_rewrite(path, manifest))


def _rewrite(path: Path, manifest: dict) -> Path:
    from urlb.data.datasets import _manifest_checksum

    manifest["checksum"] = _manifest_checksum(manifest)
    (path / "manifest.json").write_text(json.dumps(manifest))
    return path


def test_frames_must_match_the_run():
    made = {"size": 64, "camera": 0, "action_repeat": 1, "shadows": False}
    run = {"size": 64, "frame_stack": 3, "action_repeat": 1, "camera": None, "shadows": False}
    check_frames({"frames": made}, run, "d")
    with pytest.raises(ValueError, match=r"pass obs.size=64 obs.action_repeat=1"):
        check_frames({"frames": made}, run | {"size": 84, "action_repeat": 2}, "d")
    with pytest.raises(ValueError, match="holds no frames"):
        check_frames({}, run, "d")


# -- rendering ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> tuple[Path, Path]:
    """A random walker dataset (2 worlds, 40 steps each) and its 32x32 rendering."""
    from envs import make_env
    from urlb.run.collect import RandomPolicy, collect_dataset
    from urlb.run.render_dataset import render_dataset

    folder = tmp_path_factory.mktemp("pixel_datasets")
    env = make_env("walker", 2, backend="cpu", device="cpu", seed=3)
    policy = RandomPolicy(env.action_dim, torch.Generator().manual_seed(0))
    states = collect_dataset(env, policy, 80, folder / "states", {"domain": "walker", "agent": "random"})
    return states, render_dataset(states, folder / "pixels", size=32, worlds=8)


def test_render_matches_the_pixel_env_replaying_the_actions(rendered):
    """Every stack the sampler rebuilds from the rendered dataset is the stack the pixel env
    showed at that step, replaying the dataset's actions from the same resets."""
    from envs import make_env

    states, pixels = rendered
    sampler = DatasetSampler.load(pixels, frame_stack=3)
    env = make_env(
        "walker",
        2,
        backend="cpu",
        device="cpu",
        seed=3,
        pixels={"size": 32, "frame_stack": 3, "action_repeat": 1},
    )
    actions = sampler.fields["action"].reshape(2, -1, env.action_dim)  # world-major rows
    td = env.reset()
    for step in range(actions.shape[1]):
        rows = torch.tensor([step, actions.shape[1] + step])
        batch = sampler.gather(rows)
        torch.testing.assert_close(batch["observation"], td["observation"], rtol=0, atol=0)
        td = env.step(actions[:, step].contiguous())
        torch.testing.assert_close(batch["next_observation"], td["next_observation"], rtol=0, atol=0)
    env.close()
    arrays, meta = read_dataset(pixels)
    source, _ = read_dataset(states)
    assert set(arrays) == set(source) | {FRAMES}
    torch.testing.assert_close(arrays["observation"], source["observation"])
    assert meta["frames"]["size"] == 32 and meta["frames"]["action_repeat"] == 1
    assert meta["frames"]["rendered_from"]["dataset"] == str(states.resolve())
    assert meta["frames"]["observation_max_deviation"] < 1e-5


def test_render_refusals(rendered, tmp_path):
    from urlb.run.render_dataset import render_dataset

    states, pixels = rendered
    with pytest.raises(ValueError, match="already holds frames"):
        render_dataset(pixels, tmp_path / "again", size=32)
    with pytest.raises(FileExistsError, match="never overwritten"):
        render_dataset(states, pixels, size=32)
    arrays, meta = read_dataset(states)
    bare = write_dataset(tmp_path / "bare", {k: v for k, v in arrays.items() if k != "qpos"}, meta)
    with pytest.raises(ValueError, match="no physics states"):
        render_dataset(bare, tmp_path / "out", size=32)
    # States that do not reproduce the observations (another model, an edited file) are refused.
    arrays["qpos"] = arrays["qpos"] + 0.5
    moved = write_dataset(tmp_path / "moved", arrays, meta)
    with pytest.raises(ValueError, match="reproduce its observations only within"):
        render_dataset(moved, tmp_path / "out", size=32)


def test_render_entry_point_refuses_in_one_line(tmp_path):
    result = subprocess.run(
        [sys.executable, str(ROOT / "render_dataset.py"), f"dataset={tmp_path}", f"out={tmp_path / 'o'}"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert result.returncode != 0
    assert "is not a dataset directory" in result.stderr


def test_quadruped_renders_though_its_acceleration_sensors_are_not_states(tmp_path):
    """Quadruped's IMU and force-torque readings come from the last substep's start and the
    control: no stored physics state reproduces them, so the check leaves them out."""
    from envs import make_env
    from urlb.run.collect import RandomPolicy, collect_dataset
    from urlb.run.render_dataset import render_dataset

    env = make_env("quadruped", 2, backend="cpu", device="cpu", seed=0)
    policy = RandomPolicy(env.action_dim, torch.Generator().manual_seed(0))
    states = collect_dataset(env, policy, 40, tmp_path / "states", {"domain": "quadruped", "agent": "random"})
    meta = read_dataset(render_dataset(states, tmp_path / "pixels", size=16, worlds=8))[1]["frames"]
    assert 0 < meta["checked_coordinates"] < env.obs_dim
    assert meta["observation_max_deviation"] < 1e-5 and meta["camera"] == 2


def test_a_dataset_too_big_to_load_is_refused_before_loading(rendered, monkeypatch):
    from urlb.data import memory
    from urlb.data.datasets import dataset_bytes

    _, pixels = rendered
    size = dataset_bytes(pixels)
    assert size > sum(f.stat().st_size for f in pixels.glob("*.npy")) * 0.99  # the fields' files
    monkeypatch.setattr(memory, "available_memory", lambda device: size)
    memory.check_dataset_fits(pixels, size // 2, torch.device("cpu"))
    with pytest.raises(memory.OversizeError, match="use a smaller dataset .*; nothing was loaded"):
        memory.check_dataset_fits(pixels, size, torch.device("cpu"))
