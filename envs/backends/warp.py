"""MuJoCo Warp: the batched simulator on CUDA, or on Warp's CPU device for tests.

One ``mjw.Data`` holds every world; the torch tensors in ``view`` are zero-copy views
of its arrays (float32). A step is ``n_substeps`` calls of ``mjw.step`` followed by the
position and velocity stages and their sensors, which is dm_control's ``mj_step1``
refresh. (``mjw.step1`` is not used for that refresh: it zeroes ``sensordata``, and
dm_control's acceleration-stage sensors keep their value from the last substep.)

The whole step is captured once as a Warp graph and replayed (a CUDA graph on a GPU;
on Warp's CPU device the recorded launches replay without Python overhead). A step that
renders (``render_hook``, set by :class:`envs.pixels.PixelEnv`) has a graph of its own:
substeps, pose refresh, BVH refit and render in one launch.

Kernels compile on first use (tens of seconds per model on a CPU) into the folder
named by ``URLB_WARP_CACHE`` (default ``~/.cache/urlb/warp``), so later processes load
them in about a second.
"""

from __future__ import annotations

import os
from pathlib import Path

import mujoco
import torch

from envs.backends import BOUND_FIELDS, STATE_KEYS, check_state_keys
from envs.domains.base import PhysicsView

# Contact and constraint-row buffers per world. Measured worst cases under random
# actions (C MuJoCo, 20k steps): walker 6 contacts / 24 rows, quadruped 8 / 36, jaco
# (elliptic cones) well under these; an overflow raises instead of dropping contacts.
DEFAULT_BUFFERS = {"walker": (16, 64), "quadruped": (32, 128), "jaco": (48, 384)}


def warp_cache_dir() -> Path:
    return Path(os.environ.get("URLB_WARP_CACHE", Path.home() / ".cache" / "urlb" / "warp"))


def _init_warp():
    """Initialise Warp with the kernel cache in :func:`warp_cache_dir` (the cache folder
    must be set before initialisation; a process that initialised Warp itself keeps its own)."""
    import warp as wp
    from warp._src import context  # Warp 1.19: ``runtime`` is None until wp.init()

    if context.runtime is None:
        # Only before the first init: Warp then appends its version to the folder, and setting
        # it again would send every later env's kernels to the unversioned folder, where the
        # next process does not look (it compiled them again; issue 23's ahead-of-time kernels
        # would be missed the same way).
        wp.config.kernel_cache_dir = str(warp_cache_dir())
        wp.config.log_level = wp.LOG_WARNING
        wp.init()
    return wp


class WarpBackend:
    name = "warp"
    dtype = torch.float32

    def __init__(
        self,
        model: mujoco.MjModel,
        nworld: int,
        n_substeps: int,
        device: torch.device | str = "cpu",
        nconmax: int | None = None,
        njmax: int | None = None,
        graph: bool = True,
        domain: str | None = None,
        overflow_check_every: int = 100,
    ):
        wp = _init_warp()
        import mujoco_warp as mjw

        self._wp, self._mjw = wp, mjw
        self.device = torch.device(device)
        self.n_substeps = n_substeps
        self.overflow_check_every = overflow_check_every
        default_con, default_j = DEFAULT_BUFFERS.get(domain or "", (64, 256))
        wp_device = "cpu" if self.device.type == "cpu" else f"cuda:{self.device.index or 0}"
        with wp.ScopedDevice(wp_device):
            self.m = mjw.put_model(model)
            self.d = mjw.make_data(
                model, nworld=nworld, nconmax=nconmax or default_con, njmax=njmax or default_j
            )
        self._wp_device = wp_device
        t = {name: wp.to_torch(getattr(self.d, name)) for name in (*BOUND_FIELDS, "overflow")}
        self.view = PhysicsView.from_arrays(t, nworld)
        self._tensors = t
        self._steps = 0
        self._graphs: dict[bool, object] = {}
        self._use_graph = graph
        # Launches run after the pose refresh of a step with render=True (a renderer's).
        self.render_hook = None
        with self._scope():
            mjw.forward(self.m, self.d)

    def _scope(self):
        """Where Warp launches go: on CUDA, torch's current stream, so that Warp's kernels
        are ordered after the torch writes into its arrays (ctrl, state) and before torch
        reads the results; on the CPU, the CPU device."""
        wp = self._wp
        if self.device.type == "cuda":
            return wp.ScopedStream(wp.stream_from_torch(torch.cuda.current_stream(self.device)))
        return wp.ScopedDevice(self._wp_device)

    # -- stepping -------------------------------------------------------------------------
    def _refresh(self) -> None:
        """``mj_step1`` without zeroing ``sensordata``: position and velocity stages."""
        mjw, m, d = self._mjw, self.m, self.d
        mjw.fwd_position(m, d)
        mjw.sensor_pos(m, d)
        mjw.fwd_velocity(m, d)
        mjw.sensor_vel(m, d)

    def _physics_step(self, render: bool = False) -> None:
        for _ in range(self.n_substeps):
            self._mjw.step(self.m, self.d)
        self._refresh()
        if render:
            if self.render_hook is None:
                raise RuntimeError("step(render=True) needs a render_hook (envs.pixels.PixelEnv sets one)")
            self.render_hook()

    def step(self, ctrl: torch.Tensor, render: bool = False) -> None:
        wp = self._wp
        self._tensors["ctrl"].copy_(ctrl)
        with self._scope():
            if not self._use_graph:
                self._physics_step(render)
            else:
                graph = self._graphs.get(render)
                if graph is None:
                    self._physics_step(render)  # compiles every kernel before capture
                    with wp.ScopedCapture() as capture:  # on the enclosing _scope's stream or device
                        self._physics_step(render)
                    self._graphs[render] = capture.graph  # recorded, not run: one step taken
                else:
                    wp.capture_launch(graph)
        self._steps += 1
        if self._steps % self.overflow_check_every == 0:
            self.check_overflow()

    def check_overflow(self) -> None:
        """Raise if any world ran out of contact or constraint buffer (a host sync)."""
        overflow = self._tensors["overflow"]
        if bool((overflow != 0).any()):
            worlds = overflow.nonzero().squeeze(1).tolist()[:8]
            raise RuntimeError(
                f"MuJoCo Warp buffer overflow in worlds {worlds} (flags {overflow[worlds].tolist()}): "
                "pass larger nconmax/njmax to make_env"
            )

    # -- state ----------------------------------------------------------------------------
    def set_state(self, ids: torch.Tensor, state: dict[str, torch.Tensor]) -> None:
        check_state_keys(state)
        ids = ids.to(self.device)
        for key, value in state.items():
            target = self._tensors[key]
            target[ids] = value.to(device=self.device, dtype=target.dtype).reshape(target[ids].shape)
        self._tensors["overflow"][ids] = 0
        # mj_forward on every world (Warp has no per-world forward); the other worlds'
        # acceleration-stage sensors are restored so that their observations stay those of
        # their last substep. Their state is untouched by a forward pass.
        sensordata = self._tensors["sensordata"]
        keep = sensordata.clone()
        with self._scope():
            self._mjw.forward(self.m, self.d)
        mask = torch.ones(sensordata.shape[0], dtype=torch.bool, device=self.device)
        mask[ids] = False
        sensordata[mask] = keep[mask]

    def get_state(self) -> dict[str, torch.Tensor]:
        return {k: self._tensors[k].to(torch.float64, copy=True) for k in STATE_KEYS}
