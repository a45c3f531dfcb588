"""The loop for dataset-based pretraining: update -> log -> evaluate -> snapshot, counted in updates.

``pretrain.py agent=pdt env=walker dataset=<path>`` builds the parts
(``urlb.experiment.pretrain_offline``) and hands them to :class:`OfflineRunner`; tests hand it
small ones. The loop::

    agent.prepare_offline(sampler)                # fresh start only: whole-dataset statistics
    agent.set_task(None)                          # reward-free
    while updates < total_updates:
        metrics = agent.update(sampler, updates)  # a dict of 0-dim tensors
        updates += 1
        log every log_every_updates; evaluate every eval_every_updates and at the end;
        snapshot at snapshot_updates; checkpoint every checkpoint_every_updates

The contract with dataset agents (``agents/base.py``): the class sets ``pretrains_offline = True``, defines
``prepare_offline(sampler)``; ``update`` receives a :class:`urlb.data.datasets.DatasetSampler` and
draws its own batches with torch's default generator, which checkpoints save (PDT:
``sampler.sample_windows(batch_size, 2K)``, windows inside one episode); ``act`` is the same
online interface finetuning uses.

Units: an offline run collects no env frames, so its clock is gradient updates: logs, records,
checkpoints and snapshots are indexed by updates (``snapshot_<updates>.pt``, found by
``finetune.py snapshot=<updates>``). Evaluations are zero-shot returns on every task of the
domain, one deterministic episode per eval world, written to ``eval.jsonl`` like online
pretraining's (``"updates"`` added; ``"frames"`` is the dataset's transitions).
A checkpoint holds the agent with its optimisers, the counters and the RNG states, so
``resume=true`` continues a killed run exactly.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from hydra.utils import get_class

from urlb.data.checkpoint import checkpoint_path, load_snapshot, save_snapshot
from urlb.loop.online import check_finite
from urlb.measure.evaluate import EXPERT_SCORES, append_record, evaluate, normalised_score


def is_dataset_agent(agent_cfg) -> bool:
    """Whether the agent a config names pretrains from a dataset (``pretrains_offline``)."""
    return bool(get_class(agent_cfg._target_).pretrains_offline)


def check_dataset(meta: dict, domain: str, obs_dim: int, observation: torch.Tensor, path) -> None:
    """One-line errors for a dataset that does not fit the run's domain and observations."""
    if meta.get("domain") != domain:
        raise ValueError(
            f"dataset {path} holds {meta.get('domain')} data; pretrain with env={meta.get('domain')} "
            f"or pass a {domain} dataset"
        )
    if observation.shape[1] != obs_dim:
        raise ValueError(
            f"dataset {path} has {observation.shape[1]}-dim observations, the {domain} env {obs_dim}; "
            "collect it without observe_pose (python collect.py env=... policy=random ...)"
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


class OfflineRunner:
    """Pretrains a dataset agent from ``sampler``; ``eval_env`` measures its zero-shot returns.

    Args:
        eval_env: one deterministic episode per world at each evaluation.
        agent, sampler: the dataset agent and its :class:`urlb.data.datasets.DatasetSampler`.
        schedule: an :class:`OfflineSchedule`.
        run_dir: where ``eval.jsonl``, the logs and ``checkpoint.pt`` go.
        seed: seeds the evaluations (with the update count).
        record: fields every evaluation record carries (agent, domain, seed, phase, ...).
        write_snapshot: called with the update count at each of ``schedule.snapshot_updates``.
    """

    evaluators = ()  # urlb.experiment.run checks the evaluators' records; offline runs have none

    def __init__(
        self,
        eval_env,
        agent,
        sampler,
        schedule: OfflineSchedule,
        run_dir: Path,
        seed: int,
        record: dict,
        write_snapshot: Callable[[int], None] | None = None,
        logger=None,
    ):
        self.eval_env, self.agent, self.sampler, self.schedule = eval_env, agent, sampler, schedule
        self.run_dir, self.seed, self.record = Path(run_dir), seed, record
        self.write_snapshot, self.logger = write_snapshot, logger
        self.updates = self.evaluations = 0
        self.last_metrics: dict[str, torch.Tensor] = {}
        agent.set_task(None)

    @property
    def frame(self) -> int:
        """The logger's step, which ``urlb.experiment.run`` reads: updates here."""
        return self.updates

    def run(self) -> dict[str, float]:
        """Run to ``total_updates``; returns the last evaluation's returns."""
        schedule, last_eval = self.schedule, {}
        if self.updates == 0:  # checkpoints come after the first update: this is a fresh start
            self.agent.prepare_offline(self.sampler)
        started, started_updates = time.perf_counter(), self.updates
        while self.updates < schedule.total_updates:
            self.last_metrics = self.agent.update(self.sampler, self.updates)
            self.updates += 1
            if due(self.updates, schedule.log_every_updates):
                self.log_training(started, started_updates)
            if due(self.updates, schedule.eval_every_updates) or self.updates == schedule.total_updates:
                last_eval = self.evaluate()
            if self.updates in schedule.snapshot_updates and self.write_snapshot is not None:
                check_finite(self.last_metrics, f"update {self.updates}")
                self.write_snapshot(self.updates)
            if due(self.updates, schedule.checkpoint_every_updates):
                self.save_checkpoint()
        self.logger.progress(self.updates, force=True)
        return last_eval

    def log_training(self, started: float, started_updates: int) -> None:
        check_finite(self.last_metrics, f"update {self.updates}")
        elapsed = time.perf_counter() - started
        self.logger.log("train", self.last_metrics, self.updates)
        rate = (self.updates - started_updates) / max(elapsed, 1e-9)
        self.logger.log("time", {"updates_per_s": rate, "elapsed_s": elapsed}, self.updates)
        self.logger.progress(self.updates)

    def evaluate(self) -> dict[str, float]:
        """Zero-shot returns of every task, one record each."""
        self.evaluations += 1
        returns = evaluate(self.eval_env, self.agent, seed=self.seed * 100_003 + self.updates)
        metrics = {}
        for task, value in returns.items():
            score = normalised_score(task, value) if task in EXPERT_SCORES else float("nan")
            append_record(
                self.run_dir / "eval.jsonl",
                {
                    **self.record,
                    "task": task,
                    "updates": self.updates,
                    "return": value,
                    "normalised_score": score,
                },
            )
            metrics |= {f"{task}/return": value, f"{task}/normalised_score": score}
        self.logger.log("eval", metrics, self.updates)
        first = next(iter(returns))
        self.logger.progress(self.updates, extra={"eval/return": returns[first]}, force=True)
        return returns

    # -- checkpoints --------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {
            "updates": self.updates,
            "evaluations": self.evaluations,
            "agent": self.agent.training_state(),
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        }

    def load_state_dict(self, state: dict) -> None:
        self.updates, self.evaluations = int(state["updates"]), int(state["evaluations"])
        self.agent.load_training_state(state["agent"])
        torch.set_rng_state(state["torch_rng"])
        if state["cuda_rng"]:
            torch.cuda.set_rng_state_all(state["cuda_rng"])

    def save_checkpoint(self) -> None:
        check_finite(self.last_metrics, f"update {self.updates}")
        save_snapshot(checkpoint_path(self.run_dir), self.state_dict())

    def resume(self) -> bool:
        """Continue from the run folder's checkpoint; False if there is none. Records written
        after it by the killed process are dropped: the resumed run writes them again."""
        path = checkpoint_path(self.run_dir)
        if not path.exists():
            return False
        self.load_state_dict(load_snapshot(path))
        records = self.run_dir / "eval.jsonl"
        if records.exists():
            kept = [
                line
                for line in records.read_text().splitlines()
                if json.loads(line)["updates"] <= self.updates
            ]
            records.write_text("".join(line + "\n" for line in kept))
        return True
