"""OmegaConf resolvers the configs use (kept free of heavy imports, so that a config
error is reported before torch and MuJoCo load)."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from omegaconf import OmegaConf


def snapshot_tag(spec) -> str:
    """A folder-safe name for a snapshot spec: ``2M`` stays; a path becomes its stem and a short
    hash of the absolute path, so two snapshots with the same file name never share a folder."""
    if spec is None:
        return "scratch"
    text = str(spec)
    if "/" in text or text.endswith(".pt"):
        digest = hashlib.sha256(str(Path(text).resolve()).encode()).hexdigest()[:8]
        return f"{Path(text).stem}_{digest}"
    return re.sub(r"[^\w.-]", "_", text)


def obs_suffix(obs_type: str) -> str:
    """What a run folder's name adds for its observations: nothing for states, ``_pixels``."""
    return "" if obs_type == "states" else f"_{obs_type}"


def agent_label(agent: str, addon: str | None = None) -> str:
    """The name a run goes by: the agent's config name, with its add-on after a ``+``
    (``icm+sr``), so records, folders, snapshots and reports tell the variants apart."""
    return agent if addon in (None, "", "None", "null") else f"{agent}+{addon}"


def register_resolvers() -> None:
    if not OmegaConf.has_resolver("agent_label"):
        OmegaConf.register_new_resolver("agent_label", agent_label)
    if not OmegaConf.has_resolver("tag"):
        OmegaConf.register_new_resolver("tag", snapshot_tag)
    if not OmegaConf.has_resolver("obs_suffix"):
        OmegaConf.register_new_resolver("obs_suffix", obs_suffix)
