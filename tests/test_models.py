"""The exported models (envs/models/, scripts/gpu/export_models.py) are dm_control's: the same MJCF
and assets, compiling to byte-identical MuJoCo models, and envs load them when dm_control is
absent (issue 23: the GPU node has no dm_control)."""

from __future__ import annotations

import mujoco
import numpy as np
import pytest
import torch

import envs.models
from envs import make_env
from envs.models import MODELS, build_mjcf, read_exported


def model_bytes(model: mujoco.MjModel) -> bytes:
    buffer = np.zeros(mujoco.mj_sizeModel(model), dtype=np.uint8)
    mujoco.mj_saveModel(model, None, buffer)
    return buffer.tobytes()


@pytest.mark.parametrize("name", list(MODELS))
def test_exported_model_is_dm_controls(name):
    xml, assets = build_mjcf(name)
    exported_xml, exported_assets = read_exported(name)
    assert exported_xml == xml, "envs/models is stale: python scripts/gpu/export_models.py"
    assert exported_assets == assets
    ours = mujoco.MjModel.from_xml_string(exported_xml, exported_assets)
    theirs = mujoco.MjModel.from_xml_string(xml, assets)
    assert (ours.nq, ours.nv, ours.nbody, ours.ngeom) == (theirs.nq, theirs.nv, theirs.nbody, theirs.ngeom)
    np.testing.assert_array_equal(ours.qpos0, theirs.qpos0)
    np.testing.assert_array_equal(ours.body_mass, theirs.body_mass)
    assert model_bytes(ours) == model_bytes(theirs)


def test_envs_load_the_export_without_dm_control(monkeypatch):
    with_dm_control = make_env("quadruped_run", 2, backend="cpu", seed=3)
    monkeypatch.setattr(envs.models, "dm_control_available", lambda: False)
    without = make_env("quadruped_run", 2, backend="cpu", seed=3)
    assert model_bytes(without.domain.model) == model_bytes(with_dm_control.domain.model)
    first, second = with_dm_control.reset(), without.reset()
    action = np.random.default_rng(0).uniform(-1, 1, (5, 2, 12)).astype(np.float32)
    for a in action:
        first, second = with_dm_control.step(torch.as_tensor(a)), without.step(torch.as_tensor(a))
    assert torch.equal(first["observation"], second["observation"])


def test_a_changed_or_missing_export_is_an_error_naming_the_fix(tmp_path):
    envs.models.write_exported(tmp_path, names=("walker",))
    (tmp_path / "walker" / "model.xml").write_text("<mujoco/>")
    with pytest.raises(ValueError, match="export the models again"):
        read_exported("walker", tmp_path)
    with pytest.raises(FileNotFoundError, match="export_models.py"):
        read_exported("walker", tmp_path / "missing")
