"""Pieces shared by the sequence agents: a GPT-2-style causal transformer over embedded
tokens, a diagonal Gaussian head, and the LAMB optimiser decision transformers train with
(online-DT, Zheng et al. 2022; PDT, Xie et al. 2023)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from agents.parts.nets import orthogonal_init

GAUSSIAN_LOG_STD = (-10.0, 2.0)  # the clamp of a Gaussian head's log sigma (online-DT, PDT)


class Lamb(torch.optim.Optimizer):
    """LAMB (You et al., ICLR 2020) as online-DT and PDT use it: Adam's direction without bias
    correction plus decoupled weight decay, scaled per tensor by ``||w|| / ||update||`` (``||w||``
    clipped at 10; 1 where a norm is 0). Vectorised over tensors, no host syncs."""

    def __init__(self, params, lr: float, weight_decay: float, betas=(0.9, 0.999), eps: float = 1e-8):
        super().__init__(params, {"lr": lr, "weight_decay": weight_decay, "betas": betas, "eps": eps})

    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            for p in params:
                if not self.state[p]:
                    self.state[p] |= {"exp_avg": torch.zeros_like(p), "exp_avg_sq": torch.zeros_like(p)}
            grads = [p.grad for p in params]
            exp_avg = [self.state[p]["exp_avg"] for p in params]
            exp_avg_sq = [self.state[p]["exp_avg_sq"] for p in params]
            beta1, beta2 = group["betas"]
            torch._foreach_lerp_(exp_avg, grads, 1 - beta1)
            torch._foreach_mul_(exp_avg_sq, beta2)
            torch._foreach_addcmul_(exp_avg_sq, grads, grads, value=1 - beta2)
            denominator = torch._foreach_add(torch._foreach_sqrt(exp_avg_sq), group["eps"])
            updates = torch._foreach_div(exp_avg, denominator)
            torch._foreach_add_(updates, params, alpha=group["weight_decay"])
            weight_norm = torch.stack(torch._foreach_norm(params)).clamp(max=10)
            update_norm = torch.stack(torch._foreach_norm(updates))
            usable = (weight_norm > 0) & (update_norm > 0)
            trust = torch.where(usable, weight_norm / update_norm, torch.ones_like(weight_norm))
            torch._foreach_mul_(updates, list((-group["lr"] * trust).unbind()))
            torch._foreach_add_(params, updates)


class GaussianHead(nn.Module):
    """Linear mean and log std of a diagonal Gaussian (the reference's DiagGaussian)."""

    def __init__(self, input_dim: int, output_dim: int):
        super().__init__()
        self.mean, self.log_std = nn.Linear(input_dim, output_dim), nn.Linear(input_dim, output_dim)
        self.apply(orthogonal_init)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.mean(x), self.log_std(x).clamp(*GAUSSIAN_LOG_STD)


class Block(nn.Module):
    """A GPT-2 block: pre-LayerNorm attention and a 4x ReLU MLP, residual dropout."""

    def __init__(self, width: int, heads: int, dropout: float):
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.norm1, self.norm2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.qkv, self.proj = nn.Linear(width, 3 * width), nn.Linear(width, width)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.ReLU(), nn.Linear(4 * width, width))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        batch, tokens, width = x.shape
        qkv = self.qkv(self.norm1(x)).view(batch, tokens, 3, self.heads, width // self.heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)
        dropout = self.dropout if self.training else 0.0
        attended = F.scaled_dot_product_attention(q, k, v, attn_mask=mask[:, None], dropout_p=dropout)
        x = x + self.drop(self.proj(attended.transpose(1, 2).reshape(batch, tokens, width)))
        return x + self.drop(self.mlp(self.norm2(x)))


class TokenTransformer(nn.Module):
    """Embedded tokens -> LayerNorm, dropout, GPT-2 blocks, final LayerNorm. ``mask`` ``(B or 1,
    T, T)`` is True where a token may attend (the reference's GPT-2 without position embeddings)."""

    def __init__(self, width: int, layers: int, heads: int, dropout: float):
        super().__init__()
        self.embed_norm, self.drop = nn.LayerNorm(width), nn.Dropout(dropout)
        self.blocks = nn.ModuleList(Block(width, heads, dropout) for _ in range(layers))
        self.norm = nn.LayerNorm(width)
        for module in self.blocks.modules():  # GPT-2's initialisation
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = self.drop(self.embed_norm(tokens))
        for block in self.blocks:
            x = block(x, mask)
        return self.norm(x)


def causal_mask(tokens: int, device) -> torch.Tensor:
    return torch.ones(tokens, tokens, dtype=torch.bool, device=device).tril()[None]
