"""Memory budget of device storage: what a device has free, and the refusal of a ring that
would not fit, made before it is allocated.

Imports torch only.
"""

from __future__ import annotations

import torch


def available_memory(device: torch.device) -> int | None:
    """Bytes free for new tensors on ``device``: the GPU's free memory, or the host's
    ``MemAvailable`` (None where it cannot be read)."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def check_memory(rows: tuple[int, int], fields: dict[str, torch.Tensor], device: torch.device) -> None:
    """Refuse a ring that does not fit on its device, before allocating it (a 1M-transition
    pixel replay needs ~42 GB), naming the capacity that would fit."""
    per_step = sum(value[0].numel() * value.element_size() for value in fields.values())  # one world
    needed = rows[0] * rows[1] * per_step
    free = available_memory(device)
    if free is not None and needed > free:
        fits = int(0.8 * free / per_step)
        fits = fits // 1000 * 1000 if fits >= 1000 else fits
        transitions = rows[0] * rows[1]
        raise ValueError(
            f"the replay needs {needed / 2**30:.1f} GiB ({transitions} transitions of {per_step} bytes) but "
            f"{device} has {free / 2**30:.1f} GiB free: lower replay.capacity (e.g. replay.capacity={fits})"
        )
