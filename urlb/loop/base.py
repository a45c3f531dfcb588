"""What the online and the offline loop share: evaluation and its records, the non-finite
check, training logs, checkpoints and resume (with the RNG state).

A loop counts on one clock, ``frames`` (online: env frames over all worlds) or ``updates``
(offline: gradient updates), and every record, log line, checkpoint and snapshot of the run is
indexed by it. Subclasses add what they step (:class:`urlb.loop.online.OnlineLoop`,
:class:`urlb.loop.offline.OfflineLoop`) and the state it needs (:meth:`Loop.extra_state`).

Imports: urlb.data and urlb.measure only; agents are duck-typed (``agents/base.py``'s
interface), never imported.
"""

from __future__ import annotations

import abc
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from envs.tasks import EXPERT_SCORES, normalised_score
from urlb.data.checkpoint import checkpoint_path, save_snapshot
from urlb.data.records import append_record, keep_records_until
from urlb.measure.evaluate import evaluate

RECORDS = "eval.jsonl"


# A trained float32 network's weights stay within a few hundred; past this bound the updates
# have diverged even while every value is still finite (issue 22: agent.lr=1e10 put 1e10 in the
# critic with every loss finite, a checkpoint saved it, and every resume then crashed in act).
PARAMETER_LIMIT = 1e8


class NonFiniteLossError(RuntimeError):
    """An update produced NaN or inf, or the agent's parameters diverged; the run stops and
    keeps its last good snapshot and checkpoint."""


def check_finite(metrics: dict[str, torch.Tensor], where: str, kept: str = "") -> None:
    """Stop on a NaN or inf metric, naming the first and ``where`` (one host sync: called at log,
    snapshot and checkpoint time)."""
    if not metrics:
        return
    values = torch.stack([v.detach().float().reshape(()) for v in metrics.values()])
    if not bool(torch.isfinite(values).all()):
        bad = [k for k, v in zip(metrics, values.tolist(), strict=True) if not math.isfinite(v)]
        kept = kept or "the last good snapshot and checkpoint are kept"
        raise NonFiniteLossError(f"non-finite {', '.join(bad)} at {where}; {kept}")


def parameter_problem(agent) -> str | None:
    """The first parameter of ``agent`` that is not finite or beyond :data:`PARAMETER_LIMIT`,
    described (``parameter critic.trunk.0.weight is nan``), or None (one host sync)."""
    named = list(agent.named_parameters()) if hasattr(agent, "named_parameters") else []
    named = [(name, value) for name, value in named if value.numel()]
    if not named:
        return None
    peaks = torch.stack([value.detach().abs().amax().float() for _, value in named]).tolist()
    for (name, _), peak in zip(named, peaks, strict=True):
        if not math.isfinite(peak):
            return f"parameter {name} is not finite ({peak})"
        if peak > PARAMETER_LIMIT:
            return f"parameter {name} reaches {peak:.1e} (beyond {PARAMETER_LIMIT:.0e}: the updates diverged)"
    return None


class Loop(abc.ABC):
    """The shared half of a training loop.

    Args:
        agent: the agent (``agents/base.py``'s interface).
        eval_env: one deterministic episode per world at each evaluation.
        logger: a :class:`urlb.measure.logging.Logger` whose start step is the loop's clock.
        run_dir: where ``eval.jsonl`` and ``checkpoint.pt`` go.
        seed: seeds the evaluations (with the clock).
        record: fields every evaluation record carries (agent, domain, seed, phase, ...).
        task: the finetuning task (its record alone), or None: every task of the domain.
        write_snapshot: called with the clock at each snapshot point.
        evaluators: extra measurements at each evaluation (``urlb.measure.skills.SkillEvaluator``),
            called as ``evaluator(agent, clock, logger) -> metrics``; each keeps a JSON-lines
            file ``records`` indexed by ``frames``.
    """

    clock_key: str  # "frames" or "updates": the key of the clock in records and checkpoints

    def __init__(
        self,
        agent,
        eval_env,
        logger,
        run_dir: Path | str,
        seed: int,
        record: dict,
        task: str | None = None,
        write_snapshot: Callable[[int], None] | None = None,
        evaluators: Sequence = (),
    ):
        self.agent, self.eval_env, self.logger = agent, eval_env, logger
        self.run_dir, self.seed, self.record, self.task = Path(run_dir), seed, record, task
        self.write_snapshot = write_snapshot
        self.evaluators = tuple(evaluators)
        self.updates = 0
        self.evaluations = 0
        self.last_metrics: dict[str, torch.Tensor] = {}
        self.last_checkpoint: int | None = None  # the clock of the last checkpoint written or read

    @property
    @abc.abstractmethod
    def clock(self) -> int:
        """The loop's position: frames collected (online) or updates made (offline)."""

    def record_files(self) -> list[Path]:
        return record_files(self.run_dir, self.evaluators)

    # -- reporting ----------------------------------------------------------------------------
    def where(self) -> str:
        where = f"{self.clock_key[:-1]} {self.clock}"  # "frame 4000", "update 120"
        if self.clock_key != "updates":
            where += f" (update {self.updates})"
        return where

    def kept(self) -> str:
        """What a stop keeps: the last good checkpoint, named by its clock."""
        if self.last_checkpoint is None:
            return "nothing was written; no checkpoint had been written yet"
        return (
            f"nothing was written: the last good checkpoint ({self.clock_key[:-1]} {self.last_checkpoint}) "
            "and the snapshots before it are kept"
        )

    def check_finite(self) -> None:
        """The last update's metrics are finite (at log time: one host sync)."""
        check_finite(self.last_metrics, self.where(), self.kept())

    def check_sound(self) -> None:
        """The last update's metrics are finite and every parameter of the agent is finite and
        within :data:`PARAMETER_LIMIT`: checked before anything is written from the agent (a
        snapshot, a checkpoint), so a diverged agent never replaces a good one."""
        self.check_finite()
        problem = parameter_problem(self.agent)
        if problem is not None:
            raise NonFiniteLossError(
                f"{problem} at {self.where()}; {self.kept()}; lower agent.lr or check the run's losses"
            )

    def act_failed(self, error: Exception, where: str) -> Exception:
        """The error to raise for ``error`` raised while the agent acted: a divergence named by
        the frame and the parameter at fault, or ``error`` itself (noted with ``where``)."""
        problem = parameter_problem(self.agent)
        if problem is None:
            error.add_note(f"(raised by the agent acting at {where})")
            return error
        cause = str(error).splitlines()[0] if str(error) else type(error).__name__
        return NonFiniteLossError(
            f"the agent could not act at {where}: {problem} ({type(error).__name__}: {cause}); "
            f"{self.kept()}; lower agent.lr or check the run's losses"
        )

    def log_training(self, started: float, started_clock: int, rate_name: str) -> None:
        """The last update's metrics (``train/``) and the rate since ``started`` (``time/``)."""
        self.check_finite()
        elapsed = time.perf_counter() - started
        rate = (self.clock - started_clock) / max(elapsed, 1e-9)
        self.logger.log("train", self.last_metrics, self.clock)
        self.logger.log("time", {rate_name: rate, "updates": self.updates, "elapsed_s": elapsed}, self.clock)
        self.logger.progress(self.clock)

    def evaluate(self) -> dict[str, float]:
        """Deterministic returns of every task (one record each), or of the finetuning task."""
        self.evaluations += 1
        try:
            returns = evaluate(self.eval_env, self.agent, seed=self.seed * 100_003 + self.clock)
        except (ValueError, RuntimeError) as error:
            raise self.act_failed(error, f"the evaluation at {self.where()}") from error
        tasks = [self.task] if self.task is not None else list(returns)
        metrics = {}
        for task in tasks:
            score = normalised_score(task, returns[task]) if task in EXPERT_SCORES else float("nan")
            fields = {
                "task": task,
                self.clock_key: self.clock,
                "return": returns[task],
                "normalised_score": score,
            }
            append_record(self.run_dir / RECORDS, self.record | fields)
            metrics |= {f"{task}/return": returns[task], f"{task}/normalised_score": score}
        if self.task is not None:
            metrics["return"] = returns[self.task]
        extra = {"eval/return": returns[tasks[0]]}
        for evaluator in self.evaluators:
            measured = evaluator(self.agent, self.clock, self.logger)
            metrics |= measured
            extra |= measured
        self.logger.log("eval", metrics, self.clock)
        self.logger.progress(self.clock, extra=extra, force=True)
        return returns

    def snapshot(self, at: int) -> None:
        """Write the snapshot of clock value ``at`` (after checking the agent: :meth:`check_sound`)."""
        if self.write_snapshot is not None:
            self.check_sound()
            self.write_snapshot(at)

    # -- checkpoints --------------------------------------------------------------------------
    def extra_state(self) -> dict:
        """What this kind of loop adds to a checkpoint (replay, env, carried state, ...)."""
        return {}

    def load_extra_state(self, state: dict) -> None:
        """Restore what :meth:`extra_state` saved (nothing, by default)."""
        return None

    def state_dict(self) -> dict:
        return {
            "clock": self.clock,
            "updates": self.updates,
            "evaluations": self.evaluations,
            "agent": self.agent.training_state(),
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            **self.extra_state(),
        }

    def load_state_dict(self, state: dict) -> None:
        self.updates, self.evaluations = int(state["updates"]), int(state["evaluations"])
        self.agent.load_training_state(state["agent"])
        self.load_extra_state(state)
        torch.set_rng_state(state["torch_rng"])
        if state["cuda_rng"]:
            torch.cuda.set_rng_state_all(state["cuda_rng"])

    def save_checkpoint(self) -> None:
        """Replace ``checkpoint.pt`` (atomically) once the agent is checked sound: a diverged
        agent leaves the last good checkpoint in place."""
        self.check_sound()
        save_snapshot(checkpoint_path(self.run_dir), self.state_dict())
        self.last_checkpoint = self.clock

    def restore(self, state: dict) -> None:
        """Continue from a checkpoint's ``state``: records written after it by the killed
        process are dropped, since the resumed run writes them again (a torn last line too)."""
        self.load_state_dict(state)
        self.last_checkpoint = self.clock
        for path in self.record_files():
            keep_records_until(path, self.clock_key, self.clock)

    @abc.abstractmethod
    def run(self) -> dict[str, float]:
        """Run to the end of the schedule; returns the last evaluation's returns."""


def record_files(run_dir: Path, evaluators: Sequence = ()) -> list[Path]:
    """Every append-only record file of a run: the evaluations' and the evaluators'."""
    return [Path(run_dir) / RECORDS, *(evaluator.records for evaluator in evaluators)]


def crossed(previous: int, current: int, every: int) -> bool:
    """Whether a multiple of ``every`` lies in ``(previous, current]``."""
    return every > 0 and previous // every != current // every
