"""Record reference fixtures of the URLB family from its authors' code (issue 17).

For each agent this builds the reference agent (rll-research/url_benchmark for DDPG, ICM,
Disagreement, RND, ICM-APT, ProtoRL, SMM, APS and DIAYN; rll-research/cic for CIC) on state
observations at small sizes with a fixed seed, runs a few ``agent.update`` calls on fixed
random batches, and writes ``tests/reference/data/<agent>.npz`` (no pickles) and
``<agent>.json`` (the manifest: repository, commit, patch, command, sizes, the reference's
hyperparameters, and what each array is). ``tests/reference/test_urlb_parity.py`` replays
them against our agents.

Recorded per fixture (npz keys):

* ``init/<name>``: every state_dict entry of every network of the agent, under the
  reference's names (``<attribute>.<state_dict key>``, e.g. ``critic.Q1.0.weight``);
* ``batch<i>/<field>``: the batch of update ``i`` as the reference's replay yields it
  (``obs``, ``action``, ``reward`` (B, 1), ``discount`` (B, 1), ``next_obs``, and the
  skill/task meta where the agent has one);
* ``update<i>/draw<j>``: every random tensor the reference drew inside update ``i``, in
  order (TruncatedNormal noise, SMM's VAE noise, ProtoRL's queue candidates), with kind,
  shape and calling function in the manifest;
* ``update<i>/metric/<name>``: every metric the update returned;
* ``update<i>/reward``: the reward the critic was trained on (the intrinsic reward of the
  batch while pretraining; the batch's reward for plain DDPG);
* ``update<i>/param/<name>``: every state_dict entry after the update;
* ``update<i>/state/<name>``: non-module state the reward reads (running statistics,
  ProtoRL's queue).

Finetuning fixtures (``<agent>_finetune``) record URLB's transfer and extrinsic-reward
updates instead: a pretrained agent (``reward_free=True``) and a fresh finetuning agent
(``reward_free=False``) are built from the same seed, ``init/`` is the fresh agent,
``pretrained/`` the pretrained one, ``transferred/`` the fresh agent after
``init_from(pretrained)``, and the updates that follow train on the batch's reward.

Randomness is recorded by wrapping the reference's random calls for the duration of an
update; the recorder then checks that the global torch generator advanced by exactly the
recorded draws, so nothing random went unrecorded.

Run by hand, never by CI, from the repository root with the project's venv (it has what
the reference's agents import: torch 2.13.0, numpy, hydra-core/omegaconf, dm_env)::

    git clone https://github.com/rll-research/url_benchmark /work/ref/url_benchmark
    git -C /work/ref/url_benchmark checkout bb98f0c6d78b3c467fb5a9fa5bbba3b7c0250397
    git clone https://github.com/rll-research/cic /work/ref/cic
    git -C /work/ref/cic checkout b523c3884256346cb585bf06e52a7aadc127dcfc
    nice -n 10 python scripts/reference/record_urlb.py \
        --url-benchmark /work/ref/url_benchmark --cic /work/ref/cic [agent ...]

The checkouts stay outside the project; their code is imported, never copied. The patch
of a repository (``scripts/reference/<repo>.patch``, made with ``git diff`` in the
reference's work tree) is applied with ``git apply`` unless it is applied already.
url_benchmark's agents and ``utils.py`` run unmodified on Python 3.11, NumPy 2 and torch
2.13 (this script imports nothing else of it: not its envs, replay or loops), so it has no
patch; ``cic.patch`` fixes a NameError in CIC's metrics (``apt_reward`` for ``intr_reward``).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import importlib
import json
import platform
import sys
from pathlib import Path

import common
import numpy as np
import torch
from common import reference_caller
from torch import nn

AGENT_CODE = "/agent/"  # where the reference's own code lives (reference_caller)

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
OUT = ROOT / "tests" / "reference" / "data"


@dataclasses.dataclass(frozen=True)
class Reference:
    url: str
    commit: str
    patch: str | None  # file name under scripts/reference/, or None: runs unmodified


REFERENCES = {
    "url_benchmark": Reference(
        "https://github.com/rll-research/url_benchmark", "bb98f0c6d78b3c467fb5a9fa5bbba3b7c0250397", None
    ),
    "cic": Reference(
        "https://github.com/rll-research/cic", "b523c3884256346cb585bf06e52a7aadc127dcfc", "cic.patch"
    ),
}

# Small sizes: every update runs in milliseconds and all fixtures stay under 5 MB. The
# batch is larger than every kNN k (12, CIC's 16) so the neighbours are a choice.
OBS_DIM, ACTION_DIM, HIDDEN_DIM, BATCH_SIZE = 24, 6, 16, 32
SEED = 0
# lr 1e-3 rather than URLB's 1e-4: three to four Adam steps then move the weights by a few
# 1e-3, well clear of the tests' 1e-5 relative tolerance.
LR = 1e-3
NSTEP_DISCOUNT = 0.99**3  # URLB's replay: discount ** nstep (0 where the episode ended)

# The reference DDPGAgent's constructor arguments (states), shared by every agent.
BACKBONE = dict(
    reward_free=True,
    obs_type="states",
    obs_shape=(OBS_DIM,),
    action_shape=(ACTION_DIM,),
    device="cpu",
    lr=LR,
    feature_dim=50,
    hidden_dim=HIDDEN_DIM,
    critic_target_tau=0.01,
    num_expl_steps=0,
    update_every_steps=2,
    stddev_schedule=0.2,
    nstep=3,
    batch_size=BATCH_SIZE,
    stddev_clip=0.3,
    init_critic=True,
    use_tb=True,
    use_wandb=False,
)


@dataclasses.dataclass(frozen=True)
class Spec:
    """One reference agent: where it lives, its own constructor arguments (the yaml's,
    sizes shrunk), and the meta it reads from replay (``skill``: kind of prior)."""

    repo: str
    target: str  # module.Class in the reference
    kwargs: dict
    meta: str | None = None  # "onehot", "uniform" (CIC) or "unit" (APS's task)
    meta_dim: int = 0
    updates: int = 4
    finetune: bool = False  # URLB's init_from, then updates on the extrinsic reward


SPECS = {
    "ddpg": Spec("url_benchmark", "agent.ddpg.DDPGAgent", {}),
    "icm": Spec("url_benchmark", "agent.icm.ICMAgent", dict(icm_scale=1.0, update_encoder=True)),
    "diayn": Spec(
        "url_benchmark",
        "agent.diayn.DIAYNAgent",
        dict(update_skill_every_step=50, skill_dim=16, diayn_scale=1.0, update_encoder=True),
        meta="onehot",
        meta_dim=16,
    ),
    "cic": Spec(
        "cic",
        "agent.cic.CICAgent",
        dict(
            update_skill_every_step=50,
            skill_dim=16,
            scale=1.0,
            project_skill=True,
            rew_type="og",
            update_rep=True,
            temp=0.5,
        ),
        meta="uniform",
        meta_dim=16,
    ),
    "disagreement": Spec("url_benchmark", "agent.disagreement.DisagreementAgent", dict(update_encoder=True)),
    "rnd": Spec(
        "url_benchmark", "agent.rnd.RNDAgent", dict(rnd_rep_dim=16, update_encoder=True, rnd_scale=1.0)
    ),
    "icm_apt": Spec(
        "url_benchmark",
        "agent.icm_apt.ICMAPTAgent",
        dict(
            icm_scale=1.0,
            knn_rms=False,
            knn_k=12,
            knn_avg=True,
            knn_clip=0.0,
            update_encoder=True,
            icm_rep_dim=16,
        ),
    ),
    "proto": Spec(
        "url_benchmark",
        "agent.proto.ProtoAgent",
        dict(
            pred_dim=16,
            proj_dim=32,
            queue_size=64,
            num_protos=16,
            tau=0.1,
            encoder_target_tau=0.05,
            topk=3,
            update_encoder=True,
        ),
    ),
    # SMM's VAE (150 hidden, code 128) is fixed in the reference: three updates keep its
    # fixture near 2 MB.
    "smm": Spec(
        "url_benchmark",
        "agent.smm.SMMAgent",
        dict(
            z_dim=4,
            sp_lr=1e-3,
            vae_lr=1e-2,
            vae_beta=0.5,
            state_ent_coef=1.0,
            latent_ent_coef=1.0,
            latent_cond_ent_coef=1.0,
            update_encoder=True,
        ),
        meta="onehot",
        meta_dim=4,
        updates=3,
    ),
    "aps": Spec(
        "url_benchmark",
        "agent.aps.APSAgent",
        dict(
            update_task_every_step=5,
            sf_dim=10,
            knn_rms=True,
            knn_k=12,
            knn_avg=True,
            knn_clip=1e-4,
            num_init_steps=4096,
            lstsq_batch_size=4096,
            update_encoder=True,
        ),
        meta="unit",
        meta_dim=10,
    ),
}
# Finetuning: plain DDPG's transfer, and APS's (its successor-feature critic trains on the
# task reward with the batch's task vector). Three updates each keep the fixtures small.
SPECS["ddpg_finetune"] = dataclasses.replace(SPECS["ddpg"], updates=3, finetune=True)
SPECS["aps_finetune"] = dataclasses.replace(SPECS["aps"], updates=3, finetune=True)


# -- the reference checkout ---------------------------------------------------------------------
def prepare(root: Path, reference: Reference) -> None:
    """Check the checkout's commit and apply the repository's patch (once)."""
    common.prepare(root, reference.commit, HERE / reference.patch if reference.patch else None)


@contextlib.contextmanager
def imported_from(root: Path):
    """Import the reference's top-level ``agent`` and ``utils`` from ``root`` (both
    repositories use these names: forget the other's first)."""
    for name in [n for n in sys.modules if n in ("agent", "utils") or n.startswith("agent.")]:
        del sys.modules[name]
    sys.path.insert(0, str(root))
    try:
        yield
    finally:
        sys.path.remove(str(root))


# -- recording randomness -----------------------------------------------------------------------
@dataclasses.dataclass
class Draw:
    kind: str  # "standard_normal" (TruncatedNormal.sample), "randn", "multinomial"
    value: torch.Tensor
    caller: str
    redraw: object  # the same call on the global generator, to audit the RNG's advance


@contextlib.contextmanager
def recording(draws: list[Draw]):
    """Record every random tensor the reference draws: TruncatedNormal's noise (through
    ``utils._standard_normal``), ``torch.randn`` (SMM's VAE) and ``torch.multinomial``
    (``Categorical.sample``: ProtoRL's queue candidates)."""
    ref_utils = sys.modules["utils"]
    standard_normal, randn, multinomial = ref_utils._standard_normal, torch.randn, torch.multinomial

    def recorded_standard_normal(shape, dtype, device):
        value = standard_normal(shape, dtype=dtype, device=device)
        draws.append(
            Draw(
                "standard_normal",
                value.clone(),
                reference_caller(AGENT_CODE),
                lambda: standard_normal(shape, dtype, device),
            )
        )
        return value

    def recorded_randn(*args, **kwargs):
        value = randn(*args, **kwargs)
        draws.append(
            Draw("randn", value.clone(), reference_caller(AGENT_CODE), lambda: randn(*args, **kwargs))
        )
        return value

    def recorded_multinomial(probs, *args, **kwargs):
        frozen = probs.clone()
        value = multinomial(probs, *args, **kwargs)
        draws.append(
            Draw(
                "multinomial",
                value.clone(),
                reference_caller(AGENT_CODE),
                lambda: multinomial(frozen, *args, **kwargs),
            )
        )
        return value

    ref_utils._standard_normal = recorded_standard_normal
    torch.randn, torch.multinomial = recorded_randn, recorded_multinomial
    try:
        yield
    finally:
        ref_utils._standard_normal = standard_normal
        torch.randn, torch.multinomial = randn, multinomial


def audit_rng(before: torch.Tensor, draws: list[Draw]) -> None:
    """The global generator advanced by exactly the recorded draws: nothing random went
    unrecorded (redraw them from ``before`` and compare states)."""
    after = torch.get_rng_state()
    torch.set_rng_state(before)
    for draw in draws:
        draw.redraw()
    if not torch.equal(torch.get_rng_state(), after):
        raise RuntimeError("the reference drew random numbers that were not recorded")
    torch.set_rng_state(after)


# -- the reference agent's state ----------------------------------------------------------------
def parameters(agent) -> dict[str, torch.Tensor]:
    """Every state_dict entry of every network attribute of a reference agent (its agents
    are plain objects holding modules), as ``<attribute>.<key>``."""
    out = {}
    for attribute, module in sorted(vars(agent).items()):
        if isinstance(module, nn.Module):
            for key, value in module.state_dict().items():
                out[f"{attribute}.{key}"] = value.detach().clone()
    return out


def extra_state(agent) -> dict[str, torch.Tensor]:
    """Non-module state that the rewards read: running statistics (``utils.RMS``: M, S, n),
    ProtoRL's queue and its pointer, CIC's module-level RMS."""
    out = {}
    for attribute, value in sorted(vars(agent).items()):
        if attribute == "pbe":
            value = value.rms
        if type(value).__name__ == "RMS":
            name = "pbe.rms" if attribute == "pbe" else attribute
            out |= {f"{name}.M": value.M, f"{name}.S": value.S, f"{name}.n": torch.tensor(value.n)}
    if hasattr(agent, "queue"):
        out |= {"queue": agent.queue, "queue_ptr": torch.tensor(agent.queue_ptr)}
    cic = sys.modules.get("agent.cic")
    if cic is not None and hasattr(cic, "rms"):
        out |= {"rms.M": cic.rms.M, "rms.S": cic.rms.S, "rms.n": torch.tensor(cic.rms.n)}
    return {k: v.detach().clone() for k, v in out.items()}


def constants(agent) -> dict:
    """Values the reference fixes in code rather than taking as arguments."""
    out = {}
    if hasattr(agent, "disagreement"):
        out["n_models"] = len(agent.disagreement.ensemble)
    if hasattr(agent, "rnd"):
        out["clip_val"] = agent.rnd.clip_val
    if hasattr(agent, "smm"):
        out |= dict(vae_hidden=agent.smm.vae.enc[0].out_features, code_dim=agent.smm.vae.code_dim)
    cic = sys.modules.get("agent.cic")
    if cic is not None:
        out["apt_args"] = vars(cic.APTArgs())  # the kNN reward's settings, fixed in compute_apt_reward
    return out


# -- batches ------------------------------------------------------------------------------------
def make_batch(rng: np.random.Generator, spec: Spec) -> dict[str, np.ndarray]:
    """One replay batch as URLB's replay yields it (float32; reward, discount ``(B, 1)``)."""
    shape = (BATCH_SIZE, OBS_DIM)
    discount = np.full((BATCH_SIZE, 1), NSTEP_DISCOUNT)
    discount[rng.choice(BATCH_SIZE, 3, replace=False)] = 0.0  # a few transitions end their episode
    batch = dict(
        obs=rng.normal(size=shape),
        action=rng.uniform(-1.0, 1.0, (BATCH_SIZE, ACTION_DIM)),
        reward=rng.normal(size=(BATCH_SIZE, 1)),
        discount=discount,
        next_obs=rng.normal(size=shape),
    )
    if spec.meta == "onehot":
        batch["meta"] = np.eye(spec.meta_dim)[rng.integers(spec.meta_dim, size=BATCH_SIZE)]
    elif spec.meta == "uniform":
        batch["meta"] = rng.uniform(0.0, 1.0, (BATCH_SIZE, spec.meta_dim))
    elif spec.meta == "unit":
        task = rng.normal(size=(BATCH_SIZE, spec.meta_dim))
        batch["meta"] = task / np.linalg.norm(task, axis=1, keepdims=True)
    return {k: v.astype(np.float32) for k, v in batch.items()}


# -- recording ----------------------------------------------------------------------------------
def scalar(value) -> float:
    """A reference metric (a float, or a 0-dim tensor that may carry a graph) as a float."""
    return float(value.detach()) if isinstance(value, torch.Tensor) else float(value)


def record(name: str, spec: Spec, root: Path, command: str) -> None:
    reference = REFERENCES[spec.repo]
    prepare(root, reference)
    with imported_from(root):
        module_name, class_name = spec.target.rsplit(".", 1)
        agent_class = getattr(importlib.import_module(module_name), class_name)
        hyperparameters = dict(name=name, **BACKBONE, **spec.kwargs)
        torch.manual_seed(SEED)
        if spec.finetune:
            pretrained = agent_class(**hyperparameters)
            hyperparameters["reward_free"] = False
        agent = agent_class(**hyperparameters)
        fixed = constants(agent)
        rng = np.random.default_rng(SEED)
        arrays = {f"init/{k}": v for k, v in parameters(agent).items()}
        if spec.finetune:
            agent.init_from(pretrained)
            arrays |= {f"pretrained/{k}": v for k, v in parameters(pretrained).items()}
            arrays |= {f"transferred/{k}": v for k, v in parameters(agent).items()}
        updates = []
        for index in range(spec.updates):
            batch = make_batch(rng, spec)
            arrays |= {f"batch{index}/{k}": v for k, v in batch.items()}
            rewards = []
            update_critic = agent.update_critic

            def spy_critic(obs, action, reward, *args, _update_critic=update_critic, _rewards=rewards):
                _rewards.append(reward.detach().clone())
                return _update_critic(obs, action, reward, *args)

            agent.update_critic = spy_critic
            draws: list[Draw] = []
            before = torch.get_rng_state()
            step = index * BACKBONE["update_every_steps"]  # URLB updates on even steps only
            with recording(draws):
                metrics = agent.update(iter([tuple(batch.values())]), step)
            audit_rng(before, draws)
            del agent.update_critic
            (reward,) = rewards
            prefix = f"update{index}"
            arrays[f"{prefix}/reward"] = reward.reshape(-1)
            arrays |= {f"{prefix}/metric/{k}": np.float64(scalar(v)) for k, v in metrics.items()}
            arrays |= {f"{prefix}/param/{k}": v for k, v in parameters(agent).items()}
            arrays |= {f"{prefix}/state/{k}": v for k, v in extra_state(agent).items()}
            arrays |= {f"{prefix}/draw{j}": d.value for j, d in enumerate(draws)}
            updates.append(
                dict(
                    step=step,
                    metrics=sorted(metrics),
                    draws=[
                        dict(key=f"{prefix}/draw{j}", kind=d.kind, shape=list(d.value.shape), caller=d.caller)
                        for j, d in enumerate(draws)
                    ],
                )
            )
    arrays = {k: np.asarray(v.numpy() if isinstance(v, torch.Tensor) else v) for k, v in arrays.items()}
    OUT.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(OUT / f"{name}.npz", **arrays)
    patch = reference.patch
    manifest = dict(
        agent=name,
        repository=reference.url,
        commit=reference.commit,
        reference_class=spec.target,
        patch=f"scripts/reference/{patch}" if patch else None,
        patch_sha256=hashlib.sha256((HERE / patch).read_bytes()).hexdigest() if patch else None,
        command=command,
        generator="scripts/reference/record_urlb.py",
        seed=SEED,
        versions=dict(python=platform.python_version(), torch=torch.__version__, numpy=np.__version__),
        sizes=dict(
            obs_dim=OBS_DIM,
            action_dim=ACTION_DIM,
            hidden_dim=HIDDEN_DIM,
            batch_size=BATCH_SIZE,
            meta_dim=spec.meta_dim,
            updates=spec.updates,
        ),
        hyperparameters={k: list(v) if isinstance(v, tuple) else v for k, v in hyperparameters.items()},
        reference_constants=fixed,
        batch_fields=list(make_batch(np.random.default_rng(0), spec)),
        meta=spec.meta,
        finetune=spec.finetune,
        parameters=sorted(k.removeprefix("init/") for k in arrays if k.startswith("init/")),
        state=sorted(k.removeprefix("update0/state/") for k in arrays if k.startswith("update0/state/")),
        updates=updates,
    )
    (OUT / f"{name}.json").write_text(json.dumps(manifest, indent=2) + "\n")
    size = (OUT / f"{name}.npz").stat().st_size
    print(f"{name}: {spec.updates} updates, {len(manifest['parameters'])} tensors, {size / 1e3:.0f} kB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--url-benchmark", type=Path, required=True, help="checkout of rll-research/url_benchmark"
    )
    parser.add_argument("--cic", type=Path, help="checkout of rll-research/cic (for the cic fixture)")
    parser.add_argument("agents", nargs="*", default=list(SPECS), help=f"default: all of {list(SPECS)}")
    args = parser.parse_args()
    roots = {"url_benchmark": args.url_benchmark, "cic": args.cic}
    torch.set_num_threads(1)
    command = (
        "python scripts/reference/record_urlb.py --url-benchmark <checkout> --cic <checkout> "
        + " ".join(args.agents)
    )
    for name in args.agents:
        spec = SPECS[name]
        if roots[spec.repo] is None:
            raise SystemExit(f"{name} needs --{spec.repo.replace('_', '-')}")
        record(name, spec, roots[spec.repo].resolve(), command)
    total = sum(p.stat().st_size for p in OUT.glob("*.npz"))
    print(f"all fixtures: {total / 1e6:.2f} MB")
    if total > 5e6:
        raise SystemExit("fixtures exceed 5 MB together: shrink sizes or updates")


if __name__ == "__main__":
    main()
