"""Evaluation episodes.

An evaluation runs ``episodes`` full episodes at once, one per world of a dedicated eval
env, with the agent acting deterministically, and reports the return of every task of
the domain (so reward-free pretraining can log zero-shot task returns). Scores are
normalised by URLB's expert returns with :func:`envs.tasks.normalised_score`; records are
written by :func:`urlb.data.records.append_record`.
"""

from __future__ import annotations

import torch


@torch.no_grad()
def evaluate(env, agent, seed: int) -> dict[str, float]:
    """Mean return per task over one deterministic episode in each of ``env``'s worlds.

    The eval env is reseeded with ``seed`` so an evaluation depends only on the agent
    and the seed (a resumed run evaluates exactly like an uninterrupted one). Episodes start
    from the agent's ``evaluation_state`` (URLB's DIAYN and SMM: one skill for every episode).
    """
    td = env.reset(seed=seed)
    state = agent.evaluation_state(env.num_envs, env.device)
    totals = torch.zeros(env.num_envs, len(env.task_names), device=env.device)
    for _ in range(env.episode_steps):
        action = agent.act(td["observation"], state, explore=False)
        td = env.step(action)
        state = agent.observe(state, td)
        totals += td["task_reward"]
    means = totals.mean(dim=0).tolist()
    return dict(zip(env.task_names, means, strict=True))
