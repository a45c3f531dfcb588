"""The online loop: collect -> replay -> update -> evaluate -> snapshot.

``urlb.run`` builds the parts (env, eval env, agent, replay, logger) and hands them to
:class:`OnlineLoop`; tests hand it small ones. Frames count control steps across all worlds,
as URLB's: an iteration steps every world once and adds ``num_envs * action_repeat`` frames
(pixel envs repeat each action: URLB's 2). Updates follow an explicit update-to-data ratio
(``updates_per_frame``; URLB's one update every 2 env steps is 0.5 for states, 0.25 for pixels
at repeat 2), counted with a carried fractional credit so any ratio and world count give the
right total.

A checkpoint (every ``checkpoint_every_frames``, atomic) holds everything the loop reads
(agent and optimisers, replay, env physics, step counters and reset RNGs, carried agent
state, the torch RNG, counters), so a resume continues a killed run exactly.

Imports: urlb.loop.base (and through it urlb.data, urlb.measure); no agent.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
from tensordict import TensorDict

from urlb.loop.base import Loop, NonFiniteLossError, check_finite, crossed

__all__ = ["NonFiniteLossError", "OnlineLoop", "Schedule", "check_finite", "crossed"]


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
    # Frames acted with uniform random actions; None: all of ``seed_frames`` (URLB's). An agent
    # whose policy is worth keeping from frame 0 (a zero-shot agent finetuned from its task's z)
    # acts with it through the seed frames, which then only hold the updates back.
    random_frames: int | None = None

    @property
    def random_action_frames(self) -> int:
        return self.seed_frames if self.random_frames is None else self.random_frames


class OnlineLoop(Loop):
    """Trains ``agent`` on ``env`` through ``replay`` on ``schedule``.

    Args (besides :class:`urlb.loop.base.Loop`'s):
        env: the training env (``num_envs`` worlds).
        replay: a :class:`urlb.data.replay.ReplayBuffer` sized for ``env``.
        schedule: a :class:`Schedule`.
        store_physics: store each transition's physics state (datasets: ExORL-style
            relabelling, goals).
    """

    clock_key = "frames"

    def __init__(
        self,
        env,
        eval_env,
        agent,
        replay,
        logger,
        schedule: Schedule,
        run_dir,
        seed: int,
        record: dict,
        task: str | None = None,
        write_snapshot=None,
        store_physics: bool = False,
        evaluators=(),
    ):
        super().__init__(agent, eval_env, logger, run_dir, seed, record, task, write_snapshot, evaluators)
        self.env, self.replay, self.schedule = env, replay, schedule
        self.store_physics = store_physics
        self.frame = 0
        self.update_credit = 0.0
        self.observation = self.position = self.agent_state = self.episode_return = None
        agent.set_task(None if task is None else env.task_names.index(task))

    @property
    def clock(self) -> int:
        return self.frame

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
        if self.observation is None:
            self.start()
        schedule, last_eval = self.schedule, {}
        started, started_frame = time.perf_counter(), self.frame
        while self.frame < schedule.total_frames:
            previous = self.frame
            self.collect()
            self.agent_state = self.agent.adapt(self.replay, self.frame, self.agent_state)
            self.train()
            if crossed(previous, self.frame, schedule.log_every_frames):
                self.log_training(started, started_frame, "fps")
            if (
                crossed(previous, self.frame, schedule.eval_every_frames)
                or self.frame >= schedule.total_frames
            ):
                last_eval = self.evaluate()
            for frame in schedule.snapshot_frames:  # named by the frame they stand for
                if previous < frame <= self.frame:
                    self.snapshot(frame)
            if crossed(previous, self.frame, schedule.checkpoint_every_frames):
                self.save_checkpoint()
        self.logger.progress(self.frame, force=True)
        return last_eval

    def collect(self) -> None:
        env, agent = self.env, self.agent
        if self.frame < self.schedule.random_action_frames:
            action = torch.rand(env.num_envs, env.action_dim, device=env.device) * 2 - 1
        else:
            try:
                action = agent.act(self.observation, self.agent_state, explore=True)
            except (ValueError, RuntimeError) as error:
                raise self.act_failed(error, self.where()) from error
        extras = self.extras()
        try:
            out = env.step(action)
        except RuntimeError as error:  # the env refuses a non-finite action: say whose it was
            if self.frame < self.schedule.random_action_frames:
                raise
            raise self.act_failed(error, self.where()) from error
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

    # -- checkpoints --------------------------------------------------------------------------
    def extra_state(self) -> dict:
        return {
            "update_credit": self.update_credit,
            "agent_state": self.agent_state.to_dict(),
            "observation": self.observation,
            "position": self.position,
            "episode_return": self.episode_return,
            "replay": self.replay.state_dict(),
            "env": self.env.state_dict(),
        }

    def load_extra_state(self, state: dict) -> None:
        device = self.env.device
        self.frame = int(state["clock"])
        self.update_credit = float(state["update_credit"])
        self.agent_state = TensorDict(state["agent_state"], batch_size=[self.env.num_envs], device=device)
        self.observation = state["observation"].to(device)
        self.position = state["position"].to(device)
        self.episode_return = state["episode_return"].to(device)
        self.replay.load_state_dict(state["replay"])
        self.env.load_state_dict(state["env"])
