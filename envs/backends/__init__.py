"""Batched simulators. Each backend steps ``nworld`` copies of one MuJoCo model and
exposes the data as a :class:`envs.domains.base.PhysicsView` of torch tensors.

Every backend implements the same small protocol (:class:`Backend`); domain code
(observations, rewards) never knows which one it runs on.
"""

from __future__ import annotations

from typing import Protocol

import torch

from envs.domains.base import PhysicsView


class Backend(Protocol):
    name: str
    device: torch.device
    dtype: torch.dtype
    view: PhysicsView

    def step(self, ctrl: torch.Tensor) -> None:
        """Apply ``ctrl (N, nu)`` for ``n_substeps`` physics steps, then refresh the
        position and velocity stages (dm_control's ``mj_step1``) so that ``view`` holds
        what dm_control's observation would read."""

    def set_state(self, ids: torch.Tensor, state: dict[str, torch.Tensor]) -> None:
        """Write ``qpos``, ``qvel``, ``act`` (and optionally ``qacc_warmstart`` and
        ``time``) of worlds ``ids`` and run ``mj_forward`` on them."""

    def get_state(self) -> dict[str, torch.Tensor]:
        """Copies of every world's ``qpos``, ``qvel``, ``act``, ``qacc_warmstart``, ``time``."""
