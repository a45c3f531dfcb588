"""The domains' MuJoCo models: built by dm_control where it is installed, otherwise compiled from
the MJCF files exported beside this module (``envs/models/``).

dm_control is the source of each model (its suite's walker and quadruped, its manipulation
entities for jaco); each domain module has an ``mjcf(**variant)`` builder that returns the MJCF
text and the asset files dm_control compiles it from. ``scripts/gpu/export_models.py`` writes those
into ``envs/models/`` and ``tests/test_models.py`` checks that the exported files compile to a
model byte-identical (``mj_saveModel``) to dm_control's, so that a machine without dm_control
(a GPU node with no network, Python 3.13 where labmaze has no wheel) runs the same physics.

Imports: mujoco and the standard library; dm_control only inside the builders.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import json
from pathlib import Path

import mujoco

__all__ = ["MODELS", "MODELS_DIR", "build_mjcf", "load_model", "read_exported", "write_exported"]

MODELS_DIR = Path(__file__).resolve().parent / "models"
# exported model -> (domain module, keyword arguments of its ``mjcf`` builder). quadruped_run's
# floor is 100 m (the suite's run task), every other quadruped task's 10 m.
MODELS = {
    "walker": ("envs.domains.walker", {}),
    "quadruped": ("envs.domains.quadruped", {"run": False}),
    "quadruped_run": ("envs.domains.quadruped", {"run": True}),
    "jaco": ("envs.domains.jaco", {}),
}
MANIFEST = "models.json"


def dm_control_available() -> bool:
    try:
        return importlib.util.find_spec("dm_control") is not None
    except (ImportError, ValueError):  # an import hook that hides it, a half-removed package
        return False


def build_mjcf(name: str) -> tuple[str, dict[str, bytes]]:
    """``(MJCF text, assets)`` of model ``name`` from dm_control."""
    module, variant = MODELS[name]
    xml, assets = importlib.import_module(module).mjcf(**variant)
    return xml.decode() if isinstance(xml, bytes) else xml, dict(assets)


def load_model(name: str) -> mujoco.MjModel:
    """Model ``name`` compiled from dm_control's MJCF, or from the exported copy without dm_control."""
    xml, assets = build_mjcf(name) if dm_control_available() else read_exported(name)
    return mujoco.MjModel.from_xml_string(xml, assets)


def _asset_file(key: str) -> str:
    """Where asset ``key`` (``./common/skybox.xml``, ``arm-<sha>.stl``) lies in a model's folder."""
    path = Path(key.removeprefix("./"))
    if path.is_absolute() or ".." in path.parts:
        raise ValueError(f"asset name {key!r} leaves the model folder")
    return path.as_posix()


def write_exported(folder: Path, names=tuple(MODELS)) -> dict:
    """Export models ``names`` from dm_control into ``folder``: ``<name>/model.xml``, the assets
    beside it and a manifest with every file's sha256; returns the manifest."""
    from importlib.metadata import version

    folder = Path(folder)
    manifest = {"mujoco": mujoco.__version__, "dm_control": version("dm-control"), "models": {}}
    for name in names:
        xml, assets = build_mjcf(name)
        files = {"model.xml": xml.encode()} | {_asset_file(key): data for key, data in assets.items()}
        for relative, data in files.items():
            path = folder / name / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        manifest["models"][name] = {
            "assets": {key: _asset_file(key) for key in sorted(assets)},
            "sha256": {
                relative: hashlib.sha256(data).hexdigest() for relative, data in sorted(files.items())
            },
        }
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    return manifest


def read_exported(name: str, folder: Path = MODELS_DIR) -> tuple[str, dict[str, bytes]]:
    """``(MJCF text, assets)`` of model ``name`` from an export, each file checked against the
    manifest's sha256."""
    manifest_path = Path(folder) / MANIFEST
    if not manifest_path.exists():
        raise FileNotFoundError(
            f"dm_control is not installed and {manifest_path} does not exist: install dm-control "
            "(pip install 'urlb[dmc]') or export the models (python scripts/gpu/export_models.py)"
        )
    entry = json.loads(manifest_path.read_text())["models"][name]

    def read(relative: str) -> bytes:
        data = (Path(folder) / name / relative).read_bytes()
        if hashlib.sha256(data).hexdigest() != entry["sha256"][relative]:
            raise ValueError(f"{folder}/{name}/{relative} differs from its export; export the models again")
        return data

    assets = {key: read(relative) for key, relative in entry["assets"].items()}
    return read("model.xml").decode(), assets
