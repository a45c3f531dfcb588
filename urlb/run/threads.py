"""How many CPU threads torch gets in a run: chosen from the run (worlds, backend, cores) and
from what other processes keep busy.

torch's OpenMP workers spin for a while after each parallel region; when MuJoCo's thread pool
(the cpu backend, one thread per world up to the core count) steps next on the same cores, they
steal its time, and when another process holds a core, a parallel region waits for the worker
that was preempted. With one world on an idle machine there is nothing to contend with, and
torch's second thread is worth a quarter of the speed. Measured on this project's 2-core
machine (issue 23; docs/performance.md "CPU threads"):

===============================================  ======================  =====================
run                                              1 torch thread          2 torch threads
===============================================  ======================  =====================
DDPG 256/256, walker, 1 world, idle machine      169 frames/s            217-231 frames/s
the same, other training runs on the machine     31-89 frames/s          3-6 frames/s
env alone, quadruped, 256 worlds, cpu backend    0.78 of physics-only    0.48-0.55
===============================================  ======================  =====================

So torch gets the cores that neither MuJoCo's pool (the cpu backend with several worlds) nor
other processes (the 1-minute load average) use, and at least one. The warp backend runs on
one thread of Warp's CPU device or on a GPU, and leaves every free core to torch.
``threads=<int>`` in a config overrides the choice; ``threads=null`` keeps torch's default.

Imports: torch and the standard library only.
"""

from __future__ import annotations

import os

import torch

__all__ = ["available_cores", "busy_cores", "choose_threads", "mujoco_pool_threads", "set_torch_threads"]


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask, which containers and SLURM narrow)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


def busy_cores() -> float:
    """Cores other processes keep busy: the 1-minute load average (0 where the OS has none)."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return 0.0


def mujoco_pool_threads(num_envs: int, cores: int) -> int:
    """Threads of the cpu backend's MuJoCo pool: one per world, at most one per core
    (``envs.backends.cpu.CpuBackend``'s default)."""
    return max(1, min(cores, num_envs))


def choose_threads(
    num_envs: int, backend: str, device: str | torch.device, cores: int, busy: float = 0.0
) -> tuple[int, str]:
    """torch's CPU threads for a run of ``num_envs`` training worlds on ``backend`` (``cpu``,
    ``warp`` or ``auto``) and ``device``, on ``cores`` cores of which other processes keep
    ``busy`` busy; returns ``(threads, why)``."""
    device = torch.device(device)
    if backend == "auto":
        backend = "warp" if device.type == "cuda" else "cpu"
    others = min(cores - 1, int(busy + 0.5))  # cores held by other processes, rounded
    free = cores - others
    load = f", {others} busy with other work (load {busy:.1f})" if others else ""
    if backend == "cpu":
        pool = mujoco_pool_threads(num_envs, cores)
        if pool > 1:
            threads = max(1, min(free, cores - pool))
            return threads, f"MuJoCo's pool steps {num_envs} worlds on {pool} of {cores} cores{load}"
        return free, f"1 world, no MuJoCo pool: {free} of {cores} cores{load}"
    where = "the GPU steps the worlds" if device.type == "cuda" else "Warp's CPU device steps on one thread"
    return free, f"{where}: {free} of {cores} cores{load}"


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
    threads, why = choose_threads(int(num_envs), plan.backend, device, available_cores(), busy_cores())
    torch.set_num_threads(threads)
    print(f"[threads] torch uses {_threads(threads)} ({why}; threads=<n> overrides)")
    return threads


def _threads(n: int) -> str:
    return f"{n} CPU thread{'s' if n != 1 else ''}"
