"""URLB's domains and tasks, written once: every other task list derives from this one.

Each task has its domain and URLB's expert score (DDPG, 2M frames, from the benchmark's
maintainers; ../shared/BENCHMARKS.md), which normalises returns. The domain classes take
their ``tasks`` from :func:`domain_tasks`, :mod:`envs.registry` builds environments from
:data:`DOMAINS`, and evaluation and reports normalise and order tasks with this table.

A light module: it imports only the standard library (no mujoco, no torch), so configs,
sweeps and reports can read the task list without loading a simulator.
"""

from __future__ import annotations

# domain -> (module, class); imported on demand (jaco pulls in dm_control's composer).
DOMAINS = {
    "walker": ("envs.domains.walker", "Walker"),
    "quadruped": ("envs.domains.quadruped", "Quadruped"),
    "jaco": ("envs.domains.jaco", "Jaco"),
}

# Every URLB task in URLB's order: (task, domain, expert score).
_TABLE = (
    ("walker_stand", "walker", 984.0),
    ("walker_walk", "walker", 971.0),
    ("walker_run", "walker", 796.0),
    ("walker_flip", "walker", 799.0),
    ("quadruped_stand", "quadruped", 920.0),
    ("quadruped_walk", "quadruped", 866.0),
    ("quadruped_run", "quadruped", 888.0),
    ("quadruped_jump", "quadruped", 888.0),
    ("jaco_reach_top_left", "jaco", 191.0),
    ("jaco_reach_top_right", "jaco", 223.0),
    ("jaco_reach_bottom_left", "jaco", 193.0),
    ("jaco_reach_bottom_right", "jaco", 203.0),
)

TASKS = tuple(task for task, _, _ in _TABLE)
# URLB's expert scores (DDPG, 2M frames), task -> return.
EXPERT_SCORES = {task: score for task, _, score in _TABLE}
_DOMAIN_OF = {task: domain for task, domain, _ in _TABLE}


def parse_task(task: str) -> tuple[str, str | None]:
    """``walker_run`` -> (``walker``, ``walker_run``); ``walker`` -> (``walker``, None)."""
    if task in DOMAINS:
        return task, None
    if task in _DOMAIN_OF:
        return _DOMAIN_OF[task], task
    known = ", ".join((*DOMAINS, *TASKS))
    raise ValueError(f"unknown task {task!r}; known tasks and domains: {known}")


def domain_tasks(domain: str) -> tuple[str, ...]:
    """The URLB tasks of ``domain`` in URLB order (walker: stand, walk, run, flip; ...)."""
    if domain not in DOMAINS:
        raise ValueError(f"unknown domain {domain!r}; known: {', '.join(DOMAINS)}")
    return tuple(task for task in TASKS if _DOMAIN_OF[task] == domain)


def normalised_score(task: str, episode_return: float) -> float:
    """Return divided by URLB's expert return for ``task``."""
    return episode_return / EXPERT_SCORES[task]
