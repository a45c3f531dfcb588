"""Batched, dm_control-faithful MuJoCo environments for URLB's domains and tasks."""

from envs.registry import DOMAINS, TASKS, make_env

__all__ = ["DOMAINS", "TASKS", "make_env"]
