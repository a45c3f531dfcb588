"""Collecting reward-free datasets (urlb/run/collect.py, collect.py): what a dataset holds, where
its episodes end, that its physics states put a world back where the data says, seeding,
the pretrained-policy path, and one-line input errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.errors import MissingConfigException
from omegaconf import OmegaConf

from envs import make_env
from urlb.data.checkpoint import save_snapshot
from urlb.data.datasets import episode_boundaries, read_dataset
from urlb.run.build import build_agent
from urlb.run.collect import RandomPolicy, collect_dataset, collect_from_config

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = str(ROOT / "configs")
WORLDS, EPISODE_STEPS, STEPS = 2, 30, 75  # per world: two whole episodes and half of a third
META = {"domain": "walker", "agent": "random", "policy": "random", "seed": 0, "source": "test"}


def collect_small(path: Path, seed: int = 0) -> Path:
    env = make_env("walker", WORLDS, backend="cpu", device="cpu", seed=seed)
    env.episode_steps = EPISODE_STEPS  # short episodes: the time limit the env truncates at
    policy = RandomPolicy(env.action_dim, torch.Generator().manual_seed(seed))
    return collect_dataset(env, policy, WORLDS * STEPS, path, META | {"seed": seed})


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return read_dataset(collect_small(tmp_path_factory.mktemp("collect") / "walker_random"))


def test_manifest_and_fields(dataset):
    arrays, meta = dataset
    frames = WORLDS * STEPS
    tasks = ["walker_stand", "walker_walk", "walker_run", "walker_flip"]
    assert meta == META | {
        "frames": frames,
        "transitions": frames,
        "num_envs": WORLDS,
        "task_names": tasks,
        "episode_steps": EPISODE_STEPS,
    }
    shapes = {name: tuple(value.shape) for name, value in arrays.items()}
    assert shapes == {
        "observation": (frames, 24),
        "next_observation": (frames, 24),
        "action": (frames, 6),
        "task_reward": (frames, len(tasks)),  # every task, for relabelling
        "terminated": (frames,),
        "truncated": (frames,),
        "qpos": (frames, 9),
        "qvel": (frames, 9),
        "act": (frames, 0),  # walker has no actuator state
        "position": (frames, 2),
        "next_position": (frames, 2),
        "world": (frames,),
        "step": (frames,),
    }
    assert arrays["qpos"].dtype == torch.float64
    assert bool((arrays["action"].abs() <= 1).all()) and float(arrays["action"].std()) > 0.5


def test_episodes_end_at_the_time_limit_and_between_worlds(dataset):
    arrays, _ = dataset
    starts, ends = episode_boundaries(arrays)
    per_world = [(0, 30), (30, 60), (60, 75)]  # the third episode is cut by the end of collection
    expected = [(s + w * STEPS, e + w * STEPS) for w in range(WORLDS) for s, e in per_world]
    assert list(zip(starts.tolist(), ends.tolist(), strict=True)) == expected
    assert arrays["truncated"].nonzero().squeeze(1).tolist() == [29, 59, 104, 134]
    assert not bool(arrays["terminated"].any())
    # Inside an episode s' of a row is s of the next; across an episode end the next row is a reset.
    chained = (arrays["next_observation"][:-1] == arrays["observation"][1:]).all(1)
    inside = torch.ones(len(chained), dtype=torch.bool)
    inside[ends[:-1] - 1] = False
    assert bool(chained[inside].all()) and not bool(chained[~inside].any())


def test_physics_state_reproduces_observation_and_rewards(dataset):
    """qpos/qvel/act of row t put a fresh world where observation t was made; those of row
    t + 1 give the rewards of transition t (ExORL-style relabelling from physics)."""
    arrays, _ = dataset
    rows = torch.tensor([0, 1, 29, 30, 74, 75, 100, 149])  # first steps, resets, last steps
    fresh = make_env("walker", len(rows), backend="cpu", device="cpu", seed=7)
    fresh.reset()
    out = fresh.set_physics_state({key: arrays[key][rows] for key in ("qpos", "qvel", "act")})
    torch.testing.assert_close(out["observation"], arrays["observation"][rows], rtol=0, atol=1e-6)
    inside = torch.tensor([0, 1, 30, 75, 100, 147, 148, 140])  # rows whose next row continues
    out = fresh.set_physics_state({key: arrays[key][inside + 1] for key in ("qpos", "qvel", "act")})
    torch.testing.assert_close(out["task_reward"], arrays["task_reward"][inside], rtol=0, atol=1e-6)


def test_collection_is_seeded(dataset, tmp_path):
    again, _ = read_dataset(collect_small(tmp_path / "again"))
    other, _ = read_dataset(collect_small(tmp_path / "other", seed=1))
    arrays, _ = dataset
    assert all(torch.equal(again[name], arrays[name]) for name in arrays)
    assert not torch.equal(other["action"], arrays["action"])
    assert not torch.equal(other["qpos"][0], arrays["qpos"][0])  # the reset draws differ too


def config(tmp_path: Path, *overrides: str):
    with initialize_config_dir(config_dir=CONFIGS, version_base=None):
        return compose(
            "collect", overrides=["backend=cpu", "device=cpu", f"out={tmp_path / 'data'}", *overrides]
        )


def pretrained_snapshot(path: Path, agent: str = "diayn", domain: str = "walker") -> Path:
    """A snapshot as ``urlb.run.pretrain`` writes it, of an untrained debug-sized agent."""
    with initialize_config_dir(config_dir=CONFIGS, version_base=None):
        cfg = compose("pretrain", overrides=[f"agent={agent}", "preset=debug"])
    env = make_env(domain, 1, backend="cpu", device="cpu")
    model = build_agent(cfg.agent, env, torch.device("cpu"))
    agent_cfg = OmegaConf.to_container(cfg.agent, resolve=True)
    payload = {"agent": model.state_dict(), "config": {"agent": agent_cfg}, "agent_name": agent}
    return save_snapshot(path, payload | {"domain": domain, "seed": 3, "frames": 2000})


def test_snapshot_policy_collects_with_the_agents_skills(tmp_path):
    snapshot = pretrained_snapshot(tmp_path / "snapshot_2000.pt")
    cfg = config(tmp_path, "policy=snapshot", f"snapshot={snapshot}", "frames=120", "num_envs=2")
    arrays, meta = read_dataset(collect_from_config(cfg))
    assert {key: meta[key] for key in ("domain", "agent", "policy", "frames", "seed", "num_envs")} == {
        "domain": "walker",
        "agent": "diayn",
        "policy": "snapshot",
        "frames": 120,
        "seed": 0,
        "num_envs": 2,
    }
    assert meta["snapshot"] == str(snapshot.resolve()) and meta["snapshot_frames"] == 2000
    # DIAYN's one-hot skill rides along, redrawn every 50 steps (the debug agent's schedule).
    skill = arrays["skill"]
    assert skill.shape == (120, 16) and torch.equal(skill.sum(1), torch.ones(120))
    assert bool((skill[:50] == skill[0]).all())  # world 0's first 50 steps


@pytest.mark.parametrize(
    "overrides, error, message",
    [
        (["policy=snapshot"], ValueError, "policy=snapshot needs snapshot=<path"),
        (["snapshot=some.pt"], ValueError, "only read with policy=snapshot"),
        (["policy=expert"], ValueError, "use one of random, snapshot"),
        (["frames=101", "num_envs=2"], ValueError, "choose frames = k \\* 2"),
        (["policy=snapshot", "snapshot={tmp}/missing.pt"], FileNotFoundError, "no snapshot file at"),
        (["policy=snapshot", "snapshot={tmp}/checkpoint.pt"], ValueError, "not a pretraining snapshot"),
        (["policy=snapshot", "snapshot={tmp}/jaco.pt"], ValueError, "collect with env=jaco"),
        (["policy=snapshot", "snapshot={tmp}/pixels.pt"], ValueError, "acts on pixels"),
        (["out={tmp}"], FileExistsError, "already exists and datasets are never overwritten"),
    ],
    ids=[
        "no-snapshot",
        "stray-snapshot",
        "unknown-policy",
        "frames",
        "missing",
        "checkpoint",
        "domain",
        "pixels",
        "out",
    ],
)
def test_bad_inputs_are_one_line_errors(tmp_path, overrides, error, message):
    save_snapshot(tmp_path / "checkpoint.pt", {"frame": 10})  # a resume checkpoint, not a snapshot
    jaco = {"agent": {}, "agent_name": "ddpg", "config": {}, "domain": "jaco", "frames": 1, "seed": 1}
    save_snapshot(tmp_path / "jaco.pt", jaco)
    pixels = jaco | {"domain": "walker", "config": {"obs": {"type": "pixels"}}}
    save_snapshot(tmp_path / "pixels.pt", pixels)
    cfg = config(tmp_path, *(override.format(tmp=tmp_path) for override in overrides))
    with pytest.raises(error, match=message) as raised:
        collect_from_config(cfg)
    assert "\n" not in str(raised.value)
    assert not (tmp_path / "data").exists()


def test_unknown_env_lists_the_domains(tmp_path):
    with pytest.raises(MissingConfigException, match="env/cheetah") as raised:
        config(tmp_path, "env=cheetah")
    assert "walker" in str(raised.value) and "quadruped" in str(raised.value)


def test_entry_point_writes_a_dataset(tmp_path):
    out = tmp_path / "walker_random"
    command = [sys.executable, str(ROOT / "collect.py"), "backend=cpu", "device=cpu", "num_envs=2"]
    command += ["frames=200", "seed=4", f"out={out}"]
    env = {**os.environ, "HYDRA_FULL_ERROR": "0"}
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr
    arrays, meta = read_dataset(out)
    assert (meta["frames"], meta["seed"], meta["agent"], len(arrays["observation"])) == (
        200,
        4,
        "random",
        200,
    )
    assert sorted(path.name for path in tmp_path.iterdir()) == ["walker_random"]  # no logs beside it
