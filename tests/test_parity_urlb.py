"""Parity with URLB itself: replay the rollouts recorded from URLB's own environment
stack (tests/data) through our env. For each recorded transition (row t -> t+1) the
worlds are put into the state of row t and stepped with the recorded action; the next
observation and reward must be URLB's. All transitions go through one batched step.
"""

from __future__ import annotations

import mujoco
import numpy as np
import pytest
import torch

from envs import TASKS, make_env
from envs.reference.oracle import Oracle
from envs.registry import make_domain


def replay(task: str, backend: str, stride: int):
    oracle = Oracle(task)
    rows = oracle.transitions(stride)
    env = make_env(task, len(rows), backend=backend, seed=0)
    env.reset()
    env.set_physics_state(oracle.state(rows))
    actions = torch.as_tensor(oracle["action"][rows + 1]).to(env.device)
    return oracle, rows, env, env.step(actions)


@pytest.mark.parametrize("task", TASKS)
def test_cpu_replays_urlb(task):
    oracle, rows, env, td = replay(task, "cpu", stride=1)
    np.testing.assert_allclose(td["next_observation"].numpy(), oracle["obs"][rows + 1], rtol=1e-6, atol=1e-6)
    # jaco rewards reach 1e-37: absolute plus relative tolerance
    np.testing.assert_allclose(td["reward"].numpy(), oracle["reward"][rows + 1], rtol=1e-5, atol=1e-6)
    # the dynamics are URLB's: the next physics state is the recorded one
    got = env.physics_state()
    want = oracle.state(rows + 1)
    for key in ("qpos", "qvel", "act"):
        np.testing.assert_allclose(got[key].numpy(), want[key].numpy(), rtol=0, atol=1e-9)


@pytest.mark.warp
@pytest.mark.parametrize("task", TASKS)
def test_warp_replays_urlb(task):
    oracle, rows, _, td = replay(task, "warp", stride=25)
    want = oracle["obs"][rows + 1]
    np.testing.assert_allclose(td["next_observation"].numpy(), want, rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(td["reward"].numpy(), oracle["reward"][rows + 1], rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("task", TASKS)
def test_reset_rows_match(task):
    """A reset row's observation is a forward pass at the recorded state, and our reset
    with dm_control's RandomState(seed) reproduces URLB's first reset."""
    oracle = Oracle(task)
    resets = np.flatnonzero(oracle["first"])
    env = make_env(task, len(resets), backend="cpu")
    env.reset()
    out = env.set_physics_state(oracle.state(resets))
    np.testing.assert_allclose(out["observation"].numpy(), oracle["obs"][resets], rtol=1e-6, atol=1e-6)

    domain = make_domain(task)
    data = mujoco.MjData(domain.model)
    rng = np.random.RandomState(int(oracle["seed"]))
    for row in resets:
        mujoco.mj_resetData(domain.model, data)
        domain.initialize_episode(data, rng)
        np.testing.assert_allclose(data.qpos, oracle["qpos"][row], atol=1e-12)
        np.testing.assert_allclose(data.qvel, oracle["qvel"][row], atol=1e-12)
