"""urlb: reward-free RL pretraining on batched MuJoCo (the URLB protocol).

``urlb.make_env`` is the entry to the batched environments (see :mod:`envs`).
"""

from envs import TASKS, make_env

__all__ = ["TASKS", "make_env"]
