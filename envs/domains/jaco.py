"""Kinova Jaco arm reaching a Duplo brick: URLB's four ``jaco_reach_*`` tasks.

The model is assembled from dm_control's manipulation entities exactly as URLB's
``custom_dmc_tasks/jaco.py`` does (standard arena, ``JacoArm`` + ``JacoHand`` with the
pinch site as tool centre point, arm base offset (0, 0.4, 0), a free ``Duplo`` brick
with a 5 cm target site), then stepped by our backends. The reset reproduces
dm_control's composer initialisers step by step in plain MuJoCo (bit-identical to
``env.reset()`` for the same ``RandomState``; ~6x faster than composer, which
recompiles the model every episode):

1. a grasp closure ``u ~ U(0, 1)``: every finger at ``0.15 + 1.2 u``;
2. ``ToolCenterPointInitializer``: tool centre point uniform in
   [-0.1, 0.1]^2 x [0.2, 0.4], pointing down, solved by damped least-squares IK
   (dm_control's ``qpos_from_site_pose`` constants), with random restarts and rejection
   of self- or ground-colliding poses;
3. ``PropPlacer``: the brick at the task's corner (z 0.001), uniform z rotation, then
   settled under physics with the arm held still (at most 2 s of simulated time).

Reward: ``tol(||tcp - brick||; [0, 0.05], margin 0.05, gaussian, 0.1)``.
"""

from __future__ import annotations

import math

import mujoco
import numpy as np
import torch

from envs.domains.base import Domain, PhysicsView, object_id, sensor_slice
from envs.models import load_model
from envs.rewards import tolerance
from envs.tasks import domain_tasks

CORNERS = {
    "jaco_reach_top_left": (-0.09, 0.09),
    "jaco_reach_top_right": (0.09, 0.09),
    "jaco_reach_bottom_left": (-0.09, -0.09),
    "jaco_reach_bottom_right": (0.09, -0.09),
}
PROP_Z = 0.001
TCP_LOW, TCP_HIGH = (-0.1, -0.1, 0.2), (0.1, 0.1, 0.4)
DOWN_QUATERNION = np.array([0.0, 0.70710678118, 0.70710678118, 0.0])  # workspaces.DOWN_QUATERNION
TARGET_RADIUS = 0.05
GRASP_RANGE = (0.15, 1.35)  # finger joint range
# dm_control.utils.inverse_kinematics.qpos_from_site_pose, as the TCP initializer calls it
IK = dict(
    tol=1e-14,
    rot_weight=2.0,
    reg_threshold=0.1,
    reg_strength=3e-2,
    max_update_norm=2.0,
    progress_thresh=20.0,
    max_steps=100,
)
MAX_IK_ATTEMPTS = 10
MAX_TCP_SAMPLES = 10
MAX_PROP_ATTEMPTS = 20
SETTLE_TIME = 2.0
SETTLE_QVEL_TOL, SETTLE_QACC_TOL = 1e-3, 1e-2


def mjcf() -> tuple[str, dict[str, bytes]]:
    """URLB's jaco reach scene as MJCF and assets, from dm_control's manipulation entities
    (:mod:`envs.models`). Corners differ only in the reset, not the model."""
    from dm_control.entities import props
    from dm_control.manipulation.shared import arenas, cameras, constants, observations, robots, workspaces

    settings = observations.PERFECT_FEATURES
    arena = arenas.Standard()
    arm = robots.make_arm(obs_settings=settings)
    hand = robots.make_hand(obs_settings=settings)
    prop = props.Duplo(
        observable_options=observations.make_options(settings, observations.FREEPROP_OBSERVABLES)
    )
    arm.attach(hand)
    arena.attach_offset(arm, offset=robots.ARM_OFFSET)
    cameras.add_camera_observables(arena, settings, cameras.FRONT_CLOSE)
    workspaces.add_target_site(
        body=prop.mjcf_model.worldbody,
        radius=TARGET_RADIUS,
        visible=False,
        rgba=constants.RED,
        name="target_site",
    )
    arena.add_free_entity(prop)
    for name, low, high, rgba in (
        ("tcp_spawn_area", TCP_LOW, TCP_HIGH, constants.GREEN),
        ("target_spawn_area", (-0.1, -0.1, PROP_Z), (0.1, 0.1, PROP_Z), constants.BLUE),
    ):
        workspaces.add_bbox_site(body=arena.mjcf_model.worldbody, lower=low, upper=high, rgba=rgba, name=name)
    # The brick's per-episode MJCF hook sets its stud radius (a constant for variation 0).
    prop.initialize_episode_mjcf(np.random.RandomState(0))
    # What mjcf.Physics.from_mjcf_model compiles (tests/test_models.py: byte-identical models).
    return arena.mjcf_model.to_xml_string(), arena.mjcf_model.get_assets()


class Jaco(Domain):
    name = "jaco"
    tasks = domain_tasks("jaco")
    primal_task = "jaco_reach_top_left"
    control_timestep = 0.04
    episode_steps = 250
    obs_dim = 55
    action_dim = 9
    position_axes = ("x", "y")  # of the hand's pinch site (observed: the pose adds nothing)

    def __init__(self, task: str | None = None):
        super().__init__(task)
        m = self.model
        self.corner = CORNERS[task or self.primal_task]
        self.pinch = object_id(m, mujoco.mjtObj.mjOBJ_SITE, "jaco_arm/jaco_hand/pinchsite")
        self.brick = object_id(m, mujoco.mjtObj.mjOBJ_BODY, "duplo2x4/")
        arm_joints = [object_id(m, mujoco.mjtObj.mjOBJ_JOINT, f"jaco_arm/joint_{i}") for i in range(1, 7)]
        finger_joints = [
            object_id(m, mujoco.mjtObj.mjOBJ_JOINT, f"jaco_arm/jaco_hand/finger_{i}") for i in (1, 2, 3)
        ]
        self.arm_qpos = np.array([m.jnt_qposadr[j] for j in arm_joints])
        self.arm_qvel = torch.tensor([int(m.jnt_dofadr[j]) for j in arm_joints])
        self.finger_qpos = np.array([m.jnt_qposadr[j] for j in finger_joints])
        # torch copies of the qpos indices, for the observation (moved with the domain)
        self.arm_qpos_index = torch.as_tensor(self.arm_qpos)
        self.finger_qpos_index = torch.as_tensor(self.finger_qpos)
        self.finger_qvel = torch.tensor([int(m.jnt_dofadr[j]) for j in finger_joints])
        self.finger_ctrl = np.array([m.actuator(f"jaco_arm/jaco_hand/finger_{i}").id for i in (1, 2, 3)])
        # Torque sensors are 3-axis at each joint's site; the observation is the component
        # along the joint axis, symlog-squashed (dm_control's JacoArm joints_torque).
        self.torque_cols = torch.tensor(
            [
                list(
                    range(
                        sensor_slice(m, f"jaco_arm/joint_{i}_torque").start,
                        sensor_slice(m, f"jaco_arm/joint_{i}_torque").stop,
                    )
                )
                for i in range(1, 7)
            ]
        )
        self.joint_axis = torch.as_tensor(np.stack([m.jnt_axis[j] for j in arm_joints]))
        self.brick_sensors = [
            sensor_slice(m, f"duplo2x4/{key}")
            for key in ("angular_velocity", "linear_velocity", "orientation", "position")
        ]
        brick_joint = object_id(m, mujoco.mjtObj.mjOBJ_JOINT, "duplo2x4/")
        self.brick_qpos = int(m.jnt_qposadr[brick_joint])
        self.brick_qvel = slice(int(m.jnt_dofadr[brick_joint]), int(m.jnt_dofadr[brick_joint]) + 6)
        self.robot_qpos = slice(0, 9)  # arm then fingers lead qpos and qvel
        # Arm joint wrapping range after IK: limited joints use their range, free ones [0, 2 pi).
        self.arm_low = np.array([m.jnt_range[j][0] if m.jnt_limited[j] else 0.0 for j in arm_joints])
        self.arm_high = np.array([m.jnt_range[j][1] if m.jnt_limited[j] else 2 * math.pi for j in arm_joints])
        self._geom_kind = self._classify_geoms(m)
        self._brick_geoms = np.flatnonzero(m.geom_bodyid == self.brick)
        # The reset toggles flags and contact bits; it works on its own copy of the model.
        self._reset_model = m.__copy__()

    def make_model(self, task):
        return load_model("jaco")

    @staticmethod
    def _classify_geoms(m) -> np.ndarray:
        """Per geom: 0 world/static, 1 arm, 2 hand, 3 free body (the brick)."""
        kind = np.zeros(m.ngeom, dtype=np.int8)
        for g in range(m.ngeom):
            name = mujoco.mj_id2name(m, mujoco.mjtObj.mjOBJ_BODY, int(m.geom_bodyid[g])) or ""
            if name.startswith("jaco_arm/jaco_hand/"):
                kind[g] = 2
            elif name.startswith("jaco_arm/"):
                kind[g] = 1
            elif name.startswith("duplo2x4/"):
                kind[g] = 3
        return kind

    # -- observation and reward ----------------------------------------------------------
    def observation(self, view: PhysicsView) -> torch.Tensor:
        qpos, qvel, sd = view.qpos, view.qvel, view.sensordata
        n = qpos.shape[0]
        arm = qpos[:, self.arm_qpos_index]
        joints_pos = torch.stack([torch.sin(arm), torch.cos(arm)], dim=2).reshape(n, 12)
        torque = (sd[:, self.torque_cols] * self.joint_axis.to(sd)).sum(dim=2)
        joints_torque = torch.sign(torque) * torch.log1p(torque.abs())
        return torch.cat(
            [
                joints_pos,
                joints_torque,
                qvel[:, self.arm_qvel],
                qpos[:, self.finger_qpos_index],
                qvel[:, self.finger_qvel],
                view.site_xpos[:, self.pinch],
                view.site_xmat[:, self.pinch],
                *(sd[:, s] for s in self.brick_sensors),
            ],
            dim=1,
        ).float()

    def position(self, view: PhysicsView) -> torch.Tensor:
        return view.site_xpos[:, self.pinch, :2].float()

    def rewards(self, view: PhysicsView) -> dict[str, torch.Tensor]:
        # The target is the brick body's origin (its target site), not the bounding-box
        # centre that the position observation reports; it is the same for every corner.
        distance = torch.linalg.vector_norm(view.site_xpos[:, self.pinch] - view.xpos[:, self.brick], dim=1)
        reach = tolerance(distance, (0.0, TARGET_RADIUS), margin=TARGET_RADIUS).float()
        return {task: reach for task in self.tasks}

    # -- reset ---------------------------------------------------------------------------
    def initialize_episode(self, data, rng):
        m = self._reset_model
        rng.uniform(0.004647, 0.004647)  # the brick's stud-radius draw (constant, kept for the stream)
        _forward_without_actuation(m, data)
        data.qpos[self.finger_qpos] = GRASP_RANGE[0] + (GRASP_RANGE[1] - GRASP_RANGE[0]) * rng.uniform()
        _forward_without_actuation(m, data)
        data.ctrl[self.finger_ctrl] = 0.0
        self._place_tool_centre_point(m, data, rng)
        self._place_brick(m, data, rng)
        _forward_without_actuation(m, data)

    def _place_tool_centre_point(self, m, data, rng) -> None:
        start = data.qpos[self.arm_qpos].copy()
        for _ in range(MAX_TCP_SAMPLES):
            target = rng.uniform(TCP_LOW, TCP_HIGH)
            if self._solve_ik_with_restarts(m, data, rng, target):
                mujoco.mj_forward(m, data)
                if not self._robot_collides(data):
                    return
            data.qpos[self.arm_qpos] = start
        raise RuntimeError("jaco reset: no collision-free arm pose reached the sampled tool-centre targets")

    def _solve_ik_with_restarts(self, m, data, rng, target) -> bool:
        for _ in range(MAX_IK_ATTEMPTS):
            ok = _site_ik(m, data, self.pinch, self.arm_qpos, target, DOWN_QUATERNION)
            if ok:
                q = data.qpos[self.arm_qpos]
                for i in range(len(q)):
                    while q[i] >= self.arm_high[i]:
                        q[i] -= 2 * math.pi
                    while q[i] < self.arm_low[i]:
                        q[i] += 2 * math.pi
                        if q[i] > self.arm_high[i]:
                            ok = False
                            break
                data.qpos[self.arm_qpos] = q
            if ok:
                return True
            data.qpos[self.arm_qpos] = rng.uniform(self.arm_low, self.arm_high)
        return False

    def _robot_collides(self, data) -> bool:
        kind = self._geom_kind
        for c in _contacts(data):
            if c.dist > 0:
                continue
            a, b = sorted((kind[c.geom1], kind[c.geom2]))
            # arm-arm, arm-hand, or robot against the static world (hand-hand is allowed)
            if (a, b) in ((1, 1), (1, 2)) or (a == 0 and b in (1, 2)):
                return True
        return False

    def _place_brick(self, m, data, rng) -> None:
        geoms = self._brick_geoms
        contype, conaffinity = m.geom_contype[geoms].copy(), m.geom_conaffinity[geoms].copy()
        m.geom_contype[geoms] = 0
        m.geom_conaffinity[geoms] = 0
        mujoco.mj_forward(m, data)
        m.geom_contype[geoms], m.geom_conaffinity[geoms] = contype, conaffinity
        x, y = self.corner
        adr = self.brick_qpos
        for _ in range(MAX_PROP_ATTEMPTS):
            data.qpos[adr : adr + 3] = rng.uniform((x, y, PROP_Z), (x, y, PROP_Z), size=(3,))
            angle = rng.uniform(-math.pi, math.pi)
            quat = np.array(
                [math.cos(abs(angle) / 2), 0.0, 0.0, math.copysign(math.sin(abs(angle) / 2), angle)]
            )
            data.qpos[adr + 3 : adr + 7] = quat / np.linalg.norm(quat)
            mujoco.mj_forward(m, data)
            if not any(c.dist <= 0 and (c.geom1 in geoms or c.geom2 in geoms) for c in _contacts(data)):
                break
        # Settle the brick with the robot held still (dm_control's PropPlacer with
        # settle_physics, which steps as mj_step2 + mj_step1 and re-runs forward after
        # the robot's state is written back).
        start_time = data.time
        robot_qpos = data.qpos[self.robot_qpos].copy()
        robot_qvel = data.qvel[self.robot_qpos].copy()
        while data.time - start_time < SETTLE_TIME:
            mujoco.mj_step2(m, data)
            mujoco.mj_step1(m, data)
            data.qpos[self.robot_qpos] = robot_qpos
            data.qvel[self.robot_qpos] = robot_qvel
            mujoco.mj_forward(m, data)
            if (
                np.abs(data.qvel[self.brick_qvel]).max() < SETTLE_QVEL_TOL
                and np.abs(data.qacc[self.brick_qvel]).max() < SETTLE_QACC_TOL
            ):
                break
        data.time = start_time


def _contacts(data: mujoco.MjData):
    return (data.contact[i] for i in range(data.ncon))


def _forward_without_actuation(m: mujoco.MjModel, data: mujoco.MjData) -> None:
    """dm_control's ``after_reset``: a forward pass with actuation disabled."""
    flag = int(mujoco.mjtDisableBit.mjDSBL_ACTUATION)
    saved = m.opt.disableflags
    m.opt.disableflags = saved | flag
    mujoco.mj_forward(m, data)
    m.opt.disableflags = saved


def _site_ik(m, data, site: int, qpos_ids: np.ndarray, target_pos, target_quat) -> bool:
    """Damped least-squares IK of a site's pose over the joints at ``qpos_ids`` (hinges,
    so qpos and dof indices coincide), as ``dm_control.utils.inverse_kinematics``."""
    jac = np.empty((6, m.nv))
    err = np.empty(6)
    quat, neg, err_quat = np.empty(4), np.empty(4), np.empty(4)
    update = np.zeros(m.nv)
    mujoco.mj_fwdPosition(m, data)
    for _ in range(IK["max_steps"]):
        err[:3] = target_pos - data.site_xpos[site]
        norm = np.linalg.norm(err[:3])
        mujoco.mju_mat2Quat(quat, data.site_xmat[site])
        mujoco.mju_negQuat(neg, quat)
        mujoco.mju_mulQuat(err_quat, target_quat, neg)
        mujoco.mju_quat2Vel(err[3:], err_quat, 1)
        norm += np.linalg.norm(err[3:]) * IK["rot_weight"]
        if norm < IK["tol"]:
            return True
        mujoco.mj_jacSite(m, data, jac[:3], jac[3:], site)
        j = jac[:, qpos_ids]
        hessian, gradient = j.T @ j, j.T @ err
        if norm > IK["reg_threshold"]:
            step = np.linalg.solve(hessian + np.eye(len(qpos_ids)) * IK["reg_strength"], gradient)
        else:
            step = np.linalg.lstsq(hessian, gradient, rcond=-1)[0]
        step_norm = np.linalg.norm(step)
        if norm / step_norm > IK["progress_thresh"]:
            return False
        if step_norm > IK["max_update_norm"]:
            step *= IK["max_update_norm"] / step_norm
        update[qpos_ids] = step
        mujoco.mj_integratePos(m, data.qpos, update, 1)
        mujoco.mj_fwdPosition(m, data)
    return False
