"""``make_env``: task name -> batched environment on the chosen backend."""

from __future__ import annotations

import importlib

import torch

from envs.env import BatchedEnv
from envs.tasks import DOMAINS, TASKS, parse_task

# DOMAINS, TASKS and parse_task live in envs.tasks; importable from here as before.
__all__ = ["BACKENDS", "DOMAINS", "TASKS", "make_domain", "make_env", "parse_task", "resolve_backend"]

BACKENDS = ("auto", "cpu", "warp")


def make_domain(task: str):
    domain_name, task_name = parse_task(task)
    module, cls = DOMAINS[domain_name]
    return getattr(importlib.import_module(module), cls)(task_name)


def resolve_backend(backend: str, device: str | torch.device | None) -> tuple[str, torch.device]:
    """``auto`` is warp on a CUDA device and cpu otherwise; the device defaults to CUDA
    when present for warp and to the CPU for cpu."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; known: {', '.join(BACKENDS)}")
    if device is not None:
        device = torch.device(device)
    if backend == "auto":
        on_gpu = device.type == "cuda" if device is not None else torch.cuda.is_available()
        backend = "warp" if on_gpu else "cpu"
    if device is None:
        device = torch.device("cuda" if backend == "warp" and torch.cuda.is_available() else "cpu")
    if backend == "cpu" and device.type != "cpu":
        raise ValueError(f"the cpu backend runs on the CPU, not {device}; use backend='warp' for {device}")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {device} requested but this machine has no CUDA GPU; use device='cpu'")
        if device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())  # tensors report cuda:N
    return backend, device


def make_env(
    task: str,
    num_envs: int,
    backend: str = "auto",
    device: str | torch.device | None = None,
    seed: int = 0,
    observe_pose: bool = False,
    pixels: dict | None = None,
    **backend_kwargs,
):
    """One environment stepping ``num_envs`` worlds of ``task`` at once.

    Args:
        task: a URLB task (``walker_run``, ``jaco_reach_top_left``, ...) or a domain name
            (``walker``, ``quadruped``, ``jaco``) for reward-free pretraining; the latter
            uses the domain's primal task's model and resets, with a zero ``reward`` (every
            task's reward is still in ``task_reward``).
        num_envs: number of worlds.
        backend: ``cpu`` (C MuJoCo batch on a thread pool), ``warp`` (MuJoCo Warp, CUDA
            when present, Warp's CPU device otherwise) or ``auto`` (warp on a GPU, else cpu).
        device: torch device of the env's tensors.
        seed: per-world reset seeds derive from it.
        observe_pose: append the global pose that URLB's egocentric observation leaves out
            (``Domain.pose``: quadruped torso x, y and heading; walker torso x) to the
            observation, for agents whose representation is defined on the full state
            (METRA). Off: URLB's observation exactly.
        pixels: None for state observations (a :class:`BatchedEnv`); a dict of
            :class:`envs.pixels.PixelEnv` arguments (``size``, ``frame_stack``,
            ``action_repeat``, ``camera``, ``shadows``; ``{}`` is URLB's 84x84, stack 3,
            repeat 2) for frames rendered by MuJoCo Warp's batched renderer.
        backend_kwargs: ``nthread`` for cpu; ``nconmax``, ``njmax``, ``graph`` for warp.
    """
    if num_envs < 1:
        raise ValueError(f"num_envs must be at least 1, got {num_envs}")
    backend, device = resolve_backend(backend, device)
    domain = make_domain(task)
    if backend == "cpu":
        from envs.backends.cpu import CpuBackend

        sim = CpuBackend(domain.model, num_envs, domain.n_substeps, **backend_kwargs)
    else:
        from envs.backends.warp import WarpBackend

        sim = WarpBackend(
            domain.model, num_envs, domain.n_substeps, device=device, domain=domain.name, **backend_kwargs
        )
    env = BatchedEnv(domain, sim, num_envs, seed=seed, observe_pose=observe_pose)
    if pixels is None:
        return env
    from envs.pixels import PixelEnv

    return PixelEnv(env, **pixels)
