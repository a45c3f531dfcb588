"""Rendering a state dataset's frames: ``render_dataset.py``'s batched ray caster against the
references' way, one frame at a time with MuJoCo's OpenGL renderer (HILP's ``convert.py``:
``physics.set_state`` then ``physics.render`` per row), on the same rows, in the same run.

    python scripts/bench_render_dataset.py --domain walker --rows 2000 --size 64

Prints frames per second of each and the ratio. The OpenGL baseline needs ``MUJOCO_GL`` (egl
or osmesa; set to egl when unset). Collects its own random dataset in a temporary folder.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import mujoco  # noqa: E402
import torch  # noqa: E402

from envs import make_env  # noqa: E402
from envs.render import DEFAULT_CAMERA  # noqa: E402
from urlb.data.datasets import read_dataset  # noqa: E402
from urlb.run.collect import RandomPolicy, collect_dataset  # noqa: E402
from urlb.run.render_dataset import render_dataset  # noqa: E402


def opengl_frames_per_second(arrays: dict, domain: str, size: int) -> float:
    """One row at a time: set the state, forward, render (what a dm_control loop does)."""
    env = make_env(domain, 1, backend="cpu", device="cpu")
    model = env.domain.model
    data = mujoco.MjData(model)
    renderer = mujoco.Renderer(model, height=size, width=size)
    began = time.perf_counter()
    for row in range(len(arrays["qpos"])):
        data.qpos[:] = arrays["qpos"][row].numpy()
        data.qvel[:] = arrays["qvel"][row].numpy()
        data.act[:] = arrays["act"][row].numpy()
        mujoco.mj_forward(model, data)
        renderer.update_scene(data, camera=DEFAULT_CAMERA[domain])
        renderer.render()
    seconds = time.perf_counter() - began
    renderer.close()
    env.close()
    return len(arrays["qpos"]) / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--domain", default="walker")
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--worlds", type=int, nargs="+", default=[64, 256])
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as folder:
        env = make_env(args.domain, 4, backend="cpu", device="cpu", seed=0)
        policy = RandomPolicy(env.action_dim, torch.Generator().manual_seed(0))
        meta = {"domain": args.domain, "agent": "random"}
        source = collect_dataset(env, policy, args.rows, Path(folder) / "states", meta)
        arrays, _ = read_dataset(source)
        baseline = opengl_frames_per_second(arrays, args.domain, args.size)
        print(f"{args.domain}, {args.rows} rows, {args.size}x{args.size}")
        print(f"  OpenGL, one row at a time (MUJOCO_GL={os.environ['MUJOCO_GL']}): {baseline:.0f} frames/s")
        for worlds in args.worlds:
            began = time.perf_counter()
            out = render_dataset(source, Path(folder) / f"pixels_{worlds}", size=args.size, worlds=worlds)
            frames = len(read_dataset(out)[0]["frames"])
            rate = frames / (time.perf_counter() - began)
            print(f"  render_dataset, {worlds} worlds at once: {rate:.0f} frames/s ({rate / baseline:.2f}x)")


if __name__ == "__main__":
    main()
