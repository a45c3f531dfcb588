"""Quadruped (dm_control suite ``quadruped``) with URLB's four tasks.

walk/run are the stock suite tasks; stand and jump are URLB's own. All use the suite's
``make_model`` without walls, ball, target, terrain or rangefinders (floor 10 m, or
100 m for run, as the suite's run task builds it; the floor is an infinite plane for
collisions, so only renders differ). Definitions: ../shared/URLB_TASKS.md and
``dm_control/suite/quadruped.py``.
"""

from __future__ import annotations

import math

import mujoco
import numpy as np
import torch

from envs.domains.base import Domain, PhysicsView, object_id, sensor_columns, sensor_slice
from envs.models import load_model
from envs.rewards import tolerance
from envs.tasks import domain_tasks

WALK_SPEED = 0.5  # dm_control _WALK_SPEED
RUN_SPEED = 5.0  # dm_control _RUN_SPEED
JUMP_HEIGHT = 1.0  # URLB quadruped jump _JUMP_HEIGHT
TIME_LIMIT = 20.0
MAX_HEIGHT_TRIES = 10_000  # dm_control gives up after as many 1 cm raises

_S = mujoco.mjtSensor


class Quadruped(Domain):
    name = "quadruped"
    tasks = domain_tasks("quadruped")
    primal_task = "quadruped_walk"
    control_timestep = 0.02
    episode_steps = 1000
    obs_dim = 78
    action_dim = 12
    position_axes = ("x", "y")
    pose_dim = 4  # torso x, y and heading (the torso's forward axis in the floor plane)
    pose_position = (0, 1)

    def __init__(self, task: str | None = None):
        super().__init__(task)
        m = self.model
        self.torso = object_id(m, mujoco.mjtObj.mjOBJ_BODY, "torso")
        root = object_id(m, mujoco.mjtObj.mjOBJ_JOINT, "root")
        self.root_qpos = int(m.jnt_qposadr[root])
        hinges = [j for j in range(m.njnt) if m.jnt_type[j] == mujoco.mjtJoint.mjJNT_HINGE]
        self.hinge_qpos = torch.tensor([int(m.jnt_qposadr[j]) for j in hinges])
        self.hinge_qvel = torch.tensor([int(m.jnt_dofadr[j]) for j in hinges])
        self.velocimeter = sensor_slice(m, "velocimeter")
        self.center_of_mass = sensor_slice(m, "center_of_mass")
        self.imu = sensor_columns(m, (_S.mjSENS_GYRO, _S.mjSENS_ACCELEROMETER))
        self.force_torque = sensor_columns(m, (_S.mjSENS_FORCE, _S.mjSENS_TORQUE))

    def make_model(self, task):
        return load_model("quadruped_run" if task == "quadruped_run" else "quadruped")

    def initialize_episode(self, data, rng):
        # Suite Move.initialize_episode: a normalised Gaussian quaternion, then raise the
        # torso from z = 0 in 1 cm steps, resetting the data each try, until no contacts.
        quat = rng.randn(4)
        quat /= np.linalg.norm(quat)
        model = self.model
        for attempt in range(MAX_HEIGHT_TRIES):
            mujoco.mj_resetData(model, data)
            data.qpos[self.root_qpos : self.root_qpos + 3] = (0.0, 0.0, 0.01 * attempt)
            data.qpos[self.root_qpos + 3 : self.root_qpos + 7] = quat
            mujoco.mj_forward(model, data)
            if data.ncon == 0:
                return
        raise RuntimeError("quadruped reset found no contact-free height in 100 m")

    def observation(self, view: PhysicsView) -> torch.Tensor:
        sd = view.sensordata
        return torch.cat(
            [
                view.qpos[:, self.hinge_qpos],
                view.qvel[:, self.hinge_qvel],
                view.act,
                sd[:, self.velocimeter],
                view.xmat[:, self.torso, 8:9],
                sd[:, self.imu],
                torch.asinh(sd[:, self.force_torque]),
            ],
            dim=1,
        ).float()

    def position(self, view: PhysicsView) -> torch.Tensor:
        return view.xpos[:, self.torso, :2].float()

    def pose(self, view: PhysicsView) -> torch.Tensor:
        # The egocentric observation has no yaw: without it no policy can head in a
        # world direction. R[0,0], R[1,0]: the torso x-axis' world x and y components.
        heading = view.xmat[:, self.torso][:, [0, 3]]
        return torch.cat([view.xpos[:, self.torso, :2], heading], dim=1).float()

    def rewards(self, view: PhysicsView) -> dict[str, torch.Tensor]:
        # _upright_reward(deviation_angle=0): linear tolerance on torso zz, margin 2.
        upright = tolerance(
            view.xmat[:, self.torso, 8], (1.0, math.inf), margin=2.0, sigmoid="linear", value_at_margin=0.0
        )
        forward = view.sensordata[:, self.velocimeter.start]

        def move(speed: float) -> torch.Tensor:
            return tolerance(forward, (speed, math.inf), margin=speed, sigmoid="linear", value_at_margin=0.5)

        height = view.sensordata[:, self.center_of_mass.start + 2]
        jump = tolerance(
            height, (JUMP_HEIGHT, math.inf), margin=JUMP_HEIGHT, sigmoid="linear", value_at_margin=0.5
        )
        out = {
            "quadruped_stand": upright,
            "quadruped_walk": upright * move(WALK_SPEED),
            "quadruped_run": upright * move(RUN_SPEED),
            "quadruped_jump": upright * jump,
        }
        return {k: v.float() for k, v in out.items()}


def mjcf(run: bool = False) -> tuple[bytes, dict[str, bytes]]:
    """The suite quadruped's MJCF (its floor sized for the run task's speed if ``run``) and
    assets, from dm_control (:mod:`envs.models`)."""
    from dm_control.suite import common  # imported here: dm_control sets up OpenGL on import
    from dm_control.suite import quadruped as suite_quadruped

    speed = RUN_SPEED if run else WALK_SPEED
    return suite_quadruped.make_model(floor_size=TIME_LIMIT * speed), common.ASSETS
