"""What a domain is: a MuJoCo model, its reset distribution, and its observation and
task-reward functions written in torch over the batched physics state.

A domain never touches a simulator directly. Backends (``envs/backends``) hand it a
:class:`PhysicsView` of torch tensors, one row per world, and the same domain code
serves every backend.
"""

from __future__ import annotations

import abc
import dataclasses
from dataclasses import dataclass

import mujoco
import numpy as np
import torch


@dataclass
class PhysicsView:
    """Torch views of the batched MuJoCo data that observations and rewards read.

    Shapes (``N`` worlds): ``qpos (N, nq)``, ``qvel (N, nv)``, ``act (N, na)``,
    ``xpos (N, nbody, 3)``, ``xmat (N, nbody, 9)`` (row-major 3x3), ``sensordata
    (N, nsensordata)``, ``subtree_angmom (N, nbody, 3)``, ``site_xpos (N, nsite, 3)``,
    ``site_xmat (N, nsite, 9)``, ``xaxis (N, njnt, 3)``. Float64 on the cpu backend,
    float32 on the warp backend. Fields are read as of the last step or reset: after a
    step, positions and velocities are current and acceleration-stage sensors hold
    their value from the last substep, exactly as in dm_control.
    """

    qpos: torch.Tensor
    qvel: torch.Tensor
    act: torch.Tensor
    xpos: torch.Tensor
    xmat: torch.Tensor
    sensordata: torch.Tensor
    subtree_angmom: torch.Tensor
    site_xpos: torch.Tensor
    site_xmat: torch.Tensor
    xaxis: torch.Tensor

    @classmethod
    def from_arrays(cls, arrays: dict[str, torch.Tensor], nworld: int) -> PhysicsView:
        """Views of a backend's per-world arrays, with per-object vectors as ``(N, n, 3)``
        and rotation matrices as ``(N, n, 9)`` whatever layout the backend keeps."""
        vectors, matrices = ("xpos", "subtree_angmom", "site_xpos", "xaxis"), ("xmat", "site_xmat")
        views = {}
        for field in dataclasses.fields(cls):
            array = arrays[field.name]
            if field.name in vectors:
                array = array.view(nworld, -1, 3)
            elif field.name in matrices:
                array = array.view(nworld, -1, 9)
            views[field.name] = array
        return cls(**views)


def sensor_slice(model: mujoco.MjModel, name: str) -> slice:
    """The ``sensordata`` columns of the sensor called ``name``."""
    sid = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_SENSOR, name)
    if sid < 0:
        raise KeyError(f"model has no sensor {name!r}")
    start = int(model.sensor_adr[sid])
    return slice(start, start + int(model.sensor_dim[sid]))


def sensor_columns(model: mujoco.MjModel, types: tuple[int, ...]) -> torch.Tensor:
    """``sensordata`` columns of every sensor whose type is in ``types``, in model order."""
    cols: list[int] = []
    for sid in range(model.nsensor):
        if int(model.sensor_type[sid]) in types:
            start = int(model.sensor_adr[sid])
            cols.extend(range(start, start + int(model.sensor_dim[sid])))
    return torch.tensor(cols, dtype=torch.long)


def object_id(model: mujoco.MjModel, kind: mujoco.mjtObj, name: str) -> int:
    oid = mujoco.mj_name2id(model, kind, name)
    if oid < 0:
        raise KeyError(f"model has no {kind.name[6:].lower()} {name!r}")
    return oid


class Domain(abc.ABC):
    """One URLB domain. Subclasses set the class attributes and implement the methods.

    Attributes:
        name: domain name as URLB spells it (``walker``).
        tasks: the domain's URLB tasks in URLB order (``walker_stand``, ...).
        primal_task: the task whose env URLB uses for reward-free pretraining.
        control_timestep: seconds per env step; ``n_substeps`` physics steps each.
        episode_steps: env steps per episode (the time limit, a truncation).
        obs_dim, action_dim: flat observation and action sizes.
        position_axes: the world axes of :meth:`position` (e.g. ``("x", "y")``).
        pose_dim: columns of :meth:`pose`; ``pose_position``: which of the position's
            axes lead it (for goal states: quadruped ``(0, 1)``, walker ``(0,)``).
    """

    name: str
    tasks: tuple[str, ...]
    primal_task: str
    control_timestep: float
    episode_steps: int
    obs_dim: int
    action_dim: int
    position_axes: tuple[str, str]
    pose_dim: int = 0
    pose_position: tuple[int, ...] = ()

    def __init__(self, task: str | None):
        if task is not None and task not in self.tasks:
            raise ValueError(f"{self.name} has no task {task!r}; known: {', '.join(self.tasks)}")
        self.task = task
        self.model = self.make_model(task)
        self.n_substeps = int(round(self.control_timestep / self.model.opt.timestep))
        lo, hi = self.model.actuator_ctrlrange.T
        # URLB rescales [-1, 1] to the native bounds in float32 (see ../shared/oracle).
        self.action_low = torch.as_tensor(lo, dtype=torch.float32)
        self.action_high = torch.as_tensor(hi, dtype=torch.float32)

    def to(self, device: torch.device) -> Domain:
        """Move the domain's index and constant tensors to ``device`` (once, so that
        observations and rewards never copy them to the GPU step by step)."""
        for name, value in vars(self).items():
            if isinstance(value, torch.Tensor):
                setattr(self, name, value.to(device))
        return self

    @abc.abstractmethod
    def make_model(self, task: str | None) -> mujoco.MjModel:
        """The compiled MuJoCo model that ``task`` (or reward-free pretraining) uses."""

    @abc.abstractmethod
    def observation(self, view: PhysicsView) -> torch.Tensor:
        """Flat observation ``(N, obs_dim)`` in dm_control's key order, float32."""

    @abc.abstractmethod
    def rewards(self, view: PhysicsView) -> dict[str, torch.Tensor]:
        """Every task's reward ``(N,)``, keyed by task name, float32."""

    @abc.abstractmethod
    def position(self, view: PhysicsView) -> torch.Tensor:
        """Where the agent is in the plane its skills are measured in, ``(N, 2)`` float32
        (``position_axes`` names the two world axes): the quantity of state coverage,
        skill pictures and goal reaching. Not part of URLB's observation."""

    def pose(self, view: PhysicsView) -> torch.Tensor:
        """What URLB's egocentric observation leaves out of the global state, ``(N,
        pose_dim)`` float32, appended to the observation by ``make_env(observe_pose=True)``.
        Its first ``len(pose_position)`` columns are the position's axes listed there."""
        return torch.zeros(view.qpos.shape[0], 0, dtype=torch.float32, device=view.qpos.device)

    def make_rng(self, seed: np.random.SeedSequence) -> np.random.RandomState:
        """The random source of one world's resets: a ``RandomState``, as dm_control's
        tasks use, drawn in the same order, so that ``RandomState(k)`` reproduces the
        reset of a dm_control env seeded with ``k``."""
        return np.random.RandomState(np.random.MT19937(seed))

    @abc.abstractmethod
    def initialize_episode(self, data: mujoco.MjData, rng) -> None:
        """Write one world's initial state into ``data`` (already ``mj_resetData``)."""
