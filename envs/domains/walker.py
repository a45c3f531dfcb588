"""Planar walker (dm_control suite ``walker``) with URLB's four tasks.

stand/walk/run are the stock suite tasks; flip is URLB's own (``custom_dmc_tasks``):
the stand term times a spin term on the torso subtree's angular momentum about y.
Definitions: ../shared/URLB_TASKS.md and ``dm_control/suite/walker.py``.
"""

from __future__ import annotations

import math

import mujoco
import torch

from envs.domains.base import Domain, PhysicsView, object_id, sensor_slice
from envs.models import load_model
from envs.rewards import tolerance
from envs.tasks import domain_tasks

STAND_HEIGHT = 1.2  # dm_control _STAND_HEIGHT
WALK_SPEED = 1.0  # dm_control _WALK_SPEED
RUN_SPEED = 8.0  # dm_control _RUN_SPEED
SPIN_SPEED = 5.0  # URLB walker flip _SPIN_SPEED


class Walker(Domain):
    name = "walker"
    tasks = domain_tasks("walker")
    primal_task = "walker_stand"
    control_timestep = 0.025
    episode_steps = 1000
    obs_dim = 24
    action_dim = 6
    position_axes = ("x", "z")  # planar: forward and up
    pose_dim = 1  # torso x (orientations and height are observed)
    pose_position = (0,)

    def __init__(self, task: str | None = None):
        super().__init__(task)
        m = self.model
        self.torso = object_id(m, mujoco.mjtObj.mjOBJ_BODY, "torso")
        self.subtreelinvel = sensor_slice(m, "torso_subtreelinvel")
        # (qpos address, sampling range) of every joint the suite's reset randomises, in
        # joint order: limited hinges and slides in their range, free hinges in [-pi, pi].
        hinge, slide = mujoco.mjtJoint.mjJNT_HINGE, mujoco.mjtJoint.mjJNT_SLIDE
        self.random_joints = [
            (int(m.jnt_qposadr[j]), tuple(m.jnt_range[j]) if m.jnt_limited[j] else (-math.pi, math.pi))
            for j in range(m.njnt)
            if m.jnt_type[j] == hinge or (m.jnt_type[j] == slide and m.jnt_limited[j])
        ]

    def make_model(self, task):
        return load_model("walker")

    def initialize_episode(self, data, rng):
        # randomize_limited_and_rotational_joints: limited hinges and slides uniform in
        # range, unlimited hinges uniform in [-pi, pi]; slides unlimited stay at qpos0.
        for adr, (lo, hi) in self.random_joints:
            data.qpos[adr] = rng.uniform(lo, hi)

    def observation(self, view: PhysicsView) -> torch.Tensor:
        n = view.qpos.shape[0]
        orientations = view.xmat[:, 1:, [0, 2]].reshape(n, -1)  # xx, xz of bodies 1..7
        height = view.xpos[:, self.torso, 2:3]
        return torch.cat([orientations, height, view.qvel], dim=1).float()

    def position(self, view: PhysicsView) -> torch.Tensor:
        return view.xpos[:, self.torso][:, [0, 2]].float()

    def pose(self, view: PhysicsView) -> torch.Tensor:
        return view.xpos[:, self.torso, :1].float()

    def rewards(self, view: PhysicsView) -> dict[str, torch.Tensor]:
        height = view.xpos[:, self.torso, 2]
        standing = tolerance(height, (STAND_HEIGHT, math.inf), margin=STAND_HEIGHT / 2)
        upright = (1 + view.xmat[:, self.torso, 8]) / 2
        stand = (3 * standing + upright) / 4
        speed = view.sensordata[:, self.subtreelinvel.start]

        def move(target: float) -> torch.Tensor:
            return tolerance(
                speed, (target, math.inf), margin=target / 2, sigmoid="linear", value_at_margin=0.5
            )

        spin = tolerance(
            view.subtree_angmom[:, self.torso, 1],
            (SPIN_SPEED, math.inf),
            margin=SPIN_SPEED,
            sigmoid="linear",
            value_at_margin=0.0,
        )
        out = {
            "walker_stand": stand,
            "walker_walk": stand * (5 * move(WALK_SPEED) + 1) / 6,
            "walker_run": stand * (5 * move(RUN_SPEED) + 1) / 6,
            "walker_flip": stand * (5 * spin + 1) / 6,
        }
        return {k: v.float() for k, v in out.items()}


def mjcf() -> tuple[bytes, dict[str, bytes]]:
    """The suite walker's MJCF and assets, from dm_control (:mod:`envs.models`)."""
    from dm_control.suite import walker as suite_walker  # imported here: it sets up OpenGL

    return suite_walker.get_model_and_assets()


__all__ = ["Walker"]
