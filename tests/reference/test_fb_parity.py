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

import torch
from tensordict import TensorDict
from urlb_reference import DATA, Comparison, Fixture, rename

from agents.fb import FBAgent
from agents.parts.nets import Randomness

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
# The recorder's kinds -> the Randomness method that makes ours.
KINDS = {"randn": "normal", "standard_normal": "normal", "randperm": "permutation", "uniform": "uniform"}


def our_tensors(reference: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    to_ours = rename(RULES)
    out = {}
    for name, value in reference.items():
        ours = to_ours(name)
        if ours is None:
            raise KeyError(f"reference tensor {name} has no counterpart in FBAgent")
        out[ours] = value
    return out


def build(fixture: Fixture) -> FBAgent:
    sizes, h = fixture.manifest["sizes"], fixture.hyper
    agent = FBAgent(
        sizes["obs_dim"],
        sizes["action_dim"],
        z_dim=sizes["z_dim"],
        hidden_dim=sizes["hidden_dim"],
        feature_dim=sizes["feature_dim"],
        backward_hidden_dim=sizes["backward_hidden_dim"],
        lr=h["lr"],
        lr_coef=h["lr_coef"],
        batch_size=sizes["batch_size"],
        stddev=float(h["stddev_schedule"]),
        stddev_clip=h["stddev_clip"],
        fb_target_tau=h["fb_target_tau"],
        discount=h["discount"],
        mix_ratio=h["mix_ratio"],
        ortho_coef=h["ortho_coef"],
    )
    weights = our_tensors(fixture.group("init"))
    ours = agent.state_dict()
    missing = sorted(name for name in ours if name not in weights and "latent" not in name)
    if missing:
        raise KeyError(f"our tensors with no reference tensor: {missing}")
    agent.load_state_dict(weights, strict=False)
    return agent


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


class ServedRandomness(Randomness):
    """The reference's draws, served in order, each checked for kind and shape."""

    def __init__(self, draws: list[tuple[str, torch.Tensor]]):
        self.queue = list(draws)

    def serve(self, kind: str, shape) -> torch.Tensor:
        if not self.queue:
            raise AssertionError(f"our update drew more ({kind} {tuple(shape)}) than the reference")
        recorded_kind, value = self.queue.pop(0)
        if recorded_kind != kind or tuple(value.shape) != tuple(shape):
            raise AssertionError(
                f"our update drew {kind} {tuple(shape)}, the reference {recorded_kind} {tuple(value.shape)}"
            )
        return value

    def normal(self, shape, like):
        return self.serve("normal", shape).to(like)

    def uniform(self, shape, like):
        return self.serve("uniform", shape).to(like)

    def permutation(self, size, device):
        return self.serve("permutation", (size,)).to(device=device, dtype=torch.long)

    def finish(self) -> None:
        if self.queue:
            raise AssertionError(f"{len(self.queue)} recorded draws were not used by our update")


def replay(fixture: Fixture) -> Comparison:
    agent, comparison = build(fixture), Comparison()
    for index in range(fixture.updates):
        draws = [
            (KINDS[d["kind"]], torch.as_tensor(fixture.arrays[d["key"]]))
            for d in fixture.manifest["updates"][index]["draws"]
        ]
        agent.randomness = ServedRandomness(draws)
        rng = torch.get_rng_state()
        metrics = agent.update(
            RecordedSampler(fixture.group(f"batch{index}"), fixture.hyper["discount"]), index
        )
        agent.randomness.finish()
        assert torch.equal(rng, torch.get_rng_state()), "our update drew randomness the fixture does not feed"
        del agent.randomness
        recorded = fixture.group(f"update{index}/metric")
        for reference_name, our_name in METRICS.items():
            comparison.add(
                f"update{index}/metric/{reference_name}", metrics[our_name], recorded[reference_name]
            )
        ours = agent.state_dict()
        for name, value in our_tensors(fixture.group(f"update{index}/param")).items():
            comparison.add(f"update{index}/param/{name}", ours[name], value)
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
