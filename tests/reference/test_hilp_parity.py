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
import re

import torch
from tensordict import TensorDict
from test_fb_parity import replay_latent
from urlb_reference import DATA, Comparison, Fixture, rename

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


def our_tensors(reference: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    to_ours, out = rename(RULES), {}
    for name, value in reference.items():
        if any(re.fullmatch(pattern, name) for pattern in UNMAPPED):
            continue
        ours = to_ours(name)
        if ours is None:
            raise KeyError(f"reference tensor {name} has no counterpart in HILPAgent")
        out[ours] = value
    return out


def build(fixture: Fixture) -> HILPAgent:
    sizes, h = fixture.manifest["sizes"], fixture.hyper
    agent = HILPAgent(
        sizes["obs_dim"],
        sizes["action_dim"],
        z_dim=sizes["z_dim"],
        hidden_dim=sizes["hidden_dim"],
        feature_dim=sizes["feature_dim"],
        phi_hidden_dim=sizes["phi_hidden_dim"],
        lr=h["lr"],
        lr_coef=h["lr_coef"],
        batch_size=sizes["batch_size"],
        stddev=float(h["stddev_schedule"]),
        stddev_clip=h["stddev_clip"],
        sf_target_tau=h["sf_target_tau"],
        discount=h["discount"],
        mix_ratio=h["mix_ratio"],
        hilp_discount=h["hilp_discount"],
        hilp_expectile=h["hilp_expectile"],
        feature_type=h["feature_type"],
        q_loss=h["q_loss"],
    )
    weights = our_tensors(fixture.group("init"))
    missing = sorted(name for name in agent.state_dict() if name not in weights and "latent" not in name)
    if missing:
        raise KeyError(f"our tensors with no reference tensor: {missing}")
    agent.load_state_dict(weights, strict=False)
    return agent


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
