"""The online loop with small parts handed in directly: update-to-data accounting,
determinism, and stopping on a non-finite loss."""

from __future__ import annotations

import json

import pytest
import torch

from agents.ddpg import DDPGAgent
from envs import make_env
from urlb.data.replay import ReplayBuffer
from urlb.loop.online import NonFiniteLossError, OnlineLoop, Schedule, crossed
from urlb.measure.logging import Logger


def make_runner(tmp_path, total=600, updates_per_frame=0.5, snapshots=(), write_snapshot=None, num_envs=2):
    torch.manual_seed(0)
    env = make_env("walker_stand", num_envs, backend="cpu", seed=0)
    eval_env = make_env("walker_stand", 2, backend="cpu", seed=0)
    agent = DDPGAgent(env.obs_dim, env.action_dim, hidden_dim=16, batch_size=16)
    replay = ReplayBuffer(5000, env.num_envs, "cpu", nstep=3)
    schedule = Schedule(
        total_frames=total,
        seed_frames=100,
        updates_per_frame=updates_per_frame,
        eval_every_frames=10_000,
        log_every_frames=100,
        checkpoint_every_frames=0,
        snapshot_frames=tuple(snapshots),
    )
    runner = OnlineLoop(
        env,
        eval_env,
        agent,
        replay,
        Logger(tmp_path, total, use_tensorboard=False, console=False),
        schedule,
        tmp_path,
        seed=0,
        record={"agent": "ddpg"},
        task="walker_stand",
        write_snapshot=write_snapshot,
    )
    return runner


def test_crossed_detects_multiples():
    assert crossed(990, 1010, 1000) and not crossed(1000, 1010, 1000) and crossed(999, 1000, 1000)
    assert not crossed(0, 5000, 0)


@pytest.mark.parametrize("num_envs,ratio", [(2, 0.5), (3, 0.25)])
def test_update_to_data_ratio_is_exact(tmp_path, num_envs, ratio):
    runner = make_runner(tmp_path, total=300, updates_per_frame=ratio, num_envs=num_envs)
    runner.run()
    iterations = -(-300 // num_envs)
    # iterations whose frame count (after the step) has reached the 100 seed frames
    training = sum(1 for k in range(1, iterations + 1) if k * num_envs >= 100)
    assert runner.frame == iterations * num_envs
    assert runner.updates == int(training * num_envs * ratio)


def test_same_seed_same_run(tmp_path):
    first = make_runner(tmp_path / "a").run()
    second = make_runner(tmp_path / "b").run()
    assert first == second
    lines = [json.loads(x) for x in (tmp_path / "a" / "eval.jsonl").read_text().splitlines()]
    assert lines[-1]["return"] == first["walker_stand"] and lines[-1]["frames"] == 600


def test_non_finite_loss_stops_and_keeps_last_good_snapshot(tmp_path):
    written = []
    runner = make_runner(tmp_path, total=1000, snapshots=(200, 800), write_snapshot=written.append)
    update = runner.agent.update

    def poisoned(replay, step):
        metrics = update(replay, step)
        if step > 400:
            metrics["critic_loss"] = torch.tensor(float("nan"))
        return metrics

    runner.agent.update = poisoned
    with pytest.raises(NonFiniteLossError, match=r"non-finite critic_loss at frame \d+"):
        runner.run()
    assert written == [200]  # the snapshot at 800 frames was never written


def test_replay_with_physics_states_round_trips_as_a_dataset(tmp_path):
    from urlb.data.datasets import read_dataset

    runner = make_runner(tmp_path, total=200)
    runner.store_physics = True
    runner.start()
    while runner.frame < 200:
        runner.collect()
    path = runner.replay.save_dataset(
        tmp_path / "dataset", {"domain": "walker", "agent": "random", "seed": 0}
    )
    arrays, meta = read_dataset(path)
    assert meta["domain"] == "walker" and meta["transitions"] == 200
    assert arrays["qpos"].shape == (200, 9) and arrays["act"].shape == (200, 0)
    assert arrays["task_reward"].shape == (200, 4) and arrays["observation"].shape == (200, 24)
    # the stored physics state is the one each observation was made in (its position part:
    # body orientations and torso height)
    env = make_env("walker_stand", 1, backend="cpu")
    env.reset()
    out = env.set_physics_state({k: arrays[k][5:6] for k in ("qpos", "qvel", "act")})
    torch.testing.assert_close(out["observation"][0, :15], arrays["observation"][5, :15])
