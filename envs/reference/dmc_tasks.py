"""The test oracle: URLB's tasks as real dm_control environments.

Stock suite tasks come from ``dm_control.suite``. URLB's custom tasks (walker flip,
quadruped stand and jump, the four jaco reaches) are written here with the suite's and
composer's own machinery and URLB's formulas, so that our torch implementation is
compared with an independent, dm_control-computed value.
"""

from __future__ import annotations

import numpy as np
from dm_control import suite
from dm_control.rl import control
from dm_control.suite import common
from dm_control.suite import quadruped as suite_quadruped
from dm_control.suite import walker as suite_walker
from dm_control.utils import rewards

STOCK = {
    "walker_stand": ("walker", "stand"),
    "walker_walk": ("walker", "walk"),
    "walker_run": ("walker", "run"),
    "quadruped_walk": ("quadruped", "walk"),
    "quadruped_run": ("quadruped", "run"),
}


class WalkerFlip(suite_walker.PlanarWalker):
    """URLB walker flip: stand term x spin on the torso subtree's angular momentum."""

    def get_reward(self, physics):
        standing = rewards.tolerance(
            physics.torso_height(),
            bounds=(suite_walker._STAND_HEIGHT, float("inf")),
            margin=suite_walker._STAND_HEIGHT / 2,
        )
        upright = (1 + physics.torso_upright()) / 2
        stand = (3 * standing + upright) / 4
        spin = rewards.tolerance(
            physics.named.data.subtree_angmom["torso"][1],
            bounds=(5.0, float("inf")),
            margin=5.0,
            value_at_margin=0,
            sigmoid="linear",
        )
        return stand * (5 * spin + 1) / 6


class QuadrupedStand(suite_quadruped.Move):
    """URLB quadruped stand: the upright reward alone."""

    def __init__(self, random=None):
        super().__init__(desired_speed=0.0, random=random)

    def get_reward(self, physics):
        return suite_quadruped._upright_reward(physics)


class QuadrupedJump(QuadrupedStand):
    """URLB quadruped jump: upright x centre-of-mass height above 1 m."""

    def get_reward(self, physics):
        height = physics.named.data.sensordata["center_of_mass"][2]
        jump = rewards.tolerance(
            height, bounds=(1.0, float("inf")), margin=1.0, value_at_margin=0.5, sigmoid="linear"
        )
        return suite_quadruped._upright_reward(physics) * jump


def _walker_flip(seed):
    physics = suite_walker.Physics.from_xml_string(*suite_walker.get_model_and_assets())
    return control.Environment(
        physics, WalkerFlip(move_speed=0, random=seed), time_limit=25, control_timestep=0.025
    )


def _quadruped(task_cls, seed):
    xml = suite_quadruped.make_model(floor_size=20 * 0.5)
    physics = suite_quadruped.Physics.from_xml_string(xml, common.ASSETS)
    return control.Environment(physics, task_cls(random=seed), time_limit=20, control_timestep=0.02)


def _jaco(task, seed):
    from dm_control import composer
    from dm_control.composer import initializers
    from dm_control.composer.variation import distributions
    from dm_control.entities import props
    from dm_control.manipulation.shared import arenas, cameras, constants, observations, robots, workspaces

    corner = {
        "jaco_reach_top_left": (-0.09, 0.09),
        "jaco_reach_top_right": (0.09, 0.09),
        "jaco_reach_bottom_left": (-0.09, -0.09),
        "jaco_reach_bottom_right": (0.09, -0.09),
    }[task]

    class Reach(composer.Task):
        """URLB's MTReach: reach a Duplo brick placed at one corner of the workspace."""

        def __init__(self):
            settings = observations.PERFECT_FEATURES
            self._arena = arenas.Standard()
            self._arm = robots.make_arm(obs_settings=settings)
            self._hand = robots.make_hand(obs_settings=settings)
            prop = props.Duplo(
                observable_options=observations.make_options(settings, observations.FREEPROP_OBSERVABLES)
            )
            self._arm.attach(self._hand)
            self._arena.attach_offset(self._arm, offset=robots.ARM_OFFSET)
            self.control_timestep = constants.CONTROL_TIMESTEP
            self._tcp_initializer = initializers.ToolCenterPointInitializer(
                self._hand,
                self._arm,
                position=distributions.Uniform((-0.1, -0.1, 0.2), (0.1, 0.1, 0.4)),
                quaternion=workspaces.DOWN_QUATERNION,
            )
            self._task_observables = cameras.add_camera_observables(
                self._arena, settings, cameras.FRONT_CLOSE
            )
            workspaces.add_target_site(
                body=prop.mjcf_model.worldbody,
                radius=0.05,
                visible=False,
                rgba=constants.RED,
                name="target_site",
            )
            self._target = self._arena.add_free_entity(prop)
            x, y = corner
            self._prop_placer = initializers.PropPlacer(
                props=[prop],
                position=distributions.Uniform((x, y, 0.001), (x, y, 0.001)),
                quaternion=workspaces.uniform_z_rotation,
                settle_physics=True,
            )

        @property
        def root_entity(self):
            return self._arena

        @property
        def task_observables(self):
            return self._task_observables

        def get_reward(self, physics):
            hand = physics.bind(self._hand.tool_center_point).xpos
            target = physics.bind(self._target).xpos
            return rewards.tolerance(np.linalg.norm(hand - target), bounds=(0, 0.05), margin=0.05)

        def initialize_episode(self, physics, random_state):
            self._hand.set_grasp(physics, close_factors=random_state.uniform())
            self._tcp_initializer(physics, random_state)
            self._prop_placer(physics, random_state)

    return composer.Environment(Reach(), time_limit=10.0, random_state=seed)


def make_dmc_env(task: str, seed: int = 0):
    """A dm_control environment computing ``task``'s observation and reward."""
    if task in STOCK:
        return suite.load(*STOCK[task], task_kwargs={"random": seed})
    if task == "walker_flip":
        return _walker_flip(seed)
    if task == "quadruped_stand":
        return _quadruped(QuadrupedStand, seed)
    if task == "quadruped_jump":
        return _quadruped(QuadrupedJump, seed)
    if task.startswith("jaco_reach_"):
        return _jaco(task, seed)
    raise KeyError(task)


def flatten(observation) -> np.ndarray:
    return np.concatenate([np.asarray(v, dtype=np.float64).ravel() for v in observation.values()]).astype(
        np.float32
    )


def native_action(env, action: np.ndarray) -> np.ndarray:
    """URLB's [-1, 1] -> native bounds rescale, in float32."""
    spec = env.action_spec()
    lo, hi = spec.minimum.astype(np.float32), spec.maximum.astype(np.float32)
    return (lo + (hi - lo) / np.float32(2) * (action.astype(np.float32) + np.float32(1))).astype(np.float64)


def get_state(physics) -> dict[str, np.ndarray]:
    """qpos, qvel, act and the solver warm start of a dm_control physics."""
    d = physics.data
    return {
        "qpos": np.array(d.qpos),
        "qvel": np.array(d.qvel),
        "act": np.array(d.act),
        "qacc_warmstart": np.array(d.qacc_warmstart),
    }


def set_state(physics, state: dict[str, np.ndarray]) -> None:
    """Put ``state`` into ``physics`` and run a full forward pass.

    Composer's ``reset_context`` ends with a forward pass with actuation disabled, which
    leaves ``actuator_velocity`` at zero; the next (legacy) step then starts from it. At
    a real reset the arm is at rest so that is harmless, but for a mid-episode state it
    would not be the state's true dynamics, so a plain ``forward`` follows.
    """
    d = physics.data
    with physics.reset_context():
        d.qpos[:] = state["qpos"]
        d.qvel[:] = state["qvel"]
        d.act[:] = state["act"]
    physics.forward()
    d.qacc_warmstart[:] = state["qacc_warmstart"]


__all__ = ["make_dmc_env", "flatten", "native_action", "get_state", "set_state"]
