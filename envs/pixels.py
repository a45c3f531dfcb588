"""Pixel observations: MuJoCo Warp's batched ray-cast renderer on both backends, and the
env that turns physics steps into URLB's stacked frames.

One renderer serves every backend (:class:`BatchRenderer`). On the warp backend it
reads the simulation's own ``mjw.Data``, and its BVH refit and render launches join the
step's captured graph (one CUDA graph for the substeps, the pose refresh and the render).
On the cpu backend it copies the pose arrays rendering reads (geom, camera and light
poses) from the C MuJoCo batch into a Warp data of its own on Warp's CPU device, so the
pixels come from the same renderer everywhere.

:class:`PixelEnv` wraps a :class:`envs.env.BatchedEnv` with URLB's pixel protocol: 84x84
RGB from camera 2 for quadruped and 0 otherwise, action repeat 2 (rewards summed) and a
stack of the last 3 frames, as ``uint8 (N, 3 * stack, H, W)`` with channels oldest frame
first (DrQ-v2's frame stack; a reset stacks the reset frame ``stack`` times).

Images follow dm_control's look (skybox, textures, the model's lights; shadows off by
default, configurable) with the differences of a ray caster against OpenGL: no
reflections and no anti-aliasing. ``tests/test_pixels.py`` bounds the mean absolute
difference to ``mujoco.Renderer``'s image of the same state.
"""

from __future__ import annotations

import torch
from tensordict import TensorDict

from envs.backends.warp import _init_warp
from envs.render import DEFAULT_CAMERA

# What the render kernels read from the data besides the model: the poses they place
# geoms, the camera and the lights with (mjw.render and mjw.refit_bvh).
POSE_FIELDS = ("geom_xpos", "geom_xmat", "cam_xpos", "cam_xmat", "light_xpos", "light_xdir")


class BatchRenderer:
    """RGB frames of every world of a batched env, ``uint8 (N, 3, H, W)``.

    Args:
        env: a :class:`envs.env.BatchedEnv` (its backend decides where the poses come from).
        height, width: image size.
        camera: a model camera index or name; default URLB's (2 for quadruped, else 0).
        shadows: cast shadows from the model's lights (dm_control renders them; off by
            default: cheaper, and closer to URLB's images than the ray caster's hard ones).
    """

    def __init__(
        self, env, height: int = 84, width: int = 84, camera: int | str | None = None, shadows=False
    ):
        wp = _init_warp()
        import mujoco_warp as mjw

        self._wp, self._mjw = wp, mjw
        self.env = env
        self.height, self.width = height, width
        model = env.domain.model
        camera = DEFAULT_CAMERA[env.domain.name] if camera is None else camera
        if isinstance(camera, str):
            import mujoco

            index = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_CAMERA, camera)
        else:
            index = int(camera)
        if not 0 <= index < model.ncam:
            raise ValueError(
                f"camera {camera!r}: the {env.domain.name} model has cameras 0..{model.ncam - 1}"
            )
        self.camera = index
        backend = env.backend
        self.device = env.device
        if backend.name == "warp":
            self._m, self._d = backend.m, backend.d
            self._scope = backend._scope
            wp_device = backend._wp_device
            self._poses = None
        else:
            wp_device = "cpu"
            with wp.ScopedDevice(wp_device):
                self._m = mjw.put_model(model)
                # Rendering reads poses only: no contacts or constraints are ever computed here.
                self._d = mjw.make_data(model, nworld=env.num_envs, nconmax=1, njmax=1)
            self._scope = lambda: wp.ScopedDevice(wp_device)
            # (source: the C batch's float64 rows, target: the Warp data's float32 arrays)
            self._poses = [
                (torch.from_numpy(backend.batch.bind(name)), wp.to_torch(getattr(self._d, name)))
                for name in POSE_FIELDS
            ]
        with wp.ScopedDevice(wp_device):
            self.context = mjw.create_render_context(
                model,
                nworld=env.num_envs,
                cam_res=(width, height),
                render_rgb=True,
                render_depth=False,
                render_seg=False,
                cam_active=[index],
                render_skybox=True,
                use_shadows=shadows,
            )
        # Zero-copy torch view of the packed output: one uint32 per pixel, bytes B, G, R, A.
        # The next render overwrites it; frames() copies out of it.
        self.raw = wp.to_torch(self.context.rgb_data).view(torch.uint8).view(env.num_envs, height, width, 4)
        self._graph = None

    def launch(self) -> None:
        """The render's kernel launches (BVH refit, then the ray caster), on the current
        Warp device or stream: what a captured graph records."""
        self._mjw.refit_bvh(self._m, self._d, self.context)
        self._mjw.render(self._m, self._d, self.context)

    def render(self) -> torch.Tensor:
        """Render every world at its current poses and return the frames."""
        if self._poses is not None:
            for source, target in self._poses:
                target.copy_(source.view(target.shape))
        with self._scope():
            if self._graph is None:
                self.launch()  # compiles the kernels before a capture
                with self._wp.ScopedCapture() as capture:
                    self.launch()
                self._graph = capture.graph
            else:
                self._wp.capture_launch(self._graph)
        return self.frames()

    def frames(self) -> torch.Tensor:
        """The last render as ``uint8 (N, 3, H, W)`` RGB, a copy (the buffer is reused)."""
        return self.raw[..., [2, 1, 0]].permute(0, 3, 1, 2).contiguous()


class PixelEnv:
    """A :class:`envs.env.BatchedEnv` seen through a camera: URLB's pixel protocol.

    ``step`` applies each action ``action_repeat`` times (``reward`` and ``task_reward``
    summed over the repeats, as URLB's ActionRepeatWrapper) and returns the keys of
    ``BatchedEnv.step`` with ``observation``/``next_observation`` as ``uint8
    (N, 3 * frame_stack, H, W)`` frame stacks, and the state vector of the next observation
    as ``next_state`` (``reset``: of the observation, as ``state``; what measurements read).
    ``episode_steps`` counts agent steps (500 for a 1000-step task at repeat 2); a frame is
    one control step, so an agent step is ``action_repeat`` frames (URLB's frame count).
    ``position`` and the other keys pass through from the last repeat.

    Args:
        env: the state env to render (its ``observe_pose`` must be off: the pose is not
            in an image).
        size: height and width of the frames (URLB: 84; DreamerV2: 64).
        frame_stack: frames per observation (URLB: 3).
        action_repeat: control steps per action (URLB: 2 for pixels).
        camera, shadows: as :class:`BatchRenderer`.
    """

    def __init__(
        self,
        env,
        size: int = 84,
        frame_stack: int = 3,
        action_repeat: int = 2,
        camera: int | str | None = None,
        shadows: bool = False,
    ):
        if env.observe_pose:
            raise ValueError("observe_pose appends the global pose to state observations; pixels have none")
        if frame_stack < 1 or action_repeat < 1:
            raise ValueError(
                f"frame_stack and action_repeat must be >= 1; got {frame_stack}, {action_repeat}"
            )
        if env.episode_steps % action_repeat:
            raise ValueError(
                f"action_repeat={action_repeat} does not divide the {env.domain.name} episode of "
                f"{env.episode_steps} steps"
            )
        self.env = env
        self.domain, self.backend = env.domain, env.backend
        self.num_envs, self.device = env.num_envs, env.device
        self.task, self.task_names = env.task, env.task_names
        self.action_dim = env.action_dim
        self.observe_pose = False
        self.frame_stack, self.action_repeat = frame_stack, action_repeat
        self.episode_steps = env.episode_steps // action_repeat
        self.control_timestep = env.control_timestep * action_repeat
        self.obs_dim = (3 * frame_stack, size, size)
        self.renderer = BatchRenderer(env, size, size, camera=camera, shadows=shadows)
        # Rendering inside the warp backend's step graph (substeps, pose refresh, render).
        self._in_graph = env.backend.name == "warp" and getattr(env.backend, "_use_graph", False)
        if self._in_graph:
            env.backend.render_hook = self.renderer.launch
        self._stack = torch.zeros((self.num_envs, *self.obs_dim), dtype=torch.uint8, device=self.device)

    # -- frames -------------------------------------------------------------------------
    def _restack(self, ids: torch.Tensor, frames: torch.Tensor) -> None:
        """Worlds ``ids`` start a stack: their frame ``frame_stack`` times."""
        self._stack[ids] = frames[ids].repeat(1, self.frame_stack, 1, 1)

    def _push(self, frames: torch.Tensor) -> torch.Tensor:
        """Every world's stack with ``frames`` on top (a new tensor; ``_stack`` unchanged)."""
        return torch.cat([self._stack[:, 3:], frames], dim=1)

    # -- episodes -------------------------------------------------------------------------
    def reset(self, seed: int | None = None, ids: torch.Tensor | None = None) -> TensorDict:
        td = self.env.reset(seed=seed, ids=ids)
        ids = (
            torch.arange(self.num_envs, device=self.device)
            if ids is None
            else torch.as_tensor(ids).to(self.device)
        )
        self._restack(ids.reshape(-1), self.renderer.render())
        td["state"] = td["observation"]
        td["observation"] = self._stack.clone()
        td["step_count"] = td["step_count"] // self.action_repeat
        return td

    def step(self, action: torch.Tensor) -> TensorDict:
        reward = task_reward = None
        for repeat in range(self.action_repeat):
            last = repeat == self.action_repeat - 1
            out = self.env.step(action, auto_reset=False, render=last and self._in_graph)
            reward = out["reward"] if reward is None else reward + out["reward"]
            task_reward = out["task_reward"] if task_reward is None else task_reward + out["task_reward"]
            if not last and self.env.episodes_ended().size:
                raise RuntimeError("an episode ended between action repeats: reset worlds only via reset()")
        frames = self.renderer.frames() if self._in_graph else self.renderer.render()
        next_stack = self._push(frames)
        self._stack.copy_(next_stack)
        out["next_state"] = out["next_observation"]
        ended = self.env.episodes_ended()
        if ended.size:
            reset = self.env.reset_ended()
            ids = torch.as_tensor(ended, device=self.device)
            self._restack(ids, self.renderer.render())
            out["observation"] = self._stack.clone()
            out["position"] = reset["position"]
        else:
            out["observation"] = next_stack
        out["next_observation"] = next_stack
        out["reward"], out["task_reward"] = reward, task_reward
        out["step_count"] = out["step_count"] // self.action_repeat
        return out

    # -- physics state and checkpoints ------------------------------------------------------
    def physics_state(self) -> dict[str, torch.Tensor]:
        return self.env.physics_state()

    def set_physics_state(
        self, state: dict[str, torch.Tensor], ids: torch.Tensor | None = None
    ) -> TensorDict:
        """As ``BatchedEnv.set_physics_state``, with ``observation`` the new frame stacked
        (worlds ``ids`` start a stack there)."""
        td = self.env.set_physics_state(state, ids)
        ids = torch.arange(self.num_envs, device=self.device) if ids is None else ids.to(self.device)
        self._restack(ids, self.renderer.render())
        td["observation"] = self._stack[ids].clone()
        return td

    def state_dict(self) -> dict:
        """The state env's checkpoint and every world's frame stack."""
        return {**self.env.state_dict(), "frame_stack": self._stack.clone()}

    def load_state_dict(self, state: dict) -> None:
        state = dict(state)
        stack = state.pop("frame_stack")
        self.env.load_state_dict(state)
        self._stack.copy_(stack.to(self.device))

    def close(self) -> None:
        if self._in_graph:
            self.env.backend.render_hook = None
        self.env.close()


__all__ = ["POSE_FIELDS", "BatchRenderer", "PixelEnv"]
