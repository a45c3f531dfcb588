"""The one online loop: collect -> replay -> update -> evaluate -> snapshot.

``pretrain.py`` and ``finetune.py`` build the parts (env, eval env, agent, replay,
logger) and hand them to :class:`OnlineRunner`; tests hand it small ones. Frames count
control steps across all worlds, as URLB's: an iteration steps every world once and adds
``num_envs * action_repeat`` frames (pixel envs repeat each action: URLB's 2). Updates
follow an explicit update-to-data ratio (``updates_per_frame``; URLB's one update every 2
env steps is 0.5 for states, 0.25 for pixels at repeat 2), counted with a carried
fractional credit so any ratio and world count give the right total.

A checkpoint (every ``checkpoint_every_frames``, atomic) holds everything the loop reads
(agent and optimisers, replay, env physics, step counters and reset RNGs, carried agent
state, the torch RNG, counters), so ``resume`` continues a killed run exactly.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from urlb.data.checkpoint import checkpoint_path, load_snapshot, save_snapshot
from urlb.measure.evaluate import EXPERT_SCORES, append_record, evaluate, normalised_score


class NonFiniteLossError(RuntimeError):
    """An update produced NaN or inf; the run stops and keeps its last good snapshot."""


@dataclass
class Schedule:
    """When things happen, in frames (env steps summed over worlds)."""

    total_frames: int
    seed_frames: int
    updates_per_frame: float
    eval_every_frames: int
    log_every_frames: int
    checkpoint_every_frames: int
    snapshot_frames: tuple[int, ...] = field(default_factory=tuple)


def check_finite(metrics: dict[str, torch.Tensor], where: str) -> None:
    """Stop on a NaN or inf metric, naming it and ``where`` (one host sync: called at log,
    snapshot and checkpoint time, by the online and the offline loop)."""
    if not metrics:
        return
    values = torch.stack([v.detach().float().reshape(()) for v in metrics.values()])
    if not bool(torch.isfinite(values).all()):
        bad = [k for k, v in zip(metrics, values.tolist(), strict=True) if not math.isfinite(v)]
        raise NonFiniteLossError(
            f"non-finite {', '.join(bad)} at {where}; the last good snapshot and checkpoint are kept"
        )


def crossed(previous: int, current: int, every: int) -> bool:
    """Whether a multiple of ``every`` lies in ``(previous, current]``."""
    return every > 0 and previous // every != current // every


class OnlineRunner:
    def __init__(
        self,
        env,
        eval_env,
        agent,
        replay,
        logger,
        schedule: Schedule,
        run_dir: Path,
        seed: int,
        record: dict,
        task: str | None = None,
        write_snapshot: Callable[[int], None] | None = None,
        store_physics: bool = False,
        evaluators: tuple = (),
    ):
        self.env, self.eval_env, self.agent, self.replay, self.logger = env, eval_env, agent, replay, logger
        self.schedule = schedule
        self.run_dir = Path(run_dir)
        self.seed = seed
        self.record = record
        self.task = task
        self.write_snapshot = write_snapshot
        # Physics states ride along in replay (for datasets: ExORL-style relabelling, goals).
        self.store_physics = store_physics
        # Extra measurements at each evaluation, e.g. urlb.measure.skills.SkillEvaluator: called as
        # evaluator(agent, frame, logger) -> metrics; each keeps a JSON-lines file ``records``.
        self.evaluators = tuple(evaluators)
        self.frame = 0
        self.update_credit = 0.0
        self.updates = 0
        self.evaluations = 0
        self.observation = None
        self.position = None
        self.agent_state = None
        self.episode_return = None
        self.last_metrics: dict[str, torch.Tensor] = {}
        agent.set_task(None if task is None else env.task_names.index(task))

    @property
    def frames_per_step(self) -> int:
        """Frames one iteration adds: every world's control steps."""
        return self.env.num_envs * self.env.action_repeat

    # -- the loop -----------------------------------------------------------------------------
    def start(self) -> None:
        """Fresh start: reset the env and the agent's carried state."""
        td = self.env.reset()
        self.observation, self.position = td["observation"], td["position"]
        self.agent_state = self.agent.init_state(self.env.num_envs, self.env.device)
        self.episode_return = torch.zeros(self.env.num_envs, len(self.env.task_names), device=self.env.device)

    def run(self) -> dict[str, float]:
        """Run to ``total_frames``; returns the last evaluation's returns."""
        if self.observation is None:
            self.start()
        schedule = self.schedule
        last_eval: dict[str, float] = {}
        started, started_frame = time.perf_counter(), self.frame
        while self.frame < schedule.total_frames:
            previous = self.frame
            self.collect()
            self.agent_state = self.agent.adapt(self.replay, self.frame, self.agent_state)
            self.train()
            if crossed(previous, self.frame, schedule.log_every_frames):
                self.log_training(started, started_frame)
            if (
                crossed(previous, self.frame, schedule.eval_every_frames)
                or self.frame >= schedule.total_frames
            ):
                last_eval = self.evaluate()
            for snapshot_frame in schedule.snapshot_frames:
                if previous < snapshot_frame <= self.frame and self.write_snapshot is not None:
                    self.check_finite()
                    self.write_snapshot(snapshot_frame)
            if crossed(previous, self.frame, schedule.checkpoint_every_frames):
                self.save_checkpoint()
        self.logger.progress(self.frame, force=True)
        return last_eval

    def collect(self) -> None:
        env, agent = self.env, self.agent
        if self.frame < self.schedule.seed_frames:
            action = torch.rand(env.num_envs, env.action_dim, device=env.device) * 2 - 1
        else:
            action = agent.act(self.observation, self.agent_state, explore=True)
        extras = self.extras()
        out = env.step(action)
        self.replay.add(
            self.observation,
            action,
            out["next_observation"],
            out["task_reward"],
            out["terminated"],
            out["truncated"],
            extras=extras | {"next_position": out["next_position"]},
        )
        self.agent_state = agent.observe(self.agent_state, out)
        self.observation, self.position = out["observation"], out["position"]
        self.episode_return += out["task_reward"]
        self.frame += self.frames_per_step
        # Every world starts together and episodes have a fixed length, so episodes end
        # on a known iteration (no read of the done flags from the device).
        if (self.frame // self.frames_per_step) % env.episode_steps == 0:
            returns = self.episode_return.mean(dim=0)
            if self.task is not None:
                metrics = {"episode_return": returns[env.task_names.index(self.task)]}
            else:  # reward-free: the exploration policy's zero-shot task returns
                metrics = {f"episode_return/{t}": returns[i] for i, t in enumerate(env.task_names)}
            self.logger.log("train", metrics, self.frame)
            self.episode_return.zero_()

    def extras(self) -> dict[str, torch.Tensor]:
        """What is stored with a transition besides (s, a, s', rewards, flags): the agent's
        per-world values (a skill), the position at s (``next_position`` joins after the
        step) and, if asked, the physics state s was observed in."""
        extras = self.agent.replay_extras(self.agent_state) | {"position": self.position}
        if self.store_physics:
            state = self.env.physics_state()
            extras |= {key: state[key] for key in ("qpos", "qvel", "act")}
        return extras

    def train(self) -> None:
        if self.frame < self.schedule.seed_frames:
            return
        self.update_credit += self.frames_per_step * self.schedule.updates_per_frame
        while self.update_credit >= 1.0:
            self.last_metrics = self.agent.update(self.replay, self.frame)
            self.update_credit -= 1.0
            self.updates += 1

    # -- reporting ----------------------------------------------------------------------------
    def check_finite(self) -> None:
        check_finite(self.last_metrics, f"frame {self.frame} (update {self.updates})")

    def log_training(self, started: float, started_frame: int) -> None:
        self.check_finite()
        elapsed = time.perf_counter() - started
        self.logger.log("train", self.last_metrics, self.frame)
        self.logger.log(
            "time",
            {
                "fps": (self.frame - started_frame) / max(elapsed, 1e-9),
                "updates": self.updates,
                "elapsed_s": elapsed,
            },
            self.frame,
        )
        self.logger.progress(self.frame)

    def evaluate(self) -> dict[str, float]:
        self.evaluations += 1
        returns = evaluate(self.eval_env, self.agent, seed=self.seed * 100_003 + self.frame)
        tasks = [self.task] if self.task is not None else list(returns)
        metrics = {}
        for task in tasks:
            score = normalised_score(task, returns[task]) if task in EXPERT_SCORES else float("nan")
            append_record(
                self.run_dir / "eval.jsonl",
                {
                    **self.record,
                    "task": task,
                    "frames": self.frame,
                    "return": returns[task],
                    "normalised_score": score,
                },
            )
            metrics[f"{task}/return"] = returns[task]
            metrics[f"{task}/normalised_score"] = score
        if self.task is not None:
            metrics["return"] = returns[self.task]
        extra = {"eval/return": returns[tasks[0]]}
        for evaluator in self.evaluators:
            measured = evaluator(self.agent, self.frame, self.logger)
            metrics |= measured
            extra |= measured
        self.logger.log("eval", metrics, self.frame)
        self.logger.progress(self.frame, extra=extra, force=True)
        return returns

    # -- checkpoints --------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {
            "frame": self.frame,
            "update_credit": self.update_credit,
            "updates": self.updates,
            "evaluations": self.evaluations,
            "agent": self.agent.training_state(),
            "agent_state": self.agent_state.to_dict(),
            "observation": self.observation,
            "position": self.position,
            "episode_return": self.episode_return,
            "replay": self.replay.state_dict(),
            "env": self.env.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        }

    def load_state_dict(self, state: dict) -> None:
        from tensordict import TensorDict

        self.frame = int(state["frame"])
        self.update_credit = float(state["update_credit"])
        self.updates = int(state["updates"])
        self.evaluations = int(state["evaluations"])
        self.agent.load_training_state(state["agent"])
        self.agent_state = TensorDict(
            state["agent_state"], batch_size=[self.env.num_envs], device=self.env.device
        )
        self.observation = state["observation"].to(self.env.device)
        self.position = state["position"].to(self.env.device)
        self.episode_return = state["episode_return"].to(self.env.device)
        self.replay.load_state_dict(state["replay"])
        self.env.load_state_dict(state["env"])
        torch.set_rng_state(state["torch_rng"])
        if state["cuda_rng"]:
            torch.cuda.set_rng_state_all(state["cuda_rng"])

    def save_checkpoint(self) -> None:
        self.check_finite()
        save_snapshot(checkpoint_path(self.run_dir), self.state_dict())

    def resume(self) -> bool:
        """Continue from the run folder's checkpoint; False if there is none. Evaluation
        records (and the evaluators' records) written after the checkpoint by the killed
        process are dropped, since the resumed run writes them again."""
        path = checkpoint_path(self.run_dir)
        if not path.exists():
            return False
        self.load_state_dict(load_snapshot(path))
        for records in (self.run_dir / "eval.jsonl", *(e.records for e in self.evaluators)):
            if records.exists():
                lines = records.read_text().splitlines()
                kept = [line for line in lines if json.loads(line)["frames"] <= self.frame]
                records.write_text("".join(line + "\n" for line in kept))
        return True
