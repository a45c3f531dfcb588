"""How many CPU threads torch gets in a run: chosen from the run (worlds, backend, cores) and
from what other processes keep busy.

An OpenMP parallel region waits for every worker, so a torch thread on a core that another
process holds costs far more than it brings; on free cores torch's threads speed the updates
up, even at many worlds on the cpu backend, where MuJoCo's pool steps the worlds between
updates and the env keeps its own torch work on one thread (``BatchedEnv.torch_threads``: in
the env alone, torch threads beside the pool cost it up to half its rate). Measured on this
project's 2-core machine, DDPG 256/256 on walker through ``pretrain.py`` (issue 23;
docs/performance.md "CPU threads"):

==================================================  ===================  ===================
run                                                 1 torch thread       2 torch threads
==================================================  ===================  ===================
1 world, idle machine                               90 frames/s          132 (1.22-1.52x)
16 worlds (MuJoCo's pool on both cores), idle       121 frames/s         157 (1.19-1.53x)
256 worlds, idle                                    119 frames/s         141 (1.15-1.21x)
1 world, five other training runs on the machine    31-89 frames/s       3-6 frames/s
==================================================  ===================  ===================

So torch gets the cores other processes leave free, and at least one. What other processes
use is measured when the run starts, over a quarter of a second, on the cores this process
may run on (``/proc/stat``, less this process's own CPU time); the 1-minute load average
where there is no ``/proc/stat``. (The load average alone counted a run that had just ended
as busy for a minute: the next run on an idle machine took one thread where two ran
1.14-1.34x as fast.)
The warp backend runs on one thread of Warp's CPU device or on a GPU.
``threads=<int>`` in a config overrides the choice; ``threads=null`` keeps torch's default.

Imports: torch and the standard library only.
"""

from __future__ import annotations

import os
import time

import torch

__all__ = ["available_cores", "busy_cores", "choose_threads", "mujoco_pool_threads", "set_torch_threads"]


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask, which containers and SLURM narrow)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


def busy_cores(window_s: float = 0.25) -> float:
    """Cores other processes keep busy now, among those this process may run on: their busy
    share over ``window_s`` (``/proc/stat``) less this process's own CPU time in the window.
    Where ``/proc/stat`` cannot be read, the 1-minute load average (0 where the OS has none)."""
    cores = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    try:
        before, own_before, start = _cpu_ticks(cores), time.process_time(), time.monotonic()
        time.sleep(window_s)
        after, own_after, end = _cpu_ticks(cores), time.process_time(), time.monotonic()
    except OSError:
        try:
            return os.getloadavg()[0]
        except (AttributeError, OSError):
            return 0.0
    return others_busy(before, after, (own_after - own_before) / max(end - start, 1e-6))


def others_busy(before: dict[int, tuple[int, int]], after: dict[int, tuple[int, int]], own: float) -> float:
    """Cores kept busy by other processes between two ``/proc/stat`` samples (per core
    ``(busy ticks, all ticks)``), given this process's own use ``own`` in cores."""
    busy = 0.0
    for core, (busy_after, total_after) in after.items():
        busy_before, total_before = before.get(core, (busy_after, total_after))
        if total_after > total_before:
            busy += (busy_after - busy_before) / (total_after - total_before)
    return max(0.0, busy - own)


def _cpu_ticks(cores: set[int] | None) -> dict[int, tuple[int, int]]:
    """Per core in ``cores`` (None: every core), ``(busy ticks, all ticks)`` from ``/proc/stat``:
    idle and iowait are idle; guest time is already in user time."""
    out = {}
    with open("/proc/stat") as stat:
        for line in stat:
            name, *fields = line.split()
            if not name.startswith("cpu") or name == "cpu":
                continue
            core = int(name[3:])
            if cores is not None and core not in cores:
                continue
            ticks = [int(value) for value in fields[:8]]  # user nice system idle iowait irq softirq steal
            total, idle = sum(ticks), ticks[3] + ticks[4]
            out[core] = (total - idle, total)
    if not out:
        raise OSError("/proc/stat lists none of this process's cores")
    return out


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
    load = f", {others} busy with other work ({busy:.1f} cores busy)" if others else ""
    if backend == "cpu":
        pool = mujoco_pool_threads(num_envs, cores)
        if pool > 1:  # the env runs its own torch work on one thread while the pool steps
            return free, (
                f"{free} of {cores} cores for the updates; MuJoCo's pool steps {num_envs} worlds "
                f"between them on {pool}, the env's own torch work on 1{load}"
            )
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
