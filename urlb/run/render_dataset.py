"""Pixel datasets from state datasets: every observation rendered from its stored physics state.

``render_dataset.py dataset=<dir> out=<dir>`` calls :func:`render_from_config`. It is the
protocol of pixel-based ExORL as HILP's authors run it (Park et al. 2024, ``hilp_zsrl``'s
``convert.py --use_pixels=1``): a state dataset collected by an exploration agent is rendered
frame by frame from its physics states (64x64 RGB, URLB's cameras), and agents learn from the
frames of the very transitions the states came from. ::

    for each chunk of rows:                       # ``worlds`` rows at once
        env.set_physics_state(qpos, qvel, act)    # checked: the observations come back (*)
        frames[r + e] = renderer.render()         # row r of episode e: its observation's frame
    for each episode's last row:                  # its next state is stored in no row:
        set_physics_state(row); env.step(action)  # one step from it (checked against next_observation)
        frames[end + e] = renderer.render()

The output is a new dataset: every field of the source, plus ``frames`` (``uint8 (M + E, 3, H,
W)``, :mod:`urlb.data.datasets` describes the layout) and ``meta["frames"]`` (size, camera,
action repeat, renderer, the source and how closely the states reproduced its observations).
The source is never modified.

(*) Only the observation coordinates a physics state decides are compared: acceleration-stage
sensors (quadruped's IMU and force-torque, jaco's) are read at the last substep's start and
depend on the control applied, neither of which a dataset stores. :func:`state_coordinates`
finds the others. Frames depend on positions alone.

Imports: envs, urlb.data, urlb.run.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from envs import make_env
from envs.pixels import BatchRenderer
from envs.render import DEFAULT_CAMERA
from urlb.data.datasets import (
    FRAMES,
    MANIFEST,
    episode_boundaries,
    frame_of_row,
    read_dataset,
    write_dataset,
)
from urlb.run.build import prepare_process
from urlb.run.collect import PHYSICS_KEYS, check_out

# How far an observation recomputed from a stored physics state may lie from the stored one
# (absolute, any coordinate). Float64 physics against float32 storage differ by ~1e-7; contact
# forces in the observation (quadruped's force_torque) depend on the solver's warm start, which
# datasets do not store: they may differ more, and are reported, not refused, up to this bound.
STATE_TOLERANCE = 1e-2


def render_dataset(
    source: str | Path,
    out: str | Path,
    size: int = 64,
    camera: int | str | None = None,
    shadows: bool = False,
    worlds: int = 64,
    backend: str = "cpu",
    device: str | torch.device = "cpu",
) -> Path:
    """Render every observation of the state dataset at ``source`` into a new dataset at ``out``.

    Args:
        source: a dataset directory with physics states (``qpos``, ``qvel``, ``act``), as
            ``collect.py`` and ``pretrain.py save_dataset=true`` write them.
        out: the directory to create.
        size: frame height and width (HILP's pixel ExORL: 64; URLB's pixel protocol: 84).
        camera: a camera index or name; None: URLB's (2 for quadruped, else 0).
        shadows: as :class:`envs.pixels.BatchRenderer`.
        worlds: rows rendered at once.
        backend, device: the env's.
    """
    source, out = Path(source), Path(out)
    check_out(out)
    arrays, meta = read_dataset(source)
    check_source(arrays, meta, source)
    starts, ends = episode_boundaries(arrays)
    rows, episodes = len(arrays["terminated"]), len(starts)
    env = make_env(meta["domain"], worlds, backend=backend, device=device, seed=0)
    renderer = BatchRenderer(env, size, size, camera=camera, shadows=shadows)
    frames = np.empty((rows + episodes, 3, size, size), dtype=np.uint8)
    frame = frame_of_row(starts, ends)
    began = time.perf_counter()
    try:
        checked = state_coordinates(
            env, physics_rows(arrays, torch.arange(min(rows, worlds)), worlds, env.device)
        )
        # Each row's observation (urlb.data.datasets.frame_of_row: r + e).
        state_error = 0.0
        for first in range(0, rows, worlds):
            index = torch.arange(first, min(first + worlds, rows))
            td = env.set_physics_state(physics_rows(arrays, index, worlds, env.device))
            error = deviation(td["observation"], arrays["observation"], index, checked)
            state_error = max(state_error, error)
            check_reproduced(state_error, "observation", source, meta["domain"])
            frames[frame[index].numpy()] = renderer.render()[: len(index)].cpu().numpy()
        # Each episode's last next observation: one step from its last row, the frame after its.
        next_error = 0.0
        last = ends - 1
        for first in range(0, episodes, worlds):
            chosen = torch.arange(first, min(first + worlds, episodes))
            index = last[chosen]
            env.set_physics_state(physics_rows(arrays, index, worlds, env.device))
            env.set_step_count(torch.zeros(worlds, dtype=torch.long))
            action = padded(arrays["action"], index, worlds).to(env.device, torch.float32)
            td = env.step(action, auto_reset=False)
            next_error = max(
                next_error, deviation(td["next_observation"], arrays["next_observation"], index, checked)
            )
            check_reproduced(next_error, "next_observation", source, meta["domain"])
            frames[(frame[index] + 1).numpy()] = renderer.render()[: len(index)].cpu().numpy()
    finally:
        env.close()
    seconds = time.perf_counter() - began
    frames_meta = {
        "size": size,
        "camera": DEFAULT_CAMERA[meta["domain"]] if camera is None else camera,
        "shadows": shadows,
        "action_repeat": int(meta.get("action_repeat", 1)),
        "renderer": "envs.pixels.BatchRenderer (MuJoCo Warp ray caster)",
        "rendered_from": {
            "dataset": str(source.resolve()),
            "manifest_sha256": _manifest_sha(source),
        },
        "checked_coordinates": int(checked.sum()),
        "observation_max_deviation": state_error,
        "final_next_observation_max_deviation": next_error,
        "seconds": round(seconds, 1),
    }
    arrays = {name: value for name, value in arrays.items()} | {FRAMES: frames}
    path = write_dataset(out, arrays, meta | {"frames": frames_meta})
    print(
        f"[render] {rows} transitions in {episodes} episodes: {len(frames)} {size}x{size} frames "
        f"written to {path} in {seconds:.0f} s (states reproduce observations within {state_error:.2g})"
    )
    return path


def check_source(arrays: dict, meta: dict, source: Path) -> None:
    """One-line refusals of a dataset that cannot be rendered."""
    if FRAMES in arrays:
        raise ValueError(f"dataset {source} already holds frames; render a state dataset")
    missing = [key for key in PHYSICS_KEYS if key not in arrays]
    if missing:
        raise ValueError(
            f"dataset {source} holds no physics states ({', '.join(missing)} missing); collect it with "
            "collect.py or pretrain.py save_dataset=true, which store them"
        )
    if meta.get("domain") not in DEFAULT_CAMERA:
        raise ValueError(f"dataset {source}: its meta names domain {meta.get('domain')!r}, not a URLB domain")
    if meta.get("observe_pose"):
        raise ValueError(
            f"dataset {source} was collected with observe_pose; frames carry no pose: render a dataset "
            "collected without it"
        )


def check_reproduced(error: float, name: str, source: Path, domain: str) -> None:
    """Refuse (before rendering on) states that do not give back the stored observations."""
    if error > STATE_TOLERANCE:
        raise ValueError(
            f"dataset {source}: its physics states reproduce its {name}s only within {error:.3g} "
            f"(> {STATE_TOLERANCE}); it was not collected by this version's {domain} env, so its "
            "frames would show other states: re-collect it with collect.py"
        )


def padded(values: torch.Tensor, index: torch.Tensor, worlds: int) -> torch.Tensor:
    """``values[index]`` with its last row repeated up to ``worlds`` rows (a short last chunk)."""
    return values[torch.cat([index, index[-1:].expand(worlds - len(index))])]


def physics_rows(arrays: dict, index: torch.Tensor, worlds: int, device) -> dict[str, torch.Tensor]:
    return {key: padded(arrays[key], index, worlds).to(device) for key in PHYSICS_KEYS}


def state_coordinates(env, state: dict[str, torch.Tensor]) -> torch.Tensor:
    """``(obs_dim,)`` bool: the observation coordinates a physics state decides. A step from
    ``state`` reports its next observation; setting the physics state it reached must give the
    same value in those coordinates. Acceleration-stage sensors differ: the env reports them
    from the last substep's start (as dm_control does) and control enters them."""
    env.set_physics_state(state)
    env.set_step_count(torch.zeros(env.num_envs, dtype=torch.long))
    controls = torch.linspace(-1, 1, env.num_envs * env.action_dim, device=env.device)
    stepped = env.step(controls.reshape(env.num_envs, env.action_dim).float(), auto_reset=False)
    reached = {key: value for key, value in env.physics_state().items() if key in PHYSICS_KEYS}
    again = env.set_physics_state(reached)["observation"]
    close = (stepped["next_observation"] - again).abs() <= 1e-5
    return close.all(dim=0).cpu()


def deviation(recomputed: torch.Tensor, stored: torch.Tensor, index: torch.Tensor, checked) -> float:
    """The largest difference between recomputed and stored observations in the ``checked``
    coordinates."""
    difference = recomputed[: len(index)].cpu().float() - stored[index].float()
    return float(difference[:, checked].abs().max())


def _manifest_sha(path: Path) -> str:
    return hashlib.sha256((path / MANIFEST).read_bytes()).hexdigest()


def render_from_config(cfg: DictConfig) -> Path:
    """``render_dataset.py``: check the inputs, then :func:`render_dataset`."""
    for key, least in (("size", 16), ("worlds", 1)):
        value = cfg[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise ValueError(f"{key}={value!r}: use a whole number >= {least}")
    if not (Path(cfg.dataset) / MANIFEST).is_file():
        raise FileNotFoundError(f"dataset={cfg.dataset} is not a dataset directory (no {MANIFEST})")
    check_out(Path(cfg.out))
    settings = OmegaConf.create({key: cfg[key] for key in ("threads", "backend", "device", "seed")})
    device = prepare_process(OmegaConf.merge(settings, {"num_envs": cfg.worlds}))  # threads
    return render_dataset(
        cfg.dataset,
        cfg.out,
        size=cfg.size,
        camera=cfg.camera,
        shadows=cfg.shadows,
        worlds=cfg.worlds,
        backend=cfg.backend,
        device=device,
    )
