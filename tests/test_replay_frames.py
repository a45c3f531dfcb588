"""ReplayBuffer with ``frame_stack > 1``: the stacks it rebuilds from single stored frames
against the stacks a small fake pixel env hands over, through a ring that wraps mid-episode."""

from __future__ import annotations

import copy
import io

import pytest
import torch

from urlb.data.replay import ReplayBuffer

NUM_ENVS = 3
FRAME_STACK = 3
CHANNELS = 3
CAPACITY_STEPS = 8
STEPS = 20  # laps the 8-step ring twice: stored steps are 12 .. 19
# Episode lengths per world, cycled: world 0 has a one-step episode, world 1's episode
# (11 steps) spans the ring's oldest row at the end, world 2's are shorter than the stack.
LENGTHS = {0: (4, 1, 6), 1: (11,), 2: (2, 3, 5)}


def frame(world: int, episode: int, step: int) -> torch.Tensor:
    """``(3, 2, 2)`` uint8, distinct for every (world, episode, step in episode): channel
    ``c`` holds ``(world, episode, step)[c]`` plus 64 times the pixel's index."""
    code = torch.tensor([world, episode, step], dtype=torch.uint8)
    return code[:, None, None] + 64 * torch.arange(4, dtype=torch.uint8).view(1, 2, 2)


class FakePixelEnv:
    """``NUM_ENVS`` worlds whose observation is the last ``FRAME_STACK`` frames, oldest
    first; after a reset the stack holds the reset frame ``FRAME_STACK`` times (DrQ-v2's
    FrameStack). Episode ``e`` of world ``w`` lasts ``LENGTHS[w][e % len]`` steps and ends
    terminated for even ``e``, truncated for odd. Each frame of a stack is kept as
    ``(source, frame)``: ``source`` is the env step at which it was the observation's newest
    frame (``t + 1`` for the frame a step ``t`` ended in)."""

    def __init__(self):
        self.episode = [0] * NUM_ENVS
        self.step_in_episode = [0] * NUM_ENVS
        self.stacks = [[(0, frame(w, 0, 0))] * FRAME_STACK for w in range(NUM_ENVS)]

    def step(self, t: int) -> tuple[list, list, list[bool], list[bool]]:
        """Env step ``t``: per world, the observation and next-observation stacks as
        ``(source, frame)`` lists, and terminated, truncated."""
        observations, next_observations, terminated, truncated = list(self.stacks), [], [], []
        for w in range(NUM_ENVS):
            episode, step = self.episode[w], self.step_in_episode[w] + 1
            next_stack = self.stacks[w][1:] + [(t + 1, frame(w, episode, step))]
            ended = step == LENGTHS[w][episode % len(LENGTHS[w])]
            next_observations.append(next_stack)
            terminated.append(ended and episode % 2 == 0)
            truncated.append(ended and episode % 2 == 1)
            if ended:
                self.episode[w], step = episode + 1, 0
                next_stack = [(t + 1, frame(w, episode + 1, 0))] * FRAME_STACK
            self.stacks[w], self.step_in_episode[w] = next_stack, step
        return observations, next_observations, terminated, truncated


def stack(pairs: list) -> torch.Tensor:
    """``(C*k, 2, 2)`` from ``(source, frame)`` pairs."""
    return torch.cat([f for _, f in pairs])


def drive(buffer: ReplayBuffer, env: FakePixelEnv, steps: range, reference: dict) -> None:
    """Add ``steps`` of ``env`` to ``buffer``; ``reference[(t, w)]`` keeps each transition
    as the env gave it. action = ``[t, w]``, task_reward = ``[100 t + w]``, skill = ``t``."""
    for t in steps:
        observations, next_observations, terminated, truncated = env.step(t)
        action = torch.tensor([[t, w] for w in range(NUM_ENVS)], dtype=torch.float32)
        task_reward = 100.0 * t + torch.arange(NUM_ENVS, dtype=torch.float32)[:, None]
        buffer.add(
            torch.stack([stack(pairs) for pairs in observations]),
            action,
            torch.stack([stack(pairs) for pairs in next_observations]),
            task_reward,
            torch.tensor(terminated),
            torch.tensor(truncated),
            extras={"skill": torch.full((NUM_ENVS, 2), float(t))},
        )
        for w in range(NUM_ENVS):
            reference[(t, w)] = {
                "observation": observations[w],
                "next_observation": next_observations[w],
                "task_reward": task_reward[w],
                "terminated": terminated[w],
                "truncated": truncated[w],
            }


def filled(nstep: int, steps: int = STEPS) -> tuple[ReplayBuffer, FakePixelEnv, dict]:
    buffer = ReplayBuffer(
        CAPACITY_STEPS * NUM_ENVS, NUM_ENVS, "cpu", nstep=nstep, discount=0.5, frame_stack=FRAME_STACK
    )
    env, reference = FakePixelEnv(), {}
    drive(buffer, env, range(steps), reference)
    return buffer, env, reference


def expected(reference: dict, t: int, w: int, key: str, oldest: int) -> tuple[torch.Tensor, bool]:
    """The env's ``key`` stack of transition ``(t, w)`` as the replay documents it: a frame
    from an overwritten step (source < ``oldest``) shows the oldest stored step's frame.
    Also whether that clamp changed the stack."""
    pairs = reference[(t, w)][key]
    oldest_frame = reference[(oldest, w)]["observation"][-1][1]
    clamped = [(source, oldest_frame if source < oldest else f) for source, f in pairs]
    return stack(clamped), any(source < oldest for source, _ in pairs)


@pytest.mark.parametrize("nstep", [1, 3])
def test_gather_rebuilds_env_stacks(nstep):
    buffer, _, reference = filled(nstep)
    oldest = STEPS - CAPACITY_STEPS
    starts = buffer.valid_starts().nonzero()
    assert len(starts) > 10
    out = buffer._gather(starts[:, 0], starts[:, 1])
    assert out["observation"].shape == (len(starts), CHANNELS * FRAME_STACK, 2, 2)
    clamped_starts = set()
    for b, (t, w) in enumerate(starts.tolist()):
        first, last = oldest + t, oldest + t + nstep - 1
        observation, clamped = expected(reference, first, w, "observation", oldest)
        next_observation, next_clamped = expected(reference, last, w, "next_observation", oldest)
        assert torch.equal(out["observation"][b], observation), (t, w)
        assert torch.equal(out["next_observation"][b], next_observation), (t, w)
        assert out["action"][b].tolist() == [first, w]
        rewards = [0.5**i * (100 * (first + i) + w) for i in range(nstep)]
        assert out["task_reward"][b].item() == pytest.approx(sum(rewards))
        if clamped or next_clamped:
            clamped_starts.add((t, w))
    # The clamp happens (world 1's episode began before the oldest stored step), and only at
    # the at most k-1 oldest steps.
    assert clamped_starts and all(t < FRAME_STACK - 1 for t, _ in clamped_starts)


def test_reference_stacks_are_not_trivial():
    """The fake env's stacks hold distinct frames mid-episode and repeat the reset frame at
    an episode's start, so a replay that got either wrong could not pass."""
    _, _, reference = filled(1)
    assert len({f.sum().item() for _, f in reference[(15, 1)]["observation"]}) == FRAME_STACK
    # World 2's second episode starts at step 2 (its first lasted 2 steps).
    sources = [source for source, _ in reference[(2, 2)]["observation"]]
    assert sources == [2] * FRAME_STACK


def expected_pairs(buffer: ReplayBuffer, reference: dict, last_offset: int) -> dict[bytes, torch.Tensor]:
    """Observation stack bytes -> next-observation stack ``last_offset`` steps later, for
    every valid start."""
    oldest = STEPS - CAPACITY_STEPS
    pairs = {}
    for t, w in buffer.valid_starts().nonzero().tolist():
        observation, _ = expected(reference, oldest + t, w, "observation", oldest)
        pairs[observation.numpy().tobytes()], _ = expected(
            reference, oldest + t + last_offset, w, "next_observation", oldest
        )
    return pairs


@pytest.mark.parametrize("nstep", [1, 3])
def test_sample_draws_env_stack_pairs(nstep):
    buffer, _, reference = filled(nstep)
    pairs = expected_pairs(buffer, reference, nstep - 1)
    batch = buffer.sample(512, generator=torch.Generator().manual_seed(0))
    drawn = set()
    for observation, next_observation in zip(batch["observation"], batch["next_observation"], strict=True):
        key = observation.numpy().tobytes()
        assert key in pairs
        assert torch.equal(next_observation, pairs[key])
        drawn.add(key)
    assert drawn == set(pairs)  # 512 draws over at most 24 starts reach every one


def test_sample_sequences_rebuild_every_step():
    nstep = 3
    buffer, _, reference = filled(nstep)
    oldest = STEPS - CAPACITY_STEPS
    batch = buffer.sample_sequences(128, generator=torch.Generator().manual_seed(1))
    assert batch.batch_size == (128, nstep)
    assert batch["observation"].shape == (128, nstep, CHANNELS * FRAME_STACK, 2, 2)
    first = batch["action"][:, 0, 0].long()
    for b in range(128):
        for i in range(nstep):
            t, w = (int(x) for x in batch["action"][b, i].tolist())
            assert t == first[b] + i and batch["skill"][b, i, 0] == t
            for key in ("observation", "next_observation"):
                assert torch.equal(batch[key][b, i], expected(reference, t, w, key, oldest)[0]), (t, w, key)
            assert batch["task_reward"][b, i].item() == 100 * t + w


@pytest.mark.parametrize("nstep", [1, 3])
def test_sample_transitions_cover_every_stored_step(nstep):
    buffer, _, reference = filled(nstep)
    oldest = STEPS - CAPACITY_STEPS
    batch = buffer.sample_transitions(1000, generator=torch.Generator().manual_seed(2))
    assert batch.batch_size == (1000,)
    drawn = set()
    for b in range(1000):
        t, w = (int(x) for x in batch["action"][b].tolist())
        for key in ("observation", "next_observation"):
            assert torch.equal(batch[key][b], expected(reference, t, w, key, oldest)[0]), (t, w, key)
        assert batch["task_reward"][b].item() == 100 * t + w
        assert batch["terminated"][b].item() == reference[(t, w)]["terminated"]
        assert batch["truncated"][b].item() == reference[(t, w)]["truncated"]
        drawn.add((t, w))
    # Every stored step, including those no n-step window may start at.
    assert drawn == {(t, w) for t in range(oldest, STEPS) for w in range(NUM_ENVS)}


@pytest.mark.parametrize("steps", [5, 13], ids=["partial", "wrapped"])
def test_state_dict_round_trip_continues_identically(steps):
    """Resumed mid-episode (world 1 at every cut), the replay keeps counting episode steps:
    a reset counter would show repeated frames where the env's stack has distinct ones."""
    buffer, env, reference = filled(3, steps)
    file = io.BytesIO()
    torch.save(buffer.state_dict(), file)
    file.seek(0)
    resumed = ReplayBuffer(
        CAPACITY_STEPS * NUM_ENVS, NUM_ENVS, "cpu", nstep=3, discount=0.5, frame_stack=FRAME_STACK
    )
    resumed.load_state_dict(torch.load(file, weights_only=True))
    for replay, world in ((buffer, env), (resumed, copy.deepcopy(env))):
        drive(replay, world, range(steps, steps + 4), {})
    starts = buffer.valid_starts().nonzero()
    assert torch.equal(resumed.valid_starts().nonzero(), starts)
    gathered = [replay._gather(starts[:, 0], starts[:, 1]) for replay in (buffer, resumed)]
    assert (gathered[0] == gathered[1]).all()
    for method in ("sample", "sample_sequences", "sample_transitions"):
        batches = [
            getattr(replay, method)(64, generator=torch.Generator().manual_seed(3))
            for replay in (buffer, resumed)
        ]
        assert (batches[0] == batches[1]).all(), method


def test_add_rejects_wrong_channel_count():
    buffer = ReplayBuffer(12, NUM_ENVS, "cpu", frame_stack=FRAME_STACK)
    flags = torch.zeros(NUM_ENVS, dtype=torch.bool)

    def add(channels: int, next_channels: int) -> None:
        observation = torch.zeros(NUM_ENVS, channels, 2, 2, dtype=torch.uint8)
        next_observation = torch.zeros(NUM_ENVS, next_channels, 2, 2, dtype=torch.uint8)
        buffer.add(
            observation, torch.zeros(NUM_ENVS, 1), next_observation, torch.zeros(NUM_ENVS, 1), flags, flags
        )

    with pytest.raises(ValueError, match=r"observation: got \(3, 4, 2, 2\); frame_stack=3"):
        add(4, 9)
    with pytest.raises(ValueError, match="next_observation"):
        add(9, 8)
    add(9, 9)
    with pytest.raises(ValueError, match=r"observation: got \(3, 6, 2, 2\); frame_stack=3 expects \(N, 9"):
        add(6, 6)  # divisible by 3, but 2 channels a frame where the buffer holds 3


def test_frame_stacked_replay_refuses_datasets_and_other_settings(tmp_path):
    buffer, _, _ = filled(1, steps=4)
    with pytest.raises(ValueError, match="frame-stacked"):
        buffer.to_dataset()
    with pytest.raises(ValueError, match="frame-stacked"):
        buffer.save_dataset(tmp_path / "data", meta={})
    with pytest.raises(ValueError, match="frame_stack"):
        ReplayBuffer(CAPACITY_STEPS * NUM_ENVS, NUM_ENVS, "cpu", discount=0.5).load_state_dict(
            buffer.state_dict()
        )
