"""Parity with FB's own code (issue 20): our FB update equals Touati & Ollivier's on recorded
batches.

The fixture (``tests/reference/data/fb/``, written by ``scripts/reference/record_fb.py`` from
facebookresearch/controllable_agent) holds the reference's initial weights, three batches, the
randomness drawn inside each update (z on the sphere, the permutation and mix mask of the
states B mixes in, the policy noise) and, after each update, its logged scalars and every
weight. We load the weights into ``FBAgent``, feed the same batches and draws through its
``randomness`` hook and compare everything at ``rtol=1e-5, atol=1e-6``: the FB loss and its
parts, the orthonormality regulariser, the actor step and the Polyak targets.
"""

from __future__ import annotations

import json
import re

import torch
from tensordict import TensorDict
from urlb_reference import DATA, Comparison, Fixture, RecordedRandomness, rename

from agents.fb import FBAgent

FIXTURE = "fb/fb"
RULES = [
    (r"actor\.(.*)", r"actor.\1"),
    (r"forward_net\.F([12])\.(.*)", r"forward_map.f\1.\2"),
    (r"forward_net\.(.*)", r"forward_map.\1"),
    (r"forward_target_net\.F([12])\.(.*)", r"forward_target.f\1.\2"),
    (r"forward_target_net\.(.*)", r"forward_target.\1"),
    (r"backward_net\.B\.(.*)", r"backward_map.net.\1"),
    (r"backward_target_net\.B\.(.*)", r"backward_target.net.\1"),
]
# Reference scalar -> ours.
METRICS = {
    "fb_loss": "fb_loss",
    "fb_diag": "fb_diag",
    "fb_offdiag": "fb_offdiag",
    "orth_loss": "orth_loss",
    "orth_loss_diag": "orth_loss_diag",
    "orth_loss_offdiag": "orth_loss_offdiag",
    "actor_loss": "actor_loss",
    "q": "q",
}


def tensor_map(rules: list, unmapped=()):
    """Reference name -> ours for a zero-shot agent's tensors (FB, HILP, on states or pixels):
    names matching a pattern of ``unmapped`` are skipped, any other without a rule is an error."""
    to_ours = rename(rules)

    def ours(reference: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        out = {}
        for name, value in reference.items():
            if any(re.fullmatch(pattern, name) for pattern in unmapped):
                continue
            mapped = to_ours(name)
            if mapped is None:
                raise KeyError(f"reference tensor {name} has no counterpart")
            out[mapped] = value
        return out

    return ours


our_tensors = tensor_map(RULES)


def build_latent(cls, fixture: Fixture, obs_dim, ours_of, **extra):
    """``cls`` (FB or HILP) at the fixture's sizes and shared settings (``extra``: the agent's
    own), with the reference's initial weights; every tensor of ours needs one."""
    sizes, h = fixture.manifest["sizes"], fixture.hyper
    agent = cls(
        obs_dim,
        sizes["action_dim"],
        z_dim=sizes["z_dim"],
        hidden_dim=sizes["hidden_dim"],
        feature_dim=sizes["feature_dim"],
        lr=h["lr"],
        lr_coef=h["lr_coef"],
        batch_size=sizes["batch_size"],
        stddev=float(h["stddev_schedule"]),
        stddev_clip=h["stddev_clip"],
        discount=h["discount"],
        mix_ratio=h["mix_ratio"],
        **extra,
    )
    weights = ours_of(fixture.group("init"))
    missing = sorted(name for name in agent.state_dict() if name not in weights and "latent" not in name)
    if missing:
        raise KeyError(f"our tensors with no reference tensor: {missing}")
    agent.load_state_dict(weights, strict=False)
    return agent


def build(fixture: Fixture, obs_dim=None, ours_of=our_tensors, **extra) -> FBAgent:
    """FB at the fixture's settings (``obs_dim``: the manifest's state size by default)."""
    sizes, h = fixture.manifest["sizes"], fixture.hyper
    return build_latent(
        FBAgent,
        fixture,
        sizes["obs_dim"] if obs_dim is None else obs_dim,
        ours_of,
        backward_hidden_dim=sizes["backward_hidden_dim"],
        fb_target_tau=h["fb_target_tau"],
        ortho_coef=h["ortho_coef"],
        **extra,
    )


class RecordedSampler:
    """``sample(batch_size)``: the recorded batch; the reference's discount (gamma, 0 at the ends)
    becomes our ``terminated`` flag."""

    def __init__(self, batch: dict[str, torch.Tensor], discount: float):
        terminated = batch["discount"][:, 0] == 0
        if not torch.all(
            terminated | (batch["discount"][:, 0] == torch.tensor(discount, dtype=torch.float32))
        ):
            raise ValueError("the fixture's discounts are neither gamma nor 0")
        self.batch = TensorDict(
            observation=batch["obs"],
            action=batch["action"],
            next_observation=batch["next_obs"],
            terminated=terminated,
            batch_size=[len(batch["obs"])],
        )

    def sample(self, batch_size: int) -> TensorDict:
        assert batch_size == self.batch.batch_size[0]
        return self.batch.clone()


def replay(fixture: Fixture) -> Comparison:
    return replay_latent(
        fixture,
        build(fixture),
        lambda batch: RecordedSampler(batch, fixture.hyper["discount"]),
        METRICS,
        our_tensors,
    )


def replay_latent(
    fixture: Fixture, agent, sampler, metrics: dict[str, str], ours_of, draws=None
) -> Comparison:
    """Every recorded update of a zero-shot agent (FB, HILP) through ``agent``: the batch as
    ``sampler(batch)`` serves it, the reference's draws through the ``randomness`` hook (all of
    them, and nothing behind it; ``draws(index)``: update ``index``'s as ours asks for them,
    by default the fixture's as recorded), then the ``metrics`` (reference name -> ours) and
    every weight (``ours_of`` maps the reference's names) paired with the reference's."""
    comparison = Comparison()
    for index in range(fixture.updates):
        agent.randomness = RecordedRandomness((draws or fixture.draws)(index))
        rng = torch.get_rng_state()
        logged = agent.update(sampler(fixture.group(f"batch{index}")), index)
        agent.randomness.finish()
        assert torch.equal(rng, torch.get_rng_state()), "our update drew randomness the fixture does not feed"
        del agent.randomness
        recorded = fixture.group(f"update{index}/metric")
        for reference_name, our_name in metrics.items():
            comparison.add(
                f"update{index}/metric/{reference_name}", logged[our_name], recorded[reference_name]
            )
        state = agent.state_dict()
        for name, value in ours_of(fixture.group(f"update{index}/param")).items():
            comparison.add(f"update{index}/param/{name}", state[name], value)
    return comparison


def test_update_equals_reference():
    replay(Fixture.load(FIXTURE)).assert_close()


def test_max_relative_difference_is_reported():
    """The figure README.md and docs/fidelity.md quote (printed with ``-s``)."""
    worst = replay(Fixture.load(FIXTURE)).max_relative()
    print(f"FB max relative difference: {worst:.2e}")
    assert worst < 1e-5


def test_fixture_is_documented_and_small():
    assert (DATA / f"{FIXTURE}.npz").stat().st_size < 300_000
    manifest = json.loads((DATA / f"{FIXTURE}.json").read_text())
    assert manifest["repository"] == "https://github.com/facebookresearch/controllable_agent"
    assert len(manifest["commit"]) == 40 and manifest["command"] and manifest["patch"]
    assert len(manifest["updates"]) >= 3
