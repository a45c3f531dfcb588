"""PDT: a decision transformer pretrained without rewards, conditioned on embeddings of the future.

Xie et al., "Future-conditioned Unsupervised Pretraining for Decision Transformer", ICML 2023,
as their reference code (github.com/zhxieml/PDT, built on online-DT) runs it: its defaults are
the config's. A causal transformer reads (s, z, a) tokens and predicts a_t from the z_t token; a
future encoder embeds steps after the context into z; a prior p(z | s) is fitted to it:

    min  -log pi(a_t | s_<=t, z_<=t, a_<t) - alpha H[pi] + beta KL(q(z_t | future) || N(0, I))
         + KL(sg q(z_t | future) || p(z_t | s_t))    [finetuning: + -log f(R_t | s_t, z_t)]

Windows (the reference's ``data.py``): an update reads 2K consecutive steps of one episode,
the context ``t_0 .. t_{K-1}`` and the K steps after it. The future encoder is a causal
transformer over the (s, a) tokens of those K future steps; z at context position i is read
after future step i: ``z_{t_i} ~ q(. | (s, a)_{t_K .. t_K+i})``, never any step of the context.
No position embeddings (the reference's ``ordering=0``): order enters through the causal masks.

Acting: each world carries its last ``eval_context_length`` steps of normalised states, chosen
z and actions. z_t is a sample of p(z | s_t); when finetuning, once the return predictor is
warmed up, the best of ``num_future_samples`` prior samples by the predicted return (the
reference's ``sample_topk=1``). The policy never reads a future: q is used in updates only.

Finetuning (``init_from``): everything transfers (embeddings, both transformers, prior, policy
head, temperature, state normaliser, the learning-rate warmup's step count), as the reference
finetunes its whole pretrained model; the return predictor f(R | s, z), a Gaussian head on the
state and z embeddings, starts fresh. Its first ``return_warmup_updates`` updates train f alone
(Adam, lr 1e-3: the reference's 5 x 300), then the whole model trains on the loss above.

Settings (each a constructor argument; the reference's where it has one):
``return_target`` is what f predicts: ``horizon_mean`` (default, ours) the mean reward over the
K + 1 steps from t to the end of the future z_t encodes, or ``return_to_go`` (the reference's)
the rewards from t to the episode's end times ``return_scale`` (1e-3, its ``reward_scale``);
``finetune_sampling`` is ``uniform`` (default, ours: windows uniform over the replay) or
``return_weighted`` (the reference's ``sample_trajs(weighted_by="return")``: complete episodes
drawn with weight R - min R + 1e-6, a window uniform within); ``warmup_frames`` (0, ours: URLB's
uniform seed frames) makes the first frames of finetuning act with the pretrained policy and
skip updates: the reference's ``online_warmup_samples`` is ``warmup_frames=10000`` with
``protocol.seed_frames=0``. Either reference choice of the first two reads the replay's complete
episodes (:class:`EpisodeWindows`).

Departures from the reference: windows come whole from one episode (no left padding; by
causality position i still trains the policy on an (i+1)-step context); optimiser moments
start fresh at finetuning (snapshots hold state_dicts); standardised states are clipped at
+-10, and dimensions the dataset never varies are only centred; the embedding dropout is
``dropout`` (the reference's GPT-2 keeps its default 0.1 whatever ``--dropout``: the same at
the default). The reference's return warmup (1500 updates before any finetuning rollout) and
300 updates per collected episode are interleaved with collection here, at its ratio.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from tensordict import TensorDict
from torch import nn

from agents.base import Agent
from agents.parts.decision import (  # noqa: F401  (the losses are tested from here)
    EpisodeWindows,
    FutureEncoder,
    horizon_return,
    pdt_loss,
    returns_to_go,
    select_by_return,
    temperature_loss,
)
from agents.parts.nets import clipped_step, gaussian_log_prob_tanh, gaussian_nll, optimise
from agents.parts.transformer import (
    SEQUENCE_RANDOMNESS,
    GaussianHead,
    Lamb,
    SequenceRandomness,
    TokenTransformer,
    causal_mask,
)

LOG_STD_MIN, LOG_STD_MAX = -5.0, 2.0  # the policy's (online-DT's DiagGaussianActor)
ACTION_LIMIT = 1 - 1e-6  # data actions of +-1 have no atanh: the reference clamps them here
NORMALISED_LIMIT = 10.0  # standardised observations are clipped here
RETURN_TARGETS = ("horizon_mean", "return_to_go")
FINETUNE_SAMPLINGS = ("uniform", "return_weighted")


# -- the agent ------------------------------------------------------------------------------------
class PDTAgent(Agent):
    """PDT on URLB: pretrained offline from a dataset (``urlb.loop.offline``), finetuned online.

    Args:
        hidden_dim: token width of both transformers (512).
        batch_size: windows per update (256).
        context_length: K, steps of context in training; the future encoder reads as many (20).
        eval_context_length: steps of context when acting (5).
        z_dim, num_layers, num_heads, dropout: 16, 4, 4, 0.1.
        lr, weight_decay, warmup_updates, grad_clip: LAMB 1e-4 with decay 5e-4, linear warmup
            over 10000 updates, gradient norm clipped at 0.25.
        init_temperature, temperature_lr: alpha's start (0.1) and Adam rate (1e-4); its target
            entropy is -action_dim.
        kl_weight: beta (1).
        num_future_samples: prior samples z is chosen from when finetuning (256).
        return_lr, return_warmup_updates: the return predictor's warmup (Adam 1e-3, 1500).
        return_target, return_scale: what f predicts (``RETURN_TARGETS``; module docstring).
        finetune_sampling: how finetuning draws windows (``FINETUNE_SAMPLINGS``).
        warmup_frames: finetuning frames that act with the pretrained policy without updates (0).
        updates_per_frame: the finetuning update-to-data ratio (300 per 1000-step episode).
        offline_updates: the offline pretraining budget (50 x 1000 updates, the reference's
            README), which ``configs/pretrain.yaml``'s ``offline.updates`` reads.
    """

    pretrains_offline = True  # urlb.loop.offline: pretrain.py needs dataset=<path>
    # Where the update's random numbers come from (the parity tests feed the reference's).
    randomness: SequenceRandomness = SEQUENCE_RANDOMNESS

    def __init__(
        self,
        obs_dim: int,
        action_dim: int,
        hidden_dim: int = 512,
        batch_size: int = 256,
        context_length: int = 20,
        eval_context_length: int = 5,
        z_dim: int = 16,
        num_layers: int = 4,
        num_heads: int = 4,
        dropout: float = 0.1,
        lr: float = 1e-4,
        weight_decay: float = 5e-4,
        warmup_updates: int = 10000,
        grad_clip: float = 0.25,
        init_temperature: float = 0.1,
        temperature_lr: float = 1e-4,
        kl_weight: float = 1.0,
        num_future_samples: int = 256,
        return_lr: float = 1e-3,
        return_warmup_updates: int = 1500,
        return_target: str = "horizon_mean",
        return_scale: float = 1e-3,
        finetune_sampling: str = "uniform",
        warmup_frames: int = 0,
        updates_per_frame: float = 0.3,
        offline_updates: int = 50000,
    ):
        super().__init__(obs_dim, action_dim)
        if hidden_dim % num_heads or not 1 <= eval_context_length <= context_length:
            raise ValueError(
                f"hidden_dim={hidden_dim} must be a multiple of num_heads={num_heads}, and "
                f"eval_context_length={eval_context_length} within 1..context_length={context_length}"
            )
        if return_target not in RETURN_TARGETS or finetune_sampling not in FINETUNE_SAMPLINGS:
            raise ValueError(
                f"return_target={return_target!r} must be one of {RETURN_TARGETS}, finetune_sampling="
                f"{finetune_sampling!r} one of {FINETUNE_SAMPLINGS}"
            )
        self.batch_size, self.context_length = batch_size, context_length
        self.eval_context_length = eval_context_length
        self.z_dim, self.kl_weight, self.num_future_samples = z_dim, kl_weight, num_future_samples
        self.lr, self.warmup_updates, self.grad_clip = lr, warmup_updates, grad_clip
        self.return_warmup_updates = return_warmup_updates
        self.return_target, self.return_scale = return_target, return_scale
        self.finetune_sampling, self.warmup_frames = finetune_sampling, warmup_frames
        self.offline_updates = offline_updates
        self.episodes = EpisodeWindows()
        self.episodes_ended = torch.zeros((), dtype=torch.long)  # by observe(): when to read them again
        self.target_entropy = -float(action_dim)
        self.embed_state = nn.Linear(obs_dim, hidden_dim)
        self.embed_future = nn.Linear(z_dim, hidden_dim)
        self.embed_action = nn.Linear(action_dim, hidden_dim)
        self.transformer = TokenTransformer(hidden_dim, num_layers, num_heads, dropout)
        # the policy head, read at z tokens; its log std is soft-clamped in policy() alone
        self.actor = GaussianHead(hidden_dim, action_dim, log_std_bounds=None)
        self.future_encoder = FutureEncoder(
            obs_dim, action_dim, z_dim, hidden_dim, num_layers, num_heads, dropout
        )
        self.prior = GaussianHead(hidden_dim, z_dim)  # p(z | s) on relu(embed_state(s))
        self.return_head = GaussianHead(2 * hidden_dim, 1)  # f(R | s, z) on both embeddings
        self.log_temperature = nn.Parameter(torch.tensor(math.log(init_temperature)))
        self.register_buffer("obs_mean", torch.zeros(obs_dim))
        self.register_buffer("obs_std", torch.ones(obs_dim))
        self.register_buffer("model_updates", torch.zeros((), dtype=torch.long))
        self.register_buffer("finetune_updates", torch.zeros((), dtype=torch.long))
        self._model_updates = self._finetune_updates = 0  # host mirrors: schedules must not sync
        self.register_load_state_dict_post_hook(lambda module, keys: module._sync_counters())
        model = [p for name, p in self.named_parameters() if name != "log_temperature"]
        self.model_opt = Lamb(model, lr=lr, weight_decay=weight_decay)
        self.temperature_opt = torch.optim.Adam([self.log_temperature], lr=temperature_lr)
        self.return_opt = torch.optim.Adam(self.return_head.parameters(), lr=return_lr)

    def _sync_counters(self) -> None:
        self._model_updates, self._finetune_updates = int(self.model_updates), int(self.finetune_updates)

    def optimisers(self):
        return {"model": self.model_opt, "temperature": self.temperature_opt, "return": self.return_opt}

    @classmethod
    def sequence_window(cls, config) -> int:
        """Windows of 2K steps: the context and the future after it."""
        return 2 * int(cls.config_value(config, "context_length"))

    def prepare_offline(self, sampler) -> None:
        """Fit the state normaliser to the dataset: the reference's mean and std + 1e-6, except
        that a dimension the data never varies (std < 1e-3) is only centred, since dividing by
        ~0 would blow up every state off the data (a random jaco dataset's fixed target)."""
        observation = sampler.fields["observation"].float()
        std = observation.std(0, correction=0)
        self.obs_mean.copy_(observation.mean(0))
        self.obs_std.copy_(torch.where(std < 1e-3, torch.ones_like(std), std + 1e-6))

    # -- model pieces ---------------------------------------------------------------------------
    def normalise(self, observation: torch.Tensor) -> torch.Tensor:
        """Standardised by the dataset's statistics and clipped at +-10 (our addition, as
        VecNormalize clips): online states far off the data would otherwise drive the prior's
        and f's log stds to their clamps and the KL towards 1e7."""
        return ((observation - self.obs_mean) / self.obs_std).clamp(-NORMALISED_LIMIT, NORMALISED_LIMIT)

    def policy(self, state_embed, future_embed, action_embed, mask):
        """Pre-tanh ``(mean, log_std)`` ``(B, L, A)`` of a_t, read at each z_t token."""
        batch, steps = state_embed.shape[:2]
        tokens = torch.stack([state_embed, future_embed, action_embed], 2).flatten(1, 2)
        out = self.transformer(tokens, mask, self.randomness).view(batch, steps, 3, -1)[:, :, 1]
        mean, log_std = self.actor(out)
        return mean, LOG_STD_MIN + 0.5 * (LOG_STD_MAX - LOG_STD_MIN) * (torch.tanh(log_std) + 1)

    def predicted_return(self, state_embed, future_embed):
        return self.return_head(F.relu(torch.cat([state_embed, future_embed], -1)))

    def future_candidates(self, state_embed: torch.Tensor, count: int) -> torch.Tensor:
        """``(count, N, Z)`` samples of p(z | s) for ``(N, W)`` state embeddings."""
        mean, log_std = self.prior(F.relu(state_embed))
        return mean + log_std.exp() * self.randomness.normal((count, *mean.shape), mean)

    def choose_future(self, state_embed: torch.Tensor) -> torch.Tensor:
        """z ``(N, Z)`` to act on: the best prior sample by f once finetuning has warmed f up,
        else one prior sample."""
        if self.task_index is None or self._finetune_updates < self.return_warmup_updates:
            return self.future_candidates(state_embed, 1)[0]
        candidates = self.future_candidates(state_embed, self.num_future_samples)
        embed = state_embed.expand(self.num_future_samples, *state_embed.shape)
        predicted = self.predicted_return(embed, self.embed_future(candidates))[0].squeeze(-1)
        return select_by_return(candidates, predicted)

    # -- acting ---------------------------------------------------------------------------------
    def init_state(self, num_envs: int, device="cpu") -> TensorDict:
        """Each world's last ``eval_context_length`` steps (none yet: ``length`` 0)."""
        steps = self.eval_context_length
        values = {
            "observation": torch.zeros(num_envs, steps, self.obs_dim, device=device),
            "future": torch.zeros(num_envs, steps, self.z_dim, device=device),
            "action": torch.zeros(num_envs, steps, self.action_dim, device=device),
            "length": torch.zeros(num_envs, dtype=torch.long, device=device),
        }
        return TensorDict(values, batch_size=[num_envs], device=device)

    @torch.no_grad()
    def act(self, observation: torch.Tensor, state: TensorDict, explore: bool) -> torch.Tensor:
        """Append s_t and its chosen z_t to each world's context (in place) and act: a sample of
        the policy when exploring, tanh of its mean else (the reference's evaluation)."""
        self.train(False)
        observation = self.normalise(observation)
        state_embed = self.embed_state(observation)
        blank = torch.zeros(len(observation), self.action_dim, device=observation.device)
        for key, value in (
            ("observation", observation),
            ("future", self.choose_future(state_embed)),
            ("action", blank),
        ):
            state[key] = torch.cat([state[key][:, 1:], value[:, None]], 1)
        state["length"] = (state["length"] + 1).clamp(max=self.eval_context_length)
        mean, log_std = self.policy(
            self.embed_state(state["observation"]),
            self.embed_future(state["future"]),
            self.embed_action(state["action"]),
            self.context_mask(state["length"]),
        )
        mean, log_std = mean[:, -1], log_std[:, -1]
        raw = mean + log_std.exp() * self.randomness.normal(mean.shape, mean) if explore else mean
        action = torch.tanh(raw).clamp(-ACTION_LIMIT, ACTION_LIMIT)
        state["action"] = torch.cat([state["action"][:, :-1], action[:, None]], 1)
        return action

    def context_mask(self, length: torch.Tensor) -> torch.Tensor:
        """``(N, 3C, 3C)``: causal over the (s, z, a) tokens of each world's filled steps (the
        last ``length``); an empty slot attends only to itself, so its output stays finite."""
        steps = self.eval_context_length
        filled = torch.arange(steps, device=length.device) >= steps - length[:, None]
        filled = filled.repeat_interleave(3, dim=1)
        eye = torch.eye(3 * steps, dtype=torch.bool, device=length.device)
        return causal_mask(3 * steps, length.device) & (filled[:, None, :] | eye)

    def observe(self, state: TensorDict, step_output: TensorDict) -> TensorDict:
        """Worlds whose episode ended start with an empty context; ended episodes are counted
        (the reference's finetuning settings read the replay's episodes again after one)."""
        keep = ~step_output["done"]
        self.episodes_ended = self.episodes_ended.to(keep.device) + step_output["done"].sum()
        for key in ("observation", "future", "action"):
            state[key] = state[key] * keep[:, None, None]
        state["length"] = state["length"] * keep
        return state

    # -- learning -------------------------------------------------------------------------------
    def update(self, source, step: int) -> dict[str, torch.Tensor]:
        """One update on 2K-step windows: ``source.sample_windows`` of a dataset sampler while
        pretraining offline; while finetuning, windows of the replay (``source``) with their
        return targets, none in the first ``warmup_frames`` frames (``step``)."""
        self.train(True)
        if self.task_index is None:
            return self.update_model(source.sample_windows(self.batch_size, 2 * self.context_length))
        if step < self.warmup_frames:
            return {}
        batch, target = self.finetune_batch(source)
        if self._finetune_updates < self.return_warmup_updates:
            metrics = self.update_return_head(batch, target)
        else:
            metrics = self.update_model(batch, target)
        self._finetune_updates += 1
        self.finetune_updates += 1
        return metrics

    def finetune_batch(self, replay) -> tuple[TensorDict, torch.Tensor]:
        """Replay windows ``(B, 2K)`` and f's targets ``(B, K)`` (``return_target``), drawn as
        ``finetune_sampling`` says."""
        length, k = 2 * self.context_length, self.context_length
        if self.return_target == "horizon_mean" and self.finetune_sampling == "uniform":
            batch = replay.sample_sequences(self.batch_size)
        else:
            # one host read per update: has an episode ended since the episodes were read?
            self.episodes.refresh(replay, self.task_index, length, int(self.episodes_ended))
            batch = self.episodes.sample(self.batch_size, length, self.finetune_sampling == "return_weighted")
        if self.return_target == "return_to_go":
            return batch, batch["return_to_go"][:, :k] * self.return_scale
        return batch, horizon_return(batch["task_reward"][..., self.task_index], k)

    def encode(self, batch: TensorDict):
        """Normalised observations and clamped actions of a window batch, split at K, and
        posterior samples z ``(B, K, Z)`` with the posterior's ``(mean, log_std)``."""
        k = self.context_length
        observation = self.normalise(batch["observation"])
        action = batch["action"].clamp(-ACTION_LIMIT, ACTION_LIMIT)
        posterior = self.future_encoder(observation[:, k:], action[:, k:], self.randomness)
        z = posterior[0] + posterior[1].exp() * self.randomness.normal(posterior[0].shape, posterior[0])
        return observation[:, :k], action[:, :k], z, posterior

    def update_model(self, batch: TensorDict, target: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """One LAMB step on PDT's loss (with f's NLL of ``target`` ``(B, K)`` when finetuning)
        and one temperature step."""
        observation, action, z, posterior = self.encode(batch)
        state_embed, future_embed = self.embed_state(observation), self.embed_future(z)
        mask = causal_mask(3 * self.context_length, observation.device)
        mean, log_std = self.policy(state_embed, future_embed, self.embed_action(action), mask)
        log_prob = gaussian_log_prob_tanh(mean, log_std, torch.atanh(action))
        raw = mean + log_std.exp() * self.randomness.normal(mean.shape, mean)
        entropy = -gaussian_log_prob_tanh(mean, log_std, raw)
        return_nll = None
        if target is not None:
            r_mean, r_log_std = self.predicted_return(state_embed, future_embed)
            return_nll = gaussian_nll(target, r_mean.squeeze(-1), r_log_std.squeeze(-1))
        temperature = self.log_temperature.exp()
        prior = self.prior(F.relu(state_embed))
        loss, metrics = pdt_loss(
            log_prob, entropy, temperature.detach(), posterior, prior, self.kl_weight, return_nll
        )
        for group in self.model_opt.param_groups:  # linear warmup (the reference's LambdaLR)
            group["lr"] = self.lr * min((self._model_updates + 1) / self.warmup_updates, 1.0)
        metrics["grad_norm"] = clipped_step(self.model_opt, loss, self.grad_clip)
        self._model_updates += 1
        self.model_updates += 1
        optimise(
            self.temperature_opt, temperature_loss(self.log_temperature, entropy.mean(), self.target_entropy)
        )
        return metrics | {"temperature": temperature.detach()}

    def update_return_head(self, batch: TensorDict, target: torch.Tensor) -> dict[str, torch.Tensor]:
        """Finetuning's warmup: f alone learns ``target`` ``(B, K)`` from posterior z (the
        future encoder runs as in training, dropout included, as the reference's forward does)."""
        with torch.no_grad():
            observation, _, z, _ = self.encode(batch)
            state_embed, future_embed = self.embed_state(observation), self.embed_future(z)
        mean, log_std = self.predicted_return(state_embed, future_embed)
        loss = gaussian_nll(target, mean.squeeze(-1), log_std.squeeze(-1)).mean()
        optimise(self.return_opt, loss)
        return {"return_nll": loss.detach(), "return_target": target.mean()}

    # -- transfer -------------------------------------------------------------------------------
    def init_from(self, pretrained: PDTAgent) -> None:
        """Everything but the return predictor (fresh) and the finetuning counter (0)."""
        state = pretrained.state_dict()
        state |= {f"return_head.{k}": v for k, v in self.return_head.state_dict().items()}
        state["finetune_updates"] = torch.zeros_like(self.finetune_updates)
        self.load_state_dict(state)
