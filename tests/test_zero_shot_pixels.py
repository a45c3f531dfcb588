"""FB and HILP on frames (issue 20): they build with HILP zero-shot code's encoder and shift, update
from a small sampler of uint8 frame stacks, infer z from frames and act; the shifts are drawn
through ``randomness`` in the reference's order; bad shapes are refused. Parity with the
reference's pixel updates: ``tests/reference/test_zero_shot_pixel_parity.py``."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from tensordict import TensorDict

from agents.fb import FBAgent
from agents.hilp import HILPAgent
from agents.parts.encoders import PixelEncoder, RandomShift
from agents.parts.nets import Randomness

FRAMES = (9, 24, 24)  # 3 stacked RGB frames; the reference's rule: one stride-1 conv, pad 24 // 21 = 1
ACTION_DIM = 4


class FrameSampler:
    """What ``urlb.data.datasets.DatasetSampler`` returns, on random uint8 frame stacks: ``sample``
    and ``sample_with_goals`` (goals: other rows' observations)."""

    def __init__(self, size: int = 64, frames=FRAMES, seed: int = 0):
        generator = torch.Generator().manual_seed(seed)
        self.fields = {
            "observation": torch.randint(0, 256, (size, *frames), generator=generator, dtype=torch.uint8),
            "next_observation": torch.randint(
                0, 256, (size, *frames), generator=generator, dtype=torch.uint8
            ),
            "action": torch.rand(size, ACTION_DIM, generator=generator) * 2 - 1,
            "task_reward": torch.rand(size, 2, generator=generator),
            "terminated": torch.rand(size, generator=generator) < 0.05,
            "truncated": torch.zeros(size, dtype=torch.bool),
        }
        self.size = size

    def sample(self, batch_size: int) -> TensorDict:
        rows = torch.randint(0, self.size, (batch_size,))
        return TensorDict({k: v[rows] for k, v in self.fields.items()}, batch_size=[batch_size])

    def sample_with_goals(self, batch_size: int, future: float, random_goal: float) -> TensorDict:
        batch = self.sample(batch_size)
        batch["goal"] = self.fields["observation"][torch.randint(0, self.size, (batch_size,))]
        return batch


def make(cls, frames=FRAMES, **overrides):
    sizes = {"backward_hidden_dim": 16} if cls is FBAgent else {"phi_hidden_dim": 16}
    settings = dict(z_dim=8, hidden_dim=16, feature_dim=16, batch_size=16) | sizes | overrides
    return cls(frames, ACTION_DIM, **settings)


class Counting(Randomness):
    """torch's draws, each kind noted in order; ``refuse``: kinds that must not be drawn."""

    def __init__(self, refuse: tuple[str, ...] = ()):
        self.kinds: list[str] = []
        self.refuse = refuse

    def note(self, kind: str) -> None:
        if kind in self.refuse:
            raise AssertionError(f"drew {kind}")
        self.kinds.append(kind)

    def normal(self, shape, like):
        self.note("normal")
        return super().normal(shape, like)

    def uniform(self, shape, like):
        self.note("uniform")
        return super().uniform(shape, like)

    def permutation(self, size, device):
        self.note("permutation")
        return super().permutation(size, device)

    def randint(self, high, shape, device):
        self.note("randint")
        return super().randint(high, shape, device)


@pytest.mark.parametrize("cls", [FBAgent, HILPAgent])
def test_pixel_agents_update_infer_and_act(cls):
    torch.manual_seed(0)
    sampler = FrameSampler()
    agent = make(cls)
    assert isinstance(agent.encoder, PixelEncoder) and agent.augment.pad == 1
    assert "encoder" in agent.optimisers()
    before = {k: v.clone() for k, v in agent.state_dict().items()}
    for step in range(3):
        metrics = agent.update(sampler, step)
    assert all(torch.isfinite(v) for v in metrics.values())
    changed = {k for k, v in agent.state_dict().items() if not torch.equal(v, before[k])}
    for prefix in ("encoder.", "actor.", "forward_map.", "forward_target."):
        assert any(k.startswith(prefix) for k in changed), prefix
    fields = sampler.fields
    z = agent.infer_latent(fields["observation"], fields["next_observation"], fields["task_reward"][:, 0])
    assert z.shape == (8,) and float(z.norm()) == pytest.approx(math.sqrt(8), rel=1e-5)
    goals = agent.goal_latent(fields["observation"][:3], fields["observation"][10:13])
    assert goals.shape == (3, 8)
    agent.fix_latent(z)
    state = agent.init_state(3)
    agent.randomness = Counting(refuse=("randint",))  # acting and inference never shift
    action = agent.act(fields["observation"][:3], state, explore=False)
    assert action.shape == (3, ACTION_DIM) and action.abs().max() <= 1
    assert torch.equal(action, agent.act(fields["observation"][:3], state, explore=False))
    agent.infer_latent(
        fields["observation"][:5], fields["next_observation"][:5], fields["task_reward"][:5, 0]
    )
    assert agent.act(fields["observation"][:3], state, explore=True).shape == (3, ACTION_DIM)


@pytest.mark.parametrize(
    ("cls", "order"),
    [
        # z; the permutation of the states B mixes in; shifts of s, s', permuted s; the mix mask;
        # the noise of a' and of the actor's action (hilp_zsrl's fb_ddpg.py, less its unused
        # future_obs shift)
        (FBAgent, ["normal", "permutation", "randint", "randint", "randint", "uniform", "normal", "normal"]),
        # z; shifts of s, s', g; the permutation and mix mask; the two noises (hilp_zsrl's sf.py)
        (
            HILPAgent,
            ["normal", "randint", "randint", "randint", "permutation", "uniform", "normal", "normal"],
        ),
    ],
)
def test_update_draws_in_the_reference_order(cls, order):
    agent = make(cls)
    agent.randomness = Counting()
    agent.update(FrameSampler(), 0)
    assert agent.randomness.kinds == order


def test_encoder_depth_and_pad_follow_the_reference_rule():
    """hilp_zsrl's Encoder: a stride-2 conv, then 3 stride-1 ones at sides >= 64, 2 at >= 48, else
    1; RandomShiftsAug(pad=image_wh // 21)."""
    for side, convs, pad, repr_dim in (
        (64, 4, 3, 32 * 25 * 25),
        (48, 3, 2, 32 * 19 * 19),
        (32, 2, 1, 32 * 13 * 13),
    ):
        agent = make(HILPAgent, frames=(9, side, side), hidden_dim=8, feature_dim=8, phi_hidden_dim=8)
        assert sum(isinstance(m, torch.nn.Conv2d) for m in agent.encoder.modules()) == convs
        assert agent.augment.pad == pad and agent.repr_dim == repr_dim
    agent = make(FBAgent, encoder_depth=0, aug_pad=4)
    assert (
        sum(isinstance(m, torch.nn.Conv2d) for m in agent.encoder.modules()) == 1 and agent.augment.pad == 4
    )


def test_shift_offsets_are_x_then_y():
    frames = torch.arange(25, dtype=torch.uint8).reshape(1, 1, 5, 5)
    shifted = RandomShift(pad=1)(frames, shift=torch.tensor([[2, 1]]))  # x + 1, y + 0
    assert torch.equal(shifted[0, 0, :, :4], frames[0, 0, :, 1:])


def test_states_are_unchanged():
    agent = make(HILPAgent, frames=7)
    assert isinstance(agent.encoder, torch.nn.Identity) and agent.augment is None
    assert "encoder" not in agent.optimisers()


def test_bad_shapes_are_refused():
    with pytest.raises(ValueError, match=r"\(C, H, W\)"):
        make(FBAgent, frames=(9, 64))
    with pytest.raises(ValueError, match="too small"):
        make(HILPAgent, frames=(9, 6, 6))
    with pytest.raises(ValueError, match="must be >= 0"):
        make(FBAgent, aug_pad=-1)
    agent = make(HILPAgent)
    with pytest.raises(ValueError, match=r"obs_dim=\(C, H, W\) of the dataset's frame stacks"):
        agent.update(FrameSampler(frames=(9, 32, 32)), 0)
    with pytest.raises(ValueError, match="built for frames"):
        wrong = torch.zeros(4, 3, 24, 24, dtype=torch.uint8)
        agent.infer_latent(wrong, wrong, torch.zeros(4))


@pytest.mark.parametrize("cls", [FBAgent, HILPAgent])
def test_training_state_round_trip_keeps_the_encoder_and_its_adam(cls):
    """A restored agent's next update equals the original's: the encoder's weights and Adam
    moments travel in ``training_state``."""
    torch.manual_seed(0)
    sampler = FrameSampler()
    agent = make(cls)
    agent.update(sampler, 0)
    restored = make(cls)
    # a copy, as a checkpoint file gives: Adam's load_state_dict keeps same-device tensors shared
    restored.load_training_state(copy.deepcopy(agent.training_state()))
    assert agent.training_state()["optimisers"]["encoder"]["state"]
    torch.manual_seed(1)
    first = agent.update(sampler, 1)
    torch.manual_seed(1)
    second = restored.update(sampler, 1)
    assert all(torch.equal(first[k], second[k]) for k in first)
    assert all(torch.equal(v, restored.state_dict()[k]) for k, v in agent.state_dict().items())
