"""Batched simulators. Each backend steps ``nworld`` copies of one MuJoCo model and
exposes the data as a :class:`envs.domains.base.PhysicsView` of torch tensors.

Every backend implements the same small protocol (:class:`Backend`); domain code
(observations, rewards) never knows which one it runs on.
"""

from __future__ import annotations

import dataclasses
from typing import Protocol

import torch

from envs.domains.base import PhysicsView

# The physics state a backend reads and writes per world (``get_state`` / ``set_state``).
STATE_KEYS = ("qpos", "qvel", "act", "qacc_warmstart", "time")
# Every array a backend exposes as a torch tensor: the state, the controls and the view.
BOUND_FIELDS = tuple(dict.fromkeys((*STATE_KEYS, "ctrl", *(f.name for f in dataclasses.fields(PhysicsView)))))


def check_state_keys(state: dict) -> None:
    """Refuse a physics-state field no backend knows (a typo would otherwise be ignored)."""
    for key in state:
        if key not in STATE_KEYS:
            raise KeyError(f"unknown physics state field {key!r}; known: {', '.join(STATE_KEYS)}")


class Backend(Protocol):
    name: str
    device: torch.device
    dtype: torch.dtype
    view: PhysicsView

    def step(self, ctrl: torch.Tensor, render: bool = False) -> None:
        """Apply ``ctrl (N, nu)`` for ``n_substeps`` physics steps, then refresh the
        position and velocity stages (dm_control's ``mj_step1``) so that ``view`` holds
        what dm_control's observation would read. ``render``: backends that render
        in-step (warp) also run their render hook."""

    def set_state(self, ids: torch.Tensor, state: dict[str, torch.Tensor]) -> None:
        """Write ``qpos``, ``qvel``, ``act`` (and optionally ``qacc_warmstart`` and
        ``time``) of worlds ``ids`` and run ``mj_forward`` on them."""

    def get_state(self) -> dict[str, torch.Tensor]:
        """Copies of every world's ``qpos``, ``qvel``, ``act``, ``qacc_warmstart``, ``time``."""
