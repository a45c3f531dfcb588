"""Parity with HILP's own zero-shot code (issue 20): our HILP update equals Park et al.'s on
recorded batches.

The fixture (``tests/reference/data/hilp/``, written by ``scripts/reference/record_hilp.py``
from seohongpark/HILP's ``hilp_zsrl``) holds the reference's initial weights, three batches with
their goals, the randomness drawn inside each update and, after each update, its logged scalars
and every weight. We load the weights into ``HILPAgent`` and feed the same batches and draws
through its ``randomness`` hook: phi's expectile value step with its targets and running mean,
the successor features on phi, the mix of ``Cov^+ phi`` latents, the actor step and the targets
are compared at ``rtol=1e-5, atol=1e-6``.
"""

from __future__ import annotations

import json

import torch
from tensordict import TensorDict
from test_fb_parity import build_latent, replay_latent, tensor_map
from urlb_reference import DATA, Comparison, Fixture

from agents.hilp import HILPAgent

FIXTURE = "hilp/hilp"
RULES = [
    (r"actor\.(.*)", r"actor.\1"),
    (r"successor_net\.F([12])\.(.*)", r"forward_map.f\1.\2"),
    (r"successor_net\.(.*)", r"forward_map.\1"),
    (r"successor_target_net\.F([12])\.(.*)", r"forward_target.f\1.\2"),
    (r"successor_target_net\.(.*)", r"forward_target.\1"),
    (r"feature_learner\.phi([12])\.(.*)", lambda m: f"phis.{int(m[1]) - 1}.{m[2]}"),
    (r"feature_learner\.target_phi([12])\.(.*)", lambda m: f"phi_targets.{int(m[1]) - 1}.{m[2]}"),
    (r"feature_learner\.running_mean", "running_mean"),
]
UNMAPPED = {
    r"feature_learner\.running_std": "a running std the reference updates but never reads",
    r"feature_learner\.feature_net\..*": (
        "FeatureLearner's default network, which HILP's feature_net method shadows: never run, no gradient"
    ),
}
METRICS = {
    "sf_loss": "sf_loss",
    "phi_loss": "value_loss",
    "hilp/value_loss": "value_loss",
    "hilp/v_mean": "v_mean",
    "hilp/adv_mean": "adv_mean",
    "hilp/accept_prob": "accept_prob",
    "phi_norm": "phi_norm",
    "actor_loss": "actor_loss",
}


our_tensors = tensor_map(RULES, UNMAPPED)


def build(fixture: Fixture, obs_dim=None, ours_of=our_tensors, **extra) -> HILPAgent:
    """HILP at the fixture's settings (``obs_dim``: the manifest's state size by default)."""
    sizes, h = fixture.manifest["sizes"], fixture.hyper
    return build_latent(
        HILPAgent,
        fixture,
        sizes["obs_dim"] if obs_dim is None else obs_dim,
        ours_of,
        phi_hidden_dim=sizes["phi_hidden_dim"],
        sf_target_tau=h["sf_target_tau"],
        hilp_discount=h["hilp_discount"],
        hilp_expectile=h["hilp_expectile"],
        feature_type=h["feature_type"],
        q_loss=h["q_loss"],
        **extra,
    )


class RecordedSampler:
    """``sample_with_goals``: the recorded batch, its goals the reference's ``future_obs``."""

    def __init__(self, batch: dict[str, torch.Tensor]):
        self.batch = TensorDict(
            observation=batch["obs"],
            action=batch["action"],
            next_observation=batch["next_obs"],
            terminated=batch["discount"][:, 0] == 0,
            goal=batch["future_obs"],
            batch_size=[len(batch["obs"])],
        )

    def sample_with_goals(self, batch_size: int, future: float, random_goal: float) -> TensorDict:
        assert batch_size == self.batch.batch_size[0]
        return self.batch.clone()


def replay(fixture: Fixture) -> Comparison:
    return replay_latent(fixture, build(fixture), RecordedSampler, METRICS, our_tensors)


def test_update_equals_reference():
    replay(Fixture.load(FIXTURE)).assert_close()


def test_max_relative_difference_is_reported():
    """The figure README.md and docs/fidelity.md quote (printed with ``-s``)."""
    worst = replay(Fixture.load(FIXTURE)).max_relative()
    print(f"HILP max relative difference: {worst:.2e}")
    assert worst < 1e-5


def test_fixture_is_documented_and_small():
    assert (DATA / f"{FIXTURE}.npz").stat().st_size < 300_000
    manifest = json.loads((DATA / f"{FIXTURE}.json").read_text())
    assert manifest["repository"] == "https://github.com/seohongpark/HILP"
    assert len(manifest["commit"]) == 40 and manifest["command"] and manifest["patch"]
    assert len(manifest["updates"]) >= 3
