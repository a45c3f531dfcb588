"""Reading the rollouts recorded from URLB's own environment stack (``tests/data/<task>.npz`` of a
source checkout; see tests/data/ORACLE_README.md)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

# The recordings stay with the tests that use them; this module reads them from the checkout.
DATA = Path(__file__).resolve().parents[2] / "tests" / "data"


class Oracle:
    """One task's recorded rollout: ``oracle[field]`` is a numpy array (ORACLE_README's fields)."""

    def __init__(self, task: str, data: Path = DATA):
        self.task = task
        path = Path(data) / f"{task}.npz"
        if not path.exists():
            raise FileNotFoundError(f"no recorded rollout for {task} at {path} (a source checkout has one)")
        with np.load(path) as f:
            self.f = {k: f[k] for k in f.files}
        layout = {}
        for item in self.f["full_state_layout"]:
            key, start, stop = str(item).split(":")
            layout[key] = slice(int(start), int(stop))
        self.layout = layout

    def __getitem__(self, key):
        return self.f[key]

    def state(self, rows) -> dict[str, torch.Tensor]:
        """qpos, qvel, act, warm start and time of ``rows``, as make_env's set_physics_state takes."""
        full = self.f["full_state"][rows]
        take = {"qpos": "qpos", "qvel": "qvel", "act": "act", "qacc_warmstart": "warmstart"}
        state = {ours: torch.as_tensor(full[:, self.layout[theirs]]) for ours, theirs in take.items()}
        state["time"] = torch.as_tensor(full[:, self.layout["time"]][:, 0])
        return state

    def transitions(self, stride: int = 1) -> np.ndarray:
        """Rows t such that row t+1 is a step (not a reset) from row t."""
        first = self.f["first"]
        rows = np.arange(len(first) - 1)
        rows = rows[~first[rows + 1]]
        return rows[::stride]
