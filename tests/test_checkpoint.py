"""Snapshots: atomic round trip, refusal of pickled code and corrupt files, exact lookup (one
folder per configuration, and a lookup that asks which when several match)."""

from __future__ import annotations

import os
import pickle
import re
import shlex
from collections import OrderedDict
from pathlib import Path

import pytest
import torch

from urlb.data.checkpoint import (
    SnapshotAmbiguousError,
    SnapshotError,
    SnapshotNotFoundError,
    checkpoint_path,
    find_snapshot,
    latest_checkpoint,
    load_snapshot,
    parse_frames,
    save_snapshot,
    snapshot_path,
    write_snapshot_config,
)

CONFIG = "0123abcd00"  # a configuration's folder (urlb.run.plan.snapshot_config_key)


def _payload() -> dict:
    network = torch.nn.Linear(3, 2)
    optimizer = torch.optim.Adam(network.parameters(), lr=1e-3)
    network(torch.ones(1, 3)).sum().backward()
    optimizer.step()
    return {
        "agent": {"actor": network.state_dict(), "actor_optimizer": optimizer.state_dict()},
        "config": {"agent": "ddpg", "lr": 1e-3, "hidden_dims": [256, 256], "domain": "walker"},
        "frame": 100_000,
        "episode": 99,
        "flags": [True, None, (1, 2.5)],
        "rng": torch.get_rng_state(),
    }


class _RunsShellOnUnpickle:
    """Unpickling this runs ``touch <marker>`` through os.system, as a malicious checkpoint would."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {shlex.quote(str(self.marker))}",))


def _assert_nested_equal(actual, expected) -> None:
    if isinstance(expected, dict):
        assert list(actual) == list(expected)
        for key in expected:
            _assert_nested_equal(actual[key], expected[key])
    elif isinstance(expected, list | tuple):
        assert type(actual) is type(expected) and len(actual) == len(expected)
        for actual_item, expected_item in zip(actual, expected, strict=True):
            _assert_nested_equal(actual_item, expected_item)
    elif isinstance(expected, torch.Tensor):
        assert torch.equal(actual, expected) and actual.dtype == expected.dtype
    else:
        assert actual == expected and type(actual) is type(expected)


# -- round trip and atomicity ------------------------------------------------------------------
def test_round_trip_of_nested_payload(tmp_path):
    payload = _payload()
    path = save_snapshot(tmp_path / "deep" / "dir" / "snapshot.pt", payload)
    assert path == tmp_path / "deep" / "dir" / "snapshot.pt"
    loaded = load_snapshot(path)
    _assert_nested_equal(loaded, payload)
    assert isinstance(loaded["agent"]["actor"], OrderedDict)
    network = torch.nn.Linear(3, 2)
    network.load_state_dict(loaded["agent"]["actor"])
    assert sorted(p.name for p in path.parent.iterdir()) == ["snapshot.pt"]


def test_crash_during_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path, monkeypatch):
    path = save_snapshot(tmp_path / "checkpoint.pt", {"frame": 1, "weight": torch.ones(4)})

    def crash_halfway(obj, file, *args, **kwargs):
        file.write(b"PK\x03\x04 half a zip archive")
        raise KeyboardInterrupt  # e.g. Ctrl-C or a preemption signal mid-write

    monkeypatch.setattr(torch, "save", crash_halfway)
    with pytest.raises(KeyboardInterrupt):
        save_snapshot(path, {"frame": 2, "weight": torch.zeros(4)})
    monkeypatch.undo()
    loaded = load_snapshot(path)
    assert loaded["frame"] == 1 and torch.equal(loaded["weight"], torch.ones(4))
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]


def test_save_refuses_objects_that_a_weights_only_load_would_reject(tmp_path):
    np = pytest.importorskip("numpy")
    path = tmp_path / "snapshot.pt"
    with pytest.raises(TypeError, match=r"payload\['counters'\]\['frame'\] is a numpy.int64"):
        save_snapshot(path, {"counters": {"frame": np.int64(5)}})
    with pytest.raises(TypeError, match=r"payload\['optimizer'\] is a torch.optim.adam.Adam"):
        save_snapshot(path, {"optimizer": torch.optim.Adam([torch.nn.Parameter(torch.ones(1))])})
    assert not path.exists() and list(tmp_path.iterdir()) == []


# -- refusing what is not a plain snapshot ------------------------------------------------------
def test_pickled_code_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "malicious.pt"
    torch.save({"agent": _RunsShellOnUnpickle(marker)}, path)

    with pytest.raises(SnapshotError, match="was refused") as error:
        load_snapshot(path)
    assert str(path) in str(error.value) and "system" in str(error.value)
    assert "\n" not in str(error.value)
    assert not marker.exists()

    # The file really is dangerous: a trusting load runs the payload.
    torch.load(path, weights_only=False)
    assert marker.exists()


def test_plain_pickle_of_a_custom_class_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "plain.pkl"
    path.write_bytes(pickle.dumps(_RunsShellOnUnpickle(marker), protocol=2))
    with pytest.raises(SnapshotError, match="was refused"):
        load_snapshot(path)
    assert not marker.exists()


@pytest.mark.parametrize("keep_fraction", [0.0, 0.5, 0.9])
def test_truncated_file_is_an_error_naming_the_path(tmp_path, keep_fraction):
    path = save_snapshot(tmp_path / "snapshot.pt", _payload())
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep_fraction)])
    with pytest.raises(SnapshotError, match="corrupt") as error:
        load_snapshot(path)
    assert str(path) in str(error.value) and "\n" not in str(error.value)


def test_garbage_file_is_an_error(tmp_path):
    path = tmp_path / "snapshot.pt"
    path.write_bytes(b"not a checkpoint at all" * 10)
    with pytest.raises(SnapshotError, match=re.escape(str(path))):
        load_snapshot(path)


def test_missing_file_is_a_file_not_found_error_naming_the_path(tmp_path):
    path = tmp_path / "nowhere.pt"
    with pytest.raises(FileNotFoundError, match=re.escape(str(path))) as error:
        load_snapshot(path)
    assert isinstance(error.value, SnapshotNotFoundError)


# -- layout and lookup -------------------------------------------------------------------------
def test_snapshot_path_layout(tmp_path):
    assert snapshot_path(tmp_path, "diayn", "walker", 3, 100_000, CONFIG) == (
        tmp_path / "diayn" / "walker" / "seed_3" / CONFIG / "snapshot_100000.pt"
    )
    with pytest.raises(ValueError, match="not a configuration hash"):
        snapshot_path(tmp_path, "diayn", "walker", 3, 100_000, "../../etc")


@pytest.mark.parametrize(
    ("text", "frames"),
    [(100000, 100_000), ("100000", 100_000), ("100k", 100_000), ("100K", 100_000), ("1M", 1_000_000)]
    + [("2M", 2_000_000), ("1.5M", 1_500_000), ("0", 0)],
)
def test_parse_frames(text, frames):
    assert parse_frames(text) == frames


@pytest.mark.parametrize("text", ["1.5", "abc", "1G", "-5", "1.0001k"])
def test_parse_frames_rejects_non_counts(text):
    with pytest.raises(ValueError):
        parse_frames(text)


def _save_snapshots(root: Path, seed: int, frame_counts: list[int], config: str = CONFIG) -> None:
    for frames in frame_counts:
        save_snapshot(snapshot_path(root, "diayn", "walker", seed, frames, config), {"frame": frames})


def test_find_snapshot_by_frames_and_by_path(tmp_path):
    _save_snapshots(tmp_path, seed=0, frame_counts=[100_000, 1_000_000])
    expected = snapshot_path(tmp_path, "diayn", "walker", 0, 100_000, CONFIG)
    for spec in (100_000, "100000", "100k"):
        assert find_snapshot(spec, tmp_path, "diayn", "walker", 0) == expected
    assert find_snapshot("1M", tmp_path, "diayn", "walker", 0).name == "snapshot_1000000.pt"
    assert find_snapshot(expected, tmp_path, "other", "other", 9) == expected
    assert find_snapshot(str(expected), tmp_path, "other", "other", 9) == expected


def test_find_snapshot_still_finds_the_old_layout(tmp_path):
    old = tmp_path / "diayn" / "walker" / "seed_0" / "snapshot_100000.pt"
    save_snapshot(old, {"frame": 100_000})
    assert find_snapshot("100k", tmp_path, "diayn", "walker", 0) == old


def test_find_snapshot_missing_names_where_it_looked_and_what_exists(tmp_path):
    _save_snapshots(tmp_path, seed=0, frame_counts=[1_000_000, 100_000])
    with pytest.raises(SnapshotNotFoundError) as error:
        find_snapshot("500k", tmp_path, "diayn", "walker", 0)
    message = str(error.value)
    assert str(tmp_path / "diayn" / "walker" / "seed_0" / "<config>" / "snapshot_500000.pt") in message
    assert "available for this seed: 100000, 1000000" in message
    assert "\n" not in message


def test_find_snapshot_never_falls_back_to_another_seed(tmp_path):
    """Regression: URLB loaded a random other seed's snapshot when the asked-for one was missing."""
    _save_snapshots(tmp_path, seed=1, frame_counts=[100_000])
    _save_snapshots(tmp_path, seed=2, frame_counts=[100_000])
    with pytest.raises(SnapshotNotFoundError) as error:
        find_snapshot("100k", tmp_path, "diayn", "walker", 0)
    message = str(error.value)
    assert str(tmp_path / "diayn" / "walker" / "seed_0") in message
    assert "seed_1" not in message and "seed_2" not in message
    assert message.endswith("available for this seed: none")


def test_find_snapshot_asks_which_configuration_when_several_match(tmp_path):
    """Issue 22: a second configuration's snapshots no longer replace the first's; a frame count
    that both have is ambiguous, and the error names each with what tells them apart."""
    for config, lr in (("aaaaaaaa00", 1e-4), ("bbbbbbbb00", 1e-3)):
        _save_snapshots(tmp_path, seed=0, frame_counts=[100_000], config=config)
        directory = snapshot_path(tmp_path, "diayn", "walker", 0, 0, config).parent
        write_snapshot_config(directory, {"agent": {"lr": lr, "hidden_dim": 32}, "seed": 0})
    _save_snapshots(tmp_path, seed=0, frame_counts=[500_000], config="bbbbbbbb00")
    with pytest.raises(SnapshotAmbiguousError) as error:
        find_snapshot("100k", tmp_path, "diayn", "walker", 0)
    message = str(error.value)
    assert "matches 2 configurations" in message and "say which with snapshot=<path>" in message
    assert "aaaaaaaa00/snapshot_100000.pt (agent.lr=0.0001)" in message
    assert "bbbbbbbb00/snapshot_100000.pt (agent.lr=0.001)" in message and "\n" not in message
    assert find_snapshot("500k", tmp_path, "diayn", "walker", 0).parent.name == "bbbbbbbb00"


def test_find_snapshot_missing_path(tmp_path):
    with pytest.raises(SnapshotNotFoundError, match=re.escape(str(tmp_path / "gone.pt"))):
        find_snapshot(str(tmp_path / "gone.pt"), tmp_path, "diayn", "walker", 0)


def test_resume_checkpoint_location(tmp_path):
    assert checkpoint_path(tmp_path) == tmp_path / "checkpoint.pt"
    assert latest_checkpoint(tmp_path) is None
    save_snapshot(checkpoint_path(tmp_path), {"frame": 10})
    assert latest_checkpoint(tmp_path) == tmp_path / "checkpoint.pt"
