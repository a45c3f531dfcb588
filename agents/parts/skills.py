"""Skill priors: the distributions skill agents draw their per-world skills from.

One module for every skill model (DIAYN, SMM: one-hot; METRA, APS: the unit sphere; CIC:
the unit cube), so the same prior is the same code everywhere. A :class:`SkillPrior` draws
training skills (``sample``: on a device, from torch's default generator unless one is
given) and the skills of deterministic measurement rollouts (``evaluation``: from a
generator on the CPU, so pictures and coverage do not depend on the device).

Imports: torch only (agents/parts holds building blocks; nothing here knows an agent).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch
from torch import nn


class _Draw(Protocol):
    def __call__(
        self, num: int, skill_dim: int, device, generator: torch.Generator | None = None
    ) -> torch.Tensor: ...


def one_hot(num: int, skill_dim: int, device, generator: torch.Generator | None = None) -> torch.Tensor:
    """``num`` uniformly drawn one-hot skills ``(num, skill_dim)`` (DIAYN, SMM)."""
    index = torch.randint(skill_dim, (num,), device=device, generator=generator)
    return nn.functional.one_hot(index, skill_dim).float()


def unit_sphere(num: int, skill_dim: int, device, generator: torch.Generator | None = None) -> torch.Tensor:
    """``num`` skills uniform on the unit sphere: normalised Gaussians (METRA, APS)."""
    z = torch.randn(num, skill_dim, device=device, generator=generator)
    return z / z.norm(dim=1, keepdim=True).clamp_min(1e-12)


def unit_cube(num: int, skill_dim: int, device, generator: torch.Generator | None = None) -> torch.Tensor:
    """``num`` skills uniform in ``[0, 1]^skill_dim`` (CIC)."""
    return torch.rand(num, skill_dim, device=device, generator=generator)


def each_one_hot(count: int, skill_dim: int) -> torch.Tensor:
    """Each of the ``skill_dim`` one-hot skills in turn, ``count // skill_dim`` times plus one
    for the first ``count % skill_dim`` (METRA's allocation of measurement rollouts)."""
    index = (torch.arange(count) % skill_dim).sort().values
    return nn.functional.one_hot(index, skill_dim).float()


@dataclass(frozen=True)
class SkillPrior:
    """A named skill distribution.

    Attributes:
        name: ``one_hot``, ``unit_sphere`` or ``unit_cube``.
        draw: ``(num, skill_dim, device, generator) -> (num, skill_dim)``.
        discrete: finitely many skills (one-hot): measurements enumerate them instead of
            drawing, and a finetuning search tries each once.
    """

    name: str
    draw: _Draw
    discrete: bool = False

    def sample(self, num: int, skill_dim: int, device) -> torch.Tensor:
        """Training skills ``(num, skill_dim)`` on ``device`` from torch's default generator."""
        return self.draw(num, skill_dim, device)

    def evaluation(self, count: int, skill_dim: int, generator: torch.Generator) -> torch.Tensor:
        """``count`` skills for deterministic rollouts, on the CPU: every one-hot skill in turn
        for a discrete prior, else ``count`` draws from ``generator``."""
        if self.discrete:
            return each_one_hot(count, skill_dim)
        return self.draw(count, skill_dim, "cpu", generator)

    def candidates(self, count: int, skill_dim: int, generator: torch.Generator) -> torch.Tensor:
        """Finetuning candidates: every skill of a discrete prior once, else ``count`` draws."""
        if self.discrete:
            return torch.eye(skill_dim)
        return self.draw(count, skill_dim, "cpu", generator)


ONE_HOT = SkillPrior("one_hot", one_hot, discrete=True)
UNIT_SPHERE = SkillPrior("unit_sphere", unit_sphere)
UNIT_CUBE = SkillPrior("unit_cube", unit_cube)
PRIORS = {prior.name: prior for prior in (ONE_HOT, UNIT_SPHERE, UNIT_CUBE)}
