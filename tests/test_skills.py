"""Skill measurements (urlb/measure/skills.py) on real environments, and the position plumbing
they read: the env's ``position``, replay's ``next_*`` extras."""

from __future__ import annotations

from functools import partial

import numpy as np
import pytest
import torch

from agents.diayn import DIAYN
from agents.metra import METRA
from agents.sac import SACAgent
from envs import make_env
from urlb.data.replay import ReplayBuffer
from urlb.measure.skills import (
    coverage,
    goal_reaching,
    plot_trajectories,
    sample_goals,
    select_skill,
    skill_rollouts,
)


def test_coverage_counts_distinct_cells():
    positions = torch.tensor([[0.5, 0.5], [0.9, 0.1], [1.5, 0.5], [-0.1, 0.0], [-0.1, -0.0001]])
    # cells (0,0), (0,0), (1,0), (-1,0), (-1,-1)
    assert coverage(positions) == 4
    assert coverage(positions, cell=2.0) == 3  # (0,0), (0,0), (0,0), (-1,0), (-1,-1)
    assert coverage(positions.reshape(1, 5, 2)) == 4
    with pytest.raises(ValueError, match="coverage"):
        coverage(torch.zeros(3, 3))


@pytest.mark.parametrize("domain", ["quadruped", "walker", "jaco"])
def test_position_is_read_from_physics_and_follows_autoreset(domain):
    env = make_env(domain, 2, backend="cpu", seed=0)
    td = env.reset()
    state = env.physics_state()
    if domain == "quadruped":  # free joint: qpos[0:2] is the torso's x-y
        torch.testing.assert_close(td["position"], state["qpos"][:, :2].float())
    assert td["position"].shape == (2, 2) and td["position"].dtype == torch.float32
    for _ in range(env.episode_steps - 1):
        out = env.step(torch.rand(2, env.action_dim) * 2 - 1)
        torch.testing.assert_close(out["position"], out["next_position"])
    out = env.step(torch.rand(2, env.action_dim) * 2 - 1)
    assert bool(out["truncated"].all())
    # position is the new episode's (the worlds' current physics), next_position the final one
    torch.testing.assert_close(out["position"], env.domain.position(env.backend.view))
    assert not torch.equal(out["next_position"], out["position"])


def test_observe_pose_appends_the_global_pose():
    plain = make_env("quadruped", 2, backend="cpu", seed=0)
    posed = make_env("quadruped", 2, backend="cpu", seed=0, observe_pose=True)
    assert (plain.obs_dim, posed.obs_dim) == (78, 82)
    a, b = plain.reset(), posed.reset()
    torch.testing.assert_close(b["observation"][:, :78], a["observation"])
    x_axis = posed.physics_state()["qpos"][:, 3:7]  # torso quaternion (w, x, y, z) -> forward axis
    w, qx, qy, qz = x_axis.double().unbind(1)
    heading = torch.stack([1 - 2 * (qy**2 + qz**2), 2 * (qx * qy + w * qz)], dim=1).float()
    torch.testing.assert_close(b["observation"][:, 78:80], b["position"])
    torch.testing.assert_close(b["observation"][:, 80:], heading)
    out = posed.step(torch.zeros(2, 12))
    torch.testing.assert_close(out["next_observation"][:, 78:80], out["next_position"])
    walker = make_env("walker", 1, backend="cpu", seed=0, observe_pose=True)
    assert walker.obs_dim == 25
    torch.testing.assert_close(walker.reset()["observation"][:, 24], walker.reset()["position"][:, 0])


def test_replay_samples_next_extras_at_the_end_of_the_window():
    buffer = ReplayBuffer(100, num_envs=1, device="cpu", nstep=3)
    for step in range(10):
        value = torch.full((1, 2), float(step))
        buffer.add(
            value.repeat(1, 2),
            torch.zeros(1, 1),
            value.repeat(1, 2) + 1,
            torch.zeros(1, 4),
            torch.tensor([False]),
            torch.tensor([False]),
            extras={"position": value, "next_position": value + 1},
        )
    batch = buffer.sample(64)
    start = batch["position"][:, 0]
    torch.testing.assert_close(batch["next_position"][:, 0], start + 3)  # step t+n-1, as next_observation
    torch.testing.assert_close(batch["next_observation"][:, 0], start + 3)


def metra_agent(obs_dim=82):
    torch.manual_seed(0)
    return SACAgent(
        obs_dim,
        12,
        hidden_dim=32,
        reward_model=partial(METRA, skill_dim=4, hidden_dim=32),
    )


def test_skill_rollouts_are_deterministic_and_start_at_reset():
    env = make_env("quadruped", 3, backend="cpu", seed=0, observe_pose=True)
    agent = metra_agent()
    skills = agent.reward_model.evaluation_skills(3, torch.Generator().manual_seed(0))
    first = skill_rollouts(env, agent, skills, seed=5, steps=40)
    again = skill_rollouts(env, agent, skills, seed=5, steps=40)
    assert first["positions"].shape == (3, 41, 2) and first["task_returns"].shape == (3, 4)
    torch.testing.assert_close(first["positions"], again["positions"])
    torch.testing.assert_close(first["positions"][:, 0], env.reset(seed=5)["position"])
    # different skills steer the same start differently
    assert not torch.allclose(first["positions"][0, -1], first["positions"][1, -1])
    with pytest.raises(ValueError, match="one world per skill"):
        skill_rollouts(env, agent, skills[:2], seed=5)


def test_select_skill_picks_the_best_rollout():
    env = make_env("quadruped_walk", 4, backend="cpu", seed=0, observe_pose=True)
    agent = metra_agent()
    candidates = agent.reward_model.finetune_candidates(4, torch.Generator().manual_seed(1))
    skill, returns = select_skill(env, agent, candidates, "quadruped_walk", seed=2)
    best = int(returns.argmax())
    assert torch.equal(skill, candidates[best])
    rerun = skill_rollouts(env, agent, candidates, seed=2)["task_returns"][
        :, env.task_names.index("quadruped_walk")
    ]
    torch.testing.assert_close(rerun, returns)


def test_goal_reaching_reports_distances_and_success_rates():
    env = make_env("quadruped", 3, backend="cpu", seed=0, observe_pose=True)
    goals = sample_goals(3, extent=5.0, seed=0)
    result = goal_reaching(env, metra_agent(), goals, seed=1, steps=20)
    start = env.reset(seed=1)["position"]
    assert result["final_distance"].shape == (3,)
    assert bool((result["min_distance"] <= (start - goals).norm(dim=1) + 1e-6).all())
    assert 0.0 <= result["success_within_3"] <= 1.0 and "success_within_1" in result
    blind = make_env("quadruped", 3, backend="cpu", seed=0)
    with pytest.raises(ValueError, match="observe_pose"):
        goal_reaching(blind, metra_agent(obs_dim=78), goals, seed=1, steps=5)
    diayn = SACAgent(82, 12, hidden_dim=8, reward_model=partial(DIAYN, skill_dim=4, hidden_dim=8))
    with pytest.raises(ValueError, match="METRA"):
        goal_reaching(env, diayn, goals, seed=1, steps=5)


def test_trajectory_picture_is_written_and_returned(tmp_path):
    positions = torch.cumsum(torch.randn(4, 30, 2) * 0.2, dim=1)
    skills = torch.nn.functional.one_hot(torch.arange(4), 4).float()
    rgb = plot_trajectories(positions, skills, tmp_path / "p.png", title="four")
    assert rgb.dtype == np.uint8 and rgb.shape == (500, 500, 3)
    assert (tmp_path / "p.png").stat().st_size > 1000
    assert len({tuple(c) for c in rgb.reshape(-1, 3)[::97]}) > 3  # not a blank canvas


def test_logger_writes_the_picture_to_tensorboard(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from urlb.measure.logging import Logger

    logger = Logger(tmp_path, 10, console=False)
    logger.image("skills/trajectories", np.zeros((8, 6, 3), dtype=np.uint8), 5)
    logger.close()
    events = EventAccumulator(str(tmp_path / "tb"), size_guidance={"images": 0})
    events.Reload()
    (image,) = events.Images("skills/trajectories")
    assert image.step == 5 and (image.height, image.width) == (8, 6)


def test_skill_video_tiles_the_skills_side_by_side(tmp_path):
    import imageio.v2 as imageio

    from urlb.measure.skills import skill_video

    env = make_env("walker", 2, backend="cpu", seed=0)
    agent = SACAgent(24, 6, hidden_dim=8, reward_model=partial(METRA, skill_dim=2, hidden_dim=8))
    skills = agent.reward_model.evaluation_skills(2, torch.Generator().manual_seed(0))
    path = skill_video(env, agent, skills, tmp_path / "s.mp4", seed=0, steps=6, height=32, width=48, every=2)
    frames = imageio.mimread(path)
    assert len(frames) == 4 and frames[0].shape == (32, 96, 3)  # start + every 2nd of 6 steps, 2 tiles
