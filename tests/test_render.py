"""Frames of chosen worlds and the MP4 writer (MuJoCo's renderer, headless EGL)."""

from __future__ import annotations

import imageio.v3 as iio
import numpy as np
import torch

from envs import make_env
from envs.render import FrameRenderer, rollout_video, tile


def test_frames_show_each_world_and_follow_the_state():
    env = make_env("walker", 3, backend="cpu", seed=0)
    env.reset()
    renderer = FrameRenderer(env, height=64, width=80)
    frames = renderer.render([0, 2])
    assert frames.shape == (2, 64, 80, 3) and frames.dtype == np.uint8
    assert frames.std() > 5  # an actual scene, not a blank buffer
    assert not np.array_equal(frames[0], frames[1])  # different random initial poses
    for _ in range(20):
        env.step(torch.ones(3, 6))
    later = renderer.render([0])
    assert not np.array_equal(later[0], frames[0])
    renderer.close()


def test_tile_places_frames_in_a_grid():
    frames = np.stack([np.full((2, 3, 3), i, dtype=np.uint8) for i in range(3)])
    grid = tile(frames, columns=2)
    assert grid.shape == (4, 6, 3)
    assert grid[0, 0, 0] == 0 and grid[0, 3, 0] == 1 and grid[2, 0, 0] == 2 and grid[2, 3, 0] == 0


def test_rollout_video_writes_a_readable_mp4(tmp_path):
    env = make_env("quadruped", 2, backend="cpu", seed=0)
    path = rollout_video(
        env, lambda obs: torch.zeros(2, 12), steps=9, path=tmp_path / "q.mp4", height=48, width=64
    )
    video = np.stack(list(iio.imiter(path)))
    assert video.shape[0] == 10 and video.shape[1:3] == (48, 128)
