"""ReplayBuffer: n-step returns against hand-computed values, validity of starts, ring
overwrite, extras, checkpoint round trip, and a real env rollout."""

from __future__ import annotations

import io
from collections import Counter

import pytest
import torch

from envs import make_env
from urlb.data.replay import ReplayBuffer


def add_step(buffer: ReplayBuffer, step: int, ended: dict[int, str] | None = None, extras=None) -> None:
    """Add env step ``step`` of a hand-built 2-world buffer whose values encode (step, world):
    observation = 10*step + world, next_observation = 10*(step+1) + world,
    task_reward = [2**step, 100 + world]. ``ended`` maps world -> "terminated" | "truncated"."""
    world = torch.arange(2, dtype=torch.float32)
    flags = {"terminated": torch.zeros(2, dtype=torch.bool), "truncated": torch.zeros(2, dtype=torch.bool)}
    for w, kind in (ended or {}).items():
        flags[kind][w] = True
    buffer.add(
        observation=(10 * step + world)[:, None],
        action=(step + world / 2)[:, None],
        next_observation=(10 * (step + 1) + world)[:, None],
        task_reward=torch.stack([torch.full((2,), 2.0**step), 100 + world], dim=1),
        terminated=flags["terminated"],
        truncated=flags["truncated"],
        extras=extras,
    )


@pytest.fixture
def hand_buffer() -> ReplayBuffer:
    """5 steps, nstep=3, discount 0.5. World 0 truncated at steps 1 and 4; world 1 terminated
    at step 3. Starts t=0,1,2 have all 3 steps stored; an end inside t..t+1 rules a start
    out, leaving (t=2, w=0), (t=0, w=1), (t=1, w=1)."""
    buffer = ReplayBuffer(capacity=12, num_envs=2, device="cpu", nstep=3, discount=0.5)
    ends = {1: {0: "truncated"}, 3: {1: "terminated"}, 4: {0: "truncated"}}
    for step in range(5):
        add_step(buffer, step, ends.get(step))
    return buffer


# (t, world) -> (observation, next_observation, task_reward, discount), worked out by hand:
# task 0 = 2**t + 0.5 * 2**(t+1) + 0.25 * 2**(t+2) = 3 * 2**t; task 1 = (100 + w) * 1.75.
EXPECTED = {
    (0, 1): (1.0, 31.0, [3.0, 176.75], 0.125),
    (1, 1): (11.0, 41.0, [6.0, 176.75], 0.0),  # terminated at t+n-1 = 3: no bootstrap
    (2, 0): (20.0, 50.0, [12.0, 175.0], 0.125),  # truncated at t+n-1 = 4: bootstrap kept
}


def test_valid_starts_by_hand(hand_buffer):
    assert len(hand_buffer) == 10
    expected = torch.tensor([[False, True], [False, True], [True, False]])
    assert torch.equal(hand_buffer.valid_starts(), expected)


@pytest.mark.parametrize("start", sorted(EXPECTED))
def test_nstep_values_by_hand(hand_buffer, start):
    observation, next_observation, task_reward, discount = EXPECTED[start]
    out = hand_buffer._gather(torch.tensor([start[0]]), torch.tensor([start[1]]))
    assert out["observation"].tolist() == [[observation]]
    assert out["action"].tolist() == [[start[0] + start[1] / 2]]
    assert out["next_observation"].tolist() == [[next_observation]]
    assert out["task_reward"].tolist() == [task_reward]
    assert out["discount"].tolist() == [discount]


def test_sample_draws_only_valid_starts_uniformly(hand_buffer):
    generator = torch.Generator().manual_seed(0)
    batch = hand_buffer.sample(3000, generator=generator)
    observation = batch["observation"][:, 0].long()
    starts = Counter(zip((observation // 10).tolist(), (observation % 10).tolist(), strict=True))
    assert set(starts) == set(EXPECTED)
    assert all(900 < count < 1100 for count in starts.values())
    for (t, world), (_, next_observation, task_reward, discount) in EXPECTED.items():
        rows = observation == 10 * t + world
        assert torch.all(batch["next_observation"][rows, 0] == next_observation)
        assert torch.all(batch["task_reward"][rows] == torch.tensor(task_reward))
        assert torch.all(batch["discount"][rows] == discount)


def test_ring_overwrite_keeps_validity():
    # 4 steps of 2 worlds; after 6 adds steps 2..5 remain (step 2 in ring row 2, step 4 in row 0).
    buffer = ReplayBuffer(capacity=8, num_envs=2, device="cpu", nstep=2, discount=0.5)
    ends = {1: {0: "truncated"}, 4: {0: "truncated"}}
    for step in range(6):
        add_step(buffer, step, ends.get(step))
    assert len(buffer) == 8
    # Starts are steps 2, 3, 4 (chronological 0, 1, 2); step 1's end was overwritten, step 4's
    # rules out (4, world 0).
    assert torch.equal(buffer.valid_starts(), torch.tensor([[True, True], [True, True], [False, True]]))
    # Chronological step 1 (= env step 3, ring row 3) continues into ring row 0 (env step 4).
    out = buffer._gather(torch.tensor([1]), torch.tensor([1]))
    assert out["observation"].tolist() == [[31.0]]
    assert out["next_observation"].tolist() == [[51.0]]
    assert out["task_reward"].tolist() == [[8.0 + 0.5 * 16.0, 101 * 1.5]]
    batch = buffer.sample(2000, generator=torch.Generator().manual_seed(1))
    observation = batch["observation"][:, 0].long()
    assert set(observation.tolist()) == {20, 21, 30, 31, 41}


@pytest.mark.parametrize("nstep", [1, 2, 3, 5])
def test_start_index_matches_recomputed_validity(nstep):
    """The FIFO kept up to date by add() holds exactly valid_starts(), in its order, through
    several laps of the ring with random episode ends."""
    generator = torch.Generator().manual_seed(nstep)
    buffer = ReplayBuffer(capacity=21, num_envs=3, device="cpu", nstep=nstep)  # 7 steps
    for step in range(40):
        ended = torch.rand(2, 3, generator=generator) < 0.15
        buffer.add(
            torch.full((3, 1), float(step)),
            torch.zeros(3, 1),
            torch.zeros(3, 1),
            torch.zeros(3, 2),
            ended[0],
            ended[1],
        )
        if step + 1 >= nstep:
            assert torch.equal(buffer._indexed_starts(), buffer.valid_starts().nonzero()), step


def test_sample_transitions_draw_every_stored_step(hand_buffer):
    """One-step transitions over all 10 stored (step, world), whatever nstep=3 rules out,
    each with its own reward and flags."""
    batch = hand_buffer.sample_transitions(2000, generator=torch.Generator().manual_seed(0))
    step, world = batch["action"][:, 0].floor().long(), (batch["action"][:, 0] % 1 * 2).long()
    assert set(zip(step.tolist(), world.tolist(), strict=True)) == {
        (t, w) for t in range(5) for w in range(2)
    }
    assert torch.equal(batch["observation"][:, 0], (10 * step + world).float())
    assert torch.equal(batch["next_observation"][:, 0], (10 * (step + 1) + world).float())
    assert torch.equal(batch["task_reward"], torch.stack([2.0**step, 100.0 + world], dim=1))
    assert torch.equal(batch["truncated"], (world == 0) & ((step == 1) | (step == 4)))
    assert torch.equal(batch["terminated"], (world == 1) & (step == 3))


def test_sample_needs_nstep_steps():
    buffer = ReplayBuffer(capacity=12, num_envs=2, device="cpu", nstep=3)
    add_step(buffer, 0)
    add_step(buffer, 1)
    with pytest.raises(ValueError, match="needs 3 stored steps"):
        buffer.sample(4)


def test_add_rejects_mismatched_fields(hand_buffer):
    with pytest.raises(KeyError):
        add_step(hand_buffer, 5, extras={"skill": torch.zeros(2, 4)})
    with pytest.raises(ValueError, match="observation"):
        hand_buffer.add(
            torch.zeros(3, 1),
            torch.zeros(2, 1),
            torch.zeros(2, 1),
            torch.zeros(2, 2),
            torch.zeros(2, dtype=torch.bool),
            torch.zeros(2, dtype=torch.bool),
        )


def test_extras_ride_along_at_t():
    buffer = ReplayBuffer(capacity=40, num_envs=2, device="cpu", nstep=3, discount=0.5)
    for step in range(8):
        code = 10 * step + torch.arange(2)
        extras = {
            "skill": code[:, None].float().expand(2, 16).contiguous(),
            "qpos": code[:, None].double().expand(2, 9).contiguous(),
        }
        add_step(buffer, step, extras=extras)
    batch = buffer.sample(256, generator=torch.Generator().manual_seed(0))
    assert batch["skill"].shape == (256, 16) and batch["skill"].dtype == torch.float32
    assert batch["qpos"].shape == (256, 9) and batch["qpos"].dtype == torch.float64
    assert torch.all(batch["skill"] == batch["observation"])
    assert torch.all(batch["qpos"] == batch["observation"].double())


def fill(buffer: ReplayBuffer, steps: range) -> None:
    ends = {3: {0: "truncated"}, 6: {1: "terminated"}, 9: {0: "truncated", 1: "truncated"}}
    for step in steps:
        add_step(buffer, step, ends.get(step), extras={"skill": torch.full((2, 3), float(step))})


@pytest.mark.parametrize("steps", [4, 13], ids=["partial", "wrapped"])
def test_state_dict_round_trip_samples_identically(steps):
    buffer = ReplayBuffer(capacity=16, num_envs=2, device="cpu", nstep=2, discount=0.9)
    fill(buffer, range(steps))
    file = io.BytesIO()
    torch.save(buffer.state_dict(), file)
    file.seek(0)
    resumed = ReplayBuffer(capacity=16, num_envs=2, device="cpu", nstep=2, discount=0.9)
    resumed.load_state_dict(torch.load(file, weights_only=True))
    assert len(resumed) == len(buffer)
    assert torch.equal(resumed._indexed_starts(), buffer._indexed_starts())
    for replay in (buffer, resumed):  # both go on with the same data
        fill(replay, range(steps, steps + 3))
    samples = [replay.sample(64, generator=torch.Generator().manual_seed(7)) for replay in (buffer, resumed)]
    assert (samples[0] == samples[1]).all()
    assert torch.equal(buffer.valid_starts(), resumed.valid_starts())


def test_load_state_dict_rejects_other_settings():
    buffer = ReplayBuffer(capacity=16, num_envs=2, device="cpu", nstep=2)
    fill(buffer, range(3))
    with pytest.raises(ValueError, match="nstep"):
        ReplayBuffer(capacity=16, num_envs=2, device="cpu", nstep=3).load_state_dict(buffer.state_dict())
    with pytest.raises(ValueError, match="discount"):
        ReplayBuffer(16, 2, "cpu", nstep=2, discount=0.5).load_state_dict(buffer.state_dict())


def test_to_dataset_is_chronological_per_world():
    buffer = ReplayBuffer(capacity=8, num_envs=2, device="cpu", nstep=1)
    for step in range(6):
        add_step(buffer, step, {0: "truncated"} if step == 4 else None)
    arrays = buffer.to_dataset()
    assert arrays["world"].tolist() == [0, 0, 0, 0, 1, 1, 1, 1]
    assert arrays["step"].tolist() == [2, 3, 4, 5, 2, 3, 4, 5]
    assert arrays["observation"][:, 0].tolist() == [20, 30, 40, 50, 21, 31, 41, 51]
    assert arrays["truncated"].tolist() == [False, False, True, False] + [False] * 4
    assert arrays["task_reward"].shape == (8, 2)


def rollout(num_envs: int = 4, steps: int = 30, nstep: int = 1) -> ReplayBuffer:
    """Random actions in walker_stand, physics state at t as extras."""
    env = make_env("walker_stand", num_envs, backend="cpu", seed=0)
    buffer = ReplayBuffer(capacity=1000, num_envs=num_envs, device=env.device, nstep=nstep)
    generator = torch.Generator().manual_seed(0)
    observation = env.reset()["observation"]
    for _ in range(steps):
        state = env.physics_state()
        action = torch.rand(num_envs, env.action_dim, generator=generator) * 2 - 1
        out = env.step(action)
        extras = {key: state[key] for key in ("qpos", "qvel", "act")}
        buffer.add(
            observation,
            action,
            out["next_observation"],
            out["task_reward"],
            out["terminated"],
            out["truncated"],
            extras=extras,
        )
        observation = out["observation"]
    env.close()
    return buffer


def test_real_rollout():
    buffer = rollout()
    assert len(buffer) == 120
    batch = buffer.sample(64, generator=torch.Generator().manual_seed(0))
    shapes = {key: tuple(value.shape) for key, value in batch.items()}
    assert shapes == {
        "observation": (64, 24),
        "action": (64, 6),
        "next_observation": (64, 24),
        "task_reward": (64, 4),
        "discount": (64,),
        "truncated": (64,),
        "qpos": (64, 9),
        "qvel": (64, 9),
        "act": (64, 0),
    }
    assert batch["qpos"].dtype == torch.float64
    assert torch.all(batch["discount"] == torch.tensor(0.99)) and not batch["truncated"].any()
    # No episode ends in 30 steps of a 1000-step episode, so s' at t is s at t+1.
    arrays = buffer.to_dataset()
    assert not arrays["truncated"].any()
    step = torch.arange(29).repeat(4)
    world = torch.arange(4).repeat_interleave(29)
    now, then = buffer._gather(step, world), buffer._gather(step + 1, world)
    assert torch.equal(now["next_observation"], then["observation"])


def test_a_ring_that_does_not_fit_is_refused_before_allocation(monkeypatch):
    import urlb.data.memory as memory_module

    replay = ReplayBuffer(capacity=1000, num_envs=2, device="cpu", nstep=1)
    # 500 steps x 2 worlds x (3 + 1 + 3 + 2 floats + 2 bools) = 1000 x 38 bytes
    monkeypatch.setattr(memory_module, "available_memory", lambda device: 20_000)
    no = torch.zeros(2, dtype=torch.bool)
    message = r"needs 0\.0 GiB \(1000 transitions of 38 bytes\).*replay\.capacity=421\)"
    with pytest.raises(ValueError, match=message):
        replay.add(torch.zeros(2, 3), torch.zeros(2, 1), torch.zeros(2, 3), torch.zeros(2, 2), no, no)
    monkeypatch.setattr(memory_module, "available_memory", lambda device: 40_000)
    replay.add(torch.zeros(2, 3), torch.zeros(2, 1), torch.zeros(2, 3), torch.zeros(2, 2), no, no)
    assert len(replay) == 2
