"""Episode boundaries and the dataset sampler (urlb/data/datasets.py) on a hand-made dataset whose
episodes are known: windows never cross an episode end, every valid window can be drawn,
draws follow the generator, relabelling picks the named task's column."""

from __future__ import annotations

import pytest
import torch

from urlb.data.datasets import DatasetError, DatasetSampler, episode_boundaries, write_dataset

# Two worlds, world-major. World 0: rows 0-4 truncated at 4, rows 5-11 cut by the world change.
# World 1: rows 12-14 terminated at 14, rows 15-19 cut by the end of the data.
EPISODES = [(0, 5), (5, 12), (12, 15), (15, 20)]
ROWS = 20
META = {"domain": "walker", "agent": "random", "task_names": ["walker_stand", "walker_run"]}


def hand_made() -> dict[str, torch.Tensor]:
    truncated = torch.zeros(ROWS, dtype=torch.bool)
    truncated[4] = True
    terminated = torch.zeros(ROWS, dtype=torch.bool)
    terminated[14] = True
    world = torch.tensor([0] * 12 + [1] * 8)
    step = torch.cat([torch.arange(12), torch.arange(8)])
    episode = torch.cat([torch.full((end - start,), index) for index, (start, end) in enumerate(EPISODES)])
    row = torch.arange(ROWS, dtype=torch.float32)
    return {
        "observation": row[:, None].repeat(1, 3),  # row r observes r: windows show their rows
        "action": -row[:, None],
        "task_reward": torch.stack([row, 100 + row], dim=1),
        "qpos": torch.arange(ROWS * 2, dtype=torch.float64).reshape(ROWS, 2),
        "terminated": terminated,
        "truncated": truncated,
        "world": world,
        "step": step,
        "episode": episode,
    }


def as_pairs(starts: torch.Tensor, ends: torch.Tensor) -> list[tuple[int, int]]:
    return list(zip(starts.tolist(), ends.tolist(), strict=True))


def test_boundaries_from_flags_world_changes_and_the_end():
    assert as_pairs(*episode_boundaries(hand_made())) == EPISODES


def test_boundaries_at_step_jumps():
    arrays = hand_made()
    arrays["step"][8:12] += 100  # rows 8-11 were not stored right after row 7
    assert as_pairs(*episode_boundaries(arrays)) == [(0, 5), (5, 8), (8, 12), (12, 15), (15, 20)]
    del arrays["world"], arrays["step"]  # only the flags: one stream
    assert as_pairs(*episode_boundaries(arrays)) == [(0, 5), (5, 15), (15, 20)]


def test_windows_stay_inside_one_episode_and_cover_every_start():
    sampler = DatasetSampler(hand_made(), META)
    generator = torch.Generator().manual_seed(0)
    windows = sampler.sample_windows(2000, 4, generator)
    assert windows.batch_size == torch.Size([2000, 4])
    assert windows["observation"].shape == (2000, 4, 3) and windows["qpos"].dtype == torch.float64
    rows = windows["observation"][..., 0]
    assert bool((rows.diff(dim=1) == 1).all())  # consecutive rows
    assert bool((windows["episode"] == windows["episode"][:, :1]).all())  # of one episode
    valid = [r for start, end in EPISODES for r in range(start, end - 4 + 1)]
    assert sampler.window_starts(4).tolist() == valid
    assert sorted(set(rows[:, 0].long().tolist())) == valid  # each drawn, and nothing else


def test_window_length_is_checked_against_the_episodes():
    sampler = DatasetSampler(hand_made(), META)
    longest = sampler.sample_windows(8, 7)  # only world 0's second episode is that long
    assert bool((longest["observation"][:, :, 0] == torch.arange(5, 12)).all())
    for length in (0, 8):
        with pytest.raises(ValueError, match="not in 1..7, the longest episode"):
            sampler.sample_windows(8, length)


def test_draws_follow_the_generator():
    sampler = DatasetSampler(hand_made(), META)

    def draw(seed: int) -> torch.Tensor:
        generator = torch.Generator().manual_seed(seed)
        return torch.cat(
            [
                sampler.sample(64, generator)["action"][:, 0],
                sampler.sample_windows(64, 3, generator)["action"][:, 0, 0],
            ]
        )

    assert torch.equal(draw(0), draw(0))
    assert not torch.equal(draw(0), draw(1))


def test_single_transitions_carry_every_field():
    sampler = DatasetSampler(hand_made(), META)
    batch = sampler.sample(500, torch.Generator().manual_seed(0))
    assert batch.batch_size == torch.Size([500]) and set(batch.keys()) == set(hand_made())
    row = batch["observation"][:, 0].long()
    assert torch.equal(batch["qpos"], hand_made()["qpos"][row])
    assert torch.equal(batch["terminated"], row == 14)
    assert len(set(row.tolist())) == ROWS


def test_relabelling_by_task_name_or_column():
    by_name = DatasetSampler(hand_made(), META, task="walker_run")
    windows = by_name.sample_windows(16, 3, torch.Generator().manual_seed(0))
    assert torch.equal(windows["reward"], windows["task_reward"][..., 1])
    assert float(windows["reward"].min()) >= 100
    by_column = DatasetSampler(hand_made(), {}, task=0).sample(16, torch.Generator().manual_seed(0))
    assert torch.equal(by_column["reward"], by_column["observation"][:, 0])
    assert "reward" not in DatasetSampler(hand_made(), META).sample(4).keys()
    with pytest.raises(ValueError, match="its tasks are walker_stand, walker_run"):
        DatasetSampler(hand_made(), META, task="walker_flip")
    with pytest.raises(ValueError, match="pass the column index instead"):
        DatasetSampler(hand_made(), {}, task="walker_run")
    with pytest.raises(ValueError, match="task column 2 is out of range: task_reward has 2 columns"):
        DatasetSampler(hand_made(), {}, task=2)


@pytest.mark.gpu
def test_batches_on_the_chosen_device():
    sampler = DatasetSampler(hand_made(), META, device="cuda", task="walker_stand")
    generator = torch.Generator(device="cuda").manual_seed(0)
    windows = sampler.sample_windows(32, 4, generator)
    assert windows.device.type == "cuda" and windows["reward"].is_cuda
    assert bool((windows["episode"] == windows["episode"][:, :1]).all())
    with pytest.raises(ValueError, match="use torch.Generator\\(device='cuda:0'\\)"):
        sampler.sample(4, torch.Generator())


def test_load_checks_the_files(tmp_path):
    path = write_dataset(tmp_path / "data", hand_made(), META)
    sampler = DatasetSampler.load(path, task="walker_stand")
    assert len(sampler) == ROWS and sampler.meta == META
    (path / "episode.npy").write_bytes(b"corrupt")
    with pytest.raises(DatasetError, match="episode.npy: truncated"):
        DatasetSampler.load(path)
