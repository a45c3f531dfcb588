"""Parity with PDT's own code (issue 19): our updates equal the reference's on recorded weights,
windows and randomness.

The fixture (``tests/reference/data/pdt/pdt.npz``, written by ``scripts/reference/record_pdt.py``
from zhxieml/PDT) holds the reference model's initial weights, and for 3 pretraining updates,
2 return-predictor warmup steps and 2 finetuning updates: the windows, every dropout mask and
normal draw of the update, its losses and every weight after it; and 3 steps of the
reference's LAMB alone. We load the weights into our agent (:func:`our_name` maps the names),
feed the windows, and the draws through the agent's ``randomness`` hook, and compare losses
and weights to ``rtol=1e-5, atol=1e-6``. Max relative differences: docs/fidelity.md
(``python tests/reference/test_pdt_parity.py`` prints them).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
import urlb_reference
from tensordict import TensorDict

from agents.parts.transformer import Lamb, SequenceRandomness
from agents.pdt import PDTAgent

DATA = Path(__file__).resolve().parent / "data" / "pdt"
RTOL, ATOL = 1e-5, 1e-6

# Reference name -> ours; GPT-2's Conv1D weights are stored (in, out): ours are transposed.
BLOCK_RULES = [
    (r"h\.(\d+)\.ln_1\.(.*)", r"blocks.\1.norm1.\2"),
    (r"h\.(\d+)\.ln_2\.(.*)", r"blocks.\1.norm2.\2"),
    (r"h\.(\d+)\.attn\.c_attn\.(.*)", r"blocks.\1.qkv.\2"),
    (r"h\.(\d+)\.attn\.c_proj\.(.*)", r"blocks.\1.proj.\2"),
    (r"h\.(\d+)\.mlp\.c_fc\.(.*)", r"blocks.\1.mlp.0.\2"),
    (r"h\.(\d+)\.mlp\.c_proj\.(.*)", r"blocks.\1.mlp.2.\2"),
    (r"ln_f\.(.*)", r"norm.\1"),
]
PREFIXES = {
    "future_transformer.predict_z": "future_encoder.head",
    "future_transformer.embed_ln": "future_encoder.transformer.embed_norm",
    "future_transformer.transformer": "future_encoder.transformer",
    "future_transformer.embed_": "future_encoder.embed_",
    "predict_prior": "prior",
    "predict_return_prior": "return_head",
    "predict_action": "actor",
    "embed_ln": "transformer.embed_norm",
}
# Reference metric -> ours.
METRICS = {
    "loss": "loss",
    "nll": "action_nll",
    "entropy": "entropy",
    "reg_kl": "kl_standard",
    "prior_kl": "prior_kl",
    "return_pred_loss": "return_nll",
}


def our_name(name: str) -> tuple[str, bool]:
    """Our state_dict key for a reference key, and whether the tensor is transposed."""
    for prefix, replacement in PREFIXES.items():
        if name.startswith(prefix):
            name = replacement + name[len(prefix) :]
            break
    name = re.sub(r"\.mu\.(weight|bias)$", r".mean.\1", name)  # DiagGaussian's mu, our mean
    owner, found, rest = name.partition("transformer.")
    if found and not rest.startswith(("blocks.", "embed_norm.", "norm.")):
        for pattern, replacement in BLOCK_RULES:
            if re.fullmatch(pattern, rest):
                transposed = rest.endswith("weight") and re.search(r"\.(attn|mlp)\.", rest) is not None
                return f"{owner}transformer.{re.sub(pattern, replacement, rest)}", transposed
    return name, False


class RecordedRandomness(SequenceRandomness):
    """Serves the reference's draws in order: normal draws and dropout keep-masks."""

    fused_attention = False  # attention weights explicit, so their recorded mask applies

    def __init__(self, draws: list[tuple[str, torch.Tensor]]):
        self.draws = list(draws)

    def take(self, kind: str, shape) -> torch.Tensor:
        if not self.draws:
            raise AssertionError(f"our update drew a {kind} of {tuple(shape)} beyond the reference's draws")
        recorded_kind, value = self.draws.pop(0)
        assert recorded_kind == kind and value.numel() == int(np.prod(shape)), (kind, recorded_kind, shape)
        return value.reshape(shape)

    def normal(self, shape, like):
        return self.take("normal", shape).to(like)

    def dropout(self, x, p):
        return x * self.take("dropout", x.shape).to(x.dtype) / (1 - p)


class Fixture(urlb_reference.Fixture):
    def draws(self, update: int) -> list[tuple[str, torch.Tensor]]:
        """The update's draws; the return warmup's main-transformer draws are left out (the
        reference runs its whole model for the return predictor's loss, ours only what f reads)."""
        entries = self.manifest["updates"][update]["draws"]
        skip = self.manifest["updates"][update]["phase"] == "return_warmup"
        return [
            (d["kind"], self.arrays[d["key"]])
            for d in entries
            if not (skip and d["site"].startswith("transformer."))
        ]


def ours(reference: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for name, value in reference.items():
        key, transposed = our_name(name)
        out[key] = value.T if transposed else value
    return out


def build(fixture: Fixture) -> PDTAgent:
    hyper = fixture.manifest["hyperparameters"]
    agent = PDTAgent(
        hyper["state_dim"],
        hyper["act_dim"],
        hidden_dim=hyper["hidden_size"],
        batch_size=hyper["batch_size"],
        context_length=hyper["K"],
        eval_context_length=hyper["eval_context_length"],
        z_dim=hyper["z_dim"],
        num_layers=hyper["n_layer"],
        num_heads=hyper["n_head"],
        dropout=hyper["dropout"],
        lr=hyper["learning_rate"],
        weight_decay=hyper["weight_decay"],
        warmup_updates=hyper["warmup_steps"],
        grad_clip=hyper["grad_clip"],
        init_temperature=hyper["init_temperature"],
        temperature_lr=hyper["temperature_lr"],
        kl_weight=hyper["kl_div_weight"],
        num_future_samples=hyper["num_future_samples"],
        return_lr=hyper["return_warmup_lr"],
    )
    weights = ours(fixture.group("init"))
    missing = (
        set(agent.state_dict()) - set(weights) - {"obs_mean", "obs_std", "model_updates", "finetune_updates"}
    )
    assert not missing, f"no reference tensor for {sorted(missing)}"
    agent.load_state_dict(weights, strict=False)  # obs_mean 0, obs_std 1: windows come standardised
    return agent


def window(fixture: Fixture, update: int) -> tuple[TensorDict, torch.Tensor]:
    batch = fixture.group(f"update{update}/batch")
    values = {
        "observation": torch.cat([batch["states"], batch["fstates"]], 1),
        "action": torch.cat([batch["actions"], batch["factions"]], 1),
    }
    k = batch["states"].shape[1]
    return TensorDict(values, batch_size=values["action"].shape[:2]), batch["rtg"][:, :k, 0]


def relative(ours: torch.Tensor, reference: torch.Tensor) -> float:
    """docs/fidelity.md's measure: ``max |ours - reference| / |reference|`` over the entries
    with ``|reference| > 1e-4`` (0 if none)."""
    ours, reference = ours.detach().double(), reference.double()
    large = reference.abs() > 1e-4
    if not bool(large.any()):
        return 0.0
    return float(((ours - reference).abs()[large] / reference.abs()[large]).max())


def replay(fixture: Fixture) -> list[tuple[str, float, bool]]:
    """Every compared quantity: ``(name, max relative difference, close)``."""
    agent = build(fixture)
    agent.train(True)
    results = []
    for index, update in enumerate(fixture.manifest["updates"]):
        agent.randomness = RecordedRandomness(fixture.draws(index))
        batch, target = window(fixture, index)
        if update["phase"] == "pretrain":
            metrics = agent.update_model(batch)
        elif update["phase"] == "return_warmup":
            metrics = agent.update_return_head(batch, target)
            metrics["loss"] = metrics["return_nll"]
        else:
            metrics = agent.update_model(batch, target)
        assert not agent.randomness.draws, "the reference drew more than our update did"
        for name, value in fixture.group(f"update{index}/metric").items():
            if name in METRICS and METRICS[name] in metrics:
                mine, value = metrics[METRICS[name]].double(), value.double()
                close = torch.allclose(mine, value, rtol=RTOL, atol=ATOL)
                results.append((f"update{index}/{name}", relative(mine, value), close))
        state = agent.state_dict()
        for name, value in ours(fixture.group(f"update{index}/param")).items():
            # the reference's log temperature is float64 (np.log), ours float32
            mine, value = state[name].double(), value.double()
            close = torch.allclose(mine, value, rtol=RTOL, atol=ATOL)
            results.append((f"update{index}/{name}", relative(mine, value), close))
    return results


def replay_lamb(fixture: Fixture) -> list[tuple[str, float, bool]]:
    settings = fixture.manifest["lamb"]
    params = [torch.nn.Parameter(fixture.arrays[f"lamb/init/{i}"].clone()) for i in range(2)]
    optimiser = Lamb(params, lr=settings["lr"], weight_decay=settings["weight_decay"], eps=settings["eps"])
    results = []
    for step in range(settings["steps"]):
        for i, p in enumerate(params):
            p.grad = fixture.arrays[f"lamb/step{step}/grad/{i}"].clone()
        optimiser.step()
        for i, p in enumerate(params):
            reference = fixture.arrays[f"lamb/step{step}/param/{i}"]
            close = torch.allclose(p.detach(), reference, rtol=RTOL, atol=ATOL)
            results.append((f"lamb/step{step}/param{i}", relative(p.detach(), reference), close))
    return results


@pytest.fixture(scope="module")
def fixture() -> Fixture:
    return Fixture.load("pdt/pdt")


def test_updates_equal_the_reference(fixture):
    results = replay(fixture)
    failures = [(name, diff) for name, diff, close in results if not close]
    assert not failures, failures[:10]
    phases = {u["phase"] for u in fixture.manifest["updates"]}
    assert phases == {"pretrain", "return_warmup", "finetune"}
    assert any(name.endswith("/return_pred_loss") for name, _, _ in results)


def test_lamb_equals_the_reference(fixture):
    failures = [(name, diff) for name, diff, close in replay_lamb(fixture) if not close]
    assert not failures, failures


def test_lamb_fixture_sees_bias_correction_and_the_weight_norm_clip(fixture):
    """The LAMB fixture is sensitive to the two departures issue 19 fixed: without bias
    correction, or with ||w|| clipped at 10, the steps move off the reference."""
    big = fixture.arrays["lamb/init/0"]
    assert float(big.norm()) > 10

    class OldLamb(torch.optim.Optimizer):  # before issue 19: no bias correction, ||w|| <= 10
        def __init__(self, params, lr, weight_decay, eps):
            super().__init__(params, {"lr": lr, "weight_decay": weight_decay, "eps": eps})

        @torch.no_grad()
        def step(self):
            for group in self.param_groups:
                for p in group["params"]:
                    state = self.state[p]
                    if not state:
                        state |= {"exp_avg": torch.zeros_like(p), "exp_avg_sq": torch.zeros_like(p)}
                    state["exp_avg"].lerp_(p.grad, 0.1)
                    state["exp_avg_sq"].mul_(0.999).addcmul_(p.grad, p.grad, value=0.001)
                    update = state["exp_avg"] / (state["exp_avg_sq"].sqrt() + group["eps"])
                    update += group["weight_decay"] * p
                    p -= group["lr"] * p.norm().clamp(max=10) / update.norm() * update

    settings = fixture.manifest["lamb"]
    params = [torch.nn.Parameter(fixture.arrays[f"lamb/init/{i}"].clone()) for i in range(2)]
    optimiser = OldLamb(params, lr=settings["lr"], weight_decay=settings["weight_decay"], eps=settings["eps"])
    for step in range(settings["steps"]):
        for i, p in enumerate(params):
            p.grad = fixture.arrays[f"lamb/step{step}/grad/{i}"].clone()
        optimiser.step()
    reference = fixture.arrays[f"lamb/step{settings['steps'] - 1}/param/0"]
    assert relative(params[0].detach(), reference) > 10 * RTOL


def test_fixture_is_documented_and_small(fixture):
    manifest = fixture.manifest
    assert manifest["repository"] == "https://github.com/zhxieml/PDT" and len(manifest["commit"]) == 40
    assert manifest["command"] and (DATA / "pdt.npz").stat().st_size < 600_000
    assert len(manifest["updates"]) >= 3


if __name__ == "__main__":
    loaded = Fixture.load("pdt/pdt")
    for label, results in (("updates", replay(loaded)), ("lamb", replay_lamb(loaded))):
        worst = max(results, key=lambda r: r[1])
        print(f"pdt {label}: max relative difference {worst[1]:.2e} ({worst[0]}), {len(results)} compared")
