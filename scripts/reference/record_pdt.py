"""Record the PDT reference fixture from its authors' code (issue 19).

Builds the reference's ``DecisionTransformer`` (zhxieml/PDT, ``src/models``) as its ``main.py``
does, at small sizes with a fixed seed, and runs its own trainer (``src/trainer.py``) and LAMB
(``src/lamb.py``) on fixed random windows:

* 3 pretraining updates (``train_step_stochastic`` with ``pretrain_loss_fn``: the future
  encoder's, the prior's and the policy's losses, one LAMB step and one temperature step each);
* 2 return-predictor warmup steps (``return_warmup_step_stochastic``, its own Adam);
* 2 finetuning updates (``finetune_loss_fn``: the return predictor's loss joins).

It also runs the reference's ``Lamb`` alone for 3 steps on fixed tensors and gradients with a
large weight decay and one tensor of norm above 10, where bias correction and a weight-norm
clip would show. Writes ``tests/reference/data/pdt/pdt.npz`` (no pickles) and ``pdt.json`` (the
manifest); ``tests/reference/test_pdt_parity.py`` replays them.

Recorded per update ``update<i>`` (npz keys): ``batch/<field>`` (the reference's trajectory
tensors), ``draw<j>`` (every random tensor drawn inside the update, in order: dropout masks as
booleans, normal draws), ``metric/<name>`` and ``param/<name>`` (every state_dict entry after
the update, under the reference's names); ``init/<name>`` the weights before the first update.
Randomness is recorded by wrapping the reference's ``nn.Dropout`` modules (the mask is drawn
from the same generator state the dropout itself then uses) and ``torch.randn_like`` and the
normal distributions' ``_standard_normal``; the recorder checks that the global generator
advanced by exactly the recorded draws.

Run by hand, never by CI, from the repository root. The reference needs ``transformers==4.5.1``
(its GPT-2 is a modified copy of that version's), which the project's venv does not have: a
venv beside it that sees the project's torch is enough::

    git clone https://github.com/zhxieml/PDT /work/ref/PDT
    git -C /work/ref/PDT checkout 292f38bb73e7fa32083d63f60a20951793d43957
    python3.11 -m venv /work/ref/pdtvenv
    echo "$PWD/.venv/lib/python3.11/site-packages" > /work/ref/pdtvenv/lib/python3.11/site-packages/main.pth
    /work/ref/pdtvenv/bin/pip install --no-deps transformers==4.5.1
    /work/ref/pdtvenv/bin/pip install filelock requests tqdm packaging regex sacremoses
    nice -n 10 /work/ref/pdtvenv/bin/python scripts/reference/record_pdt.py --pdt /work/ref/PDT

The reference's model, trainer and optimiser run unmodified on Python 3.11, torch 2.13 and
transformers 4.5.1 (nothing else of it is imported: not ``main.py``, d4rl or gym), so there is
no patch.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import sys
from pathlib import Path

import numpy as np
import torch
from common import prepare
from torch import nn

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
OUT = ROOT / "tests" / "reference" / "data" / "pdt"
REPOSITORY = "https://github.com/zhxieml/PDT"
COMMIT = "292f38bb73e7fa32083d63f60a20951793d43957"

# Small sizes; the reference's z is 16 wide whatever its flags. Dropout 0.1 is its default and
# the only value at which its embedding dropout (GPT-2's default embd_pdrop) equals ours.
STATE_DIM, ACT_DIM, HIDDEN, LAYERS, HEADS, K, BATCH, Z_DIM = 5, 3, 8, 2, 2, 4, 6, 16
DROPOUT, SEED = 0.1, 0
# lr 1e-3 with a 1-update warmup (the reference's 1e-4 over 10000 updates would move the
# weights by 1e-8 in these few steps, below the tests' tolerance); decay 5e-4 is its default.
LR, WARMUP, WEIGHT_DECAY = 1e-3, 1, 5e-4
ACTION_RANGE = (-1 + 1e-6, 1 - 1e-6)  # its _get_env_spec for a [-1, 1] action space
PHASES = [("pretrain", 3), ("return_warmup", 2), ("finetune", 2)]


# -- recording randomness -----------------------------------------------------------------------
class Recorder:
    """Every random tensor the reference draws, in order: ``(kind, site, value)`` with kind
    ``dropout`` (the boolean keep-mask of the ``nn.Dropout`` at ``site``) or ``normal``."""

    def __init__(self, model: nn.Module):
        self.draws: list[tuple[str, str, torch.Tensor]] = []
        for name, module in model.named_modules():
            if isinstance(module, nn.Dropout):
                module.forward = self.dropout(name, module)

    def dropout(self, site: str, module: nn.Dropout):
        def forward(x):
            if not module.training or module.p == 0:
                return x
            state = torch.get_rng_state()
            keep = nn.functional.dropout(torch.ones_like(x), module.p, True) != 0
            torch.set_rng_state(state)
            out = nn.functional.dropout(x, module.p, True)  # the same draws: the same mask
            if not torch.equal(out != 0, keep & (x != 0)):
                raise RuntimeError(f"dropout at {site} did not draw the recorded mask")
            self.draws.append(("dropout", site, keep))
            return out

        return forward

    @contextlib.contextmanager
    def normals(self):
        """Record ``torch.randn_like`` (the reference's ``Gaussian.sample``) and the
        distributions' ``_standard_normal`` (``SquashedNormal.rsample``)."""
        import torch.distributions.normal as normal_module

        randn_like, standard_normal = torch.randn_like, normal_module._standard_normal

        def recorded_randn_like(tensor, *args, **kwargs):
            value = randn_like(tensor, *args, **kwargs)
            self.draws.append(("normal", "randn_like", value.detach().clone()))
            return value

        def recorded_standard_normal(shape, dtype, device):
            value = standard_normal(shape, dtype=dtype, device=device)
            self.draws.append(("normal", "rsample", value.detach().clone()))
            return value

        torch.randn_like, normal_module._standard_normal = recorded_randn_like, recorded_standard_normal
        try:
            yield
        finally:
            torch.randn_like, normal_module._standard_normal = randn_like, standard_normal

    def audit(self, before: torch.Tensor, start: int) -> None:
        """The global generator advanced by exactly the draws from ``start`` on."""
        after = torch.get_rng_state()
        torch.set_rng_state(before)
        for kind, _, value in self.draws[start:]:
            if kind == "dropout":
                torch.empty(value.shape).bernoulli_(0.9)
            else:
                torch.randn(value.shape)
        if not torch.equal(torch.get_rng_state(), after):
            raise RuntimeError("the reference drew random numbers that were not recorded")
        torch.set_rng_state(after)


# -- batches --------------------------------------------------------------------------------------
def make_batch(rng: np.random.Generator) -> dict[str, torch.Tensor]:
    """One batch of the reference's dataloader: K context and K future steps of one episode,
    states already standardised, no padding, actions clamped to the action range; ``rtg`` is
    the return-to-go already scaled (K + 1 steps: the trainer reads the first K)."""

    def steps(*shape):
        return torch.as_tensor(rng.normal(size=(BATCH, K, *shape)), dtype=torch.float32)

    actions = torch.as_tensor(rng.uniform(-1, 1, (BATCH, 2 * K, ACT_DIM)), dtype=torch.float32)
    actions = actions.clamp(*ACTION_RANGE)
    start = torch.as_tensor(rng.integers(0, 900, BATCH))
    time = start[:, None] + torch.arange(2 * K)
    zeros, ones = torch.zeros(BATCH, K, dtype=torch.long), torch.ones(BATCH, K)
    return dict(
        states=steps(STATE_DIM),
        actions=actions[:, :K],
        rewards=steps(1),
        dones=zeros,
        rtg=torch.as_tensor(rng.uniform(0, 1, (BATCH, K + 1, 1)), dtype=torch.float32),
        timesteps=time[:, :K],
        ordering=torch.arange(K).repeat(BATCH, 1),
        padding_mask=ones,
        fstates=steps(STATE_DIM),
        factions=actions[:, K:],
        frewards=steps(1),
        fdones=zeros,
        frtg=torch.as_tensor(rng.uniform(0, 1, (BATCH, K + 1, 1)), dtype=torch.float32),
        ftimesteps=time[:, K:],
        fordering=torch.arange(K).repeat(BATCH, 1),
        fpadding_mask=ones,
    )


# State the reference holds but never trains or reads at ordering=0: GPT-2's causal-mask
# buffers, its unused token embedding, the future encoder's timestep embedding and the unused
# state and return heads (kept out of the fixture, listed in the manifest).
UNUSED = (
    ".attn.bias",
    ".attn.masked_bias",
    ".wte.weight",
    ".embed_timestep.weight",
    "predict_state.",
    "predict_return.",
)


def state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {
        k: v.detach().clone()
        for k, v in model.state_dict().items()
        if not any(k.endswith(u) or k.startswith(u) for u in UNUSED)
    }


# -- LAMB alone -----------------------------------------------------------------------------------
def record_lamb(lamb_class, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """3 steps of the reference's Lamb on a tensor of norm ~16 and a small one, weight decay
    0.1: bias correction and a clip of ||w|| at 10 would each move these steps."""
    big = torch.as_tensor(rng.normal(size=(16, 16)), dtype=torch.float32)
    small = torch.as_tensor(rng.normal(size=(7,)) * 0.1, dtype=torch.float32)
    params = [nn.Parameter(big.clone()), nn.Parameter(small.clone())]
    optimiser = lamb_class(params, lr=1e-2, weight_decay=0.1, eps=1e-8)
    arrays = {"lamb/init/0": big, "lamb/init/1": small}
    for step in range(3):
        for index, p in enumerate(params):
            p.grad = torch.as_tensor(rng.normal(size=p.shape) * 10.0**-index, dtype=torch.float32)
            arrays[f"lamb/step{step}/grad/{index}"] = p.grad.clone()
        optimiser.step()
        arrays |= {f"lamb/step{step}/param/{i}": p.detach().clone() for i, p in enumerate(params)}
    return {k: v.numpy() for k, v in arrays.items()}


# -- recording ------------------------------------------------------------------------------------
def record(root: Path) -> None:
    prepare(root, COMMIT)
    sys.path.insert(0, str(root))
    from src.lamb import Lamb
    from src.models.decision_transformer import DecisionTransformer
    from src.trainer import SequenceTrainer

    torch.manual_seed(SEED)
    hyper = dict(
        state_dim=STATE_DIM,
        act_dim=ACT_DIM,
        action_range=list(ACTION_RANGE),
        max_length=K,
        eval_context_length=K,
        max_ep_len=1000,
        hidden_size=HIDDEN,
        n_layer=LAYERS,
        n_head=HEADS,
        n_inner=4 * HIDDEN,
        activation_function="relu",
        n_positions=1024,
        resid_pdrop=DROPOUT,
        attn_pdrop=DROPOUT,
        stochastic_policy=True,
        ordering=0,
        init_temperature=0.1,
        target_entropy=-ACT_DIM,
        kl_div_weight=1.0,
        num_future_samples=8,
        sample_topk=1,
        mask_future=False,
    )
    model = DecisionTransformer(**hyper)
    optimizer = Lamb(model.parameters(), lr=LR, weight_decay=WEIGHT_DECAY, eps=1e-8)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda steps: min((steps + 1) / WARMUP, 1))
    temperature_optimizer = torch.optim.Adam([model.log_temperature], lr=1e-4, betas=[0.9, 0.999])
    warmup_optimizer = torch.optim.Adam(model.predict_return_prior.parameters())  # main.py's: lr 1e-3
    trainers = {
        pretrain: SequenceTrainer(
            model, optimizer, temperature_optimizer, scheduler, "cpu", pretrain=pretrain
        )
        for pretrain in (True, False)
    }
    recorder = Recorder(model)
    rng = np.random.default_rng(SEED)
    arrays = {f"init/{k}": v for k, v in state(model).items()}
    updates = []
    model.train()
    for phase, count in PHASES:
        for _ in range(count):
            index = len(updates)
            batch = make_batch(rng)
            trajs = tuple(batch.values())
            before, start = torch.get_rng_state(), len(recorder.draws)
            with recorder.normals():
                if phase == "pretrain":
                    metrics = trainers[True].train_step_stochastic(trainers[True].pretrain_loss_fn, trajs)
                elif phase == "return_warmup":
                    trainer = trainers[False]
                    metrics = trainer.return_warmup_step_stochastic(
                        trainer.return_warmup_loss_fn, trajs, warmup_optimizer
                    )
                else:
                    metrics = trainers[False].train_step_stochastic(trainers[False].finetune_loss_fn, trajs)
            recorder.audit(before, start)
            prefix = f"update{index}"
            arrays |= {f"{prefix}/batch/{k}": v for k, v in batch.items()}
            arrays |= {f"{prefix}/metric/{k}": np.float64(v) for k, v in metrics.items()}
            arrays |= {f"{prefix}/param/{k}": v for k, v in state(model).items()}
            draws = recorder.draws[start:]
            arrays |= {f"{prefix}/draw{j}": value for j, (_, _, value) in enumerate(draws)}
            updates.append(
                dict(
                    phase=phase,
                    metrics=sorted(metrics),
                    lr=optimizer.param_groups[0]["lr"],
                    draws=[
                        dict(key=f"{prefix}/draw{j}", kind=kind, site=site, shape=list(value.shape))
                        for j, (kind, site, value) in enumerate(draws)
                    ],
                )
            )
    arrays |= record_lamb(Lamb, np.random.default_rng(SEED + 1))
    arrays = {k: np.asarray(v.numpy() if isinstance(v, torch.Tensor) else v) for k, v in arrays.items()}
    OUT.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(OUT / "pdt.npz", **arrays)
    import transformers

    manifest = dict(
        agent="pdt",
        repository=REPOSITORY,
        commit=COMMIT,
        reference_class="src.models.decision_transformer.DecisionTransformer",
        patch=None,
        command="python scripts/reference/record_pdt.py --pdt <checkout>",
        generator="scripts/reference/record_pdt.py",
        seed=SEED,
        versions=dict(
            python=platform.python_version(),
            torch=torch.__version__,
            numpy=np.__version__,
            transformers=transformers.__version__,
        ),
        sizes=dict(state_dim=STATE_DIM, act_dim=ACT_DIM, hidden=HIDDEN, layers=LAYERS, heads=HEADS),
        hyperparameters=hyper
        | dict(
            K=K,
            future_K=K,
            z_dim=Z_DIM,
            batch_size=BATCH,
            dropout=DROPOUT,
            learning_rate=LR,
            warmup_steps=WARMUP,
            weight_decay=WEIGHT_DECAY,
            temperature_lr=1e-4,
            return_warmup_lr=1e-3,
            grad_clip=0.25,
        ),
        lamb=dict(lr=1e-2, weight_decay=0.1, eps=1e-8, steps=3),
        left_out=list(UNUSED),
        parameters=sorted(k.removeprefix("init/") for k in arrays if k.startswith("init/")),
        updates=updates,
    )
    (OUT / "pdt.json").write_text(json.dumps(manifest, indent=2) + "\n")
    size = (OUT / "pdt.npz").stat().st_size
    print(f"pdt: {len(updates)} updates, {len(manifest['parameters'])} tensors, {size / 1e3:.0f} kB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pdt", type=Path, required=True, help="checkout of zhxieml/PDT")
    args = parser.parse_args()
    torch.set_num_threads(1)
    record(args.pdt.resolve())


if __name__ == "__main__":
    main()
