"""Published URLB finetuning returns, for reference rows in reports (never mixed with measured runs).

Source: Laskin et al. (2021), "URLB: Unsupervised Reinforcement Learning Benchmark", states,
2M reward-free pretraining frames then 100k finetuning frames, per-task mean returns over the
paper's seeds, as transcribed in ../shared/BENCHMARKS.md ("Published per-task finetune
returns"). That transcription lists 11 of the 12 tasks: ``jaco_reach_top_right`` is missing, so
it has no published value here. Only per-task means were published: reports compute
aggregates of these means (one value per task, no runs, hence no confidence intervals).
"""

from __future__ import annotations

from envs.tasks import TASKS

SOURCE = "Laskin et al. 2021 (URLB), states, 2M pretrain + 100k finetune frames; per-task means"
PRETRAIN_FRAMES = 2_000_000
FINETUNE_FRAMES = 100_000

# URLB's task order, less the task the transcription lacks (module docstring).
_TASKS = tuple(task for task in TASKS if task != "jaco_reach_top_right")
_ROWS = {
    "ICM": (868, 568, 180, 381, 452, 234, 221, 337, 90, 112, 94),
    "Disagreement": (658, 453, 166, 313, 686, 358, 395, 512, 111, 120, 132),
    "RND": (842, 694, 267, 412, 875, 581, 455, 681, 83, 106, 111),
    "APT": (949, 850, 491, 596, 676, 464, 390, 508, 116, 114, 120),
    "ProtoRL": (828, 610, 225, 378, 702, 348, 310, 426, 134, 130, 131),
    "SMM": (924, 731, 345, 428, 388, 167, 222, 271, 53, 52, 55),
    "DIAYN": (631, 394, 146, 306, 662, 273, 325, 491, 23, 35, 35),
    "APS": (667, 500, 166, 355, 379, 192, 206, 283, 51, 61, 79),
    "CIC": (968, 914, 535, 715, 717, 460, 376, 541, 145, 147, 150),
}

# method -> task -> published mean return
PUBLISHED_RETURNS: dict[str, dict[str, float]] = {
    method: dict(zip(_TASKS, map(float, returns), strict=True)) for method, returns in _ROWS.items()
}


def published_method(name: str) -> str:
    """The published method a name refers to, case-insensitively (``diayn`` -> ``DIAYN``)."""
    for method in PUBLISHED_RETURNS:
        if method.lower() == name.lower():
            return method
    raise KeyError(f"no published URLB numbers for {name!r}; known: {', '.join(PUBLISHED_RETURNS)}")
