"""Memory budget of a run: what a device has free, and the refusal of allocations that would
not fit, made before any of them is made.

A run states its big allocations as :class:`Need` s (the replay, the simulated worlds, the
pixel renderer), each with the setting that sizes it; :func:`check_needs` adds them up per
device and refuses, in one line, a total over what the device has free, with the figure of
each part and a value of the biggest part's setting that fits. The replay's own storage is
checked again when it is allocated (:func:`check_memory`), against its exact field sizes.

Imports torch only.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

# Leave this share of the free memory to everything not estimated (the agent, the allocator's
# slack, other processes): a run sized to the last byte fails later instead.
HEADROOM = 0.8


class OversizeError(ValueError):
    """A run or a replay that would not fit in its device's free memory; refused before anything
    is allocated, with the figure and a size that fits."""


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


def gib(size: float) -> str:
    return f"{size / 2**30:.1f} GiB"


@dataclass(frozen=True)
class Need:
    """One big allocation of a run: ``count`` units of ``unit_bytes`` on ``device``.

    Attributes:
        what: a name for the message (``replay``, ``worlds``, ``renderer``).
        device: where it is allocated.
        count: how many units (transitions, worlds).
        unit_bytes: bytes per unit.
        unit: the units' name (``transitions``, ``worlds``).
        setting: the config key that sets ``count`` (``replay.capacity``, ``protocol.num_envs``).
        per_setting: units per unit of the setting (a world count of 2 * num_envs + ...: 1 per
            ``num_envs``, so the suggested value is the units that fit, divided by this).
    """

    what: str
    device: torch.device
    count: int
    unit_bytes: int
    unit: str
    setting: str
    per_setting: float = 1.0

    @property
    def bytes(self) -> int:
        return self.count * self.unit_bytes

    def describe(self) -> str:
        return f"{self.what} {gib(self.bytes)} ({self.count} {self.unit} of {self.unit_bytes:,} bytes)"


def check_needs(needs: list[Need]) -> None:
    """Refuse needs that do not fit their device's free memory (with :data:`HEADROOM`), naming
    the total, each part and a value of the biggest part's setting that fits."""
    for device in dict.fromkeys(need.device for need in needs):
        here = [need for need in needs if need.device == device and need.count > 0]
        total = sum(need.bytes for need in here)
        free = available_memory(device)
        if free is None or total <= HEADROOM * free:
            continue
        biggest = max(here, key=lambda need: need.bytes)
        others = total - biggest.bytes
        units = int((HEADROOM * free - others) / biggest.unit_bytes)
        value = round_down(int(units / biggest.per_setting))
        parts = ", ".join(need.describe() for need in here)
        if value >= 1:
            fix = f"lower {biggest.setting} (e.g. {biggest.setting}={value})"
        else:
            fix = f"lower {biggest.setting} and {', '.join(n.setting for n in here if n is not biggest)}"
        raise OversizeError(
            f"this run needs about {gib(total)} on {device} ({parts}) but {device} has {gib(free)} free: "
            f"{fix}; nothing was allocated"
        )


def check_dataset_fits(path, size: int, device: torch.device) -> None:
    """Refuse a dataset of ``size`` bytes that would not fit where a sampler loads it: read into
    host memory, then moved to ``device`` (a pixel dataset of 1M 64x64 transitions is ~12 GB)."""
    for where in dict.fromkeys([torch.device("cpu"), torch.device(device)]):
        free = available_memory(where)
        if free is not None and size > HEADROOM * free:
            raise OversizeError(
                f"dataset {path} holds {gib(size)} but {where} has {gib(free)} free: use a smaller "
                "dataset (collect fewer frames, or render fewer of them)"
                + ("" if where.type == "cpu" else ", or device=cpu")
                + "; nothing was loaded"
            )


def round_down(value: int) -> int:
    """A round suggestion: 3 significant digits at most (123456 -> 123000)."""
    if value < 1000:
        return value
    scale = 10 ** (len(str(value)) - 3)
    return value // scale * scale


def check_memory(rows: tuple[int, int], fields: dict[str, torch.Tensor], device: torch.device) -> None:
    """Refuse a ring that does not fit on its device, before allocating it (a 1M-transition
    pixel replay needs ~42 GB), naming the capacity that would fit."""
    per_step = sum(value[0].numel() * value.element_size() for value in fields.values())  # one world
    needed = rows[0] * rows[1] * per_step
    free = available_memory(device)
    if free is not None and needed > free:
        fits = round_down(int(HEADROOM * free / per_step))
        transitions = rows[0] * rows[1]
        raise OversizeError(
            f"the replay needs {gib(needed)} ({transitions} transitions of {per_step} bytes) but "
            f"{device} has {gib(free)} free: lower replay.capacity (e.g. replay.capacity={fits})"
        )
