"""C MuJoCo stepped as a multi-threaded batch (``mujoco.batch.Batch``).

The fast default without a GPU. One persistent ``MjData`` per world, stepped on a
thread pool; results are bit-identical to a loop over single ``MjData`` at any thread
count, so a fixed seed reproduces the same trajectories. The torch tensors in
``view`` are zero-copy views (float64) of the batch's bound arrays.
"""

from __future__ import annotations

import os
import warnings

import mujoco
import mujoco.batch
import torch

from envs.backends import BOUND_FIELDS, STATE_KEYS, check_state_keys
from envs.domains.base import PhysicsView


class CpuBackend:
    name = "cpu"
    dtype = torch.float64

    def __init__(self, model: mujoco.MjModel, nworld: int, n_substeps: int, nthread: int | None = None):
        self.device = torch.device("cpu")
        self.n_substeps = n_substeps
        nthread = nthread or min(os.cpu_count() or 1, nworld)
        self.nthread = nthread  # the pool's threads (BatchedEnv keeps its torch work off them)
        self.batch = mujoco.batch.Batch(model, nworld, nthread=nthread, persistent=True)
        self.batch.reset()
        self._arrays = {name: self.batch.bind(name) for name in BOUND_FIELDS}
        with warnings.catch_warnings():
            # Derived fields are read-only outputs of the batch; only state fields (which
            # are writable views of the state rows) are ever written through these tensors.
            warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
            t = {k: torch.from_numpy(v) for k, v in self._arrays.items()}
        self.view = PhysicsView.from_arrays(t, nworld)
        self._ctrl = t["ctrl"]
        self._tensors = t

    def step(self, ctrl: torch.Tensor, render: bool = False) -> None:
        # (render: the pixel env renders a cpu batch itself, from copied poses)
        self._ctrl.copy_(ctrl)
        self.batch.step(nstep=self.n_substeps, stage=mujoco.mjtStage.mjSTAGE_VEL)

    def set_state(self, ids: torch.Tensor, state: dict[str, torch.Tensor]) -> None:
        check_state_keys(state)
        rows = ids.cpu().numpy()
        for key, value in state.items():
            target = self._tensors[key]
            target[ids] = value.to(torch.float64).reshape(target[ids].shape)
        self.batch.forward(rows)

    def get_state(self) -> dict[str, torch.Tensor]:
        return {k: self._tensors[k].clone() for k in STATE_KEYS}

    def world_data(self, world: int) -> tuple[mujoco.MjModel, mujoco.MjData]:
        """One world's model and data (for rendering it with MuJoCo's renderer)."""
        return self.batch.get_model(world), self.batch.get_data(world)


__all__ = ["CpuBackend"]
