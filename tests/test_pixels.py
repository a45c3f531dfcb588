"""Pixel observations (envs/pixels.py): MuJoCo Warp's renderer against MuJoCo's OpenGL
renderer, the same frames from both backends, and URLB's frame stack and action repeat."""

from __future__ import annotations

import os

import mujoco
import numpy as np
import pytest
import torch

from envs import make_env
from envs.pixels import BatchRenderer
from envs.render import DEFAULT_CAMERA

# Mean absolute difference (0-255 scale) allowed between the ray caster's 84x84 frame and
# mujoco.Renderer's (dm_control's look: shadows, reflections and anti-aliasing, which the
# ray caster does not draw) of the same state. Measured: 4-9 on every domain.
RENDER_TOLERANCE = 12.0


def opengl_frames(env, camera: int, size: int) -> np.ndarray:
    """mujoco.Renderer's (H, W, 3) frames of every world's current state."""
    model, data = env.domain.model, mujoco.MjData(env.domain.model)
    state = {k: v.cpu().numpy() for k, v in env.physics_state().items()}
    renderer = mujoco.Renderer(model, height=size, width=size)
    frames = []
    for i in range(env.num_envs):
        data.qpos[:], data.qvel[:], data.act[:] = state["qpos"][i], state["qvel"][i], state["act"][i]
        mujoco.mj_forward(model, data)
        renderer.update_scene(data, camera=camera)
        frames.append(renderer.render().copy())
    renderer.close()
    return np.stack(frames).astype(np.float64)


@pytest.mark.parametrize("domain", ["walker", "quadruped", "jaco"])
def test_frames_match_mujocos_renderer_of_the_same_state(domain):
    if not os.environ.get("MUJOCO_GL"):
        pytest.skip("needs MUJOCO_GL=egl (or osmesa) for the OpenGL reference")
    env = make_env(domain, 3, backend="cpu", seed=0)
    env.reset()
    for _ in range(25):
        env.step(torch.rand(3, env.action_dim) * 2 - 1)
    frames = BatchRenderer(env, 84, 84).render()
    assert frames.shape == (3, 3, 84, 84) and frames.dtype == torch.uint8
    ours = frames.permute(0, 2, 3, 1).numpy().astype(np.float64)
    reference = opengl_frames(env, DEFAULT_CAMERA[domain], 84)
    own = np.abs(ours - reference).mean(axis=(1, 2, 3))
    assert (own < RENDER_TOLERANCE).all(), own
    # The comparison can tell worlds apart: each frame is closest to its own state's image.
    for i in range(3):
        others = [np.abs(ours[i] - reference[j]).mean() for j in range(3) if j != i]
        assert own[i] < min(others), (domain, i, own[i], others)


def test_warp_backend_renders_the_cpu_backends_image_of_the_same_state():
    cpu = make_env("walker", 2, backend="cpu", seed=3, pixels={})
    warp = make_env("walker", 2, backend="warp", seed=3, pixels={})
    a, b = cpu.reset()["observation"], warp.reset()["observation"]
    assert (a.float() - b.float()).abs().mean() < 0.5  # float64 vs float32 poses
    # The warp step renders inside its graph: the frame equals a standalone render.
    action = torch.full((2, 6), 0.3)
    stepped = warp.step(action)["next_observation"][:, 6:]
    assert torch.equal(stepped, warp.renderer.render())
    assert (stepped.float() - a[:, 6:].float()).abs().mean() > 0.1  # it moved


def test_frame_stack_and_action_repeat_follow_urlb():
    env = make_env("jaco_reach_top_left", 2, backend="cpu", seed=0, pixels={})
    states = make_env("jaco_reach_top_left", 2, backend="cpu", seed=0)
    assert env.obs_dim == (9, 84, 84) and env.episode_steps == 125 and env.action_repeat == 2
    td = env.reset()
    states.reset()
    first = td["observation"]
    assert torch.equal(first[:, :3], first[:, 3:6]) and torch.equal(first[:, 3:6], first[:, 6:])
    generator = torch.Generator().manual_seed(0)
    previous = first
    for step in range(env.episode_steps):
        action = torch.rand(2, env.action_dim, generator=generator) * 2 - 1
        out = env.step(action)
        expected = sum(states.step(action)["task_reward"] for _ in range(2))
        torch.testing.assert_close(out["task_reward"], expected)  # repeated rewards summed
        # The stack shifts by one frame: the old newest two are now the oldest two.
        assert torch.equal(out["next_observation"][:, :6], previous[:, 3:])
        assert bool(out["truncated"].all()) == (step == env.episode_steps - 1)
        previous = out["observation"]
    # The last step ended the episode: the next observation is a fresh stack of the reset
    # frame, not the terminal one, and the physics is the state env's reset state.
    assert torch.equal(out["step_count"], torch.full((2,), 125))
    reset = out["observation"]
    assert torch.equal(reset[:, :3], reset[:, 6:]) and not torch.equal(reset, out["next_observation"])
    torch.testing.assert_close(env.physics_state()["qpos"], states.physics_state()["qpos"])


def test_checkpoint_round_trip_continues_the_same_frames():
    env = make_env("walker", 2, backend="cpu", seed=1, pixels={"size": 48, "frame_stack": 2})
    env.reset()
    for _ in range(3):
        env.step(torch.zeros(2, 6))
    saved = env.state_dict()
    action = torch.full((2, 6), 0.5)
    expected = env.step(action)["observation"]
    other = make_env("walker", 2, backend="cpu", seed=9, pixels={"size": 48, "frame_stack": 2})
    other.reset()
    other.load_state_dict(saved)
    assert torch.equal(other.step(action)["observation"], expected)


def test_bad_pixel_options_are_refused():
    with pytest.raises(ValueError, match="does not divide"):
        make_env("walker", 1, backend="cpu", pixels={"action_repeat": 3})
    with pytest.raises(ValueError, match="pose"):
        make_env("walker", 1, backend="cpu", observe_pose=True, pixels={})
    with pytest.raises(ValueError, match="cameras 0..1"):
        make_env("walker", 1, backend="cpu", pixels={"camera": 7})


@pytest.mark.gpu
def test_pixels_on_cuda_match_the_cpu_backend_and_stay_on_the_gpu():
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    cpu = make_env("quadruped", 4, backend="cpu", seed=2, pixels={})
    gpu = make_env("quadruped", 4, backend="warp", device="cuda", seed=2, pixels={})
    a, b = cpu.reset()["observation"], gpu.reset()["observation"]
    assert b.device.type == "cuda" and b.dtype == torch.uint8
    assert (a.float() - b.cpu().float()).abs().mean() < 0.5
    out = gpu.step(torch.zeros(4, 12, device="cuda"))  # substeps, refresh and render: one graph
    assert out["next_observation"].device.type == "cuda"
    assert torch.equal(out["next_observation"][:, 6:], gpu.renderer.render())
