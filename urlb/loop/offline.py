"""The loop for dataset-based pretraining: update -> log -> evaluate -> snapshot, counted in updates.

``pretrain.py agent=pdt env=walker dataset=<path>`` builds the parts (``urlb.run.pretrain``)
and hands them to :class:`OfflineLoop`; tests hand it small ones. The loop::

    agent.prepare_offline(sampler)                # fresh start only: whole-dataset statistics
    agent.set_task(None)                          # reward-free
    while updates < total_updates:
        metrics = agent.update(sampler, updates)  # a dict of 0-dim tensors
        updates += 1
        log every log_every_updates; evaluate every eval_every_updates and at the end;
        snapshot at snapshot_updates; checkpoint every checkpoint_every_updates

The contract with dataset agents (``agents/base.py``): the class sets ``pretrains_offline =
True`` and defines ``prepare_offline(sampler)``; ``update`` receives a
:class:`urlb.data.datasets.DatasetSampler` and draws its own batches with torch's default
generator, which checkpoints save (PDT: ``sampler.sample_windows(batch_size, 2K)``, windows
inside one episode); ``act`` is the same online interface finetuning uses.

Units: an offline run collects no env frames, so its clock is gradient updates: logs, records,
checkpoints and snapshots are indexed by updates (``snapshot_<updates>.pt``, found by
``finetune.py snapshot=<updates>``). Evaluations are zero-shot returns on every task of the
domain, one deterministic episode per eval world, written to ``eval.jsonl`` like online
pretraining's (``"updates"`` added; ``"frames"`` is the dataset's transitions). A checkpoint
holds the agent with its optimisers, the counters and the RNG states, so a resume continues a
killed run exactly.

Imports: urlb.loop.base (and through it urlb.data, urlb.measure); no agent.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch

from urlb.loop.base import Loop


def check_dataset(
    meta: dict, domain: str, obs_dim, observation: torch.Tensor, path, pixels: dict | None = None
) -> None:
    """One-line errors for a dataset that does not fit the run's domain and observations
    (``pixels``: the run's frame options, ``make_env``'s; None on states)."""
    if meta.get("domain") != domain:
        raise ValueError(
            f"dataset {path} holds {meta.get('domain')} data; pretrain with env={meta.get('domain')} "
            f"or pass a {domain} dataset"
        )
    if pixels is not None:
        check_frames(meta, pixels, path)
        return
    if observation.shape[1] != obs_dim:
        raise ValueError(
            f"dataset {path} has {observation.shape[1]}-dim observations, the {domain} env {obs_dim}; "
            "collect it without observe_pose (python collect.py env=... policy=random ...)"
        )


def check_frames(meta: dict, pixels: dict, path) -> None:
    """The dataset holds frames made as the run's pixel env makes them (size, camera, action
    repeat): an agent acts on the frames it learnt from."""
    made = meta.get("frames")
    if made is None:
        raise ValueError(
            f"dataset {path} holds no frames; render them from its physics states (python "
            f"render_dataset.py dataset={path} out=<new path>) or use obs=states"
        )
    camera = pixels.get("camera")
    wanted = {
        "size": pixels["size"],
        "action_repeat": pixels["action_repeat"],
        "camera": made["camera"] if camera is None else camera,
        "shadows": pixels.get("shadows", False),
    }
    differ = {key: made.get(key) for key, value in wanted.items() if made.get(key) != value}
    if differ:
        fix = " ".join(f"obs.{key}={value}" for key, value in differ.items())
        run = {key: wanted[key] for key in differ}
        raise ValueError(
            f"dataset {path} holds frames made with {differ}, the run's pixel env makes {run}: pass "
            f"{fix} (obs=pixels_exorl is 64x64 at action repeat 1)"
        )


@dataclass
class OfflineSchedule:
    """When things happen, in gradient updates."""

    total_updates: int
    eval_every_updates: int
    log_every_updates: int
    checkpoint_every_updates: int
    snapshot_updates: tuple[int, ...] = field(default_factory=tuple)

    def __post_init__(self):
        bad = [u for u in self.snapshot_updates if not 0 < u <= self.total_updates]
        if bad:
            raise ValueError(
                f"offline.snapshot_updates {bad} lie outside 1..offline.updates={self.total_updates}; "
                "snapshot within the run"
            )


def due(updates: int, every: int) -> bool:
    return every > 0 and updates % every == 0


class OfflineLoop(Loop):
    """Pretrains a dataset agent from ``sampler`` (a :class:`urlb.data.datasets.DatasetSampler`)
    on ``schedule`` (an :class:`OfflineSchedule`); ``eval_env`` measures its zero-shot returns.
    Other arguments as :class:`urlb.loop.base.Loop`'s."""

    clock_key = "updates"

    def __init__(
        self,
        eval_env,
        agent,
        sampler,
        logger,
        schedule: OfflineSchedule,
        run_dir,
        seed: int,
        record: dict,
        write_snapshot=None,
    ):
        super().__init__(agent, eval_env, logger, run_dir, seed, record, write_snapshot=write_snapshot)
        self.sampler, self.schedule = sampler, schedule
        agent.set_task(None)

    @property
    def clock(self) -> int:
        return self.updates

    def run(self) -> dict[str, float]:
        schedule, last_eval = self.schedule, {}
        if self.updates == 0:  # checkpoints come after the first update: this is a fresh start
            self.agent.prepare_offline(self.sampler)
        started, started_updates = time.perf_counter(), self.updates
        while self.updates < schedule.total_updates:
            self.last_metrics = self.agent.update(self.sampler, self.updates)
            self.updates += 1
            if due(self.updates, schedule.log_every_updates):
                self.log_training(started, started_updates, "updates_per_s")
            if due(self.updates, schedule.eval_every_updates) or self.updates == schedule.total_updates:
                last_eval = self.evaluate()
            if self.updates in schedule.snapshot_updates:
                self.snapshot(self.updates)
            if due(self.updates, schedule.checkpoint_every_updates):
                self.save_checkpoint()
        self.logger.progress(self.updates, force=True)
        return last_eval
