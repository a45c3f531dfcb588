"""Evaluation episodes, expert normalisation and evaluation records.

An evaluation runs ``episodes`` full episodes at once, one per world of a dedicated eval
env, with the agent acting deterministically, and reports the return of every task of
the domain (so reward-free pretraining can log zero-shot task returns). Scores are
normalised by URLB's expert returns (DDPG, 2M frames; ../shared/BENCHMARKS.md).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

# URLB's expert scores (DDPG, 2M frames, from the benchmark's maintainers).
EXPERT_SCORES = {
    "walker_stand": 984.0,
    "walker_walk": 971.0,
    "walker_run": 796.0,
    "walker_flip": 799.0,
    "quadruped_stand": 920.0,
    "quadruped_walk": 866.0,
    "quadruped_run": 888.0,
    "quadruped_jump": 888.0,
    "jaco_reach_top_left": 191.0,
    "jaco_reach_top_right": 223.0,
    "jaco_reach_bottom_left": 193.0,
    "jaco_reach_bottom_right": 203.0,
}


def normalised_score(task: str, episode_return: float) -> float:
    """Return divided by URLB's expert return for ``task``."""
    return episode_return / EXPERT_SCORES[task]


@torch.no_grad()
def evaluate(env, agent, seed: int) -> dict[str, float]:
    """Mean return per task over one deterministic episode in each of ``env``'s worlds.

    The eval env is reseeded with ``seed`` so an evaluation depends only on the agent
    and the seed (a resumed run evaluates exactly like an uninterrupted one).
    """
    td = env.reset(seed=seed)
    state = agent.init_state(env.num_envs, env.device)
    totals = torch.zeros(env.num_envs, len(env.task_names), device=env.device)
    for _ in range(env.episode_steps):
        action = agent.act(td["observation"], state, explore=False)
        td = env.step(action)
        state = agent.observe(state, td)
        totals += td["task_reward"]
    means = totals.mean(dim=0).tolist()
    return dict(zip(env.task_names, means, strict=True))


def append_record(path: Path, record: dict) -> None:
    """Append one JSON line (an evaluation record) and flush it to disk."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        f.write(json.dumps(record, sort_keys=True) + "\n")
        f.flush()
