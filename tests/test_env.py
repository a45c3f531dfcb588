"""The batched env's contract: API, episodes, seeding, physics state, bad input."""

from __future__ import annotations

import math

import mujoco
import numpy as np
import pytest
import torch
from dm_control.utils import rewards as dmc_rewards

from envs import TASKS, make_env
from envs.registry import make_domain
from envs.rewards import tolerance


def actions(env, seed=0, steps=1):
    g = torch.Generator().manual_seed(seed)
    return [torch.rand(env.num_envs, env.action_dim, generator=g) * 2 - 1 for _ in range(steps)]


# -- names and shapes -----------------------------------------------------------------------
def test_unknown_task_lists_known_ones():
    with pytest.raises(ValueError, match="unknown task 'walker_dance'.*walker_stand.*jaco_reach_top_left"):
        make_env("walker_dance", 2)


def test_unknown_backend_lists_known_ones():
    with pytest.raises(ValueError, match="unknown backend 'mjx'; known: auto, cpu, warp"):
        make_env("walker_stand", 2, backend="mjx")


def test_cpu_backend_refuses_a_gpu_device():
    with pytest.raises(ValueError, match="cpu backend runs on the CPU"):
        make_env("walker_stand", 2, backend="cpu", device="cuda")


@pytest.mark.parametrize(
    "task,obs_dim,action_dim,episode",
    [("walker", 24, 6, 1000), ("quadruped", 78, 12, 1000), ("jaco", 55, 9, 250)],
)
def test_shapes_and_dtypes(task, obs_dim, action_dim, episode):
    env = make_env(task, 3, backend="cpu")
    assert (env.obs_dim, env.action_dim, env.episode_steps) == (obs_dim, action_dim, episode)
    td = env.reset()
    assert td["observation"].shape == (3, obs_dim) and td["observation"].dtype == torch.float32
    td = env.step(torch.zeros(3, action_dim))
    assert td["task_reward"].shape == (3, 4) and td["task_reward"].dtype == torch.float32
    assert td["reward"].shape == (3,)
    assert not td["terminated"].any() and not td["truncated"].any()
    assert td["step_count"].tolist() == [1, 1, 1]


def test_task_env_reward_is_its_column_and_domain_env_has_none():
    env = make_env("walker_walk", 4, backend="cpu")
    env.reset()
    td = env.step(actions(env)[0])
    np.testing.assert_array_equal(
        td["reward"].numpy(), td["task_reward"][:, env.task_names.index("walker_walk")]
    )
    free = make_env("walker", 4, backend="cpu")
    free.reset()
    td = free.step(actions(free)[0])
    assert torch.all(td["reward"] == 0) and torch.all(td["task_reward"][:, 0] > 0)


def test_control_timesteps_match_dm_control():
    for task, dt, substeps in (("walker", 0.0025, 10), ("quadruped", 0.005, 4), ("jaco", 0.002, 20)):
        domain = make_domain(task)
        assert domain.model.opt.timestep == pytest.approx(dt)
        assert domain.n_substeps == substeps


# -- episodes -------------------------------------------------------------------------------
def test_time_limit_truncates_and_resets_in_the_same_step():
    env = make_env("jaco_reach_top_left", 2, backend="cpu", seed=3)
    env.reset()
    for t in range(1, env.episode_steps + 1):
        td = env.step(torch.zeros(2, env.action_dim))
        assert bool(td["truncated"].all()) == (t == env.episode_steps)
    assert td["done"].all() and not td["terminated"].any()
    assert td["step_count"].tolist() == [250, 250]
    # the observation to act on is a fresh reset, the transition keeps its final state
    assert not torch.allclose(td["observation"], td["next_observation"])
    td = env.step(torch.zeros(2, env.action_dim))
    assert td["step_count"].tolist() == [1, 1] and not td["truncated"].any()


def test_partial_reset_touches_only_chosen_worlds():
    env = make_env("walker_stand", 3, backend="cpu", seed=1)
    env.reset()
    before = env.step(torch.zeros(3, 6))
    after = env.reset(ids=torch.tensor([1]))
    np.testing.assert_array_equal(after["observation"][[0, 2]], before["observation"][[0, 2]])
    assert after["step_count"].tolist() == [1, 0, 1]


def test_step_before_reset_is_an_error():
    env = make_env("walker_stand", 1, backend="cpu")
    with pytest.raises(RuntimeError, match=r"call env.reset\(\)"):
        env.step(torch.zeros(1, 6))


# -- seeding and physics state ---------------------------------------------------------------
def rollout(env, acts):
    obs = [env.reset()["observation"]]
    for a in acts:
        obs.append(env.step(a)["next_observation"])
    return torch.stack(obs)


@pytest.mark.parametrize("task", ["walker_run", "quadruped_jump", "jaco_reach_bottom_left"])
def test_fixed_seed_reproduces_trajectories(task):
    a = make_env(task, 3, backend="cpu", seed=7)
    acts = actions(a, steps=20)
    first = rollout(a, acts)
    again = rollout(make_env(task, 3, backend="cpu", seed=7), acts)
    other = rollout(make_env(task, 3, backend="cpu", seed=8), acts)
    assert torch.equal(first, again)
    assert not torch.allclose(first[0], other[0])
    # worlds get different initial states from one seed
    assert not torch.allclose(first[0, 0], first[0, 1])


def test_world_seeds_do_not_depend_on_the_number_of_worlds():
    small = make_env("quadruped", 2, backend="cpu", seed=5).reset()["observation"]
    large = make_env("quadruped", 5, backend="cpu", seed=5).reset()["observation"]
    assert torch.equal(small, large[:2])


def test_physics_state_round_trip_replays_exactly():
    env = make_env("quadruped_walk", 4, backend="cpu", seed=2)
    env.reset()
    acts = actions(env, steps=10)
    for a in acts[:3]:
        env.step(a)
    saved = env.physics_state()
    first = [env.step(a)["next_observation"] for a in acts[3:]]
    env.set_physics_state(saved)
    second = [env.step(a)["next_observation"] for a in acts[3:]]
    assert all(torch.equal(x, y) for x, y in zip(first, second, strict=True))
    assert set(saved) >= {"qpos", "qvel", "act"} and saved["act"].shape == (4, 12)


def test_set_physics_state_needs_qpos_qvel_act():
    env = make_env("walker_stand", 2, backend="cpu")
    env.reset()
    with pytest.raises(KeyError, match="qvel"):
        env.set_physics_state({"qpos": torch.zeros(2, 9), "act": torch.zeros(2, 0)})
    state = {"qpos": torch.zeros(2, 9), "qvel": torch.zeros(2, 9), "act": torch.zeros(2, 0)}
    with pytest.raises(KeyError, match="unknown physics state field 'warmstart'"):
        env.set_physics_state({**state, "warmstart": torch.zeros(2, 9)})


# -- reset distributions ----------------------------------------------------------------------
def test_quadruped_resets_without_contacts_and_random_orientation():
    domain = make_domain("quadruped")
    env = make_env("quadruped", 16, backend="cpu", seed=0)
    env.reset()
    state = env.physics_state()
    data = mujoco.MjData(domain.model)
    zz = []
    for i in range(16):
        data.qpos[:] = state["qpos"][i].numpy()
        mujoco.mj_forward(domain.model, data)
        assert data.ncon == 0
        # lifted in 1 cm steps from z = 0: one step lower would touch the floor
        assert state["qpos"][i, 2] > 0 and round(float(state["qpos"][i, 2]) * 100) == pytest.approx(
            float(state["qpos"][i, 2]) * 100, abs=1e-6
        )
        zz.append(data.xmat[domain.torso, 8])
    assert min(zz) < 0 < max(zz)
    assert torch.all(state["qvel"] == 0)


def test_walker_reset_samples_joint_ranges():
    domain = make_domain("walker")
    env = make_env("walker", 64, backend="cpu", seed=0)
    env.reset()
    qpos = env.physics_state()["qpos"].numpy()
    m = domain.model
    assert np.all(qpos[:, :2] == 0)  # slides (rootz, rootx) are not randomised
    assert qpos[:, 2].min() < -2 and qpos[:, 2].max() > 2  # rooty uniform in [-pi, pi]
    for j in range(3, m.njnt):
        lo, hi = m.jnt_range[j]
        assert np.all((qpos[:, j] >= lo) & (qpos[:, j] <= hi))


def test_jaco_reset_places_brick_at_corner_and_hand_in_box():
    env = make_env("jaco_reach_bottom_right", 4, backend="cpu", seed=0)
    env.reset()
    view, domain = env.backend.view, env.domain
    brick = view.xpos[:, domain.brick].numpy()
    np.testing.assert_allclose(brick[:, :2], [[0.09, -0.09]] * 4, atol=2e-3)
    tcp = view.site_xpos[:, domain.pinch].numpy()
    assert np.all((tcp >= [-0.1, -0.1, 0.2 - 1e-6]) & (tcp <= [0.1, 0.1, 0.4 + 1e-6]))


# -- actions ------------------------------------------------------------------------------
def test_bad_actions_are_clear_errors():
    env = make_env("walker_stand", 2, backend="cpu")
    env.reset()
    with pytest.raises(ValueError, match=r"shape \(2, 5\); expected \(2, 6\)"):
        env.step(torch.zeros(2, 5))
    with pytest.raises(TypeError, match="dtype torch.float64; expected torch.float32"):
        env.step(torch.zeros(2, 6, dtype=torch.float64))
    with pytest.raises(TypeError, match="torch.Tensor"):
        env.step(np.zeros((2, 6), dtype=np.float32))
    with pytest.raises(RuntimeError, match="NaN or inf"):
        env.step(torch.tensor([[0.0] * 6, [math.nan] + [0.0] * 5]))


def test_out_of_range_actions_are_clipped():
    env = make_env("quadruped_walk", 2, backend="cpu", seed=0)
    env.reset()
    saved = env.physics_state()
    big = torch.full((2, 12), 3.0)
    big[1] = -7.0
    clipped = big.clamp(-1, 1)
    a = env.step(big)["next_observation"]
    env.set_physics_state(saved)
    b = env.step(clipped)["next_observation"]
    assert torch.equal(a, b)


def test_action_rescale_is_float32_affine():
    env = make_env("quadruped", 1, backend="cpu")
    a = torch.tensor([[-1.0, 0.0, 1.0] * 4])
    ctrl = env.action_to_ctrl(a)
    lo = torch.tensor([-1.0, -1.0, -0.8] * 4)
    hi = torch.tensor([1.0, 1.1, 0.8] * 4)
    np.testing.assert_array_equal(ctrl[0].numpy(), (lo + (hi - lo) / 2 * (a[0] + 1)).numpy())
    assert ctrl.dtype == torch.float32 and ctrl[0, 2].item() == pytest.approx(0.8)


# -- the tolerance function -----------------------------------------------------------------
@pytest.mark.parametrize(
    "bounds,margin,sigmoid,value",
    [
        ((1.2, math.inf), 0.6, "gaussian", 0.1),
        ((0.5, math.inf), 0.5, "linear", 0.5),
        ((1, math.inf), 2, "linear", 0),
        ((0, 0.05), 0.05, "gaussian", 0.1),
        ((0, 1), 0, "gaussian", 0.1),
    ],
)
def test_tolerance_matches_dm_control(bounds, margin, sigmoid, value):
    x = np.linspace(-3, 3, 101)
    want = dmc_rewards.tolerance(x, bounds=bounds, margin=margin, sigmoid=sigmoid, value_at_margin=value)
    got = tolerance(torch.as_tensor(x), bounds, margin, sigmoid, value).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-15)


def test_tolerance_hand_values():
    # gaussian: value_at_margin exactly one margin out; linear halfway to zero at margin/2 (v=0)
    x = torch.tensor([1.2, 0.6, 2.0], dtype=torch.float64)
    np.testing.assert_allclose(tolerance(x, (1.2, math.inf), 0.6).numpy(), [1.0, 0.1, 1.0])
    x = torch.tensor([0.0, -1.0, 3.0], dtype=torch.float64)
    np.testing.assert_allclose(tolerance(x, (1.0, math.inf), 2.0, "linear", 0.0).numpy(), [0.5, 0.0, 1.0])


def test_every_task_is_registered_once():
    assert len(TASKS) == 12 and len(set(TASKS)) == 12
