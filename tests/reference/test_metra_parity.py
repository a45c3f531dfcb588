"""Parity with METRA's own code (issue 18): our METRA update on SAC equals the authors' on
recorded batches.

The fixtures (``tests/reference/data/metra/``, written by ``scripts/reference/record_metra.py``
from seohongpark/METRA) hold the reference's initial weights, a few batches, the policy noise
it drew inside each update and, after each update, its logged scalars, the reward its critic
trained on and every weight. We load the weights into ``SACAgent`` with ``METRA`` in the
configuration ``configs/agent/metra.yaml`` names (garage's policy, independent Q networks,
0.5 x MSE), feed the same batches and noise and compare everything to ``rtol=1e-5,
atol=1e-6``: the representation loss with the dual constraint, the lambda step, the reward
with the updated phi, SAC's critic, actor and temperature steps and the target networks.
Measured at the fixtures' sizes: max relative difference 1e-6 or less (see
``test_max_relative_difference_is_reported``).
"""

from __future__ import annotations

import functools
import json

import pytest
import torch
from tensordict import TensorDict
from urlb_reference import DATA, Comparison, Fixture, rename

from agents.metra import METRA
from agents.parts.nets import Randomness
from agents.sac import GARAGE_LOG_STD_MAX, GARAGE_LOG_STD_MIN, SACAgent

FIXTURES = ["metra/metra", "metra/metra_discrete"]  # under tests/reference/data
POLICY = r"option_policy\._module\._shared_mean_log_std_network"


def _q(match) -> str:
    network = "critic_target" if match[1] else "critic"
    layer = 4 if match[3] == "out" else 2 * int(match[3])
    return f"{network}.q{match[2]}.{layer}.{match[4]}"


RULES = [
    (POLICY + r"\._layers\.(\d)\.linear\.(.*)", lambda m: f"actor.net.{2 * int(m[1])}.{m[2]}"),
    (
        r"traj_encoder\._mean_module\._layers\.(\d)\.linear\.(.*)",
        lambda m: f"reward_model.phi.{2 * int(m[1])}.{m[2]}",
    ),
    (r"traj_encoder\._mean_module\._output_layers\.0\.linear\.(.*)", r"reward_model.phi.4.\1"),
    (r"(target_)?qf([12])\._layers\.()(\d)\.linear\.(.*)", lambda m: _q((m[0], m[1], m[2], m[4], m[5]))),
    (r"(target_)?qf([12])\._output_layers\.0\.linear\.(.*)", lambda m: _q((m[0], m[1], m[2], "out", m[3]))),
    (r"log_alpha\.param", "log_alpha"),
    (r"dual_lam\.param", "reward_model.log_dual"),
]
# Reference tensors with no counterpart in ours, and why.
UNMAPPED = {
    r"option_policy\._module\._init_std": "the initial std (1): only initialises the log-std head's bias",
    r"option_policy\._module\.(min|max)_std_param": "the log-std clamp: agents.sac.GARAGE_LOG_STD_MIN/MAX",
    r"traj_encoder\.(_log_std_module\..*|_init_std|min_std_param)": (
        "the std network of METRA's Gaussian trajectory encoder: inner-product METRA reads its mean only"
    ),
}
# garage's two policy heads (mean, log std) are the two halves of our actor's last layer.
HEADS = POLICY + r"\._output_layers\.([01])\.linear\.(weight|bias)"

# Reference scalar -> ours (derived ones in ``our_metrics``).
METRICS = {
    "LossTe": "metra_loss",
    "DualLam": "metra_dual",
    "LossDualLam": "metra_dual_loss",
    "DualCstPenalty": "metra_penalty",
    "PureRewardMean": "intrinsic_reward",
    "PureRewardStd": "intrinsic_reward_std",
    "QTargetsMean": "critic_target_q",
    "LossQf": "critic_loss",
    "LossSacp": "actor_loss",
    "Alpha": "alpha",
    "LossAlpha": "alpha_loss",
    "SacpNewActionLogProb": "log_prob",
}


def our_tensors(reference: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The reference's state_dict entries under our names; every entry is mapped, combined
    or listed in ``UNMAPPED``."""
    import re

    to_ours = rename(RULES)
    out = {}
    heads = {}
    for name, value in reference.items():
        if any(re.fullmatch(pattern, name) for pattern in UNMAPPED):
            continue
        match = re.fullmatch(HEADS, name)
        if match:
            heads[(int(match[1]), match[2])] = value
            continue
        ours = to_ours(name)
        if ours is None:
            raise KeyError(f"reference tensor {name} has no counterpart in our agent")
        out[ours] = value
    for kind in ("weight", "bias"):
        out[f"actor.net.4.{kind}"] = torch.cat([heads[(0, kind)], heads[(1, kind)]])
    return out


def build(fixture: Fixture) -> SACAgent:
    """Our METRA at the fixture's sizes and settings, holding the reference's initial weights."""
    h, sizes = fixture.hyper, fixture.manifest["sizes"]
    model = functools.partial(
        METRA,
        skill_dim=sizes["skill_dim"],
        discrete=bool(h["discrete"]),
        hidden_dim=sizes["hidden_dim"],
        lr=h["lr"],
        dual_lr=h["lr"],
        init_dual=h["dual_lam"],
        dual_slack=h["dual_slack"],
        observe_pose=False,
    )
    agent = SACAgent(
        sizes["obs_dim"],
        sizes["action_dim"],
        hidden_dim=sizes["hidden_dim"],
        lr=h["lr"],
        batch_size=sizes["batch_size"],
        critic_target_tau=h["sac_tau"],
        init_temperature=h["alpha"],
        target_entropy_scale=0.5 * h["sac_target_coef"],
        actor_layout="garage",
        shared_critic_trunk=False,
        critic_loss_weight=0.5,
        reward_model=model,
    )
    weights = our_tensors(fixture.group("init"))
    ours = agent.state_dict()
    missing = sorted(name for name, _ in agent.named_parameters() if name not in weights)
    if missing:
        raise KeyError(f"our parameters with no reference tensor: {missing}")
    agent.load_state_dict({k: v.reshape(ours[k].shape) for k, v in weights.items()}, strict=False)
    agent.set_task(None)
    return agent


class RecordedReplay:
    """``sample(batch_size)``: the recorded batch in our replay's layout (discount
    ``gamma * (1 - done)``, the option as ``skill``)."""

    def __init__(self, batch: dict[str, torch.Tensor], discount: float):
        self.batch = TensorDict(
            observation=batch["obs"],
            action=batch["actions"],
            next_observation=batch["next_obs"],
            discount=discount * (1.0 - batch["dones"]),
            task_reward=torch.zeros(len(batch["obs"]), 1),
            skill=batch["options"],
            batch_size=[len(batch["obs"])],
        )
        if not torch.equal(batch["options"], batch["next_options"]):
            raise ValueError("the fixture's next options differ from its options: ours keep one skill")

    def sample(self, batch_size: int) -> TensorDict:
        if batch_size != self.batch.batch_size[0]:
            raise ValueError(f"the fixture's batch holds {self.batch.batch_size[0]}, asked for {batch_size}")
        return self.batch.clone()


class ServedRandomness(Randomness):
    """Serves recorded standard normals in order, each checked for shape; every draw must be
    used (:meth:`finish`)."""

    def __init__(self, draws: list[torch.Tensor]):
        self.queue = list(draws)

    def normal(self, shape, like: torch.Tensor) -> torch.Tensor:
        if not self.queue:
            raise AssertionError(f"our update drew more normals ({tuple(shape)}) than the reference")
        value = self.queue.pop(0)
        if tuple(value.shape) != tuple(shape):
            raise AssertionError(f"our update drew {tuple(shape)}, the reference {tuple(value.shape)}")
        return value.to(like)

    def multinomial(self, probs, num_samples):
        raise AssertionError("METRA's update draws no categorical samples")

    def finish(self) -> None:
        if self.queue:
            raise AssertionError(f"{len(self.queue)} recorded draws were not used by our update")


def our_metrics(metrics: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return metrics | {"log_prob": -metrics["entropy"]}


def reference_metrics(recorded: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return recorded | {
        "LossQf": recorded["LossQf1"] + recorded["LossQf2"],
        "SacpNewActionLogProb": recorded["SacpNewActionLogProbMean"],
    }


def replay(fixture: Fixture, agent: SACAgent | None = None) -> Comparison:
    """Every recorded update through our agent, paired with what the reference recorded."""
    agent = build(fixture) if agent is None else agent
    comparison = Comparison()
    for index in range(len(fixture.manifest["updates"])):
        rewards = []
        update_critic = agent.update_critic

        def spy(observation, action, reward, *args, _update_critic=update_critic, _rewards=rewards):
            _rewards.append(reward.detach().clone())
            return _update_critic(observation, action, reward, *args)

        agent.update_critic = spy
        draws = fixture.manifest["updates"][index]["draws"]
        agent.randomness = ServedRandomness([torch.as_tensor(fixture.arrays[d["key"]]) for d in draws])
        rng = torch.get_rng_state()
        replay_batch = RecordedReplay(fixture.group(f"batch{index}"), fixture.hyper["sac_discount"])
        metrics = our_metrics(agent.update(replay_batch, step=index))
        agent.randomness.finish()
        assert torch.equal(rng, torch.get_rng_state()), "our update drew randomness the fixture does not feed"
        del agent.update_critic, agent.randomness
        prefix = f"update{index}"
        comparison.add(f"{prefix}/reward", rewards[0], fixture.group(prefix)["reward"])
        recorded = reference_metrics(fixture.group(f"{prefix}/metric"))
        for reference_name, our_name in METRICS.items():
            comparison.add(f"{prefix}/metric/{reference_name}", metrics[our_name], recorded[reference_name])
        ours = agent.state_dict()
        for name, value in our_tensors(fixture.group(f"{prefix}/param")).items():
            comparison.add(f"{prefix}/param/{name}", ours[name], value)
    return comparison


@pytest.mark.parametrize("name", FIXTURES)
def test_update_equals_reference(name):
    replay(Fixture.load(name)).assert_close()


def test_max_relative_difference_is_reported():
    """The figure docs/fidelity_metra_dreamer.md quotes (printed with ``-s``)."""
    worst = max(replay(Fixture.load(name)).max_relative() for name in FIXTURES)
    print(f"METRA max relative difference: {worst:.2e}")
    assert worst < 1e-5


def test_reference_constants_are_ours():
    """What the reference fixes in code: the policy's log-std clamp and the target entropy
    (-action_dim / 2)."""
    fixture = Fixture.load("metra/metra")
    constants = fixture.manifest["reference_constants"]
    assert constants["log_std_min"] == pytest.approx(GARAGE_LOG_STD_MIN, rel=1e-6)
    assert constants["log_std_max"] == pytest.approx(GARAGE_LOG_STD_MAX)
    assert build(fixture).target_entropy == pytest.approx(constants["target_entropy"])


def test_fixtures_are_documented_and_small():
    for name in FIXTURES:
        assert (DATA / f"{name}.npz").stat().st_size < 2e6
        manifest = json.loads((DATA / f"{name}.json").read_text())
        assert manifest["repository"] == "https://github.com/seohongpark/METRA"
        assert len(manifest["commit"]) == 40 and manifest["command"]
        assert len(manifest["updates"]) >= 3
