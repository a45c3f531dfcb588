"""RGB frames of chosen worlds with MuJoCo's renderer, and an MP4 writer.

This is the inspection path (skill videos, debugging), not the pixel-observation path:
it copies the chosen worlds' state into one ``MjData`` and renders them one by one with
``mujoco.Renderer`` (OpenGL: EGL or OSMesa when headless), so it works the same for
every backend.
"""

from __future__ import annotations

import os
from pathlib import Path

import mujoco
import numpy as np
import torch

# URLB's pixel cameras: 2 (egocentric-ish tracking) for quadruped, 0 otherwise.
DEFAULT_CAMERA = {"walker": 0, "quadruped": 2, "jaco": 0}


class FrameRenderer:
    """Renders worlds of a :class:`envs.env.BatchedEnv` as ``uint8 (k, H, W, 3)`` arrays."""

    def __init__(self, env, height: int = 240, width: int = 320, camera: int | str | None = None):
        if not os.environ.get("MUJOCO_GL") and not os.environ.get("DISPLAY"):
            raise RuntimeError("no display for OpenGL: set MUJOCO_GL=egl (or osmesa) to render headless")
        self.env = env
        model = env.domain.model
        self.camera = DEFAULT_CAMERA[env.domain.name] if camera is None else camera
        self._data = mujoco.MjData(model)
        self._renderer = mujoco.Renderer(model, height=height, width=width)

    def render(self, worlds: list[int] | None = None) -> np.ndarray:
        """Frames of ``worlds`` (default: all) at their current state."""
        model, data = self.env.domain.model, self._data
        state = {k: v.cpu().numpy() for k, v in self.env.physics_state().items()}
        worlds = list(range(self.env.num_envs)) if worlds is None else list(worlds)
        frames = []
        for i in worlds:
            data.qpos[:] = state["qpos"][i]
            data.qvel[:] = state["qvel"][i]
            data.act[:] = state["act"][i]
            mujoco.mj_forward(model, data)
            self._renderer.update_scene(data, camera=self.camera)
            frames.append(self._renderer.render().copy())
        return np.stack(frames)

    def close(self) -> None:
        self._renderer.close()


def tile(frames: np.ndarray, columns: int | None = None) -> np.ndarray:
    """``(k, H, W, 3)`` frames side by side in a grid: ``(rows*H, columns*W, 3)``."""
    k, h, w, c = frames.shape
    columns = columns or k
    rows = -(-k // columns)
    grid = np.zeros((rows * h, columns * w, c), dtype=frames.dtype)
    for i, frame in enumerate(frames):
        r, col = divmod(i, columns)
        grid[r * h : (r + 1) * h, col * w : (col + 1) * w] = frame
    return grid


def write_mp4(frames: np.ndarray | list[np.ndarray], path: str | Path, fps: float = 30.0) -> Path:
    """Write ``(T, H, W, 3)`` uint8 frames as an H.264 MP4 (needs the ``video`` extra:
    imageio with imageio-ffmpeg)."""
    try:
        import imageio.v2 as imageio
    except ImportError as error:  # the video extra is optional
        raise ImportError("writing MP4 needs the video extra: pip install 'urlb[video]'") from error
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    frames = [np.asarray(f, dtype=np.uint8) for f in frames]
    # macro_block_size=1 keeps odd sizes such as 84x84 tiles without resizing.
    with imageio.get_writer(path, fps=fps, codec="libx264", macro_block_size=1) as writer:
        for frame in frames:
            writer.append_data(frame)
    return path


def rollout_video(
    env, policy, steps: int, path: str | Path, worlds: list[int] | None = None, **render_kwargs
) -> Path:
    """Run ``policy(observation) -> action`` for ``steps`` env steps from a reset and
    write the chosen worlds side by side as an MP4 at the control rate."""
    renderer = FrameRenderer(env, **render_kwargs)
    try:
        td = env.reset()
        frames = [tile(renderer.render(worlds))]
        for _ in range(steps):
            with torch.no_grad():
                td = env.step(policy(td["observation"]))
            frames.append(tile(renderer.render(worlds)))
    finally:
        renderer.close()
    return write_mp4(frames, path, fps=1.0 / env.control_timestep)
