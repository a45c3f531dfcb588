"""The gymnasium and torchrl views of a BatchedEnv (cpu backend, walker: fast)."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.vector import AutoresetMode
from torchrl.envs.utils import check_env_specs

from envs import make_env
from envs.adapters import GymVectorEnv, TorchRLEnv

N = 3
TASK = "walker_stand"


def _env(seed: int = 0):
    return make_env(TASK, num_envs=N, backend="cpu", seed=seed)


def _end_soon(env, worlds) -> torch.Tensor:
    """Put ``worlds`` one step from the time limit (others at step 0); returns the mask."""
    mask = torch.zeros(N, dtype=torch.bool)
    mask[list(worlds)] = True
    env.set_step_count(torch.where(mask, env.episode_steps - 1, 0))
    return mask


# -- gymnasium --------------------------------------------------------------------------
def test_gym_spaces():
    env = _env()
    venv = GymVectorEnv(env)
    assert isinstance(venv, gym.vector.VectorEnv)
    assert venv.num_envs == N
    assert venv.metadata["autoreset_mode"] == AutoresetMode.SAME_STEP
    assert venv.single_observation_space == gym.spaces.Box(-np.inf, np.inf, (env.obs_dim,), np.float32)
    assert venv.single_action_space == gym.spaces.Box(-1, 1, (env.action_dim,), np.float32)
    assert venv.observation_space.shape == (N, env.obs_dim)
    assert venv.observation_space.dtype == np.float32
    assert venv.action_space.shape == (N, env.action_dim)
    assert venv.action_space.dtype == np.float32
    assert np.all(venv.action_space.low == -1) and np.all(venv.action_space.high == 1)
    venv.close()
    assert venv.closed


def test_gym_rollout():
    env = _env()
    venv = GymVectorEnv(env)
    obs, info = venv.reset(seed=0)
    assert obs.shape == (N, env.obs_dim) and obs.dtype == np.float32
    assert obs in venv.observation_space
    assert info == {}
    venv.action_space.seed(0)
    for _ in range(4):
        prev = obs
        # float64 actions are converted to the env's float32.
        action = venv.action_space.sample().astype(np.float64)
        obs, rewards, terminations, truncations, infos = venv.step(action)
        assert obs.shape == (N, env.obs_dim) and obs.dtype == np.float32
        assert not np.array_equal(obs, prev)
        assert rewards.shape == (N,) and rewards.dtype == np.float64
        assert terminations.shape == (N,) and terminations.dtype == np.bool_ and not terminations.any()
        assert truncations.shape == (N,) and truncations.dtype == np.bool_ and not truncations.any()
        assert "final_obs" not in infos and "_final_obs" not in infos
        task_reward = infos["task_reward"]
        assert task_reward.shape == (N, len(env.task_names)) and task_reward.dtype == np.float32
        assert infos["_task_reward"].all()
        np.testing.assert_allclose(rewards, task_reward[:, env.task_names.index(TASK)], rtol=1e-6)


def test_gym_episode_end_matches_env():
    """The adapter's same-step autoreset results are the env's own, laid out as gymnasium does."""
    env, ref = _env(seed=7), _env(seed=7)
    venv = GymVectorEnv(env)
    obs, _ = venv.reset()
    ref_obs = ref.reset()["observation"]
    np.testing.assert_array_equal(obs, ref_obs.numpy())
    mask = _end_soon(env, [0, 2])
    _end_soon(ref, [0, 2])
    action = np.random.default_rng(0).uniform(-1, 1, (N, env.action_dim)).astype(np.float32)
    obs, rewards, terminations, truncations, infos = venv.step(action)
    out = ref.step(torch.from_numpy(action))

    np.testing.assert_array_equal(truncations, mask.numpy())
    assert not terminations.any()
    np.testing.assert_array_equal(obs, out["observation"].numpy())
    np.testing.assert_array_equal(rewards, out["reward"].numpy().astype(np.float64))
    np.testing.assert_array_equal(infos["task_reward"], out["task_reward"].numpy())

    np.testing.assert_array_equal(infos["_final_obs"], mask.numpy())
    final_obs = infos["final_obs"]
    assert final_obs.dtype == object and final_obs.shape == (N,)
    next_obs = out["next_observation"].numpy()
    for i in range(N):
        if mask[i]:
            assert final_obs[i].dtype == np.float32
            np.testing.assert_array_equal(final_obs[i], next_obs[i])
            # obs is the reset observation, not the final one.
            assert not np.allclose(obs[i], final_obs[i])
        else:
            assert final_obs[i] is None
            np.testing.assert_array_equal(obs[i], next_obs[i])
    np.testing.assert_array_equal(infos["_final_info"], mask.numpy())
    np.testing.assert_array_equal(infos["final_info"]["_task_reward"], mask.numpy())
    np.testing.assert_array_equal(
        infos["final_info"]["task_reward"][mask.numpy()], out["task_reward"].numpy()[mask.numpy()]
    )

    # The ended worlds really were reset: their next transition is step 1 of a new episode
    # and continues from ``obs``, just as in the directly driven env.
    obs2, _, _, truncations2, infos2 = venv.step(action)
    out2 = ref.step(torch.from_numpy(action))
    assert not truncations2.any() and "final_obs" not in infos2
    np.testing.assert_array_equal(out2["step_count"].numpy(), np.where(mask.numpy(), 1, 2))
    np.testing.assert_array_equal(obs2, out2["observation"].numpy())


def test_gym_seeding_reproduces():
    venv = GymVectorEnv(_env(seed=0))
    action = np.random.default_rng(1).uniform(-1, 1, (N, venv.env.action_dim)).astype(np.float32)

    def run(seed):
        obs, _ = venv.reset(seed=seed)
        trajectory = [obs]
        for _ in range(3):
            trajectory.append(venv.step(action)[0])
        return np.stack(trajectory)

    a, b, c = run(3), run(3), run(4)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a[0], c[0])
    # Worlds draw from different seed streams.
    assert not np.allclose(a[0, 0], a[0, 1])


def test_gym_partial_reset_touches_only_masked_worlds():
    venv = GymVectorEnv(_env())
    first, _ = venv.reset(seed=0)
    moved, *_ = venv.step(np.ones((N, venv.env.action_dim), dtype=np.float32))
    obs, _ = venv.reset(options={"reset_mask": np.array([True, False, True])})
    np.testing.assert_array_equal(obs[1], moved[1])
    assert not np.allclose(obs[0], moved[0]) and not np.allclose(obs[0], first[0])  # a new episode
    with pytest.raises(ValueError, match="partial reset_mask"):
        venv.reset(seed=1, options={"reset_mask": np.array([True, False, True])})
    obs, _ = venv.reset(options={"reset_mask": np.ones(N, dtype=bool)})
    assert obs.shape == (N, venv.env.obs_dim)


# -- torchrl ----------------------------------------------------------------------------
def test_torchrl_specs():
    env = _env()
    tenv = TorchRLEnv(env)
    assert tenv.batch_size == torch.Size([N])
    assert tenv.device == env.device
    assert tenv.action_spec.shape == (N, env.action_dim)
    assert torch.all(tenv.action_spec.space.low == -1) and torch.all(tenv.action_spec.space.high == 1)
    assert tenv.observation_spec["observation"].shape == (N, env.obs_dim)
    assert tenv.observation_spec["task_reward"].shape == (N, len(env.task_names))
    assert tenv.reward_spec.shape == (N, 1)
    assert set(tenv.done_keys) == {"done", "terminated", "truncated"}
    check_env_specs(tenv)


def test_torchrl_rollout_shapes():
    env = _env()
    tenv = TorchRLEnv(env)
    tenv.set_seed(0)
    steps = 5
    r = tenv.rollout(max_steps=steps)
    assert r.batch_size == torch.Size([N, steps])
    assert r["action"].shape == (N, steps, env.action_dim)
    assert r["observation"].shape == (N, steps, env.obs_dim)
    assert r["next", "observation"].shape == (N, steps, env.obs_dim)
    assert r["next", "reward"].shape == (N, steps, 1)
    assert r["next", "task_reward"].shape == (N, steps, len(env.task_names))
    for key in ("done", "terminated", "truncated"):
        assert r["next", key].shape == (N, steps, 1) and r["next", key].dtype == torch.bool
        assert not r["next", key].any()
    # Consecutive steps chain: the next step starts from this step's next observation.
    torch.testing.assert_close(r["observation"][:, 1:], r["next", "observation"][:, :-1], rtol=0, atol=0)
    torch.testing.assert_close(
        r["next", "reward"].squeeze(-1), r["next", "task_reward"][..., env.task_names.index(TASK)]
    )


def test_torchrl_episode_end_matches_env():
    """Across a time limit, ("next", "observation") is the final observation and the step after
    starts from the env's reset observation."""
    env, ref = _env(seed=5), _env(seed=5)
    tenv = TorchRLEnv(env)
    td = tenv.reset()
    ref_obs = ref.reset()["observation"]
    torch.testing.assert_close(td["observation"], ref_obs, rtol=0, atol=0)
    mask = _end_soon(env, [1])
    _end_soon(ref, [1])
    steps = 3
    r = tenv.rollout(steps, auto_reset=False, tensordict=td, break_when_any_done=False)
    assert r["next", "done"].squeeze(-1)[:, 0].tolist() == mask.tolist()
    assert r["next", "truncated"].squeeze(-1)[:, 0].tolist() == mask.tolist()
    assert not r["next", "terminated"].any()
    assert not r["next", "done"][:, 1:].any()

    # Replay the rollout's (random) actions on the directly driven env.
    outs = [ref.step(r["action"][:, t].contiguous()) for t in range(steps)]
    for t, out in enumerate(outs):
        torch.testing.assert_close(r["next", "observation"][:, t], out["next_observation"], rtol=0, atol=0)
        torch.testing.assert_close(r["next", "reward"][:, t, 0], out["reward"], rtol=0, atol=0)
        torch.testing.assert_close(r["next", "task_reward"][:, t], out["task_reward"], rtol=0, atol=0)
        if t + 1 < steps:
            # What the next step acted on: the reset observation where the episode ended.
            torch.testing.assert_close(r["observation"][:, t + 1], out["observation"], rtol=0, atol=0)
    assert not torch.allclose(r["observation"][1, 1], r["next", "observation"][1, 0])
    torch.testing.assert_close(r["observation"][0, 1], r["next", "observation"][0, 0], rtol=0, atol=0)


def test_torchrl_partial_reset():
    env = _env()
    tenv = TorchRLEnv(env)
    td = tenv.reset()
    _end_soon(env, [0])
    td = tenv.rand_step(td)
    assert td["next", "done"].squeeze(-1).tolist() == [True, False, False]
    # The ended world's reset observation is served; the others are left as they were.
    nxt, final = td["next"].clone(), td["next", "observation"].clone()
    reset = tenv.reset(nxt.set("_reset", td["next", "done"].clone()))
    assert not reset["done"].any()
    assert not torch.equal(reset["observation"][0], final[0])
    torch.testing.assert_close(reset["observation"][1:], final[1:], rtol=0, atol=0)
    # A world that did not just end is reset on its own when the mask names it.
    before = env.physics_state()["qpos"].clone()
    again = tenv.reset(td["next"].clone().set("_reset", torch.tensor([[False], [True], [False]])))
    after = env.physics_state()["qpos"]
    assert not torch.equal(after[1], before[1])
    torch.testing.assert_close(after[[0, 2]], before[[0, 2]], rtol=0, atol=0)
    assert env.reset().batch_size == (N,) and again["observation"].shape == (N, env.obs_dim)


def test_torchrl_seeding_reproduces():
    tenv = TorchRLEnv(_env(seed=0))
    action = torch.rand(N, tenv.env.action_dim, generator=torch.Generator().manual_seed(0)) * 2 - 1

    def run(seed):
        tenv.set_seed(seed)
        td = tenv.reset()
        trajectory = [td["observation"]]
        for _ in range(3):
            td = tenv.step(td.set("action", action.clone()))
            trajectory.append(td["next", "observation"])
            td = td["next"]
        return torch.stack(trajectory)

    a, b, c = run(11), run(11), run(12)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not torch.allclose(a[0], c[0])


# -- pixel envs --------------------------------------------------------------------------------
def test_both_views_of_a_pixel_env_carry_uint8_frame_stacks():
    env = make_env("walker_walk", 2, backend="cpu", seed=0, pixels={"size": 32})
    tenv = TorchRLEnv(env)
    spec = tenv.observation_spec["observation"]
    assert spec.shape == (2, 9, 32, 32) and spec.dtype == torch.uint8
    check_env_specs(tenv)  # a rollout's frames are in the spec: uint8, in [0, 255]
    rollout = tenv.rollout(3)
    assert rollout["next", "observation"].shape == (2, 3, 9, 32, 32)
    genv = GymVectorEnv(env)
    assert genv.single_observation_space == gym.spaces.Box(0, 255, (9, 32, 32), np.uint8)
    obs, _ = genv.reset(seed=0)
    assert obs.shape == (2, 9, 32, 32) and obs.dtype == np.uint8 and obs in genv.observation_space
    obs, rewards, *_ = genv.step(np.zeros((2, 6), np.float32))
    assert obs in genv.observation_space and rewards.shape == (2,)
