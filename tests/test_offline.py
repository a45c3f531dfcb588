"""The offline pretraining loop (urlb/loop/offline.py) with small parts: its schedule in updates,
zero-shot records, snapshots, exact resume from a checkpoint; and the one-line errors of
``pretrain`` for datasets that do not fit the agent or the domain."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig

from agents.pdt import PDTAgent
from envs import make_env
from urlb.data.checkpoint import checkpoint_path, load_snapshot
from urlb.data.datasets import DatasetSampler
from urlb.loop.offline import OfflineLoop, OfflineSchedule, check_dataset
from urlb.measure.logging import Logger
from urlb.run.collect import RandomPolicy, collect_dataset
from urlb.run.spec import agent_spec

ROOT = Path(__file__).resolve().parents[1]
TINY = dict(hidden_dim=16, batch_size=8, context_length=3, eval_context_length=2, z_dim=3, num_layers=1)
TINY |= dict(num_heads=2, warmup_updates=2)


@pytest.fixture(scope="module")
def sampler(tmp_path_factory) -> DatasetSampler:
    env = make_env("walker", 2, backend="cpu", device="cpu", seed=0)
    env.episode_steps = 20
    path = tmp_path_factory.mktemp("offline") / "walker_random"
    collect_dataset(
        env, RandomPolicy(env.action_dim, torch.Generator().manual_seed(0)), 80, path, {"domain": "walker"}
    )
    return DatasetSampler.load(path)


def offline_runner(run_dir: Path, sampler, total: int, snapshots: list) -> OfflineLoop:
    torch.manual_seed(0)
    eval_env = make_env("walker", 2, backend="cpu", device="cpu", seed=0)
    eval_env.episode_steps = 5  # short zero-shot episodes
    agent = PDTAgent(eval_env.obs_dim, eval_env.action_dim, **TINY)
    schedule = OfflineSchedule(total, eval_every_updates=3, log_every_updates=2, checkpoint_every_updates=3)
    schedule.snapshot_updates = (3, 6)  # set after the check: a "killed" run stops at 4
    record = {"agent": "pdt", "domain": "walker", "seed": 0, "phase": "pretrain", "frames": len(sampler)}
    logger = Logger(run_dir, total, use_tensorboard=False, console=False)
    return OfflineLoop(eval_env, agent, sampler, logger, schedule, run_dir, 0, record, snapshots.append)


def records(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "eval.jsonl").read_text().splitlines()]


def test_schedule_in_updates_records_and_snapshots(tmp_path, sampler):
    snapshots = []
    runner = offline_runner(tmp_path, sampler, 6, snapshots)
    returns = runner.run()
    assert runner.updates == 6 and snapshots == [3, 6]
    tasks = ["walker_stand", "walker_walk", "walker_run", "walker_flip"]
    out = records(tmp_path)
    assert [(r["updates"], r["task"]) for r in out] == [(u, t) for u in (3, 6) for t in tasks]
    assert all(r["phase"] == "pretrain" and r["frames"] == 80 for r in out)
    assert [r["return"] for r in out[4:]] == [returns[t] for t in tasks]
    # the state normaliser was fitted to the dataset on the fresh start
    torch.testing.assert_close(runner.agent.obs_mean, sampler.fields["observation"].mean(0))
    header = (tmp_path / "train.csv").read_text().splitlines()[0]
    assert "action_nll" in header and "prior_kl" in header
    assert load_snapshot(checkpoint_path(tmp_path))["updates"] == 6


def test_resume_from_a_checkpoint_matches_an_uninterrupted_run(tmp_path, sampler):
    whole = offline_runner(tmp_path / "whole", sampler, 6, [])
    whole.run()
    killed = offline_runner(tmp_path / "killed", sampler, 4, [])  # checkpoint at 3, records at 3 and 4
    killed.run()
    resumed = offline_runner(tmp_path / "killed", sampler, 6, [])
    resumed.restore(load_snapshot(checkpoint_path(tmp_path / "killed")))
    assert resumed.updates == 3
    assert {r["updates"] for r in records(tmp_path / "killed")} == {3}  # the killed run's 4 is redone
    resumed.run()
    assert records(tmp_path / "killed") == records(tmp_path / "whole")
    for name, value in whole.agent.state_dict().items():
        torch.testing.assert_close(resumed.agent.state_dict()[name], value, msg=name)


def test_snapshots_must_lie_within_the_run():
    with pytest.raises(ValueError, match=r"snapshot_updates \[7\] lie outside 1..offline.updates=6"):
        OfflineSchedule(6, 3, 2, 3, (3, 7))


def test_dataset_checks(sampler):
    observation = sampler.fields["observation"]
    check_dataset(sampler.meta, "walker", 24, observation, "d")
    with pytest.raises(ValueError, match="holds walker data; pretrain with env=walker"):
        check_dataset(sampler.meta, "quadruped", 78, observation, "d")
    with pytest.raises(ValueError, match="24-dim observations, the walker env 25"):
        check_dataset(sampler.meta, "walker", 25, observation, "d")


def test_pretrain_refuses_a_dataset_agent_without_dataset_and_an_online_agent_with_one():
    from urlb.run.pretrain import main as pretrain
    from urlb.run.resolvers import register_resolvers

    register_resolvers()
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base=None):
        for overrides, error in (
            (
                ["agent=pdt"],
                r"agent=pdt pretrains from a dataset: pass dataset=<path>.*collect.py env=walker",
            ),
            (["agent=ddpg", "dataset=somewhere"], "agent=ddpg pretrains online and reads no dataset"),
        ):
            cfg = compose("pretrain", overrides=[*overrides, "preset=debug"], return_hydra_config=True)
            HydraConfig.instance().set_config(cfg)
            assert agent_spec("any", cfg.agent).pretrains_offline == (overrides[0] == "agent=pdt")
            with pytest.raises(ValueError, match=error):
                pretrain(cfg)


def test_each_dataset_agent_has_its_own_offline_budget():
    """``offline.updates`` reads the agent's ``offline_updates`` (issue 19: SUPE restores its
    OPAL checkpoint at 1M updates, PDT trains 50k); the final snapshot follows it; the debug
    preset overrides both."""
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base=None):
        for agent, updates in (("pdt", 50_000), ("supe", 1_000_000), ("ddpg", 50_000)):
            cfg = compose("pretrain", overrides=[f"agent={agent}"])
            assert cfg.offline.updates == updates and cfg.offline.snapshot_updates[-1] == updates
            assert isinstance(cfg.offline.snapshot_updates[-1], int)
            debug = compose("pretrain", overrides=[f"agent={agent}", "preset=debug"])
            assert debug.offline.updates == 40 and list(debug.offline.snapshot_updates) == [20, 40]
