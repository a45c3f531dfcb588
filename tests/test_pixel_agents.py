"""Pixel observations through the shared DrQ-v2 encoder (issue #9): the random shift on a
known image, the encoder's size and scaling, the DDPG and SAC backbones on frames (update,
frozen encoder, checkpoints, transfer; state agents untouched) and reward models on the
encoder's features (who trains the encoder; APS's task regression on pixels)."""

from __future__ import annotations

import functools
import io
import math

import pytest
import torch
from tensordict import TensorDict
from torch import nn

from agents.aps import APS
from agents.ddpg import DDPGAgent
from agents.diayn import DIAYN
from agents.icm import ICM
from agents.metra import METRA
from agents.parts.encoders import PixelEncoder, RandomShift, make_encoder
from agents.sac import SACAgent

FRAMES = (9, 20, 20)  # 3 stacked RGB frames, small: the encoder's output is 32 * 3 * 3
ACT = 3
BACKBONES = {"ddpg": DDPGAgent, "sac": SACAgent}


class FrameReplay:
    """A stand-in pixel replay: fixed random transitions of uint8 frame stacks; ``sample``
    draws rows with the global RNG, so seeded updates repeat."""

    def __init__(self, size: int = 32, skills: torch.Tensor | None = None, tasks: int = 2):
        g = torch.Generator().manual_seed(0)
        values = {
            "observation": torch.randint(0, 256, (size, *FRAMES), dtype=torch.uint8, generator=g),
            "action": torch.rand(size, ACT, generator=g) * 2 - 1,
            "next_observation": torch.randint(0, 256, (size, *FRAMES), dtype=torch.uint8, generator=g),
            "task_reward": torch.rand(size, tasks, generator=g),
            "discount": torch.full((size,), 0.99**3),
        }
        if skills is not None:
            values["skill"] = skills
        self.data = TensorDict(values, batch_size=[size])

    def sample(self, batch_size: int) -> TensorDict:
        return self.data[torch.randint(len(self.data), (batch_size,))]

    sample_transitions = sample


def build(backbone: str = "ddpg", reward_model=None, **kwargs):
    return BACKBONES[backbone](FRAMES, ACT, hidden_dim=32, batch_size=8, reward_model=reward_model, **kwargs)


def replay_for(agent) -> FrameReplay:
    skills = agent.reward_model.sample_skills(32, "cpu") if agent.skill_dim else None
    return FrameReplay(skills=skills)


def snapshot(module: nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in module.parameters()]


def changed(module: nn.Module, before: list[torch.Tensor]) -> bool:
    return any(not torch.equal(p, b) for p, b in zip(module.parameters(), before, strict=True))


def same_state(a: nn.Module, b: nn.Module) -> bool:
    pairs = zip(a.state_dict().items(), b.state_dict().items(), strict=True)
    return all(ka == kb and torch.equal(va, vb) for (ka, va), (kb, vb) in pairs)


# -- random shift ---------------------------------------------------------------------------
def known_frames(n: int, pad: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` copies of a 2x12x12 uint8 image whose pixels all differ, and its replicate-padded
    copy (float)."""
    rows, cols = torch.meshgrid(torch.arange(12), torch.arange(12), indexing="ij")
    image = torch.stack([rows * 16 + cols, 255 - (rows * 16 + cols)]).to(torch.uint8)
    frames = image.expand(n, -1, -1, -1).contiguous()
    padded = nn.functional.pad(frames.float(), (pad,) * 4, mode="replicate")
    return frames, padded


def find_shift(crop: torch.Tensor, padded: torch.Tensor, pad: int) -> list[tuple[int, int]]:
    """Every (dy, dx) in [0, 2 pad]^2 at which ``crop`` is the window of ``padded``."""
    h, w = crop.shape[-2:]
    return [
        (dy, dx)
        for dy in range(2 * pad + 1)
        for dx in range(2 * pad + 1)
        if torch.equal(crop.float(), padded[:, dy : dy + h, dx : dx + w])
    ]


def test_random_shift_is_a_crop_of_the_replicate_padded_image():
    frames, padded = known_frames(512)
    out = RandomShift(pad=4)(frames, generator=torch.Generator().manual_seed(0))
    assert out.shape == frames.shape and out.dtype == torch.uint8
    shifts = []
    for sample in range(len(out)):
        matches = find_shift(out[sample], padded[sample], 4)
        assert len(matches) == 1, f"sample {sample} is no single window of the padded image"
        shifts.append(matches[0])
    # integer shifts uniform over [0, 8] per axis: 512 samples reach both ends of each range
    assert {dy for dy, _ in shifts} == set(range(9)) and {dx for _, dx in shifts} == set(range(9))
    assert len(set(shifts)) > 40  # samples get their own shifts, not one per batch


def test_random_shift_repeats_with_a_seeded_generator_and_pad_zero_is_the_identity():
    frames, _ = known_frames(64)
    shift = RandomShift(pad=4)
    first = shift(frames, generator=torch.Generator().manual_seed(3))
    assert torch.equal(first, shift(frames, generator=torch.Generator().manual_seed(3)))
    assert not torch.equal(first, shift(frames, generator=torch.Generator().manual_seed(4)))
    assert torch.equal(RandomShift(pad=0)(frames), frames)


# -- encoder --------------------------------------------------------------------------------
def test_encoder_output_size_scaling_and_init():
    encoder, repr_dim = make_encoder((9, 84, 84))
    assert isinstance(encoder, PixelEncoder) and repr_dim == encoder.repr_dim == 32 * 35 * 35 == 39200
    frames = torch.zeros(2, 9, 84, 84, dtype=torch.uint8)
    frames[1] = 255
    seen = []
    encoder.convnet[0].register_forward_hook(lambda module, args, output: seen.append(args[0]))
    assert encoder(frames).shape == (2, 39200)
    # uint8 0 and 255 reach the first convolution as -0.5 and 0.5 (x / 255 - 0.5)
    assert torch.equal(seen[0][0], torch.full((9, 84, 84), -0.5))
    assert torch.equal(seen[0][1], torch.full((9, 84, 84), 0.5))
    # URLB's init: orthogonal with ReLU's gain sqrt(2) (rows of the 32 x 81 matrix), zero bias
    weight = encoder.convnet[0].weight.reshape(32, -1)
    assert torch.allclose(weight @ weight.T, 2 * torch.eye(32), atol=1e-4)
    assert all(not conv.bias.any() for conv in encoder.convnet if isinstance(conv, nn.Conv2d))
    assert make_encoder(FRAMES)[1] == 32 * 3 * 3
    identity, size = make_encoder(24)
    assert isinstance(identity, nn.Identity) and size == 24
    for bad in ((3, 84), "pixels", (9, 8, 8)):
        with pytest.raises(ValueError):
            make_encoder(bad)


# -- backbones ------------------------------------------------------------------------------
@pytest.mark.parametrize("backbone", BACKBONES)
def test_backbone_acts_and_one_update_trains_encoder_actor_and_critic(backbone):
    torch.manual_seed(0)
    agent = build(backbone)
    assert agent.pixels and agent.repr_dim == 288 and "encoder" in agent.optimisers()
    # URLB's pixel layout: trunks from the features to feature_dim (50); the action joins the
    # critic after its trunk
    assert agent.critic.trunk[0].in_features == 288 and agent.critic.trunk[0].out_features == 50
    assert agent.critic.q1[0].in_features == 50 + ACT
    frames = torch.randint(0, 256, (5, *FRAMES), dtype=torch.uint8)
    state = agent.init_state(5)
    for explore in (True, False):
        action = agent.act(frames, state, explore)
        assert action.shape == (5, ACT) and action.abs().max() <= 1
    before = {name: snapshot(getattr(agent, name)) for name in ("encoder", "actor", "critic")}
    agent.set_task(0)
    metrics = agent.update(FrameReplay(), step=0)
    assert all(torch.isfinite(v).all() for v in metrics.values())
    for name, params in before.items():
        assert changed(getattr(agent, name), params), name


@pytest.mark.parametrize("backbone", BACKBONES)
def test_frozen_encoder_is_not_trained_and_has_no_optimiser(backbone):
    torch.manual_seed(0)
    agent = build(backbone, update_encoder=False)
    assert "encoder" not in agent.optimisers()
    groups = [group for opt in agent.all_optimisers().values() for group in opt.param_groups]
    trained = {id(p) for group in groups for p in group["params"]}
    assert not trained & {id(p) for p in agent.encoder.parameters()}
    batch = agent.encode_batch(FrameReplay().sample(8))
    assert not batch["observation"].requires_grad and batch["observation"].shape == (8, 288)
    encoder, actor = snapshot(agent.encoder), snapshot(agent.actor)
    agent.set_task(0)
    agent.update(FrameReplay(), step=0)
    assert not changed(agent.encoder, encoder) and changed(agent.actor, actor)


@pytest.mark.parametrize("backbone", BACKBONES)
def test_training_state_round_trip_repeats_the_next_update(backbone):
    torch.manual_seed(0)
    agent, copy = build(backbone), build(backbone)
    agent.set_task(0)
    copy.set_task(0)
    agent.update(FrameReplay(), step=0)
    buffer = io.BytesIO()  # through a file, as checkpoints go (no tensors shared between the two)
    torch.save(agent.training_state(), buffer)
    buffer.seek(0)
    copy.load_training_state(torch.load(buffer, weights_only=True))
    assert same_state(agent, copy)
    assert copy.encoder_opt.state_dict()["state"][0]["step"] == 1
    for model in (agent, copy):
        torch.manual_seed(7)
        model.update(FrameReplay(), step=1)
    assert same_state(agent, copy)


@pytest.mark.parametrize("backbone", BACKBONES)
def test_init_from_copies_the_encoder(backbone):
    torch.manual_seed(0)
    pretrained, fresh = build(backbone), build(backbone, update_encoder=False)
    pretrained.set_task(0)
    pretrained.update(FrameReplay(), step=0)
    assert not same_state(fresh.encoder, pretrained.encoder)
    fresh.init_from(pretrained)
    assert same_state(fresh.encoder, pretrained.encoder)
    assert same_state(fresh.actor, pretrained.actor)
    assert same_state(fresh.critic.trunk, pretrained.critic.trunk)


def test_state_agents_have_no_conv_encoder_and_the_same_parameters():
    obs, hidden = 24, 32
    trunk = (obs + ACT) * hidden + hidden + 2 * hidden  # Linear + LayerNorm over (s, a)
    head = hidden * hidden + hidden + hidden + 1
    critic = trunk + 2 * head
    ddpg_actor = obs * hidden + 3 * hidden + hidden * hidden + hidden + hidden * ACT + ACT
    sac_actor = obs * hidden + hidden + hidden * hidden + hidden + hidden * 2 * ACT + 2 * ACT
    expected = {"ddpg": ddpg_actor + 2 * critic, "sac": sac_actor + 2 * critic + 1}  # + target, + alpha
    for name, cls in BACKBONES.items():
        agent = cls(obs, ACT, hidden_dim=hidden)
        assert not agent.pixels and isinstance(agent.encoder, nn.Identity)
        assert not any(isinstance(m, nn.Conv2d) for m in agent.modules())
        assert "encoder" not in agent.optimisers()
        assert sum(p.numel() for p in agent.parameters()) == expected[name], name


# -- reward models on pixels ----------------------------------------------------------------
MODELS = {
    "diayn": ("ddpg", functools.partial(DIAYN, skill_dim=4, hidden_dim=32)),
    "metra": ("sac", functools.partial(METRA, skill_dim=2, hidden_dim=32, observe_pose=False)),
    "icm": ("ddpg", functools.partial(ICM, hidden_dim=32)),
    "aps": (
        "ddpg",
        functools.partial(APS, skill_dim=4, hidden_dim=32, knn_k=3, num_init_frames=8, lstsq_samples=64),
    ),
}


@pytest.mark.parametrize("name", MODELS)
def test_reward_model_pretrains_on_encoder_features(name):
    torch.manual_seed(0)
    backbone, model = MODELS[name]
    built_with = {}

    def spy(**kwargs):
        built_with.update(kwargs)
        return model(**kwargs)

    agent = build(backbone, spy)
    assert built_with["obs_dim"] == agent.repr_dim == 288  # the model reads the encoder's features
    agent.set_task(None)
    metrics = agent.update(replay_for(agent), step=0)
    assert "intrinsic_reward" in metrics and all(torch.isfinite(v).all() for v in metrics.values())
    assert agent.encoder_learner() == ("reward_model" if name == "icm" else "critic")
    agent.set_task(0)
    assert agent.encoder_learner() == "critic"  # finetuning: the critic's loss, as for DDPG


@pytest.mark.parametrize(("name", "moves"), [("icm", True), ("diayn", False)])
def test_only_a_trains_encoder_model_moves_the_encoder_in_its_own_update(name, moves):
    torch.manual_seed(0)
    agent = build(*MODELS[name])
    agent.set_task(None)
    batch = agent.encode_batch(replay_for(agent).sample(8))
    assert batch["observation"].requires_grad and not batch["next_observation"].requires_grad
    encoder, model = snapshot(agent.encoder), snapshot(agent.reward_model)
    agent.update_reward_model(batch)
    assert changed(agent.encoder, encoder) == moves and changed(agent.reward_model, model)


def test_metra_refuses_what_needs_state_observations():
    with pytest.raises(ValueError, match="observe_pose"):
        build("sac", functools.partial(METRA, skill_dim=2, hidden_dim=32, observe_pose=True))
    agent = build(*MODELS["metra"])
    frames = torch.zeros(2, *FRAMES, dtype=torch.uint8)
    with pytest.raises(ValueError, match="state observations"):
        agent.reward_model.goal_skill(frames, frames)


def test_aps_regresses_its_task_from_encoded_pixels():
    """The paper's one regression (``task_regression=once``) on phi of encoded frames; URLB's
    repeated regression reads the same encoded features (tests/test_baselines.py)."""
    torch.manual_seed(0)
    backbone, model = MODELS["aps"]
    agent = build(backbone, functools.partial(model, task_regression="once"))
    model = agent.reward_model
    replay = replay_for(agent)
    w = nn.functional.normalize(torch.randn(model.skill_dim), dim=0)
    with torch.no_grad():  # rewards linear in phi of the encoded, unshifted next frames
        features = agent.encode_observation(replay.data["next_observation"])
        phi = nn.functional.normalize(model.features(features))
    replay.data["task_reward"][:, 1] = phi @ w
    state = agent.init_state(4)
    agent.set_task(1)
    assert agent.adapt(replay, 4, state) is state and not model._fixed  # before num_init_frames
    state = agent.adapt(replay, 8, state)
    assert model._fixed and torch.allclose(model.fixed_skill, w, atol=1e-4)
    assert torch.allclose(state["skill"], w.expand(4, -1), atol=1e-4)
    metrics = agent.update(replay, step=0)  # the successor-feature critic on the pixel trunk
    assert math.isfinite(float(metrics["critic_loss"]))


# -- an encoder per network (METRA's pixel layout) -------------------------------------------
LARGE = (9, 48, 48)  # DreamerV2's/METRA's four stride-2 convolutions need 46x46 at least


def test_per_network_encoders_give_phi_actor_and_each_q_their_own_trained_encoder():
    """METRA's --encoder 1: no shared encoder, no augmentation; phi, the actor and each Q read
    flat frames through encoders of their own, each stepped by its own network's loss."""
    torch.manual_seed(0)
    model = functools.partial(METRA, skill_dim=2, hidden_dim=32, observe_pose=False)
    agent = SACAgent(
        LARGE,
        ACT,
        hidden_dim=32,
        batch_size=8,
        reward_model=model,
        pixel_encoders="per_network",
        shared_critic_trunk=False,
    )
    assert agent.augment is None and "encoder" not in agent.optimisers()
    assert agent.reward_model.phi[0].frame_shape == LARGE and agent.actor.trunk.conv.net[0].out_channels == 48
    encoders = {
        "phi": agent.reward_model.phi[0],
        "actor": agent.actor.trunk,
        "q1": agent.critic.q1[0],
        "q2": agent.critic.q2[0],
    }
    assert len({id(e.conv.net[0].weight) for e in encoders.values()}) == 4
    frames = torch.randint(0, 256, (3, *LARGE), dtype=torch.uint8)
    assert agent.act(frames, agent.init_state(3), explore=True).shape == (3, ACT)
    g = torch.Generator().manual_seed(0)
    data = {
        "observation": torch.randint(0, 256, (8, *LARGE), dtype=torch.uint8, generator=g),
        "action": torch.rand(8, ACT, generator=g) * 2 - 1,
        "next_observation": torch.randint(0, 256, (8, *LARGE), dtype=torch.uint8, generator=g),
        "discount": torch.full((8,), 0.99),
        "skill": agent.reward_model.sample_skills(8, "cpu"),
    }
    batch = agent.encode_batch(TensorDict(data, batch_size=[8]))
    assert batch["observation"].shape == (8, 9 * 48 * 48) and batch["observation"].dtype == torch.float32
    before = {name: snapshot(e) for name, e in encoders.items()}
    agent.update_reward_model(batch)  # METRA's objective steps phi's encoder only
    assert [name for name, e in encoders.items() if changed(e, before[name])] == ["phi"]
    target = snapshot(agent.critic_target.q1[0])
    agent.set_task(None)
    agent.update(type("Replay", (), {"sample": lambda self, n: TensorDict(data, batch_size=[8])})(), step=0)
    assert all(changed(e, before[name]) for name, e in encoders.items())
    assert changed(agent.critic_target.q1[0], target)  # the target Q's encoder follows by Polyak


def test_per_network_encoders_refuse_what_has_no_encoder_of_its_own():
    with pytest.raises(ValueError, match="pixel_encoders=shared"):
        SACAgent(
            LARGE,
            ACT,
            hidden_dim=32,
            reward_model=functools.partial(DIAYN, skill_dim=4, hidden_dim=32),
            pixel_encoders="per_network",
            shared_critic_trunk=False,
        )
    with pytest.raises(ValueError, match="shared_critic_trunk=false"):
        SACAgent(LARGE, ACT, hidden_dim=32, pixel_encoders="per_network")
    with pytest.raises(ValueError, match="obs.size>=46"):
        SACAgent(FRAMES, ACT, hidden_dim=32, pixel_encoders="per_network", shared_critic_trunk=False)
    with pytest.raises(ValueError, match="pixel_encoders must be"):
        SACAgent(LARGE, ACT, hidden_dim=32, pixel_encoders="each")
