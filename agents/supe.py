"""SUPE: skills from unlabeled prior data, and the same data relabelled for online exploration.

Wilcoxson, Li, Frans & Levine, "Leveraging Skills from Unlabeled Prior Data for Efficient Online
Exploration", 2024, as their reference code (github.com/rail-berkeley/supe: ``run_opal.py``,
``train_finetuning_supe.py``, ``configs/``) runs it; its defaults are the config's.

Offline, a VAE over H-step segments of the reward-free dataset (OPAL, Ajay et al. 2021) learns a
latent skill space: an encoder q(z | s_0:H, a_0:H), a state prior p(z | s_0) and a low-level
policy pi(a | s, z) that decodes a skill into actions:

    max  E_q[ sum_t log pi(a_t | s_t, z) ] - beta KL(q(z | s_0:H, a_0:H) || p(z | s_0))

Online, a high-level SAC (``agents/sac.py``, composed) picks u = tanh(z) every H env steps and the
frozen low-level policy runs it. Its critic trains on H-step transitions (s_t, u, R, s_t+H) with
R = sum_k g^k r_t+k and discount g per transition; each minibatch is half online segments, half
prior segments relabelled: u = tanh(mean q(z | segment)) and the optimistic reward

    r_prior = r_hat(s, u) + c * RND(s, u)      (online segments: r = R + c * RND(s, u))

where r_hat regresses the online R and RND (``agents/rnd.py``) is trained on online (s, u).
The high-level SAC is RLPD's (Ball et al. 2023), as the reference's SACLearner with its
``rlpd_config`` and README flags: 10 Q networks with LayerNorm, the target's min over 2 of them
drawn per minibatch, no entropy term in the target (``backup_entropy=False``), the actor on the
heads' mean; ``utd_ratio`` critic minibatches, then one actor and one temperature step, once
per env step. RND and r_hat train once per high-level step (``model_update_schedule=segment``,
the reference's): RND on the latest high-level transitions (s, u) of the worlds that drew a
skill, r_hat on the online halves of that update's ``utd_ratio`` minibatches (the reference:
its last update's online batch, cut into as many). Evaluation samples the low-level policy and
clips (``eval_action=sample``, the reference's ``MetaPolicyActionWrapper``); the high level acts
on its mean.

Offline budget: ``offline_updates`` (1,000,000: the reference restores its OPAL checkpoint at
step 1,000,000), which ``configs/pretrain.yaml``'s ``offline.updates`` reads; the debug preset
overrides it, and a CPU run passes ``offline.updates=<n> offline.snapshot_updates=[<n>]``.

Finetuning (``init_from``): the VAE (encoder, prior, low-level policy) transfers and stays frozen,
as in the paper; the high-level SAC, the reward model and RND start fresh; the prior data is the
dataset the snapshot was pretrained on (``agent.dataset``, kept in its config).

Departures from the reference: ``network_layout=urlb`` gives the high-level SAC urlb's actor
(two hidden layers, soft-clamped log std) and orthogonal weights, torch's LayerNorm epsilon and
URLB's RND (two hidden layers, running input statistics); the default ``rlpd`` is the
reference's (the bonus is the raw error times c in both). The target's min over 2 heads is
the README's Kitchen setting (its AntMaze runs use 1, with ``min`` relabelling, which urlb does
not have); r_hat and RND train from the first update (the
reference: after 5000 and 10000 env steps). ``model_update_schedule=update`` (ours before
issue 19) trains r_hat on every critic minibatch's online half (after the minibatches, where it
stepped between them before) and RND on one online half-batch per update; ``eval_action=mean``
evaluates on the low-level mean.
URLB's tasks never terminate, so the dataset's own flags stand in for the learned mask. Online
segments are read from replay windows of 2H - 1 steps, each holding one whole segment; the first
and last segment of an episode are drawn 1/H as often as the others. Segments whose skill the
high-level policy did not choose (the runner's uniform seed frames) are labelled by the encoder,
like prior data. The runner's seed frames act uniformly at random (URLB's protocol) where the
reference runs skills drawn from the state prior for its first 5000 steps. Before finetuning,
skills are drawn from the state prior (zero-shot evaluation): pretraining is reward-free, so the
reference's offline IQL policy, trained on the dataset's rewards for its evaluations only, is
left out.
"""

from __future__ import annotations

import torch
from tensordict import TensorDict

from agents.base import Agent
from agents.parts.nets import (
    TORCH_RANDOMNESS,
    Randomness,
    mlp,
    optimise,
    orthogonal_init,
    xavier_uniform_init,
)
from agents.parts.skill_vae import (  # noqa: F401  (the losses are tested from here)
    SKILL_LIMIT,
    SkillVAE,
    gaussian_log_prob,
    high_level_transitions,
    optimistic_reward,
    segment_offset,
    segment_return,
    vae_loss,
)
from agents.rnd import RND
from agents.sac import SACAgent
from urlb.data.datasets import DatasetSampler

MODEL_UPDATE_SCHEDULES = ("segment", "update")
EVAL_ACTIONS = ("sample", "mean")


# -- the agent ------------------------------------------------------------------------------------
class SUPEAgent(Agent):
    """SUPE on URLB: skills pretrained offline from a dataset (``urlb.loop.offline``), a high-level
    policy finetuned online with the relabelled dataset.

    Args:
        hidden_dim: width of every network (256).
        batch_size: segments per VAE update and per high-level minibatch (256).
        horizon: H, env steps per skill (4).
        skill_dim: size of z (8).
        kl_weight: beta (0.1).
        lr: Adam rate of the VAE, the SAC, the reward model and RND (3e-4).
        discount: g, within a segment and per high-level transition (0.99).
        offline_ratio: share of prior segments in a high-level minibatch (0.5).
        utd_ratio: critic minibatches per update (20).
        rnd_coefficient: c, the bonus's weight (8).
        init_temperature, target_entropy_scale, critic_target_tau: the high-level SAC's (1.0,
            0.5: target entropy -skill_dim / 2, 0.005).
        num_critics, critic_subsample, backup_entropy: its RLPD critic (10 Q networks, the
            target's min over 2 drawn per minibatch, no entropy in the target; ``agents/sac.py``).
        network_layout: ``rlpd`` (the reference's, RLPD's networks: the high-level actor's
            three hidden layers and hard log-std clip, the critic's Xavier weights and Flax's
            LayerNorm epsilon, r_hat and RND with Xavier weights, RND of three hidden layers
            on raw (s, u)) or ``urlb`` (urlb's SAC actor, orthogonal weights, torch's epsilon,
            URLB's two-layer RND on running input statistics).
        model_update_schedule: when RND and r_hat train (``MODEL_UPDATE_SCHEDULES``: ``segment``,
            the reference's, once per high-level step; ``update``, every update).
        eval_action: the low-level action when evaluating (``EVAL_ACTIONS``: ``sample``, the
            reference's, clipped to [-1, 1]; ``mean``).
        updates_per_frame: finetuning updates per env step (1).
        offline_updates: the offline pretraining budget (1,000,000, the reference's OPAL
            checkpoint), read by ``configs/pretrain.yaml``'s ``offline.updates``.
        dataset: the prior data's path; pretraining fills it from ``dataset=``, finetuning reads
            the snapshot's unless given.
    """

    pretrains_offline = True  # urlb.loop.offline: pretrain.py needs dataset=<path>
    # Where the VAE's posterior noise comes from (the parity tests feed the reference's).
    randomness: Randomness = TORCH_RANDOMNESS

    def __init__(
        self,
        obs_dim: int,
        action_dim: int,
        hidden_dim: int = 256,
        batch_size: int = 256,
        horizon: int = 4,
        skill_dim: int = 8,
        kl_weight: float = 0.1,
        lr: float = 3e-4,
        discount: float = 0.99,
        offline_ratio: float = 0.5,
        utd_ratio: int = 20,
        rnd_coefficient: float = 8.0,
        init_temperature: float = 1.0,
        target_entropy_scale: float = 0.5,
        critic_target_tau: float = 0.005,
        num_critics: int = 10,
        critic_subsample: int | None = 2,
        backup_entropy: bool = False,
        network_layout: str = "rlpd",
        model_update_schedule: str = "segment",
        eval_action: str = "sample",
        updates_per_frame: float = 1.0,
        offline_updates: int = 1_000_000,
        dataset: str | None = None,
    ):
        super().__init__(obs_dim, action_dim)
        if horizon < 1 or utd_ratio < 1 or not 0 <= offline_ratio < 1:
            raise ValueError(
                f"horizon={horizon} and utd_ratio={utd_ratio} must be >= 1 and offline_ratio="
                f"{offline_ratio} in [0, 1)"
            )
        self.batch_size, self.horizon, self.latent_dim = batch_size, horizon, skill_dim
        self.kl_weight, self.discount, self.offline_ratio = kl_weight, discount, offline_ratio
        if network_layout not in ("rlpd", "urlb"):
            raise ValueError(f"network_layout must be 'rlpd' or 'urlb', got {network_layout!r}")
        rlpd = network_layout == "rlpd"
        if model_update_schedule not in MODEL_UPDATE_SCHEDULES or eval_action not in EVAL_ACTIONS:
            raise ValueError(
                f"model_update_schedule={model_update_schedule!r} must be one of {MODEL_UPDATE_SCHEDULES}, "
                f"eval_action={eval_action!r} one of {EVAL_ACTIONS}"
            )
        self.utd_ratio, self.rnd_coefficient = utd_ratio, rnd_coefficient
        self.model_update_schedule, self.eval_action = model_update_schedule, eval_action
        self.offline_updates, self.dataset = offline_updates, dataset
        self.new_segments: list[torch.Tensor] = []  # (s, u, drawn) rows of act() since the last update
        self.prior: DatasetSampler | None = None  # the prior data, loaded when finetuning needs it
        self.skills = SkillVAE(obs_dim, action_dim, skill_dim, horizon, hidden_dim)
        self.high = SACAgent(
            obs_dim,
            skill_dim,
            hidden_dim=hidden_dim,
            lr=lr,
            batch_size=batch_size,
            critic_target_tau=critic_target_tau,
            init_temperature=init_temperature,
            target_entropy_scale=target_entropy_scale,
            num_critics=num_critics,
            critic_subsample=critic_subsample,
            backup_entropy=backup_entropy,
            critic_loss_weight=1.0 / num_critics,  # RLPD averages the heads' errors
            actor_layout="rlpd" if rlpd else "pytorch_sac",
            critic_layout=network_layout,
        )
        self.reward_predictor = mlp(obs_dim + skill_dim, hidden_dim, 1, depth=3)  # r_hat(s, u)
        self.reward_predictor.apply(xavier_uniform_init if rlpd else orthogonal_init)
        # urlb: running input statistics, as an RND that steps on the few transitions of one
        # high-level step has no batch statistics.
        self.rnd = RND(
            obs_dim + skill_dim,
            skill_dim,
            hidden_dim=hidden_dim,
            lr=lr,
            rep_dim=hidden_dim,
            obs_normalisation="none" if rlpd else "running",
            layout=network_layout,
        )
        self.skills_opt = torch.optim.Adam(self.skills.parameters(), lr=lr)
        self.reward_opt = torch.optim.Adam(self.reward_predictor.parameters(), lr=lr)

    actor = property(lambda self: self.high.actor, doc="The high-level policy pi(u | s).")

    def training_state(self) -> dict:
        """As :meth:`Agent.training_state`, with the (s, u) of skills drawn since the last
        update, which the next update's RND step reads: a resume continues exactly."""
        return super().training_state() | {"new_segments": list(self.new_segments)}

    def load_training_state(self, state: dict) -> None:
        super().load_training_state(state)
        self.new_segments = list(state.get("new_segments", []))

    def optimisers(self):
        high = {f"high.{name}": opt for name, opt in self.high.optimisers().items()}
        rnd = {f"rnd.{name}": opt for name, opt in self.rnd.optimisers().items()}
        return {"skills": self.skills_opt, "reward": self.reward_opt, **high, **rnd}

    @classmethod
    def sequence_window(cls, config) -> int:
        """Windows of 2H - 1 steps: each holds one whole segment, wherever it starts."""
        return 2 * int(cls.config_value(config, "horizon")) - 1

    def prepare_offline(self, sampler) -> None:
        """Keep the dataset: a finetuning agent built in this process (tests) mixes it in."""
        self.prior = sampler

    # -- acting ---------------------------------------------------------------------------------
    def init_state(self, num_envs: int, device="cpu") -> TensorDict:
        """Per world: the skill u being run, the index of the next step within its segment
        (0: draw a skill) and whether the high-level policy chose u (False in seed frames)."""
        values = {
            "skill": torch.zeros(num_envs, self.latent_dim, device=device),
            "segment_step": torch.zeros(num_envs, dtype=torch.long, device=device),
            "chosen": torch.zeros(num_envs, dtype=torch.bool, device=device),
        }
        return TensorDict(values, batch_size=[num_envs], device=device)

    def replay_extras(self, state: TensorDict) -> dict[str, torch.Tensor]:
        return {key: state[key] for key in ("skill", "segment_step", "chosen")}

    def choose_skill(self, observation: torch.Tensor, explore: bool) -> torch.Tensor:
        """u ``(N, Z)``: the high-level SAC's when finetuning, else the state prior's."""
        if self.task_index is None:
            mean, log_std = self.skills.prior(observation)
            skill = torch.tanh(mean + log_std.exp() * torch.randn_like(mean) if explore else mean)
        else:
            skill = self.actor.sample(observation)[0] if explore else torch.tanh(self.actor(observation)[0])
        return skill.clamp(-SKILL_LIMIT, SKILL_LIMIT)

    @torch.no_grad()
    def act(self, observation: torch.Tensor, state: TensorDict, explore: bool) -> torch.Tensor:
        """Draw u where a segment starts (in place), then act with pi(a | s, atanh(u)): a sample
        when exploring, the mean else, clipped to [-1, 1] (the reference's low-level actions)."""
        start = state["segment_step"] == 0
        state["skill"] = torch.where(start[:, None], self.choose_skill(observation, explore), state["skill"])
        state["chosen"] = state["chosen"] | start
        if explore and self.task_index is not None:  # the (s, u) of new high-level transitions
            self.new_segments.append(torch.cat([observation, state["skill"], start[:, None]], -1))
        action, log_std = self.skills.decode(observation, torch.atanh(state["skill"]))  # pi's mean
        if explore or self.eval_action == "sample":
            action = action + log_std.exp() * torch.randn_like(action)
        return action.clamp(-1, 1)

    def observe(self, state: TensorDict, step_output: TensorDict) -> TensorDict:
        """Advance each world's segment; a new one starts every H steps and where an episode ended."""
        segment_step = (state["segment_step"] + 1) % self.horizon
        state["segment_step"] = torch.where(step_output["done"], 0, segment_step)
        state["chosen"] = state["chosen"] & (state["segment_step"] != 0)
        return state

    # -- learning -------------------------------------------------------------------------------
    def update(self, source, step: int) -> dict[str, torch.Tensor]:
        """Offline (no task): one VAE step on H-step windows of the dataset sampler. Finetuning:
        ``utd_ratio`` critic minibatches from the replay and the prior data, then the actor."""
        if self.task_index is None:
            return self.update_skills(source.sample_windows(self.batch_size, self.horizon))
        prior, onlines = self.prior_data(), []
        for _ in range(self.utd_ratio):
            batch, online, metrics = self.mixed_batch(source, prior)
            metrics |= self.high.update_critic(
                batch["observation"],
                batch["skill"],
                batch["reward"],
                batch["discount"],
                batch["next_observation"],
            )
            onlines.append(online)
        metrics |= self.high.update_actor(batch["observation"], step)  # RLPD: on the last minibatch
        return metrics | self.update_models(onlines)

    def update_models(self, onlines: list[TensorDict]) -> dict[str, torch.Tensor]:
        """r_hat on the online halves ``onlines``, one step each, and one RND step, as
        ``model_update_schedule`` says: every update (RND on the last online half), or only
        after a skill was drawn (RND on the (s, u) of the worlds that drew one)."""
        if self.model_update_schedule == "update":
            inputs = torch.cat([onlines[-1]["observation"], onlines[-1]["skill"]], -1)
        else:
            drawn = torch.cat(self.new_segments) if self.new_segments else None
            self.new_segments = []
            if drawn is None:
                return {}
            inputs = drawn[drawn[:, -1] > 0, :-1]  # one host sync per update
            if len(inputs) == 0:
                return {}
        metrics = {}
        for online in onlines:
            metrics = self.update_reward_predictor(online)
        rnd = self.rnd.update(TensorDict({"observation": inputs}, batch_size=inputs.shape[:1]))
        return metrics | {"rnd_loss": rnd["rnd_loss"]}

    def update_skills(self, windows: TensorDict) -> dict[str, torch.Tensor]:
        observation, action = windows["observation"], windows["action"]
        posterior = self.skills.posterior(observation, action)
        skill = posterior[0] + posterior[1].exp() * self.randomness.normal(posterior[0].shape, posterior[0])
        mean, log_std = self.skills.decode(observation, skill[:, None].expand(-1, self.horizon, -1))
        prior = self.skills.prior(observation[:, 0])
        loss, metrics = vae_loss(gaussian_log_prob(action, mean, log_std), posterior, prior, self.kl_weight)
        optimise(self.skills_opt, loss)
        return metrics | {"prior_std": prior[1].exp().mean().detach()}

    def mixed_batch(self, replay, prior: DatasetSampler):
        """One high-level minibatch ``(B,)``: online segments first, then ``offline_ratio`` of
        relabelled prior ones, rewards made optimistic; also the online part and metrics."""
        offline_size = round(self.batch_size * self.offline_ratio)
        online = self.label_online(replay.sample_sequences(self.batch_size - offline_size))
        metrics = {"online_return": online["reward"].mean()}
        batch = online.clone()  # the online part keeps its true R for the reward model
        if offline_size:
            offline = self.label_prior(prior.sample_windows(offline_size, self.horizon))
            metrics["prior_reward"] = offline["reward"].mean()
            batch = torch.cat([online, offline])
        with torch.no_grad():
            bonus = self.rnd.prediction_error(torch.cat([batch["observation"], batch["skill"]], -1))
        batch["reward"] = optimistic_reward(batch["reward"], bonus, self.rnd_coefficient)
        return batch, online, metrics | {"bonus": bonus.mean()}

    @torch.no_grad()
    def label_online(self, windows: TensorDict) -> TensorDict:
        """High-level transitions from ``(B, 2H - 1)`` replay windows: the segment starting at
        the first skill draw in each, its chosen u (the encoder's label where none was chosen)
        and its true reward R."""
        offset = segment_offset(windows["segment_step"][:, 0], self.horizon)
        steps = offset[:, None] + torch.arange(self.horizon, device=offset.device)  # (B, H)
        rows = torch.arange(len(steps), device=steps.device)[:, None]
        segment = TensorDict({k: v[rows, steps] for k, v in windows.items()}, batch_size=steps.shape)
        skill = self.skills.label(segment["observation"], segment["action"])
        skill = torch.where(segment["chosen"][:, :1], segment["skill"][:, 0], skill)
        reward = segment_return(segment["task_reward"][..., self.task_index], self.discount)
        return high_level_transitions(segment, skill, reward, self.discount)

    @torch.no_grad()
    def label_prior(self, windows: TensorDict) -> TensorDict:
        """High-level transitions from ``(B, H)`` dataset windows: the encoder's u and r_hat(s, u)."""
        skill = self.skills.label(windows["observation"], windows["action"])
        reward = self.predict_reward(windows["observation"][:, 0], skill)
        return high_level_transitions(windows, skill, reward, self.discount)

    def predict_reward(self, observation: torch.Tensor, skill: torch.Tensor) -> torch.Tensor:
        return self.reward_predictor(torch.cat([observation, skill], -1)).squeeze(-1)  # r_hat(s, u)

    def update_reward_predictor(self, online: TensorDict) -> dict[str, torch.Tensor]:
        """r_hat regresses the online segments' true R (no bonus), as the reference's RM."""
        predicted = self.predict_reward(online["observation"], online["skill"])
        loss = (predicted - online["reward"]).square().mean()
        optimise(self.reward_opt, loss)
        return {"reward_model_loss": loss.detach()}

    def prior_data(self) -> DatasetSampler:
        """The prior data: the sampler kept by ``prepare_offline`` or ``init_from``, else loaded
        from ``dataset`` onto this agent's device (first finetuning update)."""
        if self.prior is None:
            if self.dataset is None:
                raise ValueError(
                    "SUPE finetunes with its prior data: finetune a pretrained snapshot (snapshot=<updates>) "
                    "or pass agent.dataset=<path>"
                )
            self.prior = DatasetSampler.load(self.dataset, next(self.parameters()).device)
            width = self.prior.fields["observation"].shape[1]
            if width != self.obs_dim:
                raise ValueError(
                    f"dataset {self.dataset} has {width}-dim observations, the env {self.obs_dim}; "
                    "pass the dataset of this domain (agent.dataset=<path>)"
                )
        return self.prior

    # -- transfer -------------------------------------------------------------------------------
    def init_from(self, pretrained: SUPEAgent) -> None:
        """The skill VAE (encoder, state prior, low-level policy), frozen from now on, and the
        prior data (its sampler, or the path it was pretrained from); the high-level SAC, the
        reward model and RND start fresh, as the paper learns them online."""
        self.skills.load_state_dict(pretrained.skills.state_dict())
        self.skills.requires_grad_(False)
        self.dataset = self.dataset or pretrained.dataset
        self.prior = pretrained.prior
