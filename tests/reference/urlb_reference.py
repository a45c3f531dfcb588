"""Replay of the URLB family's reference fixtures (``scripts/reference/record_urlb.py``)
through our agents: build ours from the fixture's hyperparameters, load the reference's
initial weights under our names, feed the recorded batches and randomness to
``agent.update`` and collect every quantity the fixture lets us compare. The randomness the
reference drew inside an update reaches our agent through its ``randomness`` hook
(``agents.parts.nets.Randomness``), not by patching torch.

Name maps say where each reference tensor lives in our agent; a reference tensor with no
counterpart must be listed in ``Port.unmapped`` with the reason.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from tensordict import TensorDict

from agents.aps import APS
from agents.apt import APT
from agents.cic import CIC
from agents.ddpg import DDPGAgent
from agents.diayn import DIAYN
from agents.disagreement import Disagreement
from agents.icm import ICM
from agents.parts.nets import Randomness
from agents.proto import ProtoRL
from agents.rnd import RND
from agents.smm import SMM

DATA = Path(__file__).resolve().parent / "data"
RTOL, ATOL = 1e-5, 1e-6


# -- the fixture ------------------------------------------------------------------------------
@dataclasses.dataclass
class Fixture:
    name: str
    manifest: dict
    arrays: dict[str, torch.Tensor]

    @classmethod
    def load(cls, name: str) -> Fixture:
        manifest = json.loads((DATA / f"{name}.json").read_text())
        with np.load(DATA / f"{name}.npz", allow_pickle=False) as data:
            arrays = {key: torch.as_tensor(data[key]) for key in data.files}
        return cls(name, manifest, arrays)

    @property
    def hyper(self) -> dict:
        return self.manifest["hyperparameters"]

    @property
    def updates(self) -> int:
        return len(self.manifest["updates"])

    def group(self, prefix: str) -> dict[str, torch.Tensor]:
        """The arrays under ``prefix/`` as tensors, keyed by the rest of their name."""
        start = f"{prefix}/"
        return {k[len(start) :]: v for k, v in self.arrays.items() if k.startswith(start)}

    def draws(self, update: int) -> list[tuple[str, torch.Tensor]]:
        """The random tensors the reference drew in update ``update``, in order, each with
        its kind as our hook names it (``normal`` or ``multinomial``)."""
        return [
            (DRAW_KINDS[d["kind"]], self.arrays[d["key"]]) for d in self.manifest["updates"][update]["draws"]
        ]


# The recorder's kinds of draw -> the Randomness method that makes ours (randint: Dreamer's
# RSSM ensemble member, which ours has no counterpart for, and the zero-shot agents' random
# shifts on pixels; randperm and uniform: FB's and HILP's latent mixes).
DRAW_KINDS = {
    "standard_normal": "normal",
    "randn": "normal",
    "multinomial": "multinomial",
    "randint": "randint",
    "randperm": "permutation",
    "uniform": "uniform",
}


# -- our agent, and where the reference's tensors live in it ----------------------------------------
def rename(rules: list[tuple[str, str | Callable]]) -> Callable[[str], str | None]:
    def apply(name: str) -> str | None:
        for pattern, replacement in rules:
            if re.fullmatch(pattern, name):
                return re.sub(pattern, replacement, name)
        return None

    return apply


# The DDPG backbone: identical module layout, URLB's Q1/Q2 are our q1/q2.
BACKBONE_RULES = [
    (r"actor\.(.*)", r"actor.\1"),
    (r"(critic|critic_target)\.Q([12])\.(.*)", r"\1.q\2.\3"),
    (r"(critic|critic_target)\.trunk\.(.*)", r"\1.trunk.\2"),
]


def disagreement_tensors(reference: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """URLB's ensemble is a ModuleList of Linear stacks; ours stacks the members' weights
    transposed (``EnsembleMLP``: ``weights.<layer>`` (members, in, out), ``biases.<layer>``
    (members, 1, out))."""
    members = 1 + max(int(k.split(".")[2]) for k in reference if k.startswith("disagreement.ensemble."))
    out = {}
    for layer, index in enumerate((0, 2)):
        weights = [reference[f"disagreement.ensemble.{m}.{index}.weight"] for m in range(members)]
        biases = [reference[f"disagreement.ensemble.{m}.{index}.bias"] for m in range(members)]
        out[f"reward_model.ensemble.weights.{layer}"] = torch.stack([w.T for w in weights])
        out[f"reward_model.ensemble.biases.{layer}"] = torch.stack([b[None] for b in biases])
    return out


def smm_tensors(reference: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """URLB's VAE has separate ``enc_mu`` and ``enc_logvar`` heads; ours is one layer whose
    output is ``(mu, logvar)`` concatenated."""
    return {
        f"reward_model.vae.encoder.4.{p}": torch.cat(
            [reference[f"smm.vae.enc_mu.{p}"], reference[f"smm.vae.enc_logvar.{p}"]]
        )
        for p in ("weight", "bias")
    }


@dataclasses.dataclass
class Port:
    """How one reference agent maps onto ours."""

    reward_model: Callable[[dict, dict], Callable | None]  # hyperparameters, constants -> partial
    rules: list = dataclasses.field(default_factory=list)  # reference name -> our name
    combine: Callable | None = None  # reference tensors -> ours, for non-1:1 layouts
    combined: str | None = None  # regex of the reference names ``combine`` consumes
    unmapped: dict[str, str] = dataclasses.field(default_factory=dict)  # regex -> why no counterpart
    metrics: dict[str, str] = dataclasses.field(default_factory=dict)  # reference -> ours
    state: dict[str, str] = dataclasses.field(default_factory=dict)  # reference -> our buffer
    set_task: int | None = None  # plain DDPG trains on the batch's reward: our task 0
    # Finetuning fixtures: reference tensors that URLB's init_from does not transfer and ours
    # does (regex -> why); neither side's updates touch them, so they are not compared.
    not_transferred: dict[str, str] = dataclasses.field(default_factory=dict)


COMMON_METRICS = {
    "critic_loss": "critic_loss",
    "critic_q1": "critic_q1",
    "critic_target_q": "critic_target_q",
    "actor_loss": "actor_loss",
}
REWARD_METRICS = COMMON_METRICS | {"intr_reward": "intrinsic_reward"}


def rms_state(reference: str, ours: str) -> dict[str, str]:
    """URLB's ``utils.RMS`` (M, S, n) against our ``RunningMeanStd`` (mean, var, count)."""
    return {
        f"{reference}.M": f"{ours}.mean",
        f"{reference}.S": f"{ours}.var",
        f"{reference}.n": f"{ours}.count",
    }


def knn_normaliser(h: dict) -> str | None:
    return "mean" if h["knn_rms"] else None


PORTS: dict[str, Port] = {
    "ddpg": Port(
        lambda h, c: None, metrics=COMMON_METRICS | {"batch_reward": "extrinsic_reward"}, set_task=0
    ),
    "icm": Port(
        lambda h, c: functools.partial(ICM, hidden_dim=h["hidden_dim"], lr=h["lr"], scale=h["icm_scale"]),
        rules=[(r"icm\.(forward_net|backward_net)\.(.*)", r"reward_model.model.\1.\2")],
        metrics=REWARD_METRICS | {"icm_loss": "icm_loss"},
    ),
    "diayn": Port(
        lambda h, c: functools.partial(
            DIAYN,
            skill_dim=h["skill_dim"],
            hidden_dim=h["hidden_dim"],
            lr=h["lr"],
            update_skill_every_step=h["update_skill_every_step"],
            scale=h["diayn_scale"],
        ),
        rules=[(r"diayn\.skill_pred_net\.(.*)", r"reward_model.discriminator.\1")],
        metrics=REWARD_METRICS | {"diayn_loss": "diayn_loss", "diayn_acc": "diayn_accuracy"},
    ),
    "cic": Port(
        lambda h, c: functools.partial(
            CIC,
            skill_dim=h["skill_dim"],
            hidden_dim=h["hidden_dim"],
            lr=h["lr"],
            update_skill_every_step=h["update_skill_every_step"],
            temperature=h["temp"],
            project_skill=h["project_skill"],
            knn_k=c["apt_args"]["knn_k"],
            knn_average=c["apt_args"]["knn_avg"],
            knn_normaliser="variance" if c["apt_args"]["rms"] else None,  # CIC's moving_std is S
            knn_clip=c["apt_args"]["knn_clip"],
        ),
        rules=[(r"cic\.(state_net|pred_net|skill_net)\.(.*)", r"reward_model.\1.\2")],
        unmapped={r"cic\.next_state_net\..*": "built by CIC's code and never used (agents/cic.py)"},
        metrics=REWARD_METRICS | {"cic_loss": "cic_loss"},
        state=rms_state("rms", "reward_model.entropy.stats"),
    ),
    "disagreement": Port(
        lambda h, c: functools.partial(
            Disagreement, hidden_dim=h["hidden_dim"], lr=h["lr"], members=c["n_models"]
        ),
        combine=disagreement_tensors,
        combined=r"disagreement\.ensemble\..*",
        metrics=REWARD_METRICS | {"disagreement_loss": "disagreement_loss"},
    ),
    "rnd": Port(
        lambda h, c: functools.partial(
            RND,
            hidden_dim=h["hidden_dim"],
            lr=h["lr"],
            rep_dim=h["rnd_rep_dim"],
            scale=h["rnd_scale"],
            obs_clip=c["clip_val"],
        ),
        # URLB's predictor and target start with the (identity) encoder: layer i is our i - 1
        rules=[
            (
                r"rnd\.(predictor|target)\.(\d)\.(.*)",
                lambda m: f"reward_model.{m[1]}.{int(m[2]) - 1}.{m[3]}",
            )
        ],
        unmapped={
            r"rnd\.normalize_obs\..*": (
                "the running statistics of URLB's BatchNorm, which it never reads (its RND stays in "
                "training mode: batch statistics, our obs_normalisation='batch')"
            )
        },
        metrics=REWARD_METRICS | {"rnd_loss": "rnd_loss"},
        state=rms_state("intrinsic_reward_rms", "reward_model.error_stats"),
    ),
    "icm_apt": Port(
        lambda h, c: functools.partial(
            APT,
            representation="icm",
            hidden_dim=h["hidden_dim"],
            lr=h["lr"],
            rep_dim=h["icm_rep_dim"],
            knn_k=h["knn_k"],
            knn_average=h["knn_avg"],
            knn_normaliser=knn_normaliser(h),
            knn_clip=h["knn_clip"],
        ),
        rules=[(r"icm\.(.*)", r"reward_model.icm.\1")],
        metrics=REWARD_METRICS | {"icm_loss": "apt_icm_loss"},
        state=rms_state("pbe.rms", "reward_model.entropy.stats"),
    ),
    "proto": Port(
        lambda h, c: functools.partial(
            ProtoRL,
            hidden_dim=h["hidden_dim"],
            lr=h["lr"],
            pred_dim=h["pred_dim"],
            proj_dim=h["proj_dim"],
            num_protos=h["num_protos"],
            temperature=h["tau"],
            topk=h["topk"],
            queue_size=h["queue_size"],
            target_tau=h["encoder_target_tau"],
        ),
        rules=[
            (r"(predictor|predictor_target)\.(.*)", r"reward_model.\1.\2"),
            (r"projector\.trunk\.(.*)", r"reward_model.projector.\1"),
            (r"protos\.weight", r"reward_model.prototypes.weight"),
        ],
        metrics=REWARD_METRICS | {"repr_loss": "proto_loss"},
        state={"queue": "reward_model.queue", "queue_ptr": "reward_model.queue_pointer"},
    ),
    "smm": Port(
        lambda h, c: functools.partial(
            SMM,
            skill_dim=h["z_dim"],
            hidden_dim=h["hidden_dim"],
            discriminator_lr=h["sp_lr"],
            vae_lr=h["vae_lr"],
            vae_beta=h["vae_beta"],
            state_ent_coef=h["state_ent_coef"],
            latent_ent_coef=h["latent_ent_coef"],
            latent_cond_ent_coef=h["latent_cond_ent_coef"],
            update_skill_every_step=0,  # a skill per episode (URLB's update_meta)
        ),
        rules=[
            (r"smm\.z_pred_net\.(.*)", r"reward_model.discriminator.\1"),
            (r"smm\.vae\.enc\.([02])\.(.*)", r"reward_model.vae.encoder.\1.\2"),
            (r"smm\.vae\.dec\.(.*)", r"reward_model.vae.decoder.\1"),
        ],
        combine=smm_tensors,
        combined=r"smm\.vae\.enc_(mu|logvar)\..*",
        metrics=REWARD_METRICS | {"loss_vae": "smm_vae_loss", "loss_pred": "smm_discriminator_loss"},
    ),
    "aps": Port(
        lambda h, c: functools.partial(
            APS,
            skill_dim=h["sf_dim"],
            hidden_dim=h["hidden_dim"],
            lr=h["lr"],
            update_skill_every_step=h["update_task_every_step"],
            knn_k=h["knn_k"],
            knn_average=h["knn_avg"],
            knn_normaliser=knn_normaliser(h),
            knn_clip=h["knn_clip"],
            num_init_frames=h["num_init_steps"],
            lstsq_samples=h["lstsq_batch_size"],
        ),
        rules=[(r"aps\.state_feat_net\.(.*)", r"reward_model.features.\1")],
        metrics=REWARD_METRICS | {"aps_loss": "aps_loss"},
        state=rms_state("pbe.rms", "reward_model.entropy.stats"),
    ),
}


FINETUNE_METRICS = COMMON_METRICS | {"batch_reward": "extrinsic_reward"}
PORTS["ddpg_finetune"] = dataclasses.replace(PORTS["ddpg"], metrics=FINETUNE_METRICS)
PORTS["aps_finetune"] = dataclasses.replace(
    PORTS["aps"],
    metrics=FINETUNE_METRICS,
    set_task=0,
)


def our_tensors(port: Port, reference: dict[str, torch.Tensor], skip=()) -> dict[str, torch.Tensor]:
    """The reference's state_dict entries under our names; every entry is mapped, combined
    or listed as unmapped with a reason (``skip``: further regexes to leave out)."""
    to_ours = rename(BACKBONE_RULES + port.rules)
    out = port.combine(reference) if port.combine else {}
    for name, value in reference.items():
        if port.combined and re.fullmatch(port.combined, name):
            continue
        if any(re.fullmatch(pattern, name) for pattern in (*port.unmapped, *skip)):
            continue
        ours = to_ours(name)
        if ours is None:
            raise KeyError(f"reference tensor {name} has no counterpart in our agent")
        out[ours] = value
    return out


def build(fixture: Fixture, weights: str = "init", **options) -> DDPGAgent:
    """Our agent at the fixture's sizes and hyperparameters, holding the reference's
    ``weights`` (``init``; a finetuning fixture's ``pretrained`` agent); ``options`` are
    extra reward-model arguments (a departure's config key)."""
    h, port = fixture.hyper, PORTS[fixture.name]
    reward_model = port.reward_model(h, fixture.manifest["reference_constants"])
    if options:
        reward_model = functools.partial(reward_model, **options)
    agent = DDPGAgent(
        obs_dim=h["obs_shape"][0],
        action_dim=h["action_shape"][0],
        hidden_dim=h["hidden_dim"],
        lr=h["lr"],
        batch_size=h["batch_size"],
        stddev=h["stddev_schedule"],
        stddev_clip=h["stddev_clip"],
        critic_target_tau=h["critic_target_tau"],
        init_critic=h["init_critic"],
        reward_model=reward_model,
    )
    weights = our_tensors(port, fixture.group(weights))
    ours = agent.state_dict()
    missing = sorted(name for name, _ in agent.named_parameters() if name not in weights)
    if missing:
        raise KeyError(f"our parameters with no reference tensor: {missing}")
    for name, value in weights.items():
        if ours[name].shape != value.shape:
            raise ValueError(f"{name}: ours {tuple(ours[name].shape)}, reference {tuple(value.shape)}")
    agent.load_state_dict(weights, strict=False)
    agent.set_task(port.set_task)
    return agent


# -- feeding our update ------------------------------------------------------------------------
class RecordedReplay:
    """``sample(batch_size)`` returns the recorded batch, in our replay's layout (discount
    ``(B,)``, reward as ``task_reward`` ``(B, 1)``, the meta as ``skill``)."""

    def __init__(self, batch: dict[str, torch.Tensor]):
        fields = dict(
            observation=batch["obs"],
            action=batch["action"],
            next_observation=batch["next_obs"],
            discount=batch["discount"][:, 0],
            task_reward=batch["reward"],
        )
        if "meta" in batch:
            fields["skill"] = batch["meta"]
        self.batch = TensorDict(fields, batch_size=[len(batch["obs"])])

    def sample(self, batch_size: int) -> TensorDict:
        if batch_size != self.batch.batch_size[0]:
            raise ValueError(f"the fixture's batch holds {self.batch.batch_size[0]}, asked for {batch_size}")
        return self.batch.clone()


class RecordedRandomness(Randomness):
    """Serves recorded draws, in order, to our agent's ``randomness`` hook, each checked for
    kind and shape; ``unused`` counts what the update did not ask for."""

    def __init__(self, draws: list[tuple[str, torch.Tensor]]):
        self.queue = list(draws)

    def serve(self, kind: str, shape) -> torch.Tensor:
        if not self.queue:
            raise AssertionError(
                f"our update drew more randomness ({kind} {tuple(shape)}) than the reference"
            )
        recorded_kind, value = self.queue.pop(0)
        if recorded_kind != kind or tuple(value.shape) != tuple(shape):
            raise AssertionError(
                f"our update drew {kind} {tuple(shape)} where the reference drew {recorded_kind} "
                f"{tuple(value.shape)}"
            )
        return value.clone()

    def normal(self, shape, like: torch.Tensor) -> torch.Tensor:
        return self.serve("normal", shape).to(like)

    def multinomial(self, probs: torch.Tensor, num_samples: int) -> torch.Tensor:
        return self.serve("multinomial", (*probs.shape[:-1], num_samples)).to(probs.device)

    def uniform(self, shape, like: torch.Tensor) -> torch.Tensor:
        return self.serve("uniform", shape).to(like)

    def permutation(self, size: int, device) -> torch.Tensor:
        return self.serve("permutation", (size,)).to(device=device, dtype=torch.long)

    def randint(self, high: int, shape, device) -> torch.Tensor:
        value = self.serve("randint", shape)
        if value.min() < 0 or value.max() >= high:
            raise AssertionError(f"a recorded randint draw lies outside [0, {high})")
        return value.to(device=device, dtype=torch.long)

    def finish(self) -> None:
        """Every recorded draw was used."""
        if self.queue:
            raise AssertionError(f"{len(self.queue)} recorded draws were not used by our update")


@contextlib.contextmanager
def fed_randomness(agent: DDPGAgent, draws: list[tuple[str, torch.Tensor]]):
    """Give ``agent`` (and its reward model, where it draws: SMM's VAE noise, ProtoRL's
    queue) the recorded ``draws`` through their ``randomness`` hook for the block; afterwards
    every draw must have been used and torch's global generator must be untouched (our
    update drew nothing behind the hook)."""
    source = RecordedRandomness(draws)
    holders = [agent] + [m for m in (agent.reward_model,) if m is not None and hasattr(m, "randomness")]
    rng = torch.get_rng_state()
    for holder in holders:
        holder.randomness = source
    try:
        yield
    finally:
        for holder in holders:
            del holder.randomness  # back to the class's torch generator
    source.finish()
    if not torch.equal(rng, torch.get_rng_state()):
        raise AssertionError("our update drew randomness the fixture does not feed")


# -- comparison -------------------------------------------------------------------------------
@dataclasses.dataclass
class Comparison:
    """Every (ours, reference) pair of one replay, checked together at the end."""

    pairs: list[tuple[str, torch.Tensor, torch.Tensor]] = dataclasses.field(default_factory=list)

    def add(self, label: str, ours: torch.Tensor, reference: torch.Tensor) -> None:
        ours = ours.detach().to(torch.float64, copy=True).reshape(reference.shape)
        self.pairs.append((label, ours, reference.to(torch.float64)))

    def failures(self) -> list[tuple[str, float]]:
        """Labels beyond ``rtol=1e-5, atol=1e-6`` and their max relative difference."""
        out = []
        for label, ours, reference in self.pairs:
            if not torch.allclose(ours, reference, rtol=RTOL, atol=ATOL):
                out.append((label, relative_difference(ours, reference)))
        return out

    def max_relative(self) -> float:
        return max(relative_difference(ours, reference) for _, ours, reference in self.pairs)

    def assert_close(self) -> None:
        failures = self.failures()
        if failures:
            worst = ", ".join(f"{label} ({diff:.2e})" for label, diff in failures[:8])
            raise AssertionError(
                f"{len(failures)} of {len(self.pairs)} quantities differ from the reference "
                f"(max relative difference {self.max_relative():.2e}); first: {worst}"
            )


def relative_difference(ours: torch.Tensor, reference: torch.Tensor) -> float:
    """max |ours - reference| / |reference| over entries with |reference| > 1e-4 (tinier
    ones are judged by the absolute tolerance), 0 if none."""
    big = reference.abs() > 1e-4
    if not big.any():
        return 0.0
    return float(((ours - reference).abs()[big] / reference.abs()[big]).max())


def replay(
    fixture: Fixture,
    agent: DDPGAgent | None = None,
    draws: Callable[[Fixture, int], list[tuple[str, torch.Tensor]]] | None = None,
) -> Comparison:
    """Run every recorded update through our agent and pair what it produced with what the
    reference recorded: metrics, the critic's reward, every weight, the reward's state."""
    port = PORTS[fixture.name]
    agent = build(fixture) if agent is None else agent
    comparison = Comparison()
    skip = tuple(port.not_transferred)
    if fixture.manifest.get("finetune"):  # URLB's init_from, then the task's updates
        agent.init_from(build(fixture, "pretrained"))
        ours = agent.state_dict()
        for name, value in our_tensors(port, fixture.group("transferred"), skip).items():
            comparison.add(f"transferred/{name}", ours[name], value)
    for index, update in enumerate(fixture.manifest["updates"]):
        rewards = []
        update_critic = agent.update_critic

        def spy(observation, action, reward, *args, _update_critic=update_critic, _rewards=rewards):
            _rewards.append(reward.detach().clone())
            return _update_critic(observation, action, reward, *args)

        agent.update_critic = spy  # an instance attribute: records the reward, changes nothing
        with fed_randomness(agent, draws(fixture, index) if draws else fixture.draws(index)):
            metrics = agent.update(RecordedReplay(fixture.group(f"batch{index}")), update["step"])
        del agent.update_critic
        prefix = f"update{index}"
        comparison.add(f"{prefix}/reward", rewards[0], fixture.group(prefix)["reward"])
        recorded = fixture.group(f"{prefix}/metric")
        for reference_name, our_name in port.metrics.items():
            comparison.add(f"{prefix}/metric/{reference_name}", metrics[our_name], recorded[reference_name])
        ours = agent.state_dict()
        for name, value in our_tensors(port, fixture.group(f"{prefix}/param"), skip).items():
            comparison.add(f"{prefix}/param/{name}", ours[name], value)
        state = fixture.group(f"{prefix}/state")
        for reference_name, our_name in port.state.items():
            comparison.add(f"{prefix}/state/{reference_name}", ours[our_name], state[reference_name])
    return comparison


def main() -> None:
    """Print each fixture's max relative difference at our defaults (docs/fidelity.md)."""
    torch.set_num_threads(1)
    for name in sorted(PORTS):
        fixture = Fixture.load(name)
        comparison = replay(fixture)
        print(
            f"{name}: {fixture.updates} updates, {len(comparison.pairs)} quantities, max relative "
            f"difference {comparison.max_relative():.1e}, beyond tolerance: {len(comparison.failures())}"
        )


if __name__ == "__main__":
    main()
