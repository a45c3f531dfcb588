"""Parity with mastering-urlb's Dreamer + Plan2Explore (issue 18): our pixel update equals
the authors' on recorded sequences.

The fixture (``tests/reference/data/plan2explore/``, written by
``scripts/reference/record_dreamer.py`` from mazpie/mastering-urlb) holds the reference's
initial weights, three replay chunks of 64x64 frames, every latent, policy and ensemble draw
of each update and, after each update, its metrics, the clipped steps' gradient norms, the
imagined rollout the behaviour losses trained on, every weight and the reward normaliser's
state. We load the weights into ``DreamerAgent`` with ``Plan2Explore`` at the same sizes, feed
the same chunks and draws and compare, to ``rtol=1e-5, atol=1e-6``: the world-model loss
(KL balance with free nats, reconstruction), its clipped, decayed step; the disagreement
ensemble's step; imagination (features, actions); the normalised disagreement reward; the
lambda-returns on the slow critic; the actor's dynamics-gradient and the critic's steps; the
slow critic's copies. Dreamer on states has no reference (mastering-urlb is pixel only): the
RSSM, imagination and behaviour losses it shares are what this checks.

Not compared, by construction: the reward head's weights after an update (the reference
fits the batch's extrinsic reward from stop-gradient features while pretraining and never
transfers the head; ours leaves it untrained) and the losses' constant terms (the reference's
Gaussian log-likelihoods carry ``log sqrt(2 pi)`` per dimension; ours are squared errors:
the test adds the constants).
"""

from __future__ import annotations

import functools
import json
import math
import re

import pytest
import torch
from tensordict import TensorDict
from urlb_reference import DATA, Comparison, Fixture, RecordedRandomness, relative_difference, rename

import agents.dreamer
from agents.dreamer import DreamerAgent
from agents.parts.nets import TORCH_RANDOMNESS
from agents.plan2explore import Plan2Explore

NAME = "plan2explore/plan2explore"  # under tests/reference/data


def _index(step: int):
    """Reference layer ``i`` -> ours ``step * i`` (our Sequentials have no NormLayer)."""
    return lambda m: f"{m[1]}.{step * int(m[2])}.{m[3]}"


def _mlp(reference: str, ours: str, output: int = 8):
    """mastering-urlb's ``MLP`` (``dense<i>``, ``_out._out``) -> our ELU Sequential."""
    return [
        (rf"{reference}\.dense(\d)\.(.*)", lambda m: f"{ours}.{2 * int(m[1])}.{m[2]}"),
        (rf"{reference}\._out\._out\.(.*)", rf"{ours}.{output}.\1"),
    ]


RULES = [
    (r"wm\.encoder\._conv_model\.(\d)\.(.*)", lambda m: f"encoder.net.{2 * (int(m[1]) // 3)}.{m[2]}"),
    (r"wm\.heads\.decoder\._conv_in\.0\.(.*)", r"decoder.linear.\1"),
    (r"wm\.heads\.decoder\._conv_model\.(\d)\.(.*)", lambda m: f"decoder.net.{2 * (int(m[1]) // 3)}.{m[2]}"),
    (r"wm\.rssm\._cell\._layer\.(.*)", r"rssm.cell.linear.\1"),
    (r"wm\.rssm\._cell\._norm\.(.*)", r"rssm.cell.norm.\1"),
    (r"wm\.rssm\._img_in\.0\.(.*)", r"rssm.img_in.0.\1"),
    (r"wm\.rssm\._ensemble_img_out\.0\.0\.(.*)", r"rssm.img_out.0.\1"),
    (r"wm\.rssm\._ensemble_img_dist\.0\.(.*)", r"rssm.img_out.2.\1"),
    (r"wm\.rssm\._obs_out\.0\.(.*)", r"rssm.obs_out.0.\1"),
    (r"wm\.rssm\._obs_dist\.(.*)", r"rssm.obs_out.2.\1"),
    *_mlp(r"wm\.heads\.reward", "reward_head"),
    *_mlp(r"_task_behavior\.actor", "actor.net"),
    *_mlp(r"_task_behavior\.critic", "critic"),
    *_mlp(r"_task_behavior\._target_critic", "slow_critic"),
]
ACTOR_HEADS = r"_task_behavior\.actor\._out\._(out|std)\.(weight|bias)"
ENSEMBLE = r"disagreement\.ensemble\.(\d)\.([02])\.(weight|bias)"
# Loaded at the start, not compared after an update (module docstring).
NOT_COMPARED = r"wm\.heads\.reward\..*"

# reference metric -> ours; the derived ones are added in ``reference_metrics``/``our_metrics``.
METRICS = {
    "kl_loss": "model_kl_loss",
    "model_kl": "model_kl",
    "prior_ent": "prior_entropy",
    "post_ent": "posterior_entropy",
    "observation_loss": "observation_loss",
    "model_loss": "model_loss",
    "model_grad_norm": "model_grad_norm",
    "disagreement_loss": "disagreement_loss",
    "disagreement_grad_norm": "disagreement_grad_norm",
    "actor_loss": "actor_loss",
    "actor_ent": "actor_entropy",
    "actor_grad_norm": "actor_grad_norm",
    "critic_loss": "critic_loss",
    "critic_grad_norm": "critic_grad_norm",
    "critic_slow": "critic_value",
    "critic_target": "critic_target",
}
FRAME_SIZE = 3 * 64 * 64
LOG_SQRT_2PI = math.log(math.sqrt(2 * math.pi))


def our_tensors(reference: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The reference's state_dict under our names: one-to-one renames, the actor's mean and
    std layers as the halves of our last layer, the ensemble's members stacked as
    ``EnsembleMLP`` stores them (weights transposed)."""
    to_ours = rename(RULES)
    out, heads, members = {}, {}, {}
    for name, value in reference.items():
        if match := re.fullmatch(ACTOR_HEADS, name):
            heads[(match[1], match[2])] = value
        elif match := re.fullmatch(ENSEMBLE, name):
            members[(int(match[1]), int(match[2]) // 2, match[3])] = value
        elif (ours := to_ours(name)) is not None:
            out[ours] = value
        else:
            raise KeyError(f"reference tensor {name} has no counterpart in our agent")
    for kind in ("weight", "bias"):
        out[f"actor.net.8.{kind}"] = torch.cat([heads[("out", kind)], heads[("std", kind)]])
    count = 1 + max(member for member, _, _ in members)
    for layer in (0, 1):
        weights = [members[(m, layer, "weight")].T for m in range(count)]
        out[f"reward_model.ensemble.weights.{layer}"] = torch.stack(weights)
        out[f"reward_model.ensemble.biases.{layer}"] = torch.stack(
            [members[(m, layer, "bias")][None] for m in range(count)]
        )
    return out


def build(fixture: Fixture) -> DreamerAgent:
    """Our Dreamer + Plan2Explore at the fixture's sizes and settings, holding the reference's
    initial weights."""
    h, sizes = fixture.hyper, fixture.manifest["sizes"]
    length = sizes["length"] - 1  # our windows count transitions: T frames are T - 1 of them
    model_opt = h["model_opt"]
    agent = DreamerAgent(
        tuple(sizes["frames"]),
        sizes["action_dim"],
        hidden_dim=h["actor"]["units"],
        batch_size=sizes["sequences"] * length,
        batch_length=length,
        imagination_horizon=h["imag_horizon"],
        deter_dim=h["rssm"]["deter"],
        stoch_dim=h["rssm"]["stoch"],
        classes=h["rssm"]["discrete"],
        rssm_hidden_dim=h["rssm"]["hidden"],
        cnn_depth=h["encoder"]["cnn_depth"],
        model_lr=model_opt["lr"],
        actor_lr=h["actor_opt"]["lr"],
        critic_lr=h["critic_opt"]["lr"],
        adam_eps=model_opt["eps"],
        grad_clip=model_opt["clip"],
        weight_decay=model_opt["wd"],
        discount=h["discount"],
        discount_lambda=h["discount_lambda"],
        kl_balance=h["kl"]["balance"],
        kl_free_nats=h["kl"]["free"],
        kl_scale=h["loss_scales"]["kl"],
        intrinsic_actor_entropy=h["actor_ent"],
        intrinsic_reward_momentum=h["reward_norm"]["momentum"],
        slow_critic_every=h["slow_target_update"],
        decoder_output_elu=True,
        reward_model=functools.partial(
            Plan2Explore,
            lr=model_opt["lr"],
            members=fixture.manifest["reference_constants"]["members"],
            adam_eps=model_opt["eps"],
            grad_clip=model_opt["clip"],
            weight_decay=model_opt["wd"],
        ),
    )
    for group in ("actor_opt", "critic_opt"):
        assert {h[group][k] for k in ("eps", "clip", "wd")} == {model_opt[k] for k in ("eps", "clip", "wd")}
    weights = our_tensors(fixture.group("init"))
    ours = agent.state_dict()
    missing = sorted(name for name, _ in agent.named_parameters() if name not in weights)
    if missing:
        raise KeyError(f"our parameters with no reference tensor: {missing}")
    for name, value in weights.items():
        if ours[name].shape != value.shape:
            raise ValueError(f"{name}: ours {tuple(ours[name].shape)}, reference {tuple(value.shape)}")
    agent.load_state_dict(weights, strict=False)
    agent.set_task(None)
    return agent


class RecordedReplay:
    """``sample_sequences(n)``: the recorded chunk as our replay's windows: ``T`` frames are
    ``T - 1`` transitions; the reference's action ``t + 1`` and reward ``t + 1`` lead from
    frame ``t`` to ``t + 1`` (its first action is zero and its first frame starts the
    sequence, as our windows start from the zero latent and a zero action)."""

    def __init__(self, chunk: dict[str, torch.Tensor]):
        if not bool(chunk["is_first"][:, 0].all()) or chunk["is_first"][:, 1:].any():
            raise ValueError("the fixture's chunks must each be one sequence from its first frame")
        frames = chunk["observation"]
        self.batch = TensorDict(
            observation=frames[:, :-1],
            action=chunk["action"][:, 1:],
            next_observation=frames[:, 1:],
            task_reward=chunk["reward"][:, 1:],
            batch_size=[frames.shape[0], frames.shape[1] - 1],
        )

    def sample_sequences(self, batch_size: int) -> TensorDict:
        if batch_size != self.batch.batch_size[0]:
            raise ValueError(
                f"the fixture holds {self.batch.batch_size[0]} sequences, asked for {batch_size}"
            )
        return self.batch.clone()


def served_draws(fixture: Fixture, update: int) -> RecordedRandomness:
    """The update's recorded draws, served in order. The reference's ``torch.randint`` (its
    RSSM's ensemble member, always 0 of 1) has no counterpart: ours has one prior head."""
    draws = fixture.draws(update)
    if any(kind == "randint" and int(value) != 0 for kind, value in draws):
        raise ValueError("the reference drew an ensemble member other than 0")
    return RecordedRandomness([(kind, value) for kind, value in draws if kind != "randint"])


def reference_metrics(fixture: Fixture, update: int) -> dict[str, torch.Tensor]:
    """The reference's metrics, its model loss without the reward head's term and its model
    gradient norm without the reward head (``record_dreamer.py`` measured it)."""
    recorded = fixture.group(f"update{update}/metric")
    norms = fixture.group(f"update{update}/grad_norm")
    return recorded | {
        "model_loss": recorded["model_loss"] - recorded["reward_loss"],
        "model_grad_norm": norms["model_without_reward_head"],
    }


def our_metrics(metrics: dict[str, torch.Tensor], weight: torch.Tensor) -> dict[str, torch.Tensor]:
    """Ours with the reference's constant terms: ``log sqrt(2 pi)`` per frame value in the
    decoder's log-likelihood, and per imagined state (weighted) in the critic's."""
    decoder_constant = LOG_SQRT_2PI * FRAME_SIZE
    return metrics | {
        "observation_loss": metrics["reconstruction_loss"] + decoder_constant,
        "model_loss": metrics["model_loss"] + decoder_constant,
        "critic_loss": metrics["critic_loss"] + LOG_SQRT_2PI * weight[:-1].mean(),
    }


def replay(fixture: Fixture, agent: DreamerAgent | None = None) -> Comparison:
    """Every recorded update through our agent, paired with what the reference recorded."""
    agent = build(fixture) if agent is None else agent
    comparison = Comparison()
    for index in range(len(fixture.manifest["updates"])):
        seen: dict[str, torch.Tensor] = {}
        imagine, imagined_reward = agent.imagine, agent.imagined_reward
        lambda_return = agents.dreamer.lambda_return

        def spy_imagine(start, _imagine=imagine, _seen=seen):
            features, actions, entropy = _imagine(start)
            _seen.update(feat=features.detach().clone(), action=actions.detach().clone())
            return features, actions, entropy

        def spy_reward(features, actions, _reward=imagined_reward, _seen=seen):
            _seen["reward"] = _reward(features, actions)
            return _seen["reward"]

        def spy_return(*args, _return=lambda_return, _seen=seen, **kwargs):
            _seen["target"] = _return(*args, **kwargs)
            return _seen["target"]

        agent.imagine, agent.imagined_reward = spy_imagine, spy_reward
        agents.dreamer.lambda_return = spy_return
        served = served_draws(fixture, index)
        agent.randomness = served
        rng = torch.get_rng_state()
        try:
            metrics = agent.update(RecordedReplay(fixture.group(f"batch{index}")), step=index)
        finally:
            agents.dreamer.lambda_return = lambda_return
            agent.imagine, agent.imagined_reward = imagine, imagined_reward
            agent.randomness = TORCH_RANDOMNESS
        served.finish()
        assert torch.equal(rng, torch.get_rng_state()), "our update drew randomness the fixture does not feed"
        prefix = f"update{index}"
        imagined = fixture.group(f"{prefix}/imagination")
        for key in ("feat", "action", "reward", "target"):
            comparison.add(f"{prefix}/imagination/{key}", seen[key], imagined[key])
        ours = our_metrics(metrics, imagined["weight"])
        recorded = reference_metrics(fixture, index)
        for reference_name, our_name in METRICS.items():
            comparison.add(f"{prefix}/metric/{reference_name}", ours[our_name], recorded[reference_name])
        state = fixture.group(f"{prefix}/state")
        comparison.add(f"{prefix}/state/rewnorm.mag", agent.intrinsic_scale.magnitude, state["rewnorm.mag"])
        comparison.add(f"{prefix}/state/updates", agent.behaviour_updates, state["updates"])
        params = agent.state_dict()
        reference = {
            k: v for k, v in fixture.group(f"{prefix}/param").items() if not re.fullmatch(NOT_COMPARED, k)
        }
        for name, value in our_tensors(reference).items():
            comparison.add(f"{prefix}/param/{name}", params[name], value)
    return comparison


def test_update_equals_reference():
    replay(Fixture.load(NAME)).assert_close()


def test_max_relative_difference_is_reported():
    """The figures docs/fidelity.md quotes (printed with ``-s``): the largest
    elementwise relative difference over entries above 1e-4, where the worst are entries of
    1e-4 to 1e-3 that are differences of O(1) numbers (an imagined action ``tanh(mean) + noise``
    near 0, a feature near 0) and differ by float32 rounding (a few 1e-8); and the largest
    difference relative to each tensor's largest entry, which bounds that rounding."""
    comparison = replay(Fixture.load(NAME))
    label, elementwise = max(
        ((label, relative_difference(ours, reference)) for label, ours, reference in comparison.pairs),
        key=lambda x: x[1],
    )
    scaled = max(
        float((ours - reference).abs().max() / reference.abs().max().clamp_min(1e-4))
        for _, ours, reference in comparison.pairs
    )
    print(
        f"Dreamer + Plan2Explore: max relative difference {elementwise:.2e} elementwise ({label}), "
        f"{scaled:.2e} of each tensor's largest entry"
    )
    assert scaled < 1e-5 and elementwise < 1e-4


def test_reference_constants_are_ours():
    """What the reference fixes in code or config: 5 members as wide as the embedding,
    StreamNorm momentum 0.95, no entropy bonus on the intrinsic reward."""
    fixture = Fixture.load(NAME)
    constants, sizes = fixture.manifest["reference_constants"], fixture.manifest["sizes"]
    assert constants["disagreement_hidden"] == sizes["embed_dim"]
    agent = build(fixture)
    assert agent.reward_model.ensemble.weights[0].shape[-1] == sizes["embed_dim"]
    assert len(agent.reward_model.ensemble.weights[0]) == constants["members"] == 5
    assert constants["reward_norm"]["momentum"] == agent.intrinsic_scale.momentum == 0.95
    assert fixture.hyper["actor_ent"] == agent.intrinsic_actor_entropy == 0


def test_fixture_is_documented_and_small():
    assert (DATA / f"{NAME}.npz").stat().st_size < 2e6
    manifest = json.loads((DATA / f"{NAME}.json").read_text())
    assert manifest["repository"] == "https://github.com/mazpie/mastering-urlb"
    assert len(manifest["commit"]) == 40 and manifest["command"]
    assert len(manifest["updates"]) >= 3


# -- the departures issue 18 fixed, each put back: parity breaks ---------------------------------
def old_imagined_reward(agent: DreamerAgent):
    """The rule before issue 18: the reward takes the actions with their gradient, and the
    magnitude is the mean over the H rewarded rows only."""

    def reward(features, actions):
        horizon, num = actions.shape[0] - 1, actions.shape[1]
        transitions = TensorDict(
            {"observation": features[:-1].flatten(0, 1), "action": actions[1:].flatten(0, 1)},
            batch_size=[horizon * num],
        )
        intrinsic = agent.intrinsic_scale(agent.intrinsic_reward(transitions).view(horizon, num))
        return torch.cat([torch.zeros_like(intrinsic[:1]), intrinsic])

    return reward


def revert(agent: DreamerAgent, departure: str) -> None:
    if departure == "reward_rule":
        agent.imagined_reward = old_imagined_reward(agent)
    elif departure == "plain_adam_ensemble":
        model = agent.reward_model
        model.optimiser = torch.optim.Adam(model.ensemble.parameters(), lr=model.optimiser.defaults["lr"])
    elif departure == "linear_decoder_output":
        agent.decoder.net = agent.decoder.net[:-1]


@pytest.mark.parametrize("departure", ["reward_rule", "plain_adam_ensemble", "linear_decoder_output"])
def test_each_fixed_departure_breaks_parity_when_put_back(departure):
    fixture = Fixture.load(NAME)
    agent = build(fixture)
    revert(agent, departure)
    assert replay(fixture, agent).failures()
