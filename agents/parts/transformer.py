"""Pieces shared by the sequence agents: a GPT-2-style causal transformer over embedded
tokens, a diagonal Gaussian head, and the LAMB optimiser decision transformers train with
(online-DT, Zheng et al. 2022; PDT, Xie et al. 2023)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from agents.parts.nets import Randomness, orthogonal_init

GAUSSIAN_LOG_STD = (-10.0, 2.0)  # the clamp of a Gaussian head's log sigma (online-DT, PDT)


class SequenceRandomness(Randomness):
    """:class:`agents.parts.nets.Randomness` plus the transformers' dropout. ``dropout(x, p)``
    is torch's; with ``fused_attention`` scaled-dot-product attention draws the dropout of its
    attention weights itself (fast kernels). The reference-parity tests substitute a source
    that serves the masks recorded from the reference and clears ``fused_attention``, so that
    the weights exist to be masked."""

    fused_attention = True

    def dropout(self, x: torch.Tensor, p: float) -> torch.Tensor:
        """``x`` with each element zeroed with probability ``p``, the rest scaled by ``1 / (1 - p)``."""
        return F.dropout(x, p, training=True)


SEQUENCE_RANDOMNESS = SequenceRandomness()


class Lamb(torch.optim.Optimizer):
    """LAMB (You et al., ICLR 2020) as PDT's reference runs it (its ``src/lamb.py``, timm's
    NVLAMB variant, built with ``eps=1e-8``): gradients divided by ``max(1, ||g|| /
    max_grad_norm)`` over all of them (a no-op after PDT's own clip at 0.25), Adam's
    bias-corrected direction plus decoupled weight decay, scaled per tensor by the trust ratio
    ``||w|| / ||update||`` (1 where a norm is 0; no trust ratio without weight decay). The step
    count behind the bias correction is per parameter group, counted on every step, as the
    reference's. Vectorised over tensors, no host syncs."""

    def __init__(
        self,
        params,
        lr: float,
        weight_decay: float,
        betas=(0.9, 0.999),
        eps: float = 1e-8,
        max_grad_norm: float = 1.0,
    ):
        defaults = {"lr": lr, "weight_decay": weight_decay, "betas": betas, "eps": eps}
        super().__init__(params, defaults | {"max_grad_norm": max_grad_norm})

    @torch.no_grad()
    def step(self):
        grads = [p.grad for group in self.param_groups for p in group["params"] if p.grad is not None]
        if not grads:
            return
        norm = torch.stack(torch._foreach_norm(grads)).norm()
        clip = (norm / self.defaults["max_grad_norm"]).clamp(min=1.0)
        for group in self.param_groups:
            group["step"] = group.get("step", 0) + 1
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            for p in params:
                if not self.state[p]:
                    self.state[p] |= {"exp_avg": torch.zeros_like(p), "exp_avg_sq": torch.zeros_like(p)}
            grads = torch._foreach_div([p.grad for p in params], clip)
            exp_avg = [self.state[p]["exp_avg"] for p in params]
            exp_avg_sq = [self.state[p]["exp_avg_sq"] for p in params]
            beta1, beta2 = group["betas"]
            correction1, correction2 = 1 - beta1 ** group["step"], 1 - beta2 ** group["step"]
            torch._foreach_lerp_(exp_avg, grads, 1 - beta1)
            torch._foreach_mul_(exp_avg_sq, beta2)
            torch._foreach_addcmul_(exp_avg_sq, grads, grads, value=1 - beta2)
            denominator = torch._foreach_div(torch._foreach_sqrt(exp_avg_sq), math.sqrt(correction2))
            torch._foreach_add_(denominator, group["eps"])
            updates = torch._foreach_div(torch._foreach_div(exp_avg, correction1), denominator)
            if group["weight_decay"]:
                torch._foreach_add_(updates, params, alpha=group["weight_decay"])
                weight_norm = torch.stack(torch._foreach_norm(params))
                update_norm = torch.stack(torch._foreach_norm(updates))
                usable = (weight_norm > 0) & (update_norm > 0)
                trust = torch.where(usable, weight_norm / update_norm, torch.ones_like(weight_norm))
                torch._foreach_mul_(updates, list((-group["lr"] * trust).unbind()))
            else:
                torch._foreach_mul_(updates, -group["lr"])
            torch._foreach_add_(params, updates)


class GaussianHead(nn.Module):
    """Linear mean and log std of a diagonal Gaussian (the reference's DiagGaussian), the log
    std clamped to ``log_std_bounds`` (its ``Gaussian``'s [-10, 2]; None: unclamped, for a
    head whose user bounds it itself, as the policy's soft clamp does)."""

    def __init__(
        self, input_dim: int, output_dim: int, log_std_bounds: tuple[float, float] | None = GAUSSIAN_LOG_STD
    ):
        super().__init__()
        self.mean, self.log_std = nn.Linear(input_dim, output_dim), nn.Linear(input_dim, output_dim)
        self.log_std_bounds = log_std_bounds
        self.apply(orthogonal_init)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        log_std = self.log_std(x)
        return self.mean(x), log_std if self.log_std_bounds is None else log_std.clamp(*self.log_std_bounds)


class Block(nn.Module):
    """A GPT-2 block: pre-LayerNorm attention and a 4x ReLU MLP, dropout on the attention
    weights and on both residual branches (GPT-2's ``attn_pdrop`` and ``resid_pdrop``)."""

    def __init__(self, width: int, heads: int, dropout: float):
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.norm1, self.norm2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.qkv, self.proj = nn.Linear(width, 3 * width), nn.Linear(width, width)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.ReLU(), nn.Linear(4 * width, width))

    def forward(self, x: torch.Tensor, mask: torch.Tensor, randomness: SequenceRandomness) -> torch.Tensor:
        batch, tokens, width = x.shape
        qkv = self.qkv(self.norm1(x)).view(batch, tokens, 3, self.heads, width // self.heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)
        p = self.dropout if self.training else 0.0
        if p and not randomness.fused_attention:  # the weights themselves, to be masked
            scores = (q @ k.transpose(-2, -1)) / math.sqrt(q.shape[-1])
            weights = scores.masked_fill(~mask[:, None], float("-inf")).softmax(-1)
            attended = randomness.dropout(weights, p) @ v
        else:
            attended = F.scaled_dot_product_attention(q, k, v, attn_mask=mask[:, None], dropout_p=p)
        x = x + self.drop(self.proj(attended.transpose(1, 2).reshape(batch, tokens, width)), randomness)
        return x + self.drop(self.mlp(self.norm2(x)), randomness)

    def drop(self, x: torch.Tensor, randomness: SequenceRandomness) -> torch.Tensor:
        return randomness.dropout(x, self.dropout) if self.training and self.dropout else x


class TokenTransformer(nn.Module):
    """Embedded tokens -> LayerNorm, dropout, GPT-2 blocks, final LayerNorm. ``mask`` ``(B or 1,
    T, T)`` is True where a token may attend (the reference's GPT-2 without position embeddings).
    Dropout masks come from ``randomness`` (:class:`SequenceRandomness`)."""

    def __init__(self, width: int, layers: int, heads: int, dropout: float):
        super().__init__()
        self.dropout = dropout
        self.embed_norm = nn.LayerNorm(width)
        self.blocks = nn.ModuleList(Block(width, heads, dropout) for _ in range(layers))
        self.norm = nn.LayerNorm(width)
        for module in self.blocks.modules():  # GPT-2's initialisation
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)

    def forward(
        self, tokens: torch.Tensor, mask: torch.Tensor, randomness: SequenceRandomness = SEQUENCE_RANDOMNESS
    ) -> torch.Tensor:
        x = self.embed_norm(tokens)
        if self.training and self.dropout:
            x = randomness.dropout(x, self.dropout)
        for block in self.blocks:
            x = block(x, mask, randomness)
        return self.norm(x)


def causal_mask(tokens: int, device) -> torch.Tensor:
    return torch.ones(tokens, tokens, dtype=torch.bool, device=device).tril()[None]
