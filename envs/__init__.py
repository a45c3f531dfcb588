"""Batched, dm_control-faithful MuJoCo environments for URLB's domains and tasks.

``make_env`` (:mod:`envs.registry`) builds an environment; ``TASKS`` and ``DOMAINS``
(:mod:`envs.tasks`) list what it can build. They are imported on first use, so that
``import envs.tasks`` reads the task list without loading MuJoCo or torch.
"""

import importlib

__all__ = ["DOMAINS", "TASKS", "make_env"]
_HOMES = {"DOMAINS": "envs.tasks", "TASKS": "envs.tasks", "make_env": "envs.registry"}


def __getattr__(name: str):
    if name in _HOMES:
        return getattr(importlib.import_module(_HOMES[name]), name)
    raise AttributeError(f"module 'envs' has no attribute {name!r}")
