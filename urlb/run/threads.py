"""How many CPU threads torch gets in a run: chosen from the run (worlds, backend, cores).

torch's OpenMP workers spin for a while after each parallel region; when MuJoCo's thread pool
(the cpu backend, one thread per world up to the core count) steps next on the same cores, they
steal its time. With one world there is no pool to contend with, and torch's second thread is
worth a quarter of the speed. Measured on this project's 2-core machine (issue 23,
docs/performance.md "CPU threads"):

=============================================  =====================  =======================
run                                            1 torch thread         2 torch threads
=============================================  =====================  =======================
DDPG 256/256, walker, 1 world, cpu backend     169 frames/s           217-231 frames/s
env alone, quadruped, 256 worlds, cpu backend  0.78 of physics-only   0.48-0.55
=============================================  =====================  =======================

So: the cpu backend with a pool of several threads leaves torch the cores the pool does not
use (at least one); otherwise (one world, the warp backend on Warp's single-threaded CPU
device, or a GPU run whose CPU work is launches and small copies) torch takes every core.
``threads=<int>`` in a config overrides the choice; ``threads=null`` keeps torch's default.

Imports: torch and the standard library only.
"""

from __future__ import annotations

import os

import torch

__all__ = ["available_cores", "choose_threads", "mujoco_pool_threads", "set_torch_threads"]


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask, which containers and SLURM narrow)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


def mujoco_pool_threads(num_envs: int, cores: int) -> int:
    """Threads of the cpu backend's MuJoCo pool: one per world, at most one per core
    (``envs.backends.cpu.CpuBackend``'s default)."""
    return max(1, min(cores, num_envs))


def choose_threads(num_envs: int, backend: str, device: str | torch.device, cores: int) -> tuple[int, str]:
    """torch's CPU threads for a run of ``num_envs`` training worlds on ``backend`` (``cpu``,
    ``warp`` or ``auto``) and ``device``, on ``cores`` cores; returns ``(threads, why)``."""
    device = torch.device(device)
    if backend == "auto":
        backend = "warp" if device.type == "cuda" else "cpu"
    if backend == "cpu":
        pool = mujoco_pool_threads(num_envs, cores)
        if pool > 1:
            threads = max(1, cores - pool)
            return threads, f"MuJoCo's pool steps {num_envs} worlds on {pool} of {cores} cores"
        return cores, f"1 world: no MuJoCo pool to share {cores} cores with"
    if device.type == "cuda":
        return cores, "the GPU steps the worlds"
    return cores, "Warp's CPU device steps the worlds on one thread"


def set_torch_threads(plan, device: torch.device) -> int | None:
    """Apply ``plan.threads`` (``auto``, an int, or null for torch's default) for ``device`` and
    print the choice; returns the thread count set, or None if torch keeps its default.

    ``plan``: a run plan or config with ``threads``, ``backend`` and the world count
    (``protocol.num_envs``, or ``num_envs`` for collect.py).
    """
    setting = plan.get("threads", "auto")
    if setting is None:
        print(f"[threads] torch keeps its default of {torch.get_num_threads()} CPU threads (threads=null)")
        return None
    if setting != "auto":
        if isinstance(setting, bool) or not isinstance(setting, int) or setting < 1:
            raise ValueError(f"threads={setting!r}: use auto, a positive integer, or null (torch's default)")
        torch.set_num_threads(setting)
        print(f"[threads] torch uses {_threads(setting)} (threads={setting})")
        return setting
    protocol = plan.get("protocol")
    num_envs = protocol.num_envs if protocol is not None and "num_envs" in protocol else plan.num_envs
    threads, why = choose_threads(int(num_envs), plan.backend, device, available_cores())
    torch.set_num_threads(threads)
    print(f"[threads] torch uses {_threads(threads)} ({why}; threads=<n> overrides)")
    return threads


def _threads(n: int) -> str:
    return f"{n} CPU thread{'s' if n != 1 else ''}"
